//! Runs the real `app` binary on an ephemeral loopback port, with its logs
//! captured, and talks HTTP/1.1 to it over plain TCP.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub mod business;
mod tools;
#[allow(unused_imports)] // Used by some of the test binaries that include this module.
pub use tools::tool_or_skip;

/// Longest any condition in these tests is waited for.
pub const BOUND: Duration = Duration::from_secs(15);

/// The binary under test: `$APP_TEST_BINARY` when set (`cargo xtask ci`
/// sets it to the release binary `dist` built, so what ships is what is
/// tested), else the debug build cargo made for these tests.
pub fn app_binary() -> &'static str {
    static BINARY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        std::env::var("APP_TEST_BINARY")
            .ok()
            .or_else(|| option_env!("CARGO_BIN_EXE_app").map(str::to_owned))
            .unwrap_or_else(renamed_binary)
    })
}

/// The package's binary after a rename (README, "Make it your service"):
/// cargo builds it beside the test's `deps/` folder, named as the package.
fn renamed_binary() -> String {
    let test = std::env::current_exe().expect("the test's own path");
    let profile_dir = test
        .parent()
        .and_then(Path::parent)
        .expect("tests run from <target>/<profile>/deps");
    profile_dir
        .join(env!("CARGO_PKG_NAME"))
        .to_string_lossy()
        .into_owned()
}

pub fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// The `app` command with the shipped config, JSON logs, and no inherited
/// `APP_*` settings.
pub fn app_command() -> Command {
    app_command_from(Path::new(app_binary()), &config_dir())
}

/// `app_command` with another path to the binary and another config folder.
pub fn app_command_from(binary: &Path, config: &Path) -> Command {
    let mut command = Command::new(binary);
    for (name, _) in std::env::vars() {
        if name.starts_with("APP_") || name.starts_with("OTEL_") || name == "CREDENTIALS_DIRECTORY"
        {
            command.env_remove(name);
        }
    }
    command
        .arg("--config-dir")
        .arg(config)
        .env("APP__LOG__FORMAT", "json");
    command
}

/// Lines a process printed, shared with the thread that reads them.
#[derive(Clone, Default)]
pub struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    pub fn collect(self, stream: impl Read + Send + 'static) {
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let (lines, changed) = &*self.0;
                lines.lock().unwrap().push(line);
                changed.notify_all();
            }
        });
    }

    pub fn all(&self) -> Vec<String> {
        self.0.0.lock().unwrap().clone()
    }

    /// The first line that satisfies `matches`, waiting up to `BOUND`.
    pub fn wait_for(&self, matches: impl Fn(&str) -> bool) -> String {
        self.wait_for_nth(1, matches)
    }

    /// The `n`th line (counting from 1) that satisfies `matches`, waiting up
    /// to `BOUND`.
    pub fn wait_for_nth(&self, n: usize, matches: impl Fn(&str) -> bool) -> String {
        let (lines, changed) = &*self.0;
        let deadline = Instant::now() + BOUND;
        let mut guard = lines.lock().unwrap();
        // Each line is looked at once: a service under load prints hundreds
        // of thousands, and a scan from the start on every new line would
        // keep the lock from the reader until the service's stdout blocks.
        let (mut scanned, mut found) = (0, 0);
        loop {
            for line in &guard[scanned..] {
                if matches(line) {
                    found += 1;
                    if found == n {
                        return line.clone();
                    }
                }
            }
            scanned = guard.len();
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no line number {n} of its kind within {BOUND:?}; got:\n{}",
                guard.join("\n")
            );
            guard = changed.wait_timeout(guard, left).unwrap().0;
        }
    }
}

/// A running service.
pub struct Service {
    pub child: Child,
    pub addr: SocketAddr,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Service {
    /// Starts `app` with `--listen 127.0.0.1:0` and waits for its
    /// "listening" log line, which carries the port it got.
    pub fn start(mut command: Command) -> Service {
        command
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the app binary");
        let (stdout, stderr) = (Lines::default(), Lines::default());
        stdout.clone().collect(child.stdout.take().unwrap());
        stderr.clone().collect(child.stderr.take().unwrap());
        let listening = stdout.wait_for(|line| line.contains("\"listening\""));
        let log: serde_json::Value = serde_json::from_str(&listening).expect("JSON log line");
        let addr = log["addr"]
            .as_str()
            .expect("the listening line has addr")
            .parse()
            .unwrap();
        Service {
            child,
            addr,
            stdout,
            stderr,
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
        assert!(status.expect("run kill").success(), "kill -{signal} failed");
    }

    /// Waits up to `BOUND` for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the service did not exit within {BOUND:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str) -> Response {
        request(
            self.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
        )
    }

    /// Everything the process printed so far, stdout and stderr.
    pub fn output(&self) -> String {
        let mut all = self.stdout.all();
        all.extend(self.stderr.all());
        all.join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("{err}: {}", self.body))
    }
}

/// Sends one raw request with `Connection: close` and reads the response.
pub fn request(addr: SocketAddr, raw: &str) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, BOUND).expect("connect to the service");
    stream.set_read_timeout(Some(BOUND)).unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    read_response(&mut stream)
}

pub fn read_response(stream: &mut TcpStream) -> Response {
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read the response");
    parse_response(&raw)
}

fn parse_response(raw: &str) -> Response {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {raw:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok());
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    Response {
        status: status.unwrap_or_else(|| panic!("no status in {raw:?}")),
        headers,
        body: body.to_owned(),
    }
}

/// Makes this process inherit its orphaned descendants (the processes
/// upgrades start), so that they can be reaped; the returned guard kills the
/// ones still tracked when a test fails, so none outlives it.
#[cfg(target_os = "linux")]
pub fn become_subreaper() -> Descendants {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag on this process.
    let result = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    assert_eq!(result, 0, "{}", std::io::Error::last_os_error());
    Descendants::default()
}

/// Descendant processes a test started indirectly and has not reaped yet.
#[cfg(target_os = "linux")]
#[derive(Default)]
pub struct Descendants(Mutex<Vec<u32>>);

#[cfg(target_os = "linux")]
impl Descendants {
    pub fn track(&self, pid: u32) {
        self.0.lock().unwrap().push(pid);
    }

    /// Stops tracking `pid`, which has exited, reaping it if it waits for
    /// this process.
    pub fn settle(&self, pid: u32) {
        self.0.lock().unwrap().retain(|tracked| *tracked != pid);
        // SAFETY: waitpid on a pid that exited; WNOHANG, so it never blocks.
        unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
    }

    /// Waits up to `BOUND` for `pid` to exit and returns its exit code.
    pub fn reap(&self, pid: u32) -> i32 {
        let code = reap(pid);
        self.0.lock().unwrap().retain(|tracked| *tracked != pid);
        code
    }
}

#[cfg(target_os = "linux")]
impl Drop for Descendants {
    fn drop(&mut self) {
        for pid in self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
        {
            // SAFETY: kill and waitpid on a process this test started and has
            // not reaped, so the pid cannot have been reused.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
        }
    }
}

#[cfg(unix)]
pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill has no memory effects; the pid is a process this test started.
    let result = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(
        result,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// Waits up to `BOUND` for `pid` (a descendant, reparented to this
/// subreaper) to exit, and returns its exit code.
#[cfg(target_os = "linux")]
fn reap(pid: u32) -> i32 {
    let deadline = Instant::now() + BOUND;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into the integer it is given.
        let result = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        if result == pid as i32 {
            assert!(
                libc::WIFEXITED(status),
                "pid {pid} ended by a signal: {status:#x}"
            );
            return libc::WEXITSTATUS(status);
        }
        assert!(
            result == 0,
            "waitpid({pid}): {}",
            std::io::Error::last_os_error()
        );
        assert!(
            Instant::now() < deadline,
            "pid {pid} did not exit within {BOUND:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes `command` start with `soft` and `hard` as its open-files limits.
#[cfg(unix)]
pub fn limit_open_files(command: &mut Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit is async-signal-safe and only reads the struct,
    // which is copied into the closure.
    unsafe {
        command.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// The value of one series of `/metrics`, e.g.
/// `http_connections_shed_total{reason="evicted"}`.
pub fn metric(service: &Service, series: &str) -> f64 {
    let metrics = service.get("/metrics");
    assert_eq!(metrics.status, 200);
    metrics
        .body
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{}", metrics.body))
        .trim()
        .parse()
        .unwrap()
}
