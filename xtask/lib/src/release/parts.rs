//! Releases built on many machines: `release --split` writes a
//! self-contained part for some targets (one CI runner's share), and
//! `release --merge` checks parts against their own checksums and each
//! other, then combines them into `target/dist/` exactly as one
//! `release` + `image` of all their targets on one machine would have
//! written it: the same `SHA256SUMS`, manifest and image index digest.
//!
//! A part is a folder:
//! - `part.json`: the package, version and version stamp it was built
//!   from, its targets, its artifacts as `dist-manifest.json` lists them
//!   (path, kind, size, sha256), and for each Linux target its image: the
//!   platform entry and the sha256 of each blob;
//! - the artifacts (archives, bare binaries, the release notes);
//! - `image/blobs/sha256/`: each Linux target's image manifest, config and
//!   layer. The merge writes the image index; no runner builds another's
//!   platform.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::archive::sha256_hex;
use crate::artifacts::oci::{self, Blobs, PlatformImage};
use crate::artifacts::pipeline;
use crate::artifacts::seal::{self, Signing};
use crate::exec::Ctx;
use crate::manifest::{Artifact, ImagePlatform, MANIFEST, Manifest, ManifestStamp};
use crate::targets::Target;

/// The part's own description, at the top of its folder.
pub const PART: &str = "part.json";
/// Bumped when a field changes meaning or disappears.
const FORMAT_VERSION: u32 = 1;
/// Where the image blobs of a part live, relative to the part.
const BLOBS: &str = "image/blobs/sha256";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub format_version: u32,
    pub name: String,
    pub version: String,
    pub stamp: ManifestStamp,
    /// Target triples, in the order they were asked for.
    pub targets: Vec<String>,
    /// As `dist-manifest.json` lists them, sorted by path.
    pub artifacts: Vec<Artifact>,
    /// One per Linux target.
    pub images: Vec<PartImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartImage {
    #[serde(flatten)]
    pub platform: ImagePlatform,
    pub os: String,
    pub architecture: String,
    /// The manifest, config and layer blobs, under `image/blobs/sha256/`.
    pub blobs: Vec<PartBlob>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartBlob {
    pub sha256: String,
    pub size: u64,
}

/// The default `--out` of `--split`: `target/dist-parts/<triples>`.
pub fn default_out(ctx: &Ctx, targets: &[Target]) -> PathBuf {
    let triples: Vec<&str> = targets.iter().map(|target| target.triple).collect();
    ctx.project
        .target_dir
        .join("dist-parts")
        .join(triples.join("+"))
}

/// Builds the release for `targets` (into `target/dist/`, as `release`
/// does), then writes it as a part into `out`.
pub fn split(ctx: &Ctx, targets: &[Target], notes: String, out: &Path) -> Result<()> {
    check_out_folder(out)?;
    pipeline::build_and_package(ctx, targets, Some(notes), Signing::Off)?;
    if ctx.dry_run {
        eprintln!("(dry run: no part is written to {})", out.display());
        return Ok(());
    }
    let dist_dir = ctx.project.dist_dir();
    let manifest = Manifest::require(&dist_dir.join(MANIFEST))?;
    let parent = out
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let staging = parent.join(format!(
        ".{}.tmp-{}",
        out.file_name()
            .context("--out names a folder")?
            .to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    let written = (|| {
        for artifact in &manifest.artifacts {
            let to = staging.join(&artifact.path);
            std::fs::create_dir_all(to.parent().expect("inside the staging folder"))
                .with_context(|| format!("create the folder of {}", to.display()))?;
            std::fs::copy(dist_dir.join(&artifact.path), &to)
                .with_context(|| format!("copy {} into the part", artifact.path))?;
        }
        let mut images = Vec::new();
        for target in targets
            .iter()
            .filter(|target| target.oci_platform().is_some())
        {
            let platform = oci::platform_image(&ctx.project, &dist_dir, &manifest, target)?;
            let folder = staging.join(BLOBS);
            std::fs::create_dir_all(&folder)
                .with_context(|| format!("create {}", folder.display()))?;
            let mut blobs = Vec::new();
            for (hex, bytes) in platform.blobs.iter() {
                std::fs::write(folder.join(hex), bytes)
                    .with_context(|| format!("write the image blob {hex}"))?;
                blobs.push(PartBlob {
                    sha256: hex.clone(),
                    size: bytes.len() as u64,
                });
            }
            images.push(PartImage {
                platform: platform.info,
                os: platform.os,
                architecture: platform.architecture,
                blobs,
            });
        }
        let part = Part {
            format_version: FORMAT_VERSION,
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            stamp: manifest.stamp.clone(),
            targets: targets
                .iter()
                .map(|target| target.triple.to_owned())
                .collect(),
            artifacts: manifest.artifacts.clone(),
            images,
        };
        let mut json = serde_json::to_string_pretty(&part)?;
        json.push('\n');
        std::fs::write(staging.join(PART), json).context("write part.json")?;
        Ok(part)
    })();
    let part = match written {
        Ok(part) => part,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(err);
        }
    };
    pipeline::swap_into_place(&staging, out)?;
    println!(
        "part {}: {} ({} artifacts, {} images) from {}",
        out.display(),
        part.targets.join(", "),
        part.artifacts.len(),
        part.images.len(),
        part.stamp.commit_short
    );
    Ok(())
}

/// `--out` may be new, empty, or an earlier part; anything else is a
/// folder of the user's that a rename would throw away.
fn check_out_folder(out: &Path) -> Result<()> {
    let Ok(mut entries) = std::fs::read_dir(out) else {
        if out.exists() {
            bail!(
                "--out {} is a file: name a new or empty folder",
                out.display()
            );
        }
        return Ok(());
    };
    if entries.next().is_some() && !out.join(PART).is_file() {
        bail!(
            "--out {} holds files that are not a release part: name a new or empty folder",
            out.display()
        );
    }
    Ok(())
}

/// A part read from its folder and checked against its own checksums.
struct ReadPart {
    folder: PathBuf,
    part: Part,
}

impl ReadPart {
    fn read(folder: &Path) -> Result<ReadPart> {
        let path = folder.join(PART);
        let text = std::fs::read_to_string(&path).map_err(|_| {
            anyhow::anyhow!(
                "{} is not a release part (no {PART}): make one with `cargo xtask release --target TARGET --split --out {}`",
                folder.display(),
                folder.display()
            )
        })?;
        let part: Part = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a readable {PART}", path.display()))?;
        if part.format_version != FORMAT_VERSION {
            bail!(
                "{} is a part of format {}, and this xtask reads format {FORMAT_VERSION}: split and merge with one commit's xtask",
                folder.display(),
                part.format_version
            );
        }
        let read = ReadPart {
            folder: folder.to_owned(),
            part,
        };
        read.verify()?;
        Ok(read)
    }

    fn verify(&self) -> Result<()> {
        for artifact in &self.part.artifacts {
            self.check_file(&artifact.path, artifact.size, &artifact.sha256)?;
        }
        for image in &self.part.images {
            for blob in &image.blobs {
                self.check_file(&format!("{BLOBS}/{}", blob.sha256), blob.size, &blob.sha256)?;
            }
            let manifest = image.platform.manifest_digest.trim_start_matches("sha256:");
            if !image.blobs.iter().any(|blob| blob.sha256 == manifest) {
                bail!(
                    "part {}: the {} image lacks its manifest blob {manifest}: split it again",
                    self.folder.display(),
                    image.platform.platform
                );
            }
        }
        Ok(())
    }

    fn check_file(&self, relative: &str, size: u64, sha256: &str) -> Result<()> {
        let inside = Path::new(relative)
            .components()
            .all(|component| matches!(component, Component::Normal(_)));
        if !inside {
            bail!(
                "part {}: `{relative}` is not a path inside the part",
                self.folder.display()
            );
        }
        let path = self.folder.join(relative);
        let bytes = std::fs::read(&path).map_err(|err| {
            anyhow::anyhow!(
                "part {}: {relative} is missing ({err}): download the part again",
                self.folder.display()
            )
        })?;
        let actual = sha256_hex(&bytes);
        if bytes.len() as u64 != size || actual != sha256 {
            bail!(
                "part {}: {relative} does not match its checksum ({} bytes, sha256 {}, expected {size} bytes, sha256 {}): download the part again",
                self.folder.display(),
                bytes.len(),
                &actual[..16],
                &sha256[..sha256.len().min(16)]
            );
        }
        Ok(())
    }

    /// The artifacts and image of one target: what two parts holding the
    /// same target must agree on.
    fn share_of(&self, triple: &str) -> (Vec<&Artifact>, Option<&PartImage>) {
        let artifacts = self
            .part
            .artifacts
            .iter()
            .filter(|artifact| artifact.target.as_deref() == Some(triple))
            .collect();
        let image = self
            .part
            .images
            .iter()
            .find(|image| image.platform.target == triple);
        (artifacts, image)
    }
}

/// The part folders named: a part itself, or a folder whose subfolders are
/// parts (what CI's artifact download makes), taken in name order.
fn expand(folders: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut parts = Vec::new();
    for folder in folders {
        if folder.join(PART).is_file() || !folder.is_dir() {
            parts.push(folder.clone());
            continue;
        }
        let mut inside: Vec<PathBuf> = std::fs::read_dir(folder)
            .with_context(|| format!("list {}", folder.display()))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.join(PART).is_file())
            .collect();
        if inside.is_empty() {
            // Reported as "not a release part" by the reader.
            parts.push(folder.clone());
        }
        inside.sort();
        parts.extend(inside);
    }
    Ok(parts)
}

/// The first field in which two parts' builds differ, as (name, left, right).
fn first_difference(left: &Part, right: &Part) -> Option<(&'static str, String, String)> {
    let (a, b) = (&left.stamp, &right.stamp);
    let fields: [(&str, String, String); 9] = [
        ("package name", left.name.clone(), right.name.clone()),
        ("version", left.version.clone(), right.version.clone()),
        ("commit", a.commit.clone(), b.commit.clone()),
        ("rustc", a.rustc.clone(), b.rustc.clone()),
        (
            "source date",
            a.source_date_epoch.to_string(),
            b.source_date_epoch.to_string(),
        ),
        ("commit time", a.commit_time.clone(), b.commit_time.clone()),
        ("describe", a.describe.clone(), b.describe.clone()),
        ("branch", a.branch.clone(), b.branch.clone()),
        ("dirty", a.dirty.to_string(), b.dirty.to_string()),
    ];
    fields.into_iter().find(|(_, left, right)| left != right)
}

/// Checks every part, then writes `target/dist/` from them in one swap.
pub fn merge(ctx: &Ctx, folders: &[PathBuf], allow_dirty: bool) -> Result<()> {
    let mut parts = Vec::new();
    for folder in expand(folders)? {
        parts.push(ReadPart::read(&folder)?);
    }
    let first = &parts[0];
    for other in &parts[1..] {
        if let Some((field, left, right)) = first_difference(&first.part, &other.part) {
            bail!(
                "parts {} and {} disagree on the {field} ({left} against {right}): build every part from one commit with one toolchain",
                first.folder.display(),
                other.folder.display()
            );
        }
    }
    if first.part.version != ctx.project.version {
        bail!(
            "the parts are of version {}, but Cargo.toml says {}: merge in a checkout of the commit they were built from",
            first.part.version,
            ctx.project.version
        );
    }
    if let Some(dirty) = parts.iter().find(|read| read.part.stamp.dirty)
        && !allow_dirty
    {
        bail!(
            "part {} was built from a tree with uncommitted changes: build it from a clean checkout, or pass --allow-dirty",
            dirty.folder.display()
        );
    }

    // Each target once; a target in two parts must be the same bytes.
    let mut owner: BTreeMap<&str, &ReadPart> = BTreeMap::new();
    let mut artifacts: BTreeMap<&str, &Artifact> = BTreeMap::new();
    let mut images: Vec<(&ReadPart, &PartImage)> = Vec::new();
    for read in &parts {
        for triple in &read.part.targets {
            if let Some(earlier) = owner.get(triple.as_str()) {
                if earlier.share_of(triple) != read.share_of(triple) {
                    bail!(
                        "parts {} and {} both hold {triple}, with different bytes: build each target once, from one commit",
                        earlier.folder.display(),
                        read.folder.display()
                    );
                }
                eprintln!(
                    "{triple}: {} holds the same bytes as {}, taken once",
                    read.folder.display(),
                    earlier.folder.display()
                );
                continue;
            }
            owner.insert(triple, read);
            let (share, image) = read.share_of(triple);
            for artifact in share {
                artifacts.insert(&artifact.path, artifact);
            }
            if let Some(image) = image {
                images.push((read, image));
            }
        }
        // What belongs to no target (the release notes) must agree too.
        for artifact in read.part.artifacts.iter().filter(|a| a.target.is_none()) {
            match artifacts.get(artifact.path.as_str()) {
                Some(earlier) if earlier.sha256 != artifact.sha256 => bail!(
                    "parts {} and {} hold different {}: build every part from one commit",
                    first.folder.display(),
                    read.folder.display(),
                    artifact.path
                ),
                Some(_) => {}
                None => {
                    artifacts.insert(&artifact.path, artifact);
                }
            }
        }
    }
    let from_part = |path: &str| -> &ReadPart {
        parts
            .iter()
            .find(|read| read.part.artifacts.iter().any(|a| a.path == path))
            .expect("every artifact comes from a part")
    };

    // The index lists platforms in the order of the settings' targets, as
    // `image` does on one machine.
    let order = |triple: &str| {
        ctx.project
            .settings
            .targets
            .iter()
            .position(|listed| listed == triple)
            .unwrap_or(usize::MAX)
    };
    images.sort_by_key(|(_, image)| (order(&image.platform.target), image.platform.target.clone()));

    let targets: Vec<&str> = owner.keys().copied().collect();
    if ctx.dry_run {
        eprintln!(
            "(dry run: {} parts check out, for {}; nothing is written)",
            parts.len(),
            targets.join(", ")
        );
        return Ok(());
    }
    // The parts check out; the key is read before anything is written.
    let key = seal::signing_key(ctx, Signing::WhenConfigured)?;
    let dist_dir = ctx.project.dist_dir();
    let staging = ctx
        .project
        .target_dir
        .join(format!(".dist-merge-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let written = (|| {
        for path in artifacts.keys() {
            let to = staging.join(path);
            std::fs::create_dir_all(to.parent().expect("inside the staging folder"))
                .with_context(|| format!("create the folder of {}", to.display()))?;
            std::fs::copy(from_part(path).folder.join(path), &to)
                .with_context(|| format!("copy {path} from its part"))?;
        }
        let stamp = first.part.stamp.clone();
        let manifest = Manifest::assembled(
            &first.part.name,
            &first.part.version,
            stamp,
            artifacts
                .values()
                .map(|artifact| (*artifact).clone())
                .collect(),
        );
        let mut manifest = manifest;
        if !images.is_empty() {
            let mut platforms = Vec::new();
            for (read, image) in &images {
                let mut blobs = Blobs::default();
                for blob in &image.blobs {
                    let path = read.folder.join(BLOBS).join(&blob.sha256);
                    blobs.insert(
                        std::fs::read(&path).with_context(|| format!("read {}", path.display()))?,
                    );
                }
                platforms.push(PlatformImage {
                    info: image.platform.clone(),
                    os: image.os.clone(),
                    architecture: image.architecture.clone(),
                    blobs,
                });
            }
            let reference = format!("{}:{}", ctx.project.settings.image, ctx.project.version);
            manifest = oci::write_image(&ctx.project, &staging, manifest, platforms, &reference)?;
        }
        seal::seal(ctx, &staging, &mut manifest, key.as_ref())?;
        ctx.check_dist(&staging)
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(err);
    }
    pipeline::swap_into_place(&staging, &dist_dir)?;
    let manifest = Manifest::require(&dist_dir.join(MANIFEST))?;
    pipeline::print_summary(&dist_dir, &manifest);
    oci::print_image(&dist_dir, &manifest);
    eprintln!(
        "merged {} parts: {} from {}",
        parts.len(),
        targets.join(", "),
        manifest.stamp.commit_short
    );
    Ok(())
}

/// `release --matrix`: the release targets as a JSON array, for a CI
/// matrix (`fromJSON`); under GitHub Actions also appended to
/// `$GITHUB_OUTPUT` as `targets=`, so the workflow needs no shell.
pub fn print_matrix(ctx: &Ctx) -> Result<()> {
    let json = serde_json::to_string(&ctx.project.settings.targets)?;
    println!("{json}");
    if let Some(output) = std::env::var_os("GITHUB_OUTPUT").filter(|path| !path.is_empty()) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&output)
            .with_context(|| format!("open $GITHUB_OUTPUT ({})", Path::new(&output).display()))?;
        writeln!(file, "targets={json}").context("write to $GITHUB_OUTPUT")?;
    }
    Ok(())
}
