//! Settings, layered: built-in defaults, then `<config dir>/base.toml`, then
//! `<config dir>/<APP_ENV>.toml`, then `APP__SECTION__KEY` environment
//! variables, then command-line flags. OpenTelemetry's standard variables
//! (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, …; `OTEL_VARIABLES`) set
//! the `[tracing]` keys they name, as a layer between the files and
//! `APP__*`, so that operators configure tracing as they do for any
//! OpenTelemetry SDK and `config show` shows the result.
//!
//! Each layer is parsed on its own into a `Layer` (every field optional,
//! unknown keys rejected) before it is applied, so an error always names the
//! key and the file or variable it came from. Secrets never come from config
//! files: only from `APP__<SECTION>__<KEY>`, a file named by
//! `APP__<SECTION>__<KEY>_FILE`, or systemd's `$CREDENTIALS_DIRECTORY`; they
//! are held in `SecretString`, whose `Debug` prints no content.

#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::sync::OnceLock;

mod declare;

pub use declare::Declared;
use declare::{Listen, quoted, settings};

/// The deployment environment, from `APP_ENV`; it picks `<env>.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Env {
    /// Development: `dev.toml`.
    Dev,
    /// Staging: `staging.toml`.
    Staging,
    /// Production: `prod.toml`.
    Prod,
}

impl Env {
    /// The name `APP_ENV` spells it with, which names its file.
    pub fn name(self) -> &'static str {
        match self {
            Env::Dev => "dev",
            Env::Staging => "staging",
            Env::Prod => "prod",
        }
    }

    /// The environment `APP_ENV` names; an error names the three.
    pub fn parse(value: &str) -> Result<Env> {
        match value {
            "dev" => Ok(Env::Dev),
            "staging" => Ok(Env::Staging),
            "prod" => Ok(Env::Prod),
            other => {
                bail!("APP_ENV={other:?} is not an environment: set it to dev, staging or prod")
            }
        }
    }
}

/// How log lines are written (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// The name config files spell it with.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Which requests get a line in the request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestLog {
    /// Every request.
    All,
    /// Requests answered with a status of 500 or above.
    Errors,
    /// None: the metrics still count every request.
    Off,
}

impl RequestLog {
    /// The name config files spell it with.
    pub fn name(self) -> &'static str {
        match self {
            RequestLog::All => "all",
            RequestLog::Errors => "errors",
            RequestLog::Off => "off",
        }
    }
}

/// The least severe lines written (`log.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and what may become one.
    Warn,
    /// The service's lifecycle and requests.
    Info,
    /// Detail for finding a fault.
    Debug,
    /// Everything, libraries included.
    Trace,
}

impl LogLevel {
    /// The name config files spell it with.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The effective settings the service runs with.
#[derive(Debug)]
pub struct Settings {
    /// The environment, from `APP_ENV`.
    pub env: Env,
    /// `[server]`.
    pub server: Server,
    /// `[log]`.
    pub log: Log,
    /// `[service]`: its name and the business part's own settings.
    pub service: Service,
    /// `[admin]`: secrets only.
    pub admin: Admin,
    /// `[tracing]`.
    pub tracing: Tracing,
    /// Every file and variable that contributed, in the order applied.
    pub sources: Vec<String>,
    /// Whether a layer named the port of `server.listen` (there is no
    /// default one).
    listen_has_port: bool,
}

settings! {
    /// `[server]`: where the service listens, how it drains, upgrades and
    /// bounds its connections.
    [server] Server, ServerLayer {
        /// Where to listen when no socket is inherited. The one place the
        /// port lives: the other files name the host alone, and the image,
        /// the units, the Kubernetes objects and the deploy proof read the
        /// port from here (through `cargo xtask`).
        // No port by default: base.toml names it, and `validate` says so if
        // it does not.
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0)),
        /// After SIGTERM: keep serving this long while /readyz answers
        /// 503, so that load balancers take the instance out first...
        drain_delay: Duration = Duration::from_secs(5),
        /// ...then stop accepting and give in-flight requests this long to
        /// finish.
        drain_timeout: Duration = Duration::from_secs(30),
        /// On SIGHUP or SIGUSR2 the binary at the path the service was
        /// started from is started with the listening socket; if it is not
        /// ready within this long, it is stopped and this process keeps
        /// serving.
        upgrade_timeout: Duration = Duration::from_secs(30),
        /// A client has this long to send a request's headers (from
        /// connecting, or from the first byte of a later request on a
        /// keep-alive connection).
        header_read_timeout: Duration = Duration::from_secs(10),
        /// A keep-alive connection with no request for this long is closed.
        /// Keep it longer than the idle timeout of whatever keeps
        /// connections open to the service (nginx upstream
        /// keepalive_timeout and AWS ALB: 60s), so that the proxy, not the
        /// service, closes them.
        idle_timeout: Duration = Duration::from_secs(75),
        /// From a request's headers to its response. A body still arriving
        /// then is answered 408, a handler still running 503. Shorter than
        /// drain_timeout.
        request_timeout: Duration = Duration::from_secs(20),
        /// Connections open at once. Past it, a new connection closes the
        /// one that has waited longest without a request (idle, or still
        /// sending its headers), or is answered 503 if every open one has a
        /// request in progress. Each costs a descriptor: the open-files
        /// limit must be at least this plus 64.
        max_connections: usize = 4096,
        /// Threads that serve connections, each running the ones it
        /// accepted start to end: "auto" is one per CPU the process may use
        /// (its affinity and cgroup CPU quota count), or a count.
        workers: WorkerCount = WorkerCount::Auto,
    }

    /// `[log]`: the service's lines and the request log.
    [log] Log, LogLayer {
        /// "text" for people, "json" for log shippers.
        format: LogFormat = LogFormat::Text,
        /// error, warn, info, debug or trace.
        level: LogLevel = LogLevel::Info,
        /// Which requests get a line in the request log: "all", "errors"
        /// (status 500 and above) or "off". The metrics count every request
        /// either way, and the service's own lines (listening, upgrades,
        /// draining, errors) are always written.
        requests: RequestLog = RequestLog::All,
        /// At most this many request lines per second per process; the
        /// rest are dropped and counted in
        /// app_log_request_lines_dropped_total. 0: no limit. Under systemd,
        /// keep it under journald's rate limit (10,000 lines per 30 s per
        /// service by default), or the journal drops every line of the
        /// service, the lifecycle lines with the request lines.
        requests_per_second: u32 = 0,
    }

    /// `[tracing]`: W3C trace context, the sampler and the OTLP/HTTP export
    /// of server spans (`platform/traces.rs`, `platform/otlp.rs`).
    /// OpenTelemetry's own variables set these keys too, under the `APP__`
    /// ones (`OTEL_VARIABLES`); `OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL` may
    /// only say http/json.
    [tracing] Tracing, TracingLayer {
        /// Distributed tracing (W3C trace context, server spans over
        /// OTLP/HTTP). Off (false, OTEL_SDK_DISABLED=true or
        /// OTEL_TRACES_EXPORTER=none) whatever the endpoint.
        enabled: bool = true,
        /// The collector's OTLP/HTTP traces URL, http:// only (a collector
        /// on the host or in the pod forwards over TLS): e.g.
        /// "http://127.0.0.1:4318/v1/traces". Empty: tracing off, and
        /// requests carry no trace ids, at no cost.
        /// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or
        /// OTEL_EXPORTER_OTLP_ENDPOINT with /v1/traces appended.)
        endpoint: String = String::new(),
        /// The resource's service.name; empty: service.name
        /// (OTEL_SERVICE_NAME).
        service_name: String = String::new(),
        /// How spans are sampled, as OTEL_TRACES_SAMPLER spells it:
        /// parentbased_traceidratio follows the caller's decision and
        /// samples `ratio` of new traces (OTEL_TRACES_SAMPLER).
        sampler: Sampler = Sampler::ParentbasedTraceidratio,
        /// The share of new traces sampled, from 0.0 to 1.0, for the
        /// `*traceidratio` samplers (OTEL_TRACES_SAMPLER_ARG).
        ratio: f64 = 1.0,
        /// More resource attributes, key=value,key=value, values
        /// percent-encoded (OTEL_RESOURCE_ATTRIBUTES).
        resource_attributes: String = String::new(),
        /// Spans waiting for export at most; past it they are dropped and
        /// counted in app_trace_spans_dropped_total{reason="queue_full"}
        /// (OTEL_BSP_MAX_QUEUE_SIZE).
        queue_size: usize = 2048,
        /// Spans per export request at most
        /// (OTEL_BSP_MAX_EXPORT_BATCH_SIZE).
        batch_size: usize = 512,
        /// How long a span waits at most for its batch to fill
        /// (OTEL_BSP_SCHEDULE_DELAY, in milliseconds).
        batch_delay: Duration = Duration::from_secs(1),
        /// How long a batch may take, retries (on 429, 502, 503, 504 and
        /// connection errors) included, before it is dropped and counted;
        /// and how long the last export may take when the process stops or
        /// hands over to an upgrade (OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT,
        /// in milliseconds).
        export_timeout: Duration = Duration::from_secs(10),
    }
}

/// `server.workers`: `auto` (one per CPU the process may use) or a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCount {
    /// One per CPU the process may use.
    Auto,
    /// This many.
    Count(usize),
}

impl WorkerCount {
    /// The number of worker threads this means on this machine.
    pub fn resolve(self) -> usize {
        match self {
            // One per CPU the process may use: the affinity mask and a
            // cgroup CPU quota count, so a container limited to 2 CPUs runs 2.
            WorkerCount::Auto => {
                std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
            }
            WorkerCount::Count(count) => count,
        }
    }
}

/// `[service]`: the name the platform reports and the business part's settings.
#[derive(Debug, Clone)]
pub struct Service {
    /// The name the service reports in its logs, `/version` and to the
    /// business part.
    pub name: String,
    /// The rest of `[service]`: the business part's own settings, merged
    /// over the layers and checked by it layer by layer
    /// (the platform's `Service::Settings`); after loading, every one of
    /// them with its effective value, defaults included.
    pub own: toml::Table,
}

impl Tracing {
    /// Whether requests get trace context and spans at all.
    pub fn active(&self) -> bool {
        self.enabled && !self.endpoint.is_empty()
    }
}

/// The samplers of `OTEL_TRACES_SAMPLER`, spelled as it spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// Every span.
    AlwaysOn,
    /// No span.
    AlwaysOff,
    /// `ratio` of traces, by trace id.
    Traceidratio,
    /// The caller's decision; every new trace.
    ParentbasedAlwaysOn,
    /// The caller's decision; no new trace.
    ParentbasedAlwaysOff,
    /// The caller's decision; `ratio` of new traces.
    ParentbasedTraceidratio,
}

impl Sampler {
    /// The name `OTEL_TRACES_SAMPLER` spells it with.
    pub fn name(self) -> &'static str {
        match self {
            Sampler::AlwaysOn => "always_on",
            Sampler::AlwaysOff => "always_off",
            Sampler::Traceidratio => "traceidratio",
            Sampler::ParentbasedAlwaysOn => "parentbased_always_on",
            Sampler::ParentbasedAlwaysOff => "parentbased_always_off",
            Sampler::ParentbasedTraceidratio => "parentbased_traceidratio",
        }
    }
}

/// OpenTelemetry's variables and the `[tracing]` key each sets, applied in
/// this order (so the traces-only endpoint and timeout win over the
/// general ones). Values in milliseconds get their unit; the general
/// endpoint gets the traces path, as the specification says.
const OTEL_VARIABLES: [(&str, &str); 15] = [
    ("OTEL_SDK_DISABLED", "enabled"),
    ("OTEL_TRACES_EXPORTER", "enabled"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", ""),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", ""),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "endpoint"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "endpoint"),
    ("OTEL_SERVICE_NAME", "service_name"),
    ("OTEL_RESOURCE_ATTRIBUTES", "resource_attributes"),
    ("OTEL_TRACES_SAMPLER", "sampler"),
    ("OTEL_TRACES_SAMPLER_ARG", "ratio"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "queue_size"),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "batch_size"),
    ("OTEL_BSP_SCHEDULE_DELAY", "batch_delay"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "export_timeout"),
    ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "export_timeout"),
];

/// An OpenTelemetry variable's value as the text of the `[tracing]` key it
/// sets; `None`: it sets nothing (a protocol check that passed).
fn otel_value(name: &str, key: &str, value: &str) -> Result<Option<String>> {
    let value = value.trim();
    Ok(Some(match name {
        "OTEL_SDK_DISABLED" => match value.to_ascii_lowercase().as_str() {
            "true" => "false".to_owned(),
            "false" | "" => "true".to_owned(),
            _ => bail!("{name}={value:?}: expected true or false"),
        },
        "OTEL_TRACES_EXPORTER" => match value {
            "otlp" | "" => return Ok(None),
            "none" => "false".to_owned(),
            _ => bail!(
                "{name}={value:?}: this service exports traces over OTLP only: set it to otlp or none"
            ),
        },
        "OTEL_EXPORTER_OTLP_PROTOCOL" | "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" => {
            if value.is_empty() || value == "http/json" {
                return Ok(None);
            }
            bail!(
                "{name}={value:?}: this service exports OTLP/HTTP with JSON bodies only: set it to http/json, or unset it (every OTLP/HTTP collector takes JSON)"
            )
        }
        "OTEL_EXPORTER_OTLP_ENDPOINT" if !value.is_empty() => {
            format!("{}/v1/traces", value.trim_end_matches('/'))
        }
        _ if key == "batch_delay" || key == "export_timeout" => {
            let millis: u64 = value.parse().map_err(|_| {
                anyhow!("{name}={value:?}: expected a whole number of milliseconds, e.g. 5000")
            })?;
            format!("{millis}ms")
        }
        _ => value.to_owned(),
    }))
}

/// The settings from one config file's text and `NAME=value` variables,
/// as `load` reads them, for the fuzz targets (the platform's `fuzz::config`).
/// Variables that name files (`*_FILE`, `CREDENTIALS_DIRECTORY`) are left
/// out: a fuzzer would have the loader read this machine's files.
pub fn from_text_and_variables(text: &str, variables: &str) -> Result<Settings> {
    let environment = Environment(
        variables
            .lines()
            .filter_map(|line| line.split_once('='))
            .filter(|(name, _)| {
                is_ours(name) && !name.ends_with("_FILE") && *name != "CREDENTIALS_DIRECTORY"
            })
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
    );
    let env = Env::parse(environment.get("APP_ENV").unwrap_or("dev"))?;
    let files = [(PathBuf::from("base.toml"), text.to_owned())];
    Settings::from_files(env, &files, None, &environment, &|_| Ok(()))
}

/// How the business part checks one layer's keys of `[service]`: `Err` is
/// the serde message naming the key.
pub type CheckOwn<'a> = &'a dyn Fn(&toml::Table) -> Result<(), String>;

/// `[admin]`: the settings of the `/admin/` routes, all secrets.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Bearer token for `/admin/*`; without it those routes are disabled.
    pub token: Option<SecretString>,
}

/// The values a layer may set. Absent fields leave the value below alone.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Layer {
    #[serde(default)]
    server: ServerLayer,
    #[serde(default)]
    log: LogLayer,
    /// Read from the table by `apply_file` (`ServiceLayer`); skipped here.
    #[serde(default, rename = "service")]
    _service: serde::de::IgnoredAny,
    #[serde(default)]
    admin: AdminLayer,
    #[serde(default)]
    tracing: TracingLayer,
}

/// `[service]`: `name` is the platform's; every other key is the business
/// part's, which checks them itself (unknown keys included). Taken from the
/// layer's table by hand rather than deserialized: a `toml::Table` field or
/// `#[serde(flatten)]` would add serde's buffering and toml's value visitor
/// for every deserializer, 60 KB of the binary.
#[derive(Debug, Default)]
struct ServiceLayer {
    name: Option<String>,
    own: toml::Table,
}

impl ServiceLayer {
    fn from_table(table: &mut toml::Table) -> Result<ServiceLayer, String> {
        let mut own = match table.remove("service") {
            None => return Ok(ServiceLayer::default()),
            Some(toml::Value::Table(own)) => own,
            Some(other) => {
                return Err(format!(
                    "service is a {}: make it a table, [service]",
                    other.type_str()
                ));
            }
        };
        let name = match own.remove("name") {
            None => None,
            Some(toml::Value::String(name)) => Some(name),
            Some(other) => {
                return Err(format!(
                    "service.name is a {}: set it to a string",
                    other.type_str()
                ));
            }
        };
        Ok(ServiceLayer { name, own })
    }
}

/// Secrets only: nothing here may come from a file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminLayer {}

/// Settings that are secrets, as (section, key).
const SECRETS: [(&str, &str); 1] = [("admin", "token")];

/// What the command line contributes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Overrides {
    /// `--config-dir`: the folder that holds `base.toml`.
    pub config_dir: Option<PathBuf>,
    /// `--listen`: the address, over every other layer.
    pub listen: Option<SocketAddr>,
}

/// The process environment, captured once so that loading is a pure function
/// of its inputs (and testable without touching the real environment).
#[derive(Debug, Default, Clone)]
pub struct Environment(pub BTreeMap<String, String>);

impl Environment {
    /// The variables settings are read from (`APP_*`, `OTEL_*` and `CREDENTIALS_DIRECTORY`), as
    /// they are now.
    pub fn capture() -> Result<Environment> {
        let mut vars = BTreeMap::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().map(str::to_owned) else {
                continue;
            };
            if !is_ours(&name) {
                continue;
            }
            let value = value
                .into_string()
                .map_err(|_| anyhow!("{name} is not valid UTF-8: set it to a UTF-8 value"))?;
            vars.insert(name, value);
        }
        Ok(Environment(vars))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

fn is_ours(name: &str) -> bool {
    name.starts_with("APP_")
        || name == "CREDENTIALS_DIRECTORY"
        || OTEL_VARIABLES.iter().any(|(otel, _)| *otel == name)
}

impl Settings {
    /// The settings from the config directory (`--config-dir`, `APP_CONFIG_DIR` or `config`),
    /// the environment and the command line; `check_own` checks the business part's keys of
    /// each layer.
    pub fn load(
        overrides: &Overrides,
        environment: &Environment,
        check_own: CheckOwn<'_>,
    ) -> Result<Settings> {
        let env = Env::parse(environment.get("APP_ENV").unwrap_or("dev"))?;
        let config_dir = overrides
            .config_dir
            .clone()
            .or_else(|| environment.get("APP_CONFIG_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("config"));
        check_config_dir(&config_dir)?;
        let base = config_dir.join("base.toml");
        let base_text = std::fs::read_to_string(&base).with_context(|| {
            format!(
                "read {}: every config directory needs a base.toml",
                base.display()
            )
        })?;
        let mut files = vec![(base, base_text)];
        let env_file = config_dir.join(format!("{}.toml", env.name()));
        match std::fs::read_to_string(&env_file) {
            Ok(text) => files.push((env_file, text)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(anyhow!(err).context(format!("read {}", env_file.display()))),
        }
        Settings::from_files(env, &files, overrides.listen, environment, check_own)
    }

    /// The settings from the config files' texts (`(path, text)`, base
    /// first), the environment and `--listen`: everything `load` does once
    /// the files are read.
    pub fn from_files(
        env: Env,
        files: &[(PathBuf, String)],
        listen: Option<SocketAddr>,
        environment: &Environment,
        check_own: CheckOwn<'_>,
    ) -> Result<Settings> {
        let mut settings = Settings::defaults(env);
        for (path, text) in files {
            settings.apply_file(path, text, check_own)?;
        }

        for (name, key) in OTEL_VARIABLES {
            let Some(value) = environment.get(name) else {
                continue;
            };
            if let Some(value) = otel_value(name, key, value)? {
                settings.apply_env(name, "tracing", key, &value, check_own)?;
            }
        }

        for (name, value) in &environment.0 {
            let Some(path) = name.strip_prefix("APP__") else {
                continue;
            };
            let (section, key) = split_key(name, path)?;
            if secret_of(&section, &key).is_some() {
                continue;
            }
            settings.apply_env(name, &section, &key, value, check_own)?;
        }

        if let Some(listen) = listen {
            settings.server.listen = listen;
            settings.listen_has_port = true;
            settings.sources.push("--listen".to_owned());
        }
        settings.admin.token = load_secret("admin", "token", environment)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The built-in defaults, the layer under every file.
    pub fn defaults(env: Env) -> Settings {
        Settings {
            env,
            server: Server::default(),
            log: Log::default(),
            service: Service {
                name: default_service_name().to_owned(),
                own: toml::Table::new(),
            },
            admin: Admin { token: None },
            tracing: Tracing::default(),
            sources: vec!["defaults".to_owned()],
            listen_has_port: false,
        }
    }

    fn apply_file(&mut self, path: &Path, text: &str, check_own: CheckOwn<'_>) -> Result<()> {
        let source = path.display().to_string();
        let mut table: toml::Table =
            toml::from_str(text).map_err(|err| toml_error(&source, text, &err))?;
        for (section, key) in SECRETS {
            if table
                .get(section)
                .and_then(|value| value.get(key))
                .is_some()
            {
                bail!(
                    "{source}: {section}.{key} is a secret and may not be set in a config file: use {} or {}_FILE, or a systemd credential named {section}.{key}",
                    env_name(section, key),
                    env_name(section, key)
                );
            }
        }
        let service =
            ServiceLayer::from_table(&mut table).map_err(|err| anyhow!("{source}: {err}"))?;
        check_own(&service.own).map_err(|err| anyhow!("{source}: [service] {err}"))?;
        let layer: Layer = toml::from_str(text).map_err(|err| toml_error(&source, text, &err))?;
        self.apply(layer);
        self.apply_service(service);
        self.sources.push(source);
        Ok(())
    }

    fn apply_env(
        &mut self,
        name: &str,
        section: &str,
        key: &str,
        value: &str,
        check_own: CheckOwn<'_>,
    ) -> Result<()> {
        // Every setting of the platform is a string in TOML (durations and
        // addresses too), so a variable's value is used as a TOML string.
        // A key of the business part that is not a string (a count, a flag)
        // is read as the TOML value the text spells, if it is one.
        let mut inner = toml::Table::new();
        inner.insert(key.to_owned(), toml::Value::String(value.to_owned()));
        if section == "service" {
            let service = if key == "name" {
                ServiceLayer {
                    name: Some(value.to_owned()),
                    own: toml::Table::new(),
                }
            } else {
                let own = match check_own(&inner) {
                    Ok(()) => inner,
                    Err(as_string) => toml::from_str::<toml::Table>(&format!("value = {value}"))
                        .ok()
                        .and_then(|mut table| table.remove("value"))
                        .map(|typed| toml::Table::from_iter([(key.to_owned(), typed)]))
                        .filter(|typed| check_own(typed).is_ok())
                        .ok_or_else(|| anyhow!("{name}: {as_string}"))?,
                };
                ServiceLayer { name: None, own }
            };
            self.apply_service(service);
            self.sources.push(name.to_owned());
            return Ok(());
        }
        // As one-key TOML text, so that files and variables share one
        // deserializer (a second one, over `toml::Value`, costs the binary
        // 20 KB); a JSON string is a valid TOML basic string.
        let quoted = serde_json::to_string(value).expect("a string serializes");
        let text = format!("[{section}]\n{key} = {quoted}\n");
        let layer: Layer = toml::from_str(&text)
            .map_err(|err: toml::de::Error| anyhow!("{name}: {}", err.message().trim()))?;
        self.apply(layer);
        self.sources.push(name.to_owned());
        Ok(())
    }

    fn apply_service(&mut self, service: ServiceLayer) {
        set(&mut self.service.name, service.name);
        self.service.own.extend(service.own);
    }

    fn apply(&mut self, layer: Layer) {
        let Layer {
            server,
            log,
            _service: _,
            admin: AdminLayer {},
            tracing,
        } = layer;
        // A layer that names the port of `server.listen` (there is no
        // default one); a host alone keeps the port below.
        if matches!(server.listen, Some(Listen::Address(_))) {
            self.listen_has_port = true;
        }
        self.server.merge(server);
        self.log.merge(log);
        self.tracing.merge(tracing);
    }

    fn validate(&self) -> Result<()> {
        if !self.listen_has_port {
            bail!(
                "server.listen names no port: set it with one in base.toml, e.g. listen = \"127.0.0.1:8080\" (the other files may name the host alone, e.g. \"0.0.0.0\")"
            );
        }
        if self.service.name.trim().is_empty() {
            bail!("service.name is empty: set it to the name the service reports");
        }
        if self.server.drain_timeout.is_zero() {
            bail!("server.drain_timeout is 0s: in-flight requests need time to finish, e.g. 30s");
        }
        if self.server.upgrade_timeout.is_zero() {
            bail!("server.upgrade_timeout is 0s: a new process needs time to start, e.g. 30s");
        }
        for (key, value, example) in [
            (
                "header_read_timeout",
                self.server.header_read_timeout,
                "10s",
            ),
            ("idle_timeout", self.server.idle_timeout, "75s"),
            ("request_timeout", self.server.request_timeout, "20s"),
        ] {
            if value.is_zero() {
                bail!(
                    "server.{key} is 0s: no client could make it in time; set it to e.g. {example}"
                );
            }
        }
        if self.server.request_timeout >= self.server.drain_timeout {
            bail!(
                "server.request_timeout ({}) is not shorter than server.drain_timeout ({}): a drain would cut requests that are still allowed to run; lower request_timeout or raise drain_timeout",
                format_duration(self.server.request_timeout),
                format_duration(self.server.drain_timeout)
            );
        }
        if self.server.max_connections == 0 {
            bail!("server.max_connections is 0: no client could connect; set it to e.g. 4096");
        }
        let tracing = &self.tracing;
        if !tracing.endpoint.is_empty() && !tracing.endpoint.starts_with("http://") {
            bail!(
                "tracing.endpoint {:?} is not an http:// URL: send spans to a collector on the host or in the pod (e.g. http://127.0.0.1:4318/v1/traces), which forwards them over TLS if needed",
                tracing.endpoint
            );
        }
        if !(0.0..=1.0).contains(&tracing.ratio) {
            bail!(
                "tracing.ratio is {}: it is a share of new traces, from 0.0 (none) to 1.0 (all), e.g. 0.01",
                tracing.ratio
            );
        }
        if tracing.queue_size == 0 || tracing.batch_size == 0 {
            bail!(
                "tracing.queue_size and tracing.batch_size must be at least 1, e.g. 2048 and 512"
            );
        }
        if tracing.batch_size > tracing.queue_size {
            bail!(
                "tracing.batch_size ({}) is larger than tracing.queue_size ({}): a batch could never fill; lower batch_size",
                tracing.batch_size,
                tracing.queue_size
            );
        }
        if tracing.export_timeout.is_zero() || tracing.batch_delay.is_zero() {
            bail!(
                "tracing.export_timeout and tracing.batch_delay must be longer than 0s, e.g. 10s and 1s"
            );
        }
        if let Err(err) = parse_resource_attributes(&tracing.resource_attributes) {
            bail!("tracing.resource_attributes: {err}");
        }
        if self.server.workers == WorkerCount::Count(0) {
            bail!(
                "server.workers is 0: no thread would serve; set it to \"auto\" (one per CPU) or a count, e.g. 2"
            );
        }
        Ok(())
    }

    /// The effective settings as TOML, secrets redacted, with where they came
    /// from. This is what `app config show` prints.
    pub fn to_redacted_toml(&self) -> String {
        // Written by hand rather than through toml's serializer, which would
        // add its writer to the binary for this one fixed table: strings are
        // quoted as JSON strings, which are valid TOML basic strings.
        let token = if self.admin.token.is_some() {
            "[redacted]"
        } else {
            "[not set]"
        };
        let own: String = self
            .service
            .own
            .iter()
            .map(|(key, value)| format!("{} = {}\n", toml_key(key), toml_text(value)))
            .collect();
        format!(
            "# APP_ENV={}\n# sources, in order: {}\n\n{}\n{}\n\
             [service]\nname = {}\n{own}\n\
             [admin]\ntoken = \"{token}\"\n\n{}",
            self.env.name(),
            self.sources.join(", "),
            self.server.show(),
            self.log.show(),
            quoted(&self.service.name),
            self.tracing.show(),
        )
    }
}

/// A key as TOML: bare where TOML allows it, else quoted.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if bare {
        key.to_owned()
    } else {
        serde_json::to_string(key).expect("a string serializes")
    }
}

/// A TOML value as TOML text, strings quoted as JSON strings (valid TOML
/// basic strings), without toml's serializer.
fn toml_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => quoted(text),
        toml::Value::Integer(number) => number.to_string(),
        toml::Value::Float(number) => format!("{number:?}"),
        toml::Value::Boolean(flag) => flag.to_string(),
        toml::Value::Datetime(datetime) => datetime.to_string(),
        toml::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_text).collect();
            format!("[{}]", items.join(", "))
        }
        toml::Value::Table(table) => {
            let entries: Vec<String> = table
                .iter()
                .map(|(key, value)| format!("{} = {}", toml_key(key), toml_text(value)))
                .collect();
            format!("{{ {} }}", entries.join(", "))
        }
    }
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}

fn check_config_dir(dir: &Path) -> Result<()> {
    std::fs::read_dir(dir).map(drop).map_err(|err| {
        anyhow!(
            "read the config directory {}: {err}: pass --config-dir (or set APP_CONFIG_DIR) to the folder that holds base.toml",
            dir.display()
        )
    })
}

/// `APP__SERVER__LISTEN` → (`server`, `listen`).
fn split_key(name: &str, path: &str) -> Result<(String, String)> {
    let word = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
    };
    match path.split("__").collect::<Vec<_>>()[..] {
        [section, key] if word(section) && word(key) => {
            Ok((section.to_ascii_lowercase(), key.to_ascii_lowercase()))
        }
        _ => bail!(
            "{name}: expected APP__<SECTION>__<KEY> of letters, digits and _, e.g. APP__SERVER__LISTEN"
        ),
    }
}

fn env_name(section: &str, key: &str) -> String {
    format!(
        "APP__{}__{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

/// The secret a `section.key` names, either itself or through `_file`.
fn secret_of(section: &str, key: &str) -> Option<(&'static str, &'static str)> {
    let key = key.strip_suffix("_file").unwrap_or(key);
    SECRETS
        .into_iter()
        .find(|(secret_section, secret_key)| *secret_section == section && *secret_key == key)
}

/// Reads one secret from the one source that sets it; two sources is an
/// error, since which one wins would be a guess.
fn load_secret(
    section: &str,
    key: &str,
    environment: &Environment,
) -> Result<Option<SecretString>> {
    let plain_var = env_name(section, key);
    let file_var = format!("{plain_var}_FILE");
    let credential_name = format!("{section}.{key}");
    let credential = environment
        .get("CREDENTIALS_DIRECTORY")
        .map(|dir| Path::new(dir).join(&credential_name))
        .filter(|path| path.exists());

    let mut sources = Vec::new();
    if environment.get(&plain_var).is_some() {
        sources.push(plain_var.clone());
    }
    if environment.get(&file_var).is_some() {
        sources.push(file_var.clone());
    }
    if credential.is_some() {
        sources.push(format!("credential {credential_name}"));
    }
    if sources.len() > 1 {
        bail!(
            "{section}.{key} is set by {}: keep only one of them",
            sources.join(" and ")
        );
    }

    let value = if let Some(value) = environment.get(&plain_var) {
        value.to_owned()
    } else if let Some(path) = environment.get(&file_var) {
        read_secret_file(Path::new(path))
            .with_context(|| format!("{section}.{key}: read {file_var}={path}"))?
    } else if let Some(path) = credential {
        read_secret_file(&path)
            .with_context(|| format!("{section}.{key}: read credential {}", path.display()))?
    } else {
        return Ok(None);
    };
    // Files usually end with a line break that is not part of the secret.
    let value = value.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        bail!(
            "{section}.{key} is set by {} but empty: put the secret in it, or unset it",
            sources[0]
        );
    }
    Ok(Some(SecretString::from(value)))
}

fn read_secret_file(path: &Path) -> Result<String> {
    // The error names the path only; the content never reaches a message.
    std::fs::read_to_string(path).map_err(|err| anyhow!("{err}"))
}

/// A TOML error as one line: the source, the line, and what is wrong.
fn toml_error(source: &str, text: &str, err: &toml::de::Error) -> anyhow::Error {
    let line = err
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    match line {
        Some(line) => anyhow!("{source} line {line}: {}", err.message().trim()),
        None => anyhow!("{source}: {}", err.message().trim()),
    }
}

/// `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs separated by commas,
/// values percent-encoded (W3C Baggage's octets).
pub fn parse_resource_attributes(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut attributes = Vec::new();
    for pair in text
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!(
                "{pair:?} is not key=value; expected e.g. deployment.environment.name=prod,k8s.pod.name=app-1"
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{pair:?} has an empty key"));
        }
        attributes.push((key.to_owned(), percent_decode(value.trim())?));
    }
    Ok(attributes)
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let byte = bytes
                .get(index + 1..index + 3)
                .and_then(|digits| std::str::from_utf8(digits).ok())
                .and_then(|digits| u8::from_str_radix(digits, 16).ok())
                .ok_or_else(|| format!("{text:?} has a % not followed by two hex digits"))?;
            out.push(byte);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} decodes to bytes that are not UTF-8"))
}

/// `250ms`, `5s`, `2m`, `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("invalid duration {text:?}: expected a whole number and a unit, e.g. 250ms, 5s, 2m")
    })?;
    let millis = match unit {
        "ms" => Some(number),
        "s" => number.checked_mul(1_000),
        "m" => number.checked_mul(60_000),
        "h" => number.checked_mul(3_600_000),
        "" => {
            return Err(format!(
                "invalid duration {text:?}: add a unit, e.g. {number}s"
            ));
        }
        _ => {
            return Err(format!(
                "invalid duration {text:?}: the unit must be ms, s, m or h"
            ));
        }
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid duration {text:?}: too long"))
}

/// A duration as `config show` prints it: whole seconds as `5s`, else `250ms`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1_000) {
        format!("{}s", millis / 1_000)
    } else {
        format!("{millis}ms")
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The admin token, compared without an early exit on the first difference.
pub fn token_matches(expected: &SecretString, presented: &str) -> bool {
    let expected = expected.expose_secret().as_bytes();
    let presented = presented.as_bytes();
    let mut difference = expected.len() ^ presented.len();
    for (index, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ presented.get(index).copied().unwrap_or(0));
    }
    difference == 0
}

/// The binary's name, the default of `service.name`: set once by the
/// platform's `main` (from the service's own crate), `app` until then.
static SERVICE_NAME: OnceLock<&'static str> = OnceLock::new();

/// Records the binary's name as the default of `service.name`; the first
/// call wins.
pub fn set_default_service_name(name: &'static str) {
    let _ = SERVICE_NAME.set(name);
}

fn default_service_name() -> &'static str {
    SERVICE_NAME.get().copied().unwrap_or("app")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config directory with the given files, and an environment.
    fn load(
        files: &[(&str, &str)],
        vars: &[(&str, &str)],
        listen: Option<&str>,
    ) -> Result<Settings, String> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let environment = Environment(
            vars.iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        );
        let overrides = Overrides {
            config_dir: Some(dir.path().to_owned()),
            listen: listen.map(|addr| addr.parse().unwrap()),
        };
        Settings::load(&overrides, &environment, &|_| Ok(())).map_err(|err| format!("{err:#}"))
    }

    fn check_error(files: &[(&str, &str)], vars: &[(&str, &str)], expected: &[&str]) {
        let err = load(files, vars, None).expect_err("the configuration is rejected");
        for part in expected {
            assert!(
                err.contains(part),
                "error `{err}` does not mention `{part}`"
            );
        }
    }

    const BASE: (&str, &str) = (
        "base.toml",
        "[server]\nlisten = \"127.0.0.1:1000\"\ndrain_delay = \"1s\"\n",
    );

    #[test]
    fn each_layer_overrides_the_one_below() {
        let prod = (
            "prod.toml",
            "[server]\nlisten = \"127.0.0.1:2000\"\n[log]\nformat = \"json\"\n",
        );
        let defaults_only = load(
            &[("base.toml", "[server]\nlisten = \"127.0.0.1:1\"\n")],
            &[],
            None,
        )
        .unwrap();
        assert_eq!(defaults_only.server.drain_timeout, Duration::from_secs(30));
        assert_eq!(defaults_only.env, Env::Dev);

        let base = load(&[BASE, prod], &[], None).unwrap();
        assert_eq!(
            base.server.listen.port(),
            1000,
            "prod.toml applies only with APP_ENV=prod"
        );
        assert_eq!(base.server.drain_delay, Duration::from_secs(1));

        let env_file = load(&[BASE, prod], &[("APP_ENV", "prod")], None).unwrap();
        assert_eq!(
            (env_file.server.listen.port(), env_file.log.format),
            (2000, LogFormat::Json)
        );
        assert_eq!(
            env_file.server.drain_delay,
            Duration::from_secs(1),
            "base.toml still applies"
        );

        let vars = [
            ("APP_ENV", "prod"),
            ("APP__SERVER__LISTEN", "127.0.0.1:3000"),
            ("APP__LOG__LEVEL", "debug"),
        ];
        let env_var = load(&[BASE, prod], &vars, None).unwrap();
        assert_eq!(
            (env_var.server.listen.port(), env_var.log.level),
            (3000, LogLevel::Debug)
        );

        let limits = load(
            &[(
                "base.toml",
                "[server]\nlisten = \"127.0.0.1:1\"\nmax_connections = 100\n",
            )],
            &[("APP__SERVER__HEADER_READ_TIMEOUT", "2s")],
            None,
        )
        .unwrap();
        assert_eq!(limits.server.max_connections, 100, "a number in a file");
        assert_eq!(limits.server.header_read_timeout, Duration::from_secs(2));
        let from_env = load(&[BASE], &[("APP__SERVER__MAX_CONNECTIONS", "250")], None).unwrap();
        assert_eq!(
            from_env.server.max_connections, 250,
            "a string in a variable"
        );
        // (file, variable, workers)
        for (file, variable, expected) in [
            ("", None, WorkerCount::Auto),
            ("workers = 3\n", None, WorkerCount::Count(3)),
            ("workers = \"auto\"\n", None, WorkerCount::Auto),
            ("workers = 3\n", Some("auto"), WorkerCount::Auto),
            ("", Some(" 2 "), WorkerCount::Count(2)),
        ] {
            let vars: Vec<(&str, &str)> = variable
                .map(|value| ("APP__SERVER__WORKERS", value))
                .into_iter()
                .collect();
            let file = format!("[server]\nlisten = \"127.0.0.1:1\"\n{file}");
            let settings = load(&[("base.toml", &file)], &vars, None).unwrap();
            assert_eq!(settings.server.workers, expected, "{file:?} {variable:?}");
        }
        assert!(WorkerCount::Auto.resolve() >= 1);
        assert_eq!(WorkerCount::Count(5).resolve(), 5);

        let flag = load(&[BASE, prod], &vars, Some("127.0.0.1:4000")).unwrap();
        assert_eq!(flag.server.listen.port(), 4000);
        let base_toml = format!("{}", Path::new("base.toml").display());
        assert!(
            flag.sources
                .iter()
                .any(|source| source.ends_with(&base_toml))
        );
        assert!(flag.sources.ends_with(&[
            "APP__LOG__LEVEL".into(),
            "APP__SERVER__LISTEN".into(),
            "--listen".into()
        ]));
    }

    #[test]
    fn bad_configuration_names_the_key_and_its_source() {
        check_error(
            &[("base.toml", "[server]\n\nprot = 80\n")],
            &[],
            &["base.toml line 3", "unknown field `prot`"],
        );
        check_error(
            &[("base.toml", "[sever]\n")],
            &[],
            &["base.toml line 1", "unknown field `sever`"],
        );
        check_error(
            &[BASE, ("dev.toml", "[server]\ndrain_delay = \"soon\"\n")],
            &[],
            &["dev.toml line 2", "invalid duration \"soon\""],
        );
        check_error(
            &[BASE, ("dev.toml", "[server]\ndrain_delay = 5\n")],
            &[],
            &[
                "dev.toml line 2",
                "invalid duration 5: write it as a string with a unit, e.g. \"5s\"",
            ],
        );
        check_error(
            &[BASE],
            &[("APP__SERVER__DRAIN_TIMEOUT", "30")],
            &["APP__SERVER__DRAIN_TIMEOUT", "add a unit, e.g. 30s"],
        );
        check_error(
            &[BASE],
            &[("APP__SERVER__LISTEN", "localhost")],
            &["APP__SERVER__LISTEN", "is neither an address with a port"],
        );
        check_error(
            &[BASE],
            &[("APP__LOG__FORMAT", "xml")],
            &["APP__LOG__FORMAT", "unknown variant `xml`"],
        );
        check_error(
            &[BASE],
            &[("APP__SERVER__LSTEN", "x")],
            &["APP__SERVER__LSTEN", "unknown field `lsten`"],
        );
        check_error(
            &[BASE],
            &[("APP__LISTEN", "x")],
            &["APP__LISTEN: expected APP__<SECTION>__<KEY>"],
        );
        check_error(
            &[BASE],
            &[("APP_ENV", "qa")],
            &["APP_ENV=\"qa\"", "dev, staging or prod"],
        );
        check_error(
            &[BASE],
            &[("APP__SERVER__DRAIN_TIMEOUT", "0s")],
            &["server.drain_timeout is 0s"],
        );
        check_error(
            &[BASE],
            &[("APP__SERVER__UPGRADE_TIMEOUT", "0s")],
            &["server.upgrade_timeout is 0s", "e.g. 30s"],
        );
        check_error(
            &[BASE],
            &[("APP__SERVER__IDLE_TIMEOUT", "0s")],
            &["server.idle_timeout is 0s", "e.g. 75s"],
        );
        check_error(
            &[BASE],
            &[("APP__SERVER__REQUEST_TIMEOUT", "30s")],
            &[
                "server.request_timeout (30s) is not shorter than server.drain_timeout (30s)",
                "lower request_timeout or raise drain_timeout",
            ],
        );
        check_error(
            &[BASE],
            &[("APP__SERVER__MAX_CONNECTIONS", "many")],
            &["APP__SERVER__MAX_CONNECTIONS", "invalid count \"many\""],
        );
        check_error(
            &[("base.toml", "[server]\nmax_connections = -1\n")],
            &[],
            &["base.toml", "invalid count -1: it cannot be negative"],
        );
        check_error(
            &[BASE],
            &[("APP__SERVER__MAX_CONNECTIONS", "0")],
            &["server.max_connections is 0"],
        );
        check_error(
            &[BASE],
            &[("APP__SERVER__WORKERS", "all")],
            &[
                "APP__SERVER__WORKERS",
                "invalid worker count \"all\"",
                "\"auto\"",
            ],
        );
        check_error(
            &[("base.toml", "[server]\nworkers = -2\n")],
            &[],
            &[
                "base.toml",
                "invalid worker count -2: it cannot be negative",
            ],
        );
        check_error(
            &[BASE],
            &[("APP__SERVER__WORKERS", "0")],
            &["server.workers is 0", "\"auto\" (one per CPU)"],
        );
        check_error(
            &[],
            &[],
            &["base.toml", "every config directory needs a base.toml"],
        );
        check_error(
            &[("base.toml", "[admin]\ntoken = \"x\"\n")],
            &[],
            &["admin.token is a secret", "APP__ADMIN__TOKEN_FILE"],
        );
    }

    #[test]
    fn secrets_come_from_exactly_one_source() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\n").unwrap();
        let credentials = tempfile::tempdir().unwrap();
        std::fs::write(credentials.path().join("admin.token"), "from-credential").unwrap();
        let file = file.to_str().unwrap();
        let credentials = credentials.path().to_str().unwrap();

        let token = |vars: &[(&str, &str)]| {
            load(&[BASE], vars, None).map(|settings| {
                settings
                    .admin
                    .token
                    .map(|token| token.expose_secret().to_owned())
            })
        };
        assert_eq!(token(&[]), Ok(None));
        assert_eq!(
            token(&[("APP__ADMIN__TOKEN", "from-env")]),
            Ok(Some("from-env".into()))
        );
        assert_eq!(
            token(&[("APP__ADMIN__TOKEN_FILE", file)]),
            Ok(Some("from-file".into()))
        );
        assert_eq!(
            token(&[("CREDENTIALS_DIRECTORY", credentials)]),
            Ok(Some("from-credential".into()))
        );

        check_error(
            &[BASE],
            &[("APP__ADMIN__TOKEN", "a"), ("APP__ADMIN__TOKEN_FILE", file)],
            &["set by APP__ADMIN__TOKEN and APP__ADMIN__TOKEN_FILE"],
        );
        check_error(
            &[BASE],
            &[
                ("APP__ADMIN__TOKEN_FILE", file),
                ("CREDENTIALS_DIRECTORY", credentials),
            ],
            &["credential admin.token", "keep only one"],
        );
        check_error(
            &[BASE],
            &[("APP__ADMIN__TOKEN_FILE", "/nonexistent/token")],
            &[
                "admin.token: read APP__ADMIN__TOKEN_FILE=/nonexistent/token",
                "No such file",
            ],
        );
        check_error(
            &[BASE],
            &[("APP__ADMIN__TOKEN", "")],
            &["admin.token is set by APP__ADMIN__TOKEN but empty"],
        );
    }

    #[test]
    fn durations_parse_and_print() {
        let check =
            |text: &str, expected: Result<Duration, &str>| match (parse_duration(text), expected) {
                (Ok(actual), Ok(expected)) => {
                    assert_eq!(actual, expected, "{text}");
                    assert_eq!(parse_duration(&format_duration(actual)), Ok(actual));
                }
                (Err(actual), Err(expected)) => {
                    assert!(actual.contains(expected), "{text}: {actual}")
                }
                (actual, expected) => panic!("{text}: got {actual:?}, expected {expected:?}"),
            };
        check("250ms", Ok(Duration::from_millis(250)));
        check("5s", Ok(Duration::from_secs(5)));
        check("2m", Ok(Duration::from_secs(120)));
        check("1h", Ok(Duration::from_secs(3600)));
        check("0s", Ok(Duration::ZERO));
        check("5", Err("add a unit"));
        check("5d", Err("the unit must be ms, s, m or h"));
        check("-1s", Err("expected a whole number"));
        check("99999999999999999h", Err("too long"));
    }

    #[test]
    fn tokens_match_only_exactly() {
        let token = SecretString::from("s3cret-token");
        assert!(token_matches(&token, "s3cret-token"));
        for wrong in ["", "s3cret", "s3cret-token2", "S3cret-token"] {
            assert!(!token_matches(&token, wrong), "{wrong}");
        }
    }

    #[test]
    fn a_host_alone_keeps_the_port_of_the_layer_below_and_a_port_is_required() {
        let prod = ("prod.toml", "[server]\nlisten = \"0.0.0.0\"\n");
        let settings = load(&[BASE, prod], &[("APP_ENV", "prod")], None).unwrap();
        assert_eq!(settings.server.listen.to_string(), "0.0.0.0:1000");
        let settings = load(&[BASE], &[("APP__SERVER__LISTEN", "::1")], None).unwrap();
        assert_eq!(settings.server.listen.to_string(), "[::1]:1000");
        check_error(
            &[("base.toml", "[server]\nlisten = \"0.0.0.0\"\n")],
            &[],
            &["server.listen names no port", "base.toml"],
        );
        check_error(
            &[("base.toml", "[server]\nlisten = \"localhost\"\n")],
            &[],
            &[
                "base.toml line 2",
                "`localhost` is neither an address with a port",
            ],
        );
        // --listen names a port of its own.
        let flag = load(&[("base.toml", "")], &[], Some("127.0.0.1:0")).unwrap();
        assert_eq!(flag.server.listen.port(), 0);
    }

    #[test]
    fn shown_config_redacts_secrets() {
        let settings = load(&[BASE], &[("APP__ADMIN__TOKEN", "canary-7d1f")], None).unwrap();
        let shown = settings.to_redacted_toml();
        assert!(
            shown.contains("token = \"[redacted]\"") && !shown.contains("canary-7d1f"),
            "{shown}"
        );
        assert!(!format!("{settings:?}").contains("canary-7d1f"));
    }

    /// OpenTelemetry's variables set the `[tracing]` keys, between the
    /// files and `APP__*`, and are named among the sources.
    #[test]
    fn otel_variables_are_a_layer_under_app_variables() {
        let file = (
            "base.toml",
            "[server]\nlisten = \"127.0.0.1:1000\"\n[tracing]\nratio = 0.5\nservice_name = \"from-file\"\n",
        );
        let settings = load(
            &[file],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
                ("OTEL_SERVICE_NAME", "from-otel"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("APP__TRACING__RATIO", "0.1"),
            ],
            None,
        )
        .unwrap();
        let tracing = &settings.tracing;
        assert_eq!(tracing.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(tracing.service_name, "from-otel", "OTEL_* over the files");
        assert_eq!(tracing.sampler, Sampler::Traceidratio);
        assert_eq!(tracing.ratio, 0.1, "APP__* over OTEL_*");
        assert_eq!(tracing.batch_delay, Duration::from_millis(200));
        assert!(tracing.active());
        assert!(
            settings
                .sources
                .iter()
                .any(|source| source == "OTEL_SERVICE_NAME")
        );
        let specific = load(
            &[BASE],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://traces:4318/v1/spans",
                ),
            ],
            None,
        )
        .unwrap();
        assert_eq!(specific.tracing.endpoint, "http://traces:4318/v1/spans");
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let settings = load(
                &[BASE],
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                    off,
                ],
                None,
            )
            .unwrap();
            assert!(!settings.tracing.active(), "{off:?}");
        }
        let shown: toml::Table = toml::from_str(&settings.to_redacted_toml()).unwrap();
        assert_eq!(shown["tracing"]["sampler"].as_str(), Some("traceidratio"));
        assert_eq!(shown["tracing"]["ratio"].as_float(), Some(0.1));
        assert_eq!(shown["tracing"]["batch_delay"].as_str(), Some("200ms"));
    }

    #[test]
    fn bad_tracing_settings_are_refused_with_the_fix() {
        for (vars, expected) in [
            (
                &[("APP__TRACING__ENDPOINT", "https://collector:4318")][..],
                &[
                    "tracing.endpoint",
                    "not an http:// URL",
                    "collector on the host",
                ][..],
            ),
            (
                &[("OTEL_TRACES_SAMPLER_ARG", "1.5")],
                &["tracing.ratio is 1.5", "from 0.0"],
            ),
            (
                &[("OTEL_TRACES_SAMPLER_ARG", "half")],
                &["OTEL_TRACES_SAMPLER_ARG", "invalid ratio"],
            ),
            (
                &[("OTEL_TRACES_SAMPLER", "sometimes")],
                &["OTEL_TRACES_SAMPLER", "unknown variant"],
            ),
            (
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                &[
                    "OTEL_EXPORTER_OTLP_PROTOCOL=\"grpc\"",
                    "set it to http/json",
                ],
            ),
            (
                &[("OTEL_SDK_DISABLED", "yes")],
                &["OTEL_SDK_DISABLED", "true or false"],
            ),
            (
                &[("OTEL_TRACES_EXPORTER", "zipkin")],
                &["OTLP only", "otlp or none"],
            ),
            (
                &[("OTEL_BSP_SCHEDULE_DELAY", "1s")],
                &["OTEL_BSP_SCHEDULE_DELAY", "milliseconds"],
            ),
            (
                &[
                    ("APP__TRACING__BATCH_SIZE", "100"),
                    ("APP__TRACING__QUEUE_SIZE", "10"),
                ],
                &["tracing.batch_size (100) is larger than tracing.queue_size (10)"],
            ),
            (
                &[("APP__TRACING__QUEUE_SIZE", "0")],
                &["tracing.queue_size"],
            ),
            (
                &[("APP__TRACING__EXPORT_TIMEOUT", "0s")],
                &["tracing.export_timeout"],
            ),
            (
                &[("OTEL_RESOURCE_ATTRIBUTES", "novalue")],
                &["tracing.resource_attributes", "is not key=value"],
            ),
            (
                &[("APP__TRACING__ENABLED", "maybe")],
                &["APP__TRACING__ENABLED", "true or false"],
            ),
        ] {
            check_error(&[BASE], vars, expected);
        }
    }

    #[test]
    fn shown_config_is_toml_that_reads_back_as_the_settings() {
        let greeting = "Hi \"there\" \\ ünï\ttab";
        let settings = load(&[BASE], &[("APP__SERVICE__GREETING", greeting)], None).unwrap();
        let shown: toml::Table = toml::from_str(&settings.to_redacted_toml()).unwrap();
        assert_eq!(shown["service"]["greeting"].as_str(), Some(greeting));
        assert_eq!(
            shown["service"]["name"].as_str(),
            Some(settings.service.name.as_str())
        );
        assert_eq!(
            shown["server"]["max_connections"].as_integer(),
            Some(settings.server.max_connections as i64)
        );
        assert_eq!(
            shown["server"]["listen"].as_str(),
            Some(settings.server.listen.to_string().as_str())
        );
        assert_eq!(shown["server"]["workers"].as_str(), Some("auto"));
        let fixed = load(&[BASE], &[("APP__SERVER__WORKERS", "3")], None).unwrap();
        let shown_fixed: toml::Table = toml::from_str(&fixed.to_redacted_toml()).unwrap();
        assert_eq!(shown_fixed["server"]["workers"].as_integer(), Some(3));
        assert_eq!(shown["log"]["level"].as_str(), Some("info"));
        assert_eq!(shown["admin"]["token"].as_str(), Some("[not set]"));
        // Every duration reads back as the setting it shows.
        for key in [
            "drain_delay",
            "drain_timeout",
            "upgrade_timeout",
            "header_read_timeout",
            "idle_timeout",
            "request_timeout",
        ] {
            assert!(
                shown["server"][key]
                    .as_str()
                    .is_some_and(|value| value.ends_with('s')),
                "{key}"
            );
        }
    }

    /// A value other than `default` of what `declared` takes, as a
    /// variable spells it.
    fn sample(declared: &Declared, default: &toml::Value) -> String {
        match declared.takes {
            "a duration: 250ms, 5s, 2m, 1h" => "7s".to_owned(),
            "a whole number" | "\"auto\" or a whole number" => "7".to_owned(),
            "true or false" => (!default.as_bool().unwrap()).to_string(),
            "a number" => "0.5".to_owned(),
            "a string" => "sample".to_owned(),
            "an address with a port, or a host alone" => "127.0.0.2:7".to_owned(),
            names => names
                .split([',', ' '])
                .filter(|name| !name.is_empty() && *name != "or")
                .find(|name| Some(*name) != default.as_str())
                .unwrap_or_else(|| panic!("{}: no sample for {names:?}", declared.key))
                .to_owned(),
        }
    }

    fn shown_text(value: &toml::Value) -> String {
        match value {
            toml::Value::String(text) => text.clone(),
            other => toml_text(other),
        }
    }

    #[test]
    fn every_declared_setting_is_shown_and_set_by_its_file_and_its_variable() {
        let nothing: CheckOwn<'_> = &|_| Ok(());
        let defaults = Settings::defaults(Env::Dev);
        let shown: toml::Table = toml::from_str(&defaults.to_redacted_toml()).unwrap();
        for section in ["server", "log", "tracing"] {
            let declared: Vec<&str> = DECLARED
                .iter()
                .filter(|declared| declared.section == section)
                .map(|declared| declared.key)
                .collect();
            let printed: Vec<&str> = shown[section]
                .as_table()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut sorted = declared.clone();
            sorted.sort_unstable();
            assert_eq!(printed, sorted, "[{section}] shows what it declares");
        }
        for declared in DECLARED {
            let (section, key) = (declared.section, declared.key);
            assert!(!declared.description().is_empty(), "{key} has a doc");
            let default = &shown[section][key];
            let value = sample(declared, default);
            assert_ne!(
                shown_text(default),
                value,
                "{section}.{key}: the sample is new"
            );

            let mut by_variable = Settings::defaults(Env::Dev);
            let variable = declared.variable();
            by_variable
                .apply_env(&variable, section, key, &value, nothing)
                .unwrap_or_else(|err| panic!("{variable}={value}: {err:#}"));
            let shown_text_of = |settings: &Settings| {
                let table: toml::Table = toml::from_str(&settings.to_redacted_toml()).unwrap();
                table[section][key].clone()
            };
            let set = shown_text_of(&by_variable);
            assert_eq!(shown_text(&set), value, "{variable} sets {section}.{key}");

            let mut by_file = Settings::defaults(Env::Dev);
            let file = format!("[{section}]\n{key} = {}\n", toml_text(&set));
            by_file
                .apply_file(Path::new("base.toml"), &file, nothing)
                .unwrap_or_else(|err| panic!("{file}: {err:#}"));
            assert_eq!(shown_text_of(&by_file), set, "{file}");
        }
        // Each OpenTelemetry variable sets a declared key of [tracing].
        for (name, key) in OTEL_VARIABLES {
            assert!(
                key.is_empty()
                    || DECLARED
                        .iter()
                        .any(|declared| declared.section == "tracing" && declared.key == key),
                "{name} sets tracing.{key}, which is not declared"
            );
        }
    }
}
