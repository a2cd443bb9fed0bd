//! The release's SLSA provenance: an in-toto Statement v1 whose subjects are
//! every artifact of the dist folder with its SHA-256, and whose predicate
//! (SLSA provenance v1) says what built them from what: the source
//! repository and commit, the toolchain, the targets, the stamp, the
//! lockfile's hash and the project's settings, and the builder.
//!
//! Nothing in it depends on the machine or the time of the build (no
//! start or finish time, no host name), so two builds of one commit give
//! the same statement, and a release merged from runners' parts gives the
//! one a single machine would. The builder is the GitHub Actions workflow
//! when run there, else a local build, which only vouches for itself.

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::exec::Ctx;
use crate::manifest::{ArtifactKind, Manifest};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What kind of build this is; its meaning is docs/signing.md's.
pub const BUILD_TYPE: &str = "urn:cargo-xtask:release:v1";
/// The builder of a build made outside a CI system.
pub const LOCAL_BUILDER: &str = "urn:cargo-xtask:builder:local";

/// The file name of the provenance of a release.
pub fn file_name(manifest: &Manifest) -> String {
    format!("{}-{}.intoto.jsonl", manifest.name, manifest.version)
}

/// The statement for the artifacts of `manifest` (signatures left out:
/// they attest the artifacts, they are not built).
pub fn statement(ctx: &Ctx, manifest: &Manifest) -> Result<Vec<u8>> {
    let subjects: Vec<Value> = manifest
        .artifacts
        .iter()
        .filter(|artifact| !artifact.kind.is_signature())
        .map(|artifact| json!({"name": artifact.path, "digest": {"sha256": artifact.sha256}}))
        .collect();
    let mut targets: Vec<&str> = manifest
        .artifacts
        .iter()
        .filter(|artifact| artifact.kind == ArtifactKind::Binary)
        .filter_map(|artifact| artifact.target.as_deref())
        .collect();
    targets.sort_unstable();
    let lockfile = ctx.project.root.join("Cargo.lock");
    let lockfile_sha256 = crate::archive::sha256_hex(
        &std::fs::read(&lockfile).with_context(|| format!("read {}", lockfile.display()))?,
    );
    let source = ctx.project.repository.as_deref().map_or_else(
        || "git+file:.".to_owned(),
        |repository| format!("git+{repository}"),
    );
    let statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "source": {"uri": source, "digest": {"gitCommit": manifest.stamp.commit}},
                    "package": ctx.project.settings.package,
                    "version": manifest.version,
                    "targets": targets,
                },
                "internalParameters": {
                    "settings": ctx.project.settings,
                    "stamp": manifest.stamp,
                },
                "resolvedDependencies": [
                    {"uri": source, "digest": {"gitCommit": manifest.stamp.commit}},
                    {"uri": "Cargo.lock", "digest": {"sha256": lockfile_sha256}},
                    {"uri": "pkg:generic/rustc", "annotations": {"version": manifest.stamp.rustc}},
                ],
            },
            "runDetails": {
                "builder": {
                    "id": builder_id(),
                    "version": {"cargo-xtask": env!("CARGO_PKG_VERSION")},
                },
            },
        },
    });
    Ok(serde_json::to_vec(&statement)?)
}

/// The GitHub Actions workflow that runs the build (`GITHUB_WORKFLOW_REF`,
/// e.g. `https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.2.0`),
/// else a local build.
fn builder_id() -> String {
    let var = |name| {
        std::env::var(name)
            .ok()
            .filter(|value: &String| !value.is_empty())
    };
    match (
        var("GITHUB_ACTIONS").as_deref(),
        var("GITHUB_SERVER_URL"),
        var("GITHUB_WORKFLOW_REF"),
    ) {
        (Some("true"), Some(server), Some(workflow)) => format!("{server}/{workflow}"),
        _ => LOCAL_BUILDER.to_owned(),
    }
}

/// What a signed statement says the release is: the facts a deploy acts
/// on, taken from here rather than from the unsigned manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub version: String,
    pub commit: String,
    /// RFC 3339, the commit's own time: orders two builds of one version.
    pub commit_time: Option<String>,
    /// Built from a tree with uncommitted changes: the commit does not
    /// say what was built.
    pub dirty: bool,
}

/// The identity a statement records (`externalParameters` and the stamp).
pub fn identity(statement: &[u8]) -> Result<Identity> {
    let value: Value = serde_json::from_slice(statement).context("the statement is not JSON")?;
    let definition = &value["predicate"]["buildDefinition"];
    let external = &definition["externalParameters"];
    let stamp = &definition["internalParameters"]["stamp"];
    Ok(Identity {
        version: external["version"]
            .as_str()
            .context("the statement records no version")?
            .to_owned(),
        commit: external["source"]["digest"]["gitCommit"]
            .as_str()
            .context("the statement records no commit")?
            .to_owned(),
        commit_time: stamp["commit_time"].as_str().map(str::to_owned),
        dirty: stamp["dirty"].as_bool().unwrap_or(true),
    })
}

/// The subjects of a statement: `(name, sha256)`.
pub fn subjects(statement: &[u8]) -> Result<Vec<(String, String)>> {
    let value: Value = serde_json::from_slice(statement).context("the statement is not JSON")?;
    if value["_type"] != STATEMENT_TYPE || value["predicateType"] != PREDICATE_TYPE {
        anyhow::bail!("not an in-toto statement of SLSA provenance v1");
    }
    value["subject"]
        .as_array()
        .context("the statement has no subjects")?
        .iter()
        .map(|subject| {
            Ok((
                subject["name"]
                    .as_str()
                    .context("a subject without a name")?
                    .to_owned(),
                subject["digest"]["sha256"]
                    .as_str()
                    .context("a subject without a sha256")?
                    .to_owned(),
            ))
        })
        .collect()
}
