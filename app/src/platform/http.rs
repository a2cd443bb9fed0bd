//! The platform's HTTP routes (`/healthz`, `/readyz`, `/metrics`,
//! `/version`, `/admin/config`) and the router that joins them to the
//! business part's. Every request passes through `observe` first.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::platform::build_info::BUILD_INFO;
use crate::platform::config::token_matches;
use crate::platform::lifecycle::State as LifecycleState;
use crate::platform::observe::ObserveLayer;
use crate::platform::state::AppState;

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The operational routes, then the business part's, all behind `observe`.
/// A business route on a path of the platform's panics here, at start.
/// The business routes come typed with the platform's state (which their
/// handlers never see), so that one router holds every route and axum's
/// routing is in the binary once, as it was before the split: two routers
/// merged cost 10 KB and a few per cent of `GET /`.
pub fn router(state: AppState, business: Router<AppState>) -> Router {
    business
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/version", get(version))
        .route("/admin/config", get(admin_config))
        .layer(ObserveLayer::new(state.clone()))
        .with_state(state)
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
