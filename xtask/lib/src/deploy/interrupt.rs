//! Ctrl-C and SIGTERM during a deploy or rollback: the first asks it to
//! stop after the running step, switch back and release its lock; a second
//! ends the process at once.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};

/// Set by SIGINT and SIGTERM while a deploy or rollback runs, so that it
/// stops at the next step, switches back and releases its lock instead of
/// dying half-way. A second signal ends the process at once.
pub(super) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub(super) extern "C" fn note_interrupt(signal: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: signal and raise are async-signal-safe; the default
        // action ends the process.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
        return;
    }
    let message: &[u8] = b"\ninterrupted: stopping after this step and switching back; interrupt again to stop at once (the lock stays)\n";
    // SAFETY: write(2) is async-signal-safe; the buffer outlives the call.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
    }
}

pub(super) fn catch_interrupts() {
    let handler = note_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic and calls
    // async-signal-safe functions.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub(super) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub(super) fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}
