//! The service this workspace ships: a small HTTP service with the full
//! production contract (layered config and secrets, health and readiness,
//! Prometheus metrics, request logs, graceful shutdown).

#[cfg(test)]
mod allocations;
mod platform;

use std::process::ExitCode;

use platform::build_info::{self, BINARY, BUILD_INFO};
use platform::cli::{self, Command};
use platform::config::{Environment, Overrides, Settings};
use platform::{logging, server};

/// musl's allocator takes a process-wide lock per call; the shipped (musl)
/// builds put a per-thread cache in front of it (`thread_cache`).
#[cfg(all(target_env = "musl", not(test)))]
#[global_allocator]
static ALLOCATOR: platform::thread_cache::ThreadCached = platform::thread_cache::ThreadCached;

const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_CONFIG: u8 = 3;
const EXIT_LISTEN: u8 = 4;

fn main() -> ExitCode {
    build_info::keep_dependency_list();
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(err) => {
            return fail(
                EXIT_USAGE,
                &anyhow::anyhow!("{err}: run `{BINARY} --help` for usage"),
            );
        }
    };
    match command {
        Command::Help => println!("{}", cli::USAGE),
        Command::Version { json: false } => println!("{}", BUILD_INFO.version_line(BINARY)),
        Command::Version { json: true } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&BUILD_INFO).expect("the stamp serializes")
            );
        }
        Command::ConfigCheck(overrides) => match load(&overrides) {
            Ok(settings) => println!(
                "config ok: APP_ENV={}, from {}",
                settings.env.name(),
                settings.sources.join(", ")
            ),
            Err(err) => return fail(EXIT_CONFIG, &err),
        },
        Command::ConfigShow(overrides) => match load(&overrides) {
            Ok(settings) => print!("{}", settings.to_redacted_toml()),
            Err(err) => return fail(EXIT_CONFIG, &err),
        },
        Command::Serve(overrides) => {
            let settings = match load(&overrides) {
                Ok(settings) => settings,
                Err(err) => return fail(EXIT_CONFIG, &err),
            };
            logging::init(&settings.log);
            let outcome = server::run(settings);
            logging::flush();
            return match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(server::ServeError::Listen(err)) => fail(EXIT_LISTEN, &err),
                Err(server::ServeError::Runtime(err)) => fail(EXIT_RUNTIME, &err),
            };
        }
    }
    ExitCode::SUCCESS
}

fn load(overrides: &Overrides) -> anyhow::Result<Settings> {
    let environment = Environment::capture()?;
    Settings::load(overrides, &environment)
}

/// Prints one line, `error: <what failed>: <cause>`, and returns the code.
fn fail(code: u8, err: &anyhow::Error) -> ExitCode {
    let message = format!("{err:#}");
    eprintln!(
        "error: {}",
        message.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    ExitCode::from(code)
}
