//! The floors of `src/` hold: every module uses only modules of its own
//! floor or of the floors below it, sibling stages (source, transform,
//! sink, notify) never use each other, and no two top-level modules use each
//! other, directly or through others. The floors are declared once, in
//! `repaero::FLOORS` (src/lib.rs); this test reads every `crate::…` path in
//! `src/` (in `use` lines and in code alike) and names each file and
//! import that breaks them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use repaero::FLOORS;

/// Top-level module of a file under `src/` (`source/excel.rs` → `source`).
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().to_string())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments and string literals (a path in
/// a doc comment or a message is not an import).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'r' && matches!(b.get(i + 1), Some(b'"') | Some(b'#')) {
            // raw string r"…" / r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            j += 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            i = j + close.len();
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // a char literal such as '"'
            i += 3;
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            i += 2;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The top-level modules a file's code names through `crate::`, with the
/// line of the first mention.
fn imports(code: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let line_of = |pos: usize| code[..pos].matches('\n').count() + 1;
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (pos, _) in code.match_indices("crate::") {
        // `$crate::` in macros, `my_crate::`: not ours
        if pos > 0 {
            let prev = code[..pos].chars().next_back().unwrap();
            if prev.is_alphanumeric() || prev == '_' || prev == '$' {
                continue;
            }
        }
        let rest = code[pos + "crate::".len()..].trim_start();
        if let Some(group) = rest.strip_prefix('{') {
            // use crate::{a::b, c, d::{e, f}}: the first name of each item
            let mut depth = 0;
            let mut start = true;
            for (k, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => {
                        out.entry(ident(&group[k..])).or_insert(line_of(pos));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.entry(name).or_insert(line_of(pos));
            }
        }
    }
    out
}

#[test]
fn every_module_uses_only_its_floor_and_the_floors_below() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let floor_of: BTreeMap<&str, (usize, &str, bool)> = FLOORS
        .iter()
        .enumerate()
        .flat_map(|(level, f)| {
            f.modules
                .iter()
                .map(move |m| (*m, (level, f.name, f.siblings_apart)))
        })
        .collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut faults = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &files {
        let rel = path.strip_prefix(&src).unwrap();
        let module = module_of(rel);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&(level, floor, apart)) = floor_of.get(module.as_str()) else {
            faults.push(format!(
                "src/{}: module `{module}` is on no floor: add it to FLOORS in src/lib.rs",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(path).unwrap();
        for (used, line) in imports(&code_only(&text)) {
            if used == module || used == "self" || used == "super" {
                continue;
            }
            edges
                .entry(module.clone())
                .or_default()
                .insert(used.clone());
            let Some(&(ulevel, ufloor, _)) = floor_of.get(used.as_str()) else {
                faults.push(format!(
                    "src/{}:{line}: uses crate::{used}, which is on no floor",
                    rel.display()
                ));
                continue;
            };
            if ulevel > level {
                faults.push(format!(
                    "src/{}:{line}: `{module}` ({floor}) uses crate::{used}, a floor up ({ufloor})",
                    rel.display()
                ));
            } else if ulevel == level && apart {
                faults.push(format!(
                    "src/{}:{line}: `{module}` uses crate::{used}, a sibling on the {floor} floor: move what both need to a floor below",
                    rel.display()
                ));
            }
        }
    }
    // circles between top-level modules, even within one floor: each group
    // of modules that reach each other, once, with one circle through it
    let mut grouped = BTreeSet::new();
    for from in edges.keys() {
        if grouped.contains(from) {
            continue;
        }
        let group: BTreeSet<&String> = edges
            .keys()
            .filter(|to| {
                *to != from
                    && path_between(&edges, from, to).is_some()
                    && path_between(&edges, to, from).is_some()
            })
            .collect();
        if let Some(first) = group.iter().next() {
            let there = path_between(&edges, from, first).unwrap();
            let back = path_between(&edges, first, from).unwrap();
            faults.push(format!(
                "import circle among {from}, {}: {} → {}",
                group
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                there.join(" → "),
                back[1..].join(" → ")
            ));
            grouped.extend(group.into_iter().cloned());
            grouped.insert(from.clone());
        }
    }
    faults.dedup();
    assert!(
        faults.is_empty(),
        "{} layering faults:\n{}",
        faults.len(),
        faults.join("\n")
    );
}

/// A path of modules from `from` to `to` along the use edges, if any.
fn path_between(
    edges: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
) -> Option<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![from.to_string()]];
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap().clone();
        if last == to {
            return Some(path);
        }
        if !seen.insert(last.clone()) {
            continue;
        }
        for next in edges.get(&last).into_iter().flatten() {
            let mut p = path.clone();
            p.push(next.clone());
            stack.push(p);
        }
    }
    None
}

#[test]
fn the_reader_of_imports_sees_every_form() {
    let code = code_only(
        "use crate::batch::Value;\n\
         use crate::{sink::{Sink, Dialect}, config};\n\
         // use crate::cli::main;\n\
         let s = \"crate::pipeline\";\n\
         let v = crate::transform::parse::x();\n\
         let c = '\"'; let d = crate::db::quote(c);\n\
         macro_rules! m { () => { $crate::source::X } }\n",
    );
    let found: Vec<String> = imports(&code).into_keys().collect();
    assert_eq!(found, ["batch", "config", "db", "sink", "transform"]);
}
