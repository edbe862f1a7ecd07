//! Every table of every file of the Access corpus (`REPAERO_CORPUS`/access, 61 real files,
//! Access 97 to 2019, from the Jackcess test suite) is read through
//! repaero's Access source and compared value by value with `mdb-export`
//! (mdbtools). mdbtools is wrong in known ways (fixtures/access/README.md,
//! "Readers"); a difference is accepted only when one of those explains it,
//! and each explanation is counted, so that the test shows what it saw.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::corpus;
use repaero::source::access::{AccessColumn, AccessSource};
use repaero::source::{Source, TableRequest};

const NULL: &str = "␀";

/// Why a value differs from mdbtools' reading, when mdbtools is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Why {
    /// astral-plane characters (emoji) become `??`
    Astral,
    /// an empty string comes out as NULL
    EmptyAsNull,
    /// control characters become `?`
    Control,
    /// pre-1900 dates print as 1900-01-00
    Pre1900,
    /// Date/Time Extended values come out NULL
    ExtendedDate,
    /// calculated columns come out as garbage
    Calculated,
    /// unsupported column types come out NULL (we give the raw bytes)
    Unsupported,
    /// a Jet3 GUID column is exported as the hex of its text (with a dash lost)
    Jet3Guid,
    /// complex columns print their complex id (we give their values)
    Complex,
}

fn mdb_tables(path: &Path) -> Vec<String> {
    let out = Command::new("mdb-tables")
        .arg("-1")
        .arg(path)
        .output()
        .expect("mdb-tables (mdbtools)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn mdb_export(path: &Path, table: &str) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let out = Command::new("mdb-export")
        .args([
            "-0",
            NULL,
            "-b",
            "hex",
            "-D",
            "%Y-%m-%dT%H:%M:%S",
            "-T",
            "%Y-%m-%dT%H:%M:%S",
        ])
        .arg(path)
        .arg(table)
        .output()
        .expect("mdb-export (mdbtools)");
    assert!(
        out.status.success(),
        "mdb-export {} {table}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut r = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(out.stdout.as_slice());
    let header: Vec<String> = r.headers().unwrap().iter().map(|s| s.to_string()).collect();
    let rows = r
        .byte_records()
        .map(|rec| {
            rec.unwrap()
                .iter()
                .map(|b| {
                    let s = String::from_utf8_lossy(b).into_owned();
                    (s != NULL).then_some(s)
                })
                .collect()
        })
        .collect();
    (header, rows)
}

fn ours(src: &dyn Source, table: &str) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let mut reader = src
        .read(TableRequest::all(table))
        .unwrap_or_else(|e| panic!("{table}: {e}"));
    let names: Vec<String> = reader.columns.iter().map(|c| c.header.clone()).collect();
    let mut rows = Vec::new();
    while let Some(b) = reader
        .next_batch()
        .unwrap_or_else(|e| panic!("{table}: {e}"))
    {
        let cols: Vec<_> = names
            .iter()
            .map(|n| b.column(n).unwrap().str().unwrap().clone())
            .collect();
        for i in 0..b.height() {
            rows.push(
                cols.iter()
                    .map(|c| c.get(i).map(|s| s.to_string()))
                    .collect(),
            );
        }
    }
    (names, rows)
}

fn same_number(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

/// Our ISO date-time against mdbtools' `%Y-%m-%dT%H:%M:%S`.
fn same_datetime(ours: &str, theirs: &str) -> bool {
    let mut o = ours.replace(' ', "T");
    if o.len() == 10 {
        o.push_str("T00:00:00");
    }
    o.truncate(19);
    o == theirs
}

/// Does our value say what mdbtools says, and if not, which known mdbtools
/// fault explains it?
fn compare(
    col: &AccessColumn,
    ours: &Option<String>,
    theirs: &Option<String>,
) -> Result<(), Option<Why>> {
    let t = col.access_type.as_str();
    if col.calculated {
        return if ours == theirs {
            Ok(())
        } else {
            Err(Some(Why::Calculated))
        };
    }
    match (ours, theirs) {
        (None, None) => Ok(()),
        (Some(o), None) if o.is_empty() => Err(Some(Why::EmptyAsNull)),
        (Some(_), None) if t.starts_with("Date/Time Extended") => Err(Some(Why::ExtendedDate)),
        (Some(_), None) if t.starts_with("unknown") => Err(Some(Why::Unsupported)),
        (Some(o), Some(th)) => {
            let ok = if t.starts_with("Yes/No") {
                (o == "true") == (th == "1" || th.eq_ignore_ascii_case("true"))
            } else if t.starts_with("Date/Time") {
                same_datetime(o, th)
            } else if t.starts_with("Single") {
                // both the same 32-bit float, printed to different lengths
                matches!((o.parse::<f32>(), th.parse::<f32>()), (Ok(x), Ok(y)) if x == y)
            } else if [
                "Byte",
                "Integer",
                "Long",
                "AutoNumber",
                "Currency",
                "Single",
                "Double",
                "Decimal",
                "Large",
            ]
            .iter()
            .any(|p| t.starts_with(p))
            {
                same_number(o, th)
            } else if ["Binary", "OLE", "unknown", "Replication"]
                .iter()
                .any(|p| t.starts_with(p))
            {
                // hex bytes and GUIDs, whatever their case
                o.eq_ignore_ascii_case(th)
            } else {
                o == th
            };
            if ok {
                return Ok(());
            }
            if t.starts_with("Complex") {
                return Err(Some(Why::Complex));
            }
            if t.starts_with("Date/Time")
                && th.starts_with("1900-01-00")
                && o.get(..4).is_some_and(|y| y < "1900")
            {
                return Err(Some(Why::Pre1900));
            }
            // mdbtools prints a Jet3 GUID as the hex of its text, and that
            // text lacks the fourth dash
            let bare = |s: &str| s.replace('-', "").to_ascii_uppercase();
            if t.starts_with("Replication")
                && hex::decode(th).is_ok_and(|b| bare(&String::from_utf8_lossy(&b)) == bare(o))
            {
                return Err(Some(Why::Jet3Guid));
            }
            let astral: String = o
                .chars()
                .map(|c| {
                    if c as u32 > 0xffff {
                        "??".to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            if astral != *o && astral == *th {
                return Err(Some(Why::Astral));
            }
            let control: String = o
                .chars()
                .map(|c| {
                    if c.is_control() && c != '\n' && c != '\r' && c != '\t' {
                        '?'
                    } else {
                        c
                    }
                })
                .collect();
            if control != *o && control == *th {
                return Err(Some(Why::Control));
            }
            Err(None)
        }
        (None, Some(_)) => Err(None),
        (Some(_), None) => Err(None),
    }
}

#[test]
#[cfg_attr(
    not(repaero_corpus),
    ignore = "no corpus of real files: set REPAERO_CORPUS (README, \"The corpus\")"
)]
fn every_corpus_table_reads_as_mdbtools_reads_it_or_the_difference_is_explained() {
    let dir = corpus().join("access");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "mdb" || e == "accdb"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 61);
    let mut explained: BTreeMap<(Why, String), u64> = BTreeMap::new();
    let mut unexplained: Vec<String> = Vec::new();
    let (mut tables, mut rows, mut values) = (0u64, 0u64, 0u64);
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let access =
            AccessSource::open(path, None).unwrap_or_else(|e| panic!("{file} does not open: {e}"));
        let src = AccessSource::open(path, None).unwrap();
        let our_tables: Vec<String> = access
            .tables()
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        // mdbtools lists the compact/repair leftover MSysCompactError as a
        // user table; neither lists linked tables
        let mut theirs: Vec<String> = mdb_tables(path)
            .into_iter()
            .filter(|t| t != "MSysCompactError")
            .collect();
        let mut sorted = our_tables.clone();
        sorted.sort();
        theirs.sort();
        assert_eq!(sorted, theirs, "{file}: tables");
        for table in &our_tables {
            tables += 1;
            let cols = access.columns(table).unwrap();
            let (names, ours) = ours(&src, table);
            let (header, mdb) = mdb_export(path, table);
            assert_eq!(names, header, "{file} › {table}: columns");
            assert_eq!(ours.len(), mdb.len(), "{file} › {table}: rows");
            rows += ours.len() as u64;
            for (r, (o, m)) in ours.iter().zip(&mdb).enumerate() {
                for (j, col) in cols.iter().enumerate() {
                    values += 1;
                    match compare(col, &o[j], &m.get(j).cloned().flatten()) {
                        Ok(()) => {}
                        Err(Some(why)) => {
                            *explained
                                .entry((why, format!("{file} › {table}")))
                                .or_default() += 1
                        }
                        Err(None) => unexplained.push(format!(
                            "{file} › {table} row {} column {} ({}): ours {:?}, mdb-export {:?}",
                            r + 1,
                            col.name,
                            col.access_type,
                            o[j],
                            m.get(j)
                        )),
                    }
                }
            }
        }
    }
    let mut by_why: BTreeMap<Why, (u64, Vec<String>)> = BTreeMap::new();
    for ((why, place), n) in &explained {
        let e = by_why.entry(*why).or_default();
        e.0 += n;
        e.1.push(place.clone());
    }
    for (why, (n, places)) in &by_why {
        eprintln!("explained {why:?}: {n} values in {}", places.join(", "));
    }
    eprintln!(
        "{} files, {tables} tables, {rows} rows, {values} values compared",
        files.len()
    );
    assert!(
        unexplained.is_empty(),
        "{} unexplained differences:\n{}",
        unexplained.len(),
        unexplained
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // the README's list of mdbtools faults, each seen where it says
    let seen = |why: Why, place: &str| {
        by_why
            .get(&why)
            .is_some_and(|(_, p)| p.iter().any(|x| x.starts_with(place)))
    };
    assert!(seen(Why::Astral, "testEmoticonsV2010.accdb"));
    assert!(seen(Why::Pre1900, "oldDatesV2007.accdb"));
    assert!(seen(Why::ExtendedDate, "extDateTestV2019.accdb"));
    assert!(seen(Why::Calculated, "calcFieldTestV2010.accdb"));
    assert!(seen(Why::Control, "testIndexCodesV1997.mdb"));
    assert!(seen(Why::Unsupported, "unsupportedFieldsTestV2007.accdb"));
    assert!(seen(Why::Jet3Guid, "testIndexCodesV1997.mdb"));
    assert!(seen(Why::Complex, "complexDataTestV2007.accdb"));
    // the corpus INDEX counts 140 with mdbtools, which lists the six
    // MSysCompactError leftovers of compact/repair as user tables
    assert_eq!(tables, 134);
}
