//! Finds the corpus of real files written by other software that the
//! corpus tests read (`tests/access_corpus.rs`, `tests/excel_corpus.rs` and a
//! few tests elsewhere). It is not part of the repository: the one setting
//! `REPAERO_CORPUS` points at it, defaulting to `../shared/corpus` beside the
//! checkout. When it is found, the tests are built with `cfg(repaero_corpus)`
//! and read it from `REPAERO_CORPUS_DIR`; when it is not, they are marked
//! ignored with the reason, so `cargo test` prints that they did not run.

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(repaero_corpus)");
    println!("cargo::rerun-if-env-changed=REPAERO_CORPUS");
    println!("cargo::rerun-if-changed=build.rs");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dir = match std::env::var_os("REPAERO_CORPUS") {
        Some(d) if !d.is_empty() => manifest.join(d),
        _ => manifest.join("../shared/corpus"),
    };
    if dir.join("access").is_dir() && dir.join("excel").is_dir() {
        // a corpus added or changed later is picked up (a missing path
        // would make cargo rerun this script on every build)
        println!("cargo::rerun-if-changed={}", dir.display());
        println!("cargo::rustc-cfg=repaero_corpus");
        println!("cargo::rustc-env=REPAERO_CORPUS_DIR={}", dir.display());
    } else if std::env::var_os("REPAERO_CORPUS").is_some_and(|d| !d.is_empty()) {
        println!(
            "cargo::warning=REPAERO_CORPUS={} is not a corpus folder (it needs access/ and excel/): the corpus tests will not run",
            dir.display()
        );
    }
}
