//! The one state machine of the process: starting → ready → draining →
//! stopped → closing. `/readyz`, the request middleware, the accept loop and
//! the shutdown sequence all read it, so they can never disagree about
//! whether the service is ready or accepting.

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Settings loaded, not yet accepting.
    Starting,
    /// Accepting and serving; `/readyz` answers 200.
    Ready,
    /// A stop was requested: still serving, `/readyz` answers 503 so that
    /// load balancers move traffic away before accepting stops. From here
    /// on, every response carries `Connection: close`.
    Draining,
    /// No longer accepting (the listening socket is closed, or left to the
    /// process that took over); open connections get their next response
    /// with `Connection: close`, so keep-alive clients reconnect cleanly.
    Stopped,
    /// Idle connections are closed; in-flight requests are finishing.
    Closing,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Draining => "draining",
            State::Stopped => "stopped",
            State::Closing => "closing",
        }
    }
}

#[derive(Debug)]
pub struct Lifecycle {
    state: watch::Sender<State>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            state: watch::Sender::new(State::Starting),
        }
    }
}

impl Lifecycle {
    pub fn state(&self) -> State {
        *self.state.borrow()
    }

    pub fn is_ready(&self) -> bool {
        self.state() == State::Ready
    }

    /// Moves to `next`; the machine only moves forward.
    pub fn advance(&self, next: State) {
        self.state.send_if_modified(|state| {
            let forward = (next as u8) > (*state as u8);
            if forward {
                *state = next;
            }
            forward
        });
    }

    /// Waits until the state is `target` or later.
    pub async fn reached(&self, target: State) {
        let mut receiver = self.state.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = receiver
            .wait_for(|state| (*state as u8) >= (target as u8))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_only_moves_forward() {
        let lifecycle = Lifecycle::default();
        let check = |next: State, expected: State| {
            lifecycle.advance(next);
            assert_eq!(lifecycle.state(), expected);
        };
        check(State::Ready, State::Ready);
        check(State::Starting, State::Ready);
        check(State::Draining, State::Draining);
        check(State::Ready, State::Draining);
        check(State::Stopped, State::Stopped);
        check(State::Draining, State::Stopped);
        check(State::Closing, State::Closing);
        assert!(!lifecycle.is_ready());
    }
}
