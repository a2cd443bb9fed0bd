//! The command line of the service.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::Overrides;

/// The help text, which names the binary.
pub fn usage() -> String {
    format!("Usage: {} {USAGE_AFTER_NAME}", crate::build_info::binary())
}

const USAGE_AFTER_NAME: &str = "[OPTIONS] [COMMAND]

Commands:
  serve           Run the service (the default)
  config check    Load and validate the configuration, then exit
  config show     Print the effective configuration, secrets redacted

Options:
      --config-dir <DIR>   Folder with base.toml and <APP_ENV>.toml [default: config, or $APP_CONFIG_DIR]
      --listen <ADDR>      Address to listen on, e.g. 0.0.0.0:8080 (overrides server.listen)
  -V, --version            Print the version, commit, commit date and target
      --json               With --version: print the full build stamp as JSON
  -h, --help               Print this help

Environment:
  APP_ENV                  dev (default), staging or prod: selects <APP_ENV>.toml
  APP__<SECTION>__<KEY>    Overrides a setting, e.g. APP__SERVER__DRAIN_DELAY=10s
  APP__ADMIN__TOKEN_FILE   Reads the admin token from a file (or APP__ADMIN__TOKEN,
                           or the systemd credential admin.token)

Signals:
  TERM, INT                Drain and stop (a second one stops at once)
  HUP, USR2                Upgrade without downtime: start the binary at the path this
                           one was started from, hand it the listening socket, and drain
                           once it is ready (if it fails, keep serving)

Exit codes:
  0 stopped cleanly, 1 failed while running, 2 bad command line, 3 bad configuration,
  4 cannot listen, 128+N stopped at once by a second signal N";

#[derive(Debug, PartialEq)]
pub enum Command {
    Serve(Overrides),
    ConfigCheck(Overrides),
    ConfigShow(Overrides),
    Version { json: bool },
    Help,
}

pub fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut overrides = Overrides::default();
    let (mut version, mut json) = (false, false);
    let mut words: Vec<String> = Vec::new();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('V') | Long("version") => version = true,
            Long("json") => json = true,
            Short('h') | Long("help") => return Ok(Command::Help),
            Long("config-dir") => overrides.config_dir = Some(PathBuf::from(parser.value()?)),
            Long("listen") => overrides.listen = Some(parser.value()?.parse::<SocketAddr>()?),
            Value(word) => words.push(word.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    if version {
        return Ok(Command::Version { json });
    }
    if json {
        return Err("--json is only meaningful with --version".into());
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words[..] {
        [] | ["serve"] => Ok(Command::Serve(overrides)),
        ["config", "check"] => Ok(Command::ConfigCheck(overrides)),
        ["config", "show"] => Ok(Command::ConfigShow(overrides)),
        _ => Err(format!(
            "unknown command `{}` (the commands are serve, config check, config show)",
            words.join(" ")
        )
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expected: Result<Command, &str>) {
        let actual = parse(line.split_whitespace().map(std::ffi::OsString::from))
            .map_err(|err| err.to_string());
        match (actual, expected) {
            (Ok(actual), Ok(expected)) => assert_eq!(actual, expected, "{line}"),
            (Err(actual), Err(expected)) => assert!(actual.contains(expected), "{line}: {actual}"),
            (actual, expected) => panic!("{line}: got {actual:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn command_lines() {
        let listen = Overrides {
            listen: Some("127.0.0.1:9000".parse().unwrap()),
            ..Overrides::default()
        };
        let dir = Overrides {
            config_dir: Some("/etc/app".into()),
            ..Overrides::default()
        };
        check("", Ok(Command::Serve(Overrides::default())));
        check("serve --listen 127.0.0.1:9000", Ok(Command::Serve(listen)));
        check(
            "--config-dir /etc/app config check",
            Ok(Command::ConfigCheck(dir.clone())),
        );
        check(
            "config show --config-dir /etc/app",
            Ok(Command::ConfigShow(dir)),
        );
        check("--version", Ok(Command::Version { json: false }));
        check("--version --json", Ok(Command::Version { json: true }));
        check("-h", Ok(Command::Help));
        check("--listen nowhere", Err("invalid socket address"));
        check(
            "config frobnicate",
            Err("unknown command `config frobnicate`"),
        );
        check("--json", Err("--json is only meaningful with --version"));
        check("--bogus", Err("invalid option '--bogus'"));
    }
}
