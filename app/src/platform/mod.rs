//! The platform: everything a service built from this template keeps and
//! takes updates of (connections and their limits, workers, lifecycle,
//! zero-downtime upgrades, systemd, logs, metrics, configuration, the musl
//! allocator cache and `memcpy`).
//!
//! This file is also the whole surface the business part (`src/service/`)
//! sees, and `cargo xtask lint` holds it to that:
//! - [`Service`]: what the business part implements: its settings (the keys
//!   of `[service]` but `name`), how it starts, and its routes;
//! - [`Setup`]: what it gets at start: the service's name and version, and
//!   the metrics registry its own metrics join;
//! - [`main`]: the command line, configuration, logging and the server,
//!   for `src/main.rs` to call with the business part.
//!
//! Logs are `tracing`'s macros (`tracing::info!`), written by the platform's
//! logger; routes are plain axum `Router`s; metrics are `prometheus-client`
//! types.

pub mod build_info;
pub mod cli;
pub mod config;
pub mod connections;
pub mod http;
pub mod lifecycle;
pub mod logging;
#[cfg(all(target_arch = "x86_64", target_env = "musl"))]
pub mod memcpy;
pub mod metrics;
pub mod observe;
pub mod otlp;
pub mod server;
pub mod state;
pub mod systemd;
#[cfg(target_env = "musl")]
pub mod thread_cache;
pub mod traces;
pub mod upgrade;
pub mod workers;

use std::process::ExitCode;
use std::sync::Arc;

/// The router the business part builds: axum's, typed with the platform's
/// state, which its handlers do not see (they capture their own).
pub type Router = axum::Router<state::AppState>;
use serde::Serialize;
use serde::de::DeserializeOwned;

use build_info::{BINARY, BUILD_INFO};
use cli::Command;
use config::{Environment, Overrides, Settings};
use metrics::Metrics;

/// musl's allocator takes a process-wide lock per call; the shipped (musl)
/// builds put a per-thread cache in front of it (`thread_cache`).
#[cfg(all(target_env = "musl", not(test)))]
#[global_allocator]
static ALLOCATOR: thread_cache::ThreadCached = thread_cache::ThreadCached;

const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_CONFIG: u8 = 3;
const EXIT_LISTEN: u8 = 4;

/// The business part of the service, as the platform runs it.
pub trait Service: Sized + Send + Sync + 'static {
    /// The keys of `[service]` other than `name`, from the config files and
    /// `APP__SERVICE__<KEY>`. Give it `#[serde(default, deny_unknown_fields)]`:
    /// each layer is checked on its own, so a misspelt key is an error that
    /// names its file or variable.
    type Settings: DeserializeOwned + Serialize;

    /// Starts the business part once, before the port is bound: check the
    /// settings beyond their types (`Err` names the key and says how to fix
    /// it; the process exits 3, as for any configuration error), and
    /// register metrics.
    fn new(settings: Self::Settings, setup: &mut Setup<'_>) -> Result<Self, String>;

    /// The business routes, made once per worker. They sit beside the
    /// platform's (a clash panics at start) behind the same request layer:
    /// request ids, timeouts, metrics and the request log. Give each worker
    /// its own copy of what a request touches (an `Arc` made here, not a
    /// clone of `self`): a reference count shared by every worker moves its
    /// cache line between CPUs on each request. Handlers capture that state
    /// (as `service/` does), or take it as `State` from an
    /// `axum::Router::new()` that ends with `.with_state(...)`, which costs
    /// the binary a second copy of axum's routing (15 KB).
    fn routes(self: &Arc<Self>) -> Router;
}

/// What the business part is given at start. (A business part need not use
/// all of it, hence no dead-code warnings here.)
#[allow(dead_code)]
pub struct Setup<'a> {
    name: &'a str,
    metrics: &'a mut Metrics,
}

#[allow(dead_code)]
impl Setup<'_> {
    /// `service.name`: the binary's name unless configured.
    pub fn service_name(&self) -> &str {
        self.name
    }

    /// The version the build was stamped with.
    pub fn version(&self) -> &'static str {
        BUILD_INFO.version
    }

    /// Adds a metric to `/metrics`, e.g. a `prometheus_client` `Counter`
    /// (shown as `<name>_total`) or a `Family` of them.
    pub fn register(
        &mut self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.metrics.register(name, help, metric);
    }
}

/// The whole program: `src/main.rs` calls this with the business part.
pub fn main<S: Service>() -> ExitCode {
    build_info::keep_dependency_list();
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(err) => {
            return fail(
                EXIT_USAGE,
                &anyhow::anyhow!("{err}: run `{BINARY} --help` for usage"),
            );
        }
    };
    match command {
        Command::Help => println!("{}", cli::USAGE),
        Command::Version { json: false } => println!("{}", BUILD_INFO.version_line(BINARY)),
        Command::Version { json: true } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&BUILD_INFO).expect("the stamp serializes")
            );
        }
        Command::ConfigCheck(overrides) => match load::<S>(&overrides) {
            Ok((settings, _, _)) => println!(
                "config ok: APP_ENV={}, from {}",
                settings.env.name(),
                settings.sources.join(", ")
            ),
            Err(err) => return fail(EXIT_CONFIG, &err),
        },
        Command::ConfigShow(overrides) => match load::<S>(&overrides) {
            Ok((settings, _, _)) => print!("{}", settings.to_redacted_toml()),
            Err(err) => return fail(EXIT_CONFIG, &err),
        },
        Command::Serve(overrides) => {
            let (settings, metrics, service) = match load::<S>(&overrides) {
                Ok(loaded) => loaded,
                Err(err) => return fail(EXIT_CONFIG, &err),
            };
            logging::init(&settings.log);
            let outcome = server::run(settings, metrics, move || service.routes());
            logging::flush();
            return match outcome {
                Ok(()) => ExitCode::SUCCESS,
                Err(server::ServeError::Listen(err)) => fail(EXIT_LISTEN, &err),
                Err(server::ServeError::Runtime(err)) => fail(EXIT_RUNTIME, &err),
            };
        }
    }
    ExitCode::SUCCESS
}

/// The settings, checked whole (the business part's by starting it), and
/// the metrics registry the business part registered with.
fn load<S: Service>(overrides: &Overrides) -> anyhow::Result<(Settings, Metrics, Arc<S>)> {
    let environment = Environment::capture()?;
    let mut settings = Settings::load(overrides, &environment, check_layer::<S>)?;
    let own: S::Settings = toml::Value::Table(std::mem::take(&mut settings.service.own))
        .try_into()
        .map_err(|err| anyhow::anyhow!("[service] {}", err.message().trim()))?;
    settings.service.own = effective(&own);
    let (metrics, service) =
        start(own, &settings.service.name).map_err(|err| anyhow::anyhow!("service.{err}"))?;
    Ok((settings, metrics, service))
}

/// Starts the business part with its settings, and the metrics registry it
/// registered with.
fn start<S: Service>(settings: S::Settings, name: &str) -> Result<(Metrics, Arc<S>), String> {
    let mut metrics = Metrics::new(&BUILD_INFO);
    let mut setup = Setup {
        name,
        metrics: &mut metrics,
    };
    let service = S::new(settings, &mut setup)?;
    Ok((metrics, Arc::new(service)))
}

/// The business part started as `main` starts it, for its own tests.
#[cfg(test)]
pub struct Started<S> {
    pub service: Arc<S>,
    metrics: Metrics,
}

#[cfg(test)]
impl<S: Service> Started<S> {
    /// Starts `S` with `settings`, as `main` would.
    pub fn new(settings: S::Settings) -> Result<Started<S>, String> {
        let (metrics, service) = start(settings, BINARY)?;
        Ok(Started { service, metrics })
    }

    /// The routes behind the platform's own, as a worker serves them.
    pub fn router(&self) -> axum::Router {
        let lifecycle = Arc::new(lifecycle::Lifecycle::default());
        let settings = Arc::new(test_settings());
        let state = state::Shared::new(settings, lifecycle, Arc::new(Metrics::new(&BUILD_INFO)));
        http::router(state, self.service.routes())
    }

    /// What `/metrics` would show of the business part's metrics.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }
}

/// The settings of `config/` with no environment, for tests.
#[cfg(test)]
pub fn test_settings() -> Settings {
    let overrides = Overrides {
        config_dir: Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")),
        listen: None,
    };
    Settings::load(&overrides, &Environment::default(), |_| Ok(())).expect("config/ loads")
}

/// One layer's keys of `[service]`, read as the business part's settings.
fn check_layer<S: Service>(table: &toml::Table) -> Result<(), String> {
    toml::Value::Table(table.clone())
        .try_into::<S::Settings>()
        .map(drop)
        .map_err(|err| err.message().trim().to_owned())
}

/// The business part's settings with their effective values, for `config
/// show` and `/admin/config`.
fn effective<T: Serialize>(settings: &T) -> toml::Table {
    match toml::Value::try_from(settings) {
        Ok(toml::Value::Table(table)) => table,
        _ => toml::Table::new(),
    }
}

/// Prints one line, `error: <what failed>: <cause>`, and returns the code.
fn fail(code: u8, err: &anyhow::Error) -> ExitCode {
    let message = format!("{err:#}");
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("error: {line}");
    // A process started by an upgrade: the old one says why in its log.
    upgrade::report_failure(code, &line);
    ExitCode::from(code)
}
