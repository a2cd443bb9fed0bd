//! The HTTP surface: the business routes (`GET /`, `POST /greet`), the
//! operational ones (`/healthz`, `/readyz`, `/metrics`, `/version`,
//! `/admin/config`). Every request passes through `observe` first.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::platform::build_info::BUILD_INFO;
use crate::platform::config::{Settings, token_matches};
use crate::platform::lifecycle::{Lifecycle, State as LifecycleState};
use crate::platform::metrics::Metrics;
use crate::platform::observe::ObserveLayer;

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// What every handler shares: one `Arc`, so that the per-request clone the
/// middleware makes is a single reference count.
pub type AppState = Arc<Shared>;

pub struct Shared {
    pub settings: Arc<Settings>,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: Arc<Metrics>,
    /// The answer of `GET /`, which depends only on settings, serialized
    /// once.
    greeting: Bytes,
    /// The answer of `GET /healthz`, with the pid, which tells the processes
    /// apart across upgrades.
    health: Bytes,
}

#[derive(Serialize)]
struct Greeting {
    service: String,
    version: &'static str,
    message: String,
}

impl Shared {
    pub fn new(
        settings: Arc<Settings>,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
    ) -> AppState {
        let service = &settings.service;
        let greeting = Greeting {
            service: service.name.clone(),
            version: BUILD_INFO.version,
            message: format!("{} from {}", service.greeting, service.name),
        };
        let greeting = serde_json::to_vec(&greeting)
            .expect("the greeting serializes")
            .into();
        Arc::new(Shared {
            settings,
            lifecycle,
            metrics,
            greeting,
            health: format!("{{\"pid\":{},\"status\":\"ok\"}}", std::process::id()).into(),
        })
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(greeting))
        .route("/greet", post(greet))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/version", get(version))
        .route("/admin/config", get(admin_config))
        .layer(ObserveLayer::new(state.clone()))
        .with_state(state)
}

async fn greeting(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, JSON)], state.greeting.clone()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GreetRequest {
    name: String,
}

/// `{"error": "..."}`. The JSON bodies are structs rather than `json!`
/// values, which would bring `serde_json::Value` and its map into the binary
/// for these few answers.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
}

/// What `/readyz` answers; keys in alphabetical order, as before.
#[derive(Serialize)]
struct Readiness {
    checks: Checks,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<[&'static str; 1]>,
    ready: bool,
}

#[derive(Serialize)]
struct Checks {
    lifecycle: &'static str,
}

#[derive(Serialize)]
struct GreetResponse {
    message: String,
}

async fn greet(State(state): State<AppState>, Json(request): Json<GreetRequest>) -> Response {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        let error = ErrorBody {
            error: "name must be 1 to 100 characters",
        };
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(error)).into_response();
    }
    let message = format!("{}, {name}!", state.settings.service.greeting);
    Json(GreetResponse { message }).into_response()
}

/// Liveness: the process can answer. It checks nothing else, so that a slow
/// dependency never gets a healthy process restarted.
async fn healthz(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, JSON)], state.health.clone()).into_response()
}

/// Readiness: 200 while the lifecycle is ready; 503 from the moment a stop
/// begins, naming the check that failed.
async fn readyz(State(state): State<AppState>) -> Response {
    // One read of the state, so that the status and the body agree.
    let lifecycle = state.lifecycle.state();
    let ready = lifecycle == LifecycleState::Ready;
    let body = Readiness {
        checks: Checks {
            lifecycle: lifecycle.name(),
        },
        failed: (!ready).then_some(["lifecycle"]),
        ready,
    };
    if ready {
        Json(body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .ready()
        .set(i64::from(state.lifecycle.is_ready()));
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        [(header::CONTENT_TYPE, content_type)],
        state.metrics.encode(),
    )
        .into_response()
}

async fn version() -> Json<crate::platform::build_info::BuildInfo> {
    Json(BUILD_INFO)
}

/// The effective settings, secrets redacted. Needs the admin token; without
/// one configured, the route does not exist.
async fn admin_config(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(expected) = &state.settings.admin.token else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if token_matches(expected, token) => {
            state.settings.to_redacted_toml().into_response()
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response(),
    }
}
