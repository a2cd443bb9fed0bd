//! The threads that run the connections: one single-threaded tokio runtime
//! per worker (by default one per CPU the process may use). Each worker
//! accepts from its own descriptor of the one listening socket and runs the
//! connections it accepted, start to end, on its own thread.
//!
//! Why not tokio's multi-threaded runtime: under load its idle workers are
//! woken to steal tasks, and on a loopback benchmark wakeups and context
//! switches (`_raw_spin_unlock_irqrestore`, `finish_task_switch`) led the
//! server's profile; a connection pinned to one thread needs none of that
//! (1.38× instead of 1.30× Go's requests on `/healthz`, README). Accepting on the worker that serves also keeps
//! a connection where the kernel woke it: the worker first to run after a
//! client connects, often on the CPU that handled the handshake, takes it.
//! What this gives up is stealing: a worker stuck on a slow request does not
//! lend its other connections to an idle one. The handlers here do no
//! blocking work, so that does not arise.
//!
//! Balance: a worker accepts only while it has at most one connection more
//! than the least loaded worker; past that it waits and leaves new
//! connections to the others (every worker's poller sees each new one), so
//! keep-alive clients spread evenly however the wakeups fall. The price is
//! that each new connection wakes every worker, of which one accepts it:
//! cheap for keep-alive traffic, a cost per connection for clients that
//! open one per request.
//!
//! One listening socket is kept, so the socket handover of an upgrade and
//! systemd's socket activation are as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, anyhow};
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};

/// The workers, shared by their accept loops.
pub struct Workers {
    workers: Vec<Worker>,
    /// Woken whenever a worker's count of open connections changes.
    changed: Notify,
}

struct Worker {
    handle: Handle,
    /// Connections running on this worker.
    open: AtomicUsize,
}

/// The worker threads besides the main one; dropping it stops them (each
/// drops the connections still running on it) and waits for them to end.
pub struct Threads {
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// The current runtime as the only worker.
    pub fn current() -> Arc<Workers> {
        Workers::with_handles(vec![Handle::current()])
    }

    /// `count` workers: the `main` runtime, which must be single-threaded
    /// for the point of this to hold, and `count - 1` threads of their own.
    pub fn start(main: Handle, count: usize) -> anyhow::Result<(Arc<Workers>, Threads)> {
        let mut handles = vec![main];
        let mut threads = Threads {
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for index in 1..count {
            let (handle_sender, handle) = std::sync::mpsc::channel();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match runtime {
                        Ok(runtime) => {
                            let _ = handle_sender.send(Ok(runtime.handle().clone()));
                            // Returns when told to stop, or when the sender
                            // is dropped with `Threads`.
                            let _ = runtime.block_on(stopped);
                        }
                        Err(err) => drop(handle_sender.send(Err(err))),
                    }
                })
                .with_context(|| format!("start worker thread {index} of {count}"))?;
            threads.threads.push(thread);
            threads.stops.push(stop);
            let handle = handle
                .recv()
                .map_err(|_| anyhow!("worker thread {index} ended while starting"))?
                .with_context(|| format!("start the runtime of worker thread {index}"))?;
            handles.push(handle);
        }
        Ok((Workers::with_handles(handles), threads))
    }

    fn with_handles(handles: Vec<Handle>) -> Arc<Workers> {
        Arc::new(Workers {
            workers: handles
                .into_iter()
                .map(|handle| Worker {
                    handle,
                    open: AtomicUsize::new(0),
                })
                .collect(),
            changed: Notify::new(),
        })
    }

    /// How many workers there are (at least one).
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Never: a pool has at least one worker.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The runtime of worker `index`, to start its accept loop on.
    pub fn handle(&self, index: usize) -> &Handle {
        &self.workers[index].handle
    }

    /// Returns once worker `index` may accept: while it has more than one
    /// connection above the least loaded worker, it waits for the counts to
    /// change.
    pub async fn turn(&self, index: usize) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a change in between is seen.
            changed.as_mut().enable();
            let open = |index: usize| self.workers[index].open.load(Ordering::Relaxed);
            if may_accept(self.len(), index, open) {
                return;
            }
            changed.await;
        }
    }

    /// Counts a connection on worker `index` until the guard is dropped.
    pub fn open(self: &Arc<Workers>, index: usize) -> Open {
        self.workers[index].open.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
        Open {
            workers: self.clone(),
            index,
        }
    }
}

/// Whether worker `index` of `count`, with `open(i)` connections on worker
/// `i`, is at most one connection above the least loaded.
fn may_accept(count: usize, index: usize, open: impl Fn(usize) -> usize) -> bool {
    let least = (0..count).map(&open).min().unwrap_or(0);
    open(index) <= least + 1
}

/// One open connection on a worker, however its task ends (also when the
/// runtime drops it unpolled).
pub struct Open {
    workers: Arc<Workers>,
    index: usize,
}

impl Open {
    /// The worker the connection runs on.
    pub fn worker(&self) -> usize {
        self.index
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.workers.workers[self.index]
            .open
            .fetch_sub(1, Ordering::Relaxed);
        self.workers.changed.notify_waiters();
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_accepts_while_at_most_one_above_the_least_loaded() {
        // (open connections per worker, the worker, may it accept)
        let cases: &[(&[usize], usize, bool)] = &[
            (&[0], 0, true),
            (&[9], 0, true),
            (&[0, 0], 1, true),
            (&[1, 0], 0, true),
            (&[2, 0], 0, false),
            (&[2, 0], 1, true),
            (&[5, 4, 4], 0, true),
            (&[6, 4, 5], 0, false),
            (&[6, 4, 5], 2, true),
            (&[3, 3, 1, 2], 1, false),
        ];
        for &(open, index, expected) in cases {
            assert_eq!(
                may_accept(open.len(), index, |worker| open[worker]),
                expected,
                "worker {index} of {open:?}"
            );
        }
    }

    #[test]
    fn a_worker_ahead_waits_until_the_others_catch_up_or_its_connections_close() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (workers, threads) = Workers::start(Handle::current(), 2).unwrap();
            assert_eq!(workers.len(), 2);
            let ahead: Vec<Open> = (0..2).map(|_| workers.open(0)).collect();
            let waiting = tokio::spawn({
                let workers = workers.clone();
                async move { workers.turn(0).await }
            });
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished(), "two ahead of an idle worker");
            workers.turn(1).await;
            // A connection on the other worker lets the first take one more.
            let other = workers.open(1);
            tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
                .await
                .expect("woken when the counts change")
                .unwrap();
            drop(other);
            let waiting = tokio::spawn({
                let workers = workers.clone();
                async move { workers.turn(0).await }
            });
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished());
            drop(ahead);
            tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
                .await
                .expect("woken when its connections close")
                .unwrap();
            // The second worker runs on a thread of its own.
            let name = workers
                .handle(1)
                .spawn(async { std::thread::current().name().map(str::to_owned) })
                .await
                .unwrap();
            assert_eq!(name.as_deref(), Some("worker-1"));
            drop(threads);
        });
    }
}
