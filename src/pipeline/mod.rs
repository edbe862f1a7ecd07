//! Running a job: source → map → dedupe → sink, table by table, inside one
//! unit of work, with every row accounted for.

pub mod profile;
pub mod quarantine;
pub mod report;
pub mod tally;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};

use crate::batch::{MergeOp, Reject};
use crate::config::mapping::{Deletes, Mapping, Mode, WriteMode};
use crate::config::{Config, Job};
use crate::db::{ColumnDef, TableDef};
use crate::error::{Error, Result};
use crate::sink::ledger::{self, RunRecord, SyncState};
use crate::sink::{self, Sink, WriteOutcome};
use crate::source::{Source, TableRequest, UpdateKey, WantedColumn};
use crate::transform::Mapper;
use crate::transform::dedupe::Dedupe;
use quarantine::RejectFile;
pub use tally::{Skipped, Tally, Watermark};

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Do everything, then roll back.
    pub dry_run: bool,
    /// Show progress bars (only on a terminal).
    pub progress: bool,
}

/// What one job did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobReport {
    pub job: String,
    pub run_id: String,
    pub source: String,
    pub target: String,
    pub dry_run: bool,
    /// `committed`, `rolled back (dry run)` or `failed`.
    pub status: String,
    pub error: Option<String>,
    pub started_at: String,
    pub seconds: f64,
    pub tables: Vec<Tally>,
    /// Quarantine files written (rejects and merges).
    pub files: Vec<String>,
}

impl JobReport {
    pub fn read(&self) -> u64 {
        self.tables.iter().map(|t| t.read).sum()
    }
    pub fn written(&self) -> u64 {
        self.tables.iter().map(|t| t.written).sum()
    }
    pub fn rejected(&self) -> u64 {
        self.tables.iter().map(|t| t.rejected).sum()
    }
}

/// A run identifier: UTC time plus a short random part.
pub fn new_run_id() -> String {
    let now = chrono::Utc::now();
    let salt = (now.timestamp_subsec_nanos() ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{}-{salt:04x}", now.format("%Y%m%dT%H%M%SZ"))
}

/// What a mapping asks the source for.
pub fn table_request(m: &Mapping, batch_size: usize) -> Result<TableRequest> {
    let footer = match &m.source.footer {
        Some(p) => Some(
            regex::RegexBuilder::new(p)
                .case_insensitive(true)
                .build()
                .map_err(|e| Error::config(format!("{}: source.footer: {e}", m.file)))?,
        ),
        None => None,
    };
    let table = match (&m.source.sheet, &m.source.table) {
        (Some(s), None) | (None, Some(s)) => s.clone(),
        (Some(_), Some(_)) => {
            return Err(Error::config(format!(
                "{}: [source] names both a sheet and a table; keep one",
                m.file
            )));
        }
        (None, None) => {
            return Err(Error::config(format!(
                "{}: [source] needs `sheet = \"…\"` (Excel) or `table = \"…\"` (Access, databases)",
                m.file
            )));
        }
    };
    Ok(TableRequest {
        table,
        query: m.source.query.clone(),
        filter: None,
        update_key: None,
        columns: Some(
            m.columns
                .iter()
                .map(|c| WantedColumn {
                    name: c.name.clone(),
                    headers: c.sources(),
                    optional: c.optional,
                    carry: None,
                })
                .collect(),
        ),
        header_row: m.source.header_row,
        header_scan_rows: m.source.header_scan_rows.unwrap_or(30),
        footer,
        batch_size,
    })
}

fn progress_bar(enabled: bool, table: &str, estimate: Option<u64>) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let pb = match estimate {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let style = ProgressStyle::with_template(
        "{spinner} {prefix:<20} {human_pos:>10} rows  {per_sec:>12}  {elapsed}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_spinner());
    pb.set_style(style);
    pb.set_prefix(table.to_string());
    pb
}

/// What the tables of one job run share.
struct JobRun<'a> {
    source: &'a dyn Source,
    job: &'a str,
    run_id: &'a str,
    qdir: std::path::PathBuf,
    batch_size: usize,
    opts: &'a RunOptions,
    files: Vec<String>,
    /// `table.id` → merged id → kept id, from the dedupes run so far.
    remaps: HashMap<String, HashMap<String, String>>,
    /// The target's keys a reference rule checked, by (table, column), kept
    /// for the job's later tables that check the same ones, until a table
    /// writes that table (each load of the stock parts' 200,000 references
    /// took 85 ms).
    ref_keys: HashMap<(String, String), Arc<crate::batch::KeySet>>,
    /// When the run started: the time of snapshots and soft deletes.
    started: chrono::DateTime<chrono::Utc>,
}

/// Run one job against the configured target.
pub fn run_job(cfg: &Config, job: &Job, opts: &RunOptions, run_id: &str) -> Result<JobReport> {
    let src_cfg = cfg.source(&job.source)?;
    let source = crate::source::open(&job.source, src_cfg)
        .map_err(|e| e.context(format!("job {}, source `{}`", job.name, job.source)))?;
    let mut sink = sink::open(&cfg.target.url, opts.dry_run)
        .map_err(|e| e.context(format!("job {}, target", job.name)))?;
    if sink.conn()?.dialect() == crate::db::dialect::Dialect::Sqlite {
        // A migration writes each table once, in batches: a 16 MiB page
        // cache cost it 2-4 % more CPU than the 64 MiB the scans import
        // needs for its index, and its peak RSS 40-65 MiB less at 2M rows;
        // 8 MiB: 8 MiB less again, 3 % more wall time at 2M rows, the same
        // at 500k (docs/benchmarks.md, "Memory: where the workbook's growth
        // goes", decision 59).
        sink.conn()?.batch("PRAGMA cache_size = -8192;")?;
    }
    sink.begin()?;
    match run_job_in(cfg, job, opts, run_id, sink.as_mut(), source) {
        Ok(report) => {
            if opts.dry_run {
                sink.rollback()?;
            } else {
                sink.commit()?;
            }
            Ok(report)
        }
        Err(e) => {
            // Nothing half-written: the whole job is one transaction.
            if let Err(rb) = sink.rollback() {
                tracing::warn!("rollback after failure also failed: {rb}");
            }
            Err(e)
        }
    }
}

/// Dry-run several jobs in one transaction, rolled back at the end, so
/// that a job sees what the jobs before it would have written (the
/// suppliers' offers are checked against the parts of the stock job). A
/// job that fails ends that transaction; the next ones go on in a new one.
pub fn dry_run_jobs(
    cfg: &Config,
    jobs: &[Job],
    opts: &RunOptions,
    run_id: &str,
) -> Vec<Result<JobReport>> {
    let mut out = Vec::new();
    let mut sink: Option<Box<dyn Sink>> = None;
    for job in jobs {
        // a source that cannot be opened touched nothing: the transaction
        // goes on for the next jobs
        let source = match cfg.source(&job.source).and_then(|src_cfg| {
            crate::source::open(&job.source, src_cfg)
                .map_err(|e| e.context(format!("job {}, source `{}`", job.name, job.source)))
        }) {
            Ok(s) => s,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        let result = (|| -> Result<JobReport> {
            if sink.is_none() {
                let mut s = sink::open(&cfg.target.url, true)
                    .map_err(|e| e.context(format!("job {}, target", job.name)))?;
                s.begin()?;
                sink = Some(s);
            }
            let s = sink
                .as_mut()
                .ok_or_else(|| Error::runtime("dry run: no target"))?;
            run_job_in(cfg, job, opts, run_id, s.as_mut(), source)
        })();
        if result.is_err()
            && let Some(mut s) = sink.take()
        {
            let _ = s.rollback();
        }
        out.push(result);
    }
    if let Some(mut s) = sink.take()
        && let Err(e) = s.rollback()
    {
        tracing::warn!("dry run: rollback failed: {e}");
    }
    out
}

/// A job's tables, in the caller's transaction on `sink`.
fn run_job_in(
    cfg: &Config,
    job: &Job,
    opts: &RunOptions,
    run_id: &str,
    sink: &mut dyn Sink,
    source: Box<dyn Source>,
) -> Result<JobReport> {
    let started = chrono::Utc::now();
    let t0 = Instant::now();
    // a table's rows go in before its key (run again when they repeat it)
    sink.keys_after_load();
    let mut run = JobRun {
        source: source.as_ref(),
        job: &job.name,
        run_id,
        qdir: cfg.quarantine_dir().join(if opts.dry_run {
            format!("{run_id}-dry-run")
        } else {
            run_id.to_string()
        }),
        batch_size: cfg.run.batch_size,
        opts,
        files: Vec::new(),
        remaps: HashMap::new(),
        ref_keys: HashMap::new(),
        started,
    };
    let mut report = JobReport {
        job: job.name.clone(),
        run_id: run_id.to_string(),
        source: source.describe(),
        target: sink.describe(),
        dry_run: opts.dry_run,
        status: "failed".into(),
        error: None,
        started_at: started.to_rfc3339(),
        seconds: 0.0,
        tables: Vec::new(),
        files: Vec::new(),
    };
    let outcome = (|| -> Result<()> {
        for (i, (mapping, mode)) in job.tables.iter().enumerate() {
            let files = run.files.len();
            let tally = match run.table(sink, mapping, *mode) {
                // the target undid this table's load: once more, as it asks
                Err(_) if let Some(why) = sink.load_again() => {
                    tracing::warn!("{why}");
                    run.files.truncate(files);
                    let rejects = RejectFile::new(&run.qdir, &job.name, &mapping.target.table);
                    if rejects.path().exists() {
                        std::fs::remove_file(rejects.path()).map_err(|e| {
                            Error::runtime(format!("removing {}: {e}", rejects.path().display()))
                        })?;
                    }
                    run.table(sink, mapping, *mode)
                }
                other => other,
            }
            .map_err(|e| e.context(format!("job {}, table {}", job.name, mapping.target.table)))?;
            report.tables.push(tally);
            // keys no later table checks are dropped
            let later = &job.tables[i + 1..];
            run.ref_keys.retain(|(t, c), _| {
                later.iter().any(|(m, _)| {
                    m.columns.iter().any(|col| {
                        col.references
                            .as_ref()
                            .is_some_and(|r| r.table == *t && r.column == *c)
                    })
                })
            });
        }
        sink.check_integrity()
            .map_err(|e| e.context(format!("job {}", job.name)))?;
        report.files = std::mem::take(&mut run.files);
        report.seconds = t0.elapsed().as_secs_f64();
        report.status = if opts.dry_run {
            "rolled back (dry run)".into()
        } else {
            "committed".into()
        };
        let tally_json = serde_json::to_string(&report.tables)
            .map_err(|e| Error::runtime(format!("serialising the tally: {e}")))?;
        ledger::record_run(
            sink.conn()?,
            &RunRecord {
                run_id: run_id.to_string(),
                job: job.name.clone(),
                started_at: report.started_at.clone(),
                finished_at: chrono::Utc::now().to_rfc3339(),
                status: report.status.clone(),
                dry_run: opts.dry_run,
                source: report.source.clone(),
                tally: tally_json,
            },
        )?;
        Ok(())
    })();
    outcome.map(|()| report)
}

/// A source batch mapped (and deduplicated), ready to be written.
struct Step {
    read: u64,
    rejects: Vec<crate::batch::Reject>,
    rows: Rows,
}

enum Rows {
    /// The mapped rows of a table without dedupe.
    Mapped(polars::prelude::DataFrame),
    Deduped(crate::transform::dedupe::Deduped),
}

fn map_batch(
    raw: &polars::prelude::DataFrame,
    mapper: &mut Mapper,
    dedupe: Option<&mut Dedupe>,
) -> Result<Step> {
    let mapped = mapper.apply(raw)?;
    Ok(Step {
        read: raw.height() as u64,
        rejects: mapped.rejects,
        rows: match dedupe {
            Some(d) => Rows::Deduped(d.push(mapped.kept)?),
            None => Rows::Mapped(mapped.kept),
        },
    })
}

impl JobRun<'_> {
    fn table(&mut self, sink: &mut dyn Sink, mapping: &Mapping, mode: Mode) -> Result<Tally> {
        let t0 = Instant::now();
        let (job, run_id) = (self.job, self.run_id);
        let table = mapping.target.table.as_str();
        let mut mapper = Mapper::new(mapping)?;
        for (col, target) in mapper.remaps() {
            let map = self.remaps.get(&target).cloned().ok_or_else(|| {
                Error::config(format!(
                    "{}: column `{col}` has remap = \"{target}\", but no earlier table of the job deduplicates with that id (a [dedupe] with id = \"…\")",
                    mapping.file
                ))
            })?;
            mapper.set_remap(&col, map);
        }
        let mut req = table_request(mapping, self.batch_size)?;
        // columns no text rule touches may arrive typed (a database's
        // binary values, no text round-trip)
        for c in req.columns.iter_mut().flatten() {
            c.carry = mapper.carries(&c.name);
        }
        // upserts count the rows already there, to tell inserts from updates
        let rows_before = if mode.write_mode() == WriteMode::Upsert {
            sink.conn()?.count_rows(table)?
        } else {
            None
        };
        let mut since = None;
        if mode == Mode::Incremental {
            if !self.source.capabilities().incremental {
                return Err(Error::config(format!(
                    "{}: mode = \"incremental\" needs a source that can filter rows (read only those changed since the last run: a database source); {} cannot. Use mode = \"upsert\" (every row, updated on the key)",
                    mapping.file,
                    self.source.describe()
                )));
            }
            // a watermark without its table (dropped since) would skip
            // every row: start over
            since = match rows_before {
                Some(_) => ledger::get_state(sink.conn()?, job, table)?,
                None => None,
            };
            req.update_key = mapping.target.update_key.as_ref().map(|c| UpdateKey {
                column: c.clone(),
                after: since.clone(),
            });
        }
        let mut reader = self.source.read(req)?;
        let origin = reader.origin.clone();
        let mut tally = Tally::new(table, &origin, mode.as_str());
        for (col, rtable, rcol) in mapper.references() {
            let values = match self.ref_keys.get(&(rtable.clone(), rcol.clone())) {
                Some(values) => Arc::clone(values),
                None => {
                    let values = Arc::new(sink.conn()?.key_values(&rtable, &rcol)?);
                    tracing::debug!(
                        table,
                        col,
                        rtable,
                        rcol,
                        n = values.len(),
                        "reference values loaded"
                    );
                    self.ref_keys
                        .insert((rtable.clone(), rcol.clone()), Arc::clone(&values));
                    values
                }
            };
            tally
                .held
                .push(values.held(format!("reference keys of {rtable}.{rcol} (for {col})")));
            mapper.set_reference_values(&col, values);
        }
        let mut def = TableDef::from_mapping(mapping);
        if mode == Mode::Incremental && mapping.target.deletes == Deletes::Soft {
            def.soft_delete = Some(mapping.soft_delete_column());
        }
        // a snapshot is stamped with the run's time, part of its key
        let snapshot = (mode == Mode::Snapshot).then(|| {
            let col = mapping.snapshot_column();
            def.columns.push(ColumnDef {
                name: col.clone(),
                ty: crate::config::ColumnType::Datetime,
                precision: 0,
                scale: 0,
                not_null: true,
                length: None,
            });
            if !def.key.is_empty() {
                def.key.push(col.clone());
            }
            (col, self.started.timestamp_millis())
        });
        sink.start_table(&def, mode.write_mode())?;
        // an incremental run sees only changed rows: earlier runs' rejects
        // of rows not read again still stand
        if mode != Mode::Incremental {
            ledger::clear_rejects(sink.conn()?, job, table)?;
        }
        let mut dedupe = Dedupe::for_mapping(mapping);
        if let Some(d) = dedupe.as_mut() {
            // rows that stay in the target between runs hold keys a later
            // run must not hand to another row
            if d.rejects() && !d.identity().is_empty() && rows_before.is_some() {
                seed_dedupe(d, sink, mapping)?;
            }
        }
        let mut out = TableOutput {
            sink,
            origin: &origin,
            run_id,
            job,
            table,
            file: RejectFile::new(&self.qdir, job, table),
            merge_misses: 0,
            refused_rows: HashSet::new(),
        };
        let pb = progress_bar(self.opts.progress, table, reader.estimated_rows);
        // where the time goes, for `-vv`: waiting for the source, mapping,
        // writing (waiting for the target included)
        // the source's batches are mapped and deduplicated on a thread of
        // their own while the previous one is written here ("Stock
        // workbook" in docs/benchmarks.md: the target's inserts alone kept
        // this thread busy at the end of a table)
        let (steps_tx, steps_rx) = std::sync::mpsc::sync_channel::<Result<Step>>(1);
        let mut t_write = 0f64;
        let (t_read, t_map) = std::thread::scope(|scope| -> Result<(f64, f64)> {
            let (reader, mapper, dedupe) = (&mut reader, &mut mapper, &mut dedupe);
            let worker = std::thread::Builder::new()
                .name("repaero-map".into())
                .spawn_scoped(scope, move || {
                    let (mut t_read, mut t_map) = (0f64, 0f64);
                    let mut tk = Instant::now();
                    loop {
                        let step = match reader.next_batch() {
                            Ok(None) => break,
                            Ok(Some(raw)) => {
                                t_read += tk.elapsed().as_secs_f64();
                                tk = Instant::now();
                                let step = map_batch(&raw, mapper, dedupe.as_mut());
                                t_map += tk.elapsed().as_secs_f64();
                                step
                            }
                            Err(e) => Err(e),
                        };
                        let failed = step.is_err();
                        // (the writer went away: it says why)
                        if steps_tx.send(step).is_err() || failed {
                            break;
                        }
                        tk = Instant::now();
                    }
                    (t_read, t_map)
                })
                .map_err(|e| Error::runtime(format!("{origin}: starting a mapping thread: {e}")))?;
            for step in steps_rx {
                let step = step?;
                let tk = Instant::now();
                tally.read += step.read;
                pb.inc(step.read);
                out.reject(&step.rejects, &mut tally)?;
                match step.rows {
                    Rows::Deduped(mut deduped) => {
                        out.reject(&deduped.rejects, &mut tally)?;
                        if let Some((col, ms)) = &snapshot {
                            deduped.kept = stamp(deduped.kept, col, *ms)?;
                            for op in deduped.ops.iter_mut() {
                                op.key
                                    .push((col.clone(), crate::batch::Value::Datetime(*ms)));
                            }
                        }
                        out.write(&deduped.kept, &mut tally)?;
                        out.merge(&deduped.ops, &mut tally)?;
                    }
                    Rows::Mapped(kept) => match &snapshot {
                        Some((col, ms)) => out.write(&stamp(kept, col, *ms)?, &mut tally)?,
                        None => out.write(&kept, &mut tally)?,
                    },
                }
                t_write += tk.elapsed().as_secs_f64();
            }
            Ok(worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        })?;
        let tk = Instant::now();
        // replacing with nothing empties the table: only when asked (rows
        // read and all rejected are another matter, shown in the tally)
        if mode == Mode::Replace && tally.read == 0 && !mapping.target.allow_empty {
            return Err(Error::input(format!(
                "{origin}: the source has no data row, and mode = \"replace\" would empty table {table}; nothing was committed. If an empty {table} is intended, set allow_empty = true in the [target] of {}",
                mapping.file
            )));
        }
        out.flush(&mut tally)?;
        tracing::debug!(
            table,
            wait_source = t_read,
            map = t_map,
            write = t_write,
            flush = tk.elapsed().as_secs_f64(),
            "stage seconds"
        );
        if let Some(d) = dedupe.as_mut() {
            tally.held.push(d.held());
            // exact duplicates need no merge statement; count them here
            tally.merged = d.merged - out.merge_misses;
            if let Some(p) = quarantine::write_merges(&self.qdir, job, table, &d.log)? {
                self.files.push(p.display().to_string());
            }
            ledger::record_merges(out.sink.conn()?, run_id, job, table, &d.log)?;
            if let Some(id) = mapping.dedupe.as_ref().and_then(|s| s.id.as_ref()) {
                self.remaps
                    .insert(format!("{table}.{id}"), std::mem::take(&mut d.remap));
            }
        }
        out.sink.finish_table()?;
        if let Some(before) = rows_before {
            let after = sink_rows(out.sink, table)?;
            let inserted = after.saturating_sub(before).min(tally.written);
            tally.inserted = Some(inserted);
            tally.updated = Some(tally.written - inserted);
        } else if mode.write_mode() == WriteMode::Upsert {
            // the table was created by this run
            tally.inserted = Some(tally.written);
            tally.updated = Some(0);
        }
        if mode == Mode::Incremental {
            let stats = reader.stats().cloned().unwrap_or_default();
            let column = mapping
                .target
                .update_key
                .as_ref()
                .and_then(|c| mapping.source_column(c))
                .unwrap_or_default();
            let to = stats.max_update_key.clone().or_else(|| since.clone());
            if let Some(w) = &to {
                ledger::set_state(
                    out.sink.conn()?,
                    &SyncState {
                        job: job.to_string(),
                        table: table.to_string(),
                        update_key: column.clone(),
                        watermark: w.clone(),
                        run_id: run_id.to_string(),
                    },
                )?;
            }
            tally.watermark = Some(Watermark {
                column,
                from: since,
                to,
                null_rows: stats.null_update_key,
            });
            if mapping.target.deletes != Deletes::None {
                // a table this run created holds nothing the source lost
                tally.deleted = Some(match rows_before {
                    Some(_) => self.delete_missing(out.sink, mapping, &def)?,
                    None => 0,
                });
            }
        }
        pb.finish_and_clear();
        if let Some(p) = out.file.finish()? {
            self.files.push(p.display().to_string());
        }
        if let Some(stats) = reader.stats() {
            tally.skipped = Skipped {
                rows_above_header: stats.rows_above_header,
                blank_rows: stats.blank_rows,
                footer_rows: stats.footer_rows,
            };
        }
        tally.flagged = std::mem::take(&mut mapper.flagged);
        tally.nulled = std::mem::take(&mut mapper.nulled);
        tally.remapped = std::mem::take(&mut mapper.remapped);
        tally.rounded = std::mem::take(&mut mapper.rounded);
        // this table's keys changed: a later reference to them loads them
        // again
        self.ref_keys
            .retain(|(t, _), _| !t.eq_ignore_ascii_case(table));
        tally.seconds = t0.elapsed().as_secs_f64();
        tally.check()?;
        Ok(tally)
    }
}

/// Seed a rejecting dedupe with the keys the target already holds.
fn seed_dedupe(d: &mut Dedupe, sink: &mut dyn Sink, mapping: &Mapping) -> Result<()> {
    let key = d.key().to_vec();
    let identity = d.identity().to_vec();
    let types: Vec<crate::config::ColumnType> = key
        .iter()
        .map(|k| {
            mapping
                .columns
                .iter()
                .find(|c| &c.name == k)
                .map_or(crate::config::ColumnType::Text, |c| c.ty)
        })
        .collect();
    let columns: Vec<String> = key.iter().chain(&identity).cloned().collect();
    let rows = sink.conn()?.select_text(&mapping.target.table, &columns)?;
    d.seed(rows.into_iter().map(|r| {
        let values = types
            .iter()
            .zip(&r)
            .map(|(ty, v)| match v {
                Some(s) => crate::batch::value_from_text(*ty, s),
                None => crate::batch::Value::Null,
            })
            .collect();
        let owner = r[key.len()..]
            .iter()
            .map(|v| v.clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" | ");
        (values, owner)
    }));
    Ok(())
}

fn sink_rows(sink: &mut dyn Sink, table: &str) -> Result<u64> {
    Ok(sink.conn()?.count_rows(table)?.unwrap_or(0))
}

/// Add the snapshot time column to a batch.
fn stamp(batch: DataFrame, col: &str, ms: i64) -> Result<DataFrame> {
    let mut batch = batch;
    let values = vec![crate::batch::Value::Datetime(ms); batch.height()];
    let column = crate::batch::column_from_values(
        col,
        &crate::batch::dtype_of(crate::config::ColumnType::Datetime),
        &values,
    )?;
    batch
        .with_column(column)
        .map_err(|e| Error::runtime(format!("stamping the snapshot: {e}")))?;
    Ok(batch)
}

impl JobRun<'_> {
    /// Delete (or stamp) the target rows whose key is no longer in the
    /// source: the source's keys are read in full (key columns only),
    /// cleaned as the mapping cleans them, and compared in the target.
    fn delete_missing(
        &self,
        sink: &mut dyn Sink,
        mapping: &Mapping,
        def: &TableDef,
    ) -> Result<u64> {
        let mut keys = mapping.clone();
        keys.columns
            .retain(|c| mapping.target.key.contains(&c.name));
        for c in keys.columns.iter_mut() {
            c.references = None;
            c.remap = None;
        }
        keys.checks.clear();
        keys.dedupe = None;
        let mut mapper = Mapper::new(&keys)?;
        let mut reader = self.source.read(table_request(&keys, self.batch_size)?)?;
        let mut batches = std::iter::from_fn(|| match reader.next_batch() {
            Ok(Some(raw)) => Some(mapper.apply(&raw).map(|m| m.kept)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        });
        let now = self.started.format("%Y-%m-%d %H:%M:%S").to_string();
        sink.delete_missing(def, &mut batches, &now).map_err(|e| {
            e.context(format!(
                "deleting rows gone from the source of {}",
                def.name
            ))
        })
    }
}

/// Where one table's rows end: the sink, or the quarantine (file and
/// `_rejects`), counted in the tally either way.
struct TableOutput<'a> {
    sink: &'a mut dyn Sink,
    origin: &'a str,
    run_id: &'a str,
    job: &'a str,
    table: &'a str,
    file: RejectFile,
    /// Merges whose first row the target refused (rejected instead).
    merge_misses: u64,
    /// Source rows the target refused.
    refused_rows: HashSet<u64>,
}

impl TableOutput<'_> {
    fn reject(&mut self, rejects: &[Reject], tally: &mut Tally) -> Result<()> {
        if rejects.is_empty() {
            return Ok(());
        }
        for r in rejects {
            tally.reject(&r.reason);
        }
        self.file.write(self.origin, rejects)?;
        ledger::write_rejects(
            self.sink.conn()?,
            self.run_id,
            self.job,
            self.table,
            self.origin,
            rejects,
        )
    }

    /// Apply merges; a merge whose first row was refused is rejected.
    fn merge(&mut self, ops: &[MergeOp], tally: &mut Tally) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        // the rows merged into must be written, and their refusals known
        self.flush(tally)?;
        // a duplicate of a refused row has nowhere to go
        let (orphans, live): (Vec<&MergeOp>, Vec<&MergeOp>) = ops
            .iter()
            .partition(|op| self.refused_rows.contains(&op.kept_row));
        let updates: Vec<MergeOp> = live
            .into_iter()
            .filter(|op| !op.sets.is_empty())
            .cloned()
            .collect();
        let missing = if updates.is_empty() {
            Vec::new()
        } else {
            self.sink.merge(&updates)?
        };
        let lost: Vec<&MergeOp> = orphans
            .into_iter()
            .chain(missing.iter().map(|&k| &updates[k]))
            .collect();
        if lost.is_empty() {
            return Ok(());
        }
        self.merge_misses += lost.len() as u64;
        let rejects: Vec<Reject> = lost
            .into_iter()
            .map(|op| {
                Reject {
                    row: op.row,
                    reason: "duplicate of a row the target refused".into(),
                    detail: "this row repeats the key of an earlier row, which the target refused; fix that row".into(),
                    record: op.record.clone(),
                }
            })
            .collect();
        self.reject(&rejects, tally)
    }

    fn write(&mut self, kept: &DataFrame, tally: &mut Tally) -> Result<()> {
        if kept.height() == 0 {
            return Ok(());
        }
        let out = self.sink.write(kept)?;
        self.account(out, tally)
    }

    /// Rows written in earlier batches whose outcome the sink had not
    /// reported yet (PostgreSQL overlaps a batch's COPY with the next).
    fn flush(&mut self, tally: &mut Tally) -> Result<()> {
        let out = self.sink.flush()?;
        self.account(out, tally)
    }

    fn account(&mut self, out: WriteOutcome, tally: &mut Tally) -> Result<()> {
        tally.written += out.written;
        if !out.refused.is_empty() {
            self.refused_rows.extend(out.refused.iter().map(|r| r.row));
            self.reject(&out.refused, tally)?;
        }
        Ok(())
    }
}
