//! The clients and production jobs from the Access fixtures, into SQLite
//! and PostgreSQL, checked against the fixture README's ground truth
//! (fixtures/access/ground_truth.json and its CSV files), never against a
//! previous run.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::pg::TempDb;
use common::*;
use serde_json::Value;

fn truth() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("fixtures/access/ground_truth.json")).unwrap(),
    )
    .unwrap()
}

fn csv_rows(name: &str) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(root().join("fixtures/access").join(name)).unwrap();
    r.records()
        .map(|rec| rec.unwrap().iter().map(|s| s.to_string()).collect())
        .collect()
}

fn migrate(db: &Db, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let t = format!("target.url={}", db.url());
    let q = format!("paths.quarantine={}", dir.path().display());
    let mut args = vec!["--set", &t, "--set", &q];
    args.extend_from_slice(extra);
    args.extend(["migrate", "clients", "production", "--json"]);
    let out = repaero(&args);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn tally<'a>(report: &'a Value, table: &str) -> &'a Value {
    report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["tables"].as_array().unwrap())
        .find(|t| t["table"] == table)
        .unwrap_or_else(|| panic!("no table {table}"))
}

fn num(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

/// Every ground-truth check of the issue, on one target.
fn check_ground_truth(db: &Db, report: &Value) {
    let g = &truth()["clients.mdb + clients.accdb"];
    // every table adds up
    for run in report["runs"].as_array().unwrap() {
        for t in run["tables"].as_array().unwrap() {
            let n = |k: &str| t[k].as_u64().unwrap();
            assert_eq!(n("read"), n("written") + n("merged") + n("rejected"), "{t}");
        }
    }

    // clients before and after dedupe: 600 rows, 30 duplicates in 24 pairs
    // and 3 triples, 570 clients (placeholder e-mails are no key)
    let c = tally(report, "clients");
    assert_eq!(c["read"].as_u64(), g["clients"].as_u64());
    assert_eq!(
        c["merged"],
        g["defects_by_construction"]["duplicate_extra_rows"]
    );
    assert_eq!(
        c["written"],
        g["distinct_clients_after_email_dedupe_placeholders_as_missing"]
    );
    assert_eq!(db.one("SELECT count(*) FROM clients"), "570");
    let groups = db.rows(
        "SELECT kept_id, count(*) FROM _merges WHERE table_name = 'clients' GROUP BY kept_id",
    );
    let sizes: BTreeMap<String, usize> = groups.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r[1].clone().unwrap()).or_default() += 1;
        m
    });
    assert_eq!(
        sizes,
        BTreeMap::from([("1".to_string(), 24), ("2".to_string(), 3)]),
        "merge groups"
    );
    // flagged, never dropped: 27 invalid e-mails, 8 placeholder dates
    assert_eq!(
        c["flagged"]["email: does not match pattern"],
        g["emails_failing_ascii_regex_after_trim"]
    );
    assert_eq!(
        c["nulled"]["created_on"],
        g["clients_datecreation_1900_01_01"]
    );
    assert_eq!(db.one("SELECT count(*) FROM clients WHERE email <> lower(email) OR email LIKE ' %' OR email LIKE '% '"), "0");
    assert_eq!(
        db.one("SELECT count(*) FROM clients WHERE length(postal_code) <> 5"),
        "0"
    );
    assert_eq!(
        db.one(
            "SELECT count(*) FROM clients WHERE phone IS NOT NULL AND phone NOT LIKE '+33_________'"
        ),
        "0"
    );

    // interventions: 14 orphans rejected, with the client ids the README lists
    let i = tally(report, "interventions");
    assert_eq!(i["rejected"], g["interventions_orphan_idclient"]);
    assert_eq!(
        i["reasons"]["client_id: unknown clients.id"],
        g["interventions_orphan_idclient"]
    );
    let rejected: Vec<Value> = db
        .rows("SELECT record FROM _rejects WHERE table_name = 'interventions'")
        .into_iter()
        .map(|r| serde_json::from_str(r[0].as_deref().unwrap()).unwrap())
        .collect();
    let orphan_ids: BTreeSet<i64> = rejected
        .iter()
        .map(|r| num(r["client_id"].as_str().unwrap()) as i64)
        .collect();
    let want: BTreeSet<i64> = g["orphan_idclient_values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(orphan_ids, want);

    // interventions per status and the sum of amounts: target + rejected = source
    let mut per_status: BTreeMap<String, u64> = db
        .rows("SELECT status, count(*) FROM interventions GROUP BY status")
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), num(r[1].as_deref().unwrap()) as u64))
        .collect();
    let mut rejected_amount = 0.0;
    for r in &rejected {
        *per_status
            .entry(r["status"].as_str().unwrap().to_string())
            .or_default() += 1;
        rejected_amount += r["amount_excl_tax"].as_str().map(num).unwrap_or(0.0);
    }
    let want: BTreeMap<String, u64> =
        serde_json::from_value(g["interventions_per_statut"].clone()).unwrap();
    assert_eq!(per_status, want);
    let amount = num(&db.one("SELECT sum(amount_excl_tax) FROM interventions")) + rejected_amount;
    assert!(
        (amount - num(g["sum_montantht_non_null"].as_str().unwrap())).abs() < 1e-6,
        "{amount}"
    );
    assert_eq!(
        db.one("SELECT count(*) FROM interventions WHERE amount_excl_tax IS NULL"),
        "12"
    );

    // analysed interventions per client: a surviving client has those of
    // every client merged into it; orphans' are in the quarantine
    let src: HashMap<i64, u64> = csv_rows("interventions_analysees_par_client.csv")
        .into_iter()
        .map(|r| (r[0].parse().unwrap(), r[1].parse().unwrap()))
        .collect();
    let survivor: HashMap<i64, i64> = db
        .rows("SELECT merged_id, kept_id FROM _merges WHERE table_name = 'clients'")
        .into_iter()
        .map(|r| {
            (
                num(r[0].as_deref().unwrap()) as i64,
                num(r[1].as_deref().unwrap()) as i64,
            )
        })
        .collect();
    let mut want: BTreeMap<i64, u64> = BTreeMap::new();
    for (id, n) in &src {
        if *n > 0 && !orphan_ids.contains(id) {
            *want.entry(*survivor.get(id).unwrap_or(id)).or_default() += n;
        }
    }
    let got: BTreeMap<i64, u64> = db
        .rows("SELECT client_id, count(*) FROM interventions WHERE analysed GROUP BY client_id")
        .into_iter()
        .map(|r| {
            (
                num(r[0].as_deref().unwrap()) as i64,
                num(r[1].as_deref().unwrap()) as u64,
            )
        })
        .collect();
    assert_eq!(got, want, "analysed interventions per client");
    let orphan_analysed: u64 = src
        .iter()
        .filter(|(id, _)| orphan_ids.contains(id))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        rejected.iter().filter(|r| r["analysed"] == "true").count() as u64,
        orphan_analysed
    );

    // memo text intact: line breaks, quotes, astral emoji, empty strings
    let comments: Vec<Option<String>> = db
        .rows("SELECT comment FROM interventions")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let rejected_comments: Vec<&str> = rejected
        .iter()
        .filter_map(|r| r["comment"].as_str())
        .collect();
    let count = |f: &dyn Fn(&str) -> bool| {
        comments.iter().flatten().filter(|c| f(c)).count()
            + rejected_comments.iter().filter(|c| f(c)).count()
    };
    assert_eq!(
        count(&|c| c.chars().any(|ch| ch as u32 > 0xffff)) as u64,
        g["interventions_commentaire_with_astral_emoji"]
            .as_u64()
            .unwrap()
    );
    assert_eq!(
        count(&|c| c.contains('\n')) as u64,
        g["interventions_commentaire_with_newline"]
            .as_u64()
            .unwrap()
    );
    assert_eq!(
        count(&|c| c.is_empty()) as u64,
        g["interventions_commentaire_empty_string"]
            .as_u64()
            .unwrap()
    );

    // technician 3's slots: the CSV, less the slots that end before they
    // start (rejected) and the later copies of a slot entered twice (merged)
    let a = tally(report, "availabilities");
    assert_eq!(
        a["rejected"],
        g["disponibilites_heurefin_not_after_heuredebut"]
    );
    assert_eq!(
        a["merged"],
        g["defects_by_construction"]["dispo_exact_duplicate_rows"]
    );
    let csv: Vec<Vec<String>> = csv_rows("disponibilites_technicien_3.csv");
    assert_eq!(
        csv.len() as u64,
        g["disponibilites_technicien_3"].as_u64().unwrap()
    );
    let mut seen = BTreeSet::new();
    let want: BTreeSet<(String, String, String, String, String)> = csv
        .iter()
        .filter(|r| r[4] > r[3])
        .filter(|r| seen.insert((r[2].clone(), r[3].clone(), r[4].clone(), r[5].clone())))
        .map(|r| {
            (
                r[0].clone(),
                r[2].clone(),
                r[3].clone(),
                r[4].clone(),
                r[5].clone(),
            )
        })
        .collect();
    let target: BTreeSet<(String, String, String, String, String)> = db
        .rows("SELECT CAST(id AS TEXT), CAST(day AS TEXT), CAST(starts_at AS TEXT), CAST(ends_at AS TEXT), reason FROM availabilities WHERE technician_id = 3")
        .into_iter()
        .map(|r| {
            let t = |i: usize| r[i].clone().unwrap_or_default();
            (t(0), t(1), t(2), t(3), t(4))
        })
        .collect();
    assert_eq!(target, want, "technician 3's availabilities");
    assert_eq!(
        target.len(),
        csv.len() - 4,
        "1 slot ends before it starts, 3 entered twice"
    );

    // production: documents, workflow 7 in order, every tool code
    let p = &truth()["production.mdb"];
    assert_eq!(
        db.one("SELECT count(*) FROM technical_documents"),
        p["documents"].as_u64().unwrap().to_string()
    );
    assert_eq!(
        num(&db.one("SELECT sum(size_bytes) FROM technical_documents")) as u64,
        p["documents_sum_taille_non_null"].as_u64().unwrap()
    );
    let steps = db.rows(
        "SELECT id, position, label, estimated_minutes, tool_id FROM workflow_steps WHERE workflow_id = 7 ORDER BY position",
    );
    let want: Vec<Vec<Option<String>>> = csv_rows("etapes_workflow_7.csv")
        .into_iter()
        .map(|r| {
            vec![
                Some(r[0].clone()),
                Some(r[2].clone()),
                Some(r[3].clone()),
                Some(r[4].clone()),
                (!r[5].is_empty()).then(|| r[5].clone()),
            ]
        })
        .collect();
    assert_eq!(steps, want, "workflow 7");
    assert_eq!(
        db.one("SELECT tool_id FROM workflow_steps WHERE id = 59"),
        "999",
        "a step with a missing tool is kept"
    );
    assert_eq!(
        db.one("SELECT count(*) FROM workflow_steps WHERE tool_id_valid = false"),
        "2"
    );
    let tools: Vec<Vec<Option<String>>> = db.rows("SELECT id, code FROM tools ORDER BY id");
    let want: Vec<Vec<Option<String>>> = csv_rows("outils_codes.csv")
        .into_iter()
        .map(|r| vec![Some(r[0].clone()), Some(r[1].clone())])
        .collect();
    assert_eq!(tools, want, "tool codes");
}

#[test]
fn clients_and_production_into_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::Sqlite(dir.path().join("a.db"));
    let report = migrate(&db, &[]);
    check_ground_truth(&db, &report);
}

#[test]
fn clients_and_production_into_postgres() {
    let pg = TempDb::new("access");
    let db = Db::Pg(pg.url());
    let report = migrate(&db, &[]);
    check_ground_truth(&db, &report);
    // a second run replaces every table, foreign keys and all
    let report = migrate(&db, &[]);
    check_ground_truth(&db, &report);
    assert_eq!(
        pg.query("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND convalidated"),
        "4",
        "interventions → clients, technicians; availabilities → technicians; workflow_steps → workflows"
    );
}

fn dump_all(db: &Db) -> Vec<Vec<Vec<Option<String>>>> {
    [
        "SELECT * FROM technicians ORDER BY id",
        "SELECT * FROM clients ORDER BY id",
        "SELECT * FROM interventions ORDER BY id",
        "SELECT * FROM availabilities ORDER BY id",
        "SELECT * FROM tools ORDER BY id",
        "SELECT * FROM workflows ORDER BY id",
        "SELECT * FROM workflow_steps ORDER BY id",
        "SELECT * FROM technical_documents ORDER BY id",
        "SELECT job, table_name, source_row, reason, detail, record FROM _rejects ORDER BY table_name, source_row",
        "SELECT job, table_name, merge_key, kept_row, merged_row, kept_id, merged_id FROM _merges ORDER BY table_name, merged_row",
    ]
    .iter()
    .map(|q| db.rows(q))
    .collect()
}

#[test]
fn mdb_and_accdb_give_identical_targets() {
    let dir = tempfile::tempdir().unwrap();
    let mdb = Db::Sqlite(dir.path().join("mdb.db"));
    migrate(&mdb, &[]);
    let accdb = Db::Sqlite(dir.path().join("accdb.db"));
    let path = format!(
        "sources.clients.path={}",
        root().join("fixtures/access/clients.accdb").display()
    );
    migrate(&accdb, &["--set", &path]);
    let (a, b) = (dump_all(&mdb), dump_all(&accdb));
    // _rejects name their source file; compare the rest of each row
    assert_eq!(a.len(), b.len());
    for (ta, tb) in a.iter().zip(&b) {
        assert_eq!(ta, tb);
    }
    assert_eq!(a[1].len(), 570);
}

#[test]
fn inspect_lists_access_tables_and_ddl() {
    let out = repaero(&["inspect", "clients", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let counts: BTreeMap<String, u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("Clients".into(), 600),
            ("Disponibilites".into(), 1543),
            ("Interventions".into(), 5000),
            ("Techniciens".into(), 8)
        ])
    );
    let out = repaero(&[
        "inspect",
        root()
            .join("fixtures/access/production.mdb")
            .to_str()
            .unwrap(),
        "--table",
        "EtapesWorkflow",
        "--ddl",
        "postgres",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("EtapesWorkflow: 226 row(s)"), "{text}");
    assert!(
        text.contains("OutilRequis                  Long Integer"),
        "{text}"
    );
    assert!(text.contains("CREATE TABLE \"etapes_workflow\""), "{text}");
    assert!(text.contains("\"id_etape\" bigint"), "{text}");
}

#[test]
fn bad_access_input() {
    let dir = tempfile::tempdir().unwrap();
    // not an Access file
    let fake = dir.path().join("fake.mdb");
    std::fs::write(&fake, vec![0u8; 4096]).unwrap();
    let out = repaero(&[
        "--set",
        &format!("sources.clients.path={}", fake.display()),
        "migrate",
        "clients",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("fake.mdb"), "{}", stderr(&out));
    // missing file
    let out = repaero(&[
        "--set",
        "sources.clients.path=/nope/clients.mdb",
        "migrate",
        "clients",
    ]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("/nope/clients.mdb: cannot open"),
        "{}",
        stderr(&out)
    );
    // unknown table
    let p = dir.path();
    std::fs::create_dir_all(p.join("jobs")).unwrap();
    std::fs::create_dir_all(p.join("mappings")).unwrap();
    std::fs::write(
        p.join("repaero.toml"),
        format!(
            "[sources.clients]\nkind = \"access\"\npath = \"{}\"\n",
            root().join("fixtures/access/clients.mdb").display()
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("jobs/t.toml"),
        "source = \"clients\"\n[[tables]]\nmapping = \"t\"\n",
    )
    .unwrap();
    std::fs::write(
        p.join("mappings/t.toml"),
        "[source]\ntable = \"clients\"\n[target]\ntable = \"t\"\n[[columns]]\nname = \"id\"\nfrom = \"IdClient\"\ntype = \"integer\"\n",
    )
    .unwrap();
    let out = repaero_in(p, &["migrate", "t"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("no table named \"clients\""), "{err}");
    assert!(err.contains("Did you mean \"Clients\"?"), "{err}");
}

#[test]
#[cfg_attr(
    not(repaero_corpus),
    ignore = "no corpus of real files: set REPAERO_CORPUS (README, \"The corpus\")"
)]
fn fixed_length_text_is_read_not_lost() {
    // jetdb 0.4.0 returns NULL for this fixed-length Text column; repaero
    // reads the value from the row
    for file in ["fixedTextTestV2000.mdb", "fixedTextTestV2010.accdb"] {
        let path = corpus().join("access").join(file);
        let src = repaero::source::open_path(&path).unwrap();
        let mut reader = src
            .read(repaero::source::TableRequest::all("users"))
            .unwrap();
        let batch = reader.next_batch().unwrap().unwrap();
        let flags: Vec<Option<&str>> = batch
            .column("c_flag_")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(flags, vec![Some("N"), Some("N")], "{file}");
    }
}

#[test]
#[cfg_attr(
    not(repaero_corpus),
    ignore = "no corpus of real files: set REPAERO_CORPUS (README, \"The corpus\")"
)]
fn a_column_type_repaero_cannot_decode_is_named_never_read_as_null() {
    let dir = project(
        &format!(
            "[sources.odd]\nkind = \"access\"\npath = \"{}\"\n",
            corpus()
                .join("access/unsupportedFieldsTestV2007.accdb")
                .display()
        ),
        &[
            (
                "jobs/odd.toml",
                "source = \"odd\"\n[[tables]]\nmapping = \"odd\"\n",
            ),
            (
                "mappings/odd.toml",
                "[source]\ntable = \"Test\"\n[target]\ntable = \"odd\"\n[[columns]]\nname = \"id\"\nfrom = \"ID\"\ntype = \"integer\"\n[[columns]]\nname = \"unknown_var\"\nfrom = \"UnknownVar\"\ntype = \"binary\"\n",
            ),
        ],
    );
    let p = dir.path();
    let out = repaero_in(p, &["migrate", "odd"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("column \"UnknownVar\" has type code 0x46, which repaero cannot decode"),
        "{err}"
    );
}

#[test]
#[cfg_attr(
    not(repaero_corpus),
    ignore = "no corpus of real files: set REPAERO_CORPUS (README, \"The corpus\")"
)]
fn complex_columns_keep_their_values() {
    // attachments, multiple values and memo versions come as JSON text
    let path = corpus().join("access/complexDataTestV2010.accdb");
    let src = repaero::source::open_path(&path).unwrap();
    let mut reader = src
        .read(repaero::source::TableRequest::all("Table1"))
        .unwrap();
    let b = reader.next_batch().unwrap().unwrap();
    let multi: Vec<Option<&str>> = b
        .column("multi-value-data")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .collect();
    let attach: Vec<Option<&str>> = b
        .column("attach-data")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .collect();
    let values: Vec<Value> = multi
        .iter()
        .flatten()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
    assert!(
        values
            .iter()
            .any(|v| v.as_array().is_some_and(|a| !a.is_empty())),
        "{multi:?}"
    );
    let files: Vec<Value> = attach
        .iter()
        .flatten()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
    let names: Vec<&str> = files
        .iter()
        .flat_map(|f| f.as_array().unwrap())
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(!names.is_empty(), "{attach:?}");
    assert!(
        files
            .iter()
            .flat_map(|f| f.as_array().unwrap())
            .all(|f| f["data"].is_string()),
        "every attachment has its bytes (base64)"
    );
}
