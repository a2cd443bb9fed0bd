//! Traces, end to end: the real binary sends its spans to a real OTLP
//! collector (`rotel-agent`, from PyPI, which prints every span it
//! receives) on loopback, configured through OpenTelemetry's own variables;
//! the collector goes away and comes back; upgrades and stops flush what
//! is queued; a real Prometheus (2.42, exemplar storage on) scrapes the
//! trace ids off the latency histogram.

#![cfg(target_os = "linux")]

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::business::{BODY, BODY_ROUTE};
use support::*;

const SETUP: &str = "cargo xtask setup --only python";
/// The requests go to a platform route and to the business part's body
/// route (`support::business`), so that these tests hold for any business
/// part (`xtask/tests/adopt.rs` runs them against an adopter's binary).
const GET_ROUTE: &str = "/version";
/// The span the tests send the collector themselves, to know it is ready.
const PROBE: &str = "readiness-probe";
const PROBE_TRACE: &str = "0000000000000000000000000000beef";

/// A span as the collector printed it.
#[derive(Debug, Clone, Default)]
struct Collected {
    trace_id: String,
    parent_id: String,
    span_id: String,
    name: String,
    attributes: BTreeMap<String, String>,
    resource: BTreeMap<String, String>,
}

/// `rotel-agent` on two free loopback ports, printing what it receives.
struct Collector {
    _child: KilledOnDrop,
    http: SocketAddr,
    stdout: Lines,
}

impl Collector {
    fn start(binary: &PathBuf, http: SocketAddr) -> Collector {
        let grpc = free_port();
        let mut child = Command::new(binary)
            .args(["start", "--otlp-http-endpoint", &http.to_string()])
            .args(["--otlp-grpc-endpoint", &grpc.to_string()])
            .args(["--exporter", "blackhole", "--debug-log", "traces"])
            .args([
                "--debug-log-verbosity",
                "detailed",
                "--batch-timeout",
                "50ms",
            ])
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rotel-agent");
        let stdout = Lines::default();
        stdout.clone().collect(child.stdout.take().unwrap());
        Lines::default().collect(child.stderr.take().unwrap());
        let collector = Collector {
            _child: KilledOnDrop(child),
            http,
            stdout,
        };
        collector.wait_until_it_prints_spans();
        collector
    }

    /// rotel accepts connections before its pipeline prints what it
    /// receives (spans sent right after its start can be accepted and never
    /// printed), so a probe span is sent until it shows.
    fn wait_until_it_prints_spans(&self) {
        let body = format!(
            r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"{PROBE}"}}}}]}},"scopeSpans":[{{"spans":[{{"traceId":"{PROBE_TRACE}","spanId":"00000000000000aa","name":"probe","kind":2,"startTimeUnixNano":"1","endTimeUnixNano":"2"}}]}}]}}]}}"#
        );
        let deadline = Instant::now() + BOUND;
        loop {
            if let Ok(mut stream) = TcpStream::connect(self.http) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = write!(
                    stream,
                    "POST /v1/traces HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    self.http,
                    body.len()
                );
                let _ = stream.read_to_end(&mut Vec::new());
            }
            let printed = |deadline: Instant| loop {
                if self
                    .stdout
                    .all()
                    .iter()
                    .any(|line| line.contains(PROBE_TRACE))
                {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if printed(Instant::now() + Duration::from_millis(300)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rotel-agent on {} never printed a span:\n{}",
                self.http,
                self.stdout.all().join("\n")
            );
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Every span printed so far, but the probes.
    fn spans(&self) -> Vec<Collected> {
        let mut spans = parse_spans(&self.stdout.all());
        spans.retain(|span| span.trace_id != PROBE_TRACE);
        spans
    }

    /// Waits up to `BOUND` for `count` spans matching `matches`.
    fn wait_for_spans(&self, count: usize, matches: impl Fn(&Collected) -> bool) -> Vec<Collected> {
        let deadline = Instant::now() + BOUND;
        loop {
            let found: Vec<Collected> = self.spans().into_iter().filter(&matches).collect();
            if found.len() >= count || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A process of the test's (collector, Prometheus), killed and reaped
/// when the test ends, passed or not.
struct KilledOnDrop(Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A socket bound to `address` (SO_REUSEADDR, for the collector's
/// connections still in TIME_WAIT) that never listens.
fn hold_port(address: SocketAddr) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(address) = address else {
        panic!("an IPv4 loopback address")
    };
    // SAFETY: plain socket calls on a descriptor this function owns, with a
    // sockaddr_in that lives across the call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let on: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut sockaddr: libc::sockaddr_in = std::mem::zeroed();
        sockaddr.sin_family = libc::AF_INET as libc::sa_family_t;
        sockaddr.sin_port = address.port().to_be();
        sockaddr.sin_addr.s_addr = u32::from_ne_bytes(address.ip().octets());
        let bound = libc::bind(
            fd,
            (&sockaddr as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(
            bound,
            0,
            "bind {address}: {}",
            std::io::Error::last_os_error()
        );
        owned
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// rotel's `--debug-log-verbosity detailed` text: a resource's attributes,
/// then its spans, each with its ids, name and attributes.
fn parse_spans(lines: &[String]) -> Vec<Collected> {
    let mut spans = Vec::new();
    let mut resource = BTreeMap::new();
    let mut in_resource = false;
    let mut current: Option<Collected> = None;
    let field = |line: &str, name: &str| {
        line.strip_prefix(name)
            .and_then(|rest| rest.trim_start().strip_prefix(':'))
            .map(|value| value.trim().to_owned())
    };
    for line in lines.iter().map(|line| line.trim()) {
        if line.starts_with("ResourceSpans #") {
            spans.extend(current.take());
            resource = BTreeMap::new();
        } else if line.starts_with("Resource attributes:") {
            in_resource = true;
        } else if line.starts_with("ScopeSpans #") || line.starts_with("Span #") {
            in_resource = false;
            spans.extend(current.take());
            if line.starts_with("Span #") {
                current = Some(Collected {
                    resource: resource.clone(),
                    ..Collected::default()
                });
            }
        } else if let Some(attribute) = line.strip_prefix("-> ") {
            let Some((key, value)) = attribute.split_once(": ") else {
                continue;
            };
            // Str(text) or Int(number).
            let value = value
                .split_once('(')
                .map_or(value, |(_, inner)| inner.strip_suffix(')').unwrap_or(inner));
            if in_resource {
                resource.insert(key.to_owned(), value.to_owned());
            } else if let Some(span) = &mut current {
                span.attributes.insert(key.to_owned(), value.to_owned());
            }
        } else if let Some(span) = &mut current {
            if let Some(value) = field(line, "Trace ID") {
                span.trace_id = value;
            } else if let Some(value) = field(line, "Parent ID") {
                span.parent_id = value;
            } else if let Some(value) = field(line, "ID") {
                span.span_id = value;
            } else if let Some(value) = field(line, "Name") {
                span.name = value;
            }
        }
    }
    spans.extend(current);
    spans
}

/// The service, exporting to `endpoint` as an operator configures any
/// OpenTelemetry SDK; `extra` adds or overrides variables.
fn traced_service(endpoint: &str, extra: &[(&str, &str)]) -> Service {
    let mut command = app_command();
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_SERVICE_NAME", "greeter")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.pod.name=app-1,k8s.namespace.name=shop",
        )
        .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
        .env("OTEL_TRACES_SAMPLER_ARG", "1.0")
        .env("APP__TRACING__BATCH_DELAY", "50ms")
        .env("APP__SERVER__DRAIN_DELAY", "0s");
    for (name, value) in extra {
        command.env(name, value);
    }
    Service::start(command)
}

fn get_with(service: &Service, path: &str, headers: &str) -> Response {
    request(
        service.addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tracing-test/1\r\n{headers}Connection: close\r\n\r\n",
            service.addr
        ),
    )
}

/// A caller's sampled trace with a fresh trace id: (header, trace id).
fn caller_trace(n: usize, sampled: bool) -> (String, String) {
    let trace_id = format!(
        "{:032x}",
        0x5eed_0000_0000_0000_0000_0000_0000_0000u128 + n as u128
    );
    let flags = if sampled { "01" } else { "00" };
    (
        format!("traceparent: 00-{trace_id}-00f067aa0ba902b7-{flags}\r\n"),
        trace_id,
    )
}

#[test]
fn spans_reach_a_real_collector_with_the_callers_trace_and_the_http_conventions() {
    let Some(rotel) = tool_or_skip("rotel-agent", SETUP) else {
        return;
    };
    let collector = Collector::start(&rotel, free_port());
    let service = traced_service(&collector.endpoint(), &[]);

    // A caller's sampled trace is continued; its tracestate passed on.
    let (sampled, sampled_trace) = caller_trace(1, true);
    let continued = get_with(
        &service,
        GET_ROUTE,
        &format!("{sampled}tracestate: rojo=00f067aa0ba902b7\r\n"),
    );
    // A caller that did not sample: the parent-based sampler drops it.
    let (unsampled, unsampled_trace) = caller_trace(2, false);
    let dropped = get_with(&service, GET_ROUTE, &unsampled);
    // No header, and an invalid one: new traces.
    let fresh = get_with(&service, GET_ROUTE, "");
    let invalid = get_with(
        &service,
        GET_ROUTE,
        "traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01\r\n",
    );
    let posted = request(
        service.addr,
        &format!(
            "POST {BODY_ROUTE} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{sampled}Connection: close\r\n\r\n{BODY}",
            service.addr,
            BODY.len()
        ),
    );
    for response in [&continued, &dropped, &fresh, &invalid, &posted] {
        assert_eq!(response.status, 200, "{response:?}");
    }

    // traceresponse: version 00, the trace, this span, the decision.
    let header = |response: &Response| {
        let value = response
            .header("traceresponse")
            .expect("a traceresponse header")
            .to_owned();
        let parts: Vec<String> = value.split('-').map(str::to_owned).collect();
        assert_eq!((parts.len(), parts[0].as_str()), (4, "00"), "{value}");
        parts
    };
    assert_eq!(header(&continued)[1], sampled_trace);
    assert_eq!(header(&continued)[3], "01");
    assert_eq!(header(&dropped)[1], unsampled_trace);
    assert_eq!(header(&dropped)[3], "00", "not sampled");
    for new in [&fresh, &invalid] {
        let parts = header(new);
        assert!(
            parts[1] != sampled_trace && parts[1] != "0".repeat(32),
            "{parts:?}"
        );
        assert_eq!(parts[3], "01");
    }

    // Four sampled requests, four spans; the unsampled one never arrives.
    let spans = collector.wait_for_spans(4, |_| true);
    assert_eq!(spans.len(), 4, "{spans:#?}\n{}", service.output());
    assert!(
        spans.iter().all(|span| span.trace_id != unsampled_trace),
        "a span for a request the sampler dropped: {spans:#?}"
    );
    let by_span: BTreeMap<&str, &Collected> = spans
        .iter()
        .map(|span| (span.span_id.as_str(), span))
        .collect();
    let span_of = |response: &Response| {
        let parts = header(response);
        let span = by_span
            .get(parts[2].as_str())
            .unwrap_or_else(|| panic!("no span {} at the collector: {spans:#?}", parts[2]));
        assert_eq!(span.trace_id, parts[1]);
        *span
    };
    let root = span_of(&continued);
    assert_eq!(
        root.parent_id, "00f067aa0ba902b7",
        "the caller's span is the parent"
    );
    assert_eq!(root.name, format!("GET {GET_ROUTE}"));
    for (key, value) in [
        ("http.request.method", "GET"),
        ("http.route", GET_ROUTE),
        ("http.response.status_code", "200"),
        ("url.path", GET_ROUTE),
        ("url.scheme", "http"),
        ("server.address", "127.0.0.1"),
        ("server.port", &service.addr.port().to_string()[..]),
        ("user_agent.original", "tracing-test/1"),
    ] {
        assert_eq!(
            root.attributes.get(key).map(String::as_str),
            Some(value),
            "{key}: {root:#?}"
        );
    }
    assert!(
        root.attributes.contains_key("http.response.body.size"),
        "{root:#?}"
    );
    for (key, value) in [
        ("service.name", "greeter"),
        ("service.version", env!("CARGO_PKG_VERSION")),
        ("k8s.pod.name", "app-1"),
        ("k8s.namespace.name", "shop"),
    ] {
        assert_eq!(
            root.resource.get(key).map(String::as_str),
            Some(value),
            "{key}: {root:#?}"
        );
    }
    assert_eq!(root.resource["service.instance.id"].len(), 32);
    assert!(root.resource.contains_key("vcs.ref.head.revision"));
    let post = span_of(&posted);
    assert_eq!(post.name, format!("POST {BODY_ROUTE}"));
    assert_eq!(
        post.attributes["http.request.body.size"],
        BODY.len().to_string()
    );
    for new in [&fresh, &invalid] {
        assert_eq!(span_of(new).parent_id, "", "a new trace has no parent");
    }

    // The request log lines carry the same ids.
    for response in [&continued, &dropped, &fresh, &invalid, &posted] {
        let parts = header(response);
        let line = service
            .stdout
            .wait_for(|line| line.contains(&format!("\"span_id\":\"{}\"", parts[2])));
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(line["trace_id"], parts[1].as_str(), "{line}");
    }

    // The latency histogram carries the sampled requests' trace ids.
    let metrics = service.get("/metrics").body;
    let exemplar = metrics
        .lines()
        .find(|line| {
            line.starts_with("http_request_duration_seconds_bucket")
                && line.contains(&format!("route=\"{BODY_ROUTE}\""))
                && line.contains(" # {trace_id=")
        })
        .unwrap_or_else(|| panic!("no exemplar on {BODY_ROUTE}'s buckets:\n{metrics}"));
    assert!(
        exemplar.contains(&format!(
            "trace_id=\"{sampled_trace}\",span_id=\"{}\"",
            header(&posted)[2]
        )),
        "{exemplar}"
    );
    assert_eq!(
        metric(
            &service,
            "app_trace_spans_dropped_total{reason=\"queue_full\"}"
        ),
        0.0
    );
}

#[test]
fn a_collector_that_goes_away_costs_no_request_drops_spans_and_is_used_again_when_back() {
    let Some(rotel) = tool_or_skip("rotel-agent", SETUP) else {
        return;
    };
    let address = free_port();
    let collector = Collector::start(&rotel, address);
    let service = traced_service(
        &collector.endpoint(),
        &[
            ("APP__TRACING__QUEUE_SIZE", "32"),
            ("APP__TRACING__BATCH_SIZE", "8"),
            ("APP__TRACING__EXPORT_TIMEOUT", "500ms"),
            ("APP__LOG__REQUESTS", "off"),
        ],
    );
    let (header, trace) = caller_trace(10, true);
    assert_eq!(get_with(&service, GET_ROUTE, &header).status, 200);
    assert_eq!(
        collector
            .wait_for_spans(1, |span| span.trace_id == trace)
            .len(),
        1
    );
    drop(collector);
    // The port stays this test's, bound but not listening: connections are
    // refused, as by a host whose collector is down, and no other test's
    // server can take the port meanwhile.
    let held = hold_port(address);

    // Down: every request is still answered, and spans are dropped, some
    // for a full queue (it is bounded), some for failed exports.
    let started = Instant::now();
    for n in 0..2_000 {
        let (header, _) = caller_trace(1_000 + n, true);
        assert_eq!(get_with(&service, GET_ROUTE, &header).status, 200);
    }
    println!(
        "2000 requests with the collector down: {:?}",
        started.elapsed()
    );
    let dropped = |reason: &str| {
        metric(
            &service,
            &format!("app_trace_spans_dropped_total{{reason=\"{reason}\"}}"),
        )
    };
    assert!(
        dropped("queue_full") > 0.0,
        "{}",
        service.get("/metrics").body
    );
    let deadline = Instant::now() + BOUND;
    while dropped("export_failed") == 0.0 {
        assert!(Instant::now() < deadline, "no failed export counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    service
        .stdout
        .wait_for(|line| line.contains("trace export failed: spans dropped"));

    // Back on the same address: spans flow again.
    drop(held);
    let collector = Collector::start(&rotel, address);
    let (header, trace) = caller_trace(9_999, true);
    let deadline = Instant::now() + BOUND;
    while Instant::now() < deadline && !collector.spans().iter().any(|span| span.trace_id == trace)
    {
        assert_eq!(get_with(&service, GET_ROUTE, &header).status, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        collector.spans().iter().any(|span| span.trace_id == trace),
        "no span reached the collector once it was back:\n{}\n{}\ncollector:\n{}",
        service.output(),
        service.get("/metrics").body,
        collector.stdout.all().join("\n")
    );
}

#[test]
fn an_upgrade_and_a_stop_export_what_was_queued_once() {
    let Some(rotel) = tool_or_skip("rotel-agent", SETUP) else {
        return;
    };
    let _descendants = become_subreaper();
    let collector = Collector::start(&rotel, free_port());
    // Spans wait in the queue: a batch would take a minute to fill.
    let service = traced_service(
        &collector.endpoint(),
        &[
            ("APP__TRACING__BATCH_DELAY", "60s"),
            ("APP__LOG__REQUESTS", "off"),
        ],
    );
    let send = |from: usize, count: usize| -> Vec<String> {
        (from..from + count)
            .map(|n| {
                let (header, trace) = caller_trace(n, true);
                assert_eq!(get_with(&service, GET_ROUTE, &header).status, 200);
                trace
            })
            .collect()
    };
    let before_upgrade = send(100, 40);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        collector.spans().is_empty(),
        "the batch delay should hold them"
    );

    service.signal("HUP");
    let line = service
        .stdout
        .wait_for(|line| line.contains("\"upgrade complete"));
    let new_pid: u32 = serde_json::from_str::<serde_json::Value>(&line).unwrap()["new_pid"]
        .as_u64()
        .unwrap() as u32;
    // The old process exports its queue on its way out.
    let flushed = collector.wait_for_spans(40, |span| before_upgrade.contains(&span.trace_id));
    assert_eq!(flushed.len(), 40, "{}", service.output());

    let before_stop = send(200, 25);
    send_signal(new_pid, libc::SIGTERM);
    let flushed = collector.wait_for_spans(25, |span| before_stop.contains(&span.trace_id));
    assert_eq!(flushed.len(), 25, "{}", service.output());

    // Each exactly once.
    std::thread::sleep(Duration::from_millis(300));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for span in collector.spans() {
        *counts.entry(span.trace_id).or_default() += 1;
    }
    assert_eq!(counts.len(), 65, "{counts:?}");
    assert!(
        counts.values().all(|count| *count == 1),
        "exported twice: {counts:?}"
    );
}

#[test]
fn a_real_prometheus_scrapes_the_trace_ids_off_the_latency_histogram() {
    let Some(prometheus) = tool_or_skip(
        "prometheus",
        "apt-get install --no-install-recommends prometheus",
    ) else {
        return;
    };
    let Some(rotel) = tool_or_skip("rotel-agent", SETUP) else {
        return;
    };
    let collector = Collector::start(&rotel, free_port());
    let service = traced_service(&collector.endpoint(), &[("APP__LOG__REQUESTS", "off")]);
    let (header, trace) = caller_trace(77, true);
    assert_eq!(get_with(&service, GET_ROUTE, &header).status, 200);

    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['{}']\n",
            service.addr
        ),
    )
    .unwrap();
    let web = free_port();
    let mut server = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            scratch.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .arg("--enable-feature=exemplar-storage")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start prometheus");
    let log = Lines::default();
    log.clone().collect(server.stderr.take().unwrap());
    let _server = KilledOnDrop(server);

    // The exemplar query API, until a scrape has stored the trace's.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let query = format!(
        "GET /api/v1/query_exemplars?query=http_request_duration_seconds_bucket&start={}&end={} HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n",
        now - 600,
        now + 600
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let answer = TcpStream::connect(web).ok().map(|mut stream| {
            stream.set_read_timeout(Some(BOUND)).unwrap();
            stream.write_all(query.as_bytes()).unwrap();
            read_response(&mut stream)
        });
        if let Some(answer) = answer.filter(|answer| answer.status == 200)
            && answer.body.contains(&trace)
        {
            break answer.json();
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus returned no exemplar with trace {trace} within 30 s:\n{}",
            log.all().join("\n")
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let series = found["data"].as_array().expect("a list of series");
    let with_trace: Vec<&serde_json::Value> = series
        .iter()
        .filter(|series| {
            series["exemplars"].as_array().is_some_and(|exemplars| {
                exemplars
                    .iter()
                    .any(|exemplar| exemplar["labels"]["trace_id"] == trace.as_str())
            })
        })
        .collect();
    assert!(
        with_trace
            .iter()
            .any(|series| series["seriesLabels"]["route"] == GET_ROUTE
                && series["seriesLabels"]["job"] == "app"),
        "{found:#}"
    );
}
