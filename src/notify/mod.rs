//! Notifications to people: mail ([`mail`], SMTP) and SMS ([`sms`], an HTTP
//! gateway). A channel sends a [`Message`] (a subject, a text, and named
//! values a channel's template may use) and knows nothing of what it is
//! about: the stock alerts, the booking notifications and the scheduler's
//! regressions write their own words.

pub mod mail;
pub mod sms;

/// A message for people, whatever the channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The mail's subject.
    pub subject: String,
    /// The mail's text.
    pub body: String,
    /// Values a template may name as `{name}` (an SMS body).
    pub values: Vec<(String, String)>,
}

/// Fill a template's `{name}` placeholders with `values`; with `json`, each
/// value is escaped for a JSON string (the template holds the quotes).
pub fn fill(template: &str, values: &[(String, String)], json: bool) -> String {
    let esc = |s: &str| {
        if json {
            let q = serde_json::to_string(s).unwrap_or_default();
            q[1..q.len() - 1].to_string()
        } else {
            s.to_string()
        }
    };
    values.iter().fold(template.to_string(), |t, (name, v)| {
        t.replace(&format!("{{{name}}}"), &esc(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_take_values_escaped_for_json_bodies() {
        let v = vec![
            ("reference".to_string(), "HYD-\"2040\"".to_string()),
            ("to".to_string(), "+33600000000".to_string()),
        ];
        assert_eq!(
            fill("{\"to\":\"{to}\",\"text\":\"{reference}\"}", &v, true),
            "{\"to\":\"+33600000000\",\"text\":\"HYD-\\\"2040\\\"\"}"
        );
        assert_eq!(
            fill("{reference} {unknown}", &v, false),
            "HYD-\"2040\" {unknown}"
        );
    }
}
