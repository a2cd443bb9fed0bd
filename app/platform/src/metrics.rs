//! Prometheus metrics: requests by method, route and status, their latency,
//! requests in flight, connections (open, closed by the server's limits,
//! failed accepts), `app_build_info`, and the standard `process_*` metrics
//! read from `/proc` at scrape time.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::build_info::BuildInfo;

/// Latency buckets in seconds, from 0.5 ms (a cached answer) to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: &'static str,
    /// The route template (`/users/{id}`), never the raw path, so that the
    /// number of series stays bounded.
    pub route: &'static str,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
    branch: &'static str,
    target: &'static str,
}

/// Why the server closed a connection on its own.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Shed {
    /// The request's headers did not arrive within `header_read_timeout`.
    HeaderTimeout,
    /// No request for `idle_timeout`.
    IdleTimeout,
    /// Closed to make room for a new connection (connection limit, or out
    /// of descriptors).
    Evicted,
    /// A new connection closed at once: at the limit, every open connection
    /// had a request in progress.
    Refused,
}

impl Shed {
    const ALL: [Shed; 4] = [
        Shed::HeaderTimeout,
        Shed::IdleTimeout,
        Shed::Evicted,
        Shed::Refused,
    ];

    fn label(self) -> &'static str {
        match self {
            Shed::HeaderTimeout => "header_timeout",
            Shed::IdleTimeout => "idle_timeout",
            Shed::Evicted => "evicted",
            Shed::Refused => "refused",
        }
    }
}

/// What kind of error an `accept` failed with.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum AcceptError {
    /// EMFILE: the process is out of descriptors (`LimitNOFILE=`).
    ProcessDescriptors,
    /// ENFILE: the system is out of descriptors.
    SystemDescriptors,
    /// ENOBUFS or ENOMEM.
    Memory,
    /// The client went away before it was accepted (ECONNABORTED and the
    /// like); harmless.
    Aborted,
    Other,
}

impl AcceptError {
    const ALL: [AcceptError; 5] = [
        AcceptError::ProcessDescriptors,
        AcceptError::SystemDescriptors,
        AcceptError::Memory,
        AcceptError::Aborted,
        AcceptError::Other,
    ];

    pub fn of(err: &std::io::Error) -> AcceptError {
        #[cfg(unix)]
        match err.raw_os_error() {
            Some(libc::EMFILE) => return AcceptError::ProcessDescriptors,
            Some(libc::ENFILE) => return AcceptError::SystemDescriptors,
            Some(libc::ENOBUFS | libc::ENOMEM) => return AcceptError::Memory,
            _ => {}
        }
        match err.kind() {
            std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted => AcceptError::Aborted,
            _ => AcceptError::Other,
        }
    }

    /// Whether retrying at once would fail the same way.
    pub fn is_exhaustion(self) -> bool {
        matches!(
            self,
            AcceptError::ProcessDescriptors | AcceptError::SystemDescriptors | AcceptError::Memory
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            AcceptError::ProcessDescriptors => "emfile",
            AcceptError::SystemDescriptors => "enfile",
            AcceptError::Memory => "nomem",
            AcceptError::Aborted => "aborted",
            AcceptError::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The per-request metrics (`http_requests_total`, the latency histogram
/// and `http_requests_in_flight`), kept per thread and added up at scrape.
/// Every worker answers the same few series (a route's 200s): shared
/// counters, even atomic ones, would move their cache lines between CPUs
/// on every request, and prometheus-client's `Family` takes a read lock
/// that every worker writes to. A shard is written by its own thread only
/// (its mutex is taken by the scrape, rarely).
#[derive(Debug)]
struct RequestShards {
    /// Tells apart the `Metrics` of one process (tests make several).
    id: u64,
    shards: Mutex<Vec<Arc<RequestShard>>>,
}

#[derive(Debug, Default)]
struct RequestShard {
    /// Requests started minus requests ended on this thread; only the sum
    /// over the shards means anything (a request may end on another thread).
    in_flight: AtomicI64,
    series: Mutex<HashMap<HttpLabels, Series>>,
}

/// One series' count and latency histogram.
#[derive(Debug, Clone, Default)]
struct Series {
    requests: u64,
    /// Observations per bucket of `LATENCY_BUCKETS`, then above the last.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// The sum, in nanoseconds (584 years before it wraps).
    sum_nanos: u64,
    /// The latest sampled request's trace per bucket, with its latency
    /// (OpenMetrics exemplars).
    exemplars: [Option<(Exemplar, f64)>; LATENCY_BUCKETS.len() + 1],
}

/// The trace of a sampled request, attached to the histogram bucket its
/// latency fell in, so that a latency spike links to a trace.
#[derive(Debug, Clone, Copy)]
pub struct Exemplar {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// When the request ended, in milliseconds since the epoch.
    pub unix_millis: u64,
}

impl Series {
    fn observe(&mut self, elapsed: Duration, exemplar: Option<Exemplar>) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|upper| seconds <= *upper)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.requests += 1;
        self.buckets[bucket] += 1;
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos = self.sum_nanos.wrapping_add(nanos);
        if let Some(exemplar) = exemplar {
            self.exemplars[bucket] = Some((exemplar, seconds));
        }
    }

    fn add(&mut self, other: &Series) {
        self.requests += other.requests;
        for (total, count) in self.buckets.iter_mut().zip(other.buckets) {
            *total += count;
        }
        self.sum_nanos = self.sum_nanos.wrapping_add(other.sum_nanos);
        // The newest exemplar of each bucket over the shards.
        for (mine, theirs) in self.exemplars.iter_mut().zip(&other.exemplars) {
            let newer = match (&mine, theirs) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some((mine, _)), Some((theirs, _))) => theirs.unix_millis > mine.unix_millis,
            };
            if newer {
                *mine = *theirs;
            }
        }
    }
}

thread_local! {
    /// This thread's shard of each `RequestShards` it has written to, by id.
    static LOCAL_SHARDS: RefCell<Vec<(u64, Arc<RequestShard>)>> = const { RefCell::new(Vec::new()) };
}

impl RequestShards {
    fn new() -> RequestShards {
        static IDS: AtomicU64 = AtomicU64::new(0);
        RequestShards {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            shards: Mutex::default(),
        }
    }

    /// Runs `write` with this thread's shard, made on the thread's first
    /// request.
    fn with_local<T>(&self, write: impl FnOnce(&RequestShard) -> T) -> T {
        LOCAL_SHARDS.with(|local| {
            if let Some((_, shard)) = local.borrow().iter().find(|(id, _)| *id == self.id) {
                return write(shard);
            }
            let shard = Arc::new(RequestShard::default());
            self.shards
                .lock()
                .expect("request metric shards")
                .push(shard.clone());
            local.borrow_mut().push((self.id, shard.clone()));
            write(&shard)
        })
    }

    fn observe(&self, labels: &HttpLabels, elapsed: Duration, exemplar: Option<Exemplar>) {
        self.with_local(|shard| {
            let mut series = shard.series.lock().expect("request metric series");
            // Found without cloning the labels on all but a series' first
            // request.
            if let Some(series) = series.get_mut(labels) {
                series.observe(elapsed, exemplar);
            } else {
                series
                    .entry(labels.clone())
                    .or_default()
                    .observe(elapsed, exemplar);
            }
        });
    }

    fn in_flight(&self) -> i64 {
        let shards = self.shards.lock().expect("request metric shards");
        shards
            .iter()
            .map(|shard| shard.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    /// Every series, added up over the shards, in label order.
    fn merged(&self) -> Vec<(HttpLabels, Series)> {
        let mut merged: HashMap<HttpLabels, Series> = HashMap::new();
        let shards = self.shards.lock().expect("request metric shards").clone();
        for shard in shards {
            let series = shard.series.lock().expect("request metric series");
            for (labels, series) in series.iter() {
                merged.entry(labels.clone()).or_default().add(series);
            }
        }
        let mut merged: Vec<_> = merged.into_iter().collect();
        merged.sort_by(|(left, _), (right, _)| left.cmp(right));
        merged
    }
}

/// `LATENCY_BUCKETS` as prometheus-client writes them in `le` labels.
const LATENCY_BOUNDS: [&str; LATENCY_BUCKETS.len()] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0",
    "2.5", "5.0", "10.0",
];

impl RequestShards {
    /// The request metrics in the OpenMetrics text format, as
    /// prometheus-client writes a `Family` of `Counter`s, one of `Histogram`s
    /// and a `Gauge` (a test compares them). Written here rather than through
    /// its encoder, whose generic code came to 16 KB of the binary.
    fn write_text(&self, text: &mut String) {
        use std::fmt::Write as _;
        let merged = self.merged();
        let labels = |text: &mut String, series: &HttpLabels, le: Option<&str>| {
            text.push('{');
            if let Some(le) = le {
                let _ = write!(text, "le=\"{le}\",");
            }
            text.push_str("method=\"");
            push_label_value(text, series.method);
            text.push_str("\",route=\"");
            push_label_value(text, series.route);
            let _ = write!(text, "\",status=\"{}\"}}", series.status);
        };
        text.push_str(
            "# HELP http_requests HTTP requests answered, by method, route and status.\n\
             # TYPE http_requests counter\n",
        );
        for (series_labels, series) in &merged {
            text.push_str("http_requests_total");
            labels(text, series_labels, None);
            let _ = writeln!(text, " {}", series.requests);
        }
        text.push_str(
            "# HELP http_request_duration_seconds Time from request to response, by method, route and status.\n\
             # TYPE http_request_duration_seconds histogram\n\
             # UNIT http_request_duration_seconds seconds\n",
        );
        for (series_labels, series) in &merged {
            text.push_str("http_request_duration_seconds_sum");
            labels(text, series_labels, None);
            let _ = writeln!(text, " {:?}", series.sum_nanos as f64 / 1e9);
            text.push_str("http_request_duration_seconds_count");
            labels(text, series_labels, None);
            let _ = writeln!(text, " {}", series.requests);
            let mut cumulative = 0;
            for (index, count) in series.buckets.iter().enumerate() {
                cumulative += count;
                text.push_str("http_request_duration_seconds_bucket");
                let le = LATENCY_BOUNDS.get(index).copied().unwrap_or("+Inf");
                labels(text, series_labels, Some(le));
                let _ = write!(text, " {cumulative}");
                if let Some((exemplar, seconds)) = &series.exemplars[index] {
                    use crate::traces::Hex;
                    let _ = write!(
                        text,
                        " # {{trace_id=\"{}\",span_id=\"{}\"}} {seconds:?} {}.{:03}",
                        Hex::<32>::of(&exemplar.trace_id).as_str(),
                        Hex::<16>::of(&exemplar.span_id).as_str(),
                        exemplar.unix_millis / 1000,
                        exemplar.unix_millis % 1000
                    );
                }
                text.push('\n');
            }
        }
        let _ = write!(
            text,
            "# HELP http_requests_in_flight HTTP requests being handled now.\n\
             # TYPE http_requests_in_flight gauge\n\
             http_requests_in_flight {}\n",
            self.in_flight()
        );
    }
}

/// A label value, escaped as the text format requires.
fn push_label_value(text: &mut String, value: &str) {
    for character in value.chars() {
        match character {
            '\\' => text.push_str("\\\\"),
            '"' => text.push_str("\\\""),
            '\n' => text.push_str("\\n"),
            other => text.push(other),
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Arc<RequestShards>,
    connections_open: Gauge,
    shed: Family<ReasonLabels, Counter>,
    accept_errors: Family<KindLabels, Counter>,
    ready: Gauge,
    upgrades_failed: Counter,
}

impl Metrics {
    pub fn new(build: &BuildInfo) -> Metrics {
        let mut registry = Registry::default();
        let requests = Arc::new(RequestShards::new());
        let connections_open = Gauge::default();
        registry.register(
            "http_connections_open",
            "Client connections open now, idle keep-alive ones included",
            connections_open.clone(),
        );
        let shed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "http_connections_shed",
            "Connections the server closed on its own, by reason: header_timeout, idle_timeout, evicted (to make room), refused (at the limit)",
            shed.clone(),
        );
        let accept_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "http_accept_errors",
            "Failed accepts, by kind: emfile, enfile, nomem, aborted, other",
            accept_errors.clone(),
        );
        // Every series exists from the start, so that rates and alerts see
        // a zero instead of nothing.
        for reason in Shed::ALL {
            drop(shed.get_or_create(&ReasonLabels {
                reason: reason.label(),
            }));
        }
        for kind in AcceptError::ALL {
            drop(accept_errors.get_or_create(&KindLabels { kind: kind.label() }));
        }
        let ready = Gauge::default();
        registry.register(
            "app_ready",
            "1 while /readyz answers 200; 0 while starting or draining",
            ready.clone(),
        );
        let upgrades_failed = Counter::default();
        registry.register(
            "app_upgrades_failed",
            "Upgrades (SIGHUP) after which this process kept serving because the new one failed",
            upgrades_failed.clone(),
        );
        registry.register(
            "app_build",
            "The build this process runs, from its version stamp",
            Info::new(BuildLabels {
                version: build.version,
                commit: build.commit,
                branch: build.branch,
                target: build.target,
            }),
        );
        registry.register_collector(Box::new(ProcessCollector));
        registry.register_collector(Box::new(LogCollector));
        Metrics {
            registry,
            requests,
            connections_open,
            shed,
            accept_errors,
            ready,
            upgrades_failed,
        }
    }

    /// Counts a request answered, with its latency.
    /// Adds a metric of the business part's to what `/metrics` shows.
    pub fn register(
        &mut self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry.register(name, help, metric);
    }

    /// `exemplar`: the request's trace, if it was sampled.
    pub fn observe(&self, labels: &HttpLabels, elapsed: Duration, exemplar: Option<Exemplar>) {
        self.requests.observe(labels, elapsed, exemplar);
    }

    /// Counts a request in `http_requests_in_flight` until `request_ended`.
    pub fn request_started(&self) {
        self.requests
            .with_local(|shard| shard.in_flight.fetch_add(1, Ordering::Relaxed));
    }

    pub fn request_ended(&self) {
        self.requests
            .with_local(|shard| shard.in_flight.fetch_sub(1, Ordering::Relaxed));
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> i64 {
        self.requests.in_flight()
    }

    pub fn connections_open(&self) -> &Gauge {
        &self.connections_open
    }

    pub fn shed(&self, reason: Shed) {
        self.shed
            .get_or_create(&ReasonLabels {
                reason: reason.label(),
            })
            .inc();
    }

    pub fn accept_failed(&self, kind: AcceptError) {
        self.accept_errors
            .get_or_create(&KindLabels { kind: kind.label() })
            .inc();
    }

    pub fn ready(&self) -> &Gauge {
        &self.ready
    }

    pub fn upgrades_failed(&self) -> &Counter {
        &self.upgrades_failed
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut text = String::with_capacity(8 * 1024);
        encode_registry(&mut text, &self.registry).expect("writing to a String cannot fail");
        self.requests.write_text(&mut text);
        encode_eof(&mut text).expect("writing to a String cannot fail");
        text
    }
}

/// A `&'static str` for a route template. Templates come from the router, so
/// there are only as many as the service defines routes; each is leaked once.
pub fn intern_route(route: &str) -> &'static str {
    static ROUTES: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let routes = ROUTES.get_or_init(Default::default);
    if let Some(known) = routes.read().expect("route table lock").get(route) {
        return known;
    }
    let mut routes = routes.write().expect("route table lock");
    if let Some(known) = routes.get(route) {
        return known;
    }
    let leaked: &'static str = Box::leak(route.to_owned().into_boxed_str());
    routes.insert(leaked);
    leaked
}

/// Log lines dropped because stdout could not keep up, and request lines
/// dropped by the request log's rate limit (see `logging`).
#[derive(Debug)]
struct LogCollector;

impl Collector for LogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let dropped = ConstCounter::new(crate::logging::dropped_lines());
        dropped.encode(encoder.encode_descriptor(
            "app_log_lines_dropped",
            "Log lines dropped because stdout could not keep up",
            None,
            dropped.metric_type(),
        )?)?;
        let limited = ConstCounter::new(crate::logging::request_lines_dropped());
        limited.encode(encoder.encode_descriptor(
            "app_log_request_lines_dropped",
            "Request log lines dropped by log.requests_per_second",
            None,
            limited.metric_type(),
        )?)
    }
}

/// `process_*` metrics as the Prometheus client libraries name them, read
/// from `/proc/self` on each scrape. On systems without `/proc` it reports
/// nothing.
#[derive(Debug)]
struct ProcessCollector;

/// Linux reports CPU times in clock ticks of `USER_HZ`, which is 100 on every
/// architecture this service is built for.
const TICKS_PER_SECOND: f64 = 100.0;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(process) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(process.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                process.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                process.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                process.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                process.max_fds as f64,
            ),
        ];
        let start_time = process.start_time.map(|start| {
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                start,
            )
        });
        for (name, help, value) in gauges.into_iter().chain(start_time) {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: u64,
    /// Needs the boot time from `/proc/stat`, which a sandbox may hide
    /// (systemd's `ProcSubset=pid`).
    start_time: Option<f64>,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let system = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        ProcessStats::parse(&stat, &status, &limits, &system, open_fds)
    }

    fn parse(
        stat: &str,
        status: &str,
        limits: &str,
        system: &str,
        open_fds: u64,
    ) -> Option<ProcessStats> {
        // The command name in parentheses may hold spaces: count fields from
        // after its closing parenthesis, where field 3 (state) is index 0.
        let fields: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
        let (user_ticks, system_ticks, start_ticks, virtual_bytes) =
            (field(14)?, field(15)?, field(22)?, field(23)?);
        let resident_kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        let max_fds = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))?
            .split_whitespace()
            .nth(3)?
            .parse()
            .ok()?;
        let boot_time: Option<u64> = system
            .lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|value| value.trim().parse().ok());
        Some(ProcessStats {
            cpu_seconds: (user_ticks + system_ticks) as f64 / TICKS_PER_SECOND,
            resident_bytes: resident_kib * 1024,
            virtual_bytes,
            open_fds,
            max_fds,
            start_time: boot_time.map(|boot| boot as f64 + start_ticks as f64 / TICKS_PER_SECOND),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Observations made on several threads encode as prometheus-client's
    /// own `Family`s of counters and histograms with the same buckets would
    /// (the sums aside, which those add up in floating point).
    #[test]
    fn request_metrics_from_every_thread_encode_like_prometheus_clients_own() {
        use prometheus_client::metrics::counter::Counter;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::metrics::histogram::Histogram;
        let root = HttpLabels {
            method: "GET",
            route: "/",
            status: 200,
        };
        let missing = HttpLabels {
            method: "GET",
            route: "unmatched",
            status: 404,
        };
        let observations = [
            (&root, 0.0003),
            (&root, 0.0005),
            (&missing, 0.002),
            (&root, 0.0021),
            (&missing, 0.7),
            (&root, 10.0),
            (&root, 20.0),
        ];
        let ours = Metrics::new(crate::build_info::get());
        // Each observation on a thread of its own, one in flight on another.
        std::thread::scope(|scope| {
            for (labels, seconds) in observations {
                let ours = &ours;
                scope.spawn(move || ours.observe(labels, Duration::from_secs_f64(seconds), None));
            }
            scope.spawn(|| ours.request_started());
        });
        let requests = Family::<HttpLabels, Counter>::default();
        let latency = Family::<HttpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        for (labels, seconds) in observations {
            requests.get_or_create(labels).inc();
            latency.get_or_create(labels).observe(seconds);
        }
        let mut registry = Registry::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests,
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from request to response, by method, route and status",
            prometheus_client::registry::Unit::Seconds,
            latency,
        );
        let in_flight = Gauge::<i64>::default();
        in_flight.set(1);
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being handled now",
            in_flight,
        );
        let mut theirs = String::new();
        prometheus_client::encoding::text::encode(&mut theirs, &registry).unwrap();
        let ours = ours.encode();
        // prometheus-client writes a family's series in hash order.
        let request_lines = |text: &str| -> Vec<String> {
            let mut lines: Vec<String> = text
                .lines()
                .filter(|line| line.contains("http_request") && !line.contains("_sum"))
                .map(str::to_owned)
                .collect();
            lines.sort();
            lines
        };
        assert_eq!(request_lines(&ours), request_lines(&theirs), "{ours}");
        assert!(
            ours.contains(
                "http_request_duration_seconds_bucket{le=\"+Inf\",method=\"GET\",route=\"/\",status=\"200\"} 5"
            ),
            "{ours}"
        );
        assert!(ours.contains("http_requests_in_flight 1"), "{ours}");
        let sum: f64 = ours
            .lines()
            .find_map(|line| {
                line.strip_prefix(
                    "http_request_duration_seconds_sum{method=\"GET\",route=\"/\",status=\"200\"} ",
                )
            })
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 30.0029).abs() < 1e-6, "{ours}");
    }

    #[test]
    fn process_stats_are_parsed_from_proc_files() {
        let stat = "4242 (app (worker)) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 50 0 0 20 0 3 0 12345 987654321 612 18446744073709551615";
        let status = "Name:\tapp\nVmPeak:\t  10000 kB\nVmRSS:\t    2448 kB\nThreads:\t3\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        let system = "cpu  1 2 3\nbtime 1764000000\nprocesses 10\n";
        assert_eq!(
            ProcessStats::parse(stat, status, limits, system, 9),
            Some(ProcessStats {
                cpu_seconds: 2.0,
                resident_bytes: 2448 * 1024,
                virtual_bytes: 987_654_321,
                open_fds: 9,
                max_fds: 1024,
                start_time: Some(1_764_000_123.45),
            })
        );
        let sandboxed =
            ProcessStats::parse(stat, status, limits, "", 9).expect("everything but /proc/stat");
        assert_eq!(sandboxed.start_time, None);
        assert_eq!(
            ProcessStats::parse("garbage", status, limits, system, 9),
            None
        );
    }

    #[test]
    fn the_real_process_is_readable() {
        let stats = ProcessStats::read().expect("/proc/self is readable on Linux");
        assert!(
            stats.resident_bytes > 0
                && stats.open_fds > 0
                && stats.start_time.is_some_and(|start| start > 1.0e9),
            "{stats:?}"
        );
    }

    #[test]
    fn routes_are_interned_once() {
        let first = intern_route("/things/{id}");
        let second = intern_route(&String::from("/things/{id}"));
        assert!(std::ptr::eq(first, second));
    }
}
