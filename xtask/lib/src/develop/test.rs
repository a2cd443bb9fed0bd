//! `cargo xtask test`: the test suite, with cargo-nextest when it is installed
//! (one process per test, per-test timeouts from `.config/nextest.toml`), else
//! `cargo test`. Extra arguments are passed on unchanged. `--app-binary`
//! runs the service's integration tests against a given build of the
//! service (CI passes the release binary `dist` just built) instead of the
//! debug one.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::develop::stress::{Selection, Stress};
use crate::exec::Ctx;
use crate::tools::{self, Tool};

#[derive(clap::Args, Debug, Default)]
pub struct Test {
    /// Run the service's integration tests against this binary (e.g. the
    /// release build from dist) instead of the debug build
    #[arg(long, value_name = "PATH")]
    pub app_binary: Option<PathBuf>,
    /// Every test but the `slow_` end-to-end ones (with cargo-nextest or
    /// cargo test alike)
    #[arg(long)]
    pub fast: bool,
    /// The flake hunt: build once, then run each selected test N times, each
    /// run a process of its own, never retried; report every test's
    /// failures (ARGS are then -p, --test, --skip and name filters)
    #[arg(long, value_name = "N")]
    pub stress: Option<usize>,
    /// With --stress: keep every CPU busy with stress-ng meanwhile
    #[arg(long, requires = "stress")]
    pub load: bool,
    /// With --stress: tests running at once [default: the CPUs]
    #[arg(long, value_name = "N", requires = "stress")]
    pub jobs: Option<usize>,
    /// With --stress: a test run still going after this long is killed and
    /// counts as failed
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = crate::util::parse_duration, requires = "stress")]
    pub test_timeout: std::time::Duration,
    /// Set by `ci`: a test that passes only when retried fails the run
    /// (nextest's retries, from a profile or NEXTEST_RETRIES, are off).
    #[arg(skip)]
    pub no_retries: bool,
    /// Set by `ci --part`: only the slow tests, or only the real-host ones
    /// (`--fast` is the rest).
    #[arg(skip)]
    pub slice: Option<Slice>,
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
/// The file the tests record their skips in (`tests/support/tools.rs`).
const SKIPPED_VARIABLE: &str = "XTASK_SKIPPED";

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
        let log = skipped_log(ctx);
        if let Some(runs) = self.stress {
            let mut env = vec![(SKIPPED_VARIABLE.to_owned(), log)];
            if let Some(binary) = app_binary {
                env.push((APP_BINARY_VARIABLE.to_owned(), binary));
            }
            return Stress {
                runs,
                load: self.load,
                jobs: self
                    .jobs
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from)),
                timeout: self.test_timeout,
                selection: {
                    let mut selection = Selection::parse(&self.args)?;
                    if self.fast {
                        selection.skips.push(SLOW_PREFIX.to_owned());
                    }
                    selection
                },
                env,
            }
            .run(ctx);
        }
        let nextest = tools::find(Tool::CargoNextest).is_some();
        let slice = match (self.fast, self.slice) {
            (true, _) => Some(Slice::Fast),
            (false, slice) => slice,
        };
        let args = &with_filter(&self.args, slice, nextest);
        // The whole workspace, unless the arguments pick packages.
        let picks_packages = args
            .iter()
            .any(|arg| arg == "-p" || arg.starts_with("--package"));
        let workspace = (!picks_packages).then_some("--workspace");
        let cargo = ctx.cargo_path();
        let test = if nextest {
            let no_retries = self.no_retries.then_some("--retries=0");
            cmd!(
                ctx.sh,
                "{cargo} nextest run {no_retries...} {workspace...} {args...}"
            )
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
        if let Some(folder) = log.parent() {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("create {}", folder.display()))?;
        }
        match std::fs::remove_file(&log) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                return Err(err).with_context(|| format!("remove {}", log.display()));
            }
            _ => {}
        }
        let outcome = ctx
            .run(test.env(SKIPPED_VARIABLE, &log))
            .context("run the tests");
        if let Some(summary) = skipped_summary(ctx) {
            eprintln!("{summary}");
        }
        outcome
    }
}

/// The prefix of the end-to-end tests `--fast` leaves out.
const SLOW_PREFIX: &str = "slow_";
/// The prefix of the slow tests that boot real systemd hosts.
const HOSTS_PREFIX: &str = "slow_on_hosts_";

/// A part of the suite, by the tests' names. The three parts are every test
/// once: the fast tier, the other slow tests, and the real-host tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slice {
    /// Every test but the `slow_` ones.
    Fast,
    /// The `slow_` tests but the real-host ones.
    Slow,
    /// The real-host tests (`slow_on_hosts_`).
    Hosts,
}

/// The arguments with a slice's filter added in the syntax of the runner:
/// a nextest filter expression, or libtest's name filter and `--skip` after
/// `--`.
fn with_filter(args: &[String], slice: Option<Slice>, nextest: bool) -> Vec<String> {
    let mut args = args.to_vec();
    let Some(slice) = slice else {
        return args;
    };
    if nextest {
        let expression = match slice {
            Slice::Fast => format!("not test(/^{SLOW_PREFIX}/)"),
            Slice::Slow => format!("test(/^{SLOW_PREFIX}/) & not test(/^{HOSTS_PREFIX}/)"),
            Slice::Hosts => format!("test(/^{HOSTS_PREFIX}/)"),
        };
        args.splice(0..0, ["-E".to_owned(), expression]);
    } else {
        if !args.iter().any(|arg| arg == "--") {
            args.push("--".to_owned());
        }
        let filter: &[&str] = match slice {
            Slice::Fast => &["--skip", SLOW_PREFIX],
            Slice::Slow => &[SLOW_PREFIX, "--skip", HOSTS_PREFIX],
            Slice::Hosts => &[HOSTS_PREFIX],
        };
        args.extend(filter.iter().map(|word| (*word).to_owned()));
    }
    args
}

/// `target/xtask/skipped.tsv`, or where `$XTASK_SKIPPED` says (a test of
/// this task runs it inside another run, whose log it must leave alone).
fn skipped_log(ctx: &Ctx) -> PathBuf {
    std::env::var_os(SKIPPED_VARIABLE).map_or_else(
        || ctx.project.target_dir.join("xtask/skipped.tsv"),
        PathBuf::from,
    )
}

/// What the last test run did not exercise, from the skips the tests
/// recorded: `None` when every test ran its real part.
pub fn skipped_summary(ctx: &Ctx) -> Option<String> {
    let text = std::fs::read_to_string(skipped_log(ctx)).ok()?;
    summarize_skips(&text)
}

fn summarize_skips(text: &str) -> Option<String> {
    let mut skips: Vec<(&str, &str, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\t');
            Some((fields.next()?, fields.next()?, fields.next()?))
        })
        .collect();
    if skips.is_empty() {
        return None;
    }
    skips.sort_unstable();
    skips.dedup();
    let mut reasons: Vec<(&str, &str)> = skips
        .iter()
        .map(|(_, reason, fix)| (*reason, *fix))
        .collect();
    reasons.sort_unstable();
    reasons.dedup();
    let mut summary = format!(
        "not exercised: {} test(s) passed without running their real part, for want of {} {}:",
        skips.len(),
        reasons.len(),
        if reasons.len() == 1 { "tool" } else { "tools" }
    );
    for (reason, fix) in &reasons {
        let tests: Vec<&str> = skips
            .iter()
            .filter(|(_, other, _)| other == reason)
            .map(|(test, _, _)| *test)
            .collect();
        summary.push_str(&format!("\n  {reason} (`{fix}`): {}", tests.join(", ")));
    }
    summary.push_str("\n  `cargo xtask setup` installs every one of them; under CI=true a missing one fails its test");
    Some(summary)
}

#[cfg(test)]
mod tests {
    use super::{Slice, summarize_skips, with_filter};

    #[test]
    fn the_fast_filter_is_written_for_the_runner() {
        let words = |text: &str| -> Vec<String> {
            text.split(' ')
                .filter(|word| !word.is_empty())
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(with_filter(&words("-p app"), None, true), words("-p app"));
        assert_eq!(
            with_filter(&words("-p app"), Some(Slice::Fast), true),
            ["-E", "not test(/^slow_/)", "-p", "app"]
        );
        assert_eq!(
            with_filter(&words("-p app"), Some(Slice::Fast), false),
            words("-p app -- --skip slow_")
        );
        assert_eq!(
            with_filter(&words("upgrade -- --nocapture"), Some(Slice::Fast), false),
            words("upgrade -- --nocapture --skip slow_")
        );
        assert_eq!(
            with_filter(&[], Some(Slice::Slow), true),
            ["-E", "test(/^slow_/) & not test(/^slow_on_hosts_/)"]
        );
        assert_eq!(
            with_filter(&[], Some(Slice::Hosts), true),
            ["-E", "test(/^slow_on_hosts_/)"]
        );
    }

    /// libtest's reading of the slices' filters (a name is run when it
    /// contains a filter, if any, and no `--skip`): each test is in exactly
    /// one slice.
    #[test]
    fn the_three_slices_hold_every_test_once() {
        let runs = |slice: Slice, name: &str| {
            let args = with_filter(&[], Some(slice), false);
            let (mut filters, mut skips) = (Vec::new(), Vec::new());
            let mut words = args.iter().skip_while(|word| *word != "--").skip(1);
            while let Some(word) = words.next() {
                if word == "--skip" {
                    skips.push(words.next().unwrap().as_str());
                } else {
                    filters.push(word.as_str());
                }
            }
            (filters.is_empty() || filters.iter().any(|filter| name.contains(filter)))
                && !skips.iter().any(|skip| name.contains(skip))
        };
        for name in [
            "limits::idle_keep_alive",
            "slow_dist_two_clones_give_the_same_signed_bytes",
            "slow_on_hosts_a_fleet_of_four",
            "slow_dev_upgrades_the_service",
        ] {
            let slices: Vec<Slice> = [Slice::Fast, Slice::Slow, Slice::Hosts]
                .into_iter()
                .filter(|slice| runs(*slice, name))
                .collect();
            assert_eq!(slices.len(), 1, "{name}: {slices:?}");
        }
    }

    #[test]
    fn skips_are_summarized_by_what_was_missing() {
        assert_eq!(summarize_skips(""), None);
        let log = "units::verify\tsystemd-analyze is not installed\tapt-get install -y systemd\n\
                   dist::image\tpodman is not installed\tapt-get install -y podman\n\
                   dist::push\tpodman is not installed\tapt-get install -y podman\n\
                   dist::push\tpodman is not installed\tapt-get install -y podman\n";
        assert_eq!(
            summarize_skips(log).unwrap(),
            "not exercised: 3 test(s) passed without running their real part, for want of 2 tools:\n  \
             podman is not installed (`apt-get install -y podman`): dist::image, dist::push\n  \
             systemd-analyze is not installed (`apt-get install -y systemd`): units::verify\n  \
             `cargo xtask setup` installs every one of them; under CI=true a missing one fails its test"
        );
    }
}
