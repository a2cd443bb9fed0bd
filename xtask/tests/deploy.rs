//! `cargo xtask deploy`, `rollback` and `releases` on a local root, with the
//! real service: releases A, B and C are archives of the app built at three
//! commits; the service runs from `current` under a stand-in for systemd
//! (an activation script that starts it or sends SIGHUP, and a
//! `NOTIFY_SOCKET` listener that follows `MAINPID=` through upgrades).
//! Also: archives and locks that must be refused with nothing changed, and
//! a deploy whose installed unit runs another root's binary.
//! The stand-in starts in milliseconds, so most cases live here; what it
//! cannot show (systemd's supervision of the process an upgrade started,
//! `systemctl stop` and `restart` draining, journald's rate limit, socket
//! activation after a reboot, units installed by the first deploy) is in
//! `hosts.rs`, on real systemd hosts.
//! (That `current` never disappears during a switch is a unit test of
//! `deploy::switch`.)

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::releases::*;
use support::*;

/// The app (debug, fast) stamped with `commit`.
fn app_at_commit(commit: &str) -> Vec<u8> {
    fs::read(app_built_at(commit)).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

fn serving_commit(port: u16) -> String {
    let (_, body) = get(port, "/version").expect("the service answers /version");
    let version: Value = serde_json::from_str(&body).unwrap();
    version["commit"].as_str().unwrap().to_owned()
}

/// The stand-in for systemd: a `NOTIFY_SOCKET` whose `MAINPID=` messages
/// keep the pid file current, and the activation script that starts the
/// service from `current` or sends SIGHUP to that pid.
struct Supervisor {
    scratch: TempDir,
    port: u16,
    stop: Arc<AtomicBool>,
    listener: Option<std::thread::JoinHandle<()>>,
}

impl Supervisor {
    fn new(root: &Path) -> Supervisor {
        let scratch = TempDir::new().unwrap();
        let port = free_port();
        let pid_file = scratch.path().join("app.pid");
        let socket = UnixDatagram::bind(scratch.path().join("notify.sock")).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let listener = {
            let (stop, pid_file) = (stop.clone(), pid_file.clone());
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    let Ok(length) = socket.recv(&mut buffer) else {
                        continue;
                    };
                    let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
                    if let Some(pid) = message
                        .lines()
                        .find_map(|line| line.strip_prefix("MAINPID="))
                    {
                        let temporary = pid_file.with_extension("tmp");
                        fs::write(&temporary, pid).unwrap();
                        fs::rename(&temporary, &pid_file).unwrap();
                    }
                }
            })
        };
        let script = format!(
            "#!/bin/sh\n\
             pid=$(cat '{pid}' 2>/dev/null)\n\
             if [ -n \"$pid\" ] && kill -0 \"$pid\" 2>/dev/null; then exec kill -HUP \"$pid\"; fi\n\
             NOTIFY_SOCKET='{socket}' APP__SERVER__LISTEN=127.0.0.1:{port} APP__SERVER__DRAIN_DELAY=0s \
             APP__SERVER__UPGRADE_TIMEOUT=3s APP__LOG__LEVEL=warn \
             '{root}/current/app' --config-dir '{root}/current/config' >>'{log}' 2>&1 &\n\
             echo $! > '{pid}'\n",
            pid = pid_file.display(),
            socket = scratch.path().join("notify.sock").display(),
            root = root.display(),
            log = scratch.path().join("app.log").display(),
        );
        fs::write(scratch.path().join("activate"), script).unwrap();
        Command::new("chmod")
            .arg("755")
            .arg(scratch.path().join("activate"))
            .status()
            .unwrap();
        Supervisor {
            scratch,
            port,
            stop,
            listener: Some(listener),
        }
    }

    /// The flags that make deploy and rollback use this supervisor.
    fn flags(&self) -> Vec<String> {
        vec![
            "--activate".into(),
            self.scratch.path().join("activate").display().to_string(),
            "--service".into(),
            format!("127.0.0.1:{}", self.port),
        ]
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Ok(pid) = fs::read_to_string(self.scratch.path().join("app.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(listener) = self.listener.take() {
            let _ = listener.join();
        }
    }
}

/// Clients on loopback, one connection per request, never retrying, until
/// stopped (at most 20 000 requests or 60 s each).
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let (mut served, mut failures) = (0, Vec::new());
                    let started = Instant::now();
                    while !stop.load(Ordering::SeqCst)
                        && served + failures.len() < 20_000
                        && started.elapsed() < Duration::from_secs(60)
                    {
                        match get(port, "/") {
                            Some((200, _)) => served += 1,
                            other => failures.push(format!("{other:?}")),
                        }
                    }
                    (served, failures)
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let (mut served, mut failures) = (0, Vec::new());
        for thread in self.threads {
            let (thread_served, thread_failures) = thread.join().unwrap();
            served += thread_served;
            failures.extend(thread_failures);
        }
        (served, failures)
    }
}

/// Each release of one host in `releases --json`, with its current,
/// previous and bad marks.
fn release_marks(host: &Value) -> BTreeMap<String, (bool, bool, bool)> {
    host["releases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|release| {
            (
                release["name"].as_str().unwrap().to_owned(),
                (
                    release["current"] == true,
                    release["previous"] == true,
                    release["bad"] == true,
                ),
            )
        })
        .collect()
}

fn log_actions(root: &Path) -> Vec<(String, String, String)> {
    fs::read_to_string(root.join("deploys.log"))
        .unwrap()
        .lines()
        .map(|line| {
            let entry: Value = serde_json::from_str(line).unwrap();
            (
                entry["action"].as_str().unwrap().to_owned(),
                entry["to"].as_str().unwrap().to_owned(),
                entry["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn current(root: &Path) -> String {
    fs::read_link(root.join("current"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn deploy_under_load_auto_rollback_rollbacks_and_interrupt_on_a_local_root() {
    let commits = ["a", "b", "c"].map(|letter| letter.repeat(40));
    let scratch = TempDir::new().unwrap();
    let root = scratch.path().join("root");
    let supervisor = Supervisor::new(&root);
    let archive = |index: usize, config: Vec<(&str, String)>| {
        let dir = scratch.path().join(format!("dist-{index}"));
        release(
            &dir,
            &commits[index],
            &app_at_commit(&commits[index]),
            &config,
        )
    };
    let (a, b) = (
        archive(0, config_files(&["base.toml", "dev.toml"])),
        archive(1, config_files(&["base.toml", "dev.toml"])),
    );
    // C never gets ready: its config makes the new process exit 3.
    let mut broken = config_files(&["base.toml", "dev.toml"]);
    broken[0].1 = broken[0]
        .1
        .replace("drain_timeout = \"30s\"", "drain_timeout = \"forever\"");
    let c = archive(2, broken);
    let deploy = |archive: &Path, timeout: &str| {
        let mut command = xtask(&workspace_root());
        command
            .arg("deploy")
            .arg("--archive")
            .arg(archive)
            .arg("--root")
            .arg(&root)
            .args(supervisor.flags())
            .args(["--timeout", timeout]);
        output(&mut command)
    };

    let first = deploy(&a, "20s");
    assert!(first.status.success(), "{}", stderr_text(&first));
    assert_eq!(serving_commit(supervisor.port), commits[0]);

    // B under load: not one failed request.
    let load = Load::start(supervisor.port, 4);
    std::thread::sleep(Duration::from_millis(300));
    let second = deploy(&b, "20s");
    std::thread::sleep(Duration::from_millis(300));
    let (served, failures) = load.finish();
    assert!(second.status.success(), "{}", stderr_text(&second));
    assert!(served > 100, "only {served} requests were served");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        served + failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(serving_commit(supervisor.port), commits[1]);

    // C fails its proof: switched back to B, which serves; C is bad.
    let third = deploy(&c, "4s");
    let stderr = stderr_text(&third);
    assert_eq!(third.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: deploy of 0.1.0-ccccccc to local failed at prove")
            && last.contains("rolled back to 0.1.0-bbbbbbb, which serves again"),
        "{last}"
    );
    assert_eq!(current(&root), "releases/0.1.0-bbbbbbb");
    assert_eq!(serving_commit(supervisor.port), commits[1]);
    let releases = |json: bool| {
        let mut command = xtask(&workspace_root());
        command.arg("releases").arg("--root").arg(&root);
        if json {
            command.arg("--json");
        }
        stdout_of(&mut command)
    };
    let listed: Value = serde_json::from_str(&releases(true)).unwrap();
    assert_eq!(
        release_marks(&listed[0]),
        BTreeMap::from([
            ("0.1.0-aaaaaaa".to_owned(), (false, true, false)),
            ("0.1.0-bbbbbbb".to_owned(), (true, false, false)),
            ("0.1.0-ccccccc".to_owned(), (false, false, true)),
        ])
    );
    assert!(releases(false).contains("0.1.0-ccccccc"));

    // rollback returns to A; a second one finds nothing good (not C).
    let rollback = || {
        let mut command = xtask(&workspace_root());
        command
            .arg("rollback")
            .arg("--root")
            .arg(&root)
            .args(supervisor.flags())
            .args(["--timeout", "20s"]);
        output(&mut command)
    };
    let back = rollback();
    assert!(back.status.success(), "{}", stderr_text(&back));
    assert_eq!(serving_commit(supervisor.port), commits[0]);
    let last_entry = fs::read_to_string(root.join("deploys.log")).unwrap();
    let last_entry: Value = serde_json::from_str(last_entry.lines().last().unwrap()).unwrap();
    assert_eq!(
        (&last_entry["action"], &last_entry["downgrade"]),
        (&serde_json::json!("rollback"), &serde_json::json!(true))
    );
    let again = rollback();
    let stderr = stderr_text(&again);
    assert_eq!(again.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no previous good release to roll back to") && stderr.contains("--to"),
        "{stderr}"
    );
    assert_eq!(current(&root), "releases/0.1.0-aaaaaaa");

    // Interrupted while B activates: back on A, B not marked bad, no lock.
    let mut interrupted = xtask(&workspace_root());
    interrupted
        .arg("deploy")
        .arg("--archive")
        .arg(&b)
        .arg("--root")
        .arg(&root)
        .arg("--activate")
        .arg(format!(
            "sleep 1; exec '{}'",
            supervisor.scratch.path().join("activate").display()
        ))
        .arg("--service")
        .arg(format!("127.0.0.1:{}", supervisor.port))
        .args(["--timeout", "20s"])
        .stderr(std::process::Stdio::piped());
    let mut child = interrupted.spawn().unwrap();
    let switched = Instant::now();
    while current(&root) != "releases/0.1.0-bbbbbbb" {
        if switched.elapsed() > Duration::from_secs(30) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let run = child.wait_with_output().unwrap();
            panic!("B never switched in: {}", stderr_text(&run));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    stdout_of(Command::new("kill").arg("-INT").arg(child.id().to_string()));
    let run = child.wait_with_output().unwrap();
    let stderr = stderr_text(&run);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.contains("deploy of 0.1.0-bbbbbbb to local failed at activate: interrupted; rolled back to 0.1.0-aaaaaaa, which serves again")
            && !last.contains("marked bad"),
        "{last}"
    );
    assert_eq!(current(&root), "releases/0.1.0-aaaaaaa");
    assert_eq!(serving_commit(supervisor.port), commits[0]);

    let ok = || "ok".to_owned();
    assert_eq!(
        log_actions(&root),
        [
            ("deploy".to_owned(), "0.1.0-aaaaaaa".to_owned(), ok()),
            ("deploy".to_owned(), "0.1.0-bbbbbbb".to_owned(), ok()),
            (
                "deploy".to_owned(),
                "0.1.0-ccccccc".to_owned(),
                "failed".to_owned()
            ),
            ("auto-rollback".to_owned(), "0.1.0-bbbbbbb".to_owned(), ok()),
            ("rollback".to_owned(), "0.1.0-aaaaaaa".to_owned(), ok()),
            (
                "deploy".to_owned(),
                "0.1.0-bbbbbbb".to_owned(),
                "failed".to_owned()
            ),
            ("auto-rollback".to_owned(), "0.1.0-aaaaaaa".to_owned(), ok()),
        ]
    );
    assert!(lock_is_free_within(&root, Duration::from_secs(10)));

    // Killed outright during its proof (no chance to switch back): B was
    // activated and serves, unproven; `current.proven` still names A; the
    // lock died with the deploy. The next plain deploy switches back to A,
    // proves it, then deploys B and proves it.
    {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut killed = xtask(&workspace_root());
        killed
            .arg("deploy")
            .arg("--archive")
            .arg(&b)
            .arg("--root")
            .arg(&root)
            .args(supervisor.flags())
            .args(["--timeout", "20s"])
            .stderr(std::process::Stdio::piped())
            .process_group(0);
        let mut child = killed.spawn().unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut printed = String::new();
        for line in stderr.lines() {
            let line = line.unwrap_or_default();
            printed.push_str(&line);
            printed.push('\n');
            // Printed once activation returned, before the first probe.
            if line.contains("to serve commit") {
                // SAFETY: kill has no memory effects; the group is the
                // deploy's own.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                break;
            }
        }
        child.wait().unwrap();
        assert!(
            printed.contains("to serve commit"),
            "the deploy never reached its proof:\n{printed}"
        );
    }
    assert_eq!(
        fs::read_link(root.join("current.proven")).unwrap(),
        Path::new("releases/0.1.0-aaaaaaa")
    );
    assert!(lock_is_free_within(&root, Duration::from_secs(10)));
    let unproven = Instant::now();
    while get(supervisor.port, "/version").is_none_or(|(_, body)| !body.contains(&commits[1])) {
        assert!(
            unproven.elapsed() < Duration::from_secs(30),
            "the killed deploy's activation never upgraded to B"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let next = deploy(&b, "20s");
    let stderr = stderr_text(&next);
    assert!(next.status.success(), "{stderr}");
    assert!(
        stderr.contains("local: 0.1.0-bbbbbbb was switched to and never proven (an earlier deploy stopped half-way): switching back to 0.1.0-aaaaaaa"),
        "{stderr}"
    );
    assert_eq!(serving_commit(supervisor.port), commits[1]);
    assert_eq!(
        fs::read_link(root.join("current.proven")).unwrap(),
        Path::new("releases/0.1.0-bbbbbbb")
    );
    let actions = log_actions(&root);
    assert_eq!(
        actions[actions.len() - 2..],
        [
            ("recover".to_owned(), "0.1.0-aaaaaaa".to_owned(), ok()),
            ("deploy".to_owned(), "0.1.0-bbbbbbb".to_owned(), ok()),
        ]
    );
}

/// Every path under `dir` with its contents (or link target), to check
/// that a refused deploy changed nothing.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let kind = fs::symlink_metadata(&path).unwrap().file_type();
            let contents = if kind.is_symlink() {
                fs::read_link(&path)
                    .unwrap()
                    .display()
                    .to_string()
                    .into_bytes()
            } else if kind.is_dir() {
                pending.push(path.clone());
                Vec::new()
            } else {
                fs::read(&path).unwrap()
            };
            files.insert(path, contents);
        }
    }
    files
}

/// A tar.gz whose one entry has a raw `name` (bypassing the checks tar
/// writers make) and, for a symlink, a raw link target.
fn raw_archive(path: &Path, name: &str, link: Option<&str>) {
    let mut header = tar::Header::new_gnu();
    {
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
    }
    header.set_mode(0o644);
    header.set_size(if link.is_some() { 0 } else { 4 });
    header.set_entry_type(if link.is_some() {
        tar::EntryType::Symlink
    } else {
        tar::EntryType::Regular
    });
    header.set_cksum();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    ));
    let data: &[u8] = if link.is_some() { b"" } else { b"evil" };
    builder.append(&header, data).unwrap();
    builder.into_inner().unwrap().finish().unwrap();
}

#[test]
fn bad_archives_and_held_locks_are_refused_with_nothing_changed() {
    let scratch = TempDir::new().unwrap();
    let root = scratch.path().join("root");
    fs::create_dir_all(root.join("releases/0.1.0-aaaaaaa")).unwrap();
    std::os::unix::fs::symlink("releases/0.1.0-aaaaaaa", root.join("current")).unwrap();
    fs::write(root.join("deploys.log"), "").unwrap();
    let commit = "d".repeat(40);
    let name = format!("app-0.1.0-{TARGET}.tar.gz");

    let tampered = scratch.path().join("tampered");
    let archive = release(&tampered, &commit, b"#!/bin/sh\n", &[]);
    let mut bytes = fs::read(&archive).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0xff;
    fs::write(&archive, bytes).unwrap();

    let climbing = scratch.path().join("climbing");
    fs::create_dir_all(&climbing).unwrap();
    raw_archive(&climbing.join(&name), "app-0.1.0-x/../../evil", None);
    write_sums_and_manifest(&climbing, &climbing.join(&name), &commit);

    let linking = scratch.path().join("linking");
    fs::create_dir_all(&linking).unwrap();
    raw_archive(
        &linking.join(&name),
        "app-0.1.0-x/config",
        Some("../../../etc"),
    );
    write_sums_and_manifest(&linking, &linking.join(&name), &commit);

    let good = scratch.path().join("good");
    let good_archive = release(&good, &commit, b"#!/bin/sh\n", &[]);

    let deploy = |archive: &Path| {
        let mut command = xtask(&workspace_root());
        command
            .arg("deploy")
            .arg("--archive")
            .arg(archive)
            .arg("--root")
            .arg(&root)
            .args(["--activate", "true", "--timeout", "0s"]);
        command
    };
    let before = snapshot(&root);
    let refused = |archive: &Path, expected: &str| {
        let run = output(&mut deploy(archive));
        let stderr = stderr_text(&run);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "`{stderr}` lacks `{expected}`");
        assert_eq!(snapshot(&root), before, "{stderr}");
    };
    refused(&archive, "does not match its checksum");
    refused(
        &climbing.join(&name),
        "refusing entry `app-0.1.0-x/../../evil`: it climbs out with `..`",
    );
    refused(
        &linking.join(&name),
        "it links to ../../../etc, outside the release",
    );
    // The genuine archive with its manifest edited: a version that climbs
    // out of releases/, then one older than the release the root runs.
    let relabelled = |folder: &str, version: &str| {
        let dir = scratch.path().join(folder);
        fs::create_dir_all(&dir).unwrap();
        fs::copy(&good_archive, dir.join(&name)).unwrap();
        fs::copy(good.join("SHA256SUMS"), dir.join("SHA256SUMS")).unwrap();
        let mut manifest = manifest_at(&commit);
        manifest["version"] = serde_json::json!(version);
        fs::write(dir.join("dist-manifest.json"), manifest.to_string()).unwrap();
        dir.join(&name)
    };
    refused(
        &relabelled("escaping", "../../ESCAPED"),
        "the release's version \"../../ESCAPED\" is refused: it holds a `/`",
    );
    refused(
        &relabelled("older", "0.0.9"),
        "refusing to deploy 0.0.9-ddddddd over 0.1.0-aaaaaaa on local: version 0.0.9 is older than 0.1.0, and releases only move forward",
    );

    // A lock held by another deploy: refused at once, naming the holder;
    // with --lock-wait, the deploy waits until the holder lets go.
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let owner = serde_json::json!({"user": "someone", "controller": hostname.trim(), "pid": 1,
                                   "since": "2026-01-01T00:00:00Z", "release": "0.1.0-eeeeeee"})
    .to_string();
    let holder = HeldLock::hold(&root, &owner);
    let before = snapshot(&root);
    let run = output(&mut deploy(&good_archive));
    let stderr = stderr_text(&run);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.contains("failed at lock: ")
            && last.contains("is locked: someone is deploying 0.1.0-eeeeeee (pid 1 on")
            && last.contains("pass --lock-wait 5m"),
        "{last}"
    );
    assert_eq!(snapshot(&root), before, "{stderr}");
    let letting_go = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        drop(holder);
    });
    let waited = output(deploy(&good_archive).args(["--lock-wait", "60s"]));
    letting_go.join().unwrap();
    let stderr = stderr_text(&waited);
    assert!(
        stderr.contains(
            "local: waiting up to 60 s for the deploy lock: someone is deploying 0.1.0-eeeeeee"
        ),
        "{stderr}"
    );
    // Past the lock: it fails at the proof (nothing serves in this test).
    assert!(
        stderr.lines().last().unwrap().contains("failed at prove"),
        "{stderr}"
    );
    assert!(lock_is_free_within(&root, Duration::from_secs(10)));

    // Asked for by name, the older release goes on, logged as a downgrade.
    let downgrade = output(deploy(&relabelled("older-again", "0.0.9")).arg("--allow-downgrade"));
    let stderr = stderr_text(&downgrade);
    assert!(
        stderr.contains("local: warning: --allow-downgrade: deploying 0.0.9-ddddddd over 0.1.0-aaaaaaa (version 0.0.9 is older than 0.1.0)"),
        "{stderr}"
    );
    let log = fs::read_to_string(root.join("deploys.log")).unwrap();
    let entry: Value = log
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|entry| entry["action"] == "deploy" && entry["to"] == "0.0.9-ddddddd")
        .unwrap_or_else(|| panic!("no deploy of 0.0.9-ddddddd in:\n{log}"));
    assert_eq!(entry["downgrade"], true, "{entry}");
}

/// A throwaway `sshd` on a loopback port, as the current user, with its own
/// host key; it lets in the key `client_key` and nothing else.
struct Sshd {
    child: std::process::Child,
    port: u16,
    host_key: String,
}

impl Sshd {
    fn start(sshd: &Path, dir: &Path, client_key: &Path) -> Sshd {
        fs::create_dir_all(dir).unwrap();
        keygen(&dir.join("host_key"));
        fs::copy(
            client_key.with_extension("pub"),
            dir.join("authorized_keys"),
        )
        .unwrap();
        let port = free_port();
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPidFile none\nUsePAM no\n\
                 StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nAllowTcpForwarding yes\n\
                 Subsystem sftp internal-sftp\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        // Run as root, sshd needs its privilege separation folder, which
        // systemd's tmpfiles makes on a booted Debian system.
        if stdout_of(Command::new("id").arg("-u")).trim() == "0" {
            fs::create_dir_all("/run/sshd").unwrap();
        }
        let mut child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stderr(fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if child.try_wait().unwrap().is_some() || started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!(
                    "sshd did not start: {}",
                    fs::read_to_string(dir.join("sshd.log")).unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let host_key = fs::read_to_string(dir.join("host_key.pub")).unwrap();
        Sshd {
            child,
            port,
            host_key: host_key.trim().to_owned(),
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    stdout_of(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "deploy-test", "-f"])
            .arg(path),
    );
}

/// Two hosts, alpha and beta, each an sshd on loopback with a root of its
/// own. Alpha runs the service; beta's root is locked by a deploy that is
/// still running, so a deploy of both switches alpha, fails on beta, and
/// must switch alpha back.
#[test]
fn deploy_over_ssh_to_two_hosts_undoes_the_first_when_the_second_fails() {
    let Some(sshd) = tool_or_skip("sshd", "cargo xtask setup") else {
        return;
    };
    if tool_or_skip("ssh-keygen", "cargo xtask setup").is_none() {
        return;
    }
    let commits = ["a", "b"].map(|letter| letter.repeat(40));
    let scratch = TempDir::new().unwrap();
    let keys = scratch.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let client_key = keys.join("client");
    keygen(&client_key);
    let alpha = Sshd::start(&sshd, &scratch.path().join("alpha"), &client_key);
    let beta = Sshd::start(&sshd, &scratch.path().join("beta"), &client_key);
    let user = stdout_of(Command::new("id").arg("-un")).trim().to_owned();
    let ssh_config = scratch.path().join("ssh_config");
    let mut config = String::new();
    let mut known_hosts = String::new();
    for (name, server) in [("alpha", &alpha), ("beta", &beta)] {
        config += &format!(
            "Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  \
             IdentityFile {key}\n  IdentitiesOnly yes\n  HostKeyAlias {name}\n  \
             UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n",
            port = server.port,
            key = client_key.display(),
            known = scratch.path().join("known_hosts").display(),
        );
        known_hosts += &format!("{name} {}\n", server.host_key);
    }
    fs::write(&ssh_config, config).unwrap();
    fs::write(scratch.path().join("known_hosts"), known_hosts).unwrap();

    let (root_alpha, root_beta) = (scratch.path().join("root-a"), scratch.path().join("root-b"));
    let supervisor = Supervisor::new(&root_alpha);
    let archive = |index: usize| {
        let dir = scratch.path().join(format!("dist-{index}"));
        release(
            &dir,
            &commits[index],
            &app_at_commit(&commits[index]),
            &config_files(&["base.toml", "dev.toml"]),
        )
    };
    let (a, b) = (archive(0), archive(1));
    let host = |name: &str, root: &Path| format!("{name}:{}", root.display());
    let over_ssh = |command: &str, hosts: &[String]| {
        let mut command_line = xtask(&workspace_root());
        command_line
            .arg(command)
            .arg("--ssh-config")
            .arg(&ssh_config);
        for host in hosts {
            command_line.arg("--host").arg(host);
        }
        command_line
    };
    let deploy = |archive: &Path, hosts: &[String]| {
        let mut command = over_ssh("deploy", hosts);
        command
            .arg("--archive")
            .arg(archive)
            .args(supervisor.flags())
            .args(["--timeout", "20s"]);
        output(&mut command)
    };
    let both = [host("alpha", &root_alpha), host("beta", &root_beta)];

    // A on alpha alone: every step over ssh, the archive by scp.
    let first = deploy(&a, &both[..1]);
    let stderr = stderr_text(&first);
    assert!(first.status.success(), "{stderr}");
    for step in [
        format!("$ ssh -F {} alpha -- 'mkdir -p ", ssh_config.display()),
        format!("$ scp -F {} -q -r -p ", ssh_config.display()),
        format!("$ ssh -F {} alpha -- 'mv -T ", ssh_config.display()),
    ] {
        assert!(stderr.contains(&step), "`{step}` was not echoed:\n{stderr}");
    }
    assert_eq!(current(&root_alpha), "releases/0.1.0-aaaaaaa");
    assert_eq!(serving_commit(supervisor.port), commits[0]);

    // Beta is locked by a deploy that is still running.
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let lock_owner = serde_json::json!({"user": "someone", "controller": hostname.trim(), "pid": 1,
                                        "since": "2026-01-01T00:00:00Z", "release": "0.1.0-eeeeeee"})
    .to_string();
    let holder = HeldLock::hold(&root_beta, &lock_owner);
    let beta_before = snapshot(&root_beta);
    let fleet = deploy(&b, &both);
    let stderr = stderr_text(&fleet);
    assert_eq!(fleet.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: deploy of 0.1.0-bbbbbbb to beta failed at lock: ")
            && last.contains("on beta is locked: someone is deploying 0.1.0-eeeeeee")
            && last.contains(
                "undone on the hosts already switched: alpha rolled back to 0.1.0-aaaaaaa"
            ),
        "{last}"
    );
    assert!(stderr.contains("alpha: 0.1.0-bbbbbbb serves"), "{stderr}");
    assert_eq!(current(&root_alpha), "releases/0.1.0-aaaaaaa");
    assert_eq!(serving_commit(supervisor.port), commits[0]);
    assert_eq!(snapshot(&root_beta), beta_before);
    assert_eq!(
        log_actions(&root_alpha),
        [
            (
                "deploy".to_owned(),
                "0.1.0-aaaaaaa".to_owned(),
                "ok".to_owned()
            ),
            (
                "deploy".to_owned(),
                "0.1.0-bbbbbbb".to_owned(),
                "ok".to_owned()
            ),
            (
                "auto-rollback".to_owned(),
                "0.1.0-aaaaaaa".to_owned(),
                "ok".to_owned()
            ),
        ]
    );

    // `releases` over ssh, both hosts: B served on alpha, so it is not bad.
    let mut listing = over_ssh("releases", &both);
    listing.arg("--json");
    let listed: Value = serde_json::from_str(&stdout_of(&mut listing)).unwrap();
    assert_eq!(listed[0]["host"], "alpha");
    assert_eq!(listed[1]["host"], "beta");
    assert_eq!(listed[1]["releases"], serde_json::json!([]));
    assert_eq!(
        release_marks(&listed[0]),
        BTreeMap::from([
            ("0.1.0-aaaaaaa".to_owned(), (true, false, false)),
            ("0.1.0-bbbbbbb".to_owned(), (false, true, false)),
        ])
    );

    // The locking deploy ends: beta's lock is free, with nothing to clear.
    drop(holder);
    assert!(lock_is_free_within(&root_beta, Duration::from_secs(10)));
}

/// A `systemctl` whose `show` describes an installed `app.service` that
/// runs `exec_path`; `reload` records that it was called.
fn fake_systemctl(dir: &Path, exec_path: &str) {
    use std::os::unix::fs::PermissionsExt;
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in\n  show) printf 'LoadState=loaded\\nExecStart={{ path={exec_path} ; argv[]={exec_path} --config-dir /x ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }}\\n' ;;\n  *) echo \"$*\" >> '{}' ;;\nesac\n",
        dir.join("calls").display()
    );
    let path = dir.join("systemctl");
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_deploy_whose_unit_runs_another_root_is_refused_before_anything_changes() {
    let scratch = TempDir::new().unwrap();
    let bin = scratch.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    // The units of the archives, rendered for /opt/app, are installed; the
    // deploy goes to another root.
    fake_systemctl(&bin, "/opt/app/current/app");
    let root = scratch.path().join("srv-app");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    for task in ["deploy", "rollback"] {
        let run = output(
            xtask(&workspace_root())
                .args([task, "--root"])
                .arg(&root)
                .env("PATH", &path),
        );
        assert_eq!(run.status.code(), Some(1), "{task}");
        let stderr = stderr_text(&run);
        let last = stderr.lines().last().unwrap();
        let expected = format!(
            "error: local: app.service runs /opt/app/current/app, not {root}/current/app (deploy to --root /opt/app for that one); `deploy` installs and checks the units rendered for this root (`cargo xtask units --root {root}`), or pass --activate CMD to start the service yourself",
            root = root.display()
        );
        assert_eq!(last, expected, "{task}");
        // Refused before any build, upload or change on the host.
        assert!(!root.exists(), "{task} created {}", root.display());
        assert!(!stderr.contains("cargo build"), "{task}: {stderr}");
        assert!(!bin.join("calls").exists(), "{task} reloaded a unit");
    }
}

/// A release unpacked by hand as the operator's guide shows it (the
/// archive's own folder name) is listed with the version and commit its
/// binary reports.
#[test]
fn releases_reads_a_release_installed_by_hand() {
    let commit = "e".repeat(40);
    let scratch = TempDir::new().unwrap();
    let root = scratch.path().join("root");
    let by_hand = root.join(format!("releases/app-0.1.0-{TARGET}"));
    fs::create_dir_all(&by_hand).unwrap();
    fs::copy(app_built_at(&commit), by_hand.join("app")).unwrap();
    std::os::unix::fs::symlink(format!("releases/app-0.1.0-{TARGET}"), root.join("current"))
        .unwrap();
    let listed = output(
        xtask(&workspace_root())
            .args(["releases", "--json", "--root"])
            .arg(&root),
    );
    assert!(listed.status.success(), "{}", stderr_text(&listed));
    let report: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let release = &report[0]["releases"][0];
    assert_eq!(release["name"], format!("app-0.1.0-{TARGET}"));
    assert_eq!(release["version"], "0.1.0");
    assert_eq!(release["commit"], &commit[..7]);
    assert_eq!(release["current"], true);
}
