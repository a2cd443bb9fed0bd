//! What scanners read, checked against an independent reading of the
//! dependency graph: the `.dep-v0` list in each shipped binary (through
//! `rust-audit-info`), and each target's CycloneDX SBOM (its schema, every
//! crate with its version and `Cargo.lock` checksum).

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// The crates compiled into the shipped package for `triple`, as
/// `(name, version)`: `cargo metadata --filter-platform` walked from `app`
/// along normal dependencies, without proc macros.
fn runtime_crates(clone: &Path, triple: &str) -> BTreeSet<(String, String)> {
    let metadata: Value = serde_json::from_str(&stdout_of(
        Command::new(env!("CARGO"))
            .args([
                "metadata",
                "--format-version",
                "1",
                "--locked",
                "--filter-platform",
                triple,
            ])
            .current_dir(clone),
    ))
    .unwrap();
    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| (package["id"].as_str().unwrap(), package))
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| (node["id"].as_str().unwrap(), node))
        .collect();
    let root = packages
        .values()
        .find(|package| package["name"] == "app")
        .unwrap()["id"]
        .as_str()
        .unwrap();
    let proc_macro = |id: &str| {
        packages[id]["targets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|target| {
                target["kind"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|kind| kind == "proc-macro")
            })
    };
    let mut seen = BTreeSet::from([root]);
    let mut queue = vec![root];
    while let Some(id) = queue.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|kind| kind["kind"].is_null());
            let child = dep["pkg"].as_str().unwrap();
            if normal && !proc_macro(child) && seen.insert(child) {
                queue.push(child);
            }
        }
    }
    seen.iter()
        .map(|id| {
            let package = packages[id];
            (
                package["name"].as_str().unwrap().to_owned(),
                package["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `(name, version)` → checksum, from the clone's `Cargo.lock`.
fn lockfile_checksums(clone: &Path) -> BTreeMap<(String, String), String> {
    let lockfile: toml::Table =
        toml::from_str(&fs::read_to_string(clone.join("Cargo.lock")).unwrap()).unwrap();
    lockfile["package"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|package| {
            Some((
                (
                    package["name"].as_str()?.to_owned(),
                    package["version"].as_str()?.to_owned(),
                ),
                package.get("checksum")?.as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// The CycloneDX validator of `cyclonedx-python-lib`, or a skip.
fn validate_cyclonedx(sbom: &Path) -> Option<()> {
    let script = "import sys\n\
        from cyclonedx.schema import SchemaVersion\n\
        from cyclonedx.validation.json import JsonStrictValidator\n\
        error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\n\
        print(error or 'valid')\n\
        sys.exit(1 if error else 0)\n";
    // The Python `cargo xtask setup` installed the library into, else the
    // one on PATH.
    let python = python_venv()
        .map(|venv| venv.join("bin/python3"))
        .filter(|python| python.is_file())
        .unwrap_or_else(|| "python3".into());
    let importable = Command::new(&python)
        .args(["-c", "import cyclonedx.validation.json"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !importable {
        let install = "cargo xtask setup --only python";
        if std::env::var("CI").is_ok_and(|value| value == "true") {
            panic!(
                "the cyclonedx Python library is required under CI=true: install it with `{install}`"
            );
        }
        skip("the cyclonedx Python library is not installed", install);
        return None;
    }
    let run = output(Command::new(&python).args(["-c", script]).arg(sbom));
    assert!(
        run.status.success(),
        "{} is not valid CycloneDX 1.5: {}{}",
        sbom.display(),
        String::from_utf8_lossy(&run.stdout),
        stderr_text(&run)
    );
    Some(())
}

pub fn check_dependency_lists_and_sboms(clone: &Path, target_dir: &Path) {
    let manifest = manifest(target_dir);
    let dist = dist_folder(target_dir);
    let checksums = lockfile_checksums(clone);
    let audit_info = tool_or_skip("rust-audit-info", "cargo install --locked rust-audit-info");
    for triple in ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"] {
        let expected = runtime_crates(clone, triple);
        assert!(
            expected.iter().any(|(name, _)| name == "tokio")
                && !expected
                    .iter()
                    .any(|(name, _)| name == "tempfile" || name == "serde_derive"),
            "{triple}: dev and proc-macro crates are not in the binary: {expected:?}"
        );

        // The list in the binary, as a scanner reads it.
        if let Some(audit_info) = &audit_info {
            let binary = dist.join(
                artifact(&manifest, "binary", triple)["path"]
                    .as_str()
                    .unwrap(),
            );
            let embedded: Value =
                serde_json::from_str(&stdout_of(Command::new(audit_info).arg(&binary))).unwrap();
            let packages = embedded["packages"].as_array().unwrap();
            let listed: BTreeSet<(String, String)> = packages
                .iter()
                .map(|package| {
                    (
                        package["name"].as_str().unwrap().to_owned(),
                        package["version"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            assert_eq!(listed, expected, "{triple}: the embedded list differs");
            let roots: Vec<&Value> = packages.iter().filter(|p| p["root"] == true).collect();
            assert_eq!(roots.len(), 1, "{triple}: {embedded}");
            assert_eq!(roots[0]["name"], "app");
            for package in packages {
                let source = package["source"].as_str().unwrap();
                let local = WORKSPACE_CRATES.contains(&package["name"].as_str().unwrap());
                assert_eq!(
                    source,
                    if local { "local" } else { "crates.io" },
                    "{package}"
                );
            }
        }

        // The SBOM beside the archive: schema-valid, every crate with its
        // version and checksum, and the graph.
        let sbom_artifact = artifact(&manifest, "sbom", triple);
        let sbom_path = dist.join(sbom_artifact["path"].as_str().unwrap());
        validate_cyclonedx(&sbom_path);
        let sbom: Value = serde_json::from_str(&fs::read_to_string(&sbom_path).unwrap()).unwrap();
        assert_eq!(sbom["specVersion"], "1.5");
        assert_eq!(sbom["metadata"]["component"]["name"], "app");
        let components = sbom["components"].as_array().unwrap();
        let in_sbom: BTreeSet<(String, String)> = components
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["version"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let mut without_root = expected.clone();
        without_root.retain(|(name, _)| name != "app");
        assert_eq!(
            in_sbom, without_root,
            "{triple}: the SBOM lists other crates"
        );
        for component in components {
            let key = (
                component["name"].as_str().unwrap().to_owned(),
                component["version"].as_str().unwrap().to_owned(),
            );
            assert_eq!(
                component["purl"],
                format!("pkg:cargo/{}@{}", key.0, key.1).as_str()
            );
            // A crate of the workspace has no checksum (Cargo.lock records
            // none for a path).
            let expected_hash = checksums.get(&key).map(String::as_str);
            assert_eq!(
                component["hashes"][0]["content"].as_str(),
                expected_hash,
                "{triple}: {key:?} has another checksum than Cargo.lock's"
            );
            assert_eq!(
                expected_hash.is_none(),
                WORKSPACE_CRATES.contains(&key.0.as_str()),
                "{key:?}"
            );
        }
        let graph = sbom["dependencies"].as_array().unwrap();
        assert_eq!(graph.len(), expected.len(), "{triple}: one entry per crate");
        let depends_on = |crate_ref: &str, prefix: &str| {
            let entry = graph
                .iter()
                .find(|entry| entry["ref"] == crate_ref)
                .unwrap_or_else(|| panic!("{crate_ref} is not in the graph"));
            assert!(
                entry["dependsOn"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|dep| dep.as_str().unwrap().starts_with(prefix)),
                "{entry} lacks {prefix}"
            );
        };
        depends_on("pkg:cargo/app@0.1.0", "pkg:cargo/platform@");
        depends_on("pkg:cargo/platform@0.1.0", "pkg:cargo/tokio@");
    }
}

/// The crates of the workspace the shipped binary is built from: local
/// sources, without checksums.
const WORKSPACE_CRATES: [&str; 3] = ["app", "platform", "platform-config"];

/// The layout's index lists, for each platform, an SBOM referrer whose
/// subject is that platform's manifest and whose layer is the SBOM `dist`
/// wrote for its target.
pub fn check_sbom_referrers(layout: &Path, image: &Value, dist: &Path, manifest: &Value) {
    let top: Value =
        serde_json::from_str(&fs::read_to_string(layout.join("index.json")).unwrap()).unwrap();
    let referrers: Vec<&Value> = top["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["artifactType"] == "application/vnd.cyclonedx+json")
        .collect();
    let platforms = image["platforms"].as_array().unwrap();
    assert_eq!(referrers.len(), platforms.len(), "{top:#}");
    for platform in platforms {
        let triple = platform["target"].as_str().unwrap();
        let digest = platform["sbom_referrer"].as_str().unwrap();
        assert!(
            referrers.iter().any(|entry| entry["digest"] == digest),
            "{triple}: its referrer is not in index.json"
        );
        let referrer = json_blob(layout, digest);
        assert_eq!(referrer["subject"]["digest"], platform["manifest_digest"]);
        assert_eq!(referrer["artifactType"], "application/vnd.cyclonedx+json");
        assert_eq!(
            referrer["config"]["mediaType"],
            "application/vnd.oci.empty.v1+json"
        );
        let sbom = artifact(manifest, "sbom", triple);
        let layer = &referrer["layers"][0];
        assert_eq!(
            layer["digest"],
            format!("sha256:{}", sbom["sha256"].as_str().unwrap()).as_str()
        );
        assert_eq!(
            blob(layout, layer["digest"].as_str().unwrap()),
            fs::read(dist.join(sbom["path"].as_str().unwrap())).unwrap()
        );
    }
}
