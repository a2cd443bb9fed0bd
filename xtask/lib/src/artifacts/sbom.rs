//! What is inside the shipped binary, for scanners: the runtime dependency
//! tree of the shipped package on one target, from `cargo metadata
//! --filter-platform` and the checksums in `Cargo.lock`, written two ways:
//!
//! - embedded in the binary in cargo-auditable's format (zlib-compressed
//!   JSON in a `.dep-v0` section, which `cargo audit bin`, trivy, grype and
//!   syft read): `dist` writes the compressed list to
//!   `target/xtask/dep-v0/<triple>.zlib` and `app/build.rs` (`platform-build`) embeds it;
//! - a CycloneDX 1.5 JSON SBOM per target next to each archive, in it, and
//!   attached to each platform's image as an OCI referrer.
//!
//! Only normal (runtime) dependencies count: no dev-, build- or proc-macro
//! crates, which are not in the binary. The resolve is cached under a
//! fingerprint of the manifests, the lockfile, the target and rustc, so a
//! no-op `dist` runs no `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::archive::sha256_hex;
use crate::exec::Ctx;
use crate::manifest::ManifestStamp;
use crate::targets::Target;
use crate::util::write_atomically;

/// The environment variable that tells `app/build.rs` (`platform-build`) where the compressed
/// lists are (`<dir>/<triple>.zlib`).
pub const DEP_V0_DIR_VAR: &str = "APP_DEP_V0_DIR";
/// Bumped when the cached resolve changes shape.
const CACHE_FORMAT: &str = "deps-v1";

/// One crate in the shipped binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crate {
    pub name: String,
    pub version: String,
    /// `crates.io`, `local`, `git` or `registry`, as cargo-auditable writes it.
    pub source: String,
    /// The full source id (`registry+https://...`), when not a path.
    pub source_id: Option<String>,
    pub license: Option<String>,
    /// The sha256 of the `.crate` file, from `Cargo.lock` (registry crates).
    pub checksum: Option<String>,
    /// Indices into the list, sorted.
    pub dependencies: Vec<usize>,
    pub root: bool,
}

/// The runtime dependency tree of the shipped package on one target, sorted
/// by name, version and id (cargo-auditable's order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependencies {
    pub target: String,
    pub crates: Vec<Crate>,
}

impl Dependencies {
    /// cargo-auditable's JSON (`auditable_serde::VersionInfo`).
    pub fn auditable_json(&self) -> String {
        let packages: Vec<Value> = self
            .crates
            .iter()
            .map(|krate| {
                let mut package = json!({
                    "name": krate.name,
                    "version": krate.version,
                    "source": krate.source,
                });
                if !krate.dependencies.is_empty() {
                    package["dependencies"] = json!(krate.dependencies);
                }
                if krate.root {
                    package["root"] = json!(true);
                }
                package
            })
            .collect();
        json!({ "packages": packages }).to_string()
    }

    /// The auditable JSON, zlib-compressed as the `.dep-v0` section holds it.
    pub fn dep_v0(&self) -> Result<Vec<u8>> {
        use std::io::Write;
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(self.auditable_json().as_bytes())?;
        Ok(encoder.finish()?)
    }

    fn root(&self) -> &Crate {
        self.crates
            .iter()
            .find(|krate| krate.root)
            .expect("the shipped package is in its own tree")
    }

    /// A CycloneDX 1.5 SBOM of the binary built for this target.
    pub fn cyclonedx(&self, stamp: &ManifestStamp, tool_version: &str) -> Value {
        let root = self.root();
        let purls: Vec<String> = self.crates.iter().map(purl).collect();
        let components: Vec<Value> = self
            .crates
            .iter()
            .zip(&purls)
            .filter(|(krate, _)| !krate.root)
            .map(|(krate, purl)| component(krate, purl, "library"))
            .collect();
        let dependencies: Vec<Value> = self
            .crates
            .iter()
            .zip(&purls)
            .map(|(krate, purl)| {
                json!({
                    "ref": purl,
                    "dependsOn": krate.dependencies.iter().map(|&index| &purls[index]).collect::<Vec<_>>(),
                })
            })
            .collect();
        let mut subject = component(root, &purl(root), "application");
        subject["properties"] = json!([
            {"name": "cargo:target", "value": self.target},
            {"name": "vcs:commit", "value": stamp.commit},
        ]);
        // Equal inputs, equal bytes: the serial number derives from what the
        // SBOM describes, and the timestamp is the commit's.
        let seed = sha256_hex(
            format!(
                "{} {} {} {}",
                root.name, root.version, stamp.commit, self.target
            )
            .as_bytes(),
        );
        json!({
            "bomFormat": "CycloneDX",
            "specVersion": "1.5",
            "serialNumber": format!("urn:uuid:{}", uuid_from_hex(&seed)),
            "version": 1,
            "metadata": {
                "timestamp": crate::util::rfc3339_utc(stamp.source_date_epoch),
                "tools": {"components": [{
                    "type": "application",
                    "name": "cargo-xtask",
                    "version": tool_version,
                }]},
                "component": subject,
            },
            "components": components,
            "dependencies": dependencies,
        })
    }
}

/// `pkg:cargo/name@version`; crates from elsewhere than crates.io say where.
fn purl(krate: &Crate) -> String {
    let base = format!("pkg:cargo/{}@{}", krate.name, krate.version);
    match krate.source_id.as_deref() {
        Some(id) if krate.source != "crates.io" => {
            let url = id.split_once('+').map_or(id, |(_, url)| url);
            let key = if krate.source == "git" {
                "vcs_url"
            } else {
                "repository_url"
            };
            format!("{base}?{key}={}", percent_encode(url))
        }
        // crates.io is the purl type's default; a path crate has no source.
        _ => base,
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b':' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn component(krate: &Crate, purl: &str, kind: &str) -> Value {
    let mut component = json!({
        "type": kind,
        "bom-ref": purl,
        "name": krate.name,
        "version": krate.version,
        "purl": purl,
    });
    if let Some(checksum) = &krate.checksum {
        component["hashes"] = json!([{"alg": "SHA-256", "content": checksum}]);
    }
    if let Some(license) = &krate.license {
        // Cargo still accepts the old `MIT/Apache-2.0`; SPDX says `OR`.
        let expression = license.replace('/', " OR ");
        component["licenses"] = json!([{ "expression": expression }]);
    }
    component
}

/// A version-8 UUID (RFC 9562: custom bits) from the first 32 hex digits.
fn uuid_from_hex(hex: &str) -> String {
    let mut digits: Vec<char> = hex.chars().take(32).collect();
    digits[12] = '8';
    let variant = u8::from_str_radix(&digits[16].to_string(), 16).unwrap_or(0);
    digits[16] = char::from_digit(u32::from(0x8 | (variant & 0x3)), 16).unwrap_or('8');
    let text: String = digits.into_iter().collect();
    format!(
        "{}-{}-{}-{}-{}",
        &text[..8],
        &text[8..12],
        &text[12..16],
        &text[16..20],
        &text[20..32]
    )
}

/// The folder of the compressed lists, for `APP_DEP_V0_DIR`.
pub fn dep_v0_dir(ctx: &Ctx) -> PathBuf {
    ctx.project.target_dir.join("xtask/dep-v0")
}

/// The dependency tree of each target, from the cache when the manifests,
/// lockfile and toolchain are unchanged, and each compressed list written
/// where `app/build.rs` (`platform-build`) reads it (only when its bytes change, so that a
/// no-op build stays one).
pub fn prepare(ctx: &Ctx, targets: &[Target]) -> Result<Vec<Dependencies>> {
    let mut all = Vec::new();
    for target in targets {
        let dependencies = resolve_cached(ctx, target)?;
        let path = dep_v0_dir(ctx).join(format!("{}.zlib", target.triple));
        let bytes = dependencies.dep_v0()?;
        if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
            std::fs::create_dir_all(path.parent().expect("a folder"))
                .with_context(|| format!("create {}", dep_v0_dir(ctx).display()))?;
            write_atomically(&path, &bytes)?;
        }
        all.push(dependencies);
    }
    Ok(all)
}

fn resolve_cached(ctx: &Ctx, target: &Target) -> Result<Dependencies> {
    let fingerprint = inputs_fingerprint(ctx, target)?;
    let cache = ctx
        .project
        .target_dir
        .join("xtask/deps")
        .join(format!("{}.json", target.triple));
    #[derive(Serialize, Deserialize)]
    struct Cached {
        fingerprint: String,
        dependencies: Dependencies,
    }
    if let Some(cached) = std::fs::read(&cache)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Cached>(&bytes).ok())
        .filter(|cached| cached.fingerprint == fingerprint)
    {
        return Ok(cached.dependencies);
    }
    let dependencies = resolve(ctx, target)?;
    std::fs::create_dir_all(cache.parent().expect("a folder"))
        .with_context(|| format!("create the folder of {}", cache.display()))?;
    let cached = Cached {
        fingerprint,
        dependencies,
    };
    write_atomically(&cache, &serde_json::to_vec(&cached)?)?;
    Ok(cached.dependencies)
}

/// Everything the resolve depends on: every workspace manifest, the
/// lockfile, the target and the compiler (cfgs come from both).
fn inputs_fingerprint(ctx: &Ctx, target: &Target) -> Result<String> {
    let mut description = format!("{CACHE_FORMAT} {} {}\n", target.triple, ctx.stamp()?.rustc);
    let mut files: Vec<&Path> = ctx.project.manifests.iter().map(PathBuf::as_path).collect();
    let lockfile = ctx.project.root.join("Cargo.lock");
    files.push(&lockfile);
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
        description.push_str(&format!("{} {}\n", file.display(), sha256_hex(&bytes)));
    }
    Ok(sha256_hex(description.as_bytes()))
}

/// `cargo metadata` for the target, walked from the shipped package along
/// normal dependency edges only.
fn resolve(ctx: &Ctx, target: &Target) -> Result<Dependencies> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .cargo_path(ctx.cargo_path())
        .current_dir(&ctx.project.root)
        .other_options(vec![
            "--locked".to_owned(),
            "--filter-platform".to_owned(),
            target.triple.to_owned(),
        ])
        .exec()
        .with_context(|| {
            format!(
                "read the dependencies for {} with `cargo metadata`",
                target.triple
            )
        })?;
    let resolve = metadata
        .resolve
        .as_ref()
        .context("cargo metadata returned no resolve")?;
    let packages: HashMap<&str, &cargo_metadata::Package> = metadata
        .packages
        .iter()
        .map(|package| (package.id.repr.as_str(), package))
        .collect();
    let nodes: HashMap<&str, &cargo_metadata::Node> = resolve
        .nodes
        .iter()
        .map(|node| (node.id.repr.as_str(), node))
        .collect();
    let Some(root) = metadata
        .workspace_packages()
        .into_iter()
        .find(|package| *package.name == ctx.project.settings.package)
    else {
        bail!(
            "the shipped package `{}` is not in the workspace",
            ctx.project.settings.package
        );
    };
    let is_proc_macro = |id: &str| {
        packages[id]
            .targets
            .iter()
            .any(|target| target.kind.contains(&cargo_metadata::TargetKind::ProcMacro))
    };
    // The runtime closure, and its edges.
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut queue = vec![root.id.repr.as_str()];
    edges.insert(root.id.repr.as_str(), BTreeSet::new());
    while let Some(id) = queue.pop() {
        for dep in &nodes[id].deps {
            let runtime = dep
                .dep_kinds
                .iter()
                .any(|kind| kind.kind == cargo_metadata::DependencyKind::Normal);
            let child = dep.pkg.repr.as_str();
            if !runtime || is_proc_macro(child) {
                continue;
            }
            edges.get_mut(id).expect("visited").insert(child);
            if !edges.contains_key(child) {
                edges.insert(child, BTreeSet::new());
                queue.push(child);
            }
        }
    }
    let checksums = lockfile_checksums(&ctx.project.root.join("Cargo.lock"))?;
    let mut ids: Vec<&str> = edges.keys().copied().collect();
    ids.sort_by(|left, right| {
        let (a, b) = (packages[left], packages[right]);
        (a.name.as_str(), &a.version, *left).cmp(&(b.name.as_str(), &b.version, *right))
    });
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let crates = ids
        .iter()
        .map(|id| {
            let package = packages[id];
            let source_id = package.source.as_ref().map(|source| source.repr.clone());
            let source = match source_id.as_deref() {
                None => "local".to_owned(),
                Some("registry+https://github.com/rust-lang/crates.io-index") => {
                    "crates.io".to_owned()
                }
                Some(other) => other.split('+').next().unwrap_or(other).to_owned(),
            };
            let checksum = checksums
                .get(&(
                    package.name.to_string(),
                    package.version.to_string(),
                    source_id.clone(),
                ))
                .cloned();
            let mut dependencies: Vec<usize> = edges[id].iter().map(|dep| index[dep]).collect();
            dependencies.sort_unstable();
            Crate {
                name: package.name.to_string(),
                version: package.version.to_string(),
                source,
                source_id,
                license: package.license.clone(),
                checksum,
                dependencies,
                root: *id == root.id.repr.as_str(),
            }
        })
        .collect();
    Ok(Dependencies {
        target: target.triple.to_owned(),
        crates,
    })
}

/// `(name, version, source)`, as `Cargo.lock` identifies a package.
type LockedId = (String, String, Option<String>);

/// `(name, version, source)` → checksum, from `Cargo.lock`.
fn lockfile_checksums(path: &Path) -> Result<HashMap<LockedId, String>> {
    #[derive(Deserialize)]
    struct Lockfile {
        #[serde(default)]
        package: Vec<Locked>,
    }
    #[derive(Deserialize)]
    struct Locked {
        name: String,
        version: String,
        source: Option<String>,
        checksum: Option<String>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let lockfile: Lockfile =
        toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    Ok(lockfile
        .package
        .into_iter()
        .filter_map(|locked| {
            let checksum = locked.checksum?;
            Some(((locked.name, locked.version, locked.source), checksum))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_numbers_are_version_8_uuids() {
        let uuid = uuid_from_hex(&sha256_hex(b"app 0.1.0"));
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "8");
        assert!("89ab".contains(&uuid[19..20]), "{uuid}");
    }

    #[test]
    fn purls_name_where_a_crate_comes_from() {
        let mut krate = Crate {
            name: "serde".into(),
            version: "1.0.0".into(),
            source: "crates.io".into(),
            source_id: Some("registry+https://github.com/rust-lang/crates.io-index".into()),
            license: Some("MIT/Apache-2.0".into()),
            checksum: Some("ab".into()),
            dependencies: vec![],
            root: false,
        };
        assert_eq!(purl(&krate), "pkg:cargo/serde@1.0.0");
        let value = component(&krate, &purl(&krate), "library");
        assert_eq!(value["licenses"][0]["expression"], "MIT OR Apache-2.0");
        assert_eq!(value["hashes"][0]["content"], "ab");
        krate.source = "git".into();
        krate.source_id = Some("git+https://example.com/serde?rev=1#abc".into());
        assert_eq!(
            purl(&krate),
            "pkg:cargo/serde@1.0.0?vcs_url=https://example.com/serde%3Frev%3D1%23abc"
        );
        krate.source = "local".into();
        krate.source_id = None;
        assert_eq!(purl(&krate), "pkg:cargo/serde@1.0.0");
    }
}
