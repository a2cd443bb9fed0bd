//! What the platform's routes and the request layer share, and the one JSON
//! error shape they answer with.

use std::sync::Arc;

use axum::body::Bytes;
use serde::Serialize;

use crate::config::Settings;
use crate::lifecycle::{Lifecycle, State};
use crate::metrics::Metrics;
use crate::otlp::Exporter;

/// What every handler shares: one `Arc`, so that the per-request clone the
/// middleware makes is a single reference count.
pub type AppState = Arc<Shared>;

pub struct Shared {
    pub settings: Arc<Settings>,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: Arc<Metrics>,
    /// The span export; `None` with tracing off.
    pub traces: Option<Arc<Exporter>>,
    /// The answer of `GET /healthz`, with the pid, which tells the processes
    /// apart across upgrades.
    pub health: Bytes,
    /// The business part's readiness checks.
    pub checks: Arc<ReadinessChecks>,
}

/// The business part's readiness checks, by name, in the order added
/// (`Setup::readiness`).
#[derive(Default)]
pub struct ReadinessChecks(Vec<(String, Box<dyn Fn() -> bool + Send + Sync>)>);

impl ReadinessChecks {
    /// Adds a check; its name is lowercase letters, digits and `_`, not
    /// `lifecycle` (the platform's own) and not one added before.
    pub fn add(
        &mut self,
        name: &str,
        check: Box<dyn Fn() -> bool + Send + Sync>,
    ) -> Result<(), String> {
        let well_formed = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
        if !well_formed {
            return Err(format!(
                "readiness check {name:?}: a name is 1 to 64 lowercase letters, digits and `_`, e.g. \"database\""
            ));
        }
        if name == "lifecycle" || self.0.iter().any(|(known, _)| known == name) {
            return Err(format!(
                "readiness check {name:?} is there already: give each check its own name"
            ));
        }
        self.0.push((name.to_owned(), check));
        Ok(())
    }

    /// Each check's name and whether it passes now.
    pub fn results(&self) -> Vec<(&str, bool)> {
        self.0
            .iter()
            .map(|(name, check)| (name.as_str(), check()))
            .collect()
    }
}

impl Shared {
    /// Ready: the lifecycle is, and every business check passes.
    pub fn is_ready(&self) -> bool {
        self.lifecycle.state() == State::Ready && self.checks.results().iter().all(|(_, ok)| *ok)
    }
}

impl Shared {
    /// Without tracing, for tests of the layer.
    pub fn new(
        settings: Arc<Settings>,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
    ) -> AppState {
        Shared::traced(settings, lifecycle, metrics, None, Arc::default())
    }

    /// With the span export, when tracing is on, and the business part's
    /// readiness checks.
    pub fn traced(
        settings: Arc<Settings>,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
        traces: Option<Arc<Exporter>>,
        checks: Arc<ReadinessChecks>,
    ) -> AppState {
        Arc::new(Shared {
            settings,
            lifecycle,
            metrics,
            traces,
            checks,
            health: format!("{{\"pid\":{},\"status\":\"ok\"}}", std::process::id()).into(),
        })
    }
}

/// `{"error": "..."}`. The JSON bodies are structs rather than `json!`
/// values, which would bring `serde_json::Value` and its map into the binary
/// for these few answers.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
}
