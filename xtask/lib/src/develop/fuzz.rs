//! `cargo xtask fuzz`: the fuzz targets (`xtask/fuzz/`) of the parsers
//! that read what comes from outside, run with cargo-fuzz and libFuzzer on
//! the pinned nightly (`rustup::NIGHTLY`), each for a bounded time. Each
//! starts from the committed seeds (`xtask/fuzz/seeds/<target>/`, read
//! only) and a working corpus that grows across runs
//! (`target/fuzz/corpus/<target>/`); an input that breaks an invariant is
//! kept in `target/fuzz/artifacts/<target>/` and fails the task. The tests
//! replay the seeds without a nightly (`xtask/tests/fuzz_seeds.rs`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::exec::Ctx;
use crate::rustup::{self, NIGHTLY};
use crate::tools::{self, Tool};

#[derive(clap::Args, Debug)]
pub struct Fuzz {
    /// The targets to run, by name [default: all of them]
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
    /// How long each target runs: seconds, or with a unit (90s, 5m)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = seconds)]
    time: u64,
    /// Print the targets and exit
    #[arg(long)]
    list: bool,
}

impl Fuzz {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        crate::signing::refuse_project_code_with_secrets("`fuzz`")?;
        let fuzz_dir = ctx.project.root.join("xtask/fuzz");
        if !fuzz_dir.join("Cargo.toml").is_file() {
            bail!(
                "no fuzz targets in this workspace (xtask/fuzz/): they fuzz the libraries' parsers and run in the libraries' repository"
            );
        }
        let known = targets(&fuzz_dir)?;
        if self.list {
            println!("{}", known.join("\n"));
            return Ok(());
        }
        for target in &self.targets {
            if !known.contains(target) {
                bail!(
                    "no fuzz target {target:?}: the targets are {} (xtask/fuzz/Cargo.toml)",
                    known.join(", ")
                );
            }
        }
        let chosen = if self.targets.is_empty() {
            known
        } else {
            self.targets
        };
        tools::require(Tool::CargoFuzz)?;
        rustup::ensure_nightly(ctx)?;
        let toolchain = format!("+{NIGHTLY}");
        let work = ctx.project.target_dir.join("fuzz");
        let _target_dir = ctx.sh.push_env("CARGO_TARGET_DIR", work.join("build"));
        let mut failed = Vec::new();
        for target in &chosen {
            let corpus = work.join("corpus").join(target);
            let artifacts = work.join("artifacts").join(target);
            let seeds = fuzz_dir.join("seeds").join(target);
            if !ctx.dry_run {
                for folder in [&corpus, &artifacts] {
                    std::fs::create_dir_all(folder)
                        .with_context(|| format!("create {}", folder.display()))?;
                }
            }
            let max_time = format!("-max_total_time={}", self.time);
            let artifact_prefix = format!("-artifact_prefix={}/", artifacts.display());
            let run = cmd!(
                ctx.sh,
                "cargo {toolchain} fuzz run --fuzz-dir {fuzz_dir} {target} {corpus} {seeds} -- {max_time} {artifact_prefix}"
            );
            if let Err(err) = ctx.run(run) {
                eprintln!("fuzz: {target} failed: {err:#}");
                failed.push(format!("{target} (inputs in {})", artifacts.display()));
            }
        }
        if !failed.is_empty() {
            bail!(
                "{} of {} fuzz targets found an input that breaks an invariant: {}; replay one with `cargo {toolchain} fuzz run --fuzz-dir xtask/fuzz <target> <input>`, fix the parser, and add the input to xtask/fuzz/seeds/<target>/",
                failed.len(),
                chosen.len(),
                failed.join(", ")
            );
        }
        eprintln!(
            "fuzz: {} target(s), {} s each, no invariant broken",
            chosen.len(),
            self.time
        );
        Ok(())
    }
}

/// `--time`: `90`, `90s` or `5m`, as whole seconds, at least one.
fn seconds(text: &str) -> Result<u64, String> {
    let (number, unit) = match text.strip_suffix('m') {
        Some(minutes) => (minutes, 60),
        None => (text.strip_suffix('s').unwrap_or(text), 1),
    };
    match number.parse::<u64>() {
        Ok(count) if count > 0 => Ok(count * unit),
        _ => Err(format!(
            "{text:?} is not a duration: give seconds or minutes, e.g. 90s or 5m"
        )),
    }
}

/// The targets `xtask/fuzz/Cargo.toml` declares, in its order.
fn targets(fuzz_dir: &std::path::Path) -> Result<Vec<String>> {
    let path: PathBuf = fuzz_dir.join("Cargo.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let manifest: toml::Table =
        toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    let names: Vec<String> = manifest
        .get("bin")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|bin| bin.get("name").and_then(toml::Value::as_str))
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        bail!("{} declares no fuzz target ([[bin]])", path.display());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_seconds_or_minutes() {
        assert_eq!(seconds("90"), Ok(90));
        assert_eq!(seconds("60s"), Ok(60));
        assert_eq!(seconds("5m"), Ok(300));
        for bad in ["0", "0s", "", "m", "5h", "-1", "1.5m"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }
}
