//! Helpers shared by the integration tests: running the real xtask binary,
//! temporary copies of this workspace, git repositories with fixed dates, and
//! external tools that are a skip locally but a failure under `CI=true`.

#![allow(dead_code)] // Each test binary uses its own subset.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub use tempfile::TempDir;

pub mod hosts;
pub mod releases;
#[path = "../../../app/tests/support/tools.rs"]
mod tools;
#[allow(unused_imports)] // Used by some of the test binaries that include this module.
pub use tools::{python_venv, skip, tool_or_skip, which};

/// The root of the real workspace these tests belong to.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// Variables every `xtask` command of this test process gets: the slow
/// release test signs everything it builds, so every run that rewrites the
/// dist folder gets the signing key.
static XTASK_ENV: std::sync::Mutex<Vec<(String, std::ffi::OsString)>> =
    std::sync::Mutex::new(Vec::new());

pub fn add_xtask_env(name: &str, value: impl Into<std::ffi::OsString>) {
    XTASK_ENV
        .lock()
        .unwrap()
        .push((name.to_owned(), value.into()));
}

/// The xtask binary under test, run in `dir` with a git configuration that
/// ignores the user's own settings.
pub fn xtask(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command.current_dir(dir).env("CARGO", env!("CARGO"));
    for (name, value) in XTASK_ENV.lock().unwrap().iter() {
        command.env(name, value);
    }
    isolate_git(&mut command);
    command
}

pub fn isolate_git(command: &mut Command) {
    command
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
}

/// Runs a command to completion and returns what it printed.
pub fn output(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|err| panic!("start {command:?}: {err}"))
}

/// Runs a command that must succeed and returns its standard output.
pub fn stdout_of(command: &mut Command) -> String {
    let output = output(command);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("output is UTF-8")
}

pub fn stderr_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Copies the workspace's sources (not `target/`, not `.git/`) into a new
/// temporary directory, as a source tarball would hold them.
pub fn copy_workspace() -> TempDir {
    let copy = tempfile::Builder::new()
        .prefix("xtask-test-")
        .tempdir()
        .expect("create a temporary directory");
    copy_tree(&workspace_root(), copy.path());
    copy
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        let file_type = entry.file_type().unwrap();
        if file_type.is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else if file_type.is_file() {
            fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// The committer date every test commit carries, and the same in seconds.
pub const COMMIT_TIME: &str = "2024-02-03T04:05:06+01:00";
pub const COMMIT_EPOCH: u64 = 1_706_929_506;

/// `git` in `dir` with a fixed identity and fixed dates.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_AUTHOR_DATE", COMMIT_TIME)
        .env("GIT_COMMITTER_DATE", COMMIT_TIME);
    isolate_git(&mut command);
    stdout_of(&mut command).trim().to_owned()
}

/// A copy of the workspace made into a repository with one commit on `main`.
pub fn repository() -> TempDir {
    let repo = copy_workspace();
    git(repo.path(), &["init", "--quiet", "--initial-branch=main"]);
    git(repo.path(), &["add", "--all"]);
    git(repo.path(), &["commit", "--quiet", "--message", "first"]);
    repo
}

/// The target folder that the debug builds of workspace copies share (the
/// dev loop's, the hostile build script's, the stamp's), kept between
/// runs: registry crates are compiled once; each copy's own crates are
/// built again (their paths differ). The tests that use it are `slow_` ones, which take turns
/// (`.config/nextest.toml`), so one never replaces the other's binary.
pub fn copies_target_dir() -> PathBuf {
    workspace_root().join("target/test-builds/copies")
}

/// Builds the app (debug, fast) stamped with `commit`, in the target
/// folder the tests that need such builds share (`target/test-builds/app`,
/// kept between runs: the dependencies are compiled once, and each commit
/// recompiles only the app); returns the binary's path.
pub fn app_built_at(commit: &str) -> PathBuf {
    app_built_with(commit, &[])
}

/// `app_built_at`, with cargo features of the app (`fault-injection`). The
/// binary is copied out under a lock, to a path of its own: tests that
/// build other commits into the same folder at the same time would
/// otherwise replace `debug/app` before it is read.
pub fn app_built_with(commit: &str, features: &[&str]) -> PathBuf {
    use std::os::fd::AsRawFd;
    // A test run as root through sudo builds apart: files root writes into
    // the user's folder would stop the user's next build there.
    let folder = if std::env::var_os("SUDO_UID").is_some() {
        "app-sudo"
    } else {
        "app"
    };
    let target_dir = workspace_root().join("target/test-builds").join(folder);
    fs::create_dir_all(&target_dir).unwrap();
    let lock = fs::File::create(target_dir.join(".build-lock")).unwrap();
    // SAFETY: flock on a descriptor this function owns; released when
    // `lock` is dropped.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--package", "app", "--bin", "app"])
        .args(["--features", &features.join(",")])
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("STAMP_COMMIT", commit)
        .env("STAMP_COMMIT_SHORT", &commit[..7])
        .env("STAMP_DESCRIBE", &commit[..7]);
    stdout_of(&mut build);
    let kept = target_dir
        .join("built")
        .join(format!("{}{}", &commit[..7], features.join("+")));
    fs::create_dir_all(&kept).unwrap();
    let binary = kept.join("app");
    let partial = kept.join("app.partial");
    fs::copy(target_dir.join("debug/app"), &partial).unwrap();
    fs::rename(&partial, &binary).unwrap();
    binary
}

/// A `dist-manifest.json` for version 0.1.0 of `app` built from `commit`,
/// with no artifacts, as the deploy and k8s tests start from.
pub fn manifest_at(commit: &str) -> serde_json::Value {
    serde_json::json!({
        "format_version": 1, "name": "app", "version": "0.1.0",
        "stamp": {"describe": &commit[..7], "commit": commit, "commit_short": &commit[..7],
                  "branch": "main", "dirty": false, "commit_time": COMMIT_TIME,
                  "source_date_epoch": COMMIT_EPOCH, "rustc": "rustc"},
        "artifacts": [],
    })
}

/// The app binary serving on a free loopback port (read from its
/// "listening" log line), killed when dropped.
pub struct RunningApp {
    child: std::process::Child,
    port: u16,
}

impl RunningApp {
    /// Starts `command` (the binary, with any environment) with `config`.
    // Dropping the result kills and waits for the child.
    #[allow(clippy::zombie_processes)]
    pub fn start(mut command: Command, config: &Path) -> RunningApp {
        use std::io::Read;
        let mut child = command
            .args(["--listen", "127.0.0.1:0", "--config-dir"])
            .arg(config)
            .env("APP__LOG__FORMAT", "json")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let started = Instant::now();
        let mut seen = String::new();
        let mut buffer = [0u8; 4096];
        loop {
            let read = stdout.read(&mut buffer).unwrap_or(0);
            if read == 0 || started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the app exited or never logged its listening line: {seen}");
            }
            seen.push_str(&String::from_utf8_lossy(&buffer[..read]));
            let port = seen.lines().find_map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).ok()?;
                let address = entry["addr"].as_str()?;
                address.rsplit_once(':')?.1.parse::<u16>().ok()
            });
            if let Some(port) = port {
                // Keep draining its logs so that it never blocks on them.
                std::thread::spawn(move || while stdout.read(&mut buffer).is_ok_and(|n| n > 0) {});
                return RunningApp { child, port };
            }
        }
    }

    /// The raw response to `GET path`.
    pub fn get(&self, path: &str) -> String {
        self.exchange(&format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        ))
    }

    /// The raw response to a `POST` of a JSON body.
    pub fn post(&self, path: &str, json: &str) -> String {
        self.exchange(&format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
            json.len()
        ))
    }

    fn exchange(&self, request: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A deploy lock held as another deploy would hold it: an flock on the
/// root's `.deploy-lock`, with `owner` (JSON) written into the file. It is
/// let go when this value is dropped.
pub struct HeldLock(std::process::Child);

impl HeldLock {
    pub fn hold(root: &Path, owner: &str) -> HeldLock {
        use std::io::BufRead;
        fs::create_dir_all(root).unwrap();
        let mut child = Command::new("sh")
            .args([
                "-c",
                "exec 9>>\"$1\" && flock 9 && printf '%s\\n' \"$2\" > \"$1\" && echo held && exec cat >/dev/null",
                "hold",
            ])
            .arg(root.join(".deploy-lock"))
            .arg(owner)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start sh");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "held\n", "the test could not take the lock");
        HeldLock(child)
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Whether nothing holds the deploy lock of `root` within `bound`.
pub fn lock_is_free_within(root: &Path, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        let free = Command::new("flock")
            .args(["-n"])
            .arg(root.join(".deploy-lock"))
            .arg("true")
            .status()
            .is_ok_and(|status| status.success());
        if free || Instant::now() >= deadline {
            return free;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
