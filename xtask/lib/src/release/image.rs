//! `cargo xtask image`: a multi-platform OCI image of the static binaries
//! `dist` built (assembled by `oci`), loaded into podman with `--load` and
//! pushed to a registry with `--push` (`registry`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::artifacts::oci::{self, LAYOUT, archive_name};
use crate::artifacts::pipeline;
use crate::artifacts::registry;
use crate::artifacts::seal::{self, Signing};
use crate::exec::Ctx;
use crate::manifest::{ImageInfo, MANIFEST};
use crate::targets::{self, Target};
use crate::tools::{self, Tool};
use crate::util::write_atomically;

#[derive(clap::Args, Debug)]
pub struct Image {
    /// Target alias or triple, repeatable; static Linux targets only
    /// [default: the musl targets in [workspace.metadata.xtask] targets]
    #[arg(long = "target", value_name = "TARGET")]
    targets: Vec<String>,
    /// Image reference NAME:TAG [default: <image setting>:<version>]
    #[arg(long, value_name = "NAME:TAG")]
    tag: Option<String>,
    /// Load the built image into podman (or docker)
    #[arg(long)]
    load: bool,
    /// Push every platform with skopeo, then check the digest the registry
    /// serves [default: the --tag reference; the tag defaults to its tag]
    #[arg(
        long,
        value_name = "REGISTRY/NAME[:TAG]",
        num_args = 0..=1,
        default_missing_value = ""
    )]
    push: Option<String>,
    /// Push without TLS verification to a registry not on loopback (loopback
    /// registries never use TLS)
    #[arg(long, requires = "push")]
    insecure_registry: bool,
    /// Also push the tag `latest` (from a clean tree at the version tag only)
    #[arg(long, requires = "push")]
    latest: bool,
}

impl Image {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let settings = &ctx.project.settings;
        let targets = if self.targets.is_empty() {
            let matrix = targets::resolve(&settings.targets, &settings.targets)?;
            let linux: Vec<Target> = matrix
                .into_iter()
                .filter(|target| target.oci_platform().is_some())
                .collect();
            if linux.is_empty() {
                bail!(
                    "no static Linux target in [workspace.metadata.xtask] targets: add x86_64-unknown-linux-musl, or pass --target"
                );
            }
            linux
        } else {
            targets::resolve(&self.targets, &settings.targets)?
        };
        if let Some(target) = targets
            .iter()
            .find(|target| target.oci_platform().is_none())
        {
            bail!(
                "{} cannot go into an image: images hold static Linux binaries, use x86_64 or aarch64 (the musl targets)",
                target.zig_spec()
            );
        }
        let reference = self
            .tag
            .clone()
            .unwrap_or_else(|| format!("{}:{}", settings.image, ctx.project.version));
        check_reference(&reference)?;
        let load_tool = if self.load {
            Some(container_engine()?)
        } else {
            None
        };
        let push = match &self.push {
            Some(destination) => Some(self.push_options(ctx, destination, &reference)?),
            None => None,
        };
        let skopeo = match (&push, ctx.dry_run) {
            (None, _) => None,
            // A dry run prints the push even where skopeo is not installed.
            (Some(_), true) => Some(tools::find(Tool::Skopeo).unwrap_or_else(|| "skopeo".into())),
            (Some(_), false) => Some(tools::require(Tool::Skopeo)?),
        };

        // A wrong passphrase fails before anything is built or pushed.
        let key = if ctx.dry_run {
            None
        } else {
            seal::signing_key(ctx, Signing::IfGiven)?
        };
        let manifest = pipeline::binaries_for(ctx, &targets)?;
        let dist_dir = ctx.project.dist_dir();
        if ctx.dry_run {
            eprintln!("(dry run: no image is written)");
            if let (Some(push), Some(skopeo)) = (&push, &skopeo) {
                let image = ImageInfo {
                    reference: reference.clone(),
                    index_digest: "sha256:<the index digest>".to_owned(),
                    layout: LAYOUT.to_owned(),
                    archive: archive_name(&ctx.project),
                    platforms: Vec::new(),
                    pushed: Vec::new(),
                };
                let archive = dist_dir.join(&image.archive);
                registry::push(ctx, skopeo, &archive, &image, push, None)?;
            }
            return Ok(());
        }
        let platforms = targets
            .iter()
            .map(|target| oci::platform_image(&ctx.project, &dist_dir, &manifest, target))
            .collect::<Result<Vec<_>>>()?;
        let mut manifest =
            oci::write_image(&ctx.project, &dist_dir, manifest, platforms, &reference)?;
        seal::seal(ctx, &dist_dir, &mut manifest, key.as_ref())?;
        oci::print_image(&dist_dir, &manifest);
        let image = manifest
            .image
            .as_mut()
            .expect("write_image records the image");
        let archive = dist_dir.join(&image.archive);
        if let Some(engine) = load_tool {
            ctx.run(cmd!(ctx.sh, "{engine} load -i {archive}"))
                .context("load the image")?;
        }
        if let (Some(push), Some(skopeo)) = (&push, &skopeo) {
            let pushed = registry::push(ctx, skopeo, &archive, image, push, key.as_ref())?;
            image
                .pushed
                .retain(|earlier| pushed.iter().all(|now| now.tag != earlier.tag));
            image.pushed.extend(pushed);
            write_atomically(&dist_dir.join(MANIFEST), manifest.to_json()?.as_bytes())?;
        }
        Ok(())
    }

    /// Checks everything about the push that can be checked before the image
    /// is built: the destination, `--latest`, the credentials.
    fn push_options(
        &self,
        ctx: &Ctx,
        destination: &str,
        reference: &str,
    ) -> Result<registry::PushOptions> {
        let destination = if destination.is_empty() {
            reference
        } else {
            destination
        };
        if self.latest {
            let stamp = ctx.stamp()?;
            let version_tag = format!("v{}", ctx.project.version);
            if stamp.dirty {
                bail!(
                    "--latest moves `latest` only from a clean tree, and this one has uncommitted changes (see `git status`): commit or stash them"
                );
            }
            if !stamp.tags.contains(&version_tag) {
                bail!(
                    "--latest moves `latest` only from the release commit, and HEAD is not tagged {version_tag}: tag it, or push without --latest"
                );
            }
        }
        let default_tag = reference
            .rsplit_once(':')
            .map_or(ctx.project.version.as_str(), |(_, tag)| tag);
        registry::PushOptions::new(
            destination,
            default_tag,
            self.latest,
            self.insecure_registry,
        )
    }
}

/// podman, else docker: whichever can load an OCI archive here.
fn container_engine() -> Result<PathBuf> {
    tools::find(Tool::Podman)
        .or_else(|| which::which("docker").ok())
        .ok_or_else(|| tools::missing(Tool::Podman))
}

fn check_reference(reference: &str) -> Result<()> {
    let name_and_tag = reference.rsplit('/').next().unwrap_or(reference);
    let valid_tag = name_and_tag
        .split_once(':')
        .is_some_and(|(name, tag)| !name.is_empty() && !tag.is_empty() && tag.len() <= 128);
    let valid_chars = reference
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-/:".contains(c));
    if !valid_tag || !valid_chars || reference.chars().any(|c| c.is_ascii_uppercase()) {
        bail!(
            "`{reference}` is not an image reference: use lowercase NAME:TAG, e.g. ghcr.io/example/app:0.1.0"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_are_checked() {
        for good in [
            "ghcr.io/example/app:0.1.0",
            "app:latest",
            "localhost:5000/team/app:v1.2.3-rc.1",
        ] {
            assert!(check_reference(good).is_ok(), "{good}");
        }
        for bad in [
            "app",
            "ghcr.io/example/app",
            "App:1",
            "app:",
            "app:with space",
            "localhost:5000/app",
        ] {
            assert!(check_reference(bad).is_err(), "{bad}");
        }
    }
}
