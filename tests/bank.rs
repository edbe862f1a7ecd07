//! The bank daemon against a real HTTP client: `repaero daemon bank` runs
//! as a process on a free port, the notifications are signed here by an
//! implementation of the spec's algorithm of the test's own (checked on the
//! spec's worked examples), and the target's tables are read back after
//! each one. SQLite and PostgreSQL targets; one run over TLS.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{code, free_port, pg, stderr, stdout};
use hmac::{Hmac, Mac};

const KEY: &str = "RepAeroTestKey01";
const SHOP: &str = "12345678";

// ---- the spec's algorithm, written again from §4.1 -------------------------

fn spec_sign(fields: &BTreeMap<String, String>, key: &str) -> String {
    let mut text: Vec<&str> = fields
        .iter()
        .filter(|(k, _)| k.starts_with("vads_"))
        .map(|(_, v)| v.as_str())
        .collect();
    text.push(key);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(text.join("+").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn body(fields: &BTreeMap<String, String>) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_tests_signer_is_the_spec_on_its_worked_examples() {
    // §4.4, official vector
    let f = map(&[
        ("vads_action_mode", "INTERACTIVE"),
        ("vads_amount", "5124"),
        ("vads_ctx_mode", "TEST"),
        ("vads_currency", "978"),
        ("vads_page_action", "PAYMENT"),
        ("vads_payment_config", "SINGLE"),
        ("vads_site_id", "12345678"),
        ("vads_trans_date", "20170129130025"),
        ("vads_trans_id", "123456"),
        ("vads_version", "V2"),
    ]);
    assert_eq!(
        spec_sign(&f, "1122334455667788"),
        "ycA5Do5tNvsnKdc/eP1bj2xa19z9q3iWPy9/rpesfS0="
    );
    // §4.3 B6: accents, spaces and `+` in values, and the wire form
    let f = map(&[
        ("vads_cust_last_name", "Bérénice Ünal"),
        ("vads_order_info", "Pièce P/N 123+456"),
        ("vads_site_id", "12345678"),
    ]);
    assert_eq!(
        spec_sign(&f, KEY),
        "N68aB0y8oXyh9Yez2DIailUVri3pCsHNWD1PeA0+/Sc="
    );
    assert_eq!(
        body(&f),
        "vads_cust_last_name=B%C3%A9r%C3%A9nice+%C3%9Cnal&vads_order_info=Pi%C3%A8ce+P%2FN+123%2B456&vads_site_id=12345678"
    );
    // §4.2 worked example A, through the pay link's own form builder
    let u = "https://erp.repaero.example/pay/";
    let mut a = map(&[
        ("vads_action_mode", "INTERACTIVE"),
        ("vads_amount", "125000"),
        ("vads_ctx_mode", "TEST"),
        ("vads_currency", "978"),
        ("vads_cust_email", "compta@client-aviation.example"),
        ("vads_order_id", "FAC-2024-0042"),
        ("vads_page_action", "PAYMENT"),
        ("vads_payment_config", "SINGLE"),
        ("vads_return_mode", "GET"),
        ("vads_site_id", "12345678"),
        ("vads_trans_date", "20240315093000"),
        ("vads_trans_id", "x7Kp2q"),
        ("vads_version", "V2"),
    ]);
    for s in ["cancel", "check", "error", "refused", "return", "success"] {
        let path = if s == "check" { "ipn" } else { s };
        a.insert(format!("vads_url_{s}"), format!("{u}{path}"));
    }
    assert_eq!(
        spec_sign(&a, KEY),
        "eO+5nSk5AnYD/6bgyvepNxiTamjO/cQwjTMTbGnsoWE="
    );
    assert_eq!(
        repaero::daemon::bank::signature::sign(
            &a,
            KEY,
            repaero::daemon::bank::Algorithm::HmacSha256
        ),
        spec_sign(&a, KEY)
    );
}

// ---- the target ------------------------------------------------------------

/// The billing tables as the billing job creates them (from its
/// mappings), with three invoices: 42 unpaid (1,250.00), 43 partly paid
/// (300.00, 100.00 paid), 44 unpaid (500.00).
fn billing_target(url: &str) {
    use repaero::config::mapping::Mapping;
    use repaero::db::TableDef;
    let env = |_: &str| -> Option<String> { None };
    let mut conn = repaero::db::open(url, false).unwrap();
    let d = conn.dialect();
    for name in ["invoices", "payments"] {
        let m = Mapping::load(&common::root().join(format!("mappings/{name}.toml")), &env).unwrap();
        let mut def = TableDef::from_mapping(&m);
        if name == "invoices" {
            def.soft_delete = Some(m.soft_delete_column());
        }
        def.foreign_keys.clear();
        conn.batch(&d.create_table(&def, name, false)).unwrap();
    }
    conn.batch(
        "INSERT INTO invoices (id, number, client_id, client_code, issued_on, status, total_excl_tax, vat, total_incl_tax) VALUES \
         (42, 'FA-2024-000042', 7, 'C0007', '2024-03-01', 'en attente', 1041.67, 208.33, 1250.00), \
         (43, 'FA-2024-000043', 8, 'C0008', '2024-03-02', 'partiellement payée', 250.00, 50.00, 300.00), \
         (44, 'FA-2024-000044', 8, 'C0008', '2024-03-03', 'en attente', 416.67, 83.33, 500.00); \
         INSERT INTO payments (id, invoice_id, paid_on, amount, method, reference) VALUES \
         (5, 43, '2024-03-05', 100.00, 'virement', 'VIR-5')",
    )
    .unwrap();
}

/// Every row of the tables a notification may change, as text, sorted.
fn snapshot(url: &str) -> Vec<(String, Vec<Vec<Option<String>>>)> {
    let mut conn = repaero::db::open(url, false).unwrap();
    [
        "invoices",
        "payments",
        "payment_attempts",
        "payment_notifications",
    ]
    .iter()
    .map(|t| {
        let cols = conn.columns(t).unwrap();
        let mut rows = if cols.is_empty() {
            Vec::new()
        } else {
            conn.select_text(t, &cols).unwrap()
        };
        rows.sort();
        (t.to_string(), rows)
    })
    .collect()
}

fn one(url: &str, sql: &str) -> String {
    let mut conn = repaero::db::open(url, false).unwrap();
    conn.query_one(sql, &[]).unwrap().unwrap_or_default()
}

// ---- the daemon --------------------------------------------------------------

fn write_config(dir: &Path, url: &str, port: u16, tls: Option<(&Path, &Path)>) -> PathBuf {
    let tls = tls
        .map(|(c, k)| {
            format!(
                "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
                c.display(),
                k.display()
            )
        })
        .unwrap_or_default();
    let text = format!(
        "[target]\nurl = \"{url}\"\n\n[daemons]\nheartbeat = 1\nshutdown_grace = 5\n\n\
         [daemons.bank]\nlisten = \"127.0.0.1:{port}\"\nshop_id = \"{SHOP}\"\nmode = \"TEST\"\n\
         key = \"${{BANK_TEST_KEY}}\"\n{tls}\
         fields = {{ vads_url_check = \"https://erp.repaero.example/pay/ipn\", vads_language = \"fr\" }}\n"
    );
    let path = dir.join("repaero.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn repaero(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_repaero"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("BANK_TEST_KEY", KEY)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// The daemon, stopped (by its pid) when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, port: u16) -> Daemon {
        let log = config.with_file_name("daemon.log");
        let child = Command::new(env!("CARGO_BIN_EXE_repaero"))
            .arg("--config")
            .arg(config)
            .args(["-v", "daemon", "bank"])
            .env("BANK_TEST_KEY", KEY)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Daemon { child, log };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("the daemon ended ({status}): {}", d.log());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the daemon does not listen: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// SIGTERM (to this child, by its pid): it must stop on its own, exit 0.
    fn stop(mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}: {}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// POST a form body; the status and the answer.
fn post(client: &reqwest::Client, url: &str, body: String) -> (u16, String) {
    runtime().block_on(async {
        let r = client
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    })
}

fn get(client: &reqwest::Client, url: &str) -> (u16, String) {
    runtime().block_on(async {
        let r = client.get(url).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    })
}

/// The form of `repaero pay-link <invoice> --json`, its signature checked
/// against the spec's algorithm.
fn pay_link(config: &Path, invoice: &str, amount: Option<&str>) -> BTreeMap<String, String> {
    let mut args = vec!["pay-link", invoice, "--json"];
    if let Some(a) = amount {
        args.extend(["--amount", a]);
    }
    let out = repaero(config, &args);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["action"], "https://paiement.systempay.fr/vads-payment/");
    let fields: BTreeMap<String, String> = serde_json::from_value(v["fields"].clone()).unwrap();
    let mut unsigned = fields.clone();
    let sig = unsigned.remove("signature").unwrap();
    assert_eq!(sig, spec_sign(&unsigned, KEY), "{fields:?}");
    fields
}

/// The notification the bank sends for the attempt of `form`, signed.
fn notification(
    form: &BTreeMap<String, String>,
    status: &str,
    hash: &str,
) -> BTreeMap<String, String> {
    let paid = status == "AUTHORISED";
    let mut f = map(&[
        ("vads_auth_mode", "FULL"),
        ("vads_auth_number", if paid { "3fd74f" } else { "" }),
        ("vads_auth_result", if paid { "00" } else { "51" }),
        ("vads_capture_delay", "0"),
        ("vads_card_brand", "CB"),
        ("vads_card_number", "497010XXXXXX0000"),
        ("vads_effective_creation_date", "20240315093142"),
        ("vads_extra_result", ""),
        ("vads_hash", hash),
        ("vads_operation_type", "DEBIT"),
        ("vads_result", if paid { "00" } else { "05" }),
        ("vads_sequence_number", "1"),
        ("vads_trans_status", status),
        (
            "vads_trans_uuid",
            &format!("{:0>32}", form["vads_trans_id"]),
        ),
        ("vads_url_check_src", "PAY"),
    ]);
    for k in [
        "vads_amount",
        "vads_ctx_mode",
        "vads_currency",
        "vads_order_id",
        "vads_payment_config",
        "vads_site_id",
        "vads_trans_date",
        "vads_trans_id",
        "vads_version",
        "vads_language",
    ] {
        f.insert(k.into(), form[k].clone());
    }
    f.insert("vads_effective_amount".into(), form["vads_amount"].clone());
    signed(f, KEY)
}

fn signed(mut f: BTreeMap<String, String>, key: &str) -> BTreeMap<String, String> {
    f.remove("signature");
    let sig = spec_sign(&f, key);
    f.insert("signature".into(), sig);
    f
}

const HASH: &str = "9c1b7f0e5d3a2b4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f";

fn scenario(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    billing_target(url);
    let port = free_port();
    let config = write_config(dir.path(), url, port, None);
    let daemon = Daemon::start(&config, port);
    let ipn = format!("http://127.0.0.1:{port}/ipn");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let unchanged = |before: &Vec<_>, what: &str| {
        assert_eq!(&snapshot(url), before, "{what} changed the target");
    };

    // the pay link: the amount due of invoice 42, a new attempt
    let form = pay_link(&config, "FA-2024-000042", None);
    assert_eq!(form["vads_amount"], "125000");
    assert_eq!(form["vads_order_id"], "FA-2024-000042");
    assert_eq!(form["vads_trans_id"], "000000");
    assert_eq!(form["vads_cust_id"], "C0007");
    assert_eq!(
        form["vads_url_check"],
        "https://erp.repaero.example/pay/ipn"
    );
    assert_eq!(
        one(url, "SELECT status FROM payment_attempts"),
        "SENT",
        "the attempt is recorded"
    );

    // a valid success notification: one payment, the invoice paid
    let ok = notification(&form, "AUTHORISED", HASH);
    let (status, answer) = post(&client, &ipn, body(&ok));
    assert_eq!(
        (status, answer.as_str()),
        (200, "OK-payment of 1250.00 recorded"),
        "{}",
        daemon.log()
    );
    assert_eq!(
        one(url, "SELECT count(*) FROM payments WHERE invoice_id = 42"),
        "1"
    );
    assert_eq!(
        one(
            url,
            "SELECT CAST(amount AS TEXT) FROM payments WHERE invoice_id = 42"
        )
        .parse::<f64>()
        .unwrap(),
        1250.0
    );
    assert_eq!(
        one(
            url,
            "SELECT method || ' ' || reference FROM payments WHERE invoice_id = 42"
        ),
        format!("carte bank {:0>32}", "000000")
    );
    assert_eq!(
        one(url, "SELECT status FROM invoices WHERE id = 42"),
        "payée"
    );
    assert_eq!(
        one(
            url,
            "SELECT status FROM payment_attempts WHERE invoice_id = 42"
        ),
        "AUTHORISED"
    );
    assert_eq!(one(url, "SELECT count(*) FROM payment_notifications"), "1");
    // card data is not kept
    assert!(!one(url, "SELECT fields FROM payment_notifications").contains("497010"));
    let after_payment = snapshot(url);

    // the same notification again, and the bank's retry of it: nothing
    let (status, answer) = post(&client, &ipn, body(&ok));
    assert_eq!((status, answer.as_str()), (200, "OK-already processed"));
    unchanged(&after_payment, "the same notification");
    let mut retry = ok.clone();
    retry.insert("vads_url_check_src".into(), "RETRY".into());
    retry.insert(
        "vads_hash".into(),
        "e3f1a2b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70".into(),
    );
    let (status, answer) = post(&client, &ipn, body(&signed(retry, KEY)));
    assert_eq!((status, answer.as_str()), (200, "OK-already processed"));
    unchanged(&after_payment, "the retry");

    // invoice 43: 200.00 due; a new attempt for it
    let form43 = pay_link(&config, "FA-2024-000043", None);
    assert_eq!(form43["vads_amount"], "20000");
    assert_eq!(form43["vads_trans_id"], "000001");
    let before = snapshot(url);

    // a tampered amount (signature of the real one): refused
    let mut tampered = notification(&form43, "AUTHORISED", HASH);
    tampered.insert("vads_amount".into(), "2000".into());
    let (status, answer) = post(&client, &ipn, body(&tampered));
    assert_eq!((status, answer.as_str()), (400, "KO-invalid signature"));
    unchanged(&before, "a tampered amount");

    // a bad signature (another key)
    let mut other = notification(&form43, "AUTHORISED", HASH);
    other = signed(other, "SomeOtherKey0001");
    let (status, answer) = post(&client, &ipn, body(&other));
    assert_eq!((status, answer.as_str()), (400, "KO-invalid signature"));
    unchanged(&before, "a bad signature");

    // no signature
    let mut unsigned = notification(&form43, "AUTHORISED", HASH);
    unsigned.remove("signature");
    let (status, answer) = post(&client, &ipn, body(&unsigned));
    assert_eq!((status, answer.as_str()), (400, "KO-missing signature"));
    unchanged(&before, "a missing signature");

    // an unknown order, validly signed
    let mut unknown = notification(&form43, "AUTHORISED", HASH);
    unknown.insert("vads_order_id".into(), "FA-2099-999999".into());
    let (status, answer) = post(&client, &ipn, body(&signed(unknown, KEY)));
    assert_eq!((status, answer.as_str()), (200, "KO-order not found"));
    unchanged(&before, "an unknown order");

    // an amount that is not the attempt's, validly signed
    let mut less = notification(&form43, "AUTHORISED", HASH);
    less.insert("vads_amount".into(), "15000".into());
    let (status, answer) = post(&client, &ipn, body(&signed(less, KEY)));
    assert_eq!((status, answer.as_str()), (200, "KO-amount mismatch"));
    unchanged(&before, "a mismatched amount");

    // a notification of the production shop on this test deployment
    let mut prod = notification(&form43, "AUTHORISED", HASH);
    prod.insert("vads_ctx_mode".into(), "PRODUCTION".into());
    let (status, answer) = post(&client, &ipn, body(&signed(prod, KEY)));
    assert_eq!((status, answer.as_str()), (400, "KO-wrong shop or mode"));
    unchanged(&before, "a production notification");

    // refused, then paid by a second attempt, then a late abandon of the
    // first: paid (§8)
    let (status, answer) = post(&client, &ipn, body(&notification(&form43, "REFUSED", HASH)));
    assert_eq!((status, answer.as_str()), (200, "OK-attempt refused"));
    assert_eq!(
        one(url, "SELECT status FROM invoices WHERE id = 43"),
        "partiellement payée"
    );
    assert_eq!(
        one(url, "SELECT count(*) FROM payments WHERE invoice_id = 43"),
        "1"
    );
    let second = pay_link(&config, "FA-2024-000043", None);
    assert_eq!(second["vads_trans_id"], "000002");
    let (status, answer) = post(
        &client,
        &ipn,
        body(&notification(&second, "AUTHORISED", HASH)),
    );
    assert_eq!(
        (status, answer.as_str()),
        (200, "OK-payment of 200.00 recorded")
    );
    let mut late = notification(&form43, "ABANDONED", HASH);
    late.insert("vads_result".into(), "17".into());
    let (status, answer) = post(&client, &ipn, body(&signed(late, KEY)));
    assert_eq!((status, answer.as_str()), (200, "OK-attempt abandoned"));
    assert_eq!(
        one(url, "SELECT status FROM invoices WHERE id = 43"),
        "payée"
    );
    assert_eq!(
        one(
            url,
            "SELECT count(*) FROM payments WHERE invoice_id = 43 AND method = 'carte'"
        ),
        "1"
    );
    assert_eq!(
        one(
            url,
            "SELECT status FROM payment_attempts WHERE trans_id = '000001'"
        ),
        "REFUSED",
        "the late abandon does not move the refused attempt back"
    );
    // nothing left to pay: no pay link
    let out = repaero(&config, &["pay-link", "FA-2024-000043"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("nothing left to pay"),
        "{}",
        stderr(&out)
    );

    // a part of invoice 44 only: partly paid
    let part = pay_link(&config, "FA-2024-000044", Some("200,00"));
    assert_eq!(part["vads_amount"], "20000");
    let (status, answer) = post(
        &client,
        &ipn,
        body(&notification(&part, "AUTHORISED", HASH)),
    );
    assert_eq!(
        (status, answer.as_str()),
        (200, "OK-payment of 200.00 recorded")
    );
    assert_eq!(
        one(url, "SELECT status FROM invoices WHERE id = 44"),
        "partiellement payée"
    );

    // the pay link served by the daemon: the token is required
    let link = repaero(
        &config,
        &[
            "pay-link",
            "FA-2024-000044",
            "--link",
            &format!("http://127.0.0.1:{port}/"),
        ],
    );
    assert_eq!(code(&link), 0, "{}", stderr(&link));
    let link = stdout(&link).trim().to_string();
    assert!(link.starts_with(&format!("http://127.0.0.1:{port}/pay/FA-2024-000044?t=")));
    let (status, page) = get(&client, &link);
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("name=\"vads_amount\" value=\"30000\""),
        "{page}"
    );
    assert!(
        page.contains("name=\"vads_trans_id\" value=\"000004\""),
        "{page}"
    );
    let (status, json) = get(&client, &format!("{link}&format=json"));
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let fields: BTreeMap<String, String> = serde_json::from_value(v["fields"].clone()).unwrap();
    let mut unsigned = fields.clone();
    let sig = unsigned.remove("signature").unwrap();
    assert_eq!(sig, spec_sign(&unsigned, KEY));
    let before = snapshot(url);
    let (status, _) = get(
        &client,
        &format!("http://127.0.0.1:{port}/pay/FA-2024-000042?t=AAAAAAAAAAAAAAAAAAAAAA"),
    );
    assert_eq!(status, 403);
    let (status, _) = get(
        &client,
        &format!("http://127.0.0.1:{port}/pay/FA-2024-000042"),
    );
    assert_eq!(status, 403);
    unchanged(&before, "a pay link without its token");

    // the accounting of the run: three payments by card, five notifications applied
    assert_eq!(
        one(url, "SELECT count(*) FROM payments WHERE method = 'carte'"),
        "3"
    );
    assert_eq!(one(url, "SELECT count(*) FROM payment_notifications"), "5");

    // the page for the browser, written by the command line
    let page = dir.path().join("pay.html");
    let out = repaero(
        &config,
        &[
            "pay-link",
            "FA-2024-000044",
            "--html",
            page.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains(
            "<form method=\"POST\" action=\"https://paiement.systempay.fr/vads-payment/\""
        )
    );
    assert!(
        html.contains("name=\"vads_trans_id\" value=\"000006\""),
        "{html}"
    );

    // an orderly stop; the heartbeat counts what was answered: 5 applied,
    // 6 refused (tampered, bad and missing signature, unknown order,
    // amount, mode); duplicates are neither
    daemon.stop();
    let mut conn = repaero::db::open(url, false).unwrap();
    let beat = conn
        .query(
            "SELECT state, CAST(processed AS TEXT), CAST(failed AS TEXT) FROM _repaero_heartbeats WHERE feed = 'bank'",
            &[],
        )
        .unwrap();
    assert_eq!(
        beat,
        vec![vec![
            Some("stopped".to_string()),
            Some("5".to_string()),
            Some("6".to_string())
        ]]
    );
}

#[test]
fn notifications_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    scenario(&format!("sqlite://{}", dir.path().join("t.db").display()));
}

#[test]
fn notifications_on_postgres() {
    let db = pg::TempDb::new("bank");
    scenario(&db.url());
}

/// A CA and a certificate for 127.0.0.1 signed by it (openssl).
fn test_pki(dir: &Path) -> PathBuf {
    let sh = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    sh(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=repaero test CA",
    ]);
    sh(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    sh(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    dir.join("ca.pem")
}

#[test]
fn notifications_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = format!("sqlite://{}", d.join("t.db").display());
    billing_target(&url);
    let ca = test_pki(d);
    let port = free_port();
    let config = write_config(
        d,
        &url,
        port,
        Some((&d.join("srv.pem"), &d.join("srv.key"))),
    );
    let daemon = Daemon::start(&config, port);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap()])
        .build()
        .unwrap();
    let form = pay_link(&config, "FA-2024-000042", None);
    let (status, answer) = post(
        &client,
        &format!("https://127.0.0.1:{port}/ipn"),
        body(&notification(&form, "AUTHORISED", HASH)),
    );
    assert_eq!(
        (status, answer.as_str()),
        (200, "OK-payment of 1250.00 recorded"),
        "{}",
        daemon.log()
    );
    assert_eq!(
        one(&url, "SELECT status FROM invoices WHERE id = 42"),
        "payée"
    );
    // plain HTTP is not answered on the TLS port
    let plain = runtime().block_on(async {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/ipn"))
            .body("x")
            .send()
            .await
    });
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    drop(daemon);
}
