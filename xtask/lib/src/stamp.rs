//! The version stamp: which commit, branch and toolchain a build comes from.
//!
//! It is computed once per invocation (git and rustc run here, never in a
//! build script) and handed to cargo as `STAMP_*` environment variables,
//! which `app/build.rs` (`platform-build`) declares with `rerun-if-env-changed`. A new commit
//! therefore recompiles the app crate only, and an unchanged tree nothing.
//! The time recorded is the commit time (or `SOURCE_DATE_EPOCH`), never the
//! wall clock, so two builds of one commit are identical.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use xshell::{Shell, cmd};

use crate::project::Project;
use crate::tools::{self, Tool};

/// What a stamp field says when the source is not a git checkout.
pub const UNKNOWN: &str = "unknown";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The shipped package's version, from its Cargo.toml.
    pub version: String,
    /// `git describe --tags --always`, with `-dirty` when the tree is dirty.
    pub describe: String,
    pub commit: String,
    pub commit_short: String,
    /// The branch, or the tag (else `HEAD`) when HEAD is detached.
    pub branch: String,
    /// Whether `git status --porcelain` lists anything outside cargo's
    /// target directory.
    pub dirty: bool,
    /// The committer date, RFC 3339, in the committer's offset.
    pub commit_time: String,
    /// `SOURCE_DATE_EPOCH` when set, else the commit time in seconds.
    pub source_date_epoch: u64,
    /// `rustc -V`.
    pub rustc: String,
    /// The host's target triple (`rustc -vV`).
    pub host: String,
    /// The tags on HEAD, sorted; read with the commit, for `release`.
    pub tags: Vec<String>,
}

/// The stamp as `version --json` prints it and the app's `--version --json`
/// reproduces: field names and order are part of the contract.
#[derive(Serialize)]
pub struct StampJson<'a> {
    pub version: &'a str,
    pub describe: &'a str,
    pub commit: &'a str,
    pub commit_short: &'a str,
    pub branch: &'a str,
    pub dirty: bool,
    pub commit_time: &'a str,
    pub source_date_epoch: u64,
    pub target: &'a str,
    pub profile: &'a str,
    pub rustc: &'a str,
}

/// Facts read from git; absent when the source is not a git checkout.
struct GitFacts {
    describe: String,
    commit: String,
    commit_short: String,
    branch: String,
    tags: Vec<String>,
    dirty: bool,
    commit_time: String,
    commit_epoch: u64,
}

impl Stamp {
    /// Asks `rustc_program` and git (in `project`'s root) once; the context
    /// calls this on first use and hands the result to every task.
    pub fn compute(sh: &Shell, rustc_program: &Path, project: &Project) -> Result<Stamp> {
        // rustc and git answer at once, side by side: the stamp is paid by
        // every build, a no-op one too.
        let rustc_verbose = Background::start(cmd!(sh, "{rustc_program} -vV"));
        let epoch_override = source_date_epoch_from_env()?;
        let git = read_git(sh, &project.root, &project.target_dir)?;
        let rustc_verbose = rustc_verbose
            .finish()
            .context("ask rustc for its version")?;
        let (rustc, host) = parse_rustc_version(&rustc_verbose)?;
        let stamp = match git {
            Some(git) => Stamp {
                version: project.version.clone(),
                describe: if git.dirty {
                    format!("{}-dirty", git.describe)
                } else {
                    git.describe
                },
                commit: git.commit,
                commit_short: git.commit_short,
                branch: git.branch,
                tags: git.tags,
                dirty: git.dirty,
                commit_time: git.commit_time,
                source_date_epoch: epoch_override.unwrap_or(git.commit_epoch),
                rustc,
                host,
            },
            None => Stamp {
                version: project.version.clone(),
                describe: UNKNOWN.into(),
                commit: UNKNOWN.into(),
                commit_short: UNKNOWN.into(),
                branch: UNKNOWN.into(),
                tags: Vec::new(),
                dirty: false,
                commit_time: UNKNOWN.into(),
                source_date_epoch: epoch_override.unwrap_or(0),
                rustc,
                host,
            },
        };
        Ok(stamp)
    }

    pub fn json<'a>(&'a self, target: &'a str, profile: &'a str) -> StampJson<'a> {
        StampJson {
            version: &self.version,
            describe: &self.describe,
            commit: &self.commit,
            commit_short: &self.commit_short,
            branch: &self.branch,
            dirty: self.dirty,
            commit_time: &self.commit_time,
            source_date_epoch: self.source_date_epoch,
            target,
            profile,
            rustc: &self.rustc,
        }
    }

    /// The variables `app/build.rs` (`platform-build`) reads. Target and profile are not among
    /// them: the build script knows those from cargo itself.
    pub fn env_vars(&self) -> [(&'static str, String); 8] {
        [
            ("STAMP_DESCRIBE", self.describe.clone()),
            ("STAMP_COMMIT", self.commit.clone()),
            ("STAMP_COMMIT_SHORT", self.commit_short.clone()),
            ("STAMP_BRANCH", self.branch.clone()),
            ("STAMP_DIRTY", self.dirty.to_string()),
            ("STAMP_COMMIT_TIME", self.commit_time.clone()),
            (
                "STAMP_SOURCE_DATE_EPOCH",
                self.source_date_epoch.to_string(),
            ),
            ("STAMP_RUSTC", self.rustc.clone()),
        ]
    }
}

fn read_git(sh: &Shell, root: &Path, target_dir: &Path) -> Result<Option<GitFacts>> {
    // A source tarball has no repository: the stamp says "unknown" rather
    // than failing, and git need not even be installed.
    if !root.ancestors().any(|dir| dir.join(".git").exists()) {
        return Ok(None);
    }
    let git = tools::require(Tool::Git)?;
    // Build outputs are not source changes, even when the target directory
    // sits in the checkout without being ignored (CARGO_TARGET_DIR=build).
    let exclude_target: Vec<String> = target_dir
        .strip_prefix(root)
        .ok()
        .filter(|relative| !relative.as_os_str().is_empty())
        .map(|relative| {
            vec![
                "--".to_owned(),
                ".".to_owned(),
                format!(":(exclude){}", relative.display()),
            ]
        })
        .unwrap_or_default();
    // Started first, they run while `git log` does. In a shallow clone
    // without tags describe falls back to the short hash.
    let describe = Background::start(cmd!(sh, "{git} describe --tags --always HEAD"));
    let status = Background::start(cmd!(sh, "{git} status --porcelain {exclude_target...}"));
    // One call for the commit, its time, and the branch and tags on HEAD
    // (`%D`, e.g. `HEAD -> main, tag: v0.1.0`): every spawn here is paid
    // by every build.
    let format = "--format=%H%n%h%n%cI%n%ct%n%D";
    let log = cmd!(sh, "{git} log -1 --no-show-signature {format} HEAD")
        .quiet()
        .ignore_status()
        .ignore_stderr()
        .output()?;
    if !log.status.success() {
        let head = cmd!(sh, "{git} rev-parse --verify --quiet HEAD")
            .quiet()
            .ignore_status()
            .read()?;
        if head.is_empty() {
            // `git init` without a commit yet: nothing to stamp.
            return Ok(None);
        }
        bail!(
            "read the commit with git log: {}",
            String::from_utf8_lossy(&log.stderr).trim()
        );
    }
    let log =
        String::from_utf8(log.stdout).context("git log printed something other than UTF-8")?;
    let [commit, commit_short, commit_time, commit_epoch, decorations] =
        log.lines().collect::<Vec<_>>()[..]
    else {
        bail!("unexpected `git log` output: {log:?}");
    };
    let describe = describe
        .finish()
        .context("describe the commit with git describe")?;
    let tags = tags_from_decorations(decorations);
    let branch = branch_from_decorations(decorations, &tags);
    let status = status
        .finish()
        .context("check for changes with git status")?;
    Ok(Some(GitFacts {
        describe,
        commit: commit.to_owned(),
        commit_short: commit_short.to_owned(),
        branch,
        tags,
        dirty: !status.is_empty(),
        commit_time: commit_time.to_owned(),
        commit_epoch: commit_epoch
            .parse()
            .with_context(|| format!("commit time `{commit_epoch}` is not a number"))?,
    }))
}

/// A quiet command running while others do; `finish` waits for it and
/// returns its stdout, trimmed as xshell's `read` trims it. Dropped
/// unfinished (an earlier step failed), it is waited for.
struct Background {
    line: String,
    child: std::io::Result<std::process::Child>,
}

impl Background {
    fn start(cmd: xshell::Cmd<'_>) -> Background {
        let mut command = std::process::Command::from(cmd);
        let line = format!("{command:?}");
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        Background { line, child }
    }

    fn finish(mut self) -> Result<String> {
        let child = std::mem::replace(&mut self.child, Err(std::io::ErrorKind::Other.into()));
        let output = child
            .and_then(std::process::Child::wait_with_output)
            .with_context(|| format!("run {}", self.line))?;
        if !output.status.success() {
            bail!(
                "{} failed ({}): {}",
                self.line,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let text = String::from_utf8(output.stdout)
            .with_context(|| format!("{} printed something other than UTF-8", self.line))?;
        Ok(text.trim_end_matches(['\n', '\r']).to_owned())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(child) = &mut self.child {
            let _ = child.wait();
        }
    }
}

/// `SOURCE_DATE_EPOCH`, if set.
pub fn source_date_epoch_from_env() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) if !value.trim().is_empty() => value.trim().parse().map(Some).map_err(|_| {
            anyhow::anyhow!(
                "SOURCE_DATE_EPOCH={value:?} is not a whole number of seconds since 1970: unset it, or set it to e.g. `git log -1 --format=%ct`"
            )
        }),
        _ => Ok(None),
    }
}

/// The tags on HEAD, sorted, from `git log --format=%D`
/// (`HEAD -> main, tag: v0.1.0, origin/main`).
fn tags_from_decorations(decorations: &str) -> Vec<String> {
    let mut tags: Vec<String> = decorations
        .split(", ")
        .filter_map(|name| name.trim().strip_prefix("tag: "))
        .map(str::to_owned)
        .collect();
    tags.sort_unstable();
    tags
}

/// The branch HEAD is on, from `git log --format=%D`; when HEAD is
/// detached, the first of its tags, else `HEAD`.
fn branch_from_decorations(decorations: &str, tags: &[String]) -> String {
    let branch = decorations
        .split(", ")
        .find_map(|name| name.trim().strip_prefix("HEAD -> "));
    match (branch, tags.first()) {
        (Some(branch), _) => branch.to_owned(),
        (None, Some(tag)) => tag.clone(),
        (None, None) => "HEAD".to_owned(),
    }
}

/// Reads `rustc 1.95.0 (...)` and the host triple out of `rustc -vV`.
fn parse_rustc_version(verbose: &str) -> Result<(String, String)> {
    let release = verbose
        .lines()
        .next()
        .filter(|line| line.starts_with("rustc "));
    let host = verbose.lines().find_map(|line| line.strip_prefix("host: "));
    match (release, host) {
        (Some(release), Some(host)) => Ok((release.trim().to_owned(), host.trim().to_owned())),
        _ => bail!("unexpected `rustc -vV` output: {verbose:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branches_and_tags_are_read_from_decorations() {
        let check = |decorations: &str, branch: &str, tags: &[&str]| {
            let found = tags_from_decorations(decorations);
            assert_eq!(found, tags, "{decorations}");
            assert_eq!(
                branch_from_decorations(decorations, &found),
                branch,
                "{decorations}"
            );
        };
        check("HEAD -> main, origin/main", "main", &[]);
        check("HEAD -> feature/x, tag: v1.0.0", "feature/x", &["v1.0.0"]);
        check("grafted, HEAD -> main", "main", &[]);
        check(
            "HEAD, tag: v0.2.0, tag: v0.1.0, origin/main",
            "v0.1.0",
            &["v0.1.0", "v0.2.0"],
        );
        check("HEAD", "HEAD", &[]);
        check("", "HEAD", &[]);
    }

    #[test]
    fn rustc_version_and_host_are_parsed() {
        let verbose = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\ncommit-hash: 59807616e\nhost: x86_64-unknown-linux-gnu\nrelease: 1.95.0\nLLVM version: 20.1.8\n";
        assert_eq!(
            parse_rustc_version(verbose).unwrap(),
            (
                "rustc 1.95.0 (59807616e 2026-04-14)".to_owned(),
                "x86_64-unknown-linux-gnu".to_owned()
            )
        );
        assert!(parse_rustc_version("something else").is_err());
    }
}
