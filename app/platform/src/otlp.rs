//! The export of sampled server spans over OTLP/HTTP with JSON bodies
//! (`POST <tracing.endpoint>`, `Content-Type: application/json`), written
//! here rather than taken from opentelemetry-rust (ARCHITECTURE.md says
//! why).
//!
//! Off the request path: a request moves its finished span into a bounded
//! queue (`tracing.queue_size`; a deque behind a lock held only to push),
//! never waiting for the export; a full queue drops the span and counts
//! it. One thread of its own takes spans in batches (`tracing.batch_size`,
//! or what arrived within `tracing.batch_delay`), encodes them and posts
//! them with plain blocking I/O, one connection per batch. (A standard
//! `sync_channel` did the same with a box per span and 20 KB more code in
//! the shipped binary.) A batch that meets 429, 502, 503, 504 or
//! a connection error is tried again with doubling pauses (a `Retry-After`
//! in seconds is honoured) until `tracing.export_timeout`; then it is
//! dropped and counted. Dropped spans are counted in
//! `app_trace_spans_dropped_total{reason}`, and a warning says so at most
//! every `WARN_EVERY`.
//!
//! On shutdown (a stop, or the end of the drain after an upgrade) the
//! process exports what its queue still holds, within `export_timeout`,
//! before it exits: each process exports the spans of the requests it
//! answered, once.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::build_info::BuildInfo;
use crate::config::{Tracing, parse_resource_attributes};
use crate::metrics::Metrics;
use crate::traces::Hex;

/// At most one warning about dropped spans this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// The first pause before a batch is tried again; it doubles.
const FIRST_RETRY: Duration = Duration::from_millis(100);

/// A finished server span, as the request layer knows it. It owns what it
/// quotes of the request (`RequestText`) and no `HeaderValue`: those are
/// slices of the connection's read buffer, which a span waiting in the
/// queue would keep alive (about 8 KB each; at 1% sampling, 10 MB more
/// peak memory in the benchmark).
#[derive(Debug)]
pub struct ServerSpan {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub method: &'static str,
    /// The route template, `None` for a request no route matched.
    pub route: Option<&'static str>,
    pub request: RequestText,
    pub status: u16,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub request_size: Option<u64>,
    pub response_size: Option<u64>,
}

/// The request's own words a span quotes (path and query, `Host`,
/// `User-Agent`, the caller's `tracestate`; empty when absent), copied
/// into one string.
#[derive(Debug, Default)]
pub struct RequestText {
    text: String,
    ends: [usize; 4],
}

impl RequestText {
    pub fn new(parts: [&str; 4]) -> RequestText {
        let mut text = String::with_capacity(parts.iter().map(|part| part.len()).sum());
        let mut ends = [0; 4];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            *end = text.len();
        }
        RequestText { text, ends }
    }

    fn part(&self, index: usize) -> &str {
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before]);
        &self.text[start..self.ends[index]]
    }

    fn path_and_query(&self) -> &str {
        self.part(0)
    }

    fn host(&self) -> &str {
        self.part(1)
    }

    fn user_agent(&self) -> &str {
        self.part(2)
    }

    fn tracestate(&self) -> &str {
        self.part(3)
    }
}

/// Nanoseconds since the epoch, now.
pub fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    })
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
}

/// Why spans were dropped: the queue was full, or their batch could not be
/// delivered (the collector down or refusing) within the export timeout.
const QUEUE_FULL: DropLabels = DropLabels {
    reason: "queue_full",
};
const EXPORT_FAILED: DropLabels = DropLabels {
    reason: "export_failed",
};

/// The spans waiting for export, shared by the workers (which push) and
/// the export thread (which takes batches), behind one lock held only to
/// push or take.
struct Queue {
    state: Mutex<QueueState>,
    /// Wakes the export thread for the final flush, and the flush's caller
    /// once the thread is done.
    changed: Condvar,
}

#[derive(Default)]
struct QueueState {
    spans: VecDeque<ServerSpan>,
    /// Set by `flush_and_stop`: export everything, then stop.
    closing: bool,
    /// Set by the export thread when it has stopped.
    done: bool,
}

/// The request layer's end of the export.
pub struct Exporter {
    queue: Arc<Queue>,
    capacity: usize,
    /// `app_trace_spans_dropped_total{reason="queue_full"}`.
    queue_full: Counter,
    export_timeout: Duration,
}

impl Exporter {
    /// Starts the export thread and registers its metrics.
    pub fn start(
        settings: &Tracing,
        service_name: &str,
        build: &BuildInfo,
        metrics: &mut Metrics,
    ) -> std::io::Result<Exporter> {
        let dropped = Family::<DropLabels, Counter>::default();
        drop(dropped.get_or_create(&QUEUE_FULL));
        drop(dropped.get_or_create(&EXPORT_FAILED));
        metrics.register(
            "app_trace_spans_dropped",
            "Sampled spans never exported, by reason: queue_full, export_failed (the collector down or refusing); with tracing on only",
            dropped.clone(),
        );
        let exported = Counter::default();
        metrics.register(
            "app_trace_spans_exported",
            "Spans the collector accepted; with tracing on only",
            exported.clone(),
        );
        let queue = Arc::new(Queue {
            state: Mutex::default(),
            changed: Condvar::new(),
        });
        let mut thread = ExportThread {
            endpoint: Endpoint::parse(&settings.endpoint)?,
            resource: resource_json(settings, service_name, build),
            queue: queue.clone(),
            batch_size: settings.batch_size,
            batch_delay: settings.batch_delay,
            export_timeout: settings.export_timeout,
            export_failed: dropped.get_or_create(&EXPORT_FAILED).clone(),
            exported,
            unreported: 0,
            last_warning: None,
        };
        std::thread::Builder::new()
            .name("otlp-export".to_owned())
            .spawn(move || thread.run())?;
        Ok(Exporter {
            queue,
            capacity: settings.queue_size,
            queue_full: dropped.get_or_create(&QUEUE_FULL).clone(),
            export_timeout: settings.export_timeout,
        })
    }

    /// Queues a finished span; never waits for the export. A full queue
    /// (or one that is closing) drops it.
    pub fn export(&self, span: ServerSpan) {
        let mut state = self.queue.state.lock().expect("span queue");
        if state.spans.len() < self.capacity && !state.closing {
            state.spans.push_back(span);
        } else {
            drop(state);
            self.queue_full.inc();
        }
    }

    /// Exports what the queue holds and stops the thread, waiting at most
    /// the export timeout.
    pub fn flush_and_stop(&self) {
        let mut state = self.queue.state.lock().expect("span queue");
        state.closing = true;
        self.queue.changed.notify_all();
        let (_state, waited) = self
            .queue
            .changed
            .wait_timeout_while(state, self.export_timeout, |state| !state.done)
            .expect("span queue");
        if waited.timed_out() {
            tracing::warn!(
                export_timeout = %crate::config::format_duration(self.export_timeout),
                "trace export: the last spans were not all exported within the export timeout"
            );
        }
    }
}

/// `http://host[:port]/path`, resolved at each export (a collector's
/// address may change).
#[derive(Debug, Clone)]
struct Endpoint {
    /// `host:port`, for the connection and the `Host` header.
    authority: String,
    path: String,
}

impl Endpoint {
    fn parse(url: &str) -> std::io::Result<Endpoint> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "tracing.endpoint is not an http:// URL",
            )
        })?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/v1/traces"),
        };
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Endpoint {
            authority,
            path: path.to_owned(),
        })
    }
}

struct ExportThread {
    endpoint: Endpoint,
    /// The `resource` and `scope` JSON, the same for every batch.
    resource: String,
    queue: Arc<Queue>,
    batch_size: usize,
    batch_delay: Duration,
    export_timeout: Duration,
    export_failed: Counter,
    exported: Counter,
    /// Spans dropped since the last warning.
    unreported: u64,
    last_warning: Option<Instant>,
}

/// How one attempt at a batch ended.
enum Attempt {
    Accepted,
    /// Worth trying again: the collector is busy or down; with its
    /// `Retry-After`, if it gave one.
    Retry(String, Option<Duration>),
    /// Not worth trying again (the collector refused the batch).
    Refused(String),
}

impl ExportThread {
    /// Every `batch_delay` (or as soon as a batch is full), takes a batch
    /// and sends it; once closing, sends everything left, then says so.
    fn run(&mut self) {
        loop {
            let (batch, closing) = self.next_batch();
            if !batch.is_empty() {
                self.send(&batch, closing);
            }
            if closing && batch.is_empty() {
                let mut state = self.queue.state.lock().expect("span queue");
                state.done = true;
                self.queue.changed.notify_all();
                return;
            }
        }
    }

    /// Up to `batch_size` spans, after at most `batch_delay` (at once
    /// when a batch is waiting or the process is closing), and whether it
    /// is closing.
    fn next_batch(&self) -> (Vec<ServerSpan>, bool) {
        let state = self.queue.state.lock().expect("span queue");
        let (mut state, _) = self
            .queue
            .changed
            .wait_timeout_while(state, self.batch_delay, |state| {
                state.spans.len() < self.batch_size && !state.closing
            })
            .expect("span queue");
        let take = state.spans.len().min(self.batch_size);
        (state.spans.drain(..take).collect(), state.closing)
    }

    /// Posts the batch until it is accepted, refused, or the export
    /// timeout has passed.
    fn send(&mut self, batch: &[ServerSpan], closing: bool) {
        let body = encode(&self.resource, batch);
        let count = batch.len() as u64;
        let deadline = Instant::now() + self.export_timeout;
        let mut pause = FIRST_RETRY;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let problem = match post(&self.endpoint, &body, remaining) {
                Attempt::Accepted => {
                    self.exported.inc_by(count);
                    return;
                }
                Attempt::Refused(problem) => problem,
                Attempt::Retry(problem, retry_after) => {
                    let wait = retry_after.unwrap_or(pause);
                    if !closing && Instant::now() + wait < deadline {
                        std::thread::sleep(wait);
                        pause = (pause * 2).min(Duration::from_secs(5));
                        continue;
                    }
                    problem
                }
            };
            self.export_failed.inc_by(count);
            self.warn(count, &problem);
            return;
        }
    }

    /// At most one line per `WARN_EVERY`, with what was dropped since the
    /// last one.
    fn warn(&mut self, count: u64, problem: &str) {
        self.unreported += count;
        let due = self
            .last_warning
            .is_none_or(|last| last.elapsed() >= WARN_EVERY);
        if due {
            tracing::warn!(
                dropped = self.unreported,
                endpoint = %format!("http://{}{}", self.endpoint.authority, self.endpoint.path),
                error = problem,
                "trace export failed: spans dropped"
            );
            self.unreported = 0;
            self.last_warning = Some(Instant::now());
        }
    }
}

/// One POST of a batch, with the time left for it.
fn post(endpoint: &Endpoint, body: &str, within: Duration) -> Attempt {
    let within = within.max(Duration::from_millis(10));
    let address = match endpoint
        .authority
        .to_socket_addrs()
        .map(|mut found| found.next())
    {
        Ok(Some(address)) => address,
        Ok(None) | Err(_) => {
            return Attempt::Retry(format!("resolve {}", endpoint.authority), None);
        }
    };
    let exchange = || -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect_timeout(&address, within)?;
        stream.set_write_timeout(Some(within))?;
        stream.set_read_timeout(Some(within))?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            endpoint.path,
            endpoint.authority,
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body.as_bytes())?;
        let mut response = Vec::new();
        // The status line and headers are enough; the body is read until
        // the collector closes, bounded.
        stream.take(64 * 1024).read_to_end(&mut response)?;
        Ok(response)
    };
    let response = match exchange() {
        Ok(response) => response,
        Err(err) => return Attempt::Retry(format!("POST to {address}: {err}"), None),
    };
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let retry_after = text
        .lines()
        .take_while(|line| !line.is_empty())
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("retry-after")
                .then(|| value.trim().parse().ok().map(Duration::from_secs))?
        });
    match status {
        200..=299 => Attempt::Accepted,
        429 | 502 | 503 | 504 => {
            Attempt::Retry(format!("the collector answered {status}"), retry_after)
        }
        0 => Attempt::Retry("the collector sent no HTTP answer".to_owned(), None),
        _ => Attempt::Refused(format!("the collector refused the batch with {status}")),
    }
}

/// The resource and the instrumentation scope, as the JSON that opens
/// every batch's `resourceSpans` entry (up to `"spans":`).
fn resource_json(settings: &Tracing, service_name: &str, build: &BuildInfo) -> String {
    let service_name = if settings.service_name.is_empty() {
        service_name
    } else {
        &settings.service_name
    };
    let instance = Hex::<32>::of(&crate::traces::random_trace_id());
    let mut attributes: Vec<(String, String)> = vec![
        ("service.name".to_owned(), service_name.to_owned()),
        ("service.version".to_owned(), build.version.to_owned()),
        (
            "service.instance.id".to_owned(),
            instance.as_str().to_owned(),
        ),
        ("vcs.ref.head.revision".to_owned(), build.commit.to_owned()),
        (
            "telemetry.sdk.name".to_owned(),
            crate::build_info::binary().to_owned(),
        ),
        ("telemetry.sdk.language".to_owned(), "rust".to_owned()),
    ];
    // Validated with the settings; the operator's own attributes do not
    // replace the service's identity (OTEL_SERVICE_NAME wins over a
    // service.name in OTEL_RESOURCE_ATTRIBUTES, as specified).
    for (key, value) in parse_resource_attributes(&settings.resource_attributes).unwrap_or_default()
    {
        if !attributes.iter().any(|(known, _)| *known == key) {
            attributes.push((key, value));
        }
    }
    let mut json = String::from("{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
    for (index, (key, value)) in attributes.iter().enumerate() {
        if index > 0 {
            json.push(',');
        }
        push_string_attribute(&mut json, key, value);
    }
    json.push_str("]},\"scopeSpans\":[{\"scope\":{\"name\":");
    push_json_string(&mut json, crate::build_info::binary());
    json.push_str(",\"version\":");
    push_json_string(&mut json, build.version);
    json.push_str("},\"spans\":[");
    json
}

/// A batch as an OTLP `ExportTraceServiceRequest` in JSON: ids as hex
/// strings (not base64, unlike protobuf's JSON mapping), times as decimal
/// strings of nanoseconds.
fn encode(resource: &str, spans: &[ServerSpan]) -> String {
    use std::fmt::Write as _;
    let mut json = String::with_capacity(resource.len() + spans.len() * 700);
    json.push_str(resource);
    for (index, span) in spans.iter().enumerate() {
        if index > 0 {
            json.push(',');
        }
        json.push_str("{\"traceId\":\"");
        json.push_str(Hex::<32>::of(&span.trace_id).as_str());
        json.push_str("\",\"spanId\":\"");
        json.push_str(Hex::<16>::of(&span.span_id).as_str());
        json.push('"');
        if let Some(parent) = &span.parent {
            json.push_str(",\"parentSpanId\":\"");
            json.push_str(Hex::<16>::of(parent).as_str());
            json.push('"');
        }
        let state = span.request.tracestate();
        if !state.is_empty() {
            json.push_str(",\"traceState\":");
            push_json_string(&mut json, state);
        }
        json.push_str(",\"name\":");
        match span.route {
            Some(route) => push_json_string(&mut json, &format!("{} {route}", span.method)),
            None => push_json_string(&mut json, span.method),
        }
        let _ = write!(
            json,
            ",\"kind\":2,\"flags\":{},\"startTimeUnixNano\":\"{}\",\"endTimeUnixNano\":\"{}\",\"attributes\":[",
            // The W3C flags (sampled), and that the parent is remote.
            0x100 | (0x200 * u32::from(span.parent.is_some())) | 1,
            span.start_unix_nanos,
            span.end_unix_nanos
        );
        push_string_attribute(&mut json, "http.request.method", span.method);
        if let Some(route) = span.route {
            json.push(',');
            push_string_attribute(&mut json, "http.route", route);
        }
        json.push(',');
        push_int_attribute(
            &mut json,
            "http.response.status_code",
            u64::from(span.status),
        );
        json.push(',');
        let (path, query) = span
            .request
            .path_and_query()
            .split_once('?')
            .map_or((span.request.path_and_query(), None), |(path, query)| {
                (path, Some(query))
            });
        push_string_attribute(&mut json, "url.path", path);
        if let Some(query) = query {
            json.push(',');
            push_string_attribute(&mut json, "url.query", query);
        }
        json.push(',');
        push_string_attribute(&mut json, "url.scheme", "http");
        json.push(',');
        push_string_attribute(&mut json, "network.protocol.version", "1.1");
        let host = span.request.host();
        if !host.is_empty() {
            let (address, port) = match host.rsplit_once(':') {
                Some((address, port)) if port.parse::<u16>().is_ok() => {
                    (address, port.parse().ok())
                }
                _ => (host, None),
            };
            json.push(',');
            push_string_attribute(&mut json, "server.address", address);
            if let Some(port) = port {
                json.push(',');
                push_int_attribute(&mut json, "server.port", port);
            }
        }
        let agent = span.request.user_agent();
        if !agent.is_empty() {
            json.push(',');
            push_string_attribute(&mut json, "user_agent.original", agent);
        }
        if let Some(size) = span.request_size {
            json.push(',');
            push_int_attribute(&mut json, "http.request.body.size", size);
        }
        if let Some(size) = span.response_size {
            json.push(',');
            push_int_attribute(&mut json, "http.response.body.size", size);
        }
        json.push(']');
        if span.status >= 500 {
            // Only server errors mark a server span as failed.
            json.push_str(",\"status\":{\"code\":2}");
        }
        json.push('}');
    }
    json.push_str("]}]}]}");
    json
}

fn push_json_string(json: &mut String, text: &str) {
    json.push_str(&serde_json::to_string(text).expect("a string serializes"));
}

fn push_string_attribute(json: &mut String, key: &str, value: &str) {
    json.push_str("{\"key\":");
    push_json_string(json, key);
    json.push_str(",\"value\":{\"stringValue\":");
    push_json_string(json, value);
    json.push_str("}}");
}

fn push_int_attribute(json: &mut String, key: &str, value: u64) {
    use std::fmt::Write as _;
    json.push_str("{\"key\":");
    push_json_string(json, key);
    let _ = write!(json, ",\"value\":{{\"intValue\":\"{value}\"}}}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(route: Option<&'static str>, status: u16, parent: Option<[u8; 8]>) -> ServerSpan {
        ServerSpan {
            trace_id: [0x4b; 16],
            span_id: [0x01; 8],
            parent,
            method: "GET",
            route,
            request: RequestText::new([
                "/greet?name=a%22b",
                "127.0.0.1:8080",
                "curl/8 \"quoted\"",
                "rojo=1",
            ]),
            status,
            start_unix_nanos: 1_700_000_000_000_000_000,
            end_unix_nanos: 1_700_000_000_001_000_000,
            request_size: Some(12),
            response_size: None,
        }
    }

    #[test]
    fn a_batch_is_otlp_json_with_hex_ids_and_the_http_conventions() {
        let mut settings = crate::test_settings().tracing;
        settings.resource_attributes = "k8s.pod.name=app-1,service.name=ignored".to_owned();
        let resource = resource_json(&settings, "app", crate::build_info::get());
        let json = encode(
            &resource,
            &[
                span(Some("/greet"), 200, Some([0x02; 8])),
                span(None, 503, None),
            ],
        );
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let resource_spans = &value["resourceSpans"][0];
        let attributes = |list: &serde_json::Value| -> Vec<(String, String)> {
            list.as_array()
                .unwrap()
                .iter()
                .map(|attribute| {
                    let value = &attribute["value"];
                    let text = value["stringValue"]
                        .as_str()
                        .or(value["intValue"].as_str())
                        .unwrap();
                    (
                        attribute["key"].as_str().unwrap().to_owned(),
                        text.to_owned(),
                    )
                })
                .collect()
        };
        let resource = attributes(&resource_spans["resource"]["attributes"]);
        assert!(
            resource.contains(&("service.name".to_owned(), "app".to_owned())),
            "{resource:?}"
        );
        assert!(resource.contains(&("k8s.pod.name".to_owned(), "app-1".to_owned())));
        assert_eq!(
            resource
                .iter()
                .filter(|(key, _)| key == "service.name")
                .count(),
            1
        );
        let spans = &resource_spans["scopeSpans"][0]["spans"];
        let first = &spans[0];
        assert_eq!(first["traceId"], "4b".repeat(16));
        assert_eq!(first["spanId"], "01".repeat(8));
        assert_eq!(first["parentSpanId"], "02".repeat(8));
        assert_eq!(first["traceState"], "rojo=1");
        assert_eq!(first["name"], "GET /greet");
        assert_eq!(first["kind"], 2);
        assert_eq!(first["startTimeUnixNano"], "1700000000000000000");
        let span_attributes = attributes(&first["attributes"]);
        for expected in [
            ("http.request.method", "GET"),
            ("http.route", "/greet"),
            ("http.response.status_code", "200"),
            ("url.path", "/greet"),
            ("url.query", "name=a%22b"),
            ("server.address", "127.0.0.1"),
            ("server.port", "8080"),
            ("user_agent.original", "curl/8 \"quoted\""),
            ("http.request.body.size", "12"),
        ] {
            assert!(
                span_attributes.contains(&(expected.0.to_owned(), expected.1.to_owned())),
                "{expected:?} in {span_attributes:?}"
            );
        }
        assert!(first.get("status").is_none());
        let second = &spans[1];
        assert_eq!(second["name"], "GET");
        assert!(second.get("parentSpanId").is_none());
        assert_eq!(second["status"]["code"], 2);
    }

    #[test]
    fn endpoints_get_a_port_and_a_path() {
        for (url, authority, path) in [
            (
                "http://127.0.0.1:4318/v1/traces",
                "127.0.0.1:4318",
                "/v1/traces",
            ),
            ("http://collector/v1/traces", "collector:80", "/v1/traces"),
            ("http://[::1]:4318", "[::1]:4318", "/v1/traces"),
        ] {
            let endpoint = Endpoint::parse(url).unwrap();
            assert_eq!(
                (endpoint.authority.as_str(), endpoint.path.as_str()),
                (authority, path),
                "{url}"
            );
        }
        assert!(Endpoint::parse("https://collector").is_err());
    }
}
