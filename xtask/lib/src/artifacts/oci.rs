//! The image assembly of the release pipeline: a multi-platform OCI image of
//! the static binaries `dist` built, written directly as an OCI image layout (no Docker daemon,
//! no base image), plus an OCI archive of that layout for `podman load` and
//! `skopeo copy`.
//!
//! Each platform's image is one layer: the binary, a minimal `/etc/passwd`
//! and `/etc/group` with the non-root user 65532, and the sample config.
//! Every byte is derived from the binaries and the version stamp (layers are
//! `archive::tar` with the source date as mtime; JSON is written with sorted
//! keys), so two builds of one commit give the same image index digest.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::archive::{self, Entry, sha256_hex};
use crate::artifacts::pipeline;
use crate::manifest::{Artifact, ArtifactKind, ImageInfo, ImagePlatform, Manifest, ManifestStamp};
use crate::project::Project;
use crate::targets::Target;
use crate::util::write_atomically;

/// Where things go inside the image.
const BINARY_DIR: &str = "usr/local/bin";
const WORKING_DIR: &str = "app";
const USER: &str = "65532:65532";
/// The layout folder and archive names inside `target/dist/`.
pub const LAYOUT: &str = "image";

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// An SBOM referrer: an artifact manifest with the empty config (OCI 1.1).
const MEDIA_SBOM: &str = "application/vnd.cyclonedx+json";
const MEDIA_EMPTY: &str = "application/vnd.oci.empty.v1+json";

pub fn archive_name(project: &Project) -> String {
    format!("{}-{}.oci.tar", project.settings.binary, project.version)
}

/// Content-addressed blobs of the layout, by hex digest.
#[derive(Default)]
pub struct Blobs(BTreeMap<String, Vec<u8>>);

impl Blobs {
    /// Stores a blob and returns its OCI descriptor.
    fn add(&mut self, media_type: &str, bytes: Vec<u8>) -> Value {
        let digest = sha256_hex(&bytes);
        let descriptor = json!({"mediaType": media_type, "digest": format!("sha256:{digest}"), "size": bytes.len()});
        self.0.insert(digest, bytes);
        descriptor
    }

    /// Stores a blob read back from a part; its name is its digest.
    pub fn insert(&mut self, bytes: Vec<u8>) {
        self.0.insert(sha256_hex(&bytes), bytes);
    }

    pub fn get(&self, digest: &str) -> Option<&[u8]> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.0.get(hex).map(Vec::as_slice)
    }

    /// `(hex digest, bytes)`, sorted by digest.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Vec<u8>)> {
        self.0.iter()
    }
}

/// One platform's image: its manifest, config and layer blobs, and its
/// entry in the image index.
pub struct PlatformImage {
    pub info: ImagePlatform,
    pub os: String,
    pub architecture: String,
    pub blobs: Blobs,
}

impl PlatformImage {
    /// The layout's entry for the SBOM referrer, if there is one.
    fn referrer_descriptor(&self) -> Option<Value> {
        let digest = self.info.sbom_referrer.as_ref()?;
        let bytes = self.blobs.get(digest)?;
        Some(json!({
            "mediaType": MEDIA_MANIFEST,
            "artifactType": MEDIA_SBOM,
            "digest": digest,
            "size": bytes.len(),
        }))
    }

    /// The index entry that points at this platform's manifest.
    fn descriptor(&self) -> Value {
        let manifest = self
            .blobs
            .get(&self.info.manifest_digest)
            .expect("a platform image holds its manifest");
        json!({
            "mediaType": MEDIA_MANIFEST,
            "digest": self.info.manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": self.architecture, "os": self.os},
        })
    }
}

/// The labels and annotations of every image of one build, from the stamp
/// its binaries carry.
fn annotations(project: &Project, stamp: &ManifestStamp) -> Value {
    json!({
        "org.opencontainers.image.created": created(stamp),
        "org.opencontainers.image.revision": stamp.commit,
        "org.opencontainers.image.source": project.repository.clone().unwrap_or_default(),
        "org.opencontainers.image.title": project.settings.binary,
        "org.opencontainers.image.version": project.version,
    })
}

fn created(stamp: &ManifestStamp) -> String {
    if stamp.commit_time == crate::stamp::UNKNOWN {
        crate::util::rfc3339_utc(stamp.source_date_epoch)
    } else {
        stamp.commit_time.clone()
    }
}

/// The image of one target's binary, as `dist` recorded it in `manifest`.
pub fn platform_image(
    project: &Project,
    dist_dir: &Path,
    manifest: &Manifest,
    target: &Target,
) -> Result<PlatformImage> {
    let stamp = &manifest.stamp;
    let artifact = manifest
        .artifact_for(ArtifactKind::Binary, target.triple)
        .context("the dist manifest lost a binary")?;
    let binary = std::fs::read(dist_dir.join(&artifact.path))
        .with_context(|| format!("read {}", dist_dir.join(&artifact.path).display()))?;
    if sha256_hex(&binary) != artifact.sha256 {
        bail!(
            "{} changed since dist wrote it: run `cargo xtask dist` again",
            artifact.path
        );
    }
    let (os, architecture) = target
        .oci_platform()
        .context("only static Linux targets have an image")?;
    let annotations = annotations(project, stamp);
    let created = created(stamp);
    let mut blobs = Blobs::default();
    let layer_tar = archive::tar(
        None,
        &layer_entries(project, binary)?,
        stamp.source_date_epoch,
    )?;
    let diff_id = format!("sha256:{}", sha256_hex(&layer_tar));
    let uncompressed_size = layer_tar.len() as u64;
    let layer_gz = archive::gzip(&layer_tar)?;
    let compressed_size = layer_gz.len() as u64;
    let layer = blobs.add(MEDIA_LAYER, layer_gz);

    let config = json!({
        "created": created,
        "architecture": architecture,
        "os": os,
        "config": {
            "User": USER,
            "Entrypoint": [format!("/{BINARY_DIR}/{}", project.settings.binary)],
            "ExposedPorts": {format!("{}/tcp", project.service_port()?): {}},
            "Env": ["APP_ENV=prod", format!("PATH=/{BINARY_DIR}")],
            "WorkingDir": format!("/{WORKING_DIR}"),
            "Labels": annotations,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "cargo xtask image"}],
    });
    let config = blobs.add(MEDIA_CONFIG, serde_json::to_vec(&config)?);
    let image_manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config,
        "layers": [layer],
        "annotations": annotations,
    });
    let descriptor = blobs.add(MEDIA_MANIFEST, serde_json::to_vec(&image_manifest)?);
    let sbom_referrer = match manifest.artifact_for(ArtifactKind::Sbom, target.triple) {
        Some(sbom) => {
            let bytes = std::fs::read(dist_dir.join(&sbom.path))
                .with_context(|| format!("read {}", dist_dir.join(&sbom.path).display()))?;
            let mut layer = blobs.add(MEDIA_SBOM, bytes);
            layer["annotations"] = json!({"org.opencontainers.image.title": sbom.path});
            let empty = blobs.add(MEDIA_EMPTY, b"{}".to_vec());
            let referrer = json!({
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "artifactType": MEDIA_SBOM,
                "config": empty,
                "layers": [layer],
                "subject": descriptor,
                "annotations": {"org.opencontainers.image.created": created},
            });
            let referrer = blobs.add(MEDIA_MANIFEST, serde_json::to_vec(&referrer)?);
            Some(referrer["digest"].as_str().unwrap_or_default().to_owned())
        }
        None => None,
    };
    Ok(PlatformImage {
        info: ImagePlatform {
            platform: format!("{os}/{architecture}"),
            target: target.triple.to_owned(),
            manifest_digest: descriptor["digest"].as_str().unwrap_or_default().to_owned(),
            compressed_size,
            uncompressed_size,
            sbom_referrer,
        },
        os: os.to_owned(),
        architecture: architecture.to_owned(),
        blobs,
    })
}

/// Writes the image index over `platforms` (in their order) as a layout
/// folder and an OCI archive in `dist_dir`, and records it in the manifest
/// it returns (which the caller seals into the folder, `sign::seal`).
pub fn write_image(
    project: &Project,
    dist_dir: &Path,
    mut manifest: Manifest,
    platforms: Vec<PlatformImage>,
    reference: &str,
) -> Result<Manifest> {
    let stamp = manifest.stamp.clone();
    let annotations = annotations(project, &stamp);
    let mut blobs = Blobs::default();
    let mut platform_descriptors = Vec::new();
    let mut platform_infos = Vec::new();
    let mut referrers = Vec::new();
    for platform in platforms {
        platform_descriptors.push(platform.descriptor());
        referrers.extend(platform.referrer_descriptor());
        blobs.0.extend(platform.blobs.0);
        platform_infos.push(platform.info);
    }
    let platforms = platform_infos;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": platform_descriptors,
        "annotations": annotations,
    });
    let mut index_descriptor = blobs.add(MEDIA_INDEX, serde_json::to_vec(&index)?);
    let index_digest = index_descriptor["digest"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    index_descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": reference});
    // The referrers sit in the layout folder's own index beside the image,
    // as `oras attach` leaves them in a layout; the image index (and so its
    // digest) does not change. The archive's index names the image alone:
    // `podman load` and `skopeo copy oci-archive:` refuse an archive that
    // lists more than one manifest. Its blobs are the same.
    let archive_index = json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [index_descriptor.clone()]});
    let mut layout_manifests = vec![index_descriptor];
    layout_manifests.extend(referrers);
    let layout_index =
        json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": layout_manifests});

    let mut layout_files = vec![
        Entry {
            path: "oci-layout".into(),
            contents: br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            executable: false,
        },
        Entry {
            path: "index.json".into(),
            contents: serde_json::to_vec(&layout_index)?,
            executable: false,
        },
    ];
    for (digest, bytes) in blobs.0 {
        layout_files.push(Entry {
            path: format!("blobs/sha256/{digest}"),
            contents: bytes,
            executable: false,
        });
    }
    let mut archive_files = layout_files.clone();
    archive_files[1].contents = serde_json::to_vec(&archive_index)?;
    let oci_archive = archive::tar(None, &archive_files, stamp.source_date_epoch)?;
    let archive_name = archive_name(project);

    write_layout(dist_dir, &layout_files)?;
    write_atomically(&dist_dir.join(&archive_name), &oci_archive)?;

    manifest
        .artifacts
        .retain(|artifact| artifact.kind != ArtifactKind::OciArchive);
    manifest.artifacts.push(Artifact::new(
        &archive_name,
        ArtifactKind::OciArchive,
        None,
        &oci_archive,
        None,
    ));
    manifest
        .artifacts
        .sort_by(|left, right| left.path.cmp(&right.path));
    // Pushes of this very index stay true; those of another are gone.
    let pushed = manifest
        .image
        .take()
        .filter(|previous| previous.index_digest == index_digest)
        .map(|previous| previous.pushed)
        .unwrap_or_default();
    manifest.image = Some(ImageInfo {
        reference: reference.to_owned(),
        index_digest: index_digest.clone(),
        layout: LAYOUT.to_owned(),
        archive: archive_name.clone(),
        platforms,
        pushed,
    });

    Ok(manifest)
}

/// What `write_image` wrote, once it is in its place.
pub fn print_image(dist_dir: &Path, manifest: &Manifest) {
    let Some(image) = &manifest.image else {
        return;
    };
    println!("{}  index {}", image.reference, image.index_digest);
    for platform in &image.platforms {
        let binary = manifest
            .artifact_for(ArtifactKind::Binary, &platform.target)
            .map_or(0, |artifact| artifact.size);
        println!(
            "  {:<12} {}  layer {} bytes compressed, {} uncompressed (binary {binary})",
            platform.platform,
            platform.manifest_digest,
            platform.compressed_size,
            platform.uncompressed_size
        );
    }
    println!(
        "  layout {}  archive {}",
        dist_dir.join(&image.layout).display(),
        dist_dir.join(&image.archive).display()
    );
}

/// The files of one platform's layer.
fn layer_entries(project: &Project, binary: Vec<u8>) -> Result<Vec<Entry>> {
    let root = &project.root;
    let mut entries = vec![Entry {
        path: format!("{BINARY_DIR}/{}", project.settings.binary),
        contents: binary,
        executable: true,
    }];
    // The non-root user (65532) the image runs as, which the Kubernetes
    // objects name: the libraries' to keep in step, so compiled in.
    for (name, contents) in [
        (
            "passwd",
            include_bytes!("../../templates/image/passwd").as_slice(),
        ),
        (
            "group",
            include_bytes!("../../templates/image/group").as_slice(),
        ),
    ] {
        entries.push(Entry {
            path: format!("etc/{name}"),
            contents: contents.to_vec(),
            executable: false,
        });
    }
    for (name, contents) in pipeline::config_files(&root.join("config"))? {
        entries.push(Entry {
            path: format!("{WORKING_DIR}/config/{name}"),
            contents,
            executable: false,
        });
    }
    Ok(entries)
}

/// Writes the layout folder beside the old one and swaps it in.
fn write_layout(dist_dir: &Path, files: &[Entry]) -> Result<()> {
    let staging = dist_dir.join(format!(".{LAYOUT}-staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    for file in files {
        let path = staging.join(&file.path);
        std::fs::create_dir_all(path.parent().expect("layout files sit in a folder"))
            .with_context(|| format!("create the folder of {}", path.display()))?;
        std::fs::write(&path, &file.contents)
            .with_context(|| format!("write {}", path.display()))?;
    }
    let layout = dist_dir.join(LAYOUT);
    if layout.exists() {
        std::fs::remove_dir_all(&layout)
            .with_context(|| format!("remove the previous {}", layout.display()))?;
    }
    std::fs::rename(&staging, &layout)
        .with_context(|| format!("move the new layout into {}", layout.display()))
}

/// The digests of the manifests an image index (as a registry served it)
/// lists, each checked to be a digest before it names anything.
pub fn index_manifest_digests(index: &[u8]) -> Result<Vec<String>> {
    let index: Value = serde_json::from_slice(index).context("the image index is not JSON")?;
    let manifests = index["manifests"]
        .as_array()
        .context("the image index lists no manifests")?;
    manifests
        .iter()
        .map(|entry| {
            let digest = entry["digest"]
                .as_str()
                .context("an entry of the image index has no digest")?;
            crate::names::digest("a manifest digest in the image index", digest).map(str::to_owned)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn source_dates_format_as_rfc3339() {
        assert_eq!(crate::util::rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            crate::util::rfc3339_utc(951_782_400),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            crate::util::rfc3339_utc(1_706_929_506),
            "2024-02-03T03:05:06Z"
        );
    }
}
