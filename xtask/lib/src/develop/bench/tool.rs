//! The build tool's own figures, each timed by hyperfine in the same run as
//! its floor (what the same step costs without the xtask around it):
//!
//! - `cargo xtask --help` against `cargo --version` (cargo's own start-up),
//!   and the xtask binary's `--help` alone;
//! - a no-op `cargo xtask dist` against the no-op `cargo build` it runs
//!   (the same command line and stamp, so cargo does nothing either way);
//! - the xtask's cold build (an empty target directory) against a cold
//!   build of an empty crate.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::exec::{Ctx, shell_quote};
use crate::targets::Target;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Timing {
    pub command: String,
    pub mean_ms: f64,
    pub stddev_ms: f64,
    pub runs: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolFigure {
    pub what: String,
    pub measured: Timing,
    pub floor: Option<Timing>,
}

impl ToolFigure {
    /// How many times the floor the figure takes.
    pub fn ratio(&self) -> Option<f64> {
        self.floor
            .as_ref()
            .map(|floor| self.measured.mean_ms / floor.mean_ms)
    }
}

/// Every figure; `quick` takes fewer runs and leaves out the cold builds.
pub fn measure(
    ctx: &Ctx,
    hyperfine: &Path,
    target: &Target,
    quick: bool,
) -> Result<Vec<ToolFigure>> {
    let runs = if quick { 5 } else { 20 };
    // `cargo` as a user types it: rustup's proxy on PATH, whose cost is part
    // of every `cargo xtask` (and of the floors, so the ratios stay fair).
    let cargo = Path::new("cargo");
    let xtask_binary = std::env::current_exe().context("find the running xtask binary")?;
    // Rebuilt while it runs (`ci`'s test step rebuilds it), the running
    // binary reads as "<path> (deleted)"; the binary now at that path is
    // the one `cargo xtask` runs.
    let xtask_binary = xtask_binary
        .to_str()
        .and_then(|path| path.strip_suffix(" (deleted)"))
        .map_or(xtask_binary.clone(), PathBuf::from);
    let xtask_binary = xtask_binary
        .strip_prefix(&ctx.project.root)
        .unwrap_or(&xtask_binary);
    let mut figures = Vec::new();

    let cargo_version = words([cargo.as_os_str(), OsStr::new("--version")]);
    let up_to_date = words([
        cargo.as_os_str(),
        OsStr::new("build"),
        OsStr::new("--package"),
        OsStr::new("xtask"),
    ]);
    let xtask_help = words([cargo.as_os_str(), OsStr::new("xtask"), OsStr::new("--help")]);
    let binary_help = words([xtask_binary.as_os_str(), OsStr::new("--help")]);
    let timings = hyperfine_runs(
        ctx,
        hyperfine,
        runs,
        None,
        &[],
        &[&xtask_help, &binary_help, &cargo_version, &up_to_date],
    )?;
    let [xtask_help, binary_help, cargo_version, up_to_date] = exactly(timings)?;
    figures.push(ToolFigure {
        what: "help through cargo".to_owned(),
        measured: xtask_help.clone(),
        floor: Some(cargo_version.clone()),
    });
    // `cargo xtask` is `cargo run`: cargo checks that the xtask is up to
    // date before running it, which is the whole of the difference.
    figures.push(ToolFigure {
        what: "help through cargo, against cargo's up-to-date check".to_owned(),
        measured: xtask_help,
        floor: Some(up_to_date),
    });
    figures.push(ToolFigure {
        what: "help from the xtask binary".to_owned(),
        measured: binary_help,
        floor: Some(cargo_version),
    });

    // The stamp's variables reach both commands: the xtask sets the same
    // ones itself, and the bare cargo build needs them to be a no-op.
    let (build, _) = crate::artifacts::pipeline::build_commands(ctx, std::slice::from_ref(target))?
        .into_iter()
        .next()
        .context("dist runs no cargo command for the host target")?;
    let build = Command::from(build);
    let env: Vec<(String, String)> = build
        .get_envs()
        .filter_map(|(key, value)| {
            Some((
                key.to_string_lossy().into_owned(),
                value?.to_string_lossy().into_owned(),
            ))
        })
        .collect();
    let cargo_build = words(std::iter::once(cargo.as_os_str()).chain(build.get_args()));
    let dist = words([
        cargo.as_os_str(),
        OsStr::new("xtask"),
        OsStr::new("dist"),
        OsStr::new("--target"),
        OsStr::new(target.triple),
    ]);
    let timings = {
        let _kept = SetAside::dist_folder(ctx)?;
        hyperfine_runs(ctx, hyperfine, runs, None, &env, &[&dist, &cargo_build])?
    };
    let [dist, cargo_build] = exactly(timings)?;
    figures.push(ToolFigure {
        what: "no-op dist".to_owned(),
        measured: dist,
        floor: Some(cargo_build),
    });

    if !quick {
        figures.push(cold_builds(ctx, hyperfine)?);
    }
    Ok(figures)
}

/// The user's `target/dist/`, renamed aside while the timed `dist` runs
/// write one of their own (for the host target alone), and renamed back
/// afterwards, also on error: a benchmark leaves a multi-target release
/// and its image record as they were.
struct SetAside {
    dist: PathBuf,
    aside: PathBuf,
}

impl SetAside {
    fn dist_folder(ctx: &Ctx) -> Result<Option<SetAside>> {
        let dist = ctx.project.dist_dir();
        let aside = dist.with_file_name("dist.kept-by-bench");
        if aside.exists() {
            bail!(
                "{} is there from an interrupted bench and holds the release folder: move it back with `rm -rf {dist} && mv {aside} {dist}`",
                aside.display(),
                dist = dist.display(),
                aside = aside.display()
            );
        }
        if !dist.exists() {
            return Ok(None);
        }
        std::fs::rename(&dist, &aside)
            .with_context(|| format!("set {} aside while dist is timed", dist.display()))?;
        Ok(Some(SetAside { dist, aside }))
    }
}

impl Drop for SetAside {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dist);
        if let Err(err) = std::fs::rename(&self.aside, &self.dist) {
            eprintln!(
                "error: could not put {} back as {}: {err}",
                self.aside.display(),
                self.dist.display()
            );
        }
    }
}

/// The xtask built into an empty target directory, against an empty crate
/// built the same way: what a new user waits for on the first `cargo xtask`.
fn cold_builds(ctx: &Ctx, hyperfine: &Path) -> Result<ToolFigure> {
    let scratch = ctx.project.target_dir.join("bench/cold");
    let _ = std::fs::remove_dir_all(&scratch);
    // hyperfine runs in the project root: relative paths read better.
    let shown = |path: &Path| {
        path.strip_prefix(&ctx.project.root)
            .unwrap_or(path)
            .to_path_buf()
    };
    let empty_crate = scratch.join("empty");
    std::fs::create_dir_all(empty_crate.join("src"))
        .with_context(|| format!("create {}", empty_crate.display()))?;
    std::fs::write(
        empty_crate.join("Cargo.toml"),
        "[package]\nname = \"empty\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n[workspace]\n",
    )?;
    std::fs::write(empty_crate.join("src/main.rs"), "fn main() {}\n")?;
    let cargo = Path::new("cargo");
    let xtask_target = shown(&scratch.join("xtask-target"));
    let empty_target = shown(&scratch.join("empty-target"));
    let empty_manifest = shown(&empty_crate.join("Cargo.toml"));
    let xtask_build = words([
        cargo.as_os_str(),
        OsStr::new("build"),
        OsStr::new("--package"),
        OsStr::new("xtask"),
        OsStr::new("--locked"),
        OsStr::new("--offline"),
        OsStr::new("--target-dir"),
        xtask_target.as_os_str(),
    ]);
    let empty_build = words([
        cargo.as_os_str(),
        OsStr::new("build"),
        OsStr::new("--offline"),
        OsStr::new("--manifest-path"),
        empty_manifest.as_os_str(),
        OsStr::new("--target-dir"),
        empty_target.as_os_str(),
    ]);
    // Each run starts from an empty target directory.
    let prepare = format!(
        "rm -rf {} {}",
        shell_quote(xtask_target.as_os_str()),
        shell_quote(empty_target.as_os_str())
    );
    let timings = hyperfine_runs(
        ctx,
        hyperfine,
        1,
        Some(&prepare),
        &[],
        &[&xtask_build, &empty_build],
    )?;
    let _ = std::fs::remove_dir_all(&scratch);
    let [xtask_build, empty_build] = exactly(timings)?;
    Ok(ToolFigure {
        what: "cold build of the xtask (empty target directory)".to_owned(),
        measured: xtask_build,
        floor: Some(empty_build),
    })
}

/// The timings of the `N` commands given to one hyperfine run.
fn exactly<const N: usize>(timings: Vec<Timing>) -> Result<[Timing; N]> {
    <[Timing; N]>::try_from(timings).map_err(|timings| {
        anyhow::anyhow!(
            "hyperfine reported {} results for {N} commands: run it again, its report may be stale",
            timings.len()
        )
    })
}

/// A command line hyperfine splits back into the same words.
fn words<'a>(words: impl IntoIterator<Item = &'a OsStr>) -> String {
    words
        .into_iter()
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Times `commands` with hyperfine (no shell in between), after one warm-up
/// run each unless a `prepare` command resets them.
fn hyperfine_runs(
    ctx: &Ctx,
    hyperfine: &Path,
    runs: u32,
    prepare: Option<&str>,
    env: &[(String, String)],
    commands: &[&str],
) -> Result<Vec<Timing>> {
    let bench_dir = ctx.project.target_dir.join("bench");
    std::fs::create_dir_all(&bench_dir)
        .with_context(|| format!("create {}", bench_dir.display()))?;
    let export = bench_dir.join("hyperfine.json");
    let mut command = Command::new(hyperfine);
    command
        .current_dir(&ctx.project.root)
        .arg("--shell=none")
        .arg("--style=basic")
        .arg("--runs")
        .arg(runs.to_string())
        .arg("--export-json")
        .arg(&export);
    match prepare {
        Some(prepare) => command.arg("--prepare").arg(prepare),
        None => command.arg("--warmup").arg("1"),
    };
    command
        .args(commands)
        .envs(env.iter().map(|(key, value)| (key, value)));
    eprintln!("$ {}", ctx.display(&command, false));
    let status = command.status().context("run hyperfine")?;
    if !status.success() {
        bail!("hyperfine failed ({status}): run the command above to see why");
    }
    let report = std::fs::read_to_string(&export).context("read hyperfine's report")?;
    parse_hyperfine(&report, runs)
}

#[derive(Deserialize)]
struct HyperfineReport {
    results: Vec<HyperfineResult>,
}

#[derive(Deserialize)]
struct HyperfineResult {
    command: String,
    mean: f64,
    stddev: Option<f64>,
}

/// The mean and standard deviation of each command in hyperfine's
/// `--export-json` report, in milliseconds.
pub fn parse_hyperfine(json: &str, runs: u32) -> Result<Vec<Timing>> {
    let report: HyperfineReport =
        serde_json::from_str(json).context("read hyperfine's JSON report")?;
    Ok(report
        .results
        .into_iter()
        .map(|result| Timing {
            command: result.command,
            mean_ms: result.mean * 1_000.0,
            stddev_ms: result.stddev.unwrap_or(0.0) * 1_000.0,
            runs,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyperfine_reports_are_read_in_milliseconds() {
        let json = r#"{"results": [
            {"command": "cargo xtask --help", "mean": 0.0825, "stddev": 0.004, "median": 0.08, "times": [0.08]},
            {"command": "cargo --version", "mean": 0.021, "stddev": null, "median": 0.021, "times": [0.021]}
        ]}"#;
        let timings = parse_hyperfine(json, 5).unwrap();
        assert_eq!(timings.len(), 2);
        assert_eq!(timings[0].command, "cargo xtask --help");
        assert!((timings[0].mean_ms - 82.5).abs() < 1e-9);
        assert!((timings[0].stddev_ms - 4.0).abs() < 1e-9);
        assert_eq!(timings[1].stddev_ms, 0.0);
        let figure = ToolFigure {
            what: "help".to_owned(),
            measured: timings[0].clone(),
            floor: Some(timings[1].clone()),
        };
        assert!((figure.ratio().unwrap() - 82.5 / 21.0).abs() < 1e-9);
        assert!(parse_hyperfine("{}", 5).is_err());
        let [first, second] = exactly(timings.clone()).unwrap();
        assert_eq!(
            (first.command.as_str(), second.command.as_str()),
            ("cargo xtask --help", "cargo --version")
        );
        let mismatch = exactly::<3>(timings).unwrap_err().to_string();
        assert!(mismatch.contains("2 results for 3 commands"), "{mismatch}");
    }
}
