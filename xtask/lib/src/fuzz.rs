//! Entry points for the fuzz targets (`xtask/fuzz/`, run by `cargo xtask
//! fuzz`) and for the replay of their seeds in the tests: each reads
//! arbitrary bytes as the tasks read what comes from outside (a release
//! folder's manifest and `SHA256SUMS`, signatures, a release archive, a
//! registry's image index, a provenance statement), and panics only when
//! an invariant breaks, or when the parser itself does.

use std::path::{Component, Path};
use std::sync::OnceLock;

use crate::manifest::{Manifest, read_sums};
use crate::names;
use crate::signing::{PrivateKey, formats};

/// `dist-manifest.json`: a manifest that parses serializes to one that
/// parses the same, and what the gates let through is a plain relative
/// path or a single folder name.
pub fn manifest(data: &[u8]) {
    let Ok(manifest) = serde_json::from_slice::<Manifest>(data) else {
        return;
    };
    let json = manifest.to_json().expect("a parsed manifest serializes");
    let again: Manifest = serde_json::from_str(&json).expect("a written manifest parses");
    assert_eq!(again, manifest, "the manifest changed on a round trip");
    for artifact in &manifest.artifacts {
        if let Ok(path) = names::relative_path("an artifact", &artifact.path) {
            assert_plain_relative(path);
        }
    }
    if let Ok(name) = names::release(&manifest.version, &manifest.stamp.commit) {
        assert_plain_relative(Path::new(&name));
        assert_eq!(Path::new(&name).components().count(), 1, "{name:?}");
    }
}

/// `SHA256SUMS`: what reads back is 64 hexadecimal digits per path, and
/// writing it again gives the same map.
pub fn sums(data: &[u8]) {
    let Ok(sums) = read_sums(&String::from_utf8_lossy(data)) else {
        return;
    };
    let written: String = sums
        .iter()
        .map(|(path, sum)| format!("{sum}  {path}\n"))
        .collect();
    assert_eq!(read_sums(&written).expect("written sums read"), sums);
    for (path, sum) in &sums {
        assert_eq!(sum.len(), 64, "{path}: {sum}");
        if let Ok(path) = names::relative_path("a listed path", path) {
            assert_plain_relative(path);
        }
    }
}

/// A Sigstore bundle, a DSSE envelope and an SSH signature: bytes nobody
/// signed with this run's fresh key never verify.
pub fn signatures(data: &[u8]) {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    let key = KEY
        .get_or_init(|| PrivateKey::generate().expect("a key"))
        .public();
    let message = b"the signed file";
    assert!(formats::check_bundle(key, data, message).is_err());
    assert!(formats::check_dsse_envelope(key, data).is_err());
    assert!(formats::check_ssh_signature(key, data, message).is_err());
}

/// A Debian package, a control file and an OpenPGP keyring, as `apt-repo`
/// reads them: what the control file names becomes one file name in the
/// pool, never a path that leaves it.
pub fn debian(data: &[u8]) {
    use crate::artifacts::apt;
    for control in [
        apt::control_of(data).ok(),
        apt::parse_control(&String::from_utf8_lossy(data)).ok(),
    ]
    .into_iter()
    .flatten()
    {
        let path = control.pool_path();
        assert_plain_relative(Path::new(&path));
        assert_eq!(
            Path::new(&path).components().count(),
            3,
            "{path:?} is not pool/main/<file>"
        );
    }
    if let Ok(certificate) = crate::signing::openpgp::Certificate::parse(data) {
        assert_eq!(certificate.fingerprint_hex().len(), 40);
    }
}

/// A release archive's tar stream, unpacked as `deploy` unpacks it into an
/// empty folder: nothing lands beside the folder, and every link in it
/// stays inside.
pub fn release_tar(data: &[u8]) {
    let scratch = crate::util::TempFolder::new("xtask-fuzz-tar").expect("a scratch folder");
    let root = scratch.path().join("release");
    std::fs::create_dir(&root).expect("the release folder");
    let _ = crate::deploy::source::unpack_tar(data, &root, Path::new("fuzzed.tar"));
    let beside: Vec<_> = std::fs::read_dir(scratch.path())
        .expect("the scratch folder")
        .map(|entry| entry.expect("an entry").file_name())
        .collect();
    assert_eq!(beside, ["release"], "the archive wrote beside its folder");
    let mut folders = vec![root.clone()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("a folder it made") {
            let path = entry.expect("an entry").path();
            let kind = std::fs::symlink_metadata(&path)
                .expect("its metadata")
                .file_type();
            if kind.is_symlink() {
                // Counted here again rather than through `check_link`: the
                // oracle must not share the checked code's mistakes.
                let link = std::fs::read_link(&path).expect("a link");
                let depth = path.strip_prefix(&root).unwrap().components().count() as i64 - 1;
                let climbs = link.components().try_fold(depth, |depth, part| {
                    let depth = match part {
                        Component::ParentDir => depth - 1,
                        Component::Normal(_) => depth + 1,
                        Component::CurDir => depth,
                        _ => -1,
                    };
                    (depth >= 0).then_some(depth)
                });
                assert!(
                    climbs.is_some(),
                    "{} -> {} leaves the release",
                    path.display(),
                    link.display()
                );
            } else if kind.is_dir() {
                folders.push(path);
            }
        }
    }
}

/// An image index as a registry serves it: what is read is digests.
pub fn image_index(data: &[u8]) {
    if let Ok(digests) = crate::artifacts::oci::index_manifest_digests(data) {
        for digest in digests {
            names::digest("a digest read", &digest).expect("a checked digest");
        }
    }
}

/// An in-toto statement: reading its identity and subjects never panics,
/// and an identity that passes the gates names a single folder.
pub fn provenance(data: &[u8]) {
    let _ = crate::artifacts::provenance::subjects(data);
    if let Ok(identity) = crate::artifacts::provenance::identity(data)
        && let Ok(name) = names::release(&identity.version, &identity.commit)
    {
        assert_eq!(Path::new(&name).components().count(), 1, "{name:?}");
    }
}

fn assert_plain_relative(path: &Path) {
    assert!(
        path.components()
            .all(|part| matches!(part, Component::Normal(_))),
        "{} passed a gate",
        path.display()
    );
}
