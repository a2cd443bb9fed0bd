//! How a deploy goes through a fleet: in batches (a count or a share of the
//! hosts, deployed in parallel, each host's output kept apart and printed
//! as one block), optionally behind a canary, the first host alone, whose
//! own `/metrics` must show a 5xx ratio and a p99 latency within bounds for
//! a soak time before any other host changes. A failure anywhere stops
//! the rollout; `deploy` then switches back every host already switched.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::host::Host;
use super::interrupt::interrupted;
use super::output::{OUTPUT, say};
use super::plan::Plan;

/// The rollout flags of `deploy`.
#[derive(clap::Args, Debug)]
pub struct Rollout {
    /// Hosts deployed at once (after the canary), a count or a share of the
    /// hosts: 2, 25% [default: 1, one after another]
    #[arg(long, value_name = "N|P%", value_parser = parse_batch)]
    batch: Option<Batch>,
    /// Deploy the first host alone, then watch its /metrics this long
    /// before any other host changes: its 5xx ratio and p99 latency must
    /// stay within [workspace.metadata.xtask.canary]
    #[arg(long, value_name = "DURATION", value_parser = crate::util::parse_duration)]
    canary: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    Count(usize),
    Percent(usize),
}

fn parse_batch(text: &str) -> Result<Batch, String> {
    let (number, percent) = match text.strip_suffix('%') {
        Some(number) => (number, true),
        None => (text, false),
    };
    let value: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is neither a count (2) nor a share of the hosts (25%)"))?;
    match (percent, value) {
        (_, 0) => Err(format!("{text}: a batch holds at least one host")),
        (true, 101..) => Err(format!("{text}: a share is at most 100%")),
        (true, _) => Ok(Batch::Percent(value)),
        (false, _) => Ok(Batch::Count(value)),
    }
}

impl Rollout {
    pub fn canary(&self) -> Option<Duration> {
        self.canary
    }

    /// The hosts of each batch, in order: the canary alone first, if any.
    pub fn batches(&self, hosts: usize) -> Vec<Range<usize>> {
        let first = usize::from(self.canary.is_some() && hosts > 0);
        let size = match self.batch {
            None => 1,
            Some(Batch::Count(count)) => count,
            // Of all the hosts, rounded up: 25% of 6 is 2.
            Some(Batch::Percent(percent)) => (hosts * percent).div_ceil(100),
        }
        .max(1);
        let mut batches: Vec<Range<usize>> = (first > 0).then_some(0..1).into_iter().collect();
        let mut start = first;
        while start < hosts {
            let end = (start + size).min(hosts);
            batches.push(start..end);
            start = end;
        }
        batches
    }
}

/// Runs `deploy` on each host of a batch: in this thread for one host (its
/// output streams), else one thread per host, each with a context of its
/// own, and each host's output printed as one block, in host order, once
/// all are done. Returns each host's outcome.
pub fn run_batch<T: Send>(
    plan: &Plan,
    hosts: &[Host],
    deploy: impl Fn(&Plan, usize, &Host) -> Result<T> + Sync,
) -> Result<Vec<Result<T>>> {
    if hosts.len() == 1 {
        return Ok(vec![deploy(plan, 0, &hosts[0])]);
    }
    let contexts = hosts
        .iter()
        .map(|_| plan.ctx.fork())
        .collect::<Result<Vec<_>>>()?;
    let finished: Vec<(Result<T>, Vec<String>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = hosts
            .iter()
            .zip(contexts)
            .enumerate()
            .map(|(index, (host, ctx))| {
                let (activate, reloaded_unit, service) = (
                    plan.activate.clone(),
                    plan.reloaded_unit.clone(),
                    plan.service.clone(),
                );
                let (timeout, lock_wait, allow_downgrade) =
                    (plan.timeout, plan.lock_wait, plan.allow_downgrade);
                let deploy = &deploy;
                scope.spawn(move || {
                    let plan = Plan {
                        activate,
                        reloaded_unit,
                        service,
                        timeout,
                        lock_wait,
                        allow_downgrade,
                        ctx: &ctx,
                    };
                    OUTPUT.with(|output| *output.borrow_mut() = Some(Vec::new()));
                    let outcome = deploy(&plan, index, host);
                    let lines =
                        OUTPUT.with(|output| output.borrow_mut().take().unwrap_or_default());
                    (outcome, lines)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("a deploy thread panicked"))
            .collect()
    });
    let mut outcomes = Vec::new();
    for (host, (outcome, lines)) in hosts.iter().zip(finished) {
        eprintln!("── {} ──", host.label);
        for line in lines {
            eprintln!("{line}");
        }
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// `[workspace.metadata.xtask.canary]`: what a canary must show over its
/// soak; the defaults are the thresholds of the alerts `k8s` renders.
pub struct Bounds {
    pub max_error_ratio: f64,
    pub max_p99_seconds: f64,
}

impl Bounds {
    pub fn of(settings: &crate::project::Settings) -> Bounds {
        Bounds {
            max_error_ratio: settings
                .canary
                .max_error_ratio
                .unwrap_or(settings.k8s.alert_error_ratio),
            max_p99_seconds: settings
                .canary
                .max_p99_seconds
                .unwrap_or(settings.k8s.alert_p99_seconds),
        }
    }
}

/// Routes the deploy itself requests; they say nothing about the release.
const OWN_ROUTES: [&str; 4] = ["/metrics", "/healthz", "/readyz", "/version"];

/// What `/metrics` of the new release says, summed over every route the
/// deploy does not request itself.
#[derive(Clone, Debug, Default, PartialEq)]
struct Counts {
    requests: f64,
    errors: f64,
    /// Cumulative count of requests at or under each bucket bound.
    buckets: BTreeMap<OrderedBound, f64>,
}

/// A histogram bound that sorts (`+Inf` last).
#[derive(Clone, Copy, Debug, PartialEq)]
struct OrderedBound(f64);
impl Eq for OrderedBound {}
impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Reads `http_requests_total` and the buckets of
/// `http_request_duration_seconds` from a Prometheus text exposition.
fn counts(exposition: &str) -> Counts {
    let mut counts = Counts::default();
    for line in exposition.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let label = |key: &str| {
            labels
                .split(',')
                .find_map(|pair| pair.strip_prefix(key)?.strip_prefix("=\""))
                .map(|rest| rest.trim_end_matches('}').trim_end_matches('"'))
        };
        if label("route").is_some_and(|route| OWN_ROUTES.contains(&route)) {
            continue;
        }
        match name {
            "http_requests_total" => {
                counts.requests += value;
                if label("status").is_some_and(|status| status.starts_with('5')) {
                    counts.errors += value;
                }
            }
            "http_request_duration_seconds_bucket" => {
                let bound = match label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(bound) => bound.parse().unwrap_or(f64::INFINITY),
                    None => continue,
                };
                *counts.buckets.entry(OrderedBound(bound)).or_default() += value;
            }
            _ => {}
        }
    }
    counts
}

/// What happened between two readings; `None` if a counter went back (the
/// process restarted).
fn since(before: &Counts, after: &Counts) -> Option<Counts> {
    if after.requests < before.requests || after.errors < before.errors {
        return None;
    }
    let mut buckets = BTreeMap::new();
    for (bound, count) in &after.buckets {
        let earlier = before.buckets.get(bound).copied().unwrap_or(0.0);
        if *count < earlier {
            return None;
        }
        buckets.insert(*bound, count - earlier);
    }
    Some(Counts {
        requests: after.requests - before.requests,
        errors: after.errors - before.errors,
        buckets,
    })
}

/// The smallest bucket bound at or under which 99% of the requests fell.
fn p99(counts: &Counts) -> f64 {
    let total = counts.buckets.values().copied().fold(0.0, f64::max);
    counts
        .buckets
        .iter()
        .find(|(_, count)| **count >= 0.99 * total)
        .map_or(0.0, |(bound, _)| bound.0)
}

/// How often the canary's metrics are read during the soak.
const SOAK_READ_EVERY: Duration = Duration::from_secs(1);
/// A ratio over fewer requests than this is not judged before the end.
const EARLY_JUDGEMENT: f64 = 200.0;

/// Watches the canary for `soak`: `Err` says which bound it broke, with
/// the figures, as soon as it is clear.
pub fn soak(plan: &Plan, host: &Host, soak: Duration, bounds: &Bounds) -> Result<()> {
    let read = || -> Result<Counts> {
        let (status, body) = host.http_get(&plan.service, "/metrics")?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(counts(&body))
    };
    let baseline = read()?;
    say(format!(
        "{}: canary: watching its 5xx ratio (at most {:.2}%) and p99 latency (at most {}s) for {soak:?}",
        host.label,
        bounds.max_error_ratio * 100.0,
        bounds.max_p99_seconds
    ));
    let started = Instant::now();
    loop {
        std::thread::sleep(SOAK_READ_EVERY.min(soak));
        if interrupted() {
            bail!("interrupted during the canary's soak");
        }
        let done = started.elapsed() >= soak;
        let Some(window) = since(&baseline, &read()?) else {
            bail!("the canary's counters went back during the soak: its service restarted");
        };
        let judged = done || window.requests >= EARLY_JUDGEMENT;
        if judged && window.requests > 0.0 {
            let ratio = window.errors / window.requests;
            if ratio > bounds.max_error_ratio {
                bail!(
                    "the canary answered {} of {} requests with 5xx ({:.1}%, more than {:.2}%) after {:.1}s of its soak",
                    window.errors,
                    window.requests,
                    ratio * 100.0,
                    bounds.max_error_ratio * 100.0,
                    started.elapsed().as_secs_f64()
                );
            }
            let latency = p99(&window);
            if latency > bounds.max_p99_seconds {
                bail!(
                    "the canary's p99 latency reached {latency}s (more than {}s) over {} requests after {:.1}s of its soak",
                    bounds.max_p99_seconds,
                    window.requests,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        if done {
            if window.requests == 0.0 {
                say(format!(
                    "{}: canary: no requests reached it during the soak, so its error ratio and latency say nothing yet",
                    host.label
                ));
            } else {
                say(format!(
                    "{}: canary: {} requests, {:.2}% 5xx, p99 at most {}s over {soak:?}: going on",
                    host.label,
                    window.requests,
                    window.errors / window.requests * 100.0,
                    p99(&window)
                ));
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_put_the_canary_alone_first() {
        let rollout = |batch: Option<Batch>, canary: bool| Rollout {
            batch,
            canary: canary.then_some(Duration::from_secs(1)),
        };
        assert_eq!(rollout(None, false).batches(3), vec![0..1, 1..2, 2..3]);
        assert_eq!(
            rollout(Some(Batch::Count(2)), true).batches(4),
            vec![0..1, 1..3, 3..4]
        );
        assert_eq!(
            rollout(Some(Batch::Percent(50)), false).batches(5),
            vec![0..3, 3..5]
        );
        assert_eq!(rollout(Some(Batch::Count(9)), true).batches(1), vec![0..1]);
        assert_eq!(parse_batch("25%"), Ok(Batch::Percent(25)));
        assert!(parse_batch("0").unwrap_err().contains("at least one"));
        assert!(parse_batch("120%").unwrap_err().contains("at most 100%"));
        assert!(parse_batch("two").unwrap_err().contains("neither a count"));
    }

    #[test]
    fn the_soak_judges_what_happened_since_the_baseline() {
        let exposition = |ok: u32, errors: u32, slow: u32| {
            format!(
                "http_requests_total{{method=\"GET\",route=\"/\",status=\"200\"}} {ok}\n\
                 http_requests_total{{method=\"GET\",route=\"/\",status=\"500\"}} {errors}\n\
                 http_requests_total{{method=\"GET\",route=\"/metrics\",status=\"500\"}} 99\n\
                 http_request_duration_seconds_bucket{{method=\"GET\",route=\"/\",status=\"200\",le=\"0.005\"}} {}\n\
                 http_request_duration_seconds_bucket{{method=\"GET\",route=\"/\",status=\"200\",le=\"1.0\"}} {}\n\
                 http_request_duration_seconds_bucket{{method=\"GET\",route=\"/\",status=\"200\",le=\"+Inf\"}} {}\n",
                ok + errors - slow,
                ok + errors,
                ok + errors
            )
        };
        let before = counts(&exposition(100, 0, 0));
        let after = counts(&exposition(1000, 100, 0));
        let window = since(&before, &after).unwrap();
        assert_eq!((window.requests, window.errors), (1000.0, 100.0));
        assert_eq!(p99(&window), 0.005);
        let slow = since(&before, &counts(&exposition(1000, 0, 50))).unwrap();
        assert_eq!(p99(&slow), 1.0);
        assert_eq!(since(&after, &before), None);
    }
}
