//! Fuzz targets, run as tests on stable Rust (docs/decisions.md, "Fuzzing
//! on stable"): each target replays its seed corpus (`fuzz/corpus/<target>/`,
//! small real inputs) and then mutates it for a bounded time, checking that
//! the code under test never panics and keeps its invariants.
//!
//! - `access_value`: one Access value through the decoder every Access read
//!   uses (`source::access::value_text`);
//! - `excel_cell`: one calamine cell through the conversion every Excel
//!   read uses (`source::excel::cell_text`), its text then through the
//!   mapper's parsers (`transform::parse`);
//! - `csv_lines`: a whole file through the CSV line reader and classifier
//!   (`source::csv::LineReader`, `split_record`);
//! - `queue_message`: one booking-queue message body through the parser the
//!   queue feed reads every message with (`daemon::queue::message::parse`).
//!
//! `REPAERO_FUZZ_SECS` (default 2) is the mutation time per target;
//! `REPAERO_FUZZ_SEED` replays a run (each run prints its seed). An input
//! that fails is written under the cargo target's tmp directory
//! (`fuzz-failures/`) and shown in hex: add it to the corpus once fixed.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, Instant};

use calamine::{CellErrorType, Data, ExcelDateTime, ExcelDateTimeType};
use jetdb::Value;
use repaero::batch::parse;
use repaero::config::mapping::NumberFormat;
use repaero::source::BadValue;
use repaero::source::access::value_text;
use repaero::source::csv::{
    Encoding, LineContent, LineReader, MAX_LINE, decode, detect_delimiter, shown, split_record,
};
use repaero::source::excel::{CellKind, cell_text};

/// The cap the targets run with: small, so that it is met.
const CAP: usize = 64;

/// Longest input a mutation makes (above the CSV line limit).
const MAX_INPUT: usize = 160 * 1024;

// ---------------------------------------------------------------- driver

/// xorshift64*: a reproducible stream from one seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn budget() -> Duration {
    let secs = std::env::var("REPAERO_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

/// The run's seed: `REPAERO_FUZZ_SEED`, else the clock (printed).
fn base_seed() -> u64 {
    match std::env::var("REPAERO_FUZZ_SEED") {
        Ok(s) => s.parse().expect("REPAERO_FUZZ_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    }
}

/// One stream per target from one seed (never 0: xorshift stays at 0).
fn target_seed(base: u64, target: &str) -> u64 {
    (base
        ^ target
            .bytes()
            .fold(0u64, |h, b| h.rotate_left(5) ^ b as u64))
        | 1
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "{target}: the corpus is too small");
    out
}

/// Values that break conversions: special floats and tokens.
const FLOATS: [f64; 12] = [
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::MAX,
    f64::MIN,
    f64::MIN_POSITIVE,
    60.0,
    2_958_466.0,
    -657_435.0,
    9.007_199_254_740_993e15,
    -0.0,
    1.0e15,
];
const TOKENS: [&[u8]; 16] = [
    b"inf",
    b"-inf",
    b"NaN",
    b"1e308",
    b"60",
    b"\xef\xbb\xbf",
    b"\"",
    b"\"\"",
    b"\r\n",
    b"\n",
    b";",
    b"\t",
    b"\x00",
    b"\x80\x9c",
    b"\xc3",
    b"-99:99",
];

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] = [0, 0xff, 0x7f, 0x80, b'"', b';', b'\n', b'-', b'9', b' '][rng.below(10)];
            }
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            3 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            4 if !v.is_empty() => {
                // repeat a chunk: long lines, long cells
                let start = at.min(v.len() - 1);
                let end = (start + 1 + rng.below(64)).min(v.len());
                let room = MAX_INPUT.saturating_sub(v.len()) / (end - start);
                let times = (1 + rng.below(2000)).min(room);
                let repeated = v[start..end].repeat(times);
                v.splice(end..end, repeated);
            }
            5 => {
                let (_, other) = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len());
                let end = (from + rng.below(64)).min(other.len());
                v.splice(at..at, other[from..end].iter().copied());
            }
            6 if v.len() >= 8 => {
                let i = at.min(v.len() - 8);
                let f = FLOATS[rng.below(FLOATS.len())];
                v[i..i + 8].copy_from_slice(&f.to_le_bytes());
            }
            _ => {
                // a special float written as text at the end
                let f = FLOATS[rng.below(FLOATS.len())];
                v.extend_from_slice(format!(" {f:?}").as_bytes());
            }
        }
    }
    v.truncate(MAX_INPUT);
    v
}

thread_local!(static QUIET: Cell<bool> = const { Cell::new(false) });
static HOOK: Once = Once::new();

/// Run `check` on one input; a panic fails the target with the input.
fn run_one(target: &str, input: &[u8], check: &dyn Fn(&[u8])) {
    QUIET.with(|q| q.set(true));
    let outcome = catch_unwind(AssertUnwindSafe(|| check(input)));
    QUIET.with(|q| q.set(false));
    if let Err(p) = outcome {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
        });
        let path = dir.join(format!("{target}-{hash:016x}"));
        let _ = std::fs::write(&path, input);
        let hex: String = input.iter().take(512).map(|b| format!("{b:02x}")).collect();
        panic!(
            "{target}: input failed: {msg}\n  saved to {}\n  hex (first 512 bytes): {hex}\n  as text: {:?}",
            path.display(),
            String::from_utf8_lossy(&input[..input.len().min(512)])
        );
    }
}

/// Replay the corpus, then mutate it until the time budget is spent.
fn fuzz(target: &str, check: &dyn Fn(&[u8])) {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info)
            }
        }));
    });
    let corpus = corpus(target);
    for (_, input) in &corpus {
        run_one(target, input, check);
    }
    let base = base_seed();
    let mut rng = Rng(target_seed(base, target));
    let (start, budget) = (Instant::now(), budget());
    let mut cases = 0u64;
    while start.elapsed() < budget {
        let (_, base_input) = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, base_input, &corpus);
        run_one(target, &input, check);
        cases += 1;
    }
    eprintln!(
        "{target}: {} seeds and {cases} mutations in {:.1} s (REPAERO_FUZZ_SEED={base})",
        corpus.len(),
        start.elapsed().as_secs_f64(),
    );
}

/// `<kind> <payload>` (as the corpus files are written), or the kind
/// chosen by the first byte when the word is none the target knows.
fn split_kind<'a>(input: &'a [u8], kinds: &[&str]) -> (usize, &'a [u8]) {
    if let Some(sp) = input.iter().position(|b| *b == b' ')
        && let Some(k) = kinds.iter().position(|k| k.as_bytes() == &input[..sp])
    {
        return (k, &input[sp + 1..]);
    }
    match input.split_first() {
        Some((b, rest)) => (*b as usize % kinds.len(), rest),
        None => (0, input),
    }
}

/// A float from its text (`NaN`, `-inf`, `1e308`), else from raw bytes.
fn float(payload: &[u8]) -> f64 {
    if let Some(v) = std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
    {
        return v;
    }
    let mut b = [0u8; 8];
    for (d, s) in b.iter_mut().zip(payload) {
        *d = *s;
    }
    f64::from_le_bytes(b)
}

fn int(payload: &[u8]) -> i64 {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| float(payload) as i64)
}

fn text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

// --------------------------------------------------------------- targets

const ACCESS_KINDS: [&str; 16] = [
    "null",
    "bool",
    "byte",
    "int",
    "long",
    "bigint",
    "float",
    "double",
    "text",
    "binary",
    "money",
    "numeric",
    "timestamp",
    "guid",
    "datetimeext",
    "raw",
];

fn access_value(input: &[u8]) {
    let (kind, p) = split_kind(input, &ACCESS_KINDS);
    let v = match ACCESS_KINDS[kind] {
        "null" => Value::Null,
        "bool" => Value::Bool(p.first().is_some_and(|b| b & 1 == 1)),
        "byte" => Value::Byte(int(p) as u8),
        "int" => Value::Int(int(p) as i16),
        "long" => Value::Long(int(p) as i32),
        "bigint" => Value::BigInt(int(p)),
        "float" => Value::Float(float(p) as f32),
        "double" => Value::Double(float(p)),
        "text" => Value::Text(text(p)),
        "binary" => Value::Binary(p.to_vec()),
        "money" => Value::Money(text(p)),
        "numeric" => Value::Numeric(text(p)),
        "guid" => Value::Guid(text(p)),
        "datetimeext" => Value::DateTimeExtended(text(p)),
        _ => Value::Timestamp(float(p)),
    };
    match (value_text(&v, CAP), &v) {
        (Ok(None), Value::Null) => {}
        (Ok(None), _) => panic!("{v:?} read as NULL"),
        (Ok(Some((t, typed))), _) => {
            assert!(t.len() <= 2 * CAP + 64, "{v:?}: {} bytes", t.len());
            match &v {
                Value::Text(s) => assert!(t == *s && !typed, "{v:?}: {t:?}"),
                Value::Double(x) => assert_eq!(t.parse::<f64>().ok(), Some(*x), "{v:?}: {t}"),
                Value::Float(x) => assert_eq!(t.parse::<f32>().ok(), Some(*x), "{v:?}: {t}"),
                Value::Timestamp(x) => {
                    // what the mapper reads back: a date of Access's years
                    use chrono::Datelike;
                    let d = parse::parse_datetime(&t, &[])
                        .unwrap_or_else(|| panic!("{x:?} gave {t:?}, not a date-time"));
                    assert!((100..=9999).contains(&d.year()), "{x:?}: {t}");
                }
                _ => assert!(typed, "{v:?}"),
            }
        }
        (Err(BadValue::TooLarge { bytes, max }), _) => assert!(bytes > max && max == CAP),
        (Err(BadValue::NotFinite(x)), Value::Double(_) | Value::Float(_)) => {
            assert!(!x.is_finite())
        }
        (Err(BadValue::Date(why)), Value::Timestamp(x)) => {
            assert!(
                !x.is_finite()
                    || !(-657_434.0..2_958_466.0).contains(x)
                    || why.contains("rounds past 9999-12-31"),
                "{x:?} refused: {why}"
            );
        }
        (Err(e), _) => panic!("{v:?}: unexpected refusal {e:?}"),
    }
}

const EXCEL_KINDS: [&str; 10] = [
    "string", "float", "int", "bool", "date", "date1904", "duration", "iso", "error", "empty",
];

fn excel_cell(input: &[u8]) {
    let (kind, p) = split_kind(input, &EXCEL_KINDS);
    let serial = float(p);
    let d = match EXCEL_KINDS[kind] {
        "float" => Data::Float(serial),
        "int" => Data::Int(int(p)),
        "bool" => Data::Bool(p.first().is_some_and(|b| b & 1 == 1)),
        "date" => Data::DateTime(ExcelDateTime::new(
            serial,
            ExcelDateTimeType::DateTime,
            false,
        )),
        "date1904" => Data::DateTime(ExcelDateTime::new(
            serial,
            ExcelDateTimeType::DateTime,
            true,
        )),
        "duration" => Data::DateTime(ExcelDateTime::new(
            serial,
            ExcelDateTimeType::TimeDelta,
            false,
        )),
        "iso" => Data::DateTimeIso(text(p)),
        "error" => Data::Error(CellErrorType::NA),
        "empty" => Data::Empty,
        _ => Data::String(text(p)),
    };
    let got = cell_text(&d, CAP);
    match (&got, &d) {
        (Ok(None), Data::Empty) => {}
        (Ok(Some((kind, t))), _) => {
            assert!(t.len() <= CAP.max(64), "{d:?}: {} bytes", t.len());
            match (&d, kind) {
                (Data::String(s), CellKind::Text) => {
                    assert!(s == t || s.contains('\0'), "{s:?} became {t:?}")
                }
                (Data::String(_), CellKind::Blank) => assert!(t.is_empty()),
                (Data::Float(x), CellKind::Number) => {
                    assert_eq!(t.parse::<f64>().ok(), Some(*x), "{d:?}: {t}")
                }
                (Data::Int(i), CellKind::Number) => assert_eq!(t.parse::<i64>().ok(), Some(*i)),
                (Data::Bool(_), CellKind::Bool) | (Data::Error(_), CellKind::Error) => {}
                (Data::DateTimeIso(s), CellKind::Date) => assert_eq!(s, t),
                (Data::DateTime(dt), CellKind::Date) if dt.is_duration() => {
                    assert!(serial.is_finite(), "{serial:?}: {t}")
                }
                (Data::DateTime(dt), CellKind::Date) => {
                    // the text is the date the serial stands for, and the
                    // mapper reads it back as that date
                    let is_1904 = EXCEL_KINDS[kind_index(input)] == "date1904";
                    let want = parse::excel_datetime(dt.as_f64(), is_1904)
                        .unwrap_or_else(|e| panic!("{serial:?} written as {t:?}: {e:?}"));
                    let back = parse::parse_datetime(t, &[])
                        .unwrap_or_else(|| panic!("{serial:?}: {t:?} does not read back"));
                    assert_eq!(
                        back.and_utc().timestamp_millis(),
                        want.and_utc().timestamp_millis(),
                        "{serial:?}: {t}"
                    );
                }
                _ => panic!("{d:?} read as {kind:?} {t:?}"),
            }
        }
        (Err(BadValue::TooLarge { bytes, max }), Data::String(_) | Data::DateTimeIso(_)) => {
            assert!(bytes > max)
        }
        (Err(BadValue::NotFinite(x)), Data::Float(_)) => assert!(!x.is_finite()),
        (Err(BadValue::Date(why)), Data::DateTime(_)) => {
            let is_1904 = EXCEL_KINDS[kind_index(input)] == "date1904";
            let duration = EXCEL_KINDS[kind_index(input)] == "duration";
            assert!(
                duration || parse::excel_datetime(serial, is_1904).is_err(),
                "{serial:?} refused: {why}"
            );
        }
        _ => panic!("{d:?}: {got:?}"),
    }
    // the text, as a person may have typed it, through every parser the
    // mapper applies
    let s = text(p);
    parse_everything(&s);
    if let Ok(Some((_, t))) = &got {
        parse_everything(t);
    }
}

fn kind_index(input: &[u8]) -> usize {
    split_kind(input, &EXCEL_KINDS).0
}

fn parse_everything(s: &str) {
    for fmt in [NumberFormat::Auto, NumberFormat::Fr, NumberFormat::En] {
        if let Ok(v) = parse::parse_number(s, fmt) {
            assert!(v.is_finite(), "{s:?} read as {v}");
        }
        let _ = parse::parse_integer(s, fmt);
    }
    let _ = parse::parse_date(s, &[]);
    let _ = parse::parse_date(s, &["%d.%m.%Y %H:%M".into()]);
    let _ = parse::parse_datetime(s, &[]);
    if let Some(ns) = parse::parse_time_of_day(s) {
        assert!((0..86_400_000_000_000).contains(&ns), "{s:?}: {ns}");
    }
    let _ = parse::parse_bool(s);
    let _ = parse::not_a_date_note(s);
    let _ = parse::looks_numeric(s);
}

fn csv_lines(input: &[u8]) {
    // the line reader covers the input, byte for byte, line by line
    for max in [CAP, MAX_LINE] {
        let mut r = LineReader::new(input, max);
        let mut buf = Vec::new();
        let (mut seen, mut number) = (0usize, 0u64);
        while let Some(line) = r.next_line(&mut buf).unwrap() {
            number += 1;
            assert_eq!(line.number, number);
            seen += line.length + usize::from(line.terminated);
            if line.too_long {
                assert!(buf.is_empty() && line.length > max);
            } else {
                assert!(buf.len() <= line.length && buf.len() <= max);
            }
            assert!(shown(&buf).chars().count() <= 201);
            for enc in [Encoding::Utf8, Encoding::Windows1252, Encoding::Latin1] {
                match r.content(&line, &buf, enc) {
                    LineContent::Text(t) => {
                        let d = detect_delimiter(&t);
                        assert!([';', ',', '\t'].contains(&d));
                        let fields = split_record(&t, d);
                        assert!(!fields.is_empty());
                        if !t.contains('"') {
                            assert_eq!(fields.join(&d.to_string()), *t);
                        }
                    }
                    LineContent::Blank => assert!(!line.too_long && line.terminated),
                    LineContent::Rejected { reason, .. } => assert!(reason.starts_with("line: ")),
                }
                if enc != Encoding::Utf8 {
                    assert!(
                        decode(&buf, enc).is_ok(),
                        "single-byte encodings decode anything"
                    );
                }
            }
        }
        assert_eq!(seen, input.len(), "the lines do not cover the input");
    }
    // as the sources read a file: header, then data lines
    for enc in [Encoding::Utf8, Encoding::Windows1252] {
        let mut r = LineReader::new(input, MAX_LINE);
        let mut buf = Vec::new();
        if let Ok((header, delim)) = r.header(&mut buf, "fuzz.csv", enc, None) {
            assert!(!header.is_empty());
            while let Some(line) = r.next_line(&mut buf).unwrap() {
                if let LineContent::Text(t) = r.content(&line, &buf, enc) {
                    let _ = split_record(&t, delim);
                }
            }
        }
    }
}

fn queue_message(input: &[u8]) {
    use repaero::daemon::queue::message::{self as m, Event};
    let reasons = [
        m::NOT_JSON,
        m::NOT_OBJECT,
        m::TOO_LARGE,
        m::MISSING,
        m::WRONG_TYPE,
        m::UNKNOWN_TYPE,
        m::END_NOT_AFTER_START,
        m::NOT_POSITIVE,
    ];
    match m::parse(input) {
        Err(r) => {
            assert!(reasons.contains(&r.reason), "{r:?}");
            assert!(!r.detail.is_empty(), "{r:?}");
            if input.len() > m::MAX_BODY {
                assert_eq!(r.reason, m::TOO_LARGE);
            }
        }
        Ok(e) => {
            assert!(input.len() <= m::MAX_BODY);
            assert!(!e.message_id.is_empty() && e.message_id.trim() == e.message_id);
            assert_eq!(e.content_hash.len(), 64);
            match &e.event {
                Event::Booking(b) => {
                    assert!(b.end > b.start, "{b:?}");
                    assert!(!b.appointment_id.is_empty());
                }
                Event::Completed(c) => {
                    assert!(c.time_spent_minutes > 0);
                    let mut seen = std::collections::HashSet::new();
                    for (r, q) in &c.parts {
                        assert!(*q > 0, "{r}: {q}");
                        assert!(
                            !r.is_empty() && !r.chars().any(char::is_whitespace),
                            "{r:?}"
                        );
                        assert_eq!(&m::normalise_reference(r), r);
                        assert!(seen.insert(r.clone()), "{r} listed twice");
                    }
                }
            }
            // the same content written otherwise is the same message
            let v: serde_json::Value = serde_json::from_slice(input).unwrap();
            let again = m::parse(&serde_json::to_vec_pretty(&v).unwrap());
            if let Ok(a) = again {
                assert_eq!(a, e, "re-serialised");
            } else if serde_json::to_vec_pretty(&v).unwrap().len() <= m::MAX_BODY {
                panic!("{again:?} after re-serialising");
            }
        }
    }
}

#[test]
fn fuzz_queue_message() {
    fuzz("queue_message", &queue_message);
}

#[test]
fn fuzz_access_value() {
    fuzz("access_value", &access_value);
}

#[test]
fn fuzz_excel_cell() {
    fuzz("excel_cell", &excel_cell);
}

#[test]
fn fuzz_csv_lines() {
    fuzz("csv_lines", &csv_lines);
}
