//! Accepting and running the HTTP connections, with the limits that keep
//! slow, idle and abusive clients from starving the others:
//!
//! - A request's headers must arrive within `header_read_timeout`, counted
//!   from when the connection opened for its first request, and from the
//!   first byte of each later one.
//! - A keep-alive connection with no request for `idle_timeout` is closed.
//! - At most `max_connections` are open. Past it, a new connection makes
//!   room by closing one without a request in progress: the one that has
//!   waited longest for its headers, else the one idle the longest. If
//!   every open one has a request in progress, the new one is answered 503
//!   and closed. Either way, requests in progress are never cut, and a
//!   health probe still gets through while a flood of half-open
//!   connections holds the limit. Connections accepted in a burst and not
//!   yet read from are given a moment (up to about 20 ms) to show what they
//!   are before one is chosen.
//! - A failed accept (mostly: out of descriptors) is counted, logged at most
//!   once a second, makes room like the connection limit does (sparing
//!   connections not yet read from), and is retried only once a connection
//!   closes or 100 ms pass, so it never spins.
//!
//! - A connection waiting for its next request is parked within a second:
//!   it keeps its socket and its bookkeeping, and hyper's connection and
//!   its buffers (16 KiB) go until the next request's first bytes arrive
//!   (see `drive`).
//!
//! Request bodies and handlers are bounded by `request_timeout`, in `http`.
//! The timers cost nothing per request: a connection's phase (not yet read
//! from, waiting for headers, handling a request, idle) lives in one atomic
//! word that its stream and its service update, and the connection's task
//! wakes only at the earliest deadline the phase allows, and sleeps again if
//! the connection has moved on since.
//!
//! Shutdown: accepting stops, and this process closes its listening socket,
//! at `State::Stopped`. At `State::Closing`, connections without a request
//! in progress close at once and the others after their response; a
//! request whose bytes are in the socket counts as in progress, and a
//! connection that has not received a byte yet gets its first request
//! served first (closing it would answer that request with a reset).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::Context as _;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::Response;
use http_body::Body as _;
use hyper::body::{Buf, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::lifecycle::{Lifecycle, State};
use crate::metrics::{AcceptError, Metrics, Shed};
use crate::workers::{Open, Workers};

/// The connection settings, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// The longest a failed accept waits for a connection to close before it
/// tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How many times a new connection at the limit lets the connections not
/// yet read from run before it goes on without them (about 20 ms).
const ADMIT_RETRIES: u32 = 20;

/// Log lines about failed accepts are at most this frequent.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// What a connection refused at the limit gets before it is closed, so that
/// a client sees why instead of a reset.
const REFUSED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// The HTTP server: accepts, admits within the limits, and runs each
/// connection in a task of its own.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    limits: Limits,
    /// A router per worker, each with application state of its own, so
    /// that the reference counts a request takes and drops stay on its
    /// worker's CPU instead of one cache line that every worker writes.
    routers: Vec<Router>,
    http: http1::Builder,
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
    workers: Arc<Workers>,
    next_id: AtomicU64,
    /// Shared by the workers' accept loops, which see the same failures.
    accept_failures: Mutex<AcceptFailures>,
    table: Mutex<Table>,
    /// Woken whenever a connection closes.
    closed: Notify,
}

impl Server {
    pub fn new(
        limits: Limits,
        make_router: impl Fn() -> Router,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
        workers: Arc<Workers>,
    ) -> Server {
        let mut http = http1::Builder::new();
        // No hyper timer: hyper's own header timeout would also cut idle
        // keep-alive connections, which `idle_timeout` governs here.
        http.keep_alive(true);
        // Headers and body copied into one buffer and sent with one plain
        // write instead of a `writev` of two: the bodies here are small, and
        // it answered 2-3% more requests in three alternating runs.
        http.writev(false);
        Server {
            shared: Arc::new(Shared {
                limits,
                routers: (0..workers.len()).map(|_| make_router()).collect(),
                http,
                lifecycle,
                metrics,
                workers,
                next_id: AtomicU64::new(0),
                accept_failures: Mutex::default(),
                table: Mutex::new(Table::default()),
                closed: Notify::new(),
            }),
        }
    }

    /// Accepts on every worker until the lifecycle reaches `Stopped`, then
    /// closes the listening socket and returns once every connection has
    /// closed.
    pub async fn run(self, listener: std::net::TcpListener) -> anyhow::Result<()> {
        let shared = &self.shared;
        // The first worker takes the socket itself (systemd's descriptor 3
        // stays the one in use), the others a duplicate each.
        let duplicates = (1..shared.workers.len())
            .map(|index| {
                listener
                    .try_clone()
                    .with_context(|| format!("duplicate the listening socket for worker {index}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let listeners = std::iter::once(listener).chain(duplicates);
        let mut loops = Vec::new();
        for (index, listener) in listeners.enumerate() {
            let server = self.clone();
            let handle = shared.workers.handle(index);
            // Registered with the worker's poller from its own thread.
            loops.push(handle.spawn(async move {
                let listener = TcpListener::from_std(listener)
                    .with_context(|| format!("register the listening socket on worker {index}"))?;
                server.accept(index, listener).await;
                anyhow::Ok(())
            }));
        }
        let mut outcome = Ok(());
        for accept_loop in loops {
            match accept_loop.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    outcome = Err(err);
                    shared.lifecycle.advance(State::Stopped);
                }
                Err(join) => {
                    outcome = Err(anyhow::anyhow!(join).context("an accept loop"));
                    shared.lifecycle.advance(State::Stopped);
                }
            }
        }
        info!("stopped accepting");
        self.all_closed().await;
        outcome
    }

    /// The accept loop of worker `index`: takes a connection whenever it is
    /// the worker's turn (see `workers`), and runs it on this worker.
    async fn accept(&self, index: usize, listener: TcpListener) {
        let shared = &self.shared;
        let stopped = shared.lifecycle.reached(State::Stopped);
        tokio::pin!(stopped);
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut stopped => break,
                () = shared.workers.turn(index) => tokio::select! {
                    biased;
                    () = &mut stopped => break,
                    accepted = listener.accept() => accepted,
                },
            };
            match accepted {
                Ok((stream, _peer)) => {
                    shared.accept_failures().succeeded();
                    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                    self.admit(stream, id, index).await;
                }
                Err(err) => {
                    let kind = AcceptError::of(&err);
                    shared.metrics.accept_failed(kind);
                    shared.accept_failures().failed(&err, kind);
                    if kind.is_exhaustion() {
                        self.make_room();
                        let closed = shared.closed.notified();
                        let _ = tokio::time::timeout(ACCEPT_RETRY, closed).await;
                    }
                }
            }
        }
    }

    /// Returns once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.shared.closed.notified();
            tokio::pin!(closed);
            // Registered before the check, so a close in between is seen.
            closed.as_mut().enable();
            if self.shared.table().connections.is_empty() {
                return;
            }
            closed.await;
        }
    }

    async fn admit(&self, stream: TcpStream, id: u64, worker: usize) {
        let shared = &self.shared;
        // Small responses go out at once instead of waiting for an ACK.
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new(Instant::now()));
        let mut attempts = 0;
        loop {
            let admission = {
                let mut table = shared.table();
                let admission = table.admit(
                    shared.limits.max_connections,
                    attempts < ADMIT_RETRIES,
                    &shared.metrics,
                );
                if admission == Admission::Admitted {
                    table.connections.insert(id, activity.clone());
                }
                admission
            };
            match admission {
                Admission::Admitted => break,
                Admission::Refused => {
                    shared.metrics.shed(Shed::Refused);
                    // Best effort and never waiting: the socket buffer of a
                    // new connection has room for these few bytes.
                    let _ = stream.try_write(REFUSED);
                    return;
                }
                Admission::LookAgain => {
                    attempts += 1;
                    // Their tasks are queued behind this one: a yield is
                    // mostly enough; on a loaded machine, a short sleep.
                    if attempts <= 2 {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }
        shared.metrics.connections_open().inc();
        let registered = Registered {
            shared: self.shared.clone(),
            id,
            on_worker: shared.workers.open(worker),
        };
        tokio::spawn(drive(registered, stream, activity));
    }

    /// Closes the connection that has waited longest without a request in
    /// progress, if there is one and none is closing already: used when
    /// descriptors run out.
    fn make_room(&self) {
        let mut table = self.shared.table();
        if table.evicting == 0 {
            table.evict_one(false, &self.shared.metrics);
        }
    }
}

impl Shared {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().expect("connection table")
    }

    fn accept_failures(&self) -> std::sync::MutexGuard<'_, AcceptFailures> {
        self.accept_failures.lock().expect("accept failures")
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Admission {
    Admitted,
    LookAgain,
    Refused,
}

/// The open connections, touched once when each opens and once when it
/// closes, never per request.
#[derive(Default)]
struct Table {
    connections: HashMap<u64, Arc<Activity>>,
    /// Connections asked to close to make room that have not closed yet.
    evicting: usize,
}

impl Table {
    /// Whether a new connection may open: when the open ones, not counting
    /// those already closing to make room, are below the limit, or else once
    /// one more is asked to close. So a burst of new connections never asks
    /// more to close than it needs. Connections just accepted (in a burst)
    /// and not yet read from may be waiting for their headers and so be the
    /// ones to close: while there are some, and `may_wait`, the caller is
    /// asked to let them run and look again.
    fn admit(&mut self, max_connections: usize, may_wait: bool, metrics: &Metrics) -> Admission {
        if self.connections.len() - self.evicting < max_connections {
            Admission::Admitted
        } else if may_wait && self.has_unread() {
            Admission::LookAgain
        } else if self.evict_one(true, metrics) {
            Admission::Admitted
        } else {
            Admission::Refused
        }
    }

    /// Asks one connection without a request in progress to close: the one
    /// that has waited longest for its headers, else the one idle the
    /// longest (keep-alive clients are ready for an idle connection to
    /// close; a connection that has not sent its headers is more likely a
    /// slow or abusive client). With `include_unread`, a connection not yet
    /// read from counts as waiting for its headers since it opened. False if
    /// there is none.
    fn evict_one(&mut self, include_unread: bool, metrics: &Metrics) -> bool {
        let oldest = self
            .connections
            .values()
            .filter(|activity| !activity.evicted.load(Ordering::Relaxed))
            .filter_map(|activity| match activity.load() {
                (Phase::Busy, _) => None,
                (Phase::New, _) if !include_unread => None,
                (Phase::New | Phase::Head, since) => Some(((0, since), activity)),
                (Phase::Idle, since) => Some(((1, since), activity)),
            })
            .min_by_key(|(rank, _)| *rank);
        let Some((_, activity)) = oldest else {
            return false;
        };
        activity.evicted.store(true, Ordering::Relaxed);
        activity.evict.notify_one();
        metrics.shed(Shed::Evicted);
        self.evicting += 1;
        true
    }

    /// Whether some connection, not already closing, has not been read
    /// from yet.
    fn has_unread(&self) -> bool {
        self.connections.values().any(|activity| {
            activity.load().0 == Phase::New && !activity.evicted.load(Ordering::Relaxed)
        })
    }

    fn remove(&mut self, id: u64) {
        if let Some(activity) = self.connections.remove(&id)
            && activity.evicted.load(Ordering::Relaxed)
        {
            self.evicting -= 1;
        }
    }
}

/// Takes the connection out of the table when its task ends, however it
/// ends (a worker's runtime drops the tasks still running when it stops).
struct Registered {
    shared: Arc<Shared>,
    id: u64,
    /// Counts the connection on the worker that runs it.
    on_worker: Open,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared.table().remove(self.id);
        self.shared.metrics.connections_open().dec();
        self.shared.closed.notify_waiters();
    }
}

/// The most a parked connection reads of the next request before hyper
/// takes over (hyper reads the rest itself).
const ARRIVED_READ: usize = 4096;

/// How long a connection waits for its next request with hyper before it
/// is parked. A connection of a busy client never waits that long, so it
/// stays with hyper.
const PARK_AFTER: Duration = Duration::from_secs(1);

/// Runs one connection to its end: parked while it waits for a request,
/// served by hyper while requests come, closed by the timeouts, an
/// eviction, or the shutdown.
///
/// Parked, a connection holds its socket and its bookkeeping, and no hyper
/// connection: hyper's read and header buffers (8 KiB each, kept for as long
/// as its connection lives) exist from a request's first byte until the
/// connection has waited `PARK_AFTER` for its next request (found by the
/// connection's timer, within another `PARK_AFTER`). So memory follows the
/// connections in use rather than the connections held, and a busy
/// connection is not parked and unparked at every request (a new hyper
/// connection and its buffers for each request cost about a fifth of the
/// requests per second).
async fn drive(registered: Registered, stream: TcpStream, activity: Arc<Activity>) {
    let shared = &registered.shared;
    let mut stream = TrackedStream {
        stream,
        activity: activity.clone(),
        arrived: Bytes::new(),
    };
    let mut service = TrackedService {
        inner: TowerToHyperService::new(shared.routers[registered.on_worker.worker()].clone()),
        activity: activity.clone(),
    };
    let closing = shared.lifecycle.reached(State::Closing);
    tokio::pin!(closing);
    // Shorter timeouts than the header one may apply once a request is done.
    let timer_start = activity.opened
        + shared
            .limits
            .header_read_timeout
            .min(shared.limits.idle_timeout);
    let timer = tokio::time::sleep_until(timer_start);
    tokio::pin!(timer);
    // Set by the shutdown: the request in progress (or, for a connection
    // that has not received a byte yet, its first request: closing now
    // would answer it with a reset) is served, then the connection closes.
    let mut winding_down = false;
    if !stream.read_first() {
        return;
    }
    loop {
        while stream.arrived.is_empty() {
            // In this order: bytes that arrived are read before a closing
            // or an eviction is looked at, so a request in the socket is
            // answered, not closed unread.
            tokio::select! {
                biased;
                ready = stream.stream.readable() => {
                    if ready.is_err() || !stream.read_parked() {
                        return;
                    }
                }
                () = timer.as_mut() => match activity.due(&shared.limits, Instant::now()) {
                    Due::At(deadline) => timer.as_mut().reset(deadline),
                    Due::Expired(reason) => {
                        shared.metrics.shed(reason);
                        return;
                    }
                },
                () = activity.evict.notified() => return,
                () = closing.as_mut(), if !winding_down => {
                    if activity.received.load(Ordering::Relaxed) {
                        return;
                    }
                    winding_down = true;
                }
            }
        }
        let mut connection = Box::pin(shared.http.serve_connection(TokioIo::new(stream), service));
        if winding_down {
            // The first request is to be served, then the connection closed.
            // hyper closes at once a connection told to shut down before it
            // has read anything: it reads what arrived first.
            let first = std::future::poll_fn(|context| {
                Poll::Ready(connection.poll_without_shutdown(context))
            });
            match first.await {
                Poll::Pending => connection.as_mut().graceful_shutdown(),
                Poll::Ready(outcome) => return ended(connection, outcome).await,
            }
        }
        let park_at = Instant::now() + PARK_AFTER;
        if park_at < timer.deadline() {
            timer.as_mut().reset(park_at);
        }
        loop {
            // hyper first, for the same reason: a request whose bytes
            // arrived is parsed (and counts as in progress) before a
            // closing or an eviction finds the connection without one.
            tokio::select! {
                biased;
                outcome = std::future::poll_fn(|context| connection.poll_without_shutdown(context)) => {
                    return ended(connection, outcome).await;
                }
                () = timer.as_mut() => {
                    let now = Instant::now();
                    match activity.due(&shared.limits, now) {
                        Due::At(deadline) => match activity.park_at(now, winding_down) {
                            // hyper is idle (its last poll returned with the
                            // exchange done), and a request that arrived since
                            // is unread in the socket: parked.
                            None => break,
                            Some(look_again) => timer.as_mut().reset(deadline.min(look_again)),
                        },
                        Due::Expired(reason) => {
                            shared.metrics.shed(reason);
                            return;
                        }
                    }
                }
                () = activity.evict.notified(), if !winding_down => {
                    winding_down = true;
                    if matches!(activity.load().0, Phase::New | Phase::Head) {
                        return;
                    }
                    connection.as_mut().graceful_shutdown();
                }
                () = closing.as_mut(), if !winding_down => {
                    winding_down = true;
                    if matches!(activity.load().0, Phase::New | Phase::Head) {
                        return;
                    }
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
        let parts = Pin::into_inner(connection).into_parts();
        stream = parts.io.into_inner();
        service = parts.service;
        // What hyper read and has not parsed (the start of a pipelined
        // request) goes to the next hyper connection first, copied: hyper's
        // buffer holds all of its 8 KiB, even when empty.
        stream.arrived = Bytes::copy_from_slice(&parts.read_buf);
    }
}

type HyperConnection = http1::Connection<TokioIo<TrackedStream>, TrackedService>;

/// A connection hyper ended: the client closed or asked to, the shutdown
/// did, or it failed. Its end is sent as hyper would send it.
async fn ended(connection: Pin<Box<HyperConnection>>, outcome: hyper::Result<()>) {
    match outcome {
        Ok(()) => {
            let mut parts = Pin::into_inner(connection).into_parts();
            let _ = parts.io.inner_mut().stream.shutdown().await;
        }
        Err(err) => debug!(error = %err, "connection ended with an error"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepted, not yet read from: its first request may be waiting in the
    /// socket, so it is never evicted; timed like `Head`.
    New = 3,
    /// Waiting for a request's headers (from the open for the first
    /// request, from its first byte for the next ones).
    Head = 0,
    /// A request is being handled.
    Busy = 1,
    /// Between requests: the last response is out (or going out).
    Idle = 2,
}

/// What a connection is doing and since when, in one word written by its
/// stream and its service and read by its task and the accept loop: the
/// phase in the low two bits, milliseconds since the open above them.
struct Activity {
    opened: Instant,
    word: AtomicU64,
    evict: Notify,
    evicted: AtomicBool,
    /// Whether a byte ever arrived: a connection without one has its first
    /// request still to come (read attempts alone move it out of `New`).
    received: AtomicBool,
    /// How far the current exchange is, in `Exchange` bits: when all are
    /// set, hyper has nothing of it left to read or write.
    exchange: AtomicU8,
}

/// The bits of `Activity::exchange`, cleared whenever bytes reach hyper.
struct Exchange;

impl Exchange {
    /// The request's body was read to its end (or it had none).
    const BODY_READ: u8 = 1;
    /// hyper dropped the response's body: all of it is in its buffer.
    const RESPONSE_BUFFERED: u8 = 2;
    /// A write that emptied hyper's buffer followed.
    const FLUSHED: u8 = 4;
    const DONE: u8 = Self::BODY_READ | Self::RESPONSE_BUFFERED | Self::FLUSHED;
}

enum Due {
    At(Instant),
    Expired(Shed),
}

impl Activity {
    fn new(opened: Instant) -> Activity {
        Activity {
            opened,
            word: AtomicU64::new(Phase::New as u64),
            evict: Notify::new(),
            evicted: AtomicBool::new(false),
            received: AtomicBool::new(false),
            exchange: AtomicU8::new(0),
        }
    }

    /// Bytes reached hyper: a request is starting or going on, and a
    /// waiting connection's next header timeout starts (the first one is
    /// counted from the open).
    fn bytes_arrived(&self) {
        self.exchange.store(0, Ordering::Relaxed);
        match self.load().0 {
            Phase::New => self.enter(Phase::Head, self.opened),
            Phase::Idle => self.enter(Phase::Head, Instant::now()),
            Phase::Head | Phase::Busy => {}
        }
        if !self.received.load(Ordering::Relaxed) {
            self.received.store(true, Ordering::Relaxed);
        }
    }

    fn exchange_reached(&self, bit: u8) {
        self.exchange.fetch_or(bit, Ordering::Relaxed);
    }

    /// Whether the request and its response are through hyper entirely, so
    /// that what hyper reads next is the next request.
    fn exchange_done(&self) -> bool {
        self.exchange.load(Ordering::Relaxed) == Exchange::DONE
    }

    /// For a connection with hyper: `None` if it is to be parked now (idle
    /// for `PARK_AFTER` with the exchange done), else when to look again
    /// (when it will have been idle that long, or a `PARK_AFTER` from now
    /// if it is not idle, is still writing, or is winding down).
    fn park_at(&self, now: Instant, winding_down: bool) -> Option<Instant> {
        let (phase, since) = self.load();
        if phase != Phase::Idle || !self.exchange_done() || winding_down {
            return Some(now + PARK_AFTER);
        }
        let parked_from = since + PARK_AFTER;
        (parked_from > now).then_some(parked_from)
    }

    fn load(&self) -> (Phase, Instant) {
        let word = self.word.load(Ordering::Relaxed);
        let phase = match word & 0b11 {
            0 => Phase::Head,
            1 => Phase::Busy,
            2 => Phase::Idle,
            _ => Phase::New,
        };
        (phase, self.opened + Duration::from_millis(word >> 2))
    }

    fn enter(&self, phase: Phase, at: Instant) {
        let millis = u64::try_from(at.saturating_duration_since(self.opened).as_millis())
            .unwrap_or(u64::MAX >> 2);
        self.word
            .store((millis << 2) | phase as u64, Ordering::Relaxed);
    }

    /// When to look at the connection next, or why it is over. The phase
    /// may change before its deadline, and a later phase may have an earlier
    /// one (an idle timeout shorter than the header timeout): so it is looked
    /// at again no later than the shortest timeout from now. A request in
    /// progress is bounded by the request timeout instead.
    fn due(&self, limits: &Limits, now: Instant) -> Due {
        let again = now + limits.header_read_timeout.min(limits.idle_timeout);
        let (phase, since) = self.load();
        let (allowed, reason) = match phase {
            Phase::New | Phase::Head => (limits.header_read_timeout, Shed::HeaderTimeout),
            Phase::Idle => (limits.idle_timeout, Shed::IdleTimeout),
            Phase::Busy => return Due::At(again),
        };
        let deadline = since + allowed;
        if deadline <= now {
            Due::Expired(reason)
        } else {
            Due::At(deadline.min(again))
        }
    }
}

/// The accepted socket as hyper sees it: first what arrived while the
/// connection was parked, then the socket. Bytes reaching hyper start a
/// request's header timeout; its writes tell when the response is out
/// (`Exchange::FLUSHED`).
struct TrackedStream {
    stream: TcpStream,
    activity: Arc<Activity>,
    /// Read while parked, not yet given to hyper.
    arrived: Bytes,
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.arrived.is_empty() {
            let given = this.arrived.len().min(buffer.remaining());
            buffer.put_slice(&this.arrived[..given]);
            if given == this.arrived.len() {
                this.arrived = Bytes::new();
            } else {
                this.arrived.advance(given);
            }
            this.activity.bytes_arrived();
            return Poll::Ready(Ok(()));
        }
        let before = buffer.filled().len();
        let outcome = ready!(Pin::new(&mut this.stream).poll_read(context, buffer));
        if buffer.filled().len() > before {
            this.activity.bytes_arrived();
        }
        Poll::Ready(outcome)
    }
}

impl TrackedStream {
    /// The first read attempt, as soon as the connection's task runs: it
    /// ends `New` whether or not bytes are in yet (the connection is then
    /// waiting for its headers, timed from the open), so that a burst of
    /// new connections is told from a flood of silent ones at once. False
    /// if the stream has ended or failed.
    fn read_first(&mut self) -> bool {
        if !self.read_parked() {
            return false;
        }
        self.activity.enter(Phase::Head, self.activity.opened);
        true
    }

    /// Reads what has arrived on the parked connection, if anything, into
    /// `arrived` (a buffer of its size), which hyper reads first (and then
    /// counts as arrived). False once the stream has ended or failed.
    fn read_parked(&mut self) -> bool {
        let mut buffer = [0; ARRIVED_READ];
        match self.stream.try_read(&mut buffer) {
            Ok(0) => false,
            Ok(read) => {
                self.arrived = Bytes::copy_from_slice(&buffer[..read]);
                true
            }
            Err(err) => err.kind() == io::ErrorKind::WouldBlock,
        }
    }

    /// Notes whether a write emptied hyper's buffer: hyper writes it whole
    /// (`writev(false)`), so a write that took all it was given did.
    fn wrote(&self, outcome: &Poll<io::Result<usize>>, given: usize) {
        if matches!(outcome, Poll::Ready(Ok(written)) if *written == given)
            && self.activity.exchange.load(Ordering::Relaxed) & Exchange::RESPONSE_BUFFERED != 0
        {
            self.activity.exchange_reached(Exchange::FLUSHED);
        }
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.stream).poll_write(context, buffer);
        self.wrote(&outcome, buffer.len());
        outcome
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let outcome = Pin::new(&mut self.stream).poll_write_vectored(context, buffers);
        self.wrote(&outcome, buffers.iter().map(|buffer| buffer.len()).sum());
        outcome
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}

type RouterService = TowerToHyperService<Router>;
type RouterFuture = <RouterService as hyper::service::Service<Request<RequestBody>>>::Future;

/// The router, marking the connection busy while it handles a request, and
/// following the exchange through its two bodies.
struct TrackedService {
    inner: RouterService,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for TrackedService {
    type Response = Response<ResponseBody>;
    type Error = <RouterService as hyper::service::Service<Request<RequestBody>>>::Error;
    type Future = Tracked<RouterFuture>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.activity.enter(Phase::Busy, self.activity.opened);
        let body_read = if request.body().is_end_stream() {
            Exchange::BODY_READ
        } else {
            0
        };
        self.activity.exchange.store(body_read, Ordering::Relaxed);
        let activity = self.activity.clone();
        Tracked {
            inner: self
                .inner
                .call(request.map(|inner| RequestBody { inner, activity })),
            activity: self.activity.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response future that marks its connection idle once it resolves.
    struct Tracked<F> {
        #[pin]
        inner: F,
        activity: Arc<Activity>,
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<ResponseBody>, E>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(context));
        this.activity.enter(Phase::Idle, Instant::now());
        let activity = this.activity.clone();
        Poll::Ready(output.map(|response| response.map(|inner| ResponseBody { inner, activity })))
    }
}

/// A request's body, noting when it has been read to its end.
struct RequestBody {
    inner: Incoming,
    activity: Arc<Activity>,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(context));
        if frame.is_none() || self.inner.is_end_stream() {
            self.activity.exchange_reached(Exchange::BODY_READ);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response's body, noting when hyper drops it: at its end (or when the
/// connection fails).
struct ResponseBody {
    inner: Body,
    activity: Arc<Activity>,
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.activity.exchange_reached(Exchange::RESPONSE_BUFFERED);
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(context)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Failed accepts since the last log line, so that a storm of them (every
/// connection attempt while descriptors are out) logs one line a second.
#[derive(Default)]
struct AcceptFailures {
    last_line: Option<Instant>,
    unlogged: u64,
    failing: bool,
}

impl AcceptFailures {
    fn failed(&mut self, err: &io::Error, kind: AcceptError) {
        self.failing = true;
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_line
            .is_none_or(|last| now.duration_since(last) >= ACCEPT_LOG_INTERVAL)
        {
            warn!(
                error = %err,
                kind = kind.label(),
                failures = self.unlogged,
                "accept failed (failures: this one and those since the last such line)"
            );
            self.last_line = Some(now);
            self.unlogged = 0;
        }
    }

    fn succeeded(&mut self) {
        if !self.failing {
            return;
        }
        self.failing = false;
        let now = Instant::now();
        if self
            .last_line
            .is_some_and(|last| now.duration_since(last) >= ACCEPT_LOG_INTERVAL)
        {
            info!(
                failures = self.unlogged,
                "accepting again (failures since the last accept-failed line)"
            );
            self.last_line = Some(now);
            self.unlogged = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(75),
        max_connections: 4,
    };

    #[test]
    fn each_phase_has_its_deadline() {
        let opened = Instant::now();
        let activity = Activity::new(opened);
        let at = |seconds: u64| opened + Duration::from_secs(seconds);
        let due = |now: Instant| match activity.due(&LIMITS, now) {
            Due::At(deadline) => Ok(deadline),
            Due::Expired(reason) => Err(reason),
        };

        // The first request's headers are due 10 s after the open.
        assert_eq!(due(at(3)), Ok(at(10)));
        assert_eq!(due(at(10)), Err(Shed::HeaderTimeout));

        // A request in progress is looked at again later, never expired.
        activity.enter(Phase::Busy, opened);
        assert_eq!(due(at(500)), Ok(at(510)));

        // Idle from the response on, for 75 s, looked at every 10 s.
        activity.enter(Phase::Idle, at(20));
        assert_eq!(due(at(21)), Ok(at(31)));
        assert_eq!(due(at(90)), Ok(at(95)));
        assert_eq!(due(at(95)), Err(Shed::IdleTimeout));

        // The next request's first byte starts its header timeout.
        activity.enter(Phase::Head, at(90));
        assert_eq!(due(at(95)), Ok(at(100)));
        assert_eq!(due(at(100)), Err(Shed::HeaderTimeout));
    }

    #[test]
    fn an_idle_timeout_shorter_than_the_header_timeout_is_not_overslept() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(1),
            max_connections: 4,
        };
        let opened = Instant::now();
        let activity = Activity::new(opened);
        let at = |millis: u64| opened + Duration::from_millis(millis);
        let Due::At(first) = activity.due(&limits, opened) else {
            panic!("not expired at the open")
        };
        assert_eq!(first, at(1_000), "looked at after the shorter timeout");
        // The first request is answered at 0.5 s; at the first look the
        // connection has been idle for 0.5 s of its 1 s.
        activity.enter(Phase::Idle, at(500));
        assert!(matches!(activity.due(&limits, first), Due::At(next) if next == at(1_500)));
        assert!(matches!(
            activity.due(&limits, at(1_500)),
            Due::Expired(Shed::IdleTimeout)
        ));
    }

    #[test]
    fn eviction_picks_the_longest_waiting_connection_without_a_request() {
        let metrics = Metrics::new(crate::build_info::get());
        let opened = Instant::now();
        let at = |seconds: u64| opened + Duration::from_secs(seconds);
        let connection = |phase: Phase, since: Instant| {
            let activity = Arc::new(Activity::new(opened));
            activity.enter(phase, since);
            activity
        };
        let connections: HashMap<u64, Arc<Activity>> = [
            (0, Arc::new(Activity::new(opened))),
            (1, connection(Phase::Busy, opened)),
            (2, connection(Phase::Idle, at(5))),
            (3, connection(Phase::Head, at(2))),
            (4, connection(Phase::Idle, at(1))),
        ]
        .into_iter()
        .collect();
        let mut table = Table {
            connections,
            evicting: 0,
        };
        let evicted = |table: &Table| {
            let mut ids: Vec<u64> = table
                .connections
                .iter()
                .filter(|(_, activity)| activity.evicted.load(Ordering::Relaxed))
                .map(|(id, _)| *id)
                .collect();
            ids.sort_unstable();
            ids
        };
        let admit = |table: &mut Table, limit: usize, may_wait: bool| {
            let admission = table.admit(limit, may_wait, &metrics);
            if admission == Admission::Admitted {
                let id = table.connections.keys().max().unwrap() + 1;
                table
                    .connections
                    .insert(id, connection(Phase::Busy, opened));
            }
            admission
        };
        // Five open, limit five, one not yet read from: look again first.
        assert_eq!(admit(&mut table, 5, true), Admission::LookAgain);
        assert_eq!(evicted(&table), [] as [u64; 0]);
        // Once looking again is over, it counts as waiting for its headers
        // since it opened: the longest of those.
        assert_eq!(admit(&mut table, 5, false), Admission::Admitted);
        assert_eq!(evicted(&table), [0]);
        // The one closing is not counted: the next fits without an eviction.
        assert_eq!(admit(&mut table, 6, true), Admission::Admitted);
        assert_eq!(evicted(&table), [0]);
        // Headers before idle, even a shorter wait.
        assert_eq!(admit(&mut table, 6, true), Admission::Admitted);
        assert_eq!(evicted(&table), [0, 3]);
        // Then idle the longest.
        assert_eq!(admit(&mut table, 6, true), Admission::Admitted);
        assert_eq!(evicted(&table), [0, 3, 4]);
        // A closed victim leaves the count of those closing.
        table.remove(0);
        assert_eq!(table.evicting, 2);
        assert_eq!(admit(&mut table, 6, true), Admission::Admitted);
        assert_eq!(evicted(&table), [2, 3, 4]);
        assert_eq!(
            admit(&mut table, 6, true),
            Admission::Refused,
            "a connection with a request in progress is never evicted"
        );
        assert_eq!(table.evicting, 3);
    }

    #[test]
    fn a_connection_is_parked_once_idle_for_a_second_with_its_exchange_done() {
        let opened = Instant::now();
        let at = |millis: u64| opened + Duration::from_millis(millis);
        let activity = Activity::new(opened);
        let done = Exchange::DONE;
        let written = Exchange::BODY_READ | Exchange::RESPONSE_BUFFERED;
        // (phase since, exchange, winding down, now; when to look again, or
        // None: parked)
        let cases = [
            ((Phase::Busy, 0), done, false, 5_000, Some(6_000)),
            ((Phase::Head, 0), 0, false, 5_000, Some(6_000)),
            ((Phase::Idle, 4_500), done, false, 5_000, Some(5_500)),
            ((Phase::Idle, 4_000), done, false, 5_000, None),
            // Still writing, or closing: looked at again a second later,
            // never at once.
            ((Phase::Idle, 1_000), written, false, 5_000, Some(6_000)),
            ((Phase::Idle, 1_000), done, true, 5_000, Some(6_000)),
        ];
        for ((phase, since), exchange, winding_down, now, expected) in cases {
            activity.enter(phase, at(since));
            activity.exchange.store(exchange, Ordering::Relaxed);
            assert_eq!(
                activity.park_at(at(now), winding_down),
                expected.map(at),
                "{phase:?} since {since} ms, exchange {exchange}, winding down {winding_down}"
            );
        }
    }

    #[test]
    fn the_first_read_attempt_ends_new_with_or_without_bytes() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            for sent in [&b""[..], b"GET / HTTP/1.1\r\n"] {
                let mut client = TcpStream::connect(address).await.unwrap();
                client.write_all(sent).await.unwrap();
                let (accepted, _) = listener.accept().await.unwrap();
                let activity = Arc::new(Activity::new(Instant::now()));
                let mut stream = TrackedStream {
                    stream: accepted,
                    activity: activity.clone(),
                    arrived: Bytes::new(),
                };
                if !sent.is_empty() {
                    stream.stream.readable().await.unwrap();
                }
                assert!(stream.read_first());
                assert_eq!(activity.load(), (Phase::Head, activity.opened), "{sent:?}");
                assert_eq!(&stream.arrived[..], sent);
            }
        });
    }

    /// Connections accepted in the last moment of the accept loops, whose
    /// requests are in hyper's hands only once the shutdown has reached
    /// `Closing`: each is answered, never closed unread (hyper reads what
    /// arrived before the closing is looked at).
    #[test]
    fn requests_that_arrived_before_the_closing_are_answered() {
        use tokio::io::AsyncReadExt;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let lifecycle = Arc::new(Lifecycle::default());
            let server = Server::new(
                LIMITS,
                || Router::new().route("/", axum::routing::get(|| async { "answered" })),
                lifecycle.clone(),
                Arc::new(Metrics::new(crate::build_info::get())),
                Workers::current(),
            );
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            // Each connection is raced once: an arbitrary order of the
            // connection and the closing would lose about half of them.
            let (mut clients, mut accepted) = (Vec::new(), Vec::new());
            for id in 0..16 {
                let mut client = TcpStream::connect(address).await.unwrap();
                client
                    .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
                    .await
                    .unwrap();
                let (stream, _) = listener.accept().await.unwrap();
                stream.readable().await.unwrap();
                clients.push(client);
                accepted.push((stream, id));
            }
            lifecycle.advance(State::Closing);
            for (stream, id) in accepted {
                server.admit(stream, id, 0).await;
            }
            for (index, client) in clients.iter_mut().enumerate() {
                let mut response = Vec::new();
                client.read_to_end(&mut response).await.unwrap();
                let text = String::from_utf8_lossy(&response);
                assert!(
                    text.starts_with("HTTP/1.1 200") && text.ends_with("answered"),
                    "connection {index}: {text:?}"
                );
            }
        });
    }

    #[test]
    fn descriptors_running_out_close_no_connection_not_yet_read_from() {
        let metrics = Metrics::new(crate::build_info::get());
        let opened = Instant::now();
        let mut table = Table::default();
        table.connections.insert(1, Arc::new(Activity::new(opened)));
        assert!(!table.evict_one(false, &metrics));
        assert!(table.evict_one(true, &metrics));
    }
}
