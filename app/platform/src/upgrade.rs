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
//! On Linux the new process is started as a sibling, not a child: a child
//! of this process's parent (`clone` with `CLONE_PARENT`). Under systemd
//! that parent is the service manager, which then supervises the process
//! named by `MAINPID=` as its own child. A grandchild, as a plain fork would
//! make, is "not our child" to systemd: it cannot notice its exit, and a
//! later `systemctl stop` kills the service's processes at once instead of
//! letting them drain (until a `daemon-reload`). This process follows its
//! sibling through a pidfd, which also stops it race-free if it fails.
//!
//! Both descriptors are named in `APP_HANDOVER="<pipe inode> <socket fd>
//! <pipe fd>"`. The inode identifies the very pipe this process made, so
//! the variable applies only to a process that holds that pipe at that
//! descriptor: a stale copy in the environment anywhere else is ignored.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(unix)]
use anyhow::{Context, anyhow};
use anyhow::{Result, bail};

#[cfg(unix)]
use crate::config::format_duration;

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
                .unwrap_or_else(|| crate::build_info::binary().into()),
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

/// The socket and pipe the previous process handed over, if `APP_HANDOVER`
/// names a pipe this process holds.
#[cfg(unix)]
pub fn inherited() -> Result<Option<Inherited>> {
    use std::os::fd::{FromRawFd, RawFd};

    let Ok(value) = std::env::var(HANDOVER) else {
        return Ok(None);
    };
    let fields: Vec<&str> = value.split(' ').collect();
    let [inode, socket, pipe] = fields[..] else {
        bail!(
            "{HANDOVER}={value:?} is not \"<pipe inode> <socket fd> <pipe fd>\": only an upgrading process sets it; unset it"
        );
    };
    let descriptor = |text: &str| {
        text.parse::<RawFd>()
            .ok()
            .filter(|fd| *fd > 2)
            .with_context(|| format!("{HANDOVER}={value:?}: {text:?} is not a descriptor"))
    };
    let (socket_fd, pipe_fd) = (descriptor(socket)?, descriptor(pipe)?);
    let inode: u64 = inode
        .parse()
        .with_context(|| format!("{HANDOVER}={value:?}: {inode:?} is not an inode number"))?;
    if socket_fd == pipe_fd {
        bail!("{HANDOVER}={value:?} names one descriptor twice");
    }
    if pipe_inode(pipe_fd) != Some(inode) {
        // Not the pipe the previous process made: the variable was meant
        // for another process.
        return Ok(None);
    }
    let origin = format!("{HANDOVER}={value:?}");
    check_inherited(pipe_fd, Inheritable::Pipe, &origin)?;
    check_inherited(socket_fd, Inheritable::ListeningSocket, &origin)?;
    // SAFETY: the previous process passed these two descriptors to this
    // process for exactly this use (the pipe is the one it made, by its
    // inode), and nothing else in this process owns them: both were
    // inherited across exec (no close-on-exec, which every descriptor this
    // process opens has) and are of the kind the handover names. They are
    // taken once, here, at start-up.
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

/// The inode of the pipe open at `fd`, if `fd` is an open pipe.
#[cfg(unix)]
pub fn pipe_inode(fd: std::os::fd::RawFd) -> Option<u64> {
    // SAFETY: fstat writes into the zeroed struct it is given; a closed
    // descriptor only makes it fail.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let is_pipe = (unsafe { libc::fstat(fd, &mut stat) }) == 0
        && stat.st_mode & libc::S_IFMT == libc::S_IFIFO;
    #[allow(clippy::unnecessary_cast)] // ino_t is u32 on some targets
    is_pipe.then_some(stat.st_ino as u64)
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
    let inode = pipe_inode(pipe_fd).context("the readiness pipe is not a pipe")?;
    let handover = format!("{inode} {socket_fd} {pipe_fd}");
    let path = program.path.display();
    let mut process = NewProcess::spawn(program, &handover, [socket_fd, pipe_fd])
        .with_context(|| format!("start {path}"))?;
    // The new process has its copy; without closing ours, its exit would
    // not end the read below.
    drop(writer);
    let pid = process.pid;
    tracing::info!(pid, program = %path, "upgrade: started the new process, waiting for it to be ready");

    let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
        .context("watch the readiness pipe")?;
    let mut receiver = tokio::io::BufReader::new(receiver);
    let mut line = Vec::new();
    let outcome = tokio::select! {
        read = receiver.read_until(b'\n', &mut line) => Outcome::Line(read),
        () = process.exited() => Outcome::Exited,
        () = tokio::time::sleep(timeout) => Outcome::TimedOut,
    };
    let outcome = with_last_words(outcome, &mut receiver, &mut line).await;
    let error = match outcome {
        Outcome::Line(Ok(_)) if line == READY => {
            // It serves now: it must outlive this process.
            process.keep();
            return Ok(pid);
        }
        // The pipe closes when the process exits.
        Outcome::Line(Ok(0)) => anyhow!(
            "the new process (pid {pid}) closed its readiness pipe without reporting ready: it exited or was killed"
        ),
        Outcome::Line(Ok(_)) => {
            let text = String::from_utf8_lossy(&line);
            match text.trim_end().strip_prefix(FAILED) {
                Some(failure) => {
                    let (code, message) = failure.split_once(' ').unwrap_or((failure, ""));
                    anyhow!(
                        "the new process (pid {pid}) exited with status {code} before it was ready: {message}"
                    )
                }
                None => anyhow!("the new process (pid {pid}) reported {text:?} instead of READY=1"),
            }
        }
        Outcome::Line(Err(err)) => anyhow!(err).context("read the readiness pipe"),
        Outcome::Exited => anyhow!(
            "the new process (pid {pid}) {} before it was ready",
            process.how_it_ended()
        ),
        Outcome::TimedOut => anyhow!(
            "the new process (pid {pid}) was not ready within server.upgrade_timeout ({}); stopped it",
            format_duration(timeout)
        ),
    };
    // Dropping `process` stops it, so a failed upgrade leaves no process behind.
    Err(error)
}

/// How waiting for the new process ended.
#[cfg(unix)]
enum Outcome {
    Line(std::io::Result<usize>),
    Exited,
    TimedOut,
}

/// A process that fails writes its reason, then exits: both can be ready at
/// once, and the exit must not hide the reason. Once the process has gone,
/// the pipe's end is at hand (it held the only write end), so what it wrote
/// is read before its exit is judged.
#[cfg(unix)]
async fn with_last_words(
    outcome: Outcome,
    pipe: &mut (impl tokio::io::AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
) -> Outcome {
    use tokio::io::AsyncBufReadExt;
    let Outcome::Exited = outcome else {
        return outcome;
    };
    match tokio::time::timeout(LAST_WORDS_TIMEOUT, pipe.read_until(b'\n', line)).await {
        Ok(read) if !line.is_empty() => Outcome::Line(read),
        _ => Outcome::Exited,
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

/// What a new process that fails before it is ready writes to the
/// readiness pipe, followed by its exit code and its error: the previous
/// process cannot learn its exit status otherwise (it is not its parent).
#[cfg(unix)]
const FAILED: &str = "FAILED=";

/// How long the readiness pipe is read after the new process exited: only a
/// descendant that inherited the pipe's write end can keep it open.
#[cfg(unix)]
const LAST_WORDS_TIMEOUT: Duration = Duration::from_secs(1);

/// Tells the previous process why this one fails to start, if this one was
/// started by an upgrade and still holds the readiness pipe. Called on the
/// way out with the exit code and the one-line error.
#[cfg(unix)]
pub fn report_failure(code: u8, message: &str) {
    let Ok(value) = std::env::var(HANDOVER) else {
        return;
    };
    let fields: Vec<&str> = value.split(' ').collect();
    let [inode, _, pipe] = fields[..] else {
        return;
    };
    let (Ok(inode), Ok(pipe_fd)) = (inode.parse::<u64>(), pipe.parse::<std::os::fd::RawFd>())
    else {
        return;
    };
    if pipe_fd <= 2 || pipe_inode(pipe_fd) != Some(inode) {
        return;
    }
    let line = format!("{FAILED}{code} {}\n", message.replace('\n', " "));
    // SAFETY: write(2) on the inherited pipe (checked by its inode above),
    // from a buffer that outlives the call; this does not take ownership of
    // the descriptor.
    unsafe {
        libc::write(pipe_fd, line.as_ptr().cast(), line.len());
    }
}

#[cfg(not(unix))]
pub fn report_failure(_code: u8, _message: &str) {}

/// The new process while it starts: stopped when dropped, unless kept.
#[cfg(target_os = "linux")]
struct NewProcess {
    pid: u32,
    /// Readable once the process has exited.
    pidfd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

#[cfg(target_os = "linux")]
impl NewProcess {
    /// Starts `program` as a sibling of this process (see the module
    /// header) with `APP_HANDOVER=handover` and `inherited` passed across
    /// exec; the `LISTEN_*` variables name this process and are left out.
    fn spawn(program: &Program, handover: &str, inherited: [libc::c_int; 2]) -> Result<NewProcess> {
        use std::ffi::CString;
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::os::unix::ffi::OsStrExt;

        if std::process::id() == 1 {
            bail!(
                "this process is PID 1 (a container's init), which cannot hand over to a successor: roll out a new container instead"
            );
        }
        let c_string =
            |bytes: &[u8]| CString::new(bytes).context("an argument or variable holds a NUL byte");
        let path = c_string(resolve(&program.path)?.as_os_str().as_bytes())?;
        let mut argv = vec![c_string(program.path.as_os_str().as_bytes())?];
        for arg in &program.args {
            argv.push(c_string(arg.as_bytes())?);
        }
        let mut envp = Vec::new();
        for (key, value) in std::env::vars_os() {
            if matches!(
                key.as_bytes(),
                b"LISTEN_PID" | b"LISTEN_FDS" | b"LISTEN_FDNAMES" | b"APP_HANDOVER"
            ) {
                continue;
            }
            let mut entry = key.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            envp.push(c_string(&entry)?);
        }
        envp.push(c_string(format!("{HANDOVER}={handover}").as_bytes())?);
        let argv_pointers: Vec<*const libc::c_char> = argv
            .iter()
            .map(|arg| arg.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp_pointers: Vec<*const libc::c_char> = envp
            .iter()
            .map(|entry| entry.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        // exec's failure travels back on this pipe; a successful exec
        // closes it (close-on-exec), which the read below sees as EOF.
        let (mut exec_error_reader, exec_error_writer) =
            std::io::pipe().context("create the exec error pipe")?;
        let error_fd = std::os::fd::AsRawFd::as_raw_fd(&exec_error_writer);

        let mut pidfd: libc::c_int = -1;
        // SAFETY: clone without CLONE_VM is fork: the child gets a copy of
        // this process's memory and returns 0 here. In the child, which
        // runs in a copy of a multi-threaded process, only async-signal-safe
        // calls follow (sigprocmask, fcntl, execve, write, _exit), on
        // memory prepared above and not freed before the child execs or
        // exits. CLONE_PARENT makes the child this process's sibling;
        // CLONE_PIDFD stores a pidfd for it in `pidfd` (in the parent).
        let result = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_PARENT | libc::CLONE_PIDFD | libc::SIGCHLD) as libc::c_ulong,
                0 as libc::c_ulong,
                &raw mut pidfd,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if result == 0 {
            // The child.
            // SAFETY: see above; every call is async-signal-safe and every
            // pointer is to memory that stays valid in this copy.
            unsafe {
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                for fd in inherited {
                    libc::fcntl(fd, libc::F_SETFD, 0);
                }
                libc::execve(
                    path.as_ptr(),
                    argv_pointers.as_ptr(),
                    envp_pointers.as_ptr(),
                );
                let errno = *libc::__errno_location();
                libc::write(
                    error_fd,
                    (&raw const errno).cast(),
                    size_of::<libc::c_int>(),
                );
                libc::_exit(127);
            }
        }
        if result < 0 {
            return Err(std::io::Error::last_os_error()).context("clone (CLONE_PARENT)");
        }
        let pid = u32::try_from(result).expect("a pid is positive");
        drop(exec_error_writer);
        // SAFETY: the kernel wrote a new pidfd, owned by nothing else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let mut process = NewProcess { pid, pidfd: None };
        // Blocks only until the child execs: a few milliseconds.
        let mut errno = [0u8; size_of::<libc::c_int>()];
        match std::io::Read::read(&mut exec_error_reader, &mut errno) {
            Ok(0) => {}
            Ok(_) => {
                let _ = process_signal(&pidfd, libc::SIGKILL);
                return Err(std::io::Error::from_raw_os_error(
                    libc::c_int::from_ne_bytes(errno),
                ))
                .context("exec");
            }
            Err(err) => {
                let _ = process_signal(&pidfd, libc::SIGKILL);
                return Err(err).context("read the exec error pipe");
            }
        }
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open on the
        // same pidfd until the AsyncFd is dropped.
        let watched = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        };
        match watched {
            Ok(watched) => process.pidfd = Some(watched),
            Err(err) => {
                let (pidfd, err) = err.into_parts();
                let _ = process_signal(&pidfd, libc::SIGKILL);
                return Err(err).context("watch the new process's pidfd");
            }
        }
        Ok(process)
    }

    /// Returns once the process has exited.
    async fn exited(&self) {
        match &self.pidfd {
            Some(pidfd) => {
                let _ = pidfd.readable().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Its parent, not this process, learns the exit status.
    fn how_it_ended(&self) -> &'static str {
        "exited (its own log lines say why)"
    }

    /// Lets the process run on when this handle is dropped.
    fn keep(&mut self) {
        self.pidfd = None;
    }
}

#[cfg(target_os = "linux")]
impl Drop for NewProcess {
    fn drop(&mut self) {
        if let Some(pidfd) = &self.pidfd {
            let _ = process_signal(pidfd.get_ref(), libc::SIGKILL);
        }
    }
}

/// Sends `signal` to the process behind `pidfd`: never to a process that
/// reused its pid.
#[cfg(target_os = "linux")]
fn process_signal(pidfd: &std::os::fd::OwnedFd, signal: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal with no siginfo only reads its arguments.
    let result = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if result == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The file `path` names: itself if it holds a slash, else the first
/// executable of that name on `$PATH`, as a shell would find it.
#[cfg(target_os = "linux")]
fn resolve(path: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if path.components().count() > 1 {
        return Ok(path.to_owned());
    }
    let search = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&search)
        .map(|dir| dir.join(path))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .with_context(|| format!("{} is not on $PATH", path.display()))
}

/// The new process while it starts, where it is this process's child
/// (Unix but not Linux): stopped when dropped, unless kept.
#[cfg(all(unix, not(target_os = "linux")))]
struct NewProcess {
    pid: u32,
    child: Option<tokio::process::Child>,
    status: Option<std::process::ExitStatus>,
}

#[cfg(all(unix, not(target_os = "linux")))]
impl NewProcess {
    fn spawn(program: &Program, handover: &str, inherited: [libc::c_int; 2]) -> Result<NewProcess> {
        let mut command = tokio::process::Command::new(&program.path);
        command
            .args(&program.args)
            .env(HANDOVER, handover)
            // They name this process; the new one gets the socket through the handover.
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES");
        // SAFETY: the closure runs in the forked child before exec and only
        // calls fcntl, which is async-signal-safe. It clears close-on-exec on
        // the two descriptors this process owns (still open for the spawn),
        // in the child's descriptor table only.
        unsafe {
            command.pre_exec(move || {
                for fd in inherited {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        let pid = child.id().context("the new process has no pid")?;
        Ok(NewProcess {
            pid,
            child: Some(child),
            status: None,
        })
    }

    async fn exited(&mut self) {
        match &mut self.child {
            Some(child) => self.status = child.wait().await.ok(),
            None => std::future::pending().await,
        }
    }

    fn how_it_ended(&self) -> String {
        use std::os::unix::process::ExitStatusExt;
        match self.status.map(|status| (status.code(), status.signal())) {
            Some((Some(code), _)) => format!("exited with status {code}"),
            Some((None, Some(signal))) => format!("was killed by signal {signal}"),
            _ => "ended".to_owned(),
        }
    }

    fn keep(&mut self) {
        self.child = None;
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
impl Drop for NewProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Seen as the pipe would be once the process has exited: what it
    /// wrote, then the end.
    fn judged_after_exit(written: &[u8]) -> (Outcome, Vec<u8>) {
        runtime().block_on(async {
            let (reader, mut writer) = std::io::pipe().unwrap();
            std::io::Write::write_all(&mut writer, written).unwrap();
            drop(writer);
            let receiver =
                tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(reader))
                    .unwrap();
            let mut pipe = tokio::io::BufReader::new(receiver);
            let mut line = Vec::new();
            let outcome = with_last_words(Outcome::Exited, &mut pipe, &mut line).await;
            (outcome, line)
        })
    }

    #[test]
    fn an_exit_with_a_line_in_the_pipe_is_judged_by_the_line() {
        let (outcome, line) = judged_after_exit(b"FAILED=3 the config is broken\n");
        assert!(matches!(outcome, Outcome::Line(Ok(_))));
        assert_eq!(line, b"FAILED=3 the config is broken\n");
    }

    #[test]
    fn an_exit_with_nothing_in_the_pipe_stays_an_exit() {
        let (outcome, line) = judged_after_exit(b"");
        assert!(matches!(outcome, Outcome::Exited));
        assert!(line.is_empty());
    }
}
