//! Release targets. An alias (`x86_64`, `arm64`, `all`) or a triple is
//! resolved once into a `Target` that knows how it links (rust-lld or zig),
//! how it is packaged, its OCI platform, and whether it can run here.

use anyhow::{Result, bail};

/// The targets clippy checks the shipped package for besides this machine.
/// Checking needs only their standard library, no linker; `setup` and
/// `lint` install it when missing.
pub const CROSS_CHECK_TARGETS: [&str; 2] = ["x86_64-pc-windows-gnu", "aarch64-apple-darwin"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Linux,
    Darwin,
    Windows,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Libc {
    /// Static binaries that need no C toolchain: linked by rust-lld.
    Musl,
    /// Dynamic against glibc, with an optional floor version: linked by zig.
    Gnu,
    /// macOS and Windows: linked by zig.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linker {
    RustLld,
    Zig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    TarGz,
    Zip,
}

/// How a built binary can be run on this machine to check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    Native,
    Qemu(&'static str),
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The rustc target triple, e.g. `aarch64-unknown-linux-gnu`.
    pub triple: &'static str,
    /// The glibc floor of a `*-linux-gnu` target, e.g. `2.17`.
    pub glibc: Option<String>,
    pub arch: Arch,
    pub os: Os,
    pub libc: Libc,
}

/// Every triple `dist` and `release` build, and what each one is.
const SUPPORTED: [(&str, Arch, Os, Libc); 7] = [
    (
        "x86_64-unknown-linux-musl",
        Arch::X86_64,
        Os::Linux,
        Libc::Musl,
    ),
    (
        "aarch64-unknown-linux-musl",
        Arch::Aarch64,
        Os::Linux,
        Libc::Musl,
    ),
    (
        "x86_64-unknown-linux-gnu",
        Arch::X86_64,
        Os::Linux,
        Libc::Gnu,
    ),
    (
        "aarch64-unknown-linux-gnu",
        Arch::Aarch64,
        Os::Linux,
        Libc::Gnu,
    ),
    ("x86_64-apple-darwin", Arch::X86_64, Os::Darwin, Libc::None),
    (
        "aarch64-apple-darwin",
        Arch::Aarch64,
        Os::Darwin,
        Libc::None,
    ),
    (
        "x86_64-pc-windows-gnu",
        Arch::X86_64,
        Os::Windows,
        Libc::None,
    ),
];

const ALIASES: [(&str, &str); 4] = [
    ("x86_64", "x86_64-unknown-linux-musl"),
    ("amd64", "x86_64-unknown-linux-musl"),
    ("aarch64", "aarch64-unknown-linux-musl"),
    ("arm64", "aarch64-unknown-linux-musl"),
];

impl Target {
    /// A triple, with an optional glibc floor (`aarch64-unknown-linux-gnu.2.17`).
    pub fn parse(spec: &str) -> Result<Target> {
        let (triple, glibc) = match spec.split_once(".") {
            Some((triple, version)) => (triple, Some(version)),
            None => (spec, None),
        };
        let Some(&(triple, arch, os, libc)) = SUPPORTED.iter().find(|(known, ..)| *known == triple)
        else {
            bail!("unknown target `{spec}`: {}", supported_list());
        };
        if let Some(version) = glibc {
            let valid = version.split('.').count() == 2
                && version.split('.').all(|part| part.parse::<u32>().is_ok());
            if libc != Libc::Gnu || !valid {
                bail!(
                    "`{spec}`: a glibc floor is written `<arch>-unknown-linux-gnu.<major>.<minor>`, e.g. aarch64-unknown-linux-gnu.2.17"
                );
            }
        }
        Ok(Target {
            triple,
            glibc: glibc.map(str::to_owned),
            arch,
            os,
            libc,
        })
    }

    pub fn linker(&self) -> Linker {
        if self.libc == Libc::Musl {
            Linker::RustLld
        } else {
            Linker::Zig
        }
    }

    /// What `cargo zigbuild --target` takes: the triple with its glibc floor.
    pub fn zig_spec(&self) -> String {
        match &self.glibc {
            Some(version) => format!("{}.{version}", self.triple),
            None => self.triple.to_owned(),
        }
    }

    pub fn archive_format(&self) -> ArchiveFormat {
        if self.os == Os::Windows {
            ArchiveFormat::Zip
        } else {
            ArchiveFormat::TarGz
        }
    }

    pub fn archive_extension(&self) -> &'static str {
        match self.archive_format() {
            ArchiveFormat::TarGz => "tar.gz",
            ArchiveFormat::Zip => "zip",
        }
    }

    pub fn exe_suffix(&self) -> &'static str {
        if self.os == Os::Windows { ".exe" } else { "" }
    }

    /// `(os, architecture)` as OCI image platforms name them; only static
    /// Linux binaries go into images.
    pub fn oci_platform(&self) -> Option<(&'static str, &'static str)> {
        (self.libc == Libc::Musl).then_some(("linux", self.go_arch()))
    }

    /// The architecture as Debian names it, for Linux targets (packages).
    pub fn debian_architecture(&self) -> Option<&'static str> {
        (self.os == Os::Linux).then_some(self.go_arch())
    }

    /// The architecture as Go, OCI and Debian name it.
    fn go_arch(&self) -> &'static str {
        match self.arch {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// Whether the binary can be run here: natively on the same Linux
    /// architecture, under qemu-user when static for another one.
    pub fn runner(&self, host: &Target) -> Runner {
        match (self.os, host.os, self.arch == host.arch, self.libc) {
            (Os::Linux, Os::Linux, true, _) => Runner::Native,
            (Os::Linux, Os::Linux, false, Libc::Musl) => Runner::Qemu(match self.arch {
                Arch::X86_64 => "qemu-x86_64",
                Arch::Aarch64 => "qemu-aarch64",
            }),
            _ => Runner::Unavailable,
        }
    }
}

/// The targets named on the command line, in order, without duplicates.
/// `matrix` is `targets` from `[workspace.metadata.xtask]`, what `all` means.
pub fn resolve(specs: &[String], matrix: &[String]) -> Result<Vec<Target>> {
    let mut targets: Vec<Target> = Vec::new();
    let mut add = |target: Target| {
        if !targets.contains(&target) {
            targets.push(target);
        }
    };
    for spec in specs {
        if spec == "all" {
            for triple in matrix {
                add(Target::parse(triple)?);
            }
        } else if let Some((_, triple)) = ALIASES.iter().find(|(alias, _)| alias == spec) {
            add(Target::parse(triple)?);
        } else {
            add(Target::parse(spec)?);
        }
    }
    if targets.is_empty() {
        bail!("no target given: {}", supported_list());
    }
    Ok(targets)
}

/// The default of `dist`: the static musl build for this machine's
/// architecture on Linux, or the host triple elsewhere.
pub fn host_default(host_triple: &str) -> Result<Target> {
    let linux_musl = match host_triple {
        triple if triple.starts_with("x86_64-") && triple.contains("-linux-") => {
            "x86_64-unknown-linux-musl"
        }
        triple if triple.starts_with("aarch64-") && triple.contains("-linux-") => {
            "aarch64-unknown-linux-musl"
        }
        other => other,
    };
    Target::parse(linux_musl).map_err(|_| {
        anyhow::anyhow!(
            "this machine ({host_triple}) has no default target: pass --target ({})",
            supported_list()
        )
    })
}

/// The machine the xtask runs on, as a target, for deciding what can run here.
pub fn host(host_triple: &str) -> Target {
    let arch = if host_triple.starts_with("aarch64") {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };
    let os = if host_triple.contains("-linux") {
        Os::Linux
    } else if host_triple.contains("-apple-") {
        Os::Darwin
    } else {
        Os::Windows
    };
    Target {
        triple: "host",
        glibc: None,
        arch,
        os,
        libc: Libc::None,
    }
}

fn supported_list() -> String {
    let aliases: Vec<String> = ALIASES
        .iter()
        .map(|(alias, triple)| format!("{alias} ({triple})"))
        .collect();
    let triples: Vec<&str> = SUPPORTED.iter().map(|(triple, ..)| *triple).collect();
    format!(
        "use an alias: {}, all (the `targets` of [workspace.metadata.xtask]); or a triple: {} (a -linux-gnu triple may name a glibc floor, e.g. aarch64-unknown-linux-gnu.2.17)",
        aliases.join(", "),
        triples.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(specs: &[&str], expected: Result<&[&str], &str>) {
        let specs: Vec<String> = specs.iter().map(|spec| (*spec).to_owned()).collect();
        let matrix = vec![
            "x86_64-unknown-linux-musl".to_owned(),
            "aarch64-unknown-linux-musl".to_owned(),
        ];
        let actual = resolve(&specs, &matrix)
            .map(|targets| targets.iter().map(Target::zig_spec).collect::<Vec<_>>());
        match (actual, expected) {
            (Ok(actual), Ok(expected)) => assert_eq!(actual, expected, "{specs:?}"),
            (Err(actual), Err(expected)) => {
                let message = format!("{actual:#}");
                assert!(
                    message.contains(expected),
                    "{specs:?}: `{message}` lacks `{expected}`"
                );
            }
            (actual, expected) => panic!("{specs:?}: got {actual:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn debian_architectures_are_named_for_linux_targets_only() {
        let arch = |spec: &str| {
            resolve(&[spec.to_owned()], &[])
                .unwrap()
                .remove(0)
                .debian_architecture()
        };
        assert_eq!(arch("x86_64-unknown-linux-musl"), Some("amd64"));
        assert_eq!(arch("aarch64-unknown-linux-gnu"), Some("arm64"));
        assert_eq!(arch("x86_64-pc-windows-gnu"), None);
    }

    #[test]
    fn aliases_and_triples_resolve() {
        check(&["x86_64"], Ok(&["x86_64-unknown-linux-musl"]));
        check(&["amd64"], Ok(&["x86_64-unknown-linux-musl"]));
        check(&["aarch64"], Ok(&["aarch64-unknown-linux-musl"]));
        check(&["arm64", "aarch64"], Ok(&["aarch64-unknown-linux-musl"]));
        check(
            &["all"],
            Ok(&["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"]),
        );
        check(
            &["aarch64-unknown-linux-gnu.2.17"],
            Ok(&["aarch64-unknown-linux-gnu.2.17"]),
        );
        check(
            &["x86_64-apple-darwin", "x86_64-pc-windows-gnu"],
            Ok(&["x86_64-apple-darwin", "x86_64-pc-windows-gnu"]),
        );
    }

    #[test]
    fn unknown_and_unavailable_targets_are_errors_listing_what_is_supported() {
        check(
            &["sparc"],
            Err("unknown target `sparc`: use an alias: x86_64 (x86_64-unknown-linux-musl)"),
        );
        check(
            &["armv7-unknown-linux-musleabihf"],
            Err("unknown target `armv7-unknown-linux-musleabihf`"),
        );
        check(
            &["riscv64gc-unknown-linux-musl"],
            Err("or a triple: x86_64-unknown-linux-musl, aarch64-unknown-linux-musl"),
        );
        check(
            &["x86_64-unknown-linux-musl.2.17"],
            Err("a glibc floor is written"),
        );
        check(
            &["aarch64-unknown-linux-gnu.2"],
            Err("a glibc floor is written"),
        );
        check(&[], Err("no target given"));
    }

    #[test]
    fn targets_know_how_they_link_package_and_run() {
        let host = host("x86_64-unknown-linux-gnu");
        let musl = Target::parse("aarch64-unknown-linux-musl").unwrap();
        assert_eq!(
            (musl.linker(), musl.archive_format(), musl.runner(&host)),
            (
                Linker::RustLld,
                ArchiveFormat::TarGz,
                Runner::Qemu("qemu-aarch64")
            )
        );
        assert_eq!(musl.oci_platform(), Some(("linux", "arm64")));
        let native = Target::parse("x86_64-unknown-linux-musl").unwrap();
        assert_eq!(
            (native.oci_platform(), native.runner(&host)),
            (Some(("linux", "amd64")), Runner::Native)
        );
        assert_eq!(
            Target::parse("x86_64-unknown-linux-gnu")
                .unwrap()
                .oci_platform(),
            None
        );
        let gnu = Target::parse("aarch64-unknown-linux-gnu.2.17").unwrap();
        assert_eq!(
            (gnu.linker(), gnu.runner(&host)),
            (Linker::Zig, Runner::Unavailable)
        );
        let windows = Target::parse("x86_64-pc-windows-gnu").unwrap();
        assert_eq!(
            (windows.archive_extension(), windows.exe_suffix()),
            ("zip", ".exe")
        );
        assert_eq!(
            Target::parse("aarch64-apple-darwin").unwrap().runner(&host),
            Runner::Unavailable
        );
    }

    #[test]
    fn the_default_target_is_static_musl_for_the_host() {
        assert_eq!(
            host_default("x86_64-unknown-linux-gnu").unwrap().triple,
            "x86_64-unknown-linux-musl"
        );
        assert_eq!(
            host_default("aarch64-unknown-linux-gnu").unwrap().triple,
            "aarch64-unknown-linux-musl"
        );
        assert_eq!(
            host_default("aarch64-apple-darwin").unwrap().triple,
            "aarch64-apple-darwin"
        );
        assert!(host_default("riscv64gc-unknown-linux-gnu").is_err());
    }
}
