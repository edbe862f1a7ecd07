//! The manufacturers' documents feed (FTP): polls each manufacturer's
//! server, fetches new and changed documents once they are complete, checks
//! them, keeps them in a local store and registers them in the target, as
//! `../shared/specs/manufacturer-ftp.md` (§3) says a careful consumer
//! does. README "The manufacturers' documents (FTP)" says how to run it.
//!
//! One poll of one manufacturer ([`poll`]):
//! 1. walk the remote tree (`MLSD`, else `LIST`); an unreadable folder is
//!    reported and the walk goes on;
//! 2. compare each file with its row in `manufacturer_files`: a file is
//!    fetched only when two listings in a row agree on its size and time
//!    and they differ from what was last handled (so a file still being
//!    written waits, and nothing is fetched twice, across restarts too);
//! 3. a folder's manifest first, then its documents: name checked against
//!    the manufacturer's pattern, empty files refused unread, the content
//!    downloaded to a temporary file in the store (resumed with `REST`
//!    after a cut), its length, kind (magic bytes) and SHA-256 (against the
//!    manifest) checked, then renamed into place and registered in one
//!    transaction; a refusal is quarantined with its reason;
//! 4. files gone from a complete walk are marked removed, their documents
//!    withdrawn.

pub mod client;
pub mod listing;
pub mod register;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Backoff, BoxFuture, Db, Feed, FeedContext};
use crate::config::Config;
use crate::error::{Error, Result};
use client::Session;
use listing::{Kind, NameEncoding};
use register::{DocRow, FileRow, Registered, state};

/// `[daemons.ftp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FtpConfig {
    /// Seconds between two polls of a manufacturer.
    #[serde(default = "FtpConfig::default_interval")]
    pub poll_interval: u64,
    /// The local document store (relative to repaero.toml).
    #[serde(default = "FtpConfig::default_store")]
    pub store: PathBuf,
    /// Seconds an exchange with a server may take.
    #[serde(default = "FtpConfig::default_timeout")]
    pub timeout: u64,
    /// Attempts at one file in a poll when its transfer is cut.
    #[serde(default = "FtpConfig::default_transfer_attempts")]
    pub transfer_attempts: u32,
    /// Polls that fetch again a file whose checksum did not match its
    /// manifest, before waiting for the file or the manifest to change.
    #[serde(default = "FtpConfig::default_checksum_attempts")]
    pub checksum_attempts: u32,
    #[serde(default)]
    pub manufacturers: BTreeMap<String, ManufacturerConfig>,
}

impl FtpConfig {
    fn default_interval() -> u64 {
        300
    }
    fn default_store() -> PathBuf {
        PathBuf::from("documents")
    }
    fn default_timeout() -> u64 {
        60
    }
    fn default_transfer_attempts() -> u32 {
        3
    }
    fn default_checksum_attempts() -> u32 {
        3
    }
}

/// `tls`: explicit FTPS or plain FTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// `AUTH TLS` on the control connection, `PROT P` for data.
    Explicit,
    /// Plain FTP (a manufacturer's server reached over a VPN).
    None,
}

/// `listing`: how folders are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListingMode {
    /// `MLSD`, and `LIST` when the server does not know it.
    #[default]
    Auto,
    Mlsd,
    List,
}

/// The spec's layout: `<model>/<type>/<reference>_R<revision>[_<lang>].<ext>`.
pub const DEFAULT_PATTERN: &str = r"^(?P<model>[^/]+)/(?P<type>[^/]+)/(?P<reference>[^/]+?)_R(?P<revision>\d+)(?:_(?P<lang>[A-Za-z]{2}))?\.(?P<ext>[A-Za-z0-9]+)$";

/// `[daemons.ftp.manufacturers.<name>]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManufacturerConfig {
    pub host: String,
    #[serde(default = "ManufacturerConfig::default_port")]
    pub port: u16,
    pub user: String,
    /// Write it `${VAR}`: it comes from the environment, never a file.
    pub password: String,
    pub tls: TlsMode,
    /// PEM certificates to trust besides the public roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "ManufacturerConfig::default_passive")]
    pub passive: bool,
    /// The remote folder the documents are under.
    #[serde(default = "ManufacturerConfig::default_root")]
    pub root: String,
    /// A regular expression on the path under `root`, with named groups
    /// `reference` and `revision` (required), `lang`, `model`, `type`, `ext`.
    #[serde(default = "ManufacturerConfig::default_pattern")]
    pub pattern: String,
    /// Regular expressions of paths under `root` to leave alone.
    #[serde(default = "ManufacturerConfig::default_ignore")]
    pub ignore: Vec<String>,
    /// The manifest's file name in a folder (`""`: none).
    #[serde(default = "ManufacturerConfig::default_manifest")]
    pub manifest: String,
    #[serde(default)]
    pub listing: ListingMode,
    /// How names are read: `auto` (UTF-8, else Latin-1), `latin1`, `utf-8`.
    #[serde(default)]
    pub encoding: NameEncoding,
    /// The language of a name without one.
    #[serde(default = "ManufacturerConfig::default_language")]
    pub default_language: String,
    /// Overrides `[daemons.ftp] poll_interval`.
    #[serde(default)]
    pub poll_interval: Option<u64>,
}

impl std::fmt::Debug for ManufacturerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManufacturerConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"***")
            .field("tls", &self.tls)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl ManufacturerConfig {
    fn default_port() -> u16 {
        21
    }
    fn default_passive() -> bool {
        true
    }
    fn default_root() -> String {
        "/".into()
    }
    fn default_pattern() -> String {
        DEFAULT_PATTERN.into()
    }
    fn default_ignore() -> Vec<String> {
        vec![r"(^|/)README(\.txt)?$".into()]
    }
    fn default_manifest() -> String {
        "MANIFEST.csv".into()
    }
    fn default_language() -> String {
        "EN".into()
    }
}

/// A manufacturer, its settings checked and compiled.
#[derive(Clone)]
pub struct Manufacturer {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    pub passive: bool,
    /// Raw form (one char per byte), without a trailing `/`.
    pub root: String,
    pub pattern: regex::Regex,
    pub ignore: Vec<regex::Regex>,
    pub manifest: String,
    pub listing: ListingMode,
    pub encoding: NameEncoding,
    pub default_language: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub transfer_attempts: u32,
    pub checksum_attempts: u32,
    /// This manufacturer's folder in the store.
    pub store: PathBuf,
}

/// The feed's settings.
#[derive(Clone)]
pub struct Settings {
    pub store: PathBuf,
    pub manufacturers: Vec<Manufacturer>,
}

impl Settings {
    /// `[daemons.ftp]` of `cfg`, checked.
    pub fn from_config(cfg: &Config) -> Result<Settings> {
        let table = super::feed_table(cfg, "ftp");
        let fc: FtpConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    Error::config(format!("[daemons.ftp]: {}", e.message()))
                })?;
        if fc.manufacturers.is_empty() {
            return Err(Error::config(
                "[daemons.ftp]: no manufacturer; add [daemons.ftp.manufacturers.<name>] with host, user, password, tls",
            ));
        }
        // absolute, so that the register's paths are usable from anywhere
        let store = cfg.resolve(&fc.store);
        let store = std::path::absolute(&store).unwrap_or(store);
        let mut manufacturers = Vec::new();
        for (name, m) in fc.manufacturers {
            let place = format!("[daemons.ftp.manufacturers.{name}]");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Error::config(format!(
                    "{place}: a manufacturer's name is letters, digits, - and _ (it names its folder in the store)"
                )));
            }
            let pattern = regex::Regex::new(&m.pattern)
                .map_err(|e| Error::config(format!("{place} pattern: {e}")))?;
            for g in ["reference", "revision"] {
                if !pattern.capture_names().flatten().any(|n| n == g) {
                    return Err(Error::config(format!(
                        "{place} pattern: no named group `{g}` (e.g. (?P<{g}>…))"
                    )));
                }
            }
            let ignore = m
                .ignore
                .iter()
                .map(|p| {
                    regex::Regex::new(p)
                        .map_err(|e| Error::config(format!("{place} ignore {p:?}: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            if m.host.is_empty() || m.user.is_empty() {
                return Err(Error::config(format!(
                    "{place}: host and user are required"
                )));
            }
            let interval = m.poll_interval.unwrap_or(fc.poll_interval);
            if interval == 0 || fc.timeout == 0 {
                return Err(Error::config(format!(
                    "{place}: poll_interval and timeout are at least 1 s"
                )));
            }
            // the root as the server spells it (names are sent as raw bytes)
            let root_bytes: Vec<u8> = m.root.trim_end_matches('/').as_bytes().to_vec();
            let root = if m.encoding == NameEncoding::Latin1 {
                m.root.trim_end_matches('/').to_string()
            } else {
                root_bytes.iter().map(|b| char::from(*b)).collect()
            };
            manufacturers.push(Manufacturer {
                store: store.join(&name),
                name,
                host: m.host,
                port: m.port,
                user: m.user,
                password: m.password,
                tls: m.tls,
                ca_file: m.ca_file.map(|p| cfg.resolve(&p)),
                passive: m.passive,
                root,
                pattern,
                ignore,
                manifest: m.manifest,
                listing: m.listing,
                encoding: m.encoding,
                default_language: m.default_language.to_uppercase(),
                interval: Duration::from_secs(interval),
                timeout: Duration::from_secs(fc.timeout),
                transfer_attempts: fc.transfer_attempts.max(1),
                checksum_attempts: fc.checksum_attempts,
            });
        }
        Ok(Settings {
            store,
            manufacturers,
        })
    }
}

/// What one poll of one manufacturer did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PollReport {
    pub manufacturer: String,
    /// `mlsd` or `list`.
    pub listing: String,
    /// Files listed (ignored ones apart).
    pub listed: u64,
    /// Documents fetched and registered as a new version.
    pub registered: Vec<String>,
    /// Fetched again, same content: nothing new registered.
    pub unchanged: Vec<String>,
    /// Manifests read.
    pub manifests: Vec<String>,
    /// New or changed since the last listing: fetched once stable.
    pub waiting: Vec<String>,
    /// Refused now: (path, reason).
    pub quarantined: Vec<(String, String)>,
    /// Gone from the server: their documents are withdrawn.
    pub removed: Vec<String>,
    /// Folders that could not be listed: (folder, server's answer).
    pub unreadable: Vec<(String, String)>,
    /// Entries left alone: links, unreadable listing lines, other types.
    pub skipped: Vec<(String, String)>,
    /// Transfers cut and resumed or restarted.
    pub resumed: u64,
    /// Files whose transfer failed in this poll (tried again next poll).
    pub failed: Vec<(String, String)>,
    /// `RETR` commands sent.
    pub retr: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// A remote file as listed.
#[derive(Debug, Clone)]
struct Remote {
    /// Raw full path (one char per byte), as sent back to the server.
    raw: String,
    /// Path under the root, decoded.
    rel: String,
    size: u64,
    modified: Option<String>,
}

fn now_text() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A manifest line: `reference;revision;title;ata_chapter;effective_date;sha256;file`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ManifestEntry {
    pub reference: String,
    pub revision: String,
    pub title: Option<String>,
    pub ata_chapter: Option<String>,
    pub effective_date: Option<String>,
    pub sha256: Option<String>,
    pub file: String,
}

/// Read a manifest (`;`-separated, UTF-8, header line); entries by file name.
pub fn parse_manifest(text: &str) -> Result<HashMap<String, ManifestEntry>> {
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(b';')
        .flexible(true)
        .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| Error::input(format!("manifest header: {e}")))?
        .iter()
        .map(|h| h.trim().to_lowercase())
        .collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let file_col = col("file").ok_or_else(|| Error::input("manifest: no `file` column"))?;
    let mut out = HashMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| Error::input(format!("manifest: {e}")))?;
        let get = |name: &str| {
            col(name)
                .and_then(|i| rec.get(i))
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let Some(file) = rec
            .get(file_col)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
        else {
            continue;
        };
        out.insert(
            file.clone(),
            ManifestEntry {
                reference: get("reference").unwrap_or_default(),
                revision: get("revision").unwrap_or_default(),
                title: get("title"),
                ata_chapter: get("ata_chapter"),
                effective_date: get("effective_date"),
                sha256: get("sha256").map(|s| s.to_lowercase()),
                file,
            },
        );
    }
    Ok(out)
}

/// Whether content is what its extension says (magic bytes); the reason
/// when it is not. Extensions without a known signature pass.
pub fn check_kind(ext: &str, head: &[u8]) -> std::result::Result<(), String> {
    let ext = ext.to_ascii_lowercase();
    let signatures: &[&[u8]] = match ext.as_str() {
        "pdf" => &[b"%PDF-"],
        "zip" => &[b"PK\x03\x04", b"PK\x05\x06"],
        "png" => &[b"\x89PNG\r\n\x1a\n"],
        "jpg" | "jpeg" => &[b"\xff\xd8\xff"],
        "tif" | "tiff" => &[b"II*\x00", b"MM\x00*"],
        "gif" => &[b"GIF87a", b"GIF89a"],
        "xml" => &[b"<?xml", b"\xef\xbb\xbf<?xml"],
        _ => return Ok(()),
    };
    if signatures.iter().any(|s| head.starts_with(s)) {
        return Ok(());
    }
    let shown: String = head
        .iter()
        .take(8)
        .map(|b| {
            if b.is_ascii_graphic() || *b == b' ' {
                char::from(*b).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect();
    Err(format!(
        "not a .{ext} file: it starts with {shown:?}, not {:?}",
        String::from_utf8_lossy(signatures[0])
    ))
}

fn sha256_file(path: &Path) -> Result<(String, Vec<u8>)> {
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::runtime(format!("{}: {e}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::new();
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::runtime(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..n.min(16 - head.len())]);
        }
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), head))
}

/// A file name safe in the store (no separators, no dot files).
fn safe(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let out = out.trim_start_matches('.').to_string();
    if out.is_empty() { "_".into() } else { out }
}

/// What the name tells about a document.
#[derive(Debug, Clone)]
struct NameInfo {
    reference: String,
    revision: i64,
    language: String,
    model: Option<String>,
    doc_type: Option<String>,
    ext: String,
}

fn name_info(m: &Manufacturer, rel: &str) -> Option<NameInfo> {
    let c = m.pattern.captures(rel)?;
    let g = |n: &str| {
        c.name(n)
            .map(|v| v.as_str().to_string())
            .filter(|s| !s.is_empty())
    };
    let reference = g("reference")?;
    let revision = g("revision")?.parse().ok()?;
    let file = rel.rsplit('/').next().unwrap_or(rel);
    let ext = g("ext").unwrap_or_else(|| {
        file.rsplit_once('.')
            .map(|(_, e)| e.to_string())
            .unwrap_or_default()
    });
    Some(NameInfo {
        reference,
        revision,
        language: g("lang")
            .or_else(|| g("language"))
            .map(|l| l.to_uppercase())
            .unwrap_or_else(|| m.default_language.clone()),
        model: g("model"),
        doc_type: g("type").map(|t| t.to_uppercase()),
        ext,
    })
}

fn folder_of(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(d, _)| d)
}

fn file_of(rel: &str) -> &str {
    rel.rsplit_once('/').map_or(rel, |(_, f)| f)
}

/// Walk the remote tree under the root. `Err` only when the session fails.
async fn walk(m: &Manufacturer, s: &mut Session, report: &mut PollReport) -> Result<Vec<Remote>> {
    let mut files = Vec::new();
    let mut dirs = vec![(m.root.clone(), String::new())];
    let mut seen_dirs = std::collections::HashSet::new();
    while let Some((raw_dir, rel_dir)) = dirs.pop() {
        if !seen_dirs.insert(raw_dir.clone()) || seen_dirs.len() > 100_000 {
            continue;
        }
        let listed = s
            .list(if raw_dir.is_empty() { "/" } else { &raw_dir })
            .await;
        let (entries, bad) = match listed {
            Ok(x) => x,
            Err(client::ListError::Unreadable(why)) => {
                let shown = if rel_dir.is_empty() {
                    "/".to_string()
                } else {
                    rel_dir.clone()
                };
                tracing::warn!(
                    manufacturer = m.name,
                    folder = shown,
                    "folder not readable: {why}"
                );
                report.unreadable.push((shown, why));
                continue;
            }
            Err(client::ListError::Session(e)) => return Err(e),
        };
        for b in bad {
            report.skipped.push((rel_dir.clone(), b));
        }
        for e in entries {
            let name = listing::decode_name(&e.raw, m.encoding);
            let raw = format!("{raw_dir}/{}", e.raw);
            let rel = if rel_dir.is_empty() {
                name
            } else {
                format!("{rel_dir}/{name}")
            };
            match e.kind {
                Kind::Dir => dirs.push((raw, rel)),
                Kind::File => {
                    if m.ignore.iter().any(|r| r.is_match(&rel)) {
                        continue;
                    }
                    files.push(Remote {
                        raw,
                        rel,
                        size: e.size,
                        modified: e.modified,
                    })
                }
                Kind::Link(target) => report
                    .skipped
                    .push((rel, format!("symbolic link to {target:?}: not followed"))),
                Kind::Other(t) => report.skipped.push((rel, format!("entry of type {t}"))),
            }
        }
    }
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(files)
}

/// One manufacturer's poll: its own session, its own report. `stopping`
/// is asked before each file: a stop finishes the file in flight only.
pub async fn poll(
    m: &Manufacturer,
    db: &Db,
    stopping: &(dyn Fn() -> bool + Send + Sync),
) -> Result<PollReport> {
    let began = Instant::now();
    let mut report = PollReport {
        manufacturer: m.name.clone(),
        ..PollReport::default()
    };
    db.call(|sink| register::ensure(sink.conn()?)).await?;
    let name = m.name.clone();
    let mut known = db
        .call(move |sink| register::load_files(sink.conn()?, &name))
        .await?;
    let mut session = Session::open(m).await?;
    let remote = walk(m, &mut session, &mut report).await;
    let remote = match remote {
        Ok(r) => r,
        Err(e) => {
            session.quit().await;
            return Err(e);
        }
    };
    report.listing = if session.uses_mlsd() { "mlsd" } else { "list" }.into();
    report.listed = remote.len() as u64;
    let now = now_text();

    // 1. the listing against what is known: what waits, what is due
    let mut news = Vec::new();
    let mut due: Vec<Remote> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in &remote {
        seen.insert(r.rel.clone());
        let size = r.size as i64;
        let row = known.entry(r.rel.clone()).or_insert_with(|| FileRow {
            manufacturer: m.name.clone(),
            remote_path: r.rel.clone(),
            state: state::WAITING.into(),
            first_seen_at: now.clone(),
            updated_at: now.clone(),
            ..FileRow::default()
        });
        let listed_now = (Some(size), r.modified.clone());
        let handled = (row.handled_size, row.handled_modified.clone());
        let stable = (row.listed_size, row.listed_modified.clone()) == listed_now;
        if handled == listed_now && row.handled_size.is_some() {
            // handled already; back on the server after a removal
            let retry_checksum = row.state == state::QUARANTINED
                && row.expected_sha256.is_some()
                && row.attempts < m.checksum_attempts as i64;
            if row.state == state::REMOVED {
                row.state = if row.reason.is_some() {
                    state::QUARANTINED.into()
                } else {
                    state::FETCHED.into()
                };
                row.updated_at = now.clone();
                news.push(row.clone());
            } else if retry_checksum {
                due.push(r.clone());
            }
            continue;
        }
        if stable {
            due.push(r.clone());
        } else {
            row.listed_size = listed_now.0;
            row.listed_modified = listed_now.1;
            if row.state != state::WAITING {
                row.state = state::WAITING.into();
            }
            row.updated_at = now.clone();
            news.push(row.clone());
            report.waiting.push(r.rel.clone());
        }
    }
    // 2. gone from the server: only after a complete walk, and not under a
    //    folder that could not be read
    let mut gone = Vec::new();
    for row in known.values_mut() {
        if seen.contains(&row.remote_path) || row.state == state::REMOVED {
            continue;
        }
        let hidden = report
            .unreadable
            .iter()
            .any(|(dir, _)| dir == "/" || row.remote_path.starts_with(&format!("{dir}/")));
        if hidden || m.ignore.iter().any(|r| r.is_match(&row.remote_path)) {
            continue;
        }
        row.state = state::REMOVED.into();
        row.updated_at = now.clone();
        report.removed.push(row.remote_path.clone());
        gone.push(row.clone());
    }
    gone.extend(news);
    if !gone.is_empty() {
        db.call(move |sink| register::set_files(sink.conn()?, &gone))
            .await?;
    }

    // 3. manifests first (a folder whose manifest is still changing waits)
    let manifest_of = |rel: &str| -> String {
        let dir = folder_of(rel);
        if dir.is_empty() {
            m.manifest.clone()
        } else {
            format!("{dir}/{}", m.manifest)
        }
    };
    let is_manifest = |rel: &str| !m.manifest.is_empty() && file_of(rel) == m.manifest;
    due.sort_by_key(|r| (!is_manifest(&r.rel), r.rel.clone()));
    let mut session = Some(session);
    let mut pending: Vec<(DocRow, FileRow)> = Vec::new();
    let mut last_flush = Instant::now();
    for r in due {
        if stopping() {
            break;
        }
        let mut row = known.get(&r.rel).cloned().unwrap_or_default();
        row.listed_size = Some(r.size as i64);
        row.listed_modified = r.modified.clone();
        row.updated_at = now_text();
        if is_manifest(&r.rel) {
            let s = match session.as_mut() {
                Some(s) => s,
                None => session.insert(Session::open(m).await?),
            };
            match s.fetch_small(&r.raw, 16 * 1024 * 1024).await {
                Ok(body) => {
                    report.bytes += body.len() as u64;
                    let text = String::from_utf8_lossy(&body).into_owned();
                    match parse_manifest(&text) {
                        Ok(entries) => {
                            row.state = state::FETCHED.into();
                            row.reason = None;
                            row.manifest = Some(text);
                            row.sha256 = Some(hex::encode(Sha256::digest(&body)));
                            // a new manifest: the folder's checksum refusals
                            // are tried again
                            let dir = folder_of(&r.rel).to_string();
                            let mut retried = Vec::new();
                            for f in known.values_mut() {
                                if f.state == state::QUARANTINED
                                    && f.expected_sha256.is_some()
                                    && folder_of(&f.remote_path) == dir
                                {
                                    f.attempts = 0;
                                    f.expected_sha256 = None;
                                    f.handled_size = None;
                                    retried.push(f.clone());
                                }
                            }
                            let mname = m.name.clone();
                            let saved = row.clone();
                            db.call(move |sink| {
                                let conn = sink.conn()?;
                                conn.begin()?;
                                register::save_file(conn, &saved)?;
                                for f in &retried {
                                    register::save_file(conn, f)?;
                                }
                                for e in entries.values() {
                                    let path = if dir.is_empty() {
                                        e.file.clone()
                                    } else {
                                        format!("{dir}/{}", e.file)
                                    };
                                    register::annotate(
                                        conn,
                                        &mname,
                                        &path,
                                        e.title.as_deref(),
                                        e.ata_chapter.as_deref(),
                                        e.effective_date.as_deref(),
                                    )?;
                                }
                                conn.commit()
                            })
                            .await?;
                        }
                        Err(e) => {
                            row.state = state::QUARANTINED.into();
                            row.reason = Some(format!("unreadable manifest: {e}"));
                            report
                                .quarantined
                                .push((r.rel.clone(), row.reason.clone().unwrap_or_default()));
                        }
                    }
                    row.handled_size = row.listed_size;
                    row.handled_modified = row.listed_modified.clone();
                    let saved = row.clone();
                    db.call(move |sink| register::save_file(sink.conn()?, &saved))
                        .await?;
                    known.insert(r.rel.clone(), row);
                    report.manifests.push(r.rel.clone());
                }
                Err(e) => {
                    report.failed.push((r.rel.clone(), e.to_string()));
                    close(&mut session, &mut report).await;
                }
            }
            continue;
        }
        // the folder's manifest must be settled first
        let mpath = manifest_of(&r.rel);
        let manifest_row = if m.manifest.is_empty() {
            None
        } else {
            known.get(&mpath)
        };
        if let Some(mr) = manifest_row
            && mr.state == state::WAITING
        {
            report.waiting.push(r.rel.clone());
            continue;
        }
        let manifest: HashMap<String, ManifestEntry> = manifest_row
            .filter(|mr| mr.state == state::FETCHED)
            .and_then(|mr| mr.manifest.as_deref())
            .and_then(|t| parse_manifest(t).ok())
            .unwrap_or_default();
        let entry = manifest.get(file_of(&r.rel)).cloned();
        let mut outcome = fetch_one(
            m,
            db,
            &mut session,
            &r,
            &mut row,
            entry,
            &mut report,
            &mut pending,
        )
        .await;
        if outcome.is_ok() && (pending.len() >= BATCH || last_flush.elapsed() >= BATCH_WAIT) {
            outcome = flush(m, db, &mut pending, &mut report).await;
            last_flush = Instant::now();
        }
        if let Err(e) = outcome {
            let _ = flush(m, db, &mut pending, &mut report).await;
            close(&mut session, &mut report).await;
            return Err(e);
        }
        known.insert(r.rel.clone(), row);
    }
    close(&mut session, &mut report).await;
    flush(m, db, &mut pending, &mut report).await?;
    report.seconds = began.elapsed().as_secs_f64();
    Ok(report)
}

/// Close the session, if any, counting its `RETR`s.
async fn close(session: &mut Option<Session>, report: &mut PollReport) {
    if let Some(s) = session.take() {
        report.retr += s.retr;
        s.quit().await;
    }
}

/// Quarantine a file with its reason (the content, when fetched, is kept
/// under `.quarantine/` for an operator).
async fn quarantine(
    db: &Db,
    row: &mut FileRow,
    reason: String,
    report: &mut PollReport,
) -> Result<()> {
    tracing::warn!(file = row.remote_path, "quarantined: {reason}");
    row.state = state::QUARANTINED.into();
    row.reason = Some(reason.clone());
    row.handled_size = row.listed_size;
    row.handled_modified = row.listed_modified.clone();
    report.quarantined.push((row.remote_path.clone(), reason));
    let saved = row.clone();
    db.call(move |sink| register::set_files(sink.conn()?, &[saved]))
        .await
}

/// Fetch, check and store one document (registered with its batch).
// the poll's state, passed apart rather than bundled for this one call
#[allow(clippy::too_many_arguments)]
async fn fetch_one(
    m: &Manufacturer,
    db: &Db,
    session: &mut Option<Session>,
    r: &Remote,
    row: &mut FileRow,
    entry: Option<ManifestEntry>,
    report: &mut PollReport,
    pending: &mut Vec<(DocRow, FileRow)>,
) -> Result<()> {
    // refusals that need no download
    let Some(info) = name_info(m, &r.rel) else {
        return quarantine(
            db,
            row,
            "the name does not follow the manufacturer's pattern".into(),
            report,
        )
        .await;
    };
    if r.size == 0 {
        row.expected_sha256 = None;
        return quarantine(db, row, "empty file".into(), report).await;
    }
    // download to a temporary name in the store, resumed after a cut
    let partial_dir = m.store.join(".partial");
    std::fs::create_dir_all(&partial_dir)
        .map_err(|e| Error::runtime(format!("{}: {e}", partial_dir.display())))?;
    let key = hex::encode(Sha256::digest(
        format!("{}\n{}\n{}\n{:?}", m.name, r.rel, r.size, r.modified).as_bytes(),
    ));
    let part = partial_dir.join(format!("{}.part", &key[..24]));
    let mut attempts = 0;
    let complete = loop {
        attempts += 1;
        let mut have = std::fs::metadata(&part).map(|md| md.len()).unwrap_or(0);
        if have > r.size {
            let _ = std::fs::remove_file(&part);
            have = 0;
        }
        if have == r.size {
            break true;
        }
        let s = match session.as_mut() {
            Some(s) => s,
            None => session.insert(Session::open(m).await?),
        };
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part)
            .map_err(|e| Error::runtime(format!("{}: {e}", part.display())))?;
        match s.retrieve(&r.raw, have, &mut out).await {
            Ok(n) => {
                report.bytes += n;
                drop(out);
                let len = std::fs::metadata(&part).map(|md| md.len()).unwrap_or(0);
                if len == r.size {
                    break true;
                }
                // complete by the server's word, but not the listed length:
                // the file changed while we read it
                let _ = std::fs::remove_file(&part);
                report.failed.push((
                    r.rel.clone(),
                    format!(
                        "{len} bytes received, {} listed: the file is changing",
                        r.size
                    ),
                ));
                break false;
            }
            Err(cut) => {
                report.bytes += cut.written;
                drop(out);
                close(session, report).await;
                if cut.rest_refused {
                    let _ = std::fs::remove_file(&part);
                }
                tracing::warn!(
                    manufacturer = m.name,
                    file = r.rel,
                    "transfer cut after {} bytes ({}); attempt {attempts} of {}",
                    cut.written,
                    cut.reason,
                    m.transfer_attempts
                );
                if cut.refused || attempts >= m.transfer_attempts {
                    report.failed.push((r.rel.clone(), cut.reason));
                    break false;
                }
                report.resumed += 1;
            }
        }
    };
    if !complete {
        // not registered; the partial file stays for the next poll to
        // resume when the remote file has not changed
        let saved = row.clone();
        db.call(move |sink| register::save_file(sink.conn()?, &saved))
            .await?;
        return Ok(());
    }
    let (sha, head) = sha256_file(&part)?;
    let quarantine_copy = |why: &str| -> Result<()> {
        let dest = m.store.join(".quarantine").join(&r.rel);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
        }
        std::fs::rename(&part, &dest)
            .map_err(|e| Error::runtime(format!("{} ({why}): {e}", dest.display())))
    };
    if let Err(why) = check_kind(&info.ext, &head) {
        quarantine_copy(&why)?;
        row.sha256 = Some(sha);
        row.expected_sha256 = None;
        return quarantine(db, row, why, report).await;
    }
    if let Some(expected) = entry.as_ref().and_then(|e| e.sha256.clone())
        && expected != sha
    {
        let why = format!("checksum mismatch: the manifest says {expected}, the file is {sha}");
        quarantine_copy(&why)?;
        row.attempts = if row.expected_sha256.as_deref() == Some(expected.as_str()) {
            row.attempts + 1
        } else {
            1
        };
        row.expected_sha256 = Some(expected);
        row.sha256 = Some(sha);
        return quarantine(db, row, why, report).await;
    }
    // into the store: a content-addressed name, so a version never
    // overwrites another and a reader never sees half a file
    let mut name = safe(&info.reference);
    name.push_str(&format!(
        "_R{}_{}_{}",
        info.revision,
        safe(&info.language),
        &sha[..12]
    ));
    if !info.ext.is_empty() {
        name.push('.');
        name.push_str(&safe(&info.ext));
    }
    let dir = m
        .store
        .join(safe(info.model.as_deref().unwrap_or("_")))
        .join(safe(info.doc_type.as_deref().unwrap_or("_")));
    std::fs::create_dir_all(&dir).map_err(|e| Error::runtime(format!("{}: {e}", dir.display())))?;
    let dest = dir.join(&name);
    std::fs::rename(&part, &dest)
        .map_err(|e| Error::runtime(format!("{}: {e}", dest.display())))?;
    if let Ok(f) = std::fs::File::open(&dest) {
        let _ = f.sync_all();
    }
    row.state = state::FETCHED.into();
    row.reason = None;
    row.attempts = 0;
    row.expected_sha256 = None;
    row.sha256 = Some(sha.clone());
    row.handled_size = row.listed_size;
    row.handled_modified = row.listed_modified.clone();
    let doc = DocRow {
        manufacturer: m.name.clone(),
        reference: info.reference.clone(),
        language: info.language.clone(),
        revision: info.revision,
        version: 0,
        model: info.model.clone(),
        doc_type: info.doc_type.clone(),
        title: entry.as_ref().and_then(|e| e.title.clone()),
        ata_chapter: entry.as_ref().and_then(|e| e.ata_chapter.clone()),
        effective_date: entry.as_ref().and_then(|e| e.effective_date.clone()),
        remote_path: r.rel.clone(),
        size: r.size as i64,
        remote_modified: r.modified.clone(),
        sha256: sha,
        local_path: dest.display().to_string(),
        fetched_at: now_text(),
        status: String::new(),
    };
    pending.push((doc, row.clone()));
    Ok(())
}

/// Documents stored, waiting for their transaction: registered together
/// (at most [`BATCH`] or [`BATCH_WAIT`] apart), so that a commit's fsyncs
/// are shared. Their files are in the store already: a crash before the
/// commit leaves them unregistered, and the next poll fetches them again.
const BATCH: usize = 64;
const BATCH_WAIT: Duration = Duration::from_secs(1);

async fn flush(
    m: &Manufacturer,
    db: &Db,
    pending: &mut Vec<(DocRow, FileRow)>,
    report: &mut PollReport,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(pending);
    let paths: Vec<String> = batch.iter().map(|(d, _)| d.remote_path.clone()).collect();
    let outcome = db
        .call(move |sink| register::register(sink.conn()?, &batch))
        .await?;
    for (path, o) in paths.into_iter().zip(outcome) {
        match o {
            Registered::Version(v) => {
                tracing::info!(
                    manufacturer = m.name,
                    file = path,
                    version = v,
                    "registered"
                );
                report.registered.push(path);
            }
            Registered::Unchanged(_) => report.unchanged.push(path),
        }
    }
    Ok(())
}

/// The feed: every manufacturer on its own schedule and back-off.
pub struct FtpFeed {
    settings: Settings,
}

impl FtpFeed {
    pub fn from_config(cfg: &Config) -> Result<FtpFeed> {
        Ok(FtpFeed {
            settings: Settings::from_config(cfg)?,
        })
    }
}

impl Feed for FtpFeed {
    fn name(&self) -> &'static str {
        "ftp"
    }

    fn run<'a>(&'a self, ctx: &'a FeedContext) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let rc = super::RuntimeConfig::from_config(&ctx.cfg)?;
            let mut due: Vec<Instant> = vec![Instant::now(); self.settings.manufacturers.len()];
            let mut backoff: Vec<Backoff> = self
                .settings
                .manufacturers
                .iter()
                .map(|_| Backoff::new(rc.backoff_min, rc.backoff_max))
                .collect();
            let mut status: BTreeMap<String, serde_json::Value> = BTreeMap::new();
            loop {
                let next = due.iter().min().copied().unwrap_or_else(Instant::now);
                let wait = next.saturating_duration_since(Instant::now());
                if !wait.is_zero() && ctx.sleep(wait).await {
                    return Ok(());
                }
                if ctx.stopping() {
                    return Ok(());
                }
                for (i, m) in self.settings.manufacturers.iter().enumerate() {
                    if due[i] > Instant::now() || ctx.stopping() {
                        continue;
                    }
                    let stop = || ctx.stopping();
                    match poll(m, &ctx.db, &stop).await {
                        Ok(r) => {
                            backoff[i].reset();
                            due[i] = Instant::now() + m.interval;
                            ctx.progress(
                                (r.registered.len() + r.unchanged.len()) as u64,
                                (r.quarantined.len() + r.failed.len()) as u64,
                            );
                            tracing::info!(
                                manufacturer = m.name,
                                "poll: {} files listed, {} registered, {} waiting, {} quarantined, {} removed, {} unreadable folders",
                                r.listed,
                                r.registered.len(),
                                r.waiting.len(),
                                r.quarantined.len(),
                                r.removed.len(),
                                r.unreadable.len()
                            );
                            status.insert(
                                m.name.clone(),
                                serde_json::json!({
                                    "last_poll": now_text(),
                                    "listing": r.listing,
                                    "listed": r.listed,
                                    "registered": r.registered.len(),
                                    "waiting": r.waiting.len(),
                                    "quarantined": r.quarantined.len(),
                                    "removed": r.removed.len(),
                                    "failed": r.failed,
                                    "unreadable": r.unreadable,
                                    "bytes": r.bytes,
                                    "seconds": r.seconds,
                                }),
                            );
                        }
                        Err(e) => {
                            let pause = backoff[i].next_pause();
                            due[i] = Instant::now() + pause;
                            tracing::error!(
                                manufacturer = m.name,
                                "poll failed: {e}; next try in {:.1} s",
                                pause.as_secs_f64()
                            );
                            ctx.progress(0, 1);
                            status.insert(
                                m.name.clone(),
                                serde_json::json!({
                                    "last_error_at": now_text(),
                                    "last_error": e.to_string(),
                                    "retry_in_seconds": pause.as_secs_f64(),
                                }),
                            );
                        }
                    }
                    ctx.detail(
                        "manufacturers",
                        serde_json::Value::Object(status.clone().into_iter().collect()),
                    );
                }
            }
        })
    }
}

/// Poll every manufacturer once, now (`repaero docs poll`).
pub async fn poll_all(settings: &Settings, db: &Db) -> Vec<(String, Result<PollReport>)> {
    let mut out = Vec::new();
    for m in &settings.manufacturers {
        let r = poll(m, db, &|| false).await;
        out.push((m.name.clone(), r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_lines_by_file() {
        let text = "reference;revision;title;ata_chapter;effective_date;sha256;file\nSB-26-014;2;Fire extinguisher bottle;26;2026-10-01;ABCDEF;SB-26-014_R2_FR.pdf\nSL-1;0;Note;;;;SL-1_R0.pdf\n";
        let m = parse_manifest(text).unwrap();
        assert_eq!(m.len(), 2);
        let e = &m["SB-26-014_R2_FR.pdf"];
        assert_eq!(e.title.as_deref(), Some("Fire extinguisher bottle"));
        assert_eq!(e.ata_chapter.as_deref(), Some("26"));
        assert_eq!(e.sha256.as_deref(), Some("abcdef"));
        assert_eq!(m["SL-1_R0.pdf"].sha256, None);
        assert!(parse_manifest("a;b\n1;2\n").is_err());
    }

    #[test]
    fn magic_bytes() {
        assert!(check_kind("pdf", b"%PDF-1.7\n").is_ok());
        assert_eq!(
            check_kind("PDF", b"<html>").unwrap_err(),
            "not a .pdf file: it starts with \"<html>\", not \"%PDF-\""
        );
        assert!(check_kind("txt", b"anything").is_ok());
    }

    #[test]
    fn names_by_the_default_pattern() {
        let m = test_manufacturer();
        let i = name_info(&m, "C172/SB/SB-26-014_R2_FR.pdf").unwrap();
        assert_eq!(
            (
                i.reference.as_str(),
                i.revision,
                i.language.as_str(),
                i.model.as_deref(),
                i.doc_type.as_deref(),
                i.ext.as_str()
            ),
            ("SB-26-014", 2, "FR", Some("C172"), Some("SB"), "pdf")
        );
        let i = name_info(&m, "IO-360/MM/MM-IO360-72_R11.pdf").unwrap();
        assert_eq!(
            (i.reference.as_str(), i.revision, i.language.as_str()),
            ("MM-IO360-72", 11, "EN")
        );
        assert!(name_info(&m, "C172/SB/notes.pdf").is_none());
        assert!(name_info(&m, "SB-1_R1.pdf").is_none());
    }

    fn test_manufacturer() -> Manufacturer {
        let text = r#"
[daemons.ftp.manufacturers.acme]
host = "127.0.0.1"
user = "u"
password = "p"
tls = "none"
"#;
        let cfg = Config::from_text(text, "t", Path::new("."), &[], &|_: &str| None).unwrap();
        Settings::from_config(&cfg).unwrap().manufacturers.remove(0)
    }

    #[test]
    fn settings_are_checked_and_the_password_never_shown() {
        let m = test_manufacturer();
        assert_eq!((m.port, m.passive, m.root.as_str()), (21, true, ""));
        let text = r#"
[daemons.ftp.manufacturers.acme]
host = "h"
user = "u"
password = "hunter2"
tls = "explicit"
pattern = "^(?P<reference>.+)$"
"#;
        let cfg = Config::from_text(text, "t", Path::new("."), &[], &|_: &str| None).unwrap();
        let err = Settings::from_config(&cfg).err().unwrap().to_string();
        assert!(err.contains("no named group `revision`"), "{err}");
        let mc: ManufacturerConfig =
            toml::from_str("host='h'\nuser='u'\npassword='hunter2'\ntls='none'\n").unwrap();
        assert!(!format!("{mc:?}").contains("hunter2"));
        let bad = Config::from_text(
            "[daemons.ftp.manufacturers.acme]\nhost='h'\nuser='u'\npassword='p'\ntls='implicit'\n",
            "t",
            Path::new("."),
            &[],
            &|_: &str| None,
        )
        .unwrap();
        assert!(Settings::from_config(&bad).is_err());
    }
}
