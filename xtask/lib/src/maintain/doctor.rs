//! `cargo xtask doctor`: what is installed and what is missing for each task,
//! each missing item with the one command that installs it. `setup` prints
//! the same table when it is done.

use anyhow::Result;
use xshell::cmd;

use crate::exec::Ctx;
use crate::rustup;
use crate::targets::CROSS_CHECK_TARGETS;
use crate::tools::{self, Need, Tool};

#[derive(clap::Args, Debug)]
pub struct Doctor {}

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
        Ok(())
    }
}

/// The tools of each section besides the core ones, in `tools::ALL` order.
const SECTIONS: [(&str, &[Tool]); 11] = [
    (
        "cross-compiling and running foreign binaries",
        &[Tool::CargoZigbuild, Tool::Zig, Tool::QemuAarch64],
    ),
    (
        "container images and registries",
        &[
            Tool::Podman,
            Tool::Runc,
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
