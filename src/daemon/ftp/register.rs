//! The register of manufacturer documents and the feed's memory of the
//! remote files, both in the target database (SQLite, PostgreSQL, Oracle
//! through the dialect): a restart starts from what is written here.
//!
//! - [`DOCUMENTS`] (`manufacturer_documents`): one row per version of a
//!   document (manufacturer, reference, language, revision, version), with
//!   the spec's metadata and a status: `current`, `superseded` or
//!   `withdrawn`. A file replaced in place with other content is a new
//!   version of the same revision; the same content again is not.
//! - [`FILES`] (`manufacturer_files`): one row per remote path: the size
//!   and time of the last listing (for the stability check), what was last
//!   handled (fetched or quarantined) and why, and a manifest's text.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::batch::Value;
use crate::config::mapping::ColumnType;
use crate::db::{ColumnDef, Conn, Dialect, Row, TableDef};
use crate::error::{Error, Result};

pub const DOCUMENTS: &str = "manufacturer_documents";
pub const FILES: &str = "manufacturer_files";

fn def(name: &str, cols: &[(&str, ColumnType, bool)], key: &[&str]) -> TableDef {
    let columns = cols
        .iter()
        .map(|(n, t, nn)| ColumnDef::new(n, *t, *nn))
        .collect();
    TableDef::owned(name, columns, key)
}

const DOC_COLUMNS: &[&str] = &[
    "manufacturer",
    "reference",
    "language",
    "revision",
    "version",
    "model",
    "doc_type",
    "title",
    "ata_chapter",
    "effective_date",
    "remote_path",
    "size",
    "remote_modified",
    "sha256",
    "local_path",
    "fetched_at",
    "status",
];

fn documents_def() -> TableDef {
    use ColumnType::{Integer as I, Text as T};
    def(
        DOCUMENTS,
        &[
            ("manufacturer", T, true),
            ("reference", T, true),
            ("language", T, true),
            ("revision", I, true),
            ("version", I, true),
            ("model", T, false),
            ("doc_type", T, false),
            ("title", T, false),
            ("ata_chapter", T, false),
            ("effective_date", T, false),
            ("remote_path", T, true),
            ("size", I, true),
            ("remote_modified", T, false),
            ("sha256", T, true),
            ("local_path", T, true),
            ("fetched_at", T, true),
            ("status", T, true),
        ],
        &[
            "manufacturer",
            "reference",
            "language",
            "revision",
            "version",
        ],
    )
}

const FILE_COLUMNS: &[&str] = &[
    "manufacturer",
    "remote_path",
    "listed_size",
    "listed_modified",
    "state",
    "handled_size",
    "handled_modified",
    "sha256",
    "reason",
    "attempts",
    "expected_sha256",
    "manifest",
    "first_seen_at",
    "updated_at",
];

fn files_def() -> TableDef {
    use ColumnType::{Integer as I, Text as T};
    def(
        FILES,
        &[
            ("manufacturer", T, true),
            ("remote_path", T, true),
            ("listed_size", I, false),
            ("listed_modified", T, false),
            ("state", T, true),
            ("handled_size", I, false),
            ("handled_modified", T, false),
            ("sha256", T, false),
            ("reason", T, false),
            ("attempts", I, true),
            ("expected_sha256", T, false),
            ("manifest", T, false),
            ("first_seen_at", T, true),
            ("updated_at", T, true),
        ],
        &["manufacturer", "remote_path"],
    )
}

/// Create the tables when they are missing.
pub fn ensure(conn: &mut dyn Conn) -> Result<()> {
    let d = conn.dialect();
    for def in [documents_def(), files_def()] {
        if !conn.table_exists(&def.name)? {
            conn.batch(&d.create_table(&def, &def.name, d != Dialect::Oracle))?;
        }
    }
    Ok(())
}

/// A remote file's state.
pub mod state {
    /// Listed, not yet stable (or changed since it was handled).
    pub const WAITING: &str = "waiting";
    pub const FETCHED: &str = "fetched";
    pub const QUARANTINED: &str = "quarantined";
    /// No longer on the server.
    pub const REMOVED: &str = "removed";
}

/// One row of [`FILES`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FileRow {
    pub manufacturer: String,
    pub remote_path: String,
    pub listed_size: Option<i64>,
    pub listed_modified: Option<String>,
    pub state: String,
    pub handled_size: Option<i64>,
    pub handled_modified: Option<String>,
    pub sha256: Option<String>,
    pub reason: Option<String>,
    pub attempts: i64,
    pub expected_sha256: Option<String>,
    #[serde(skip)]
    pub manifest: Option<String>,
    pub first_seen_at: String,
    pub updated_at: String,
}

fn text(v: &Option<String>) -> Value {
    v.clone().map_or(Value::Null, Value::Text)
}

fn int(v: Option<i64>) -> Value {
    v.map_or(Value::Null, Value::Int)
}

fn col_int(r: &Row, i: usize) -> Option<i64> {
    r.get(i)
        .cloned()
        .flatten()
        .and_then(|s| s.split('.').next().and_then(|n| n.parse().ok()))
}

fn col_text(r: &Row, i: usize) -> Option<String> {
    r.get(i).cloned().flatten()
}

fn select(conn: &mut dyn Conn, table: &str, cols: &[&str], filter: &str) -> String {
    let d = conn.dialect();
    let list: Vec<String> = cols
        .iter()
        .map(|c| {
            if d == Dialect::Oracle {
                d.as_text(&d.quote(c))
            } else {
                d.quote(c)
            }
        })
        .collect();
    format!(
        "SELECT {} FROM {} {filter}",
        list.join(", "),
        d.quote(table)
    )
}

fn q(d: Dialect, c: &str) -> String {
    d.quote(c)
}

/// Every remote file of a manufacturer known so far.
pub fn load_files(conn: &mut dyn Conn, manufacturer: &str) -> Result<HashMap<String, FileRow>> {
    let d = conn.dialect();
    let sql = select(
        conn,
        FILES,
        FILE_COLUMNS,
        &format!(
            "WHERE {} = {}",
            q(d, "manufacturer"),
            d.param(1, ColumnType::Text)
        ),
    );
    let rows = conn.query(&sql, &[Value::Text(manufacturer.into())])?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let f = FileRow {
                manufacturer: col_text(&r, 0).unwrap_or_default(),
                remote_path: col_text(&r, 1).unwrap_or_default(),
                listed_size: col_int(&r, 2),
                listed_modified: col_text(&r, 3),
                state: col_text(&r, 4).unwrap_or_default(),
                handled_size: col_int(&r, 5),
                handled_modified: col_text(&r, 6),
                sha256: col_text(&r, 7),
                reason: col_text(&r, 8),
                attempts: col_int(&r, 9).unwrap_or(0),
                expected_sha256: col_text(&r, 10),
                manifest: col_text(&r, 11),
                first_seen_at: col_text(&r, 12).unwrap_or_default(),
                updated_at: col_text(&r, 13).unwrap_or_default(),
            };
            (f.remote_path.clone(), f)
        })
        .collect())
}

/// Write a remote file's row (insert or update).
pub fn save_file(conn: &mut dyn Conn, f: &FileRow) -> Result<()> {
    let d = conn.dialect();
    let def = files_def();
    let cols: Vec<(&str, String)> = def
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), d.param(i + 1, c.ty)))
        .collect();
    let values = vec![
        Value::Text(f.manufacturer.clone()),
        Value::Text(f.remote_path.clone()),
        int(f.listed_size),
        text(&f.listed_modified),
        Value::Text(f.state.clone()),
        int(f.handled_size),
        text(&f.handled_modified),
        text(&f.sha256),
        text(&f.reason),
        Value::Int(f.attempts),
        text(&f.expected_sha256),
        text(&f.manifest),
        Value::Text(f.first_seen_at.clone()),
        Value::Text(f.updated_at.clone()),
    ];
    conn.execute(
        &d.upsert_sql(FILES, &cols, &["manufacturer", "remote_path"]),
        &values,
    )?;
    Ok(())
}

/// One version of a document.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DocRow {
    pub manufacturer: String,
    pub reference: String,
    pub language: String,
    pub revision: i64,
    pub version: i64,
    pub model: Option<String>,
    pub doc_type: Option<String>,
    pub title: Option<String>,
    pub ata_chapter: Option<String>,
    pub effective_date: Option<String>,
    pub remote_path: String,
    pub size: i64,
    pub remote_modified: Option<String>,
    pub sha256: String,
    pub local_path: String,
    pub fetched_at: String,
    pub status: String,
}

fn doc_from(r: &Row) -> DocRow {
    DocRow {
        manufacturer: col_text(r, 0).unwrap_or_default(),
        reference: col_text(r, 1).unwrap_or_default(),
        language: col_text(r, 2).unwrap_or_default(),
        revision: col_int(r, 3).unwrap_or(0),
        version: col_int(r, 4).unwrap_or(0),
        model: col_text(r, 5),
        doc_type: col_text(r, 6),
        title: col_text(r, 7),
        ata_chapter: col_text(r, 8),
        effective_date: col_text(r, 9),
        remote_path: col_text(r, 10).unwrap_or_default(),
        size: col_int(r, 11).unwrap_or(0),
        remote_modified: col_text(r, 12),
        sha256: col_text(r, 13).unwrap_or_default(),
        local_path: col_text(r, 14).unwrap_or_default(),
        fetched_at: col_text(r, 15).unwrap_or_default(),
        status: col_text(r, 16).unwrap_or_default(),
    }
}

fn insert_doc(conn: &mut dyn Conn, doc: &DocRow) -> Result<()> {
    let d = conn.dialect();
    let def = documents_def();
    let names: Vec<String> = def.columns.iter().map(|c| q(d, &c.name)).collect();
    let params: Vec<String> = def
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| d.param(i + 1, c.ty))
        .collect();
    let values = vec![
        Value::Text(doc.manufacturer.clone()),
        Value::Text(doc.reference.clone()),
        Value::Text(doc.language.clone()),
        Value::Int(doc.revision),
        Value::Int(doc.version),
        text(&doc.model),
        text(&doc.doc_type),
        text(&doc.title),
        text(&doc.ata_chapter),
        text(&doc.effective_date),
        Value::Text(doc.remote_path.clone()),
        Value::Int(doc.size),
        text(&doc.remote_modified),
        Value::Text(doc.sha256.clone()),
        Value::Text(doc.local_path.clone()),
        Value::Text(doc.fetched_at.clone()),
        Value::Text(doc.status.clone()),
    ];
    conn.execute(
        &format!(
            "INSERT INTO {} ({}) VALUES ({})",
            q(d, DOCUMENTS),
            names.join(", "),
            params.join(", ")
        ),
        &values,
    )?;
    Ok(())
}

/// What registering a fetched file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// A new version (1 for a new document or revision).
    Version(i64),
    /// The content was already registered: its row was refreshed.
    Unchanged(i64),
}

/// Register fetched, checked documents and their files' new states, and
/// set the statuses of their documents' versions; in one transaction.
pub fn register(conn: &mut dyn Conn, batch: &[(DocRow, FileRow)]) -> Result<Vec<Registered>> {
    conn.begin()?;
    let mut out = Vec::with_capacity(batch.len());
    for (doc, file) in batch {
        out.push(register_one(conn, doc, file)?);
    }
    conn.commit()?;
    Ok(out)
}

fn register_one(conn: &mut dyn Conn, doc: &DocRow, file: &FileRow) -> Result<Registered> {
    let d = conn.dialect();
    let versions = group_versions(conn, &doc.manufacturer, &doc.reference, &doc.language)?;
    let same_rev: Vec<&DocRow> = versions
        .iter()
        .filter(|v| v.revision == doc.revision)
        .collect();
    let latest = same_rev.iter().max_by_key(|v| v.version);
    let outcome = match latest {
        Some(v) if v.sha256 == doc.sha256 => {
            // the same content again (a file touched, or back after a
            // removal): refresh where and when it was seen
            let sql = format!(
                "UPDATE {} SET {} = {}, {} = {}, {} = {}, {} = COALESCE({}, {}), {} = COALESCE({}, {}), {} = COALESCE({}, {}) WHERE {} = {} AND {} = {} AND {} = {} AND {} = {} AND {} = {}",
                q(d, DOCUMENTS),
                q(d, "remote_path"),
                d.param(1, ColumnType::Text),
                q(d, "remote_modified"),
                d.param(2, ColumnType::Text),
                q(d, "size"),
                d.param(3, ColumnType::Integer),
                q(d, "title"),
                d.param(4, ColumnType::Text),
                q(d, "title"),
                q(d, "ata_chapter"),
                d.param(5, ColumnType::Text),
                q(d, "ata_chapter"),
                q(d, "effective_date"),
                d.param(6, ColumnType::Text),
                q(d, "effective_date"),
                q(d, "manufacturer"),
                d.param(7, ColumnType::Text),
                q(d, "reference"),
                d.param(8, ColumnType::Text),
                q(d, "language"),
                d.param(9, ColumnType::Text),
                q(d, "revision"),
                d.param(10, ColumnType::Integer),
                q(d, "version"),
                d.param(11, ColumnType::Integer),
            );
            conn.execute(
                &sql,
                &[
                    Value::Text(doc.remote_path.clone()),
                    text(&doc.remote_modified),
                    Value::Int(doc.size),
                    text(&doc.title),
                    text(&doc.ata_chapter),
                    text(&doc.effective_date),
                    Value::Text(doc.manufacturer.clone()),
                    Value::Text(doc.reference.clone()),
                    Value::Text(doc.language.clone()),
                    Value::Int(doc.revision),
                    Value::Int(v.version),
                ],
            )?;
            Registered::Unchanged(v.version)
        }
        other => {
            let version = other.map_or(1, |v| v.version + 1);
            let mut row = doc.clone();
            row.version = version;
            row.status = "superseded".into();
            insert_doc(conn, &row)?;
            Registered::Version(version)
        }
    };
    save_file(conn, file)?;
    restatus(conn, &doc.manufacturer, &doc.reference, &doc.language)?;
    Ok(outcome)
}

fn group_versions(
    conn: &mut dyn Conn,
    manufacturer: &str,
    reference: &str,
    language: &str,
) -> Result<Vec<DocRow>> {
    let d = conn.dialect();
    let sql = select(
        conn,
        DOCUMENTS,
        DOC_COLUMNS,
        &format!(
            "WHERE {} = {} AND {} = {} AND {} = {}",
            q(d, "manufacturer"),
            d.param(1, ColumnType::Text),
            q(d, "reference"),
            d.param(2, ColumnType::Text),
            q(d, "language"),
            d.param(3, ColumnType::Text)
        ),
    );
    let rows = conn.query(
        &sql,
        &[
            Value::Text(manufacturer.into()),
            Value::Text(reference.into()),
            Value::Text(language.into()),
        ],
    )?;
    Ok(rows.iter().map(doc_from).collect())
}

/// Set the statuses of one document's versions: those whose remote file
/// is gone are `withdrawn`; of the others, the highest revision's latest
/// version is `current`, the rest `superseded`.
fn restatus(
    conn: &mut dyn Conn,
    manufacturer: &str,
    reference: &str,
    language: &str,
) -> Result<()> {
    let d = conn.dialect();
    let versions = group_versions(conn, manufacturer, reference, language)?;
    let paths: BTreeSet<String> = versions.iter().map(|v| v.remote_path.clone()).collect();
    let mut removed = BTreeSet::new();
    for p in paths {
        let st = conn.query_one(
            &format!(
                "SELECT {} FROM {} WHERE {} = {} AND {} = {}",
                q(d, "state"),
                q(d, FILES),
                q(d, "manufacturer"),
                d.param(1, ColumnType::Text),
                q(d, "remote_path"),
                d.param(2, ColumnType::Text)
            ),
            &[Value::Text(manufacturer.into()), Value::Text(p.clone())],
        )?;
        if st.as_deref() == Some(state::REMOVED) {
            removed.insert(p);
        }
    }
    let current = versions
        .iter()
        .filter(|v| !removed.contains(&v.remote_path))
        .max_by_key(|v| (v.revision, v.version))
        .map(|v| (v.revision, v.version));
    for v in &versions {
        let status = if removed.contains(&v.remote_path) {
            "withdrawn"
        } else if Some((v.revision, v.version)) == current {
            "current"
        } else {
            "superseded"
        };
        if v.status != status {
            conn.execute(
                &format!(
                    "UPDATE {} SET {} = {} WHERE {} = {} AND {} = {} AND {} = {} AND {} = {} AND {} = {}",
                    q(d, DOCUMENTS),
                    q(d, "status"),
                    d.param(1, ColumnType::Text),
                    q(d, "manufacturer"),
                    d.param(2, ColumnType::Text),
                    q(d, "reference"),
                    d.param(3, ColumnType::Text),
                    q(d, "language"),
                    d.param(4, ColumnType::Text),
                    q(d, "revision"),
                    d.param(5, ColumnType::Integer),
                    q(d, "version"),
                    d.param(6, ColumnType::Integer)
                ),
                &[
                    Value::Text(status.into()),
                    Value::Text(manufacturer.into()),
                    Value::Text(reference.into()),
                    Value::Text(language.into()),
                    Value::Int(v.revision),
                    Value::Int(v.version),
                ],
            )?;
        }
    }
    Ok(())
}

/// Files gone from the server (or back on it): their rows, then the
/// statuses of the documents registered from them; one transaction.
pub fn set_files(conn: &mut dyn Conn, files: &[FileRow]) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let d = conn.dialect();
    conn.begin()?;
    let mut groups = BTreeSet::new();
    for f in files {
        save_file(conn, f)?;
        let rows = conn.query(
            &format!(
                "SELECT DISTINCT {}, {} FROM {} WHERE {} = {} AND {} = {}",
                q(d, "reference"),
                q(d, "language"),
                q(d, DOCUMENTS),
                q(d, "manufacturer"),
                d.param(1, ColumnType::Text),
                q(d, "remote_path"),
                d.param(2, ColumnType::Text)
            ),
            &[
                Value::Text(f.manufacturer.clone()),
                Value::Text(f.remote_path.clone()),
            ],
        )?;
        for r in rows {
            groups.insert((
                f.manufacturer.clone(),
                col_text(&r, 0).unwrap_or_default(),
                col_text(&r, 1).unwrap_or_default(),
            ));
        }
    }
    for (m, r, l) in groups {
        restatus(conn, &m, &r, &l)?;
    }
    conn.commit()
}

/// Save several file rows in one transaction (the listing's news).
pub fn save_files(conn: &mut dyn Conn, files: &[FileRow]) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    conn.begin()?;
    for f in files {
        save_file(conn, f)?;
    }
    conn.commit()
}

/// Fill in title, ATA chapter and effective date from a manifest for the
/// documents registered from `remote_path` without them.
pub fn annotate(
    conn: &mut dyn Conn,
    manufacturer: &str,
    remote_path: &str,
    title: Option<&str>,
    ata: Option<&str>,
    effective: Option<&str>,
) -> Result<()> {
    let d = conn.dialect();
    let t = ColumnType::Text;
    conn.execute(
        &format!(
            "UPDATE {} SET {} = COALESCE({}, {}), {} = COALESCE({}, {}), {} = COALESCE({}, {}) WHERE {} = {} AND {} = {}",
            q(d, DOCUMENTS),
            q(d, "title"), q(d, "title"), d.param(1, t),
            q(d, "ata_chapter"), q(d, "ata_chapter"), d.param(2, t),
            q(d, "effective_date"), q(d, "effective_date"), d.param(3, t),
            q(d, "manufacturer"), d.param(4, t),
            q(d, "remote_path"), d.param(5, t),
        ),
        &[
            title.map_or(Value::Null, |s| Value::Text(s.into())),
            ata.map_or(Value::Null, |s| Value::Text(s.into())),
            effective.map_or(Value::Null, |s| Value::Text(s.into())),
            Value::Text(manufacturer.into()),
            Value::Text(remote_path.into()),
        ],
    )?;
    Ok(())
}

/// Every version of every document (for tests and listings), ordered.
pub fn all_documents(conn: &mut dyn Conn) -> Result<Vec<DocRow>> {
    if !conn.table_exists(DOCUMENTS)? {
        return Ok(Vec::new());
    }
    let d = conn.dialect();
    let sql = select(
        conn,
        DOCUMENTS,
        DOC_COLUMNS,
        &format!(
            "ORDER BY {}, {}, {}, {}, {}",
            q(d, "manufacturer"),
            q(d, "reference"),
            q(d, "language"),
            q(d, "revision"),
            q(d, "version")
        ),
    );
    Ok(conn.query(&sql, &[])?.iter().map(doc_from).collect())
}

/// Every remote file row, ordered by manufacturer and path.
pub fn all_files(conn: &mut dyn Conn) -> Result<Vec<FileRow>> {
    if !conn.table_exists(FILES)? {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let d = conn.dialect();
    let ms = conn.query(
        &format!(
            "SELECT DISTINCT {} FROM {}",
            q(d, "manufacturer"),
            q(d, FILES)
        ),
        &[],
    )?;
    for m in ms
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
    {
        out.extend(load_files(conn, &m)?.into_values());
    }
    out.sort_by(|a, b| (&a.manufacturer, &a.remote_path).cmp(&(&b.manufacturer, &b.remote_path)));
    Ok(out)
}

/// What a technician asks for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Words that must all appear in the reference, title, ATA chapter,
    /// model, type or file name (case and accents ignored).
    pub words: Vec<String>,
    pub model: Option<String>,
    pub doc_type: Option<String>,
    /// Superseded and withdrawn versions too.
    pub all: bool,
}

fn fold(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    s.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .collect::<String>()
        .to_lowercase()
}

/// The documents matching a query: current ones first, by reference.
pub fn search(conn: &mut dyn Conn, query: &Query) -> Result<Vec<DocRow>> {
    let words: Vec<String> = query.words.iter().map(|w| fold(w)).collect();
    let mut found: Vec<DocRow> = all_documents(conn)?
        .into_iter()
        .filter(|doc| query.all || doc.status == "current")
        .filter(|doc| {
            query
                .model
                .as_ref()
                .is_none_or(|m| doc.model.as_deref().is_some_and(|dm| fold(dm) == fold(m)))
        })
        .filter(|doc| {
            query.doc_type.as_ref().is_none_or(|t| {
                doc.doc_type
                    .as_deref()
                    .is_some_and(|dt| fold(dt) == fold(t))
            })
        })
        .filter(|doc| {
            let hay = fold(&format!(
                "{} {} {} {} {} {}",
                doc.reference,
                doc.title.as_deref().unwrap_or(""),
                doc.ata_chapter
                    .as_deref()
                    .map(|a| format!("ata {a} ata-{a}"))
                    .unwrap_or_default(),
                doc.model.as_deref().unwrap_or(""),
                doc.doc_type.as_deref().unwrap_or(""),
                doc.remote_path
            ));
            words.iter().all(|w| hay.contains(w.as_str()))
        })
        .collect();
    found.sort_by(|a, b| {
        (
            a.status != "current",
            &a.reference,
            &a.language,
            -a.revision,
            -a.version,
        )
            .cmp(&(
                b.status != "current",
                &b.reference,
                &b.language,
                -b.revision,
                -b.version,
            ))
    });
    Ok(found)
}

/// The current version(s) of a reference (one per language), matching
/// the reference with case ignored.
pub fn current(conn: &mut dyn Conn, reference: &str) -> Result<Vec<DocRow>> {
    let want = reference.trim().to_lowercase();
    Ok(all_documents(conn)?
        .into_iter()
        .filter(|d| d.reference.to_lowercase() == want)
        .collect())
}

/// An error for a reference that is not in the register.
pub fn unknown(reference: &str) -> Error {
    Error::input(format!(
        "no manufacturer document with the reference {reference:?} (repaero docs search finds them by words)"
    ))
}
