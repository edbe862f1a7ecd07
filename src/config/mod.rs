//! Configuration: `repaero.toml` (target, sources, paths), `jobs/*.toml`
//! and `mappings/*.toml`.
//!
//! Loading is two passes. The raw text is first deserialised as written, so
//! that an unknown key or a wrong type is reported with its file, line and
//! column. Then `${VAR}` references are expanded, relative paths are made
//! relative to the configuration file, `--set key=value` overrides are
//! applied, and the result is deserialised again.

pub mod interp;
pub mod job;
pub mod mapping;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
pub use interp::{Env, ProcessEnv};
pub use job::{Job, TableEntry};
pub use mapping::{ColumnSpec, ColumnType, Mapping, Mode, WriteMode};

/// Name of the configuration file looked for in the working directory.
pub const DEFAULT_CONFIG: &str = "repaero.toml";
/// The embedded default target.
pub const DEFAULT_TARGET: &str = "sqlite://repaero.db";

/// `repaero.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub target: TargetConfig,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    #[serde(default)]
    pub paths: PathsConfig,
    #[serde(default)]
    pub run: RunConfig,
    #[serde(default)]
    pub scans: ScansConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    #[serde(default)]
    pub orders: OrdersConfig,
    /// `[daemons]`: the runtime's settings and one table per feed
    /// (`[daemons.queue]`…), each read by its feed (`daemon/`).
    #[serde(default)]
    pub daemons: toml::Table,
    /// `[schedule]`: the scheduler's settings and one table per schedule
    /// (`[schedule.nightly]`…), read by `schedule/`.
    #[serde(default)]
    pub schedule: toml::Table,
    /// `[check]`: the thresholds of `repaero check`, read by `health`.
    #[serde(default)]
    pub check: toml::Table,
    /// `[kpi]`: the plan's indicators (`go_live`), read by `kpi`.
    #[serde(default)]
    pub kpi: toml::Table,
    /// `[serve]`: the dashboard (listen address, users, LDAP, roles), read
    /// by `serve`.
    #[serde(default)]
    pub serve: toml::Table,
    /// Directory of the configuration file (not a key of the file).
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file it was read from, if any.
    #[serde(skip)]
    pub file: Option<PathBuf>,
    /// The text it was read from and its name for messages, to point at a
    /// line when a setting is found wrong later ([`Config::check_sources`]).
    #[serde(skip)]
    text: String,
    #[serde(skip)]
    label: String,
}

/// A connector's verdict on its `[sources.<name>]` settings: the key at
/// fault, when there is one, and why.
#[derive(Debug, Clone)]
pub struct SettingsError {
    pub key: Option<String>,
    pub message: String,
}

/// `[target]`: where jobs write.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// `sqlite://path`, `postgres://user@host/db?sslmode=…`.
    #[serde(default = "default_target")]
    pub url: String,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            url: default_target(),
        }
    }
}

fn default_target() -> String {
    DEFAULT_TARGET.to_string()
}

/// `[sources.<name>]`: `kind` names the connector, which reads the other
/// settings into its own struct (`source::<kind>::…Config`, beside its
/// code; `source::check_settings` checks them all when the file is loaded).
#[derive(Debug, Clone, Deserialize)]
pub struct SourceConfig {
    /// `excel`, `access`, `csv`, `postgres`, `odbc` (`source::KINDS`).
    pub kind: String,
    /// Free text shown by `repaero jobs`.
    pub description: Option<String>,
    /// The connector's own settings (`path`, `url`, …).
    #[serde(flatten)]
    pub settings: toml::Table,
}

impl SourceConfig {
    /// The file or folder a file source reads (relative paths are made
    /// relative to repaero.toml when it is loaded).
    pub fn path(&self) -> Option<PathBuf> {
        self.settings
            .get("path")
            .and_then(|v| v.as_str())
            .map(PathBuf::from)
    }
}

/// `[paths]`: where declarative files live, relative to the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    #[serde(default = "PathsConfig::default_jobs")]
    pub jobs: PathBuf,
    #[serde(default = "PathsConfig::default_mappings")]
    pub mappings: PathBuf,
    #[serde(default = "PathsConfig::default_validation")]
    pub validation: PathBuf,
    #[serde(default = "PathsConfig::default_quarantine")]
    pub quarantine: PathBuf,
}

impl PathsConfig {
    fn default_jobs() -> PathBuf {
        "jobs".into()
    }
    fn default_mappings() -> PathBuf {
        "mappings".into()
    }
    fn default_validation() -> PathBuf {
        "validation".into()
    }
    fn default_quarantine() -> PathBuf {
        "quarantine".into()
    }
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            jobs: Self::default_jobs(),
            mappings: Self::default_mappings(),
            validation: Self::default_validation(),
            quarantine: Self::default_quarantine(),
        }
    }
}

/// `[run]`: how jobs run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Rows per batch read from a source.
    #[serde(default = "RunConfig::default_batch_size")]
    pub batch_size: usize,
}

impl RunConfig {
    fn default_batch_size() -> usize {
        10_000
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            batch_size: Self::default_batch_size(),
        }
    }
}

/// What a scan that would take a part's stock below zero does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BelowZero {
    /// The line is rejected (the stock stays as it was).
    #[default]
    Reject,
    /// The movement is recorded and the stock goes negative (reported).
    Accept,
}

/// `[scans]`: barcode scanner imports.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScansConfig {
    #[serde(default)]
    pub below_zero: BelowZero,
}

/// `[alerts.email]`: stock alerts by mail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp://host:587` (STARTTLS), `smtps://host:465` (TLS) or
    /// `smtp+plain://host:25` (no TLS: a local relay).
    pub server: String,
    pub from: String,
    pub to: Vec<String>,
    /// Use `${VAR}` for both.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Subject template (`{reference}`, `{designation}`, `{quantity}`, `{minimum}`).
    #[serde(default = "EmailConfig::default_subject")]
    pub subject: String,
    /// PEM certificate(s) trusted besides the public roots: a relay
    /// whose certificate an internal CA signed.
    pub ca_file: Option<PathBuf>,
}

impl EmailConfig {
    fn default_subject() -> String {
        "Stock bas : {reference} ({quantity} ≤ {minimum})".into()
    }
}

/// `[alerts.sms]`: stock alerts through an HTTP SMS gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    pub url: String,
    /// Recipients; one request each.
    pub to: Vec<String>,
    /// Body template: `{to}`, `{reference}`, `{designation}`, `{quantity}`,
    /// `{minimum}`; values are JSON-escaped when the content type is JSON.
    pub body: String,
    #[serde(default = "SmsConfig::default_content_type")]
    pub content_type: String,
    /// `Authorization` header value (`Bearer ${SMS_TOKEN}`).
    pub authorization: Option<String>,
}

impl SmsConfig {
    fn default_content_type() -> String {
        "application/json".into()
    }
}

/// `[alerts]`: stock levels under their minimum.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Minimum of a part without a "Seuil mini" (default 0).
    #[serde(default)]
    pub default_minimum: i64,
    /// Minimums that override the workbook's, per part reference.
    #[serde(default)]
    pub minimums: BTreeMap<String, i64>,
    /// Seconds one send (one alert on one channel, every recipient, from
    /// the connection to the server's last answer) may take before it is
    /// given up as failed and left for the next check (default 30).
    #[serde(default = "AlertsConfig::default_send_timeout")]
    pub send_timeout: u64,
    pub email: Option<EmailConfig>,
    pub sms: Option<SmsConfig>,
}

impl AlertsConfig {
    fn default_send_timeout() -> u64 {
        30
    }

    /// [`AlertsConfig::send_timeout`] as a duration.
    pub fn send_bound(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.send_timeout)
    }
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            default_minimum: 0,
            minimums: BTreeMap::new(),
            send_timeout: Self::default_send_timeout(),
            email: None,
            sms: None,
        }
    }
}

/// `[orders]`: how much to order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersConfig {
    /// Order up to this many times the minimum (default 2).
    #[serde(default = "OrdersConfig::default_factor")]
    pub target_factor: f64,
}

impl OrdersConfig {
    fn default_factor() -> f64 {
        2.0
    }
}

impl Default for OrdersConfig {
    fn default() -> Self {
        OrdersConfig {
            target_factor: Self::default_factor(),
        }
    }
}

/// Options for loading the configuration.
#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    /// `--config PATH`; when absent `./repaero.toml` is used if it exists.
    pub path: Option<PathBuf>,
    /// `--set key=value` overrides, in order.
    pub sets: Vec<String>,
}

impl Config {
    /// Load `repaero.toml` as the command line asks.
    pub fn load(opts: &LoadOptions, env: &dyn Env) -> Result<Config> {
        let (file, text) = match &opts.path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    Error::config(format!(
                        "cannot read configuration file {}: {e}",
                        p.display()
                    ))
                })?;
                (Some(p.clone()), text)
            }
            None => {
                let p = PathBuf::from(DEFAULT_CONFIG);
                match std::fs::read_to_string(&p) {
                    Ok(text) => (Some(p), text),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, String::new()),
                    Err(e) => {
                        return Err(Error::config(format!("cannot read {DEFAULT_CONFIG}: {e}")));
                    }
                }
            }
        };
        let label = file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(built-in defaults)".to_string());
        let base_dir = file
            .as_ref()
            .and_then(|p| p.parent())
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        let mut cfg = Self::from_text(&text, &label, &base_dir, &opts.sets, env)?;
        cfg.base_dir = base_dir;
        cfg.file = file;
        Ok(cfg)
    }

    /// Parse configuration text. Relative paths resolve against `base_dir`;
    /// values from `sets` are relative to the working directory, like any
    /// command-line path, and their `${VAR}` are expanded too.
    pub fn from_text(
        text: &str,
        label: &str,
        base_dir: &Path,
        sets: &[String],
        env: &dyn Env,
    ) -> Result<Config> {
        let mut value: toml::Table = parse_checked::<Config>(text, label)?;
        let mut root = toml::Value::Table(std::mem::take(&mut value));
        interp::expand_value(&mut root, env, &format!("{label}:"))?;
        resolve_relative_paths(&mut root, base_dir);
        for set in sets {
            // `--set 'target.url=oracle://u:${ORACLE_PASSWORD}@…'`: the
            // password stays out of the command line (and `ps`)
            let expanded = interp::expand(set, env, &format!("--set {set:?}"))?;
            apply_set(&mut root, &expanded)?;
        }
        let mut cfg: Config = root.try_into().map_err(|e: toml::de::Error| {
            Error::config(format!(
                "{label} (after --set and ${{…}} expansion): {}",
                e.message()
            ))
        })?;
        cfg.check(label)?;
        cfg.text = text.to_string();
        cfg.label = label.to_string();
        Ok(cfg)
    }

    /// Check each source's settings with `check`, which knows what each
    /// kind of source takes (the connectors do: `source::check_settings`).
    /// The error names the file and the line of the key at fault.
    pub fn check_sources(
        &self,
        check: &dyn Fn(&str, &SourceConfig) -> std::result::Result<(), SettingsError>,
    ) -> Result<()> {
        for (name, src) in &self.sources {
            if let Err(e) = check(name, src) {
                let place = e.key.as_deref().and_then(|k| key_line(&self.text, name, k));
                return Err(Error::config(match place {
                    Some((line, col, src_line)) => format!(
                        "{}:{line}:{col}: {}\n  {line} | {src_line}",
                        self.label, e.message
                    ),
                    None => format!("{} [sources.{name}]: {}", self.label, e.message),
                }));
            }
        }
        Ok(())
    }

    fn check(&self, label: &str) -> Result<()> {
        if self.alerts.send_timeout == 0 || self.alerts.send_timeout > 3600 {
            return Err(Error::config(format!(
                "{label}: alerts.send_timeout = {}: give the seconds a send may take, 1 to 3600 (default 30)",
                self.alerts.send_timeout
            )));
        }
        if self.run.batch_size == 0 {
            return Err(Error::config(format!(
                "{label}: run.batch_size must be at least 1"
            )));
        }
        Ok(())
    }

    /// The named source, or an error listing the ones that exist.
    pub fn source(&self, name: &str) -> Result<&SourceConfig> {
        self.sources.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.sources.keys().map(|s| s.as_str()).collect();
            Error::config(format!(
                "no source named `{name}` in {}; known sources: {}",
                self.label(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// A value as the file writes it, before `${VAR}` expansion and
    /// `--set` (`&["daemons", "bank", "key"]`): to check that a secret is
    /// taken from the environment rather than written in the file.
    pub fn written(&self, path: &[&str]) -> Option<toml::Value> {
        let mut v = toml::Value::Table(toml::from_str::<toml::Table>(&self.text).ok()?);
        for p in path {
            v = v.get(*p)?.clone();
        }
        Some(v)
    }

    /// The configuration file name for messages.
    pub fn label(&self) -> String {
        self.file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| DEFAULT_CONFIG.to_string())
    }

    /// A path relative to the configuration file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() || self.base_dir == Path::new(".") {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn jobs_dir(&self) -> PathBuf {
        self.resolve(&self.paths.jobs)
    }

    pub fn mappings_dir(&self) -> PathBuf {
        self.resolve(&self.paths.mappings)
    }

    pub fn quarantine_dir(&self) -> PathBuf {
        self.resolve(&self.paths.quarantine)
    }
}

/// Parse TOML text and check it against `T`, reporting any error (syntax,
/// unknown key, wrong type) with `file:line:column`. Returns the raw table
/// so that the caller can expand and override it.
pub fn parse_checked<T: DeserializeOwned>(text: &str, label: &str) -> Result<toml::Table> {
    if let Err(e) = toml::from_str::<T>(text) {
        return Err(Error::config(locate(text, label, &e)));
    }
    toml::from_str::<toml::Table>(text).map_err(|e| Error::config(locate(text, label, &e)))
}

/// Read a declarative file (job, mapping) fully: check, expand `${VAR}`,
/// deserialise.
pub fn read_declarative<T: DeserializeOwned>(path: &Path, env: &dyn Env) -> Result<T> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("cannot read {label}: {e}")))?;
    let table = parse_checked::<T>(&text, &label)?;
    let mut root = toml::Value::Table(table);
    interp::expand_value(&mut root, env, &format!("{label}:"))?;
    root.try_into()
        .map_err(|e: toml::de::Error| Error::config(format!("{label}: {}", e.message())))
}

/// Where `key` of `[sources.<source>]` is written: line, column, the line.
fn key_line(text: &str, source: &str, key: &str) -> Option<(usize, usize, String)> {
    let header: String = format!("[sources.{source}]");
    let mut inside = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            inside = t.split_whitespace().collect::<String>() == header;
            continue;
        }
        if inside
            && let Some((k, _)) = t.split_once('=')
            && k.trim().trim_matches('"') == key
        {
            let col = line.len() - line.trim_start().len() + 1;
            return Some((i + 1, col, line.trim_end().to_string()));
        }
    }
    None
}

/// `file:line:column: message` for a TOML error.
fn locate(text: &str, label: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map(|p| p + 1).unwrap_or(0) + 1;
            let src_line = text.lines().nth(line - 1).unwrap_or("").trim_end();
            format!(
                "{label}:{line}:{col}: {}\n  {line} | {src_line}",
                e.message().trim_end()
            )
        }
        None => format!("{label}: {}", e.message().trim_end()),
    }
}

/// The names (without `.toml`) of the TOML files in `dir`, sorted; none
/// when `dir` does not exist.
pub fn toml_stems(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::config(format!("cannot list {}: {e}", dir.display())));
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            (p.extension().is_some_and(|x| x == "toml"))
                .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                .flatten()
        })
        .collect();
    names.sort();
    Ok(names)
}

fn resolve_relative_paths(root: &mut toml::Value, base: &Path) {
    if base == Path::new(".") {
        return;
    }
    let join = |s: &mut String| {
        if !s.is_empty() && Path::new(s.as_str()).is_relative() {
            *s = base.join(s.as_str()).display().to_string();
        }
    };
    if let Some(sources) = root.get_mut("sources").and_then(|v| v.as_table_mut()) {
        for (_, src) in sources.iter_mut() {
            if let Some(toml::Value::String(p)) = src.get_mut("path") {
                join(p);
            }
        }
    }
    if let Some(toml::Value::String(url)) = root.get_mut("target").and_then(|t| t.get_mut("url"))
        && let Some(rest) = url.strip_prefix("sqlite://")
    {
        let mut p = rest.to_string();
        if p != ":memory:" {
            join(&mut p);
            *url = format!("sqlite://{p}");
        }
    }
    if let Some(toml::Value::String(p)) = root
        .get_mut("alerts")
        .and_then(|a| a.get_mut("email"))
        .and_then(|e| e.get_mut("ca_file"))
    {
        join(p);
    }
    // [paths] are resolved when used (Config::resolve), defaults included.
}

/// Apply one `key.path=value` override. The value is read as a TOML value
/// when it is one (`500`, `true`, `"x"`, `[1, 2]`), as a plain string
/// otherwise (`postgres://…`).
pub fn apply_set(root: &mut toml::Value, set: &str) -> Result<()> {
    let (key, raw) = set.split_once('=').ok_or_else(|| {
        Error::config(format!(
            "--set {set:?}: expected key=value, e.g. --set target.url=postgres://postgres@127.0.0.1/repaero"
        ))
    })?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(|p| p.is_empty()) {
        return Err(Error::config(format!(
            "--set {set:?}: the key must be a dotted path such as sources.stock.path"
        )));
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = root;
    for part in &parts[..parts.len() - 1] {
        let table = cur
            .as_table_mut()
            .ok_or_else(|| Error::config(format!("--set {key}: `{part}` is not a table")))?;
        cur = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    let last = parts[parts.len() - 1];
    cur.as_table_mut()
        .ok_or_else(|| Error::config(format!("--set {key}: parent of `{last}` is not a table")))?
        .insert(last.to_string(), value);
    Ok(())
}

/// Print a URL, or a libpq key=value connection string, with any password
/// replaced, for logs, errors and reports.
pub fn redact_url(url: &str) -> String {
    // host=db password='s3cr3t' → host=db password=***
    if !url.contains("://") {
        return redact_conninfo(url);
    }
    // scheme://user:password@host → scheme://user:***@host
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let auth = &rest[..auth_end];
        if let Some(at) = auth.rfind('@') {
            let userinfo = &auth[..at];
            if let Some(colon) = userinfo.find(':') {
                let user = &userinfo[..colon];
                let mut out = String::new();
                out.push_str(&url[..scheme_end + 3]);
                out.push_str(user);
                out.push_str(":***");
                out.push_str(&rest[at..]);
                return redact_query(&out);
            }
        }
    }
    redact_query(url)
}

/// One `key=value` of a libpq connection string, with where its value is.
struct ConninfoPair {
    key: String,
    value: String,
    /// Byte range of the value as written (quotes included).
    span: std::ops::Range<usize>,
}

/// Read a libpq key=value connection string (`host=db dbname=x
/// password='a b'`): keys, values unquoted and unescaped, and whether every
/// token was a `key=value`. Tolerant: a token without `=` is skipped, an
/// unterminated quote runs to the end.
fn scan_conninfo(s: &str) -> (Vec<ConninfoPair>, bool) {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let at = |i: usize| chars.get(i).map_or(s.len(), |(b, _)| *b);
    let mut pairs = Vec::new();
    let mut well_formed = true;
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while chars.get(*i).is_some_and(|(_, c)| c.is_whitespace()) {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let key_start = i;
        while chars
            .get(i)
            .is_some_and(|(_, c)| *c != '=' && !c.is_whitespace())
        {
            i += 1;
        }
        let key = s[at(key_start)..at(i)].to_string();
        skip_ws(&mut i);
        if chars.get(i).is_none_or(|(_, c)| *c != '=') {
            well_formed = false;
            continue;
        }
        i += 1;
        skip_ws(&mut i);
        let start = i;
        let mut value = String::new();
        if chars.get(i).is_some_and(|(_, c)| *c == '\'') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        well_formed = false;
                        break;
                    }
                    Some((_, '\\')) if i + 1 < chars.len() => {
                        value.push(chars[i + 1].1);
                        i += 2;
                    }
                    Some((_, '\'')) => {
                        i += 1;
                        break;
                    }
                    Some((_, c)) => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some((_, c)) = chars.get(i).filter(|(_, c)| !c.is_whitespace()) {
                if *c == '\\' && i + 1 < chars.len() {
                    value.push(chars[i + 1].1);
                    i += 2;
                } else {
                    value.push(*c);
                    i += 1;
                }
            }
        }
        if key.is_empty() {
            well_formed = false;
        }
        pairs.push(ConninfoPair {
            key,
            value,
            span: at(start)..at(i),
        });
    }
    (pairs, well_formed)
}

/// Whether `s` is a libpq key=value connection string (`host=… dbname=…`),
/// which PostgreSQL accepts wherever it accepts a `postgres://` URL.
pub fn is_conninfo(s: &str) -> bool {
    if s.contains("://") {
        return false;
    }
    let (pairs, well_formed) = scan_conninfo(s);
    well_formed && !pairs.is_empty()
}

/// The `(key, value)` pairs of a libpq key=value connection string, values
/// unquoted.
pub fn conninfo_pairs(s: &str) -> Vec<(String, String)> {
    scan_conninfo(s)
        .0
        .into_iter()
        .map(|p| (p.key, p.value))
        .collect()
}

/// A libpq key=value string with each password value (`password`,
/// `sslpassword`, any case) replaced by `***`.
fn redact_conninfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut from = 0;
    for p in scan_conninfo(s).0 {
        if p.key.to_ascii_lowercase().ends_with("password") {
            out.push_str(&s[from..p.span.start]);
            out.push_str("***");
            from = p.span.end;
        }
    }
    out.push_str(&s[from..]);
    out
}

fn redact_query(url: &str) -> String {
    let Some(q) = url.find('?') else {
        return url.to_string();
    };
    let (head, query) = url.split_at(q + 1);
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect();
    format!("{head}{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn sets_override_and_paths_resolve_against_config_dir() {
        let text = "[target]\nurl = \"sqlite://out.db\"\n[sources.stock]\nkind = \"excel\"\npath = \"fixtures/stock.xlsx\"\n";
        let cfg =
            Config::from_text(text, "conf/repaero.toml", Path::new("conf"), &[], &no_env).unwrap();
        assert_eq!(cfg.target.url, "sqlite://conf/out.db");
        assert_eq!(
            cfg.sources["stock"].path().as_deref(),
            Some(Path::new("conf/fixtures/stock.xlsx"))
        );
        let sets = vec![
            "target.url=postgres://postgres@127.0.0.1/x".to_string(),
            "sources.stock.path=other.xlsx".to_string(),
            "run.batch_size=500".to_string(),
        ];
        let cfg = Config::from_text(text, "conf/repaero.toml", Path::new("conf"), &sets, &no_env)
            .unwrap();
        assert_eq!(cfg.target.url, "postgres://postgres@127.0.0.1/x");
        assert_eq!(
            cfg.sources["stock"].path().as_deref(),
            Some(Path::new("other.xlsx"))
        );
        assert_eq!(cfg.run.batch_size, 500);
    }

    #[test]
    fn sets_expand_variables_so_passwords_stay_off_the_command_line() {
        let env = |k: &str| (k == "ORACLE_PASSWORD").then(|| "s3cr3t".to_string());
        let sets =
            vec!["target.url=oracle://repaero:${ORACLE_PASSWORD}@db:1521/REPAERO".to_string()];
        let cfg = Config::from_text("", "repaero.toml", Path::new("."), &sets, &env).unwrap();
        assert_eq!(cfg.target.url, "oracle://repaero:s3cr3t@db:1521/REPAERO");
        let sets = vec!["target.url=postgres://u:${MISSING}@h/db".to_string()];
        let err = Config::from_text("", "repaero.toml", Path::new("."), &sets, &env).unwrap_err();
        assert!(err.to_string().contains("MISSING"), "{err}");
    }

    #[test]
    fn set_of_unknown_key_is_an_error() {
        let err = Config::from_text(
            "",
            "repaero.toml",
            Path::new("."),
            &["target.uri=x".into()],
            &no_env,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `uri`"), "{err}");
        let err = Config::from_text(
            "",
            "repaero.toml",
            Path::new("."),
            &["novalue".into()],
            &no_env,
        )
        .unwrap_err();
        assert!(err.to_string().contains("key=value"), "{err}");
    }

    #[test]
    fn an_alert_send_is_bounded_30_s_by_default() {
        let cfg = Config::from_text("", "repaero.toml", Path::new("."), &[], &no_env).unwrap();
        assert_eq!(cfg.alerts.send_bound(), std::time::Duration::from_secs(30));
        let set = |v: &str| {
            Config::from_text(
                "",
                "repaero.toml",
                Path::new("."),
                &[format!("alerts.send_timeout={v}")],
                &no_env,
            )
        };
        assert_eq!(set("5").unwrap().alerts.send_timeout, 5);
        let err = set("0").unwrap_err();
        assert!(err.to_string().contains("alerts.send_timeout"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn env_defaults_apply_to_the_target() {
        let text = "[target]\nurl = \"${REPAERO_TARGET:-sqlite://repaero.db}\"\n";
        let cfg = Config::from_text(text, "repaero.toml", Path::new("."), &[], &no_env).unwrap();
        assert_eq!(cfg.target.url, "sqlite://repaero.db");
        let env = |n: &str| (n == "REPAERO_TARGET").then(|| "postgres://u@h/db".to_string());
        let cfg = Config::from_text(text, "repaero.toml", Path::new("."), &[], &env).unwrap();
        assert_eq!(cfg.target.url, "postgres://u@h/db");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cr3t@db:5432/billing?sslmode=require"),
            "postgres://app:***@db:5432/billing?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/x?user=a&password=hunter2"),
            "postgres://db/x?user=a&password=***"
        );
        assert_eq!(redact_url("sqlite://repaero.db"), "sqlite://repaero.db");
    }

    #[test]
    fn key_value_passwords_are_redacted() {
        let cases = [
            (
                "host=db user=app password=s3cr3t dbname=x",
                "host=db user=app password=*** dbname=x",
            ),
            ("password='s3 cr\\'et' host=db", "password=*** host=db"),
            ("host=db  PassWord =  s3cr3t", "host=db  PassWord =  ***"),
            ("host=db sslpassword=k3y", "host=db sslpassword=***"),
            (
                "host=db password='unterminated s3cr3t",
                "host=db password=***",
            ),
            ("host=db password=", "host=db password=***"),
            ("hots=db password=s3cr3t junk", "hots=db password=*** junk"),
            ("repaero.db", "repaero.db"),
        ];
        for (raw, shown) in cases {
            assert_eq!(redact_url(raw), shown, "{raw}");
        }
        assert!(is_conninfo("host=127.0.0.1 dbname=x password='a b'"));
        assert!(is_conninfo("dbname = x"));
        assert!(!is_conninfo("postgres://u@h/db?password=x"));
        assert!(!is_conninfo("repaero.db"));
        assert!(!is_conninfo("host=db junk"));
        assert!(!is_conninfo(""));
        assert_eq!(
            conninfo_pairs("host=db password='a \\'b\\\\'"),
            vec![
                ("host".to_string(), "db".to_string()),
                ("password".to_string(), "a 'b\\".to_string())
            ]
        );
    }
}
