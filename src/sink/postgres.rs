//! PostgreSQL target: `COPY … FROM STDIN (FORMAT binary)` inside one
//! transaction per job.
//!
//! Each batch is one COPY inside a savepoint. When the server refuses a
//! batch (a duplicate key, a NOT NULL), the batch is split in halves and
//! retried, down to the single rows at fault, which are returned with the
//! server's message: a bad row costs O(log n) extra COPYs and never loses
//! its neighbours. The connection (TLS, errors, COPY) is `db::postgres`.
//!
//! A table a migration creates is loaded without its primary key, which is
//! added after the load: one sorted index build instead of one index
//! insert per row (docs/benchmarks.md, "the key after the load"). When the
//! rows repeat a key, that build fails: the table's load is undone (a
//! savepoint) and the pipeline loads it again with the key in place, so
//! that the rows at fault are refused one by one as before.

use bytes::{BufMut, BytesMut};
use polars::prelude::DataFrame;

use super::{KEYS_TABLE, Sink, WriteOutcome, ledger, merge_sql, staging_name};
use crate::batch::{Cursor, MergeOp, ValueRef, cursors};
use crate::config::mapping::{ColumnType, WriteMode};
use crate::db::postgres::PgConn;
use crate::db::{Conn, Dialect, TableDef};
use crate::error::{Error, Result};

/// A batch whose COPY is under way.
struct Pending {
    batch: DataFrame,
    handle: tokio::task::JoinHandle<std::result::Result<u64, String>>,
}

/// Batches whose COPY may be under way at once: the server always has the
/// next one queued while repaero prepares more.
const COPY_DEPTH: usize = 3;

pub struct PgSink {
    conn: PgConn,
    table: Option<Current>,
    /// Batches being copied, oldest first, while the next ones are prepared.
    pending: std::collections::VecDeque<Pending>,
    /// Outcomes settled but not reported yet.
    carry: WriteOutcome,
    /// Foreign keys of other tables re-attached NOT VALID after a swap,
    /// validated before the commit: (table, constraint).
    pending_fks: Vec<(String, String)>,
    /// Created tables get their primary key after the load
    /// ([`Sink::keys_after_load`]).
    keys_after: bool,
    /// Tables whose key, added after their load, found a repeated key:
    /// created with it from then on.
    keys_first: std::collections::HashSet<String>,
    /// Why the last table's load was undone, to be run again.
    again: Option<String>,
}

struct Current {
    def: TableDef,
    mode: WriteMode,
    /// Created by this run: its foreign keys are added after the load.
    created: bool,
    /// Created without its primary key, added by [`PgSink::add_key`]
    /// (inside the savepoint `repaero_table`).
    key_later: bool,
    /// Table the COPY goes into.
    into: String,
    copy_sql: String,
}

impl PgSink {
    pub fn connect(url: &str) -> Result<PgSink> {
        Ok(PgSink {
            conn: PgConn::connect(url)?,
            table: None,
            pending: std::collections::VecDeque::new(),
            carry: WriteOutcome::default(),
            pending_fks: Vec::new(),
            keys_after: false,
            keys_first: std::collections::HashSet::new(),
            again: None,
        })
    }

    /// Create `def` as `name` for this run's load (dropping an older
    /// `name` first with `drop_first`), without its primary key unless the
    /// rows repeated it earlier in the run; whether the key comes later.
    fn create(&mut self, def: &TableDef, name: &str, drop_first: bool) -> Result<bool> {
        let later = self.keys_after && !def.key.is_empty() && !self.keys_first.contains(&def.name);
        let mut sql = String::new();
        if later {
            // the load is undone to here when the key does not hold
            sql.push_str("SAVEPOINT repaero_table;\n");
        }
        if drop_first {
            sql.push_str(&format!(
                "DROP TABLE IF EXISTS {};\n",
                Dialect::Postgres.quote(name)
            ));
        }
        let shape = if later {
            TableDef {
                key: Vec::new(),
                ..def.clone()
            }
        } else {
            def.clone()
        };
        sql.push_str(&Dialect::Postgres.create_table(&shape, name, false));
        self.conn.batch(&sql)?;
        Ok(later)
    }

    /// Add the primary key the load left out, once the rows are in. Rows
    /// that repeat a key: the table's load is undone, [`Sink::load_again`]
    /// says why, and the next load of that table has its key from the
    /// start.
    fn add_key(&mut self) -> Result<()> {
        self.settle()?;
        let Some(cur) = self.table.as_mut().filter(|c| c.key_later) else {
            return Ok(());
        };
        cur.key_later = false;
        let q = |s: &str| Dialect::Postgres.quote(s);
        let key: Vec<String> = cur.def.key.iter().map(|k| q(k)).collect();
        let sql = format!(
            "ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({}); RELEASE SAVEPOINT repaero_table;",
            q(&cur.into),
            q(&format!("{}_pkey", cur.into)),
            key.join(", ")
        );
        let name = cur.def.name.clone();
        match self.conn.batch(&sql) {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().contains("SQLSTATE 23505") => {
                self.conn.batch(
                    "ROLLBACK TO SAVEPOINT repaero_table; RELEASE SAVEPOINT repaero_table",
                )?;
                self.table = None;
                self.carry = WriteOutcome::default();
                self.keys_first.insert(name.clone());
                let label = &self.conn.label;
                let msg = e.to_string();
                let msg = msg.strip_prefix(&format!("{label}: ")).unwrap_or(&msg);
                let why = format!(
                    "{label}: the rows of {name} repeat a key ({msg}); loading {name} again with its key checked row by row"
                );
                self.again = Some(why.clone());
                Err(Error::runtime(why))
            }
            Err(e) => Err(e.context(format!("adding the primary key of {name}"))),
        }
    }

    pub fn conn(&self) -> &PgConn {
        &self.conn
    }

    /// The end of a table's write for its mode: the swap of `replace`, the
    /// merge of `upsert`.
    fn finish_mode(&mut self, cur: &Current) -> Result<()> {
        let q = |s: &str| Dialect::Postgres.quote(s);
        match cur.mode {
            WriteMode::Replace => {
                // other tables' foreign keys to the old table: dropped with
                // it, re-attached to the new one, validated before commit
                let dependents = self.conn.rows(
                    "SELECT c.conrelid::regclass::text, c.conname::text, pg_get_constraintdef(c.oid)
                     FROM pg_constraint c
                     WHERE c.contype = 'f' AND c.confrelid = to_regclass($1) AND c.conrelid <> c.confrelid",
                    &[&q(&cur.def.name)],
                )?;
                let mut sql = format!(
                    "DROP TABLE IF EXISTS {0} CASCADE;\nALTER TABLE {1} RENAME TO {0};",
                    q(&cur.def.name),
                    q(&cur.into)
                );
                if !cur.def.key.is_empty() {
                    sql.push_str(&format!(
                        "\nALTER TABLE {} RENAME CONSTRAINT {} TO {};",
                        q(&cur.def.name),
                        q(&format!("{}_pkey", cur.into)),
                        q(&format!("{}_pkey", cur.def.name))
                    ));
                }
                for row in &dependents {
                    let (child, name, def): (String, String, String) =
                        (row.get(0), row.get(1), row.get(2));
                    sql.push_str(&format!(
                        "\nALTER TABLE {child} ADD CONSTRAINT {} {def} NOT VALID;",
                        q(&name)
                    ));
                    self.pending_fks.push((child, name));
                }
                self.conn
                    .batch(&sql)
                    .map_err(|e| e.context(format!("swapping in {}", cur.def.name)))
            }
            // a table created by this run was written directly
            WriteMode::Upsert if cur.into == cur.def.name => Ok(()),
            WriteMode::Upsert => {
                let cols: Vec<String> = cur.def.columns.iter().map(|c| q(&c.name)).collect();
                let key: Vec<String> = cur.def.key.iter().map(|k| q(k)).collect();
                let sets = super::upsert_sets(Dialect::Postgres, &cur.def, "EXCLUDED");
                let action = if sets.is_empty() {
                    "NOTHING".to_string()
                } else {
                    format!("UPDATE SET {}", sets.join(", "))
                };
                self.conn
                    .batch(&format!(
                        "INSERT INTO {0} ({1}) SELECT {1} FROM {2} ON CONFLICT ({3}) DO {4}; DROP TABLE {2};",
                        q(&cur.def.name),
                        cols.join(", "),
                        q(&cur.into),
                        key.join(", "),
                        action
                    ))
                    .map_err(|e| e.context(format!("merging into {}", cur.def.name)))
            }
            WriteMode::Append => Ok(()),
        }
    }

    /// Wait for every batch being copied; on a refusal find the rows at
    /// fault. Outcomes join `carry`. Every statement but the next COPY
    /// waits for this first: one connection runs one thing at a time.
    fn settle(&mut self) -> Result<()> {
        self.collect(true)
    }

    /// Take the outcomes of the COPYs done (all of them with `all`, else
    /// the finished ones, and the oldest while too many are in flight).
    fn collect(&mut self, all: bool) -> Result<()> {
        let mut refused_batches = Vec::new();
        while let Some(front) = self.pending.front() {
            let wait = all || self.pending.len() >= COPY_DEPTH;
            if !wait && !front.handle.is_finished() {
                break;
            }
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            let done = self.conn.rt.block_on(p.handle).map_err(|e| {
                Error::runtime(format!("{}: the COPY task failed: {e}", self.conn.label))
            })?;
            match done {
                Ok(n) => self.carry.written += n,
                Err(msg)
                    if msg.contains("SQLSTATE 08")
                        || msg.contains("SQLSTATE 57")
                        || msg.contains("SQLSTATE 53") =>
                {
                    // connection, shutdown or resource trouble: not the rows' fault
                    let table = self
                        .table
                        .as_ref()
                        .map(|c| c.def.name.clone())
                        .unwrap_or_default();
                    return Err(Error::runtime(format!(
                        "{}: writing {table}: {msg}",
                        self.conn.label
                    )));
                }
                Err(_) => refused_batches.push(p.batch),
            }
        }
        if refused_batches.is_empty() {
            return Ok(());
        }
        // the connection must be idle to look for the rows at fault
        self.collect(true)?;
        let cur = self
            .table
            .take()
            .ok_or_else(|| Error::runtime("COPY without a table"))?;
        let result = (|| {
            for batch in &refused_batches {
                let (names, cols) = cursors(batch)?;
                let order = column_order(&cur, &names)?;
                let mut refused = Vec::new();
                self.copy_range(&cur, &cols, &order, 0, batch.height(), &mut refused)?;
                refused.sort_by_key(|(i, _)| *i);
                self.carry
                    .refused
                    .extend(super::refused_rejects(batch, &refused)?);
            }
            Ok(())
        })();
        self.table = Some(cur);
        result
    }

    /// COPY rows `lo..hi`; on refusal split until the faulty rows are found.
    fn copy_range(
        &mut self,
        cur: &Current,
        cols: &[Cursor<'_>],
        order: &[usize],
        lo: usize,
        hi: usize,
        refused: &mut Vec<(usize, String)>,
    ) -> Result<()> {
        if lo >= hi {
            return Ok(());
        }
        let payload = encode_copy(&cur.def, cols, order, lo, hi);
        self.conn.batch("SAVEPOINT repaero_batch")?;
        match self.conn.copy_in(&cur.copy_sql, payload) {
            Ok(n) => {
                self.conn.batch("RELEASE SAVEPOINT repaero_batch")?;
                self.carry.written += n;
                Ok(())
            }
            Err(msg) => {
                self.conn.batch(
                    "ROLLBACK TO SAVEPOINT repaero_batch; RELEASE SAVEPOINT repaero_batch",
                )?;
                if msg.contains("SQLSTATE 08")
                    || msg.contains("SQLSTATE 57")
                    || msg.contains("SQLSTATE 53")
                {
                    // connection, shutdown or resource trouble: not the rows' fault
                    return Err(Error::runtime(format!(
                        "{}: writing {}: {msg}",
                        self.conn.label, cur.def.name
                    )));
                }
                if hi - lo == 1 {
                    refused.push((lo, msg));
                    return Ok(());
                }
                let mid = lo + (hi - lo) / 2;
                self.copy_range(cur, cols, order, lo, mid, refused)?;
                self.copy_range(cur, cols, order, mid, hi, refused)
            }
        }
    }
}

/// Where each target column is in a batch.
fn column_order(cur: &Current, names: &[String]) -> Result<Vec<usize>> {
    super::column_order(&cur.def.columns, names, &cur.def.name)
}

const PG_EPOCH_DAYS: i32 = 10_957; // 2000-01-01 in days since 1970-01-01
const PG_EPOCH_MS: i64 = 946_684_800_000;

/// Encode rows `lo..hi` as a complete binary COPY payload.
fn encode_copy(
    def: &TableDef,
    cols: &[Cursor<'_>],
    order: &[usize],
    lo: usize,
    hi: usize,
) -> bytes::Bytes {
    let mut buf = BytesMut::with_capacity(19 + (hi - lo) * (2 + def.columns.len() * 16));
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0);
    buf.put_i32(0);
    for i in lo..hi {
        buf.put_i16(def.columns.len() as i16);
        for (c, &j) in def.columns.iter().zip(order) {
            let v = cols[j].get(i);
            encode_value(&mut buf, c.ty, c.scale, v);
        }
    }
    buf.put_i16(-1);
    buf.freeze()
}

fn encode_value(buf: &mut BytesMut, ty: ColumnType, scale: u8, v: ValueRef<'_>) {
    match (ty, v) {
        (_, ValueRef::Null) => buf.put_i32(-1),
        (ColumnType::Text, ValueRef::Text(s)) => {
            buf.put_i32(s.len() as i32);
            buf.put_slice(s.as_bytes());
        }
        (ColumnType::Integer, ValueRef::Int(x)) => {
            buf.put_i32(8);
            buf.put_i64(x);
        }
        (ColumnType::Float, ValueRef::Float(x)) => {
            buf.put_i32(8);
            buf.put_f64(x);
        }
        (ColumnType::Decimal, ValueRef::Float(x)) => encode_numeric(buf, x, scale),
        (ColumnType::Decimal, ValueRef::Int(x)) => encode_numeric(buf, x as f64, scale),
        (ColumnType::Boolean, ValueRef::Bool(b)) => {
            buf.put_i32(1);
            buf.put_u8(b as u8);
        }
        (ColumnType::Date, ValueRef::Date(d)) => {
            buf.put_i32(4);
            buf.put_i32(d - PG_EPOCH_DAYS);
        }
        (ColumnType::Datetime, ValueRef::Datetime(ms)) => {
            buf.put_i32(8);
            buf.put_i64((ms - PG_EPOCH_MS) * 1000);
        }
        (ColumnType::Time, ValueRef::Time(ns)) => {
            buf.put_i32(8);
            buf.put_i64(ns / 1000);
        }
        (ColumnType::Binary, ValueRef::Binary(b)) => {
            buf.put_i32(b.len() as i32);
            buf.put_slice(b);
        }
        // a value whose type does not match its column: send its text, so
        // that the server refuses the row with its own message
        (_, other) => {
            let s = other.to_text().unwrap_or_default();
            buf.put_i32(s.len() as i32);
            buf.put_slice(s.as_bytes());
        }
    }
}

/// PostgreSQL's binary `numeric`: base-10000 digits, weight, sign, scale.
fn encode_numeric(buf: &mut BytesMut, x: f64, scale: u8) {
    // x × 10^(4·fg) as an integer, fg the base-10000 fraction digits: the
    // decimal point then falls between two base-10000 digits
    let fg = (scale as u32).div_ceil(4);
    let scaled = crate::batch::parse::round_half_away(x.abs() * crate::batch::parse::pow10(scale));
    let mut digits = [0i16; 40]; // least significant first
    let mut n = 0;
    if scaled < 1e15 {
        // the common case, in 64-bit arithmetic (128-bit division is slow)
        let mut v = scaled as u64 * 10u64.pow(4 * fg - scale as u32);
        while v > 0 {
            digits[n] = (v % 10_000) as i16;
            v /= 10_000;
            n += 1;
        }
    } else {
        let mut v = scaled as u128 * 10u128.pow(4 * fg - scale as u32);
        while v > 0 && n < digits.len() {
            digits[n] = (v % 10_000) as i16;
            v /= 10_000;
            n += 1;
        }
    }
    let trailing = digits[..n].iter().take_while(|d| **d == 0).count();
    let count = n - trailing;
    let weight = if count == 0 {
        0
    } else {
        n as i16 - fg as i16 - 1
    };
    buf.put_i32(8 + 2 * count as i32);
    buf.put_i16(count as i16);
    buf.put_i16(weight);
    buf.put_u16(if x < 0.0 && count > 0 { 0x4000 } else { 0 });
    buf.put_u16(scale as u16);
    for d in digits[trailing..n].iter().rev() {
        buf.put_i16(*d);
    }
}

impl Sink for PgSink {
    fn describe(&self) -> String {
        self.conn.label.clone()
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn conn(&mut self) -> Result<&mut dyn Conn> {
        self.settle()?;
        Ok(&mut self.conn)
    }

    fn begin(&mut self) -> Result<()> {
        self.conn.begin()?;
        ledger::ensure(&mut self.conn)
    }

    fn start_table(&mut self, def: &TableDef, mode: WriteMode) -> Result<()> {
        let q = |s: &str| Dialect::Postgres.quote(s);
        self.again = None;
        let mut created = mode == WriteMode::Replace;
        let mut key_later = false;
        let into = match mode {
            WriteMode::Replace => {
                let stage = staging_name(&def.name);
                key_later = self.create(def, &stage, true)?;
                stage
            }
            WriteMode::Upsert | WriteMode::Append => {
                let existing = Conn::columns(&mut self.conn, &def.name)?;
                if existing.is_empty() {
                    key_later = self.create(def, &def.name, false)?;
                    created = true;
                } else {
                    let missing: Vec<&str> = def
                        .columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .chain(def.soft_delete.as_deref())
                        .filter(|c| !existing.iter().any(|e| e == c))
                        .collect();
                    if !missing.is_empty() {
                        return Err(Error::config(format!(
                            "{}: table {} exists without column(s) {}; add them, or write it with mode = \"replace\"",
                            self.conn.label,
                            def.name,
                            missing.join(", ")
                        )));
                    }
                }
                if mode == WriteMode::Upsert && !created {
                    // the stage is shaped like the table, with its checks,
                    // NOT NULLs and unique keys: a row the table would
                    // refuse is refused (and quarantined) by the COPY, row
                    // by row, not by the final merge all at once
                    let stage = format!("_repaero_stage_{}", def.name);
                    self.conn.batch(&format!(
                        "DROP TABLE IF EXISTS {0}; CREATE TEMP TABLE {0} (LIKE {1} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES) ON COMMIT DROP;",
                        q(&stage),
                        q(&def.name)
                    ))?;
                    stage
                } else {
                    def.name.clone()
                }
            }
        };
        let cols: Vec<String> = def.columns.iter().map(|c| q(&c.name)).collect();
        let copy_sql = format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            q(&into),
            cols.join(", ")
        );
        self.table = Some(Current {
            def: def.clone(),
            mode,
            created,
            key_later,
            into,
            copy_sql,
        });
        Ok(())
    }

    fn write(&mut self, batch: &DataFrame) -> Result<WriteOutcome> {
        self.collect(false)?;
        let cur = self
            .table
            .as_ref()
            .ok_or_else(|| Error::runtime("write before start_table"))?;
        let mut batch = batch.clone();
        batch.rechunk_mut();
        let payload = {
            let (names, cols) = cursors(&batch)?;
            let order = column_order(cur, &names)?;
            encode_copy(&cur.def, &cols, &order, 0, batch.height())
        };
        let handle = self.conn.spawn_copy(cur.copy_sql.clone(), payload);
        self.pending.push_back(Pending { batch, handle });
        Ok(std::mem::take(&mut self.carry))
    }

    fn flush(&mut self) -> Result<WriteOutcome> {
        self.settle()?;
        Ok(std::mem::take(&mut self.carry))
    }

    fn merge(&mut self, ops: &[MergeOp]) -> Result<Vec<usize>> {
        // a merge finds its row by the key's index
        if !ops.is_empty() {
            self.add_key()?;
        }
        self.settle()?;
        let cur = self
            .table
            .as_ref()
            .ok_or_else(|| Error::runtime("merge before start_table"))?;
        let mut missing = Vec::new();
        for (k, op) in ops.iter().enumerate() {
            let sql = merge_sql(Dialect::Postgres, &cur.into, &cur.def, op);
            let texts: Vec<Option<String>> = op
                .sets
                .iter()
                .map(|(_, _, v)| v)
                .chain(op.key.iter().map(|(_, v)| v))
                .map(|v| match v {
                    // bytea reads its hex form with a \x prefix
                    crate::batch::Value::Binary(b) => Some(format!("\\x{}", hex::encode(b))),
                    other => other.as_ref().to_text(),
                })
                .collect();
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = texts
                .iter()
                .map(|t| t as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let changed = self
                .conn
                .exec(&sql, &params)
                .map_err(|e| e.context(format!("merging into {}", cur.def.name)))?;
            if changed == 0 {
                missing.push(k);
            }
        }
        Ok(missing)
    }

    fn finish_table(&mut self) -> Result<()> {
        self.add_key()?;
        let Some(cur) = self.table.take() else {
            return Ok(());
        };
        self.finish_mode(&cur)?;
        if cur.created && !cur.def.foreign_keys.is_empty() {
            // the table this run created gets its keys now, checked in bulk
            self.conn
                .batch(&Dialect::Postgres.add_foreign_keys(&cur.def, &cur.def.name))
                .map_err(|e| e.context(format!("{} references a missing row", cur.def.name)))?;
        }
        Ok(())
    }

    fn check_integrity(&mut self) -> Result<()> {
        self.settle()?;
        // deferred foreign keys are checked now rather than at COMMIT, so
        // that a violation is reported with its constraint and rolled back;
        // it also clears the pending trigger events VALIDATE would trip on
        self.conn
            .batch("SET CONSTRAINTS ALL IMMEDIATE")
            .map_err(|e| e.context("a foreign key does not hold; nothing was committed"))?;
        for (table, name) in std::mem::take(&mut self.pending_fks) {
            // the referencing table may have been replaced later in the job
            let still = self.conn.rows(
                "SELECT 1 FROM pg_constraint WHERE conname = $1 AND conrelid = to_regclass($2) AND NOT convalidated",
                &[&name, &table],
            )?;
            if still.is_empty() {
                continue;
            }
            self.conn
                .batch(&format!(
                    "ALTER TABLE {table} VALIDATE CONSTRAINT {}",
                    Dialect::Postgres.quote(&name)
                ))
                .map_err(|e| {
                    e.context(format!(
                        "{table} no longer matches the table it references; nothing was committed"
                    ))
                })?;
        }
        Ok(())
    }

    fn delete_missing(
        &mut self,
        def: &TableDef,
        keys: &mut dyn Iterator<Item = Result<DataFrame>>,
        now: &str,
    ) -> Result<u64> {
        self.settle()?;
        let q = |s: &str| Dialect::Postgres.quote(s);
        let kdef = def.keys_only(KEYS_TABLE);
        let ctx = format!("finding rows gone from the source of {}", def.name);
        let cols: Vec<String> = kdef
            .columns
            .iter()
            .map(|c| format!("{} {}", q(&c.name), Dialect::Postgres.type_sql(c)))
            .collect();
        self.conn
            .batch(&format!(
                "DROP TABLE IF EXISTS {0}; CREATE TEMP TABLE {0} ({1}) ON COMMIT DROP;",
                q(KEYS_TABLE),
                cols.join(", ")
            ))
            .map_err(|e| e.context(&ctx))?;
        let names: Vec<String> = kdef.columns.iter().map(|c| q(&c.name)).collect();
        let copy_sql = format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            q(KEYS_TABLE),
            names.join(", ")
        );
        let cur = Current {
            def: kdef,
            mode: WriteMode::Append,
            created: false,
            key_later: false,
            into: KEYS_TABLE.to_string(),
            copy_sql,
        };
        for batch in keys {
            let mut batch = batch?;
            batch.rechunk_mut();
            let payload = {
                let (names, cols) = cursors(&batch)?;
                let order = column_order(&cur, &names)?;
                encode_copy(&cur.def, &cols, &order, 0, batch.height())
            };
            self.conn
                .copy_in(&cur.copy_sql, payload)
                .map_err(|e| Error::runtime(format!("{}: {ctx}: {e}", self.conn.label)))?;
        }
        self.conn
            .batch(&format!("ANALYZE {}", q(KEYS_TABLE)))
            .map_err(|e| e.context(&ctx))?;
        let n = self
            .conn
            .execute(
                &super::delete_missing_sql(Dialect::Postgres, def, KEYS_TABLE, now),
                &[],
            )
            .map_err(|e| e.context(&ctx))?;
        self.conn
            .batch(&format!("DROP TABLE {}", q(KEYS_TABLE)))
            .map_err(|e| e.context(&ctx))?;
        Ok(n)
    }

    fn commit(&mut self) -> Result<()> {
        self.settle()?;
        self.conn
            .batch("COMMIT")
            .map_err(|e| e.context("commit failed"))
    }

    fn keys_after_load(&mut self) {
        self.keys_after = true;
    }

    fn load_again(&mut self) -> Option<String> {
        self.again.take()
    }

    fn rollback(&mut self) -> Result<()> {
        // whatever the batch under way did, it is undone with the rest
        let _ = self.settle();
        self.carry = WriteOutcome::default();
        self.table = None;
        self.pending_fks.clear();
        self.conn.batch("ROLLBACK")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_bytes(x: f64, scale: u8) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode_numeric(&mut b, x, scale);
        b.to_vec()
    }

    #[test]
    fn numeric_encoding_matches_postgres() {
        // 1234.56 = groups [1234, 5600], weight 0, dscale 2
        assert_eq!(
            numeric_bytes(1234.56, 2),
            vec![0, 0, 0, 12, 0, 2, 0, 0, 0, 0, 0, 2, 0x04, 0xD2, 0x15, 0xE0]
        );
        // -0.05 = groups [500], weight -1, negative
        assert_eq!(
            numeric_bytes(-0.05, 2),
            vec![0, 0, 0, 10, 0, 1, 0xFF, 0xFF, 0x40, 0, 0, 2, 0x01, 0xF4]
        );
        // 0 = no groups
        assert_eq!(
            numeric_bytes(0.0, 2),
            vec![0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 2]
        );
        // 10000 = groups [1], weight 1
        assert_eq!(
            numeric_bytes(10000.0, 0),
            vec![0, 0, 0, 10, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1]
        );
        // 0.0031 (scale 4) = groups [31], weight -1
        assert_eq!(
            numeric_bytes(0.0031, 4),
            vec![0, 0, 0, 10, 0, 1, 0xFF, 0xFF, 0, 0, 0, 4, 0, 31]
        );
        // 1.000001 (scale 6) = groups [1, 0, 100], weight 0
        assert_eq!(
            numeric_bytes(1.000001, 6),
            vec![0, 0, 0, 14, 0, 3, 0, 0, 0, 0, 0, 6, 0, 1, 0, 0, 0, 100]
        );
        // 123456789.5 (scale 1) = groups [1, 2345, 6789, 5000], weight 2
        assert_eq!(
            numeric_bytes(123_456_789.5, 1),
            vec![
                0, 0, 0, 16, 0, 4, 0, 2, 0, 0, 0, 1, 0, 1, 0x09, 0x29, 0x1A, 0x85, 0x13, 0x88
            ]
        );
    }
}
