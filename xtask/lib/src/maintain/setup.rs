//! `cargo xtask setup`: installs on this machine what the tasks and the test
//! suite need, from the one list in `tools.rs`: rustup components and
//! targets, Debian packages (as root, or with sudo), Python tools with pip,
//! and crates with `cargo install`. What is present is skipped, every
//! command is echoed (and only echoed under `--dry-run`), and it ends with
//! `doctor`'s table. CI runs it before `cargo xtask ci`, so no install list
//! lives in shell or YAML.

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::exec::Ctx;
use crate::maintain::doctor;
use crate::rustup;
use crate::tools::{self, Need, Source, Tool};

#[derive(clap::Args, Debug)]
pub struct Setup {
    /// Also install the benchmark tools (wrk, hyperfine, Go)
    #[arg(long)]
    bench: bool,
    /// Also install the fuzzing tool (cargo-fuzz; the pinned nightly comes with the Rust part)
    #[arg(long, conflicts_with = "release")]
    fuzz: bool,
    /// Install only what release, image --push and publish need (a release
    /// runner): the Rust targets, cargo-zigbuild and zig, qemu-user, skopeo
    #[arg(long, conflicts_with = "bench")]
    release: bool,
    /// Install only this part; repeatable [default: all of them]
    #[arg(long, value_enum, value_name = "PART")]
    only: Vec<Part>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// rustup components (rustfmt, clippy), targets (the release matrix,
    /// lint's) and the pinned nightly with Miri (sanitize's)
    Rust,
    /// Debian packages, with apt-get
    Packages,
    /// Python tools, with pip
    Python,
    /// npm packages, with npm
    Node,
    /// Crates, with cargo install
    Crates,
    /// The Debian 12 tree the real-host tests boot (debootstrap, as root)
    Hosts,
}

const ALL_PARTS: [Part; 6] = [
    Part::Rust,
    Part::Packages,
    Part::Python,
    Part::Node,
    Part::Crates,
    Part::Hosts,
];

/// How Debian packages can be installed here.
enum Privilege {
    Root,
    Sudo,
    /// Neither root nor a sudo that works without a password.
    None,
}

impl Setup {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let parts = if self.only.is_empty() {
            ALL_PARTS.to_vec()
        } else {
            self.only.clone()
        };
        // Commands setup could not run itself, for the user to run.
        let mut left_for_user: Vec<String> = Vec::new();
        if parts.contains(&Part::Rust) {
            install_rust_parts(ctx, !self.release, &mut left_for_user)?;
        }
        let missing_now = || -> Vec<Tool> {
            tools::ALL
                .into_iter()
                .filter(|tool| {
                    let need = tool.info().need;
                    if self.release {
                        return tools::RELEASE.contains(tool);
                    }
                    need == Need::Tests
                        || (self.bench && need == Need::Bench)
                        || (self.fuzz && need == Need::Fuzz)
                })
                .filter(|tool| tools::find(*tool).is_none())
                .collect()
        };
        if parts.iter().any(|part| *part != Part::Rust) && !missing_now().is_empty() {
            // Another setup may install them while this one waits: what is
            // missing is read again under the lock.
            let _lock = (!ctx.dry_run)
                .then(rustup::InstallLock::packages)
                .transpose()?;
            let missing = missing_now();
            let python_packages = if parts.contains(&Part::Python) {
                python_prerequisites(ctx, &missing)
            } else {
                &[]
            };
            for part in &parts {
                match part {
                    Part::Rust | Part::Hosts => {}
                    Part::Packages => {
                        install_packages(ctx, &missing, python_packages, &mut left_for_user)?
                    }
                    Part::Python => install_python_tools(ctx, &missing, &mut left_for_user)?,
                    Part::Node => install_npm_packages(ctx, &missing, &mut left_for_user)?,
                    Part::Crates => install_crates(ctx, &missing)?,
                }
            }
        }
        // Not for a release runner: only the tests boot hosts.
        if parts.contains(&Part::Hosts) && !self.release {
            let privilege = privilege(ctx);
            super::host_tree::build(
                ctx,
                matches!(privilege, Privilege::Root),
                matches!(privilege, Privilege::Sudo),
                &mut left_for_user,
            )?;
        }
        println!();
        let still_missing = doctor::report(ctx);
        let in_ci = crate::util::in_ci();
        if !left_for_user.is_empty() {
            println!("\nsetup could not run these; run them yourself:");
            for command in &left_for_user {
                println!("  {command}");
            }
            if in_ci {
                bail!(
                    "setup could not install everything under CI=true: {} (run it as root or with a password-less sudo)",
                    left_for_user.join("; ")
                );
            }
        }
        if in_ci && !ctx.dry_run && parts.len() == ALL_PARTS.len() && still_missing > 0 {
            bail!(
                "{still_missing} tools are still missing after setup (see the table above): install them, or fix the package that should have provided them"
            );
        }
        Ok(())
    }
}

/// rustfmt and clippy, the targets, and (unless for a release runner) the
/// pinned nightly that `sanitize` runs Miri and the sanitizers with.
fn install_rust_parts(ctx: &Ctx, nightly: bool, left_for_user: &mut Vec<String>) -> Result<()> {
    if tools::find(Tool::Rustup).is_none() {
        left_for_user.push(Tool::Rustup.info().install());
        return Ok(());
    }
    rustup::ensure_components(ctx, &["rustfmt", "clippy"])?;
    rustup::ensure_targets(ctx, &doctor::wanted_targets(ctx))?;
    if nightly {
        rustup::ensure_nightly(ctx)?;
    }
    Ok(())
}

/// The packages of `source_kind` that provide the missing tools, each once,
/// in list order.
fn packages(missing: &[Tool], pick: fn(Source) -> Option<&'static str>) -> Vec<&'static str> {
    let mut packages = Vec::new();
    for tool in missing {
        if let Some(package) = pick(tool.info().source)
            && !packages.contains(&package)
        {
            packages.push(package);
        }
    }
    packages
}

/// Packages whose install enables and starts a daemon: the tests need only
/// their binaries, and start throwaway copies on loopback themselves.
const DAEMONS: [(&str, &str); 3] = [
    ("docker-registry", "docker-registry.service"),
    ("openssh-server", "ssh.service"),
    ("prometheus", "prometheus.service"),
];

/// Debian's switch that forbids maintainer scripts to start services
/// (`invoke-rc.d` and `deb-systemd-invoke` obey it; exit code 101: "action
/// forbidden by policy").
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Installs the Debian packages without their recommends (which would add
/// more daemons, such as prometheus-node-exporter on :9100) and without
/// starting or enabling any service: on a workstation, `setup` must not
/// leave Prometheus on :9090, a registry on :5000 or sshd on :22.
fn install_packages(
    ctx: &Ctx,
    missing: &[Tool],
    extra: &[&'static str],
    left_for_user: &mut Vec<String>,
) -> Result<()> {
    let mut packages = packages(missing, |source| match source {
        Source::Apt(package) => Some(package),
        _ => None,
    });
    for package in extra {
        if !packages.contains(package) {
            packages.push(package);
        }
    }
    if packages.is_empty() {
        return Ok(());
    }
    let Ok(apt_get) = which::which("apt-get") else {
        left_for_user.push(format!(
            "install with your package manager (these are Debian's names): {}",
            packages.join(" ")
        ));
        return Ok(());
    };
    let via_sudo = match privilege(ctx) {
        Privilege::Root => false,
        Privilege::Sudo => true,
        Privilege::None => {
            left_for_user.push(format!(
                "sudo apt-get update && sudo apt-get install -y --no-install-recommends {}",
                packages.join(" ")
            ));
            return Ok(());
        }
    };
    let sh = &ctx.sh;
    // As root the variable is set on the command; through sudo it is
    // passed as sudo's `VAR=value` argument.
    let _env = (!via_sudo).then(|| sh.push_env("DEBIAN_FRONTEND", "noninteractive"));
    let as_root = |program: &std::path::Path, args: &[&str]| {
        if via_sudo {
            cmd!(
                sh,
                "sudo DEBIAN_FRONTEND=noninteractive {program} {args...}"
            )
        } else {
            cmd!(sh, "{program} {args...}")
        }
    };
    // Forbid service starts for the length of the install, unless the
    // machine already does (container images often ship the file).
    let forbid_starts = !std::path::Path::new(POLICY_RC_D).exists();
    if forbid_starts {
        // Written here as this user, then put in place as root by
        // `install`, so that no shell line runs as root.
        let policy = crate::util::TempFolder::new("xtask-policy-rc")?;
        let draft = policy.path().join("policy-rc.d");
        std::fs::write(
            &draft,
            "#!/bin/sh\n# Written by cargo xtask setup for the length of an install.\nexit 101\n",
        )
        .with_context(|| format!("write {}", draft.display()))?;
        let draft = draft.to_string_lossy();
        ctx.run_reporting(as_root(
            std::path::Path::new("install"),
            &["-m", "755", &draft, POLICY_RC_D],
        ))?;
    }
    let install: Vec<&str> = ["install", "-y", "-qq", "--no-install-recommends"]
        .into_iter()
        .chain(packages.iter().copied())
        .collect();
    let installed = ctx
        .run_reporting(as_root(&apt_get, &["update", "-qq"]))
        .and_then(|()| ctx.run_reporting(as_root(&apt_get, &install)));
    if forbid_starts {
        ctx.run_reporting(as_root(std::path::Path::new("rm"), &["-f", POLICY_RC_D]))?;
    }
    installed?;
    // Maintainer scripts enable the units even when they may not start
    // them, so the daemons would start at the next boot.
    let units: Vec<&str> = DAEMONS
        .iter()
        .filter(|(package, _)| packages.contains(package))
        .map(|(_, unit)| *unit)
        .collect();
    if !units.is_empty()
        && let Ok(systemctl) = which::which("systemctl")
    {
        let disable: Vec<&str> = ["disable", "--quiet"].into_iter().chain(units).collect();
        ctx.run_reporting(as_root(&systemctl, &disable))?;
    }
    Ok(())
}

fn install_python_tools(
    ctx: &Ctx,
    missing: &[Tool],
    left_for_user: &mut Vec<String>,
) -> Result<()> {
    let packages = packages(missing, |source| match source {
        Source::Pip(package) => Some(package),
        _ => None,
    });
    if packages.is_empty() {
        return Ok(());
    }
    let venv = tools::python_venv().context(
        "cannot place the Python tools' virtual environment: set HOME, or XTASK_VENV to a folder",
    )?;
    let sh = &ctx.sh;
    let venv_python = venv.join("bin/python3");
    if !venv_python.is_file() {
        // A dry run cannot know whether the packages step would have
        // installed the venv module, so it shows the command regardless.
        let python = which::which("python3")
            .ok()
            .filter(|python| ctx.dry_run || can_make_venvs(ctx, python));
        let Some(python) = python else {
            left_for_user.push(format!(
                "install Python 3 with its venv module (apt-get install -y python3 python3-venv), then run `cargo xtask setup --only python` again (it installs {} into {})",
                packages.join(" "),
                venv.display()
            ));
            return Ok(());
        };
        ctx.run_reporting(cmd!(sh, "{python} -m venv {venv}"))?;
    }
    ctx.run_reporting(cmd!(
        sh,
        "{venv_python} -m pip install --quiet --disable-pip-version-check {packages...}"
    ))?;
    Ok(())
}

/// The npm packages, into the tools' own folder (never a global install,
/// never the project's own `node_modules`).
fn install_npm_packages(
    ctx: &Ctx,
    missing: &[Tool],
    left_for_user: &mut Vec<String>,
) -> Result<()> {
    let packages: Vec<&str> = packages(missing, |source| match source {
        Source::Npm(packages) => Some(packages),
        _ => None,
    })
    .into_iter()
    .flat_map(str::split_whitespace)
    .collect();
    if packages.is_empty() {
        return Ok(());
    }
    let prefix = tools::node_prefix().context(
        "cannot place the npm tools' folder: set HOME, or XTASK_VENV to a folder beside which it goes",
    )?;
    // A dry run shows the install even where npm is missing (the packages
    // step may be about to install it).
    let npm = which::which("npm")
        .ok()
        .or_else(|| ctx.dry_run.then(|| "npm".into()));
    let Some(npm) = npm else {
        left_for_user.push(format!(
            "install Node.js 18 or later with npm (apt-get install -y nodejs npm), then run `cargo xtask setup --only node` again (it installs {} into {})",
            packages.join(" "),
            prefix.display()
        ));
        return Ok(());
    };
    ctx.run_reporting(cmd!(
        ctx.sh,
        "{npm} install --prefix {prefix} --no-audit --no-fund --no-save --loglevel=error {packages...}"
    ))?;
    Ok(())
}

/// The Debian packages the Python step needs first: Python itself and its
/// venv module, when a Python tool is missing and no virtual environment
/// exists yet that could take it.
fn python_prerequisites(ctx: &Ctx, missing: &[Tool]) -> &'static [&'static str] {
    let wanted = missing
        .iter()
        .any(|tool| matches!(tool.info().source, Source::Pip(_)));
    let venv_exists = tools::python_venv().is_some_and(|venv| venv.join("bin/python3").is_file());
    let can_make_one = which::which("python3").is_ok_and(|python| can_make_venvs(ctx, &python));
    if wanted && !venv_exists && !can_make_one {
        &["python3", "python3-venv"]
    } else {
        &[]
    }
}

/// Whether this Python can create a virtual environment with pip in it
/// (Debian ships `ensurepip` in the separate `python3-venv` package).
fn can_make_venvs(ctx: &Ctx, python: &std::path::Path) -> bool {
    cmd!(ctx.sh, "{python} -c 'import venv, ensurepip'")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
}

fn install_crates(ctx: &Ctx, missing: &[Tool]) -> Result<()> {
    let crates = packages(missing, |source| match source {
        Source::Crate(name) => Some(name),
        _ => None,
    });
    let cargo = ctx.cargo_path();
    for name in crates {
        ctx.run_reporting(cmd!(ctx.sh, "{cargo} install --locked {name}"))?;
    }
    Ok(())
}

fn privilege(ctx: &Ctx) -> Privilege {
    if effective_uid(ctx) == Some(0) {
        return Privilege::Root;
    }
    let sudo_works = which::which("sudo").is_ok_and(|sudo| {
        cmd!(ctx.sh, "{sudo} -n true")
            .quiet()
            .ignore_stderr()
            .run()
            .is_ok()
    });
    if sudo_works {
        Privilege::Sudo
    } else {
        Privilege::None
    }
}

/// The effective user id, from `/proc` on Linux, else from `id -u`.
fn effective_uid(ctx: &Ctx) -> Option<u32> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        return status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|euid| euid.parse().ok());
    }
    cmd!(ctx.sh, "id -u")
        .quiet()
        .read()
        .ok()
        .and_then(|uid| uid.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_package_is_installed_once_in_list_order() {
        let apt = |source| match source {
            Source::Apt(package) => Some(package),
            _ => None,
        };
        assert_eq!(
            packages(
                &[
                    Tool::SystemdAnalyze,
                    Tool::Zig,
                    Tool::SystemdSocketActivate,
                    Tool::QemuAarch64
                ],
                apt
            ),
            ["systemd", "qemu-user"]
        );
    }
}
