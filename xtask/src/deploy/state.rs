//! What a deploy root holds and how it changes: `deploys.log` (JSON lines,
//! appended and synced: the audit trail and the only source of "previous"
//! and "bad"), the `current` symlink, `releases/`, and the deploy lock.
//!
//! Every change is a rename or an append: a release is unpacked under a
//! temporary name and renamed in; `current` is switched by renaming a new
//! symlink over it; the log only grows. The lock is a directory made with
//! `mkdir`, which either creates it or fails, with an `owner` file saying
//! who holds it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::host::Host;
use crate::exec::Ctx;

pub const LOG: &str = "deploys.log";
pub const LOCK: &str = ".deploy.lock";

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
}

impl State {
    pub fn read(ctx: &Ctx, host: &Host) -> Result<State> {
        // One round trip: the log, the symlink and the folder list, each
        // possibly absent on a new root.
        let log = host.path(LOG);
        let current = host.path("current");
        let releases = host.path("releases");
        let listing = host
            .read(
                ctx,
                &[
                    "sh",
                    "-c",
                    "cat \"$1\" 2>/dev/null; echo '--- current'; readlink \"$2\" 2>/dev/null; echo '--- releases'; ls -1 \"$3\" 2>/dev/null; true",
                    "sh",
                    &log,
                    &current,
                    &releases,
                ],
            )
            .with_context(|| format!("read the deploy state of {} on {}", host.root, host.label))?
            .stdout;
        let (log_text, rest) = listing
            .split_once("--- current\n")
            .context("unexpected deploy state listing")?;
        let (current_text, releases_text) = rest
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
        let current = current_text
            .trim()
            .strip_prefix("releases/")
            .map(str::to_owned);
        let releases = releases_text
            .lines()
            .filter(|name| !name.is_empty() && !name.starts_with('.'))
            .map(str::to_owned)
            .collect();
        Ok(State {
            entries,
            current,
            releases,
        })
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

/// A held deploy lock; `release` removes it.
pub struct Lock<'a> {
    host: &'a Host,
    released: bool,
}

impl<'a> Lock<'a> {
    /// Takes the lock of `host`'s root, waiting up to `wait` for a holder
    /// to finish.
    pub fn acquire(ctx: &Ctx, host: &'a Host, release: &str, wait: Duration) -> Result<Lock<'a>> {
        let lock = host.path(LOCK);
        let owner = Owner {
            user: user(),
            controller: controller(),
            pid: std::process::id(),
            since: now_rfc3339(),
            release: release.to_owned(),
        };
        let deadline = Instant::now() + wait;
        loop {
            match host.change(ctx, &["mkdir", &lock]) {
                Ok(()) => break,
                Err(err) => {
                    let holder = host
                        .read(ctx, &["cat", &format!("{lock}/owner")])
                        .ok()
                        .and_then(|output| serde_json::from_str::<Owner>(&output.stdout).ok());
                    let exists = host.read(ctx, &["test", "-d", &lock]).is_ok();
                    if !exists {
                        // mkdir failed for another reason (permissions, no
                        // root): that is the error.
                        return Err(err).with_context(|| format!("take the deploy lock {lock}"));
                    }
                    let clear = host.typed(&["rm", "-r", &lock]);
                    match &holder {
                        Some(holder) if is_gone(holder) => bail!(
                            "{} on {} is locked by a deploy that is gone (pid {} on {}, {} since {}, deploying {}): the lock is stale; clear it with `{clear}`",
                            host.root,
                            host.label,
                            holder.pid,
                            holder.controller,
                            holder.user,
                            holder.since,
                            holder.release
                        ),
                        _ if Instant::now() < deadline => {
                            super::check_interrupted()?;
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        Some(holder) => bail!(
                            "{} on {} is locked: {} is deploying {} (pid {} on {}, since {}): wait for it, pass --lock-wait 5m, or if it is gone, clear it with `{clear}`",
                            host.root,
                            host.label,
                            holder.user,
                            holder.release,
                            holder.pid,
                            holder.controller,
                            holder.since
                        ),
                        None => bail!(
                            "{} on {} is locked ({lock} exists, with no owner yet): wait for it, pass --lock-wait 5m, or if no deploy is running, clear it with `{clear}`",
                            host.root,
                            host.label
                        ),
                    }
                }
            }
        }
        let owner_json = serde_json::to_string(&owner).context("serialize the lock owner")?;
        host.change_with_input(
            ctx,
            &["tee", &format!("{lock}/owner")],
            owner_json.as_bytes(),
        )
        .context("record the lock owner")?;
        Ok(Lock {
            host,
            released: false,
        })
    }

    pub fn release(mut self, ctx: &Ctx) -> Result<()> {
        self.released = true;
        self.host
            .change(ctx, &["rm", "-r", &self.host.path(LOCK)])
            .context("release the deploy lock")
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        if !self.released {
            say!(
                "warning: the deploy lock {} on {} was not released",
                self.host.path(LOCK),
                self.host.label
            );
        }
    }
}

/// Whether the process holding a lock is known to be gone: it ran on this
/// machine and no longer exists.
fn is_gone(owner: &Owner) -> bool {
    owner.controller == controller()
        && !std::path::Path::new(&format!("/proc/{}", owner.pid)).exists()
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
            duration_ms: 1,
        }
    }

    fn state(entries: Vec<Entry>, current: &str) -> State {
        State {
            entries,
            current: Some(current.to_owned()),
            releases: vec!["a".into(), "b".into(), "c".into()],
        }
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
        };
        assert_eq!(state.to_prune(2, &[]), ["old", "a"]);
        assert_eq!(state.to_prune(1, &["old"]), ["a"]);
        assert!(state.to_prune(5, &[]).is_empty());
    }
}
