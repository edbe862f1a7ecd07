//! SMS through an HTTP gateway: one request per recipient, to a configured
//! URL, with a body built from a template and an `Authorization` header
//! from the environment. Any 2xx is a success; anything else is an error
//! with the gateway's status and the start of its answer.

use super::{Message, fill};
use crate::config::SmsConfig;
use crate::error::{Error, Result};

/// Send `m` to every configured recipient, its body the configured
/// template filled with the message's values, `{subject}`, `{text}` and
/// `{to}`. `bound` limits each request, from connecting to the end of the
/// answer; the caller bounds the whole send (every recipient).
pub async fn send(cfg: &SmsConfig, m: &Message, bound: std::time::Duration) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(bound)
        .build()
        .map_err(|e| Error::runtime(format!("SMS client: {e}")))?;
    let json = cfg.content_type.contains("json");
    for to in &cfg.to {
        let mut values = m.values.clone();
        values.push(("subject".into(), m.subject.clone()));
        values.push(("text".into(), m.body.clone()));
        values.push(("to".into(), to.clone()));
        let body = fill(&cfg.body, &values, json);
        let mut req = client
            .post(&cfg.url)
            .header(reqwest::header::CONTENT_TYPE, &cfg.content_type)
            .body(body);
        if let Some(auth) = &cfg.authorization {
            req = req.header(reqwest::header::AUTHORIZATION, auth);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::runtime(format!("SMS gateway {}: {e}", cfg.url)))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(Error::runtime(format!(
                "SMS gateway {} answered {status}: {}",
                cfg.url,
                text.chars().take(200).collect::<String>()
            )));
        }
    }
    Ok(())
}
