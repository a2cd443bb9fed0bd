//! `cargo xtask lint`: formatting, the layering of imports (`layering`), and
//! clippy, warnings denied, for this machine and for one Windows and one
//! macOS target, so that code gated by `cfg(unix)` stays warning-free on
//! every platform `dist` builds.

use anyhow::{Context, Result};
use xshell::cmd;

use crate::exec::Ctx;
use crate::targets::CROSS_CHECK_TARGETS;

#[derive(clap::Args, Debug)]
pub struct Lint {}

impl Lint {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        fmt(ctx)?;
        crate::develop::layering::check(ctx)?;
        clippy(ctx)?;
        clippy_cross(ctx)
    }
}

pub fn fmt(ctx: &Ctx) -> Result<()> {
    ctx.run(ctx.cargo().args(["fmt", "--all", "--check"]))
        .context("check formatting (run `cargo fmt --all` to fix it)")
}

pub fn clippy(ctx: &Ctx) -> Result<()> {
    // Stamped like `build` and `test`, so the three share the build script
    // run of the app instead of re-running it for each.
    let cargo = ctx.cargo_path();
    let clippy = cmd!(
        ctx.sh,
        "{cargo} clippy --workspace --all-targets -- -D warnings"
    );
    ctx.run(ctx.stamped(clippy)?).context("run clippy")
}

/// Clippy on the shipped package (its library and binary, not its tests,
/// which drive Unix processes) for the Windows and macOS targets.
pub fn clippy_cross(ctx: &Ctx) -> Result<()> {
    crate::rustup::ensure_targets(ctx, &CROSS_CHECK_TARGETS)?;
    let cargo = ctx.cargo_path();
    let package = &ctx.project.settings.package;
    let targets: Vec<&str> = CROSS_CHECK_TARGETS
        .iter()
        .flat_map(|triple| ["--target", triple])
        .collect();
    let clippy = cmd!(
        ctx.sh,
        "{cargo} clippy --package {package} {targets...} -- -D warnings"
    );
    ctx.run(ctx.stamped(clippy)?)
        .with_context(|| format!("run clippy for {}", CROSS_CHECK_TARGETS.join(" and ")))
}
