//! `cargo xtask clean`: removes the target directory, which holds every build
//! output and the release output folder (`target/dist/`).

use anyhow::{Context, Result};

use crate::exec::Ctx;

#[derive(clap::Args, Debug)]
pub struct Clean {}

impl Clean {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        // The dist folder lives inside the target directory, so this one
        // command removes everything `build`, `dist` and `release` wrote.
        debug_assert!(ctx.project.dist_dir().starts_with(&ctx.project.target_dir));
        ctx.run(ctx.cargo().arg("clean"))
            .context("remove the target directory")
    }
}
