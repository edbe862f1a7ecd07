//! `repaero inspect`: the tables, columns, types and row counts of any
//! source, and the `CREATE TABLE` a target would get for them.

use serde::Serialize;

use crate::config::mapping::ColumnType;
use crate::db::{ColumnDef, Dialect, TableDef};
use crate::error::Result;
use crate::source::{Source, TableRequest, UniqueNames};

#[derive(Debug, Serialize)]
pub struct InspectedColumn {
    /// Name in the source.
    pub name: String,
    /// Type as the source declares it (Access) or as the cells show it.
    pub source_type: String,
    /// The repaero type it maps to.
    pub target_type: String,
    pub nullable: bool,
}

#[derive(Debug, Serialize)]
pub struct InspectedTable {
    pub name: String,
    pub hidden: bool,
    /// Data rows, counted by reading the table.
    pub rows: u64,
    pub columns: Vec<InspectedColumn>,
    /// Target names (snake_case) and DDL, when asked for.
    pub ddl: Option<String>,
}

/// `Référence client` → `reference_client`, `IdClient` → `id_client`.
pub fn snake_case(name: &str) -> String {
    let folded = crate::source::header_key(&split_camel(name));
    let mut s: String = folded
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() {
        s = "column".into();
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

fn split_camel(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if i > 0 && c.is_uppercase() {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower) {
                out.push(' ');
            }
        }
        out.push(c);
    }
    out
}

fn inferred_target(inferred: &str) -> ColumnType {
    match inferred.split(' ').next().unwrap_or("") {
        "number" => ColumnType::Decimal,
        "date" => ColumnType::Date,
        "boolean" => ColumnType::Boolean,
        _ => ColumnType::Text,
    }
}

/// Inspect every table of a source (or only `only`).
pub fn inspect(
    source: &dyn Source,
    only: Option<&str>,
    ddl: Option<Dialect>,
) -> Result<Vec<InspectedTable>> {
    let mut out = Vec::new();
    for t in source.tables()? {
        if only.is_some_and(|o| o != t.name) {
            continue;
        }
        if !source.holds_rows(&t.name) {
            // chart and macro sheets hold no table
            continue;
        }
        let mut reader = match source.read(TableRequest::all(&t.name)) {
            Ok(r) => r,
            // an empty sheet has no header: list it with no columns
            Err(e) if e.to_string().contains("empty") => {
                out.push(InspectedTable {
                    name: t.name.clone(),
                    hidden: t.hidden,
                    rows: 0,
                    columns: Vec::new(),
                    ddl: None,
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut rows = 0u64;
        while let Some(b) = reader.next_batch()? {
            rows += b.height() as u64;
        }
        let stats = reader.stats().cloned().unwrap_or_default();
        let columns: Vec<InspectedColumn> = match source.declared_columns(&t.name)? {
            Some(declared) => declared
                .into_iter()
                .map(|c| InspectedColumn {
                    target_type: c.target_type.as_str().to_string(),
                    source_type: c.source_type,
                    nullable: c.nullable,
                    name: c.name,
                })
                .collect(),
            None => stats
                .kinds
                .iter()
                .map(|(name, k)| {
                    let inferred = crate::pipeline::profile::infer(k);
                    InspectedColumn {
                        name: name.clone(),
                        target_type: inferred_target(&inferred).as_str().to_string(),
                        source_type: inferred,
                        nullable: k.empty > 0,
                    }
                })
                .collect(),
        };
        let ddl = ddl.map(|d| {
            // `Prix` and `prix` are one snake_case name: the second is prix_2
            let mut unique = UniqueNames::default();
            let def = TableDef {
                name: snake_case(&t.name),
                columns: columns
                    .iter()
                    .map(|c| {
                        let ty = match c.target_type.as_str() {
                            "integer" => ColumnType::Integer,
                            "decimal" => ColumnType::Decimal,
                            "float" => ColumnType::Float,
                            "boolean" => ColumnType::Boolean,
                            "date" => ColumnType::Date,
                            "datetime" => ColumnType::Datetime,
                            "binary" => ColumnType::Binary,
                            _ => ColumnType::Text,
                        };
                        ColumnDef {
                            name: snake_case(&unique.name(&snake_case(&c.name))),
                            ty,
                            precision: 19,
                            scale: 4,
                            not_null: !c.nullable,
                            length: None,
                        }
                    })
                    .collect(),
                key: Vec::new(),
                soft_delete: None,
                foreign_keys: Vec::new(),
            };
            d.create_table(&def, &def.name, false)
        });
        out.push(InspectedTable {
            name: t.name.clone(),
            hidden: t.hidden,
            rows,
            columns,
            ddl,
        });
    }
    Ok(out)
}

/// Render for people.
pub fn render(source: &str, tables: &[InspectedTable]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "{source}: {} table(s)", tables.len());
    for t in tables {
        let _ = writeln!(
            s,
            "\n{}{}: {} row(s)",
            t.name,
            if t.hidden { " (hidden)" } else { "" },
            t.rows
        );
        for c in &t.columns {
            let _ = writeln!(
                s,
                "  {:<28} {:<32} → {}{}",
                c.name,
                c.source_type,
                c.target_type,
                if c.nullable { "" } else { " not null" }
            );
        }
        if let Some(d) = &t.ddl {
            let _ = writeln!(s, "{d};");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_names() {
        assert_eq!(snake_case("IdClient"), "id_client");
        assert_eq!(snake_case("DateCreation"), "date_creation");
        assert_eq!(snake_case("Référence client"), "reference_client");
        assert_eq!(snake_case("MontantHT"), "montant_ht");
        assert_eq!(snake_case("HTMLPage"), "html_page");
        assert_eq!(snake_case("N° BL"), "n_bl");
        assert_eq!(snake_case("2019"), "_2019");
    }
}
