//! The one gate for names read from outside (a manifest, `SHA256SUMS`, a
//! provenance statement, a host's `releases/` folder, a flag) before they
//! become paths: a release folder's name, its version and commit, and the
//! relative paths of a release's files. Each check says what the name is,
//! why it is refused and what a good one looks like.
//!
//! A release name becomes a folder under `releases/` on a host where
//! deploys may run as root, so the pattern is strict: ASCII letters,
//! digits, `.`, `_`, `+`, `-` and `~` (Debian's pre-release mark, in package
//! file names), not starting with `.`, `-` or `~`, no `..`, at most 128
//! bytes. Nothing else reaches a path.

use std::path::Path;

use anyhow::{Result, bail};

/// The longest release name, version or path component accepted.
const MAX_NAME: usize = 128;

/// Checks one path component: `what` names it in the error.
pub fn component<'a>(what: &str, name: &'a str) -> Result<&'a str> {
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || b"._+-~".contains(&byte);
    let problem = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name.len() > MAX_NAME {
        Some(format!("it is {} bytes long, over {MAX_NAME}", name.len()))
    } else if let Some(byte) = name.bytes().find(|byte| !allowed(*byte)) {
        Some(match byte {
            b'/' => "it holds a `/`".to_owned(),
            0 => "it holds a NUL byte".to_owned(),
            other if other.is_ascii_graphic() => format!("it holds `{}`", other as char),
            other => format!("it holds the byte 0x{other:02x}"),
        })
    } else if name.starts_with(['.', '-', '~']) {
        Some("it starts with `.`, `-` or `~`".to_owned())
    } else if name.contains("..") {
        Some("it holds `..`".to_owned())
    } else {
        None
    };
    match problem {
        Some(problem) => bail!(
            "{what} {:?} is refused: {problem} (names here are ASCII letters, digits, `.`, `_`, `+`, `-` and `~`, up to {MAX_NAME} bytes, not starting with `.`, `-` or `~`)",
            name.escape_debug().to_string()
        ),
        None => Ok(name),
    }
}

/// A version as Cargo writes it (`0.1.0`, `1.2.0-rc.1+build.5`).
pub fn version<'a>(what: &str, version: &'a str) -> Result<&'a str> {
    component(what, version)?;
    if !version.as_bytes()[0].is_ascii_digit() {
        bail!("{what} {version:?} is refused: a version starts with a digit (e.g. 0.1.0)");
    }
    Ok(version)
}

/// A full git commit: 40 lowercase hexadecimal digits (SHA-1), or 64
/// (SHA-256 repositories).
pub fn commit<'a>(what: &str, commit: &'a str) -> Result<&'a str> {
    let hex = commit
        .bytes()
        .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
    if !hex || !matches!(commit.len(), 40 | 64) {
        bail!(
            "{what} {:?} is refused: a commit is 40 (or 64) lowercase hexadecimal digits",
            commit.escape_debug().to_string()
        );
    }
    Ok(commit)
}

/// The folder a release is deployed to: `<version>-<first 7 of commit>`,
/// from a checked version and commit.
pub fn release(version: &str, commit: &str) -> Result<String> {
    let version = self::version("the release's version", version)?;
    let commit = self::commit("the release's commit", commit)?;
    let name = format!("{version}-{}", &commit[..7]);
    component("the release name", &name)?;
    Ok(name)
}

/// A content digest as registries name blobs and manifests:
/// `sha256:` and 64 lowercase hexadecimal digits.
pub fn digest<'a>(what: &str, digest: &'a str) -> Result<&'a str> {
    let hex = digest.strip_prefix("sha256:").filter(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
    });
    if hex.is_none() {
        bail!(
            "{what} {:?} is refused: a digest is `sha256:` and 64 lowercase hexadecimal digits",
            digest
                .chars()
                .take(100)
                .collect::<String>()
                .escape_debug()
                .to_string()
        );
    }
    Ok(digest)
}

/// A relative path of checked components joined by `/` (an artifact in a
/// manifest or `SHA256SUMS`): never absolute, never climbing out.
pub fn relative_path<'a>(what: &str, path: &'a str) -> Result<&'a Path> {
    if path.is_empty() {
        bail!("{what} is empty");
    }
    for part in path.split('/') {
        component(&format!("{what} {path:?}: the part"), part)?;
    }
    Ok(Path::new(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(result: Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", result.expect_err("refused"))
    }

    #[test]
    fn components_are_plain_names() {
        for good in [
            "0.1.0-abc1234",
            "app-0.1.0-x86_64-unknown-linux-musl.tar.gz",
            "a_b+c",
            "app_1.2.0~rc.1_amd64.deb",
        ] {
            assert_eq!(component("a name", good).unwrap(), good);
        }
        for (bad, why) in [
            ("", "it is empty"),
            ("../../ESCAPED", "holds a `/`"),
            ("..", "starts with `.`"),
            (".hidden", "starts with `.`"),
            ("-rf", "starts with `.`, `-` or `~`"),
            ("~root", "starts with `.`, `-` or `~`"),
            ("a..b", "holds `..`"),
            ("a b", "holds the byte 0x20"),
            ("a\0b", "holds a NUL byte"),
            ("a$b", "holds `$`"),
            ("é", "holds the byte 0xc3"),
        ] {
            let message = refused(component("the version", bad));
            assert!(message.contains(why), "{bad:?}: {message}");
            assert!(message.starts_with("the version "), "{message}");
        }
        assert!(refused(component("x", &"a".repeat(129))).contains("129 bytes long"));
        assert!(component("x", &"a".repeat(128)).is_ok());
    }

    #[test]
    fn versions_commits_and_release_names() {
        assert!(version("v", "1.2.0-rc.1+build.5").is_ok());
        assert!(refused(version("v", "v1.2.0")).contains("starts with a digit"));
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(release("0.1.0", commit).unwrap(), "0.1.0-0123456");
        assert!(refused(release("../../ESCAPED", commit)).contains("holds a `/`"));
        assert!(refused(self::commit("c", "fffffff")).contains("40 (or 64)"));
        assert!(refused(self::commit("c", &commit.to_uppercase())).contains("lowercase"));
        assert!(self::commit("c", &"a".repeat(64)).is_ok());
    }

    #[test]
    fn relative_paths_stay_below_their_folder() {
        assert!(relative_path("an artifact", "dist/app.tar.gz").is_ok());
        for bad in ["/etc/passwd", "a/../../b", "a//b", "", "a/./b"] {
            assert!(relative_path("an artifact", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_are_sha256_and_64_hexadecimal_digits() {
        let hex = "ab".repeat(32);
        assert!(digest("d", &format!("sha256:{hex}")).is_ok());
        for bad in [
            "sha256:../../x".to_owned(),
            hex.clone(),
            format!("sha512:{hex}"),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{hex}0"),
        ] {
            let message = refused(digest("a layer", &bad));
            assert!(
                message.starts_with("a layer ") && message.contains("64 lowercase hexadecimal"),
                "{bad}: {message}"
            );
        }
    }
}
