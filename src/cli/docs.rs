//! `repaero docs …`: the manufacturers' documents the FTP feed fetched,
//! for a technician before and during an intervention.

use clap::Subcommand;

use crate::config::Config;
use crate::daemon::ftp::register::{self, DocRow, Query};
use crate::error::{Error, Result};

#[derive(Debug, Subcommand)]
pub enum DocsCommand {
    /// Find documents by words of their reference, title, ATA chapter, model or type
    Search {
        /// Words that must all appear (case and accents ignored)
        words: Vec<String>,
        /// Only this model family (e.g. C172)
        #[arg(long)]
        model: Option<String>,
        /// Only this document type (SB, SL, MM, IPC, SI)
        #[arg(long = "type")]
        doc_type: Option<String>,
        /// Superseded and withdrawn versions too
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Print the local file of a reference's current revision
    Path {
        reference: String,
        /// The language wanted when there are several (FR, EN…) [default: EN, else the only one]
        #[arg(long)]
        lang: Option<String>,
    },
    /// Poll every manufacturer's server once, now, and print what it did
    Poll {
        #[arg(long)]
        json: bool,
    },
    /// Remote files refused, with the reason
    Quarantined {
        #[arg(long)]
        json: bool,
    },
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let s =
        serde_json::to_string_pretty(v).map_err(|e| Error::runtime(format!("JSON output: {e}")))?;
    println!("{s}");
    Ok(())
}

fn line(d: &DocRow) -> String {
    format!(
        "{:<10} {:<16} R{:<3} {:<3} {:<8} {:<4} {:<10} {}{}\n{:>11}{}",
        d.status,
        d.reference,
        d.revision,
        d.language,
        d.model.as_deref().unwrap_or("-"),
        d.doc_type.as_deref().unwrap_or("-"),
        d.ata_chapter
            .as_deref()
            .map(|a| format!("ATA {a}"))
            .unwrap_or_else(|| "-".into()),
        d.title.as_deref().unwrap_or(""),
        if d.version > 1 {
            format!(" (version {})", d.version)
        } else {
            String::new()
        },
        "",
        d.local_path
    )
}

pub fn run(cfg: &Config, cmd: &DocsCommand) -> Result<u8> {
    match cmd {
        DocsCommand::Search {
            words,
            model,
            doc_type,
            all,
            json,
        } => {
            let mut conn = crate::db::open(&cfg.target.url, false)?;
            let found = register::search(
                conn.as_mut(),
                &Query {
                    words: words.clone(),
                    model: model.clone(),
                    doc_type: doc_type.clone(),
                    all: *all,
                },
            )?;
            if *json {
                print_json(&found)?;
            } else if found.is_empty() {
                println!("no document found");
            } else {
                for d in &found {
                    println!("{}", line(d));
                }
            }
            Ok(0)
        }
        DocsCommand::Path { reference, lang } => {
            let mut conn = crate::db::open(&cfg.target.url, false)?;
            let versions = register::current(conn.as_mut(), reference)?;
            if versions.is_empty() {
                return Err(register::unknown(reference));
            }
            let mut current: Vec<&DocRow> =
                versions.iter().filter(|d| d.status == "current").collect();
            if let Some(l) = lang {
                current.retain(|d| d.language.eq_ignore_ascii_case(l));
            }
            let pick = match current.len() {
                0 => None,
                1 => current.first().copied(),
                _ => current
                    .iter()
                    .find(|d| d.language == "EN")
                    .or(current.first())
                    .copied(),
            };
            match pick {
                Some(d) => {
                    println!("{}", d.local_path);
                    Ok(0)
                }
                None => Err(Error::input(format!(
                    "{reference}: no current revision{} (every version is withdrawn or superseded; repaero docs search --all {reference} lists them)",
                    lang.as_deref()
                        .map(|l| format!(" in {l}"))
                        .unwrap_or_default()
                ))),
            }
        }
        DocsCommand::Poll { json } => {
            let settings = crate::daemon::ftp::Settings::from_config(cfg)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| Error::runtime(format!("cannot start the runtime: {e}")))?;
            let db = crate::daemon::Db::new(&cfg.target.url)?;
            let results = rt.block_on(crate::daemon::ftp::poll_all(&settings, &db));
            let mut code = 0u8;
            let mut reports = Vec::new();
            for (name, r) in results {
                match r {
                    Ok(r) => reports.push(r),
                    Err(e) => {
                        eprintln!("error: {name}: {e}");
                        code = code.max(e.exit_code());
                    }
                }
            }
            if *json {
                print_json(&reports)?;
            } else {
                for r in &reports {
                    println!(
                        "{}: {} files listed ({}), {} registered, {} unchanged, {} waiting, {} quarantined, {} removed, {} failed; {} RETR, {} bytes in {:.2} s",
                        r.manufacturer,
                        r.listed,
                        r.listing,
                        r.registered.len(),
                        r.unchanged.len(),
                        r.waiting.len(),
                        r.quarantined.len(),
                        r.removed.len(),
                        r.failed.len(),
                        r.retr,
                        r.bytes,
                        r.seconds
                    );
                    for (p, why) in &r.quarantined {
                        println!("  quarantined {p}: {why}");
                    }
                    for (p, why) in &r.failed {
                        println!("  failed {p}: {why}");
                    }
                    for (p, why) in &r.unreadable {
                        println!("  unreadable folder {p}: {why}");
                    }
                }
            }
            Ok(code)
        }
        DocsCommand::Quarantined { json } => {
            let mut conn = crate::db::open(&cfg.target.url, false)?;
            let files: Vec<_> = register::all_files(conn.as_mut())?
                .into_iter()
                .filter(|f| f.state == register::state::QUARANTINED)
                .collect();
            if *json {
                print_json(&files)?;
            } else if files.is_empty() {
                println!("nothing quarantined");
            } else {
                for f in &files {
                    println!(
                        "{} {}: {}",
                        f.manufacturer,
                        f.remote_path,
                        f.reason.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(0)
        }
    }
}
