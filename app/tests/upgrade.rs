//! Zero-downtime upgrades, end to end: the real binary upgraded by SIGHUP
//! under load from clients on loopback, and upgrades that fail.
//!
//! This test process makes itself a child subreaper, so the processes that
//! upgrades start (grandchildren and later descendants) are reparented to
//! it when their parent exits; it can then wait for each of them and check
//! how it exited.

#![cfg(target_os = "linux")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// Clients of each kind the load runs.
const CLIENTS_PER_KIND: usize = 4;
/// Bounds of the load: per client, in requests, and overall, in time.
const MAX_REQUESTS_PER_CLIENT: usize = 50_000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(60);
const UPGRADES: usize = 10;
/// Requests each new process serves before the next upgrade.
const MIN_REQUESTS_PER_PROCESS: usize = 200;
/// How long a keep-alive connection may sit idle before a draining server
/// may close it (the platform's `KEEP_ALIVE_GRACE`; the idle timeouts here
/// are longer). A request sent on a connection idle for longer can meet the
/// close on its way, which HTTP allows; clients then retry it on a new
/// connection, as these do. One sent sooner must be answered.
const MAY_CLOSE_IDLE_AFTER: Duration = Duration::from_secs(1);

#[test]
fn ten_upgrades_under_load_fail_no_request_and_leave_no_process_or_descriptor() {
    let descendants = become_subreaper();
    let mut command = app_command();
    command.env("APP__SERVER__DRAIN_DELAY", "0s");
    let mut service = Service::start(command);
    let first_pid = service.child.id();
    let baseline = descriptors(first_pid);

    let load = Load::start(service.addr);
    // The first process serves a share too before it hands over: on a
    // loaded machine the clients may not have sent anything yet.
    load.wait_until_served_by(first_pid, MIN_REQUESTS_PER_PROCESS);
    let mut pids = vec![first_pid];
    for upgrade in 1..=UPGRADES {
        let current = *pids.last().unwrap();
        send_signal(current, libc::SIGHUP);
        let line = service
            .stdout
            .wait_for_nth(upgrade, |line| line.contains("\"upgrade complete"));
        let new_pid = json_field(&line, "new_pid");
        descendants.track(new_pid);
        assert!(!pids.contains(&new_pid), "pid {new_pid} served before");
        pids.push(new_pid);
        // The next upgrade starts only once the new process served a share
        // of the load.
        load.wait_until_served_by(new_pid, MIN_REQUESTS_PER_PROCESS);
    }
    let outcome = load.stop();

    assert!(
        outcome.failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}\n{}",
        outcome.failures.len(),
        outcome.requests,
        &outcome.failures[..outcome.failures.len().min(5)],
        service.output()
    );
    let served_by: BTreeSet<u32> = outcome.served_by.keys().copied().collect();
    assert_eq!(
        served_by,
        pids.iter().copied().collect(),
        "every process served: requests per pid {:?}",
        outcome.served_by
    );

    // The old processes drained and exited on their own, with status 0.
    assert_eq!(service.wait_exit().code(), Some(0), "{}", service.output());
    for pid in &pids[1..UPGRADES] {
        assert_eq!(descendants.reap(*pid), 0, "pid {pid}\n{}", service.output());
    }
    // The last process holds what the first held: no socket, pipe or other
    // descriptor leaked through ten handovers.
    let last = *pids.last().unwrap();
    wait_until(
        || descriptors(last) == baseline,
        || {
            format!(
                "descriptors of the last process {:?} differ from the first's {baseline:?}",
                descriptors(last)
            )
        },
    );
    send_signal(last, libc::SIGTERM);
    assert_eq!(descendants.reap(last), 0, "{}", service.output());
    assert_eq!(
        app_processes_left(Path::new(app_binary())),
        Vec::<u32>::new()
    );
    eprintln!(
        "{} requests, none failed ({} sent again after an idle close); per process: {:?}",
        outcome.requests, outcome.retried_after_idle, outcome.served_by
    );
}

#[test]
fn failed_upgrades_leave_the_old_process_serving() {
    let descendants = become_subreaper();
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    // A deploy layout: releases/<name>/app, and `current` pointing at one.
    let release = |name: &str, binary: &Path| {
        let dir = root.join("releases").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(binary, dir.join("app")).unwrap();
    };
    let switch_to = |name: &str| {
        let next = root.join("current.next");
        std::os::unix::fs::symlink(Path::new("releases").join(name), &next).unwrap();
        std::fs::rename(&next, root.join("current")).unwrap();
    };
    release("a", Path::new(app_binary()));
    let hang = root.join("hang.sh");
    std::fs::write(&hang, "#!/bin/sh\nexec sleep 300\n").unwrap();
    std::fs::set_permissions(&hang, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    release("hangs", &hang);
    release("c", Path::new(app_binary()));
    let config = root.join("config");
    std::fs::create_dir(&config).unwrap();
    for file in ["base.toml", "dev.toml"] {
        std::fs::copy(config_dir().join(file), config.join(file)).unwrap();
    }
    switch_to("a");

    let mut command = app_command_from(&root.join("current/app"), &config);
    command.env("APP__SERVER__UPGRADE_TIMEOUT", "2s");
    let mut service = Service::start(command);
    let first_pid = service.child.id();
    let served_by = |service: &Service| json_field(&service.get("/healthz").body, "pid");

    // 1. The new process rejects its config (the file is broken): it exits 3.
    std::fs::write(config.join("dev.toml"), "[server\n").unwrap();
    send_signal(first_pid, libc::SIGHUP);
    let failed = service
        .stdout
        .wait_for_nth(1, |line| line.contains("\"upgrade failed"));
    assert!(
        failed.contains("exited with status 3 before it was ready"),
        "{failed}"
    );
    assert_eq!(served_by(&service), first_pid);
    std::fs::copy(config_dir().join("dev.toml"), config.join("dev.toml")).unwrap();

    // 1b. `current` points at a release that is not there: nothing starts.
    switch_to("missing");
    send_signal(first_pid, libc::SIGHUP);
    let failed = service
        .stdout
        .wait_for_nth(2, |line| line.contains("\"upgrade failed"));
    assert!(
        failed.contains(&format!("start {}", root.join("current/app").display())),
        "{failed}"
    );
    assert_eq!(served_by(&service), first_pid);

    // 2. The new release never reports ready: it is stopped at the timeout,
    //    and a second signal meanwhile starts no second upgrade.
    switch_to("hangs");
    send_signal(first_pid, libc::SIGHUP);
    let started = service.stdout.wait_for_nth(2, |line| {
        line.contains("\"upgrade: started the new process")
    });
    send_signal(first_pid, libc::SIGUSR2);
    service
        .stdout
        .wait_for(|line| line.contains("an upgrade is already running"));
    let failed = service
        .stdout
        .wait_for_nth(3, |line| line.contains("\"upgrade failed"));
    assert!(
        failed.contains("was not ready within server.upgrade_timeout (2s)"),
        "{failed}"
    );
    // Stopped by the old process; reaped by its parent (this test, as
    // systemd would be): the old process started it as its sibling.
    let hung_pid = json_field(&started, "pid");
    assert_eq!(
        process_state(hung_pid).map(|(_, parent)| parent),
        Some(std::process::id())
    );
    wait_until(
        || has_exited(hung_pid),
        || format!("pid {hung_pid}, stopped at the upgrade timeout, still runs"),
    );
    descendants.settle(hung_pid);
    assert_eq!(served_by(&service), first_pid);
    let metrics = service.get("/metrics").body;
    assert!(metrics.contains("app_upgrades_failed_total 3"), "{metrics}");

    // 3. A good release: the upgrade follows the switched symlink.
    switch_to("c");
    send_signal(first_pid, libc::SIGHUP);
    let done = service
        .stdout
        .wait_for_nth(1, |line| line.contains("\"upgrade complete"));
    let new_pid = json_field(&done, "new_pid");
    descendants.track(new_pid);
    let executable = std::fs::read_link(format!("/proc/{new_pid}/exe")).unwrap();
    assert_eq!(executable, root.join("releases/c/app"));
    assert_eq!(service.wait_exit().code(), Some(0), "{}", service.output());
    assert_eq!(served_by(&service), new_pid);

    // 4. A stop signal during an upgrade stops the new process too.
    switch_to("hangs");
    send_signal(new_pid, libc::SIGHUP);
    let started = service.stdout.wait_for_nth(4, |line| {
        line.contains("\"upgrade: started the new process")
    });
    let hung_pid = json_field(&started, "pid");
    descendants.track(hung_pid);
    send_signal(new_pid, libc::SIGTERM);
    assert_eq!(descendants.reap(new_pid), 0, "{}", service.output());
    wait_until(
        || has_exited(hung_pid),
        || format!("pid {hung_pid}, started by an abandoned upgrade, still runs"),
    );
    descendants.settle(hung_pid);
    assert_eq!(app_processes_left(root), Vec::<u32>::new());
}

/// The connection limits hold across an upgrade: with half-open
/// connections filling the limit of a process with few descriptors, an
/// upgrade under load fails no request, and the new process runs with the
/// same limits.
#[test]
fn an_upgrade_under_connection_limits_fails_no_request_and_keeps_the_limits() {
    const HALF_OPEN: usize = 62;
    let descendants = become_subreaper();
    let mut command = app_command();
    command
        .env("APP__SERVER__DRAIN_DELAY", "0s")
        .env("APP__SERVER__MAX_CONNECTIONS", "64")
        .env("APP__SERVER__HEADER_READ_TIMEOUT", "1s")
        .env("APP__SERVER__IDLE_TIMEOUT", "2s")
        .env("APP__SERVER__REQUEST_TIMEOUT", "3s");
    limit_open_files(&mut command, 160, 160);
    let mut service = Service::start(command);
    let first_pid = service.child.id();

    let load = Load::start(service.addr);
    load.wait_until_served_by(first_pid, MIN_REQUESTS_PER_PROCESS);
    let half_open: Vec<TcpStream> = (0..HALF_OPEN)
        .map(|_| {
            let mut stream = TcpStream::connect_timeout(&service.addr, BOUND).unwrap();
            stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
            stream
        })
        .collect();
    let evicted = metric(&service, "http_connections_shed_total{reason=\"evicted\"}");
    assert!(evicted >= 1.0, "the limit is reached before the upgrade");
    send_signal(first_pid, libc::SIGHUP);
    let done = service
        .stdout
        .wait_for(|line| line.contains("\"upgrade complete"));
    let new_pid = json_field(&done, "new_pid");
    descendants.track(new_pid);
    load.wait_until_served_by(new_pid, MIN_REQUESTS_PER_PROCESS);
    let outcome = load.stop();
    drop(half_open);

    assert!(
        outcome.failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}\n{}",
        outcome.failures.len(),
        outcome.requests,
        &outcome.failures[..outcome.failures.len().min(5)],
        service.output()
    );
    let listening = service
        .stdout
        .wait_for_nth(2, |line| line.contains("\"listening\""));
    let listening: serde_json::Value = serde_json::from_str(&listening).unwrap();
    assert_eq!(listening["pid"], new_pid, "{listening}");
    for (field, expected) in [
        ("max_connections", serde_json::json!(64)),
        ("open_files_limit", serde_json::json!(160)),
        ("header_read_timeout", serde_json::json!("1s")),
        ("idle_timeout", serde_json::json!("2s")),
        ("request_timeout", serde_json::json!("3s")),
    ] {
        assert_eq!(listening[field], expected, "{field} in {listening}");
    }
    assert_eq!(service.wait_exit().code(), Some(0), "{}", service.output());
    send_signal(new_pid, libc::SIGTERM);
    assert_eq!(descendants.reap(new_pid), 0, "{}", service.output());
    eprintln!(
        "{} requests, none failed ({} sent again after an idle close); per process: {:?}",
        outcome.requests, outcome.retried_after_idle, outcome.served_by
    );
}

/// Whether `pid` is gone or has exited and waits to be reaped.
fn has_exited(pid: u32) -> bool {
    process_state(pid).is_none_or(|(state, _)| state == 'Z')
}

/// The state letter and parent pid of `pid`, from `/proc/<pid>/stat`.
fn process_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: the fields after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Clients on loopback: half keep their connection alive (reconnecting when
/// a response says `Connection: close`), half open one per request. None
/// retries: every error counts.
struct Load {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

#[derive(Default, Debug)]
struct Record {
    requests: usize,
    failures: Vec<String>,
    served_by: BTreeMap<u32, usize>,
    /// Requests sent again on a new connection: the keep-alive connection
    /// they were sent on had been idle past `MAY_CLOSE_IDLE_AFTER` (the
    /// client was not scheduled) and was closed under them.
    retried_after_idle: usize,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record::default()));
        let deadline = Instant::now() + MAX_LOAD_TIME;
        let clients = (0..2 * CLIENTS_PER_KIND)
            .map(|index| {
                let (stop, record) = (stop.clone(), record.clone());
                let keep_alive = index % 2 == 0;
                std::thread::spawn(move || {
                    let mut connection: Option<BufReader<TcpStream>> = None;
                    let mut answered_at = Instant::now();
                    for _ in 0..MAX_REQUESTS_PER_CLIENT {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        let idle =
                            connection.is_some() && answered_at.elapsed() > MAY_CLOSE_IDLE_AFTER;
                        let mut outcome = get_healthz(addr, keep_alive, &mut connection);
                        let retried = idle && outcome.is_err();
                        if retried {
                            connection = None;
                            outcome = get_healthz(addr, keep_alive, &mut connection);
                        }
                        answered_at = Instant::now();
                        let mut record = record.lock().unwrap();
                        record.requests += 1;
                        record.retried_after_idle += usize::from(retried);
                        match outcome {
                            Ok(pid) => *record.served_by.entry(pid).or_default() += 1,
                            Err(failure) => {
                                record.failures.push(failure);
                                connection = None;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            record,
            clients,
        }
    }

    fn wait_until_served_by(&self, pid: u32, requests: usize) {
        let served = || {
            let record = self.record.lock().unwrap();
            record.served_by.get(&pid).copied().unwrap_or(0)
        };
        wait_until(
            || served() >= requests,
            || format!("pid {pid} served {} requests, not {requests}", served()),
        );
    }

    fn stop(self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.join().expect("a client thread panicked");
        }
        std::mem::take(&mut *self.record.lock().unwrap())
    }
}

/// One `GET /healthz`; the pid that answered, or what went wrong.
fn get_healthz(
    addr: SocketAddr,
    keep_alive: bool,
    connection: &mut Option<BufReader<TcpStream>>,
) -> Result<u32, String> {
    if connection.is_none() {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|err| format!("connect: {err}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        *connection = Some(BufReader::new(stream));
    }
    let reader = connection.as_mut().unwrap();
    let close = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    reader
        .get_mut()
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{close}\r\n").as_bytes())
        .map_err(|err| format!("send: {err}"))?;
    let mut status_line = String::new();
    match reader.read_line(&mut status_line) {
        Ok(0) => return Err("connection closed before the response".into()),
        Err(err) => return Err(format!("read: {err}")),
        Ok(_) => {}
    }
    if !status_line.starts_with("HTTP/1.1 200 ") {
        return Err(format!("status: {status_line:?}"));
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
    if closing || !keep_alive {
        *connection = None;
    }
    Ok(json_field(&String::from_utf8_lossy(&body), "pid"))
}

fn json_field(json: &str, field: &str) -> u32 {
    let value: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|err| panic!("{err}: {json}"));
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {json}")) as u32
}

/// Children of this test process (which, as a subreaper, inherits every
/// orphaned descendant) whose executable is `executable` or lies under it,
/// still running or not yet reaped.
fn app_processes_left(executable: &Path) -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let exe = std::fs::read_link(entry.path().join("exe")).unwrap_or_default();
        if process_state(pid).is_some_and(|(_, ppid)| ppid == me) && exe.starts_with(executable) {
            found.push(pid);
        }
    }
    found
}

/// The kinds of `pid`'s open descriptors (`socket`, `pipe`,
/// `anon_inode:[eventpoll]`, paths), sorted: two processes with the same
/// list hold the same descriptors, whatever their numbers.
fn descriptors(pid: u32) -> Vec<String> {
    let mut kinds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|err| panic!("list the descriptors of {pid}: {err}"))
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .map(|target| {
            let target = target.to_string_lossy().into_owned();
            match target.split_once(":[") {
                Some((kind, _)) if kind == "socket" || kind == "pipe" => kind.to_owned(),
                _ => target,
            }
        })
        .collect();
    kinds.sort();
    kinds
}

fn wait_until(condition: impl Fn() -> bool, failure: impl Fn() -> String) {
    let deadline = Instant::now() + BOUND;
    while !condition() {
        assert!(Instant::now() < deadline, "{}", failure());
        std::thread::sleep(Duration::from_millis(20));
    }
}
