//! A release checked against the public key, as a user checks a download
//! (`cargo xtask verify`), and as `deploy` and `publish` check one before
//! they use it.
//!
//! - A folder (`target/dist/`, or a downloaded release): `SHA256SUMS` is
//!   signed (SSH signature and bundle); every file it lists that is here
//!   has its checksum; every archive, SBOM and OCI archive here has a
//!   bundle that verifies; the provenance verifies and its subjects are
//!   exactly what `SHA256SUMS` lists, with the same checksums. A file here
//!   that `SHA256SUMS` does not list (but for the sums' own signatures and
//!   the manifest), and a listed file that is not here, each fail it;
//!   `--ignore-missing` lets the second pass for a download without the
//!   bare binaries, which are not published.
//! - An archive: its bundle and the provenance beside it, and `SHA256SUMS`
//!   if it is there too.
//! - An image `REGISTRY/NAME:TAG` (or `@sha256:…`): the index the registry
//!   serves and each platform manifest are signed by the key in cosign's
//!   format.
//!
//! Every failure is one line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::archive::sha256_hex;
use crate::artifacts::cosign;
use crate::artifacts::provenance;
use crate::artifacts::registry::Destination;
use crate::artifacts::seal::{BUNDLE_SUFFIX, SUMS_SSH_SIGNATURE};
use crate::exec::Ctx;
use crate::manifest::{SHA256SUMS, read_sums};
use crate::project::AcceptedKey;
use crate::signing::PublicKey;
use crate::signing::formats;
use crate::tools::{self, Tool};

/// The files of a release folder that `SHA256SUMS` does not list and that
/// are accounted for otherwise: the sums and their signatures, and the
/// manifest (unsigned, and trusted by nothing that checks signatures).
const UNLISTED: [&str; 4] = [
    SHA256SUMS,
    SUMS_SSH_SIGNATURE,
    "SHA256SUMS.sigstore.json",
    crate::manifest::MANIFEST,
];

/// Files that carry a Sigstore bundle of their own, by name.
const BUNDLED_SUFFIXES: [&str; 5] = [".tar.gz", ".zip", ".cdx.json", ".oci.tar", ".deb"];

fn is_signature_file(path: &str) -> bool {
    path.ends_with(BUNDLE_SUFFIX) || path.ends_with(".intoto.jsonl")
}

fn needs_bundle(path: &str) -> bool {
    !is_signature_file(path) && BUNDLED_SUFFIXES.iter().any(|suffix| path.ends_with(suffix))
}

/// The keys to check against: the one named (alone), else every key the
/// project accepts (`public-key`, then `previous-keys`); empty if neither.
pub fn named_or_configured_keys(ctx: &Ctx, named: Option<&Path>) -> Result<Vec<AcceptedKey>> {
    match named {
        Some(path) => Ok(vec![AcceptedKey {
            key: PublicKey::read(path)?,
            label: format!("--public-key {}", path.display()),
            until: None,
        }]),
        None => ctx.project.accepted_keys(),
    }
}

/// Today, UTC, as `YYYY-MM-DD`.
pub fn today() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    crate::util::rfc3339_utc(now)[..10].to_owned()
}

/// The key that signed: `check` runs with each accepted key that is not
/// retired, in order, and the first with nothing to report wins (with what
/// its check says it checked). If none does, the failures against the
/// first key, or the one line that says a retired key signed it.
pub fn first_signer<'k, T>(
    keys: &'k [AcceptedKey],
    today: &str,
    check: impl Fn(&PublicKey) -> Result<(Vec<String>, T)>,
) -> Result<std::result::Result<(&'k AcceptedKey, T), Vec<String>>> {
    let mut first_failures = None;
    for key in keys.iter().filter(|key| !key.retired(today)) {
        let (failures, checked) = check(&key.key)?;
        if failures.is_empty() {
            return Ok(Ok((key, checked)));
        }
        first_failures.get_or_insert(failures);
    }
    for key in keys.iter().filter(|key| key.retired(today)) {
        if check(&key.key)?.0.is_empty() {
            return Ok(Err(vec![format!(
                "signed by key id {} ({}), which was accepted until {} and is retired: releases it signed are no longer trusted; rebuild and sign with the current key",
                key.key.key_id(),
                key.label,
                key.until.as_deref().unwrap_or_default()
            )]));
        }
    }
    Ok(Err(first_failures.unwrap_or_default()))
}

/// The key that signed, as messages name it.
pub fn describe_signer(key: &AcceptedKey) -> String {
    match &key.until {
        Some(until) => format!(
            "key id {} ({}, accepted until {until})",
            key.key.key_id(),
            key.label
        ),
        None => format!("key id {} ({})", key.key.key_id(), key.label),
    }
}

/// The keys tried, as messages name them.
pub fn describe_keys(keys: &[AcceptedKey]) -> String {
    match keys {
        [one] => format!("key id {}", one.key.key_id()),
        many => format!(
            "{} keys ({})",
            many.len(),
            many.iter()
                .map(|key| key.key.key_id()[..12].to_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// What a file `SHA256SUMS` lists and the folder lacks means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// A failure: the folder is not the release it claims to be.
    Fail,
    /// Counted only (`--ignore-missing`, a download).
    Pass,
}

/// Checks a release folder; returns the failures and what was checked.
/// A file the folder holds and cannot account for fails it.
pub fn check_folder(folder: &Path, key: &PublicKey, missing: Missing) -> (Vec<String>, String) {
    let mut failures = Vec::new();
    let read = |name: &str| std::fs::read(folder.join(name));
    let Ok(sums_bytes) = read(SHA256SUMS) else {
        return (
            vec![format!(
                "{}: no {SHA256SUMS} (not a release folder)",
                folder.display()
            )],
            String::new(),
        );
    };
    match read(SUMS_SSH_SIGNATURE) {
        Ok(signature) => {
            if let Err(err) = formats::check_ssh_signature(key, &signature, &sums_bytes) {
                failures.push(format!("{SUMS_SSH_SIGNATURE}: {err}"));
            }
        }
        Err(_) => failures.push(format!("{SHA256SUMS}: unsigned (no {SUMS_SSH_SIGNATURE})")),
    }
    let sums_bundle = format!("{SHA256SUMS}{BUNDLE_SUFFIX}");
    match read(&sums_bundle) {
        Ok(bundle) => {
            if let Err(err) = formats::check_bundle(key, &bundle, &sums_bytes) {
                failures.push(format!("{sums_bundle}: {err}"));
            }
        }
        Err(_) => failures.push(format!("{SHA256SUMS}: unsigned (no {sums_bundle})")),
    }
    let mut sums = match read_sums(&String::from_utf8_lossy(&sums_bytes)) {
        Ok(sums) => sums,
        Err(err) => {
            failures.push(format!("{SHA256SUMS}: {err:#}"));
            return (
                failures,
                format!("{} (its {SHA256SUMS} unreadable)", folder.display()),
            );
        }
    };
    sums.retain(
        |path, _| match crate::names::relative_path("a path SHA256SUMS lists", path) {
            Ok(_) => true,
            Err(err) => {
                failures.push(format!("{SHA256SUMS}: {err:#}"));
                false
            }
        },
    );
    for unlisted in files_under(folder)
        .into_iter()
        .filter(|path| !sums.contains_key(path) && !UNLISTED.contains(&path.as_str()))
    {
        failures.push(format!(
            "{unlisted}: here, but not listed in {SHA256SUMS}: a file the release does not account for; remove it, or verify the release as it was downloaded"
        ));
    }
    let mut present = 0;
    let mut absent = 0;
    let mut contents = BTreeMap::new();
    for (path, expected) in &sums {
        match read(path) {
            Ok(bytes) => {
                present += 1;
                if &sha256_hex(&bytes) != expected {
                    failures.push(format!(
                        "{path}: its sha256 is not the one {SHA256SUMS} lists"
                    ));
                }
                contents.insert(path.as_str(), bytes);
            }
            Err(_) => {
                absent += 1;
                if missing == Missing::Fail {
                    failures.push(format!(
                        "{path}: listed in {SHA256SUMS} but not here (a download without the bare binaries: pass --ignore-missing)"
                    ));
                }
            }
        }
    }
    for (path, bytes) in &contents {
        if !needs_bundle(path) {
            continue;
        }
        let bundle_path = format!("{path}{BUNDLE_SUFFIX}");
        match contents.get(bundle_path.as_str()) {
            Some(bundle) => {
                if let Err(err) = formats::check_bundle(key, bundle, bytes) {
                    failures.push(format!("{bundle_path}: {err}"));
                }
            }
            None => failures.push(format!(
                "{path}: unsigned (no {bundle_path} listed in {SHA256SUMS} beside it)"
            )),
        }
    }
    let provenances: Vec<&String> = sums
        .keys()
        .filter(|path| path.ends_with(".intoto.jsonl"))
        .collect();
    match provenances.as_slice() {
        [] => failures.push(format!(
            "no provenance (*.intoto.jsonl) is listed in {SHA256SUMS}"
        )),
        [provenance_path] => {
            match contents.get(provenance_path.as_str()) {
                None => failures.push(format!(
                    "{provenance_path}: listed in {SHA256SUMS} but not here"
                )),
                Some(envelope) => match provenance_subjects(key, envelope) {
                    Err(err) => failures.push(format!("{provenance_path}: {err:#}")),
                    Ok(subjects) => {
                        for (path, sum) in sums.iter().filter(|(path, _)| !is_signature_file(path))
                        {
                            match subjects.get(path) {
                            None => failures.push(format!("{path}: listed in {SHA256SUMS} but not a subject of the provenance")),
                            Some(subject) if subject != sum => failures.push(format!("{path}: the provenance records another sha256")),
                            Some(_) => {}
                        }
                        }
                        for name in subjects.keys().filter(|name| !sums.contains_key(*name)) {
                            failures.push(format!("{name}: a subject of the provenance that {SHA256SUMS} does not list"));
                        }
                    }
                },
            }
        }
        many => failures.push(format!(
            "{} provenance files are listed; a release has one",
            many.len()
        )),
    }
    let checked = format!(
        "{}: {SHA256SUMS} and its signatures, {present} files ({absent} listed but not here), bundles, provenance",
        folder.display()
    );
    (failures, checked)
}

/// Every file under `folder` (symlinks included, folders left out), as
/// paths relative to it with `/` between parts.
fn files_under(folder: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(folder.join(&relative)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = relative.join(entry.file_name());
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(path),
                _ => found.push(path.to_string_lossy().replace('\\', "/")),
            }
        }
    }
    found.sort();
    found
}

/// The folder a file is in (`.` for a bare file name).
pub fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The provenance files (`*.intoto.jsonl`) in the folder of `archive`.
fn provenances_beside(archive: &Path) -> Vec<PathBuf> {
    let folder = folder_of(archive);
    provenances_in(folder)
}

/// The provenance files (`*.intoto.jsonl`) in `folder`.
fn provenances_in(folder: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.path())
                .filter(|path| path.to_string_lossy().ends_with(".intoto.jsonl"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// What the signed provenance beside `archive` says the release is, once
/// `check_archive` found nothing wrong: the version and commit a deploy
/// names and proves, never the unsigned manifest's.
pub fn signed_identity(archive: &Path, key: &PublicKey) -> Result<provenance::Identity> {
    let folder = folder_of(archive);
    signed_identity_in(folder, key)
}

/// What the one signed provenance in `folder` says the release is.
pub fn signed_identity_in(folder: &Path, key: &PublicKey) -> Result<provenance::Identity> {
    let [path] = provenances_in(folder)
        .try_into()
        .map_err(|found: Vec<PathBuf>| {
            anyhow::anyhow!(
                "{} provenance files in {}; a release has one",
                found.len(),
                folder.display()
            )
        })?;
    let envelope = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
    let statement = formats::check_dsse_envelope(key, &envelope)
        .with_context(|| format!("check {}", path.display()))?;
    provenance::identity(&statement).with_context(|| format!("read {}", path.display()))
}

/// The subjects of a signed provenance envelope, `name -> sha256`.
fn provenance_subjects(key: &PublicKey, envelope: &[u8]) -> Result<BTreeMap<String, String>> {
    let statement = formats::check_dsse_envelope(key, envelope)?;
    Ok(provenance::subjects(&statement)?.into_iter().collect())
}

/// Checks one archive: its bundle, its subject in the provenance beside it,
/// and its line in `SHA256SUMS` (with the sums' signature) when that is
/// beside it too.
pub fn check_archive(archive: &Path, key: &PublicKey) -> Vec<String> {
    let name = archive
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let folder = folder_of(archive);
    let bytes = match std::fs::read(archive) {
        Ok(bytes) => bytes,
        Err(err) => return vec![format!("{}: {err}", archive.display())],
    };
    let sha256 = sha256_hex(&bytes);
    let mut failures = Vec::new();
    let bundle_path = folder.join(format!("{name}{BUNDLE_SUFFIX}"));
    match std::fs::read(&bundle_path) {
        Ok(bundle) => {
            if let Err(err) = formats::check_bundle(key, &bundle, &bytes) {
                failures.push(format!("{name}{BUNDLE_SUFFIX}: {err}"));
            }
        }
        Err(_) => failures.push(format!(
            "{name}: unsigned (no {name}{BUNDLE_SUFFIX} beside it)"
        )),
    }
    match provenances_beside(archive).as_slice() {
        [] => failures.push(format!("{name}: no provenance (*.intoto.jsonl) beside it")),
        [path] => {
            let subjects = std::fs::read(path)
                .map_err(anyhow::Error::from)
                .and_then(|envelope| provenance_subjects(key, &envelope));
            match subjects {
                Err(err) => failures.push(format!("{}: {err:#}", path.display())),
                Ok(subjects) => match subjects.get(&name) {
                    None => failures.push(format!("{name}: not a subject of {}", path.display())),
                    Some(recorded) if *recorded != sha256 => failures.push(format!(
                        "{name}: its sha256 is not the one {} records",
                        path.display()
                    )),
                    Some(_) => {}
                },
            }
        }
        many => failures.push(format!(
            "{} provenance files beside {name}; a release has one",
            many.len()
        )),
    }
    if let Ok(sums) = std::fs::read(folder.join(SHA256SUMS)) {
        match std::fs::read(folder.join(SUMS_SSH_SIGNATURE)) {
            Ok(signature) => {
                if let Err(err) = formats::check_ssh_signature(key, &signature, &sums) {
                    failures.push(format!("{SUMS_SSH_SIGNATURE}: {err}"));
                }
            }
            Err(_) => failures.push(format!("{SHA256SUMS}: unsigned (no {SUMS_SSH_SIGNATURE})")),
        }
        match read_sums(&String::from_utf8_lossy(&sums)) {
            Ok(sums) => match sums.get(&name) {
                Some(listed) if *listed != sha256 => {
                    failures.push(format!(
                        "{name}: its sha256 is not the one {SHA256SUMS} lists"
                    ));
                }
                _ => {}
            },
            Err(err) => failures.push(format!("{SHA256SUMS}: {err:#}")),
        }
    }
    failures
}

/// Checks a pushed image: the index the registry serves for the reference,
/// and each of its platform manifests, signed by the key.
pub fn check_image(
    ctx: &Ctx,
    reference: &str,
    key: &PublicKey,
    insecure: bool,
) -> Result<(Vec<String>, String)> {
    let (name_part, by_digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    let destination = Destination::parse(name_part)?;
    let name = destination.name();
    let verify_tls = !(insecure || destination.is_loopback());
    let skopeo = tools::require(Tool::Skopeo)?;
    let tls = format!("--tls-verify={verify_tls}");
    let source = format!("docker://{reference}");
    // The bytes as served: a digest is over every byte, and `read` would
    // trim a trailing newline.
    let read = cmd!(ctx.sh, "{skopeo} inspect --raw {tls} {source}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("run skopeo to read {reference}"))?;
    if !read.status.success() {
        bail!(
            "read {reference} from the registry: {}",
            String::from_utf8_lossy(&read.stderr).trim()
        );
    }
    let index = read.stdout;
    let digest = format!("sha256:{}", sha256_hex(&index));
    let mut failures = Vec::new();
    if let Some(pinned) = by_digest
        && pinned != digest
    {
        failures.push(format!("{reference}: the registry serves {digest}"));
    }
    let mut digests = vec![digest.clone()];
    digests.extend(crate::artifacts::oci::index_manifest_digests(&index)?);
    // The index read through a tag must have been signed for that tag; the
    // platform manifests are reached through the index.
    let tag = by_digest
        .is_none()
        .then_some(destination.tag.as_deref())
        .flatten();
    for (index, manifest_digest) in digests.iter().enumerate() {
        let tag = if index == 0 { tag } else { None };
        if let Err(err) =
            cosign::check_signature(ctx, &skopeo, key, &name, manifest_digest, tag, verify_tls)
        {
            failures.push(format!("{err:#}"));
        }
    }
    Ok((
        failures,
        format!(
            "{reference} ({digest}) and {} platform manifests",
            digests.len() - 1
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::PrivateKey;

    /// A downloaded release: an archive and an SBOM with their bundles,
    /// the provenance over them and the binary (which is not downloaded),
    /// `SHA256SUMS` and its two signatures.
    fn signed_folder(key: &PrivateKey, folder: &Path) {
        let files: [(&str, &[u8]); 3] = [
            ("app-1-x.tar.gz", b"archive"),
            ("app-1-x.cdx.json", b"{}"),
            ("x/app", b"binary"),
        ];
        let mut listed = Vec::new();
        for (path, bytes) in files {
            listed.push((path.to_owned(), sha256_hex(bytes)));
            if path == "x/app" {
                continue;
            }
            std::fs::write(folder.join(path), bytes).unwrap();
            let bundle = formats::bundle(key, bytes);
            let bundle_path = format!("{path}{BUNDLE_SUFFIX}");
            std::fs::write(folder.join(&bundle_path), &bundle).unwrap();
            listed.push((bundle_path, sha256_hex(&bundle)));
        }
        let subjects: Vec<serde_json::Value> = files
            .iter()
            .map(|(path, bytes)| serde_json::json!({"name": path, "digest": {"sha256": sha256_hex(bytes)}}))
            .collect();
        let statement = serde_json::json!({
            "_type": provenance::STATEMENT_TYPE,
            "subject": subjects,
            "predicateType": provenance::PREDICATE_TYPE,
            "predicate": {},
        });
        let envelope = formats::dsse_envelope(key, statement.to_string().as_bytes());
        std::fs::write(folder.join("app-1.intoto.jsonl"), &envelope).unwrap();
        listed.push(("app-1.intoto.jsonl".to_owned(), sha256_hex(&envelope)));
        listed.sort();
        let sums: String = listed
            .iter()
            .map(|(path, sum)| format!("{sum}  {path}\n"))
            .collect();
        std::fs::write(folder.join(SHA256SUMS), &sums).unwrap();
        std::fs::write(
            folder.join(SUMS_SSH_SIGNATURE),
            formats::ssh_signature(key, sums.as_bytes()),
        )
        .unwrap();
        std::fs::write(
            folder.join(format!("{SHA256SUMS}{BUNDLE_SUFFIX}")),
            formats::bundle(key, sums.as_bytes()),
        )
        .unwrap();
    }

    #[test]
    fn a_folder_fails_on_a_file_it_cannot_account_for_and_on_a_missing_one() {
        let key = PrivateKey::generate().unwrap();
        let folder = crate::util::TempFolder::new("xtask-verify-accounting").unwrap();
        std::fs::create_dir_all(folder.path().join("x")).unwrap();
        signed_folder(&key, folder.path());
        std::fs::write(folder.path().join(crate::manifest::MANIFEST), "{}").unwrap();
        // Complete but for x/app: a download passes with Missing::Pass only.
        assert_eq!(
            check_folder(folder.path(), key.public(), Missing::Pass).0,
            Vec::<String>::new()
        );
        let failures = check_folder(folder.path(), key.public(), Missing::Fail).0;
        assert_eq!(failures.len(), 1, "{failures:#?}");
        assert!(
            failures[0].starts_with("x/app: listed in SHA256SUMS but not here"),
            "{failures:#?}"
        );
        // A file nobody listed, beside and below the listed ones.
        std::fs::write(folder.path().join("app-1-x.tar.gz.extra"), "x").unwrap();
        std::fs::write(folder.path().join("x/evil"), "x").unwrap();
        let failures = check_folder(folder.path(), key.public(), Missing::Pass).0;
        assert_eq!(failures.len(), 2, "{failures:#?}");
        assert!(
            failures[0].starts_with("app-1-x.tar.gz.extra: here, but not listed in SHA256SUMS")
        );
        assert!(failures[1].starts_with("x/evil: here, but not listed in SHA256SUMS"));
    }

    #[test]
    fn a_path_in_sha256sums_that_climbs_out_is_refused_unread() {
        let key = PrivateKey::generate().unwrap();
        let folder = crate::util::TempFolder::new("xtask-verify-climbing").unwrap();
        std::fs::create_dir_all(folder.path().join("x")).unwrap();
        signed_folder(&key, folder.path());
        let sums = std::fs::read_to_string(folder.path().join(SHA256SUMS)).unwrap();
        std::fs::write(
            folder.path().join(SHA256SUMS),
            format!("{sums}{}  ../../etc/passwd\n", "0".repeat(64)),
        )
        .unwrap();
        let failures = check_folder(folder.path(), key.public(), Missing::Pass).0;
        assert!(
            failures.iter().any(|failure| failure.starts_with(
                "SHA256SUMS: a path SHA256SUMS lists \"../../etc/passwd\": the part \"..\" is refused"
            )),
            "{failures:#?}"
        );
    }

    #[test]
    fn the_first_accepted_key_that_verifies_signed_and_a_retired_one_is_refused() {
        let [current, previous, retired, stranger] =
            [(); 4].map(|()| PrivateKey::generate().unwrap());
        let accepted = |key: &PrivateKey, label: &str, until: Option<&str>| AcceptedKey {
            key: key.public().clone(),
            label: label.to_owned(),
            until: until.map(str::to_owned),
        };
        let keys = [
            accepted(&current, "public-key keys/app.pub", None),
            accepted(&previous, "previous key keys/app.1.pub", Some("2027-03-01")),
            accepted(&retired, "previous key keys/app.0.pub", Some("2026-01-31")),
        ];
        let today = "2026-12-07";
        let signer_of = |signing_key: &PrivateKey| {
            let folder = crate::util::TempFolder::new("xtask-verify-rotation").unwrap();
            std::fs::create_dir_all(folder.path().join("x")).unwrap();
            signed_folder(signing_key, folder.path());
            first_signer(&keys, today, |key| {
                Ok(check_folder(folder.path(), key, Missing::Pass))
            })
            .unwrap()
            .map(|(signer, _)| describe_signer(signer))
        };
        assert!(
            signer_of(&current)
                .unwrap()
                .ends_with("(public-key keys/app.pub)")
        );
        assert!(
            signer_of(&previous)
                .unwrap()
                .ends_with("(previous key keys/app.1.pub, accepted until 2027-03-01)")
        );
        let refused = signer_of(&retired).unwrap_err();
        assert_eq!(refused.len(), 1, "{refused:#?}");
        assert!(
            refused[0].contains(
                "(previous key keys/app.0.pub), which was accepted until 2026-01-31 and is retired"
            ),
            "{refused:#?}"
        );
        // Signed by a key nobody listed: the failures against the current key.
        let refused = signer_of(&stranger).unwrap_err();
        assert!(
            refused
                .iter()
                .any(|failure| failure.starts_with("SHA256SUMS.sig: ")),
            "{refused:#?}"
        );
    }

    fn flip(path: &Path, at: usize) {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[at] ^= 1;
        std::fs::write(path, bytes).unwrap();
    }

    /// Each way to break a release gives exactly these failures, one line
    /// each.
    #[test]
    fn each_broken_release_fails_with_one_line_per_problem() {
        let key = PrivateKey::generate().unwrap();
        let other = PrivateKey::generate().unwrap();
        type Break = fn(&Path);
        let cases: [(&str, Break, &[&str]); 7] = [
            ("intact", |_| {}, &[]),
            (
                "a flipped byte in the archive",
                |dir| flip(&dir.join("app-1-x.tar.gz"), 2),
                &[
                    "app-1-x.tar.gz: its sha256 is not the one SHA256SUMS lists",
                    "app-1-x.tar.gz.sigstore.json: the bundle's digest is not the file's SHA-256",
                ],
            ),
            (
                "the archive's bundle deleted",
                |dir| std::fs::remove_file(dir.join("app-1-x.tar.gz.sigstore.json")).unwrap(),
                &["app-1-x.tar.gz: unsigned (no app-1-x.tar.gz.sigstore.json"],
            ),
            (
                "a flipped byte in the bundle's signature",
                |dir| {
                    let path = dir.join("app-1-x.cdx.json.sigstore.json");
                    let text = std::fs::read_to_string(&path).unwrap();
                    let at = text.find("\"signature\":\"").unwrap() + 20;
                    flip(&path, at);
                },
                &[
                    "app-1-x.cdx.json.sigstore.json: its sha256 is not the one SHA256SUMS lists",
                    "app-1-x.cdx.json.sigstore.json: the bundle's signature",
                ],
            ),
            (
                "SHA256SUMS edited to match a replaced archive",
                |dir| {
                    std::fs::write(dir.join("app-1-x.tar.gz"), b"replaced").unwrap();
                    let sums = std::fs::read_to_string(dir.join(SHA256SUMS))
                        .unwrap()
                        .replace(&sha256_hex(b"archive"), &sha256_hex(b"replaced"));
                    std::fs::write(dir.join(SHA256SUMS), sums).unwrap();
                },
                &[
                    "SHA256SUMS.sig: the SSH signature does not verify",
                    "SHA256SUMS.sigstore.json: the bundle's digest is not the file's SHA-256",
                    "app-1-x.tar.gz.sigstore.json: the bundle's digest is not the file's SHA-256",
                    "app-1-x.tar.gz: the provenance records another sha256",
                ],
            ),
            (
                "a flipped byte in the provenance",
                |dir| flip(&dir.join("app-1.intoto.jsonl"), 60),
                &[
                    "app-1.intoto.jsonl: its sha256 is not the one SHA256SUMS lists",
                    "app-1.intoto.jsonl: ",
                ],
            ),
            (
                "SHA256SUMS.sig deleted",
                |dir| std::fs::remove_file(dir.join(SUMS_SSH_SIGNATURE)).unwrap(),
                &["SHA256SUMS: unsigned (no SHA256SUMS.sig)"],
            ),
        ];
        for (index, (name, broken, expected)) in cases.into_iter().enumerate() {
            let folder =
                crate::util::TempFolder::new(&format!("xtask-verify-test-{index}")).unwrap();
            std::fs::create_dir_all(folder.path().join("x")).unwrap();
            signed_folder(&key, folder.path());
            broken(folder.path());
            let (failures, checked) = check_folder(folder.path(), key.public(), Missing::Pass);
            assert_eq!(failures.len(), expected.len(), "{name}: {failures:#?}");
            for (failure, expected) in failures.iter().zip(expected) {
                assert!(
                    failure.starts_with(expected),
                    "{name}: `{failure}` is not `{expected}…`"
                );
                assert!(!failure.contains('\n'), "{name}: one line: {failure}");
            }
            if expected.is_empty() {
                assert!(
                    checked.contains("5 files (1 listed but not here)"),
                    "{checked}"
                );
                let archive = folder.path().join("app-1-x.tar.gz");
                assert_eq!(check_archive(&archive, key.public()), Vec::<String>::new());
                let others = check_folder(folder.path(), other.public(), Missing::Pass).0;
                assert_eq!(
                    others.len(),
                    5,
                    "two sums signatures, two bundles, the provenance: {others:#?}"
                );
            }
        }
    }
}
