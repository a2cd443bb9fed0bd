//! `cargo xtask docs`: the reference pages of `docs/reference/`, written
//! from the code so that they cannot drift from it: every task's `--help`
//! (from the clap definitions), the tools `setup` installs (from the one list
//! in `tools.rs`), the service's settings (from what the built service
//! prints with `config show` in each environment, described by the comments
//! of `config/base.toml`), the metrics the running service exports with the
//! alerts that read them, and the fields of `dist-manifest.json`.
//! `--check` compares instead of writing; the test suite runs it, so a page
//! left behind fails with the command that rewrites it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use xshell::cmd;

use crate::exec::Ctx;
use crate::manifest::{self, Manifest};
use crate::tools::{self, Need, Source};
use crate::util::write_atomically;

#[derive(clap::Args, Debug)]
pub struct Docs {
    /// Compare the pages with what the code would write now, and fail if
    /// any differs, instead of writing them
    #[arg(long)]
    check: bool,
    /// The folder of the reference pages [default: docs/reference]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The line every page starts with.
const GENERATED: &str = "<!-- Written by `cargo xtask docs` from the code; do not edit: edit the code, then run it again. -->";

impl Docs {
    /// `help_texts`: every help text as a user sees it, by command line
    /// (`flags::help_texts`).
    pub fn run(self, ctx: &Ctx, help_texts: &[(String, String)]) -> Result<()> {
        let dir = self
            .dir
            .unwrap_or_else(|| ctx.project.root.join("docs/reference"));
        if ctx.dry_run && !self.check {
            // The pages come from the built service, which a dry run does
            // not build: say what would be built and written.
            let app = build_service(ctx)?;
            for name in PAGES {
                eprintln!(
                    "(dry run: would write {} from the code and {})",
                    dir.join(name).display(),
                    app.display()
                );
            }
            return Ok(());
        }
        let pages = pages(ctx, help_texts)?;
        if self.check {
            return check(&dir, &pages);
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        for (name, text) in &pages {
            let path = dir.join(name);
            write_atomically(&path, text.as_bytes())?;
            println!("{}", path.display());
        }
        Ok(())
    }
}

/// Fails, naming each page that differs and the command that rewrites them.
fn check(dir: &Path, pages: &[(&str, String)]) -> Result<()> {
    let mut stale = Vec::new();
    for (name, text) in pages {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(on_disk) if on_disk == *text => {}
            Ok(on_disk) => stale.push(format!(
                "{} ({})",
                path.display(),
                first_difference(&on_disk, text)
            )),
            Err(_) => stale.push(format!("{} (missing)", path.display())),
        }
    }
    if !stale.is_empty() {
        bail!(
            "the reference pages differ from what the code writes now: {}; run `cargo xtask docs` and commit the result",
            stale.join(", ")
        );
    }
    println!("{} reference pages match the code", pages.len());
    Ok(())
}

/// `line N: "on disk" vs "from the code"`, for the first line that differs.
fn first_difference(on_disk: &str, written: &str) -> String {
    let mut old = on_disk.lines();
    let mut new = written.lines();
    for number in 1.. {
        match (old.next(), new.next()) {
            (Some(left), Some(right)) if left == right => {}
            (None, None) => break,
            (left, right) => {
                return format!(
                    "line {number}: {:?} on disk, {:?} from the code",
                    left.unwrap_or("<end>"),
                    right.unwrap_or("<end>")
                );
            }
        }
    }
    "line endings differ".to_owned()
}

/// The pages `docs` writes, in the order it writes them.
const PAGES: [&str; 6] = [
    "cli.md",
    "tools.md",
    "config.md",
    "metrics.md",
    "manifest.md",
    "project.md",
];

fn pages(ctx: &Ctx, help_texts: &[(String, String)]) -> Result<Vec<(&'static str, String)>> {
    let app = build_service(ctx)?;
    let texts = [
        cli_page(help_texts),
        tools_page(),
        config_page(ctx, &app)?,
        metrics_page(ctx, &app)?,
        manifest_page()?,
        project_page(),
    ];
    Ok(PAGES.into_iter().zip(texts).collect())
}

fn project_page() -> String {
    let mut page = header(
        "Project settings: `[workspace.metadata.xtask]`",
        "The settings of the root `Cargo.toml` the tasks read (with one `cargo\n\
         metadata --no-deps` per invocation), from `xtask/lib/src/project.rs`.\n\
         Unknown keys are an error. The service's own settings (its port among\n\
         them) are not here: they are in `config/` ([config.md](config.md)).\n\n\
         | key | type | default | what it is |\n\
         |-----|------|---------|------------|\n",
    );
    let k8s = serde_json::to_value(crate::project::K8sSettings::default()).unwrap_or_default();
    for (table, key, kind, default, meaning) in crate::project::KEYS {
        let name = if table.is_empty() {
            (*key).to_owned()
        } else {
            format!("{table}.{key}")
        };
        let default = match default {
            Some(stated) => (*stated).to_owned(),
            None => k8s[key].to_string(),
        };
        page.push_str(&format!(
            "| `{name}` | {kind} | `{}` | {} |\n",
            default.replace('|', "\\|"),
            meaning.replace('|', "\\|")
        ));
    }
    page.push_str(
        "\nThe `k8s` keys are in `[workspace.metadata.xtask.k8s]`, the `canary` keys in\n\
         `[workspace.metadata.xtask.canary]`. A project made by `cargo xtask new` also\n\
         has `[workspace.dependencies]`: the libraries' git repository and release\n\
         tag, which `cargo xtask update` moves.\n",
    );
    page
}

fn header(title: &str, from: &str) -> String {
    format!("{GENERATED}\n\n# {title}\n\n{}\n", from.trim_end())
}

fn cli_page(help_texts: &[(String, String)]) -> String {
    let mut page = header(
        "`cargo xtask` reference",
        "What `cargo xtask --help` and each task's `--help` print, from the clap\n\
         definitions in `xtask/lib/src/`.",
    );
    for (line, help) in help_texts {
        page.push_str(&format!(
            "\n## `{line}`\n\n```text\n{}\n```\n",
            help.trim_end()
        ));
    }
    page
}

fn tools_page() -> String {
    let mut page = header(
        "Tools",
        "The external tools the tasks and tests use, from the one list in\n\
         `xtask/lib/src/tools.rs`. `cargo xtask setup` installs those needed by the tests\n\
         (`--bench` adds the benchmark tools); `cargo xtask doctor` shows which are\n\
         present. Debian packages are installed without recommends and with no\n\
         service started; PyPI packages into the virtual environment of\n\
         [setup](../setup.md).\n\n\
         | tool | needed for | needed by | from | installed with |\n\
         |------|------------|-----------|------|----------------|\n",
    );
    for tool in tools::ALL {
        let info = tool.info();
        let (from, installer) = match info.source {
            Source::Apt(package) => (format!("Debian package `{package}`"), "`setup`".to_owned()),
            Source::Pip(package) => (format!("PyPI package `{package}`"), "`setup`".to_owned()),
            Source::Npm(packages) => (format!("npm packages `{packages}`"), "`setup`".to_owned()),
            Source::Crate(name) => (format!("crate `{name}`"), "`setup`".to_owned()),
            Source::Manual(command) => ("by hand".to_owned(), format!("`{command}`")),
        };
        let installer = match info.need {
            Need::Tests => installer,
            Need::Bench => format!("{installer} `--bench`"),
            Need::Fuzz => format!("{installer} `--fuzz`"),
            Need::Publish => "by hand (GitHub's runners have it)".to_owned(),
        };
        let who = match info.need {
            Need::Tests => "tasks and tests",
            Need::Bench => "`bench`",
            Need::Fuzz => "`fuzz`",
            Need::Publish => "`publish`",
        };
        page.push_str(&format!(
            "| `{}` | {} | {who} | {from} | {installer} |\n",
            info.binary,
            info.needed_for.replace('|', "\\|")
        ));
    }
    page
}

/// Builds the service for this machine, stamped as `cargo xtask build` does,
/// and returns its path.
fn build_service(ctx: &Ctx) -> Result<PathBuf> {
    let binary = &ctx.project.settings.binary;
    let cargo = ctx.cargo_path();
    let build = cmd!(ctx.sh, "{cargo} build --quiet --bin {binary}");
    ctx.run(ctx.stamped(build)?)
        .with_context(|| format!("build {binary} to read its settings and metrics"))?;
    Ok(ctx.project.target_dir.join("debug").join(binary))
}

/// The environments the config folder ships, in the order shown.
const ENVIRONMENTS: [&str; 3] = ["dev", "staging", "prod"];

fn config_page(ctx: &Ctx, app: &Path) -> Result<String> {
    let config_dir = ctx.project.root.join("config");
    let mut values: Vec<BTreeMap<String, String>> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    // What the keys no declaration describes take, by their TOML type.
    let mut kinds: BTreeMap<String, &str> = BTreeMap::new();
    for env in ENVIRONMENTS {
        let shown = config_show(app, &config_dir, env)?;
        let table: toml::Table = toml::from_str(&shown)
            .with_context(|| format!("parse `{} config show` with APP_ENV={env}", app.display()))?;
        let mut flat = BTreeMap::new();
        for (section, entries) in &table {
            let Some(entries) = entries.as_table() else {
                continue;
            };
            for (key, value) in entries {
                let name = format!("{section}.{key}");
                if !keys.contains(&name) {
                    keys.push(name.clone());
                    kinds.insert(name.clone(), toml_kind(value));
                }
                flat.insert(name, toml_value(value));
            }
        }
        values.push(flat);
    }
    let base = config_dir.join("base.toml");
    let text =
        std::fs::read_to_string(&base).with_context(|| format!("read {}", base.display()))?;
    let commented = comments_by_key(&text);
    let mut page = header(
        "Service settings",
        "Every setting of the service, with what it takes, its environment\n\
         variable and its value in each environment the `config/` folder ships,\n\
         as the built service prints them with `config show`. The platform's\n\
         settings are described by their declarations (`settings!` in\n\
         `app/platform/config/src/lib.rs`); the business part's keys of\n\
         `[service]`, `service.name` and `admin.token` by the comments of\n\
         `config/base.toml`. Layers apply in order: built-in defaults,\n\
         `base.toml`, `<APP_ENV>.toml`, `APP__SECTION__KEY` variables, `--listen`.\n\
         See [the service guide](../service.md).\n\n\
         | setting | takes | variable | dev | staging | prod | what it is |\n\
         |---------|-------|----------|-----|---------|------|------------|\n",
    );
    for key in &keys {
        let (section, name) = key.split_once('.').unwrap_or((key, ""));
        let declared = platform_config::DECLARED
            .iter()
            .find(|declared| declared.section == section && declared.key == name);
        let (takes, description) = match declared {
            Some(declared) => (declared.takes.to_owned(), declared.description()),
            None => {
                let Some(comment) = commented.get(key) else {
                    bail!(
                        "{key} has no comment in {}: describe it there, in the comment above its line (a commented-out line, `# {name} = ...`, if it has no value there)",
                        base.display()
                    );
                };
                (kinds[key].to_owned(), comment.clone())
            }
        };
        let variable = format!("APP__{}__{}", section.to_uppercase(), name.to_uppercase());
        let cells: Vec<String> = values
            .iter()
            .map(|flat| format!("`{}`", flat.get(key).map(String::as_str).unwrap_or("")))
            .collect();
        page.push_str(&format!(
            "| `{key}` | {} | `{variable}` | {} | {} |\n",
            takes.replace('|', "\\|"),
            cells.join(" | "),
            description.replace('|', "\\|")
        ));
    }
    Ok(page)
}

/// What the service prints for `config show` in `env`, with no setting
/// taken from this process's environment.
fn config_show(app: &Path, config_dir: &Path, env: &str) -> Result<String> {
    let mut command = std::process::Command::new(app);
    command
        .arg("--config-dir")
        .arg(config_dir)
        .args(["config", "show"])
        .env("APP_ENV", env);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("APP_") && name != "APP_ENV" {
            command.env_remove(name);
        }
    }
    let output = command
        .output()
        .with_context(|| format!("run {} config show", app.display()))?;
    if !output.status.success() {
        bail!(
            "`{} config show` with APP_ENV={env} failed ({}): {}",
            app.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).context("config show printed non-UTF-8")
}

fn toml_kind(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "a whole number",
        toml::Value::Float(_) => "a number",
        toml::Value::Boolean(_) => "true or false",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "a list",
        toml::Value::Table(_) => "a table",
    }
}

fn toml_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => text.clone(),
        toml::Value::Integer(number) => number.to_string(),
        toml::Value::Float(number) => number.to_string(),
        toml::Value::Boolean(flag) => flag.to_string(),
        // The service's own settings are scalars; anything else is shown as
        // its JSON form.
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// The comment paragraph directly above each `key = ` line of a TOML file
/// (or above a commented-out `# key = ` line), by `section.key`.
fn comments_by_key(text: &str) -> BTreeMap<String, String> {
    let mut described = BTreeMap::new();
    let mut section = String::new();
    let mut comment: Vec<&str> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            section = name.trim().to_owned();
            comment.clear();
        } else if line.is_empty() {
            comment.clear();
        } else if let Some(said) = line.strip_prefix('#') {
            let said = said.trim();
            match assigned_key(said) {
                // A commented-out setting: described by the lines above it.
                Some(key) if !comment.is_empty() => {
                    described.insert(format!("{section}.{key}"), comment.join(" "));
                    comment.clear();
                }
                _ => comment.push(said),
            }
        } else if let Some(key) = assigned_key(line) {
            if !comment.is_empty() {
                described.insert(format!("{section}.{key}"), comment.join(" "));
            }
            comment.clear();
        }
    }
    described
}

/// `key` of a `key = value` line.
fn assigned_key(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    .then_some(key)
}

/// One metric family of the exposition.
#[derive(Default)]
struct Family {
    kind: String,
    help: String,
    labels: Vec<String>,
    /// The names its samples carry (`x_total`, `x_bucket`, ...), which is
    /// what a query names.
    samples: Vec<String>,
}

fn metrics_page(ctx: &Ctx, app: &Path) -> Result<String> {
    // With tracing on, so that its metrics are listed too; its spans go to
    // a loopback port nothing listens on (the discard port).
    let tracing = [(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http://127.0.0.1:9".to_owned(),
    )];
    let server = crate::service::start_app_with(&ctx.project.root, "the service", app, &tracing)?;
    crate::service::wait_until_listening(server.addr)?;
    // One request to each business route, so that the families labelled by
    // route and status have series to read the labels from.
    let business = [
        "GET / HTTP/1.1\r\nHost: docs\r\nConnection: close\r\n\r\n",
        "POST /greet HTTP/1.1\r\nHost: docs\r\nContent-Type: application/json\r\nContent-Length: 16\r\nConnection: close\r\n\r\n{\"name\":\"docs\"}\n",
    ];
    for request in business {
        exchange(server.addr, request)?;
    }
    let exposition = exchange(
        server.addr,
        "GET /metrics HTTP/1.1\r\nHost: docs\r\nConnection: close\r\n\r\n",
    )?;
    drop(server);
    let families = parse_exposition(&exposition);
    if families.is_empty() {
        bail!("the service's /metrics had no `# TYPE` line: {exposition:.200}");
    }
    let alerts = crate::artifacts::alerts::alerts_and_their_metrics(&ctx.project.settings)?;
    let mut page = header(
        "Metrics",
        "What the service exports on `/metrics` (Prometheus text format), read\n\
         from the running service after one request to each business route, and\n\
         the alerts of `cargo xtask k8s` that read each metric. A metric is\n\
         named by its family, as `# TYPE` names it (OpenMetrics' naming); its\n\
         series carry the names queries use (a counter's `_total`, a\n\
         histogram's `_bucket`, `_sum` and `_count`, an info's `_info`). Labels\n\
         are those seen on the series then (`le` of histogram buckets left out).\n\n\
         | metric | type | series | labels | alerts reading it | what it is |\n\
         |--------|------|--------|--------|-------------------|------------|\n",
    );
    for (name, family) in &families {
        let reading: Vec<String> = alerts
            .iter()
            .filter(|(_, metrics)| {
                metrics
                    .iter()
                    .any(|metric| family_of(metric, &families) == Some(name.as_str()))
            })
            .map(|(alert, _)| format!("`{alert}`"))
            .collect();
        let labels: Vec<String> = family
            .labels
            .iter()
            .map(|label| format!("`{label}`"))
            .collect();
        let samples: Vec<String> = family
            .samples
            .iter()
            .map(|sample| format!("`{sample}`"))
            .collect();
        page.push_str(&format!(
            "| `{name}` | {} | {} | {} | {} | {} |\n",
            family.kind,
            samples.join(", "),
            labels.join(", "),
            reading.join(", "),
            family.help.replace('|', "\\|")
        ));
    }
    // An alert whose metric the service does not export is a broken alert.
    for (alert, metrics) in &alerts {
        for metric in metrics {
            if family_of(metric, &families).is_none() {
                bail!("alert {alert} reads {metric}, which the service does not export");
            }
        }
    }
    Ok(page)
}

/// The family a sample name belongs to (`x_total`, `x_info`, `x_bucket`,
/// `x_sum` and `x_count` to `x`).
fn family_of<'a>(sample: &str, families: &'a BTreeMap<String, Family>) -> Option<&'a str> {
    let candidates = [
        "", "_total", "_info", "_bucket", "_sum", "_count", "_created",
    ]
    .into_iter()
    .filter_map(|suffix| sample.strip_suffix(suffix));
    for candidate in candidates {
        if let Some((name, _)) = families.get_key_value(candidate) {
            return Some(name);
        }
    }
    None
}

/// The families of a Prometheus text exposition, by name.
fn parse_exposition(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.to_owned()).or_default().help = help.to_owned();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.to_owned()).or_default().kind = kind.to_owned();
        } else if !line.starts_with('#') && !line.is_empty() {
            let sample = line.split([' ', '{']).next().unwrap_or_default();
            let Some(name) = family_of(sample, &families).map(str::to_owned) else {
                continue;
            };
            let labels = line
                .split_once('{')
                .and_then(|(_, rest)| rest.split_once('}'))
                .map(|(labels, _)| labels)
                .unwrap_or_default();
            let family = families.get_mut(&name).expect("found above");
            if !family.samples.iter().any(|known| known == sample) {
                family.samples.push(sample.to_owned());
            }
            for pair in labels.split(',') {
                let Some((label, _)) = pair.split_once('=') else {
                    continue;
                };
                let label = label.trim();
                if label != "le" && !family.labels.iter().any(|known| known == label) {
                    family.labels.push(label.to_owned());
                }
            }
        }
    }
    families
}

/// Sends one request on a new connection; the body of a 2xx answer.
fn exchange(addr: SocketAddr, request: &str) -> Result<String> {
    let (status, body) = crate::util::http_request(&addr.to_string(), request)?;
    if !(200..300).contains(&status) {
        bail!(
            "{} answered {status}",
            request.lines().next().unwrap_or_default()
        );
    }
    Ok(body)
}

fn manifest_page() -> Result<String> {
    let example =
        serde_json::to_value(Manifest::example()).context("serialize the example manifest")?;
    let mut paths = Vec::new();
    collect_paths(&example, "", &mut paths);
    let mut page = header(
        "`dist-manifest.json`",
        &format!(
            "The contract between tasks: what `dist` and `release` built, read back by\n\
             `image`, `deploy`, `k8s` and `publish` (and by anything of yours) instead of\n\
             guessing file names. From the types of `xtask/lib/src/manifest.rs`; the current\n\
             `format_version` is {}.\n\n\
             | field | type | what it is |\n\
             |-------|------|------------|\n",
            manifest::FORMAT_VERSION
        ),
    );
    for (path, kind) in &paths {
        let Some((_, description)) = manifest::FIELDS.iter().find(|(field, _)| field == path)
        else {
            bail!(
                "dist-manifest.json field {path} has no entry in FIELDS of xtask/lib/src/manifest.rs: describe it there"
            );
        };
        page.push_str(&format!("| `{path}` | {kind} | {description} |\n"));
    }
    for (field, _) in manifest::FIELDS {
        if !paths.iter().any(|(path, _)| path == field) {
            bail!(
                "FIELDS of xtask/lib/src/manifest.rs describes {field}, which the manifest does not have: remove it"
            );
        }
    }
    Ok(page)
}

/// Every field's path and JSON type, depth first in serialization order.
fn collect_paths(value: &Value, prefix: &str, paths: &mut Vec<(String, &'static str)>) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                paths.push((path.clone(), json_type(field)));
                collect_paths(field, &path, paths);
            }
        }
        Value::Array(items) => {
            if let Some(first) = items.first() {
                collect_paths(first, &format!("{prefix}[]"), paths);
            }
        }
        _ => {}
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_describe_the_key_below_them() {
        let text = "# header\n\n[server]\n# Where.\n# On two lines.\nlisten = \"x\"\nbare = 1\n\n[service]\n# The name.\n# name = \"app\"\n";
        let described = comments_by_key(text);
        assert_eq!(described["server.listen"], "Where. On two lines.");
        assert_eq!(described["service.name"], "The name.");
        assert!(!described.contains_key("server.bare"));
    }

    #[test]
    fn samples_find_their_family_and_labels() {
        let text = "# HELP http_requests Requests.\n# TYPE http_requests counter\nhttp_requests_total{method=\"GET\",route=\"/\",status=\"200\"} 1\n# TYPE d histogram\nd_bucket{route=\"/\",le=\"0.1\"} 1\nd_sum{route=\"/\"} 0.1\n";
        let families = parse_exposition(text);
        assert_eq!(
            families["http_requests"].labels,
            ["method", "route", "status"]
        );
        assert_eq!(families["http_requests"].help, "Requests.");
        assert_eq!(families["d"].labels, ["route"]);
        assert_eq!(family_of("d_count", &families), Some("d"));
        assert_eq!(family_of("other_total", &families), None);
    }

    #[test]
    fn a_stale_page_names_its_first_different_line() {
        assert_eq!(
            first_difference("a\nb\n", "a\nc\n"),
            "line 2: \"b\" on disk, \"c\" from the code"
        );
        assert_eq!(
            first_difference("a\n", "a\nmore\n"),
            "line 2: \"<end>\" on disk, \"more\" from the code"
        );
    }

    #[test]
    fn every_manifest_field_is_described() {
        manifest_page().unwrap();
    }
}
