//! The Rust toolchain's installable parts: which targets and components are
//! there, and adding the missing ones with rustup.
//!
//! rustup is not safe against itself: two `rustup target add` of one target
//! at once both download into the same `.partial` file and one fails. Every
//! install therefore happens under an exclusive lock on a file in the rustup
//! home, shared by every checkout and every `cargo xtask` process that uses
//! that home, and looks again under the lock before adding anything. The
//! lock is an OS file lock, so it goes away with a process that dies.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;

use anyhow::{Context, Result};
use xshell::cmd;

use crate::exec::Ctx;
use crate::tools::{self, Tool};

/// The lock file of rustup installs, in the rustup home.
const LOCK_FILE: &str = "cargo-xtask-install.lock";
/// The lock file of `setup`'s package installs (apt, pip, cargo install):
/// another file, since `setup` installs Rust parts first under the other.
const PACKAGES_LOCK_FILE: &str = "cargo-xtask-packages.lock";

/// Installs every target of `triples` that is missing, at most once however
/// many processes ask at the same time. Without rustup it does nothing:
/// cargo then reports a missing target itself.
pub fn ensure_targets(ctx: &Ctx, triples: &[&str]) -> Result<()> {
    let missing = missing_targets(ctx, triples)?;
    if missing.is_empty() {
        return Ok(());
    }
    let Some(rustup) = tools::find(Tool::Rustup) else {
        return Ok(());
    };
    if ctx.dry_run {
        return ctx.run(cmd!(ctx.sh, "{rustup} target add {missing...}"));
    }
    let _lock = InstallLock::acquire(LOCK_FILE, "Rust targets or components")?;
    // Another process may have installed them while this one waited.
    let missing = missing_targets(ctx, triples)?;
    if missing.is_empty() {
        return Ok(());
    }
    let what = missing.join(", ");
    ctx.run_reporting(cmd!(ctx.sh, "{rustup} target add {missing...}"))
        .with_context(|| format!("install the rustup target {what}"))
}

/// Installs the missing components of `names` (rustfmt, clippy), under the
/// same lock as targets.
pub fn ensure_components(ctx: &Ctx, names: &[&str]) -> Result<()> {
    let Some(rustup) = tools::find(Tool::Rustup) else {
        return Ok(());
    };
    let missing = |ctx: &Ctx| -> Result<Vec<String>> {
        let installed = installed(ctx, "component")?;
        Ok(names
            .iter()
            .filter(|name| !installed.iter().any(|line| is_component(line, name)))
            .map(|name| (*name).to_owned())
            .collect())
    };
    if missing(ctx)?.is_empty() {
        return Ok(());
    }
    let _lock = (!ctx.dry_run)
        .then(|| InstallLock::acquire(LOCK_FILE, "Rust targets or components"))
        .transpose()?;
    let missing = missing(ctx)?;
    if missing.is_empty() {
        return Ok(());
    }
    let what = missing.join(", ");
    ctx.run_reporting(cmd!(ctx.sh, "{rustup} component add {missing...}"))
        .with_context(|| format!("install the rustup component {what}"))
}

/// The dated nightly `sanitize` runs Miri and the sanitizers with, pinned
/// so that CI does not change under us; move it forward on purpose.
pub const NIGHTLY: &str = "nightly-2026-05-20";
/// What `sanitize` needs of it: Miri, and the standard library's sources
/// (`-Zbuild-std` builds an instrumented std for the sanitizers).
const NIGHTLY_COMPONENTS: [&str; 2] = ["miri", "rust-src"];

/// Whether the pinned nightly has Miri and the standard library's sources.
pub fn nightly_ready(ctx: &Ctx) -> bool {
    let Some(rustup) = tools::find(Tool::Rustup) else {
        return false;
    };
    let listed = cmd!(
        ctx.sh,
        "{rustup} component list --installed --toolchain {NIGHTLY}"
    )
    .quiet()
    .ignore_stderr()
    .read();
    listed.is_ok_and(|listed| {
        NIGHTLY_COMPONENTS
            .iter()
            .all(|name| listed.lines().any(|line| is_component(line, name)))
    })
}

/// Installs the pinned nightly with its components (minimal profile),
/// under the install lock; a no-op when it is there.
pub fn ensure_nightly(ctx: &Ctx) -> Result<()> {
    if nightly_ready(ctx) {
        return Ok(());
    }
    let rustup = tools::require(Tool::Rustup)?;
    let _lock = (!ctx.dry_run)
        .then(|| InstallLock::acquire(LOCK_FILE, "Rust targets or components"))
        .transpose()?;
    if nightly_ready(ctx) {
        return Ok(());
    }
    let components = NIGHTLY_COMPONENTS.join(",");
    ctx.run_reporting(cmd!(
        ctx.sh,
        "{rustup} toolchain install {NIGHTLY} --profile minimal --component {components}"
    ))
    .with_context(|| format!("install the toolchain {NIGHTLY} with {components}"))
}

/// The targets of `triples` whose standard library is not installed.
pub fn missing_targets(ctx: &Ctx, triples: &[&str]) -> Result<Vec<String>> {
    // A target's standard library sits in the toolchain's lib/rustlib;
    // looking there saves asking rustup, which takes longer than a no-op
    // build.
    if let Some(toolchain) = ctx.toolchain_dir() {
        let rustlib = toolchain.join("lib/rustlib");
        return Ok(triples
            .iter()
            .filter(|triple| !rustlib.join(triple).join("lib").is_dir())
            .map(|triple| (*triple).to_owned())
            .collect());
    }
    if tools::find(Tool::Rustup).is_none() {
        return Ok(Vec::new());
    }
    let installed = installed(ctx, "target")?;
    Ok(triples
        .iter()
        .filter(|triple| !installed.iter().any(|line| line == *triple))
        .map(|triple| (*triple).to_owned())
        .collect())
}

/// `rustup component list --installed` names components with the host
/// triple: `clippy-x86_64-unknown-linux-gnu`.
fn is_component(line: &str, name: &str) -> bool {
    line == name
        || line
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('-') && !rest[1..].starts_with("preview"))
}

/// `rustup <kind> list --installed`, one name per line.
pub fn installed(ctx: &Ctx, kind: &str) -> Result<Vec<String>> {
    let rustup = tools::require(Tool::Rustup)?;
    let listing = cmd!(ctx.sh, "{rustup} {kind} list --installed")
        .quiet()
        .ignore_stderr()
        .read()
        .with_context(|| format!("list the installed rustup {kind}s"))?;
    Ok(listing.lines().map(str::to_owned).collect())
}

/// The exclusive lock every install takes; released when dropped, or by the
/// OS when the process dies.
pub struct InstallLock {
    _file: File,
}

impl InstallLock {
    /// The lock of package installs, which `setup` holds while it checks
    /// what is missing and installs it (apt and pip fail, rather than wait,
    /// when another install holds their own locks).
    pub fn packages() -> Result<InstallLock> {
        InstallLock::acquire(PACKAGES_LOCK_FILE, "packages")
    }

    fn acquire(file_name: &str, what: &str) -> Result<InstallLock> {
        let home = rustup_home()?;
        std::fs::create_dir_all(&home)
            .with_context(|| format!("create the rustup home {}", home.display()))?;
        let path = home.join(file_name);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("open the install lock {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                eprintln!(
                    "waiting for another process that is installing {what} (lock {})",
                    path.display()
                );
                file.lock()
                    .with_context(|| format!("lock {}", path.display()))?;
            }
            Err(TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("lock {}", path.display()));
            }
        }
        Ok(InstallLock { _file: file })
    }
}

/// `$RUSTUP_HOME`, else `~/.rustup`, as rustup itself decides.
fn rustup_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("RUSTUP_HOME").filter(|home| !home.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME").context("neither RUSTUP_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".rustup"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_recognised_with_their_host_suffix() {
        let check = |line: &str, name: &str, expected: bool| {
            assert_eq!(is_component(line, name), expected, "{line} / {name}");
        };
        check("clippy-x86_64-unknown-linux-gnu", "clippy", true);
        check("rustfmt-x86_64-unknown-linux-gnu", "rustfmt", true);
        check("rustfmt", "rustfmt", true);
        check("rust-std-x86_64-unknown-linux-gnu", "rustfmt", false);
        check("clippy-preview-x86_64-unknown-linux-gnu", "clippy", false);
        check("cargo-x86_64-unknown-linux-gnu", "clippy", false);
    }
}
