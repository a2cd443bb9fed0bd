//! The layer every request passes through: request id, request timeout,
//! metrics, and one log line. A tower layer with a future of its own
//! rather than axum's `middleware::from_fn`, which boxes a service and two
//! futures per request: the request path allocates as little as it can
//! (`allocations.rs` counts it).
//!
//! With tracing on, the layer also starts each request's server span
//! (`traces.rs`): its ids go into the log line and the `traceresponse`
//! header, and a sampled one into the latency histogram as an exemplar and
//! to the export queue (`otlp.rs`).

use std::convert::Infallible;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::config::format_duration;
use crate::metrics::{Exemplar, HttpLabels, intern_route};
use crate::otlp;
use crate::state::{AppState, ErrorBody};
use crate::traces::{self, Hex, SpanContext};

/// A constant name: inserting a `&str` name that is not a standard header
/// would allocate it anew on every response.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone)]
pub struct ObserveLayer(AppState);

impl ObserveLayer {
    pub fn new(state: AppState) -> ObserveLayer {
        ObserveLayer(state)
    }
}

impl<S> tower_layer::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            state: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    state: AppState,
}

impl<S> tower_service::Service<Request> for Observe<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request) -> Self::Future {
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
        let trace = self.state.traces.as_ref().map(|_| {
            let context = traces::start(&self.state.settings.tracing, request.headers());
            // What the exported span says of the request, for sampled ones.
            let details = context.sampled.then(|| {
                let headers = request.headers();
                let text = |name| {
                    headers
                        .get(name)
                        .and_then(|value: &HeaderValue| value.to_str().ok())
                        .unwrap_or_default()
                };
                let uri = request.uri();
                let tracestate = context.tracestate.as_ref();
                RequestDetails {
                    text: otlp::RequestText::new([
                        uri.path_and_query()
                            .map_or(uri.path(), |path| path.as_str()),
                        text(header::HOST),
                        text(header::USER_AGENT),
                        tracestate
                            .and_then(|state| state.to_str().ok())
                            .unwrap_or_default(),
                    ]),
                    request_size: headers
                        .get(header::CONTENT_LENGTH)
                        .and_then(|length| length.to_str().ok()?.parse().ok()),
                }
            });
            Box::new(Traced { context, details })
        });
        let timeout = self.state.settings.server.request_timeout;
        Observed {
            inner: Deadline {
                inner: self.inner.call(request),
                timer: None,
                deadline: tokio::time::Instant::from_std(started + timeout),
            },
            request: Some(Observation {
                in_flight: InFlight::start(self.state.clone()),
                started,
                method,
                route,
                request_id,
                body_in,
                trace,
            }),
        }
    }
}

/// A request's span, with tracing on.
struct Traced {
    context: SpanContext,
    /// For a sampled request: what its exported span records.
    details: Option<RequestDetails>,
}

struct RequestDetails {
    text: otlp::RequestText,
    request_size: Option<u64>,
}

/// What the layer knows of a request until its response.
struct Observation {
    in_flight: InFlight,
    started: Instant,
    method: &'static str,
    route: &'static str,
    request_id: HeaderValue,
    /// Set once the body has all arrived; `None` without a body.
    body_in: Option<Arc<AtomicBool>>,
    /// `None` with tracing off.
    trace: Option<Box<Traced>>,
}

pin_project_lite::pin_project! {
    pub struct Observed<F> {
        #[pin]
        inner: Deadline<F>,
        request: Option<Observation>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Observed<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let outcome = ready!(this.inner.poll(context));
        let request = this.request.take().expect("polled after completion");
        let response = match outcome {
            Some(Ok(response)) => response,
            None => timed_out(&request),
        };
        Poll::Ready(Ok(request.finish(response)))
    }
}

impl Observation {
    /// Counts, logs and stamps the response.
    fn finish(self, mut response: Response) -> Response {
        let Observation {
            in_flight,
            started,
            method,
            route,
            request_id,
            trace,
            ..
        } = self;
        let state = in_flight.end();
        let elapsed = started.elapsed();
        #[cfg(feature = "fault-injection")]
        fault_injection::break_some(route, &mut response);
        let status = response.status().as_u16();
        let ended = trace.as_ref().map(|_| std::time::SystemTime::now());
        let exemplar = trace
            .as_ref()
            .zip(ended)
            .filter(|(trace, _)| trace.context.sampled)
            .map(|(trace, ended)| Exemplar {
                trace_id: trace.context.trace_id,
                span_id: trace.context.span_id,
                unix_millis: otlp::unix_nanos(ended) / 1_000_000,
            });
        state.metrics.observe(
            &HttpLabels {
                method,
                route,
                status,
            },
            elapsed,
            exemplar,
        );
        if crate::logging::request_line_wanted(&state.settings.log, status) {
            let ids = trace.as_ref().map(|trace| {
                (
                    Hex::<32>::of(&trace.context.trace_id),
                    Hex::<16>::of(&trace.context.span_id),
                )
            });
            tracing::info!(
                target: crate::logging::REQUEST_TARGET,
                method,
                route,
                status,
                latency_ms = elapsed.as_micros() as f64 / 1_000.0,
                request_id = request_id.to_str().unwrap_or_default(),
                trace_id = ids.as_ref().map(|(trace, _)| trace.as_str()),
                span_id = ids.as_ref().map(|(_, span)| span.as_str()),
            );
        }
        if let Some(trace) = trace {
            response
                .headers_mut()
                .insert(traces::TRACERESPONSE, trace.context.response_header());
            if let (Some(details), Some(exporter), Some(ended)) =
                (trace.details, &state.traces, ended)
            {
                let end_unix_nanos = otlp::unix_nanos(ended);
                exporter.export(otlp::ServerSpan {
                    trace_id: trace.context.trace_id,
                    span_id: trace.context.span_id,
                    parent: trace.context.parent,
                    method,
                    route: (route != "unmatched").then_some(route),
                    request: details.text,
                    status,
                    start_unix_nanos: end_unix_nanos
                        .saturating_sub(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)),
                    end_unix_nanos,
                    request_size: details.request_size,
                    response_size: response.body().size_hint().exact(),
                });
            }
        }
        let headers = response.headers_mut();
        headers.insert(REQUEST_ID, request_id);
        if !state.lifecycle.is_ready() {
            // While draining, ask keep-alive clients to reconnect, which takes
            // them to an instance that is still ready.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// The answer once `request_timeout` has passed (the handler is dropped):
/// 408, closing the connection, while the body is still arriving; 503 once
/// the body is in (or there is none) and the handler is still running.
fn timed_out(request: &Observation) -> Response {
    let timeout = format_duration(request.in_flight.state().settings.server.request_timeout);
    let body_missing = request
        .body_in
        .as_ref()
        .is_some_and(|body_in| !body_in.load(Ordering::Relaxed));
    if body_missing {
        let error = format!("the request body did not arrive within {timeout}");
        let error = ErrorBody { error: &error };
        (
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, HeaderValue::from_static("close"))],
            Json(error),
        )
            .into_response()
    } else {
        let error = format!("no answer within {timeout}");
        let error = ErrorBody { error: &error };
        (StatusCode::SERVICE_UNAVAILABLE, Json(error)).into_response()
    }
}

/// Counts the request in `http_requests_in_flight` until it ends, or until
/// the client goes away and the request future is dropped.
struct InFlight(Option<AppState>);

impl InFlight {
    fn start(state: AppState) -> InFlight {
        state.metrics.request_started();
        InFlight(Some(state))
    }

    fn state(&self) -> &AppState {
        self.0.as_ref().expect("in flight")
    }

    fn end(mut self) -> AppState {
        let state = self.0.take().expect("in flight");
        state.metrics.request_ended();
        state
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(state) = &self.0 {
            state.metrics.request_ended();
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

/// 32 hex digits: a per-process random prefix, then the thread's number
/// (16 bits) and the thread's own count (48 bits). Unique without a random
/// number generator per request or a counter every worker writes to (whose
/// cache line would move between CPUs on each request), and written without
/// a `String`.
fn new_request_id() -> HeaderValue {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static THREADS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static NEXT: std::cell::Cell<u64> =
            std::cell::Cell::new((THREADS.fetch_add(1, Ordering::Relaxed) & 0xffff) << 48);
    }
    let prefix = *PREFIX.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    let count = NEXT.with(|next| {
        let count = next.get();
        next.set(count + 1);
        count
    });
    let mut digits = [0u8; 32];
    traces::write_hex(&prefix.to_be_bytes(), &mut digits[..16]);
    traces::write_hex(&count.to_be_bytes(), &mut digits[16..]);
    HeaderValue::from_bytes(&digits).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        use axum::Router;
        use axum::routing::post;
        use tower::ServiceExt;

        use crate::state::Shared;

        let mut settings = crate::test_settings();
        settings.server.request_timeout = Duration::from_millis(200);
        let lifecycle = Arc::new(crate::lifecycle::Lifecycle::default());
        lifecycle.advance(crate::lifecycle::State::Ready);
        let state = Shared::new(
            Arc::new(settings),
            lifecycle,
            Arc::new(crate::metrics::Metrics::new(crate::build_info::get())),
        );
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
            .layer(ObserveLayer::new(state));
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
        assert!(stalled.headers().contains_key(REQUEST_ID));
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
        let (first, second) = (first.to_str().unwrap(), second.to_str().unwrap());
        assert_eq!(first[..16], second[..16], "one prefix per process");
        let count = |id: &str| u64::from_str_radix(&id[16..], 16).unwrap();
        assert!(count(second) > count(first), "{first} {second}");
        assert!(first.bytes().all(|byte| byte.is_ascii_hexdigit()));
        // Other threads count on their own, and never give the same id.
        let others: Vec<String> = (0..3)
            .map(|_| {
                std::thread::spawn(|| new_request_id().to_str().unwrap().to_owned())
                    .join()
                    .unwrap()
            })
            .collect();
        let mut all: Vec<&str> = others.iter().map(String::as_str).collect();
        all.extend([first, second]);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 5, "{all:?}");
        assert!(others.iter().all(|id| id[..16] == first[..16]));
    }
}

/// For the deploy tests only (the `fault-injection` feature, never in a
/// shipped build): a release that answers every tenth request to `/` with
/// 500, as a release with a bug in one route would, while `/version` and
/// the probes answer as usual.
#[cfg(feature = "fault-injection")]
mod fault_injection {
    use std::sync::atomic::{AtomicU64, Ordering};

    static ROOT_REQUESTS: AtomicU64 = AtomicU64::new(0);

    pub fn break_some(route: &str, response: &mut super::Response) {
        if route == "/" && ROOT_REQUESTS.fetch_add(1, Ordering::Relaxed) % 10 == 9 {
            *response.status_mut() = super::StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
}
