//! External tools in tests, shared by the test suites of every crate (the
//! app's tests include this file by path): a missing tool is a printed skip
//! locally and a failure under `CI=true`, where `.ci/run` installs them all.

use std::path::PathBuf;

/// The path of an external tool a test needs. Outside CI a missing tool is a
/// printed skip (`None`); under `CI=true` it fails the test, since `.ci/run`
/// installs every tool.
pub fn tool_or_skip(name: &str, install: &str) -> Option<PathBuf> {
    if let Some(path) = which(name) {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("{name} is required under CI=true: install it with `{install}`");
    }
    eprintln!("skipped: {name} is not installed (install it with `{install}`)");
    None
}

/// The first `name` on this process's PATH, else in the system folders a
/// user's PATH often lacks (Debian puts `sshd` in /usr/sbin).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
