//! Hands the version stamp to the compiler.
//!
//! `cargo xtask` computes the stamp once (git, rustc) and passes it in
//! `STAMP_*` variables; this script only forwards them as `BUILD_*` and never
//! runs git, so a no-op build stays a no-op. A plain `cargo build` gets clear
//! defaults instead. Target and profile come from cargo itself.

use std::env;
use std::process::Command;

/// The stamp variables `cargo xtask` sets, and what a plain cargo build says.
const STAMP: [(&str, &str); 7] = [
    ("DESCRIBE", "unknown"),
    ("COMMIT", "unknown"),
    ("COMMIT_SHORT", "unknown"),
    ("BRANCH", "unknown"),
    ("DIRTY", "false"),
    ("COMMIT_TIME", "unknown"),
    ("SOURCE_DATE_EPOCH", "0"),
];

fn main() {
    // Without this, cargo reruns the script whenever any file of the package
    // changes; with it, only the variables below can trigger a rerun.
    println!("cargo::rerun-if-changed=build.rs");
    for (name, default) in STAMP {
        let value = stamp_var(name).unwrap_or_else(|| default.to_owned());
        println!("cargo::rustc-env=BUILD_{name}={value}");
    }
    let rustc = stamp_var("RUSTC").unwrap_or_else(rustc_version);
    println!("cargo::rustc-env=BUILD_RUSTC={rustc}");
    for name in ["TARGET", "PROFILE"] {
        let value = env::var(name).unwrap_or_else(|_| "unknown".to_owned());
        println!("cargo::rustc-env=BUILD_{name}={value}");
    }
}

fn stamp_var(name: &str) -> Option<String> {
    let var = format!("STAMP_{name}");
    println!("cargo::rerun-if-env-changed={var}");
    // A line break would end the `rustc-env` instruction early.
    env::var(var)
        .ok()
        .map(|value| value.replace(['\n', '\r'], " "))
}

fn rustc_version() -> String {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|version| version.trim().to_owned())
        .filter(|version| !version.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
