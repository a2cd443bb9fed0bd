//! What the platform's routes and the request layer share, and the one JSON
//! error shape they answer with.

use std::sync::Arc;

use axum::body::Bytes;
use serde::Serialize;

use crate::platform::config::Settings;
use crate::platform::lifecycle::Lifecycle;
use crate::platform::metrics::Metrics;

/// What every handler shares: one `Arc`, so that the per-request clone the
/// middleware makes is a single reference count.
pub type AppState = Arc<Shared>;

pub struct Shared {
    pub settings: Arc<Settings>,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: Arc<Metrics>,
    /// The answer of `GET /healthz`, with the pid, which tells the processes
    /// apart across upgrades.
    pub health: Bytes,
}

impl Shared {
    pub fn new(
        settings: Arc<Settings>,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
    ) -> AppState {
        Arc::new(Shared {
            settings,
            lifecycle,
            metrics,
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
