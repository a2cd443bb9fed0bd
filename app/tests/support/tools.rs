//! External tools in tests, shared by the test suites of every crate (the
//! xtask's tests include this file by path): a missing tool is a printed skip
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
    skip(&format!("{name} is not installed"), install);
    None
}

/// Prints why a test did not run its real part, and records it for the
/// summary of `cargo xtask test` (in the file `$XTASK_SKIPPED` names, one
/// tab-separated line per skip: test, reason, how to fix it).
pub fn skip(reason: &str, install: &str) {
    eprintln!("skipped: {reason} (install it with `{install}`)");
    let Some(log) = std::env::var_os("XTASK_SKIPPED") else {
        return;
    };
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let line = format!("{test}\t{reason}\t{install}\n");
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
    if let Err(err) = appended {
        eprintln!(
            "could not record the skip in {}: {err}",
            log.to_string_lossy()
        );
    }
}

/// The first `name` on this process's PATH, else in the system folders a
/// user's PATH often lacks (Debian puts `sshd` in /usr/sbin), else in the
/// virtual environment `cargo xtask setup` installs the Python tools into
/// (`cargo xtask test` puts it on PATH; a plain `cargo test` does not).
/// Some wheels (`rotel`) carry their binary inside the package instead:
/// `<venv>/lib/python3.*/site-packages/<package>/<name>` is looked in last.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .chain(python_venv().map(|venv| venv.join("bin")))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .or_else(|| in_a_python_package(name))
}

fn in_a_python_package(name: &str) -> Option<PathBuf> {
    let lib = python_venv()?.join("lib");
    let entries = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .collect::<Vec<_>>()
    };
    entries(&lib)
        .into_iter()
        .flat_map(|python| entries(&python.join("site-packages")))
        .map(|package| package.join(name))
        .find(|candidate| candidate.is_file())
}

/// Where `cargo xtask setup` puts the Python tools; the same rule as
/// `tools::python_venv` in the xtask.
pub fn python_venv() -> Option<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    set("XTASK_VENV").map(PathBuf::from).or_else(|| {
        let data = set("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| set("HOME").map(|home| PathBuf::from(home).join(".local/share")))?;
        Some(data.join("cargo-xtask/venv"))
    })
}

/// Where `cargo xtask setup --only hosts` builds the Debian tree the
/// real-host tests boot; the same rule as `tools::host_tree` in the xtask.
pub fn host_tree() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XTASK_HOST_TREE").filter(|dir| !dir.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    Some(python_venv()?.with_file_name("debian-bookworm"))
}
