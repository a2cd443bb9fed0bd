//! `cargo xtask`: every build, test and release step of this workspace, in
//! Rust. The tasks are the `xtask-lib` library's (`xtask/lib/`); this
//! binary runs its command line with the workspace's own tasks beside them
//! (`Own` below, listed under "Project" in `cargo xtask help`): add yours
//! there.

use std::path::Path;

use anyhow::{Context, Result, bail};
use xshell::cmd;
use xtask_lib::{Ctx, OwnTasks};

fn main() -> std::process::ExitCode {
    xtask_lib::main_with::<Own>()
}

/// The most bytes the shipped x86_64 binary may take (`check_dist`).
const BUDGET: u64 = 2_100_000;

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

    /// The workspace's own check of every dist and release, before the
    /// folder replaces `target/dist/`: the shipped x86_64 binary stays
    /// within its size budget (docs/releasing.md, "Release profile").
    fn check_dist(_ctx: &Ctx, folder: &Path) -> Result<()> {
        let Ok(triples) = std::fs::read_dir(folder) else {
            return Ok(());
        };
        for triple in triples.flatten() {
            if triple.file_name() != "x86_64-unknown-linux-musl" {
                continue;
            }
            for binary in std::fs::read_dir(triple.path())?.flatten() {
                let size = binary.metadata()?.len();
                let shipped = binary.path();
                let shipped = shipped.strip_prefix(folder).unwrap_or(&shipped).display();
                if size > BUDGET {
                    bail!(
                        "{shipped} is {size} bytes, over its {BUDGET}-byte budget: find what grew (docs/releasing.md, \"Release profile\"), or raise BUDGET in xtask/src/main.rs"
                    );
                }
                eprintln!("checked {shipped}: {size} bytes, within its {BUDGET}-byte budget");
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dist_check_refuses_an_x86_64_binary_over_its_budget() {
        let folder = std::env::temp_dir().join(format!("dist-check-{}", std::process::id()));
        let triple = folder.join("x86_64-unknown-linux-musl");
        std::fs::create_dir_all(&triple).unwrap();
        let ctx = Ctx::new(false).unwrap();
        for (size, fits) in [(BUDGET, true), (BUDGET + 1, false)] {
            let binary = std::fs::File::create(triple.join("app")).unwrap();
            binary.set_len(size).unwrap();
            let checked = Own::check_dist(&ctx, &folder).map_err(|err| err.to_string());
            match checked {
                Ok(()) => assert!(fits, "{size} bytes passed"),
                Err(err) => {
                    assert!(!fits, "{size} bytes refused: {err}");
                    let over = format!(
                        "x86_64-unknown-linux-musl/app is {size} bytes, over its {BUDGET}-byte budget"
                    );
                    assert!(err.starts_with(&over), "{err}");
                }
            }
        }
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
