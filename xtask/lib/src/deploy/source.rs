//! The release being deployed: an archive from `dist-manifest.json` (or one
//! named with `--archive`, with the `SHA256SUMS` beside it), its checksum
//! verified and its entries checked before anything on a host changes, then
//! unpacked into a local staging folder that is copied to each host.
//!
//! An entry is refused if its path is absolute or has `..`, if it is a link
//! that leads out of the release, if it is anything but a file, a folder or
//! a symlink, or if it comes twice. The release's name, version and commit
//! come from the signed provenance when there is a key to check it with
//! (a manifest that disagrees is refused), and pass `names` before they
//! become a path.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::archive::sha256_hex;
use crate::artifacts::provenance::Identity;
use crate::manifest::{ArtifactKind, MANIFEST, Manifest, SHA256SUMS, read_sums};
use crate::names;

pub struct Source {
    /// `<version>-<commit_short>`: the folder name under `releases/`.
    pub name: String,
    pub version: String,
    /// The full commit `/version` must report once deployed.
    pub commit: String,
    /// When the commit was made (RFC 3339): orders two builds of one version.
    pub commit_time: Option<String>,
    /// The unpacked release, ready to copy.
    pub staging: crate::util::TempFolder,
    /// Each regular file, relative to the release, with its sha256.
    pub files: Vec<(String, String)>,
}

/// Checks an archive's signatures before anything reads its contents;
/// returns what the signed provenance says the release is, when it was
/// checked against a key.
pub type Verify<'a> = dyn Fn(&Path) -> Result<Option<Identity>> + 'a;

/// The release in `archive`: its signatures checked by `verify`, then its
/// bytes against `expected_sha256`, then checked and unpacked. `claimed` is
/// what the manifest says it is; when the archive is signed, the signed
/// provenance decides, and a manifest that says otherwise is refused.
pub fn unpack(
    archive: &Path,
    expected_sha256: &str,
    claimed: &Identity,
    verify: &Verify<'_>,
) -> Result<Source> {
    let identity = match verify(archive)? {
        Some(signed) => {
            if (&signed.version, &signed.commit) != (&claimed.version, &claimed.commit) {
                bail!(
                    "refusing to deploy {}: the manifest says version {:?} at commit {:?}, the signed provenance {} at {}: the files come from different releases, or the manifest was changed; deploy a release folder as dist wrote it",
                    archive.display(),
                    claimed.version,
                    claimed.commit,
                    signed.version,
                    signed.commit
                );
            }
            signed
        }
        None => claimed.clone(),
    };
    let name = names::release(&identity.version, &identity.commit)
        .with_context(|| format!("refusing to deploy {}", archive.display()))?;
    let bytes = std::fs::read(archive).with_context(|| format!("read {}", archive.display()))?;
    let actual = sha256_hex(&bytes);
    if actual != expected_sha256 {
        bail!(
            "{} does not match its checksum (sha256 {actual}, expected {expected_sha256}): the archive is damaged or was changed; rebuild it with `cargo xtask dist`",
            archive.display()
        );
    }
    let staging = crate::util::TempFolder::new("xtask-deploy-staging")?;
    let root = staging.path().join(&name);
    std::fs::create_dir(&root).with_context(|| format!("create {}", root.display()))?;
    let files = unpack_tar(
        flate2::read::GzDecoder::new(bytes.as_slice()),
        &root,
        archive,
    )?;
    Ok(Source {
        name,
        version: identity.version,
        commit: identity.commit,
        commit_time: identity.commit_time,
        staging,
        files,
    })
}

/// Unpacks a release's tar stream into the empty folder `root`: its
/// regular files (with their modes, at most `rwxr-xr-x`), folders and
/// symlinks that stay inside, under the archive's top folder, which is
/// dropped. Anything else (a path that climbs out or is absolute, a link
/// out, a name twice, a device or a hard link) refuses the whole archive.
/// Returns the files' paths and sha256s, sorted. `archive` names it in
/// errors.
pub fn unpack_tar(tar: impl Read, root: &Path, archive: &Path) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut tar = tar::Archive::new(tar);
    let entries = tar
        .entries()
        .with_context(|| format!("read {}", archive.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("read {}", archive.display()))?;
        let raw = entry.path()?.into_owned();
        let relative = release_path(&raw).with_context(|| {
            format!("{}: refusing entry `{}`", archive.display(), raw.display())
        })?;
        let Some(relative) = relative else { continue };
        // A name twice (a link, then a file written through it): what lands
        // on the host would depend on the order of unpacking.
        if !seen.insert(relative.clone()) {
            bail!(
                "{}: refusing entry `{}`: the archive holds it twice",
                archive.display(),
                raw.display()
            );
        }
        // A link the archive made earlier is never gone through: `a` ->
        // `.` then `a/b` -> `..` passes the link check yet lands outside.
        through_no_link(root, &relative).with_context(|| {
            format!("{}: refusing entry `{}`", archive.display(), raw.display())
        })?;
        let target = root.join(&relative);
        let kind = entry.header().entry_type();
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match kind {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target)?;
            }
            tar::EntryType::Regular => {
                let mut contents = Vec::new();
                entry.read_to_end(&mut contents)?;
                std::fs::write(&target, &contents)
                    .with_context(|| format!("write {}", target.display()))?;
                let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))?;
                files.push((relative.display().to_string(), sha256_hex(&contents)));
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()?
                    .context("a symlink entry without a target")?
                    .into_owned();
                check_link(&relative, &link).with_context(|| {
                    format!("{}: refusing entry `{}`", archive.display(), raw.display())
                })?;
                std::os::unix::fs::symlink(&link, &target)?;
            }
            other => bail!(
                "{}: refusing entry `{}`: a {other:?} entry; releases hold files, folders and symlinks only",
                archive.display(),
                raw.display()
            ),
        }
    }
    files.sort();
    Ok(files)
}

/// The path of an entry inside the release: the archive's top folder
/// (`app-0.1.0-<target>/`) removed; `None` for the top folder itself.
fn release_path(raw: &Path) -> Result<Option<PathBuf>> {
    let mut parts = Vec::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => bail!("it climbs out with `..`"),
            Component::RootDir | Component::Prefix(_) => bail!("its path is absolute"),
        }
    }
    if parts.len() <= 1 {
        return Ok(None);
    }
    Ok(Some(parts[1..].iter().collect()))
}

/// None of the folders above `relative` in `root` is a symlink.
fn through_no_link(root: &Path, relative: &Path) -> Result<()> {
    let mut at = root.to_path_buf();
    let parents = relative.components().count().saturating_sub(1);
    for component in relative.components().take(parents) {
        at.push(component);
        if std::fs::symlink_metadata(&at).is_ok_and(|meta| meta.file_type().is_symlink()) {
            bail!("it goes through the symlink {}", at.display());
        }
    }
    Ok(())
}

/// A symlink at `at` (relative to the release) pointing at `link` must stay
/// inside the release.
fn check_link(at: &Path, link: &Path) -> Result<()> {
    if link.is_absolute() {
        bail!("it links to the absolute path {}", link.display());
    }
    let mut depth = at.components().count() as i64 - 1;
    for component in link.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            bail!("it links to {}, outside the release", link.display());
        }
    }
    Ok(())
}

/// The archive of `target` recorded in a dist manifest, with its name and
/// commit.
pub fn from_manifest(
    dist_dir: &Path,
    manifest: &Manifest,
    target: &str,
    verify: &Verify<'_>,
) -> Result<Source> {
    let artifact = manifest
        .artifacts
        .iter()
        .find(|artifact| {
            artifact.kind == ArtifactKind::Archive && artifact.target.as_deref() == Some(target)
        })
        .with_context(|| {
            format!(
                "{} lists no archive for {target}: build it with `cargo xtask dist --target {target}`",
                dist_dir.join(MANIFEST).display()
            )
        })?;
    let path = names::relative_path("the archive's path in the manifest", &artifact.path)?;
    unpack(
        &dist_dir.join(path),
        &artifact.sha256,
        &claimed(manifest),
        verify,
    )
}

/// An archive named on the command line: its checksum from the
/// `SHA256SUMS` beside it, its version and commit from the
/// `dist-manifest.json` beside it.
pub fn from_archive(archive: &Path, verify: &Verify<'_>) -> Result<Source> {
    let folder = archive.parent().unwrap_or(Path::new("."));
    let file_name = archive
        .file_name()
        .context("--archive names a file")?
        .to_string_lossy()
        .into_owned();
    let sums_path = folder.join(SHA256SUMS);
    let sums = std::fs::read_to_string(&sums_path).with_context(|| {
        format!(
            "read {} (an archive is deployed with the SHA256SUMS dist wrote beside it)",
            sums_path.display()
        )
    })?;
    let expected = read_sums(&sums)
        .with_context(|| format!("read {}", sums_path.display()))?
        .remove(&file_name)
        .with_context(|| format!("{} lists no {file_name}", sums_path.display()))?;
    let manifest_path = folder.join(MANIFEST);
    let manifest = Manifest::require(&manifest_path)?;
    unpack(archive, &expected, &claimed(&manifest), verify)
}

/// What an (unsigned) manifest says its release is.
fn claimed(manifest: &Manifest) -> Identity {
    Identity {
        version: manifest.version.clone(),
        commit: manifest.stamp.commit.clone(),
        commit_time: Some(manifest.stamp.commit_time.clone()),
        dirty: manifest.stamp.dirty,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_stay_inside_the_release() {
        let check = |raw: &str, expected: Result<Option<&str>, &str>| {
            let actual = release_path(Path::new(raw)).map_err(|err| err.to_string());
            match (&actual, &expected) {
                (Ok(actual), Ok(expected)) => {
                    assert_eq!(actual.as_deref(), expected.map(Path::new), "{raw}")
                }
                (Err(actual), Err(expected)) => {
                    assert!(actual.contains(expected), "{raw}: {actual}")
                }
                _ => panic!("{raw}: got {actual:?}, expected {expected:?}"),
            }
        };
        check("app-0.1.0-x/app", Ok(Some("app")));
        check("app-0.1.0-x/config/base.toml", Ok(Some("config/base.toml")));
        check(
            "./app-0.1.0-x/units/app.service",
            Ok(Some("units/app.service")),
        );
        check("app-0.1.0-x/", Ok(None));
        check("app-0.1.0-x/../../etc/passwd", Err("`..`"));
        check("/etc/passwd", Err("absolute"));
    }

    #[test]
    fn links_must_not_leave_the_release() {
        let check = |at: &str, link: &str, ok: bool| {
            assert_eq!(
                check_link(Path::new(at), Path::new(link)).is_ok(),
                ok,
                "{at} -> {link}"
            );
        };
        check("config/current.toml", "prod.toml", true);
        check("config/current.toml", "../app", true);
        check("bin/app", "../../app", false);
        check("app-link", "../outside", false);
        check("app-link", "/usr/bin/env", false);
        check("a/b/c", "../../x/../y", true);
    }

    /// A tar of `(path, link target or file contents, is a link)`.
    fn tar_of(entries: &[(&str, &str, bool)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            if *link {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, path, data).unwrap();
            } else {
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, path, data.as_bytes())
                    .unwrap();
            }
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn an_archive_cannot_write_through_its_own_links() {
        let cases: &[&[(&str, &str, bool)]] = &[
            // `a` -> `.` is inside; `a/b` -> `..` looks one level deep
            // but is `b` -> `..`, outside.
            &[
                ("top/a", ".", true),
                ("top/a/b", "..", true),
                ("top/a/b/escaped", "x", false),
            ],
            &[("top/d", "sub", true), ("top/d/file", "x", false)],
        ];
        for entries in cases {
            let scratch = crate::util::TempFolder::new("xtask-unpack-links").unwrap();
            let root = scratch.path().join("release");
            std::fs::create_dir(&root).unwrap();
            let refused = unpack_tar(tar_of(entries).as_slice(), &root, Path::new("a.tar"))
                .expect_err("refused");
            assert!(
                format!("{refused:#}").contains("goes through the symlink"),
                "{refused:#}"
            );
            let outside: Vec<_> = std::fs::read_dir(scratch.path())
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .collect();
            assert_eq!(outside, ["release"], "{entries:?}");
        }
        let scratch = crate::util::TempFolder::new("xtask-unpack-links").unwrap();
        let root = scratch.path().join("release");
        std::fs::create_dir(&root).unwrap();
        let files = unpack_tar(
            tar_of(&[
                ("top/config/base.toml", "a = 1", false),
                ("top/current", "config/base.toml", true),
            ])
            .as_slice(),
            &root,
            Path::new("a.tar"),
        )
        .unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(
            std::fs::read_to_string(root.join("current")).unwrap(),
            "a = 1"
        );
    }
}
