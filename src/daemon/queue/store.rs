//! What the queue feed keeps in the target, and how a batch of messages
//! is applied there in one transaction (`docs/messages.md`).
//!
//! Tables (created when missing):
//! - `_repaero_messages`: every consumed `message_id` with its content hash
//!   and outcome: a redelivery is known by it, an id reused with other
//!   content is refused;
//! - `_dead_letters`: every refused message, its reason and its body (by
//!   the SHA-256 of the body);
//! - `appointments`: the booking application's appointments, each as its
//!   latest event (by `occurred_at`) carried it;
//! - `interventions`: the migrated table, given the queue's columns
//!   (`reference`, `appointment_id`, `aircraft_registration`,
//!   `technician_ref`, `message_id`) when they are missing;
//! - `billable_items`: what an invoice will be made of (time × rate, parts
//!   × unit price), one row per intervention and line;
//! - `_repaero_queue_notices`: the booked / moved / cancelled notifications
//!   to send, one per event and channel, stamped once sent.
//!
//! Stock goes through [`crate::stock::scans::consume`], the scans' path.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::message::{self, Booking, BookingKind, Completed, Envelope, Event, ID_REUSED, Refusal};
use crate::batch::Value;
use crate::config::Config;
use crate::config::mapping::ColumnType;
use crate::db::{ColumnDef, Conn, Dialect, TableDef};
use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::stock::scans::{Consumption, consume};

pub const MESSAGES: &str = "_repaero_messages";
pub const DEAD_LETTERS: &str = "_dead_letters";
pub const APPOINTMENTS: &str = "appointments";
pub const INTERVENTIONS: &str = "interventions";
pub const BILLABLE: &str = "billable_items";
pub const NOTICES: &str = "_repaero_queue_notices";

/// The outcome of a message, as `_repaero_messages.outcome` and the counts
/// name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its effects are committed.
    Applied,
    /// Consumed before with the same content: nothing changes.
    Redelivery,
    /// A booking event older than the appointment's latest one, or a second
    /// message for an intervention already recorded: recorded, no effect.
    Superseded,
    /// Refused: to the dead letters with its reason.
    Refused(Refusal),
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Redelivery => "redelivery",
            Outcome::Superseded => "superseded",
            Outcome::Refused(_) => "refused",
        }
    }
}

/// A message as it arrived, read.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub routing_key: String,
    pub body: Vec<u8>,
    pub parsed: std::result::Result<Envelope, Refusal>,
}

impl Incoming {
    pub fn new(routing_key: &str, body: Vec<u8>) -> Incoming {
        let parsed = message::parse(&body);
        Incoming {
            routing_key: routing_key.to_string(),
            body,
            parsed,
        }
    }
}

/// What the store needs of the feed's settings.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Hourly rate per technician, in cents.
    pub rates: BTreeMap<String, i64>,
    /// Hourly rate of a technician not in `rates`, in cents.
    pub default_rate: i64,
    /// Events that raise a notification (`appointment.created`…).
    pub notify: Vec<String>,
    /// Channels a notification goes through (`email`, `sms`).
    pub channels: Vec<String>,
}

fn col(name: &str, ty: ColumnType, not_null: bool) -> ColumnDef {
    ColumnDef::new(name, ty, not_null)
}

fn money(name: &str) -> ColumnDef {
    ColumnDef {
        scale: 2,
        ..ColumnDef::new(name, ColumnType::Decimal, false)
    }
}

pub fn messages_def() -> TableDef {
    use ColumnType::*;
    TableDef::owned(
        MESSAGES,
        vec![
            col("message_id", Text, true),
            col("content_hash", Text, true),
            col("event_type", Text, true),
            col("outcome", Text, true),
            col("occurred_at", Datetime, true),
            col("consumed_at", Datetime, true),
        ],
        &["message_id"],
    )
}

pub fn dead_letters_def() -> TableDef {
    use ColumnType::*;
    TableDef::owned(
        DEAD_LETTERS,
        vec![
            col("id", Text, true),
            col("message_id", Text, false),
            col("routing_key", Text, false),
            col("reason", Text, true),
            col("detail", Text, true),
            col("body", Text, false),
            col("body_bytes", Integer, true),
            col("received_at", Datetime, true),
        ],
        &["id"],
    )
}

pub fn appointments_def() -> TableDef {
    use ColumnType::*;
    TableDef::owned(
        APPOINTMENTS,
        vec![
            col("appointment_id", Text, true),
            col("status", Text, true),
            col("client_email", Text, false),
            col("technician_id", Text, false),
            col("aircraft_registration", Text, false),
            col("start_at", Datetime, false),
            col("end_at", Datetime, false),
            col("intervention_type", Text, false),
            col("cancellation_reason", Text, false),
            col("reschedule_count", Integer, true),
            col("last_event", Text, false),
            col("last_occurred_ms", Integer, false),
            col("last_message_id", Text, false),
            col("completed_by", Text, false),
            col("updated_at", Datetime, true),
        ],
        &["appointment_id"],
    )
}

/// `interventions` when no migration created it: the migration's columns
/// (client and technician as the Access base numbers them) and the queue's.
pub fn interventions_def() -> TableDef {
    use ColumnType::*;
    let mut columns = vec![
        col("id", Integer, true),
        col("client_id", Integer, false),
        col("technician_id", Integer, false),
        col("performed_at", Datetime, false),
        col("duration_minutes", Integer, false),
        col("intervention_type", Text, false),
        col("status", Text, true),
        col("analysed", Boolean, false),
        ColumnDef {
            precision: 19,
            scale: 4,
            ..ColumnDef::new("amount_excl_tax", Decimal, false)
        },
        col("comment", Text, false),
    ];
    columns.extend(intervention_queue_columns());
    TableDef::owned(INTERVENTIONS, columns, &["id"])
}

/// The columns the queue adds to a migrated `interventions`.
fn intervention_queue_columns() -> Vec<ColumnDef> {
    use ColumnType::*;
    vec![
        col("reference", Text, false),
        col("appointment_id", Text, false),
        col("aircraft_registration", Text, false),
        col("technician_ref", Text, false),
        col("message_id", Text, false),
    ]
}

pub fn billable_def() -> TableDef {
    use ColumnType::*;
    TableDef::owned(
        BILLABLE,
        vec![
            col("id", Text, true),
            col("intervention_id", Text, true),
            col("appointment_id", Text, false),
            col("technician_id", Text, true),
            col("kind", Text, true),
            col("reference", Text, true),
            col("quantity", Integer, true),
            col("unit", Text, true),
            money("unit_price"),
            money("amount"),
            col("note", Text, false),
            col("completed_at", Datetime, true),
        ],
        &["id"],
    )
}

pub fn notices_def() -> TableDef {
    use ColumnType::*;
    TableDef::owned(
        NOTICES,
        vec![
            col("message_id", Text, true),
            col("channel", Text, true),
            col("appointment_id", Text, true),
            col("event_type", Text, true),
            col("subject", Text, true),
            col("body", Text, true),
            col("fields", Text, true),
            col("created_at", Datetime, true),
            col("attempts", Integer, true),
            col("tried_at", Datetime, false),
            col("busy_until", Datetime, false),
            col("sent_at", Datetime, false),
            col("error", Text, false),
        ],
        &["message_id", "channel"],
    )
}

/// Create the feed's tables when missing, and give a migrated
/// `interventions` the queue's columns. Its own transaction.
pub fn prepare(sink: &mut dyn Sink) -> Result<()> {
    sink.begin()?;
    let done = (|| -> Result<()> {
        let conn = sink.conn()?;
        let d = conn.dialect();
        for t in [
            messages_def(),
            dead_letters_def(),
            appointments_def(),
            billable_def(),
            notices_def(),
        ] {
            if !conn.table_exists(&t.name)? {
                conn.batch(&d.create_table(&t, &t.name, d != Dialect::Oracle))?;
            }
        }
        if !conn.table_exists(INTERVENTIONS)? {
            let t = interventions_def();
            conn.batch(&d.create_table(&t, INTERVENTIONS, d != Dialect::Oracle))?;
        } else {
            let have: HashSet<String> = conn
                .columns(INTERVENTIONS)?
                .into_iter()
                .map(|c| c.to_lowercase())
                .collect();
            for c in intervention_queue_columns() {
                if !have.contains(&c.name) {
                    let sql = match d {
                        Dialect::Oracle => format!(
                            "ALTER TABLE {} ADD ({} {})",
                            d.quote(INTERVENTIONS),
                            d.quote(&c.name),
                            d.type_sql(&c)
                        ),
                        _ => format!(
                            "ALTER TABLE {} ADD COLUMN {} {}",
                            d.quote(INTERVENTIONS),
                            d.quote(&c.name),
                            d.type_sql(&c)
                        ),
                    };
                    conn.batch(&sql)?;
                }
            }
            // walk-in work has no client the booking application names
            if not_null(conn, INTERVENTIONS, "client_id")? {
                match d {
                    Dialect::Postgres => conn.batch(&format!(
                        "ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL",
                        d.quote(INTERVENTIONS),
                        d.quote("client_id")
                    ))?,
                    Dialect::Oracle => conn.batch(&format!(
                        "ALTER TABLE {} MODIFY ({} NULL)",
                        d.quote(INTERVENTIONS),
                        d.quote("client_id")
                    ))?,
                    Dialect::Sqlite => relax_sqlite_not_null(conn, INTERVENTIONS, "client_id")?,
                }
            }
        }
        Ok(())
    })();
    match done {
        Ok(()) => sink.commit(),
        Err(e) => {
            let _ = sink.rollback();
            Err(e)
        }
    }
}

/// Drop a column's NOT NULL on SQLite, which has no ALTER for it: the
/// table's recorded CREATE statement is edited in place, the way SQLite's
/// documentation gives for removing a NOT NULL constraint (the rows' format
/// does not change; `schema_version` is bumped so every connection reloads
/// the schema). Inside the caller's transaction.
fn relax_sqlite_not_null(conn: &mut dyn Conn, table: &str, column: &str) -> Result<()> {
    let ddl = conn
        .query_one(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
            &[Value::Text(table.into())],
        )?
        .unwrap_or_default();
    let re = regex::Regex::new(&format!(
        r#"(?i)("{}"\s+[a-z]+(?:\([0-9, ]+\))?)\s+NOT NULL"#,
        regex::escape(column)
    ))
    .map_err(|e| Error::runtime(format!("relaxing {table}.{column}: {e}")))?;
    if !re.is_match(&ddl) {
        return Err(Error::config(format!(
            "{}: {table}.{column} is NOT NULL in a table repaero did not create ({ddl:?}); walk-in work has no client: recreate {table} with a nullable {column} (docs/messages.md)",
            conn.describe()
        )));
    }
    let relaxed = re.replace(&ddl, "$1").into_owned();
    let version: i64 = conn
        .query_one("PRAGMA schema_version", &[])?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    conn.batch("PRAGMA writable_schema = ON")?;
    let changed = conn.execute(
        "UPDATE sqlite_master SET sql = ?1 WHERE type = 'table' AND name = ?2",
        &[Value::Text(relaxed), Value::Text(table.into())],
    );
    let bumped = conn.batch(&format!("PRAGMA schema_version = {}", version + 1));
    conn.batch("PRAGMA writable_schema = OFF")?;
    changed?;
    bumped?;
    tracing::info!("{table}.{column}: NOT NULL dropped (walk-in work has no client)");
    Ok(())
}

fn not_null(conn: &mut dyn Conn, table: &str, column: &str) -> Result<bool> {
    let d = conn.dialect();
    let sql = match d {
        Dialect::Sqlite => {
            format!("SELECT \"notnull\" FROM pragma_table_info('{table}') WHERE name = '{column}'")
        }
        Dialect::Postgres => format!(
            "SELECT CASE WHEN is_nullable = 'NO' THEN 1 ELSE 0 END FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = '{table}' AND column_name = '{column}'"
        ),
        Dialect::Oracle => format!(
            "SELECT CASE WHEN NULLABLE = 'N' THEN 1 ELSE 0 END FROM USER_TAB_COLUMNS WHERE TABLE_NAME = '{}' AND COLUMN_NAME = '{}'",
            table.to_uppercase(),
            column.to_uppercase()
        ),
    };
    Ok(conn.query_one(&sql, &[])?.as_deref() == Some("1"))
}

fn insert_sql(d: Dialect, t: &TableDef) -> String {
    let names: Vec<String> = t.columns.iter().map(|c| d.quote(&c.name)).collect();
    let params: Vec<String> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| d.param(i + 1, c.ty))
        .collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        d.quote(&t.name),
        names.join(", "),
        params.join(", ")
    )
}

fn upsert(d: Dialect, t: &TableDef) -> String {
    let cols: Vec<(&str, String)> = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), d.param(i + 1, c.ty)))
        .collect();
    let key: Vec<&str> = t.key.iter().map(String::as_str).collect();
    d.upsert_sql(&t.name, &cols, &key)
}

/// `SELECT cols FROM table WHERE col IN (…)`, in chunks.
fn select_in(
    conn: &mut dyn Conn,
    table: &str,
    cols: &[&str],
    key: &str,
    values: &[String],
) -> Result<Vec<Vec<Option<String>>>> {
    let d = conn.dialect();
    let mut out = Vec::new();
    let shown: Vec<String> = cols.iter().map(|c| d.quote(c)).collect();
    for chunk in values.chunks(500) {
        let marks: Vec<String> = (1..=chunk.len())
            .map(|i| d.param(i, ColumnType::Text))
            .collect();
        let params: Vec<Value> = chunk.iter().map(|v| Value::Text(v.clone())).collect();
        out.extend(conn.query(
            &format!(
                "SELECT {} FROM {} WHERE {} IN ({})",
                shown.join(", "),
                d.quote(table),
                d.quote(key),
                marks.join(", ")
            ),
            &params,
        )?);
    }
    Ok(out)
}

fn ms(t: DateTime<Utc>) -> Value {
    Value::Datetime(t.timestamp_millis())
}

fn opt_text(s: &Option<String>) -> Value {
    s.clone().map_or(Value::Null, Value::Text)
}

fn int(s: &Option<String>) -> Option<i64> {
    s.as_deref()
        .and_then(|v| v.parse::<f64>().ok())
        .map(|f| f as i64)
}

/// Cents as a decimal text (`1234` → `12.34`).
pub fn cents_text(c: i64) -> String {
    let sign = if c < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", c.abs() / 100, c.abs() % 100)
}

/// A decimal text as cents, rounded (`12.5` → 1250).
pub fn cents(s: &str) -> Option<i64> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(|f| (f * 100.0).round() as i64)
}

/// An appointment as the batch sees it.
#[derive(Debug, Clone, Default)]
struct Appointment {
    id: String,
    status: String,
    client_email: Option<String>,
    technician_id: Option<String>,
    aircraft_registration: Option<String>,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    intervention_type: Option<String>,
    cancellation_reason: Option<String>,
    reschedule_count: i64,
    last_event: Option<String>,
    last_occurred_ms: Option<i64>,
    last_message_id: Option<String>,
    completed_by: Option<String>,
    dirty: bool,
}

impl Appointment {
    fn status(&self) -> &str {
        if self.completed_by.is_some() {
            "completed"
        } else {
            &self.status
        }
    }
}

const APPT_COLS: [&str; 14] = [
    "appointment_id",
    "status",
    "client_email",
    "technician_id",
    "aircraft_registration",
    "start_at",
    "end_at",
    "intervention_type",
    "cancellation_reason",
    "reschedule_count",
    "last_event",
    "last_occurred_ms",
    "last_message_id",
    "completed_by",
];

/// What a committed batch leaves to do and to count.
#[derive(Debug, Default)]
pub struct BatchResult {
    /// One per incoming message, in order.
    pub outcomes: Vec<Outcome>,
    /// Notifications recorded (to send now).
    pub notices: u64,
    /// Consumptions of parts the stock does not know.
    pub unknown_parts: Vec<String>,
    pub alerts_raised: Vec<String>,
}

/// Apply a batch of messages in one transaction; nothing of it is
/// committed when it fails.
pub fn apply_batch(
    sink: &mut dyn Sink,
    cfg: &Config,
    rules: &Rules,
    items: &[Incoming],
) -> Result<BatchResult> {
    sink.begin()?;
    match apply_in(sink, cfg, rules, items) {
        Ok(r) => {
            sink.commit()?;
            Ok(r)
        }
        Err(e) => {
            let _ = sink.rollback();
            Err(e)
        }
    }
}

fn apply_in(
    sink: &mut dyn Sink,
    cfg: &Config,
    rules: &Rules,
    items: &[Incoming],
) -> Result<BatchResult> {
    let now = Utc::now();
    // one batch at a time over every consumer (PostgreSQL; SQLite's write
    // lock does it): what a batch reads is what it writes back
    sink.conn()?.lock_table(MESSAGES)?;
    let d = sink.dialect();
    let conn = sink.conn()?;
    // messages consumed before
    let ids: Vec<String> = items
        .iter()
        .filter_map(|i| i.parsed.as_ref().ok().map(|e| e.message_id.clone()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut known: HashMap<String, String> = select_in(
        conn,
        MESSAGES,
        &["message_id", "content_hash"],
        "message_id",
        &ids,
    )?
    .into_iter()
    .filter_map(|r| Some((r[0].clone()?, r[1].clone()?)))
    .collect();
    // appointments the batch touches
    let mut appt_ids: HashSet<String> = HashSet::new();
    let mut int_refs: HashSet<String> = HashSet::new();
    for i in items {
        match i.parsed.as_ref().map(|e| &e.event) {
            Ok(Event::Booking(b)) => {
                appt_ids.insert(b.appointment_id.clone());
            }
            Ok(Event::Completed(c)) => {
                if let Some(a) = &c.appointment_id {
                    appt_ids.insert(a.clone());
                }
                int_refs.insert(c.intervention_id.clone());
            }
            Err(_) => {}
        }
    }
    let appt_ids: Vec<String> = appt_ids.into_iter().collect();
    let mut appts: HashMap<String, Appointment> = HashMap::new();
    for r in select_in(conn, APPOINTMENTS, &APPT_COLS, "appointment_id", &appt_ids)? {
        let Some(id) = r[0].clone() else { continue };
        let time = |v: &Option<String>| {
            v.as_deref()
                .and_then(|s| crate::batch::parse::parse_datetime(s, &[]))
                .map(|t| t.and_utc().timestamp_millis())
        };
        appts.insert(
            id.clone(),
            Appointment {
                id,
                status: r[1].clone().unwrap_or_default(),
                client_email: r[2].clone(),
                technician_id: r[3].clone(),
                aircraft_registration: r[4].clone(),
                start_ms: time(&r[5]),
                end_ms: time(&r[6]),
                intervention_type: r[7].clone(),
                cancellation_reason: r[8].clone(),
                reschedule_count: int(&r[9]).unwrap_or(0),
                last_event: r[10].clone(),
                last_occurred_ms: int(&r[11]),
                last_message_id: r[12].clone(),
                completed_by: r[13].clone(),
                dirty: false,
            },
        );
    }
    let int_refs: Vec<String> = int_refs.into_iter().collect();
    let mut recorded: HashSet<String> =
        select_in(conn, INTERVENTIONS, &["reference"], "reference", &int_refs)?
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();

    let msg_sql = insert_sql(d, &messages_def());
    let mut out = BatchResult::default();
    let mut completions: Vec<(&Envelope, &Completed)> = Vec::new();
    let mut notices: Vec<Vec<Value>> = Vec::new();
    let mut dead: Vec<(&Incoming, Refusal)> = Vec::new();
    for item in items {
        let env = match &item.parsed {
            Err(r) => {
                dead.push((item, r.clone()));
                out.outcomes.push(Outcome::Refused(r.clone()));
                continue;
            }
            Ok(e) => e,
        };
        if let Some(hash) = known.get(&env.message_id) {
            let o = if *hash == env.content_hash {
                Outcome::Redelivery
            } else {
                let r = Refusal {
                    reason: ID_REUSED,
                    detail: format!(
                        "message_id {} was consumed with other content (content hash {} here, {} then)",
                        env.message_id,
                        &env.content_hash[..12],
                        &hash[..hash.len().min(12)]
                    ),
                };
                dead.push((item, r.clone()));
                Outcome::Refused(r)
            };
            out.outcomes.push(o);
            continue;
        }
        let outcome = match &env.event {
            Event::Booking(b) => {
                let applied = apply_booking(&mut appts, env, b);
                if applied && rules.notify.iter().any(|n| n == b.kind.event_type()) {
                    let (subject, body, fields) = notice_text(b);
                    for ch in &rules.channels {
                        notices.push(vec![
                            Value::Text(env.message_id.clone()),
                            Value::Text(ch.clone()),
                            Value::Text(b.appointment_id.clone()),
                            Value::Text(b.kind.event_type().into()),
                            Value::Text(subject.clone()),
                            Value::Text(body.clone()),
                            Value::Text(fields.clone()),
                            ms(now),
                            Value::Int(0),
                            Value::Null,
                            Value::Null,
                            Value::Null,
                            Value::Null,
                        ]);
                    }
                }
                if applied {
                    Outcome::Applied
                } else {
                    Outcome::Superseded
                }
            }
            Event::Completed(c) => {
                if recorded.insert(c.intervention_id.clone()) {
                    if let Some(a) = &c.appointment_id {
                        let appt = appts.entry(a.clone()).or_insert_with(|| Appointment {
                            id: a.clone(),
                            status: "scheduled".into(),
                            technician_id: Some(c.technician_id.clone()),
                            aircraft_registration: Some(c.aircraft_registration.clone()),
                            intervention_type: Some(c.intervention_type.clone()),
                            ..Appointment::default()
                        });
                        appt.completed_by = Some(c.intervention_id.clone());
                        appt.dirty = true;
                    }
                    completions.push((env, c));
                    Outcome::Applied
                } else {
                    Outcome::Superseded
                }
            }
        };
        conn.execute(
            &msg_sql,
            &[
                Value::Text(env.message_id.clone()),
                Value::Text(env.content_hash.clone()),
                Value::Text(env.event.event_type().into()),
                Value::Text(outcome.name().into()),
                ms(env.occurred_at),
                ms(now),
            ],
        )?;
        known.insert(env.message_id.clone(), env.content_hash.clone());
        out.outcomes.push(outcome);
    }

    // dead letters: by the body's checksum, once
    if !dead.is_empty() {
        let t = dead_letters_def();
        let sql = insert_sql(d, &t);
        let mut ids: Vec<String> = dead.iter().map(|(i, _)| body_id(&i.body)).collect();
        ids.dedup();
        let have: HashSet<String> = select_in(conn, DEAD_LETTERS, &["id"], "id", &ids)?
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
        let mut written: HashSet<String> = HashSet::new();
        for (item, r) in &dead {
            let id = body_id(&item.body);
            if have.contains(&id) || !written.insert(id.clone()) {
                continue;
            }
            conn.execute(
                &sql,
                &[
                    Value::Text(id),
                    opt_text(&message_id_of(item)),
                    Value::Text(item.routing_key.clone()),
                    Value::Text(r.reason.into()),
                    Value::Text(r.detail.clone()),
                    Value::Text(shown_body(&item.body)),
                    Value::Int(item.body.len() as i64),
                    ms(now),
                ],
            )?;
        }
    }

    if !notices.is_empty() {
        let sql = insert_sql(d, &notices_def());
        for n in &notices {
            conn.execute(&sql, n)?;
        }
        out.notices = notices.len() as u64;
    }

    // interventions, their billable lines, the parts they consumed
    if !completions.is_empty() {
        let has_parts = conn.table_exists("parts")?;
        let priced = has_parts
            && conn
                .columns("parts")?
                .iter()
                .any(|c| c.eq_ignore_ascii_case("unit_price"));
        let prices: HashMap<String, Option<i64>> = if priced {
            conn.select_text("parts", &["reference".into(), "unit_price".into()])?
        } else if has_parts {
            conn.select_text("parts", &["reference".into()])?
                .into_iter()
                .map(|mut r| {
                    r.push(None);
                    r
                })
                .collect()
        } else {
            Vec::new()
        }
        .into_iter()
        .filter_map(|r| {
            Some((
                r[0].clone()?.to_uppercase(),
                r[1].as_deref().and_then(cents),
            ))
        })
        .collect();
        let clients = client_ids(conn)?;
        let int_sql = {
            let t = interventions_def();
            let cols = [
                "id",
                "client_id",
                "performed_at",
                "duration_minutes",
                "intervention_type",
                "status",
                "amount_excl_tax",
                "reference",
                "appointment_id",
                "aircraft_registration",
                "technician_ref",
                "message_id",
            ];
            let params: Vec<String> = cols
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let ty = t
                        .columns
                        .iter()
                        .find(|x| x.name == *c)
                        .map_or(ColumnType::Text, |x| x.ty);
                    d.param(i + 1, ty)
                })
                .collect();
            format!(
                "INSERT INTO {} ({}) VALUES ({})",
                d.quote(INTERVENTIONS),
                cols.iter()
                    .map(|c| d.quote(c))
                    .collect::<Vec<_>>()
                    .join(", "),
                params.join(", ")
            )
        };
        let bill_sql = insert_sql(d, &billable_def());
        let mut consumptions = Vec::new();
        for (env, c) in &completions {
            let rate = rules
                .rates
                .get(&c.technician_id)
                .copied()
                .unwrap_or(rules.default_rate);
            let time_amount = (rate * c.time_spent_minutes + 30) / 60;
            let mut total = time_amount;
            let mut lines: Vec<Vec<Value>> = vec![vec![
                Value::Text(format!("{}/time", c.intervention_id)),
                Value::Text(c.intervention_id.clone()),
                opt_text(&c.appointment_id),
                Value::Text(c.technician_id.clone()),
                Value::Text("time".into()),
                Value::Text(c.technician_id.clone()),
                Value::Int(c.time_spent_minutes),
                Value::Text("min".into()),
                Value::Text(cents_text(rate)),
                Value::Text(cents_text(time_amount)),
                if rules.rates.contains_key(&c.technician_id) {
                    Value::Null
                } else {
                    Value::Text("default rate".into())
                },
                ms(c.completed_at),
            ]];
            for (n, (reference, qty)) in c.parts.iter().enumerate() {
                let (price, amount, note) = match prices.get(reference) {
                    Some(Some(p)) => (
                        Value::Text(cents_text(*p)),
                        Value::Text(cents_text(p * qty)),
                        Value::Null,
                    ),
                    Some(None) => (
                        Value::Null,
                        Value::Null,
                        Value::Text("no unit price in parts".into()),
                    ),
                    None => (
                        Value::Null,
                        Value::Null,
                        Value::Text("reference unknown to the stock".into()),
                    ),
                };
                if let Some(Some(p)) = prices.get(reference) {
                    total += p * qty;
                }
                lines.push(vec![
                    Value::Text(format!("{}/part/{reference}", c.intervention_id)),
                    Value::Text(c.intervention_id.clone()),
                    opt_text(&c.appointment_id),
                    Value::Text(c.technician_id.clone()),
                    Value::Text("part".into()),
                    Value::Text(reference.clone()),
                    Value::Int(*qty),
                    Value::Text("unit".into()),
                    price,
                    amount,
                    note,
                    ms(c.completed_at),
                ]);
                consumptions.push(Consumption {
                    at: c.completed_at.naive_utc(),
                    reference: reference.clone(),
                    quantity: *qty,
                    operator: c.technician_id.clone(),
                    origin: format!("queue:{}", c.intervention_id),
                    line: n as u64 + 1,
                });
            }
            let client = c
                .appointment_id
                .as_ref()
                .and_then(|a| appts.get(a))
                .and_then(|a| a.client_email.as_ref())
                .and_then(|e| clients.get(&e.to_lowercase()).copied());
            conn.execute(
                &int_sql,
                &[
                    Value::Int(intervention_key(&c.intervention_id)),
                    client.map_or(Value::Null, Value::Int),
                    ms(c.completed_at),
                    Value::Int(c.time_spent_minutes),
                    Value::Text(c.intervention_type.clone()),
                    Value::Text("Terminee".into()),
                    Value::Text(cents_text(total)),
                    Value::Text(c.intervention_id.clone()),
                    opt_text(&c.appointment_id),
                    Value::Text(c.aircraft_registration.clone()),
                    Value::Text(c.technician_id.clone()),
                    Value::Text(env.message_id.clone()),
                ],
            )?;
            for l in &lines {
                conn.execute(&bill_sql, l)?;
            }
        }
        if has_parts && !consumptions.is_empty() {
            let r = consume(sink, cfg, &consumptions)?;
            out.unknown_parts = r.unknown;
            out.alerts_raised = r.alerts_raised;
        } else {
            out.unknown_parts = consumptions
                .iter()
                .map(|c| format!("{} {}", c.origin, c.reference))
                .collect();
        }
    }

    // the appointments, as the batch leaves them
    let conn = sink.conn()?;
    let sql = upsert(d, &appointments_def());
    let mut touched: Vec<&Appointment> = appts.values().filter(|a| a.dirty).collect();
    touched.sort_by(|a, b| a.id.cmp(&b.id));
    for a in touched {
        let t = |v: Option<i64>| v.map_or(Value::Null, Value::Datetime);
        conn.execute(
            &sql,
            &[
                Value::Text(a.id.clone()),
                Value::Text(a.status().into()),
                opt_text(&a.client_email),
                opt_text(&a.technician_id),
                opt_text(&a.aircraft_registration),
                t(a.start_ms),
                t(a.end_ms),
                opt_text(&a.intervention_type),
                opt_text(&a.cancellation_reason),
                Value::Int(a.reschedule_count),
                opt_text(&a.last_event),
                a.last_occurred_ms.map_or(Value::Null, Value::Int),
                opt_text(&a.last_message_id),
                opt_text(&a.completed_by),
                ms(now),
            ],
        )?;
    }
    Ok(out)
}

/// Apply a booking event to its appointment; false when an event that
/// happened later is applied already (the older one changes nothing but
/// the count of reschedules, which counts every reschedule once).
fn apply_booking(appts: &mut HashMap<String, Appointment>, env: &Envelope, b: &Booking) -> bool {
    let a = appts
        .entry(b.appointment_id.clone())
        .or_insert_with(|| Appointment {
            id: b.appointment_id.clone(),
            ..Appointment::default()
        });
    a.dirty = true;
    if b.kind == BookingKind::Rescheduled {
        a.reschedule_count += 1;
    }
    let at = env.occurred_at.timestamp_millis();
    // the later event wins; two at the same instant: the greater id, so
    // that the order of arrival never matters
    let newer = match (a.last_occurred_ms, &a.last_message_id) {
        (None, _) => true,
        (Some(l), last) => (at, env.message_id.as_str()) > (l, last.as_deref().unwrap_or("")),
    };
    if !newer {
        return false;
    }
    a.status = b.kind.status().into();
    a.client_email = Some(b.client_email.clone());
    a.technician_id = Some(b.technician_id.clone());
    a.aircraft_registration = Some(b.aircraft_registration.clone());
    a.start_ms = Some(b.start.timestamp_millis());
    a.end_ms = Some(b.end.timestamp_millis());
    a.intervention_type = Some(b.intervention_type.clone());
    a.cancellation_reason = b.cancellation_reason.clone();
    a.last_event = Some(b.kind.event_type().into());
    a.last_occurred_ms = Some(at);
    a.last_message_id = Some(env.message_id.clone());
    true
}

/// The notification of a booking event: subject, text, and its fields (JSON).
fn notice_text(b: &Booking) -> (String, String, String) {
    let paris = |t: DateTime<Utc>| {
        t.with_timezone(&chrono_tz::Europe::Paris)
            .format("%d/%m/%Y %H:%M")
            .to_string()
    };
    let (what, verb) = match b.kind {
        BookingKind::Created => ("Intervention réservée", "réservée"),
        BookingKind::Rescheduled => ("Intervention déplacée", "déplacée"),
        BookingKind::Cancelled => ("Intervention annulée", "annulée"),
    };
    let subject = format!(
        "{what} : {} ({})",
        b.appointment_id, b.aircraft_registration
    );
    let mut body = format!(
        "L'intervention {} « {} » sur {} est {verb} : du {} au {} (heure de Paris), technicien {}, client {}.",
        b.appointment_id,
        b.intervention_type,
        b.aircraft_registration,
        paris(b.start),
        paris(b.end),
        b.technician_id,
        b.client_email
    );
    if let Some(r) = b.cancellation_reason.as_ref().filter(|r| !r.is_empty()) {
        body.push_str(&format!("\nMotif : {r}"));
    }
    body.push_str("\n\n— repaero");
    let fields = serde_json::json!({
        "reference": b.appointment_id,
        "designation": format!("{what} {}", b.aircraft_registration),
        "appointment": b.appointment_id,
        "event": b.kind.event_type(),
        "start": paris(b.start),
        "end": paris(b.end),
        "technician": b.technician_id,
        "aircraft": b.aircraft_registration,
        "client": b.client_email,
        "text": format!("{what} {} {} {}", b.appointment_id, b.aircraft_registration, paris(b.start)),
        "quantity": "",
        "minimum": "",
    });
    (subject, body, fields.to_string())
}

/// The integer key of an intervention in `interventions.id` (the migrated
/// table numbers its rows): the first 40 bits of the SHA-256 of its
/// reference, above the Access base's numbers.
pub fn intervention_key(reference: &str) -> i64 {
    (1i64 << 40) + crate::db::dialect::hash40(reference) as i64
}

fn client_ids(conn: &mut dyn Conn) -> Result<HashMap<String, i64>> {
    let cols: Vec<String> = conn
        .columns("clients")?
        .into_iter()
        .map(|c| c.to_lowercase())
        .collect();
    if !(cols.iter().any(|c| c == "email") && cols.iter().any(|c| c == "id")) {
        return Ok(HashMap::new());
    }
    Ok(conn
        .select_text("clients", &["email".into(), "id".into()])?
        .into_iter()
        .filter_map(|r| Some((r[0].clone()?.to_lowercase(), int(&r[1])?)))
        .collect())
}

/// A dead letter's key: the SHA-256 of its body.
pub fn body_id(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(body))
}

fn message_id_of(item: &Incoming) -> Option<String> {
    match &item.parsed {
        Ok(e) => Some(e.message_id.clone()),
        Err(_) => serde_json::from_slice::<serde_json::Value>(&item.body)
            .ok()
            .and_then(|v| v.get("message_id")?.as_str().map(str::to_string)),
    }
}

/// At most 64 KiB of a body, as text.
fn shown_body(body: &[u8]) -> String {
    const KEEP: usize = 64 * 1024;
    let cut = &body[..body.len().min(KEEP)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if body.len() > KEEP {
        s.push_str(&format!("… ({} bytes in all)", body.len()));
    }
    s
}

/// A dead letter, as `repaero queue dead` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    pub id: String,
    pub message_id: Option<String>,
    pub routing_key: Option<String>,
    pub reason: String,
    pub detail: String,
    pub body_bytes: i64,
    pub received_at: String,
}

/// Every dead letter, oldest first.
pub fn dead_letters(conn: &mut dyn Conn) -> Result<Vec<DeadLetter>> {
    if !conn.table_exists(DEAD_LETTERS)? {
        return Ok(Vec::new());
    }
    let cols: Vec<String> = [
        "id",
        "message_id",
        "routing_key",
        "reason",
        "detail",
        "body_bytes",
        "received_at",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut out: Vec<DeadLetter> = conn
        .select_text(DEAD_LETTERS, &cols)?
        .into_iter()
        .map(|r| DeadLetter {
            id: r[0].clone().unwrap_or_default(),
            message_id: r[1].clone(),
            routing_key: r[2].clone(),
            reason: r[3].clone().unwrap_or_default(),
            detail: r[4].clone().unwrap_or_default(),
            body_bytes: int(&r[5]).unwrap_or(0),
            received_at: r[6].clone().unwrap_or_default(),
        })
        .collect();
    out.sort_by(|a, b| (&a.received_at, &a.id).cmp(&(&b.received_at, &b.id)));
    Ok(out)
}

/// A notification waiting to be sent.
#[derive(Debug, Clone)]
pub struct Notice {
    pub message_id: String,
    pub channel: String,
    pub subject: String,
    pub body: String,
    pub fields: Vec<(String, String)>,
}

/// Claim up to `limit` notifications not sent and not claimed by a live
/// sender, until `lease_ms` from now. Its own transaction.
pub fn claim_notices(sink: &mut dyn Sink, limit: usize, lease_ms: i64) -> Result<Vec<Notice>> {
    sink.begin()?;
    let r = (|| -> Result<Vec<Notice>> {
        let conn = sink.conn()?;
        conn.lock_table(NOTICES)?;
        let d = conn.dialect();
        let now = Utc::now().timestamp_millis();
        let q = |c: &str| d.quote(c);
        let rows = conn.query(
            &format!(
                "SELECT {}, {}, {}, {}, {} FROM {} WHERE {} IS NULL AND ({} IS NULL OR {} < {}) ORDER BY {}",
                q("message_id"),
                q("channel"),
                q("subject"),
                q("body"),
                q("fields"),
                q(NOTICES),
                q("sent_at"),
                q("busy_until"),
                q("busy_until"),
                d.param(1, ColumnType::Datetime),
                q("created_at")
            ),
            &[Value::Datetime(now)],
        )?;
        let claim = format!(
            "UPDATE {} SET {} = {}, {} = {} + 1, {} = {} WHERE {} = {} AND {} = {}",
            q(NOTICES),
            q("busy_until"),
            d.param(1, ColumnType::Datetime),
            q("attempts"),
            q("attempts"),
            q("tried_at"),
            d.param(2, ColumnType::Datetime),
            q("message_id"),
            d.param(3, ColumnType::Text),
            q("channel"),
            d.param(4, ColumnType::Text)
        );
        let mut out = Vec::new();
        for r in rows.into_iter().take(limit) {
            let (Some(id), Some(ch)) = (r[0].clone(), r[1].clone()) else {
                continue;
            };
            conn.execute(
                &claim,
                &[
                    Value::Datetime(now + lease_ms),
                    Value::Datetime(now),
                    Value::Text(id.clone()),
                    Value::Text(ch.clone()),
                ],
            )?;
            let fields: Vec<(String, String)> = r[4]
                .as_deref()
                .and_then(|f| {
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(f).ok()
                })
                .map(|m| {
                    m.into_iter()
                        .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Notice {
                message_id: id,
                channel: ch,
                subject: r[2].clone().unwrap_or_default(),
                body: r[3].clone().unwrap_or_default(),
                fields,
            });
        }
        Ok(out)
    })();
    match r {
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

/// Stamp a notification sent, or note why it failed (it is retried once
/// its claim lapses).
pub fn stamp_notice(sink: &mut dyn Sink, n: &Notice, error: Option<&str>) -> Result<()> {
    let conn = sink.conn()?;
    let d = conn.dialect();
    let q = |c: &str| d.quote(c);
    let now = Utc::now().timestamp_millis();
    let sql = format!(
        "UPDATE {} SET {} = {}, {} = {}, {} = {} WHERE {} = {} AND {} = {}",
        q(NOTICES),
        q("sent_at"),
        d.param(1, ColumnType::Datetime),
        q("error"),
        d.param(2, ColumnType::Text),
        q("busy_until"),
        d.param(3, ColumnType::Datetime),
        q("message_id"),
        d.param(4, ColumnType::Text),
        q("channel"),
        d.param(5, ColumnType::Text)
    );
    let params = match error {
        None => [Value::Datetime(now), Value::Null, Value::Null],
        // a failed send waits a little before another try
        Some(e) => [
            Value::Null,
            Value::Text(e.to_string()),
            Value::Datetime(now + 30_000),
        ],
    };
    let mut all = params.to_vec();
    all.push(Value::Text(n.message_id.clone()));
    all.push(Value::Text(n.channel.clone()));
    conn.execute(&sql, &all)?;
    Ok(())
}

/// Counts for the heartbeat: dead letters, notifications not sent.
pub fn counts(conn: &mut dyn Conn) -> Result<(u64, u64)> {
    let dead = conn.count_rows(DEAD_LETTERS)?.unwrap_or(0);
    let d = conn.dialect();
    let pending = if conn.table_exists(NOTICES)? {
        conn.query_one(
            &format!(
                "SELECT count(*) FROM {} WHERE {} IS NULL",
                d.quote(NOTICES),
                d.quote("sent_at")
            ),
            &[],
        )?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
    } else {
        0
    };
    Ok((dead, pending))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_in_cents() {
        assert_eq!(cents("12.5"), Some(1250));
        assert_eq!(cents("0.1"), Some(10));
        assert_eq!(cents("x"), None);
        assert_eq!(cents_text(1234), "12.34");
        assert_eq!(cents_text(5), "0.05");
        assert_eq!(cents_text(-250), "-2.50");
    }

    #[test]
    fn intervention_keys_are_stable_and_above_the_access_numbers() {
        let k = intervention_key("INT-2026-0107");
        assert_eq!(k, intervention_key("INT-2026-0107"));
        assert!(k > 1 << 40);
        assert_ne!(k, intervention_key("INT-2026-0108"));
    }
}
