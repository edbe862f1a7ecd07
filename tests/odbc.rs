//! The clients job through ODBC (unixODBC + mdbtools' driver) gives the
//! same target as through the pure-Rust Access reader, but for mdbtools'
//! documented losses: an empty string comes out as NULL, an astral-plane
//! character (emoji) as "??".

#![cfg(feature = "odbc")]

mod common;

use common::*;

fn project(source: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("jobs")).unwrap();
    std::fs::create_dir_all(p.join("mappings")).unwrap();
    for m in ["technicians", "clients", "interventions", "availabilities"] {
        std::fs::copy(
            root().join(format!("mappings/{m}.toml")),
            p.join(format!("mappings/{m}.toml")),
        )
        .unwrap();
    }
    std::fs::copy(
        root().join("jobs/clients.toml"),
        p.join("jobs/clients.toml"),
    )
    .unwrap();
    std::fs::write(p.join("repaero.toml"), source).unwrap();
    dir
}

fn dump(db: &Db) -> Vec<Vec<Vec<Option<String>>>> {
    ["technicians", "clients", "interventions", "availabilities"]
        .iter()
        .map(|t| db.rows(&format!("SELECT * FROM {t} ORDER BY id")))
        .collect()
}

#[test]
fn odbc_with_mdbtools_reads_the_clients_base_like_the_native_reader() {
    let mdb = root().join("fixtures/access/clients.mdb");
    let native = project(&format!(
        "[sources.clients]\nkind = \"access\"\npath = \"{}\"\n",
        mdb.display()
    ));
    let odbc = project(&format!(
        "[sources.clients]\nkind = \"odbc\"\nconnection = \"Driver={{MDBTools}};DBQ={};\"\n",
        mdb.display()
    ));
    for p in [&native, &odbc] {
        let out = repaero_in(p.path(), &["migrate", "clients", "--json"]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    let a = dump(&Db::Sqlite(native.path().join("repaero.db")));
    let b = dump(&Db::Sqlite(odbc.path().join("repaero.db")));
    let (mut empty_as_null, mut astral) = (0, 0);
    for (ta, tb) in a.iter().zip(&b) {
        assert_eq!(ta.len(), tb.len(), "row counts");
        for (ra, rb) in ta.iter().zip(tb) {
            for (va, vb) in ra.iter().zip(rb) {
                if va == vb {
                    continue;
                }
                match (va, vb) {
                    (Some(x), None) if x.is_empty() => empty_as_null += 1,
                    (Some(x), Some(y))
                        if x.chars().any(|c| c as u32 > 0xffff)
                            && x.chars()
                                .map(|c| {
                                    if c as u32 > 0xffff {
                                        "??".into()
                                    } else {
                                        c.to_string()
                                    }
                                })
                                .collect::<String>()
                                == *y =>
                    {
                        astral += 1
                    }
                    _ => panic!("native {va:?} ≠ odbc {vb:?} in {ra:?}"),
                }
            }
        }
    }
    // every empty string and every value with an emoji, and nothing else
    let values = || a.iter().flatten().flatten().flatten();
    assert_eq!(empty_as_null, values().filter(|v| v.is_empty()).count());
    assert_eq!(
        astral,
        values()
            .filter(|v| v.chars().any(|c| c as u32 > 0xffff))
            .count()
    );
    assert!(
        empty_as_null > 100 && astral > 200,
        "{empty_as_null} {astral}"
    );
    assert_eq!(a[1].len(), 570);
}

#[test]
fn a_wrong_driver_is_a_clear_error() {
    let p = project(
        "[sources.clients]\nkind = \"odbc\"\nconnection = \"Driver={NoSuchDriver};DBQ=/x.mdb;PWD=hunter2;\"\n",
    );
    let out = repaero_in(p.path(), &["migrate", "clients"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("ODBC"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
