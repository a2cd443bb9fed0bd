//! `cargo xtask doctor`: what is installed and what is missing for each task,
//! each missing item with the one command that installs it.

use anyhow::Result;
use xshell::cmd;

use crate::exec::Ctx;
use crate::tools::{self, Tool};

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
            install: info.install.to_owned(),
            needed_for: info.needed_for.to_owned(),
        }
    }
}

impl Doctor {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let sections = [
            ("build, test, lint, ci", core_checks(ctx)),
            (
                "release targets (targets in [workspace.metadata.xtask])",
                target_checks(ctx),
            ),
            (
                "cross-compiling and running foreign binaries",
                vec![
                    Check::tool(Tool::CargoZigbuild),
                    Check::tool(Tool::Zig),
                    Check::tool(Tool::QemuAarch64),
                ],
            ),
            (
                "container images",
                vec![Check::tool(Tool::Podman), Check::tool(Tool::Skopeo)],
            ),
            ("systemd units", vec![Check::tool(Tool::SystemdAnalyze)]),
            (
                "checks in the test suite, and benchmarks",
                vec![
                    Check::tool(Tool::Actionlint),
                    Check::tool(Tool::Hyperfine),
                    Check::tool(Tool::Wrk),
                    Check::tool(Tool::Go),
                ],
            ),
        ];
        let mut missing = 0;
        for (title, checks) in &sections {
            println!("{title}");
            for check in checks {
                match &check.found {
                    Some(location) => println!("  ok       {:<32} {location}", check.name),
                    None => {
                        missing += 1;
                        println!(
                            "  missing  {:<32} {}   ({})",
                            check.name, check.install, check.needed_for
                        );
                    }
                }
            }
        }
        if missing == 0 {
            println!("everything is installed");
        } else {
            println!("{missing} missing: run the commands above to install them");
        }
        Ok(())
    }
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
        install: Tool::Rustup.info().install.to_owned(),
        needed_for: "everything".to_owned(),
    }];
    let components = installed(ctx, "component");
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
    checks.extend([Check::tool(Tool::Git), Check::tool(Tool::CargoNextest)]);
    checks
}

fn target_checks(ctx: &Ctx) -> Vec<Check> {
    let installed_targets = installed(ctx, "target").unwrap_or_default();
    ctx.project
        .settings
        .targets
        .iter()
        .map(|target| Check {
            name: target.clone(),
            found: installed_targets
                .contains(target)
                .then(|| "rustup target".to_owned()),
            install: format!("rustup target add {target}"),
            needed_for: "release builds".to_owned(),
        })
        .collect()
}

/// `rustup <kind> list --installed`, or `None` without rustup.
fn installed(ctx: &Ctx, kind: &str) -> Option<Vec<String>> {
    let rustup = tools::find(Tool::Rustup)?;
    let listing = cmd!(ctx.sh, "{rustup} {kind} list --installed")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()?;
    Some(listing.lines().map(str::to_owned).collect())
}
