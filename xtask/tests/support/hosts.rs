//! Real hosts for the slow deploy tests: Debian 12 with systemd 252 as PID
//! 1, booted by `systemd-nspawn -b` from the tree `cargo xtask setup --only
//! hosts` builds once per machine. Each host boots through an overlay of
//! its own (the tree never changes; a reboot keeps what the host wrote),
//! in a network namespace of its own (its ports meet neither this
//! machine's nor another host's), with sshd on its own loopback, reached
//! through a `ProxyCommand` that enters that namespace, and a throwaway
//! key. What `deploy` sees is a remote host like any other.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{skip, stdout_of, tool_or_skip};

/// How long a boot may take before the test gives up.
const BOOT_BOUND: Duration = Duration::from_secs(90);

/// The tree to boot, or `None` when this test has nothing more to do here:
/// a skip (a failure under `CI=true`) when this machine cannot boot hosts
/// (no root, no systemd-nspawn, no tree), or, for a user with a
/// password-less sudo (a CI runner), after the same test ran as root
/// through sudo and passed.
pub fn tree_or_skip() -> Option<PathBuf> {
    let in_ci = std::env::var("CI").is_ok_and(|value| value == "true");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if sudo_works() {
            run_this_test_as_root();
            return None;
        }
        let reason = "booting real systemd hosts needs root (systemd-nspawn, mount)";
        assert!(!in_ci, "{reason}: run the tests as root under CI=true");
        skip(reason, "run the tests as root");
        return None;
    }
    for tool in ["systemd-nspawn", "nsenter", "ssh", "ssh-keygen"] {
        tool_or_skip(tool, "cargo xtask setup")?;
    }
    let tree = super::tools::host_tree()?;
    if !tree.join(".xtask-host-tree").is_file() {
        let reason = format!("the host tree {} is not built", tree.display());
        assert!(!in_ci, "{reason}: `cargo xtask setup` builds it");
        skip(&reason, "cargo xtask setup --only hosts");
        return None;
    }
    Some(tree)
}

fn sudo_works() -> bool {
    Command::new("sudo")
        .args(["-n", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs the calling test again, alone, in this test binary as root (its
/// environment kept), and fails if it fails there.
fn run_this_test_as_root() {
    let test = std::thread::current()
        .name()
        .expect("a test thread is named after its test")
        .to_owned();
    let binary = std::env::current_exe().unwrap();
    // sudo resets PATH (secure_path), which the test needs: cargo, ssh.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut path_setting = std::ffi::OsString::from("PATH=");
    path_setting.push(path);
    let status = Command::new("sudo")
        .args(["-n", "--preserve-env", "env"])
        .arg(path_setting)
        .arg(&binary)
        .args(["--exact", &test, "--nocapture"])
        .status()
        .unwrap();
    assert!(status.success(), "{test} failed as root (through sudo)");
}

/// A throwaway ssh key pair in `dir`; returns the private key's path.
pub fn ssh_key(dir: &Path) -> PathBuf {
    let key = dir.join("id_ed25519");
    stdout_of(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "host-test", "-f"])
            .arg(&key),
    );
    key
}

/// One booted host; halted and unmounted when dropped.
pub struct Host {
    pub name: String,
    dir: PathBuf,
    merged: PathBuf,
    nspawn: Option<Child>,
    /// The host's PID 1, as this machine sees it.
    leader: u32,
}

impl Host {
    /// Boots `tree` as `name`, its writes kept under `scratch/<name>`, with
    /// `key` (a private key; its `.pub` beside it) authorized for root.
    pub fn boot(tree: &Path, scratch: &Path, name: &str, key: &Path) -> Host {
        let dir = scratch.join(name);
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for folder in [&upper, &work, &merged] {
            fs::create_dir_all(folder).unwrap();
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            tree.display(),
            upper.display(),
            work.display()
        );
        stdout_of(
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", &options])
                .arg(&merged),
        );
        let ssh = merged.join("root/.ssh");
        fs::create_dir_all(&ssh).unwrap();
        fs::copy(key.with_extension("pub"), ssh.join("authorized_keys")).unwrap();
        let mut host = Host {
            name: name.to_owned(),
            dir,
            merged,
            nspawn: None,
            leader: 0,
        };
        host.start();
        host
    }

    /// Boots the host and waits until systemd says it is running.
    fn start(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("console.log"))
            .unwrap();
        let cgroups = self.cgroups();
        for cgroup in &cgroups {
            fs::create_dir_all(cgroup).unwrap();
        }
        let procs: Vec<std::ffi::CString> = cgroups
            .iter()
            .map(|cgroup| {
                std::ffi::CString::new(cgroup.join("cgroup.procs").to_str().unwrap()).unwrap()
            })
            .collect();
        let mut nspawn = Command::new("systemd-nspawn");
        // SAFETY: open, write and close are async-signal-safe; the paths
        // were made before the fork. Moving nspawn into a cgroup of its own
        // keeps the `payload` and `supervisor` groups it makes (with
        // --keep-unit, under its own) apart from another host's.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut nspawn, move || {
                for path in &procs {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                    if fd == -1 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
                Ok(())
            });
        }
        let nspawn = nspawn
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--console=passive",
            ])
            .args(["--private-network", "--machine", &self.name, "--directory"])
            .arg(&self.merged)
            // cgroup v2 inside, as current distributions run it.
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let nspawn_pid = nspawn.id();
        self.nspawn = Some(nspawn);
        let deadline = Instant::now() + BOOT_BOUND;
        // nspawn's first child may be a short-lived helper: the host's PID
        // 1 is the child that runs systemd.
        self.leader = loop {
            let children =
                fs::read_to_string(format!("/proc/{nspawn_pid}/task/{nspawn_pid}/children"))
                    .unwrap_or_default();
            let init = children.split_whitespace().find(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|comm| comm.trim() == "systemd")
            });
            if let Some(pid) = init {
                break pid.parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "{}: no systemd under nspawn (children: {children:?})\n{}",
                self.name,
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        loop {
            let state = self.run("systemctl is-system-running --wait");
            let said = String::from_utf8_lossy(&state.stdout).trim().to_owned();
            if said == "running" {
                break;
            }
            assert!(
                Instant::now() < deadline && said != "degraded",
                "{} did not boot: {said:?} {}\n{}\n{}",
                self.name,
                String::from_utf8_lossy(&state.stderr),
                String::from_utf8_lossy(&self.run("systemctl --failed --no-pager").stdout),
                self.console()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `script` with `sh` inside the host, as on its console.
    pub fn run(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args([
                "--target",
                &self.leader.to_string(),
                "--all",
                "sh",
                "-c",
                script,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `run`, which must succeed; returns its stdout.
    pub fn run_ok(&self, script: &str) -> String {
        let output = self.run(script);
        assert!(
            output.status.success(),
            "{}: `{script}` failed: {}{}",
            self.name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The host's root folder as this machine sees it, to put files there.
    pub fn root(&self) -> &Path {
        &self.merged
    }

    /// The host's network namespace, for a client that must connect to its
    /// loopback (`setns`).
    pub fn network_namespace(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.leader))
    }

    /// The `ssh_config` entry that reaches this host as `root@<name>` with
    /// `key`. It names the current boot: write it again after a reboot.
    pub fn ssh_config(&self, key: &Path) -> String {
        format!(
            "Host {name}\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n  \
             StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  \
             ProxyCommand nsenter --target {leader} --net bash -c 'exec 3<>/dev/tcp/127.0.0.1/22; cat <&3 & cat >&3'\n",
            name = self.name,
            key = key.display(),
            leader = self.leader,
        )
    }

    /// Halts the host as a power button would (SIGTERM to nspawn: systemd
    /// stops every unit, then powers off) and waits for it.
    pub fn halt(&mut self) {
        let Some(mut nspawn) = self.nspawn.take() else {
            return;
        };
        // SAFETY: kill has no memory effects; nspawn is this test's child.
        unsafe { libc::kill(nspawn.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + BOOT_BOUND;
        while nspawn.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = nspawn.kill();
                let _ = nspawn.wait();
                panic!("{} did not halt within {BOOT_BOUND:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Halts the host and boots it again from what it wrote.
    pub fn reboot(&mut self) {
        self.halt();
        self.start();
    }

    /// The cgroups nspawn runs in: one per mounted hierarchy that systemd
    /// uses (the named v1 one, the unified one), named after this host.
    fn cgroups(&self) -> Vec<PathBuf> {
        let name = format!("xtask-host-{}-{}", self.name, std::process::id());
        [
            "/sys/fs/cgroup/systemd",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup",
        ]
        .iter()
        .map(Path::new)
        .filter(|hierarchy| hierarchy.join("cgroup.procs").is_file())
        // A cgroup v2 root holds cgroup.controllers; the tmpfs that holds
        // the v1 hierarchies holds neither file.
        .map(|hierarchy| hierarchy.join(&name))
        .collect()
    }

    /// What systemd and nspawn printed on the console.
    pub fn console(&self) -> String {
        fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut nspawn) = self.nspawn.take() {
            // SAFETY: kill has no memory effects. SIGKILL to the host's PID 1
            // ends every process of its PID namespace; the pid is not reused
            // while nspawn, its parent, has not reaped it.
            unsafe {
                libc::kill(self.leader as i32, libc::SIGKILL);
            }
            let _ = nspawn.kill();
            let _ = nspawn.wait();
        }
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(&self.merged)
            .status();
        // Empty once the host's processes are gone, which takes a moment
        // after SIGKILL; deepest first.
        let deadline = Instant::now() + Duration::from_secs(5);
        for cgroup in self.cgroups() {
            while cgroup.exists() && Instant::now() < deadline {
                let _ = Command::new("find")
                    .arg(&cgroup)
                    .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                    .stderr(Stdio::null())
                    .status();
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
