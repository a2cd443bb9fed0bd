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
//!   for `src/main.rs` to call with the business part and its [`package!`];
//! - [`Started`]: the business part started as `main` starts it, for its
//!   own tests.
//!
//! Logs are `tracing`'s macros (`tracing::info!`), written by the platform's
//! logger; routes are axum's method routers (`get(handler)`) on paths of a
//! [`Router`] of the platform's; metrics are `prometheus-client` types.

#![deny(missing_docs)]

// The modules below are the platform's inside: public so that the
// template's own allocation test (`app/src/allocations.rs`) can assemble
// the request path piece by piece, hidden from the documentation, and
// under no compatibility promise. The business part uses the items of
// this file only (`cargo xtask lint` checks it).
#[doc(hidden)]
pub mod build_info;
#[doc(hidden)]
pub mod cli;
#[doc(hidden)]
pub use platform_config as config;
#[doc(hidden)]
pub mod connections;
pub mod fuzz;
#[doc(hidden)]
pub mod http;
#[doc(hidden)]
pub mod lifecycle;
#[doc(hidden)]
pub mod logging;
#[cfg(all(target_arch = "x86_64", target_env = "musl"))]
#[doc(hidden)]
pub mod memcpy;
#[doc(hidden)]
pub mod metrics;
#[doc(hidden)]
pub mod observe;
#[doc(hidden)]
pub mod otlp;
#[doc(hidden)]
pub mod server;
#[doc(hidden)]
pub mod state;
#[doc(hidden)]
pub mod systemd;
#[cfg(target_env = "musl")]
#[doc(hidden)]
pub mod thread_cache;
#[doc(hidden)]
pub mod traces;
#[doc(hidden)]
pub mod upgrade;
#[doc(hidden)]
pub mod workers;

pub use build_info::{BuildInfo, Package};

use std::process::ExitCode;
use std::sync::Arc;

pub use http::Router;
use serde::Serialize;
use serde::de::DeserializeOwned;

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
    checks: &'a mut state::ReadinessChecks,
}

#[allow(dead_code)]
impl Setup<'_> {
    /// `service.name`: the binary's name unless configured.
    pub fn service_name(&self) -> &str {
        self.name
    }

    /// The version the build was stamped with.
    pub fn version(&self) -> &'static str {
        build_info::get().version
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

    /// Adds a readiness check: while `check` answers false, `/readyz`
    /// answers 503 naming it (`"failed": ["<name>"]`) and `app_ready` is 0,
    /// so that no traffic is sent here, though the process stays alive
    /// (`/healthz` never checks it). It runs on every `/readyz` and scrape:
    /// read state the service keeps (an `AtomicBool` its connection task
    /// sets), never wait on I/O. A name is lowercase letters, digits and
    /// `_`; `Err` says what is wrong with it (return it from `new`).
    pub fn readiness(
        &mut self,
        name: &str,
        check: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Result<(), String> {
        self.checks.add(name, Box::new(check))
    }
}

/// The whole program: `src/main.rs` calls this with the business part and
/// its package (`platform::main::<Greeter>(platform::package!())`).
pub fn main<S: Service>(package: Package) -> ExitCode {
    run(package, &Typed::<S>(std::marker::PhantomData))
}

/// What the program needs of the business part, behind a `dyn`: generic,
/// the whole program would be compiled in the service's crate, beside the
/// platform's own copies of what it calls (tens of KB of the binary).
trait Business {
    /// One layer's keys of `[service]`, read as the business part's
    /// settings.
    fn check_layer(&self, table: &toml::Table) -> Result<(), String>;

    /// Starts the business part, named `name`, with its keys of
    /// `[service]`.
    fn start(&self, table: toml::Table, name: &str) -> anyhow::Result<Running>;
}

/// A started business part, as the program keeps it: the effective values
/// of its settings, what makes its routes, and the metrics and readiness
/// checks it registered.
struct Running {
    effective: toml::Table,
    routes: Box<dyn Fn() -> Router + Send + Sync>,
    metrics: Metrics,
    checks: Arc<state::ReadinessChecks>,
}

struct Typed<S>(std::marker::PhantomData<fn() -> S>);

impl<S: Service> Business for Typed<S> {
    fn check_layer(&self, table: &toml::Table) -> Result<(), String> {
        toml::Value::Table(table.clone())
            .try_into::<S::Settings>()
            .map(drop)
            .map_err(|err| err.message().trim().to_owned())
    }

    fn start(&self, table: toml::Table, name: &str) -> anyhow::Result<Running> {
        let own: S::Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|err| anyhow::anyhow!("[service] {}", err.message().trim()))?;
        let effective = effective(&own);
        let (metrics, checks, service) =
            start::<S>(own, name).map_err(|err| anyhow::anyhow!("service.{err}"))?;
        Ok(Running {
            effective,
            routes: Box::new(move || service.routes()),
            metrics,
            checks: Arc::new(checks),
        })
    }
}

fn run(package: Package, business: &dyn Business) -> ExitCode {
    build_info::set_package(package);
    build_info::keep_dependency_list();
    let binary = build_info::binary();
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(err) => {
            return fail(
                EXIT_USAGE,
                &anyhow::anyhow!("{err}: run `{binary} --help` for usage"),
            );
        }
    };
    match command {
        Command::Help => println!("{}", cli::usage()),
        Command::Version { json: false } => println!("{}", build_info::get().version_line(binary)),
        Command::Version { json: true } => {
            println!(
                "{}",
                serde_json::to_string_pretty(build_info::get()).expect("the stamp serializes")
            );
        }
        Command::ConfigCheck(overrides) => match load(&overrides, business) {
            Ok((settings, _)) => println!(
                "config ok: APP_ENV={}, from {}",
                settings.env.name(),
                settings.sources.join(", ")
            ),
            Err(err) => return fail(EXIT_CONFIG, &err),
        },
        Command::ConfigShow(overrides) => match load(&overrides, business) {
            Ok((settings, _)) => print!("{}", settings.to_redacted_toml()),
            Err(err) => return fail(EXIT_CONFIG, &err),
        },
        Command::Serve(overrides) => {
            let (settings, running) = match load(&overrides, business) {
                Ok(loaded) => loaded,
                Err(err) => return fail(EXIT_CONFIG, &err),
            };
            logging::init(&settings.log);
            let outcome = server::run(settings, running.metrics, running.checks, &*running.routes);
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
/// the started business part.
fn load(overrides: &Overrides, business: &dyn Business) -> anyhow::Result<(Settings, Running)> {
    let environment = Environment::capture()?;
    let mut settings = Settings::load(overrides, &environment, &|table| {
        business.check_layer(table)
    })?;
    let own = std::mem::take(&mut settings.service.own);
    let mut running = business.start(own, &settings.service.name)?;
    settings.service.own = std::mem::take(&mut running.effective);
    Ok((settings, running))
}

/// Starts the business part with its settings: it, and the metrics and
/// readiness checks it registered (for `main` and for `Started`).
fn start<S: Service>(
    settings: S::Settings,
    name: &str,
) -> Result<(Metrics, state::ReadinessChecks, Arc<S>), String> {
    let mut metrics = Metrics::new(build_info::get());
    let mut checks = state::ReadinessChecks::default();
    let mut setup = Setup {
        name,
        metrics: &mut metrics,
        checks: &mut checks,
    };
    let service = S::new(settings, &mut setup)?;
    Ok((metrics, checks, Arc::new(service)))
}

/// The business part started as `main` starts it, for its own tests.
pub struct Started<S> {
    /// The business part, as `Service::new` returned it.
    pub service: Arc<S>,
    metrics: Metrics,
    checks: Arc<state::ReadinessChecks>,
}

impl<S: Service> Started<S> {
    /// Starts `S` with `settings`, as `main` would, as the service's crate
    /// `package` describes it: `platform::package!()` in the service's
    /// tests, so that its name and version are the service's own.
    pub fn new(package: Package, settings: S::Settings) -> Result<Started<S>, String> {
        build_info::set_package(package);
        let (metrics, checks, service) = start(settings, build_info::binary())?;
        Ok(Started {
            service,
            metrics,
            checks: Arc::new(checks),
        })
    }

    /// The routes behind the platform's own, as a worker serves them once
    /// the service is ready (its readiness checks still decide `/readyz`).
    pub fn router(&self) -> axum::Router {
        let lifecycle = Arc::new(lifecycle::Lifecycle::default());
        lifecycle.advance(lifecycle::State::Ready);
        // The built-in defaults: the router does not depend on which
        // config files the service ships.
        let settings = Arc::new(Settings::defaults(config::Env::Dev));
        let state = state::Shared::traced(
            settings,
            lifecycle,
            Arc::new(Metrics::new(build_info::get())),
            None,
            self.checks.clone(),
        );
        http::router(state, self.service.routes())
    }

    /// What `/metrics` would show of the business part's metrics.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode()
    }
}

/// The settings of the template's `config/` with no environment, for the
/// platform's own tests.
#[cfg(test)]
pub fn test_settings() -> Settings {
    let overrides = Overrides {
        config_dir: Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")),
        listen: None,
    };
    Settings::load(&overrides, &Environment::default(), &|_| Ok(())).expect("config/ loads")
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    /// A business part with a readiness check of its own and a layer of
    /// its own in front of its route.
    struct Warming {
        warm: Arc<AtomicBool>,
    }

    impl Service for Warming {
        type Settings = ();

        fn new(_: (), setup: &mut Setup<'_>) -> Result<Warming, String> {
            let warm = Arc::new(AtomicBool::new(false));
            let reads = warm.clone();
            setup.readiness("cache_warm", move || reads.load(Ordering::Relaxed))?;
            assert!(setup.readiness("cache_warm", || true).is_err());
            assert!(setup.readiness("Cache Warm", || true).is_err());
            assert!(setup.readiness("lifecycle", || true).is_err());
            Ok(Warming { warm })
        }

        fn routes(self: &Arc<Self>) -> Router {
            let stamp = axum::middleware::map_response(
                |mut response: axum::response::Response| async move {
                    response
                        .headers_mut()
                        .insert("x-business", axum::http::HeaderValue::from_static("yes"));
                    response
                },
            );
            Router::new()
                .route("/work", axum::routing::get(|| async { "done" }))
                .layer(stamp)
        }
    }

    async fn get(router: &axum::Router, path: &str) -> (StatusCode, String, bool) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let stamped = response.headers().contains_key("x-business");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap(), stamped)
    }

    #[tokio::test]
    async fn a_business_readiness_check_and_layer_join_the_platforms() {
        let started = Started::<Warming>::new(build_info::unstamped(), ()).unwrap();
        let router = started.router();
        let (status, body, _) = get(&router, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(
            body,
            r#"{"checks":{"lifecycle":"ready","cache_warm":"failing"},"failed":["cache_warm"],"ready":false}"#
        );
        started.service.warm.store(true, Ordering::Relaxed);
        let (status, body, _) = get(&router, "/readyz").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body,
            r#"{"checks":{"lifecycle":"ready","cache_warm":"ok"},"ready":true}"#
        );
        assert_eq!(
            get(&router, "/work").await,
            (StatusCode::OK, "done".to_owned(), true)
        );
        let (status, _, stamped) = get(&router, "/healthz").await;
        assert!(
            status == StatusCode::OK && !stamped,
            "the platform's routes are not behind it"
        );
    }
}
