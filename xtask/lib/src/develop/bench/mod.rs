//! `cargo xtask bench`: the service under load next to a bare Go net/http
//! server (`bench/go-reference/`) and the machine's floor (`bench/floor/`,
//! one epoll loop per core answering fixed responses), side by side on
//! loopback, in the same run, so the machine's noise hits all of them.
//! Besides requests per second, each run reads the server's CPU time
//! (`/proc/<pid>/stat`) to give its CPU per request, and after the runs
//! each server holds 1,000 and then 4,000 idle keep-alive connections to
//! give its memory per connection. The service measured is the binary
//! `dist` ships (the static musl build of this host's architecture, from
//! `dist-manifest.json`, built if needed); `--glibc` adds the glibc build of
//! `target/release` as a column of its own. Servers and paths alternate over several
//! rounds and medians are reported, with p99 latency, errors and peak RSS.
//! The same run times the build tool against its floors (`tool`) and reads
//! the shipped sizes from the manifest; everything goes to
//! `target/bench/report.json` and `report.md` (`report`), and with
//! `--write-docs` to `docs/reference/benchmarks.md`. `--quick` (for `ci`) makes each
//! part short and leaves out the upgrades and the cold builds.
//!
//! `--upgrade-every N` measures zero-downtime upgrades instead: runs against
//! the service alone alternate between quiet ones and ones during which it
//! is upgraded (SIGHUP) every N seconds; errors (which must be 0) and p99
//! latency of both kinds are compared. That report goes to
//! `target/bench/upgrades.json`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use xshell::cmd;

mod process;
mod report;
mod tool;

use crate::develop::build::Build;
use crate::exec::Ctx;
use crate::service::{Server, free_port, start_app, start_app_with, wait_until_listening};
use crate::tools::{self, Tool};
use crate::util::write_atomically;
use process::{IdleMemory, cpu_seconds, idle_memory, peak_rss};

#[derive(clap::Args, Debug)]
pub struct Bench {
    /// Seconds per wrk run
    #[arg(long, default_value_t = 10)]
    duration: u32,
    /// Concurrent connections per wrk run
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Rounds per server and path; medians are reported
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Measure the service alone, without the Go reference
    #[arg(long)]
    no_reference: bool,
    /// Also measure the glibc build (`target/release`), which is not what
    /// `dist` ships, as a column of its own
    #[arg(long)]
    glibc: bool,
    /// Compare runs with an upgrade (SIGHUP) every SECONDS against runs
    /// without, instead of comparing with Go
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..))]
    upgrade_every: Option<u32>,
    /// Also measure another build of the service, as a column named NAME
    /// (e.g. `--compare before=/tmp/old/app`); repeatable
    #[arg(long, value_name = "NAME=BINARY", value_parser = parse_comparison, conflicts_with = "upgrade_every")]
    compare: Vec<(String, std::path::PathBuf)>,
    /// Also measure the shipped binary with tracing on, sampling RATIO of
    /// new traces (0.01, 1.0), its spans exported to a loopback sink that
    /// accepts and discards them, as a column `traced-<RATIO>`; repeatable
    #[arg(long, value_name = "RATIO", conflicts_with = "upgrade_every")]
    tracing: Vec<f64>,
    /// A short run of every part (under two minutes; what `ci` runs),
    /// without the upgrades and the cold builds
    #[arg(long, conflicts_with = "upgrade_every")]
    quick: bool,
    /// Also write the report to docs/reference/benchmarks.md (a full run, with the
    /// glibc column)
    #[arg(long, conflicts_with_all = ["quick", "upgrade_every", "compare", "no_reference"])]
    write_docs: bool,
}

/// `NAME=BINARY` of `--compare`: a short column name and an executable.
fn parse_comparison(text: &str) -> Result<(String, std::path::PathBuf), String> {
    let (name, binary) = text
        .split_once('=')
        .filter(|(name, binary)| !name.is_empty() && !binary.is_empty())
        .ok_or_else(|| {
            format!("`{text}` is not NAME=BINARY: e.g. --compare before=/tmp/old/app")
        })?;
    if matches!(name, "go" | "floor" | "app" | "glibc") {
        return Err(format!(
            "`{name}` names a built-in column: pick another name"
        ));
    }
    let binary = std::path::PathBuf::from(binary);
    if !binary.is_file() {
        return Err(format!(
            "{} is not a file: pass the path of a built service binary",
            binary.display()
        ));
    }
    Ok((name.to_owned(), binary))
}

/// The paths measured: liveness (the cheapest route) and the business route.
const PATHS: [&str; 2] = ["/healthz", "/"];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WrkResult {
    pub requests_per_second: f64,
    pub p99_ms: f64,
    /// Non-2xx responses plus socket errors.
    pub errors: u64,
    /// Requests wrk completed in the run.
    pub requests: u64,
    /// The server's CPU time (user + system, every thread) over the
    /// requests it served, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_request: Option<f64>,
}

#[derive(Serialize)]
pub struct Row {
    pub path: &'static str,
    pub server: String,
    pub median: WrkResult,
    pub runs: Vec<WrkResult>,
}

#[derive(Serialize)]
pub struct ServiceReport {
    /// The wrk command of each counted run, with ADDR and PATH for the
    /// server and path.
    pub wrk_command: String,
    /// The binary measured as `app`.
    pub binary: String,
    pub duration_seconds: u32,
    pub connections: u32,
    pub rounds: u32,
    pub rows: Vec<Row>,
    pub peak_rss_bytes: Vec<(String, u64)>,
    /// Resident memory each server grows by per idle keep-alive
    /// connection, holding 1,000 and 4,000 of them.
    pub idle_connections: Vec<IdleMemory>,
}

impl ServiceReport {
    /// Go's requests per second on `path`.
    pub fn reference(&self, path: &str) -> Option<f64> {
        self.median_of("go", path)
            .map(|median| median.requests_per_second)
    }

    /// The median run of `server` on `path`.
    pub fn median_of(&self, server: &str, path: &str) -> Option<&WrkResult> {
        self.rows
            .iter()
            .find(|row| row.path == path && row.server == server)
            .map(|row| &row.median)
    }

    pub fn errors(&self) -> u64 {
        self.rows.iter().map(|row| row.median.errors).sum()
    }
}

impl Bench {
    /// `bench --quick`, as `ci` runs it.
    pub fn quick() -> Bench {
        Bench {
            duration: 2,
            connections: 64,
            rounds: 1,
            no_reference: false,
            glibc: false,
            upgrade_every: None,
            compare: Vec::new(),
            tracing: Vec::new(),
            quick: true,
            write_docs: false,
        }
    }

    pub fn run(mut self, ctx: &Ctx) -> Result<()> {
        crate::signing::refuse_project_code_with_secrets("`bench`")?;
        if self.quick {
            self.duration = self.duration.min(2);
            self.rounds = 1;
        }
        if self.write_docs {
            self.glibc = true;
        }
        let wrk = tools::require(Tool::Wrk)?;
        let hyperfine = if self.upgrade_every.is_none() {
            Some(tools::require(Tool::Hyperfine)?)
        } else {
            None
        };
        let go = if self.no_reference || self.upgrade_every.is_some() {
            None
        } else {
            Some(tools::find(Tool::Go).ok_or_else(|| {
                tools::missing(Tool::Go)
                    .context("the Go reference needs go (or pass --no-reference)")
            })?)
        };
        let target = crate::targets::host_default(&ctx.stamp()?.host)?;
        let manifest =
            crate::artifacts::pipeline::binaries_for(ctx, std::slice::from_ref(&target))?;
        let shipped = manifest
            .artifact_for(crate::manifest::ArtifactKind::Binary, target.triple)
            .map(|artifact| ctx.project.dist_dir().join(&artifact.path));
        let glibc_binary = if self.glibc {
            Build {
                release: true,
                cargo_args: Vec::new(),
            }
            .run(ctx)?;
            Some(
                ctx.project
                    .target_dir
                    .join("release")
                    .join(&ctx.project.settings.binary),
            )
        } else {
            None
        };
        let bench_dir = ctx.project.target_dir.join("bench");
        let go_binary = bench_dir.join("go-reference");
        if let Some(go) = &go {
            let _dir = ctx.sh.push_dir(ctx.project.root.join("bench/go-reference"));
            ctx.run(cmd!(ctx.sh, "{go} build -o {go_binary} ."))
                .context("build the Go reference server")?;
        }
        let floor_binary = bench_dir.join("floor");
        if go.is_some() {
            let source = ctx.project.root.join("bench/floor/floor.c");
            let cc = which::which("cc").map_err(|_| {
                anyhow::anyhow!("the floor server is C and needs a compiler: install build-essential (or pass --no-reference)")
            })?;
            ctx.sh
                .create_dir(&bench_dir)
                .with_context(|| format!("create {}", bench_dir.display()))?;
            ctx.run(cmd!(ctx.sh, "{cc} -O2 -pthread -o {floor_binary} {source}"))
                .context("build the floor server")?;
        }
        if ctx.dry_run {
            eprintln!("(dry run: the servers are not started and wrk does not run)");
            return Ok(());
        }
        let app_binary = shipped.with_context(|| {
            format!(
                "{} lists no binary for {}: run `cargo xtask dist --target {}`",
                crate::manifest::MANIFEST,
                target.triple,
                target.triple
            )
        })?;
        eprintln!("app: {} (what dist ships)", app_binary.display());

        if let Some(every) = self.upgrade_every {
            let app = start_app(&ctx.project.root, "app", &app_binary)?;
            let report = self.measure_upgrades(ctx, &wrk, &app, every)?;
            print_upgrade_report(&report);
            write_report(&bench_dir, "upgrades.json", &report)?;
            return upgrades_failed_no_request(&report);
        }

        let mut servers = Vec::new();
        if go.is_some() {
            let addr = free_port()?;
            let command = Command::new(&floor_binary)
                .arg(addr.to_string())
                .stdout(Stdio::null())
                .spawn();
            servers.push(Server {
                name: "floor".to_owned(),
                addr,
                child: command.context("start the floor server")?,
            });
            let addr = free_port()?;
            let command = Command::new(&go_binary)
                .arg("-listen")
                .arg(addr.to_string())
                .stdout(Stdio::null())
                .spawn();
            servers.push(Server {
                name: "go".to_owned(),
                addr,
                child: command.context("start the Go reference server")?,
            });
        }
        servers.push(start_app(&ctx.project.root, "app", &app_binary)?);
        if let Some(glibc_binary) = &glibc_binary {
            servers.push(start_app(&ctx.project.root, "glibc", glibc_binary)?);
        }
        for (name, binary) in &self.compare {
            servers.push(start_app(&ctx.project.root, name, binary)?);
        }
        let sink = if self.tracing.is_empty() {
            None
        } else {
            Some(SpanSink::start()?)
        };
        for ratio in &self.tracing {
            let sink = sink.as_ref().expect("started for --tracing");
            let env = [
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://{}", sink.addr),
                ),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".to_owned()),
                ("OTEL_TRACES_SAMPLER_ARG", ratio.to_string()),
            ];
            let name = format!("traced-{ratio}");
            servers.push(start_app_with(&ctx.project.root, &name, &app_binary, &env)?);
        }
        let mut service = self.measure_service(ctx, &wrk, &servers)?;
        drop(servers);
        service.binary = relative_to(&app_binary, &ctx.project.root);
        print_report(&service);

        let upgrades = if self.quick {
            None
        } else {
            let app = start_app(&ctx.project.root, "app", &app_binary)?;
            let upgrades = self.measure_upgrades(ctx, &wrk, &app, 2)?;
            print_upgrade_report(&upgrades);
            Some(upgrades)
        };

        let allocations = if self.tracing.is_empty() {
            Vec::new()
        } else {
            allocation_counts(ctx)?
        };
        // Read before the timed `dist` runs, which write a folder of their own.
        let sizes = report::sizes(ctx, &target)?;
        let hyperfine = hyperfine.expect("looked up for every run but --upgrade-every");
        let tool = tool::measure(ctx, &hyperfine, &target, self.quick)?;
        let stamp = ctx.stamp()?;
        let report = report::Report {
            command: self.command_line(),
            commit: stamp.commit.clone(),
            dirty: stamp.dirty,
            rustc: stamp.rustc.clone(),
            machine: report::Machine::read(),
            service,
            upgrades,
            tool,
            sizes,
            allocations,
        };
        report::write(ctx, &report, self.write_docs)?;
        println!("{}", report::markdown(&report));
        if report.service.errors() > 0 {
            bail!(
                "{} requests failed under load: a healthy service fails none",
                report.service.errors()
            );
        }
        if let Some(upgrades) = &report.upgrades {
            upgrades_failed_no_request(upgrades)?;
        }
        Ok(())
    }

    /// The command line this run reproduces, for the report.
    fn command_line(&self) -> String {
        let mut words = vec!["cargo xtask bench".to_owned()];
        if self.write_docs {
            words.push("--write-docs".to_owned());
        } else if self.quick {
            words.push("--quick".to_owned());
        }
        if !self.quick {
            words.push(format!(
                "--duration {} --rounds {}",
                self.duration, self.rounds
            ));
        }
        if self.connections != 64 {
            words.push(format!("--connections {}", self.connections));
        }
        if self.glibc && !self.write_docs {
            words.push("--glibc".to_owned());
        }
        if self.no_reference {
            words.push("--no-reference".to_owned());
        }
        for (name, binary) in &self.compare {
            words.push(format!("--compare {name}={}", binary.display()));
        }
        for ratio in &self.tracing {
            words.push(format!("--tracing {ratio}"));
        }
        words.join(" ")
    }

    /// Every server on both paths, alternating, `rounds` times.
    fn measure_service(&self, ctx: &Ctx, wrk: &Path, servers: &[Server]) -> Result<ServiceReport> {
        for server in servers {
            wait_until_listening(server.addr)
                .with_context(|| format!("wait for the {} server", server.name))?;
        }
        for server in servers {
            self.warm_up(ctx, wrk, &format!("http://{}{}", server.addr, PATHS[0]))?;
        }
        let mut rows = Vec::new();
        for path in PATHS {
            let mut runs: Vec<Vec<WrkResult>> = vec![Vec::new(); servers.len()];
            for round in 0..self.rounds {
                // Alternate who goes first, so that neither always meets a
                // machine warmed (or throttled) by the other.
                let mut order: Vec<usize> = (0..servers.len()).collect();
                if round % 2 == 1 {
                    order.reverse();
                }
                for index in order {
                    let url = format!("http://{}{path}", servers[index].addr);
                    let pid = servers[index].child.id();
                    runs[index].push(self.measure(ctx, wrk, &url, Some(pid))?);
                }
            }
            for (server, runs) in servers.iter().zip(runs) {
                rows.push(Row {
                    path,
                    server: server.name.clone(),
                    median: median(&runs),
                    runs,
                });
            }
        }
        let peak_rss_bytes = servers
            .iter()
            .map(|server| {
                (
                    server.name.clone(),
                    peak_rss(server.child.id()).unwrap_or(0),
                )
            })
            .collect();
        let held: &[usize] = if self.quick { &[200] } else { &[1_000, 4_000] };
        let mut idle_connections = Vec::new();
        for server in servers {
            idle_connections.push(
                idle_memory(server, held)
                    .with_context(|| format!("hold idle connections to {}", server.name))?,
            );
        }
        Ok(ServiceReport {
            wrk_command: self.wrk_command("http://ADDR/PATH"),
            binary: String::new(),
            duration_seconds: self.duration,
            connections: self.connections,
            rounds: self.rounds,
            rows,
            peak_rss_bytes,
            idle_connections,
        })
    }

    /// The counted wrk command for `url`, as it is run.
    fn wrk_command(&self, url: &str) -> String {
        format!(
            "wrk -t2 -c{} -d{}s --latency {url}",
            self.connections, self.duration
        )
    }
}

fn upgrades_failed_no_request(report: &UpgradeReport) -> Result<()> {
    if report.upgraded.median.errors > 0 {
        bail!(
            "{} requests failed during upgrades: an upgrade must not fail a request",
            report.upgraded.median.errors
        );
    }
    Ok(())
}

/// `path` relative to `root` when inside it, for reports read elsewhere.
fn relative_to(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

impl Bench {
    /// A first run meets cold caches and allocator arenas; it is not
    /// counted.
    fn warm_up(&self, ctx: &Ctx, wrk: &Path, url: &str) -> Result<()> {
        let connections = self.connections.to_string();
        let warm_up = if self.quick { "1s" } else { "3s" };
        ctx.read_echoed(cmd!(ctx.sh, "{wrk} -t2 -c{connections} -d{warm_up} {url}"))
            .with_context(|| format!("warm up {url}"))?;
        Ok(())
    }

    /// One counted wrk run against `url`, with the CPU time of the server
    /// process `pid` over it.
    fn measure(&self, ctx: &Ctx, wrk: &Path, url: &str, pid: Option<u32>) -> Result<WrkResult> {
        let (connections, duration) = (self.connections.to_string(), format!("{}s", self.duration));
        let before = pid.and_then(cpu_seconds);
        let output = ctx
            .read_echoed(cmd!(
                ctx.sh,
                "{wrk} -t2 -c{connections} -d{duration} --latency {url}"
            ))
            .with_context(|| format!("run wrk against {url}"))?;
        let after = pid.and_then(cpu_seconds);
        let mut result =
            parse_wrk(&output).with_context(|| format!("read wrk's report for {url}"))?;
        if let (Some(before), Some(after)) = (before, after)
            && result.requests > 0
        {
            result.cpu_us_per_request = Some((after - before) * 1e6 / result.requests as f64);
        }
        Ok(result)
    }

    /// Alternates wrk runs on `/` without and with an upgrade every `every`
    /// seconds; reports both and writes `upgrades.json`.
    fn measure_upgrades(
        &self,
        ctx: &Ctx,
        wrk: &Path,
        app: &Server,
        every: u32,
    ) -> Result<UpgradeReport> {
        wait_until_listening(app.addr).context("wait for the service")?;
        // After the first upgrade the process serving is no longer our
        // child; whichever serves at the end is stopped, even on error.
        let _stop_last = StopServingProcess(app.addr);
        let url = format!("http://{}/", app.addr);
        self.warm_up(ctx, wrk, &url)?;
        let mut quiet = Vec::new();
        let mut upgraded = Vec::new();
        let mut upgrades = Vec::new();
        for round in 0..self.rounds {
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for with_upgrades in order {
                let upgrader = with_upgrades.then(|| {
                    let (addr, period) = (app.addr, Duration::from_secs(every.into()));
                    let until = Instant::now() + Duration::from_secs(self.duration.into());
                    std::thread::spawn(move || upgrade_periodically(addr, period, until))
                });
                let result = self.measure(ctx, wrk, &url, None)?;
                match upgrader {
                    Some(upgrader) => {
                        let done = upgrader
                            .join()
                            .map_err(|_| anyhow::anyhow!("the upgrading thread panicked"))??;
                        upgrades.push(done);
                        upgraded.push(result);
                    }
                    None => quiet.push(result),
                }
            }
        }
        Ok(UpgradeReport {
            wrk_command: self.wrk_command("http://ADDR/"),
            duration_seconds: self.duration,
            connections: self.connections,
            rounds: self.rounds,
            upgrade_every_seconds: every,
            quiet: UpgradeRow {
                median: median(&quiet),
                runs: quiet,
                upgrades: Vec::new(),
            },
            upgraded: UpgradeRow {
                median: median(&upgraded),
                runs: upgraded,
                upgrades,
            },
        })
    }
}

#[derive(Serialize)]
pub struct UpgradeRow {
    pub median: WrkResult,
    pub runs: Vec<WrkResult>,
    /// Upgrades completed during each run.
    pub upgrades: Vec<u32>,
}

#[derive(Serialize)]
pub struct UpgradeReport {
    pub wrk_command: String,
    duration_seconds: u32,
    connections: u32,
    pub rounds: u32,
    pub upgrade_every_seconds: u32,
    pub quiet: UpgradeRow,
    pub upgraded: UpgradeRow,
}

fn print_upgrade_report(report: &UpgradeReport) {
    println!(
        "wrk -t2 -c{} -d{}s on /, median of {} rounds",
        report.connections, report.duration_seconds, report.rounds
    );
    println!(
        "{:<22} {:>12} {:>10} {:>7} {:>9}",
        "run", "requests/s", "p99", "errors", "upgrades"
    );
    let label = format!("upgrade every {}s", report.upgrade_every_seconds);
    for (name, row) in [
        ("no upgrades", &report.quiet),
        (label.as_str(), &report.upgraded),
    ] {
        println!(
            "{:<22} {:>12.0} {:>8.2}ms {:>7} {:>9}",
            name,
            row.median.requests_per_second,
            row.median.p99_ms,
            row.median.errors,
            row.upgrades.iter().sum::<u32>()
        );
    }
    println!(
        "p99 with upgrades / without: {:.2}x",
        report.upgraded.median.p99_ms / report.quiet.median.p99_ms
    );
}

/// Sends SIGHUP to the serving process every `period` until `until`,
/// waiting each time until another process serves; returns how many
/// upgrades completed.
fn upgrade_periodically(addr: SocketAddr, period: Duration, until: Instant) -> Result<u32> {
    let mut done = 0;
    loop {
        std::thread::sleep(period);
        if Instant::now() + Duration::from_millis(500) > until {
            return Ok(done);
        }
        let old = serving_pid(addr)?;
        send_signal("HUP", old)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while serving_pid(addr)? == old {
            if Instant::now() > deadline {
                bail!("pid {old} still serves 10 s after SIGHUP: the upgrade did not complete");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        done += 1;
    }
}

/// The pid that answers `GET /healthz` on a new connection.
pub fn serving_pid(addr: SocketAddr) -> Result<u32> {
    let (status, body) = crate::util::http_get(&addr.to_string(), "/healthz")?;
    if status != 200 {
        bail!("/healthz answered {status}: {body}");
    }
    let health: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("/healthz answered {body:?}"))?;
    health["pid"]
        .as_u64()
        .map(|pid| pid as u32)
        .with_context(|| format!("no pid in /healthz: {body}"))
}

fn send_signal(signal: &str, pid: u32) -> Result<()> {
    eprintln!("$ kill -{signal} {pid}");
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("run kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed ({status})");
    }
    Ok(())
}

/// Stops whichever process serves on the address when dropped.
struct StopServingProcess(SocketAddr);

impl Drop for StopServingProcess {
    fn drop(&mut self) {
        if let Ok(pid) = serving_pid(self.0) {
            let _ = send_signal("TERM", pid);
        }
    }
}

/// Allocations per request with tracing off, at 1% and at 100%: the
/// service's allocation test counts them (a count, unlike a time, is
/// exact), and prints them for this table.
fn allocation_counts(ctx: &Ctx) -> Result<Vec<report::Allocations>> {
    const TEST: &str = "allocations::allocations_per_request_stay_at_or_below_the_recorded_counts";
    let cargo = ctx.cargo_path();
    let package = &ctx.project.settings.package;
    let binary = &ctx.project.settings.binary;
    let output = ctx
        .read_echoed(cmd!(
            ctx.sh,
            "{cargo} test --quiet --package {package} --bin {binary} {TEST} -- --exact --nocapture"
        ))
        .context("count the allocations per request")?;
    let counts = report::parse_allocations(&output);
    if counts.len() != 3 {
        bail!(
            "the allocation test printed {} tracing settings, expected off, 1% and 100%: {TEST} in app/src/allocations.rs prints them",
            counts.len()
        );
    }
    Ok(counts)
}

/// An OTLP/HTTP endpoint on loopback that reads each request and answers
/// 200, for the traced columns: what a collector costs is not measured.
struct SpanSink {
    addr: SocketAddr,
}

impl SpanSink {
    fn start() -> Result<SpanSink> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the span sink")?;
        let addr = listener.local_addr()?;
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || discard_one_export(stream));
            }
        });
        Ok(SpanSink { addr })
    }
}

/// Reads one request (headers, then `Content-Length` bytes) and answers.
fn discard_one_export(mut stream: TcpStream) {
    use std::io::{Read, Write};
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut received = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let Ok(read) = stream.read(&mut buffer) else {
            return;
        };
        if read == 0 {
            return;
        }
        received.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&received);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                );
                return;
            }
        }
    }
}

/// Reads requests/s, the 99th percentile and error counts out of
/// `wrk --latency` output.
pub fn parse_wrk(output: &str) -> Result<WrkResult> {
    let requests_per_second = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .context("no Requests/sec line")?;
    let p99 = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("99%"))
        .map(str::trim)
        .context("no 99% latency line (was --latency passed?)")?;
    let p99_ms = parse_wrk_duration(p99).with_context(|| format!("unreadable latency {p99:?}"))?;
    let non_2xx: u64 = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let socket_errors: u64 = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Socket errors:"))
        .map(|counts| {
            counts
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let requests = output
        .lines()
        .find_map(|line| line.trim().split_once(" requests in "))
        .and_then(|(count, _)| count.trim().parse().ok())
        .context("no `N requests in` line")?;
    Ok(WrkResult {
        requests_per_second,
        p99_ms,
        errors: non_2xx + socket_errors,
        requests,
        cpu_us_per_request: None,
    })
}

fn parse_wrk_duration(text: &str) -> Option<f64> {
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        _ => return None,
    };
    Some(number * factor)
}

fn median(runs: &[WrkResult]) -> WrkResult {
    let middle = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let cpu: Vec<f64> = runs
        .iter()
        .filter_map(|run| run.cpu_us_per_request)
        .collect();
    WrkResult {
        requests_per_second: middle(runs.iter().map(|run| run.requests_per_second).collect()),
        p99_ms: middle(runs.iter().map(|run| run.p99_ms).collect()),
        errors: runs.iter().map(|run| run.errors).sum(),
        requests: runs.iter().map(|run| run.requests).sum(),
        cpu_us_per_request: (!cpu.is_empty()).then(|| middle(cpu)),
    }
}

fn print_report(report: &ServiceReport) {
    println!(
        "wrk -t2 -c{} -d{}s, median of {} rounds",
        report.connections, report.duration_seconds, report.rounds
    );
    println!(
        "{:<10} {:<10} {:>12} {:>10} {:>7} {:>9} {:>9} {:>10}",
        "path", "server", "requests/s", "p99", "errors", "vs go", "vs floor", "cpu/req"
    );
    for row in &report.rows {
        let versus = |server: &str| {
            report
                .median_of(server, row.path)
                .map(|other| row.median.requests_per_second / other.requests_per_second)
                .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}x"))
        };
        println!(
            "{:<10} {:<10} {:>12.0} {:>8.2}ms {:>7} {:>9} {:>9} {:>10}",
            row.path,
            row.server,
            row.median.requests_per_second,
            row.median.p99_ms,
            row.median.errors,
            versus("go"),
            versus("floor"),
            row.median
                .cpu_us_per_request
                .map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.2}us"))
        );
    }
    for idle in &report.idle_connections {
        for (count, bytes) in &idle.per_connection {
            println!(
                "idle {:<10} {count} held: {:.1} KB per connection",
                idle.server,
                bytes / 1024.0
            );
        }
    }
    for (server, bytes) in &report.peak_rss_bytes {
        println!(
            "peak RSS {server:<10} {:.1} MB",
            *bytes as f64 / 1_000_000.0
        );
    }
}

fn write_report(dir: &Path, name: &str, report: &impl Serialize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(name);
    let json = serde_json::to_string_pretty(report).context("serialize the report")?;
    write_atomically(&path, json.as_bytes())?;
    println!("report: {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUTPUT: &str = "\
Running 10s test @ http://127.0.0.1:18080/healthz
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   573.11us  422.79us  12.38ms   84.38%
    Req/Sec    55.97k     3.09k   63.38k    68.50%
  Latency Distribution
     50%  469.00us
     75%  744.00us
     90%    1.10ms
     99%    1.77ms
  1114097 requests in 10.00s, 141.30MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec: 111394.15
Transfer/sec:     14.12MB
";

    #[test]
    fn wrk_reports_are_parsed() {
        assert_eq!(
            parse_wrk(WRK_OUTPUT).unwrap(),
            WrkResult {
                requests_per_second: 111_394.15,
                p99_ms: 1.77,
                errors: 12,
                requests: 1_114_097,
                cpu_us_per_request: None,
            }
        );
        let clean = WRK_OUTPUT
            .replace(
                "  Socket errors: connect 0, read 3, write 0, timeout 2\n",
                "",
            )
            .replace("  Non-2xx or 3xx responses: 7\n", "");
        assert_eq!(parse_wrk(&clean).unwrap().errors, 0);
        assert!(parse_wrk("garbage").is_err());
        assert!(parse_wrk(&WRK_OUTPUT.replace("     99%    1.77ms\n", "")).is_err());
    }

    #[test]
    fn wrk_durations_convert_to_milliseconds() {
        for (text, expected) in [
            ("469.00us", 0.469),
            ("1.77ms", 1.77),
            ("2.50s", 2_500.0),
            ("1.00m", 60_000.0),
        ] {
            assert!(
                (parse_wrk_duration(text).unwrap() - expected).abs() < 1e-9,
                "{text}"
            );
        }
        assert_eq!(parse_wrk_duration("12parsecs"), None);
    }

    #[test]
    fn medians_take_the_middle_run() {
        let run = |rps: f64, p99: f64, cpu: f64| WrkResult {
            requests_per_second: rps,
            p99_ms: p99,
            errors: 1,
            requests: 10,
            cpu_us_per_request: Some(cpu),
        };
        assert_eq!(
            median(&[run(3.0, 9.0, 7.0), run(1.0, 1.0, 9.0), run(2.0, 5.0, 8.0)]),
            WrkResult {
                errors: 3,
                requests: 30,
                ..run(2.0, 5.0, 8.0)
            }
        );
    }
}
