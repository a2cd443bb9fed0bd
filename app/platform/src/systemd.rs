//! The systemd side of the lifecycle, both no-ops outside systemd:
//! the listening socket systemd passes (`LISTEN_FDS`, socket activation, so
//! that systemd owns the port and a restart queues connections instead of
//! refusing them), and the notify protocol for `Type=notify` units:
//! `READY=1` once serving, `RELOADING=1` when an upgrade starts,
//! `MAINPID=<new pid>` with `READY=1` when the new process took over (or
//! `READY=1` alone when the upgrade failed), `STOPPING=1` when a stop begins.

use anyhow::Result;

/// The first listening socket systemd passed to this process, if any.
#[cfg(target_os = "linux")]
pub fn inherited_listener() -> Result<Option<std::net::TcpListener>> {
    use anyhow::{Context, bail};
    use std::os::fd::FromRawFd;

    /// systemd passes sockets from this descriptor on (`SD_LISTEN_FDS_START`).
    const FIRST_FD: i32 = 3;
    // The variables are meant for the process whose pid they name; a child
    // that merely inherited them must not take the descriptors.
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    if !for_us {
        return Ok(None);
    }
    let count: u32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|count| count.parse().ok())
        .context("LISTEN_PID names this process but LISTEN_FDS is not a number")?;
    match count {
        0 => return Ok(None),
        1 => {}
        _ => bail!(
            "systemd passed {count} sockets: the service listens on one, so its socket unit should have one ListenStream="
        ),
    }
    use crate::upgrade::{Inheritable, check_inherited, close_on_exec};
    check_inherited(
        FIRST_FD,
        Inheritable::ListeningSocket,
        "LISTEN_FDS=1 (socket activation)",
    )?;
    // SAFETY: by the socket activation protocol, descriptor 3 is a socket
    // that systemd opened for this process (LISTEN_PID matched), and it was
    // inherited (no close-on-exec) and listens on TCP, so nothing else in
    // this process owns it; it is taken once, here, at start-up.
    let listener = unsafe { std::net::TcpListener::from_raw_fd(FIRST_FD) };
    // As sd_listen_fds does: the socket must not leak into a child, which
    // gets it only through an upgrade's handover.
    close_on_exec(FIRST_FD)?;
    Ok(Some(listener))
}

#[cfg(not(target_os = "linux"))]
pub fn inherited_listener() -> Result<Option<std::net::TcpListener>> {
    Ok(None)
}

/// Sends state changes to systemd's notify socket (`NOTIFY_SOCKET`).
pub struct Notifier {
    #[cfg(target_os = "linux")]
    target: Option<(
        std::os::unix::net::UnixDatagram,
        std::os::unix::net::SocketAddr,
    )>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            use std::os::unix::net::{SocketAddr, UnixDatagram};
            let target = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| {
                // `@name` is a socket in the abstract namespace.
                let address = match path.strip_prefix('@') {
                    Some(name) => SocketAddr::from_abstract_name(name.as_bytes()).ok()?,
                    None => SocketAddr::from_pathname(&path).ok()?,
                };
                Some((UnixDatagram::unbound().ok()?, address))
            });
            Notifier { target }
        }
        #[cfg(not(target_os = "linux"))]
        Notifier {}
    }

    /// Sends `state` (e.g. `READY=1`); a failure is logged, never fatal.
    pub fn notify(&self, state: &str) {
        #[cfg(target_os = "linux")]
        if let Some((socket, address)) = &self.target
            && let Err(err) = socket.send_to_addr(state.as_bytes(), address)
        {
            tracing::warn!(%err, state, "could not notify systemd");
        }
        #[cfg(not(target_os = "linux"))]
        let _ = state;
    }
}

/// `CLOCK_MONOTONIC` in microseconds, which systemd wants with `RELOADING=1`
/// (`MONOTONIC_USEC=`) to tell this reload from an earlier one.
#[cfg(target_os = "linux")]
pub fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

#[cfg(not(target_os = "linux"))]
pub fn monotonic_usec() -> u64 {
    0
}
