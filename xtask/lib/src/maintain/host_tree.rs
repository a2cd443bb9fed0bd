//! `cargo xtask setup --only hosts`: the Debian 12 tree the real-host tests
//! boot with `systemd-nspawn -b` (systemd 252 as PID 1, sshd on the host's
//! own loopback), built once per machine with `debootstrap` and kept beside
//! the Python tools (`tools::host_tree`). Each test boots it through an
//! overlay of its own, so the tree itself never changes after setup.

use anyhow::{Context, Result};

use crate::exec::Ctx;
use crate::tools::{self, Tool};
use crate::util::TempFolder;

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

/// The tree, when it is built and up to date.
pub fn ready() -> Option<std::path::PathBuf> {
    let tree = tools::host_tree()?;
    let marker = std::fs::read_to_string(tree.join(MARKER)).ok()?;
    (marker == recipe()).then_some(tree)
}

/// Builds the tree unless an identical one is there. debootstrap needs
/// root: as root the commands run as they are, with `via_sudo` (a CI
/// runner's password-less sudo) through sudo, and otherwise the command to
/// run is left for the user.
pub fn build(
    ctx: &Ctx,
    is_root: bool,
    via_sudo: bool,
    left_for_user: &mut Vec<String>,
) -> Result<()> {
    let tree = tools::host_tree()
        .context("no place for the host tree: set XTASK_HOST_TREE, XDG_DATA_HOME or HOME")?;
    if ready().is_some() {
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
        if !is_root && !via_sudo {
            left_for_user.push(format!(
                "sudo cargo xtask setup --only hosts (debootstrap needs root; it builds {})",
                tree.display()
            ));
            return Ok(());
        }
    }
    let elevate = !is_root && via_sudo;
    // A command as root: itself, or through sudo.
    let as_root = |program: &std::path::Path| {
        if elevate {
            ctx.sh.cmd("sudo").arg(program)
        } else {
            ctx.sh.cmd(program)
        }
    };
    let debootstrap = debootstrap.unwrap_or_else(|| "debootstrap".into());
    let partial = tree.with_extension("partial");
    if partial.exists() {
        ctx.run(as_root("rm".as_ref()).arg("-rf").arg(&partial))?;
    }
    if let Some(parent) = tree.parent().filter(|_| !ctx.dry_run) {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    ctx.run(
        as_root(&debootstrap)
            .arg("--variant=minbase")
            .arg(format!("--include={PACKAGES}"))
            .arg(SUITE)
            .arg(&partial),
    )
    .context(
        "build the Debian tree for the real-host tests (debootstrap downloads from deb.debian.org)",
    )?;
    if ctx.dry_run {
        return Ok(());
    }
    // The tree belongs to root: the files are drafted here, then installed.
    let drafts = TempFolder::new("xtask-host-tree")?;
    let (sshd, marker) = (
        drafts.path().join("sshd.conf"),
        drafts.path().join("marker"),
    );
    std::fs::write(&sshd, SSHD_CONFIG).with_context(|| format!("write {}", sshd.display()))?;
    std::fs::write(&marker, recipe()).with_context(|| format!("write {}", marker.display()))?;
    let sshd_target = partial.join("etc/ssh/sshd_config.d/xtask-tests.conf");
    let (root_home, marker_target) = (partial.join("root"), partial.join(MARKER));
    ctx.run(
        as_root("install".as_ref())
            .args(["-D", "-m", "644"])
            .arg(&sshd)
            .arg(&sshd_target),
    )?;
    ctx.run(as_root("chmod".as_ref()).arg("700").arg(&root_home))?;
    ctx.run(
        as_root("install".as_ref())
            .args(["-m", "644"])
            .arg(&marker)
            .arg(&marker_target),
    )?;
    if tree.exists() {
        ctx.run(as_root("rm".as_ref()).arg("-rf").arg(&tree))?;
    }
    ctx.run(as_root("mv".as_ref()).arg("-T").arg(&partial).arg(&tree))?;
    println!("host tree: built {}", tree.display());
    Ok(())
}
