//! rowdiff's source side in the source's own SQL, as data-diff does on
//! both ends: when a PostgreSQL table maps column by column onto the
//! target (types the server can render the way the migration writes them,
//! no rule that rewrites a value), the source's rows are hashed per
//! segment on its server, and only the segments that differ are read and
//! mapped here.
//!
//! A value the SQL cannot be sure to render as the mapping would (text
//! the cleaning changes beyond spaces, a decimal it rounds, a date-time
//! with microseconds) marks its segment "unsure": that segment is
//! streamed through the real mapping like a differing one. So the SQL
//! only has to be exact on the values it calls sure. Rows the mapping is
//! sure to reject (a NULL where a value is required, an integer reference
//! to a key the target's referenced table lacks) are left out of the
//! hashes and counted as rejected, as the mapping would count them; every
//! other row the mapping could reject is unsure. So the rejected count is
//! the stream's, and a few rejected rows do not make every segment differ
//! (0.7 % of the benchmark's lines, a fifth of its segments).

use crate::config::mapping::{ColumnSpec, ColumnType, Mapping};
use crate::db::{ColumnDef, TableDef};
use crate::source::{DeclaredColumn, header_key};

use super::rowdiff::{canonical_value_sql, null_or};

/// The source's side of rowdiff as SQL over its table (PostgreSQL).
#[derive(Debug, Clone)]
pub struct SourceSql {
    /// The source table, quoted.
    pub table: String,
    /// The source table's name.
    pub table_name: String,
    /// Per target column, in the target's order: the canonical text of
    /// the source value (what [`super::rowdiff::canonical`] gives for the
    /// mapped value, when the row is sure).
    pub texts: Vec<String>,
    /// Per target column: its source column, quoted.
    pub columns: Vec<String>,
    /// Per target column: its source column's name.
    pub names: Vec<String>,
    /// Per target column: the source value typed as the target holds it
    /// (for a hash of typed values, when the target is PostgreSQL too).
    pub typed: Vec<String>,
    /// Conditions under which a row is not sure to map to its SQL text.
    pub unsure: Vec<String>,
    /// Conditions under which the mapping is sure to reject a row.
    pub rejects: Vec<String>,
    /// Integer references: (the column's index, referenced table and
    /// column), whose keys missing from the target make sure rejects.
    pub references: Vec<(usize, String, String)>,
}

/// The plan of a mapping's source side in SQL, or why there is none (the
/// source is then streamed through the mapping, as before).
pub fn plan(
    m: &Mapping,
    def: &TableDef,
    declared: Option<&[DeclaredColumn]>,
) -> Result<SourceSql, String> {
    if m.source.query.is_some() {
        return Err("the mapping reads a query, not a table".into());
    }
    let Some(table) = m.source.table.as_deref() else {
        return Err("the mapping reads no table".into());
    };
    if m.dedupe.is_some() {
        return Err("the mapping merges duplicates (a merge spans segments)".into());
    }
    if !m.checks.is_empty() {
        return Err("the mapping has cross-column checks".into());
    }
    let Some(declared) = declared else {
        return Err(format!("the source does not declare {table}'s columns"));
    };
    let q = |name: &str| crate::source::postgres::quote_name(name);
    let mut out = SourceSql {
        table: q(table),
        table_name: table.to_string(),
        texts: Vec::with_capacity(def.columns.len()),
        columns: Vec::with_capacity(def.columns.len()),
        names: Vec::with_capacity(def.columns.len()),
        typed: Vec::with_capacity(def.columns.len()),
        unsure: Vec::new(),
        rejects: Vec::new(),
        references: Vec::new(),
    };
    for (i, c) in def.columns.iter().enumerate() {
        let spec = m
            .columns
            .iter()
            .find(|s| s.name == c.name)
            .ok_or_else(|| format!("the target column {} has no mapping", c.name))?;
        let col = source_column(spec, declared)?;
        let x = q(&col.name);
        let Rendered {
            text,
            typed,
            unsure,
        } = column_sql(spec, c, &col.source_type, &x)
            .map_err(|why| format!("column {}: {why}", c.name))?;
        if spec.required {
            out.rejects.push(format!("{x} IS NULL"));
        }
        if let Some(r) = &spec.references {
            // (the mapping compares a reference's text: an integer's is
            // the same in SQL; a text's would be the cleaned one)
            if c.ty != ColumnType::Integer {
                return Err(format!(
                    "column {}: a reference on {}",
                    c.name,
                    c.ty.as_str()
                ));
            }
            out.references.push((i, r.table.clone(), r.column.clone()));
        }
        out.unsure.extend(
            unsure
                .into_iter()
                .map(|u| format!("({x} IS NOT NULL AND ({u}))")),
        );
        out.texts.push(null_or(&x, &text));
        out.typed.push(typed);
        out.columns.push(x);
        out.names.push(col.name.clone());
    }
    Ok(out)
}

/// The declared column a spec reads: the one its single header names, as
/// the reader matches headers.
fn source_column<'a>(
    spec: &ColumnSpec,
    declared: &'a [DeclaredColumn],
) -> Result<&'a DeclaredColumn, String> {
    let sources = spec.sources();
    let [from] = sources.as_slice() else {
        return Err(format!("column {} names several source headers", spec.name));
    };
    let wanted = header_key(from);
    let mut found = declared.iter().filter(|d| header_key(&d.name) == wanted);
    match (found.next(), found.next()) {
        (Some(d), None) => Ok(d),
        (None, _) => Err(format!("no source column {from}")),
        (Some(_), Some(_)) => Err(format!("several source columns match {from}")),
    }
}

/// A source column in SQL.
struct Rendered {
    /// Its canonical text (not NULL).
    text: String,
    /// Its value as the target's type holds it.
    typed: String,
    /// Conditions under which the mapping may render it otherwise.
    unsure: Vec<String>,
}

/// Digits before and after the point of a declared numeric type:
/// `numeric(12,4)`, the integers; `None` when unconstrained.
fn numeric_digits(source_type: &str) -> Option<(u8, u8)> {
    match source_type {
        "smallint" => Some((5, 0)),
        "integer" => Some((10, 0)),
        "bigint" => Some((19, 0)),
        t => {
            let inner = t.strip_prefix("numeric(")?.strip_suffix(')')?;
            let (p, s) = inner.split_once(',').unwrap_or((inner, "0"));
            let (p, s) = (p.trim().parse::<u8>().ok()?, s.trim().parse::<u8>().ok()?);
            Some((p.checked_sub(s)?, s))
        }
    }
}

/// A column's canonical text in SQL and the conditions under which its
/// value is not sure to be rendered as the mapping does; an error says
/// why the column cannot be pushed down.
fn column_sql(
    spec: &ColumnSpec,
    c: &ColumnDef,
    source_type: &str,
    x: &str,
) -> Result<Rendered, String> {
    let rewrites = !spec.null_values.is_empty()
        || spec.fill_down
        || spec.case.is_some()
        || !spec.date_formats.is_empty()
        || spec.min.is_some()
        || spec.max.is_some()
        || spec.pattern.is_some()
        || spec.one_of.is_some()
        || spec.flag_only()
        || spec.zero_pad.is_some()
        || spec.phone.is_some()
        || spec.ean13
        || spec.remap.is_some();
    if rewrites {
        return Err("a rule rewrites or checks its values".into());
    }
    let st = source_type.to_ascii_lowercase();
    let integer = matches!(st.as_str(), "smallint" | "integer" | "bigint");
    let numeric = integer || st == "numeric" || st.starts_with("numeric(");
    let timestamp = st.starts_with("timestamp");
    let unsupported = || Err(format!("{source_type} into {}", c.ty.as_str()));
    let range =
        |v: &str| format!("NOT isfinite({v}) OR {v} < '0001-01-01' OR {v} >= '10000-01-01'");
    // (the target's canonical text of the same value, `x` as its expression)
    let pg = crate::db::Dialect::Postgres;
    let plain = |unsure: Vec<String>| Rendered {
        text: canonical_value_sql(pg, c, x),
        typed: x.to_string(),
        unsure,
    };
    Ok(match c.ty {
        ColumnType::Integer if integer => plain(Vec::new()),
        ColumnType::Decimal if numeric => {
            // the mapping reads the number as a float: sure when it needs
            // no rounding and fits the precision and a float's 15 digits;
            // a declared type within both needs no test but NaN's
            let s = c.scale;
            let int_digits = c.precision.saturating_sub(s).min(15u8.saturating_sub(s));
            let n = format!("{x}::numeric");
            let unsure = match numeric_digits(&st) {
                Some((int, frac)) if frac <= s && int <= int_digits && integer => Vec::new(),
                Some((int, frac)) if frac <= s && int <= int_digits => {
                    vec![format!("{n} = 'NaN'")]
                }
                _ => vec![format!(
                    "{n} = 'NaN' OR {n} <> round({n}, {s}) OR abs({n}) >= 1e{int_digits}"
                )],
            };
            Rendered {
                text: canonical_value_sql(pg, c, &n),
                typed: n,
                unsure,
            }
        }
        ColumnType::Text if st == "text" || st.starts_with("character varying") => {
            if !(spec.trim && spec.collapse_spaces) {
                return Err(
                    "text cleaned otherwise than trimmed and collapsed (the default)".into(),
                );
            }
            // spaces at the ends or repeated are trimmed and collapsed
            // here as the cleaning does (2 % of the fixture's lines, enough
            // to touch half the segments); text empty once trimmed (NULL)
            // or holding a character outside printable ASCII, Latin-1's
            // letters and signs and the usual French punctuation is unsure
            // (controls, odd and invisible spaces, combining marks that
            // NFC would compose: transform::clean)
            let text = format!(
                "CASE WHEN strpos({x}, '  ') > 0 THEN regexp_replace(btrim({x}, ' '), '  +', ' ', 'g') ELSE btrim({x}, ' ') END"
            );
            Rendered {
                typed: format!("({text}) COLLATE \"C\""),
                text,
                // (a character outside the class searched for: 0.61–0.72 s
                // for 1M lines against 0.75–0.83 s for the whole text
                // matched against the class repeated)
                unsure: vec![format!("btrim({x}, ' ') = '' OR {x} ~ '[^{SAFE}]'")],
            }
        }
        ColumnType::Datetime if timestamp => {
            // sub-millisecond digits: the value differs from itself
            // rounded to milliseconds by its type's cast, integer
            // arithmetic (0.13 s for 1M lines) where `date_trunc` of a
            // time stamp with zone goes through the session's zone (0.27–
            // 0.35 s); after the range tests, so no rounding can overflow
            let ms = if st.contains("with time zone") || st.starts_with("timestamptz") {
                "timestamptz(3)"
            } else {
                "timestamp(3)"
            };
            plain(vec![format!("{} OR {x} <> {x}::{ms}", range(x))])
        }
        ColumnType::Date if st == "date" => plain(vec![range(x)]),
        ColumnType::Boolean if st == "boolean" => plain(Vec::new()),
        _ => return unsupported(),
    })
}

/// Characters the cleaning keeps as they are, as a regular expression
/// class (PostgreSQL's `\u` escapes): printable ASCII, Latin-1 but its
/// no-break space and soft hyphen, œ Œ Ÿ, dashes, quotes, the ellipsis
/// and the euro sign. None is a control, a space but U+0020 or invisible
/// (transform::clean), and text made of them is NFC already (none has a
/// canonical decomposition that is not itself, none is a combining mark).
/// One regular expression instead of three tests: 0.57 s against 0.89 s
/// for 1M lines, half of them not ASCII (NFC's test alone took 0.43 s).
const SAFE: &str = " -~\\u00a1-\\u00ac\\u00ae-\\u00ff\\u0152\\u0153\\u0178\\u2013\\u2014\\u2018-\\u201d\\u2026\\u20ac";

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(toml_text: &str) -> Mapping {
        let mut m: Mapping = toml::from_str(toml_text).expect("mapping");
        m.file = "t.toml".into();
        m
    }

    fn declared(cols: &[(&str, &str)]) -> Vec<DeclaredColumn> {
        cols.iter()
            .map(|(n, t)| DeclaredColumn {
                name: n.to_string(),
                source_type: t.to_string(),
                nullable: true,
                target_type: ColumnType::Text,
            })
            .collect()
    }

    const LINES: &str = r#"
[source]
table = "lignes"
[target]
table = "lines"
key = ["id"]
[[columns]]
name = "id"
type = "integer"
required = true
[[columns]]
name = "label"
from = "libelle"
[[columns]]
name = "qty"
from = "quantite"
type = "decimal"
precision = 10
scale = 2
"#;

    #[test]
    fn a_plain_mapping_is_rendered_column_by_column() {
        let m = mapping(LINES);
        let def = TableDef::from_mapping(&m);
        let cols = declared(&[
            ("id", "integer"),
            ("libelle", "text"),
            ("quantite", "numeric(10,3)"),
        ]);
        let p = plan(&m, &def, Some(&cols)).expect("pushed down");
        assert_eq!(p.table, "\"lignes\"");
        assert_eq!(p.columns, ["\"id\"", "\"libelle\"", "\"quantite\""]);
        assert_eq!(
            p.texts[2],
            "CASE WHEN \"quantite\" IS NULL THEN '\\N' ELSE round(\"quantite\"::numeric, 2)::text END"
        );
        // the text's cleaning, the decimal's rounding; the required id
        assert_eq!(p.unsure.len(), 2);
        assert!(p.unsure[1].contains("abs(\"quantite\"::numeric) >= 1e8"));
        assert_eq!(p.rejects, ["\"id\" IS NULL"]);
        assert!(p.references.is_empty());
    }

    #[test]
    fn rules_that_rewrite_values_keep_the_stream() {
        let cols = declared(&[
            ("id", "integer"),
            ("libelle", "text"),
            ("quantite", "numeric"),
        ]);
        for (edit, why) in [
            (
                "name = \"label\"\nfrom = \"libelle\"\ncase = \"upper\"",
                "rewrites",
            ),
            (
                "name = \"label\"\nfrom = \"libelle\"\ntrim = false",
                "otherwise than trimmed",
            ),
            ("name = \"label\"\nfrom = [\"libelle\", \"nom\"]", "several"),
            ("name = \"label\"\nfrom = \"absent\"", "no source column"),
        ] {
            let text = LINES.replace("name = \"label\"\nfrom = \"libelle\"", edit);
            let m = mapping(&text);
            let def = TableDef::from_mapping(&m);
            let err = plan(&m, &def, Some(&cols)).expect_err(edit);
            assert!(err.contains(why), "{edit}: {err}");
        }
        let m = mapping(&format!("{LINES}\n[dedupe]\nkey = [\"label\"]\n"));
        let def = TableDef::from_mapping(&m);
        assert!(plan(&m, &def, Some(&cols)).unwrap_err().contains("merges"));
        let m = mapping(LINES);
        let def = TableDef::from_mapping(&m);
        let floats = declared(&[
            ("id", "integer"),
            ("libelle", "text"),
            ("quantite", "double precision"),
        ]);
        assert_eq!(
            plan(&m, &def, Some(&floats)).unwrap_err(),
            "column qty: double precision into decimal"
        );
    }

    #[test]
    fn integer_references_are_checked_against_the_target() {
        let cols = declared(&[
            ("id", "integer"),
            ("libelle", "text"),
            ("quantite", "numeric"),
        ]);
        let text = LINES.replace(
            "name = \"label\"\nfrom = \"libelle\"",
            "name = \"label\"\nfrom = \"libelle\"\nreferences = { table = \"labels\", column = \"code\" }",
        );
        let m = mapping(&text);
        let def = TableDef::from_mapping(&m);
        assert_eq!(
            plan(&m, &def, Some(&cols)).unwrap_err(),
            "column label: a reference on text"
        );
        let text = LINES.replace(
            "type = \"integer\"\nrequired = true",
            "type = \"integer\"\nrequired = true\nreferences = { table = \"heads\", column = \"id\" }",
        );
        let m = mapping(&text);
        let def = TableDef::from_mapping(&m);
        let p = plan(&m, &def, Some(&cols)).expect("pushed down");
        assert_eq!(p.references, [(0, "heads".to_string(), "id".to_string())]);
    }
}
