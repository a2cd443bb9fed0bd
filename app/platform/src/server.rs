//! Running the service: listen, serve, upgrade, and the shutdown sequence.
//!
//! On SIGTERM or SIGINT the lifecycle turns to draining (`/readyz` answers
//! 503 at once, responses carry `Connection: close`) and the service keeps
//! serving for `drain_delay`, so that load balancers notice. On SIGHUP or
//! SIGUSR2 it starts the new binary with the listening socket (see
//! `upgrade`) and, once that reports ready, skips straight to the next step.
//! Either way it then stops accepting, gives keep-alive clients up to
//! `KEEP_ALIVE_GRACE` to take their last response and leave, closes the idle
//! connections that remain, waits up to `drain_timeout` (counted from when
//! accepting stopped) for in-flight requests, and returns. A second stop
//! signal exits at once.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::build_info;
use crate::config::{Settings, format_duration};
use crate::connections::{self, Limits};
use crate::http;
use crate::lifecycle::{Lifecycle, State};
use crate::metrics::Metrics;
use crate::otlp::Exporter;
use crate::state::Shared;
use crate::systemd::Notifier;
use crate::upgrade::{self, Program, ReadySignal};
use crate::workers::Workers;

/// How long keep-alive connections may stay open after accepting stopped,
/// so that each active one gets a response with `Connection: close` instead
/// of being closed under a request it is sending. Idle ones are closed after.
const KEEP_ALIVE_GRACE: Duration = Duration::from_secs(1);

/// Why serving failed; each maps to its own exit code.
#[derive(Debug)]
pub enum ServeError {
    /// The listening socket could not be set up (port in use, no permission).
    Listen(anyhow::Error),
    /// Anything else.
    Runtime(anyhow::Error),
}

/// Serves until stopped. The main thread runs the signals, the upgrades, the
/// accept loop and its share of the connections, on a single-threaded
/// runtime; the other workers are threads of their own (see `workers`).
/// `metrics` holds the business part's metrics already; `business` makes
/// its routes, once per worker. (A `dyn` and not a generic: the whole
/// serving path would otherwise be compiled again in the service's crate,
/// beside the platform's own copies of what it calls, 90 KB of the
/// binary.)
pub fn run(
    settings: Settings,
    metrics: Metrics,
    checks: Arc<crate::state::ReadinessChecks>,
    business: &dyn Fn() -> crate::Router,
) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
        .map_err(ServeError::Runtime)?;
    let worker_count = settings.server.workers.resolve();
    let (workers, threads) =
        Workers::start(runtime.handle().clone(), worker_count).map_err(ServeError::Runtime)?;
    let outcome = runtime.block_on(serve(settings, metrics, checks, business, workers));
    // The connections still running (past the drain timeout) end with the
    // workers' runtimes, as the main one's end with it.
    drop(threads);
    outcome
}

/// Where the listening socket came from.
enum Origin {
    Bound,
    Systemd,
    /// From the process this one replaces, which waits for the signal.
    Upgrade(ReadySignal),
}

/// Why the serving loop ended.
enum Stop {
    Signal(i32),
    HandedOver { pid: u32 },
}

async fn serve(
    settings: Settings,
    metrics: Metrics,
    checks: Arc<crate::state::ReadinessChecks>,
    business: &dyn Fn() -> crate::Router,
    workers: Arc<Workers>,
) -> Result<(), ServeError> {
    // Registered before listening, so that an early SIGTERM drains instead
    // of killing the process, and an early SIGHUP does not kill it either.
    let mut signals = Signals::new().map_err(ServeError::Runtime)?;
    let program = Program::from_start();
    let notifier = Notifier::from_env();
    let open_files = raise_open_files_limit();
    let (listener, origin) = listen(settings.server.listen).map_err(ServeError::Listen)?;
    // A second descriptor for the same socket, to hand to a new process
    // while the server owns the first.
    let handover_socket = listener
        .try_clone()
        .context("duplicate the listening socket")
        .map_err(ServeError::Listen)?;
    let local_addr = listener
        .local_addr()
        .map_err(|err| ServeError::Listen(err.into()))?;

    let mut metrics = metrics;
    let traces = if settings.tracing.active() {
        let exporter = Exporter::start(
            &settings.tracing,
            &settings.service.name,
            build_info::get(),
            &mut metrics,
        )
        .context("start the trace export thread")
        .map_err(ServeError::Runtime)?;
        Some(Arc::new(exporter))
    } else {
        None
    };
    let settings = Arc::new(settings);
    let lifecycle = Arc::new(Lifecycle::default());
    let metrics = Arc::new(metrics);
    let app = || {
        http::router(
            Shared::traced(
                settings.clone(),
                lifecycle.clone(),
                metrics.clone(),
                traces.clone(),
                checks.clone(),
            ),
            business(),
        )
    };
    let limits = Limits {
        header_read_timeout: settings.server.header_read_timeout,
        idle_timeout: settings.server.idle_timeout,
        max_connections: settings.server.max_connections,
    };
    let worker_count = workers.len();
    let connections =
        connections::Server::new(limits, app, lifecycle.clone(), metrics.clone(), workers);
    let mut server = tokio::spawn(connections.clone().run(listener));

    if let Some(limit) = open_files
        && (limit as u128) < limits.max_connections as u128 + DESCRIPTORS_KEPT as u128
    {
        warn!(
            open_files_limit = limit,
            max_connections = limits.max_connections,
            "the open-files limit is below server.max_connections plus the {DESCRIPTORS_KEPT} descriptors the service keeps for itself: accepts will fail (EMFILE) before the connection limit applies; raise the limit (LimitNOFILE=, ulimit -n) or lower server.max_connections"
        );
    }
    lifecycle.advance(State::Ready);
    info!(
        addr = %local_addr,
        pid = std::process::id(),
        env = settings.env.name(),
        version = build_info::get().version,
        commit = build_info::get().commit_short,
        socket = match origin {
            Origin::Bound => "bound",
            Origin::Systemd => "from systemd",
            Origin::Upgrade(_) => "from the previous process",
        },
        max_connections = limits.max_connections,
        workers = worker_count,
        open_files_limit = open_files,
        header_read_timeout = %format_duration(limits.header_read_timeout),
        idle_timeout = %format_duration(limits.idle_timeout),
        request_timeout = %format_duration(settings.server.request_timeout),
        "listening"
    );
    let serving = format!("STATUS=serving on {local_addr}");
    match origin {
        // Under `NotifyAccess=main` systemd would drop this process's
        // messages until the old one names it with MAINPID=, which it does
        // once it reads this.
        Origin::Upgrade(ready) => ready.report(),
        Origin::Bound | Origin::Systemd => notifier.notify(&format!("READY=1\n{serving}")),
    }

    let mut upgrading: Option<Pin<Box<dyn Future<Output = anyhow::Result<u32>> + '_>>> = None;
    let stop = loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Signal::Stop(number) => break Stop::Signal(number),
                Signal::Upgrade(number) if upgrading.is_some() => {
                    warn!(signal = number, "an upgrade is already running: ignoring the signal");
                }
                Signal::Upgrade(number) => {
                    info!(signal = number, program = %program.path().display(), "upgrade requested");
                    notifier.notify(&format!(
                        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=upgrading: starting {}",
                        crate::systemd::monotonic_usec(),
                        program.path().display()
                    ));
                    upgrading = Some(Box::pin(upgrade::start(
                        &program,
                        &handover_socket,
                        settings.server.upgrade_timeout,
                    )));
                }
            },
            outcome = async { upgrading.as_mut().expect("guarded").await }, if upgrading.is_some() => {
                upgrading = None;
                match outcome {
                    Ok(pid) => break Stop::HandedOver { pid },
                    Err(err) => {
                        metrics.upgrades_failed().inc();
                        warn!(error = %format!("{err:#}"), "upgrade failed: still serving");
                        notifier.notify(&format!("READY=1\n{serving}; the last upgrade failed"));
                    }
                }
            }
            outcome = &mut server => {
                return Err(ServeError::Runtime(anyhow!("the server stopped on its own: {outcome:?}")));
            }
        }
    };
    // A pending upgrade is abandoned here: dropping it stops the new process.
    drop(upgrading);
    drop(handover_socket);

    // A stop signal that arrives during the drain: the next one exits at
    // once; after a handover, where no stop was asked for yet, the first
    // one only says that the drain is under way.
    let patience = match stop {
        Stop::Signal(_) => 1,
        Stop::HandedOver { .. } => 2,
    };
    tokio::spawn(exit_on_stop_signals(signals, patience));
    match stop {
        Stop::Signal(signal) => {
            lifecycle.advance(State::Draining);
            notifier.notify("STOPPING=1");
            info!(signal, drain_delay = %format_duration(settings.server.drain_delay), "stop requested: draining");
            tokio::time::sleep(settings.server.drain_delay).await;
        }
        Stop::HandedOver { pid } => {
            // From here on systemd follows the new process; this one sends
            // nothing more, as `NotifyAccess=main` would refuse it.
            notifier.notify(&format!("MAINPID={pid}\nREADY=1\n{serving}"));
            lifecycle.advance(State::Draining);
            info!(
                new_pid = pid,
                "upgrade complete: the new process serves; draining"
            );
        }
    }

    lifecycle.advance(State::Stopped);
    let deadline = Instant::now() + settings.server.drain_timeout;
    let grace = KEEP_ALIVE_GRACE.min(settings.server.drain_timeout);
    let _ = tokio::time::timeout(grace, connections.all_closed()).await;
    lifecycle.advance(State::Closing);
    info!(
        in_flight = metrics.in_flight(),
        connections = metrics.connections_open().get(),
        drain_timeout = %format_duration(settings.server.drain_timeout),
        "closed idle connections: waiting for in-flight requests"
    );
    match tokio::time::timeout_at(deadline, server).await {
        Ok(Ok(Ok(()))) => info!("stopped"),
        Ok(Ok(Err(err))) => return Err(ServeError::Runtime(err.context("serve"))),
        Ok(Err(join)) => return Err(ServeError::Runtime(anyhow!(join).context("serve"))),
        Err(_) => warn!(
            in_flight = metrics.in_flight(),
            "drain timeout reached: exiting with requests still in flight"
        ),
    }
    // The spans of the requests this process answered, once, before it
    // exits (after an upgrade too: the new process exports its own).
    if let Some(traces) = &traces {
        traces.flush_and_stop();
    }
    Ok(())
}

/// Descriptors the service needs besides its connections: standard streams,
/// the listening socket and its duplicate, the runtime's epoll and wakers,
/// signal and notify sockets, an upgrade's pipes, config files; with room
/// to spare. The systemd unit's `LimitNOFILE=` covers this plus the
/// configured `max_connections` (`xtask/tests/units.rs` checks it).
const DESCRIPTORS_KEPT: usize = 64;

/// Raises the soft open-files limit to the hard one, as Go does at start-up
/// (the soft one is 1024 under systemd and most container runtimes, which
/// caps the connections at about that), and returns the limit in effect.
/// Under the systemd unit, which sets both to the same value (its system
/// call filter forbids `setrlimit`), there is nothing to raise.
#[cfg(unix)]
fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given. On failure (macOS
        // refuses an unlimited soft limit) the old limit stays.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(not(unix))]
fn raise_open_files_limit() -> Option<u64> {
    None
}

/// Exits with 128 + the signal number at the `patience`-th stop signal
/// from now on; upgrade signals are ignored, since a drain is under way.
async fn exit_on_stop_signals(mut signals: Signals, patience: u32) {
    let mut seen = 0;
    loop {
        match signals.next().await {
            Signal::Upgrade(number) => {
                warn!(signal = number, "stopping: ignoring the upgrade signal");
            }
            Signal::Stop(number) => {
                seen += 1;
                if seen >= patience {
                    warn!(signal = number, "stop signal while draining: exiting now");
                    crate::logging::flush();
                    std::process::exit(128 + number);
                }
                info!(signal = number, "stop signal: already draining");
            }
        }
    }
}

/// The socket handed over by the previous process (upgrade) or by systemd
/// (socket activation), else a new one bound to `addr`. Either way it is
/// made non-blocking before tokio registers it.
fn listen(addr: SocketAddr) -> anyhow::Result<(std::net::TcpListener, Origin)> {
    let (listener, origin) = if let Some(listener) = crate::systemd::inherited_listener()? {
        (listener, Origin::Systemd)
    } else if let Some(inherited) = upgrade::inherited()? {
        (inherited.listener, Origin::Upgrade(inherited.ready))
    } else {
        let listener = std::net::TcpListener::bind(addr).with_context(|| {
            format!(
                "listen on {addr} (is another process using it? set a free address with --listen)"
            )
        })?;
        (listener, Origin::Bound)
    };
    listener
        .set_nonblocking(true)
        .context("make the listening socket non-blocking")?;
    Ok((listener, origin))
}

/// The signals the service acts on, by number.
enum Signal {
    /// SIGTERM or SIGINT.
    Stop(i32),
    /// SIGHUP or SIGUSR2 (Unix only).
    #[cfg_attr(not(unix), allow(dead_code))]
    Upgrade(i32),
}

struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
    #[cfg(unix)]
    user2: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                terminate: signal(SignalKind::terminate()).context("listen for SIGTERM")?,
                interrupt: signal(SignalKind::interrupt()).context("listen for SIGINT")?,
                hangup: signal(SignalKind::hangup()).context("listen for SIGHUP")?,
                user2: signal(SignalKind::user_defined2()).context("listen for SIGUSR2")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => Signal::Stop(libc::SIGTERM),
                _ = self.interrupt.recv() => Signal::Stop(libc::SIGINT),
                _ = self.hangup.recv() => Signal::Upgrade(libc::SIGHUP),
                _ = self.user2.recv() => Signal::Upgrade(libc::SIGUSR2),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop(2)
        }
    }
}
