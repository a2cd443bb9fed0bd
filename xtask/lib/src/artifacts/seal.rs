//! Sealing a dist folder: every task that changes what it holds (`dist`,
//! `release`, `release --merge`, `image`, `k8s`) ends here, which writes
//! `SHA256SUMS` and `dist-manifest.json` and, with a signing key, the
//! signatures, in this order:
//!
//! 1. a Sigstore bundle `<file>.sigstore.json` for every archive, SBOM and
//!    OCI archive;
//! 2. the SLSA provenance `<name>-<version>.intoto.jsonl` over every
//!    artifact, in a DSSE envelope;
//! 3. `SHA256SUMS`, which lists the artifacts, the bundles and the
//!    provenance;
//! 4. `SHA256SUMS.sig` (SSH signature) and `SHA256SUMS.sigstore.json`,
//!    which `SHA256SUMS` cannot list but the manifest does.
//!
//! Without a key the signatures of an earlier run are removed, since the
//! folder they signed has changed.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::artifacts::provenance;
use crate::exec::Ctx;
use crate::manifest::{Artifact, ArtifactKind, MANIFEST, Manifest, SHA256SUMS};
use crate::signing::formats;
use crate::signing::{self, PrivateKey};
use crate::util::write_atomically;

pub const SUMS_SSH_SIGNATURE: &str = "SHA256SUMS.sig";
pub const BUNDLE_SUFFIX: &str = ".sigstore.json";

/// Whether a task signs what it writes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// `release --split`: a runner's part is signed when the parts are
    /// merged, not before.
    Off,
    /// `dist`, `release`: they compile, so they never hold the key (see
    /// `signing::refuse_project_code_with_secrets`); `sign` signs what
    /// they built.
    Later,
    /// `image`, `k8s`: sign when a key is given.
    IfGiven,
    /// `release --merge`: a project that names a public key releases signed
    /// only.
    WhenConfigured,
    /// `sign`: the key must be given.
    Required,
}

/// The private key from the environment, checked against the project's
/// public key; read before anything is built, so a wrong passphrase fails
/// at once.
pub fn signing_key(ctx: &Ctx, signing: Signing) -> Result<Option<PrivateKey>> {
    if signing == Signing::Off {
        return Ok(None);
    }
    let configured = ctx.project.public_key()?;
    if signing == Signing::Later {
        if configured.is_some() {
            eprintln!(
                "note: not signed yet: sign it with `{}=… {}=… cargo xtask sign` (docs/signing.md)",
                signing::KEY_FILE_VAR,
                signing::PASSPHRASE_FILE_VAR
            );
        }
        return Ok(None);
    }
    let Some((key, source)) = PrivateKey::from_env()? else {
        let required = match signing {
            Signing::Required => true,
            Signing::WhenConfigured => configured.is_some(),
            _ => false,
        };
        if required {
            let why = match &configured {
                Some(public) => format!(
                    "the project's public-key ({}) says releases are signed",
                    public.key_id()
                ),
                None => "`sign` signs with the release key".to_owned(),
            };
            bail!(
                "{why}, and no signing key is given: set {} (or {}) and {} (or {})",
                signing::KEY_FILE_VAR,
                signing::KEY_VAR,
                signing::PASSPHRASE_FILE_VAR,
                signing::PASSPHRASE_VAR
            );
        }
        if configured.is_some() {
            eprintln!(
                "note: not signed: set {} and {} to sign (docs/signing.md)",
                signing::KEY_FILE_VAR,
                signing::PASSPHRASE_FILE_VAR
            );
        }
        return Ok(None);
    };
    if let Some(public) = &configured
        && public != key.public()
    {
        bail!(
            "the signing key in {source} (key id {}) is not the one public-key of [workspace.metadata.xtask] names ({}): use that key's private half, or point public-key at this key's",
            key.public().key_id(),
            public.key_id()
        );
    }
    eprintln!(
        "signing with the key in {source} (key id {})",
        key.public().key_id()
    );
    Ok(Some(key))
}

/// Whether an artifact of this kind gets a bundle of its own.
fn gets_bundle(kind: ArtifactKind) -> bool {
    matches!(
        kind,
        ArtifactKind::Archive
            | ArtifactKind::Sbom
            | ArtifactKind::OciArchive
            | ArtifactKind::Deb
            | ArtifactKind::Rpm
    )
}

/// Writes the signatures (with a key), `SHA256SUMS` and the manifest of
/// `folder`, whose artifacts `manifest` lists.
pub fn seal(
    ctx: &Ctx,
    folder: &Path,
    manifest: &mut Manifest,
    key: Option<&PrivateKey>,
) -> Result<()> {
    let (earlier, built): (Vec<Artifact>, Vec<Artifact>) = std::mem::take(&mut manifest.artifacts)
        .into_iter()
        .partition(|artifact| artifact.kind.is_signature());
    manifest.artifacts = built;
    let write = |path: &str, bytes: &[u8]| -> Result<Artifact> {
        write_atomically(&folder.join(path), bytes)?;
        Ok(Artifact::new(
            path,
            ArtifactKind::Signature,
            None,
            bytes,
            None,
        ))
    };
    if let Some(key) = key {
        let mut signatures = Vec::new();
        for artifact in manifest
            .artifacts
            .iter()
            .filter(|artifact| gets_bundle(artifact.kind))
        {
            let path = folder.join(&artifact.path);
            let bytes = std::fs::read(&path)
                .with_context(|| format!("read {} to sign it", path.display()))?;
            if crate::archive::sha256_hex(&bytes) != artifact.sha256 {
                bail!(
                    "{} changed after it was written: build again",
                    path.display()
                );
            }
            let mut bundle = write(
                &format!("{}{BUNDLE_SUFFIX}", artifact.path),
                &formats::bundle(key, &bytes),
            )?;
            bundle.target = artifact.target.clone();
            signatures.push(bundle);
        }
        let statement = provenance::statement(ctx, manifest)?;
        let mut envelope = write(
            &provenance::file_name(manifest),
            &formats::dsse_envelope(key, &statement),
        )?;
        envelope.kind = ArtifactKind::Provenance;
        signatures.push(envelope);
        manifest.artifacts.extend(signatures);
        manifest
            .artifacts
            .sort_by(|left, right| left.path.cmp(&right.path));
    }
    let sums = manifest.sha256sums();
    write_atomically(&folder.join(SHA256SUMS), sums.as_bytes())?;
    if let Some(key) = key {
        for (path, bytes) in [
            (
                SUMS_SSH_SIGNATURE.to_owned(),
                formats::ssh_signature(key, sums.as_bytes()),
            ),
            (
                format!("{SHA256SUMS}{BUNDLE_SUFFIX}"),
                formats::bundle(key, sums.as_bytes()),
            ),
        ] {
            let mut artifact = write(&path, &bytes)?;
            artifact.kind = ArtifactKind::ChecksumsSignature;
            manifest.artifacts.push(artifact);
        }
        manifest
            .artifacts
            .sort_by(|left, right| left.path.cmp(&right.path));
    }
    // Signatures of an earlier run that this one did not write again sign
    // a folder that has changed.
    for stale in earlier {
        if manifest
            .artifacts
            .iter()
            .all(|artifact| artifact.path != stale.path)
        {
            let _ = std::fs::remove_file(folder.join(&stale.path));
        }
    }
    write_atomically(&folder.join(MANIFEST), manifest.to_json()?.as_bytes())
}
