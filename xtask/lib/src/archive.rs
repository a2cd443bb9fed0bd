//! Archives whose bytes depend only on their contents: entries sorted, every
//! mtime the source date epoch, owner 0:0 without names, modes set
//! explicitly, gzip without a timestamp or file name. Two machines packaging
//! the same files get the same archive, byte for byte. Also the `ar`
//! archives Debian packages are, written and read back.

use std::collections::BTreeSet;
use std::io::{Cursor, Write};

use anyhow::{Context, Result, bail};
use flate2::{Compression, GzBuilder};

/// A file to put into an archive.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path inside the archive's top-level folder, `/`-separated.
    pub path: String,
    pub contents: Vec<u8>,
    pub executable: bool,
}

impl Entry {
    pub fn mode(&self) -> u32 {
        if self.executable { 0o755 } else { 0o644 }
    }
}

const DIRECTORY_MODE: u32 = 0o755;

/// Every folder the entries live in, and the entries, each group sorted by
/// path. `top` prefixes every path when given.
fn layout<'a>(top: Option<&str>, entries: &'a [Entry]) -> (Vec<String>, Vec<(String, &'a Entry)>) {
    let mut directories: BTreeSet<String> = top.map(str::to_owned).into_iter().collect();
    let mut files: Vec<(String, &Entry)> = Vec::new();
    for entry in entries {
        let path = match top {
            Some(top) => format!("{top}/{}", entry.path),
            None => entry.path.clone(),
        };
        let mut parent = path.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            directories.insert(dir.to_owned());
            parent = dir;
        }
        files.push((path, entry));
    }
    files.sort_by(|left, right| left.0.cmp(&right.0));
    (directories.into_iter().collect(), files)
}

/// A `.tar.gz` of `entries` under the folder `top`.
pub fn tar_gz(top: &str, entries: &[Entry], mtime: u64) -> Result<Vec<u8>> {
    gzip(&tar(Some(top), entries, mtime)?)
}

/// A tar of `entries` (under `top` when given), with the folders they need.
pub fn tar(top: Option<&str>, entries: &[Entry], mtime: u64) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let (directories, files) = layout(top, entries);
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header
    };
    for directory in directories {
        let mut header = header(tar::EntryType::Directory, DIRECTORY_MODE, 0);
        append(&mut tar, &mut header, &format!("{directory}/"), &[])?;
    }
    for (path, entry) in files {
        let mut header = header(
            tar::EntryType::Regular,
            entry.mode(),
            entry.contents.len() as u64,
        );
        append(&mut tar, &mut header, &path, &entry.contents)?;
    }
    tar.into_inner().context("finish the tar stream")
}

/// Appends one entry. A path under `./` (Debian's packages) keeps its `./`,
/// which the tar crate would drop, by writing the name field itself.
fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    header: &mut tar::Header,
    path: &str,
    data: &[u8],
) -> Result<()> {
    if path.starts_with("./") {
        let name = &mut header.as_old_mut().name;
        anyhow::ensure!(
            path.len() < name.len(),
            "{path}: longer than a tar name field holds"
        );
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        tar.append(header, data)
    } else {
        tar.append_data(header, path, data)
    }
    .with_context(|| format!("add {path} to the archive"))
}

/// Gzip without a timestamp or file name, at the best compression.
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut gzip = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::best());
    gzip.write_all(bytes).context("compress")?;
    gzip.finish().context("finish the gzip stream")
}

/// A `.zip` of `entries` under the folder `top`. Zip stores local times
/// without a zone, so the commit time cannot be kept faithfully; every
/// entry carries the zip epoch (1980-01-01 00:00) instead.
pub fn zip(top: &str, entries: &[Entry]) -> Result<Vec<u8>> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(9))
        .last_modified_time(zip::DateTime::default());
    let (directories, files) = layout(Some(top), entries);
    for directory in directories {
        zip.add_directory(
            format!("{directory}/"),
            options.unix_permissions(DIRECTORY_MODE),
        )
        .with_context(|| format!("add {directory}/ to the archive"))?;
    }
    for (path, entry) in files {
        zip.start_file(&path, options.unix_permissions(entry.mode()))
            .with_context(|| format!("add {path} to the archive"))?;
        zip.write_all(&entry.contents)
            .with_context(|| format!("write {path} into the archive"))?;
    }
    Ok(zip.finish().context("finish the zip archive")?.into_inner())
}

/// An `ar` archive in the common format dpkg reads: each member with the
/// given time, owner 0:0, mode 0644, its data padded to an even length.
pub fn ar(members: &[(&str, &[u8])], mtime: u64) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        let header = format!(
            "{name:<16}{mtime:<12}{uid:<6}{gid:<6}{mode:<8}{size:<10}`\n",
            uid = 0,
            gid = 0,
            mode = "100644",
            size = data.len()
        );
        debug_assert_eq!(header.len(), 60);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// The members of an `ar` archive (the common format): name and data.
pub fn ar_members(bytes: &[u8]) -> Result<Vec<(&str, &[u8])>> {
    let mut rest = bytes
        .strip_prefix(b"!<arch>\n")
        .context("not an ar archive (a .deb starts with `!<arch>`)")?;
    let mut members = Vec::new();
    while !rest.is_empty() {
        let (header, after) = rest
            .split_at_checked(60)
            .context("the ar archive ends inside a member's header")?;
        if &header[58..] != b"`\n" {
            bail!("the ar archive has a member header without its end marker");
        }
        let name = std::str::from_utf8(&header[..16])
            .context("an ar member's name is not text")?
            .trim_end()
            .trim_end_matches('/');
        let size: usize = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|size| size.trim_end().parse().ok())
            .with_context(|| format!("the ar member {name:?} has no size"))?;
        let (data, after) = after
            .split_at_checked(size)
            .with_context(|| format!("the ar member {name:?} is cut short"))?;
        members.push((name, data));
        rest = after.get(size % 2..).unwrap_or_default();
    }
    Ok(members)
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        vec![
            Entry {
                path: "config/prod.toml".into(),
                contents: b"[log]\n".to_vec(),
                executable: false,
            },
            Entry {
                path: "app".into(),
                contents: b"\x7fELF binary".to_vec(),
                executable: true,
            },
            Entry {
                path: "README.md".into(),
                contents: b"# app\n".to_vec(),
                executable: false,
            },
        ]
    }

    #[test]
    fn tar_gz_bytes_depend_only_on_contents() {
        let first = tar_gz("app-1.0.0-x", &entries(), 1_700_000_000).unwrap();
        let mut shuffled = entries();
        shuffled.reverse();
        assert_eq!(
            first,
            tar_gz("app-1.0.0-x", &shuffled, 1_700_000_000).unwrap(),
            "entry order leaked in"
        );
        assert_ne!(
            first,
            tar_gz("app-1.0.0-x", &entries(), 1_700_000_001).unwrap(),
            "mtime is not recorded"
        );
        // gzip header: magic, method, no flags (no file name), mtime 0, OS unknown.
        assert_eq!(&first[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);

        let tar_bytes = {
            let mut decoded = Vec::new();
            std::io::Read::read_to_end(
                &mut flate2::read::GzDecoder::new(first.as_slice()),
                &mut decoded,
            )
            .unwrap();
            decoded
        };
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let listing: Vec<(String, u32, u64, u64, u64)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let header = entry.header();
                (
                    entry.path().unwrap().display().to_string(),
                    header.mode().unwrap(),
                    header.mtime().unwrap(),
                    header.uid().unwrap(),
                    header.gid().unwrap(),
                )
            })
            .collect();
        let expected = [
            ("app-1.0.0-x/", 0o755),
            ("app-1.0.0-x/config/", 0o755),
            ("app-1.0.0-x/README.md", 0o644),
            ("app-1.0.0-x/app", 0o755),
            ("app-1.0.0-x/config/prod.toml", 0o644),
        ];
        let expected: Vec<(String, u32, u64, u64, u64)> = expected
            .iter()
            .map(|(path, mode)| ((*path).to_owned(), *mode, 1_700_000_000, 0, 0))
            .collect();
        assert_eq!(listing, expected);
    }

    #[test]
    fn zip_bytes_depend_only_on_contents() {
        let first = zip("app-1.0.0-w", &entries()).unwrap();
        let mut shuffled = entries();
        shuffled.rotate_left(1);
        assert_eq!(first, zip("app-1.0.0-w", &shuffled).unwrap());
        let mut archive = zip::ZipArchive::new(Cursor::new(first)).unwrap();
        let names: Vec<String> = (0..archive.len())
            .map(|index| {
                archive
                    .by_index(index)
                    .unwrap()
                    .name()
                    .unwrap()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "app-1.0.0-w/",
                "app-1.0.0-w/config/",
                "app-1.0.0-w/README.md",
                "app-1.0.0-w/app",
                "app-1.0.0-w/config/prod.toml"
            ]
        );
        assert_eq!(
            archive.by_name("app-1.0.0-w/app").unwrap().unix_mode(),
            Some(0o100_755)
        );
    }

    #[test]
    fn sha256_matches_known_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
