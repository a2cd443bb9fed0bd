//! The procedure on one host: lock, recover an unproven switch, place the
//! release, record the intent, switch, activate, prove, mark proven, prune;
//! and switching a host back. `deploy`, `rollback` and the fleet's rollout
//! run these.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::host::Host;
use super::interrupt::{check_interrupted, interrupted};
use super::order::{self, named_identity};
use super::plan::Plan;
use super::source::Source;
use super::state::{self, Entry, Lock, State};
use super::units::{self, Units};
use crate::exec::Ctx;

/// Switches a canary out of bounds back to the release it left, and marks
/// the new one bad there; says what it did.
pub(super) fn undo_canary(
    plan: &Plan,
    (host, from): (&Host, Option<String>),
    release: &str,
) -> String {
    match from.as_deref().filter(|from| *from != release) {
        Some(from) => match rollback_host(plan, host, Some(from), Undo::Canary) {
            Ok(()) => format!(
                "{} rolled back to {from}; {release} is marked bad there",
                host.label
            ),
            Err(err) => format!("{} could NOT be rolled back: {err:#}", host.label),
        },
        None => format!("{} had nothing to roll back to", host.label),
    }
}

/// Rolls back the hosts a fleet deploy already switched; says what it did.
pub(super) fn undo(plan: &Plan, switched: &[(&Host, Option<String>)], release: &str) -> String {
    let mut lines = Vec::new();
    for (host, from) in switched.iter().rev() {
        match from.as_deref().filter(|from| *from != release) {
            Some(from) => match rollback_host(plan, host, Some(from), Undo::Fleet) {
                Ok(()) => lines.push(format!("{} rolled back to {from}", host.label)),
                Err(err) => lines.push(format!("{} could NOT be rolled back: {err:#}", host.label)),
            },
            None => lines.push(format!("{} had nothing to roll back to", host.label)),
        }
    }
    format!("undone on the hosts already switched: {}", lines.join("; "))
}

/// Deploys to one host under its lock; returns the release it replaced.
pub(super) fn deploy_host(
    plan: &Plan,
    host: &Host,
    units: &Units,
    source: &Source,
    keep: usize,
) -> Result<Option<String>> {
    let ctx = plan.ctx;
    let failed_at = |step: &str| {
        format!(
            "deploy of {} to {} failed at {step}",
            source.name, host.label
        )
    };
    host.change(ctx, &["mkdir", "-p", &host.root])
        .with_context(|| failed_at("creating the deploy root"))?;
    let mut lock = Lock::acquire(ctx, host, &source.name, plan.lock_wait)
        .with_context(|| failed_at("lock"))?;
    let result = deploy_locked(plan, host, units, source, keep, &mut lock);
    let released = lock.release();
    let from = result?;
    released?;
    Ok(from)
}

pub(super) fn deploy_locked(
    plan: &Plan,
    host: &Host,
    units: &Units,
    source: &Source,
    keep: usize,
    lock: &mut Lock,
) -> Result<Option<String>> {
    let ctx = plan.ctx;
    let started = Instant::now();
    let state = State::read(ctx, host)?;
    let state = recover(plan, host, state).with_context(|| {
        format!(
            "deploy of {} to {} failed at recover",
            source.name, host.label
        )
    })?;
    let downgrade = order::check_forward(&state, source, &host.label, plan.allow_downgrade)
        .with_context(|| {
            format!(
                "deploy of {} to {} failed at order",
                source.name, host.label
            )
        })?;
    let from = state.current.clone();
    let deploy_entry = |started: Instant| {
        let mut entry = Entry::new(host, "deploy", from.as_deref(), &source.name, started);
        entry.commit_time = source.commit_time.clone();
        entry.downgrade = downgrade;
        entry
    };
    let fail = |step: &str, err: anyhow::Error| -> anyhow::Error {
        let entry = deploy_entry(started).failed(step, &format!("{err:#}"));
        if let Err(log_err) = state::append(ctx, host, &entry) {
            say!("warning: {log_err:#}");
        }
        err.context(format!(
            "deploy of {} to {} failed at {step}",
            source.name, host.label
        ))
    };

    place_release(ctx, host, source, &state).map_err(|err| fail("upload", err))?;
    // The first deploy to a host starts the service instead of reloading it.
    let activate = match units {
        Units::Missing => units::first_start(&ctx.project.settings.binary),
        Units::Current | Units::Outdated => plan.activate.clone(),
    };
    if ctx.dry_run {
        record_proven_before_switch(ctx, host, &state)?;
        switch(ctx, host, &source.name)?;
        if *units != Units::Current {
            units::install(plan, host)?;
        }
        host.activate(ctx, &activate)?;
        say!(
            "(dry run: would wait for {} to answer /readyz and /version {})",
            plan.service,
            source.commit
        );
        return Ok(from);
    }

    // Redeploying what already runs: nothing to switch if it answers.
    if from.as_deref() == Some(source.name.as_str())
        && prove(plan, host, &source.commit, Duration::ZERO, Interrupt::Stop).is_ok()
    {
        mark_proven(ctx, host, &state, &source.name)?;
        state::append(ctx, host, &deploy_entry(started))?;
        say!(
            "{}: {} already serves, nothing to switch",
            host.label,
            source.name
        );
        return Ok(from);
    }

    check_interrupted().map_err(|err| fail("switch", err))?;
    lock.check(host).map_err(|err| fail("switch", err))?;
    // The intent, before the switch: `current.proven` names the release
    // that served, so that a deploy that never proves the new one (killed,
    // cut off) is undone by the next deploy, `rollback` or the next boot.
    record_proven_before_switch(ctx, host, &state).map_err(|err| fail("switch", err))?;
    switch(ctx, host, &source.name).map_err(|err| fail("switch", err))?;
    // The step that failed is carried with the error, not read back from
    // its text. An interrupt during activation (which may also have killed
    // the activation command) counts as the interrupt.
    let outcome = check_interrupted()
        .and_then(|()| match units {
            Units::Current => Ok(()),
            Units::Missing | Units::Outdated => units::install(plan, host),
        })
        .and_then(|()| host.activate(ctx, &activate))
        .and_then(|()| check_interrupted())
        .map_err(|err| ("activate", err))
        .and_then(|()| {
            say!(
                "{}: waiting up to {:?} for {} to serve commit {}",
                host.label,
                plan.timeout,
                plan.service,
                &source.commit[..source.commit.len().min(7)]
            );
            prove(plan, host, &source.commit, plan.timeout, Interrupt::Stop)
                .map_err(|err| ("prove", err))
        });
    if let Err((step, err)) = outcome {
        let was_interrupted = interrupted();
        let err = fail(
            step,
            if was_interrupted {
                anyhow!("interrupted")
            } else {
                err
            },
        );
        let Some(previous) = from.as_deref().filter(|previous| *previous != source.name) else {
            return Err(err.context(format!(
                "there was no previous release to switch back to; current still points at {}",
                source.name
            )));
        };
        let rollback_started = Instant::now();
        let back = switch(ctx, host, previous)
            .and_then(|()| host.activate(ctx, &plan.activate))
            .and_then(|()| {
                let (_, commit) = release_identity(ctx, host, previous)?;
                prove(plan, host, &commit, plan.timeout, Interrupt::Finish)
            });
        let mut entry = Entry::new(
            host,
            "auto-rollback",
            Some(&source.name),
            previous,
            rollback_started,
        );
        // An interrupted deploy says nothing about the release.
        if !was_interrupted {
            entry.marked_bad = Some(source.name.clone());
        }
        return match back {
            Ok(()) => {
                state::append(ctx, host, &entry)?;
                let marked = if was_interrupted {
                    String::new()
                } else {
                    format!("; {} is marked bad", source.name)
                };
                Err(anyhow!(
                    "{err:#}; rolled back to {previous}, which serves again{marked}"
                ))
            }
            Err(back_err) => {
                let entry = entry.failed("rollback", &format!("{back_err:#}"));
                state::append(ctx, host, &entry)?;
                Err(anyhow!(
                    "{err:#}; the rollback to {previous} failed too: {back_err:#}"
                ))
            }
        };
    }
    mark_proven(ctx, host, &state, &source.name)?;
    state::append(ctx, host, &deploy_entry(started))?;
    prune(ctx, host, keep, &source.name)?;
    say!(
        "{}: {} serves (commit {})",
        host.label,
        source.name,
        &source.commit
    );
    Ok(from)
}

/// Puts the release into `releases/<name>`: reused if it is there and
/// verifies, else copied under a temporary name, verified, synced and
/// renamed in.
pub(super) fn place_release(ctx: &Ctx, host: &Host, source: &Source, state: &State) -> Result<()> {
    let release_dir = host.path(&format!("releases/{}", source.name));
    if state.releases.contains(&source.name) {
        verify_release(ctx, host, &release_dir, source)?;
        say!("{}: reusing {release_dir}, verified", host.label);
        return Ok(());
    }
    host.change(ctx, &["mkdir", "-p", &host.path("releases")])?;
    if !ctx.dry_run {
        check_free_space(ctx, host, source)?;
    }
    let partial = host.path(&format!(
        "releases/.partial-{}-{}",
        source.name,
        std::process::id()
    ));
    host.upload(ctx, &source.staging.path().join(&source.name), &partial)?;
    if !ctx.dry_run {
        verify_release(ctx, host, &partial, source)?;
    }
    host.change(ctx, &["sync", "-f", &partial])?;
    host.change(ctx, &["mv", "-T", &partial, &release_dir])
}

/// Refuses a host whose deploy root has not room for the release (with a
/// margin), before anything is copied: a disk that fills during the copy
/// leaves a partial folder and an error from deep inside scp.
pub(super) fn check_free_space(ctx: &Ctx, host: &Host, source: &Source) -> Result<()> {
    let needed = folder_size(&source.staging.path().join(&source.name))?;
    let needed = needed + needed / 10 + 1024 * 1024;
    let listing = host
        .read(ctx, &["df", "-P", "-k", &host.root])
        .with_context(|| format!("read the free space of {} on {}", host.root, host.label))?
        .stdout;
    // `Filesystem 1024-blocks Used Available Capacity Mounted-on`
    let free = listing
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .with_context(|| format!("df on {} printed no free space: {listing:?}", host.label))?;
    if free < needed {
        let megabytes = |bytes: u64| bytes as f64 / 1_000_000.0;
        bail!(
            "{}: {} has {:.1} MB free and the release needs {:.1} MB: free some space there (`cargo xtask releases` lists the releases kept; --keep keeps fewer)",
            host.label,
            host.root,
            megabytes(free),
            megabytes(needed)
        );
    }
    Ok(())
}

/// The bytes of every file under `folder`.
pub(super) fn folder_size(folder: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(folder).with_context(|| format!("read {}", folder.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            folder_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Checks every file of a release folder on the host against the archive.
pub(super) fn verify_release(ctx: &Ctx, host: &Host, folder: &str, source: &Source) -> Result<()> {
    let paths: Vec<String> = source
        .files
        .iter()
        .map(|(path, _)| format!("{folder}/{path}"))
        .collect();
    let mut argv = vec!["sha256sum", "--"];
    argv.extend(paths.iter().map(String::as_str));
    let listing = host
        .read(ctx, &argv)
        .with_context(|| format!("verify {folder} on {}", host.label))?
        .stdout;
    for ((path, expected), line) in source.files.iter().zip(listing.lines()) {
        let actual = line.split_whitespace().next().unwrap_or("");
        if actual != expected {
            bail!(
                "{folder}/{path} on {} differs from the archive: the release folder was changed; move it aside and deploy again",
                host.label
            );
        }
    }
    Ok(())
}

/// Points `current` at a release: a new symlink under a temporary name,
/// renamed over the old one, so there is never a moment without `current`.
pub(super) fn switch(ctx: &Ctx, host: &Host, release: &str) -> Result<()> {
    point(ctx, host, "current", release)
}

/// Points the symlink `link` of the root at `releases/<release>`, by rename.
pub(super) fn point(ctx: &Ctx, host: &Host, link: &str, release: &str) -> Result<()> {
    let temporary = host.path(&format!(".current-{link}-{}", std::process::id()));
    host.change(
        ctx,
        &[
            "ln",
            "-s",
            "-f",
            "-n",
            &format!("releases/{release}"),
            &temporary,
        ],
    )?;
    host.change(ctx, &["mv", "-T", &temporary, &host.path(link)])
}

/// Records `release` as the last one proven to serve (`current.proven`),
/// unless it is already.
pub(super) fn mark_proven(ctx: &Ctx, host: &Host, state: &State, release: &str) -> Result<()> {
    if state.proven.as_deref() == Some(release) && !ctx.dry_run {
        return Ok(());
    }
    point(ctx, host, state::PROVEN, release)
        .with_context(|| format!("record {release} as proven on {}", host.label))
}

/// Before a switch: the release `current` names now is the one to come back
/// to. (`recover` has made `current` the proven one if there was a record;
/// a root deployed by an older xtask has none yet.)
pub(super) fn record_proven_before_switch(ctx: &Ctx, host: &Host, state: &State) -> Result<()> {
    match &state.current {
        Some(current) => mark_proven(ctx, host, state, current),
        None => Ok(()),
    }
}

/// Undoes a switch that was never proven: when `current` names another
/// release than `current.proven` (a deploy was killed or cut off between
/// its switch and its proof), `current` goes back to the proven release,
/// which is activated and proven, and the log says so. Returns the state
/// to go on from.
pub(super) fn recover(plan: &Plan, host: &Host, state: State) -> Result<State> {
    let ctx = plan.ctx;
    let Some((unproven, proven)) = state.unproven_switch() else {
        return Ok(state);
    };
    let (unproven, proven) = (unproven.to_owned(), proven.to_owned());
    if !state.releases.contains(&proven) {
        say!(
            "{}: warning: current.proven names {proven}, which is gone; keeping {unproven}",
            host.label
        );
        return Ok(state);
    }
    say!(
        "{}: {unproven} was switched to and never proven (an earlier deploy stopped half-way): switching back to {proven}, the last proven release",
        host.label
    );
    let started = Instant::now();
    let back = switch(ctx, host, &proven)
        .and_then(|()| host.activate(ctx, &plan.activate))
        .and_then(|()| {
            if ctx.dry_run {
                return Ok(());
            }
            let (_, commit) = release_identity(ctx, host, &proven)?;
            prove(plan, host, &commit, plan.timeout, Interrupt::Finish)
        });
    let entry = Entry::new(host, "recover", Some(&unproven), &proven, started);
    match back {
        Ok(()) => {
            state::append(ctx, host, &entry)?;
            State::read(ctx, host)
        }
        Err(err) => {
            state::append(ctx, host, &entry.failed("recover", &format!("{err:#}")))?;
            Err(err.context(format!(
                "switch {} back from the unproven {unproven} to {proven}",
                host.label
            )))
        }
    }
}

/// The version and commit of a release on a host: from its name when
/// `deploy` put it there, else (a release unpacked by hand, named as its
/// archive, `app-0.1.0-x86_64-unknown-linux-musl`) from its binary's
/// `--version --json`, run on the host.
pub(super) fn release_identity(ctx: &Ctx, host: &Host, release: &str) -> Result<(String, String)> {
    if let Some((version, commit)) = named_identity(release) {
        return Ok((version.to_owned(), commit.to_owned()));
    }
    let binary = host.path(&format!(
        "releases/{release}/{}",
        ctx.project.settings.binary
    ));
    let printed = host
        .read(ctx, &[&binary, "--version", "--json"])
        .with_context(|| format!("read the version of {release} on {}", host.label))?
        .stdout;
    let stamp: serde_json::Value = serde_json::from_str(&printed).with_context(|| {
        format!(
            "{binary} --version --json on {} printed no JSON",
            host.label
        )
    })?;
    let field = |name: &str| stamp[name].as_str().unwrap_or_default().to_owned();
    Ok((field("version"), field("commit_short")))
}

/// Whether a step gives up when the deploy is interrupted: the steps of a
/// deploy do, the steps that switch back do not.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Interrupt {
    Stop,
    Finish,
}

/// Waits until the service answers `/readyz` with 200 and `/version` with
/// `commit` (full or short); `timeout` zero tries once.
pub(super) fn prove(
    plan: &Plan,
    host: &Host,
    commit: &str,
    timeout: Duration,
    on_interrupt: Interrupt,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let short = &commit[..commit.len().min(7)];
    let last_seen = loop {
        let seen = match host.http_get(&plan.service, "/readyz") {
            Ok((200, _)) => match host.http_get(&plan.service, "/version") {
                Ok((200, body)) => {
                    let reported = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|version| version["commit"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    if reported.starts_with(short) {
                        return Ok(());
                    }
                    format!(
                        "/version reports commit {}",
                        &reported[..reported.len().min(7)]
                    )
                }
                Ok((status, _)) => format!("/version answered {status}"),
                Err(err) => format!("{err:#}"),
            },
            Ok((status, _)) => format!("/readyz answered {status}"),
            Err(err) => format!("{err:#}"),
        };
        if on_interrupt == Interrupt::Stop {
            check_interrupted()?;
        }
        if Instant::now() >= deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    bail!(
        "{} on {} did not serve commit {short} within {:?}: {last_seen}",
        plan.service,
        host.label,
        timeout
    )
}

/// Deletes the oldest releases beyond `keep` (renamed aside first, so a
/// half-deleted release is never under its own name), and what killed
/// deploys left behind.
pub(super) fn prune(ctx: &Ctx, host: &Host, keep: usize, deployed: &str) -> Result<()> {
    let state = State::read(ctx, host)?;
    for release in state.to_prune(keep, &[deployed]) {
        let trash = host.path(&format!("releases/.trash-{release}-{}", std::process::id()));
        host.change(
            ctx,
            &[
                "mv",
                "-T",
                &host.path(&format!("releases/{release}")),
                &trash,
            ],
        )?;
        host.change(ctx, &["rm", "-r", "-f", &trash])?;
    }
    // What a killed deploy left: partial copies, half-deleted releases and
    // unrenamed symlinks. Under the lock no other deploy is writing them.
    for (folder, prefixes) in [
        (host.path("releases"), &[".partial-", ".trash-"][..]),
        (host.root.clone(), &[".current-"][..]),
    ] {
        let listing = host.read(ctx, &["ls", "-A", &folder])?.stdout;
        for name in listing.lines() {
            if prefixes.iter().any(|prefix| name.starts_with(prefix)) {
                host.change(ctx, &["rm", "-r", "-f", &format!("{folder}/{name}")])?;
            }
        }
    }
    Ok(())
}

/// Why a host is switched back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Undo {
    /// `cargo xtask rollback`: the release it leaves is marked bad.
    Rollback,
    /// Another host of the same deploy failed: the release it leaves
    /// served here, so it is not marked.
    Fleet,
    /// The canary broke its bounds: the release it leaves is marked bad.
    Canary,
}

/// Switches a host to `to` (or the previous good release), activates and
/// proves it, and for `Undo::Rollback` marks the release it left as bad.
pub(super) fn rollback_host(plan: &Plan, host: &Host, to: Option<&str>, why: Undo) -> Result<()> {
    let ctx = plan.ctx;
    let started = Instant::now();
    let mut lock = Lock::acquire(ctx, host, to.unwrap_or("(previous)"), plan.lock_wait)?;
    let result = (|| {
        let state = State::read(ctx, host)?;
        lock.check(host)?;
        let target = match to {
            Some(release) if state.releases.iter().any(|name| name == release) => release.to_owned(),
            Some(release) => bail!(
                "{release} is not among the releases on {} ({}): see `cargo xtask releases`",
                host.label,
                state.releases.join(", ")
            ),
            // A switch never proven goes back to the release that was.
            None if state
                .unproven_switch()
                .is_some_and(|(_, proven)| state.releases.iter().any(|name| name == proven)) =>
            {
                state.proven.clone().expect("an unproven switch has a proven release")
            }
            None => state.previous_good().with_context(|| {
                let bad: Vec<_> = state.bad().into_iter().collect();
                let bad = if bad.is_empty() {
                    "none".to_owned()
                } else {
                    bad.join(", ")
                };
                format!(
                    "{} has no previous good release to roll back to (current: {}; bad: {bad}): name one with --to",
                    host.label,
                    state.current.as_deref().unwrap_or("none"),
                )
            })?,
        };
        let from = state.current.clone();
        let action = match why {
            Undo::Rollback => "rollback",
            Undo::Fleet | Undo::Canary => "auto-rollback",
        };
        let mut entry = Entry::new(host, action, from.as_deref(), &target, started);
        entry.downgrade = why == Undo::Rollback;
        if why != Undo::Fleet {
            entry.marked_bad = from.clone().filter(|from| *from != target);
        }
        let outcome = switch(ctx, host, &target)
            .and_then(|()| host.activate(ctx, &plan.activate))
            .and_then(|()| {
                if ctx.dry_run {
                    Ok(())
                } else {
                    let (_, commit) = release_identity(ctx, host, &target)?;
                    prove(plan, host, &commit, plan.timeout, Interrupt::Finish)
                }
            });
        entry.duration_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(()) => {
                mark_proven(ctx, host, &state, &target)?;
                state::append(ctx, host, &entry)?;
                say!(
                    "{}: {} serves again (was {}) in {:.2}s",
                    host.label,
                    target,
                    from.as_deref().unwrap_or("none"),
                    started.elapsed().as_secs_f64()
                );
                Ok(())
            }
            Err(err) => {
                state::append(ctx, host, &entry.failed("prove", &format!("{err:#}")))?;
                Err(err.context(format!("roll back {} to {target}", host.label)))
            }
        }
    })();
    let released = lock.release();
    result?;
    released
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::TempFolder;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn durations_and_release_names_parse() {
        use crate::util::parse_duration;
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("3d").unwrap_err().contains("the unit is"));
        assert_eq!(named_identity("0.1.0-abc1234"), Some(("0.1.0", "abc1234")));
        assert_eq!(
            named_identity("1.0.0-rc.1-abc1234"),
            Some(("1.0.0-rc.1", "abc1234"))
        );
        assert_eq!(named_identity("app-0.1.0-x86_64-unknown-linux-musl"), None);
        assert_eq!(named_identity("0.1.0-deadbeefcafe-x"), None);
    }

    #[test]
    fn current_flips_two_hundred_times_without_a_reader_seeing_a_gap() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicUsize;
        let ctx = Ctx::new(false).unwrap();
        let scratch = TempFolder::new("xtask-switch-test").unwrap();
        let root = scratch.path().join("root");
        for release in ["0.1.0-aaaaaaa", "0.1.0-bbbbbbb"] {
            let folder = root.join("releases").join(release);
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join("app"), release).unwrap();
        }
        let host = Host::local(&root).unwrap();
        switch(&ctx, &host, "0.1.0-aaaaaaa").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (stop, reads) = (stop.clone(), reads.clone());
                let app = root.join("current/app");
                std::thread::spawn(move || {
                    let mut bad = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        match std::fs::read_to_string(&app) {
                            Ok(text) if text == "0.1.0-aaaaaaa" || text == "0.1.0-bbbbbbb" => {}
                            other => bad.push(format!("{other:?}")),
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    bad
                })
            })
            .collect();
        let flips = 200;
        for flip in 0..flips {
            let release = if flip % 2 == 0 {
                "0.1.0-bbbbbbb"
            } else {
                "0.1.0-aaaaaaa"
            };
            switch(&ctx, &host, release).unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        let bad: Vec<String> = readers
            .into_iter()
            .flat_map(|reader| reader.join().unwrap())
            .collect();
        assert!(
            bad.is_empty(),
            "{} bad reads: {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
        assert!(
            reads.load(Ordering::Relaxed) > flips,
            "the readers barely ran"
        );
        assert_eq!(
            std::fs::read_link(root.join("current")).unwrap(),
            Path::new("releases/0.1.0-aaaaaaa")
        );
    }
}
