//! The `repaero` command line.

mod docs;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::config::{Config, Job, LoadOptions, ProcessEnv};
use crate::error::{Error, Result};
use crate::pipeline::{self, RunOptions};

/// Rep'Aero's data migration toolkit: declarative jobs from Access,
/// PostgreSQL, Excel and CSV into one target, with every row accounted for.
#[derive(Debug, Parser)]
#[command(name = "repaero", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Configuration file [default: ./repaero.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Override a configuration value, e.g. --set target.url=postgres://postgres@127.0.0.1/repaero
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub sets: Vec<String>,

    /// More logging (-v info, -vv debug, -vvv trace); RUST_LOG takes precedence
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run migration jobs into the target
    Migrate(MigrateArgs),
    /// List the jobs, with their source and target
    Jobs {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Analyse a job's source before migrating: types, empties, duplicates, rule failures
    Profile {
        /// Job name (jobs/<job>.toml)
        job: String,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Tables, columns, types and row counts of a configured source or a file
    Inspect {
        /// A source name of repaero.toml, or a .mdb/.accdb/.xlsx/.xls/.ods file
        source: String,
        /// Only this table or sheet
        #[arg(long)]
        table: Option<String>,
        /// Also print the CREATE TABLE for this target dialect
        #[arg(long, value_enum)]
        ddl: Option<DdlDialect>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Write a job, its mappings and its validation from a source's schema and a profile of its data
    Scaffold(ScaffoldArgs),
    /// Check migrations with the plan's metrics (validation/<job>.toml); exit 3 on a mismatch
    Validate(ValidateArgs),
    /// What changed between two validation reports (from validate --out); exit 3 on a regression
    Diff {
        /// The earlier report (JSON)
        old: PathBuf,
        /// The later report (JSON)
        new: PathBuf,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Compare a job's table row by row, source against target, by key; exit 3 when they differ
    Rowdiff {
        /// Job name
        job: String,
        /// Target table of the job
        table: String,
        /// Map every source row, even where a PostgreSQL source could hash
        /// its rows in its own SQL (only the segments that differ are then mapped)
        #[arg(long)]
        stream: bool,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Barcode scanner exports → stock movements (docs/scan-format.md)
    #[command(subcommand)]
    Scans(ScansCommand),
    /// Stock alerts: parts at or under their minimum
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Supplier orders
    #[command(subcommand)]
    Order(OrderCommand),
    /// Generate deterministic fixture files with their ground truth
    Fixtures(FixturesArgs),
    /// Run integration daemons until SIGTERM or SIGINT (`--all`: every feed)
    Daemon(DaemonArgs),
    /// The bank's signed payment form for an invoice's amount due ([daemons.bank])
    PayLink(PayLinkArgs),
    /// Run jobs on the cron schedules of repaero.toml ([schedule.<name>]) until SIGTERM or SIGINT
    Schedule {
        /// Run the ticks due now (each once, wherever it ran), then exit
        #[arg(long)]
        once: bool,
        /// With --once: machine-readable outcome
        #[arg(long, requires = "once")]
        json: bool,
    },
    /// Health as a Nagios plugin: one status line, perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
    Check,
    /// Manufacturers' documents (the FTP feed): search, path of the current revision
    #[command(subcommand)]
    Docs(docs::DocsCommand),
    /// The booking queue: publish a file of messages, list the dead letters
    #[command(subcommand)]
    Queue(QueueCommand),
    /// The plan's indicators per month against their baseline and target ([kpi] go_live)
    Kpi {
        /// Only this month (YYYY-MM)
        #[arg(long, value_name = "YYYY-MM")]
        month: Option<String>,
        /// Machine-readable output
        #[arg(long, conflicts_with = "md")]
        json: bool,
        /// Markdown output
        #[arg(long)]
        md: bool,
    },
    /// The dashboard: runs, stock, workshop, billing and KPIs behind a login ([serve])
    Serve {
        /// Listen here instead of [serve] listen (port 0: a free port, printed)
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<String>,
    },
    /// The dashboard's file users (when no [serve.ldap] is set)
    #[command(subcommand)]
    Users(UsersCommand),
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add or replace a user; the password is read from the first line of standard input
    Add {
        /// User name
        name: String,
        /// A role of [serve.roles] (repeatable): direction, magasin, atelier, comptabilite…
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
    /// List the users and their roles
    List,
}

#[derive(Debug, Args)]
pub struct ScaffoldArgs {
    /// A source name of repaero.toml, or a .mdb/.accdb/.xlsx/.xls/.ods file
    pub source: String,
    /// The job's name [default: the source's name, or the file's, in snake_case]
    #[arg(long)]
    pub job: Option<String>,
    /// Only these tables or sheets [default: every visible one]
    #[arg(long, num_args = 1..)]
    pub tables: Vec<String>,
    /// Write jobs/, mappings/ and validation/ under this folder [default: the paths of repaero.toml]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Overwrite files that exist
    #[arg(long)]
    pub force: bool,
    /// Print the files (and the source entry for repaero.toml) instead of writing them
    #[arg(long)]
    pub print: bool,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Feeds to run in this process
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub feeds: Vec<String>,
    /// Run every feed configured in repaero.toml ([daemons.<feed>])
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Publish each line of a JSON-lines file as one message to the booking exchange
    Replay {
        /// One message per line
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// List the refused messages with their reasons
    Dead {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct PayLinkArgs {
    /// Invoice number (FA-2024-000042) or id
    pub invoice: String,
    /// Ask for this part of the amount due only, in euros (250.00)
    #[arg(long)]
    pub amount: Option<String>,
    /// Write the page that sends the browser to the bank to this file
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
    /// Print the invoice's pay link on the bank daemon at this base URL
    /// (https://erp.example) instead: each visit issues a new attempt
    #[arg(long, value_name = "URL", conflicts_with_all = ["html", "amount", "json"])]
    pub link: Option<String>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Jobs to run, in order
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub jobs: Vec<String>,
    /// Run every job in jobs/
    #[arg(long)]
    pub all: bool,
    /// Do everything, then roll back: nothing is written to the target
    #[arg(long)]
    pub dry_run: bool,
    /// Machine-readable report on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ScansCommand {
    /// Import scan files: checked lines become movements and change the stock, in one transaction per file
    Import {
        /// Scan files (CSV)
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Do everything, then roll back
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable report
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Raise and clear alerts from the current stock, then send the ones not sent yet
    Check {
        #[arg(long)]
        json: bool,
    },
    /// List open alerts (all with --all)
    List {
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// Parts at or under their minimum, the quantity to order, the cheapest and the fastest supplier
    Suggest {
        #[arg(long)]
        json: bool,
    },
    /// Place supplier orders: the suggestions (one order per supplier), or the lines given
    Place {
        /// A line to order instead of the suggestions (repeatable)
        #[arg(long = "line", value_name = "PART:SUPPLIER:QTY")]
        lines: Vec<String>,
        /// Which supplier of a suggestion
        #[arg(long, value_enum, default_value = "cheapest")]
        pick: PickArg,
        /// Do everything, then roll back
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Attach a parcel to an order: the Colissimo daemon tracks it from then on
    Ship {
        /// The order (PO-…)
        order: String,
        /// The parcel number (11 to 15 letters and digits)
        #[arg(long)]
        tracking: String,
        #[arg(long)]
        json: bool,
    },
    /// The supplier orders with their parcels' status and estimated date
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PickArg {
    /// The lowest total for what must be bought
    Cheapest,
    /// The shortest lead time
    Fastest,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Jobs to validate
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub jobs: Vec<String>,
    /// Every job with a validation file
    #[arg(long)]
    pub all: bool,
    /// Machine-readable report on stdout
    #[arg(long)]
    pub json: bool,
    /// Also write the report as JSON (what `repaero diff` compares)
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Also write a self-contained HTML report
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
    /// Also write a Markdown report
    #[arg(long, value_name = "PATH")]
    pub md: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DdlDialect {
    Sqlite,
    Postgres,
    Oracle,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FixtureKind {
    /// The Excel stock workbook (fixtures/stock/stock.xlsx)
    Stock,
    /// The PostgreSQL billing base (tables clients, factures, lignes_facture, paiements)
    Billing,
    /// A barcode scanner export (fixtures/scans/scans.csv)
    Scans,
    /// Supplier catalogues (fixtures/suppliers/)
    Suppliers,
    /// A stream of booking-queue messages (JSON lines) and its ground truth
    Queue,
}

#[derive(Debug, Args)]
pub struct FixturesArgs {
    #[arg(value_enum)]
    pub kind: FixtureKind,
    /// Output file: the workbook for stock [default: fixtures/stock/stock.xlsx],
    /// the ground truth for billing [default: fixtures/billing/billing.expected.json]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// stock: extra clean rows to add (default 0); billing: invoice lines (default 20000);
    /// scans: clean movements (default 40)
    #[arg(long)]
    pub rows: Option<usize>,
    /// billing: the database to (re)create the tables in
    #[arg(
        long,
        env = "BILLING_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/repaero_billing"
    )]
    pub url: String,
    /// billing: the random seed (the same seed gives the same base)
    #[arg(long, default_value_t = 20_261_129)]
    pub seed: u64,
}

fn init_logging(verbose: u8) {
    // odbc-api logs every driver warning (unixODBC's HY092 on connect)
    let default = match verbose {
        0 => "warn,odbc_api=error",
        1 => "info,odbc_api=error",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // One TLS stack: ring (docs/decisions.md).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn load(cli: &Cli) -> Result<Config> {
    let cfg = Config::load(
        &LoadOptions {
            path: cli.config.clone(),
            sets: cli.sets.clone(),
        },
        &ProcessEnv,
    )?;
    // each source's settings, read by its connector
    crate::source::check_settings(&cfg)?;
    Ok(cfg)
}

#[derive(Serialize)]
struct JobError {
    job: String,
    error: String,
    exit_code: u8,
}

#[derive(Serialize)]
struct MigrateOutput {
    runs: Vec<pipeline::JobReport>,
    errors: Vec<JobError>,
}

fn run(cli: Cli) -> Result<u8> {
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "repaero", &mut std::io::stdout());
            Ok(0)
        }
        Command::Fixtures(args) => {
            match args.kind {
                FixtureKind::Billing => {
                    let out = args
                        .out
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("fixtures/billing/billing.expected.json"));
                    let truth = crate::fixtures::billing::generate(
                        &args.url,
                        args.rows.unwrap_or(20_000),
                        args.seed,
                    )?;
                    write_truth(&out, &truth)?;
                    eprintln!(
                        "created clients ({}), factures ({}), lignes_facture ({}), paiements ({}) in {}; ground truth in {}",
                        truth.clients,
                        truth.invoices.read,
                        truth.invoice_lines.read,
                        truth.payments.read,
                        crate::config::redact_url(&args.url),
                        out.display()
                    );
                }
                FixtureKind::Scans => {
                    let out = args
                        .out
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("fixtures/scans/scans.csv"));
                    let truth = crate::fixtures::scans::generate(&out, args.rows.unwrap_or(40))?;
                    let truth_path = out.with_extension("expected.json");
                    write_truth(&truth_path, &truth)?;
                    eprintln!(
                        "wrote {} ({} lines) and {}",
                        out.display(),
                        truth.lines,
                        truth_path.display()
                    );
                }
                FixtureKind::Queue => {
                    let out = args
                        .out
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("fixtures/queue/queue.jsonl"));
                    let truth = crate::fixtures::queue::generate(
                        &out,
                        args.rows.unwrap_or(300),
                        args.seed,
                    )?;
                    let truth_path = out.with_extension("expected.json");
                    write_truth(&truth_path, &truth)?;
                    eprintln!(
                        "wrote {} ({} messages) and {}",
                        out.display(),
                        truth.messages,
                        truth_path.display()
                    );
                }
                FixtureKind::Suppliers => {
                    let dir = args
                        .out
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("fixtures/suppliers"));
                    let truth = crate::fixtures::suppliers::generate(&dir)?;
                    write_truth(&dir.join("suppliers.expected.json"), &truth)?;
                    eprintln!(
                        "wrote the catalogues in {} and their ground truth",
                        dir.display()
                    );
                }
                FixtureKind::Stock => {
                    let out = args
                        .out
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("fixtures/stock/stock.xlsx"));
                    let truth = crate::fixtures::stock::generate(&out, args.rows.unwrap_or(0))?;
                    let truth_path = out.with_file_name(format!(
                        "{}.expected.json",
                        out.file_stem()
                            .map(|s| s.to_string_lossy())
                            .unwrap_or_default()
                    ));
                    write_truth(&truth_path, &truth)?;
                    eprintln!(
                        "wrote {} ({} part rows, {} receipt rows) and {}",
                        out.display(),
                        truth.parts.read,
                        truth.stock_receipts.read,
                        truth_path.display()
                    );
                }
            }
            Ok(0)
        }
        Command::Inspect {
            source,
            table,
            ddl,
            json,
        } => {
            let cfg = load(&cli)?;
            let src = match cfg.sources.get(source) {
                Some(sc) => crate::source::open(source, sc)?,
                None => {
                    let path = std::path::Path::new(source);
                    if !path.exists() {
                        let known: Vec<&str> = cfg.sources.keys().map(|s| s.as_str()).collect();
                        return Err(Error::config(format!(
                            "{source:?} is neither a configured source ({}) nor a file",
                            if known.is_empty() {
                                "none configured".into()
                            } else {
                                known.join(", ")
                            }
                        )));
                    }
                    crate::source::open_path(path)?
                }
            };
            let dialect = ddl.map(|d| match d {
                DdlDialect::Sqlite => crate::db::Dialect::Sqlite,
                DdlDialect::Postgres => crate::db::Dialect::Postgres,
                DdlDialect::Oracle => crate::db::Dialect::Oracle,
            });
            let tables = crate::inspect::inspect(src.as_ref(), table.as_deref(), dialect)?;
            if let Some(t) = table
                && tables.is_empty()
            {
                return Err(Error::input(format!(
                    "{}: no table or sheet named {t:?}",
                    src.describe()
                )));
            }
            if *json {
                print_json(&tables)?;
            } else {
                print!("{}", crate::inspect::render(&src.describe(), &tables));
            }
            Ok(0)
        }
        Command::Jobs { json } => {
            let cfg = load(&cli)?;
            jobs(&cfg, *json)
        }
        Command::Profile { job, json } => {
            let cfg = load(&cli)?;
            let job = Job::load(&cfg, job, &ProcessEnv)?;
            let p = pipeline::profile::profile_job(&cfg, &job)?;
            if *json {
                print_json(&p)?;
            } else {
                print!("{}", pipeline::profile::render(&p));
            }
            Ok(0)
        }
        Command::Migrate(args) => {
            let cfg = load(&cli)?;
            migrate(&cfg, args)
        }
        Command::Validate(args) => {
            let cfg = load(&cli)?;
            validate(&cfg, args)
        }
        Command::Scaffold(args) => {
            let cfg = load(&cli)?;
            scaffold(&cfg, args)
        }
        Command::Scans(ScansCommand::Import {
            files,
            dry_run,
            json,
        }) => {
            let cfg = load(&cli)?;
            // each file on its own: a failed one is reported, the next goes on
            let reports = crate::stock::scans::import(&cfg, files, *dry_run);
            for e in reports.iter().filter_map(|r| r.error.as_ref()) {
                eprintln!("error: {e}");
            }
            if *json {
                print_json(&reports)?;
            } else {
                print!("{}", crate::stock::scans::render(&reports));
            }
            let mut code = crate::stock::scans::exit_code(&reports);
            // alerts raised by the import go out now, when channels are set
            if !dry_run && reports.iter().any(|r| !r.alerts_raised.is_empty()) {
                match crate::stock::alerts::notify(&cfg) {
                    Ok(sent) => {
                        for f in &sent.failed {
                            eprintln!("warning: alert not sent: {f}");
                        }
                    }
                    Err(e) => {
                        eprintln!("warning: alerts not sent: {e}");
                        code = code.max(e.exit_code());
                    }
                }
            }
            Ok(code)
        }
        Command::Alerts(AlertsCommand::Check { json }) => {
            let cfg = load(&cli)?;
            let ((raised, cleared), sent) = crate::stock::alerts::check(&cfg)?;
            if *json {
                print_json(&serde_json::json!({
                    "raised": raised, "cleared": cleared, "sent": sent,
                }))?;
            } else {
                for r in &raised {
                    println!("raised: {r}");
                }
                for c in &cleared {
                    println!("cleared: {c}");
                }
                println!(
                    "sent: {} by mail, {} by SMS{}{}",
                    sent.email.len(),
                    sent.sms.len(),
                    if sent.failed.is_empty() {
                        String::new()
                    } else {
                        format!(", {} failed", sent.failed.len())
                    },
                    if sent.busy.is_empty() {
                        String::new()
                    } else {
                        format!(", {} being sent by another check", sent.busy.len())
                    }
                );
            }
            for f in &sent.failed {
                eprintln!("error: {f}");
            }
            Ok(if sent.failed.is_empty() { 0 } else { 1 })
        }
        Command::Alerts(AlertsCommand::List { all, json }) => {
            let cfg = load(&cli)?;
            let mut sink = crate::sink::open(&cfg.target.url, true)?;
            let alerts: Vec<_> = crate::stock::alerts::list(sink.as_mut())?
                .into_iter()
                .filter(|a| *all || a.cleared_at.is_none())
                .collect();
            if *json {
                print_json(&alerts)?;
            } else if alerts.is_empty() {
                println!("no {}alert", if *all { "" } else { "open " });
            } else {
                for a in &alerts {
                    println!(
                        "{:<14} {:>5} ≤ {:<5} raised {}{}{}{}",
                        a.reference,
                        a.quantity,
                        a.minimum,
                        a.raised_at,
                        a.cleared_at
                            .as_ref()
                            .map(|c| format!(", cleared {c}"))
                            .unwrap_or_default(),
                        a.email_sent_at
                            .as_ref()
                            .map(|_| ", mailed".to_string())
                            .or_else(|| a
                                .email_error
                                .as_ref()
                                .map(|e| format!(", mail failed ({e})")))
                            .unwrap_or_default(),
                        a.sms_sent_at
                            .as_ref()
                            .map(|_| ", SMS sent".to_string())
                            .or_else(|| a.sms_error.as_ref().map(|e| format!(", SMS failed ({e})")))
                            .unwrap_or_default(),
                    );
                }
            }
            Ok(0)
        }
        Command::Order(OrderCommand::Suggest { json }) => {
            let cfg = load(&cli)?;
            let lines = crate::stock::orders::suggest(&cfg)?;
            if *json {
                print_json(&lines)?;
            } else {
                print!("{}", crate::stock::orders::render(&lines));
            }
            Ok(0)
        }
        Command::Order(OrderCommand::Place {
            lines,
            pick,
            dry_run,
            json,
        }) => {
            use crate::stock::orders::Pick;
            let cfg = load(&cli)?;
            let pick = match pick {
                PickArg::Cheapest => Pick::Cheapest,
                PickArg::Fastest => Pick::Fastest,
            };
            let placed = crate::stock::orders::place(&cfg, lines, pick, *dry_run)?;
            if *json {
                print_json(&placed)?;
            } else {
                print!("{}", crate::stock::orders::render_placed(&placed));
            }
            Ok(0)
        }
        Command::Order(OrderCommand::Ship {
            order,
            tracking,
            json,
        }) => {
            let cfg = load(&cli)?;
            let a = crate::stock::orders::ship(&cfg, order, tracking)?;
            if *json {
                print_json(&a)?;
            } else if a.already {
                println!(
                    "parcel {} was attached to {} already",
                    a.tracking_number, a.order
                );
            } else {
                println!("parcel {} attached to {}", a.tracking_number, a.order);
            }
            Ok(0)
        }
        Command::Order(OrderCommand::List { json }) => {
            let cfg = load(&cli)?;
            let orders = crate::stock::orders::list(&cfg)?;
            if *json {
                print_json(&orders)?;
            } else {
                print!("{}", crate::stock::orders::render_list(&orders));
            }
            Ok(0)
        }
        Command::Daemon(args) => {
            let cfg = load(&cli)?;
            let names: Vec<String> = if args.all {
                // every feed the configuration has a [daemons.<feed>] for
                crate::daemon::FEEDS
                    .iter()
                    .filter(|f| cfg.daemons.get(**f).is_some_and(|v| v.is_table()))
                    .map(|s| s.to_string())
                    .collect()
            } else {
                args.feeds.clone()
            };
            // every feed's settings are read before any starts
            let feeds = names
                .iter()
                .map(|n| crate::daemon::feed(n, &cfg))
                .collect::<Result<Vec<_>>>()?;
            if feeds.is_empty() {
                return Err(Error::config(format!(
                    "no daemon feed to run: --all runs the feeds configured in [daemons.<feed>] ({})",
                    crate::daemon::FEEDS.join(", ")
                )));
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("repaero-daemon")
                .build()
                .map_err(|e| Error::runtime(format!("cannot start the runtime: {e}")))?;
            rt.block_on(crate::daemon::run(std::sync::Arc::new(cfg), feeds))?;
            Ok(0)
        }
        Command::PayLink(args) => {
            let cfg = load(&cli)?;
            if let Some(base) = &args.link {
                let bank = crate::daemon::bank::BankConfig::from_config(&cfg)?;
                if !crate::daemon::bank::valid_order_id(&args.invoice) {
                    return Err(Error::input(format!(
                        "{:?} is not an invoice number the bank takes",
                        args.invoice
                    )));
                }
                println!(
                    "{}/pay/{}?t={}",
                    base.trim_end_matches('/'),
                    args.invoice,
                    bank.link_token(&args.invoice)
                );
                return Ok(0);
            }
            let form = crate::daemon::bank::pay_link(&cfg, &args.invoice, args.amount.as_deref())?;
            if let Some(path) = &args.html {
                crate::validate::report::write_file(path, form.html().as_bytes())?;
                eprintln!(
                    "invoice {}: {} EUR, attempt {}; page written to {}",
                    form.invoice,
                    form.amount,
                    form.fields.get("vads_trans_id").map_or("", |s| s.as_str()),
                    path.display()
                );
            } else if args.json {
                print_json(&form)?;
            } else {
                print!("{}", form.text());
            }
            Ok(0)
        }
        Command::Schedule { once, json } => {
            let cfg = std::sync::Arc::new(load(&cli)?);
            if *once {
                return schedule_once(cfg, *json);
            }
            let feed = crate::schedule::ScheduleFeed::new(cfg.clone())?;
            if feed.is_empty() {
                return Err(Error::config(
                    "no schedule: add a [schedule.<name>] with its job(s) and cron",
                ));
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("repaero-schedule")
                .build()
                .map_err(|e| Error::runtime(format!("cannot start the runtime: {e}")))?;
            rt.block_on(crate::daemon::run(cfg, vec![Box::new(feed)]))?;
            Ok(0)
        }
        Command::Kpi { month, json, md } => {
            let cfg = load(&cli)?;
            let kcfg = crate::kpi::KpiConfig::from_config(&cfg)?;
            let mut sink = crate::sink::open(&cfg.target.url, true)?;
            let mut report = crate::kpi::compute(sink.conn()?, &kcfg)?;
            if let Some(m) = month {
                let m = crate::kpi::month_of(m)
                    .filter(|x| x.len() == m.trim().len())
                    .ok_or_else(|| Error::config(format!("--month {m:?}: expected YYYY-MM")))?;
                report = report.only_month(&m);
            }
            if *json {
                print_json(&report)?;
            } else if *md {
                print!("{}", crate::kpi::render_md(&report));
            } else {
                print!("{}", crate::kpi::render_text(&report));
            }
            Ok(0)
        }
        Command::Serve { listen } => {
            let cfg = std::sync::Arc::new(load(&cli)?);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("repaero-serve")
                .build()
                .map_err(|e| Error::runtime(format!("cannot start the runtime: {e}")))?;
            rt.block_on(crate::serve::run(cfg, listen.clone()))?;
            Ok(0)
        }
        Command::Users(cmd) => {
            let cfg = load(&cli)?;
            let serve = crate::serve::ServeConfig::from_config(&cfg)?;
            match cmd {
                UsersCommand::Add { name, roles } => {
                    for r in roles {
                        if !serve.roles.contains_key(r) {
                            return Err(Error::config(format!(
                                "--role {r:?} is not in [serve.roles] ({})",
                                serve.roles.keys().cloned().collect::<Vec<_>>().join(", ")
                            )));
                        }
                    }
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .map_err(|e| Error::input(format!("password from standard input: {e}")))?;
                    let password = line.trim_end_matches(['\r', '\n']);
                    crate::serve::auth::add_user(&serve.users, name, password, roles)?;
                    eprintln!("user {name} written to {}", serve.users.display());
                }
                UsersCommand::List => {
                    for (name, roles) in crate::serve::auth::list_users(&serve.users)? {
                        println!("{name}\t{}", roles.join(", "));
                    }
                }
            }
            Ok(0)
        }
        Command::Check => {
            // a configuration that cannot be read is the plugin's UNKNOWN
            let cfg = match load(&cli) {
                Ok(c) => c,
                Err(e) => {
                    println!("REPAERO UNKNOWN - {}", e.to_string().replace('\n', " "));
                    return Ok(3);
                }
            };
            let h = crate::health::check(&cfg);
            println!("{}", h.line());
            Ok(h.status().code())
        }
        Command::Docs(cmd) => {
            let cfg = load(&cli)?;
            docs::run(&cfg, cmd)
        }
        Command::Queue(QueueCommand::Replay { file, json }) => {
            let cfg = load(&cli)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::runtime(format!("cannot start the runtime: {e}")))?;
            let done = rt.block_on(crate::daemon::queue::replay(&cfg, file))?;
            if *json {
                print_json(&done)?;
            } else {
                println!(
                    "{}: {} messages published and confirmed in {:.2}s",
                    done.file, done.published, done.seconds
                );
            }
            Ok(0)
        }
        Command::Queue(QueueCommand::Dead { json }) => {
            let cfg = load(&cli)?;
            let mut conn = crate::db::open(&cfg.target.url, true)?;
            let dead = crate::daemon::queue::store::dead_letters(conn.as_mut())?;
            if *json {
                print_json(&dead)?;
            } else if dead.is_empty() {
                println!("no dead letter");
            } else {
                for d in &dead {
                    println!(
                        "{}  {}  {}  [{}] {}",
                        d.received_at,
                        d.message_id.as_deref().unwrap_or("(no message_id)"),
                        d.routing_key.as_deref().unwrap_or(""),
                        d.reason,
                        d.detail
                    );
                }
                println!("{} dead letters", dead.len());
            }
            Ok(0)
        }
        Command::Diff { old, new, json } => {
            let read = |p: &PathBuf| -> Result<Vec<crate::validate::Report>> {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| Error::config(format!("cannot read {}: {e}", p.display())))?;
                let f: crate::validate::report::ReportFile =
                    serde_json::from_str(&text).map_err(|e| {
                        Error::config(format!(
                            "{}: not a validation report (repaero validate --out): {e}",
                            p.display()
                        ))
                    })?;
                Ok(f.reports)
            };
            let (before, after) = (read(old)?, read(new)?);
            crate::validate::report::check_comparable(
                &before,
                &after,
                &old.display().to_string(),
                &new.display().to_string(),
            )?;
            let changes = crate::validate::report::diff(&before, &after);
            if *json {
                print_json(&changes)?;
            } else {
                print!("{}", crate::validate::report::render_diff(&changes));
            }
            Ok(if changes.iter().any(|c| c.regression) {
                3
            } else {
                0
            })
        }
        Command::Rowdiff {
            job,
            table,
            stream,
            json,
        } => {
            let cfg = load(&cli)?;
            let job = Job::load(&cfg, job, &ProcessEnv)?;
            let opts = crate::validate::rowdiff::Options { stream: *stream };
            let result = crate::validate::rowdiff::rowdiff(&cfg, &job, table, opts)?;
            if *json {
                print_json(&result)?;
            } else {
                print!("{}", crate::validate::rowdiff::render(&result));
            }
            Ok(if result.is_equal() { 0 } else { 3 })
        }
    }
}

/// `repaero schedule --once`: the due ticks, then exit: 1 when a run
/// failed, 3 when a validation regressed or does not match.
fn schedule_once(cfg: std::sync::Arc<Config>, json: bool) -> Result<u8> {
    let mut s = crate::schedule::Scheduler::new(cfg)?;
    if s.plan.entries.is_empty() {
        return Err(Error::config(
            "no schedule: add a [schedule.<name>] with its job(s) and cron",
        ));
    }
    let outcomes = s.run_due(chrono::Utc::now())?;
    if json {
        print_json(&outcomes)?;
    } else if outcomes.is_empty() {
        println!("nothing due");
    } else {
        for o in &outcomes {
            println!(
                "{} {} {}{}{}{}",
                o.schedule,
                o.tick,
                o.state,
                o.run_id
                    .as_ref()
                    .map(|r| format!(" run {r}, {} row(s) written", o.rows_written))
                    .unwrap_or_default(),
                o.validation
                    .as_ref()
                    .map(|v| format!(", validation {v}"))
                    .unwrap_or_default(),
                o.error
                    .as_ref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default(),
            );
        }
    }
    let failed = outcomes.iter().any(|o| o.state == "failed");
    let invalid = outcomes.iter().any(|o| {
        matches!(
            o.validation.as_deref(),
            Some("regressed" | "mismatch" | "error")
        )
    });
    Ok(if failed {
        1
    } else if invalid {
        3
    } else {
        0
    })
}

/// Write a ground truth as pretty JSON, creating its directory.
fn write_truth<T: Serialize>(path: &std::path::Path, truth: &T) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::runtime(format!("creating {}: {e}", dir.display())))?;
    }
    let json = serde_json::to_string_pretty(truth)
        .map_err(|e| Error::runtime(format!("ground truth: {e}")))?;
    crate::validate::report::write_file(path, (json + "\n").as_bytes())
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    let s =
        serde_json::to_string_pretty(v).map_err(|e| Error::runtime(format!("JSON output: {e}")))?;
    println!("{s}");
    Ok(())
}

fn validate(cfg: &Config, args: &ValidateArgs) -> Result<u8> {
    use crate::validate::{Validation, report};
    let names = if args.all {
        let all = Validation::list(cfg)?;
        if all.is_empty() {
            return Err(Error::config(format!(
                "--all: no validation files in {}",
                cfg.resolve(&cfg.paths.validation).display()
            )));
        }
        all
    } else {
        args.jobs.clone()
    };
    let validations: Vec<Validation> = names
        .iter()
        .map(|n| Validation::load(cfg, n, &ProcessEnv))
        .collect::<Result<_>>()?;
    let mut reports = Vec::new();
    let mut code = 0u8;
    for v in &validations {
        match crate::validate::validate(cfg, v) {
            Ok(r) => reports.push(r),
            Err(e) => {
                eprintln!("error: {e}");
                code = code.max(e.exit_code());
            }
        }
    }
    let write = |path: &Option<PathBuf>, text: String| -> Result<()> {
        if let Some(p) = path {
            report::write_file(p, text.as_bytes())?;
        }
        Ok(())
    };
    let file = report::ReportFile {
        reports: reports.clone(),
    };
    let json = serde_json::to_string_pretty(&file)
        .map_err(|e| Error::runtime(format!("JSON report: {e}")))?;
    write(&args.out, json.clone() + "\n")?;
    write(&args.html, report::render_html(&reports))?;
    write(&args.md, report::render_markdown(&reports))?;
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report::render_text(&reports));
    }
    if reports.iter().any(|r| r.mismatches() > 0) {
        code = code.max(3);
    }
    Ok(code)
}

fn migrate(cfg: &Config, args: &MigrateArgs) -> Result<u8> {
    let names = if args.all {
        let all = Job::list(cfg)?;
        if all.is_empty() {
            return Err(Error::config(format!(
                "--all: no job files in {}",
                cfg.jobs_dir().display()
            )));
        }
        all
    } else {
        args.jobs.clone()
    };
    // Load every job first: a typo in the last one fails before anything runs.
    let jobs: Vec<Job> = names
        .iter()
        .map(|n| Job::load(cfg, n, &ProcessEnv))
        .collect::<Result<_>>()?;
    let opts = RunOptions {
        dry_run: args.dry_run,
        progress: !args.json && std::io::stderr().is_terminal(),
    };
    let run_id = pipeline::new_run_id();
    let mut out = MigrateOutput {
        runs: Vec::new(),
        errors: Vec::new(),
    };
    let mut code = 0u8;
    let mut handle = |job: &Job, result: Result<pipeline::JobReport>| match result {
        Ok(report) => {
            if !args.json {
                print!("{}", pipeline::report::render(&report));
            }
            out.runs.push(report);
        }
        Err(e) => {
            eprintln!("error: {e}");
            code = code.max(e.exit_code());
            out.errors.push(JobError {
                job: job.name.clone(),
                error: e.to_string(),
                exit_code: e.exit_code(),
            });
        }
    };
    if args.dry_run && jobs.len() > 1 {
        // one transaction for all: each job sees what the ones before it
        // would have written, as in the real run
        for (job, result) in jobs
            .iter()
            .zip(pipeline::dry_run_jobs(cfg, &jobs, &opts, &run_id))
        {
            handle(job, result);
        }
    } else {
        for job in &jobs {
            tracing::info!(job = job.name, "starting");
            handle(job, pipeline::run_job(cfg, job, &opts, &run_id));
        }
    }
    if args.json {
        print_json(&out)?;
    } else if jobs.len() > 1 && !out.errors.is_empty() {
        let ran: Vec<&str> = out.runs.iter().map(|r| r.job.as_str()).collect();
        let failed: Vec<&str> = out.errors.iter().map(|e| e.job.as_str()).collect();
        eprintln!(
            "{} of {} jobs ran{}; failed: {}",
            ran.len(),
            jobs.len(),
            if ran.is_empty() {
                String::new()
            } else {
                format!(" ({})", ran.join(", "))
            },
            failed.join(", ")
        );
    }
    Ok(code)
}

fn scaffold(cfg: &Config, args: &ScaffoldArgs) -> Result<u8> {
    use crate::scaffold::{self, Dirs, identifier};
    let canon = |p: &std::path::Path| std::fs::canonicalize(p).ok();
    // the source: configured, a file configured under another name, or a
    // file new to repaero.toml (then added to it)
    let (source_name, src, new_entry) = match cfg.sources.get(&args.source) {
        Some(sc) => (
            args.source.clone(),
            crate::source::open(&args.source, sc)?,
            None,
        ),
        None => {
            let path = std::path::Path::new(&args.source);
            if !path.exists() {
                let known: Vec<&str> = cfg.sources.keys().map(|s| s.as_str()).collect();
                return Err(Error::config(format!(
                    "{:?} is neither a configured source ({}) nor a file",
                    args.source,
                    if known.is_empty() {
                        "none configured".into()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            let abs = canon(path);
            let configured = cfg.sources.iter().find(|(_, sc)| {
                sc.path()
                    .and_then(|p| canon(&cfg.resolve(&p)))
                    .is_some_and(|p| Some(p) == abs)
            });
            match configured {
                Some((name, sc)) => (name.clone(), crate::source::open(name, sc)?, None),
                None => {
                    let stem = path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let mut name = identifier(args.job.as_deref().unwrap_or(&stem));
                    let base = name.clone();
                    let mut k = 2;
                    while cfg.sources.contains_key(&name) {
                        name = format!("{base}_{k}");
                        k += 1;
                    }
                    let src = crate::source::open_path(path)?;
                    // relative to repaero.toml when it is below it
                    let shown = match (abs.as_ref(), canon(&cfg.base_dir)) {
                        (Some(a), Some(base)) => a
                            .strip_prefix(&base)
                            .map(|r| r.to_path_buf())
                            .unwrap_or_else(|_| a.clone()),
                        _ => path.to_path_buf(),
                    };
                    let entry = scaffold::source_entry(
                        &name,
                        crate::source::kind_of_path(path),
                        &shown.display().to_string(),
                    );
                    (name, src, Some(entry))
                }
            }
        }
    };
    let job = identifier(args.job.as_deref().unwrap_or(&source_name));
    let made = scaffold::scaffold(
        src.as_ref(),
        &scaffold::Options {
            job: job.clone(),
            source_name: source_name.clone(),
            tables: args.tables.clone(),
            batch_size: cfg.run.batch_size,
        },
    )?;
    let dirs = match &args.out {
        Some(out) => Dirs {
            jobs: out.join("jobs"),
            mappings: out.join("mappings"),
            validation: out.join("validation"),
        },
        None => Dirs {
            jobs: cfg.jobs_dir(),
            mappings: cfg.mappings_dir(),
            validation: cfg.resolve(&cfg.paths.validation),
        },
    };
    if args.print {
        for f in &made.files {
            println!("# ==> {} <==\n{}", dirs.path(f).display(), f.text);
        }
        if let Some(entry) = &new_entry {
            println!("# ==> add to {} <==\n{entry}", cfg.label());
        }
        return Ok(0);
    }
    let written = scaffold::write(&made, &dirs, args.force)?;
    for p in &written {
        println!("wrote {}", p.display());
    }
    if let Some(entry) = &new_entry {
        let file = cfg
            .file
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG));
        let mut text = std::fs::read_to_string(&file).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(entry);
        // what is appended must load: checked before the file is touched
        Config::from_text(
            &text,
            &file.display().to_string(),
            &cfg.base_dir,
            &[],
            &ProcessEnv,
        )?;
        std::fs::write(&file, text)
            .map_err(|e| Error::runtime(format!("cannot write {}: {e}", file.display())))?;
        println!("added [sources.{source_name}] to {}", file.display());
    }
    for (t, why) in &made.left_out {
        println!("not scaffolded: {t:?} ({why})");
    }
    println!(
        "{} table(s): {}",
        made.tables.len(),
        made.tables
            .iter()
            .map(|(t, s, r)| format!("{s} → {t} ({r} rows)"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("review the files, then: repaero migrate {job} && repaero validate {job}");
    Ok(0)
}

#[derive(Serialize)]
struct JobLine {
    name: String,
    description: Option<String>,
    source: String,
    source_kind: String,
    source_path: Option<String>,
    target: String,
    tables: Vec<(String, String, String)>,
}

fn jobs(cfg: &Config, json: bool) -> Result<u8> {
    let mut lines = Vec::new();
    for name in Job::list(cfg)? {
        let job = Job::load(cfg, &name, &ProcessEnv)?;
        let src = cfg.source(&job.source)?;
        lines.push(JobLine {
            name: job.name.clone(),
            description: job.description.clone(),
            source: job.source.clone(),
            source_kind: src.kind.clone(),
            source_path: src.path().map(|p| p.display().to_string()),
            target: crate::config::redact_url(&cfg.target.url),
            tables: job
                .tables
                .iter()
                .map(|(m, mode)| {
                    (
                        m.source_name(),
                        m.target.table.clone(),
                        mode.as_str().to_string(),
                    )
                })
                .collect(),
        });
    }
    if json {
        print_json(&lines)?;
        return Ok(0);
    }
    if lines.is_empty() {
        println!("no jobs in {}", cfg.jobs_dir().display());
    }
    for l in &lines {
        println!(
            "{:<12} {} ({}: {}) → {}",
            l.name,
            l.description.as_deref().unwrap_or(""),
            l.source_kind,
            l.source_path.as_deref().unwrap_or(&l.source),
            l.target
        );
        for (from, to, mode) in &l.tables {
            println!("{:<12}   {from} → {to} ({mode})", "");
        }
    }
    Ok(0)
}
