//! The booking application's messages, read as the contract says
//! (`docs/messages.md`): one event per message, a JSON object, refused
//! with a reason when it breaks the contract. Parsing is pure: what the
//! consumer does with an event is in `queue.rs`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A body above this is refused without being parsed.
pub const MAX_BODY: usize = 256 * 1024;

/// One event, as the booking application published it.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub message_id: String,
    pub occurred_at: DateTime<Utc>,
    /// SHA-256 of the body's canonical JSON (keys sorted): a redelivery has
    /// the same; a second event reusing the id has another.
    pub content_hash: String,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Booking(Booking),
    Completed(Completed),
}

impl Event {
    /// The routing key / `event_type` of the event.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::Booking(b) => b.kind.event_type(),
            Event::Completed(_) => "intervention.completed",
        }
    }
}

/// What a booking event does to its appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingKind {
    Created,
    Rescheduled,
    Cancelled,
}

impl BookingKind {
    pub fn event_type(self) -> &'static str {
        match self {
            BookingKind::Created => "appointment.created",
            BookingKind::Rescheduled => "appointment.rescheduled",
            BookingKind::Cancelled => "appointment.cancelled",
        }
    }

    /// The appointment's status once the event is applied.
    pub fn status(self) -> &'static str {
        match self {
            BookingKind::Created | BookingKind::Rescheduled => "scheduled",
            BookingKind::Cancelled => "cancelled",
        }
    }
}

/// `appointment.created|rescheduled|cancelled`: the whole appointment.
#[derive(Debug, Clone, PartialEq)]
pub struct Booking {
    pub kind: BookingKind,
    pub appointment_id: String,
    pub client_email: String,
    pub technician_id: String,
    pub aircraft_registration: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub intervention_type: String,
    /// Only on a cancellation (may be empty).
    pub cancellation_reason: Option<String>,
}

/// `intervention.completed`.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    pub intervention_id: String,
    /// `None`: walk-in work.
    pub appointment_id: Option<String>,
    pub aircraft_registration: String,
    pub technician_id: String,
    pub completed_at: DateTime<Utc>,
    pub time_spent_minutes: i64,
    pub intervention_type: String,
    /// Per normalised part reference, the quantity consumed (a reference
    /// listed twice adds up), in the order first listed.
    pub parts: Vec<(String, i64)>,
}

/// Why a message is refused: `reason` is short and the same for every
/// message failing the same rule (what the counts group by); `detail`
/// names the field and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

pub const NOT_JSON: &str = "not valid JSON";
pub const NOT_OBJECT: &str = "not a JSON object";
pub const TOO_LARGE: &str = "larger than 256 KiB";
pub const MISSING: &str = "missing required field";
pub const WRONG_TYPE: &str = "field of the wrong type";
pub const UNKNOWN_TYPE: &str = "unknown event_type";
pub const END_NOT_AFTER_START: &str = "end not after start";
pub const NOT_POSITIVE: &str = "quantity or time not positive";
/// Not found by the parser: the consumer refuses a message whose id was
/// consumed with other content.
pub const ID_REUSED: &str = "message_id reused with different content";

fn refuse(reason: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
    }
}

/// Part references as the stock workbook holds them: every space removed
/// (non-breaking and other Unicode spaces included), then upper case.
pub fn normalise_reference(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && *c != '\u{200b}' && *c != '\u{feff}')
        .flat_map(char::to_uppercase)
        .collect()
}

/// Read one message body.
pub fn parse(body: &[u8]) -> Result<Envelope, Refusal> {
    if body.len() > MAX_BODY {
        return Err(refuse(
            TOO_LARGE,
            format!("the body is {} bytes; at most {MAX_BODY}", body.len()),
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| refuse(NOT_JSON, e.to_string()))?;
    let Value::Object(obj) = &value else {
        return Err(refuse(
            NOT_OBJECT,
            format!("the body is {}", kind_of(&value)),
        ));
    };
    let content_hash = hex::encode(Sha256::digest(canonical(&value).as_bytes()));
    let f = Fields(obj);
    let message_id = f.id("message_id")?;
    let event_type = f.text("event_type")?;
    let occurred_at = f.time("occurred_at")?;
    let event = match event_type.as_str() {
        "appointment.created" => Event::Booking(booking(&f, BookingKind::Created)?),
        "appointment.rescheduled" => Event::Booking(booking(&f, BookingKind::Rescheduled)?),
        "appointment.cancelled" => Event::Booking(booking(&f, BookingKind::Cancelled)?),
        "intervention.completed" => Event::Completed(completed(&f)?),
        other => {
            return Err(refuse(
                UNKNOWN_TYPE,
                format!(
                    "event_type {other:?}; known: appointment.created, appointment.rescheduled, appointment.cancelled, intervention.completed"
                ),
            ));
        }
    };
    Ok(Envelope {
        message_id,
        occurred_at,
        content_hash,
        event,
    })
}

fn booking(f: &Fields<'_>, kind: BookingKind) -> Result<Booking, Refusal> {
    let start = f.time("start")?;
    let end = f.time("end")?;
    if end <= start {
        return Err(refuse(
            END_NOT_AFTER_START,
            format!(
                "end {} is not after start {} (compared as instants)",
                f.raw("end"),
                f.raw("start")
            ),
        ));
    }
    let cancellation_reason = match kind {
        BookingKind::Cancelled => Some(f.text_or_empty("cancellation_reason")?),
        _ => None,
    };
    Ok(Booking {
        kind,
        appointment_id: f.id("appointment_id")?,
        client_email: f.id("client_email")?,
        technician_id: f.id("technician_id")?,
        aircraft_registration: f.id("aircraft_registration")?,
        start,
        end,
        intervention_type: f.text("intervention_type")?,
        cancellation_reason,
    })
}

fn completed(f: &Fields<'_>) -> Result<Completed, Refusal> {
    let appointment_id = match f.0.get("appointment_id") {
        None => return Err(refuse(MISSING, "appointment_id (null for walk-in work)")),
        Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::String(_)) => {
            return Err(refuse(
                MISSING,
                "appointment_id is empty (null for walk-in work)",
            ));
        }
        Some(v) => {
            return Err(refuse(
                WRONG_TYPE,
                format!("appointment_id: a string or null, found {}", kind_of(v)),
            ));
        }
    };
    let time_spent_minutes = f.positive("time_spent_minutes", "time_spent_minutes")?;
    let parts_value = f.get("parts_consumed")?;
    let Value::Array(items) = parts_value else {
        return Err(refuse(
            WRONG_TYPE,
            format!("parts_consumed: an array, found {}", kind_of(parts_value)),
        ));
    };
    let mut parts: Vec<(String, i64)> = Vec::new();
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Object(part) = item else {
            return Err(refuse(
                WRONG_TYPE,
                format!(
                    "parts_consumed[{i}]: an object {{reference, quantity}}, found {}",
                    kind_of(item)
                ),
            ));
        };
        let pf = Fields(part);
        let raw = pf
            .text("reference")
            .map_err(|r| prefix(r, &format!("parts_consumed[{i}].")))?;
        let reference = normalise_reference(&raw);
        if reference.is_empty() {
            return Err(refuse(
                MISSING,
                format!("parts_consumed[{i}].reference is empty"),
            ));
        }
        let quantity = pf
            .positive("quantity", &format!("parts_consumed[{i}].quantity"))
            .map_err(|r| prefix(r, &format!("parts_consumed[{i}].")))?;
        match at.get(&reference) {
            Some(&k) => {
                parts[k].1 = parts[k].1.checked_add(quantity).ok_or_else(|| {
                    refuse(
                        WRONG_TYPE,
                        format!("parts_consumed: the quantities of {reference} overflow"),
                    )
                })?
            }
            None => {
                at.insert(reference.clone(), parts.len());
                parts.push((reference, quantity));
            }
        }
    }
    Ok(Completed {
        intervention_id: f.id("intervention_id")?,
        appointment_id,
        aircraft_registration: f.id("aircraft_registration")?,
        technician_id: f.id("technician_id")?,
        completed_at: f.time("completed_at")?,
        time_spent_minutes,
        intervention_type: f.text("intervention_type")?,
        parts,
    })
}

fn prefix(mut r: Refusal, p: &str) -> Refusal {
    if !r.detail.starts_with(p) {
        r.detail = format!("{p}{}", r.detail);
    }
    r
}

/// A message's fields, read with the contract's refusals.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, name: &str) -> Result<&Value, Refusal> {
        match self.0.get(name) {
            None | Some(Value::Null) => Err(refuse(MISSING, name.to_string())),
            Some(v) => Ok(v),
        }
    }

    fn raw(&self, name: &str) -> String {
        self.0.get(name).map(|v| v.to_string()).unwrap_or_default()
    }

    /// A string field, as sent.
    fn text(&self, name: &str) -> Result<String, Refusal> {
        match self.get(name)? {
            Value::String(s) => Ok(s.clone()),
            v => Err(refuse(
                WRONG_TYPE,
                format!("{name}: a string, found {}", kind_of(v)),
            )),
        }
    }

    /// A string field that may be absent or empty (a cancellation reason).
    fn text_or_empty(&self, name: &str) -> Result<String, Refusal> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(refuse(
                WRONG_TYPE,
                format!("{name}: a string, found {}", kind_of(v)),
            )),
        }
    }

    /// An identifier: a string, trimmed, never empty.
    fn id(&self, name: &str) -> Result<String, Refusal> {
        let s = self.text(name)?;
        let t = s.trim();
        if t.is_empty() {
            return Err(refuse(MISSING, format!("{name} is empty")));
        }
        Ok(t.to_string())
    }

    /// An RFC 3339 time with its offset; seconds required.
    fn time(&self, name: &str) -> Result<DateTime<Utc>, Refusal> {
        let v = self.get(name)?;
        let Value::String(s) = v else {
            return Err(refuse(
                WRONG_TYPE,
                format!(
                    "{name}: an RFC 3339 time with its offset, found {}",
                    kind_of(v)
                ),
            ));
        };
        parse_time(s).ok_or_else(|| {
            refuse(
                WRONG_TYPE,
                format!(
                    "{name}: {s:?} is not an RFC 3339 time with seconds and an offset (2026-11-05T09:00:00+01:00)"
                ),
            )
        })
    }

    /// An integer above zero.
    fn positive(&self, name: &str, label: &str) -> Result<i64, Refusal> {
        let v = self.get(name)?;
        let n = match v {
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
        .ok_or_else(|| {
            refuse(
                WRONG_TYPE,
                format!("{label}: an integer, found {}", kind_of(v)),
            )
        })?;
        if n <= 0 {
            return Err(refuse(
                NOT_POSITIVE,
                format!("{label} is {n}; it must be above 0"),
            ));
        }
        Ok(n)
    }
}

/// RFC 3339 with seconds and an explicit offset (`Z` or `±hh:mm`).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    // chrono accepts a space for the `T`; the contract does not
    if b.len() < 20 || !matches!(b[10], b'T' | b't') || b[16] != b':' {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn kind_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => {
            let shown: String = s.chars().take(40).collect();
            format!("the string {shown:?}")
        }
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// JSON with every object's keys sorted: the same content whatever order a
/// publisher wrote the keys in.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&m[k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESCHEDULED: &str = r#"{"message_id": "0f1e7b1c-5a4b-4d0e-9a51-2d3c4b5a6978", "event_type": "appointment.rescheduled",
 "occurred_at": "2026-10-27T08:12:40Z", "appointment_id": "RDV-2026-0042",
 "client_email": "contact@aeroclub-exemple.fr", "technician_id": "TECH-04",
 "aircraft_registration": "F-GKXA", "start": "2026-11-05T09:00:00+01:00",
 "end": "2026-11-05T12:00:00+01:00", "intervention_type": "Visite 50 h"}"#;

    const COMPLETED: &str = r#"{"message_id": "5b0c2f9e-1d7a-4f3b-8c6e-9a2b1c0d3e4f", "event_type": "intervention.completed",
 "occurred_at": "2026-11-05T11:58:02Z", "intervention_id": "INT-2026-0107",
 "appointment_id": "RDV-2026-0042", "aircraft_registration": "F-GKXA",
 "technician_id": "TECH-04", "completed_at": "2026-11-05T12:55:00+01:00",
 "time_spent_minutes": 170, "intervention_type": "Visite 50 h",
 "parts_consumed": [{"reference": "CH48110-1", "quantity": 1}, {"reference": "AS-W100P-1L", "quantity": 6}]}"#;

    fn with(base: &str, key: &str, value: Value) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(base).unwrap();
        v.as_object_mut().unwrap().insert(key.into(), value);
        serde_json::to_vec(&v).unwrap()
    }

    fn without(base: &str, key: &str) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(base).unwrap();
        v.as_object_mut().unwrap().remove(key);
        serde_json::to_vec(&v).unwrap()
    }

    fn reason(body: &[u8]) -> &'static str {
        parse(body).unwrap_err().reason
    }

    #[test]
    fn the_spec_examples_read() {
        let e = parse(RESCHEDULED.as_bytes()).unwrap();
        assert_eq!(e.message_id, "0f1e7b1c-5a4b-4d0e-9a51-2d3c4b5a6978");
        let Event::Booking(b) = &e.event else {
            panic!("{e:?}")
        };
        assert_eq!(b.kind, BookingKind::Rescheduled);
        assert_eq!(b.start.to_rfc3339(), "2026-11-05T08:00:00+00:00");
        assert_eq!(b.end.to_rfc3339(), "2026-11-05T11:00:00+00:00");
        let c = parse(COMPLETED.as_bytes()).unwrap();
        let Event::Completed(c) = c.event else {
            panic!()
        };
        assert_eq!(c.appointment_id.as_deref(), Some("RDV-2026-0042"));
        assert_eq!(c.time_spent_minutes, 170);
        assert_eq!(
            c.parts,
            vec![("CH48110-1".into(), 1), ("AS-W100P-1L".into(), 6)]
        );
        assert_eq!(c.completed_at.to_rfc3339(), "2026-11-05T11:55:00+00:00");
    }

    #[test]
    fn references_are_normalised_and_repeated_ones_add_up() {
        let body = with(
            COMPLETED,
            "parts_consumed",
            serde_json::json!([
                {"reference": " ch48110-1\u{a0}", "quantity": 1},
                {"reference": "AS-W100P-1L", "quantity": 6},
                {"reference": "CH48110 -1", "quantity": 2}
            ]),
        );
        let Event::Completed(c) = parse(&body).unwrap().event else {
            panic!()
        };
        assert_eq!(
            c.parts,
            vec![("CH48110-1".into(), 3), ("AS-W100P-1L".into(), 6)]
        );
    }

    #[test]
    fn walk_ins_have_a_null_appointment_but_not_a_missing_one() {
        let body = with(COMPLETED, "appointment_id", Value::Null);
        let Event::Completed(c) = parse(&body).unwrap().event else {
            panic!()
        };
        assert_eq!(c.appointment_id, None);
        assert_eq!(reason(&without(COMPLETED, "appointment_id")), MISSING);
    }

    #[test]
    fn every_refusal_class_of_the_spec() {
        assert_eq!(reason(&RESCHEDULED.as_bytes()[..80]), NOT_JSON);
        assert_eq!(reason(b"ref;qty\nCH48110-1;2\n"), NOT_JSON);
        assert_eq!(reason(b"[1, 2]"), NOT_OBJECT);
        assert_eq!(reason(b"null"), NOT_OBJECT);
        assert_eq!(reason(b"42"), NOT_OBJECT);
        assert_eq!(reason(&without(RESCHEDULED, "message_id")), MISSING);
        assert_eq!(reason(&without(RESCHEDULED, "start")), MISSING);
        let parts = |v: Value| with(COMPLETED, "parts_consumed", v);
        assert_eq!(
            reason(&parts(
                serde_json::json!([{"reference": "X", "quantity": "trois"}])
            )),
            WRONG_TYPE
        );
        assert_eq!(
            reason(&with(RESCHEDULED, "start", serde_json::json!(1793865600))),
            WRONG_TYPE
        );
        assert_eq!(
            reason(&parts(serde_json::json!({"reference": "X", "quantity": 1}))),
            WRONG_TYPE
        );
        assert_eq!(
            reason(&with(COMPLETED, "time_spent_minutes", "2h30".into())),
            WRONG_TYPE
        );
        assert_eq!(
            reason(&with(
                RESCHEDULED,
                "event_type",
                "appointment.deleted".into()
            )),
            UNKNOWN_TYPE
        );
        assert_eq!(
            reason(&with(
                RESCHEDULED,
                "end",
                "2026-11-05T07:00:00+01:00".into()
            )),
            END_NOT_AFTER_START
        );
        // the same instant written with another offset
        assert_eq!(
            reason(&with(RESCHEDULED, "end", "2026-11-05T08:00:00Z".into())),
            END_NOT_AFTER_START
        );
        assert_eq!(
            reason(&parts(serde_json::json!([
                {"reference": "X", "quantity": 1},
                {"reference": "Y", "quantity": -2}
            ]))),
            NOT_POSITIVE
        );
        assert_eq!(
            reason(&with(COMPLETED, "time_spent_minutes", 0.into())),
            NOT_POSITIVE
        );
        let big = "x".repeat(1 << 20);
        assert_eq!(reason(&with(RESCHEDULED, "notes", big.into())), TOO_LARGE);
    }

    #[test]
    fn times_need_an_offset_and_seconds() {
        for bad in [
            "2026-11-05T09:00:00",
            "2026-11-05T09:00+01:00",
            "2026-11-05 09:00:00+01:00",
            "05/11/2026 09:00",
        ] {
            let r = parse(&with(RESCHEDULED, "start", bad.into())).unwrap_err();
            assert_eq!(r.reason, WRONG_TYPE, "{bad}");
            assert!(r.detail.contains("start"), "{}", r.detail);
        }
        assert!(parse_time("2026-11-05T09:00:00.250+01:00").is_some());
        assert!(parse_time("2026-03-29T01:59:59Z").is_some());
    }

    #[test]
    fn unknown_fields_are_ignored_and_key_order_is_not_content() {
        let a = parse(&with(RESCHEDULED, "notes", "porte du hangar 3".into())).unwrap();
        assert_eq!(a.message_id, "0f1e7b1c-5a4b-4d0e-9a51-2d3c4b5a6978");
        let v: Value = serde_json::from_str(RESCHEDULED).unwrap();
        let mut reordered = Map::new();
        for (k, x) in v.as_object().unwrap().iter().rev() {
            reordered.insert(k.clone(), x.clone());
        }
        let b = parse(&serde_json::to_vec(&Value::Object(reordered)).unwrap()).unwrap();
        let c = parse(RESCHEDULED.as_bytes()).unwrap();
        assert_eq!(b.content_hash, c.content_hash);
        assert_ne!(a.content_hash, c.content_hash);
    }
}
