//! What the bank feed keeps in the target: the payment attempts it issued
//! or heard of (`payment_attempts`), the notifications it applied
//! (`payment_notifications`, append-only, one row per distinct
//! notification), and their effects on the billing tables the billing job
//! loads: a row in `payments` and the invoice's `status`.
//!
//! Each notification is applied in one transaction that holds the attempts
//! table (PostgreSQL: `LOCK TABLE`; SQLite: `BEGIN IMMEDIATE`), so that two
//! deliveries of one notification arriving together are applied once.

use std::collections::BTreeMap;

use crate::batch::Value;
use crate::config::mapping::ColumnType;
use crate::db::{ColumnDef, Conn, Dialect, TableDef};
use crate::error::{Error, Result};

/// The attempts: one row per `vads_trans_id` of a day.
pub const ATTEMPTS: &str = "payment_attempts";
/// The notifications applied, keyed by what makes one distinct (§7).
pub const NOTIFICATIONS: &str = "payment_notifications";
pub const INVOICES: &str = "invoices";
pub const PAYMENTS: &str = "payments";

/// The invoice statuses of the billing base (mappings/invoices.toml).
pub const PAID: &str = "payée";
pub const PARTLY_PAID: &str = "partiellement payée";
pub const UNPAID: &str = "en attente";
pub const CANCELLED: &str = "annulée";
/// The payment method of a card payment (mappings/payments.toml).
pub const CARD: &str = "carte";
/// Payments recorded by the bank feed take ids from here up, far above the
/// billing base's own serials, so that the billing job's upserts (by id)
/// never land on them (docs/decisions.md).
pub const BANK_PAYMENT_IDS: i64 = 1_000_000_000;

fn col(name: &str, ty: ColumnType, not_null: bool) -> ColumnDef {
    ColumnDef::new(name, ty, not_null)
}

pub fn attempts_def() -> TableDef {
    use ColumnType::*;
    TableDef::owned(
        ATTEMPTS,
        vec![
            col("attempt", Text, true),
            col("site_id", Text, true),
            col("ctx_mode", Text, true),
            col("trans_day", Text, true),
            col("trans_id", Text, true),
            col("trans_date", Text, true),
            col("invoice_id", Integer, true),
            col("order_id", Text, true),
            col("amount_cents", Integer, true),
            col("currency", Text, true),
            col("status", Text, true),
            col("result", Text, false),
            col("auth_result", Text, false),
            col("trans_uuid", Text, false),
            col("payment_id", Integer, false),
            col("created_at", Datetime, true),
            col("updated_at", Datetime, true),
        ],
        &["attempt"],
    )
}

pub fn notifications_def() -> TableDef {
    use ColumnType::*;
    TableDef::owned(
        NOTIFICATIONS,
        vec![
            col("notification", Text, true),
            col("attempt", Text, true),
            col("order_id", Text, true),
            col("trans_status", Text, true),
            col("operation_type", Text, true),
            col("sequence_number", Text, true),
            col("url_check_src", Text, false),
            col("amount_cents", Integer, true),
            col("outcome", Text, true),
            col("received_at", Datetime, true),
            col("fields", Text, true),
        ],
        &["notification"],
    )
}

/// Create the feed's tables when they are missing.
pub fn ensure(conn: &mut dyn Conn) -> Result<()> {
    let d = conn.dialect();
    for def in [attempts_def(), notifications_def()] {
        if !conn.table_exists(&def.name)? {
            conn.batch(&d.create_table(&def, &def.name, d != Dialect::Oracle))?;
        }
    }
    Ok(())
}

/// An amount as the target gives it back (`1250`, `1250.5`, `1250.50`,
/// `-3.1`), in cents; more than two decimals are rounded half away from 0.
pub fn cents(text: &str) -> Option<i64> {
    let s = text.trim();
    if s.contains(['e', 'E']) {
        let f: f64 = s.parse().ok()?;
        return f.is_finite().then(|| (f * 100.0).round() as i64);
    }
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let units: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let f = frac.as_bytes();
    let digit = |i: usize| f.get(i).map_or(0, |b| (b - b'0') as i64);
    let mut c = units
        .checked_mul(100)?
        .checked_add(digit(0) * 10 + digit(1))?;
    if digit(2) >= 5 {
        c += 1;
    }
    Some(if neg { -c } else { c })
}

/// Cents as a decimal text (`125000` → `1250.00`).
pub fn decimal(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let a = cents.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

/// An invoice as the bank feed sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Invoice {
    pub id: i64,
    pub number: String,
    pub client_code: Option<String>,
    pub status: String,
    pub total_cents: i64,
    /// The sum of its payments.
    pub paid_cents: i64,
}

impl Invoice {
    /// What is left to pay.
    pub fn due_cents(&self) -> i64 {
        self.total_cents - self.paid_cents
    }
}

fn need_table(conn: &mut dyn Conn, table: &str) -> Result<Vec<String>> {
    let cols = conn.columns(table)?;
    if cols.is_empty() {
        return Err(Error::runtime(format!(
            "{}: no table {table}: load the billing base first (repaero migrate billing)",
            conn.describe()
        )));
    }
    Ok(cols)
}

/// The invoice with this number (or, when `key` is a number that is no
/// invoice number, this id), unless deleted from the billing base.
pub fn find_invoice(conn: &mut dyn Conn, key: &str) -> Result<Option<Invoice>> {
    let d = conn.dialect();
    let cols = need_table(conn, INVOICES)?;
    need_table(conn, PAYMENTS)?;
    let has = |c: &str| {
        cols.iter()
            .any(|x| x.eq_ignore_ascii_case(&d.column_name(c)))
    };
    let q = |c: &str| d.quote(c);
    let alive = if has("deleted_at") {
        format!(" AND {} IS NULL", q("deleted_at"))
    } else {
        String::new()
    };
    let client = if has("client_code") {
        q("client_code")
    } else {
        "NULL".to_string()
    };
    let select = |by: &str, ty: ColumnType| {
        format!(
            "SELECT {}, {}, {client}, {}, {} FROM {} WHERE {} = {}{alive}",
            d.as_text(&q("id")),
            q("number"),
            q("status"),
            d.as_text(&q("total_incl_tax")),
            q(INVOICES),
            q(by),
            d.param(1, ty)
        )
    };
    let mut rows = conn.query(
        &select("number", ColumnType::Text),
        &[Value::Text(key.to_string())],
    )?;
    if rows.is_empty()
        && let Ok(id) = key.parse::<i64>()
    {
        rows = conn.query(&select("id", ColumnType::Integer), &[Value::Int(id)])?;
    }
    let Some(r) = rows.into_iter().next() else {
        return Ok(None);
    };
    let text = |i: usize| r.get(i).cloned().flatten();
    let id = text(0)
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or_else(|| Error::runtime(format!("invoice {key}: no id")))?;
    let total_cents = text(4).as_deref().and_then(cents).unwrap_or(0);
    let paid_cents = paid_cents(conn, id)?;
    Ok(Some(Invoice {
        id,
        number: text(1).unwrap_or_default(),
        client_code: text(2),
        status: text(3).unwrap_or_default(),
        total_cents,
        paid_cents,
    }))
}

/// The sum of an invoice's payments, in cents (each row rounded to the
/// cent, then added: exact whatever the engine's decimal type).
fn paid_cents(conn: &mut dyn Conn, invoice_id: i64) -> Result<i64> {
    let d = conn.dialect();
    let rows = conn.query(
        &format!(
            "SELECT {} FROM {} WHERE {} = {}",
            d.as_text(&d.quote("amount")),
            d.quote(PAYMENTS),
            d.quote("invoice_id"),
            d.param(1, ColumnType::Integer)
        ),
        &[Value::Int(invoice_id)],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| r.first().cloned().flatten())
        .filter_map(|t| cents(&t))
        .sum())
}

/// A notification whose signature held, its fields checked for form.
#[derive(Debug, Clone)]
pub struct Notification {
    pub site_id: String,
    pub ctx_mode: String,
    pub order_id: String,
    pub trans_id: String,
    pub trans_date: String,
    /// `vads_trans_status`, `CANCELED` spelt `CANCELLED`.
    pub trans_status: String,
    /// `DEBIT` (a payment) or `CREDIT` (a refund); `DEBIT` when absent.
    pub operation_type: String,
    pub sequence_number: String,
    pub url_check_src: Option<String>,
    pub amount_cents: i64,
    pub currency: String,
    pub result: Option<String>,
    pub auth_result: Option<String>,
    pub trans_uuid: Option<String>,
    /// The `vads_` fields, card data left out, for the record.
    pub fields: BTreeMap<String, String>,
}

/// Card data the feed never keeps (§5: "never store beyond needs").
const CARD_FIELDS: &[&str] = &["vads_card_number", "vads_expiry_month", "vads_expiry_year"];

impl Notification {
    /// Read the fields of a signed notification; the error names the
    /// field missing or malformed.
    pub fn from_fields(f: &BTreeMap<String, String>) -> std::result::Result<Self, String> {
        let need = |k: &str| {
            f.get(k)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| format!("missing field {k}"))
        };
        let opt = |k: &str| f.get(k).filter(|v| !v.is_empty()).cloned();
        let amount = need("vads_amount")?;
        if amount.len() > 12 || !amount.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("malformed field vads_amount {amount:?}"));
        }
        let trans_id = need("vads_trans_id")?;
        if trans_id.len() != 6 || !trans_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("malformed field vads_trans_id {trans_id:?}"));
        }
        let trans_date = need("vads_trans_date")?;
        if trans_date.len() != 14 || !trans_date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("malformed field vads_trans_date {trans_date:?}"));
        }
        let mut status = need("vads_trans_status")?;
        if status == "CANCELED" {
            status = "CANCELLED".into();
        }
        Ok(Notification {
            site_id: need("vads_site_id")?,
            ctx_mode: need("vads_ctx_mode")?,
            order_id: need("vads_order_id")?,
            trans_id,
            trans_date,
            trans_status: status,
            operation_type: opt("vads_operation_type").unwrap_or_else(|| "DEBIT".into()),
            sequence_number: opt("vads_sequence_number").unwrap_or_else(|| "1".into()),
            url_check_src: opt("vads_url_check_src"),
            amount_cents: amount
                .parse()
                .map_err(|_| format!("malformed field vads_amount {amount:?}"))?,
            currency: need("vads_currency")?,
            result: opt("vads_result"),
            auth_result: opt("vads_auth_result"),
            trans_uuid: opt("vads_trans_uuid"),
            fields: f
                .iter()
                .filter(|(k, _)| k.starts_with("vads_") && !CARD_FIELDS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// The attempt: shop, mode, UTC day and transaction id (case-insensitive).
    pub fn attempt(&self) -> String {
        attempt_key(
            &self.site_id,
            &self.ctx_mode,
            &self.trans_date[..8],
            &self.trans_id,
        )
    }

    /// What makes a notification distinct (§7): a retry or a resend of
    /// one has the same; a later event of the attempt has another.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.attempt(),
            self.trans_status,
            self.operation_type,
            self.sequence_number
        )
    }
}

fn attempt_key(site: &str, mode: &str, day: &str, trans_id: &str) -> String {
    format!("{site}/{mode}/{day}/{}", trans_id.to_ascii_lowercase())
}

/// What a status means for the invoice (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// Nothing known yet (the attempt was only issued).
    Issued,
    /// Not final: a final status follows.
    Pending,
    /// Final, without money: refused, abandoned, expired, verification only.
    Failed,
    /// Money taken (authorised, then captured).
    Paid,
    /// Cancelled by the merchant: reverses a payment of the same attempt.
    Cancelled,
}

fn class(status: &str) -> Option<Class> {
    Some(match status {
        "SENT" => Class::Issued,
        "AUTHORISED_TO_VALIDATE"
        | "WAITING_AUTHORISATION"
        | "WAITING_AUTHORISATION_TO_VALIDATE"
        | "INITIAL"
        | "UNDER_VERIFICATION"
        | "WAITING_FOR_PAYMENT"
        | "CAPTURE_FAILED" => Class::Pending,
        "REFUSED" | "ABANDONED" | "NOT_CREATED" | "EXPIRED" | "ACCEPTED" => Class::Failed,
        "AUTHORISED" | "CAPTURED" => Class::Paid,
        "CANCELLED" => Class::Cancelled,
        _ => return None,
    })
}

/// The order of a status in an attempt's life: a notification never moves
/// an attempt back (they may arrive out of order, §7).
fn rank(status: &str) -> u8 {
    match (status, class(status)) {
        ("CAPTURED", _) => 5,
        (_, Some(Class::Issued)) => 0,
        (_, Some(Class::Pending)) | (_, None) => 1,
        (_, Some(Class::Failed)) => 2,
        (_, Some(Class::Paid)) => 4,
        (_, Some(Class::Cancelled)) => 6,
    }
}

/// How a notification ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied and recorded: the answer's message.
    Applied(String),
    /// This notification was applied before: nothing done.
    Duplicate,
    /// Not applied, nothing changed: why (`order not found`, `amount
    /// mismatch`…).
    Rejected(String),
}

/// An attempt as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Attempt {
    pub attempt: String,
    pub trans_id: String,
    pub trans_date: String,
    pub invoice_id: i64,
    pub order_id: String,
    pub amount_cents: i64,
    pub status: String,
    pub payment_id: Option<i64>,
}

const ATTEMPT_COLS: &[&str] = &[
    "attempt",
    "trans_id",
    "trans_date",
    "invoice_id",
    "order_id",
    "amount_cents",
    "status",
    "payment_id",
];

fn attempt_from(r: &[Option<String>]) -> Option<Attempt> {
    let t = |i: usize| r.get(i).cloned().flatten();
    let int = |i: usize| t(i).and_then(|s| s.parse::<i64>().ok());
    Some(Attempt {
        attempt: t(0)?,
        trans_id: t(1)?,
        trans_date: t(2)?,
        invoice_id: int(3)?,
        order_id: t(4)?,
        amount_cents: int(5)?,
        status: t(6)?,
        payment_id: int(7),
    })
}

fn select_attempts(d: Dialect, filter: &str) -> String {
    let cols: Vec<String> = ATTEMPT_COLS
        .iter()
        .map(|c| match *c {
            "invoice_id" | "amount_cents" | "payment_id" => d.as_text(&d.quote(c)),
            _ => d.quote(c),
        })
        .collect();
    format!(
        "SELECT {} FROM {} WHERE {filter} ORDER BY {}",
        cols.join(", "),
        d.quote(ATTEMPTS),
        d.quote("created_at")
    )
}

fn get_attempt(conn: &mut dyn Conn, key: &str) -> Result<Option<Attempt>> {
    let d = conn.dialect();
    let sql = select_attempts(
        d,
        &format!("{} = {}", d.quote("attempt"), d.param(1, ColumnType::Text)),
    );
    Ok(conn
        .query(&sql, &[Value::Text(key.into())])?
        .first()
        .and_then(|r| attempt_from(r)))
}

/// The attempts of an invoice, oldest first.
pub fn attempts_of(conn: &mut dyn Conn, invoice_id: i64) -> Result<Vec<Attempt>> {
    if !conn.table_exists(ATTEMPTS)? {
        return Ok(Vec::new());
    }
    let d = conn.dialect();
    let sql = select_attempts(
        d,
        &format!(
            "{} = {}",
            d.quote("invoice_id"),
            d.param(1, ColumnType::Integer)
        ),
    );
    Ok(conn
        .query(&sql, &[Value::Int(invoice_id)])?
        .iter()
        .filter_map(|r| attempt_from(r))
        .collect())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Write an attempt row whole (insert, or update on its key).
#[allow(clippy::too_many_arguments)]
fn put_attempt(
    conn: &mut dyn Conn,
    n: &Notification,
    invoice_id: i64,
    status: &str,
    payment_id: Option<i64>,
    created_ms: i64,
) -> Result<()> {
    let d = conn.dialect();
    let def = attempts_def();
    let opt = |v: &Option<String>| v.clone().map_or(Value::Null, Value::Text);
    let values = vec![
        Value::Text(n.attempt()),
        Value::Text(n.site_id.clone()),
        Value::Text(n.ctx_mode.clone()),
        Value::Text(n.trans_date[..8].to_string()),
        Value::Text(n.trans_id.clone()),
        Value::Text(n.trans_date.clone()),
        Value::Int(invoice_id),
        Value::Text(n.order_id.clone()),
        Value::Int(n.amount_cents),
        Value::Text(n.currency.clone()),
        Value::Text(status.to_string()),
        opt(&n.result),
        opt(&n.auth_result),
        opt(&n.trans_uuid),
        payment_id.map_or(Value::Null, Value::Int),
        Value::Datetime(created_ms),
        Value::Datetime(now_ms()),
    ];
    let cols: Vec<(&str, String)> = def
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), d.param(i + 1, c.ty)))
        .collect();
    conn.execute(&d.upsert_sql(ATTEMPTS, &cols, &["attempt"]), &values)?;
    Ok(())
}

/// Record a payment (a negative amount: a refund or a reversal) and move
/// the invoice's status to what its payments now add up to.
fn record_payment(
    conn: &mut dyn Conn,
    inv: &Invoice,
    amount_cents: i64,
    reference: &str,
) -> Result<i64> {
    let d = conn.dialect();
    let q = |c: &str| d.quote(c);
    let max = conn
        .query_one(
            &format!(
                "SELECT {} FROM {}",
                d.as_text(&format!("max({})", q("id"))),
                q(PAYMENTS)
            ),
            &[],
        )?
        .and_then(|t| t.parse::<i64>().ok())
        .unwrap_or(0);
    let id = (max + 1).max(BANK_PAYMENT_IDS);
    let today = chrono::Utc::now().date_naive();
    let days = (today - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days();
    let cols = conn.columns(PAYMENTS)?;
    let mut names = vec![
        "id",
        "invoice_id",
        "paid_on",
        "amount",
        "method",
        "reference",
    ];
    let mut values = vec![
        Value::Int(id),
        Value::Int(inv.id),
        Value::Date(days as i32),
        Value::Text(decimal(amount_cents)),
        Value::Text(CARD.into()),
        Value::Text(reference.to_string()),
    ];
    let mut types = vec![
        ColumnType::Integer,
        ColumnType::Integer,
        ColumnType::Date,
        ColumnType::Decimal,
        ColumnType::Text,
        ColumnType::Text,
    ];
    if cols
        .iter()
        .any(|c| c.eq_ignore_ascii_case(&d.column_name("updated_at")))
    {
        names.push("updated_at");
        values.push(Value::Datetime(now_ms()));
        types.push(ColumnType::Datetime);
    }
    let params: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| d.param(i + 1, *t))
        .collect();
    let quoted: Vec<String> = names.iter().map(|n| q(n)).collect();
    conn.execute(
        &format!(
            "INSERT INTO {} ({}) VALUES ({})",
            q(PAYMENTS),
            quoted.join(", "),
            params.join(", ")
        ),
        &values,
    )?;
    let paid = inv.paid_cents + amount_cents;
    let status = if paid >= inv.total_cents && inv.total_cents > 0 {
        PAID
    } else if paid > 0 {
        PARTLY_PAID
    } else {
        UNPAID
    };
    if status != inv.status && inv.status != CANCELLED {
        conn.execute(
            &format!(
                "UPDATE {} SET {} = {} WHERE {} = {}",
                q(INVOICES),
                q("status"),
                d.param(1, ColumnType::Text),
                q("id"),
                d.param(2, ColumnType::Integer)
            ),
            &[Value::Text(status.into()), Value::Int(inv.id)],
        )?;
    }
    Ok(id)
}

/// Apply a signed notification, inside the caller's transaction (which
/// it commits on [`Outcome::Applied`] and rolls back otherwise).
pub fn apply(conn: &mut dyn Conn, n: &Notification) -> Result<Outcome> {
    let d = conn.dialect();
    conn.lock_table(ATTEMPTS)?;
    let seen = conn.query_one(
        &format!(
            "SELECT {} FROM {} WHERE {} = {}",
            d.quote("outcome"),
            d.quote(NOTIFICATIONS),
            d.quote("notification"),
            d.param(1, ColumnType::Text)
        ),
        &[Value::Text(n.key())],
    )?;
    if seen.is_some() {
        return Ok(Outcome::Duplicate);
    }
    let Some(inv) = find_invoice(conn, &n.order_id)? else {
        return Ok(Outcome::Rejected("order not found".into()));
    };
    if inv.number != n.order_id {
        // found by id: the bank is sent invoice numbers only
        return Ok(Outcome::Rejected("order not found".into()));
    }
    if n.currency != super::EUR {
        return Ok(Outcome::Rejected("currency mismatch".into()));
    }
    let attempt = get_attempt(conn, &n.attempt())?;
    if let Some(a) = &attempt
        && a.invoice_id != inv.id
    {
        return Ok(Outcome::Rejected("order mismatch".into()));
    }
    let created = now_ms();
    let current = attempt.as_ref().map_or("SENT", |a| a.status.as_str());
    let paid_by = attempt.as_ref().and_then(|a| a.payment_id);
    // the status kept on the attempt: never moved back
    let (new_rank, cur_rank) = (rank(&n.trans_status), rank(current));
    // a final status stays (a late ABANDONED after REFUSED keeps REFUSED);
    // among temporary ones, the last heard
    let keep = if new_rank > cur_rank || (new_rank == cur_rank && new_rank <= 1) {
        n.trans_status.clone()
    } else {
        current.to_string()
    };
    let reference = format!(
        "bank {}",
        n.trans_uuid.clone().unwrap_or_else(|| n.attempt())
    );
    let message = if n.operation_type == "CREDIT" {
        // a refund made in the bank's back office
        if n.amount_cents <= 0 || n.amount_cents > inv.paid_cents {
            return Ok(Outcome::Rejected("amount mismatch".into()));
        }
        record_payment(conn, &inv, -n.amount_cents, &format!("{reference} refund"))?;
        put_attempt(conn, n, inv.id, &keep, paid_by, created)?;
        format!("refund of {} recorded", decimal(n.amount_cents))
    } else {
        match class(&n.trans_status) {
            Some(Class::Paid) if paid_by.is_some() => {
                put_attempt(conn, n, inv.id, &keep, paid_by, created)?;
                "payment already recorded".to_string()
            }
            Some(Class::Paid) if class(current) == Some(Class::Cancelled) => {
                // a late authorisation of an attempt cancelled since
                put_attempt(conn, n, inv.id, &keep, None, created)?;
                "attempt already cancelled".to_string()
            }
            Some(Class::Paid) => {
                let expected = attempt.as_ref().map_or(inv.due_cents(), |a| a.amount_cents);
                if inv.status == CANCELLED {
                    return Ok(Outcome::Rejected("invoice cancelled".into()));
                }
                if n.amount_cents != expected
                    || n.amount_cents <= 0
                    || n.amount_cents > inv.due_cents()
                {
                    return Ok(Outcome::Rejected("amount mismatch".into()));
                }
                let id = record_payment(conn, &inv, n.amount_cents, &reference)?;
                put_attempt(conn, n, inv.id, &keep, Some(id), created)?;
                format!("payment of {} recorded", decimal(n.amount_cents))
            }
            Some(Class::Cancelled) => {
                if let (Some(pid), Some(a)) = (paid_by, &attempt) {
                    record_payment(
                        conn,
                        &inv,
                        -a.amount_cents,
                        &format!("{reference} cancelled (payment {pid})"),
                    )?;
                    put_attempt(conn, n, inv.id, &keep, None, created)?;
                    format!("payment of {} reversed", decimal(a.amount_cents))
                } else {
                    put_attempt(conn, n, inv.id, &keep, None, created)?;
                    "attempt cancelled".to_string()
                }
            }
            Some(Class::Pending) | Some(Class::Failed) | Some(Class::Issued) | None => {
                if class(&n.trans_status).is_none() {
                    tracing::warn!(
                        order = n.order_id,
                        status = n.trans_status,
                        "a payment status the bank feed does not know: invoice left as it is"
                    );
                }
                put_attempt(conn, n, inv.id, &keep, paid_by, created)?;
                format!("attempt {}", n.trans_status.to_lowercase())
            }
        }
    };
    let def = notifications_def();
    let values = vec![
        Value::Text(n.key()),
        Value::Text(n.attempt()),
        Value::Text(n.order_id.clone()),
        Value::Text(n.trans_status.clone()),
        Value::Text(n.operation_type.clone()),
        Value::Text(n.sequence_number.clone()),
        n.url_check_src.clone().map_or(Value::Null, Value::Text),
        Value::Int(n.amount_cents),
        Value::Text(message.clone()),
        Value::Datetime(now_ms()),
        Value::Text(serde_json::to_string(&n.fields).unwrap_or_default()),
    ];
    let names: Vec<String> = def.columns.iter().map(|c| d.quote(&c.name)).collect();
    let params: Vec<String> = def
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| d.param(i + 1, c.ty))
        .collect();
    conn.execute(
        &format!(
            "INSERT INTO {} ({}) VALUES ({})",
            d.quote(NOTIFICATIONS),
            names.join(", "),
            params.join(", ")
        ),
        &values,
    )?;
    Ok(Outcome::Applied(message))
}

/// Issue a new attempt for `inv`: the next free `vads_trans_id` of the
/// UTC day (numeric, `000000`–`899999`; the bank keeps `9xxxxx` for its
/// back office), recorded as `SENT`. Inside the caller's transaction.
pub fn new_attempt(
    conn: &mut dyn Conn,
    site_id: &str,
    mode: &str,
    inv: &Invoice,
    amount_cents: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(String, String)> {
    let d = conn.dialect();
    conn.lock_table(ATTEMPTS)?;
    let trans_date = now.format("%Y%m%d%H%M%S").to_string();
    let day = &trans_date[..8];
    let q = |c: &str| d.quote(c);
    let count = conn
        .query_one(
            &format!(
                "SELECT {} FROM {} WHERE {} = {} AND {} = {} AND {} = {}",
                d.as_text("count(*)"),
                q(ATTEMPTS),
                q("site_id"),
                d.param(1, ColumnType::Text),
                q("ctx_mode"),
                d.param(2, ColumnType::Text),
                q("trans_day"),
                d.param(3, ColumnType::Text),
            ),
            &[
                Value::Text(site_id.into()),
                Value::Text(mode.into()),
                Value::Text(day.into()),
            ],
        )?
        .and_then(|t| t.parse::<u32>().ok())
        .unwrap_or(0);
    let mut n = count;
    let trans_id = loop {
        if n > 899_999 {
            return Err(Error::runtime(format!(
                "no transaction id left for {day} (900,000 payment attempts in one day)"
            )));
        }
        let candidate = format!("{n:06}");
        if get_attempt(conn, &attempt_key(site_id, mode, day, &candidate))?.is_none() {
            break candidate;
        }
        n += 1;
    };
    let note = Notification {
        site_id: site_id.into(),
        ctx_mode: mode.into(),
        order_id: inv.number.clone(),
        trans_id: trans_id.clone(),
        trans_date: trans_date.clone(),
        trans_status: "SENT".into(),
        operation_type: "DEBIT".into(),
        sequence_number: "1".into(),
        url_check_src: None,
        amount_cents,
        currency: super::EUR.into(),
        result: None,
        auth_result: None,
        trans_uuid: None,
        fields: BTreeMap::new(),
    };
    put_attempt(conn, &note, inv.id, "SENT", None, now.timestamp_millis())?;
    Ok((trans_id, trans_date))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_to_cents_and_back() {
        for (t, c) in [
            ("1250", 125000),
            ("1250.5", 125050),
            ("1250.50", 125050),
            ("0.1", 10),
            ("-3.1", -310),
            ("12.345", 1235),
            ("12.344", 1234),
            (".5", 50),
            ("1.25e3", 125000),
        ] {
            assert_eq!(cents(t), Some(c), "{t}");
        }
        for t in ["", "abc", "1.2.3", "-", "1,5"] {
            assert_eq!(cents(t), None, "{t}");
        }
        assert_eq!(decimal(125000), "1250.00");
        assert_eq!(decimal(5), "0.05");
        assert_eq!(decimal(-310), "-3.10");
    }

    #[test]
    fn an_attempt_never_moves_back() {
        assert!(rank("CAPTURED") > rank("AUTHORISED"));
        assert!(rank("AUTHORISED") > rank("REFUSED"));
        assert!(rank("REFUSED") > rank("INITIAL"));
        assert!(rank("INITIAL") > rank("SENT"));
        assert!(rank("CANCELLED") > rank("CAPTURED"));
        assert_eq!(rank("SOMETHING_NEW"), rank("INITIAL"));
    }
}
