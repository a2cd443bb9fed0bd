//! `cargo xtask verify`: a release folder, an archive or a pushed image
//! checked against the project's public key (or `--public-key`), with one
//! `FAIL` line per problem. The checks are `artifacts::checks`, which
//! `publish` and `deploy` run too.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::artifacts::checks::{
    Missing, check_archive, check_folder, check_image, describe_keys, describe_signer,
    first_signer, folder_of, named_or_configured_keys, signed_identity_in, today,
};
use crate::exec::Ctx;
use crate::signing::PublicKey;

#[derive(clap::Args, Debug)]
pub struct Verify {
    /// A release folder, an archive, or an image REGISTRY/NAME:TAG
    /// [default: target/dist]
    #[arg(value_name = "FOLDER|ARCHIVE|IMAGE")]
    what: Option<String>,
    /// The public key to check against [default: public-key of
    /// [workspace.metadata.xtask]]
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
    /// Read the image without TLS verification from a registry not on
    /// loopback
    #[arg(long)]
    insecure_registry: bool,
    /// A folder: files SHA256SUMS lists and the folder lacks pass (a
    /// download without the bare binaries, which are not published)
    #[arg(long)]
    ignore_missing: bool,
    /// Pass a release whose signed provenance says it was built from a
    /// tree with uncommitted changes
    #[arg(long)]
    allow_dirty: bool,
}

impl Verify {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let keys = named_or_configured_keys(ctx, self.public_key.as_deref())?;
        if keys.is_empty() {
            bail!(
                "no public key: pass --public-key FILE, or name one as public-key in [workspace.metadata.xtask] (cargo xtask keygen makes a pair)"
            );
        }
        let what = self
            .what
            .unwrap_or_else(|| ctx.project.dist_dir().display().to_string());
        let path = Path::new(&what);
        let missing = if self.ignore_missing {
            Missing::Pass
        } else {
            Missing::Fail
        };
        let check = |key: &PublicKey| -> Result<(Vec<String>, String)> {
            if path.is_dir() {
                Ok(check_folder(path, key, missing))
            } else if path.is_file() {
                Ok((
                    check_archive(path, key),
                    format!("{what}: bundle and provenance"),
                ))
            } else if what.contains('/') && !what.starts_with('.') && !what.starts_with('/') {
                check_image(ctx, &what, key, self.insecure_registry)
            } else {
                bail!("{what} is neither a folder, a file nor an image REGISTRY/NAME:TAG");
            }
        };
        let (signer, checked) = match first_signer(&keys, &today(), check)? {
            Ok(found) => found,
            Err(failures) => {
                for failure in &failures {
                    eprintln!("FAIL {failure}");
                }
                bail!(
                    "{} failed verification against {}: {} problem{} (listed above)",
                    what,
                    describe_keys(&keys),
                    failures.len(),
                    if failures.len() == 1 { "" } else { "s" }
                );
            }
        };
        // Signed, but from a tree with uncommitted changes: its commit does
        // not say what was built.
        if !self.allow_dirty && (path.is_dir() || path.is_file()) {
            let folder = if path.is_dir() { path } else { folder_of(path) };
            let identity = signed_identity_in(folder, &signer.key)?;
            if identity.dirty {
                eprintln!(
                    "FAIL the signed provenance says the release was built from a tree with uncommitted changes, so commit {} does not say what was built (pass --allow-dirty to accept it)",
                    identity.commit
                );
                bail!("{what} failed verification: built from a dirty tree (listed above)");
            }
        }
        println!("verified {checked} against {}", describe_signer(signer));
        Ok(())
    }
}
