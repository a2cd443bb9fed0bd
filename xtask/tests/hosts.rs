//! `deploy` to real systemd hosts: Debian 12 booted with systemd-nspawn
//! (see `support::hosts`), with the units `deploy` installs, through the
//! real `systemctl`, journald and sshd. What the stand-in of `deploy.rs`
//! cannot show: that systemd supervises the process an upgrade started
//! (so a later stop drains instead of killing), that the first deploy to a
//! bare host installs and starts the service, and that socket activation
//! brings it back after a reboot.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::hosts::{Host, ssh_key, tree_or_skip};
use support::releases::{config_files, release};
use support::*;

const ROOT: &str = "/opt/app";
const PORT: u16 = 8080;
/// server.drain_delay of config/base.toml: a stop that drains takes as long.
const DRAIN_DELAY: Duration = Duration::from_secs(5);

/// Requests that a client in the host's network namespace sends, one per
/// connection, from a few threads, until stopped (bounded in time).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// What the test is doing, named in each error.
    phase: Arc<std::sync::Mutex<String>>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    const BOUND: Duration = Duration::from_secs(300);

    fn start(namespace: &Path) -> Load {
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let phase = Arc::new(std::sync::Mutex::new("start".to_owned()));
        let threads = (0..4)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                let phase = phase.clone();
                let namespace = fs::File::open(namespace).unwrap();
                std::thread::spawn(move || {
                    use std::os::fd::AsRawFd;
                    // SAFETY: setns moves this thread (only) into the host's
                    // network namespace; the descriptor is open.
                    let entered = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
                    let started = Instant::now();
                    let mut errors = Vec::new();
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < Load::BOUND {
                        match get("/") {
                            Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                            other => {
                                if errors.len() < 10 {
                                    let phase = phase.lock().unwrap().clone();
                                    errors.push(format!("{phase}: {other:?}"));
                                }
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                    errors
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            phase,
            threads,
        }
    }

    fn phase(&self, phase: &str) {
        *self.phase.lock().unwrap() = phase.to_owned();
    }

    fn served(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients; returns (served, failed, the first errors).
    fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self
            .threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap())
            .collect();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

/// `GET path` from the service on the loopback of the calling thread's
/// network namespace: the status and body.
fn get(path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", PORT))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {response:?}")))?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_owned()))
}

/// A release of the app (a debug build stamped with `letter` repeated as
/// its commit, with `features`) with the config a production host reads.
fn release_of(scratch: &Path, letter: &str, features: &[&str]) -> (String, PathBuf) {
    let commit = letter.repeat(40);
    let binary = fs::read(app_built_with(&commit, features)).unwrap();
    let dir = scratch.join(format!("dist-{letter}"));
    let archive = release(
        &dir,
        &commit,
        &binary,
        &config_files(&["base.toml", "prod.toml"]),
    );
    (commit, archive)
}

fn deploy(archive: &Path, host: &str, ssh_config: &Path) -> std::process::Output {
    deploy_to(archive, &[host], ssh_config, &[])
}

/// `cargo xtask deploy` of `archive` to `hosts`, with more flags.
fn deploy_to(
    archive: &Path,
    hosts: &[&str],
    ssh_config: &Path,
    flags: &[&str],
) -> std::process::Output {
    let mut command = xtask(&workspace_root());
    command
        .arg("deploy")
        .arg("--archive")
        .arg(archive)
        .args(["--root", ROOT, "--ssh-config"])
        .arg(ssh_config)
        .args(flags);
    for host in hosts {
        command.args(["--host", host]);
    }
    output(&mut command)
}

/// `systemctl show -p <property> --value app.service` on the host.
fn property(host: &Host, name: &str) -> String {
    host.run_ok(&format!("systemctl show -p {name} --value app.service"))
        .trim()
        .to_owned()
}

/// Runs `command` on the host and returns how long it took.
fn timed(host: &Host, command: &str) -> Duration {
    let started = Instant::now();
    host.run_ok(command);
    started.elapsed()
}

/// Waits until the service is active and the load is served again.
fn wait_until_serving_again(host: &Host, load: &Load) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while property(host, "ActiveState") != "active" {
        assert!(Instant::now() < deadline, "app.service is not active again");
        std::thread::sleep(Duration::from_millis(50));
    }
    let served = load.served();
    while load.served() < served + 100 {
        assert!(Instant::now() < deadline, "the load is not served again");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The Debian package on a real Debian 12 host, from a signed apt
/// repository (`apt-repo`) over a `file:` source: `apt install` starts the
/// service through the packaged units; `apt upgrade` to a newer package
/// under load hands over without a failed request (postinst's reload), to
/// a new main process systemd follows; a repository whose signed index was
/// changed is refused; `apt remove` drains and stops the service and keeps
/// the config, `apt purge` leaves nothing of the package behind.
#[test]
fn slow_on_hosts_the_apt_repository_installs_upgrades_under_load_refuses_tampering_and_purges() {
    let Some(tree) = tree_or_skip() else {
        return;
    };
    let scratch = TempDir::new().unwrap();
    let key = ssh_key(scratch.path());
    let package = |letter: &str, version: &str| -> (String, PathBuf) {
        let commit = letter.repeat(40);
        let binary = app_built_with(&commit, &[]);
        let out = scratch.path().join(format!("deb-{letter}"));
        let run = output(
            xtask(&workspace_root())
                .args([
                    "package",
                    "--target",
                    "x86_64",
                    "--version",
                    version,
                    "--binary",
                ])
                .arg(&binary)
                .arg("--out")
                .arg(&out),
        );
        assert!(run.status.success(), "{}", stderr_text(&run));
        (commit, out.join(format!("app_{version}_amd64.deb")))
    };
    let (commit_c, deb_c) = package("c", "0.1.0");
    let (commit_d, deb_d) = package("d", "0.1.1");

    // The repository's own key, and the repository with the first package.
    let (apt_key, keyring) = (
        scratch.path().join("apt.key"),
        scratch.path().join("ring.gpg"),
    );
    let passphrase = "apt repository passphrase 7!";
    let made = output(
        xtask(&workspace_root())
            .env("APT_SIGNING_PASSPHRASE", passphrase)
            .args(["keygen", "--apt", "--private-key"])
            .arg(&apt_key)
            .arg("--public-key")
            .arg(&keyring),
    );
    assert!(made.status.success(), "{}", stderr_text(&made));
    let repo = scratch.path().join("repo");
    let add = |deb: &Path| {
        let added = output(
            xtask(&workspace_root())
                .env("APT_SIGNING_KEY_FILE", &apt_key)
                .env("APT_SIGNING_PASSPHRASE", passphrase)
                .arg("apt-repo")
                .arg(&repo)
                .arg("--deb")
                .arg(deb)
                .arg("--keyring")
                .arg(&keyring),
        );
        assert!(added.status.success(), "{}", stderr_text(&added));
    };
    add(&deb_c);

    let host = Host::boot(&tree, scratch.path(), "alpha", &key);
    let publish = || {
        let served = host.root().join("srv/apt");
        let _ = fs::remove_dir_all(&served);
        fs::create_dir_all(served.parent().unwrap()).unwrap();
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(&repo)
            .arg(&served)
            .status()
            .unwrap();
        assert!(copied.success());
    };
    publish();
    fs::copy(
        &keyring,
        host.root()
            .join("usr/share/keyrings/app-archive-keyring.gpg"),
    )
    .unwrap();
    fs::write(
        host.root().join("etc/apt/sources.list.d/app.list"),
        "deb [signed-by=/usr/share/keyrings/app-archive-keyring.gpg] file:/srv/apt stable main\n",
    )
    .unwrap();
    // Only this source: the host has no network to reach Debian's.
    let update = "apt-get update -q -o Dir::Etc::sourcelist=/etc/apt/sources.list.d/app.list -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0";
    let apt = "DEBIAN_FRONTEND=noninteractive apt-get -y -q";

    host.run_ok(update);
    host.run_ok(&format!("{apt} install app"));
    assert_eq!(
        host.run_ok("systemctl is-active app.socket app.service"),
        "active\nactive\n"
    );
    assert_eq!(host.run_ok("systemctl is-enabled app.socket"), "enabled\n");
    // Every installed file is the one the package's md5sums lists.
    assert_eq!(host.run_ok("dpkg --verify app"), "");
    let version = host.run_ok(&format!("curl -sf http://127.0.0.1:{PORT}/version"));
    assert!(version.contains(commit_c.as_str()), "{version}");
    assert!(
        host.run_ok(&format!(
            "curl -sf -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{PORT}/readyz"
        ))
        .contains("200")
    );

    // The newer package, published, then installed by apt under load.
    add(&deb_d);
    publish();
    host.run_ok(update);
    let load = Load::start(&host.network_namespace());
    let first_pid = property(&host, "MainPID");
    load.phase("apt upgrade");
    host.run_ok(&format!("{apt} upgrade"));
    let installed = host.run_ok("dpkg-query -W -f '${Version}' app");
    assert_eq!(installed, "0.1.1");
    let version = host.run_ok(&format!("curl -sf http://127.0.0.1:{PORT}/version"));
    assert!(version.contains(commit_d.as_str()), "{version}");
    let main_pid = property(&host, "MainPID");
    assert_ne!(main_pid, first_pid, "the upgrade left the old process");
    let served = load.served();
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.served() < served + 100 {
        assert!(
            Instant::now() < deadline,
            "the load is not served after the upgrade"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (served, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{served} served, {failed} failed: {errors:?}");
    // A handover, not a restart: the old process logged the upgrade.
    let journal = host.run_ok("journalctl -u app.service -o cat --no-pager");
    assert_eq!(
        journal.matches("\"upgrade complete").count(),
        1,
        "{journal}"
    );
    assert!(!journal.contains("\"stop requested"), "{journal}");
    eprintln!("{served} requests served across apt's upgrade, none failed");

    // A changed index: a version 9.9 of the package added to Packages, and
    // the Release files' hashes changed to match, without the key.
    let served_dists = host.root().join("srv/apt/dists/stable");
    let packages_path = served_dists.join("main/binary-amd64/Packages");
    let packages = fs::read_to_string(&packages_path).unwrap();
    let last = packages.rsplit("\n\n").next().unwrap();
    let forged = format!(
        "{packages}\n{}",
        last.replace("Version: 0.1.1", "Version: 9.9")
    );
    fs::write(&packages_path, &forged).unwrap();
    fs::remove_file(served_dists.join("main/binary-amd64/Packages.gz")).unwrap();
    let sha256 = |bytes: &[u8]| -> String {
        use sha2::Digest;
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    };
    for name in ["Release", "InRelease"] {
        let path = served_dists.join(name);
        let text = fs::read_to_string(&path).unwrap();
        let line = text
            .lines()
            .find(|line| line.ends_with(" main/binary-amd64/Packages"))
            .unwrap()
            .to_owned();
        let forged_line = format!(
            " {} {} main/binary-amd64/Packages",
            sha256(forged.as_bytes()),
            forged.len()
        );
        let text: String = text
            .lines()
            .filter(|line| !line.ends_with("Packages.gz"))
            .map(|kept| {
                if kept == line {
                    forged_line.clone()
                } else {
                    kept.to_owned()
                }
            })
            .map(|line| line + "\n")
            .collect();
        fs::write(&path, text).unwrap();
    }
    // apt keeps the previous index and warns; --error-on=any makes that
    // an error, as a careful operator's script would run it.
    let refused = host.run(&format!("{update} --error-on=any"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        !refused.status.success()
            && said.contains("The following signatures were invalid: BADSIG")
            && said.contains("The repository is not updated"),
        "apt update took a changed index: {said}"
    );
    let candidate = host.run_ok("apt-cache policy app");
    assert!(!candidate.contains("9.9"), "{candidate}");
    assert_eq!(host.run_ok("dpkg-query -W -f '${Version}' app"), "0.1.1");

    // Remove drains and stops, keeping the config; purge leaves nothing.
    host.run_ok(&format!("{apt} remove app"));
    assert_eq!(
        String::from_utf8_lossy(&host.run("systemctl is-active app.service").stdout),
        "inactive\n"
    );
    let journal = host.run_ok("journalctl -u app.service -o cat --no-pager");
    assert!(
        journal.contains("\"stop requested: draining\""),
        "{journal}"
    );
    host.run_ok("test -f /etc/app/base.toml");
    host.run_ok(&format!("{apt} purge app"));
    let left = host.run_ok(
        "for path in /etc/app /usr/bin/app /usr/share/doc/app /lib/systemd/system/app.socket /lib/systemd/system/app.service /var/lib/app /var/lib/private/app /run/app; do test -e $path && echo $path; done; find /etc/systemd -name 'app.*'; getent passwd app; systemctl list-unit-files 'app.*' --no-legend; true",
    );
    assert_eq!(left, "", "left behind by purge");
    assert!(
        !host.run("dpkg -s app").status.success(),
        "dpkg still knows the package"
    );
}

#[test]
fn slow_on_hosts_a_bare_host_gets_the_service_then_upgrades_stops_restarts_and_reboots_under_load()
{
    let Some(tree) = tree_or_skip() else {
        return;
    };
    let scratch = TempDir::new().unwrap();
    let key = ssh_key(scratch.path());
    let (commit_c, archive_c) = release_of(scratch.path(), "c", &[]);
    let (commit_d, archive_d) = release_of(scratch.path(), "d", &[]);
    let mut host = Host::boot(&tree, scratch.path(), "alpha", &key);
    let ssh_config = scratch.path().join("ssh_config");
    fs::write(&ssh_config, host.ssh_config(&key)).unwrap();

    // 1. The first deploy to a bare host installs the units, enables the
    //    socket and starts the service.
    let deployed = deploy(&archive_c, "alpha", &ssh_config);
    let printed = stderr_text(&deployed);
    assert!(deployed.status.success(), "{printed}");
    assert!(
        printed.contains("systemctl enable --now app.socket app.service"),
        "{printed}"
    );
    assert_eq!(
        host.run_ok("systemctl is-active app.socket app.service"),
        "active\nactive\n"
    );
    assert_eq!(host.run_ok("systemctl is-enabled app.socket"), "enabled\n");
    assert!(
        host.run_ok("cat /etc/systemd/system/app.service")
            .contains("ExecStart=/opt/app/current/app --config-dir /opt/app/current/config"),
    );

    // 2. Five upgrades by deploy under load: systemd follows each new
    //    process (MainPID) and no request fails.
    let load = Load::start(&host.network_namespace());
    let mut main_pids = vec![property(&host, "MainPID")];
    for round in 0..5 {
        let (commit, archive) = if round % 2 == 0 {
            (&commit_d, &archive_d)
        } else {
            (&commit_c, &archive_c)
        };
        let served_before = load.served();
        load.phase(&format!("upgrade {round}"));
        let deployed = deploy(archive, "alpha", &ssh_config);
        assert!(deployed.status.success(), "{}", stderr_text(&deployed));
        let main_pid = property(&host, "MainPID");
        assert!(
            !main_pids.contains(&main_pid),
            "MainPID {main_pid} again: {main_pids:?}"
        );
        let version = host.run_ok(&format!("curl -sf http://127.0.0.1:{PORT}/version"));
        assert!(version.contains(commit.as_str()), "{version}");
        let health = host.run_ok(&format!("curl -sf http://127.0.0.1:{PORT}/healthz"));
        assert!(
            health.contains(&format!("\"pid\":{main_pid}")),
            "MainPID {main_pid}: {health}"
        );
        main_pids.push(main_pid);
        assert!(
            load.served() > served_before,
            "no request served during round {round}"
        );
    }

    // 3. systemd supervises the last process as its own child, so a stop
    //    under load drains (it takes the drain delay) and exits 0; the
    //    socket stays, and the next request starts the service again.
    load.phase("stop");
    let took = timed(&host, "systemctl stop app.service");
    assert!(
        took >= DRAIN_DELAY,
        "systemctl stop returned after {took:?}: it killed instead of draining\n{}",
        host.run("journalctl -u app --no-pager -n 30")
            .stdout
            .escape_ascii()
    );
    assert_eq!(property(&host, "ExecMainStatus"), "0");
    // 4. The same for a restart, once the socket has started the service
    //    again and it serves.
    load.phase("started by the socket");
    wait_until_serving_again(&host, &load);
    load.phase("restart");
    let took = timed(&host, "systemctl restart app.service");
    assert!(
        took >= DRAIN_DELAY,
        "systemctl restart returned after {took:?}"
    );
    assert_eq!(property(&host, "ExecMainStatus"), "0");
    let served_before = load.served();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        load.served() > served_before,
        "nothing served after the restart"
    );
    // At least 100,000 requests, each worth a request line to journald.
    let deadline = Instant::now() + Duration::from_secs(120);
    while load.served() < 100_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (served, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{served} served, {failed} failed: {errors:?}");
    assert!(
        served >= 100_000,
        "only {served} requests in the time bound"
    );
    eprintln!("{served} requests served, none failed, through 5 upgrades, a stop and a restart");

    // 6. The journal kept every lifecycle line: prod's request log limit
    //    keeps the service under journald's rate limit.
    let journal = host.run_ok("journalctl -u app.service -o cat --no-pager");
    let count = |needle: &str| journal.lines().filter(|line| line.contains(needle)).count();
    let lifecycle = [
        // The first start, five upgrades, the start the socket made after
        // the stop, the restart.
        ("\"listening\"", 8),
        ("\"upgrade requested\"", 5),
        ("\"upgrade complete", 5),
        ("\"stop requested: draining\"", 2),
        // Every process but the one still running.
        ("\"stopped\"", 7),
    ];
    for (line, expected) in lifecycle {
        assert_eq!(
            count(line),
            expected,
            "{line} in the journal; suppressed: {:?}",
            journal
                .lines()
                .filter(|line| line.contains("Suppressed"))
                .collect::<Vec<_>>()
        );
    }
    let metrics = host.run_ok(&format!("curl -sf http://127.0.0.1:{PORT}/metrics"));
    assert!(
        metrics.contains("app_log_request_lines_dropped_total "),
        "{metrics}"
    );

    // 5. A reboot: the socket comes back with the host and starts the
    //    service on the first request, with no deploy and no manual step.
    host.reboot();
    let version = host.run_ok(&format!(
        "curl -sf --max-time 30 http://127.0.0.1:{PORT}/version"
    ));
    assert!(version.contains(commit_d.as_str()), "{version}");
    assert_eq!(host.run_ok("systemctl is-active app.service"), "active\n");

    // 6. A rollback through the real systemctl, after the reboot (a new
    //    boot: the ssh entry names it).
    fs::write(&ssh_config, host.ssh_config(&key)).unwrap();
    let rolled = output(
        xtask(&workspace_root())
            .args([
                "rollback",
                "--host",
                "alpha",
                "--root",
                ROOT,
                "--ssh-config",
            ])
            .arg(&ssh_config),
    );
    assert!(rolled.status.success(), "{}", stderr_text(&rolled));
    assert_eq!(serving(&host), commit_c);

    // 7. A unit edited on the host is refused, naming the fix, and nothing
    //    changes; --replace-units overwrites it.
    host.run_ok(
        "echo '# edited by hand' >> /etc/systemd/system/app.service && systemctl daemon-reload",
    );
    let refused = deploy(&archive_d, "alpha", &ssh_config);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr_text(&refused));
    let line = last_line(&refused);
    assert!(
        line.contains(
            "alpha: /etc/systemd/system/app.service differs from the unit this deploy installs"
        ) && line.contains("--replace-units"),
        "{line}"
    );
    assert_eq!(serving(&host), commit_c);
    let replaced = deploy_to(&archive_d, &["alpha"], &ssh_config, &["--replace-units"]);
    assert!(replaced.status.success(), "{}", stderr_text(&replaced));
    assert!(
        !host
            .run_ok("cat /etc/systemd/system/app.service")
            .contains("edited by hand")
    );
    assert_eq!(serving(&host), commit_d);

    // 8. Units that deploy installed and a newer deploy renders otherwise
    //    (here: as if an older xtask had written another description) are
    //    replaced, and systemd reloads them, without a flag.
    host.run_ok(
        "sed -i 's/^Description=app$/Description=app, older/' /etc/systemd/system/app.service /opt/app/.units/app.service && systemctl daemon-reload",
    );
    let updated = deploy(&archive_c, "alpha", &ssh_config);
    let printed = stderr_text(&updated);
    assert!(updated.status.success(), "{printed}");
    assert!(printed.contains("systemctl daemon-reload"), "{printed}");
    assert_eq!(property(&host, "Description"), "app");
    assert_eq!(serving(&host), commit_c);
}

/// The commit `host` serves, asked on its own loopback.
fn serving(host: &Host) -> String {
    let version = host.run_ok(&format!("curl -sf http://127.0.0.1:{PORT}/version"));
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    version["commit"].as_str().unwrap().to_owned()
}

/// The last line a command printed on stderr.
fn last_line(output: &std::process::Output) -> String {
    stderr_text(output).lines().last().unwrap_or("").to_owned()
}

/// Four hosts: a good release goes out in batches of two behind a canary;
/// a release that answers /version but fails 10% of `/` is stopped on the
/// canary during its soak and no other host is touched; a release that
/// cannot start on the third host is undone on the first two.
#[test]
fn slow_on_hosts_a_fleet_of_four_rolls_out_behind_a_canary_and_halts_on_a_bad_canary_or_host() {
    let Some(tree) = tree_or_skip() else {
        return;
    };
    let scratch = TempDir::new().unwrap();
    let key = ssh_key(scratch.path());
    let names = ["one", "two", "three", "four"];
    let hosts: Vec<Host> = names
        .iter()
        .map(|name| Host::boot(&tree, scratch.path(), name, &key))
        .collect();
    let ssh_config = scratch.path().join("ssh_config");
    let config: String = hosts.iter().map(|host| host.ssh_config(&key)).collect();
    fs::write(&ssh_config, config).unwrap();
    let (first, first_archive) = release_of(scratch.path(), "c", &[]);
    let (good, good_archive) = release_of(scratch.path(), "d", &[]);
    let (_, faulty_archive) = release_of(scratch.path(), "f", &["fault-injection"]);
    let (_, unstartable_archive) = release_of(scratch.path(), "e", &[]);

    // The first release, to every host at once: each gets the units.
    let deployed = deploy_to(&first_archive, &names, &ssh_config, &["--batch", "100%"]);
    assert!(deployed.status.success(), "{}", stderr_text(&deployed));
    for host in &hosts {
        assert_eq!(serving(host), first);
    }

    // 1. A good release in batches of two behind a canary, which serves
    //    real requests during its soak.
    let load = Load::start(&hosts[0].network_namespace());
    let deployed = deploy_to(
        &good_archive,
        &names,
        &ssh_config,
        &["--canary", "3s", "--batch", "2"],
    );
    let (served, failed, errors) = load.finish();
    let printed = stderr_text(&deployed);
    assert!(deployed.status.success(), "{printed}");
    eprintln!("{printed}");
    let order: Vec<&str> = printed
        .lines()
        .filter(|line| line.starts_with("canary ") || line.starts_with("batch "))
        .collect();
    assert_eq!(
        order,
        [
            "canary 1/3: one",
            "batch 2/3: two, three",
            "batch 3/3: four"
        ],
        "{printed}"
    );
    assert!(
        printed.contains("one: canary: watching") && printed.contains("going on"),
        "{printed}"
    );
    // The hosts of a parallel batch print as blocks, one per host.
    let two = printed
        .split_once("── two ──\n")
        .and_then(|(_, rest)| rest.split_once("── three ──\n"))
        .map(|(block, _)| block)
        .unwrap_or_else(|| panic!("no blocks for two and three:\n{printed}"));
    assert!(two.contains("two: 0.1.0-ddddddd serves"), "{two}");
    assert!(
        !two.contains("three"),
        "two's block holds three's lines: {two}"
    );
    assert!(
        printed.find("going on") < printed.find("batch 2/3"),
        "the soak ends before the next batch"
    );
    assert_eq!(failed, 0, "{served} served: {errors:?}");
    for host in &hosts {
        assert_eq!(serving(host), good);
    }
    let logged = hosts[3].run_ok("tail -n 1 /opt/app/deploys.log");
    assert!(logged.contains("\"rollout\":"), "{logged}");

    // 2. A release that fails 10% of `/` is stopped on the canary.
    let logs_before: Vec<String> = hosts[1..]
        .iter()
        .map(|host| host.run_ok("cat /opt/app/deploys.log"))
        .collect();
    let load = Load::start(&hosts[0].network_namespace());
    let refused = deploy_to(
        &faulty_archive,
        &names,
        &ssh_config,
        &["--canary", "10s", "--batch", "2"],
    );
    load.finish();
    assert_eq!(refused.status.code(), Some(1), "{}", stderr_text(&refused));
    let line = last_line(&refused);
    eprintln!("{line}");
    assert!(
        line.starts_with("error: canary one: the canary answered")
            && line.contains("5xx")
            && line.contains("one rolled back to 0.1.0-ddddddd")
            && line.ends_with("no other host was touched"),
        "{line}"
    );
    for host in &hosts {
        assert_eq!(serving(host), good, "{}", host.name);
    }
    let logs_after: Vec<String> = hosts[1..]
        .iter()
        .map(|host| host.run_ok("cat /opt/app/deploys.log"))
        .collect();
    assert_eq!(
        logs_before, logs_after,
        "a host behind the canary was touched"
    );

    // 3. A release the third host cannot start (the service's user is at
    //    its process limit, so no new process can be made): the rollout
    //    stops there and undoes hosts one and two.
    hosts[2].run_ok("prlimit --pid $(systemctl show -p MainPID --value app.service) --nproc=1:1");
    let refused = deploy_to(
        &unstartable_archive,
        &names,
        &ssh_config,
        &["--timeout", "5s"],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", stderr_text(&refused));
    let line = last_line(&refused);
    eprintln!("{line}");
    assert!(
        line.contains("to three failed at prove")
            && line.contains("one rolled back to 0.1.0-ddddddd")
            && line.contains("two rolled back to 0.1.0-ddddddd"),
        "{line}"
    );
    for host in &hosts {
        assert_eq!(serving(host), good, "{}", host.name);
    }
    assert!(
        !hosts[3]
            .run_ok("cat /opt/app/deploys.log")
            .contains("eeeeeee"),
        "the fourth host was touched"
    );
}

/// Where the kill table kills a deploy: the step, the line the deploy
/// prints on reaching it (it prints each command before running it), how
/// long after that line the kill comes, and whether the host is rebooted
/// (halted as by its power button, booted again) before the next deploy.
const KILL_POINTS: [(&str, &str, u64, bool); 7] = [
    ("before the upload", "mkdir -p /opt/app/releases", 0, false),
    ("during the upload", "$ scp", 0, false),
    ("after the unpack", "sync -f", 0, false),
    ("after the switch", "systemctl reload app", 0, false),
    ("during activation", "systemctl reload app", 50, false),
    ("during the proof", "to serve commit", 0, false),
    (
        "during the proof, then a reboot",
        "to serve commit",
        0,
        true,
    ),
];

/// Runs `cargo xtask deploy` and, when it prints a line containing
/// `trigger`, waits `delay` and then SIGKILLs its whole process group (ssh
/// and scp with it), or with `only_scp` only its scp (a connection cut
/// mid-transfer). Returns what it printed and how it ended.
fn deploy_killed_at(
    archive: &Path,
    ssh_config: &Path,
    trigger: &str,
    delay: Duration,
    only_scp: bool,
) -> (String, std::process::ExitStatus) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut command = xtask(&workspace_root());
    command
        .arg("deploy")
        .arg("--archive")
        .arg(archive)
        .args(["--host", "one", "--root", ROOT, "--ssh-config"])
        .arg(ssh_config)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .process_group(0);
    let mut child = command.spawn().unwrap();
    let pid = child.id() as i32;
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut printed = String::new();
    let mut killed = false;
    for line in stderr.lines() {
        let line = line.unwrap_or_default();
        printed.push_str(&line);
        printed.push('\n');
        if !killed && line.contains(trigger) {
            killed = true;
            std::thread::sleep(delay);
            if only_scp {
                stdout_of(std::process::Command::new("pkill").args([
                    "-KILL",
                    "-P",
                    &pid.to_string(),
                    "scp",
                ]));
            } else {
                // SAFETY: kill has no memory effects; the group is the
                // deploy's, made for it above.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(killed, "the deploy never printed {trigger:?}:\n{printed}");
    (printed, status)
}

/// The kill table: a deploy killed at each step leaves no lock behind and
/// a host serving a release that was proven; a reboot after a kill between
/// switch and proof boots the last proven release; and the next plain
/// deploy succeeds with no step by hand. Then a connection cut during the
/// upload and a full disk: each an error naming the host, nothing
/// switched, no lock left.
#[test]
fn slow_on_hosts_a_deploy_killed_at_any_step_leaves_a_serving_host_and_no_step_by_hand() {
    let Some(tree) = tree_or_skip() else {
        return;
    };
    let scratch = TempDir::new().unwrap();
    let key = ssh_key(scratch.path());
    let mut host = Host::boot(&tree, scratch.path(), "one", &key);
    let ssh_config = scratch.path().join("ssh_config");
    fs::write(&ssh_config, host.ssh_config(&key)).unwrap();
    let (old, old_archive) = release_of(scratch.path(), "c", &[]);
    let (new, new_archive) = release_of(scratch.path(), "d", &[]);
    let deployed = deploy(&old_archive, "one", &ssh_config);
    assert!(deployed.status.success(), "{}", stderr_text(&deployed));

    let mut table = vec![
        "| killed | serving after | current after | lock gone after | the next deploy printed |"
            .to_owned(),
        "|---|---|---|---|---|".to_owned(),
    ];
    for (step, trigger, delay, reboot) in KILL_POINTS {
        let (printed, status) = deploy_killed_at(
            &new_archive,
            &ssh_config,
            trigger,
            Duration::from_millis(delay),
            false,
        );
        assert!(
            !status.success(),
            "{step}: the deploy was not killed\n{printed}"
        );
        // The lock dies with the deploy: its holder on the host sees the
        // connection end.
        let lock_gone_after = host.run_ok(
            "start=$(date +%s%N); until flock -n /opt/app/.deploy-lock true; do \
               [ $(( $(date +%s%N) - start )) -gt 30000000000 ] && echo never && exit; sleep 0.05; done; \
             echo \"$(( ($(date +%s%N) - start) / 1000000 )) ms\"",
        );
        let lock_gone_after = lock_gone_after.trim().to_owned();
        assert_ne!(
            lock_gone_after, "never",
            "{step}: the lock outlived the deploy by 30 s"
        );
        if reboot {
            // Killed between switch and proof: the new release was never
            // proven, so the boot check goes back to the old one.
            assert_eq!(
                host.run_ok("readlink /opt/app/current /opt/app/current.proven"),
                "releases/0.1.0-ddddddd\nreleases/0.1.0-ccccccc\n",
                "{step}"
            );
            host.reboot();
            fs::write(&ssh_config, host.ssh_config(&key)).unwrap();
            let recovered = host.run_ok("journalctl -b -u app-recover.service -o cat");
            assert!(
                recovered.contains(
                    "switched current back from 0.1.0-ddddddd, never proven, to 0.1.0-ccccccc"
                ),
                "{step}: {recovered}\n{}",
                host.console()
            );
            let last_entry = host.run_ok("tail -n 1 /opt/app/deploys.log");
            let last_entry: serde_json::Value = serde_json::from_str(&last_entry)
                .unwrap_or_else(|err| panic!("{step}: {err}: {last_entry}"));
            assert_eq!(
                (
                    &last_entry["action"],
                    &last_entry["from"],
                    &last_entry["to"],
                    &last_entry["step"]
                ),
                (
                    &serde_json::json!("recover"),
                    &serde_json::json!("0.1.0-ddddddd"),
                    &serde_json::json!("0.1.0-ccccccc"),
                    &serde_json::json!("boot")
                ),
                "{step}"
            );
        }
        // Ready within a bound: a deploy killed during activation can leave
        // the reload it started finishing (the old process draining answers
        // 503 until the new one holds every connection).
        assert_eq!(
            host.run_ok(&format!(
                "for attempt in $(seq 50); do code=$(curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{PORT}/readyz); [ \"$code\" = 200 ] && break; sleep 0.2; done; echo \"$code\""
            ))
            .trim(),
            "200",
            "{step}: not ready within 10 s"
        );
        // Whatever the step, the host serves one of the two releases, both
        // of which were proven (the new one by the deploys before); after a
        // reboot, the old one.
        let serving_after = serving(&host);
        assert!(
            serving_after == old || serving_after == new && !reboot,
            "{step}: serves {serving_after}"
        );
        let current = host.run_ok("readlink /opt/app/current").trim().to_owned();
        // Recovery: the next plain deploy, with nothing done by hand.
        let next = deploy(&new_archive, "one", &ssh_config);
        let next_printed = stderr_text(&next);
        assert!(next.status.success(), "{step}: {next_printed}");
        let said = if next_printed.contains("was switched to and never proven") {
            "switched back to the proven release, then deployed"
        } else {
            "deployed"
        };
        assert_eq!(serving(&host), new, "{step}");
        table.push(format!(
            "| {step} | {} | {current} | {lock_gone_after} | {said} |",
            &serving_after[..7],
        ));
        // Back to the old release for the next row, without the new one.
        let back = deploy(&old_archive, "one", &ssh_config);
        assert!(back.status.success(), "{}", stderr_text(&back));
        assert_eq!(
            host.run_ok("ls -A /opt/app/releases /opt/app | grep -c '^\\.\\(partial\\|trash\\|current\\)-' || true"),
            "0\n",
            "{step}: a killed deploy's leftovers are still there"
        );
        host.run_ok("rm -rf /opt/app/releases/0.1.0-ddddddd");
    }

    // A connection cut during the upload: an error naming the host,
    // nothing switched, the lock released.
    let (printed, status) =
        deploy_killed_at(&new_archive, &ssh_config, "$ scp", Duration::ZERO, true);
    assert_eq!(status.code(), Some(1), "{printed}");
    let line = printed.lines().last().unwrap_or("");
    assert!(line.contains("to one failed at upload"), "{line}");
    assert_eq!(serving(&host), old);
    assert!(
        host.run("flock -n /opt/app/.deploy-lock true")
            .status
            .success()
    );
    table.push(format!(
        "| scp cut during the upload | {} | unchanged | no | `{line}` |",
        &old[..7]
    ));

    // A full disk: refused before the copy, naming the host and the space.
    host.run_ok("mkdir -p /opt/full && mount -t tmpfs -o size=4m tmpfs /opt/full");
    let full = output(
        xtask(&workspace_root())
            .arg("deploy")
            .arg("--archive")
            .arg(&new_archive)
            .args([
                "--host",
                "one",
                "--root",
                "/opt/full",
                "--activate",
                "true",
                "--ssh-config",
            ])
            .arg(&ssh_config),
    );
    let line = last_line(&full);
    assert_eq!(full.status.code(), Some(1), "{}", stderr_text(&full));
    assert!(
        line.contains("one: /opt/full has") && line.contains("MB free and the release needs"),
        "{line}"
    );
    assert_eq!(
        host.run_ok("ls -A /opt/full/releases; test ! -e /opt/full/current && echo none"),
        "none\n"
    );
    table.push(format!(
        "| disk full | {} | unchanged | no | `{line}` |",
        &old[..7]
    ));
    eprintln!("{}", table.join("\n"));
}
