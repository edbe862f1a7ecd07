//! `repaero scaffold`: from a file nobody wrote a mapping for to a job that
//! migrates and validates, through the real binary.

mod common;

use std::path::Path;

use common::{code, pg, repaero_in, root, stderr, stdout};

/// A throw-away project: a repaero.toml with only a target.
fn project(target: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("repaero.toml"),
        format!("[target]\nurl = \"{target}\"\n"),
    )
    .unwrap();
    dir
}

fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--config", "repaero.toml"];
    all.extend_from_slice(args);
    repaero_in(dir, &all)
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn clients_mdb_scaffolds_migrates_and_validates_in_sqlite() {
    let dir = project("sqlite://t.db");
    let d = dir.path();
    let mdb = root().join("fixtures/access/clients.mdb");
    let out = run(d, &["scaffold", mdb.to_str().unwrap(), "--job", "crm"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    // the source was added to repaero.toml, and the job names it
    let conf = read(d, "repaero.toml");
    assert!(conf.contains("[sources.crm]\nkind = \"access\""), "{conf}");
    let job = read(d, "jobs/crm.toml");
    assert!(job.contains("source = \"crm\""), "{job}");
    // parents first: technicians and clients before interventions and
    // availabilities, which refer to them
    let pos = |m: &str| {
        job.find(&format!("mapping = \"crm_{m}\""))
            .unwrap_or_else(|| panic!("{m}: {job}"))
    };
    assert!(pos("techniciens") < pos("interventions"), "{job}");
    assert!(pos("techniciens") < pos("disponibilites"), "{job}");
    assert!(pos("clients") < pos("interventions"), "{job}");
    let clients = read(d, "mappings/crm_clients.toml");
    for want in [
        "table = \"Clients\"",
        "key = [\"id_client\"]",
        "name = \"date_creation\"\nfrom = \"DateCreation\"\ntype = \"date\"",
        "name = \"email\"\nfrom = \"Email\"\ntype = \"text\"\nlength = 100",
        "name = \"actif\"\nfrom = \"Actif\"\ntype = \"boolean\"",
        "null_values = [\"-\", \"n/a\"]",
    ] {
        assert!(clients.contains(want), "{want}\n{clients}");
    }
    let interventions = read(d, "mappings/crm_interventions.toml");
    for want in [
        // enforced relationship: a rule; not enforced: a suggestion
        "references = { table = \"techniciens\", column = \"id_technicien\" }",
        "# references = { table = \"clients\", column = \"id_client\" }",
        "name = \"montant_ht\"\nfrom = \"MontantHT\"\ntype = \"decimal\"\nprecision = 19\nscale = 4",
        "type = \"datetime\"",
    ] {
        assert!(interventions.contains(want), "{want}\n{interventions}");
    }
    let validation = read(d, "validation/crm.toml");
    assert_eq!(
        validation.matches("kind = \"count\"").count(),
        4,
        "{validation}"
    );
    assert!(
        validation.contains(
            "value = { source = \"MontantHT\", target = \"montant_ht\", type = \"decimal\", scale = 4 }"
        ),
        "{validation}"
    );
    let out = run(d, &["migrate", "crm"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let out = run(d, &["validate", "crm"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    // the figures the fixture's ground truth gives
    let report = stdout(&out);
    assert!(report.contains("6339516.1359"), "{report}");
    // existing files are kept
    let out = run(d, &["scaffold", mdb.to_str().unwrap(), "--job", "crm"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("not overwriting"), "{}", stderr(&out));
    // the file is now configured: a second job reuses its source
    let out = run(
        d,
        &[
            "scaffold",
            mdb.to_str().unwrap(),
            "--job",
            "crm2",
            "--tables",
            "Clients",
            "--print",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(printed.contains("source = \"crm\""), "{printed}");
    assert!(!printed.contains("[sources."), "{printed}");
    assert!(!d.join("jobs/crm2.toml").exists());
}

#[test]
fn clients_mdb_scaffolded_job_runs_into_postgres() {
    let db = pg::TempDb::new("scaffold");
    let dir = project(&db.url());
    let d = dir.path();
    let mdb = root().join("fixtures/access/clients.mdb");
    let out = run(d, &["scaffold", mdb.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(d.join("jobs/clients.toml").exists());
    let out = run(d, &["migrate", "clients"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let out = run(d, &["validate", "clients"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(db.query("SELECT count(*) FROM clients"), "600");
    assert_eq!(
        db.query("SELECT sum(montant_ht) FROM interventions"),
        "6339516.1359"
    );
    // the primary key became the table's
    assert_eq!(
        db.query(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
             AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'clients'::regclass AND i.indisprimary"
        ),
        "id_client"
    );
}

#[test]
fn stock_workbook_settings_are_detected() {
    let dir = project("sqlite://t.db");
    let d = dir.path();
    let xlsx = root().join("fixtures/stock/stock.xlsx");
    let out = run(d, &["scaffold", xlsx.to_str().unwrap(), "--job", "stock"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let names = std::fs::read_dir(d.join("mappings"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    let all: String = names
        .iter()
        .map(|n| read(d, &format!("mappings/{n}")))
        .collect();
    assert!(all.contains("header_row = "), "{all}");
    assert!(all.contains("footer = '"), "{all}");
    assert!(all.contains("fill_down = true"), "{all}");
    let out = run(d, &["migrate", "stock"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let out = run(d, &["validate", "stock"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn migrate_all_says_how_to_create_the_billing_base_and_what_ran() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_repaero"));
    let out = cmd
        .current_dir(root())
        .args(["--config", "repaero.toml", "--set"])
        .arg(format!(
            "target.url=sqlite://{}",
            dir.path().join("t.db").display()
        ))
        .arg("--set")
        .arg(format!(
            "paths.quarantine={}",
            dir.path().join("q").display()
        ))
        .args(["migrate", "--all"])
        .env(
            "BILLING_URL",
            "postgres://postgres@127.0.0.1:5432/repaero_no_such_base",
        )
        .env_remove("REPAERO_TARGET")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(err.contains("repaero fixtures billing"), "{err}");
    assert!(
        err.contains("4 of 5 jobs ran (clients, production, stock, suppliers); failed: billing"),
        "{err}"
    );
}

#[test]
fn headerless_sheet_and_repeated_headers_migrate_by_letter_and_rank() {
    use rust_xlsxwriter::Workbook;
    let dir = project("sqlite://t.db");
    let d = dir.path();
    let path = d.join("releves.xlsx");
    let mut book = Workbook::new();
    // figures only, no header: read by their letters
    let ws = book.add_worksheet();
    ws.set_name("Mesures").unwrap();
    for r in 0..4u32 {
        ws.write_number(r, 0, f64::from(r + 1)).unwrap();
        ws.write_number(r, 2, f64::from(r) + 0.25).unwrap();
    }
    // "Charge" twice: each column by its rank
    let ws = book.add_worksheet();
    ws.set_name("Charges").unwrap();
    for (c, h) in ["Lot", "Charge", "Charge"].iter().enumerate() {
        ws.write_string(0, c as u16, *h).unwrap();
    }
    for r in 1..4u32 {
        ws.write_string(r, 0, format!("L{r}")).unwrap();
        ws.write_number(r, 1, f64::from(r) * 10.0).unwrap();
        ws.write_number(r, 2, f64::from(r) * 100.0).unwrap();
    }
    book.save(&path).unwrap();
    let out = run(d, &["scaffold", path.to_str().unwrap(), "--job", "rel"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let mesures = read(d, "mappings/rel_mesures.toml");
    assert!(mesures.contains("header_row = 0\n"), "{mesures}");
    assert!(
        mesures.contains("name = \"column_c\"\nfrom = \"C\"\ntype = \"decimal\""),
        "{mesures}"
    );
    let charges = read(d, "mappings/rel_charges.toml");
    assert!(
        charges.contains("name = \"charge_2\"\nfrom = \"Charge (2)\""),
        "{charges}"
    );
    for cmd in ["migrate", "validate"] {
        let out = run(d, &[cmd, "rel"]);
        assert_eq!(code(&out), 0, "{cmd}: {}{}", stdout(&out), stderr(&out));
    }
    let db = common::Db::Sqlite(d.join("t.db"));
    // every row is data: row 1 too
    assert_eq!(
        db.rows("SELECT column_a, column_c FROM mesures ORDER BY column_a"),
        [
            [Some("1".into()), Some("0.25".into())],
            [Some("2".into()), Some("1.25".into())],
            [Some("3".into()), Some("2.25".into())],
            [Some("4".into()), Some("3.25".into())],
        ]
    );
    // each Charge from its own column
    assert_eq!(
        db.rows("SELECT lot, charge, charge_2 FROM charges ORDER BY lot"),
        [
            [Some("L1".into()), Some("10".into()), Some("100".into())],
            [Some("L2".into()), Some("20".into()), Some("200".into())],
            [Some("L3".into()), Some("30".into()), Some("300".into())],
        ]
    );
}
