//! `cargo xtask dev` on a copy of the workspace, under load from keep-alive
//! clients that never retry: three edits of a handler are each served
//! without a failed request, a compile error keeps the previous build
//! serving, an invalid config is reported and not applied, and Ctrl-C
//! leaves no process and a free port.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// The lines `dev` and the service print, as they come.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn collect(&self, from: impl Read + Send + 'static) {
        let lines = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { break };
                lines.0.lock().unwrap().push(line);
            }
        });
    }

    fn count(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|line| matches(line))
            .count()
    }

    /// Waits for the `n`th line (1-based) that matches; panics with every
    /// line after `limit`.
    fn wait_for_nth(&self, n: usize, limit: Duration, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|line| matches(line))
                .nth(n - 1)
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no such line after {limit:?}:\n{}",
                self.0.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Keep-alive clients that never retry a request: a connection the server
/// ends with `Connection: close` is replaced, anything else is a failure.
struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    latest: Arc<Mutex<String>>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(address: SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let latest = Arc::new(Mutex::new(String::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, served, latest) = (stop.clone(), served.clone(), latest.clone());
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let mut failures = Vec::new();
                    let mut connection = None;
                    let mut done = 0;
                    // Bounded in count and time, whatever the test does.
                    while !stop.load(Ordering::SeqCst)
                        && done < 2_000_000
                        && started.elapsed() < Duration::from_secs(900)
                    {
                        done += 1;
                        match get_root(address, &mut connection) {
                            Ok(body) => {
                                served.fetch_add(1, Ordering::Relaxed);
                                *latest.lock().unwrap() = body;
                            }
                            Err(failure) => {
                                failures.push(failure);
                                connection = None;
                            }
                        }
                    }
                    failures
                })
            })
            .collect();
        Load {
            stop,
            served,
            latest,
            threads,
        }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let failures = self
            .threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap())
            .collect();
        (self.served.load(Ordering::SeqCst), failures)
    }
}

/// One `GET /` on the client's connection (opened if there is none): the
/// body, or what went wrong.
fn get_root(
    address: SocketAddr,
    connection: &mut Option<BufReader<TcpStream>>,
) -> Result<String, String> {
    if connection.is_none() {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))
            .map_err(|err| format!("connect: {err}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        *connection = Some(BufReader::new(stream));
    }
    let reader = connection.as_mut().unwrap();
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: dev\r\n\r\n")
        .map_err(|err| format!("send: {err}"))?;
    let mut status = String::new();
    match reader.read_line(&mut status) {
        Ok(0) => return Err("connection closed before the response".into()),
        Err(err) => return Err(format!("read: {err}")),
        Ok(_) => {}
    }
    if !status.starts_with("HTTP/1.1 200 ") {
        return Err(format!("status: {status:?}"));
    }
    let (mut length, mut closing) = (None, false);
    loop {
        let mut header = String::new();
        reader
            .read_line(&mut header)
            .map_err(|err| format!("read headers: {err}"))?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').ok_or("a header without a colon")?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse::<usize>().ok(),
            "connection" => closing = value.trim().eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = vec![0; length.ok_or("no content-length")?];
    reader
        .read_exact(&mut body)
        .map_err(|err| format!("read body: {err}"))?;
    if closing {
        *connection = None;
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Waits until the load has seen a body containing `text`.
fn wait_served(load: &Load, text: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    while !load.latest.lock().unwrap().contains(text) {
        assert!(
            started.elapsed() < limit,
            "`{text}` not served after {limit:?}; the load last saw {}",
            load.latest.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn slow_dev_upgrades_the_service_on_each_save_without_a_failed_request() {
    let copy = copy_workspace();
    let root = copy.path();
    git(root, &["init", "--quiet", "--initial-branch=main"]);
    git(root, &["add", "--all"]);
    git(root, &["commit", "--quiet", "--message", "dev"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut dev: Child = xtask(root)
        .args(["dev", "--poll", "100ms", "--", "--listen"])
        .arg(address.to_string())
        .env("CARGO_TARGET_DIR", copies_target_dir())
        .env_remove("APP_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Lines::default();
    lines.collect(dev.stdout.take().unwrap());
    lines.collect(dev.stderr.take().unwrap());
    // The first build of a new target directory compiles every dependency.
    lines.wait_for_nth(1, Duration::from_secs(900), |line| {
        line.starts_with(&format!("serving on http://{address}"))
    });
    lines.wait_for_nth(1, Duration::from_secs(10), |line| {
        line.starts_with("watching ")
    });
    let first_pid = lines
        .wait_for_nth(1, Duration::ZERO, |line| line.starts_with("serving on"))
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .expect("the pid on the serving line");
    let load = Load::start(address, 4);
    wait_served(&load, "Hello from app", Duration::from_secs(10));

    // Three edits of the handler's text, each served by an upgrade.
    let handler = root.join("app/src/service/mod.rs");
    let mut previous = "{} from {}".to_owned();
    for n in 1..=3 {
        let text = format!("{{}} from {{}}, edit {n}");
        edit(&handler, &previous, &text);
        previous = text;
        let took = wait_served(
            &load,
            &format!("from app, edit {n}"),
            Duration::from_secs(600),
        );
        let upgraded = lines.wait_for_nth(n, Duration::from_secs(30), |line| {
            line.starts_with("==> upgraded: app/src/service/mod.rs changed; built in ")
        });
        eprintln!(
            "edit {n}: served {:.1} s after the save ({upgraded})",
            took.as_secs_f64()
        );
    }

    // A compile error: the compiler's message, and the previous build
    // keeps serving.
    edit(&handler, "edit 3\"", "edit 3\" +");
    lines.wait_for_nth(1, Duration::from_secs(600), |line| {
        line.starts_with(
            "build failed (app/src/service/mod.rs changed); still serving the previous build (pid ",
        )
    });
    assert!(
        lines.count(|line| line.starts_with("error")) > 0,
        "the compiler's error was not shown"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(load.latest.lock().unwrap().contains("edit 3"));
    edit(&handler, "edit 3\" +", "edit 4\"");
    wait_served(&load, "from app, edit 4", Duration::from_secs(600));
    lines.wait_for_nth(4, Duration::from_secs(30), |line| {
        line.starts_with("==> upgraded")
    });

    // An invalid config: reported in one line, not applied.
    let upgrades_before = lines.count(|line| line.starts_with("==> upgraded"));
    let dev_toml = root.join("config/dev.toml");
    edit(
        &dev_toml,
        "drain_timeout = \"5s\"",
        "drain_timeout = \"soon\"",
    );
    let refused = lines.wait_for_nth(1, Duration::from_secs(300), |line| {
        line.contains("not applied, still serving the previous settings")
    });
    assert!(
        refused.starts_with("the configuration does not load: ")
            && refused.contains("dev.toml line 4: invalid duration \"soon\""),
        "{refused}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        lines.count(|line| line.starts_with("==> upgraded")),
        upgrades_before
    );
    assert!(load.latest.lock().unwrap().contains("edit 4"));

    let (served, failures) = load.finish();
    assert!(served > 1000, "only {served} requests served");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        served + failures.len(),
        &failures[..failures.len().min(5)]
    );

    // Ctrl-C: every process that served is gone, and the port is free.
    let pids: Vec<u32> = std::iter::once(first_pid)
        .chain(
            lines
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|line| line.starts_with("==> upgraded"))
                .filter_map(|line| line.split("; pid ").nth(1)?.split(',').next()?.parse().ok()),
        )
        .collect();
    assert_eq!(pids.len(), 5, "{pids:?}");
    // SAFETY: kill(2) with the pid of our own child.
    unsafe {
        libc::kill(dev.id() as libc::pid_t, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = dev.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "dev still runs 30 s after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "{status}:\n{}",
        lines.0.lock().unwrap().join("\n")
    );
    for pid in pids {
        assert!(!pid_alive(pid), "pid {pid} outlived dev");
    }
    std::net::TcpListener::bind(address).expect("the port is free after dev stopped");
    eprintln!("{served} requests served, none failed");
}
