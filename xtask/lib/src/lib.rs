//! The machinery of `cargo xtask`: every build, test and release step of a
//! workspace made from the template, in Rust, as a library that the
//! workspace's own `xtask/src/main.rs` runs.
//!
//! This file only parses the flags, prints errors and dispatches to the task
//! modules; each task lives in its own module with a `run` method.
//! ARCHITECTURE.md has the map; each module's header says what it is for.

#![deny(missing_docs)]
// The flags' doc comments are their `--help` text, written for a terminal
// ("[default: keys/<binary>.pub]"), not rustdoc's HTML.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

mod archive;
mod artifacts;
mod ci;
mod deploy;
mod develop;
mod exec;
mod flags;
pub mod fuzz;
mod maintain;
mod manifest;
mod names;
mod project;
mod release;
mod rustup;
mod service;
mod signing;
mod stamp;
mod targets;
mod tools;
mod util;

use std::process::ExitCode;

pub use exec::Ctx;
use flags::Task;

/// Tasks a workspace adds to the library's: a `clap::Subcommand` enum, one
/// variant per task (its doc comment is the task's line in `cargo xtask
/// help`, under "Project"), run with the context the library's tasks get:
/// the shell that echoes each command, `--dry-run`, the project's settings.
/// `xtask/src/main.rs` hands them to [`main_with`]; the template's carries
/// one as the example.
pub trait OwnTasks: clap::Subcommand + std::fmt::Debug {
    /// Runs the task the command line named.
    fn run(self, ctx: &Ctx) -> anyhow::Result<()>;

    /// The workspace's own check of what `dist`, `release` and `release
    /// --merge` wrote, run on the new folder (every artifact,
    /// `SHA256SUMS` and `dist-manifest.json` in it) before it replaces
    /// `target/dist/`: an error fails the task and leaves the previous
    /// folder as it was. None by default.
    fn check_dist(ctx: &Ctx, folder: &std::path::Path) -> anyhow::Result<()> {
        let _ = (ctx, folder);
        Ok(())
    }
}

/// A workspace without tasks of its own ([`main`]).
#[derive(clap::Subcommand, Debug)]
pub enum NoOwnTasks {}

impl OwnTasks for NoOwnTasks {
    fn run(self, _: &Ctx) -> anyhow::Result<()> {
        match self {}
    }
}

/// Exit code for a task that failed (a command, a check, a missing tool).
const EXIT_FAILURE: u8 = 1;
/// Exit code for a command line that could not be parsed.
const EXIT_USAGE: u8 = 2;

/// The whole command line with the library's tasks only.
pub fn main() -> ExitCode {
    main_with::<NoOwnTasks>()
}

/// The whole command line, the workspace's own tasks `T` beside the
/// library's: parses the arguments, runs the task and turns its outcome
/// into the exit code (`xtask/src/main.rs` returns it).
pub fn main_with<T: OwnTasks>() -> ExitCode {
    tools::put_python_venv_on_path();
    signing::take_secrets_from_env();
    let outcome = match flags::parse::<T>(std::env::args_os()) {
        Ok(flags::Parsed::Run(flags)) => run::<T>(*flags),
        Ok(flags::Parsed::Own { dry_run, task }) => run_own(dry_run, task),
        Ok(flags::Parsed::Exit(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&format!("{err:#}")));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// A task of the workspace's own, with the same checks as the library's.
fn run_own<T: OwnTasks>(dry_run: bool, task: T) -> anyhow::Result<()> {
    signing::check_not_compiled_with_secrets()?;
    let ctx = Ctx::new(dry_run)?.with_dist_check(T::check_dist);
    task.run(&ctx)
}

fn run<T: OwnTasks>(flags: flags::Flags) -> anyhow::Result<()> {
    signing::check_not_compiled_with_secrets()?;
    let ctx = Ctx::new(flags.dry_run)?.with_dist_check(T::check_dist);
    match flags.task {
        Task::Build(task) => task.run(&ctx),
        Task::Run(task) => task.run(&ctx),
        Task::Dev(task) => task.run(&ctx),
        Task::Test(task) => task.run(&ctx),
        Task::Lint(task) => task.run(&ctx),
        Task::Sanitize(task) => task.run(&ctx),
        Task::Fuzz(task) => task.run(&ctx),
        Task::Ci(task) => task.run(&ctx),
        Task::Version(task) => task.run(&ctx),
        // The help texts come from here: `develop::docs` must not import `flags`,
        // which names its flags.
        Task::Docs(task) => task.run(
            &ctx,
            &flags::help_texts::<T>().map_err(|message| anyhow::anyhow!(message))?,
        ),
        Task::Dist(task) => task.run(&ctx),
        Task::Release(task) => task.run(&ctx),
        Task::Image(task) => task.run(&ctx),
        Task::Package(task) => task.run(&ctx),
        Task::AptRepo(task) => task.run(&ctx),
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
        Task::New(task) => task.run(&ctx),
        Task::Update(task) => task.run(&ctx),
        Task::Bench(task) => task.run(&ctx),
    }
}

/// Errors are printed as one line: the context chain joined by `: `, with the
/// line breaks of quoted tool output folded into spaces.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
