//! `cargo xtask test`: the test suite, with cargo-nextest when it is installed
//! (one process per test, per-test timeouts from `.config/nextest.toml`), else
//! `cargo test`. Extra arguments are passed on unchanged.

use anyhow::{Context, Result};
use xshell::cmd;

use crate::exec::Ctx;
use crate::tools::{self, Tool};

#[derive(clap::Args, Debug, Default)]
pub struct Test {
    /// Arguments for cargo nextest run / cargo test (test name filters, --no-capture, ...)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

impl Test {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let args = &self.args;
        let cargo = ctx.cargo_path();
        let test = if tools::find(Tool::CargoNextest).is_some() {
            cmd!(ctx.sh, "{cargo} nextest run --workspace {args...}")
        } else {
            let hint = Tool::CargoNextest.info().install;
            eprintln!(
                "note: cargo-nextest not found, running cargo test instead (install it with `{hint}`)"
            );
            cmd!(ctx.sh, "{cargo} test --workspace {args...}")
        };
        ctx.run(ctx.stamped(test)?).context("run the tests")
    }
}
