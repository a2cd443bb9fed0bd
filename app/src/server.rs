//! Running the service: bind, serve, and the shutdown sequence.
//!
//! On SIGTERM or SIGINT the lifecycle turns to draining (`/readyz` answers
//! 503 at once) and the service keeps serving for `drain_delay`, so that load
//! balancers notice; then it stops accepting and waits up to `drain_timeout`
//! for in-flight requests, and returns. A second signal exits at once.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use axum::serve::ListenerExt;
use tracing::{info, warn};

use crate::build_info::BUILD_INFO;
use crate::config::{Settings, format_duration};
use crate::http::{self, Shared};
use crate::lifecycle::{Lifecycle, State};
use crate::metrics::Metrics;

/// Why serving failed; each maps to its own exit code.
#[derive(Debug)]
pub enum ServeError {
    /// The listening socket could not be set up (port in use, no permission).
    Listen(anyhow::Error),
    /// Anything else.
    Runtime(anyhow::Error),
}

pub fn run(settings: Settings) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
        .map_err(ServeError::Runtime)?;
    runtime.block_on(serve(settings))
}

async fn serve(settings: Settings) -> Result<(), ServeError> {
    // Registered before listening, so that an early SIGTERM drains instead
    // of killing the process.
    let mut signals = Signals::new().map_err(ServeError::Runtime)?;
    let notifier = crate::systemd::Notifier::from_env();
    let (listener, inherited) = listen(settings.server.listen).map_err(ServeError::Listen)?;
    let local_addr = listener
        .local_addr()
        .map_err(|err| ServeError::Listen(err.into()))?;

    let settings = Arc::new(settings);
    let lifecycle = Arc::new(Lifecycle::default());
    let metrics = Arc::new(Metrics::new(&BUILD_INFO));
    let app = http::router(Shared::new(
        settings.clone(),
        lifecycle.clone(),
        metrics.clone(),
    ));

    let stopped = lifecycle.clone();
    let listener = listener.tap_io(|stream| {
        // Small responses go out at once instead of waiting for an ACK.
        let _ = stream.set_nodelay(true);
    });
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stopped.reached(State::Stopped).await });
    let mut server = tokio::spawn(async move { server.await });

    lifecycle.advance(State::Ready);
    info!(
        addr = %local_addr,
        env = settings.env.name(),
        version = BUILD_INFO.version,
        commit = BUILD_INFO.commit_short,
        socket = if inherited { "from systemd" } else { "bound" },
        "listening"
    );
    notifier.notify(&format!("READY=1\nSTATUS=serving on {local_addr}"));

    let signal = tokio::select! {
        signal = signals.next() => signal,
        outcome = &mut server => {
            return Err(ServeError::Runtime(anyhow!("the server stopped on its own: {outcome:?}")));
        }
    };
    lifecycle.advance(State::Draining);
    notifier.notify("STOPPING=1");
    info!(signal, drain_delay = %format_duration(settings.server.drain_delay), "stop requested: draining");
    tokio::spawn(async move {
        let second = signals.next().await;
        warn!(signal = second, "second stop signal: exiting now");
        crate::logging::flush();
        std::process::exit(128 + second);
    });

    tokio::time::sleep(settings.server.drain_delay).await;
    lifecycle.advance(State::Stopped);
    info!(
        in_flight = metrics.in_flight().get(),
        drain_timeout = %format_duration(settings.server.drain_timeout),
        "stopped accepting: waiting for in-flight requests"
    );
    match tokio::time::timeout(settings.server.drain_timeout, server).await {
        Ok(Ok(Ok(()))) => info!("stopped"),
        Ok(Ok(Err(err))) => return Err(ServeError::Runtime(anyhow!(err).context("serve"))),
        Ok(Err(join)) => return Err(ServeError::Runtime(anyhow!(join).context("serve"))),
        Err(_) => warn!(
            in_flight = metrics.in_flight().get(),
            "drain timeout reached: exiting with requests still in flight"
        ),
    }
    Ok(())
}

/// The socket systemd passed (socket activation), else a new one bound to
/// `addr`. Either way it is made non-blocking before tokio registers it.
fn listen(addr: SocketAddr) -> anyhow::Result<(tokio::net::TcpListener, bool)> {
    let (listener, inherited) = match crate::systemd::inherited_listener()? {
        Some(listener) => (listener, true),
        None => {
            let listener = std::net::TcpListener::bind(addr).with_context(|| {
                format!("listen on {addr} (is another process using it? set a free address with --listen)")
            })?;
            (listener, false)
        }
    };
    listener
        .set_nonblocking(true)
        .context("make the listening socket non-blocking")?;
    let listener =
        tokio::net::TcpListener::from_std(listener).context("register the listening socket")?;
    Ok((listener, inherited))
}

/// SIGTERM and SIGINT (Ctrl-C on Windows), as a stream of signal numbers.
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                terminate: signal(SignalKind::terminate()).context("listen for SIGTERM")?,
                interrupt: signal(SignalKind::interrupt()).context("listen for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) -> i32 {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => 15,
                _ = self.interrupt.recv() => 2,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            2
        }
    }
}
