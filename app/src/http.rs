//! The HTTP surface: the business routes (`GET /`, `POST /greet`), the
//! operational ones (`/healthz`, `/readyz`, `/metrics`, `/version`,
//! `/admin/config`), and the middleware every request passes through
//! (request id, metrics, one log line).

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::build_info::BUILD_INFO;
use crate::config::{Settings, token_matches};
use crate::lifecycle::Lifecycle;
use crate::metrics::{HttpLabels, Metrics, intern_route};

const REQUEST_ID: &str = "x-request-id";

/// What every handler shares: one `Arc`, so that the per-request clone the
/// middleware makes is a single reference count.
pub type AppState = Arc<Shared>;

pub struct Shared {
    pub settings: Arc<Settings>,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: Arc<Metrics>,
    /// The answer of `GET /`, which depends only on settings.
    greeting: Greeting,
    /// The answer of `GET /healthz`, with the pid, which tells the processes
    /// apart across upgrades.
    health: axum::body::Bytes,
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
        Arc::new(Shared {
            settings,
            lifecycle,
            metrics,
            greeting,
            health: json!({"status": "ok", "pid": std::process::id()})
                .to_string()
                .into(),
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
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn greeting(State(state): State<AppState>) -> Response {
    Json(&state.greeting).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GreetRequest {
    name: String,
}

#[derive(Serialize)]
struct GreetResponse {
    message: String,
}

async fn greet(State(state): State<AppState>, Json(request): Json<GreetRequest>) -> Response {
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        let error = json!({"error": "name must be 1 to 100 characters"});
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(error)).into_response();
    }
    let message = format!("{}, {name}!", state.settings.service.greeting);
    Json(GreetResponse { message }).into_response()
}

/// Liveness: the process can answer. It checks nothing else, so that a slow
/// dependency never gets a healthy process restarted.
async fn healthz(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.health.clone(),
    )
        .into_response()
}

/// Readiness: 200 while the lifecycle is ready; 503 from the moment a stop
/// begins, naming the check that failed.
async fn readyz(State(state): State<AppState>) -> Response {
    let lifecycle = state.lifecycle.state();
    let checks = json!({"lifecycle": lifecycle.name()});
    if state.lifecycle.is_ready() {
        Json(json!({"ready": true, "checks": checks})).into_response()
    } else {
        let body = json!({"ready": false, "failed": ["lifecycle"], "checks": checks});
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

async fn version() -> Json<crate::build_info::BuildInfo> {
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

/// Decrements the in-flight gauge even when the client goes away and the
/// request future is dropped.
struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight().dec();
    }
}

async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| intern_route(path.as_str()));
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .filter(|value| is_acceptable_request_id(value))
        .cloned()
        .unwrap_or_else(new_request_id);

    state.metrics.in_flight().inc();
    let in_flight = InFlight(&state.metrics);
    let mut response = next.run(request).await;
    drop(in_flight);

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.observe(
        &HttpLabels {
            method,
            route,
            status,
        },
        elapsed,
    );
    tracing::info!(
        target: concat!(env!("CARGO_CRATE_NAME"), "::request"),
        method,
        route,
        status,
        latency_ms = elapsed.as_micros() as f64 / 1_000.0,
        request_id = request_id.to_str().unwrap_or_default(),
    );
    let headers = response.headers_mut();
    headers.insert(REQUEST_ID, request_id);
    if !state.lifecycle.is_ready() {
        // While draining, ask keep-alive clients to reconnect, which takes
        // them to an instance that is still ready.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// A caller's request id is kept if it is short and printable, so it can go
/// into logs as it is.
fn is_acceptable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic)
}

/// 32 hex digits: a per-process random prefix and a counter, unique without
/// a random number generator per request.
fn new_request_id() -> HeaderValue {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{prefix:016x}{count:016x}"))
        .expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_callers_are_kept_only_when_printable_and_short() {
        let check = |value: &[u8], expected: bool| {
            let value = HeaderValue::from_bytes(value).unwrap();
            assert_eq!(is_acceptable_request_id(&value), expected, "{value:?}");
        };
        check(b"abc-123", true);
        check(&[b'a'; 128], true);
        check(&[b'a'; 129], false);
        check(b"has space", false);
        check(b"", false);
    }

    #[test]
    fn generated_request_ids_are_unique() {
        let first = new_request_id();
        let second = new_request_id();
        assert_ne!(first, second);
        assert_eq!(first.len(), 32);
    }
}
