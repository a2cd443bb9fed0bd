//! What the platform's routes and the request layer share, and the one JSON
//! error shape they answer with.

use std::sync::Arc;

use axum::body::Bytes;
use serde::Serialize;

use crate::config::Settings;
use crate::lifecycle::Lifecycle;
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
}

impl Shared {
    /// Without tracing, for tests of the layer.
    pub fn new(
        settings: Arc<Settings>,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
    ) -> AppState {
        Shared::traced(settings, lifecycle, metrics, None)
    }

    pub fn traced(
        settings: Arc<Settings>,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
        traces: Option<Arc<Exporter>>,
    ) -> AppState {
        Arc::new(Shared {
            settings,
            lifecycle,
            metrics,
            traces,
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
