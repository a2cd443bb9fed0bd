//! `dist-manifest.json`, the contract between tasks: what `dist` and
//! `release` built (the version stamp, and for each artifact its path, kind,
//! target, size and sha256), read back by later tasks instead of guessing
//! file names. `SHA256SUMS` is derived from it, in the format
//! `sha256sum -c` reads.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::archive::sha256_hex;
use crate::stamp::Stamp;

pub const MANIFEST: &str = "dist-manifest.json";
pub const SHA256SUMS: &str = "SHA256SUMS";
/// Bumped when a field changes meaning or disappears.
pub const FORMAT_VERSION: u32 = 1;

/// What each field means, by its JSON path (`[]` for an array's items): the
/// reference page `docs/reference/manifest.md` is written from this table
/// and an example manifest, and `cargo xtask docs` fails when a field has
/// no entry here or an entry names no field.
pub const FIELDS: &[(&str, &str)] = &[
    (
        "format_version",
        "The schema's version; bumped when a field changes meaning or disappears.",
    ),
    (
        "name",
        "The binary's name (`binary` of `[workspace.metadata.xtask]`).",
    ),
    (
        "version",
        "The version of the shipped crate, from its `Cargo.toml`.",
    ),
    (
        "stamp",
        "The version stamp every binary embeds, as `cargo xtask version --json` prints it, without the per-target fields.",
    ),
    (
        "stamp.describe",
        "`git describe` of the commit: the last tag, commits since, the short commit, `-dirty`.",
    ),
    ("stamp.commit", "The full commit hash."),
    ("stamp.commit_short", "The short commit hash."),
    ("stamp.branch", "The branch, or `HEAD` when detached."),
    (
        "stamp.dirty",
        "Whether the tree had uncommitted changes (`release` refuses them).",
    ),
    (
        "stamp.commit_time",
        "The commit's time, RFC 3339, UTC: the only time a build records.",
    ),
    (
        "stamp.source_date_epoch",
        "The commit's time in seconds: every timestamp in the archives and the image.",
    ),
    (
        "stamp.rustc",
        "`rustc --version` of the toolchain that built it.",
    ),
    (
        "artifacts",
        "Every file `dist`, `release`, `image` and `k8s` wrote, sorted by path; `SHA256SUMS` is derived from it.",
    ),
    (
        "artifacts[].path",
        "Relative to the folder holding the manifest, `/`-separated.",
    ),
    (
        "artifacts[].kind",
        "One of `archive`, `binary`, `release-notes`, `oci-archive`, `deb`, `kubernetes`, `sbom`; and, in a signed release, `signature` (a Sigstore bundle), `provenance` (the signed SLSA provenance) and `checksums-signature` (the signatures of `SHA256SUMS`, which it cannot list itself).",
    ),
    (
        "artifacts[].target",
        "The target triple, for artifacts built for one.",
    ),
    ("artifacts[].size", "Size in bytes."),
    ("artifacts[].sha256", "SHA-256 of the bytes, lowercase hex."),
    (
        "artifacts[].inputs",
        "A fingerprint of what the artifact was made from; equal inputs give equal bytes, so an unchanged artifact is not rewritten.",
    ),
    (
        "image",
        "The container image `cargo xtask image` built from the binaries; absent before.",
    ),
    (
        "image.reference",
        "`name:tag` the layout and archive refer to the image by.",
    ),
    (
        "image.index_digest",
        "The digest of the multi-platform image index: what a registry serves for `reference` once pushed.",
    ),
    (
        "image.layout",
        "The OCI image layout folder, relative to the manifest.",
    ),
    (
        "image.archive",
        "The OCI archive (a tar of the layout), relative to the manifest.",
    ),
    ("image.platforms", "One entry per platform of the index."),
    (
        "image.platforms[].platform",
        "`linux/amd64` or `linux/arm64`.",
    ),
    (
        "image.platforms[].target",
        "The target triple whose binary the platform's layer holds.",
    ),
    (
        "image.platforms[].manifest_digest",
        "The digest of this platform's image manifest.",
    ),
    (
        "image.platforms[].compressed_size",
        "Size of the layer blob, gzip-compressed.",
    ),
    (
        "image.platforms[].uncompressed_size",
        "Size of the layer tar.",
    ),
    (
        "image.platforms[].sbom_referrer",
        "The OCI 1.1 referrer that attaches the target's SBOM to this platform's manifest, when dist wrote one.",
    ),
    (
        "image.pushed",
        "Where `image --push` pushed this index, newest last; absent before a push.",
    ),
    ("image.pushed[].tag", "`registry/name:tag`, as pushed."),
    (
        "image.pushed[].pinned",
        "`registry/name@sha256:...`, the index digest read back from the registry: what `k8s` and deploy scripts pin.",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    pub version: String,
    pub stamp: ManifestStamp,
    /// Sorted by path.
    pub artifacts: Vec<Artifact>,
    /// The container image `cargo xtask image` built from the binaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `name:tag` the layout and archive refer to the image by.
    pub reference: String,
    /// The digest of the multi-platform image index: what a registry serves
    /// for `reference` once pushed.
    pub index_digest: String,
    /// The OCI image layout folder, relative to the manifest.
    pub layout: String,
    /// The OCI archive (a tar of the layout), relative to the manifest.
    pub archive: String,
    pub platforms: Vec<ImagePlatform>,
    /// Where `image --push` pushed this index, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pushed: Vec<PushedImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushedImage {
    /// `registry/name:tag`, as pushed.
    pub tag: String,
    /// `registry/name@sha256:...`, the index digest read back from the
    /// registry: what `k8s` and deploy scripts pin.
    pub pinned: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePlatform {
    /// `linux/amd64`, `linux/arm64`.
    pub platform: String,
    pub target: String,
    /// The digest of this platform's image manifest.
    pub manifest_digest: String,
    /// Compressed (the layer blob) and uncompressed (the layer tar) size.
    pub compressed_size: u64,
    pub uncompressed_size: u64,
    /// The OCI 1.1 referrer that attaches the target's SBOM to this
    /// platform's manifest (its `subject`), when dist wrote one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom_referrer: Option<String>,
}

/// The version stamp of the build, as `cargo xtask version --json` prints
/// it, without the per-target fields (each artifact names its target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestStamp {
    pub describe: String,
    pub commit: String,
    pub commit_short: String,
    pub branch: String,
    pub dirty: bool,
    pub commit_time: String,
    pub source_date_epoch: u64,
    pub rustc: String,
}

impl From<&Stamp> for ManifestStamp {
    fn from(stamp: &Stamp) -> ManifestStamp {
        ManifestStamp {
            describe: stamp.describe.clone(),
            commit: stamp.commit.clone(),
            commit_short: stamp.commit_short.clone(),
            branch: stamp.branch.clone(),
            dirty: stamp.dirty,
            commit_time: stamp.commit_time.clone(),
            source_date_epoch: stamp.source_date_epoch,
            rustc: stamp.rustc.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactKind {
    /// The `.tar.gz` or `.zip` users download.
    Archive,
    /// The bare executable, for tasks that repackage it (images).
    Binary,
    /// `RELEASE_NOTES.md`, written by `release`.
    ReleaseNotes,
    /// The OCI archive of the container image, written by `image`.
    OciArchive,
    /// A Debian package of one target's binary, written by `package`.
    Deb,
    /// An RPM package of one target's binary, written by `package`.
    Rpm,
    /// A Kubernetes manifest, alert rules file or kustomization, written
    /// by `k8s`.
    Kubernetes,
    /// A CycloneDX SBOM of one target's binary.
    Sbom,
    /// A Sigstore bundle (`<file>.sigstore.json`) signing one artifact.
    Signature,
    /// The signed SLSA provenance of the release (`.intoto.jsonl`).
    Provenance,
    /// A signature of `SHA256SUMS` (its bundle and its SSH signature),
    /// which `SHA256SUMS` cannot list.
    ChecksumsSignature,
}

impl ArtifactKind {
    /// Whether the artifact signs others rather than being built.
    pub fn is_signature(self) -> bool {
        matches!(
            self,
            ArtifactKind::Signature | ArtifactKind::Provenance | ArtifactKind::ChecksumsSignature
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Relative to the folder holding the manifest, `/`-separated.
    pub path: String,
    pub kind: ArtifactKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub size: u64,
    pub sha256: String,
    /// A fingerprint of what the artifact was made from; equal inputs give
    /// equal bytes, so an artifact with unchanged inputs is not rewritten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
}

impl Artifact {
    pub fn new(
        path: &str,
        kind: ArtifactKind,
        target: Option<&str>,
        bytes: &[u8],
        inputs: Option<String>,
    ) -> Artifact {
        Artifact {
            path: path.to_owned(),
            kind,
            target: target.map(str::to_owned),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
            inputs,
        }
    }
}

impl Manifest {
    pub fn new(name: &str, stamp: &Stamp, artifacts: Vec<Artifact>) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            name: name.to_owned(),
            version: stamp.version.clone(),
            stamp: ManifestStamp::from(stamp),
            artifacts,
            image: None,
        }
    }

    /// A manifest from parts built elsewhere: their stamp and artifacts.
    pub fn assembled(
        name: &str,
        version: &str,
        stamp: ManifestStamp,
        mut artifacts: Vec<Artifact>,
    ) -> Manifest {
        artifacts.sort_by(|left, right| left.path.cmp(&right.path));
        Manifest {
            format_version: FORMAT_VERSION,
            name: name.to_owned(),
            version: version.to_owned(),
            stamp,
            artifacts,
            image: None,
        }
    }

    /// A manifest with every optional field present, for the reference page.
    pub fn example() -> Manifest {
        let stamp = ManifestStamp {
            describe: "v1.4.0-3-g0123abc".to_owned(),
            commit: "0123abc".repeat(5) + "01234",
            commit_short: "0123abc".to_owned(),
            branch: "main".to_owned(),
            dirty: false,
            commit_time: "2026-01-02T03:04:05Z".to_owned(),
            source_date_epoch: 1_767_323_045,
            rustc: "rustc 1.91.0".to_owned(),
        };
        let target = "x86_64-unknown-linux-musl";
        let archive = Artifact::new(
            &format!("app-1.4.0-{target}.tar.gz"),
            ArtifactKind::Archive,
            Some(target),
            b"",
            Some("0".repeat(64)),
        );
        let digest = format!("sha256:{}", "0".repeat(64));
        let mut manifest = Manifest::assembled("app", "1.4.0", stamp, vec![archive]);
        manifest.image = Some(ImageInfo {
            reference: "app:1.4.0".to_owned(),
            index_digest: digest.clone(),
            layout: "image/oci".to_owned(),
            archive: "image/app-1.4.0.oci.tar".to_owned(),
            platforms: vec![ImagePlatform {
                platform: "linux/amd64".to_owned(),
                target: target.to_owned(),
                manifest_digest: digest.clone(),
                compressed_size: 1,
                uncompressed_size: 1,
                sbom_referrer: Some(digest.clone()),
            }],
            pushed: vec![PushedImage {
                tag: "registry.example/app:1.4.0".to_owned(),
                pinned: format!("registry.example/app@{digest}"),
            }],
        });
        manifest
    }

    /// The manifest in a dist folder, if there is a readable one of this
    /// format; anything else means "no previous output".
    pub fn read(path: &Path) -> Option<Manifest> {
        let text = std::fs::read_to_string(path).ok()?;
        let manifest: Manifest = serde_json::from_str(&text).ok()?;
        (manifest.format_version == FORMAT_VERSION).then_some(manifest)
    }

    /// Reads the manifest a task depends on, with an error that says how to
    /// produce it.
    pub fn require(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read {} (run `cargo xtask dist` first)", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    pub fn to_json(&self) -> Result<String> {
        let mut json = serde_json::to_string_pretty(self).context("serialize the manifest")?;
        json.push('\n');
        Ok(json)
    }

    /// `<sha256>  <path>` per artifact, sorted by path; the signatures of
    /// `SHA256SUMS` itself are left out.
    pub fn sha256sums(&self) -> String {
        self.artifacts
            .iter()
            .filter(|artifact| artifact.kind != ArtifactKind::ChecksumsSignature)
            .map(|artifact| format!("{}  {}\n", artifact.sha256, artifact.path))
            .collect()
    }

    /// The previous artifact at `path`, if it was made from the same inputs.
    pub fn unchanged(&self, path: &str, inputs: &str) -> Option<&Artifact> {
        self.artifacts
            .iter()
            .find(|artifact| artifact.path == path && artifact.inputs.as_deref() == Some(inputs))
    }

    /// The artifact of `kind` built for the target `triple` (its binary, its
    /// SBOM): how the tasks after `dist` find what it wrote.
    pub fn artifact_for(&self, kind: ArtifactKind, triple: &str) -> Option<&Artifact> {
        self.artifacts
            .iter()
            .find(|artifact| artifact.kind == kind && artifact.target.as_deref() == Some(triple))
    }
}

/// `SHA256SUMS` read back, as `path -> sha256`: a line is 64 lowercase
/// hexadecimal digits, two spaces and a path (as `sha256sum` writes it, and
/// [`Manifest::sha256sums`]), ended by `\n`. Any other line (a carriage
/// return included: it would be part of the name for `sha256sum -c`, and
/// dropped by a reader that takes `\r\n` as a line end), or a path listed
/// twice, is an error that names the line: a file whose lines disagree is not the one
/// `dist` wrote. The paths are not checked here: each reader gates them
/// (`names::relative_path`) before they become paths.
pub fn read_sums(text: &str) -> Result<BTreeMap<String, String>> {
    let mut sums = BTreeMap::new();
    for (number, line) in text
        .split('\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
    {
        if line.contains('\r') {
            anyhow::bail!(
                "line {} holds a carriage return: SHA256SUMS ends its lines with a line feed alone, as dist writes it",
                number + 1
            );
        }
        let well_formed = line.split_once("  ").filter(|(sum, path)| {
            sum.len() == 64
                && sum
                    .bytes()
                    .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
                && !path.is_empty()
        });
        let Some((sum, path)) = well_formed else {
            anyhow::bail!(
                "line {} is not `<sha256>  <path>` (64 lowercase hexadecimal digits, two spaces, a path): {:?}",
                number + 1,
                line.chars().take(120).collect::<String>()
            );
        };
        if sums.insert(path.to_owned(), sum.to_owned()).is_some() {
            anyhow::bail!("line {} lists {path:?} a second time", number + 1);
        }
    }
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_read_strictly() {
        let sum = "ab".repeat(32);
        let read = |text: &str| read_sums(text).map_err(|err| format!("{err:#}"));
        assert_eq!(
            read(&format!("{sum}  a.tar.gz\n{sum}  x/app\n"))
                .unwrap()
                .len(),
            2
        );
        for (text, expected) in [
            (format!("{sum}  a\r\n"), "line 1 holds a carriage return"),
            (
                format!("{sum}  a\n{sum}  a\n"),
                "line 2 lists \"a\" a second time",
            ),
            (format!("{sum} a\n"), "line 1 is not `<sha256>  <path>`"),
            (format!("{}  a\n", sum.to_uppercase()), "line 1 is not"),
            (format!("{sum}  \n"), "line 1 is not"),
        ] {
            let err = read(&text).expect_err(&text);
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    fn sample() -> Manifest {
        let stamp = Stamp {
            version: "0.1.0".into(),
            describe: "v0.1.0".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            commit_short: "0123456".into(),
            branch: "main".into(),
            dirty: false,
            commit_time: "2024-02-03T04:05:06+01:00".into(),
            source_date_epoch: 1_706_929_506,
            rustc: "rustc 1.95.0".into(),
            host: "x86_64-unknown-linux-gnu".into(),
            tags: vec!["v0.1.0".into()],
        };
        Manifest::new(
            "app",
            &stamp,
            vec![
                Artifact::new(
                    "app-0.1.0-x.tar.gz",
                    ArtifactKind::Archive,
                    Some("x"),
                    b"archive",
                    Some("in".into()),
                ),
                Artifact::new("x/app", ArtifactKind::Binary, Some("x"), b"binary", None),
            ],
        )
    }

    #[test]
    fn manifests_round_trip_and_list_checksums() {
        let manifest = sample();
        let json = manifest.to_json().unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), manifest);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["artifacts"][0]["kind"], "archive");
        assert_eq!(
            value["artifacts"][1].get("inputs"),
            None,
            "absent inputs are left out"
        );
        assert_eq!(value["stamp"]["source_date_epoch"], 1_706_929_506);
        assert_eq!(
            manifest.sha256sums(),
            format!(
                "{}  app-0.1.0-x.tar.gz\n{}  x/app\n",
                sha256_hex(b"archive"),
                sha256_hex(b"binary")
            )
        );
    }

    #[test]
    fn unchanged_artifacts_are_found_by_path_and_inputs() {
        let manifest = sample();
        assert!(manifest.unchanged("app-0.1.0-x.tar.gz", "in").is_some());
        assert!(manifest.unchanged("app-0.1.0-x.tar.gz", "other").is_none());
        assert!(manifest.unchanged("x/app", "in").is_none());
    }
}
