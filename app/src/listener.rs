//! The listener the HTTP server accepts from. It stops accepting, and closes
//! its socket, the moment the lifecycle reaches `Stopped`, independently of
//! the server's graceful shutdown: after an upgrade the socket belongs to the
//! new process, while this one still answers the requests that arrive on its
//! open keep-alive connections. It also counts open connections, so the
//! shutdown sequence can wait for keep-alive clients to leave on their own
//! before it closes the idle ones.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::serve::Listener;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::lifecycle::{Lifecycle, State};

/// The open connections: a gauge (also exported as a metric) and a signal
/// for when it drops to zero.
#[derive(Clone)]
pub struct Connections {
    open: Gauge,
    all_closed: Arc<Notify>,
}

impl Connections {
    pub fn new(open: Gauge) -> Connections {
        Connections {
            open,
            all_closed: Arc::new(Notify::new()),
        }
    }

    /// Returns once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.all_closed.notified();
            tokio::pin!(closed);
            // Registered before the check, so a close in between is seen.
            closed.as_mut().enable();
            if self.open.get() <= 0 {
                return;
            }
            closed.await;
        }
    }
}

pub struct StoppableListener {
    /// `None` once accepting stopped: the socket is closed in this process.
    inner: Option<TcpListener>,
    local_addr: SocketAddr,
    lifecycle: Arc<Lifecycle>,
    connections: Connections,
}

impl StoppableListener {
    pub fn new(
        inner: TcpListener,
        lifecycle: Arc<Lifecycle>,
        connections: Connections,
    ) -> io::Result<StoppableListener> {
        Ok(StoppableListener {
            local_addr: inner.local_addr()?,
            inner: Some(inner),
            lifecycle,
            connections,
        })
    }
}

impl Listener for StoppableListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedStream, SocketAddr) {
        if let Some(inner) = self.inner.as_mut() {
            tokio::select! {
                biased;
                () = self.lifecycle.reached(State::Stopped) => {}
                (stream, peer) = Listener::accept(inner) => {
                    // Small responses go out at once instead of waiting for an ACK.
                    let _ = stream.set_nodelay(true);
                    self.connections.open.inc();
                    let stream = CountedStream {
                        stream,
                        connections: self.connections.clone(),
                    };
                    return (stream, peer);
                }
            }
            self.inner = None;
            tracing::info!("stopped accepting");
        }
        std::future::pending().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// An accepted connection that counts itself out of `Connections` when
/// dropped.
pub struct CountedStream {
    stream: TcpStream,
    connections: Connections,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        if self.connections.open.dec() <= 1 {
            self.connections.all_closed.notify_waiters();
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(context, buffer)
    }

    // hyper writes head and body with one vectored write; without these two
    // it would fall back to one write per buffer.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(context, buffers)
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
