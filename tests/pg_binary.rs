//! The PostgreSQL source reads a table through the binary COPY when every
//! column has a binary reading, and hands the values no text rule touches
//! over typed (issue 13). Every value must land as it did through the text
//! COPY: the same table read both ways (a `jsonb` column, which has no
//! binary reading, sends the read through the text COPY) gives the same
//! typed rows, the same rejects, the same counts and watermark.

mod common;

use common::pg::TempDb;
use polars::prelude::*;
use repaero::config::mapping::Mapping;
use repaero::source::postgres::PgSource;
use repaero::source::{Source, UpdateKey};
use repaero::transform::Mapper;

const TABLE: &str = r#"
CREATE TABLE t (id bigint PRIMARY KEY, n int4, s int2, q numeric(10,2), p numeric(12,4),
  big numeric, at timestamptz, ts timestamp, label text, flag boolean, day date, j jsonb);
INSERT INTO t VALUES
 (1, 7, 1, 12.55, 14.8, 123456789012345678.123456789, '2026-07-03 10:01:00.123456+00',
  '2026-07-03 10:01:00.5', '  Filtre à huile ', true, '2026-07-03', '{}'),
 (2, NULL, -3, -0.05, 0.0031, 'NaN', 'infinity', '-infinity', E'tab\there\nnew \\ back', false,
  'infinity', '1'),
 (3, -2147483648, 32767, 99999999.99, -99999999.9999, 0.000000001,
  '0044-03-15 12:00:00+00 BC', '10000-01-01 00:00:00', NULL, NULL, '0044-03-15 BC', NULL),
 (4, 0, 0, 0, 0, -0, '1969-12-31 23:59:59.9995+00', '1900-01-01', '', NULL, NULL, NULL),
 (5, 1, 1, NULL, NULL, NULL, NULL, NULL, 'x', NULL, NULL, NULL),
 (6, 40, 2, 1.5, 1.23456789, 99999.99999, '2026-11-29 10:00:00.999999+00', '2026-01-01', 'y',
  true, '2026-01-01', NULL);
"#;

const MAPPING: &str = r#"
[source]
table = "t"
[target]
table = "t2"
[[columns]]
name = "id"
type = "integer"
required = true
[[columns]]
name = "n"
type = "integer"
min = -5
required = true
[[columns]]
name = "s"
type = "integer"
max = 100
[[columns]]
name = "q"
type = "decimal"
precision = 10
scale = 1
[[columns]]
name = "p"
type = "decimal"
precision = 7
scale = 4
[[columns]]
name = "big"
type = "decimal"
precision = 20
scale = 3
[[columns]]
name = "at"
type = "datetime"
[[columns]]
name = "ts"
type = "datetime"
min = "1950-01-01"
[[columns]]
name = "label"
[[columns]]
name = "flag"
type = "boolean"
[[columns]]
name = "day"
type = "date"
# the same values read as text (the server's text, built from the binary)
[[columns]]
name = "q_text"
from = "q"
[[columns]]
name = "big_text"
from = "big"
[[columns]]
name = "at_text"
from = "at"
[[columns]]
name = "ts_text"
from = "ts"
[[columns]]
name = "n_text"
from = "n"
[[columns]]
name = "day_text"
from = "day"
"#;

struct Read {
    kept: DataFrame,
    rejects: Vec<(u64, String, String)>,
    rounded: Vec<(String, u64)>,
    max_key: Option<String>,
    null_keys: u64,
    rows: u64,
}

fn read(db: &TempDb, text_copy: bool) -> Read {
    let mut text = MAPPING.to_string();
    if text_copy {
        text.push_str("[[columns]]\nname = \"j\"\n");
    }
    let mut m: Mapping = toml::from_str(&text).unwrap();
    m.file = "t.toml".into();
    let mut mapper = Mapper::new(&m).unwrap();
    let mut req = repaero::pipeline::table_request(&m, 4).unwrap();
    for c in req.columns.iter_mut().flatten() {
        c.carry = mapper.carries(&c.name);
    }
    req.update_key = Some(UpdateKey {
        column: "at".into(),
        after: None,
    });
    let source = PgSource::open(&db.url()).unwrap();
    let mut reader = source.read(req).unwrap();
    let mut kept: Option<DataFrame> = None;
    let mut rejects = Vec::new();
    while let Some(raw) = reader.next_batch().unwrap() {
        let mapped = mapper.apply(&raw).unwrap();
        let mut k = mapped.kept;
        if text_copy {
            k = k.drop("j").unwrap();
        }
        match kept.as_mut() {
            Some(all) => {
                all.vstack_mut(&k).unwrap();
            }
            None => kept = Some(k),
        }
        for r in mapped.rejects {
            let record: Vec<_> = r.record.into_iter().filter(|(n, _)| n != "j").collect();
            rejects.push((r.row, r.reason, format!("{} {record:?}", r.detail)));
        }
    }
    let stats = reader.stats().cloned().unwrap();
    Read {
        kept: kept.unwrap(),
        rejects,
        rounded: mapper.rounded.into_iter().collect(),
        max_key: stats.max_update_key,
        null_keys: stats.null_update_key,
        rows: stats.data_rows,
    }
}

#[test]
fn the_binary_read_lands_every_value_as_the_text_read() {
    let db = TempDb::new("pg_binary");
    db.query(TABLE);
    let text = read(&db, true);
    let binary = read(&db, false);
    assert_eq!(text.rows, 6);
    assert_eq!(binary.rows, 6);
    assert!(
        binary.kept.equals_missing(&text.kept),
        "binary:\n{}\ntext:\n{}",
        binary.kept,
        text.kept
    );
    // the same rows, reasons, details and records (the source's text)
    assert_eq!(binary.rejects, text.rejects);
    assert_eq!(binary.rounded, text.rounded);
    assert_eq!(binary.max_key, text.max_key);
    assert_eq!(binary.null_keys, text.null_keys);
    assert!(!text.rejects.is_empty());
}
