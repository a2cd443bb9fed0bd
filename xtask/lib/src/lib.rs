//! The machinery of `cargo xtask`: every build, test and release step of a
//! workspace made from the template, in Rust, as a library that the
//! workspace's own `xtask/lib/src/lib.rs` runs.
//!
//! This file only parses the flags, prints errors and dispatches to the task
//! modules; each task lives in its own module with a `run` method.

mod archive;
mod deploy;
mod develop;
mod exec;
mod flags;
mod maintain;
mod manifest;
mod names;
mod project;
mod reference;
mod release;
mod rustup;
mod signing;
mod stamp;
mod targets;
mod tools;
mod util;

use std::process::ExitCode;

use exec::Ctx;
use flags::Task;

/// Exit code for a task that failed (a command, a check, a missing tool).
const EXIT_FAILURE: u8 = 1;
/// Exit code for a command line that could not be parsed.
const EXIT_USAGE: u8 = 2;

/// The whole command line: parses the arguments, runs the task and turns
/// its outcome into the exit code (`xtask/lib/src/lib.rs` returns it).
pub fn main() -> ExitCode {
    tools::put_python_venv_on_path();
    signing::take_secrets_from_env();
    let flags = match flags::parse(std::env::args_os()) {
        Ok(flags::Parsed::Run(flags)) => *flags,
        Ok(flags::Parsed::Exit(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(flags) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&format!("{err:#}")));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run(flags: flags::Flags) -> anyhow::Result<()> {
    signing::check_not_compiled_with_secrets()?;
    let ctx = Ctx::new(flags.dry_run)?;
    match flags.task {
        Task::Build(task) => task.run(&ctx),
        Task::Run(task) => task.run(&ctx),
        Task::Dev(task) => task.run(&ctx),
        Task::Test(task) => task.run(&ctx),
        Task::Lint(task) => task.run(&ctx),
        Task::Sanitize(task) => task.run(&ctx),
        Task::Ci(task) => task.run(&ctx),
        Task::Version(task) => task.run(&ctx),
        // The help texts come from here: `reference` must not import `flags`,
        // which names its flags.
        Task::Docs(task) => task.run(&ctx, &flags::help_texts()),
        Task::Dist(task) => task.run(&ctx),
        Task::Release(task) => task.run(&ctx),
        Task::Image(task) => task.run(&ctx),
        Task::Publish(task) => task.run(&ctx),
        Task::Keygen(task) => task.run(&ctx),
        Task::Sign(task) => task.run(&ctx),
        Task::Verify(task) => task.run(&ctx),
        Task::Units(task) => task.run(&ctx),
        Task::Deploy(task) => task.run(&ctx),
        Task::Rollback(task) => task.run(&ctx),
        Task::Releases(task) => task.run(&ctx),
        Task::K8s(task) => task.run(&ctx),
        Task::Setup(task) => task.run(&ctx),
        Task::Doctor(task) => task.run(&ctx),
        Task::Clean(task) => task.run(&ctx),
        Task::Bench(task) => task.run(&ctx),
    }
}

/// Errors are printed as one line: the context chain joined by `: `, with the
/// line breaks of quoted tool output folded into spaces.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
