//! `cargo xtask doctor`: what is installed and what is missing for each task,
//! each missing item with the one command that installs it. `setup` prints
//! the same table when it is done. `--disk` adds what `setup` left on this
//! machine, where, and its size here, measured as `du` does.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use xshell::cmd;

use crate::exec::Ctx;
use crate::rustup;
use crate::targets::CROSS_CHECK_TARGETS;
use crate::tools::{self, Need, Tool};

#[derive(clap::Args, Debug)]
pub struct Doctor {
    /// Also show what `setup` installed where, and the disk it takes here
    /// (docs/setup.md says how to remove each)
    #[arg(long)]
    disk: bool,
}

/// One line of the report.
struct Check {
    name: String,
    /// Where it was found, or `None` when missing.
    found: Option<String>,
    install: String,
    needed_for: String,
}

impl Check {
    fn tool(tool: Tool) -> Check {
        let info = tool.info();
        Check {
            name: info.binary.to_owned(),
            found: tools::find(tool).map(|path| path.display().to_string()),
            install: info.install(),
            needed_for: info.needed_for.to_owned(),
        }
    }
}

impl Doctor {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        report(ctx);
        if self.disk {
            disk_report(ctx);
        }
        Ok(())
    }
}

/// The disk a folder (or file) takes, as `du` counts it: allocated blocks,
/// without following links; what cannot be read counts as nothing.
fn disk_usage(path: &Path) -> u64 {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let own = metadata.blocks() * 512;
    if !metadata.is_dir() {
        return own;
    }
    let children = std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| disk_usage(&entry.path()))
                .sum()
        })
        .unwrap_or(0);
    own + children
}

fn megabytes(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1_000_000.0)
}

/// What `setup` left on this machine: each part, where it is, and its size.
fn disk_report(ctx: &Ctx) {
    let mut rows: Vec<(String, Vec<PathBuf>)> = Vec::new();
    let sysroot = cmd!(ctx.sh, "rustc --print sysroot")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .map(PathBuf::from);
    if let Some(sysroot) = &sysroot {
        let host = cmd!(ctx.sh, "rustc -vV").quiet().read().unwrap_or_default();
        let host = host
            .lines()
            .find_map(|line| line.strip_prefix("host: "))
            .unwrap_or_default()
            .to_owned();
        let targets = wanted_targets(ctx)
            .into_iter()
            .filter(|triple| *triple != host)
            .map(|triple| sysroot.join("lib/rustlib").join(triple))
            .filter(|path| path.exists())
            .collect();
        rows.push((
            "Rust targets of the matrix, lint and tests".to_owned(),
            targets,
        ));
        if let Some(toolchains) = sysroot.parent() {
            let nightly = std::fs::read_dir(toolchains)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .map(|entry| entry.path())
                        .filter(|path| {
                            path.file_name()
                                .and_then(|name| name.to_str())
                                .is_some_and(|name| name.starts_with(rustup::NIGHTLY))
                        })
                        .collect()
                })
                .unwrap_or_default();
            rows.push((format!("{} with Miri (sanitize)", rustup::NIGHTLY), nightly));
        }
    }
    for (what, place) in [
        (
            "the Python tools' virtual environment",
            tools::python_venv(),
        ),
        ("the npm packages", tools::node_prefix()),
        (
            "the Debian 12 tree of the real-host tests",
            tools::host_tree(),
        ),
    ] {
        rows.push((
            what.to_owned(),
            place.into_iter().filter(|path| path.exists()).collect(),
        ));
    }
    let crates = [Tool::CargoNextest, Tool::RustAuditInfo, Tool::CargoFuzz]
        .into_iter()
        .filter_map(tools::find)
        .collect();
    rows.push(("crates installed with cargo install".to_owned(), crates));
    println!(
        "what setup left on this machine (as du counts it; docs/setup.md says how to remove each)"
    );
    for (what, paths) in rows {
        let size: u64 = paths.iter().map(|path| disk_usage(path)).sum();
        let place = match paths.as_slice() {
            [] => "(none)".to_owned(),
            [one] => one.display().to_string(),
            [first, ..] => format!("{} and {} more", first.display(), paths.len() - 1),
        };
        println!("  {:>8}  {what:<44} {place}", megabytes(size));
    }
    println!(
        "  Debian packages: `dpkg-query -W -f='${{Installed-Size}} ${{Package}}\\n'` lists their sizes in KiB"
    );
}

/// The tools of each section besides the core ones, in `tools::ALL` order.
const SECTIONS: [(&str, &[Tool]); 12] = [
    (
        "cross-compiling and running foreign binaries",
        &[Tool::CargoZigbuild, Tool::Zig, Tool::QemuAarch64],
    ),
    (
        "container images and registries",
        &[
            Tool::Podman,
            Tool::Runc,
            Tool::Catatonit,
            Tool::Skopeo,
            Tool::DockerRegistry,
            Tool::Htpasswd,
        ],
    ),
    (
        "systemd units",
        &[Tool::SystemdAnalyze, Tool::SystemdSocketActivate],
    ),
    (
        "deploys to remote hosts, and real systemd hosts for their tests",
        &[
            Tool::Ssh,
            Tool::Sshd,
            Tool::Debootstrap,
            Tool::SystemdNspawn,
        ],
    ),
    (
        "Debian and RPM packages, and the apt repository",
        &[Tool::Lintian, Tool::Gpgv, Tool::Rpm, Tool::Rpmlint],
    ),
    (
        "Kubernetes manifests and alerts",
        &[Tool::KubernetesValidate, Tool::Promtool, Tool::Kubectl],
    ),
    (
        "traces and exemplars",
        &[Tool::Prometheus, Tool::RotelAgent],
    ),
    (
        "verifying signed releases with other tools",
        &[Tool::SigstoreJs, Tool::InToto],
    ),
    (
        "checks in the test suite",
        &[
            Tool::Curl,
            Tool::Actionlint,
            Tool::RustAuditInfo,
            Tool::CycloneDx,
            Tool::StressNg,
        ],
    ),
    (
        "benchmarks (`cargo xtask setup --bench` installs them)",
        &[Tool::Hyperfine, Tool::Wrk, Tool::Go],
    ),
    (
        "publishing releases (`publish`; GitHub's runners have it)",
        &[Tool::Gh],
    ),
    (
        "fuzzing (`cargo xtask setup --fuzz` installs it)",
        &[Tool::CargoFuzz],
    ),
];

/// Prints the table and returns how many items the tests need and lack
/// (benchmark tools are reported but not counted).
pub fn report(ctx: &Ctx) -> usize {
    let mut sections = vec![
        ("build, test, lint, ci", core_checks(ctx), true),
        (
            "Rust targets (`targets` of [workspace.metadata.xtask], and lint's)",
            target_checks(ctx),
            true,
        ),
    ];
    for (title, section_tools) in SECTIONS {
        let counted = section_tools
            .iter()
            .all(|tool| tool.info().need == Need::Tests);
        let mut checks: Vec<Check> = section_tools
            .iter()
            .map(|tool| Check::tool(*tool))
            .collect();
        if section_tools.contains(&Tool::SystemdNspawn) {
            checks.push(Check {
                name: "Debian 12 tree (real hosts)".to_owned(),
                found: super::host_tree::ready().map(|tree| tree.display().to_string()),
                install: "cargo xtask setup --only hosts".to_owned(),
                needed_for: "the real-host tests boot it".to_owned(),
            });
        }
        sections.push((title, checks, counted));
    }
    let mut missing = 0;
    for (title, checks, counted) in &sections {
        println!("{title}");
        for check in checks {
            match &check.found {
                Some(location) => println!("  ok       {:<32} {location}", check.name),
                None => {
                    if *counted {
                        missing += 1;
                    }
                    println!(
                        "  missing  {:<32} {}   ({})",
                        check.name, check.install, check.needed_for
                    );
                }
            }
        }
    }
    if missing == 0 {
        println!("everything the tasks and tests need is installed");
    } else {
        println!(
            "{missing} missing: run `cargo xtask setup`, or the commands above, to install them"
        );
    }
    missing
}

fn core_checks(ctx: &Ctx) -> Vec<Check> {
    let cargo = ctx.cargo_path();
    let cargo_version = cmd!(ctx.sh, "{cargo} --version")
        .quiet()
        .ignore_stderr()
        .read()
        .ok();
    let mut checks = vec![Check {
        name: "cargo".to_owned(),
        found: cargo_version,
        install: Tool::Rustup.info().install(),
        needed_for: "everything".to_owned(),
    }];
    let components = rustup::installed(ctx, "component").ok();
    for (component, needed_for) in [("rustfmt", "lint"), ("clippy", "lint")] {
        checks.push(Check {
            name: component.to_owned(),
            found: match &components {
                Some(installed) => installed
                    .iter()
                    .any(|name| name.starts_with(component))
                    .then(|| "rustup component".to_owned()),
                None => tools::find(Tool::Rustup).map(|_| "(not checked)".to_owned()),
            },
            install: format!("rustup component add {component}"),
            needed_for: needed_for.to_owned(),
        });
    }
    checks.push(Check {
        name: format!("{} (miri, rust-src)", rustup::NIGHTLY),
        found: rustup::nightly_ready(ctx).then(|| "rustup toolchain".to_owned()),
        install: format!(
            "rustup toolchain install {} --profile minimal --component miri,rust-src",
            rustup::NIGHTLY
        ),
        needed_for: "sanitize (Miri and the sanitizers)".to_owned(),
    });
    checks.extend([
        Check::tool(Tool::Git),
        Check::tool(Tool::Rustup),
        Check::tool(Tool::CargoNextest),
    ]);
    checks
}

/// Targets the test suite builds besides the matrix and lint's: the zig
/// reproducibility test links both Apple architectures.
const TEST_TARGETS: [&str; 1] = ["x86_64-apple-darwin"];

/// The release matrix, the targets lint checks, and the tests' own, in
/// that order.
pub fn wanted_targets(ctx: &Ctx) -> Vec<&str> {
    let mut triples: Vec<&str> = ctx
        .project
        .settings
        .targets
        .iter()
        .map(String::as_str)
        .collect();
    for triple in CROSS_CHECK_TARGETS.into_iter().chain(TEST_TARGETS) {
        if !triples.contains(&triple) {
            triples.push(triple);
        }
    }
    triples
}

fn target_checks(ctx: &Ctx) -> Vec<Check> {
    let triples = wanted_targets(ctx);
    let missing = rustup::missing_targets(ctx, &triples).unwrap_or_default();
    triples
        .iter()
        .map(|triple| Check {
            name: (*triple).to_owned(),
            found: (!missing.iter().any(|name| name == triple)).then(|| "rustup target".to_owned()),
            install: format!("rustup target add {triple}"),
            needed_for: if CROSS_CHECK_TARGETS.contains(triple) {
                "lint".to_owned()
            } else {
                "release builds".to_owned()
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tool `setup` installs but `doctor` does not show would be missing
    /// without anyone seeing it.
    #[test]
    fn every_tool_is_in_a_section_of_the_report() {
        let core = [Tool::Git, Tool::Rustup, Tool::CargoNextest];
        for tool in tools::ALL {
            let shown =
                core.contains(&tool) || SECTIONS.iter().any(|(_, tools)| tools.contains(&tool));
            assert!(shown, "{tool:?} is in no section of doctor's report");
        }
    }
}
