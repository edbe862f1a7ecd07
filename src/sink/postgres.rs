//! PostgreSQL target: `COPY … FROM STDIN (FORMAT binary)` inside one
//! transaction per job.
//!
//! Each batch is one COPY inside a savepoint. When the server refuses a
//! batch (a duplicate key, a NOT NULL), the batch is split in halves and
//! retried, down to the single rows at fault, which are returned with the
//! server's message: a bad row costs O(log n) extra COPYs and never loses
//! its neighbours.
//!
//! TLS follows libpq's `sslmode`: `disable`; `prefer` and `require` encrypt
//! without checking the certificate; `verify-ca` and `verify-full` check it
//! against the Web PKI roots, or `sslrootcert=<file.pem>`.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use futures_util::SinkExt;
use polars::prelude::DataFrame;
use tokio::runtime::Runtime;
use tokio_postgres::Client;
use tokio_postgres::config::SslMode;

use super::{
    Dialect, KEYS_TABLE, MERGES_TABLE, REJECTS_TABLE, RUNS_TABLE, RunRecord, STATE_TABLE, Sink,
    SyncState, TableDef, WriteOutcome, merge_sql, record_json, staging_name,
};
use crate::batch::Reject;
use crate::batch::{Cursor, ValueRef, cursors};
use crate::batch::{MergeOp, MergeRecord};
use crate::config::mapping::{ColumnType, WriteMode};
use crate::config::redact_url;
use crate::error::{Error, Result, chain};

/// Render a PostgreSQL error with the server's message, code, detail and hint.
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; {d}"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!("; hint: {h}"));
            }
            s
        }
        None => chain(e),
    }
}

/// A blocking PostgreSQL connection: a client and the runtime that drives it.
pub struct PgConn {
    rt: Runtime,
    pub client: Arc<Client>,
    pub label: String,
    /// Taken by each background COPY in turn: they run one after the other,
    /// in the order they were started (the lock is fair).
    copy_turn: Arc<tokio::sync::Mutex<()>>,
}

/// How TLS is to be set up, from the URL's libpq-style parameters.
#[derive(Debug, PartialEq, Eq)]
struct TlsWish {
    mode: SslMode,
    verify: bool,
    root_cert: Option<String>,
}

/// Take `sslmode` and `sslrootcert` out of the URL or key=value string
/// (tokio-postgres knows neither `verify-*` nor `sslrootcert`).
fn split_tls(url: &str) -> (String, TlsWish) {
    let mut wish = TlsWish {
        mode: SslMode::Prefer,
        verify: false,
        root_cert: None,
    };
    if crate::config::is_conninfo(url) {
        let mut kept = Vec::new();
        for (k, v) in crate::config::conninfo_pairs(url) {
            if !tls_param(&mut wish, &k, &v) {
                let quoted = v.replace('\\', "\\\\").replace('\'', "\\'");
                kept.push(format!("{k}='{quoted}'"));
            }
        }
        return (kept.join(" "), wish);
    }
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), wish);
    };
    let mut kept = Vec::new();
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if !tls_param(&mut wish, k, v) {
            kept.push(kv.to_string());
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, wish)
}

/// Take one TLS parameter into `wish`; false when `k = v` is not one.
fn tls_param(wish: &mut TlsWish, k: &str, v: &str) -> bool {
    match k {
        "sslmode" => match v {
            "disable" => wish.mode = SslMode::Disable,
            "allow" | "prefer" => wish.mode = SslMode::Prefer,
            "require" => wish.mode = SslMode::Require,
            "verify-ca" | "verify-full" => {
                wish.mode = SslMode::Require;
                wish.verify = true;
            }
            // left for tokio-postgres to refuse, naming it
            _ => return false,
        },
        "sslrootcert" => wish.root_cert = Some(v.to_string()),
        _ => return false,
    }
    true
}

mod no_verify {
    //! libpq's `sslmode=require` encrypts without checking the server's
    //! certificate; this verifier does the same.
    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    #[derive(Debug)]
    pub struct AcceptAny(pub rustls::crypto::WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.supported_schemes()
        }
    }
}

fn tls_config(wish: &TlsWish, label: &str) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::runtime(format!("{label}: TLS setup: {e}")))?;
    if wish.verify {
        let mut roots = rustls::RootCertStore::empty();
        match &wish.root_cert {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    Error::config(format!("{label}: cannot read sslrootcert {path}: {e}"))
                })?;
                for cert in rustls_pemfile_certs(&pem) {
                    roots
                        .add(cert)
                        .map_err(|e| Error::config(format!("{label}: sslrootcert {path}: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(Error::config(format!(
                        "{label}: sslrootcert {path} holds no PEM certificate"
                    )));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        Ok(builder.with_root_certificates(roots).with_no_client_auth())
    } else {
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(no_verify::AcceptAny(
                provider.signature_verification_algorithms,
            )))
            .with_no_client_auth())
    }
}

/// Certificates out of PEM text.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(|c| c.ok())
        .collect()
}

impl PgConn {
    /// Connect to `url` (libpq URL form). Wrong credentials and unknown
    /// databases are configuration errors (exit 2); an unreachable server is
    /// a runtime error (exit 1). The password never appears in a message.
    pub fn connect(url: &str) -> Result<PgConn> {
        // one worker: a batch's COPY runs there while the caller prepares
        // the next batch
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("repaero-pg")
            .enable_all()
            .build()
            .map_err(|e| Error::runtime(format!("cannot start the I/O runtime: {e}")))?;
        Self::connect_on(url, rt)
    }

    /// Connect with the connection driven on the calling thread only (a
    /// reader: no hand-over between threads for each message received).
    pub fn connect_local(url: &str) -> Result<PgConn> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::runtime(format!("cannot start the I/O runtime: {e}")))?;
        Self::connect_on(url, rt)
    }

    fn connect_on(url: &str, rt: Runtime) -> Result<PgConn> {
        let label = redact_url(url);
        let (clean, wish) = split_tls(url);
        let mut config: tokio_postgres::Config =
            clean.parse().map_err(|e: tokio_postgres::Error| {
                Error::config(format!("{label}: bad PostgreSQL URL: {}", chain(&e)))
            })?;
        config.ssl_mode(wish.mode);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("repaero");
        }
        let connector = if wish.mode == SslMode::Disable {
            None
        } else {
            Some(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
                &wish, &label,
            )?))
        };
        let client = rt.block_on(async {
            let res = match connector {
                Some(tls) => config.connect(tls).await.map(|(c, conn)| {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    c
                }),
                None => config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map(|(c, conn)| {
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                        c
                    }),
            };
            res.map_err(|e| {
                let msg = format!("{label}: cannot connect: {}", pg_error(&e));
                let code = e.as_db_error().map(|d| d.code().code().to_string());
                match code.as_deref() {
                    Some("28P01") | Some("28000") | Some("3D000") => Error::config(format!(
                        "{msg}. Check the user, the database and the password variable of the URL"
                    )),
                    _ => Error::runtime(msg),
                }
            })
        })?;
        Ok(PgConn {
            rt,
            client: Arc::new(client),
            label,
            copy_turn: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Run statements (no results).
    pub fn batch(&self, sql: &str) -> Result<()> {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .map_err(|e| Error::runtime(format!("{}: {}", self.label, pg_error(&e))))
    }

    /// Run a query returning rows.
    pub fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        self.rt
            .block_on(self.client.query(sql, params))
            .map_err(|e| Error::runtime(format!("{}: {}", self.label, pg_error(&e))))
    }

    /// Drive a future on this connection's runtime.
    pub fn run<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Run a query in the simple protocol: every value as text.
    pub fn simple(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let msgs = self
            .rt
            .block_on(self.client.simple_query(sql))
            .map_err(|e| Error::runtime(format!("{}: {}", self.label, pg_error(&e))))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).map(|s| s.to_string()))
                        .collect(),
                ),
                _ => None,
            })
            .collect())
    }

    /// Run a statement with parameters.
    pub fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        self.rt
            .block_on(self.client.execute(sql, params))
            .map_err(|e| Error::runtime(format!("{}: {}", self.label, pg_error(&e))))
    }

    /// Send a binary COPY payload; returns rows copied or the server's error.
    pub fn copy_in(&self, sql: &str, payload: bytes::Bytes) -> std::result::Result<u64, String> {
        self.rt
            .block_on(copy(Arc::clone(&self.client), sql.to_string(), payload))
    }

    /// Start `SAVEPOINT; COPY; RELEASE` in the background, after the COPYs
    /// started before it; on a refusal the savepoint is rolled back, so the
    /// connection stays usable.
    fn spawn_copy(
        &self,
        sql: String,
        payload: bytes::Bytes,
    ) -> tokio::task::JoinHandle<std::result::Result<u64, String>> {
        let client = Arc::clone(&self.client);
        let turn = Arc::clone(&self.copy_turn);
        self.rt.spawn(async move {
            let _turn = turn.lock().await;
            client
                .batch_execute("SAVEPOINT repaero_batch")
                .await
                .map_err(|e| pg_error(&e))?;
            match copy(Arc::clone(&client), sql, payload).await {
                Ok(n) => {
                    client
                        .batch_execute("RELEASE SAVEPOINT repaero_batch")
                        .await
                        .map_err(|e| pg_error(&e))?;
                    Ok(n)
                }
                Err(msg) => {
                    client
                        .batch_execute(
                            "ROLLBACK TO SAVEPOINT repaero_batch; RELEASE SAVEPOINT repaero_batch",
                        )
                        .await
                        .map_err(|e| pg_error(&e))?;
                    Err(msg)
                }
            }
        })
    }
}

async fn copy(
    client: Arc<Client>,
    sql: String,
    payload: bytes::Bytes,
) -> std::result::Result<u64, String> {
    let sink = client
        .copy_in::<_, bytes::Bytes>(sql.as_str())
        .await
        .map_err(|e| pg_error(&e))?;
    futures_util::pin_mut!(sink);
    sink.send(payload).await.map_err(|e| pg_error(&e))?;
    sink.as_mut().finish().await.map_err(|e| pg_error(&e))
}

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
}

struct Current {
    def: TableDef,
    mode: WriteMode,
    /// Created by this run: its foreign keys are added after the load.
    created: bool,
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
        })
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
                let dependents = self.conn.query(
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

    fn existing_columns(&self, table: &str) -> Result<Vec<String>> {
        let rows = self.conn.query(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
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

    fn begin(&mut self) -> Result<()> {
        self.conn.batch(&format!(
            "BEGIN;
             CREATE TABLE IF NOT EXISTS {REJECTS_TABLE} (
               run_id text NOT NULL, job text NOT NULL, table_name text NOT NULL,
               source text NOT NULL, source_row bigint, reason text NOT NULL,
               detail text NOT NULL, record jsonb NOT NULL);
             CREATE TABLE IF NOT EXISTS {MERGES_TABLE} (
               run_id text NOT NULL, job text NOT NULL, table_name text NOT NULL,
               merge_key text NOT NULL, kept_row bigint, merged_row bigint,
               kept_id text, merged_id text);
             CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (
               run_id text NOT NULL, job text NOT NULL, started_at timestamptz NOT NULL,
               finished_at timestamptz NOT NULL, status text NOT NULL, dry_run boolean NOT NULL,
               source text NOT NULL, tally jsonb NOT NULL, PRIMARY KEY (run_id, job));
             CREATE TABLE IF NOT EXISTS {STATE_TABLE} (
               job text NOT NULL, table_name text NOT NULL, update_key text NOT NULL,
               watermark text NOT NULL, run_id text NOT NULL, updated_at timestamptz NOT NULL,
               PRIMARY KEY (job, table_name));"
        ))
    }

    fn begin_read_only(&mut self) -> Result<()> {
        self.settle()?;
        // the session's default, not one transaction: each statement is its
        // own read-only transaction (a failed metric does not abort the
        // others), and a COMMIT in a metric's SQL opens no writable one
        self.conn
            .batch("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    }

    fn start_table(&mut self, def: &TableDef, mode: WriteMode) -> Result<()> {
        let q = |s: &str| Dialect::Postgres.quote(s);
        let mut created = mode == WriteMode::Replace;
        let into = match mode {
            WriteMode::Replace => {
                let stage = staging_name(&def.name);
                self.conn.batch(&format!(
                    "DROP TABLE IF EXISTS {};\n{};",
                    q(&stage),
                    Dialect::Postgres.create_table(def, &stage, false)
                ))?;
                stage
            }
            WriteMode::Upsert | WriteMode::Append => {
                let existing = self.existing_columns(&def.name)?;
                if existing.is_empty() {
                    self.conn
                        .batch(&Dialect::Postgres.create_table(def, &def.name, false))?;
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
                .execute(&sql, &params)
                .map_err(|e| e.context(format!("merging into {}", cur.def.name)))?;
            if changed == 0 {
                missing.push(k);
            }
        }
        Ok(missing)
    }

    fn finish_table(&mut self) -> Result<()> {
        self.settle()?;
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

    fn key_values(&mut self, table: &str, column: &str) -> Result<HashSet<String>> {
        self.settle()?;
        if self.existing_columns(table)?.iter().all(|c| c != column) {
            return Err(Error::config(format!(
                "{}: reference to {table}.{column}: no such table or column in the target; write {table} earlier in the job",
                self.conn.label
            )));
        }
        let q = |s: &str| Dialect::Postgres.quote(s);
        let rows = self.conn.query(
            &format!(
                "SELECT DISTINCT {0}::text FROM {1} WHERE {0} IS NOT NULL",
                q(column),
                q(table)
            ),
            &[],
        )?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }
    fn clear_rejects(&mut self, job: &str, table: &str) -> Result<()> {
        self.settle()?;
        self.conn.execute(
            &format!("DELETE FROM {REJECTS_TABLE} WHERE job = $1 AND table_name = $2"),
            &[&job, &table],
        )?;
        Ok(())
    }

    fn write_rejects(
        &mut self,
        run_id: &str,
        job: &str,
        table: &str,
        origin: &str,
        rejects: &[Reject],
    ) -> Result<()> {
        self.settle()?;
        // PostgreSQL text (and jsonb) cannot hold a NUL character, which is
        // often why the row was rejected: it is recorded as ␀ (U+2400)
        fn no_nul(s: &str) -> String {
            s.replace('\0', "\u{2400}")
        }
        let origin = no_nul(origin);
        for r in rejects {
            let record: Vec<(String, Option<String>)> = r
                .record
                .iter()
                .map(|(k, v)| (no_nul(k), v.as_deref().map(no_nul)))
                .collect();
            let record = record_json(&record);
            let (reason, detail) = (no_nul(&r.reason), no_nul(&r.detail));
            self.conn.execute(
                &format!(
                    "INSERT INTO {REJECTS_TABLE} (run_id, job, table_name, source, source_row, reason, detail, record)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb)"
                ),
                &[&run_id, &job, &table, &origin, &(r.row as i64), &reason, &detail, &record],
            )?;
        }
        Ok(())
    }

    fn record_merges(
        &mut self,
        run_id: &str,
        job: &str,
        table: &str,
        merges: &[MergeRecord],
    ) -> Result<()> {
        self.settle()?;
        self.conn.execute(
            &format!("DELETE FROM {MERGES_TABLE} WHERE job = $1 AND table_name = $2"),
            &[&job, &table],
        )?;
        for m in merges {
            self.conn.execute(
                &format!(
                    "INSERT INTO {MERGES_TABLE} (run_id, job, table_name, merge_key, kept_row, merged_row, kept_id, merged_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ),
                &[&run_id, &job, &table, &m.key, &(m.kept_row as i64), &(m.merged_row as i64), &m.kept_id, &m.merged_id],
            )?;
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
            let still = self.conn.query(
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

    fn record_run(&mut self, rec: &RunRecord) -> Result<()> {
        self.settle()?;
        self.conn.execute(
            &format!(
                "INSERT INTO {RUNS_TABLE} (run_id, job, started_at, finished_at, status, dry_run, source, tally)
                 VALUES ($1, $2, $3::text::timestamptz, $4::text::timestamptz, $5, $6, $7, $8::text::jsonb)
                 ON CONFLICT (run_id, job) DO UPDATE SET finished_at = EXCLUDED.finished_at,
                   status = EXCLUDED.status, tally = EXCLUDED.tally"
            ),
            &[
                &rec.run_id,
                &rec.job,
                &rec.started_at,
                &rec.finished_at,
                &rec.status,
                &rec.dry_run,
                &rec.source,
                &rec.tally,
            ],
        )?;
        Ok(())
    }

    fn get_state(&mut self, job: &str, table: &str) -> Result<Option<String>> {
        self.settle()?;
        let rows = self.conn.query(
            &format!("SELECT watermark FROM {STATE_TABLE} WHERE job = $1 AND table_name = $2"),
            &[&job, &table],
        )?;
        Ok(rows.first().map(|r| r.get::<_, String>(0)))
    }

    fn set_state(&mut self, st: &SyncState) -> Result<()> {
        self.settle()?;
        self.conn.execute(
            &format!(
                "INSERT INTO {STATE_TABLE} (job, table_name, update_key, watermark, run_id, updated_at)
                 VALUES ($1, $2, $3, $4, $5, now())
                 ON CONFLICT (job, table_name) DO UPDATE SET update_key = EXCLUDED.update_key,
                   watermark = EXCLUDED.watermark, run_id = EXCLUDED.run_id, updated_at = EXCLUDED.updated_at"
            ),
            &[&st.job, &st.table, &st.update_key, &st.watermark, &st.run_id],
        )?;
        Ok(())
    }

    fn query_text(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.settle()?;
        self.conn.simple(sql)
    }

    fn count_rows(&mut self, table: &str) -> Result<Option<u64>> {
        self.settle()?;
        if self.existing_columns(table)?.is_empty() {
            return Ok(None);
        }
        let rows = self.conn.query(
            &format!("SELECT count(*) FROM {}", Dialect::Postgres.quote(table)),
            &[],
        )?;
        Ok(rows.first().map(|r| r.get::<_, i64>(0) as u64))
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

    #[test]
    fn sslmode_is_taken_out_of_the_url() {
        let (url, w) = split_tls(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
        );
        assert_eq!(url, "postgres://u@h/db?application_name=x");
        assert_eq!(
            w,
            TlsWish {
                mode: SslMode::Require,
                verify: true,
                root_cert: Some("/ca.pem".into())
            }
        );
        let (url, w) = split_tls("postgres://u@h/db?sslmode=disable");
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(w.mode, SslMode::Disable);
        let (_, w) = split_tls("postgres://u@h/db");
        assert_eq!(
            w,
            TlsWish {
                mode: SslMode::Prefer,
                verify: false,
                root_cert: None
            }
        );
        // the libpq key=value form, values re-quoted for tokio-postgres
        let (kv, w) = split_tls(
            "host=h dbname=db sslmode=verify-ca sslrootcert='/c a.pem' password='it\\'s'",
        );
        assert_eq!(kv, "host='h' dbname='db' password='it\\'s'");
        assert_eq!(
            w,
            TlsWish {
                mode: SslMode::Require,
                verify: true,
                root_cert: Some("/c a.pem".into())
            }
        );
        let config: tokio_postgres::Config = kv.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"it's"[..]));
        assert_eq!(config.get_dbname(), Some("db"));
    }
}
