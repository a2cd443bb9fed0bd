//! RPM packages of the service, written without `rpmbuild`: the lead, a
//! signature header, the main header and a gzip'd cpio payload, as the
//! RPM v4 format lays them out (rpm's `doc/manual/format` and
//! `lib/header.c`). The contents and the scripts' behaviour are the Debian
//! package's (`deb::Package`): the binary in `/usr/bin`, the config as
//! `%config(noreplace)` files in `/etc/<name>/`, the units in
//! `/usr/lib/systemd/system/`, the guide, license and changelog; `%post`
//! enables and starts on the first install and hands over with `systemctl
//! reload` on an upgrade, `%preun` stops only on removal.
//!
//! Everything is dated at the source date and owned by root, every list is
//! sorted, so two machines packaging one binary get the same bytes.

use std::io::Write as _;

use anyhow::{Context, Result, bail};
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::deb::Package;
use crate::archive::{self, hex};

/// The file name RPM gives the package: `<name>-<version>-<release>.<arch>.rpm`.
pub fn file_name(name: &str, version: &str, arch: &str) -> String {
    format!("{name}-{version}-{RELEASE}.{arch}.rpm")
}

/// The package release: one build of each version.
const RELEASE: &str = "1";

/// RPM's architecture for a Debian one.
pub fn arch_of(debian_architecture: &str) -> Result<&'static str> {
    Ok(match debian_architecture {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        other => bail!("no RPM architecture for {other}"),
    })
}

/// `%config(noreplace)`, `%doc` and `%license` (rpm's `rpmfileAttrs`).
const FILE_CONFIG: u32 = 1 << 0;
const FILE_DOC: u32 = 1 << 1;
const FILE_NOREPLACE: u32 = 1 << 4;
const FILE_LICENSE: u32 = 1 << 7;

/// rpm's dependency sense flags.
const SENSE_LESS: u32 = 1 << 1;
const SENSE_EQUAL: u32 = 1 << 3;
const SENSE_INTERP: u32 = 1 << 8;
const SENSE_SCRIPT_POST: u32 = 1 << 10;
const SENSE_SCRIPT_PREUN: u32 = 1 << 11;
const SENSE_SCRIPT_POSTUN: u32 = 1 << 12;
const SENSE_RPMLIB: u32 = 1 << 24;

/// One file or folder of the payload.
struct File {
    path: String,
    mode: u16,
    contents: Vec<u8>,
    flags: u32,
}

/// The `.rpm`'s bytes, for the RPM architecture `arch`.
pub fn build(package: &Package, arch: &str) -> Result<Vec<u8>> {
    let name = package.name;
    let version = package.version;
    if version.contains('-') {
        bail!(
            "the version {version:?} holds a `-`, which RPM keeps for the release: use `~` for a pre-release"
        );
    }
    let mut files = vec![
        file(
            &format!("/usr/bin/{name}"),
            0o100_755,
            package.binary.to_vec(),
            0,
        ),
        file(&format!("/etc/{name}"), 0o040_755, Vec::new(), 0),
        file(&format!("/usr/share/doc/{name}"), 0o040_755, Vec::new(), 0),
        file(
            &format!("/usr/share/licenses/{name}"),
            0o040_755,
            Vec::new(),
            0,
        ),
    ];
    for (config, contents) in &package.config {
        files.push(file(
            &format!("/etc/{name}/{config}"),
            0o100_644,
            contents.clone(),
            FILE_CONFIG | FILE_NOREPLACE,
        ));
    }
    for (unit, text) in [
        (format!("{name}.socket"), &package.units[0]),
        (format!("{name}.service"), &package.units[1]),
    ] {
        files.push(file(
            &format!("/usr/lib/systemd/system/{unit}"),
            0o100_644,
            text.as_bytes().to_vec(),
            0,
        ));
    }
    files.push(file(
        &format!("/usr/share/doc/{name}/OPERATING.md"),
        0o100_644,
        package.guide.as_bytes().to_vec(),
        FILE_DOC,
    ));
    files.push(file(
        &format!("/usr/share/licenses/{name}/LICENSE"),
        0o100_644,
        package.license.to_vec(),
        FILE_LICENSE,
    ));
    files.sort_by(|a, b| a.path.cmp(&b.path));

    let payload_cpio = cpio(&files, package.mtime);
    let payload = archive::gzip(&payload_cpio)?;
    let header = main_header(package, arch, &files, &payload)?;

    // The signature header: sizes and digests of the main header and the
    // payload, which rpm checks before it reads either.
    let mut signature = Header::default();
    signature.string(269, &hex(&Sha1::digest(&header)));
    signature.string(273, &hex(&Sha256::digest(&header)));
    let mut md5 = Md5::new();
    md5.update(&header);
    md5.update(&payload);
    signature.int32(1000, &[u32::try_from(header.len() + payload.len())?]);
    signature.bin(1004, &md5.finalize());
    signature.int32(1007, &[u32::try_from(payload_cpio.len())?]);
    let mut signature = signature.write(62);
    // The signature header is padded to eight bytes.
    signature.resize(signature.len().next_multiple_of(8), 0);

    let mut out = lead(&format!("{name}-{version}-{RELEASE}"));
    out.extend_from_slice(&signature);
    out.extend_from_slice(&header);
    out.extend_from_slice(&payload);
    Ok(out)
}

fn file(path: &str, mode: u16, contents: Vec<u8>, flags: u32) -> File {
    File {
        path: path.to_owned(),
        mode,
        contents,
        flags,
    }
}

/// The scripts: as the Debian package's (`deb::scripts`), in RPM's terms:
/// `$1` counts the installed versions after the step (1 on a first
/// install, 2 on an upgrade, 0 on the last removal).
fn scripts(name: &str) -> [(u32, u32, String); 3] {
    let post = format!(
        r#"if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ "$1" -eq 1 ]; then
        systemctl enable --now {name}.socket {name}.service
    else
        # An upgrade: the service starts the new /usr/bin/{name}, hands it
        # the listening socket, and drains; no connection is refused.
        systemctl reload {name}.service || systemctl restart {name}.service
    fi
fi
"#
    );
    let preun = format!(
        r#"if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now {name}.service {name}.socket || :
fi
"#
    );
    let postun =
        "if [ -d /run/systemd/system ]; then\n    systemctl daemon-reload || :\nfi\n".to_owned();
    // (script tag, interpreter tag, text)
    [
        (1024, 1086, post),
        (1025, 1087, preun),
        (1026, 1088, postun),
    ]
}

fn main_header(package: &Package, arch: &str, files: &[File], payload: &[u8]) -> Result<Vec<u8>> {
    let name = package.name;
    let version = package.version;
    let mtime = u32::try_from(package.mtime).context("the source date is past 2106")?;
    let mut header = Header::default();
    header.string_array(100, &["C"]);
    header.string(1000, name);
    header.string(1001, version);
    header.string(1002, RELEASE);
    header.i18n(1004, package.summary);
    header.i18n(
        1005,
        &format!(
            "The {name} service: one static binary, its settings in /etc/{name}/, and\nsystemd units that upgrade it without downtime on `systemctl reload`."
        ),
    );
    header.int32(1006, &[mtime]);
    header.string(1007, "localhost");
    let installed: usize = files.iter().map(|file| file.contents.len()).sum();
    header.int32(1009, &[u32::try_from(installed)?]);
    header.string(1014, "MIT");
    header.string(1015, package.maintainer);
    header.i18n(1016, "System Environment/Daemons");
    if let Some(homepage) = package.homepage {
        header.string(1020, homepage);
    }
    header.string(1021, "linux");
    header.string(1022, arch);
    let scripts = scripts(name);
    for (tag, _, text) in &scripts {
        header.string(*tag, text);
    }
    let size = |file: &File| u32::try_from(file.contents.len());
    header.int32(
        1028,
        &files
            .iter()
            .map(size)
            .collect::<std::result::Result<Vec<_>, _>>()?,
    );
    header.int16(
        1030,
        &files.iter().map(|file| file.mode).collect::<Vec<_>>(),
    );
    header.int16(1033, &vec![0; files.len()]);
    header.int32(1034, &vec![mtime; files.len()]);
    let digests: Vec<String> = files
        .iter()
        .map(|file| {
            if file.mode & 0o170_000 == 0o100_000 {
                archive::sha256_hex(&file.contents)
            } else {
                String::new()
            }
        })
        .collect();
    header.string_array(
        1035,
        &digests.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    header.string_array(1036, &vec![""; files.len()]);
    header.int32(
        1037,
        &files.iter().map(|file| file.flags).collect::<Vec<_>>(),
    );
    header.string_array(1039, &vec!["root"; files.len()]);
    header.string_array(1040, &vec!["root"; files.len()]);
    header.string(1044, &format!("{name}-{version}-{RELEASE}.src.rpm"));
    header.int32(1045, &vec![u32::MAX; files.len()]);
    let full_version = format!("{version}-{RELEASE}");
    let arch_provide = match arch {
        "x86_64" => format!("{name}(x86-64)"),
        other => format!("{name}({other}-64)"),
    };
    header.string_array(1047, &[name, &arch_provide]);
    // What the package needs: a shell for its scripts, and the rpm
    // features its header uses.
    let requires = [
        ("/bin/sh", "", SENSE_INTERP | SENSE_SCRIPT_POST),
        ("/bin/sh", "", SENSE_INTERP | SENSE_SCRIPT_PREUN),
        ("/bin/sh", "", SENSE_INTERP | SENSE_SCRIPT_POSTUN),
        (
            "rpmlib(CompressedFileNames)",
            "3.0.4-1",
            SENSE_RPMLIB | SENSE_LESS | SENSE_EQUAL,
        ),
        (
            "rpmlib(FileDigests)",
            "4.6.0-1",
            SENSE_RPMLIB | SENSE_LESS | SENSE_EQUAL,
        ),
        (
            "rpmlib(PayloadFilesHavePrefix)",
            "4.0-1",
            SENSE_RPMLIB | SENSE_LESS | SENSE_EQUAL,
        ),
    ];
    header.int32(1048, &requires.map(|(_, _, flags)| flags));
    header.string_array(1049, &requires.map(|(name, _, _)| name));
    header.string_array(1050, &requires.map(|(_, version, _)| version));
    header.string(1064, "4.18.0");
    header.int32(1080, &[mtime]);
    header.string_array(1081, &[&format!("{} - {full_version}", package.maintainer)]);
    header.string_array(1082, &[&format!("- Release {version}.")]);
    for (_, tag, _) in &scripts {
        header.string(*tag, "/bin/sh");
    }
    header.int32(1095, &vec![1; files.len()]);
    let inodes: Vec<u32> = (1..=files.len() as u32).collect();
    header.int32(1096, &inodes);
    header.string_array(1097, &vec![""; files.len()]);
    header.int32(1112, &[SENSE_EQUAL, SENSE_EQUAL]);
    header.string_array(1113, &[&full_version, &full_version]);
    // Paths as (folder, base name) pairs, each folder once.
    let mut folders: Vec<String> = Vec::new();
    let mut indexes = Vec::new();
    let mut basenames = Vec::new();
    for file in files {
        let (folder, base) = file
            .path
            .rsplit_once('/')
            .map(|(folder, base)| (format!("{folder}/"), base))
            .expect("absolute paths");
        let index = match folders.iter().position(|seen| *seen == folder) {
            Some(index) => index,
            None => {
                folders.push(folder);
                folders.len() - 1
            }
        };
        indexes.push(u32::try_from(index)?);
        basenames.push(base);
    }
    header.int32(1116, &indexes);
    header.string_array(1117, &basenames);
    header.string_array(
        1118,
        &folders.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    header.string(1124, "cpio");
    header.string(1125, "gzip");
    header.string(1126, "9");
    // SHA-256 for file digests (PGPHASHALGO_SHA256).
    header.int32(5011, &[8]);
    header.string(5062, "utf-8");
    header.string_array(5092, &[&hex(&Sha256::digest(payload))]);
    header.int32(5093, &[8]);
    Ok(header.write(63))
}

/// The lead: 96 bytes older tools still read first.
fn lead(name_version_release: &str) -> Vec<u8> {
    let mut lead = vec![0xED, 0xAB, 0xEE, 0xDB, 3, 0];
    lead.extend_from_slice(&0u16.to_be_bytes()); // a binary package
    lead.extend_from_slice(&1u16.to_be_bytes()); // archnum (unused)
    let mut name = [0u8; 66];
    let bytes = name_version_release.as_bytes();
    let length = bytes.len().min(65);
    name[..length].copy_from_slice(&bytes[..length]);
    lead.extend_from_slice(&name);
    lead.extend_from_slice(&1u16.to_be_bytes()); // Linux
    lead.extend_from_slice(&5u16.to_be_bytes()); // a header-style signature
    lead.extend_from_slice(&[0; 16]);
    debug_assert_eq!(lead.len(), 96);
    lead
}

/// The payload: a cpio archive in the "new ASCII" format rpm reads, each
/// path with rpm's `./` prefix.
fn cpio(files: &[File], mtime: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entry = |inode: u32, mode: u32, name: &str, data: &[u8], nlink: u32| {
        let _ = write!(
            out,
            "070701{inode:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{mtime:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            0,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    };
    for (index, file) in files.iter().enumerate() {
        let nlink = if file.mode & 0o170_000 == 0o040_000 {
            2
        } else {
            1
        };
        entry(
            index as u32 + 1,
            u32::from(file.mode),
            &format!(".{}", file.path),
            &file.contents,
            nlink,
        );
    }
    entry(0, 0, "TRAILER!!!", &[], 1);
    out
}

/// A header being written: its entries (tag, type, count, data).
#[derive(Default)]
struct Header {
    entries: Vec<(u32, u32, u32, Vec<u8>)>,
}

const TYPE_INT16: u32 = 3;
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_BIN: u32 = 7;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

impl Header {
    fn string(&mut self, tag: u32, value: &str) {
        self.entries
            .push((tag, TYPE_STRING, 1, nul_terminated(&[value])));
    }

    fn i18n(&mut self, tag: u32, value: &str) {
        self.entries
            .push((tag, TYPE_I18NSTRING, 1, nul_terminated(&[value])));
    }

    fn string_array(&mut self, tag: u32, values: &[&str]) {
        self.entries.push((
            tag,
            TYPE_STRING_ARRAY,
            values.len() as u32,
            nul_terminated(values),
        ));
    }

    fn int32(&mut self, tag: u32, values: &[u32]) {
        let data = values
            .iter()
            .flat_map(|value| value.to_be_bytes())
            .collect();
        self.entries
            .push((tag, TYPE_INT32, values.len() as u32, data));
    }

    fn int16(&mut self, tag: u32, values: &[u16]) {
        let data = values
            .iter()
            .flat_map(|value| value.to_be_bytes())
            .collect();
        self.entries
            .push((tag, TYPE_INT16, values.len() as u32, data));
    }

    fn bin(&mut self, tag: u32, value: &[u8]) {
        self.entries
            .push((tag, TYPE_BIN, value.len() as u32, value.to_vec()));
    }

    /// The header's bytes, all its entries inside the immutable region
    /// `region_tag` (62 for a signature header, 63 for the main one): the
    /// region's entry comes first, and its trailer, last in the data,
    /// points back over every entry.
    fn write(mut self, region_tag: u32) -> Vec<u8> {
        self.entries.sort_by_key(|(tag, ..)| *tag);
        let count = self.entries.len() as u32 + 1;
        let mut index = Vec::new();
        let mut data: Vec<u8> = Vec::new();
        for (tag, kind, items, bytes) in &self.entries {
            let align = match *kind {
                TYPE_INT16 => 2,
                TYPE_INT32 => 4,
                _ => 1,
            };
            data.resize(data.len().next_multiple_of(align), 0);
            index.push((*tag, *kind, data.len() as u32, *items));
            data.extend_from_slice(bytes);
        }
        let trailer_at = data.len() as u32;
        data.extend_from_slice(&region_tag.to_be_bytes());
        data.extend_from_slice(&TYPE_BIN.to_be_bytes());
        data.extend_from_slice(&(-(count as i32 * 16)).to_be_bytes());
        data.extend_from_slice(&16u32.to_be_bytes());

        let mut out = vec![0x8E, 0xAD, 0xE8, 0x01, 0, 0, 0, 0];
        out.extend_from_slice(&count.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        for (tag, kind, offset, items) in
            std::iter::once((region_tag, TYPE_BIN, trailer_at, 16)).chain(index)
        {
            for word in [tag, kind, offset, items] {
                out.extend_from_slice(&word.to_be_bytes());
            }
        }
        out.extend_from_slice(&data);
        out
    }
}

fn nul_terminated(values: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_is_reproducible_and_named_as_rpm_names_it() {
        let package = crate::artifacts::deb::tests::package();
        let bytes = build(&package, "x86_64").unwrap();
        assert_eq!(bytes, build(&package, "x86_64").unwrap());
        assert_eq!(&bytes[..4], [0xED, 0xAB, 0xEE, 0xDB]);
        assert_eq!(&bytes[96..100], [0x8E, 0xAD, 0xE8, 0x01]);
        assert_eq!(
            file_name("svc", "1.2.3", "x86_64"),
            "svc-1.2.3-1.x86_64.rpm"
        );
        let mut dashed = crate::artifacts::deb::tests::package();
        dashed.version = "1.2.3-rc.1";
        assert!(
            build(&dashed, "x86_64")
                .unwrap_err()
                .to_string()
                .contains("use `~`")
        );
    }

    /// rpm's own reading (`rpm -qp`), where it is installed; under
    /// `CI=true` a missing rpm fails.
    #[test]
    fn rpm_reads_the_package_its_files_and_scripts() {
        let Some(rpm) = crate::util::test_tool("rpm", "apt-get install rpm") else {
            return;
        };
        let folder = crate::util::TempFolder::new("xtask-rpm-test").unwrap();
        let path = folder.path().join("svc-1.2.3-1.x86_64.rpm");
        let package = crate::artifacts::deb::tests::package();
        std::fs::write(&path, build(&package, "x86_64").unwrap()).unwrap();
        let query = |args: &[&str]| {
            let output = std::process::Command::new(&rpm)
                .args(["-qp", "--nosignature"])
                .args(args)
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "rpm -qp {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        };
        assert_eq!(
            query(&[
                "--queryformat",
                "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{LICENSE}"
            ]),
            "svc 1.2.3 1 x86_64 MIT"
        );
        assert_eq!(
            query(&["--list"]),
            "/etc/svc\n/etc/svc/base.toml\n/usr/bin/svc\n/usr/lib/systemd/system/svc.service\n/usr/lib/systemd/system/svc.socket\n/usr/share/doc/svc\n/usr/share/doc/svc/OPERATING.md\n/usr/share/licenses/svc\n/usr/share/licenses/svc/LICENSE\n"
        );
        assert_eq!(query(&["--configfiles"]), "/etc/svc/base.toml\n");
        let scripts = query(&["--scripts"]);
        assert!(
            scripts.contains("postinstall scriptlet (using /bin/sh):")
                && scripts.contains("systemctl reload svc.service")
                && scripts.contains("preuninstall scriptlet (using /bin/sh):"),
            "{scripts}"
        );
        // The digests rpm checks before it reads anything.
        let checked = std::process::Command::new(&rpm)
            .args(["-K", "--nosignature"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            checked.status.success(),
            "rpm -K: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );

        // Installed into a scratch root (no scripts: no systemd there),
        // verified against the header's digests, erased: nothing of it is
        // left.
        let root = folder.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let rpm_in_root = |args: &[&str]| {
            let output = std::process::Command::new(&rpm)
                .arg("--root")
                .arg(&root)
                .args(args)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "rpm {args:?}: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        };
        rpm_in_root(&["--initdb"]);
        rpm_in_root(&[
            "-i",
            "--nodeps",
            "--noscripts",
            "--nosignature",
            path.to_str().unwrap(),
        ]);
        assert_eq!(
            std::fs::read(root.join("usr/bin/svc")).unwrap(),
            package.binary
        );
        assert_eq!(rpm_in_root(&["-V", "--nodeps", "svc"]), "");
        rpm_in_root(&["-e", "--nodeps", "--noscripts", "svc"]);
        for left in [
            "usr/bin/svc",
            "etc/svc",
            "usr/share/doc/svc",
            "usr/share/licenses/svc",
        ] {
            assert!(!root.join(left).exists(), "{left} is left after erase");
        }
    }
}
