//! What one `cargo xtask bench` run measured, as `target/bench/report.json`
//! and `target/bench/report.md`, each figure with the command that made it;
//! `--write-docs` also writes the Markdown to `docs/reference/benchmarks.md`, so the
//! figures the README links to come from a command, not from a keyboard.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde::Serialize;

use super::tool::ToolFigure;
use super::{ServiceReport, UpgradeReport};
use crate::exec::Ctx;
use crate::manifest::{ArtifactKind, MANIFEST, Manifest};
use crate::targets::Target;
use crate::util::write_atomically;

#[derive(Serialize)]
pub struct Report {
    /// The command line of the run.
    pub command: String,
    pub commit: String,
    pub dirty: bool,
    pub rustc: String,
    pub machine: Machine,
    pub service: ServiceReport,
    pub upgrades: Option<UpgradeReport>,
    pub tool: Vec<ToolFigure>,
    pub sizes: Vec<Size>,
    /// With `--tracing`: allocations per request by tracing setting.
    pub allocations: Vec<Allocations>,
}

/// Allocations per request of each request the service's allocation test
/// sends, with one tracing setting (`off`, `at 1%`, `at 100%`).
#[derive(Serialize)]
pub struct Allocations {
    pub setting: String,
    pub per_request: Vec<(String, f64)>,
}

/// The lines `allocations per request, tracing <setting>: <request>
/// <count>; …` the allocation test prints.
pub fn parse_allocations(output: &str) -> Vec<Allocations> {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("allocations per request, tracing "))
        .filter_map(|rest| {
            let (setting, counts) = rest.split_once(": ")?;
            let per_request = counts
                .split("; ")
                .filter_map(|count| {
                    let (name, value) = count.rsplit_once(' ')?;
                    Some((name.to_owned(), value.parse().ok()?))
                })
                .collect();
            Some(Allocations {
                setting: setting.to_owned(),
                per_request,
            })
        })
        .collect()
}

#[derive(Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|line| line.strip_prefix("model name"))
                    .and_then(|rest| rest.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|release| release.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            cpu,
            kernel,
        }
    }
}

#[derive(Serialize)]
pub struct Size {
    pub what: String,
    pub path: String,
    pub bytes: u64,
    /// The task that wrote it.
    pub command: String,
}

/// The sizes `dist-manifest.json` records for `target`: its binary and
/// archive, and the image if `image` has been run.
pub fn sizes(ctx: &Ctx, target: &Target) -> Result<Vec<Size>> {
    let manifest = Manifest::require(&ctx.project.dist_dir().join(MANIFEST))?;
    let mut sizes = Vec::new();
    for artifact in &manifest.artifacts {
        let (what, command) = match artifact.kind {
            ArtifactKind::Binary if artifact.target.as_deref() == Some(target.triple) => (
                "static binary (stripped)",
                format!("cargo xtask dist --target {}", target.triple),
            ),
            ArtifactKind::Archive if artifact.target.as_deref() == Some(target.triple) => (
                "archive",
                format!("cargo xtask dist --target {}", target.triple),
            ),
            ArtifactKind::OciArchive => (
                "OCI image archive (every platform)",
                "cargo xtask image".to_owned(),
            ),
            _ => continue,
        };
        sizes.push(Size {
            what: what.to_owned(),
            path: format!("target/dist/{}", artifact.path),
            bytes: artifact.size,
            command,
        });
    }
    Ok(sizes)
}

/// Writes `report.json` and `report.md` (and `docs/reference/benchmarks.md` when
/// asked), each by temporary name and rename.
pub fn write(ctx: &Ctx, report: &Report, docs: bool) -> Result<()> {
    let dir = ctx.project.target_dir.join("bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let json = serde_json::to_string_pretty(report).context("serialize the report")?;
    write_atomically(&dir.join("report.json"), json.as_bytes())?;
    let markdown = markdown(report);
    write_atomically(&dir.join("report.md"), markdown.as_bytes())?;
    println!(
        "report: {} and report.md",
        dir.join("report.json").display()
    );
    if docs {
        let docs_dir = ctx.project.root.join("docs/reference");
        std::fs::create_dir_all(&docs_dir)
            .with_context(|| format!("create {}", docs_dir.display()))?;
        let path = docs_dir.join("benchmarks.md");
        write_atomically(&path, markdown.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn megabytes(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1_000_000.0)
}

fn milliseconds(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1_000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

pub fn markdown(report: &Report) -> String {
    let mut text = String::new();
    let short: String = report.commit.chars().take(7).collect();
    let _ = writeln!(text, "# Benchmarks\n");
    let _ = writeln!(
        text,
        "Made by `{}` at commit `{short}`{}, on {} cores ({}), Linux {}, {}. \
         Every figure is beside its reference from the same run; ratios, not \
         absolute figures, carry from one machine to another.\n",
        report.command,
        if report.dirty {
            " (with uncommitted changes)"
        } else {
            ""
        },
        report.machine.cores,
        report.machine.cpu,
        report.machine.kernel,
        report.rustc,
    );

    let service = &report.service;
    let _ = writeln!(text, "## The shipped service against Go and the floor\n");
    let _ = writeln!(
        text,
        "`{}`, median of {} round(s) per server and path (servers alternate), on loopback. \
         `app` is the binary `dist` ships (`{}`), run with `APP_ENV=prod` as \
         shipped: metrics on, JSON request log lines bounded by \
         `log.requests_per_second` of `config/prod.toml` (which keeps the journal's rate limit \
         from dropping the service's own lines). `go` is the bare net/http \
         server in `bench/go-reference/`. `floor` is what this machine does at all \
         (`bench/floor/floor.c`: one epoll loop per core, fixed responses, no parsing \
         beyond the end of the headers). CPU per request is the server's user and \
         system time over the run (`/proc/<pid>/stat`) divided by the requests served.\n",
        service.wrk_command, service.rounds, service.binary
    );
    let _ = writeln!(
        text,
        "| path | server | requests/s | vs Go | vs floor | CPU per request | vs floor | p99 | errors |"
    );
    let _ = writeln!(
        text,
        "|------|--------|-----------:|------:|---------:|----------------:|---------:|----:|-------:|"
    );
    let ratio = |value: Option<f64>, reference: Option<f64>| match (value, reference) {
        (Some(value), Some(reference)) if reference > 0.0 => format!("{:.2}×", value / reference),
        _ => "-".to_owned(),
    };
    for row in &service.rows {
        let floor = service.median_of("floor", row.path);
        let cpu = row.median.cpu_us_per_request;
        let _ = writeln!(
            text,
            "| `{}` | {} | {:.0} | {} | {} | {} | {} | {:.2} ms | {} |",
            row.path,
            row.server,
            row.median.requests_per_second,
            ratio(
                Some(row.median.requests_per_second),
                service.reference(row.path)
            ),
            ratio(
                Some(row.median.requests_per_second),
                floor.map(|floor| floor.requests_per_second)
            ),
            cpu.map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.2} µs")),
            ratio(cpu, floor.and_then(|floor| floor.cpu_us_per_request)),
            row.median.p99_ms,
            row.median.errors
        );
    }
    let go_rss = service
        .peak_rss_bytes
        .iter()
        .find(|(server, _)| server == "go")
        .map(|(_, bytes)| *bytes);
    let rss: Vec<String> = service
        .peak_rss_bytes
        .iter()
        .map(|(server, bytes)| match go_rss {
            Some(go) if server != "go" && go > 0 => {
                format!(
                    "{server} {} ({:.2}× Go)",
                    megabytes(*bytes),
                    *bytes as f64 / go as f64
                )
            }
            _ => format!("{server} {}", megabytes(*bytes)),
        })
        .collect();
    let _ = writeln!(text, "\nPeak RSS (`VmHWM`): {}.\n", rss.join(", "));
    if let Some(first) = service.idle_connections.first() {
        let _ = writeln!(
            text,
            "Memory per idle keep-alive connection: the growth of each server's RSS \
             (`VmRSS`) while it holds that many connections, each answered once and then \
             waiting, divided by their number, read {} s after the last one was answered.\n",
            super::process::IDLE_SETTLE.as_secs()
        );
        let mut header = String::from("| server |");
        let mut rule = String::from("|--------|");
        for (count, _) in &first.per_connection {
            let _ = write!(header, " {count} held |");
            rule.push_str("-----:|");
        }
        let _ = writeln!(text, "{header}\n{rule}");
        for idle in &service.idle_connections {
            let _ = write!(text, "| {} |", idle.server);
            for (_, bytes) in &idle.per_connection {
                let _ = write!(text, " {:.1} KB |", bytes / 1024.0);
            }
            let _ = writeln!(text);
        }
        let _ = writeln!(text);
    }

    if let Some(upgrades) = &report.upgrades {
        let _ = writeln!(text, "## Upgrades under load\n");
        let _ = writeln!(
            text,
            "`{}` on the shipped binary, runs with a SIGHUP upgrade every {} s \
             alternating with runs without, median of {} round(s) each.\n",
            upgrades.wrk_command, upgrades.upgrade_every_seconds, upgrades.rounds
        );
        let _ = writeln!(text, "| run | requests/s | p99 | errors | upgrades |");
        let _ = writeln!(text, "|-----|-----------:|----:|-------:|---------:|");
        for (name, row) in [
            ("no upgrades", &upgrades.quiet),
            ("upgrading", &upgrades.upgraded),
        ] {
            let _ = writeln!(
                text,
                "| {name} | {:.0} | {:.2} ms | {} | {} |",
                row.median.requests_per_second,
                row.median.p99_ms,
                row.median.errors,
                row.upgrades.iter().sum::<u32>()
            );
        }
        let _ = writeln!(text);
    }

    if let Some(off) = report.allocations.first() {
        let _ = writeln!(
            text,
            "## Allocations per request with tracing
"
        );
        let _ = writeln!(
            text,
            "Counted on the request path by the service's allocation test \
             (`app/src/allocations.rs`), with no endpoint (off) and with spans sampled at \
             1% and 100% of new traces. The test holds `off` to the counts recorded before \
             tracing existed, and each setting to its own recorded counts.\n"
        );
        let mut header = String::from("| request |");
        let mut rule = String::from("|---------|");
        for allocations in &report.allocations {
            let _ = write!(header, " tracing {} |", allocations.setting);
            rule.push_str("------:|");
        }
        let _ = writeln!(text, "{header}\n{rule}");
        for (index, (request, _)) in off.per_request.iter().enumerate() {
            let _ = write!(text, "| `{request}` |");
            for allocations in &report.allocations {
                let count = allocations
                    .per_request
                    .get(index)
                    .map_or(f64::NAN, |(_, count)| *count);
                let _ = write!(text, " {count:.2} |");
            }
            let _ = writeln!(text);
        }
        let _ = writeln!(text);
    }

    if !report.tool.is_empty() {
        let _ = writeln!(text, "## The build tool\n");
        let _ = writeln!(
            text,
            "Timed with hyperfine (no shell), each beside its floor: the same step without the xtask around it.\n"
        );
        let _ = writeln!(text, "| figure | mean | floor | floor mean | × floor |");
        let _ = writeln!(text, "|--------|-----:|-------|-----------:|--------:|");
        for figure in &report.tool {
            let (floor, floor_mean) = figure
                .floor
                .as_ref()
                .map_or(("-".to_owned(), "-".to_owned()), |floor| {
                    (format!("`{}`", floor.command), milliseconds(floor.mean_ms))
                });
            let (runs, spread) = match figure.measured.runs {
                1 => ("1 run".to_owned(), String::new()),
                runs => (
                    format!("{runs} runs"),
                    format!(" ± {}", milliseconds(figure.measured.stddev_ms)),
                ),
            };
            let _ = writeln!(
                text,
                "| {}: `{}`, {runs} | {}{spread} | {floor} | {floor_mean} | {} |",
                figure.what,
                figure.measured.command,
                milliseconds(figure.measured.mean_ms),
                figure
                    .ratio()
                    .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}×"))
            );
        }
        let _ = writeln!(text);
    }

    if !report.sizes.is_empty() {
        let _ = writeln!(text, "## Sizes\n");
        let _ = writeln!(text, "From `dist-manifest.json`.\n");
        let _ = writeln!(text, "| artifact | path | bytes | written by |");
        let _ = writeln!(text, "|----------|------|------:|------------|");
        for size in &report.sizes {
            let _ = writeln!(
                text,
                "| {} | `{}` | {} ({}) | `{}` |",
                size.what,
                size.path,
                size.bytes,
                megabytes(size.bytes),
                size.command
            );
        }
    }
    text
}

#[cfg(test)]
mod allocation_tests {
    use super::*;

    #[test]
    fn allocation_lines_are_read_by_setting_and_request() {
        let output = "running 1 test\n\
            allocations per request, tracing off: GET / 18.00; POST /greet 31.00\n\
            allocations per request, tracing at 1%: GET / 20.01; POST /greet 33.01\n\
            test allocations::x ... ok\n";
        let read = parse_allocations(output);
        let settings: Vec<&str> = read.iter().map(|row| row.setting.as_str()).collect();
        assert_eq!(settings, ["off", "at 1%"]);
        assert_eq!(
            read[1].per_request,
            [
                ("GET /".to_owned(), 20.01),
                ("POST /greet".to_owned(), 33.01)
            ]
        );
        assert!(parse_allocations("nothing here").is_empty());
    }
}
