//! The service this workspace ships.

mod build_info;

use std::process::ExitCode;

use build_info::BUILD_INFO;

const USAGE: &str = "\
Usage: app [--version [--json]]

Options:
  -V, --version   Print the version, commit, commit date and target
      --json      With --version: print the full build stamp as JSON
  -h, --help      Print this help";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let (mut version, mut json) = (false, false);
    while let Some(arg) = parser.next()? {
        match arg {
            Short('V') | Long("version") => version = true,
            Long("json") => json = true,
            Short('h') | Long("help") => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    if version && json {
        println!(
            "{}",
            serde_json::to_string_pretty(&BUILD_INFO).expect("the stamp serializes")
        );
    } else if version {
        println!("{}", BUILD_INFO.version_line("app"));
    } else {
        eprintln!("{USAGE}");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
