//! `cargo xtask build`: compiles the workspace's shipped crates, with the
//! version stamp in the environment so the binary knows its commit.

use anyhow::{Context, Result};
use xshell::cmd;

use crate::exec::Ctx;

#[derive(clap::Args, Debug)]
pub struct Build {
    /// Build with the release profile
    #[arg(long)]
    pub release: bool,
    /// Extra arguments for cargo build, after `--` (e.g. `-- --message-format=json`)
    #[arg(last = true, value_name = "CARGO_ARGS")]
    pub cargo_args: Vec<String>,
}

impl Build {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let release = self.release.then_some("--release");
        let cargo_args = &self.cargo_args;
        // The xtask and its library are excluded: the `cargo xtask` alias
        // has just built them.
        let xtask_lib = env!("CARGO_PKG_NAME");
        let cargo = ctx.cargo_path();
        let build = cmd!(
            ctx.sh,
            "{cargo} build --workspace --exclude xtask --exclude {xtask_lib} {release...} {cargo_args...}"
        );
        ctx.run(ctx.stamped(build)?).context("build the workspace")
    }
}
