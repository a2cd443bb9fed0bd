//! What a deploy root holds and how it changes: `deploys.log` (JSON lines,
//! appended and synced: the audit trail and the only source of "previous"
//! and "bad"), the `current` symlink, `releases/`, and the deploy lock.
//!
//! Every change is a rename or an append: a release is unpacked under a
//! temporary name and renamed in; `current` is switched by renaming a new
//! symlink over it; the log only grows. The lock is an flock(2) on a file,
//! held by a process on the host that lives only as long as the deploy
//! (see `Lock`), so a killed deploy, a cut connection or a crashed machine
//! leaves no lock behind.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::host::Host;
use crate::exec::Ctx;

pub const LOG: &str = "deploys.log";
/// The symlink to the last release proven to serve; `current` differs from
/// it only between a switch and its proof.
pub const PROVEN: &str = "current.proven";
/// The lock file: held with flock(2) while a deploy runs; it holds who
/// took it last.
pub const LOCK: &str = ".deploy-lock";

/// One line of `deploys.log`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub time: String,
    pub user: String,
    /// The machine `cargo xtask` ran on.
    pub controller: String,
    /// The host deployed to (`local` for a local root).
    pub host: String,
    /// `deploy`, `rollback` or `auto-rollback`.
    pub action: String,
    pub from: Option<String>,
    pub to: String,
    /// `ok` or `failed`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A release this action marked bad (the one rolled back from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marked_bad: Option<String>,
    /// The deploy to several hosts this entry is part of (one entry per
    /// host): `<controller>-<pid>-<start time>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// When the commit of `to` was made (RFC 3339), from its signed
    /// provenance or its manifest: orders two builds of one version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_time: Option<String>,
    /// The action went back to an older release (`rollback`, or a deploy
    /// with `--allow-downgrade`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub downgrade: bool,
    pub duration_ms: u64,
}

static ROLLOUT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Marks every entry this process writes from now on as part of one
/// rollout.
pub fn start_rollout() {
    let _ = ROLLOUT.set(format!(
        "{}-{}-{}",
        controller(),
        std::process::id(),
        now_rfc3339()
    ));
}

impl Entry {
    pub fn new(host: &Host, action: &str, from: Option<&str>, to: &str, started: Instant) -> Entry {
        Entry {
            time: now_rfc3339(),
            user: user(),
            controller: controller(),
            host: host.label.clone(),
            action: action.to_owned(),
            from: from.map(str::to_owned),
            to: to.to_owned(),
            result: "ok".to_owned(),
            step: None,
            error: None,
            marked_bad: None,
            rollout: ROLLOUT.get().cloned(),
            commit_time: None,
            downgrade: false,
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }

    pub fn failed(mut self, step: &str, error: &str) -> Entry {
        self.result = "failed".to_owned();
        self.step = Some(step.to_owned());
        self.error = Some(error.to_owned());
        self
    }

    fn switched(&self) -> bool {
        self.result == "ok"
    }
}

/// The state of a root, read from the host.
#[derive(Debug, Default)]
pub struct State {
    pub entries: Vec<Entry>,
    /// The release `current` points at, if any.
    pub current: Option<String>,
    /// The release folders, sorted by name.
    pub releases: Vec<String>,
    /// The release `current.proven` points at, if any.
    pub proven: Option<String>,
}

impl State {
    pub fn read(ctx: &Ctx, host: &Host) -> Result<State> {
        // One round trip: the log, the symlink and the folder list, each
        // possibly absent on a new root.
        let log = host.path(LOG);
        let current = host.path("current");
        let releases = host.path("releases");
        let proven = host.path(PROVEN);
        let listing = host
            .read(
                ctx,
                &[
                    "sh",
                    "-c",
                    "cat \"$1\" 2>/dev/null; echo '--- current'; readlink \"$2\" 2>/dev/null; echo '--- proven'; readlink \"$4\" 2>/dev/null; echo '--- releases'; ls -1 \"$3\" 2>/dev/null; true",
                    "sh",
                    &log,
                    &current,
                    &releases,
                    &proven,
                ],
            )
            .with_context(|| format!("read the deploy state of {} on {}", host.root, host.label))?
            .stdout;
        let (log_text, rest) = listing
            .split_once("--- current\n")
            .context("unexpected deploy state listing")?;
        let (current_text, rest) = rest
            .split_once("--- proven\n")
            .context("unexpected deploy state listing")?;
        let (proven_text, releases_text) = rest
            .split_once("--- releases\n")
            .context("unexpected deploy state listing")?;
        let mut entries = Vec::new();
        for (number, line) in log_text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            entries.push(
                serde_json::from_str(line).with_context(|| {
                    format!("{} line {}: not a deploy log entry", log, number + 1)
                })?,
            );
        }
        let release_of = |link: &str| link.trim().strip_prefix("releases/").map(str::to_owned);
        let current = release_of(current_text);
        let proven = release_of(proven_text);
        let releases = releases_text
            .lines()
            .filter(|name| !name.is_empty() && !name.starts_with('.'))
            .map(str::to_owned)
            .collect();
        Ok(State {
            entries,
            current,
            releases,
            proven,
        })
    }

    /// `(current, proven)` when `current` names a release that was switched
    /// to and never proven.
    pub fn unproven_switch(&self) -> Option<(&str, &str)> {
        match (&self.current, &self.proven) {
            (Some(current), Some(proven)) if current != proven => Some((current, proven)),
            _ => None,
        }
    }

    /// Releases marked bad and not successfully switched to since.
    pub fn bad(&self) -> BTreeSet<String> {
        let mut bad = BTreeSet::new();
        for entry in &self.entries {
            if entry.switched() {
                bad.remove(&entry.to);
            }
            if let Some(marked) = &entry.marked_bad {
                bad.insert(marked.clone());
            }
        }
        bad
    }

    /// The release to roll back to: the latest one `current` was switched
    /// to before the present one that is not bad and is still on disk.
    pub fn previous_good(&self) -> Option<String> {
        let bad = self.bad();
        self.entries
            .iter()
            .rev()
            .filter(|entry| entry.switched())
            .map(|entry| &entry.to)
            .find(|release| {
                Some(*release) != self.current.as_ref()
                    && !bad.contains(*release)
                    && self.releases.contains(release)
            })
            .cloned()
    }

    /// When the commit of `release` was made, as the last entry that
    /// switched to it recorded.
    pub fn commit_time_of(&self, release: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .filter(|entry| entry.switched() && entry.to == release)
            .find_map(|entry| entry.commit_time.as_deref())
    }

    /// When a release was last switched to, from the log.
    pub fn deployed_at(&self, release: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|entry| entry.switched() && entry.to == release)
            .map(|entry| entry.time.as_str())
    }

    /// Releases to delete to keep `keep`: the oldest by last deploy (never
    /// deployed ones first), never `current`, the previous good one, or
    /// those in `protected`.
    pub fn to_prune(&self, keep: usize, protected: &[&str]) -> Vec<String> {
        let previous = self.previous_good();
        let mut by_age: Vec<(Option<&str>, &String)> = self
            .releases
            .iter()
            .map(|release| (self.deployed_at(release), release))
            .collect();
        by_age.sort();
        let excess = self.releases.len().saturating_sub(keep);
        by_age
            .into_iter()
            .map(|(_, release)| release)
            .filter(|release| {
                Some(*release) != self.current.as_ref()
                    && Some(*release) != previous.as_ref()
                    && !protected.contains(&release.as_str())
            })
            .take(excess)
            .cloned()
            .collect()
    }
}

/// Appends one line to the log and syncs it.
pub fn append(ctx: &Ctx, host: &Host, entry: &Entry) -> Result<()> {
    let mut line = serde_json::to_string(entry).context("serialize the deploy log entry")?;
    line.push('\n');
    let log = host.path(LOG);
    host.change_with_input(ctx, &["tee", "-a", &log], line.as_bytes())
        .context("append to the deploy log")?;
    host.change(ctx, &["sync", &log])
        .context("sync the deploy log")
}

/// Who holds a lock, as written into it.
#[derive(Debug, Serialize, Deserialize)]
struct Owner {
    user: String,
    controller: String,
    pid: u32,
    since: String,
    release: String,
}

impl Owner {
    fn describe(&self) -> String {
        format!(
            "{} is deploying {} (pid {} on {}, since {})",
            self.user, self.release, self.pid, self.controller, self.since
        )
    }
}

/// How often the deploy tells the lock's holder on the host that it lives.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Silence after which the holder lets the lock go: the deploy's machine
/// crashed or its connection was cut without either end noticing.
const SILENCE_SECONDS: u32 = 20;

/// The process that holds a root's lock, run on the host by `sh -s`
/// (POSIX sh, flock from util-linux, coreutils). `$1` is the lock file,
/// `$2` who asks (JSON), `$3` how many seconds to wait for another holder.
/// The lock is an flock on the file: the kernel drops it when the holder
/// exits, and the holder exits when its stdin ends (the deploy exited or
/// was killed, or its ssh connection closed) or stays silent for
/// `SILENCE_SECONDS` (a crashed machine), so no lock outlives its deploy.
const HOLDER: &str = r#"exec 9>>"$1" || exit 71
if ! flock -n 9; then
  printf 'waiting %s\n' "$(head -c 4096 "$1" | head -n 1)"
  if ! flock -w "$3" 9; then
    printf 'busy %s\n' "$(head -c 4096 "$1" | head -n 1)"
    exit 75
  fi
fi
printf '%s\n' "$2" > "$1"
echo locked
while [ "$(timeout SILENCE head -c 1 | wc -c)" -eq 1 ]; do :; done
"#;

/// A held deploy lock: a process on the host holds it for as long as this
/// value keeps writing to it; `release` (or the end of this process, however
/// it ends) lets it go.
pub struct Lock {
    holder: Option<Holder>,
}

struct Holder {
    child: std::process::Child,
    /// Dropping it stops the heartbeat, which closes the holder's stdin.
    stop: std::sync::mpsc::Sender<()>,
    heartbeat: std::thread::JoinHandle<()>,
    /// Cleared when a heartbeat cannot be written: the holder is gone.
    alive: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Lock {
    /// Takes the lock of `host`'s root, waiting up to `wait` for a holder
    /// to finish.
    pub fn acquire(ctx: &Ctx, host: &Host, release: &str, wait: Duration) -> Result<Lock> {
        use std::io::BufRead;
        use std::sync::atomic::{AtomicBool, Ordering};

        let lock = host.path(LOCK);
        let owner = serde_json::to_string(&Owner {
            user: user(),
            controller: controller(),
            pid: std::process::id(),
            since: now_rfc3339(),
            release: release.to_owned(),
        })
        .context("serialize the lock owner")?;
        let script = HOLDER.replace("SILENCE", &SILENCE_SECONDS.to_string());
        let seconds = wait.as_secs().to_string();
        let Some(mut child) = host.spawn_holder(
            ctx,
            &["sh", "-c", &script, "deploy-lock", &lock, &owner, &seconds],
        )?
        else {
            return Ok(Lock { holder: None });
        };
        let stdout = child.stdout.take().context("the lock holder's stdout")?;
        let (lines_tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let refused = |child: &mut std::process::Child, why: String| {
            let _ = child.kill();
            let _ = child.wait();
            Err(anyhow::anyhow!(why))
        };
        loop {
            if super::interrupt::interrupted() {
                return refused(
                    &mut child,
                    "interrupted while waiting for the deploy lock".into(),
                );
            }
            let line = match lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => line,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().context("wait for the lock holder")?;
                    let said = holder_error(&mut child);
                    bail!(
                        "take the deploy lock {lock} on {}: the holder ended ({status}){said}",
                        host.label
                    );
                }
            };
            let holder_of = |json: &str| {
                serde_json::from_str::<Owner>(json).map_or_else(
                    |_| "another deploy holds it".to_owned(),
                    |owner| owner.describe(),
                )
            };
            if let Some(json) = line.strip_prefix("waiting ") {
                say!(
                    "{}: waiting up to {} s for the deploy lock: {}",
                    host.label,
                    wait.as_secs(),
                    holder_of(json)
                );
            } else if let Some(json) = line.strip_prefix("busy ") {
                return refused(
                    &mut child,
                    format!(
                        "{} on {} is locked: {}: wait for it, or pass --lock-wait 5m (a deploy that ended, however, holds no lock)",
                        host.root,
                        host.label,
                        holder_of(json)
                    ),
                );
            } else if line == "locked" {
                break;
            }
        }
        let mut stdin = child.stdin.take().context("the lock holder's stdin")?;
        let alive = std::sync::Arc::new(AtomicBool::new(true));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let heartbeat = {
            let alive = alive.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(HEARTBEAT)
                {
                    if stdin.write_all(b".").and_then(|()| stdin.flush()).is_err() {
                        alive.store(false, Ordering::SeqCst);
                        return;
                    }
                }
                // Dropping stdin here ends the holder.
            })
        };
        Ok(Lock {
            holder: Some(Holder {
                child,
                stop,
                heartbeat,
                alive,
            }),
        })
    }

    /// Fails if the lock was lost (its holder on the host ended): nothing
    /// may change after that, since another deploy may hold it now.
    pub fn check(&mut self, host: &Host) -> Result<()> {
        let Some(holder) = &mut self.holder else {
            return Ok(());
        };
        let ended = !holder.alive.load(std::sync::atomic::Ordering::SeqCst)
            || holder.child.try_wait().ok().flatten().is_some();
        if ended {
            bail!(
                "lost the deploy lock on {}: the connection holding it ended; nothing more was changed",
                host.label
            );
        }
        Ok(())
    }

    pub fn release(mut self) -> Result<()> {
        let Some(holder) = self.holder.take() else {
            return Ok(());
        };
        let (status, mut child) = holder.end();
        let status = status.context("wait for the deploy lock's holder")?;
        if !status.success() {
            let said = holder_error(&mut child);
            bail!("release the deploy lock: its holder ended with {status}{said}");
        }
        Ok(())
    }
}

impl Holder {
    /// Stops the heartbeat, which ends the holder's stdin: it exits (over
    /// ssh, once the remote side has) and the kernel drops the lock.
    fn end(
        self,
    ) -> (
        std::io::Result<std::process::ExitStatus>,
        std::process::Child,
    ) {
        drop(self.stop);
        let _ = self.heartbeat.join();
        let mut child = self.child;
        (child.wait(), child)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(holder) = self.holder.take() {
            let _ = holder.end();
        }
    }
}

/// What the holder said on stderr, as `: <last line>`, if anything.
fn holder_error(child: &mut std::process::Child) -> String {
    use std::io::Read;
    let mut said = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut said);
    }
    said.lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .map(|line| {
            if line.contains("flock") && line.contains("not found") {
                format!(": {line} (install util-linux on the host)")
            } else {
                format!(": {line}")
            }
        })
        .unwrap_or_default()
}

pub fn now_rfc3339() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    crate::util::rfc3339_utc(now)
}

fn user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .or_else(|| {
            let output = std::process::Command::new("id").arg("-un").output().ok()?;
            let name = String::from_utf8(output.stdout).ok()?;
            Some(name.trim().to_owned()).filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// This machine's name.
pub fn controller() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str, to: &str, result: &str, marked_bad: Option<&str>) -> Entry {
        Entry {
            time: format!("2026-01-01T00:00:0{}Z", to.len() % 10),
            user: "u".into(),
            controller: "c".into(),
            host: "local".into(),
            action: action.into(),
            from: None,
            to: to.into(),
            result: result.into(),
            step: None,
            error: None,
            marked_bad: marked_bad.map(str::to_owned),
            rollout: None,
            commit_time: None,
            downgrade: false,
            duration_ms: 1,
        }
    }

    fn state(entries: Vec<Entry>, current: &str) -> State {
        State {
            entries,
            current: Some(current.to_owned()),
            releases: vec!["a".into(), "b".into(), "c".into()],
            proven: None,
        }
    }

    #[test]
    fn a_switch_is_unproven_while_current_and_the_proven_link_differ() {
        let mut state = state(Vec::new(), "b");
        // A root from before the proven link, or a bare one: nothing to undo.
        assert_eq!(state.unproven_switch(), None);
        state.proven = Some("b".into());
        assert_eq!(state.unproven_switch(), None);
        state.proven = Some("a".into());
        assert_eq!(state.unproven_switch(), Some(("b", "a")));
        state.current = None;
        assert_eq!(state.unproven_switch(), None);
    }

    #[test]
    fn previous_skips_bad_releases_and_rollbacks_mark_what_they_left() {
        // A, B, then C fails and is rolled back: previous of B is A.
        let mut entries = vec![
            entry("deploy", "a", "ok", None),
            entry("deploy", "b", "ok", None),
            entry("deploy", "c", "failed", None),
            entry("auto-rollback", "b", "ok", Some("c")),
        ];
        let after_c = state(entries.clone(), "b");
        assert_eq!(after_c.bad(), BTreeSet::from(["c".to_owned()]));
        assert_eq!(after_c.previous_good().as_deref(), Some("a"));
        // Rolling back to A marks B bad: nothing good is left before A.
        entries.push(entry("rollback", "a", "ok", Some("b")));
        let after_rollback = state(entries.clone(), "a");
        assert_eq!(after_rollback.previous_good(), None);
        // Deploying C again successfully clears its mark.
        entries.push(entry("deploy", "c", "ok", None));
        let redeployed = state(entries, "c");
        assert_eq!(redeployed.bad(), BTreeSet::from(["b".to_owned()]));
        assert_eq!(redeployed.previous_good().as_deref(), Some("a"));
    }

    #[test]
    fn pruning_keeps_current_previous_and_the_newest() {
        let entries = vec![
            entry("deploy", "a", "ok", None),
            entry("deploy", "bb", "ok", None),
            entry("deploy", "ccc", "ok", None),
        ];
        let state = State {
            entries,
            current: Some("ccc".into()),
            releases: vec!["a".into(), "bb".into(), "ccc".into(), "old".into()],
            proven: Some("ccc".into()),
        };
        assert_eq!(state.to_prune(2, &[]), ["old", "a"]);
        assert_eq!(state.to_prune(1, &["old"]), ["a"]);
        assert!(state.to_prune(5, &[]).is_empty());
    }
}
