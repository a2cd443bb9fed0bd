//! `cargo xtask run` and `cargo xtask dev`: the service in the foreground
//! with the dev configuration, and the edit loop around it.
//!
//! `dev` watches the shipped package's folder, the workspace manifests and
//! `config/`; on a change it rebuilds and upgrades the running process in
//! place with SIGHUP, the service's own zero-downtime upgrade: the new
//! binary gets the listening socket, the old one drains. A build that fails
//! or a config that does not load leaves the old process serving.
//!
//! The watcher polls (`--poll`, 200 ms by default): the watched tree is a
//! few dozen files, whose `stat` every 200 ms costs far less than a
//! notification crate would cost every user in compile time, and polling
//! works where inotify does not (network and container file systems).
//!
//! The xtask makes itself a child subreaper: after an upgrade the new
//! process, a child of the old one, becomes the xtask's child when the old
//! one exits, so the xtask can wait for it and none is left behind. The
//! service runs in a process group of its own, so a Ctrl-C in the terminal
//! reaches the xtask alone, which passes one SIGINT on: the service drains
//! once, instead of taking a second signal as "stop at once".

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::develop::bench::serving_pid;
use crate::exec::Ctx;

#[derive(clap::Args, Debug)]
pub struct Run {
    /// Build with the release profile (what ships) instead of debug
    #[arg(long)]
    release: bool,
    /// Arguments for the service, after `--` (e.g. `-- --listen 127.0.0.1:9000`)
    #[arg(last = true, value_name = "SERVICE_ARGS")]
    args: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct Dev {
    /// Build with the release profile (what ships) instead of debug
    #[arg(long)]
    release: bool,
    /// How often the sources are looked at for changes
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = crate::util::parse_duration)]
    poll: Duration,
    /// Arguments for the service, after `--` (e.g. `-- --listen 127.0.0.1:9000`)
    #[arg(last = true, value_name = "SERVICE_ARGS")]
    args: Vec<String>,
}

impl Run {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let service = Service::new(ctx, self.release, self.args);
        service.build(ctx)?;
        if ctx.dry_run {
            return service.show_start(ctx);
        }
        let mut running = service.start(ctx)?;
        loop {
            if let Some(outcome) = running.step()? {
                return outcome;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Dev {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let service = Service::new(ctx, self.release, self.args);
        let watched = Watched::new(ctx);
        let mut seen = watched.scan();
        service.build(ctx)?;
        if ctx.dry_run {
            service.show_start(ctx)?;
            eprintln!(
                "(dry run: would watch {} and upgrade the service on each change)",
                watched.describe(ctx)
            );
            return Ok(());
        }
        let mut running = Some(service.start(ctx)?);
        println!(
            "watching {} for changes (every {} ms); Ctrl-C stops",
            watched.describe(ctx),
            self.poll.as_millis()
        );
        loop {
            if let Some(live) = running.as_mut()
                && let Some(outcome) = live.step()?
            {
                if stop_requested() {
                    return outcome;
                }
                if let Err(err) = outcome {
                    println!("the service stopped: {err:#}; save a fix to start it again");
                }
                running = None;
            }
            if running.is_none() && stop_requested() {
                return Ok(());
            }
            std::thread::sleep(self.poll);
            let now = watched.scan();
            if now == seen {
                continue;
            }
            // Build until the tree holds still: changes made during a build
            // are taken by one more build, not queued one by one.
            let started = Instant::now();
            let mut target = now;
            let built = loop {
                let built = service.build(ctx);
                let after = watched.scan();
                if after == target {
                    break built;
                }
                target = after;
            };
            let changed = changed_files(&seen, &target, &ctx.project.root);
            seen = target;
            let build_time = started.elapsed();
            if built.is_err() {
                println!(
                    "build failed ({}); {}",
                    changed,
                    match &running {
                        Some(live) =>
                            format!("still serving the previous build (pid {})", live.pid),
                        None => "nothing is serving".to_owned(),
                    }
                );
                continue;
            }
            if let Err(err) = service.config("check") {
                println!("{err:#}; not applied, still serving the previous settings");
                continue;
            }
            match running.as_mut() {
                Some(live) => match live.upgrade() {
                    Ok((pid, took)) => println!(
                        "==> upgraded: {changed}; built in {:.1} s, upgraded in {:.2} s; pid {pid}, commit {}",
                        build_time.as_secs_f64(),
                        took.as_secs_f64(),
                        live.commit().unwrap_or_else(|_| "unknown".to_owned())
                    ),
                    Err(err) => {
                        println!("upgrade failed: {err:#}; the previous process keeps serving")
                    }
                },
                None => running = Some(service.start(ctx)?),
            }
        }
    }
}

/// What to build and how to start it.
struct Service {
    release: bool,
    args: Vec<String>,
    binary: PathBuf,
    config_dir: PathBuf,
}

impl Service {
    /// Also prepares this process to supervise the service, once: stop
    /// signals are counted, and orphaned successors are adopted.
    fn new(ctx: &Ctx, release: bool, args: Vec<String>) -> Service {
        catch_stop_signals();
        become_subreaper();
        let profile = if release { "release" } else { "debug" };
        Service {
            release,
            args,
            binary: ctx
                .project
                .target_dir
                .join(profile)
                .join(&ctx.project.settings.binary),
            config_dir: ctx.project.root.join("config"),
        }
    }

    /// `cargo build` of the service, stamped like every build; the
    /// compiler's messages go to the terminal.
    fn build(&self, ctx: &Ctx) -> Result<()> {
        let cargo = ctx.cargo_path();
        let binary = &ctx.project.settings.binary;
        let release = self.release.then_some("--release");
        let build = cmd!(ctx.sh, "{cargo} build --bin {binary} {release...}");
        ctx.run(ctx.stamped(build)?)
            .with_context(|| format!("build {binary}"))
    }

    /// The service's own command line: the config folder, then the user's
    /// arguments; `APP_ENV=dev` unless the environment names another.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--config-dir").arg(&self.config_dir);
        if std::env::var_os("APP_ENV").is_none() {
            command.env("APP_ENV", "dev");
        }
        command
    }

    /// `config <what>` (check or show) of the built binary, with the
    /// user's `--listen`: what it printed, or its last line as the error.
    fn config(&self, what: &str) -> Result<String> {
        let output = self
            .command()
            .args(listen_override(&self.args))
            .args(["config", what])
            .output()
            .with_context(|| format!("run {} config {what}", self.binary.display()))?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stderr);
            let last = said.lines().last().unwrap_or("").trim();
            bail!(
                "the configuration does not load: {}",
                last.strip_prefix("error: ").unwrap_or(last)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Where the service listens, from its own `config show` (loopback for
    /// an address that means every interface).
    fn address(&self) -> Result<SocketAddr> {
        let shown: toml::Table =
            toml::from_str(&self.config("show")?).context("parse the service's `config show`")?;
        let listen = shown
            .get("server")
            .and_then(|server| server.get("listen"))
            .and_then(|listen| listen.as_str())
            .context("`config show` printed no server.listen")?;
        let mut address: SocketAddr = listen
            .parse()
            .with_context(|| format!("server.listen {listen:?}"))?;
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Ok(address)
    }

    /// What `start` would run, for `--dry-run`.
    fn show_start(&self, ctx: &Ctx) -> Result<()> {
        let mut command = self.command();
        command.args(&self.args);
        eprintln!("$ {}", ctx.display(&command, true));
        Ok(())
    }

    fn start(&self, ctx: &Ctx) -> Result<Running> {
        let address = self.address()?;
        let mut command = self.command();
        command
            .args(&self.args)
            .process_group(0)
            .stdin(Stdio::null());
        eprintln!("$ {}", ctx.display(&command, true));
        let child = command
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))?;
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(30);
        while serving_pid(address).is_err() {
            if let Some(status) = reap(pid)? {
                bail!("the service exited before it served ({status})");
            }
            if Instant::now() > deadline {
                bail!("the service does not answer on {address} after 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        println!(
            "serving on http://{address} (pid {pid}); try: curl http://{address}/ ; Ctrl-C stops it"
        );
        Ok(Running {
            address,
            pid,
            signalled: 0,
        })
    }
}

/// `--listen ADDR` among the user's arguments, for `config show` and
/// `config check`.
fn listen_override(args: &[String]) -> Vec<String> {
    args.windows(2)
        .find(|pair| pair[0] == "--listen")
        .map(<[String]>::to_vec)
        .or_else(|| {
            args.iter()
                .find(|arg| arg.starts_with("--listen="))
                .map(|arg| vec![arg.clone()])
        })
        .unwrap_or_default()
}

/// The running service, as this process sees it.
struct Running {
    address: SocketAddr,
    /// The process serving now (after an upgrade, no longer the one this
    /// process started).
    pid: u32,
    /// How many stop signals were passed on.
    signalled: usize,
}

impl Running {
    /// Passes on stop signals and reaps exited children; `Some` once no
    /// child is left: how the service ended.
    fn step(&mut self) -> Result<Option<Result<()>>> {
        let stops = STOP_SIGNALS.load(Ordering::SeqCst);
        while self.signalled < stops {
            // The first asks for a drain; a second, as for the service
            // itself, for a stop at once.
            signal(self.pid, libc::SIGINT);
            self.signalled += 1;
        }
        loop {
            let mut status = 0;
            // SAFETY: waitpid with WNOHANG only reads our children's state.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid > 0 {
                if pid as u32 != self.pid {
                    continue;
                }
                // Upgraded by a SIGHUP from elsewhere: follow the process
                // that serves now (adopted, as a subreaper).
                if let Ok(successor) = serving_pid(self.address)
                    && successor != self.pid
                {
                    self.pid = successor;
                    continue;
                }
                return Ok(Some(exit_outcome(status)));
            }
            // ECHILD: no child at all.
            if pid < 0 {
                return Ok(Some(Ok(())));
            }
            return Ok(None);
        }
    }

    /// SIGHUP to the serving process, then waits until another process
    /// answers: its pid and how long it took.
    fn upgrade(&mut self) -> Result<(u32, Duration)> {
        let started = Instant::now();
        let old = self.pid;
        signal(old, libc::SIGHUP);
        let deadline = started + Duration::from_secs(60);
        loop {
            if let Ok(pid) = serving_pid(self.address)
                && pid != old
            {
                self.pid = pid;
                return Ok((pid, started.elapsed()));
            }
            if Instant::now() > deadline {
                bail!("pid {old} still serves 60 s after SIGHUP (see its log above)");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn commit(&self) -> Result<String> {
        let (_, body) = crate::util::http_get(&self.address.to_string(), "/version")?;
        let version: serde_json::Value = serde_json::from_str(&body)?;
        Ok(version["describe"].as_str().unwrap_or("unknown").to_owned())
    }
}

fn exit_outcome(status: libc::c_int) -> Result<()> {
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            code => bail!("the service exited with code {code}"),
        }
    } else if libc::WIFSIGNALED(status) {
        bail!(
            "the service was killed by signal {}",
            libc::WTERMSIG(status)
        )
    } else {
        Ok(())
    }
}

/// The exit status of `pid` if it has exited (reaping it), else `None`.
fn reap(pid: u32) -> Result<Option<String>> {
    let mut status = 0;
    // SAFETY: waitpid with WNOHANG on our own child.
    let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    Ok(
        (reaped == pid as libc::pid_t).then(|| match exit_outcome(status) {
            Ok(()) => "exit code 0".to_owned(),
            Err(err) => err.to_string(),
        }),
    )
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Adopts the processes our children leave behind (the service's
/// successor after an upgrade), so that they can be waited for.
fn become_subreaper() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// SIGINT and SIGTERM received, passed on to the service by `step`.
static STOP_SIGNALS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_stop_signal(_: libc::c_int) {
    STOP_SIGNALS.fetch_add(1, Ordering::SeqCst);
}

fn catch_stop_signals() {
    let handler = count_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn stop_requested() -> bool {
    STOP_SIGNALS.load(Ordering::SeqCst) > 0
}

/// The files `dev` watches: the shipped package's folder (its `target/`
/// aside), the workspace manifests and lock file, and `config/`.
struct Watched {
    folders: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

/// Each watched file's modification time and size.
type Snapshot = BTreeMap<PathBuf, (Option<SystemTime>, u64)>;

impl Watched {
    fn new(ctx: &Ctx) -> Watched {
        let project = &ctx.project;
        let mut files = project.manifests.clone();
        files.push(project.root.join("Cargo.lock"));
        Watched {
            folders: vec![project.package_dir.clone(), project.root.join("config")],
            files,
        }
    }

    fn describe(&self, ctx: &Ctx) -> String {
        let relative = |path: &Path| {
            path.strip_prefix(&ctx.project.root)
                .unwrap_or(path)
                .display()
                .to_string()
        };
        let folders: Vec<String> = self
            .folders
            .iter()
            .map(|folder| format!("{}/", relative(folder)))
            .collect();
        format!("{}, Cargo.toml and Cargo.lock", folders.join(", "))
    }

    fn scan(&self) -> Snapshot {
        let mut snapshot = Snapshot::new();
        for file in &self.files {
            record(file, &mut snapshot);
        }
        for folder in &self.folders {
            walk(folder, &mut snapshot);
        }
        snapshot
    }
}

fn record(path: &Path, snapshot: &mut Snapshot) {
    if let Ok(metadata) = std::fs::metadata(path) {
        snapshot.insert(path.to_owned(), (metadata.modified().ok(), metadata.len()));
    }
}

fn walk(folder: &Path, snapshot: &mut Snapshot) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        // Build output, and editors' swap and backup files.
        let name = name.to_string_lossy();
        if name == "target" || name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => walk(&path, snapshot),
            Ok(_) => record(&path, snapshot),
            Err(_) => {}
        }
    }
}

/// The files that differ, relative to the root: `app/src/x.rs changed`,
/// `2 files changed`.
fn changed_files(before: &Snapshot, after: &Snapshot, root: &Path) -> String {
    let mut changed: Vec<&Path> = after
        .iter()
        .filter(|(path, stamp)| before.get(*path) != Some(stamp))
        .map(|(path, _)| path.as_path())
        .collect();
    changed.extend(
        before
            .keys()
            .filter(|path| !after.contains_key(*path))
            .map(PathBuf::as_path),
    );
    match changed.as_slice() {
        [] => "nothing changed".to_owned(),
        [one] => format!(
            "{} changed",
            one.strip_prefix(root).unwrap_or(one).display()
        ),
        many => format!("{} files changed", many.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_is_taken_from_the_service_arguments() {
        let args = |line: &str| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            listen_override(&args("--listen 127.0.0.1:9000 serve")),
            ["--listen", "127.0.0.1:9000"]
        );
        assert_eq!(
            listen_override(&args("--listen=127.0.0.1:9000")),
            ["--listen=127.0.0.1:9000"]
        );
        assert!(listen_override(&args("serve")).is_empty());
    }

    #[test]
    fn changes_are_named_by_file() {
        let root = Path::new("/w");
        let at = |seconds| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds));
        let before: Snapshot = [
            (PathBuf::from("/w/app/src/a.rs"), (at(1), 10)),
            (PathBuf::from("/w/config/dev.toml"), (at(1), 5)),
        ]
        .into();
        let mut after = before.clone();
        after.insert(PathBuf::from("/w/app/src/a.rs"), (at(2), 10));
        assert_eq!(changed_files(&before, &after, root), "app/src/a.rs changed");
        after.remove(Path::new("/w/config/dev.toml"));
        assert_eq!(changed_files(&before, &after, root), "2 files changed");
        assert_eq!(changed_files(&before, &before, root), "nothing changed");
    }
}
