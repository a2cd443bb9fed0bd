//! `cargo xtask deploy`, `rollback` and `releases`: versioned release
//! folders on hosts, a `current` symlink switched atomically, activation
//! (a zero-downtime `systemctl reload` by default), and proof that the new
//! commit answers; a failed proof switches back. Several hosts are deployed
//! one after another, and a failure on one rolls back those already
//! switched, so a fleet never ends split between two releases.
//!
//! On each host, under `--root DIR`:
//! `releases/<version>-<commit>/` (unpacked archives), `current` (a
//! relative symlink to one of them), `current.proven` (the last release
//! proven to serve: a switch not yet proven is undone by the next deploy,
//! `rollback` or the boot check), `deploys.log` (JSON lines) and
//! `.deploy-lock` (flock(2)-held while a deploy runs).

/// A line of a deploy's progress (see `output::say`).
macro_rules! say {
    ($($arg:tt)*) => {
        crate::deploy::output::say(format!($($arg)*))
    };
}

mod host;
pub mod k8s;
mod order;
mod output;
mod rollout;
pub mod source;
mod state;
mod units;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::artifacts::provenance::Identity;
use crate::exec::Ctx;
use crate::manifest::MANIFEST;
use crate::targets;
use crate::util::TempFolder;
use host::Host;
use source::Source;
use state::{Entry, Lock, State};
use units::Units;

/// Where to deploy: one local root, or hosts over ssh.
#[derive(clap::Args, Debug)]
pub struct Where {
    /// The deploy root on each host: releases/, current, deploys.log
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Deploy over ssh to this host, `[USER@]HOST`, or `[USER@]HOST:DIR`
    /// for a root of its own; repeatable, deployed in order (for deploy:
    /// see --batch) [default: this machine]
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// An ssh config file for ssh and scp (ports, keys, jump hosts)
    #[arg(long, value_name = "FILE")]
    ssh_config: Option<PathBuf>,
}

/// How a switched release is started and proven.
#[derive(clap::Args, Debug)]
pub struct Activation {
    /// Shell command run on the host after the switch [default: systemctl
    /// reload <binary>, the units' zero-downtime upgrade]
    #[arg(long, value_name = "CMD")]
    activate: Option<String>,
    /// The service's address as seen on the host, for the proof
    /// [default: 127.0.0.1:<port>]
    #[arg(long, value_name = "ADDR")]
    service: Option<String>,
    /// How long the new release has to answer /readyz and /version
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::util::parse_duration)]
    timeout: Duration,
    /// Wait this long for another deploy's lock instead of failing
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = crate::util::parse_duration)]
    lock_wait: Duration,
}

#[derive(clap::Args, Debug)]
pub struct Deploy {
    /// The release archive to deploy, with SHA256SUMS and
    /// dist-manifest.json beside it [default: from target/dist/, built if
    /// needed]
    #[arg(long, value_name = "PATH", conflicts_with = "target")]
    archive: Option<PathBuf>,
    /// The target of the hosts (alias or triple) [default: static musl for
    /// this machine's architecture]
    #[arg(long, value_name = "TARGET")]
    target: Option<String>,
    /// Releases kept on each host [default: keep-releases in
    /// [workspace.metadata.xtask], else 5]
    #[arg(long, value_name = "N")]
    keep: Option<usize>,
    /// Overwrite installed units that differ from the ones this deploy
    /// installs, even if they were edited on the host (local changes
    /// belong in drop-ins, which deploy never touches)
    #[arg(long)]
    replace_units: bool,
    /// The public key the release must be signed with [default:
    /// public-key of [workspace.metadata.xtask]]
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
    /// Install the release even if its signature or provenance is missing
    /// or does not verify: whoever could write the archive could have
    /// replaced what runs on the hosts
    #[arg(long)]
    install_unverified: bool,
    /// Deploy a signed release built from a tree with uncommitted changes
    /// (its commit does not say what was built)
    #[arg(long)]
    allow_dirty: bool,
    /// Deploy a release older than the one a host runs (`rollback` is the
    /// usual way back); logged as a downgrade
    #[arg(long)]
    allow_downgrade: bool,
    #[command(flatten)]
    place: Where,
    #[command(flatten)]
    activation: Activation,
    #[command(flatten)]
    rollout: rollout::Rollout,
}

#[derive(clap::Args, Debug)]
pub struct Rollback {
    /// The release to return to [default: the previous good one, from the
    /// deploy log]
    #[arg(long, value_name = "RELEASE")]
    to: Option<String>,
    #[command(flatten)]
    place: Where,
    #[command(flatten)]
    activation: Activation,
}

#[derive(clap::Args, Debug)]
pub struct Releases {
    /// Print JSON, for scripts
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    place: Where,
}

/// Set by SIGINT and SIGTERM while a deploy or rollback runs, so that it
/// stops at the next step, switches back and releases its lock instead of
/// dying half-way. A second signal ends the process at once.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_interrupt(signal: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: signal and raise are async-signal-safe; the default
        // action ends the process.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
        return;
    }
    let message: &[u8] = b"\ninterrupted: stopping after this step and switching back; interrupt again to stop at once (the lock stays)\n";
    // SAFETY: write(2) is async-signal-safe; the buffer outlives the call.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
    }
}

fn catch_interrupts() {
    let handler = note_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic and calls
    // async-signal-safe functions.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Everything a step needs to know besides the host.
struct Plan<'a> {
    activate: String,
    /// The unit the default activation reloads (`<binary>.service`); `None`
    /// with `--activate`, whose command is the user's to choose.
    reloaded_unit: Option<String>,
    service: String,
    timeout: Duration,
    lock_wait: Duration,
    /// `deploy --allow-downgrade`: a release older than a host's goes on.
    allow_downgrade: bool,
    ctx: &'a Ctx,
}

impl Where {
    fn hosts(&self, control: &TempFolder) -> Result<Vec<Host>> {
        if self.hosts.is_empty() {
            let root = self.root.as_ref().context(
                "no --root given: name the deploy root, e.g. --root /opt/app (and --host to deploy over ssh)",
            )?;
            if self.ssh_config.is_some() {
                bail!("--ssh-config is for --host deploys: add --host, or drop --ssh-config");
            }
            return Ok(vec![Host::local(root)?]);
        }
        self.hosts
            .iter()
            .map(|spec| {
                let (destination, root) = match spec.split_once(':') {
                    Some((destination, root)) => (destination, root.to_owned()),
                    None => (
                        spec.as_str(),
                        self.root
                            .as_ref()
                            .with_context(|| {
                                format!("--host {spec} has no root: pass --root DIR, or --host {spec}:DIR")
                            })?
                            .display()
                            .to_string(),
                    ),
                };
                Host::ssh(destination, &root, self.ssh_config.as_deref(), control.path())
            })
            .collect()
    }
}

impl Activation {
    fn plan<'a>(&self, ctx: &'a Ctx) -> Result<Plan<'a>> {
        let settings = &ctx.project.settings;
        let service = match &self.service {
            Some(service) => service.clone(),
            None => format!("127.0.0.1:{}", ctx.project.service_port()?),
        };
        Ok(Plan {
            activate: self
                .activate
                .clone()
                .unwrap_or_else(|| format!("systemctl reload {}", settings.binary)),
            reloaded_unit: self
                .activate
                .is_none()
                .then(|| format!("{}.service", settings.binary)),
            service,
            timeout: self.timeout,
            lock_wait: self.lock_wait,
            allow_downgrade: false,
            ctx,
        })
    }
}

impl Deploy {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let keep = self
            .keep
            .or(ctx.project.settings.keep_releases)
            .unwrap_or(5);
        if keep < 2 {
            bail!(
                "--keep {keep}: keep at least 2 releases, the current one and the one to roll back to"
            );
        }
        let control = TempFolder::new("xtask-ssh")?;
        let hosts = self.place.hosts(&control)?;
        let mut plan = self.activation.plan(ctx)?;
        plan.allow_downgrade = self.allow_downgrade;
        let units = units::inspect(&plan, &hosts, self.replace_units)?;
        // Everything about the release is checked before any host changes:
        // its signatures and provenance first, then its checksum and entries.
        let verify = |archive: &Path| self.check_signatures(ctx, archive);
        let source = match &self.archive {
            Some(archive) => source::from_archive(archive, &verify)?,
            None => {
                let target = match &self.target {
                    Some(spec) => {
                        targets::resolve(std::slice::from_ref(spec), &ctx.project.settings.targets)?
                            .remove(0)
                    }
                    None => targets::host_default(&ctx.stamp()?.host)?,
                };
                let manifest =
                    crate::artifacts::pipeline::binaries_for(ctx, std::slice::from_ref(&target))?;
                if ctx.dry_run && manifest.artifacts.is_empty() {
                    eprintln!("(dry run: nothing was built, so there is nothing to deploy)");
                    return Ok(());
                }
                let dist_dir = ctx.project.dist_dir();
                source::from_manifest(&dist_dir, &manifest, target.triple, &verify)
                    .with_context(|| format!("read {}", dist_dir.join(MANIFEST).display()))?
            }
        };
        // A release older than what any host runs is refused before any
        // host changes (and again under each host's lock).
        if !self.allow_downgrade {
            for host in &hosts {
                let state = State::read(ctx, host)?;
                order::check_forward(&state, &source, &host.label, false)?;
            }
        }
        if self.public_key.is_none() && ctx.project.settings.public_key.is_none() {
            eprintln!(
                "note: no public-key in [workspace.metadata.xtask], so the release's signatures are not checked (cargo xtask keygen makes a key pair)"
            );
        }
        catch_interrupts();
        let started = Instant::now();
        let batches = self.rollout.batches(hosts.len());
        if hosts.len() > 1 {
            state::start_rollout();
        }
        let outcome = self.roll_out(&plan, &hosts, &units, &source, keep, &batches);
        for host in &hosts {
            host.disconnect();
        }
        outcome?;
        for host in &hosts {
            host.disconnect();
        }
        println!(
            "deployed {} to {} in {:.2}s",
            source.name,
            hosts
                .iter()
                .map(|host| host.label.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

impl Deploy {
    /// Refuses an archive whose bundle or provenance is missing or does not
    /// verify against the public key, unless `--install-unverified`; with
    /// no public key configured there is nothing to check against.
    fn check_signatures(&self, ctx: &Ctx, archive: &Path) -> Result<Option<Identity>> {
        use crate::artifacts::checks as verify;
        let keys = verify::named_or_configured_keys(ctx, self.public_key.as_deref())?;
        // Without a key there is nothing to check against; `run` says so
        // once the release is otherwise in order.
        if keys.is_empty() {
            return Ok(None);
        }
        let signer = verify::first_signer(&keys, &verify::today(), |key| {
            Ok((verify::check_archive(archive, key), ()))
        })?;
        let name = archive.display();
        let failures = match signer {
            Ok((signer, ())) => {
                let identity = verify::signed_identity(archive, &signer.key)?;
                if identity.dirty && !self.allow_dirty {
                    bail!(
                        "refusing to deploy {name}: its signed provenance says it was built from a tree with uncommitted changes, so commit {} does not say what runs; build it from a clean tree (cargo xtask release), or pass --allow-dirty",
                        identity.commit
                    );
                }
                eprintln!(
                    "verified {name}: signed by {}, a subject of the provenance ({} at {})",
                    verify::describe_signer(signer),
                    identity.version,
                    identity.commit
                );
                return Ok(Some(identity));
            }
            Err(failures) => failures,
        };
        if self.install_unverified {
            eprintln!(
                "warning: --install-unverified: installing {name} although {}",
                failures.join("; ")
            );
            return Ok(None);
        }
        bail!(
            "refusing to deploy {name}: {}{}; it is not verified by {}: sign it (cargo xtask dist with the signing key), or pass --install-unverified to take the risk",
            failures[0],
            match failures.len() {
                1 => String::new(),
                more => format!(" (and {} more: cargo xtask verify {name})", more - 1),
            },
            verify::describe_keys(&keys)
        )
    }

    /// Deploys batch after batch; the first failure (or a canary out of
    /// bounds) stops the rollout and switches back every host already
    /// switched. The error's last words say which host, which step, and
    /// what was undone.
    fn roll_out(
        &self,
        plan: &Plan,
        hosts: &[Host],
        units: &[Units],
        source: &Source,
        keep: usize,
        batches: &[std::ops::Range<usize>],
    ) -> Result<()> {
        let mut switched: Vec<(&Host, Option<String>)> = Vec::new();
        for (number, batch) in batches.iter().enumerate() {
            let names: Vec<&str> = hosts[batch.clone()]
                .iter()
                .map(|host| host.label.as_str())
                .collect();
            let is_canary = number == 0 && self.rollout.canary().is_some();
            if batches.len() > 1 {
                say!(
                    "{} {}/{}: {}",
                    if is_canary { "canary" } else { "batch" },
                    number + 1,
                    batches.len(),
                    names.join(", ")
                );
            }
            let outcomes = rollout::run_batch(plan, &hosts[batch.clone()], |plan, index, host| {
                deploy_host(plan, host, &units[batch.start + index], source, keep)
            })?;
            let mut failure = None;
            for (host, outcome) in hosts[batch.clone()].iter().zip(outcomes) {
                match outcome {
                    Ok(from) => switched.push((host, from)),
                    Err(err) => failure = failure.or(Some(err)),
                }
            }
            if failure.is_none()
                && is_canary
                && let Some(soak) = self.rollout.canary()
            {
                let bounds = rollout::Bounds::of(&plan.ctx.project.settings);
                if let Err(err) = rollout::soak(plan, &hosts[0], soak, &bounds) {
                    let canary = switched.pop().expect("the canary was switched");
                    let undone = undo_canary(plan, canary, &source.name);
                    bail!(
                        "canary {}: {err:#}; {undone}; no other host was touched",
                        hosts[0].label
                    );
                }
            }
            if let Some(err) = failure {
                if switched.is_empty() {
                    return Err(err);
                }
                let undone = undo(plan, &switched, &source.name);
                bail!("{err:#}; {undone}");
            }
        }
        Ok(())
    }
}

/// Switches a canary out of bounds back to the release it left, and marks
/// the new one bad there; says what it did.
fn undo_canary(plan: &Plan, (host, from): (&Host, Option<String>), release: &str) -> String {
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
fn undo(plan: &Plan, switched: &[(&Host, Option<String>)], release: &str) -> String {
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
fn deploy_host(
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

fn deploy_locked(
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
fn place_release(ctx: &Ctx, host: &Host, source: &Source, state: &State) -> Result<()> {
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
fn check_free_space(ctx: &Ctx, host: &Host, source: &Source) -> Result<()> {
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
fn folder_size(folder: &Path) -> Result<u64> {
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
fn verify_release(ctx: &Ctx, host: &Host, folder: &str, source: &Source) -> Result<()> {
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
fn switch(ctx: &Ctx, host: &Host, release: &str) -> Result<()> {
    point(ctx, host, "current", release)
}

/// Points the symlink `link` of the root at `releases/<release>`, by rename.
fn point(ctx: &Ctx, host: &Host, link: &str, release: &str) -> Result<()> {
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
fn mark_proven(ctx: &Ctx, host: &Host, state: &State, release: &str) -> Result<()> {
    if state.proven.as_deref() == Some(release) && !ctx.dry_run {
        return Ok(());
    }
    point(ctx, host, state::PROVEN, release)
        .with_context(|| format!("record {release} as proven on {}", host.label))
}

/// Before a switch: the release `current` names now is the one to come back
/// to. (`recover` has made `current` the proven one if there was a record;
/// a root deployed by an older xtask has none yet.)
fn record_proven_before_switch(ctx: &Ctx, host: &Host, state: &State) -> Result<()> {
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
fn recover(plan: &Plan, host: &Host, state: State) -> Result<State> {
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

/// The version and commit in a release name as `deploy` writes it,
/// `<version>-<short commit>` (`0.1.0-abc1234`).
fn named_identity(release: &str) -> Option<(&str, &str)> {
    let (version, commit) = release.rsplit_once('-')?;
    let is_commit =
        (7..=40).contains(&commit.len()) && commit.bytes().all(|byte| byte.is_ascii_hexdigit());
    is_commit.then_some((version, commit))
}

/// The version and commit of a release on a host: from its name when
/// `deploy` put it there, else (a release unpacked by hand, named as its
/// archive, `app-0.1.0-x86_64-unknown-linux-musl`) from its binary's
/// `--version --json`, run on the host.
fn release_identity(ctx: &Ctx, host: &Host, release: &str) -> Result<(String, String)> {
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
enum Interrupt {
    Stop,
    Finish,
}

/// Waits until the service answers `/readyz` with 200 and `/version` with
/// `commit` (full or short); `timeout` zero tries once.
fn prove(
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
fn prune(ctx: &Ctx, host: &Host, keep: usize, deployed: &str) -> Result<()> {
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
enum Undo {
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
fn rollback_host(plan: &Plan, host: &Host, to: Option<&str>, why: Undo) -> Result<()> {
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

impl Rollback {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        if let Some(to) = &self.to {
            crate::names::component("--to", to)?;
        }
        let control = TempFolder::new("xtask-ssh")?;
        let hosts = self.place.hosts(&control)?;
        let plan = self.activation.plan(ctx)?;
        for (host, units) in hosts.iter().zip(units::inspect(&plan, &hosts, false)?) {
            if units == Units::Missing {
                bail!(
                    "{}: {}.service is not installed, so there is nothing to roll back: `cargo xtask deploy` installs it",
                    host.label,
                    ctx.project.settings.binary
                );
            }
        }
        catch_interrupts();
        let mut result = Ok(());
        for host in &hosts {
            result = rollback_host(&plan, host, self.to.as_deref(), Undo::Rollback);
            if result.is_err() {
                break;
            }
        }
        for host in &hosts {
            host.disconnect();
        }
        result
    }
}

impl Releases {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let control = TempFolder::new("xtask-ssh")?;
        let hosts = self.place.hosts(&control)?;
        let mut report = Vec::new();
        for host in &hosts {
            let state = State::read(ctx, host)?;
            let bad = state.bad();
            let previous = state.previous_good();
            let releases: Vec<serde_json::Value> = state
                .releases
                .iter()
                .map(|name| {
                    // A release whose binary cannot say is listed without.
                    let (version, commit) =
                        release_identity(ctx, host, name).unwrap_or_else(|err| {
                            eprintln!("warning: {err:#}");
                            (String::new(), String::new())
                        });
                    serde_json::json!({
                        "name": name,
                        "version": version,
                        "commit": commit,
                        "deployed": state.deployed_at(name),
                        "current": state.current.as_deref() == Some(name.as_str()),
                        "previous": previous.as_deref() == Some(name.as_str()),
                        "bad": bad.contains(name),
                    })
                })
                .collect();
            report.push(serde_json::json!({
                "host": host.label,
                "root": host.root,
                "releases": releases,
            }));
            host.disconnect();
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(());
        }
        for host in &report {
            println!(
                "{} {}",
                host["host"].as_str().unwrap_or(""),
                host["root"].as_str().unwrap_or("")
            );
            let releases = host["releases"].as_array().cloned().unwrap_or_default();
            if releases.is_empty() {
                println!("  no releases");
            }
            for release in releases {
                let marks: Vec<&str> = ["current", "previous", "bad"]
                    .into_iter()
                    .filter(|mark| release[*mark] == true)
                    .collect();
                println!(
                    "  {:<24} version {:<10} commit {:<9} deployed {:<21} {}",
                    release["name"].as_str().unwrap_or(""),
                    release["version"].as_str().unwrap_or(""),
                    release["commit"].as_str().unwrap_or(""),
                    release["deployed"].as_str().unwrap_or("never"),
                    marks.join(" ")
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
