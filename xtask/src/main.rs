//! `cargo xtask`: every build, test and release step of this workspace, in
//! Rust. The tasks are the `xtask-lib` library's (`xtask/lib/`); this
//! binary runs its command line with the workspace's own tasks beside them
//! (`Own` below, listed under "Project" in `cargo xtask help`): add yours
//! there.

use anyhow::{Context, Result};
use xshell::cmd;
use xtask_lib::{Ctx, OwnTasks};

fn main() -> std::process::ExitCode {
    xtask_lib::main_with::<Own>()
}

/// The workspace's own tasks: one variant each, its doc comment the line
/// `cargo xtask help` shows.
#[derive(clap::Subcommand, Debug)]
enum Own {
    /// Print the service's effective configuration for an environment (its own `config show`, secrets redacted)
    Config {
        /// The environment whose files and defaults apply: dev, staging or prod
        #[arg(long, default_value = "dev", value_name = "ENV")]
        env: String,
    },
}

impl OwnTasks for Own {
    fn run(self, ctx: &Ctx) -> Result<()> {
        match self {
            Own::Config { env } => show_config(ctx, &env),
        }
    }
}

/// Builds the service as `cargo xtask build` does (stamped, so the two
/// share one build) and runs its `config show` from the workspace root,
/// where `config/` is.
fn show_config(ctx: &Ctx, env: &str) -> Result<()> {
    let cargo = ctx.cargo_path();
    let settings = &ctx.project.settings;
    let (package, binary) = (&settings.package, &settings.binary);
    let build = cmd!(ctx.sh, "{cargo} build --package {package} --bin {binary}");
    ctx.run(ctx.stamped(build)?).context("build the service")?;
    let built = ctx.project.target_dir.join("debug").join(binary);
    ctx.run(cmd!(ctx.sh, "{built} config show").env("APP_ENV", env))
        .with_context(|| format!("show the configuration with APP_ENV={env}"))
}
