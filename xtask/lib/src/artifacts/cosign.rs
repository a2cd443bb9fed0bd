//! Container image signatures in cosign's format, where cosign, podman and
//! skopeo (`use-sigstore-attachments: true`) look for them: for a manifest
//! `sha256:<hex>` in repository `R`, the tag `R:sha256-<hex>.sig` holds an
//! OCI manifest with one layer per signature. The layer's blob is a
//! "simple signing" payload naming `R` and the digest; its annotation
//! `dev.cosignproject.cosign/signature` is the base64 DER signature over
//! that blob.
//!
//! `image --push` signs the index and each platform manifest (a verifier
//! that resolves a platform checks that manifest's digest), and `verify`
//! reads them back through skopeo and checks them without trusting anything
//! else the registry says.

use std::path::Path;

use anyhow::{Context, Result, bail};
use base64ct::{Base64, Encoding};
use serde_json::{Value, json};
use xshell::cmd;

use crate::archive::sha256_hex;
use crate::exec::Ctx;
use crate::signing::{PrivateKey, PublicKey};

pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const SIGNATURE_TYPE: &str = "cosign container image signature";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The tag that holds the signatures of `digest` (`sha256:<hex>`).
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// The annotation of the signed payload that names the tags the digest was
/// pushed under, space-separated: a tag moved to another digest (an older
/// release, or another name) no longer matches what was signed.
pub const TAGS_ANNOTATION: &str = "tags";

/// The simple signing payload for `digest` in repository `name`
/// (`registry/repository`, no tag), naming the `tags` it was pushed under.
pub fn payload(name: &str, digest: &str, tags: &[String]) -> Vec<u8> {
    let optional = if tags.is_empty() {
        Value::Null
    } else {
        json!({ TAGS_ANNOTATION: tags.join(" ") })
    };
    let value = json!({
        "critical": {
            "identity": {"docker-reference": name},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": optional,
    });
    serde_json::to_vec(&value).expect("JSON serializes")
}

/// Writes an OCI layout at `dir` holding the signature manifest of
/// `digest`, tagged `sig`, for skopeo to copy to the signature tag.
fn write_signature_layout(
    dir: &Path,
    key: &PrivateKey,
    name: &str,
    digest: &str,
    tags: &[String],
) -> Result<()> {
    let payload = payload(name, digest, tags);
    let signature = Base64::encode_string(&key.sign(&payload));
    let payload_digest = format!("sha256:{}", sha256_hex(&payload));
    let config = serde_json::to_vec(&json!({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [payload_digest]},
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {
            "mediaType": MEDIA_CONFIG,
            "size": config.len(),
            "digest": format!("sha256:{}", sha256_hex(&config)),
        },
        "layers": [{
            "mediaType": PAYLOAD_MEDIA_TYPE,
            "size": payload.len(),
            "digest": payload_digest,
            "annotations": {SIGNATURE_ANNOTATION: signature},
        }],
    }))?;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("create {}", blobs.display()))?;
    for bytes in [&payload, &config, &manifest] {
        std::fs::write(blobs.join(sha256_hex(bytes)), bytes)
            .with_context(|| format!("write a blob in {}", blobs.display()))?;
    }
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "size": manifest.len(),
            "digest": format!("sha256:{}", sha256_hex(&manifest)),
            "annotations": {"org.opencontainers.image.ref.name": "sig"},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)
        .context("write the signature layout's index")?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .context("write the signature layout's marker")?;
    Ok(())
}

/// How skopeo reaches the registry: TLS on or off, and an auth file.
pub struct Access<'a> {
    pub verify_tls: bool,
    pub auth_file: Option<&'a Path>,
    /// Secrets to redact from what skopeo prints.
    pub secrets: &'a [&'a str],
}

/// Pushes the signature of each of `digests` in repository `name`, each
/// naming the `tags` the image was pushed under.
pub fn push_signatures(
    ctx: &Ctx,
    skopeo: &Path,
    key: &PrivateKey,
    name: &str,
    digests: &[&str],
    tags: &[String],
    access: &Access<'_>,
) -> Result<()> {
    let tls = format!("--dest-tls-verify={}", access.verify_tls);
    let auth: Vec<String> = access
        .auth_file
        .map(|file| vec!["--dest-authfile".to_owned(), file.display().to_string()])
        .unwrap_or_default();
    for digest in digests {
        let layout = crate::util::TempFolder::new("xtask-cosign-signature")?;
        write_signature_layout(layout.path(), key, name, digest, tags)?;
        let source = format!("oci:{}:sig", layout.path().display());
        let target = format!("docker://{name}:{}", signature_tag(digest));
        let auth = &auth;
        ctx.run_reporting_redacted(
            cmd!(
                ctx.sh,
                "{skopeo} copy --preserve-digests {tls} {auth...} {source} {target}"
            ),
            access.secrets,
        )
        .with_context(|| format!("push the signature of {name}@{digest}"))?;
    }
    eprintln!(
        "signed {} manifests of {name} (key id {}), in cosign's format",
        digests.len(),
        key.public().key_id()
    );
    Ok(())
}

/// Checks the signatures of `digest` in repository `name`: the signature
/// tag exists, and one of its layers is a payload naming this repository
/// and digest (and the tag `read_as`, when the digest was read through one), signed by
/// `key`. Returns what is wrong, in one line.
pub fn check_signature(
    ctx: &Ctx,
    skopeo: &Path,
    key: &PublicKey,
    name: &str,
    digest: &str,
    read_as: Option<&str>,
    verify_tls: bool,
) -> Result<()> {
    let tls = format!("--tls-verify={verify_tls}");
    let src_tls = format!("--src-tls-verify={verify_tls}");
    let tag = signature_tag(digest);
    let reference = format!("docker://{name}:{tag}");
    let manifest = cmd!(ctx.sh, "{skopeo} inspect --raw {tls} {reference}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()
        .filter(|text| !text.is_empty());
    let Some(manifest) = manifest else {
        bail!(
            "{name}@{digest} has no signature (no tag {tag}): it is unsigned, or the manifest was pushed again after signing"
        );
    };
    let manifest: Value =
        serde_json::from_str(&manifest).context("the signature manifest is not JSON")?;
    let copy = crate::util::TempFolder::new("xtask-cosign-verify")?;
    let dir = copy.path().join("sig");
    let destination = format!("dir:{}", dir.display());
    cmd!(
        ctx.sh,
        "{skopeo} copy --quiet {src_tls} {reference} {destination}"
    )
    .quiet()
    .ignore_stdout()
    .read_stderr()
    .with_context(|| format!("read the signature {name}:{tag}"))?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let mut problems = Vec::new();
    for layer in layers
        .iter()
        .filter(|layer| layer["mediaType"] == PAYLOAD_MEDIA_TYPE)
    {
        let blob_digest = layer["digest"].as_str().unwrap_or_default();
        // The registry's word, about to name a file: a digest or nothing.
        if let Err(err) = crate::names::digest("a layer of the signature", blob_digest) {
            problems.push(format!("{err:#}"));
            continue;
        }
        let path = dir.join(blob_digest.trim_start_matches("sha256:"));
        let Ok(payload) = std::fs::read(&path) else {
            problems.push(format!("its blob {blob_digest} is missing"));
            continue;
        };
        let signature = layer["annotations"][SIGNATURE_ANNOTATION]
            .as_str()
            .and_then(|text| Base64::decode_vec(text).ok())
            .unwrap_or_default();
        if !key.verifies(&payload, &signature) {
            problems.push(format!(
                "the signature in {blob_digest} is not by key {}",
                key.key_id()
            ));
            continue;
        }
        let payload: Value = serde_json::from_slice(&payload).unwrap_or_default();
        let critical = &payload["critical"];
        if critical["image"]["docker-manifest-digest"] != digest {
            problems.push(format!(
                "the signed payload names {}, not {digest}",
                critical["image"]["docker-manifest-digest"]
            ));
        } else if critical["identity"]["docker-reference"] != name {
            problems.push(format!(
                "the signed payload names repository {}, not {name}",
                critical["identity"]["docker-reference"]
            ));
        } else if critical["type"] != SIGNATURE_TYPE {
            problems
                .push("the signed payload is not a cosign container image signature".to_owned());
        } else if let Some(tag) = read_as
            && !payload["optional"][TAGS_ANNOTATION]
                .as_str()
                .is_some_and(|tags| tags.split(' ').any(|signed| signed == tag))
        {
            problems.push(format!(
                "it was signed for tag(s) {}, not {tag}: the tag was moved to this digest (an older release, or another name); verify by digest, or push and sign it under {tag}",
                payload["optional"][TAGS_ANNOTATION]
                    .as_str()
                    .unwrap_or("(none)")
            ));
        } else {
            return Ok(());
        }
    }
    if problems.is_empty() {
        problems.push("it holds no cosign signature layer".to_owned());
    }
    bail!(
        "{name}@{digest} is not signed by key {}: {}",
        key.key_id(),
        problems.join("; ")
    )
}
