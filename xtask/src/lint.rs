//! `cargo xtask lint`: formatting and clippy, warnings denied. Both compile
//! nothing that `build` and `test` do not share.

use anyhow::{Context, Result};
use xshell::cmd;

use crate::exec::Ctx;

#[derive(clap::Args, Debug)]
pub struct Lint {}

impl Lint {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        fmt(ctx)?;
        clippy(ctx)
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
