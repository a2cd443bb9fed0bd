//! Slow end to end: `cargo xtask build` in a temporary repository. The
//! binary reports the stamp `version --json` computes; a second build is a
//! no-op; a new commit recompiles the app crate and nothing else. The stamp
//! reaches every profile the same way (the app's build script); the debug
//! profile keeps this test off the release builds, and the release binary's
//! stamp is checked where `dist` builds it (`xtask/tests/dist.rs`).

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::*;

/// One `compiler-artifact` message of cargo: which unit, and whether cargo
/// found it fresh.
#[derive(Debug)]
struct Artifact {
    package_id: String,
    target: String,
    kind: String,
    fresh: bool,
}

fn build(repo: &Path, target_dir: &Path) -> Vec<Artifact> {
    let stdout = stdout_of(
        xtask(repo)
            .args(["build", "--", "--message-format=json-render-diagnostics"])
            .env("CARGO_TARGET_DIR", target_dir),
    );
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .map(|message| Artifact {
            package_id: message["package_id"].as_str().unwrap().to_owned(),
            target: message["target"]["name"].as_str().unwrap().to_owned(),
            kind: message["target"]["kind"][0].as_str().unwrap().to_owned(),
            fresh: message["fresh"].as_bool().unwrap(),
        })
        .collect()
}

fn is_app_binary(artifact: &Artifact) -> bool {
    artifact.target == "app" && artifact.kind == "bin"
}

fn app_stamp(binary: &Path) -> Value {
    serde_json::from_str(&stdout_of(
        std::process::Command::new(binary).args(["--version", "--json"]),
    ))
    .unwrap()
}

fn xtask_stamp(repo: &Path) -> Value {
    serde_json::from_str(&stdout_of(xtask(repo).args([
        "version",
        "--json",
        "--profile",
        "debug",
    ])))
    .unwrap()
}

#[test]
fn slow_stamped_build_is_exact_and_rebuilds_only_the_app() {
    let repo = repository();
    let target_dir: PathBuf = copies_target_dir();
    let binary = target_dir.join("debug/app");

    let first = build(repo.path(), &target_dir);
    assert!(
        first.iter().any(is_app_binary),
        "no app binary in {first:#?}"
    );
    assert_eq!(
        app_stamp(&binary),
        xtask_stamp(repo.path()),
        "the binary's stamp differs from `xtask version --json`"
    );
    let version_line = stdout_of(std::process::Command::new(&binary).arg("--version"));
    let (_, short) = (
        git(repo.path(), &["rev-parse", "HEAD"]),
        git(repo.path(), &["rev-parse", "--short", "HEAD"]),
    );
    assert!(
        version_line.starts_with(&format!("app 0.1.0 ({short} 2024-02-03 ")),
        "{version_line}"
    );

    let second = build(repo.path(), &target_dir);
    let rebuilt: Vec<&Artifact> = second.iter().filter(|artifact| !artifact.fresh).collect();
    assert!(
        rebuilt.is_empty(),
        "a build with nothing changed recompiled {rebuilt:#?}"
    );

    git(
        repo.path(),
        &[
            "commit",
            "--quiet",
            "--allow-empty",
            "--message",
            "new commit",
        ],
    );
    let third = build(repo.path(), &target_dir);
    let rebuilt: Vec<&Artifact> = third.iter().filter(|artifact| !artifact.fresh).collect();
    assert!(
        rebuilt.len() == 1
            && is_app_binary(rebuilt[0])
            && rebuilt[0]
                .package_id
                .contains(&format!("{}/app", repo.path().display())),
        "a new commit must recompile the app binary and nothing else, got {rebuilt:#?}"
    );
    let new_stamp = app_stamp(&binary);
    assert_eq!(
        new_stamp["commit"],
        git(repo.path(), &["rev-parse", "HEAD"])
    );
    assert_eq!(new_stamp, xtask_stamp(repo.path()));
}
