//! What this binary was built from: the stamp `cargo xtask` computed and
//! the service package's own name and version. Only the service's crate
//! knows them at compile time (its `build.rs` runs `platform-build`, which
//! passes the stamp in as `BUILD_*` variables): `platform::package!()`
//! reads them there, and `main` records them here ([`set_package`]).

use std::sync::OnceLock;

use serde::Serialize;

/// The stamp as `cargo xtask version --json` prints it: same fields, same order.
#[derive(Debug, Clone, Serialize)]
pub struct BuildInfo {
    /// The service package's version.
    pub version: &'static str,
    /// `git describe` of the commit built (`-dirty` with changes).
    pub describe: &'static str,
    /// The commit built, in full.
    pub commit: &'static str,
    /// Its first 7 digits.
    pub commit_short: &'static str,
    /// The branch it was built on.
    pub branch: &'static str,
    /// Whether the tree had uncommitted changes.
    pub dirty: bool,
    /// The commit's time, RFC 3339.
    pub commit_time: &'static str,
    /// The commit's time in seconds since 1970, which dated outputs use.
    pub source_date_epoch: u64,
    /// The target triple built for.
    pub target: &'static str,
    /// The cargo profile built with.
    pub profile: &'static str,
    /// `rustc -V` of the compiler.
    pub rustc: &'static str,
}

/// What the service's crate knows of itself at compile time, which
/// `platform::main` takes from `src/main.rs` (`platform::package!()`).
#[derive(Debug, Clone)]
pub struct Package {
    /// The `[[bin]]` name, which is how the binary names itself in
    /// `--version`, usage lines and its default service name.
    pub binary: &'static str,
    /// The stamp, with the package's version.
    pub build: BuildInfo,
    /// References the embedded dependency list (`.dep-v0`), so that the
    /// linker keeps it; `main` calls it.
    pub keep_dependency_list: fn(),
}

/// The service's [`Package`], from its own crate's compile-time variables:
/// its `build.rs` must run `platform_build::stamp()`.
#[macro_export]
macro_rules! package {
    () => {
        $crate::Package {
            binary: env!("CARGO_BIN_NAME"),
            build: $crate::BuildInfo {
                version: env!("CARGO_PKG_VERSION"),
                describe: env!("BUILD_DESCRIBE"),
                commit: env!("BUILD_COMMIT"),
                commit_short: env!("BUILD_COMMIT_SHORT"),
                branch: env!("BUILD_BRANCH"),
                dirty: const { $crate::build_info::const_str_is_true(env!("BUILD_DIRTY")) },
                commit_time: env!("BUILD_COMMIT_TIME"),
                source_date_epoch: const {
                    $crate::build_info::const_parse_u64(env!("BUILD_SOURCE_DATE_EPOCH"))
                },
                target: env!("BUILD_TARGET"),
                profile: env!("BUILD_PROFILE"),
                rustc: env!("BUILD_RUSTC"),
            },
            keep_dependency_list: include!(concat!(env!("OUT_DIR"), "/dep_v0.rs")),
        }
    };
}

/// The package `main` was given; until then (the platform's own unit
/// tests), `app`, unstamped, at the platform's version.
static PACKAGE: OnceLock<Package> = OnceLock::new();

/// Records the service's package, once, before anything reads the stamp.
pub fn set_package(package: Package) {
    platform_config::set_default_service_name(package.binary);
    let _ = PACKAGE.set(package);
}

fn package() -> &'static Package {
    PACKAGE.get_or_init(unstamped)
}

/// A package with no stamp, at the platform's version, named `app`: what
/// the platform's own tests run as.
#[doc(hidden)]
pub fn unstamped() -> Package {
    Package {
        binary: "app",
        build: BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            describe: "unknown",
            commit: "unknown",
            commit_short: "unknown",
            branch: "unknown",
            dirty: false,
            commit_time: "unknown",
            source_date_epoch: 0,
            target: "unknown",
            profile: "unknown",
            rustc: "unknown",
        },
        keep_dependency_list: || {},
    }
}

/// The name this binary was built as ([`Package::binary`]).
pub fn binary() -> &'static str {
    package().binary
}

/// The stamp with the service's version.
pub fn get() -> &'static BuildInfo {
    &package().build
}

/// References the embedded dependency list (see [`Package`]).
pub fn keep_dependency_list() {
    (package().keep_dependency_list)();
}

impl BuildInfo {
    /// `app 0.1.0 (1a2b3c4 2026-11-25 x86_64-unknown-linux-musl)`
    pub fn version_line(&self, binary: &str) -> String {
        // RFC 3339 starts with the date; "unknown" stays "unknown".
        let commit_date = self
            .commit_time
            .get(..10)
            .filter(|_| self.commit_time != "unknown");
        format!(
            "{binary} {} ({} {} {})",
            self.version,
            self.commit_short,
            commit_date.unwrap_or("unknown"),
            self.target
        )
    }
}

/// `true` for the text `true`, at compile time (`package!`).
pub const fn const_str_is_true(value: &str) -> bool {
    matches!(value.as_bytes(), b"true")
}

/// Parses a decimal number at compile time (`package!`); anything else is
/// a build error.
pub const fn const_parse_u64(value: &str) -> u64 {
    let bytes = value.as_bytes();
    assert!(!bytes.is_empty(), "BUILD_SOURCE_DATE_EPOCH is empty");
    let mut number: u64 = 0;
    let mut index = 0;
    while index < bytes.len() {
        let digit = bytes[index];
        assert!(
            digit.is_ascii_digit(),
            "BUILD_SOURCE_DATE_EPOCH is not a number"
        );
        number = number * 10 + (digit - b'0') as u64;
        index += 1;
    }
    number
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_line_shows_commit_date_and_target() {
        let info = BuildInfo {
            commit_short: "1a2b3c4",
            commit_time: "2026-11-25T01:17:00+01:00",
            target: "aarch64-unknown-linux-musl",
            ..get().clone()
        };
        assert_eq!(
            info.version_line("app"),
            format!(
                "app {} (1a2b3c4 2026-11-25 aarch64-unknown-linux-musl)",
                info.version
            )
        );
        let unknown = BuildInfo {
            commit_short: "unknown",
            commit_time: "unknown",
            target: "x",
            ..get().clone()
        };
        assert_eq!(
            unknown.version_line("app"),
            format!("app {} (unknown unknown x)", unknown.version)
        );
    }

    #[test]
    fn numbers_and_flags_parse_at_compile_time() {
        assert_eq!(const_parse_u64("0"), 0);
        assert_eq!(const_parse_u64("1764033420"), 1_764_033_420);
        assert!(const_str_is_true("true"));
        assert!(!const_str_is_true("false"));
    }
}
