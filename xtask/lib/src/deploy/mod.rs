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
mod interrupt;
pub mod k8s;
mod order;
mod output;
mod plan;
mod releases;
mod rollback;
mod rollout;
pub mod source;
mod state;
mod steps;
mod units;

pub use releases::Releases;
pub use rollback::Rollback;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::artifacts::provenance::Identity;
use crate::exec::Ctx;
use crate::manifest::MANIFEST;
use crate::targets;
use crate::util::TempFolder;
use host::Host;
use interrupt::catch_interrupts;
use plan::{Activation, Plan, Where};
use source::Source;
use state::State;
use steps::{deploy_host, undo, undo_canary};
use units::Units;

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
