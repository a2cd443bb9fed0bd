//! The HTTP surface: the business routes (`GET /`, `POST /greet`), the
//! operational ones (`/healthz`, `/readyz`, `/metrics`, `/version`,
//! `/admin/config`), and the middleware every request passes through
//! (request id, request timeout, metrics, one log line).

use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::build_info::BUILD_INFO;
use crate::config::{Settings, token_matches};
use crate::lifecycle::{Lifecycle, State as LifecycleState};
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
    // One read of the state, so that the status and the body agree.
    let lifecycle = state.lifecycle.state();
    let checks = json!({"lifecycle": lifecycle.name()});
    if lifecycle == LifecycleState::Ready {
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
    let timeout = state.settings.server.request_timeout;
    let mut response = answer_within(timeout, started, request, next).await;
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

/// Runs the rest of the request, but answers for it once `timeout` has
/// passed since `started`: 408, closing the connection, while the body is
/// still arriving; 503 once the body is in (or there is none) and the
/// handler is still running. The handler is dropped either way.
async fn answer_within(
    timeout: Duration,
    started: Instant,
    request: Request,
    next: Next,
) -> Response {
    // Only a request with a body needs to be watched; most have none.
    let body_in = (!request.body().is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
    let request = match &body_in {
        Some(body_in) => request.map(|body| {
            Body::new(WatchedBody {
                body,
                body_in: body_in.clone(),
            })
        }),
        None => request,
    };
    let deadline = tokio::time::Instant::from_std(started + timeout);
    match (Deadline {
        inner: next.run(request),
        timer: None,
        deadline,
    })
    .await
    {
        Some(response) => response,
        None if body_in.is_some_and(|body_in| !body_in.load(Ordering::Relaxed)) => {
            let error = json!({"error": format!(
                "the request body did not arrive within {}", crate::config::format_duration(timeout)
            )});
            (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, "close")],
                Json(error),
            )
                .into_response()
        }
        None => {
            let error = json!({"error": format!(
                "no answer within {}", crate::config::format_duration(timeout)
            )});
            (StatusCode::SERVICE_UNAVAILABLE, Json(error)).into_response()
        }
    }
}

pin_project_lite::pin_project! {
    /// `inner`'s output, or `None` at `deadline`. The timer is only set up
    /// when `inner` does not finish at its first poll, so the requests that
    /// answer at once (most of them) never touch the runtime's timer.
    struct Deadline<F> {
        #[pin]
        inner: F,
        #[pin]
        timer: Option<tokio::time::Sleep>,
        deadline: tokio::time::Instant,
    }
}

impl<F: Future> Future for Deadline<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(output) = this.inner.poll(context) {
            return Poll::Ready(Some(output));
        }
        if this.timer.is_none() {
            this.timer
                .set(Some(tokio::time::sleep_until(*this.deadline)));
        }
        let timer = this.timer.as_pin_mut().expect("set above");
        ready!(timer.poll(context));
        Poll::Ready(None)
    }
}

pin_project_lite::pin_project! {
    /// A request body that records when it has all arrived.
    struct WatchedBody {
        #[pin]
        body: Body,
        body_in: Arc<AtomicBool>,
    }
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(context));
        if frame.is_none() {
            this.body_in.store(true, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
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

    /// A request body that never sends anything.
    struct Stalled;

    impl HttpBody for Stalled {
        type Data = Bytes;
        type Error = axum::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn requests_past_the_timeout_get_408_while_the_body_arrives_and_503_after() {
        use tower::ServiceExt;

        let timeout = Duration::from_millis(200);
        let sleep = || tokio::time::sleep(Duration::from_secs(30));
        let router = Router::new()
            .route("/fast", post(|body: String| async move { body }))
            .route(
                "/slow",
                post(move |body: String| async move {
                    sleep().await;
                    body
                }),
            )
            .layer(middleware::from_fn(move |request, next| {
                answer_within(timeout, Instant::now(), request, next)
            }));
        let call = |body: Body| {
            let request = Request::post("/slow")
                .header(header::CONTENT_LENGTH, "5")
                .body(body)
                .unwrap();
            router.clone().oneshot(request)
        };

        let started = Instant::now();
        let stalled = call(Body::new(Stalled)).await.unwrap();
        assert_eq!(stalled.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(stalled.headers()[header::CONNECTION], "close");
        let slow = call(Body::from("hello")).await.unwrap();
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(slow.headers().get(header::CONNECTION).is_none());
        let body = axum::body::to_bytes(slow.into_body(), 1024).await.unwrap();
        assert!(
            String::from_utf8_lossy(&body).contains("no answer within 200ms"),
            "{body:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "both were cut at the timeout, not left to run"
        );

        let fast = Request::post("/fast").body(Body::from("hello")).unwrap();
        let fast = router.clone().oneshot(fast).await.unwrap();
        assert_eq!(fast.status(), StatusCode::OK);
    }

    #[test]
    fn generated_request_ids_are_unique() {
        let first = new_request_id();
        let second = new_request_id();
        assert_ne!(first, second);
        assert_eq!(first.len(), 32);
    }
}
