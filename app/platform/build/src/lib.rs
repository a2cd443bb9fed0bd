//! The service's build script, as a library its `build.rs` calls
//! (`platform_build::stamp()`), so that it is the platform's to fix: it
//! hands the version stamp to the compiler of the service's crate, where
//! `platform::package!()` reads it.
//!
//! `cargo xtask` computes the stamp once (git, rustc) and passes it in
//! `STAMP_*` variables; this only forwards them as `BUILD_*` and never runs
//! git, so a no-op build stays a no-op. A plain `cargo build` gets clear
//! defaults instead. Target and profile come from cargo itself. Only the
//! service's crate is stamped: a new commit recompiles it and nothing else.
//!
//! It also embeds the dependency list that `cargo xtask dist` wrote for the
//! target (`$APP_DEP_V0_DIR/<target>.zlib`, cargo-auditable's format) as a
//! `.dep-v0` section, which scanners read; a plain build embeds none.

#![deny(missing_docs)]

use std::env;
use std::path::PathBuf;
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

/// Everything the service's `build.rs` does: the stamp as `BUILD_*`
/// variables, and `$OUT_DIR/dep_v0.rs` for `platform::package!()`.
pub fn stamp() {
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
    write_dependency_section();
}

/// `$OUT_DIR/dep_v0.rs`: one block expression, the section static and a
/// function that references it (so that the linker's section GC keeps it),
/// whose value is that function; `platform::package!()` includes it.
fn write_dependency_section() {
    println!("cargo::rerun-if-env-changed=APP_DEP_V0_DIR");
    let target = env::var("TARGET").unwrap_or_default();
    let list = env::var_os("APP_DEP_V0_DIR")
        .map(|dir| PathBuf::from(dir).join(format!("{target}.zlib")))
        .filter(|path| path.is_file());
    let code = match list {
        Some(path) => {
            println!("cargo::rerun-if-changed={}", path.display());
            let length = std::fs::metadata(&path).map_or(0, |metadata| metadata.len());
            // Mach-O names a section by segment and name.
            let section = if target.contains("-apple-") {
                "__DATA,.dep-v0"
            } else {
                ".dep-v0"
            };
            format!(
                "{{\n#[used]\n#[unsafe(link_section = {section:?})]\nstatic DEP_V0: [u8; {length}] = *include_bytes!({path:?});\n\
                 fn keep_dependency_list() {{\n    std::hint::black_box(&DEP_V0);\n}}\n\
                 keep_dependency_list as fn()\n}}\n",
                path = path.display().to_string(),
            )
        }
        None => "{\nfn keep_dependency_list() {}\nkeep_dependency_list as fn()\n}\n".to_owned(),
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("dep_v0.rs");
    if std::fs::read_to_string(&out).ok().as_deref() != Some(code.as_str()) {
        std::fs::write(&out, code).expect("write dep_v0.rs");
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
