//! `cargo xtask publish`: the release in `target/dist/` (from `release`, or
//! `release --merge`) checked once more and published as a GitHub release
//! with the `gh` CLI: the archives, their SBOMs, `SHA256SUMS`,
//! `dist-manifest.json`, the OCI archive and, in a signed release, every
//! signature and the provenance as assets, the release notes as its text.
//! When the project names a public key, the signatures are checked again
//! first (`verify`). The release is created as a draft with every asset,
//! then published.
//!
//! It publishes only what a tag names: HEAD tagged `v<version>`, the tree
//! clean, and the release built from HEAD. Bare binaries are not uploaded
//! (every target's is called `app`, and the archives hold them);
//! `sha256sum -c --ignore-missing SHA256SUMS` checks a download.

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::archive::sha256_hex;
use crate::exec::Ctx;
use crate::manifest::{ArtifactKind, MANIFEST, Manifest, SHA256SUMS};
use crate::tools::{self, Tool};

#[derive(clap::Args, Debug)]
pub struct Publish {
    /// Create the GitHub release as a draft, to publish by hand
    #[arg(long)]
    draft: bool,
}

impl Publish {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let dist_dir = ctx.project.dist_dir();
        let manifest = Manifest::require(&dist_dir.join(MANIFEST))?;
        let stamp = ctx.stamp()?;
        let tag = format!("v{}", ctx.project.version);
        if !stamp.tags.contains(&tag) {
            bail!(
                "publish releases a tagged commit, and HEAD is not tagged {tag}: tag it (`git tag {tag}`), push the tag, and publish from there"
            );
        }
        if stamp.dirty {
            bail!(
                "the working tree has uncommitted changes (see `git status`): publish from a clean checkout of {tag}"
            );
        }
        if manifest.stamp.commit != stamp.commit || manifest.stamp.dirty {
            bail!(
                "{} holds a build of {}{}, not of {tag} ({}): run `cargo xtask release` (or `release --merge`) again",
                dist_dir.display(),
                manifest.stamp.commit_short,
                if manifest.stamp.dirty {
                    " with uncommitted changes"
                } else {
                    ""
                },
                stamp.commit_short
            );
        }
        let notes = manifest
            .artifacts
            .iter()
            .find(|artifact| artifact.kind == ArtifactKind::ReleaseNotes)
            .with_context(|| {
                format!(
                    "{} has no release notes: build it with `cargo xtask release --target ...` (dist does not write them)",
                    dist_dir.display()
                )
            })?;
        verify_checksums(&dist_dir, &manifest)?;
        match ctx.project.public_key()? {
            Some(key) => {
                let (failures, checked) = crate::artifacts::checks::check_folder(
                    &dist_dir,
                    &key,
                    crate::artifacts::checks::Missing::Fail,
                );
                if let Some(first) = failures.first() {
                    bail!(
                        "{} is not what key id {} signed: {first}{}; run the release again with the signing key",
                        dist_dir.display(),
                        key.key_id(),
                        if failures.len() > 1 {
                            format!(" (and {} more: cargo xtask verify)", failures.len() - 1)
                        } else {
                            String::new()
                        }
                    );
                }
                eprintln!("verified {checked} against key id {}", key.key_id());
            }
            None => eprintln!(
                "note: no public-key in [workspace.metadata.xtask]: the release is published unsigned"
            ),
        }

        let mut assets = vec![dist_dir.join(SHA256SUMS), dist_dir.join(MANIFEST)];
        assets.extend(
            manifest
                .artifacts
                .iter()
                .filter(|artifact| {
                    matches!(
                        artifact.kind,
                        ArtifactKind::Archive
                            | ArtifactKind::Sbom
                            | ArtifactKind::OciArchive
                            | ArtifactKind::Deb
                            | ArtifactKind::Rpm
                            | ArtifactKind::Signature
                            | ArtifactKind::Provenance
                            | ArtifactKind::ChecksumsSignature
                    )
                })
                .map(|artifact| dist_dir.join(&artifact.path)),
        );
        let gh = if ctx.dry_run {
            tools::find(Tool::Gh).unwrap_or_else(|| "gh".into())
        } else {
            tools::require(Tool::Gh)?
        };
        let title = format!("{} {}", ctx.project.settings.binary, ctx.project.version);
        let notes_file = dist_dir.join(&notes.path);
        // Draft first, with every asset, then published: a repository with
        // immutable releases refuses assets added after publishing, and
        // users never see a release with half its files.
        ctx.run_reporting(cmd!(
            ctx.sh,
            "{gh} release create {tag} --draft --verify-tag --title {title} --notes-file {notes_file} {assets...}"
        ))
        .with_context(|| format!("create the draft GitHub release {tag}"))?;
        if self.draft {
            eprintln!(
                "left {tag} as a draft: publish it on GitHub, or with `gh release edit {tag} --draft=false`"
            );
            return Ok(());
        }
        ctx.run_reporting(cmd!(ctx.sh, "{gh} release edit {tag} --draft=false"))
            .with_context(|| format!("publish the draft GitHub release {tag}"))
    }
}

/// Every artifact against the manifest, and `SHA256SUMS` against both, as
/// `sha256sum -c` would check them.
fn verify_checksums(dist_dir: &std::path::Path, manifest: &Manifest) -> Result<()> {
    let sums_path = dist_dir.join(SHA256SUMS);
    let sums = std::fs::read_to_string(&sums_path)
        .with_context(|| format!("read {}", sums_path.display()))?;
    if sums != manifest.sha256sums() {
        bail!(
            "{} does not list what {MANIFEST} does: the folder was edited; build the release again",
            sums_path.display()
        );
    }
    for artifact in &manifest.artifacts {
        let path = dist_dir.join(&artifact.path);
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        if sha256_hex(&bytes) != artifact.sha256 {
            bail!(
                "{} does not match its checksum in {SHA256SUMS}: build the release again",
                path.display()
            );
        }
    }
    eprintln!(
        "checked {} artifacts against {SHA256SUMS}",
        manifest.artifacts.len()
    );
    Ok(())
}
