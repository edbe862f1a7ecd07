//! Stock alerts: a part at or under its minimum raises one alert, kept in
//! `stock_alerts` until the part is back above its minimum; it is not
//! raised again in between, however many movements follow. Raising and
//! clearing happen in the transaction of whatever changed the stock;
//! sending (mail, SMS) happens after, and each channel's send is recorded
//! on the alert so that it is sent once.

use std::collections::HashMap;

use serde::Serialize;

use crate::batch::MergeOp;
use crate::batch::parse::epoch_millis;
use crate::batch::{Value, dtype_of, frame_from_rows};
use crate::config::mapping::{ColumnType, Merge, WriteMode};
use crate::config::{AlertsConfig, Config};
use crate::error::{Error, Result};
use crate::sink::{ColumnDef, Sink, TableDef};

use super::int as num;

pub const ALERTS: &str = "stock_alerts";

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
    if sink.count_rows(ALERTS)?.is_none() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = alerts_def()
        .columns
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let mut out: Vec<Alert> = sink
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
        })
        .collect();
    out.sort_by(|a, b| (&a.raised_at, &a.id).cmp(&(&b.raised_at, &b.id)));
    Ok(out)
}

/// Raise an alert for each part at or under its minimum that has none
/// open, clear the open alerts of parts back above it; returns the
/// references raised and cleared. Runs inside the caller's transaction.
pub fn evaluate(sink: &mut dyn Sink, cfg: &Config) -> Result<(Vec<String>, Vec<String>)> {
    // one evaluation at a time: two would raise the same crossing twice
    super::lock(sink, "parts")?;
    let levels = super::levels(sink)?;
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
    pub email: Vec<String>,
    pub sms: Vec<String>,
    pub failed: Vec<String>,
}

/// Fill a template's `{name}` placeholders.
pub fn fill(template: &str, a: &Alert, to: &str, json: bool) -> String {
    let esc = |s: &str| {
        if json {
            let q = serde_json::to_string(s).unwrap_or_default();
            q[1..q.len() - 1].to_string()
        } else {
            s.to_string()
        }
    };
    template
        .replace("{reference}", &esc(&a.reference))
        .replace(
            "{designation}",
            &esc(a.designation.as_deref().unwrap_or("")),
        )
        .replace("{quantity}", &a.quantity.to_string())
        .replace("{minimum}", &a.minimum.to_string())
        .replace("{to}", &esc(to))
}

/// Send the open alerts not sent yet on each configured channel; records
/// each send. A channel that fails is retried at the next check.
pub fn notify(cfg: &Config) -> Result<Sent> {
    let mut sent = Sent::default();
    if cfg.alerts.email.is_none() && cfg.alerts.sms.is_none() {
        return Ok(sent);
    }
    let mut sink = crate::sink::open(&cfg.target.url, false)?;
    sink.begin()?;
    // one sender at a time: a second one waits, then finds them sent
    super::lock(sink.as_mut(), ALERTS)?;
    let pending: Vec<Alert> = list(sink.as_mut())?
        .into_iter()
        .filter(|a| a.cleared_at.is_none())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::runtime(format!("cannot start the I/O runtime: {e}")))?;
    let stamp = epoch_millis(chrono::Utc::now().naive_utc());
    let mut ops = Vec::new();
    for a in &pending {
        let mut sets = Vec::new();
        if let (Some(mail), None) = (&cfg.alerts.email, &a.email_sent_at) {
            match rt.block_on(crate::daemon::mail::send_alert(mail, a)) {
                Ok(()) => {
                    sent.email.push(a.reference.clone());
                    sets.push((
                        "email_sent_at".to_string(),
                        Merge::Last,
                        Value::Datetime(stamp),
                    ));
                }
                Err(e) => sent.failed.push(format!("mail for {}: {e}", a.reference)),
            }
        }
        if let (Some(sms), None) = (&cfg.alerts.sms, &a.sms_sent_at) {
            match rt.block_on(crate::daemon::sms::send_alert(sms, a)) {
                Ok(()) => {
                    sent.sms.push(a.reference.clone());
                    sets.push((
                        "sms_sent_at".to_string(),
                        Merge::Last,
                        Value::Datetime(stamp),
                    ));
                }
                Err(e) => sent.failed.push(format!("SMS for {}: {e}", a.reference)),
            }
        }
        if !sets.is_empty() {
            ops.push(MergeOp {
                key: vec![("id".into(), Value::Text(a.id.clone()))],
                sets,
                row: 0,
                kept_row: 0,
                record: Vec::new(),
            });
        }
    }
    if !ops.is_empty() {
        sink.start_table(&alerts_def(), WriteMode::Append)?;
        sink.merge(&ops)?;
        sink.finish_table()?;
    }
    sink.commit()?;
    Ok(sent)
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
        }
    }

    #[test]
    fn templates_escape_json_values() {
        let body =
            "{\"to\": \"{to}\", \"text\": \"{reference} {designation}: {quantity} <= {minimum}\"}";
        let out = fill(body, &alert(), "+33612345678", true);
        assert_eq!(
            out,
            "{\"to\": \"+33612345678\", \"text\": \"HYD-2040 Joint \\\"torique\\\": 1 <= 2\"}"
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["text"], "HYD-2040 Joint \"torique\": 1 <= 2");
        assert_eq!(fill("{reference}", &alert(), "", false), "HYD-2040");
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
