//! Oracle: identifiers (upper case, at most 30 bytes), column types, the
//! target URL, and (cargo feature `oracle`) the connection, over ODPI-C,
//! which needs Oracle's client libraries (Instant Client) at run time only.
//!
//! Identifiers are upper case and quoted (`invoices` is `"INVOICES"`, so
//! `SELECT * FROM invoices` finds it), at most 30 bytes (Oracle before
//! 12.2): a longer name keeps its first 21 bytes and a hash.
//!
//! Types: text → VARCHAR2(n CHAR) (n = the column's `length`, 4000 by
//! default; CLOB above 4000; NVARCHAR2/NCLOB with `?national=true` in the
//! URL), integer → NUMBER(19), decimal → NUMBER(p,s), float →
//! BINARY_DOUBLE, boolean → NUMBER(1) checked 0/1, date → DATE, datetime →
//! TIMESTAMP(6), time → INTERVAL DAY(0) TO SECOND(6), binary → BLOB.

use sha2::{Digest, Sha256};

use super::ColumnDef;
use crate::config::ColumnType;
use crate::error::{Error, Result};

/// Longest identifier every Oracle version accepts.
pub const MAX_IDENT: usize = 30;

/// Longest text repaero writes into its own VARCHAR2(4000) columns, in
/// characters (4 bytes each at worst).
const OWN_TEXT: usize = 1_000;

/// Oracle's name for an identifier: upper case, at most 30 bytes (a longer
/// name keeps its first 21 bytes, `_` and 8 hex digits of its hash).
pub fn ident(name: &str) -> String {
    let up = name.to_uppercase();
    if up.len() <= MAX_IDENT {
        return up;
    }
    let hash = hex::encode(&Sha256::digest(up.as_bytes())[..4]);
    let mut cut = MAX_IDENT - 9;
    while !up.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash}", &up[..cut])
}

/// A quoted Oracle identifier.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", ident(name).replace('"', "\"\""))
}

/// The Oracle column type of a target column.
pub fn column_type(c: &ColumnDef, national: bool) -> String {
    match c.ty {
        ColumnType::Text => {
            // NVARCHAR2 holds 2000 characters in AL16UTF16
            let limit = if national { 2_000 } else { 4_000 };
            match c.length.unwrap_or(limit) {
                n if n > limit => if national { "NCLOB" } else { "CLOB" }.to_string(),
                n if national => format!("NVARCHAR2({n})"),
                n => format!("VARCHAR2({n} CHAR)"),
            }
        }
        ColumnType::Integer => "NUMBER(19)".into(),
        ColumnType::Decimal => format!("NUMBER({},{})", c.precision.min(38), c.scale),
        ColumnType::Float => "BINARY_DOUBLE".into(),
        ColumnType::Boolean => "NUMBER(1)".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Datetime => "TIMESTAMP(6)".into(),
        ColumnType::Time => "INTERVAL DAY(0) TO SECOND(6)".into(),
        ColumnType::Binary => "BLOB".into(),
    }
}

/// Truncate text for repaero's own VARCHAR2(4000) columns.
pub fn own_text(s: &str) -> String {
    s.chars().take(OWN_TEXT).collect()
}

/// The parts of an `oracle://user:password@host:port/service` URL.
#[derive(Debug, PartialEq, Eq)]
pub struct OracleUrl {
    pub user: String,
    pub password: String,
    /// EZConnect (`//host:port/service`) or a tnsnames alias.
    pub connect: String,
    /// Text in NVARCHAR2/NCLOB (`?national=true`).
    pub national: bool,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Read an Oracle target URL.
pub fn parse_url(url: &str) -> Result<OracleUrl> {
    let label = crate::config::redact_url(url);
    let bad = |why: &str| {
        Error::config(format!(
            "{label}: {why}; expected oracle://user:${{ORACLE_PASSWORD}}@host:1521/service (or @tns_alias)"
        ))
    };
    let rest = url
        .strip_prefix("oracle://")
        .ok_or_else(|| bad("not an oracle:// URL"))?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (auth, place) = rest.rsplit_once('@').ok_or_else(|| bad("no user"))?;
    let (user, password) = auth.split_once(':').unwrap_or((auth, ""));
    if user.is_empty() {
        return Err(bad("no user"));
    }
    if place.is_empty() {
        return Err(bad("no host or alias"));
    }
    let connect = if place.contains('/') || place.contains(':') {
        format!("//{place}")
    } else {
        place.to_string()
    };
    let mut national = false;
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("national", v)) => national = matches!(v, "true" | "1" | "yes"),
            _ => return Err(bad(&format!("unknown parameter `{kv}` (known: national)"))),
        }
    }
    Ok(OracleUrl {
        user: percent_decode(user),
        password: percent_decode(password),
        connect,
        national,
    })
}

/// What to tell a user whose machine lacks the Oracle client libraries
/// (ODPI-C's DPI-1047), or `None` for any other error.
pub fn client_missing_hint(message: &str) -> Option<String> {
    message.contains("DPI-1047").then(|| {
        "the Oracle client libraries are not installed. Install Oracle Instant Client \
         (Basic or Basic Light, 19c or later, 64-bit) from Oracle's download site, unzip it \
         (e.g. into /opt/oracle/instantclient_23_5), then either run \
         `echo /opt/oracle/instantclient_23_5 > /etc/ld.so.conf.d/oracle-instantclient.conf && ldconfig` \
         or set LD_LIBRARY_PATH=/opt/oracle/instantclient_23_5; on Debian/Ubuntu also \
         `apt-get install libaio1` (libaio1t64 on newer releases)"
            .to_string()
    })
}

/// The error for an `oracle://` URL when repaero was built without Oracle.
#[cfg(not(feature = "oracle"))]
pub fn not_built(url: &str) -> Error {
    Error::config(format!(
        "{}: this repaero was built without Oracle; build it with `cargo build --release --features oracle` (Oracle Instant Client is needed at run time only)",
        crate::config::redact_url(url)
    ))
}

#[cfg(feature = "oracle")]
pub use imp::{Bound, OracleConn, bound, ora_err};

#[cfg(feature = "oracle")]
mod imp {
    use chrono::{NaiveDate, NaiveDateTime};
    use oracle::sql_type::ToSql;

    use super::*;
    use crate::batch::{Value, ValueRef};
    use crate::db::{Conn, Dialect, Row};

    /// A NULL of any type (the bind's type is set before).
    static NULL: Option<i64> = None;

    /// One value as bound.
    pub enum Bound<'a> {
        Null,
        Text(&'a str),
        Int(i64),
        Float(f64),
        Date(NaiveDate),
        Ts(NaiveDateTime),
        Dur(chrono::Duration),
        Bytes(&'a [u8]),
    }

    impl Bound<'_> {
        pub fn sql(&self) -> &dyn ToSql {
            match self {
                Bound::Null => &NULL,
                Bound::Text(s) => s,
                Bound::Int(i) => i,
                Bound::Float(f) => f,
                Bound::Date(d) => d,
                Bound::Ts(t) => t,
                Bound::Dur(d) => d,
                Bound::Bytes(b) => b,
            }
        }
    }

    /// A value as Oracle binds it (booleans as 0/1, dates as DATE…).
    pub fn bound(v: ValueRef<'_>) -> Bound<'_> {
        match v {
            ValueRef::Null => Bound::Null,
            ValueRef::Text(s) => Bound::Text(s),
            ValueRef::Int(i) => Bound::Int(i),
            ValueRef::Float(f) => Bound::Float(f),
            ValueRef::Bool(b) => Bound::Int(b as i64),
            ValueRef::Date(d) => {
                NaiveDate::from_num_days_from_ce_opt(d + 719_163).map_or(Bound::Null, Bound::Date)
            }
            ValueRef::Datetime(ms) => chrono::DateTime::from_timestamp_millis(ms)
                .map_or(Bound::Null, |t| Bound::Ts(t.naive_utc())),
            ValueRef::Time(ns) => Bound::Dur(chrono::Duration::nanoseconds(ns)),
            ValueRef::Binary(b) => Bound::Bytes(b),
        }
    }

    /// An Oracle error as repaero reports it: a missing client library or
    /// wrong credentials are configuration errors (exit 2).
    pub fn ora_err(label: &str, e: &oracle::Error) -> Error {
        let msg = e.to_string();
        if let Some(hint) = client_missing_hint(&msg) {
            return Error::config(format!("{label}: {hint} ({msg})"));
        }
        // ORA-01017 wrong credentials, ORA-12514 unknown service, ORA-28000 locked
        if ["ORA-01017", "ORA-12514", "ORA-28000", "ORA-01005"]
            .iter()
            .any(|c| msg.contains(c))
        {
            return Error::config(format!(
                "{label}: cannot connect: {msg}. Check the user, the service and the password variable of target.url"
            ));
        }
        Error::runtime(format!("{label}: {msg}"))
    }

    /// A connection to an Oracle database. Oracle opens a transaction at
    /// the first statement and commits at every DDL statement.
    pub struct OracleConn {
        pub conn: oracle::Connection,
        pub label: String,
        /// Text in NVARCHAR2/NCLOB (`?national=true`).
        pub national: bool,
    }

    impl OracleConn {
        pub fn connect(url: &str) -> Result<OracleConn> {
            let label = crate::config::redact_url(url);
            let u = parse_url(url)?;
            let conn = oracle::Connection::connect(&u.user, &u.password, &u.connect)
                .map_err(|e| ora_err(&label, &e))?;
            Ok(OracleConn {
                conn,
                label,
                national: u.national,
            })
        }

        pub fn err(&self, ctx: &str) -> impl Fn(oracle::Error) -> Error + '_ {
            let ctx = ctx.to_string();
            move |e| ora_err(&self.label, &e).context(&ctx)
        }

        /// One statement with native binds; rows affected.
        pub fn exec(&self, sql: &str, params: &[&dyn ToSql]) -> Result<u64> {
            let stmt = self.conn.execute(sql, params).map_err(self.err(sql))?;
            stmt.row_count().map_err(self.err(sql))
        }
    }

    impl Conn for OracleConn {
        fn dialect(&self) -> Dialect {
            Dialect::Oracle
        }

        fn describe(&self) -> String {
            self.label.clone()
        }

        fn batch(&mut self, sql: &str) -> Result<()> {
            for stmt in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
                self.exec(stmt.trim_end_matches(';'), &[])?;
            }
            Ok(())
        }

        fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
            let vals: Vec<Bound<'_>> = params.iter().map(|v| bound(v.as_ref())).collect();
            let refs: Vec<&dyn ToSql> = vals.iter().map(|v| v.sql()).collect();
            self.exec(sql, &refs)
        }

        fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
            let vals: Vec<Bound<'_>> = params.iter().map(|v| bound(v.as_ref())).collect();
            let refs: Vec<&dyn ToSql> = vals.iter().map(|v| v.sql()).collect();
            let rows = self.conn.query(sql, &refs).map_err(self.err(sql))?;
            let n = rows.column_info().len();
            let mut out = Vec::new();
            for row in rows {
                let row = row.map_err(self.err(sql))?;
                let mut vals = Vec::with_capacity(n);
                for i in 0..n {
                    vals.push(row.get::<usize, Option<String>>(i).map_err(self.err(sql))?);
                }
                out.push(vals);
            }
            Ok(out)
        }

        fn columns(&mut self, table: &str) -> Result<Vec<String>> {
            let rows = self
                .conn
                .query_as::<String>(
                    "SELECT column_name FROM user_tab_columns WHERE table_name = :1",
                    &[&ident(table)],
                )
                .map_err(self.err("listing columns"))?;
            rows.collect::<std::result::Result<Vec<_>, _>>()
                .map_err(self.err("listing columns"))
        }

        fn begin(&mut self) -> Result<()> {
            // Oracle opens the transaction at the first statement
            Ok(())
        }

        fn begin_read_only(&mut self) -> Result<()> {
            // the first statement of the transaction; it ends at rollback
            self.exec("SET TRANSACTION READ ONLY", &[])?;
            Ok(())
        }

        fn commit(&mut self) -> Result<()> {
            self.conn.commit().map_err(self.err("commit"))
        }

        fn rollback(&mut self) -> Result<()> {
            self.conn.rollback().map_err(self.err("rollback"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Dialect, ForeignKey, TableDef};

    fn col(name: &str, ty: ColumnType) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            ty,
            precision: 14,
            scale: 2,
            not_null: false,
            length: None,
        }
    }

    fn invoices() -> TableDef {
        TableDef {
            name: "invoices".into(),
            columns: vec![
                ColumnDef {
                    not_null: true,
                    ..col("id", ColumnType::Integer)
                },
                col("number", ColumnType::Text),
                col("total_incl_tax", ColumnType::Decimal),
                col("issued_on", ColumnType::Date),
                col("lines_match", ColumnType::Boolean),
            ],
            key: vec!["id".into()],
            foreign_keys: vec![],
            soft_delete: None,
        }
    }

    #[test]
    fn identifiers_are_upper_case_and_short() {
        assert_eq!(quote("invoices"), "\"INVOICES\"");
        assert_eq!(quote("_repaero_state"), "\"_REPAERO_STATE\"");
        let long = ident("invoice_lines_invoice_id_fkey_for_a_long_table");
        assert_eq!(long.len(), 30);
        assert!(long.starts_with("INVOICE_LINES_INVOICE"), "{long}");
        // deterministic, and distinct names stay distinct
        assert_eq!(
            long,
            ident("invoice_lines_invoice_id_fkey_for_a_long_table")
        );
        assert_ne!(
            long,
            ident("invoice_lines_invoice_id_fkey_for_a_long_tablf")
        );
        // never cut inside a character
        let accents = ident("désignation_de_la_pièce_détachée_longue");
        assert!(
            accents.len() <= 30 && accents.starts_with("DÉSIGNATION"),
            "{accents}"
        );
        assert_eq!(quote("a\"b"), "\"A\"\"B\"");
    }

    #[test]
    fn every_type_has_an_oracle_column_type() {
        let t = |ty| column_type(&col("c", ty), false);
        assert_eq!(t(ColumnType::Text), "VARCHAR2(4000 CHAR)");
        assert_eq!(t(ColumnType::Integer), "NUMBER(19)");
        assert_eq!(t(ColumnType::Decimal), "NUMBER(14,2)");
        assert_eq!(t(ColumnType::Float), "BINARY_DOUBLE");
        assert_eq!(t(ColumnType::Boolean), "NUMBER(1)");
        assert_eq!(t(ColumnType::Date), "DATE");
        assert_eq!(t(ColumnType::Datetime), "TIMESTAMP(6)");
        assert_eq!(t(ColumnType::Time), "INTERVAL DAY(0) TO SECOND(6)");
        assert_eq!(t(ColumnType::Binary), "BLOB");
        let text = |length, national| {
            column_type(
                &ColumnDef {
                    length,
                    ..col("c", ColumnType::Text)
                },
                national,
            )
        };
        assert_eq!(text(Some(40), false), "VARCHAR2(40 CHAR)");
        assert_eq!(text(Some(20_000), false), "CLOB");
        assert_eq!(text(None, true), "NVARCHAR2(2000)");
        assert_eq!(text(Some(3_000), true), "NCLOB");
        assert_eq!(
            column_type(
                &ColumnDef {
                    precision: 60,
                    scale: 4,
                    ..col("c", ColumnType::Decimal)
                },
                false
            ),
            "NUMBER(38,4)"
        );
        assert_eq!(
            Dialect::Oracle.type_sql(&col("c", ColumnType::Integer)),
            "NUMBER(19)"
        );
    }

    #[test]
    fn create_table_with_key_checks_and_foreign_keys() {
        let mut def = invoices();
        def.soft_delete = Some("deleted_at".into());
        assert_eq!(
            Dialect::Oracle.create_table(&def, "invoices", true),
            "CREATE TABLE \"INVOICES\" (\n  \"ID\" NUMBER(19) NOT NULL,\n  \"NUMBER\" VARCHAR2(4000 CHAR),\n  \"TOTAL_INCL_TAX\" NUMBER(14,2),\n  \"ISSUED_ON\" DATE,\n  \"LINES_MATCH\" NUMBER(1) CHECK (\"LINES_MATCH\" IN (0, 1)),\n  \"DELETED_AT\" TIMESTAMP(6),\n  CONSTRAINT \"INVOICES_PKEY\" PRIMARY KEY (\"ID\")\n)"
        );
        let lines = TableDef {
            name: "invoice_lines".into(),
            columns: vec![
                col("id", ColumnType::Integer),
                col("invoice_id", ColumnType::Integer),
            ],
            key: vec!["id".into()],
            foreign_keys: vec![ForeignKey {
                column: "invoice_id".into(),
                table: "invoices".into(),
                references: "id".into(),
            }],
            soft_delete: None,
        };
        assert_eq!(
            Dialect::Oracle.add_foreign_keys(&lines, "invoice_lines"),
            format!(
                "ALTER TABLE \"INVOICE_LINES\" ADD CONSTRAINT \"{}\" FOREIGN KEY (\"INVOICE_ID\") REFERENCES \"INVOICES\" (\"ID\") DEFERRABLE INITIALLY DEFERRED;\n",
                ident("invoice_lines_invoice_id_fkey")
            )
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("oracle://repaero:p%40ss%3Aw@db.repaero.fr:1521/REPAERO").unwrap(),
            OracleUrl {
                user: "repaero".into(),
                password: "p@ss:w".into(),
                connect: "//db.repaero.fr:1521/REPAERO".into(),
                national: false,
            }
        );
        let alias = parse_url("oracle://repaero:x@REPAERO_PROD?national=true").unwrap();
        assert_eq!(
            (alias.connect.as_str(), alias.national),
            ("REPAERO_PROD", true)
        );
        let err = parse_url("oracle://repaero:secret@host/svc?pool=3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown parameter `pool=3`"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        assert!(parse_url("oracle://@host/svc").is_err());
        assert!(parse_url("oracle://user:pw@").is_err());
    }

    #[test]
    fn a_missing_client_library_says_what_to_install() {
        let hint = client_missing_hint(
            "DPI-1047: Cannot locate a 64-bit Oracle Client library: \"libclntsh.so: cannot open shared object file\"",
        )
        .unwrap();
        assert!(
            hint.contains("Instant Client") && hint.contains("LD_LIBRARY_PATH"),
            "{hint}"
        );
        assert!(hint.contains("libaio"), "{hint}");
        assert_eq!(
            client_missing_hint("ORA-01017: invalid username/password"),
            None
        );
    }
}
