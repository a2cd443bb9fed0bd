//! Zero-downtime upgrades (SIGHUP or SIGUSR2), both sides of the handover.
//!
//! The running process starts the binary at the path it was itself started
//! from (so a deploy that switched a `current` symlink is followed; not
//! `/proc/self/exe`, which still names the old file) with the same
//! arguments, and hands it the listening socket and the write end of a
//! pipe. The new process serves on the socket and writes `READY=1` to the
//! pipe; only then does the old one stop accepting and drain. If the new
//! process exits, closes the pipe, or is not ready within the upgrade
//! timeout, the old one stops it and keeps serving.
//!
//! Both descriptors are named in `APP_HANDOVER="<parent pid> <socket fd>
//! <pipe fd>"`. Like systemd's `LISTEN_PID`, the pid makes the variable
//! apply only to the process it was meant for: a process whose parent is not
//! that pid ignores it, so a stale copy in the environment is harmless.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(unix)]
use anyhow::{Context, anyhow};
use anyhow::{Result, bail};

#[cfg(unix)]
use crate::platform::config::format_duration;

#[cfg(unix)]
const HANDOVER: &str = "APP_HANDOVER";
const READY: &[u8] = b"READY=1\n";

/// The command that starts this program again: the path it was started
/// from, made absolute without resolving symlinks, and the same arguments.
pub struct Program {
    path: PathBuf,
    // Read only where upgrades exist (Unix).
    #[cfg_attr(not(unix), allow(dead_code))]
    args: Vec<OsString>,
}

impl Program {
    pub fn from_start() -> Program {
        let mut args = std::env::args_os();
        let started_as = PathBuf::from(
            args.next()
                .unwrap_or_else(|| crate::platform::build_info::BINARY.into()),
        );
        // A bare name (started through $PATH) is looked up again at upgrade
        // time; anything with a slash is relative to the start directory,
        // which `absolute` captures now.
        let path = if started_as.components().count() > 1 {
            std::path::absolute(&started_as).unwrap_or(started_as)
        } else {
            started_as
        };
        Program {
            path,
            args: args.collect(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What the previous process handed over, in the new one.
pub struct Inherited {
    pub listener: std::net::TcpListener,
    pub ready: ReadySignal,
}

/// The write end of the readiness pipe.
pub struct ReadySignal(std::fs::File);

impl ReadySignal {
    /// Tells the previous process that this one serves; it then drains.
    pub fn report(self) {
        use std::io::Write;
        let ReadySignal(mut pipe) = self;
        if let Err(err) = pipe.write_all(READY) {
            tracing::warn!(%err, "could not tell the previous process that this one is ready");
        }
    }
}

/// The socket and pipe the parent handed over, if `APP_HANDOVER` names
/// this process's parent.
#[cfg(unix)]
pub fn inherited() -> Result<Option<Inherited>> {
    use std::os::fd::{FromRawFd, RawFd};

    let Ok(value) = std::env::var(HANDOVER) else {
        return Ok(None);
    };
    let fields: Vec<&str> = value.split(' ').collect();
    let [pid, socket, pipe] = fields[..] else {
        bail!(
            "{HANDOVER}={value:?} is not \"<parent pid> <socket fd> <pipe fd>\": only an upgrading process sets it; unset it"
        );
    };
    if pid.parse::<u32>().ok() != Some(std::os::unix::process::parent_id()) {
        return Ok(None);
    }
    let descriptor = |text: &str| {
        text.parse::<RawFd>()
            .ok()
            .filter(|fd| *fd > 2)
            .with_context(|| format!("{HANDOVER}={value:?}: {text:?} is not a descriptor"))
    };
    let (socket_fd, pipe_fd) = (descriptor(socket)?, descriptor(pipe)?);
    if socket_fd == pipe_fd {
        bail!("{HANDOVER}={value:?} names one descriptor twice");
    }
    let origin = format!("{HANDOVER}={value:?}");
    check_inherited(socket_fd, Inheritable::ListeningSocket, &origin)?;
    check_inherited(pipe_fd, Inheritable::Pipe, &origin)?;
    // SAFETY: the parent process (its pid is checked above) passed these two
    // descriptors to this process for exactly this use, and nothing else in
    // this process owns them: both were inherited across exec (no
    // close-on-exec, which every descriptor this process opens has) and are
    // of the kind the handover names. They are taken once, here, at start-up.
    let (listener, pipe) = unsafe {
        (
            std::net::TcpListener::from_raw_fd(socket_fd),
            std::fs::File::from_raw_fd(pipe_fd),
        )
    };
    // Inherited descriptors survive exec; these must not reach a later child
    // except through the next handover.
    close_on_exec(socket_fd)?;
    close_on_exec(pipe_fd)?;
    listener.local_addr().with_context(|| {
        format!("descriptor {socket_fd} from the previous process is not a TCP listening socket")
    })?;
    Ok(Some(Inherited {
        listener,
        ready: ReadySignal(pipe),
    }))
}

#[cfg(not(unix))]
pub fn inherited() -> Result<Option<Inherited>> {
    Ok(None)
}

/// Starts `program` with `socket` and waits until it reports ready; returns
/// its pid. On any failure the new process is stopped (if it runs) and the
/// error says why. Dropping the future stops the new process too.
#[cfg(unix)]
pub async fn start(
    program: &Program,
    socket: &std::net::TcpListener,
    timeout: Duration,
) -> Result<u32> {
    use std::os::fd::{AsRawFd, OwnedFd};
    use tokio::io::AsyncBufReadExt;

    let (reader, writer) = std::io::pipe().context("create the readiness pipe")?;
    let (socket_fd, pipe_fd) = (socket.as_raw_fd(), writer.as_raw_fd());
    let mut command = tokio::process::Command::new(&program.path);
    command
        .args(&program.args)
        .env(
            HANDOVER,
            format!("{} {socket_fd} {pipe_fd}", std::process::id()),
        )
        // They name this process; the new one gets the socket through the handover.
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_FDNAMES");
    // SAFETY: the closure runs in the forked child before exec and only
    // calls fcntl, which is async-signal-safe. It clears close-on-exec on
    // the two descriptors this process owns (still open: `socket` and
    // `writer` outlive the spawn), in the child's descriptor table only.
    unsafe {
        command.pre_exec(move || {
            for fd in [socket_fd, pipe_fd] {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let path = program.path.display();
    let mut guard = StopOnDrop(Some(
        command.spawn().with_context(|| format!("start {path}"))?,
    ));
    // The child has its copy; without closing ours, its exit would not end
    // the read below.
    drop(writer);
    let child = guard.0.as_mut().expect("just spawned");
    let pid = child.id().context("the new process has no pid")?;
    tracing::info!(pid, program = %path, "upgrade: started the new process, waiting for it to be ready");

    let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
        .context("watch the readiness pipe")?;
    let mut receiver = tokio::io::BufReader::new(receiver);
    let mut line = Vec::new();
    let failure = tokio::select! {
        read = receiver.read_until(b'\n', &mut line) => match read {
            Ok(_) if line == READY => None,
            // The pipe closes when the process exits: say how it exited.
            Ok(0) => Some(Failure::ClosedPipe),
            Ok(_) => Some(Failure::Other(anyhow!(
                "the new process (pid {pid}) reported {:?} instead of READY=1",
                String::from_utf8_lossy(&line)
            ))),
            Err(err) => Some(Failure::Other(anyhow!(err).context("read the readiness pipe"))),
        },
        status = child.wait() => Some(Failure::Exited(status)),
        () = tokio::time::sleep(timeout) => Some(Failure::Other(anyhow!(
            "the new process (pid {pid}) was not ready within server.upgrade_timeout ({}); stopped it",
            format_duration(timeout)
        ))),
    };
    let error = match failure {
        None => {
            // It serves now: it must outlive this process.
            guard.0 = None;
            return Ok(pid);
        }
        Some(Failure::ClosedPipe) => {
            match tokio::time::timeout(Duration::from_secs(1), child.wait()).await {
                Ok(Ok(status)) => anyhow!("the new process (pid {pid}) {}", exited(status)),
                _ => anyhow!(
                    "the new process (pid {pid}) closed its readiness pipe without reporting ready"
                ),
            }
        }
        Some(Failure::Exited(Ok(status))) => {
            anyhow!("the new process (pid {pid}) {}", exited(status))
        }
        Some(Failure::Exited(Err(err))) => anyhow!(err).context("wait for the new process"),
        Some(Failure::Other(err)) => err,
    };
    // Stop and reap it, so that a failed upgrade leaves no process behind.
    let _ = child.kill().await;
    Err(error)
}

#[cfg(unix)]
enum Failure {
    ClosedPipe,
    Exited(std::io::Result<std::process::ExitStatus>),
    Other(anyhow::Error),
}

/// Stops the new process if the upgrade is abandoned (a stop signal
/// arrived, and the future was dropped) before it reported ready.
#[cfg(unix)]
struct StopOnDrop(Option<tokio::process::Child>);

#[cfg(unix)]
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.start_kill();
        }
    }
}

#[cfg(not(unix))]
pub async fn start(
    _program: &Program,
    _socket: &std::net::TcpListener,
    _timeout: Duration,
) -> Result<u32> {
    bail!("upgrades by signal need a Unix system")
}

#[cfg(unix)]
fn exited(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code} before it was ready"),
        (None, Some(signal)) => format!("was killed by signal {signal} before it was ready"),
        (None, None) => format!("ended ({status}) before it was ready"),
    }
}

/// Sets close-on-exec on an inherited descriptor, which exec left without it.
/// What an inherited descriptor must be.
#[cfg(unix)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inheritable {
    /// A listening TCP socket (IPv4 or IPv6).
    ListeningSocket,
    /// A pipe.
    Pipe,
}

/// Checks, before anything takes ownership of `fd`, that it was inherited
/// across exec and is what the protocol that named it says. Every
/// descriptor this process opens itself has close-on-exec (the standard
/// library and tokio open them all so), while an inherited one cannot: so
/// a stale or forged `LISTEN_FDS` or `APP_HANDOVER` gives an error and
/// never takes, then closes, one of the process's own descriptors.
/// `origin` names the variable in the error.
#[cfg(unix)]
pub fn check_inherited(fd: std::os::fd::RawFd, expected: Inheritable, origin: &str) -> Result<()> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags == -1 {
        bail!("{origin}: descriptor {fd} is not open in this process");
    }
    if flags & libc::FD_CLOEXEC != 0 {
        bail!(
            "{origin}: descriptor {fd} was opened by this process, not inherited; the variable is stale or forged: unset it"
        );
    }
    let what = match expected {
        Inheritable::ListeningSocket => "a listening TCP socket",
        Inheritable::Pipe => "a pipe",
    };
    let is_expected = match expected {
        Inheritable::ListeningSocket => {
            socket_option(fd, libc::SO_ACCEPTCONN) == Some(1)
                && socket_option(fd, libc::SO_TYPE) == Some(libc::SOCK_STREAM)
                && matches!(
                    socket_family(fd),
                    Some(family) if family == libc::AF_INET || family == libc::AF_INET6
                )
        }
        Inheritable::Pipe => {
            // SAFETY: fstat writes into the zeroed struct it is given.
            let mut stat: libc::stat = unsafe { std::mem::zeroed() };
            (unsafe { libc::fstat(fd, &mut stat) }) == 0
                && stat.st_mode & libc::S_IFMT == libc::S_IFIFO
        }
    };
    if !is_expected {
        bail!("{origin}: descriptor {fd} is not {what}");
    }
    Ok(())
}

/// An integer socket option of `fd`, if it is a socket.
#[cfg(unix)]
fn socket_option(fd: std::os::fd::RawFd, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut length = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `value`.
    let result = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&raw mut value).cast(),
            &mut length,
        )
    };
    (result == 0).then_some(value)
}

/// The address family of the socket `fd` is bound to.
#[cfg(unix)]
fn socket_family(fd: std::os::fd::RawFd) -> Option<libc::c_int> {
    // SAFETY: getsockname writes at most `length` bytes into the zeroed
    // storage, which is large enough for any address.
    let mut address: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut length = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let result = unsafe { libc::getsockname(fd, (&raw mut address).cast(), &mut length) };
    (result == 0).then_some(libc::c_int::from(address.ss_family))
}

#[cfg(unix)]
pub fn close_on_exec(fd: std::os::fd::RawFd) -> Result<()> {
    // SAFETY: fcntl on a descriptor this process owns; F_SETFD only changes
    // the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("set close-on-exec on descriptor {fd}"));
    }
    Ok(())
}
