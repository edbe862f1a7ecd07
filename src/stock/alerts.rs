//! Stock alerts: a part at or under its minimum raises one alert, kept in
//! `stock_alerts` until the part is back above its minimum; it is not
//! raised again in between, however many movements follow. Raising and
//! clearing happen in the transaction of whatever changed the stock;
//! sending (mail, SMS) happens after it, outside any transaction: each
//! send is claimed (a short transaction), made within a bounded time, then
//! stamped (another short one), so that a channel that hangs delays only
//! itself, never a writer. A send that succeeded is stamped and never
//! made again; one cut short before its stamp (the process killed) is
//! made again once its claim lapses: at least once (docs/decisions.md 25).

use std::collections::HashMap;
use std::time::Duration;

use chrono::NaiveDateTime;

use serde::Serialize;

use crate::batch::MergeOp;
use crate::batch::parse::{epoch_millis, parse_datetime};
use crate::batch::{Value, dtype_of, frame_from_rows};
use crate::config::mapping::{ColumnType, Merge, WriteMode};
use crate::config::{AlertsConfig, Config};
use crate::db::{ColumnDef, TableDef};
use crate::error::{Error, Result};
use crate::notify::{Message, fill};
use crate::sink::Sink;

use super::int as num;

pub const ALERTS: &str = "stock_alerts";
pub const SENDS: &str = "stock_alert_sends";

fn col(name: &str, ty: ColumnType, not_null: bool) -> ColumnDef {
    ColumnDef::new(name, ty, not_null)
}

/// `stock_alerts`.
pub fn alerts_def() -> TableDef {
    use ColumnType::*;
    TableDef {
        name: ALERTS.into(),
        columns: vec![
            col("id", Text, true),
            col("reference", Text, true),
            col("designation", Text, false),
            col("quantity", Integer, true),
            col("minimum", Integer, true),
            col("raised_at", Datetime, true),
            col("cleared_at", Datetime, false),
            col("email_sent_at", Datetime, false),
            col("sms_sent_at", Datetime, false),
        ],
        key: vec!["id".into()],
        foreign_keys: Vec::new(),
        soft_delete: None,
    }
}

/// `stock_alert_sends`: for each alert and channel tried, the send in
/// flight (`busy_until`: the claim of the check sending it, which lapses
/// then), how many tries, and the last failure. The sent stamp itself is
/// on the alert (`email_sent_at`, `sms_sent_at`).
pub fn sends_def() -> TableDef {
    use ColumnType::*;
    TableDef {
        name: SENDS.into(),
        columns: vec![
            col("alert_id", Text, true),
            col("channel", Text, true),
            col("attempts", Integer, true),
            col("tried_at", Datetime, true),
            col("busy_until", Datetime, false),
            col("error", Text, false),
        ],
        key: vec!["alert_id".into(), "channel".into()],
        foreign_keys: Vec::new(),
        soft_delete: None,
    }
}

/// One alert.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    pub id: String,
    pub reference: String,
    pub designation: Option<String>,
    pub quantity: i64,
    pub minimum: i64,
    pub raised_at: String,
    pub cleared_at: Option<String>,
    pub email_sent_at: Option<String>,
    pub sms_sent_at: Option<String>,
    /// Why the last mail failed, while it is not sent.
    pub email_error: Option<String>,
    /// Why the last SMS failed, while it is not sent.
    pub sms_error: Option<String>,
}

/// A way of sending alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Email,
    Sms,
}

impl Channel {
    fn name(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }

    /// As messages say it.
    fn what(self) -> &'static str {
        match self {
            Channel::Email => "mail",
            Channel::Sms => "SMS",
        }
    }

    fn sent_column(self) -> &'static str {
        match self {
            Channel::Email => "email_sent_at",
            Channel::Sms => "sms_sent_at",
        }
    }

    fn sent(self, a: &Alert) -> bool {
        match self {
            Channel::Email => a.email_sent_at.is_some(),
            Channel::Sms => a.sms_sent_at.is_some(),
        }
    }

    /// The server, for messages.
    fn peer(self, cfg: &Config) -> String {
        match self {
            Channel::Email => cfg.alerts.email.as_ref().map_or_else(String::new, |m| {
                crate::notify::mail::parse_server(&m.server)
                    .map(|(_, host, port)| format!("SMTP {host}:{port}"))
                    .unwrap_or_else(|_| m.server.clone())
            }),
            Channel::Sms => cfg
                .alerts
                .sms
                .as_ref()
                .map_or_else(String::new, |s| format!("SMS gateway {}", s.url)),
        }
    }

    /// One send of `a`, within `bound` from the first connection to the
    /// last answer.
    async fn send(self, cfg: &Config, a: &Alert, bound: Duration) -> Result<()> {
        let sending = async {
            let m = message(cfg, a);
            match (self, &cfg.alerts.email, &cfg.alerts.sms) {
                (Channel::Email, Some(mail), _) => {
                    crate::notify::mail::send(mail, &m.subject, &m.body, bound).await
                }
                (Channel::Sms, _, Some(sms)) => crate::notify::sms::send(sms, &m, bound).await,
                _ => Ok(()),
            }
        };
        match tokio::time::timeout(bound, sending).await {
            Ok(done) => done,
            Err(_) => Err(Error::runtime(format!(
                "{}: no answer within {} s (alerts.send_timeout)",
                self.peer(cfg),
                bound.as_secs()
            ))),
        }
    }
}

/// A part's minimum: the configured one, else the workbook's, else the
/// default.
pub fn minimum(cfg: &AlertsConfig, reference: &str, workbook: Option<i64>) -> i64 {
    cfg.minimums
        .iter()
        .find(|(r, _)| r.eq_ignore_ascii_case(reference))
        .map(|(_, m)| *m)
        .or(workbook)
        .unwrap_or(cfg.default_minimum)
}

/// Every alert, oldest first.
pub fn list(sink: &mut dyn Sink) -> Result<Vec<Alert>> {
    if sink.conn()?.count_rows(ALERTS)?.is_none() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = alerts_def()
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let mut out: Vec<Alert> = sink
        .conn()?
        .select_text(ALERTS, &names)?
        .into_iter()
        .map(|r| Alert {
            id: r[0].clone().unwrap_or_default(),
            reference: r[1].clone().unwrap_or_default(),
            designation: r[2].clone(),
            quantity: num(&r[3]).unwrap_or(0),
            minimum: num(&r[4]).unwrap_or(0),
            raised_at: r[5].clone().unwrap_or_default(),
            cleared_at: r[6].clone(),
            email_sent_at: r[7].clone(),
            sms_sent_at: r[8].clone(),
            email_error: None,
            sms_error: None,
        })
        .collect();
    out.sort_by(|a, b| (&a.raised_at, &a.id).cmp(&(&b.raised_at, &b.id)));
    if sink.conn()?.count_rows(SENDS)?.is_some() {
        let errors: HashMap<(String, String), String> = sink
            .conn()?
            .select_text(
                SENDS,
                &["alert_id".into(), "channel".into(), "error".into()],
            )?
            .into_iter()
            .filter_map(|r| Some(((r[0].clone()?, r[1].clone()?), r[2].clone()?)))
            .collect();
        for a in &mut out {
            let error = |ch: Channel| errors.get(&(a.id.clone(), ch.name().to_string())).cloned();
            if a.email_sent_at.is_none() {
                a.email_error = error(Channel::Email);
            }
            if a.sms_sent_at.is_none() {
                a.sms_error = error(Channel::Sms);
            }
        }
    }
    Ok(out)
}

/// Raise an alert for each part at or under its minimum that has none
/// open, clear the open alerts of parts back above it; returns the
/// references raised and cleared. Runs inside the caller's transaction.
pub fn evaluate(sink: &mut dyn Sink, cfg: &Config) -> Result<(Vec<String>, Vec<String>)> {
    // one evaluation at a time: two would raise the same crossing twice
    super::lock(sink, "parts")?;
    let levels = super::levels(sink.conn()?)?;
    // the table exists from here on (created empty the first time)
    sink.start_table(&alerts_def(), WriteMode::Append)?;
    sink.finish_table()?;
    let open: HashMap<String, Alert> = list(sink)?
        .into_iter()
        .filter(|a| a.cleared_at.is_none())
        .map(|a| (a.reference.to_uppercase(), a))
        .collect();
    let now = chrono::Utc::now().naive_utc();
    let stamp = epoch_millis(now);
    let mut new_rows = Vec::new();
    let mut raised = Vec::new();
    let mut clear_ops = Vec::new();
    let mut cleared = Vec::new();
    for l in levels {
        let (reference, qty) = (l.reference, l.quantity);
        let min = minimum(&cfg.alerts, &reference, l.min_quantity);
        let key = reference.to_uppercase();
        match (qty <= min, open.get(&key)) {
            (true, None) => {
                raised.push(format!("{reference} ({qty} ≤ {min})"));
                new_rows.push(vec![
                    Value::Text(format!("{reference}@{stamp}")),
                    Value::Text(reference.clone()),
                    l.designation.map_or(Value::Null, Value::Text),
                    Value::Int(qty),
                    Value::Int(min),
                    Value::Datetime(stamp),
                    Value::Null,
                    Value::Null,
                    Value::Null,
                ]);
            }
            (false, Some(a)) => {
                cleared.push(format!("{reference} ({qty} > {min})"));
                clear_ops.push(MergeOp {
                    key: vec![("id".into(), Value::Text(a.id.clone()))],
                    sets: vec![("cleared_at".into(), Merge::Last, Value::Datetime(stamp))],
                    row: 0,
                    kept_row: 0,
                    record: Vec::new(),
                });
            }
            _ => {}
        }
    }
    if !new_rows.is_empty() || !clear_ops.is_empty() {
        let def = alerts_def();
        let schema: Vec<_> = def
            .columns
            .iter()
            .map(|c| (c.name.clone(), dtype_of(c.ty)))
            .collect();
        sink.start_table(&def, WriteMode::Append)?;
        if !new_rows.is_empty() {
            sink.write(&frame_from_rows(&schema, &new_rows)?)?;
            sink.flush()?;
        }
        if !clear_ops.is_empty() {
            sink.merge(&clear_ops)?;
        }
        sink.finish_table()?;
    }
    raised.sort();
    cleared.sort();
    Ok((raised, cleared))
}

/// What sending did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Sent {
    /// References mailed.
    pub email: Vec<String>,
    /// References texted.
    pub sms: Vec<String>,
    /// Sends that failed or were not tried, with why: left for the next check.
    pub failed: Vec<String>,
    /// References another check is sending now (left to it).
    pub busy: Vec<String>,
}

/// The values an alert gives to templates: `{reference}`,
/// `{designation}`, `{quantity}`, `{minimum}`.
pub fn values(a: &Alert) -> Vec<(String, String)> {
    vec![
        ("reference".into(), a.reference.clone()),
        (
            "designation".into(),
            a.designation.clone().unwrap_or_default(),
        ),
        ("quantity".into(), a.quantity.to_string()),
        ("minimum".into(), a.minimum.to_string()),
    ]
}

/// What an alert says, in the workshop's words; the subject from
/// `alerts.email.subject` when mail is configured.
pub fn message(cfg: &Config, a: &Alert) -> Message {
    let values = values(a);
    let subject = cfg.alerts.email.as_ref().map_or_else(
        || format!("Stock bas : {}", a.reference),
        |m| fill(&m.subject, &values, false),
    );
    let body = format!(
        "La pièce {} ({}) est à {} en stock, pour un minimum de {}.\n\
         Alerte levée le {} ; elle ne sera pas renvoyée avant que le stock soit repassé au-dessus du minimum.\n\n\
         — repaero",
        a.reference,
        a.designation.as_deref().unwrap_or("sans désignation"),
        a.quantity,
        a.minimum,
        a.raised_at
    );
    Message {
        subject,
        body,
        values,
    }
}

/// Send the open alerts not sent yet on each configured channel. No
/// transaction is open while a message goes: each send is claimed in a
/// short transaction, made within `alerts.send_timeout`, then stamped in
/// another. A channel that fails is not tried again in the same check (a
/// dead server costs one bound, not one per alert); what it did not send
/// is retried at the next check.
pub fn notify(cfg: &Config) -> Result<Sent> {
    let mut sent = Sent::default();
    let channels: Vec<Channel> = [
        (Channel::Email, cfg.alerts.email.is_some()),
        (Channel::Sms, cfg.alerts.sms.is_some()),
    ]
    .into_iter()
    .filter_map(|(c, on)| on.then_some(c))
    .collect();
    if channels.is_empty() {
        return Ok(sent);
    }
    let bound = cfg.alerts.send_bound();
    // a claim outlives its send by the bound again (at least 10 s: SQLite
    // may make the stamp wait that long for the write lock), so that a
    // live sender always stamps before another check may take its send
    let lease = bound + bound.max(Duration::from_secs(10));
    let mut sink = crate::sink::open(&cfg.target.url, false)?;
    if sink.conn()?.count_rows(ALERTS)?.is_none() {
        return Ok(sent);
    }
    let pending: Vec<Alert> = list(sink.as_mut())?
        .into_iter()
        .filter(|a| a.cleared_at.is_none())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::runtime(format!("cannot start the I/O runtime: {e}")))?;
    // when each send was last tried
    let tried: HashMap<(String, String), NaiveDateTime> =
        if sink.conn()?.count_rows(SENDS)?.is_some() {
            sink.conn()?
                .select_text(
                    SENDS,
                    &["alert_id".into(), "channel".into(), "tried_at".into()],
                )?
                .into_iter()
                .filter_map(|r| {
                    let at = parse_datetime(r[2].as_deref()?, &[])?;
                    Some(((r[0].clone()?, r[1].clone()?), at))
                })
                .collect()
        } else {
            HashMap::new()
        };
    for &ch in &channels {
        // the sends never tried first, then those tried longest ago: one
        // that keeps failing does not hold the others back
        let mut todo: Vec<&Alert> = pending.iter().filter(|a| !ch.sent(a)).collect();
        todo.sort_by_key(|a| tried.get(&(a.id.clone(), ch.name().to_string())));
        // once the channel failed, the rest waits for the next check
        let mut dead: Option<String> = None;
        for a in todo {
            if let Some(why) = &dead {
                sent.failed.push(format!(
                    "{} for {}: not tried, {why}",
                    ch.what(),
                    a.reference
                ));
                continue;
            }
            match claim(sink.as_mut(), a, ch, lease)? {
                Claim::Done => continue,
                Claim::Busy => {
                    sent.busy.push(a.reference.clone());
                    continue;
                }
                Claim::Taken => {}
            }
            let error = rt
                .block_on(ch.send(cfg, a, bound))
                .err()
                .map(|e| e.to_string());
            stamp(sink.as_mut(), a, ch, error.as_deref())?;
            match error {
                None => match ch {
                    Channel::Email => sent.email.push(a.reference.clone()),
                    Channel::Sms => sent.sms.push(a.reference.clone()),
                },
                Some(e) => {
                    sent.failed
                        .push(format!("{} for {}: {e}", ch.what(), a.reference));
                    dead = Some(format!("{} failed earlier in this check", ch.peer(cfg)));
                }
            }
        }
    }
    Ok(sent)
}

/// Whether a check may make a send.
enum Claim {
    /// It is this check's to make.
    Taken,
    /// Another check claimed it and its claim has not lapsed.
    Busy,
    /// Sent meanwhile, or the alert is cleared or gone.
    Done,
}

/// Run `f` in a transaction of its own.
fn in_transaction<T>(sink: &mut dyn Sink, f: impl FnOnce(&mut dyn Sink) -> Result<T>) -> Result<T> {
    sink.begin()?;
    match f(sink) {
        Ok(v) => {
            sink.commit()?;
            Ok(v)
        }
        Err(e) => {
            let _ = sink.rollback();
            Err(e)
        }
    }
}

/// A text as an SQL literal.
fn now() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// The claim on one send (`Some(busy_until)`), when it was tried before.
fn send_row(sink: &mut dyn Sink, id: &str, ch: Channel) -> Result<Option<Option<NaiveDateTime>>> {
    let d = sink.dialect();
    let rows = sink.conn()?.query(
        &format!(
            "SELECT {} FROM {} WHERE {} = {} AND {} = {}",
            d.quote("busy_until"),
            d.quote(SENDS),
            d.quote("alert_id"),
            d.param(1, ColumnType::Text),
            d.quote("channel"),
            d.param(2, ColumnType::Text)
        ),
        &[Value::Text(id.to_string()), Value::Text(ch.name().into())],
    )?;
    Ok(rows.into_iter().next().map(|r| {
        r.into_iter()
            .next()
            .flatten()
            .and_then(|t| parse_datetime(&t, &[]))
    }))
}

fn sends_key(a: &Alert, ch: Channel) -> Vec<(String, Value)> {
    vec![
        ("alert_id".into(), Value::Text(a.id.clone())),
        ("channel".into(), Value::Text(ch.name().into())),
    ]
}

/// Claim the send of `a` on `ch` until `lease` from now, unless it is
/// done or another check holds it.
fn claim(sink: &mut dyn Sink, a: &Alert, ch: Channel, lease: Duration) -> Result<Claim> {
    in_transaction(sink, |sink| {
        // one claimer at a time (SQLite: the write lock of BEGIN IMMEDIATE)
        super::lock(sink, ALERTS)?;
        let d = sink.dialect();
        let now = now();
        let state = sink.conn()?.query(
            &format!(
                "SELECT {}, {} FROM {} WHERE {} = {}",
                d.quote(ch.sent_column()),
                d.quote("cleared_at"),
                d.quote(ALERTS),
                d.quote("id"),
                d.param(1, ColumnType::Text)
            ),
            &[Value::Text(a.id.clone())],
        )?;
        match state.first() {
            Some(r) if r.iter().all(Option::is_none) => {}
            _ => return Ok(Claim::Done),
        }
        sink.start_table(&sends_def(), WriteMode::Append)?;
        // the lease is at most two hours (send_timeout ≤ 3600 s)
        let until = now + chrono::TimeDelta::milliseconds(lease.as_millis() as i64);
        match send_row(sink, &a.id, ch)? {
            Some(Some(busy)) if busy > now => {
                sink.finish_table()?;
                return Ok(Claim::Busy);
            }
            Some(_) => {
                sink.merge(&[MergeOp {
                    key: sends_key(a, ch),
                    sets: vec![
                        ("attempts".into(), Merge::Sum, Value::Int(1)),
                        (
                            "tried_at".into(),
                            Merge::Last,
                            Value::Datetime(epoch_millis(now)),
                        ),
                        (
                            "busy_until".into(),
                            Merge::Last,
                            Value::Datetime(epoch_millis(until)),
                        ),
                    ],
                    row: 0,
                    kept_row: 0,
                    record: Vec::new(),
                }])?;
            }
            None => {
                let def = sends_def();
                let schema: Vec<_> = def
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), dtype_of(c.ty)))
                    .collect();
                let row = vec![
                    Value::Text(a.id.clone()),
                    Value::Text(ch.name().into()),
                    Value::Int(1),
                    Value::Datetime(epoch_millis(now)),
                    Value::Datetime(epoch_millis(until)),
                    Value::Null,
                ];
                let mut out = sink.write(&frame_from_rows(&schema, &[row])?)?;
                let flushed = sink.flush()?;
                out.refused.extend(flushed.refused);
                if let Some(r) = out.refused.first() {
                    return Err(Error::runtime(format!(
                        "{}: recording the {} of alert {}: {}",
                        sink.describe(),
                        ch.what(),
                        a.id,
                        r.detail
                    )));
                }
            }
        }
        sink.finish_table()?;
        Ok(Claim::Taken)
    })
}

/// Record how the send of `a` on `ch` ended: sent (stamped on the alert),
/// or failed (`error`, kept for `alerts list`); the claim is released.
fn stamp(sink: &mut dyn Sink, a: &Alert, ch: Channel, error: Option<&str>) -> Result<()> {
    in_transaction(sink, |sink| {
        super::lock(sink, ALERTS)?;
        if error.is_none() {
            sink.start_table(&alerts_def(), WriteMode::Append)?;
            sink.merge(&[MergeOp {
                key: vec![("id".into(), Value::Text(a.id.clone()))],
                sets: vec![(
                    ch.sent_column().into(),
                    Merge::Last,
                    Value::Datetime(epoch_millis(now())),
                )],
                row: 0,
                kept_row: 0,
                record: Vec::new(),
            }])?;
            sink.finish_table()?;
        }
        sink.start_table(&sends_def(), WriteMode::Append)?;
        sink.merge(&[MergeOp {
            key: sends_key(a, ch),
            sets: vec![
                ("busy_until".into(), Merge::Last, Value::Null),
                (
                    "error".into(),
                    Merge::Last,
                    error.map_or(Value::Null, |e| Value::Text(e.to_string())),
                ),
            ],
            row: 0,
            kept_row: 0,
            record: Vec::new(),
        }])?;
        sink.finish_table()
    })
}

/// What `alerts check` did: references raised, references cleared, sends.
pub type CheckOutcome = ((Vec<String>, Vec<String>), Sent);

/// `repaero alerts check`: raise and clear from the current stock, then send.
pub fn check(cfg: &Config) -> Result<CheckOutcome> {
    let mut sink = crate::sink::open(&cfg.target.url, false)?;
    sink.begin()?;
    let changes = match evaluate(sink.as_mut(), cfg) {
        Ok(c) => c,
        Err(e) => {
            let _ = sink.rollback();
            return Err(e);
        }
    };
    sink.commit()?;
    drop(sink);
    Ok((changes, notify(cfg)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            id: "HYD-2040@1".into(),
            reference: "HYD-2040".into(),
            designation: Some("Joint \"torique\"".into()),
            quantity: 1,
            minimum: 2,
            raised_at: "2026-11-29 08:00:00".into(),
            cleared_at: None,
            email_sent_at: None,
            sms_sent_at: None,
            email_error: None,
            sms_error: None,
        }
    }

    #[test]
    fn templates_escape_json_values() {
        let body =
            "{\"to\": \"{to}\", \"text\": \"{reference} {designation}: {quantity} <= {minimum}\"}";
        let mut v = values(&alert());
        v.push(("to".into(), "+33612345678".into()));
        let out = fill(body, &v, true);
        assert_eq!(
            out,
            "{\"to\": \"+33612345678\", \"text\": \"HYD-2040 Joint \\\"torique\\\": 1 <= 2\"}"
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["text"], "HYD-2040 Joint \"torique\": 1 <= 2");
        assert_eq!(fill("{reference}", &values(&alert()), false), "HYD-2040");
    }

    #[test]
    fn minimums_come_from_config_then_workbook_then_default() {
        let mut cfg = AlertsConfig {
            default_minimum: 1,
            ..Default::default()
        };
        cfg.minimums.insert("hyd-2040".into(), 7);
        assert_eq!(minimum(&cfg, "HYD-2040", Some(3)), 7);
        assert_eq!(minimum(&cfg, "MOT-1001", Some(3)), 3);
        assert_eq!(minimum(&cfg, "MOT-1001", None), 1);
    }
}
