//! `cargo xtask sign`: signs what `dist`, `release` or `image` wrote in
//! `target/dist/`. Those tasks compile project code, so they never hold the
//! signing key; this one compiles nothing, so it may. The sealing itself is
//! `artifacts::seal`, which every task that changes the folder ends with.

use anyhow::{Context, Result, bail};

use crate::artifacts::seal::{Signing, seal, signing_key};
use crate::exec::Ctx;
use crate::manifest::{MANIFEST, Manifest};

/// `cargo xtask sign`: signs the release `dist`, `release` or `image` wrote
/// in `target/dist/`, as they would have: those tasks compile project code,
/// so they never hold the key; this one runs none, so it may.
#[derive(clap::Args, Debug)]
pub struct Sign {}

impl Sign {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let key = signing_key(ctx, Signing::Required)?;
        let dist = ctx.project.dist_dir();
        let manifest_path = dist.join(MANIFEST);
        let mut manifest = Manifest::require(&manifest_path).with_context(|| {
            format!(
                "nothing to sign in {}: build it first, without the signing secrets (`cargo xtask dist` or `release`)",
                dist.display()
            )
        })?;
        let stamp = ctx.stamp()?;
        if manifest.stamp.commit != stamp.commit || manifest.stamp.dirty != stamp.dirty {
            bail!(
                "{} was built from commit {}{}, and the tree is at {}{}: the provenance would describe another tree; build it again (`cargo xtask dist`), then sign",
                dist.display(),
                manifest.stamp.commit,
                if manifest.stamp.dirty {
                    " with changes"
                } else {
                    ""
                },
                stamp.commit,
                if stamp.dirty { " with changes" } else { "" }
            );
        }
        // What is signed is what the build wrote: a file changed since
        // would be signed as built.
        for artifact in manifest
            .artifacts
            .iter()
            .filter(|artifact| !artifact.kind.is_signature())
        {
            let path = dist.join(crate::names::relative_path("an artifact", &artifact.path)?);
            let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
            if crate::archive::sha256_hex(&bytes) != artifact.sha256 {
                bail!(
                    "{} changed after it was built: build again (`cargo xtask dist`), then sign",
                    path.display()
                );
            }
        }
        let key = key.context("no signing key")?;
        if ctx.dry_run {
            eprintln!("(dry run: would sign {})", dist.display());
            return Ok(());
        }
        seal(ctx, &dist, &mut manifest, Some(&key))?;
        println!(
            "signed {} with key id {}",
            dist.display(),
            key.public().key_id()
        );
        Ok(())
    }
}
