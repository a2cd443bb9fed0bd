//! The service under systemd's protocols, without systemd: a datagram
//! socket standing in for `NOTIFY_SOCKET`, and `systemd-socket-activate`
//! passing the listening socket (socket activation).

#![cfg(target_os = "linux")]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// The exact notifications through start, an upgrade (SIGHUP) and a stop,
/// as a `Type=notify` unit with `NotifyAccess=main` would receive them.
#[test]
fn notifications_follow_start_upgrade_and_stop() {
    let descendants = become_subreaper();
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("notify");
    let notify = UnixDatagram::bind(&path).unwrap();
    notify.set_read_timeout(Some(BOUND)).unwrap();
    let receive = || {
        let mut buffer = [0u8; 512];
        let length = notify
            .recv(&mut buffer)
            .expect("a notification within the bound");
        String::from_utf8_lossy(&buffer[..length]).into_owned()
    };

    let mut command = app_command();
    command
        .env("NOTIFY_SOCKET", &path)
        .env("APP__SERVER__DRAIN_DELAY", "0s");
    let mut service = Service::start(command);
    let serving = format!("STATUS=serving on {}", service.addr);
    assert_eq!(receive(), format!("READY=1\n{serving}"));
    assert_eq!(service.get("/readyz").status, 200);

    service.signal("HUP");
    let reloading = receive();
    let lines: Vec<&str> = reloading.lines().collect();
    assert_eq!(lines.len(), 3, "{reloading}");
    assert_eq!(lines[0], "RELOADING=1");
    let stamp: u64 = lines[1]
        .strip_prefix("MONOTONIC_USEC=")
        .and_then(|usec| usec.parse().ok())
        .unwrap_or_else(|| panic!("{reloading}"));
    assert!(stamp > 0, "{reloading}");
    assert_eq!(
        lines[2],
        format!("STATUS=upgrading: starting {}", app_binary())
    );
    let handover = receive();
    let new_pid: u32 = handover
        .strip_prefix("MAINPID=")
        .and_then(|rest| rest.split_once('\n'))
        .and_then(|(pid, _)| pid.parse().ok())
        .unwrap_or_else(|| panic!("{handover}"));
    descendants.track(new_pid);
    assert_eq!(handover, format!("MAINPID={new_pid}\nREADY=1\n{serving}"));
    // The old process exits without a word: it is no longer the main one.
    assert_eq!(service.wait_exit().code(), Some(0), "{}", service.output());
    assert_eq!(service.get("/healthz").json()["pid"], new_pid);

    send_signal(new_pid, libc::SIGTERM);
    assert_eq!(receive(), "STOPPING=1");
    assert_eq!(descendants.reap(new_pid), 0, "{}", service.output());
    notify.set_nonblocking(true).unwrap();
    let mut buffer = [0u8; 64];
    assert!(
        notify.recv(&mut buffer).is_err(),
        "a notification after STOPPING=1"
    );
}

#[test]
fn a_socket_passed_by_systemd_is_used_instead_of_binding() {
    let Some(activate) = tool_or_skip("systemd-socket-activate", "apt-get install -y systemd")
    else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    // systemd-socket-activate listens, then runs the service with the
    // socket as descriptor 3 when the first connection arrives. The service
    // is told to bind elsewhere, to show that it does not.
    let mut activator = Command::new(activate)
        .args(["--listen", &address, app_binary(), "--config-dir"])
        .arg(config_dir())
        .args(["--listen", "127.0.0.1:1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stream = connect_once_listening(&address);
    stream.set_read_timeout(Some(BOUND)).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    // The descriptor is the service's now, and close-on-exec, so that it
    // reaches a child only through an upgrade's handover.
    let descriptor_flags = response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
        .and_then(|health| health["pid"].as_u64())
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/fdinfo/3")).ok())
        .and_then(|info| {
            let flags = info.lines().find_map(|line| line.strip_prefix("flags:"))?;
            u32::from_str_radix(flags.trim(), 8).ok()
        });
    let _ = Command::new("kill")
        .args(["-TERM", &activator.id().to_string()])
        .status();
    let finished = activator.wait_with_output_bounded();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "{response}\n{finished}"
    );
    // systemd-socket-activate passes no environment, so the log is text.
    assert!(finished.contains("socket=\"from systemd\""), "{finished}");
    let flags = descriptor_flags.unwrap_or_else(|| panic!("no flags for descriptor 3: {response}"));
    assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "flags {flags:o}");
}

/// A connection to `address`, retried until something listens there (up to
/// `BOUND`).
fn connect_once_listening(address: &str) -> TcpStream {
    let deadline = Instant::now() + BOUND;
    loop {
        match TcpStream::connect(address) {
            Ok(stream) => return stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(err) => panic!("nothing listens on {address}: {err}"),
        }
    }
}

trait WaitBounded {
    /// Waits up to `BOUND` for the process to exit (killing it after) and
    /// returns what it printed.
    fn wait_with_output_bounded(&mut self) -> String;
}

impl WaitBounded for std::process::Child {
    fn wait_with_output_bounded(&mut self) -> String {
        let deadline = Instant::now() + BOUND;
        while self.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.wait();
        let mut printed = String::new();
        if let Some(mut stdout) = self.stdout.take() {
            let _ = stdout.read_to_string(&mut printed);
        }
        if let Some(mut stderr) = self.stderr.take() {
            let _ = stderr.read_to_string(&mut printed);
        }
        printed
    }
}

#[test]
fn more_than_one_passed_socket_is_a_clear_error() {
    let Some(activate) = tool_or_skip("systemd-socket-activate", "apt-get install -y systemd")
    else {
        return;
    };
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let (first, second) = (free(), free());
    let mut activator = Command::new(activate)
        .args([
            "--listen",
            &first,
            "--listen",
            &second,
            app_binary(),
            "--config-dir",
        ])
        .arg(config_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The service starts with the first connection, held open meanwhile.
    let _held = connect_once_listening(&first);
    let printed = activator.wait_with_output_bounded();
    let status = activator.try_wait().unwrap().expect("the service exited");
    assert_eq!(status.code(), Some(4), "{printed}");
    let error = printed
        .lines()
        .find(|line| line.starts_with("error: "))
        .unwrap_or_else(|| panic!("{printed}"));
    assert!(
        error.contains("systemd passed 2 sockets") && error.contains("one ListenStream="),
        "{error}"
    );
}

/// Data-driven: the service started with forged inheritance
/// variables, through `sh`, which sets up descriptors 3 and 4 and then
/// becomes the service (`exec`, so `$$` is the service's pid and its parent
/// is this test). Each is refused with one line naming the variable and the
/// descriptor, exit code 4, before anything takes the descriptor. For
/// `APP_HANDOVER`, descriptor 4 is a pipe of this test, named by its inode
/// as an upgrading process names its readiness pipe.
#[test]
fn forged_inherited_descriptors_are_refused_before_they_are_owned() {
    let (_pipe_reader, pipe_writer) = std::io::pipe().unwrap();
    let pipe_fd = std::os::fd::AsRawFd::as_raw_fd(&pipe_writer);
    // SAFETY: fstat writes into the zeroed struct it is given.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::fstat(pipe_fd, &mut stat) }, 0);
    let handover = format!("APP_HANDOVER='{} 3 4'", stat.st_ino);
    let cases: [(&str, String, &str); 5] = [
        // Nothing inherited at 3: the descriptor is closed, or one the
        // service opened itself by the time it looks.
        (
            "",
            "LISTEN_PID=$$ LISTEN_FDS=1".into(),
            "LISTEN_FDS=1 (socket activation): descriptor 3 ",
        ),
        (
            "exec 3</dev/null;",
            "LISTEN_PID=$$ LISTEN_FDS=1".into(),
            "LISTEN_FDS=1 (socket activation): descriptor 3 is not a listening TCP socket",
        ),
        ("", handover.clone(), "APP_HANDOVER="),
        (
            "exec 3</dev/null;",
            handover.clone(),
            "descriptor 3 is not a listening TCP socket",
        ),
        (
            "exec 3</dev/null;",
            "APP_HANDOVER='x 3 4'".into(),
            "\"x\" is not an inode number",
        ),
    ];
    for (descriptors, variables, expected) in cases {
        let script = format!("{descriptors} {variables} exec \"$0\" \"$@\"");
        let command = app_command();
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(ToOwned::to_owned).collect();
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(&script)
            .arg(program)
            .args(args)
            .envs(
                command
                    .get_envs()
                    .filter_map(|(key, value)| Some((key, value?))),
            )
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("APP_HANDOVER");
        let passes_pipe = variables.contains("APP_HANDOVER");
        // SAFETY: dup2 is async-signal-safe; it gives the child the test's
        // pipe as descriptor 4, without close-on-exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut shell, move || {
                // dup2 onto itself keeps close-on-exec: clear it either way.
                if passes_pipe
                    && (libc::dup2(pipe_fd, 4) == -1 || libc::fcntl(4, libc::F_SETFD, 0) == -1)
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let output = shell.stdin(Stdio::null()).output().unwrap();
        let printed = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(4), "{script}: {printed}");
        let error = printed
            .lines()
            .find(|line| line.starts_with("error: "))
            .unwrap_or_else(|| panic!("{script}: {printed}"));
        assert!(error.contains(expected), "{script}: {error}");
        eprintln!("{script}\n  {error}");
        assert!(
            error.contains("is not open")
                || error.contains("opened by this process")
                || error.contains("is not a")
                || error.contains("is not an"),
            "{script}: {error}"
        );
    }
}
