//! `cargo xtask test --stress N`: the flake hunt. The test binaries are
//! built once; then every selected test runs N times, each run a process of
//! its own (as nextest runs them), optionally while `stress-ng` keeps every
//! CPU busy. Nothing is retried: the report lists, per test, how many runs
//! failed and the distinct first lines of their failures, and any failure
//! fails the task. Each failed run's whole output is kept in
//! `target/stress/` (the FAIL line names the file), and the report says
//! when the kernel's connection-tracking table filled up meanwhile (it
//! then drops connections, which no code under test can help).
//!
//! It runs the test binaries itself rather than through a test runner, so
//! that it works the same with or without cargo-nextest and can say which
//! run of which test failed and how.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::exec::Ctx;
use crate::tools::{self, Tool};

/// What to run and how hard.
#[derive(Debug)]
pub struct Stress {
    pub runs: usize,
    /// Keep every CPU busy with `stress-ng` meanwhile.
    pub load: bool,
    /// Tests running at once.
    pub jobs: usize,
    /// A test run still going after this long is killed and counted failed.
    pub timeout: Duration,
    pub selection: Selection,
    /// Variables every test process gets (the binary under test, the skip log).
    pub env: Vec<(String, PathBuf)>,
}

/// Which tests, from the arguments after the flags: `-p`/`--package` and
/// `--test` pick what is built, `--skip PATTERN` leaves tests out, and any
/// other word is a name filter (a test runs if its name contains any).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub build_args: Vec<String>,
    pub filters: Vec<String>,
    pub skips: Vec<String>,
}

impl Selection {
    pub fn parse(args: &[String]) -> Result<Selection> {
        let mut selection = Selection::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |flag: &str| {
                args.next()
                    .cloned()
                    .with_context(|| format!("--stress: {flag} needs a value"))
            };
            match arg.as_str() {
                "-p" | "--package" | "--test" => {
                    let value = value(arg)?;
                    selection.build_args.extend([arg.clone(), value]);
                }
                "--skip" => selection.skips.push(value(arg)?),
                "--" => {}
                _ if arg.starts_with("--package=") || arg.starts_with("--test=") => {
                    selection.build_args.push(arg.clone());
                }
                _ if arg.starts_with('-') => bail!(
                    "--stress takes -p/--package, --test, --skip and test name filters, not {arg:?}: pick the tests by name (e.g. `cargo xtask test --stress 100 -p app upgrade`)"
                ),
                _ => selection.filters.push(arg.clone()),
            }
        }
        Ok(selection)
    }

    fn picks(&self, name: &str) -> bool {
        (self.filters.is_empty() || self.filters.iter().any(|filter| name.contains(filter)))
            && !self.skips.iter().any(|skip| name.contains(skip))
    }
}

/// One test binary cargo built.
#[derive(Debug)]
struct Binary {
    path: PathBuf,
    /// The package's folder: the working directory cargo test gives it.
    package_dir: PathBuf,
    /// The test target's name (`upgrade` for `app/tests/upgrade.rs`).
    target: String,
}

/// One test of one binary.
#[derive(Debug)]
struct Case {
    binary: Arc<Binary>,
    name: String,
}

impl Case {
    fn label(&self) -> String {
        format!("{}::{}", self.binary.target, self.name)
    }

    /// The real-host and release-build tests take turns, as in
    /// `.config/nextest.toml`: two at once only slow each other past their
    /// bounds.
    fn runs_alone(&self) -> bool {
        self.name.starts_with("slow_") || self.binary.target == "hosts"
    }
}

/// How one run of one test ended.
#[derive(Debug)]
enum Verdict {
    Passed,
    /// Failed, with the first line that says why.
    Failed(String),
}

impl Stress {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        if self.runs == 0 {
            bail!("--stress 0 runs nothing: give the number of runs, e.g. --stress 100");
        }
        let stress_ng = if self.load {
            Some(tools::require(Tool::StressNg)?)
        } else {
            None
        };
        let binaries = build(ctx, &self.selection)?;
        let cases = list(&binaries, &self.selection)?;
        if ctx.dry_run {
            return Ok(());
        }
        if cases.is_empty() {
            bail!(
                "--stress: no test matches {:?} (skipping {:?}); `cargo xtask test -- --list` lists them",
                self.selection.filters,
                self.selection.skips
            );
        }
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        let _load = stress_ng
            .map(|stress_ng| Load::start(ctx, &stress_ng, cpus))
            .transpose()?;
        eprintln!(
            "stress: {} test(s) x {} run(s), {} at a time{}; each bounded by {} s",
            cases.len(),
            self.runs,
            self.jobs,
            if self.load {
                format!(", with stress-ng loading {cpus} CPU(s)")
            } else {
                String::new()
            },
            self.timeout.as_secs()
        );
        let started = Instant::now();
        let kept = ctx.project.target_dir.join("stress");
        let conntrack = ConntrackWatch::start();
        let results = self.run_all(&cases, &kept);
        let report = Report::of(&cases, &results);
        eprintln!("{}", report.text(self.runs, started.elapsed()));
        if let Some(full) = conntrack.and_then(ConntrackWatch::finish) {
            eprintln!("{full}");
        }
        if report.failed_runs > 0 {
            bail!(
                "{} of {} test runs failed, in {} of {} tests (see the table above)",
                report.failed_runs,
                cases.len() * self.runs,
                report.failing_tests,
                cases.len()
            );
        }
        Ok(())
    }

    /// Every case `runs` times, `jobs` at once, run-major (the first run of
    /// every test before any second), so that a long hunt cut short still
    /// covered every test.
    fn run_all(&self, cases: &[Case], kept: &Path) -> Vec<Vec<(Verdict, Duration)>> {
        let queue: Vec<(usize, usize)> = (0..self.runs)
            .flat_map(|run| (0..cases.len()).map(move |case| (run, case)))
            .collect();
        let next = AtomicUsize::new(0);
        let alone = Mutex::new(());
        let results: Mutex<Vec<Vec<(Verdict, Duration)>>> =
            Mutex::new(cases.iter().map(|_| Vec::new()).collect());
        let done = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..self.jobs.max(1) {
                scope.spawn(|| {
                    while let Some(&(run, index)) = queue.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        let case = &cases[index];
                        let _turn = case
                            .runs_alone()
                            .then(|| alone.lock().unwrap_or_else(PoisonError::into_inner));
                        let began = Instant::now();
                        let (verdict, output) = run_once(case, &self.env, self.timeout);
                        let took = began.elapsed();
                        if let Verdict::Failed(why) = &verdict {
                            let kept = keep_output(kept, case, run + 1, &output);
                            eprintln!(
                                "FAIL  {} (run {}/{}): {why}{kept}",
                                case.label(),
                                run + 1,
                                self.runs
                            );
                        }
                        results.lock().unwrap_or_else(PoisonError::into_inner)[index]
                            .push((verdict, took));
                        let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if finished.is_multiple_of(cases.len()) {
                            eprintln!("stress: {} of {} test runs done", finished, queue.len());
                        }
                    }
                });
            }
        });
        results.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Builds the test binaries once (`cargo test --no-run`) and returns them.
fn build(ctx: &Ctx, selection: &Selection) -> Result<Vec<Arc<Binary>>> {
    let cargo = ctx.cargo_path();
    let picks_packages = selection
        .build_args
        .iter()
        .any(|arg| arg == "-p" || arg.starts_with("--package"));
    let workspace = (!picks_packages).then_some("--workspace");
    let build_args = &selection.build_args;
    let build = cmd!(
        ctx.sh,
        "{cargo} test --no-run --message-format=json-render-diagnostics {workspace...} {build_args...}"
    );
    let output = ctx
        .read_echoed(ctx.stamped(build)?)
        .context("build the test binaries")?;
    let mut binaries = Vec::new();
    for line in output.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test =
            message["reason"] == "compiler-artifact" && message["profile"]["test"] == true;
        let (Some(path), Some(manifest), Some(target)) = (
            message["executable"].as_str(),
            message["manifest_path"].as_str(),
            message["target"]["name"].as_str(),
        ) else {
            continue;
        };
        if !is_test {
            continue;
        }
        binaries.push(Arc::new(Binary {
            path: PathBuf::from(path),
            package_dir: Path::new(manifest)
                .parent()
                .context("a manifest path has a folder")?
                .to_owned(),
            target: target.to_owned(),
        }));
    }
    Ok(binaries)
}

/// The selected tests of every binary, from `<binary> --list`.
fn list(binaries: &[Arc<Binary>], selection: &Selection) -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    for binary in binaries {
        let output = Command::new(&binary.path)
            .args(["--list", "--format", "terse"])
            .current_dir(&binary.package_dir)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("list the tests of {}", binary.path.display()))?;
        if !output.status.success() {
            bail!(
                "`{} --list` failed ({})",
                binary.path.display(),
                output.status
            );
        }
        let text = String::from_utf8_lossy(&output.stdout);
        cases.extend(
            parse_list(&text)
                .filter(|name| selection.picks(name))
                .map(|name| Case {
                    binary: binary.clone(),
                    name: name.to_owned(),
                }),
        );
    }
    Ok(cases)
}

/// The test names in libtest's `--list --format terse` output.
fn parse_list(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|line| line.strip_suffix(": test"))
}

/// Runs one test in a process of its own (and a process group of its own,
/// so that a timeout kills what it started too): how it ended, and what it
/// printed.
fn run_once(case: &Case, env: &[(String, PathBuf)], timeout: Duration) -> (Verdict, String) {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(&case.binary.path);
    command
        .args(["--exact", &case.name, "--test-threads=1"])
        .current_dir(&case.binary.package_dir)
        .env("CARGO_MANIFEST_DIR", &case.binary.package_dir)
        .envs(env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            let why = format!("could not start the test: {err}");
            return (Verdict::Failed(why), String::new());
        }
    };
    let (status, output) = match wait_bounded(child, timeout) {
        Ok(Some(done)) => done,
        Ok(None) => {
            let why = format!("still running after {} s: killed", timeout.as_secs());
            return (Verdict::Failed(why), String::new());
        }
        Err(err) => return (Verdict::Failed(format!("{err:#}")), String::new()),
    };
    if status.success() {
        return (Verdict::Passed, output);
    }
    let why = first_failure_line(&output).unwrap_or_else(|| format!("{status}"));
    (Verdict::Failed(why), output)
}

/// Writes a failed run's output to `<kept>/<test>.run<N>.log`; returns what
/// the FAIL line says about it (nothing when there was no output, or it
/// could not be written, which the line then says).
fn keep_output(kept: &Path, case: &Case, run: usize, output: &str) -> String {
    if output.is_empty() {
        return String::new();
    }
    let path = kept.join(format!("{}.run{run}.log", case.label().replace("::", "-")));
    match std::fs::create_dir_all(kept)
        .map_err(anyhow::Error::from)
        .and_then(|()| crate::util::write_atomically(&path, output.as_bytes()))
    {
        Ok(()) => format!(" (output: {})", path.display()),
        Err(err) => format!(" (its output could not be kept: {err:#})"),
    }
}

/// Waits for `child` up to `timeout`, collecting stdout and stderr; `None`
/// if it was still running (it and its process group are then killed).
fn wait_bounded(
    mut child: Child,
    timeout: Duration,
) -> Result<Option<(std::process::ExitStatus, String)>> {
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|out| Box::new(out) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|err| Box::new(err) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut stream| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stream.read_to_end(&mut text);
            text
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("wait for the test")? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let group = child.id() as libc::pid_t;
    // SAFETY: kill(2) with a negative pid signals the process group the
    // test was started in (its own); it only reads its arguments.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
    let Some(status) = status else {
        let _ = child.wait();
        return Ok(None);
    };
    let mut output = String::new();
    for reader in readers {
        let bytes = reader.join().unwrap_or_default();
        output.push_str(&String::from_utf8_lossy(&bytes));
    }
    Ok(Some((status, output)))
}

/// Where libtest's output says why a test failed: the panic's location and
/// the first line of its message.
fn first_failure_line(output: &str) -> Option<String> {
    let mut lines = output.lines();
    while let Some(line) = lines.next() {
        // `thread 'name' panicked at …:` (before Rust 1.92) or
        // `thread 'name' (1234) panicked at …:`.
        let panic = line
            .strip_prefix("thread '")
            .and_then(|rest| rest.split_once(" panicked at "));
        if let Some((_, location)) = panic {
            let location = location.trim_end_matches(':');
            let message = lines.next().unwrap_or_default().trim();
            let mut said = format!("{location}: {message}");
            if said.len() > 240 {
                let cut = (0..=240)
                    .rev()
                    .find(|at| said.is_char_boundary(*at))
                    .unwrap_or(0);
                said.truncate(cut);
                said.push_str(" ...");
            }
            return Some(said);
        }
    }
    None
}

/// The kernel's connection-tracking table, watched while the tests run.
/// Once a firewall rule (podman's, for one) turns tracking on, every
/// connection, loopback ones included, holds an entry for up to two
/// minutes after it closes; when the table is full the kernel drops new
/// connections, which tests see as connect timeouts that say nothing about
/// the code under test. Tests that open thousands of connections a second,
/// run back to back, can fill it.
struct ConntrackWatch {
    max: usize,
    peak: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<()>,
}

/// The table's size and fill, as `/proc` gives them (absent when the
/// kernel does not track connections).
fn conntrack(name: &str) -> Option<usize> {
    std::fs::read_to_string(format!("/proc/sys/net/netfilter/nf_conntrack_{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl ConntrackWatch {
    fn start() -> Option<ConntrackWatch> {
        let max = conntrack("max")?;
        let peak = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = std::thread::spawn({
            let (peak, stop) = (peak.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(count) = conntrack("count") {
                        peak.fetch_max(count, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        });
        Some(ConntrackWatch {
            max,
            peak,
            stop,
            sampler,
        })
    }

    /// What the report adds when the table filled up.
    fn finish(self) -> Option<String> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.sampler.join();
        conntrack_full(self.peak.load(Ordering::Relaxed), self.max)
    }
}

fn conntrack_full(peak: usize, max: usize) -> Option<String> {
    // Sampled, so a table that filled up may be seen just short of full.
    (peak * 100 >= max * 98).then(|| {
        format!(
            "stress: the kernel's connection-tracking table filled up ({peak} of {max} entries): \
             it then drops new connections, so connect timeouts above may be that, not the code; \
             run fewer at once (--jobs 1) or raise net.netfilter.nf_conntrack_max"
        )
    })
}

/// `stress-ng` keeping every CPU busy for as long as this lives.
struct Load(Child);

impl Load {
    fn start(ctx: &Ctx, stress_ng: &Path, cpus: usize) -> Result<Load> {
        #[cfg(target_os = "linux")]
        use std::os::unix::process::CommandExt;
        let cpus = cpus.to_string();
        let command = cmd!(ctx.sh, "{stress_ng} --cpu {cpus} --quiet");
        let mut command = Command::from(command);
        eprintln!("$ {} &", ctx.display(&command, false));
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl, which is async-signal-safe: stress-ng ends with this
        // process however it ends, so no load outlives the hunt.
        #[cfg(target_os = "linux")]
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .context("start stress-ng")?;
        Ok(Load(child))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // stress-ng stops its workers on SIGTERM (SIGKILL would leave them).
        // SAFETY: kill(2) on the pid of a child this value owns.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// Runs and failures per test.
struct Report {
    rows: Vec<Row>,
    failed_runs: usize,
    failing_tests: usize,
}

struct Row {
    label: String,
    runs: usize,
    failures: BTreeMap<String, usize>,
    /// The slowest run: how close the test comes to its bounds.
    slowest: Duration,
}

impl Report {
    fn of(cases: &[Case], results: &[Vec<(Verdict, Duration)>]) -> Report {
        let rows: Vec<Row> = cases
            .iter()
            .zip(results)
            .map(|(case, runs)| {
                let mut failures = BTreeMap::new();
                for (verdict, _) in runs {
                    if let Verdict::Failed(why) = verdict {
                        *failures.entry(why.clone()).or_insert(0) += 1;
                    }
                }
                Row {
                    label: case.label(),
                    runs: runs.len(),
                    failures,
                    slowest: runs.iter().map(|(_, took)| *took).max().unwrap_or_default(),
                }
            })
            .collect();
        let failed_runs = rows
            .iter()
            .map(|row| row.failures.values().sum::<usize>())
            .sum();
        let failing_tests = rows.iter().filter(|row| !row.failures.is_empty()).count();
        Report {
            rows,
            failed_runs,
            failing_tests,
        }
    }

    /// The tests that failed, each with its reasons, then the ten slowest
    /// of those that did not.
    fn text(&self, runs: usize, elapsed: Duration) -> String {
        let mut text = format!(
            "==> stress summary: {} test(s), {runs} run(s) each, in {:.0} s\n",
            self.rows.len(),
            elapsed.as_secs_f64()
        );
        for row in self.rows.iter().filter(|row| !row.failures.is_empty()) {
            let failed: usize = row.failures.values().sum();
            text.push_str(&format!(
                "    FAILED {failed} of {} runs: {} (slowest run {:.1} s)\n",
                row.runs,
                row.label,
                row.slowest.as_secs_f64()
            ));
            for (why, count) in &row.failures {
                text.push_str(&format!("        {count} x {why}\n"));
            }
        }
        let mut steady: Vec<&Row> = self
            .rows
            .iter()
            .filter(|row| row.failures.is_empty())
            .collect();
        text.push_str(&format!(
            "    passed every run: {} test(s); the slowest runs:\n",
            steady.len()
        ));
        steady.sort_by_key(|row| std::cmp::Reverse(row.slowest));
        for row in steady.iter().take(10) {
            text.push_str(&format!(
                "        {:>6.1} s  {}\n",
                row.slowest.as_secs_f64(),
                row.label
            ));
        }
        text.pop();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arguments_split_into_build_picks_filters_and_skips() {
        let args = |words: &str| words.split(' ').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            Selection::parse(&args("-p app --test upgrade failed ten --skip slow_")).unwrap(),
            Selection {
                build_args: args("-p app --test upgrade"),
                filters: args("failed ten"),
                skips: args("slow_"),
            }
        );
        assert_eq!(
            Selection::parse(&args("--package=app -- upgrade")).unwrap(),
            Selection {
                build_args: args("--package=app"),
                filters: args("upgrade"),
                skips: Vec::new(),
            }
        );
        let refused = Selection::parse(&args("-E not")).unwrap_err().to_string();
        assert!(refused.contains("not \"-E\""), "{refused}");
        assert!(Selection::parse(&args("--skip")).is_err());
    }

    #[test]
    fn a_name_is_picked_by_any_filter_unless_skipped() {
        let selection = Selection {
            filters: vec!["upgrade".into(), "drain".into()],
            skips: vec!["ten_".into()],
            ..Selection::default()
        };
        assert!(selection.picks("failed_upgrades_leave_the_old_process_serving"));
        assert!(selection.picks("drain_waits"));
        assert!(!selection.picks("ten_upgrades_under_load"));
        assert!(!selection.picks("healthz"));
        assert!(Selection::default().picks("anything"));
    }

    #[test]
    fn tests_are_read_from_the_terse_list() {
        let list = "upgrade::a: test\nb_c: test\nsome_bench: bench\n\n";
        assert_eq!(parse_list(list).collect::<Vec<_>>(), ["upgrade::a", "b_c"]);
    }

    #[test]
    fn a_failure_is_named_by_its_panic_location_and_first_line() {
        let output = "running 1 test\n\
            some log line\n\
            thread 'failed_upgrades' panicked at app/tests/upgrade.rs:144:5:\n\
            the new process (pid 12) exited before it was ready\n\
            second line\n";
        assert_eq!(
            first_failure_line(output).unwrap(),
            "app/tests/upgrade.rs:144:5: the new process (pid 12) exited before it was ready"
        );
        let with_thread_id = "thread 'main' (4242) panicked at src/a.rs:2:5:\nboom\n";
        assert_eq!(
            first_failure_line(with_thread_id).unwrap(),
            "src/a.rs:2:5: boom"
        );
        assert_eq!(first_failure_line("error: test failed\n"), None);
        let long = format!("thread 'x' panicked at a.rs:1:1:\n{}\n", "é".repeat(300));
        let said = first_failure_line(&long).unwrap();
        assert!(said.len() <= 244 && said.ends_with(" ..."), "{said}");
    }

    #[test]
    fn a_full_connection_tracking_table_is_reported() {
        assert_eq!(conntrack_full(1_000, 262_144), None);
        assert_eq!(conntrack_full(250_000, 262_144), None);
        let full = conntrack_full(262_144, 262_144).unwrap();
        assert!(
            full.contains("(262144 of 262144 entries)") && full.contains("--jobs 1"),
            "{full}"
        );
        assert!(
            conntrack_full(258_000, 262_144).is_some(),
            "seen just short of full"
        );
    }

    #[test]
    fn a_failed_runs_output_is_kept_in_a_file_the_fail_line_names() {
        let kept = tempfile::tempdir().unwrap();
        let case = Case {
            binary: Arc::new(Binary {
                path: PathBuf::from("/t"),
                package_dir: PathBuf::from("/p"),
                target: "upgrade".into(),
            }),
            name: "tests::flaky".into(),
        };
        let file = kept.path().join("upgrade-tests-flaky.run7.log");
        assert_eq!(
            keep_output(kept.path(), &case, 7, "left: 1\nright: 2\n"),
            format!(" (output: {})", file.display())
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "left: 1\nright: 2\n"
        );
        assert_eq!(keep_output(kept.path(), &case, 8, ""), "");
        assert!(!kept.path().join("upgrade-tests-flaky.run8.log").exists());
        let blocked = kept.path().join("a file");
        std::fs::write(&blocked, "").unwrap();
        assert!(
            keep_output(&blocked, &case, 9, "x").starts_with(" (its output could not be kept: "),
            "a folder that cannot be made is said, not fatal"
        );
    }

    #[test]
    fn the_report_counts_failures_per_test_and_groups_their_reasons() {
        let binary = Arc::new(Binary {
            path: PathBuf::from("/t"),
            package_dir: PathBuf::from("/p"),
            target: "upgrade".into(),
        });
        let cases = ["steady", "flaky"].map(|name| Case {
            binary: binary.clone(),
            name: name.into(),
        });
        let ran = |verdict: Verdict, seconds: u64| (verdict, Duration::from_secs(seconds));
        let results = vec![
            vec![
                ran(Verdict::Passed, 1),
                ran(Verdict::Passed, 3),
                ran(Verdict::Passed, 2),
            ],
            vec![
                ran(Verdict::Failed("a.rs:1:1: late".into()), 9),
                ran(Verdict::Passed, 1),
                ran(Verdict::Failed("a.rs:1:1: late".into()), 8),
            ],
        ];
        let report = Report::of(&cases, &results);
        assert_eq!((report.failed_runs, report.failing_tests), (2, 1));
        let text = report.text(3, Duration::from_secs(7));
        assert_eq!(
            text,
            "==> stress summary: 2 test(s), 3 run(s) each, in 7 s\n    \
             FAILED 2 of 3 runs: upgrade::flaky (slowest run 9.0 s)\n        \
             2 x a.rs:1:1: late\n    \
             passed every run: 1 test(s); the slowest runs:\n           \
             3.0 s  upgrade::steady"
        );
    }
}
