//! The context every task runs in: the shell, the project, `--dry-run`, and
//! the one way state-changing commands are run (echoed first, as a line that
//! can be copied into a terminal).

use std::cell::OnceCell;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell};

use crate::project::Project;
use crate::stamp::Stamp;

/// What a task runs with: the workspace, its settings and how commands run.
pub struct Ctx {
    /// The shell commands are built in (`xshell::cmd!(ctx.sh, "...")`), in
    /// the workspace root.
    pub sh: Shell,
    /// `--dry-run`: state-changing commands are printed, not run.
    pub dry_run: bool,
    /// The workspace: its root, target directory and
    /// `[workspace.metadata.xtask]` settings.
    pub project: Project,
    /// The cargo that runs this xtask (`$CARGO`), so that a pinned toolchain
    /// builds everything.
    cargo: PathBuf,
    stamp: OnceCell<Stamp>,
    /// The workspace's own check of a dist folder before it is swapped in
    /// (`OwnTasks::check_dist`).
    dist_check: DistCheck,
}

/// A check of a dist folder: the context, and the folder as written.
pub type DistCheck = fn(&Ctx, &Path) -> Result<()>;

impl Ctx {
    /// Reads the workspace metadata (the only `cargo metadata` call of an
    /// invocation) and moves into the workspace root.
    pub fn new(dry_run: bool) -> Result<Ctx> {
        let sh = Shell::new().context("set up the command shell")?;
        let cargo = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
        let project = Project::load(&cargo)?;
        sh.change_dir(&project.root);
        Ok(Ctx {
            sh,
            dry_run,
            project,
            cargo,
            stamp: OnceCell::new(),
            dist_check: |_, _| Ok(()),
        })
    }

    /// The context with the workspace's own check of dist folders.
    pub fn with_dist_check(mut self, check: DistCheck) -> Ctx {
        self.dist_check = check;
        self
    }

    /// Runs the workspace's own check on a dist folder written in
    /// `folder`, before it replaces the previous one.
    pub fn check_dist(&self, folder: &Path) -> Result<()> {
        (self.dist_check)(self, folder)
            .context("the workspace's own check of the dist folder (`check_dist` in xtask/src/main.rs) failed")
    }

    /// A context of its own for another thread (a shell is not shared
    /// between threads): the same project, directory, flags and stamp.
    pub fn fork(&self) -> Result<Ctx> {
        let sh = Shell::new().context("set up the command shell")?;
        sh.change_dir(self.sh.current_dir());
        let stamp = OnceCell::new();
        if let Some(known) = self.stamp.get() {
            let _ = stamp.set(known.clone());
        }
        Ok(Ctx {
            sh,
            dry_run: self.dry_run,
            project: self.project.clone(),
            cargo: self.cargo.clone(),
            stamp,
            dist_check: self.dist_check,
        })
    }

    /// `cargo` as a command, ready for arguments.
    pub fn cargo(&self) -> Cmd<'_> {
        self.sh.cmd(&self.cargo)
    }

    /// The cargo that runs this xtask, to put in a `cmd!`.
    pub fn cargo_path(&self) -> &Path {
        &self.cargo
    }

    /// The toolchain folder `$CARGO` lives in (`<toolchain>/bin/cargo`), when
    /// cargo comes from a rustup toolchain or a standalone install.
    pub fn toolchain_dir(&self) -> Option<&Path> {
        let bin = self.cargo.parent().filter(|bin| bin.ends_with("bin"))?;
        bin.parent()
            .filter(|toolchain| toolchain.join("lib/rustlib").is_dir())
    }

    /// `$RUSTC`, else the rustc beside `$CARGO` (not a rustup proxy on PATH,
    /// which costs a process start on every call), else `rustc`.
    pub fn rustc(&self) -> PathBuf {
        if let Some(rustc) = std::env::var_os("RUSTC") {
            return PathBuf::from(rustc);
        }
        self.toolchain_dir()
            .map(|toolchain| toolchain.join("bin/rustc"))
            .filter(|rustc| rustc.is_file())
            .unwrap_or_else(|| PathBuf::from("rustc"))
    }

    /// The version stamp, computed on first use and then shared by every step
    /// of this invocation, so git runs once.
    pub fn stamp(&self) -> Result<&Stamp> {
        if let Some(stamp) = self.stamp.get() {
            return Ok(stamp);
        }
        let stamp = Stamp::compute(&self.sh, &self.rustc(), &self.project)
            .context("compute the version stamp")?;
        Ok(self.stamp.get_or_init(|| stamp))
    }

    /// The command with the version stamp in its environment, for every
    /// cargo call that compiles the app.
    pub fn stamped<'a>(&self, cmd: Cmd<'a>) -> Result<Cmd<'a>> {
        crate::signing::refuse_project_code_with_secrets("this task's cargo build")?;
        Ok(cmd.envs(self.stamp()?.env_vars()))
    }

    /// Echoes a state-changing command, then runs it unless this is a dry run.
    pub fn run(&self, cmd: Cmd<'_>) -> Result<()> {
        let mut command = Command::from(cmd);
        eprintln!("$ {}", self.display(&command, true));
        if self.dry_run {
            return Ok(());
        }
        let status = command
            .status()
            .with_context(|| format!("start `{}`", self.display(&command, false)))?;
        if !status.success() {
            bail!("`{}` failed ({status})", self.display(&command, false));
        }
        Ok(())
    }

    /// Like `run`, but a failure says what the command printed last on
    /// stderr (rustup's or ssh's own error line) instead of only its status.
    /// Its stderr is still shown as it comes, but for that last line.
    pub fn run_reporting(&self, cmd: Cmd<'_>) -> Result<()> {
        self.run_reporting_redacted(cmd, &[])
    }

    /// `run_reporting` for a command that may print a secret: every
    /// occurrence of one in the echo, in what it prints on stderr and in the
    /// error is shown as `***`. A failure is a `CommandFailed`, so that the
    /// caller can explain what the tool's last line means.
    pub fn run_reporting_redacted(&self, cmd: Cmd<'_>, secrets: &[&str]) -> Result<()> {
        use std::io::BufRead;
        let mut command = Command::from(cmd);
        eprintln!("$ {}", redact(&self.display(&command, true), secrets));
        if self.dry_run {
            return Ok(());
        }
        let line = redact(&self.display(&command, false), secrets);
        let mut child = command
            .stderr(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("start `{line}`"))?;
        // The last line is held back until the exit status is known: on a
        // failure it is part of the error, and printing it twice is noise.
        let mut held: Option<String> = None;
        let mut last_said = String::new();
        if let Some(stderr) = child.stderr.take() {
            for said in std::io::BufReader::new(stderr).lines() {
                let Ok(said) = said else { break };
                let said = redact(&said, secrets);
                if !said.trim().is_empty() {
                    last_said = said.trim().to_owned();
                }
                if let Some(earlier) = held.replace(said) {
                    eprintln!("{earlier}");
                }
            }
        }
        let status = child.wait().with_context(|| format!("wait for `{line}`"))?;
        if let Some(earlier) = held.filter(|_| status.success()) {
            eprintln!("{earlier}");
        }
        if !status.success() {
            return Err(CommandFailed {
                line,
                status,
                last_said,
            }
            .into());
        }
        Ok(())
    }

    /// Echoes a read-only command and returns its stdout as bytes, even on a
    /// dry run (which returns nothing). Its stderr is kept for the error,
    /// redacted like `run_reporting_redacted`'s.
    pub fn read_bytes_echoed(&self, cmd: Cmd<'_>, secrets: &[&str]) -> Result<Vec<u8>> {
        let mut command = Command::from(cmd);
        eprintln!("$ {}", redact(&self.display(&command, true), secrets));
        if self.dry_run {
            return Ok(Vec::new());
        }
        let line = redact(&self.display(&command, false), secrets);
        let output = command
            .output()
            .with_context(|| format!("start `{line}`"))?;
        if !output.status.success() {
            let stderr = redact(&String::from_utf8_lossy(&output.stderr), secrets);
            return Err(CommandFailed {
                line,
                status: output.status,
                last_said: stderr
                    .lines()
                    .rev()
                    .find(|said| !said.trim().is_empty())
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            }
            .into());
        }
        Ok(output.stdout)
    }

    /// Echoes a command and returns what it printed on stdout. For commands
    /// whose output is the point (a benchmark run), not for quiet probes.
    pub fn read_echoed(&self, cmd: Cmd<'_>) -> Result<String> {
        let mut command = Command::from(cmd);
        let line = self.display(&command, false);
        eprintln!("$ {}", self.display(&command, true));
        let output = command
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("start `{line}`"))?;
        if !output.status.success() {
            bail!("`{line}` failed ({})", output.status);
        }
        String::from_utf8(output.stdout)
            .with_context(|| format!("`{line}` printed something other than UTF-8"))
    }

    /// A command as a shell line: the environment it sets (when asked), the
    /// program, and its arguments, quoted where the shell would need it.
    pub fn display(&self, command: &Command, with_env: bool) -> String {
        let mut words = Vec::new();
        if let Some(dir) = command
            .get_current_dir()
            .filter(|dir| *dir != self.project.root)
        {
            words.push(format!("cd {} &&", shell_quote(dir.as_os_str())));
        }
        if with_env {
            let mut removed = false;
            for (key, value) in command.get_envs() {
                let key = key.to_string_lossy();
                match value {
                    Some(value) => words.push(format!("{key}={}", shell_quote(value))),
                    None => {
                        removed = true;
                        words.push(format!("-u {key}"));
                    }
                }
            }
            if removed {
                words.insert(0, "env".to_owned());
            }
        }
        let program = Path::new(command.get_program());
        let on_path = program
            .file_name()
            .filter(|name| which::which(name).is_ok_and(|found| found == program));
        match on_path {
            _ if program == self.cargo => words.push("cargo".to_owned()),
            // A tool PATH finds anyway is shown by its name, as a user types it.
            Some(name) => words.push(shell_quote(name)),
            None => words.push(shell_quote(program.as_os_str())),
        }
        words.extend(command.get_args().map(shell_quote));
        words.join(" ")
    }
}

/// A command that ran and exited unsuccessfully, with the last line it
/// printed on stderr.
#[derive(Debug)]
pub struct CommandFailed {
    pub line: String,
    pub status: std::process::ExitStatus,
    pub last_said: String,
}

impl std::fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` failed ({})", self.line, self.status)?;
        if !self.last_said.is_empty() {
            write!(f, ": {}", self.last_said)?;
        }
        Ok(())
    }
}

impl std::error::Error for CommandFailed {}

/// `text` with every non-empty secret replaced by `***`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|secret| !secret.is_empty())
        .fold(text.to_owned(), |text, secret| text.replace(secret, "***"))
}

/// Quotes a word for a POSIX shell, leaving plain words as they are.
pub fn shell_quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,^".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_wherever_they_appear() {
        assert_eq!(
            redact("--creds ci:hunter2 and hunter2 again", &["hunter2", ""]),
            "--creds ci:*** and *** again"
        );
        assert_eq!(redact("nothing secret", &[]), "nothing secret");
    }

    #[test]
    fn words_are_quoted_only_where_the_shell_needs_it() {
        let check =
            |word: &str, expected: &str| assert_eq!(shell_quote(OsStr::new(word)), expected);
        check("--release", "--release");
        check("aarch64-unknown-linux-musl", "aarch64-unknown-linux-musl");
        check("-Dwarnings", "-Dwarnings");
        check("", "''");
        check("two words", "'two words'");
        check("it's", r"'it'\''s'");
        check("$HOME", "'$HOME'");
        check(
            "rustc 1.95.0 (59807616e 2026-04-14)",
            "'rustc 1.95.0 (59807616e 2026-04-14)'",
        );
    }
}
