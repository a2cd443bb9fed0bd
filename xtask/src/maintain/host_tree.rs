//! `cargo xtask setup --only hosts`: the Debian 12 tree the real-host tests
//! boot with `systemd-nspawn -b` (systemd 252 as PID 1, sshd on the host's
//! own loopback), built once per machine with `debootstrap` and kept beside
//! the Python tools (`tools::host_tree`). Each test boots it through an
//! overlay of its own, so the tree itself never changes after setup.

use std::path::Path;

use anyhow::{Context, Result};
use xshell::cmd;

use crate::exec::Ctx;
use crate::tools::{self, Tool};

/// The Debian release and what is installed in it. The tree is rebuilt when
/// this changes (it is recorded in the tree's `MARKER` file).
const SUITE: &str = "bookworm";
const PACKAGES: &str =
    "systemd,systemd-sysv,dbus,openssh-server,iproute2,curl,ca-certificates,procps";
/// sshd inside listens on the host's loopback only and takes keys only;
/// each test puts its own throwaway key in `/root/.ssh/authorized_keys`.
const SSHD_CONFIG: &str = "ListenAddress 127.0.0.1\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n";
const MARKER: &str = ".xtask-host-tree";

fn recipe() -> String {
    format!("debootstrap --variant=minbase --include={PACKAGES} {SUITE}\n{SSHD_CONFIG}")
}

/// Builds the tree unless an identical one is there. Needs root
/// (debootstrap); `Err` says what to run instead.
pub fn build(ctx: &Ctx, is_root: bool, left_for_user: &mut Vec<String>) -> Result<()> {
    let tree = tools::host_tree()
        .context("no place for the host tree: set XTASK_HOST_TREE, XDG_DATA_HOME or HOME")?;
    if std::fs::read_to_string(tree.join(MARKER)).is_ok_and(|marker| marker == recipe()) {
        println!("host tree: {} is up to date", tree.display());
        return Ok(());
    }
    // A dry run shows the command even where the packages part (which runs
    // first) has yet to install debootstrap.
    let debootstrap = tools::find(Tool::Debootstrap);
    if !ctx.dry_run {
        if debootstrap.is_none() || tools::find(Tool::SystemdNspawn).is_none() {
            left_for_user.push(
                "cargo xtask setup --only packages --only hosts (debootstrap and systemd-nspawn first)"
                    .to_owned(),
            );
            return Ok(());
        }
        if !is_root {
            left_for_user.push(format!(
                "sudo cargo xtask setup --only hosts (debootstrap needs root; it builds {})",
                tree.display()
            ));
            return Ok(());
        }
    }
    let debootstrap = debootstrap.unwrap_or_else(|| "debootstrap".into());
    let partial = tree.with_extension("partial");
    let sh = &ctx.sh;
    if partial.exists() {
        ctx.run(cmd!(sh, "rm -rf {partial}"))?;
    }
    if let Some(parent) = tree.parent().filter(|_| !ctx.dry_run) {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    ctx.run(cmd!(
        sh,
        "{debootstrap} --variant=minbase --include={PACKAGES} {SUITE} {partial}"
    ))
    .context(
        "build the Debian tree for the real-host tests (debootstrap downloads from deb.debian.org)",
    )?;
    if ctx.dry_run {
        return Ok(());
    }
    let write = |relative: &str, text: &str| -> Result<()> {
        let path = partial.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))
    };
    write("etc/ssh/sshd_config.d/xtask-tests.conf", SSHD_CONFIG)?;
    set_mode(&partial.join("root"), 0o700)?;
    write(MARKER, &recipe())?;
    if tree.exists() {
        ctx.run(cmd!(sh, "rm -rf {tree}"))?;
    }
    std::fs::rename(&partial, &tree)
        .with_context(|| format!("rename {} to {}", partial.display(), tree.display()))?;
    println!("host tree: built {}", tree.display());
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}
