//! Every spreadsheet of the Excel corpus (`REPAERO_CORPUS`/excel, 242 real files written by
//! Excel, LibreOffice, Google Sheets, Numbers, Gnumeric…) reads correctly or
//! fails cleanly, through the same code the migrations use.
//!
//! "Correctly" is checked against the independent reference reading in
//! reference.json (openpyxl, pyxlsb, xlrd, odfpy): the sheet list with its
//! hidden states, the number of non-empty cells of every sheet, and every
//! value of its first three non-empty rows. "Cleanly" means an input error
//! (exit code 2) whose message names the file; for an encrypted workbook
//! the message says it is password-protected. Every difference from the
//! reference is either absent or explained below, per file.

mod common;

use std::collections::BTreeMap;

use common::corpus;
use repaero::source::Source;
use repaero::source::excel::{CellKind, ExcelSource, ScannedCell, scan};
use serde_json::Value;

/// Valid files the reader (calamine 0.38) cannot open: they must fail with
/// a clean input error. From the corpus INDEX.
const UNREADABLE: &[(&str, &str)] = &[
    (
        "sheetjs__BlankSheetTypes.xlsb",
        "XLM macro sheet: calamine refuses the workbook",
    ),
    (
        "sheetjs__BlankSheetTypes.xlsm",
        "XLM macro sheet: calamine refuses the workbook",
    ),
    (
        "sheetjs__artifacts_quattro_write_57.xls",
        "Quattro Pro codepage 0x8001 unknown to calamine",
    ),
    (
        "sheetjs__crlf_CRLFX5_2_biff2.xls",
        "bare BIFF2 stream, no OLE container",
    ),
    (
        "sheetjs__crlf_CRLFX5_3_biff3.xls",
        "bare BIFF3 stream, no OLE container",
    ),
    (
        "sheetjs__crlf_CRLFX5_4_biff4.xls",
        "bare BIFF4 stream, no OLE container",
    ),
    (
        "sheetjs__wtf_path.xlsb",
        "parts outside xl/: calamine hard-codes xl/workbook.bin",
    ),
    (
        "xlrd__biff4_no_format_no_window2.xls",
        "bare BIFF4 stream, no OLE container",
    ),
];

/// Differences from the reference that are understood, per file.
const EXPLAINED: &[(&str, &str)] = &[
    (
        "calamine__issue_419.xlsb",
        "the shared strings part is xl/SharedStrings.bin (other case than its relationship): pyxlsb misses it and reads 0, calamine's own test expects \"Hello\", as we read",
    ),
    (
        "sheetjs__ErrorTypes.xlsb",
        "calamine 0.38 drops .xlsb formula cells whose cached result is an error (BrtFmlaError): those error cells read as empty",
    ),
    (
        "sheetjs__formula_stress_test.xlsb",
        "calamine 0.38 drops .xlsb formula cells whose cached result is an error (BrtFmlaError): those error cells read as empty",
    ),
    (
        "sheetjs__LONumbers.xls",
        "negative date serials (LibreOffice): xlrd counts them from 1899-12-31, openpyxl and LibreOffice from 1899-12-30; we read the .xls as the .xlsx of the same workbook reads",
    ),
    (
        "sheetjs__wtf_path.xlsx",
        "C3 has the built-in date format 14; the reference's fallback reader (openpyxl cannot open this file) does not map built-in formats and reads a number",
    ),
];

#[derive(Default)]
struct Outcome {
    opened: usize,
    refused: usize,
    sheets: usize,
    cells: u64,
    /// file → differences found
    diffs: BTreeMap<String, Vec<String>>,
}

fn same_number(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Does our cell say the same as the reference value?
fn agrees(ours: &ScannedCell, reference: &Value) -> bool {
    match reference {
        Value::Number(n) => {
            let r = n.as_f64().unwrap_or(f64::NAN);
            match ours.kind {
                CellKind::Number => ours.text.parse::<f64>().is_ok_and(|v| same_number(v, r)),
                _ => false,
            }
        }
        Value::String(s) => match ours.kind {
            // calamine decodes OOXML's `_x000D_` escape (the spec's reading;
            // openpyxl leaves it) and trims the whitespace of a `<t>` that
            // lacks xml:space="preserve" (Excel's reading); the migrations
            // trim anyway.
            CellKind::Text | CellKind::Blank => {
                let decoded = s.replace("_x000D_", "\r");
                ours.text == *s || ours.text == decoded || ours.text == decoded.trim()
            }
            _ => false,
        },
        Value::Bool(b) => ours.kind == CellKind::Bool && ours.text == b.to_string(),
        Value::Object(o) => {
            if let Some(e) = o.get("error").and_then(|v| v.as_str()) {
                return ours.kind == CellKind::Error && ours.text == e;
            }
            for k in ["datetime", "date"] {
                if let Some(iso) = o.get(k).and_then(|v| v.as_str()) {
                    if ours.kind != CellKind::Date {
                        return false;
                    }
                    if let Some(secs) = duration_secs(&ours.text) {
                        // an [h]:mm:ss cell: calamine reads a duration where
                        // the reference reads a date; same serial number
                        return [(1899, 12, 31), (1904, 1, 1)].iter().any(|(y, m, d)| {
                            let epoch = chrono::NaiveDate::from_ymd_opt(*y, *m, *d)
                                .unwrap()
                                .and_hms_opt(0, 0, 0)
                                .unwrap();
                            chrono::NaiveDateTime::parse_from_str(iso, "%Y-%m-%dT%H:%M:%S")
                                .is_ok_and(|t| (t - epoch).num_seconds() == secs)
                        });
                    }
                    // ours: 2024-01-02 or 2024-01-02T03:04:05[.fff]
                    let iso = iso
                        .trim_end_matches("T00:00:00")
                        .trim_end_matches(" 00:00:00");
                    return ours.text.replace(' ', "T") == iso.replace(' ', "T")
                        || ours.text.starts_with(iso)
                        || iso.starts_with(&ours.text);
                }
            }
            if let Some(t) = o.get("time").and_then(|v| v.as_str()) {
                return ours.kind == CellKind::Date
                    && ours.text.ends_with(t.trim_end_matches(".000000"));
            }
            if let Some(d) = o.get("duration_s").and_then(|v| v.as_f64()) {
                return duration_secs(&ours.text) == Some(d.round() as i64);
            }
            false
        }
        Value::Null => false,
        Value::Array(_) => false,
    }
}

/// `255:10:10` → seconds.
fn duration_secs(text: &str) -> Option<i64> {
    let parts: Vec<i64> = text
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    (parts.len() == 3).then(|| parts[0] * 3600 + parts[1] * 60 + parts[2])
}

fn check_file(name: &str, entry: &Value, out: &mut Outcome) {
    let path = corpus().join("excel").join(name);
    let expect = entry["expect"].as_str().unwrap_or("open");
    let mut diffs = Vec::new();
    let opened = ExcelSource::open(&path);
    if expect != "open" {
        match opened {
            Ok(src) => {
                // opening may succeed lazily; reading must then refuse
                let mut failed = None;
                for t in src.tables().unwrap() {
                    if let Err(e) = scan(&path, &t.name, &mut |_| {}) {
                        failed = Some(e);
                        break;
                    }
                }
                match failed {
                    Some(e) => check_refusal(name, expect, &e, &mut diffs),
                    None => diffs.push(format!("must be refused ({expect}) but was read")),
                }
            }
            Err(e) => check_refusal(name, expect, &e, &mut diffs),
        }
        out.refused += 1;
        if !diffs.is_empty() {
            out.diffs.insert(name.to_string(), diffs);
        }
        return;
    }
    if let Some((_, why)) = UNREADABLE.iter().find(|(f, _)| *f == name) {
        match opened {
            Ok(_) => diffs.push(format!(
                "listed as unreadable ({why}) but now opens: move it out of UNREADABLE"
            )),
            Err(e) => {
                let msg = e.to_string();
                if e.exit_code() != 2 || !msg.contains(name) {
                    diffs.push(format!("unclean refusal (exit {}): {msg}", e.exit_code()));
                }
            }
        }
        out.refused += 1;
        if !diffs.is_empty() {
            out.diffs.insert(name.to_string(), diffs);
        }
        return;
    }
    let src = match opened {
        Ok(s) => s,
        Err(e) => {
            out.diffs
                .insert(name.to_string(), vec![format!("does not open: {e}")]);
            return;
        }
    };
    out.opened += 1;
    let ours: Vec<(String, bool)> = src
        .tables()
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.hidden))
        .collect();
    for s in entry["sheets_listed_in_file"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let sname = s["name"].as_str().unwrap_or("");
        let hidden = s["state"].as_str().unwrap_or("visible") != "visible";
        match ours.iter().find(|(n, _)| n == sname) {
            None if s["type"] == "worksheet" => diffs.push(format!("sheet {sname:?} not listed")),
            Some((_, h)) if *h != hidden => diffs.push(format!(
                "sheet {sname:?}: hidden {h}, reference says {hidden}"
            )),
            _ => {}
        }
    }
    let listed_kind = |sname: &str| -> String {
        entry["sheets_listed_in_file"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == sname)
            .and_then(|s| s["type"].as_str())
            .unwrap_or("worksheet")
            .to_string()
    };
    for sheet in entry["sheets"].as_array().into_iter().flatten() {
        let sname = sheet["name"].as_str().unwrap_or("");
        if sheet["kind"].as_str().unwrap_or("worksheet") != "worksheet"
            || listed_kind(sname) != "worksheet"
        {
            // chart, dialog and macro sheets: reading one is a clean refusal
            if let Err(e) = scan(&path, sname, &mut |_| {})
                && (e.exit_code() != 2 || !e.to_string().contains("holds no cells"))
            {
                diffs.push(format!(
                    "sheet {sname:?} ({}): unclean refusal: {e}",
                    listed_kind(sname)
                ));
            }
            continue;
        }
        let mut cells: Vec<ScannedCell> = Vec::new();
        let (mut all, mut nonempty) = (0u64, 0u64);
        let r = scan(&path, sname, &mut |c| {
            all += 1;
            if !c.text.is_empty() {
                nonempty += 1;
            }
            // keep only what the first-rows comparison needs
            if cells.len() < 200 {
                cells.push(c);
            }
        });
        out.sheets += 1;
        out.cells += nonempty;
        if let Err(e) = r {
            diffs.push(format!("sheet {sname:?} does not read: {e}"));
            continue;
        }
        // calamine returns some cells as "": whitespace it trimmed (the
        // reference counts those) and formulas whose result is an empty
        // string (the reference does not). The reference's count must lie
        // between our non-empty cells and all the cells we were given.
        let want = sheet["nonempty_count"].as_u64().unwrap_or(0);
        if !(nonempty..=all).contains(&want) {
            diffs.push(format!(
                "sheet {sname:?}: {nonempty} non-empty of {all} cells, reference {want} non-empty"
            ));
        }
        for fr in sheet["first_rows"].as_array().into_iter().flatten() {
            let row = fr["row"].as_u64().unwrap_or(0) as u32 - 1;
            let first_col = col_index(fr["first_col"].as_str().unwrap_or("A"));
            for (j, v) in fr["values"].as_array().into_iter().flatten().enumerate() {
                if v.is_null() {
                    continue;
                }
                if let Some(s) = v.as_str()
                    && (s.contains("…[cut]") || s.len() >= 200)
                {
                    continue;
                }
                let col = first_col + j as u32;
                let cell = cells.iter().find(|c| c.row == row && c.col == col);
                match cell {
                    Some(c) if agrees(c, v) => {}
                    Some(c) => diffs.push(format!(
                        "sheet {sname:?} {}{}: ours {:?} ({:?}), reference {v}",
                        repaero::source::column_letter(col),
                        row + 1,
                        c.text,
                        c.kind
                    )),
                    None => diffs.push(format!(
                        "sheet {sname:?} {}{}: ours empty, reference {v}",
                        repaero::source::column_letter(col),
                        row + 1
                    )),
                }
            }
        }
    }
    if !diffs.is_empty() {
        out.diffs.insert(name.to_string(), diffs);
    }
}

fn check_refusal(name: &str, expect: &str, e: &repaero::Error, diffs: &mut Vec<String>) {
    let msg = e.to_string();
    if e.exit_code() != 2 {
        diffs.push(format!(
            "refused with exit {} instead of 2: {msg}",
            e.exit_code()
        ));
    }
    if !msg.contains(name) {
        diffs.push(format!("refusal does not name the file: {msg}"));
    }
    if expect.contains("password") && !msg.contains("password-protected") {
        diffs.push(format!(
            "encrypted, but the message does not say password-protected: {msg}"
        ));
    }
}

fn col_index(letters: &str) -> u32 {
    letters
        .bytes()
        .fold(0u32, |acc, b| acc * 26 + (b - b'A' + 1) as u32)
        - 1
}

#[test]
#[cfg_attr(
    not(repaero_corpus),
    ignore = "no corpus of real files: set REPAERO_CORPUS (README, \"The corpus\")"
)]
fn every_corpus_spreadsheet_reads_correctly_or_fails_cleanly() {
    let text =
        std::fs::read_to_string(corpus().join("excel/reference.json")).expect("corpus reference");
    let reference: Value = serde_json::from_str(&text).unwrap();
    let files = reference["files"].as_object().unwrap();
    let mut out = Outcome::default();
    for (name, entry) in files {
        check_file(name, entry, &mut out);
    }
    let mut unexplained = Vec::new();
    for (file, diffs) in &out.diffs {
        match EXPLAINED.iter().find(|(f, _)| f == file) {
            Some((_, why)) => eprintln!("explained: {file}: {why}: {}", diffs.join("; ")),
            None => unexplained.push(format!("{file}:\n    {}", diffs.join("\n    "))),
        }
    }
    for (file, why) in EXPLAINED {
        assert!(
            out.diffs.contains_key(*file),
            "{file} is explained ({why}) but now agrees: remove it from EXPLAINED"
        );
    }
    eprintln!(
        "{} files: {} opened ({} sheets, {} non-empty cells), {} refused cleanly, {} explained differences",
        files.len(),
        out.opened,
        out.sheets,
        out.cells,
        out.refused,
        out.diffs.len() - unexplained.len()
    );
    assert_eq!(files.len(), 242);
    assert!(
        unexplained.is_empty(),
        "{} files differ from the reference:\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
}
