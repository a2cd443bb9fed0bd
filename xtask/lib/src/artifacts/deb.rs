//! Debian packages of the service, written without `dpkg-deb`: an `ar`
//! archive of `debian-binary`, `control.tar.gz` and `data.tar.gz`, whose
//! bytes depend only on what goes in (the tars are `archive::tar`'s, dated
//! at the source date; `ar` members carry that date, owner 0:0 and fixed
//! modes), so two machines packaging one release get the same `.deb`.
//!
//! What the package installs: the binary as `/usr/bin/<binary>`, the config
//! files as conffiles under `/etc/<binary>/`, the socket and service units
//! under `/lib/systemd/system/` (rendered for those paths), and the
//! operator's guide, the license and a changelog under
//! `/usr/share/doc/<binary>/`. The maintainer scripts enable and start the
//! service on the first install, hand over to the new binary with
//! `systemctl reload` (the service's zero-downtime upgrade) on an upgrade,
//! stop it only on removal, and leave the conffiles to dpkg's purge. The
//! units run the service as a `DynamicUser`, so no system user is created.

use std::fmt::Write as _;

use anyhow::Result;
use sha2::Digest as _;

use crate::archive::{self, Entry};

/// What a package is made of.
pub struct Package<'a> {
    /// The package and binary name.
    pub name: &'a str,
    pub version: &'a str,
    /// Debian's name for the architecture: `amd64`, `arm64`.
    pub architecture: &'a str,
    pub maintainer: &'a str,
    pub homepage: Option<&'a str>,
    pub summary: &'a str,
    pub binary: &'a [u8],
    /// The config files, by file name, for `/etc/<name>/`.
    pub config: Vec<(String, Vec<u8>)>,
    /// The socket unit and the service unit, rendered for `/usr/bin` and
    /// `/etc`.
    pub units: [String; 2],
    pub guide: &'a str,
    pub license: &'a [u8],
    /// The time every entry carries: the source date epoch.
    pub mtime: u64,
}

/// Cargo's version as Debian orders it: a pre-release's `-` becomes `~`,
/// which sorts before the release (`1.2.0~rc.1` < `1.2.0`), where `-`
/// would start a Debian revision.
pub fn debian_version(cargo_version: &str) -> String {
    cargo_version.replacen('-', "~", 1)
}

/// The file name Debian gives the package: `<name>_<version>_<arch>.deb`.
pub fn file_name(name: &str, version: &str, architecture: &str) -> String {
    format!("{name}_{version}_{architecture}.deb")
}

/// The `.deb`'s bytes.
pub fn build(package: &Package) -> Result<Vec<u8>> {
    let name = package.name;
    let mut data = vec![Entry {
        path: format!("usr/bin/{name}"),
        contents: package.binary.to_vec(),
        executable: true,
    }];
    for (file, contents) in &package.config {
        data.push(Entry {
            path: format!("etc/{name}/{file}"),
            contents: contents.clone(),
            executable: false,
        });
    }
    for (unit, text) in [
        (format!("{name}.socket"), &package.units[0]),
        (format!("{name}.service"), &package.units[1]),
    ] {
        data.push(Entry {
            path: format!("lib/systemd/system/{unit}"),
            contents: text.as_bytes().to_vec(),
            executable: false,
        });
    }
    let changelog = format!(
        "{name} ({version}) unstable; urgency=medium\n\n  * Release {version}.\n\n -- {maintainer}  {date}\n",
        version = package.version,
        maintainer = package.maintainer,
        date = crate::util::rfc2822(package.mtime),
    );
    data.push(Entry {
        path: format!("usr/share/lintian/overrides/{name}"),
        contents: lintian_overrides(name).into_bytes(),
        executable: false,
    });
    for (file, contents) in [
        ("OPERATING.md", package.guide.as_bytes().to_vec()),
        ("copyright", package.license.to_vec()),
        ("changelog.gz", archive::gzip(changelog.as_bytes())?),
    ] {
        data.push(Entry {
            path: format!("usr/share/doc/{name}/{file}"),
            contents,
            executable: false,
        });
    }

    let installed_kib: usize = data
        .iter()
        .map(|entry| entry.contents.len().div_ceil(1024))
        .sum();
    let mut control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: {architecture}\nMaintainer: {maintainer}\nInstalled-Size: {installed_kib}\nSection: net\nPriority: optional\n",
        version = package.version,
        architecture = package.architecture,
        maintainer = package.maintainer,
    );
    if let Some(homepage) = package.homepage {
        let _ = writeln!(control, "Homepage: {homepage}");
    }
    let _ = writeln!(
        control,
        "Description: {}\n The {name} service: one static binary, its settings in /etc/{name}/,\n and systemd units that upgrade it without downtime on `systemctl reload`.",
        synopsis(package.summary)
    );
    let conffiles: String = package
        .config
        .iter()
        .map(|(file, _)| format!("/etc/{name}/{file}\n"))
        .collect();
    // What `dpkg --verify` checks the installed files against.
    let md5sums: String = data
        .iter()
        .map(|entry| {
            let digest = archive::hex(&md5::Md5::digest(&entry.contents));
            format!("{digest}  {}\n", entry.path)
        })
        .collect();
    let mut control_entries = vec![
        Entry {
            path: "control".to_owned(),
            contents: control.into_bytes(),
            executable: false,
        },
        Entry {
            path: "conffiles".to_owned(),
            contents: conffiles.into_bytes(),
            executable: false,
        },
        Entry {
            path: "md5sums".to_owned(),
            contents: md5sums.into_bytes(),
            executable: false,
        },
    ];
    for (script, text) in scripts(name) {
        control_entries.push(Entry {
            path: script.to_owned(),
            contents: text.into_bytes(),
            executable: true,
        });
    }
    let control_tar = archive::gzip(&archive::tar(Some("."), &control_entries, package.mtime)?)?;
    let data_tar = archive::gzip(&archive::tar(Some("."), &data, package.mtime)?)?;
    Ok(archive::ar(
        &[
            ("debian-binary", b"2.0\n".as_slice()),
            ("control.tar.gz", &control_tar),
            ("data.tar.gz", &data_tar),
        ],
        package.mtime,
    ))
}

/// The first line of the description as Debian writes it: without a
/// leading article (`The service …` → `Service …`).
fn synopsis(summary: &str) -> String {
    let trimmed = ["A ", "An ", "The "]
        .iter()
        .find_map(|article| summary.strip_prefix(article))
        .unwrap_or(summary);
    let mut chars = trimmed.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What lintian reports of the package and is so on purpose, each with
/// why (docs/packages.md lists them too).
fn lintian_overrides(name: &str) -> String {
    format!(
        "# The upgrade is `systemctl reload`, the service's own handover of its
# socket to the new binary; the scripts call systemctl only when systemd
# runs the machine (/run/systemd/system).
{name}: maintainer-script-calls-systemctl [postinst:*]
{name}: maintainer-script-calls-systemctl [prerm:*]
# A static PIE: it loads no shared library, so it depends on none.
{name}: shared-library-lacks-prerequisites [usr/bin/{name}]
# Its one flag and its settings are in /usr/share/doc/{name}/OPERATING.md.
{name}: no-manual-page [usr/bin/{name}]
"
    )
}

/// The maintainer scripts. dpkg calls `postinst configure <old version>`
/// after unpacking an upgrade, with the new binary already in place, so a
/// reload there is the service's own handover to it; `prerm upgrade` stops
/// nothing. Without a running systemd (a container, a chroot) they only
/// install.
fn scripts(name: &str) -> [(&'static str, String); 3] {
    let postinst = format!(
        r#"#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ -z "$2" ]; then
        systemctl enable --now {name}.socket {name}.service
    else
        # An upgrade: the service starts the new /usr/bin/{name}, hands it
        # the listening socket, and drains; no connection is refused.
        systemctl reload {name}.service || systemctl restart {name}.service
    fi
fi
"#
    );
    let prerm = format!(
        r#"#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl disable --now {name}.service {name}.socket || true
fi
"#
    );
    let postrm = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
"#
    .to_owned();
    [("postinst", postinst), ("prerm", prerm), ("postrm", postrm)]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn package() -> Package<'static> {
        Package {
            name: "svc",
            version: "1.2.3",
            architecture: "amd64",
            maintainer: "Svc maintainers <svc@example.com>",
            homepage: Some("https://example.com/svc"),
            summary: "An example service",
            binary: b"\x7fELF binary",
            config: vec![("base.toml".to_owned(), b"[server]\n".to_vec())],
            units: ["[Socket]\n".to_owned(), "[Service]\n".to_owned()],
            guide: "# Operating svc\n",
            license: b"MIT\n",
            mtime: 1_796_644_884,
        }
    }

    #[test]
    fn a_package_is_debian_binary_control_and_data_in_that_order_and_reproducible() {
        let bytes = build(&package()).unwrap();
        assert_eq!(bytes, build(&package()).unwrap());
        // Read back as apt-repo reads packages: end markers, sizes, padding.
        let members = archive::ar_members(&bytes).unwrap();
        let names: Vec<&str> = members.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["debian-binary", "control.tar.gz", "data.tar.gz"]);
        assert_eq!(members[0].1, b"2.0\n".as_slice());
        let control = {
            use std::io::Read;
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(members[1].1)
                .read_to_end(&mut tar)
                .unwrap();
            tar
        };
        let mut files = std::collections::BTreeMap::new();
        for entry in tar::Archive::new(control.as_slice()).entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
            let mode = entry.header().mode().unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            files.insert(path, (mode, text));
        }
        let control = &files["./control"].1;
        assert!(
            control.starts_with("Package: svc\nVersion: 1.2.3\nArchitecture: amd64\n")
                && control.contains("\nMaintainer: Svc maintainers <svc@example.com>\n")
                && control.contains("\nDescription: Example service\n "),
            "{control}"
        );
        assert_eq!(files["./conffiles"].1, "/etc/svc/base.toml\n");
        // md5sums: the MD5 of b"\x7fELF binary", and a line per file.
        let md5sums = &files["./md5sums"].1;
        assert!(
            md5sums.starts_with(&format!(
                "{}  usr/bin/svc\n",
                archive::hex(&md5::Md5::digest(b"\x7fELF binary"))
            )),
            "{md5sums}"
        );
        assert_eq!(md5sums.lines().count(), 8, "{md5sums}");
        assert_eq!(files["./postinst"].0, 0o755);
        assert!(
            files["./postinst"]
                .1
                .contains("systemctl reload svc.service")
        );
        assert!(files["./prerm"].1.contains("\"$1\" = remove"));
    }

    /// dpkg's own reading, where it is installed (Debian and Ubuntu, where
    /// the packages are for); elsewhere this test says it checked less, and
    /// under `CI=true` it fails.
    #[test]
    fn dpkg_deb_reads_the_package() {
        let Some(dpkg_deb) = crate::util::test_tool("dpkg-deb", "apt-get install dpkg") else {
            return;
        };
        let folder = crate::util::TempFolder::new("xtask-deb-test").unwrap();
        let path = folder.path().join("svc_1.2.3_amd64.deb");
        std::fs::write(&path, build(&package()).unwrap()).unwrap();
        let run = |flag: &str| {
            let output = std::process::Command::new(&dpkg_deb)
                .arg(flag)
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "dpkg-deb {flag}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        };
        let info = run("--info");
        assert!(
            info.contains(" Package: svc\n") && info.contains(" Architecture: amd64\n"),
            "{info}"
        );
        let contents = run("--contents");
        for line in [
            "-rwxr-xr-x 0/0              11 2026-12-07 12:01 ./usr/bin/svc\n",
            "-rw-r--r-- 0/0               9 2026-12-07 12:01 ./etc/svc/base.toml\n",
            " ./lib/systemd/system/svc.service\n",
            " ./usr/share/doc/svc/changelog.gz\n",
        ] {
            assert!(contents.contains(line), "{line} not in:\n{contents}");
        }
    }

    #[test]
    fn names_and_dates_follow_debian() {
        assert_eq!(file_name("svc", "1.2.3", "arm64"), "svc_1.2.3_arm64.deb");
        assert_eq!(debian_version("1.2.0-rc.1+build.5"), "1.2.0~rc.1+build.5");
        assert_eq!(debian_version("1.2.0"), "1.2.0");
        assert_eq!(crate::util::rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(
            crate::util::rfc2822(1_796_644_884),
            "Mon, 07 Dec 2026 12:01:24 +0000"
        );
    }
}
