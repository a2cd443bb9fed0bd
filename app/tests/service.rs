//! The real `app` binary on loopback: the platform's routes, the readiness flip and
//! drain on SIGTERM, an in-flight request that completes across SIGTERM, the
//! second signal, start-up errors, secrets that never leak, and keep-alive
//! connections spread over the workers.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[test]
fn every_route_answers() {
    let service = Service::start(app_command());

    assert_eq!(service.get("/healthz").json()["status"], "ok");
    let ready = service.get("/readyz");
    assert_eq!(
        (ready.status, ready.json()["ready"].as_bool()),
        (200, Some(true))
    );

    let version = service.get("/version");
    let binary_stamp: serde_json::Value = serde_json::from_slice(
        &Command::new(app_binary())
            .args(["--version", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(version.json(), binary_stamp);

    let missing = service.get("/no/such/page?x=1");
    assert_eq!(missing.status, 404);
    assert_eq!(
        service.get("/admin/config").status,
        404,
        "admin routes are off without a token"
    );

    let metrics = service.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    for expected in [
        "http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1",
        "http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"} 1",
        "http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
        "http_request_duration_seconds_count{method=\"GET\",route=\"/version\",status=\"200\"} 1",
        "http_requests_in_flight 1",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
        "# EOF",
    ] {
        assert!(
            metrics.body.contains(expected),
            "/metrics lacks `{expected}`:\n{}",
            metrics.body
        );
    }
    let build_info = metrics
        .body
        .lines()
        .find(|line| line.starts_with("app_build_info{"))
        .expect("app_build_info");
    for label in [
        format!("version=\"{}\"", binary_stamp["version"].as_str().unwrap()),
        format!("commit=\"{}\"", binary_stamp["commit"].as_str().unwrap()),
        format!("target=\"{}\"", binary_stamp["target"].as_str().unwrap()),
    ] {
        assert!(
            build_info.contains(&label) && build_info.ends_with(" 1"),
            "{build_info} lacks {label}"
        );
    }

    // Request ids: a caller's is echoed, otherwise one is generated; the
    // request log line carries it with method, route, status and latency.
    let traced = request(
        service.addr,
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Request-Id: trace-42\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(traced.header("x-request-id"), Some("trace-42"));
    let generated = service.get("/healthz");
    assert_eq!(generated.header("x-request-id").map(str::len), Some(32));
    let log_line = service.stdout.wait_for(|line| line.contains("trace-42"));
    let log: serde_json::Value = serde_json::from_str(&log_line).unwrap();
    assert_eq!(
        (
            log["method"].as_str(),
            log["route"].as_str(),
            log["status"].as_u64()
        ),
        (Some("GET"), Some("/healthz"), Some(200))
    );
    assert!(
        log["latency_ms"].as_f64().is_some() && log["level"] == "INFO",
        "{log_line}"
    );
}

#[test]
fn sigterm_turns_readiness_off_keeps_serving_through_the_drain_delay_then_exits_zero() {
    let mut command = app_command();
    command.env("APP__SERVER__DRAIN_DELAY", "3s");
    let mut service = Service::start(command);
    assert_eq!(service.get("/readyz").status, 200);

    service.signal("TERM");
    let deadline = Instant::now() + BOUND;
    let not_ready = loop {
        let ready = service.get("/readyz");
        if ready.status == 503 {
            break ready;
        }
        assert!(Instant::now() < deadline, "/readyz still 200 after SIGTERM");
    };
    assert_eq!(not_ready.json()["failed"], serde_json::json!(["lifecycle"]));
    assert_eq!(not_ready.json()["checks"]["lifecycle"], "draining");
    let during_drain = service.get("/version");
    assert_eq!(
        during_drain.status, 200,
        "requests are still served while draining"
    );
    assert_eq!(
        during_drain.header("connection"),
        Some("close"),
        "keep-alive clients are asked to move on"
    );

    let status = service.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", service.output());
    service.stdout.wait_for(|line| line.contains("\"stopped\""));
}

/// The status of the next response on a keep-alive connection, read up to
/// the end of its body (by `content-length`).
fn keep_alive_status(stream: &mut TcpStream) -> u16 {
    use std::io::Read;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).expect("read a response");
        assert_ne!(read, 0, "closed: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&received).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .expect("a content-length")
            .parse()
            .unwrap();
        if body.len() >= length {
            return head[9..12].parse().unwrap();
        }
    }
}

/// CPU time a thread of `pid` has run, in nanoseconds, by thread name.
fn thread_run_times(pid: u32) -> Vec<(String, u64)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let (Ok(name), Ok(schedstat)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("schedstat")),
        ) else {
            continue;
        };
        let ran: u64 = schedstat
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        threads.push((name.trim().to_owned(), ran));
    }
    threads.sort();
    threads
}

#[test]
fn keep_alive_connections_spread_over_the_workers_and_each_worker_serves() {
    let mut command = app_command();
    command.env("APP__SERVER__WORKERS", "3");
    let mut service = Service::start(command);
    let listening = service
        .stdout
        .wait_for(|line| line.contains("\"listening\""));
    assert!(listening.contains("\"workers\":3"), "{listening}");
    let pid = service.child.id();
    // The main thread is named as the binary (the kernel keeps 15 bytes).
    let main_thread: String = std::path::Path::new(app_binary())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .chars()
        .take(15)
        .collect();
    let workers = |times: &[(String, u64)]| -> Vec<(String, u64)> {
        times
            .iter()
            .filter(|(name, _)| name.starts_with("worker-") || *name == main_thread)
            .cloned()
            .collect()
    };
    // The main thread is the first worker.
    let names: Vec<String> = workers(&thread_run_times(pid))
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, [main_thread.as_str(), "worker-1", "worker-2"]);

    // A worker accepts only while at most one connection above the least
    // loaded, so 9 connections leave each worker at least 2.
    let keep_alive = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut clients: Vec<TcpStream> = (0..9)
        .map(|_| {
            let mut client = TcpStream::connect(service.addr).unwrap();
            client.set_read_timeout(Some(BOUND)).unwrap();
            client.write_all(keep_alive.as_bytes()).unwrap();
            assert_eq!(keep_alive_status(&mut client), 200);
            client
        })
        .collect();
    // Only connections wake a worker now (no accepts, no timers due): a
    // worker that runs while the clients send requests serves some of them.
    let before = workers(&thread_run_times(pid));
    for _ in 0..200 {
        for client in &mut clients {
            client.write_all(keep_alive.as_bytes()).unwrap();
            assert_eq!(keep_alive_status(client), 200);
        }
    }
    let after = workers(&thread_run_times(pid));
    for ((name, ran_before), (_, ran_after)) in before.iter().zip(&after) {
        assert!(
            ran_after > ran_before,
            "{name} did not run while 9 connections sent 1800 requests: {before:?} {after:?}"
        );
    }

    service.signal("TERM");
    assert!(service.wait_exit().success(), "{}", service.output());
}

#[test]
fn an_in_flight_request_completes_across_sigterm() {
    let mut command = app_command();
    command.env("APP__SERVER__DRAIN_DELAY", "0s");
    let mut service = Service::start(command);

    // A slow client: headers and half of the body now, the rest later.
    let body = business::BODY;
    let mut slow = TcpStream::connect(service.addr).unwrap();
    slow.set_read_timeout(Some(BOUND)).unwrap();
    write!(
        slow,
        "POST {} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        business::BODY_ROUTE,
        body.len(),
        &body[..5]
    )
    .unwrap();
    let deadline = Instant::now() + BOUND;
    while !service
        .get("/metrics")
        .body
        .contains("http_requests_in_flight 2")
    {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached the handler"
        );
    }

    service.signal("TERM");
    service
        .stdout
        .wait_for(|line| line.contains("stopped accepting"));
    let deadline = Instant::now() + BOUND;
    while TcpStream::connect(service.addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after it said it stopped"
        );
    }

    slow.write_all(&body.as_bytes()[5..]).unwrap();
    let response = read_response(&mut slow);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(service.wait_exit().code(), Some(0), "{}", service.output());
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut command = app_command();
    command.env("APP__SERVER__DRAIN_DELAY", "10m");
    let mut service = Service::start(command);
    service.signal("TERM");
    service
        .stdout
        .wait_for(|line| line.contains("stop requested"));
    service.signal("INT");
    let status = service.wait_exit();
    assert_eq!(status.code(), Some(128 + 2), "{}", service.output());
}

/// Runs a command that is expected to exit by itself, killing it after `BOUND`.
fn run_bounded(command: &mut Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + BOUND;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn start_up_errors_are_one_line_with_a_documented_exit_code() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let bad_config = tempfile::tempdir().unwrap();
    std::fs::write(
        bad_config.path().join("base.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\nport = 1\n",
    )
    .unwrap();
    let bad_config_dir = bad_config.path().to_str().unwrap();

    // (arguments, environment, exit code, what the error line says)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32, &'a str);
    let cases: [Case; 8] = [
        (
            &["--listen", &taken_addr],
            &[],
            4,
            &format!("listen on {taken_addr}"),
        ),
        (
            &["--config-dir", "/nonexistent/config"],
            &[],
            3,
            "read the config directory /nonexistent/config",
        ),
        (
            &["--config-dir", bad_config_dir],
            &[],
            3,
            "base.toml line 3: unknown field `port`",
        ),
        (
            &[],
            &[("APP__SERVER__DRAIN_TIMEOUT", "soon")],
            3,
            "APP__SERVER__DRAIN_TIMEOUT: invalid duration \"soon\"",
        ),
        (
            &[],
            &[("APP__ADMIN__TOKEN_FILE", "/nonexistent/token")],
            3,
            "admin.token: read APP__ADMIN__TOKEN_FILE=/nonexistent/token",
        ),
        (
            &[],
            &[("APP_ENV", "qa")],
            3,
            "APP_ENV=\"qa\" is not an environment",
        ),
        (
            &[],
            &[("APP_HANDOVER", "garbage")],
            4,
            "APP_HANDOVER=\"garbage\" is not \"<pipe inode> <socket fd> <pipe fd>\": only an upgrading process sets it; unset it",
        ),
        (&["--frobnicate"], &[], 2, "invalid option '--frobnicate'"),
    ];
    for (args, vars, code, expected) in cases {
        let output = run_bounded(app_command().args(args).envs(vars.iter().copied()));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(code),
            "app {args:?} {vars:?}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "more than one line: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "app {args:?} {vars:?}: {stderr}"
        );
    }
    drop(taken);
}

const CANARY: &str = "canary-5f0e9d2c";

#[test]
fn a_secret_from_any_source_appears_in_no_output() {
    let scratch = tempfile::tempdir().unwrap();
    let token_file = scratch.path().join("token");
    std::fs::write(&token_file, format!("{CANARY}\n")).unwrap();
    let credentials = scratch.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("admin.token"), CANARY).unwrap();
    let token_file = token_file.to_str().unwrap();
    let credentials = credentials.to_str().unwrap();

    let sources: [(&str, &str); 3] = [
        ("APP__ADMIN__TOKEN", CANARY),
        ("APP__ADMIN__TOKEN_FILE", token_file),
        ("CREDENTIALS_DIRECTORY", credentials),
    ];
    for (variable, value) in sources {
        let with_secret = || {
            let mut command = app_command();
            command.env(variable, value).env("APP__LOG__LEVEL", "trace");
            command
        };
        let mut service = Service::start(with_secret());
        // The secret is really loaded: it opens the admin route.
        let authorized = request(
            service.addr,
            &format!(
                "GET /admin/config HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {CANARY}\r\nConnection: close\r\n\r\n"
            ),
        );
        assert_eq!(authorized.status, 200, "{variable}: {authorized:?}");
        assert!(
            authorized.body.contains("token = \"[redacted]\""),
            "{}",
            authorized.body
        );
        let refused = request(
            service.addr,
            "GET /admin/config HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer nope\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(refused.status, 401);

        let mut seen = vec![authorized.body];
        for path in ["/version", "/metrics", "/readyz", "/healthz"] {
            let response = service.get(path);
            seen.push(format!("{:?} {}", response.headers, response.body));
        }
        let shown = run_bounded(with_secret().args(["config", "show"]));
        assert!(String::from_utf8_lossy(&shown.stdout).contains("[redacted]"));
        seen.push(format!("{shown:?}"));
        let bad_config = run_bounded(
            with_secret()
                .env("APP__SERVER__LISTEN", "bad")
                .args(["config", "check"]),
        );
        assert_eq!(bad_config.status.code(), Some(3));
        seen.push(format!("{bad_config:?}"));
        let conflicting = if variable == "APP__ADMIN__TOKEN" {
            ("APP__ADMIN__TOKEN_FILE", token_file)
        } else {
            ("APP__ADMIN__TOKEN", CANARY)
        };
        let two_sources = run_bounded(
            with_secret()
                .env(conflicting.0, conflicting.1)
                .args(["config", "check"]),
        );
        assert_eq!(two_sources.status.code(), Some(3));
        seen.push(format!("{two_sources:?}"));

        service.signal("TERM");
        service.wait_exit();
        seen.push(service.output());
        for (index, text) in seen.iter().enumerate() {
            assert!(
                !text.contains(CANARY),
                "{variable}: output {index} shows the secret: {text}"
            );
        }
    }
}

/// A connection accepted before the service stopped accepting, whose
/// client sends its request only once the drain closes idle connections:
/// the request is answered (with `Connection: close`), not met with a
/// reset. Closing it unread, as an idle keep-alive connection is closed,
/// would answer a request its client had every right to send.
#[test]
fn a_connection_accepted_before_the_drain_gets_its_first_request_answered() {
    let mut command = app_command();
    command.env("APP__SERVER__DRAIN_DELAY", "0s");
    let mut service = Service::start(command);
    let mut late = TcpStream::connect_timeout(&service.addr, BOUND).unwrap();
    late.set_read_timeout(Some(BOUND)).unwrap();
    // Accepted: the service answers another request after it on the same
    // worker set, so the late connection is past the kernel's queue.
    assert_eq!(service.get("/healthz").status, 200);
    service.signal("TERM");
    service
        .stdout
        .wait_for(|line| line.contains("closed idle connections"));
    late.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let response = read_response(&mut late);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");
    assert_eq!(service.wait_exit().code(), Some(0), "{}", service.output());
}
