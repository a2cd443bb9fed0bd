//! The platform's HTTP routes (`/healthz`, `/readyz`, `/metrics`,
//! `/version`, `/admin/config`) and the router that joins them to the
//! business part's. Every request passes through `observe` first.

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, Route, get};
use serde::Serialize;

use crate::build_info;
use crate::config::token_matches;
use crate::lifecycle::State as LifecycleState;
use crate::observe::ObserveLayer;
use crate::state::AppState;

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The business part's routes: paths with axum's method routers
/// (`get(handler)`, `post(handler)`), which the platform joins to its own
/// in one axum router.
///
/// The routes are typed with the platform's state, which their handlers do
/// not see (they capture their own), so that one router holds every route
/// and axum's routing is in the binary once: two routers merged cost 10 KB
/// and a few per cent of `GET /`. And this is a type of the platform's
/// rather than axum's `Router` itself so that axum's routing code is
/// compiled in the platform's crate alone: built in the service's crate, an
/// axum router is a second copy of it (20 KB of the binary).
#[derive(Default)]
pub struct Router(axum::Router<AppState>);

impl Router {
    /// No routes.
    pub fn new() -> Router {
        Router::default()
    }

    /// Adds `method_router` at `path`, as axum's `Router::route` does
    /// (which panics on a path given twice).
    pub fn route(self, path: &str, method_router: MethodRouter<AppState>) -> Router {
        Router(self.0.route(path, method_router))
    }

    /// The routes of both.
    pub fn merge(self, other: Router) -> Router {
        Router(self.0.merge(other.0))
    }

    /// Puts `layer` (a tower layer: `axum::middleware::from_fn(...)`, one
    /// of tower-http's, your own) in front of the routes added so far, as
    /// axum's `Router::layer` does. The platform's routes are not behind
    /// it, and the platform's request layer (request ids, timeouts,
    /// metrics, the request log) stays in front of it.
    pub fn layer<L>(self, layer: L) -> Router
    where
        L: tower_layer::Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: tower_service::Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as tower_service::Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as tower_service::Service<Request>>::Error: Into<Infallible> + 'static,
        <L::Service as tower_service::Service<Request>>::Future: Send + 'static,
    {
        Router(self.0.layer(layer))
    }

    /// Any axum router typed with the platform's state (nested routers,
    /// layers of its own, a fallback), at the cost of a second copy of
    /// axum's routing code in the binary.
    pub fn from_axum(router: axum::Router<AppState>) -> Router {
        Router(router)
    }
}

/// The operational routes, then the business part's, all behind `observe`.
/// A business route on a path of the platform's panics here, at start.
pub fn router(state: AppState, business: Router) -> axum::Router {
    business
        .0
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
struct Readiness<'a> {
    checks: Checks<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed: Option<Vec<&'a str>>,
    ready: bool,
}

/// `{"lifecycle": "<state>", "<business check>": "ok" | "failing", …}`.
struct Checks<'a> {
    lifecycle: &'static str,
    business: &'a [(&'a str, bool)],
}

impl Serialize for Checks<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1 + self.business.len()))?;
        map.serialize_entry("lifecycle", self.lifecycle)?;
        for (name, ok) in self.business {
            map.serialize_entry(name, if *ok { "ok" } else { "failing" })?;
        }
        map.end()
    }
}

/// Liveness: the process can answer. It checks nothing else, so that a slow
/// dependency never gets a healthy process restarted.
async fn healthz(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, JSON)], state.health.clone()).into_response()
}

/// Readiness: 200 while the lifecycle is ready and every check of the
/// business part passes; 503 from the moment a stop begins, or while a
/// check fails, naming the checks that failed.
async fn readyz(State(state): State<AppState>) -> Response {
    // One read of each, so that the status and the body agree.
    let lifecycle = state.lifecycle.state();
    let business = state.checks.results();
    let failed: Vec<&str> = (lifecycle != LifecycleState::Ready)
        .then_some("lifecycle")
        .into_iter()
        .chain(business.iter().filter(|(_, ok)| !ok).map(|(name, _)| *name))
        .collect();
    let ready = failed.is_empty();
    let body = Readiness {
        checks: Checks {
            lifecycle: lifecycle.name(),
            business: &business,
        },
        failed: (!ready).then_some(failed),
        ready,
    };
    if ready {
        Json(body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.ready().set(i64::from(state.is_ready()));
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        [(header::CONTENT_TYPE, content_type)],
        state.metrics.encode(),
    )
        .into_response()
}

async fn version() -> Json<&'static build_info::BuildInfo> {
    Json(build_info::get())
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
