//! `cargo xtask ci`: the exact sequence CI runs, in order, stopping at the
//! first failure, with a summary of each step and its duration at the end.
//! The GitHub workflow and `.ci/run` call this task and nothing else.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::develop::bench::Bench;
use crate::develop::lint;
use crate::develop::test::{Slice, Test};
use crate::exec::Ctx;
use crate::manifest::{ArtifactKind, MANIFEST, Manifest};
use crate::release::dist::Dist;
use crate::targets;
use crate::tools::{self, Need, Tool};

#[derive(clap::Args, Debug)]
pub struct Ci {
    /// The fast tier, for every change: fmt, layering, clippy, dist and
    /// every test but the `slow_` end-to-end ones (no second clone, no
    /// host, no sanitizer, no benchmark)
    #[arg(long, conflicts_with = "part")]
    fast: bool,
    /// One of three parts that together run what `ci` runs, for machines
    /// working side by side: `checks` (the fast tier, sanitize and the
    /// quick benchmark), `slow` (dist and the slow tests but the real-host
    /// ones), `hosts` (dist and the real-host tests)
    #[arg(long, value_name = "PART", value_parser = ["checks", "slow", "hosts"])]
    part: Option<String>,
}

type StepFn = fn(&Ctx) -> Result<()>;

/// The steps, cheapest and most likely to fail first; `sanitize` after the
/// tests, since it rebuilds the service three times (Miri, ASan, TSan).
const STEPS: &[(&str, StepFn)] = &[
    ("fmt", lint::fmt),
    ("layering", crate::develop::layering::check),
    ("clippy", |ctx| {
        lint::clippy(ctx)?;
        lint::clippy_cross(ctx)
    }),
    ("dist", |ctx| Dist::default().run(ctx)),
    ("test", |ctx| test_with_the_dist_binary(ctx, None)),
    ("sanitize", crate::develop::sanitize::all),
    ("bench", quick_bench),
];

/// The fast tier: the steps before `test`, then the tests `test --fast`
/// runs.
const FAST_STEPS: &[(&str, StepFn)] = &[
    STEPS[0],
    STEPS[1],
    STEPS[2],
    STEPS[3],
    ("test", |ctx| {
        test_with_the_dist_binary(ctx, Some(Slice::Fast))
    }),
];

/// `ci --part checks`: the fast tier, then `sanitize` and the benchmark.
const CHECKS_STEPS: &[(&str, StepFn)] = &[
    FAST_STEPS[0],
    FAST_STEPS[1],
    FAST_STEPS[2],
    FAST_STEPS[3],
    FAST_STEPS[4],
    STEPS[5],
    STEPS[6],
];

/// `ci --part slow`: the slow tests but the real-host ones.
const SLOW_STEPS: &[(&str, StepFn)] = &[
    STEPS[3],
    ("test", |ctx| {
        test_with_the_dist_binary(ctx, Some(Slice::Slow))
    }),
];

/// `ci --part hosts`: the real-host tests.
const HOSTS_STEPS: &[(&str, StepFn)] = &[
    STEPS[3],
    ("test", |ctx| {
        test_with_the_dist_binary(ctx, Some(Slice::Hosts))
    }),
];

/// `bench --quick` on the binary the dist step built: every part of the
/// benchmark runs (and a failed request fails it); its figures go to
/// `target/bench/`. Without the benchmark tools it is skipped, except
/// under `CI=true`, where `setup --bench` has installed them.
fn quick_bench(ctx: &Ctx) -> Result<()> {
    let missing: Vec<Tool> = tools::ALL
        .into_iter()
        .filter(|tool| tool.info().need == Need::Bench && tools::find(*tool).is_none())
        .collect();
    if !missing.is_empty() && !crate::util::in_ci() {
        let names: Vec<&str> = missing.iter().map(|tool| tool.info().binary).collect();
        eprintln!(
            "skipped: {} not installed (`cargo xtask setup --bench` installs them)",
            names.join(", ")
        );
        return Ok(());
    }
    Bench::quick().run(ctx)
}

/// The test suite, with the service's integration tests run against the
/// release binary the dist step built for this machine: what ships is
/// what is tested.
fn test_with_the_dist_binary(ctx: &Ctx, slice: Option<Slice>) -> Result<()> {
    let app_binary = if ctx.dry_run {
        None
    } else {
        let manifest = Manifest::require(&ctx.project.dist_dir().join(MANIFEST))?;
        let host = targets::host_default(&ctx.stamp()?.host)?;
        let binary = manifest
            .artifact_for(ArtifactKind::Binary, host.triple)
            .with_context(|| format!("the dist manifest lists no {} binary", host.triple))?;
        Some(ctx.project.dist_dir().join(&binary.path))
    };
    Test {
        app_binary,
        slice,
        no_retries: true,
        ..Test::default()
    }
    .run(ctx)
}

enum Outcome {
    Passed(Duration),
    Failed(Duration),
    NotRun,
}

impl Ci {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let steps = match (self.fast, self.part.as_deref()) {
            (true, _) => FAST_STEPS,
            (false, Some("checks")) => CHECKS_STEPS,
            (false, Some("slow")) => SLOW_STEPS,
            (false, Some("hosts")) => HOSTS_STEPS,
            (false, _) => STEPS,
        };
        let mut outcomes: Vec<(&str, Outcome)> = steps
            .iter()
            .map(|(name, _)| (*name, Outcome::NotRun))
            .collect();
        let mut failure = None;
        for (index, (name, step)) in steps.iter().enumerate() {
            eprintln!("==> ci step {}/{}: {name}", index + 1, steps.len());
            let started = Instant::now();
            let result = step(ctx);
            let elapsed = started.elapsed();
            match result {
                Ok(()) => outcomes[index].1 = Outcome::Passed(elapsed),
                Err(err) => {
                    outcomes[index].1 = Outcome::Failed(elapsed);
                    failure = Some((name, err));
                    break;
                }
            }
        }
        print_summary(&outcomes);
        let tested = outcomes
            .iter()
            .any(|(name, outcome)| *name == "test" && !matches!(outcome, Outcome::NotRun));
        if tested && let Some(summary) = crate::develop::test::skipped_summary(ctx) {
            eprintln!("{summary}");
        }
        if let Some((name, err)) = failure {
            bail!("ci step `{name}` failed: {err:#}");
        }
        Ok(())
    }
}

fn print_summary(outcomes: &[(&str, Outcome)]) {
    let total: Duration = outcomes
        .iter()
        .map(|(_, outcome)| match outcome {
            Outcome::Passed(elapsed) | Outcome::Failed(elapsed) => *elapsed,
            Outcome::NotRun => Duration::ZERO,
        })
        .sum();
    eprintln!("==> ci summary");
    for (name, outcome) in outcomes {
        let line = match outcome {
            Outcome::Passed(elapsed) => {
                format!("ok       {name:<8} {:>7.1}s", elapsed.as_secs_f64())
            }
            Outcome::Failed(elapsed) => {
                format!("FAILED   {name:<8} {:>7.1}s", elapsed.as_secs_f64())
            }
            Outcome::NotRun => format!("not run  {name}"),
        };
        eprintln!("    {line}");
    }
    eprintln!("    total             {:>7.1}s", total.as_secs_f64());
}
