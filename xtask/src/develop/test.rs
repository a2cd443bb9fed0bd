//! `cargo xtask test`: the test suite, with cargo-nextest when it is installed
//! (one process per test, per-test timeouts from `.config/nextest.toml`), else
//! `cargo test`. Extra arguments are passed on unchanged. `--app-binary`
//! runs the service's integration tests against a given build of the
//! service (CI passes the release binary `dist` just built) instead of the
//! debug one.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::exec::Ctx;
use crate::tools::{self, Tool};

#[derive(clap::Args, Debug, Default)]
pub struct Test {
    /// Run the service's integration tests against this binary (e.g. the
    /// release build from dist) instead of the debug build
    #[arg(long, value_name = "PATH")]
    pub app_binary: Option<PathBuf>,
    /// Arguments for cargo nextest run / cargo test (test name filters, --no-capture, ...)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

/// Read by `app/tests/support` to pick the binary under test.
const APP_BINARY_VARIABLE: &str = "APP_TEST_BINARY";

impl Test {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let app_binary = match &self.app_binary {
            Some(binary) if !binary.is_file() => bail!(
                "--app-binary {}: no such file (build it first, e.g. with `cargo xtask dist`)",
                binary.display()
            ),
            Some(binary) => Some(
                std::path::absolute(binary)
                    .with_context(|| format!("make {} absolute", binary.display()))?,
            ),
            None => None,
        };
        let args = &self.args;
        // The whole workspace, unless the arguments pick packages.
        let picks_packages = args
            .iter()
            .any(|arg| arg == "-p" || arg.starts_with("--package"));
        let workspace = (!picks_packages).then_some("--workspace");
        let cargo = ctx.cargo_path();
        let test = if tools::find(Tool::CargoNextest).is_some() {
            cmd!(ctx.sh, "{cargo} nextest run {workspace...} {args...}")
        } else {
            let hint = Tool::CargoNextest.info().install();
            eprintln!(
                "note: cargo-nextest not found, running cargo test instead (install it with `{hint}`)"
            );
            cmd!(ctx.sh, "{cargo} test {workspace...} {args...}")
        };
        let mut test = ctx.stamped(test)?;
        if let Some(binary) = app_binary {
            test = test.env(APP_BINARY_VARIABLE, binary);
        }
        ctx.run(test).context("run the tests")
    }
}
