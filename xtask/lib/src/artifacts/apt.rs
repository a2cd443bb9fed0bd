//! A signed apt repository in a folder, the layout `apt` reads from a
//! `file:` or `http:` source (`deb [signed-by=KEYRING] URL stable main`):
//!
//! ```text
//! pool/main/<name>_<version>_<arch>.deb
//! dists/<suite>/main/binary-<arch>/Packages, Packages.gz
//! dists/<suite>/Release, Release.gpg, InRelease
//! ```
//!
//! `Packages` is made from the control file inside each package of the
//! pool, read as hostile input (a package may come from anywhere the
//! operator copied it from): only the fields apt needs, each checked, go
//! into the index. The indexes are written first and the signed `Release`
//! files last, each to a temporary name and renamed, so a client sees
//! either the old index or the new one whole.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::archive;
use crate::signing::PrivateKey;
use crate::signing::openpgp::{self, Certificate};
use crate::util::write_atomically;

/// The one component the repository has.
pub const COMPONENT: &str = "main";

/// The most a package's control archive may unpack to, and its control
/// file: a control file is a few hundred bytes.
const MAX_CONTROL_ARCHIVE: u64 = 4 << 20;
const MAX_CONTROL_FILE: u64 = 64 << 10;

/// What the index says of one package, read from its control file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// Every field, in the package's order, continuation lines included.
    pub fields: Vec<(String, String)>,
}

impl Control {
    /// Where the package goes in the pool.
    pub fn pool_path(&self) -> String {
        format!(
            "pool/{COMPONENT}/{}_{}_{}.deb",
            self.package, self.version, self.architecture
        )
    }
}

/// Reads the control file of a `.deb`: the `ar` archive's
/// `control.tar.gz`, its `./control`.
pub fn control_of(deb: &[u8]) -> Result<Control> {
    let members = archive::ar_members(deb)?;
    let control_tar = match members
        .iter()
        .find(|(name, _)| name.starts_with("control.tar"))
    {
        Some((name, data)) if *name == "control.tar.gz" => data,
        Some((name, _)) => bail!(
            "the package's control archive is {name}; only control.tar.gz is read (dpkg-deb -Zgzip writes one)"
        ),
        None => bail!("the package has no control.tar.gz: it is not a Debian binary package"),
    };
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(*control_tar)
        .take(MAX_CONTROL_ARCHIVE + 1)
        .read_to_end(&mut tar)
        .context("unpack the package's control.tar.gz")?;
    if tar.len() as u64 > MAX_CONTROL_ARCHIVE {
        bail!("the package's control.tar.gz unpacks to more than {MAX_CONTROL_ARCHIVE} bytes");
    }
    let mut archive = tar::Archive::new(tar.as_slice());
    for entry in archive
        .entries()
        .context("read the package's control.tar.gz")?
    {
        let entry = entry.context("read the package's control.tar.gz")?;
        let path = entry.path_bytes();
        if path.as_ref() != b"./control" && path.as_ref() != b"control" {
            continue;
        }
        let mut text = String::new();
        entry
            .take(MAX_CONTROL_FILE + 1)
            .read_to_string(&mut text)
            .context("the package's control file is not UTF-8 text")?;
        if text.len() as u64 > MAX_CONTROL_FILE {
            bail!("the package's control file is over {MAX_CONTROL_FILE} bytes");
        }
        return parse_control(&text);
    }
    bail!("the package's control.tar.gz has no control file")
}

/// A control file's fields, with the three that name the package checked:
/// they become a file name in the pool.
pub fn parse_control(text: &str) -> Result<Control> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            let (_, value) = fields
                .last_mut()
                .context("the control file starts with a continuation line")?;
            value.push('\n');
            value.push_str(line);
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("the control file's line {line:?} is not `Field: value`"))?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|byte| byte.is_ascii_graphic() && byte != b':')
            || name.starts_with(['#', '-'])
        {
            bail!("the control file has a field named {name:?}");
        }
        if fields
            .iter()
            .any(|(seen, _)| seen.eq_ignore_ascii_case(name))
        {
            bail!("the control file names the field {name} twice");
        }
        fields.push((name.to_owned(), value.trim().to_owned()));
    }
    // The index adds these itself, from the file it indexes.
    for added in ["Filename", "Size", "MD5sum", "SHA1", "SHA256", "SHA512"] {
        if fields
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(added))
        {
            bail!("the control file has a {added} field, which only an index may have");
        }
    }
    let field = |wanted: &str| -> Result<String> {
        fields
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.clone())
            .with_context(|| format!("the control file has no {wanted} field"))
    };
    let (package, version, architecture) =
        (field("Package")?, field("Version")?, field("Architecture")?);
    let ok = |text: &str, first: fn(u8) -> bool, rest: &[u8], max: usize| {
        text.len() <= max
            && text.bytes().next().is_some_and(first)
            && text.bytes().all(|byte| {
                byte.is_ascii_lowercase() || byte.is_ascii_digit() || rest.contains(&byte)
            })
    };
    if !ok(
        &package,
        |byte| byte.is_ascii_lowercase() || byte.is_ascii_digit(),
        b".+-",
        100,
    ) || package.len() < 2
    {
        bail!(
            "the package name {package:?} is refused: Debian's are lowercase letters, digits, `.`, `+` and `-`, starting with a letter or digit"
        );
    }
    check_version(&version).with_context(|| format!("the package {package}"))?;
    if !ok(
        &architecture,
        |byte| byte.is_ascii_lowercase() || byte.is_ascii_digit(),
        b"-",
        32,
    ) {
        bail!("the architecture {architecture:?} of {package} is refused");
    }
    Ok(Control {
        package,
        version,
        architecture,
        fields,
    })
}

/// Checks a Debian version as the pool names files with it: a digit
/// first, then letters, digits, `.`, `+`, `~` and `-`; no epoch (its `:`
/// is not kept in file names).
pub fn check_version(version: &str) -> Result<()> {
    let ok = version.len() <= 100
        && version.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && version
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b".+~-".contains(&byte));
    if !ok {
        bail!(
            "the version {version:?} is refused: a digit first, then letters, digits, `.`, `+`, `~` and `-` (no epoch)"
        );
    }
    Ok(())
}

/// The repository folder.
pub struct Repository {
    pub root: PathBuf,
    pub suite: String,
    /// `Origin` and `Label` of the `Release` file: the project's name.
    pub origin: String,
}

impl Repository {
    /// Copies a package into the pool. The same bytes again do nothing; other
    /// bytes under a published name are refused, since clients keep the
    /// hash they saw first.
    pub fn add(&self, deb: &[u8], source: &Path) -> Result<Control> {
        let control = control_of(deb).with_context(|| format!("read {}", source.display()))?;
        let path = self.root.join(control.pool_path());
        match std::fs::read(&path) {
            Ok(existing) if existing == deb => return Ok(control),
            Ok(_) => bail!(
                "{} is already in the repository with other bytes: a published version is never replaced (apt clients would refuse its hash); raise the version",
                control.pool_path()
            ),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("read {}", path.display())),
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        write_atomically(&path, deb)?;
        Ok(control)
    }

    /// Writes the indexes of every package in the pool and the signed
    /// `Release` over them, dated `date`.
    pub fn index(&self, key: &PrivateKey, certificate: &Certificate, date: u64) -> Result<()> {
        let pool = self.root.join("pool").join(COMPONENT);
        let mut by_architecture: BTreeMap<String, Vec<(Control, String)>> = BTreeMap::new();
        let mut names: Vec<PathBuf> = match std::fs::read_dir(&pool) {
            Ok(entries) => entries
                .map(|entry| entry.map(|entry| entry.path()))
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("list {}", pool.display()))?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(err).with_context(|| format!("list {}", pool.display())),
        };
        names.sort();
        for path in names {
            if path.extension().is_none_or(|extension| extension != "deb") {
                continue;
            }
            let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
            let control = control_of(&bytes).with_context(|| format!("read {}", path.display()))?;
            if self.root.join(control.pool_path()) != path {
                bail!(
                    "{} holds {} {} for {}, which belongs at {}: move it there or remove it",
                    path.display(),
                    control.package,
                    control.version,
                    control.architecture,
                    control.pool_path()
                );
            }
            let stanza = stanza(&control, &bytes);
            by_architecture
                .entry(control.architecture.clone())
                .or_default()
                .push((control, stanza));
        }
        if by_architecture.is_empty() {
            bail!(
                "{} holds no package: add one (cargo xtask apt-repo FILE.deb, or after cargo xtask package)",
                pool.display()
            );
        }
        let dists = self.root.join("dists").join(&self.suite);
        let mut sums = String::new();
        for (architecture, packages) in &by_architecture {
            let text: String = packages
                .iter()
                .map(|(_, stanza)| stanza.as_str())
                .collect::<Vec<_>>()
                .join("\n");
            let relative = format!("{COMPONENT}/binary-{architecture}");
            std::fs::create_dir_all(dists.join(&relative))
                .with_context(|| format!("create {}", dists.join(&relative).display()))?;
            for (name, bytes) in [
                ("Packages", text.clone().into_bytes()),
                ("Packages.gz", archive::gzip(text.as_bytes())?),
            ] {
                write_atomically(&dists.join(&relative).join(name), &bytes)?;
                sums.push_str(&format!(
                    " {} {} {relative}/{name}\n",
                    archive::sha256_hex(&bytes),
                    bytes.len()
                ));
            }
        }
        let architectures: Vec<&str> = by_architecture.keys().map(String::as_str).collect();
        let release = format!(
            "Origin: {origin}\nLabel: {origin}\nSuite: {suite}\nCodename: {suite}\nDate: {date}\nArchitectures: {architectures}\nComponents: {COMPONENT}\nDescription: {origin} packages\nSHA256:\n{sums}",
            origin = self.origin,
            suite = self.suite,
            date = crate::util::rfc2822(date),
            architectures = architectures.join(" "),
        );
        // A signature may not predate its key: gpgv refuses it.
        let time = u32::try_from(date)
            .unwrap_or(u32::MAX)
            .max(certificate.created);
        write_atomically(&dists.join("Release"), release.as_bytes())?;
        write_atomically(
            &dists.join("Release.gpg"),
            openpgp::detached(key, certificate, release.as_bytes(), time).as_bytes(),
        )?;
        write_atomically(
            &dists.join("InRelease"),
            openpgp::clearsign(key, certificate, &release, time).as_bytes(),
        )?;
        Ok(())
    }
}

/// A package's stanza in `Packages`: its control fields, then where it is
/// and its hash.
fn stanza(control: &Control, bytes: &[u8]) -> String {
    let mut text = String::new();
    for (name, value) in &control.fields {
        text.push_str(&format!("{name}: {value}\n"));
    }
    text.push_str(&format!(
        "Filename: {}\nSize: {}\nSHA256: {}\n",
        control.pool_path(),
        bytes.len(),
        archive::sha256_hex(bytes)
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROL: &str = "Package: svc\nVersion: 1.2.3\nArchitecture: amd64\nDescription: A service\n Its long description.\n";

    #[test]
    fn control_files_are_read_and_their_names_checked() {
        let control = parse_control(CONTROL).unwrap();
        assert_eq!(control.pool_path(), "pool/main/svc_1.2.3_amd64.deb");
        assert_eq!(control.fields[3].1, "A service\n Its long description.");
        let cases = [
            (
                "Package: ../x\nVersion: 1\nArchitecture: amd64\n",
                "the package name \"../x\" is refused",
            ),
            (
                "Package: svc\nVersion: 1/../x\nArchitecture: amd64\n",
                "the version \"1/../x\"",
            ),
            (
                "Package: svc\nVersion: 1:2.0\nArchitecture: amd64\n",
                "(no epoch)",
            ),
            (
                "Package: svc\nVersion: 1\nArchitecture: am/d64\n",
                "the architecture \"am/d64\"",
            ),
            ("Package: svc\nVersion: 1\n", "no Architecture field"),
            (
                "Package: svc\nPackage: other\n",
                "names the field Package twice",
            ),
            (
                "Package: svc\nVersion: 1\nArchitecture: amd64\nSHA256: 00\n",
                "only an index may have",
            ),
            (" continued\n", "starts with a continuation line"),
            ("no colon\n", "is not `Field: value`"),
        ];
        for (text, expected) in cases {
            let error = format!("{:#}", parse_control(text).unwrap_err());
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_deb_s_control_file_is_found_in_its_archive() {
        let package = crate::artifacts::deb::tests::package();
        let bytes = crate::artifacts::deb::build(&package).unwrap();
        let control = control_of(&bytes).unwrap();
        assert_eq!(
            (control.package.as_str(), control.version.as_str()),
            ("svc", "1.2.3")
        );
        for (bytes, expected) in [
            (&b"garbage"[..], "not an ar archive"),
            (&bytes[..100], "ends inside a member's header"),
            (
                &bytes[..200],
                "the ar member \"control.tar.gz\" is cut short",
            ),
            (&b"!<arch>\n"[..], "no control.tar.gz"),
        ] {
            let error = format!("{:#}", control_of(bytes).unwrap_err());
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn the_index_lists_the_pool_and_refuses_a_replaced_version() {
        let folder = crate::util::TempFolder::new("xtask-apt-test").unwrap();
        let repository = Repository {
            root: folder.path().to_owned(),
            suite: "stable".to_owned(),
            origin: "svc".to_owned(),
        };
        let key = PrivateKey::generate().unwrap();
        let certificate = Certificate {
            key: key.public().clone(),
            created: 1_796_000_000,
        };
        let mut package = crate::artifacts::deb::tests::package();
        let first = crate::artifacts::deb::build(&package).unwrap();
        repository.add(&first, Path::new("a.deb")).unwrap();
        repository.add(&first, Path::new("a.deb")).unwrap();
        package.binary = b"\x7fELF other binary";
        let other = crate::artifacts::deb::build(&package).unwrap();
        let error = repository.add(&other, Path::new("b.deb")).unwrap_err();
        assert!(error.to_string().contains("never replaced"), "{error}");
        package.version = "1.2.4";
        let second = crate::artifacts::deb::build(&package).unwrap();
        repository.add(&second, Path::new("b.deb")).unwrap();
        repository.index(&key, &certificate, 1_796_644_884).unwrap();

        let dists = folder.path().join("dists/stable");
        let packages = std::fs::read_to_string(dists.join("main/binary-amd64/Packages")).unwrap();
        assert_eq!(packages.matches("Package: svc\n").count(), 2, "{packages}");
        assert!(packages.contains("Filename: pool/main/svc_1.2.4_amd64.deb\n"));
        assert!(packages.contains(&format!("SHA256: {}\n", archive::sha256_hex(&second))));
        let release = std::fs::read_to_string(dists.join("Release")).unwrap();
        assert!(
            release.starts_with("Origin: svc\nLabel: svc\nSuite: stable\nCodename: stable\nDate: Mon, 07 Dec 2026 12:01:24 +0000\nArchitectures: amd64\nComponents: main\n"),
            "{release}"
        );
        assert!(release.contains(&format!(
            " {} {} main/binary-amd64/Packages\n",
            archive::sha256_hex(packages.as_bytes()),
            packages.len()
        )));
        let inrelease = std::fs::read_to_string(dists.join("InRelease")).unwrap();
        assert!(inrelease.contains(&release), "{inrelease}");

        // A package put in the pool by hand under another name is refused.
        std::fs::write(folder.path().join("pool/main/x.deb"), &first).unwrap();
        let error = repository.index(&key, &certificate, 0).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("belongs at pool/main/svc_1.2.3_amd64.deb"),
            "{error}"
        );
    }
}
