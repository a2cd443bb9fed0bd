//! `image --push`: the OCI archive `image` wrote, copied to a registry with
//! skopeo, then read back to prove the registry serves the recorded digest.
//!
//! - TLS: a registry on a loopback address (`localhost`, `127.0.0.0/8`,
//!   `[::1]`) is pushed to without TLS, as Docker does; any other registry
//!   with TLS verification on, unless `--insecure-registry` says otherwise.
//!   The flag is always written out, so the echoed command shows which.
//! - Credentials: `REGISTRY_USERNAME` and `REGISTRY_PASSWORD` go into a
//!   temporary 0600 auth file passed with `--dest-authfile`, so they never
//!   appear on a command line (which every user can read in `/proc`); without
//!   them skopeo reads the auth file that `skopeo login`, `podman login` or
//!   `docker login` wrote. skopeo's own output is passed through with the
//!   secret replaced by `***`.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::archive::sha256_hex;
use crate::artifacts::cosign;
use crate::exec::{CommandFailed, Ctx};
use crate::manifest::{ImageInfo, PushedImage};
use crate::signing::PrivateKey;

pub const USERNAME_VAR: &str = "REGISTRY_USERNAME";
pub const PASSWORD_VAR: &str = "REGISTRY_PASSWORD";

/// Where to push: `REGISTRY/REPOSITORY[:TAG]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `host`, `host:port` or `[v6]:port`, as skopeo and auth files name it.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
}

impl Destination {
    pub fn parse(text: &str) -> Result<Destination> {
        let usage = "write REGISTRY/NAME[:TAG], e.g. ghcr.io/acme/app or localhost:5000/acme/app";
        let Some((registry, rest)) = text.split_once('/') else {
            bail!("`{text}` names no registry: {usage}");
        };
        // As Docker reads a reference: the first part is a registry only if
        // it has a dot, a port, or is `localhost`; `acme/app` is a Docker
        // Hub name, and pushing there by accident is worse than an error.
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            bail!("`{text}` names no registry (`{registry}` is not a host): {usage}");
        }
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((repository, tag)) => (repository, Some(tag)),
            None => (rest, None),
        };
        let component_ok = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
        };
        if !repository.split('/').all(component_ok) {
            bail!(
                "`{repository}` is not a repository name: use lowercase letters, digits and `._-` between slashes ({usage})"
            );
        }
        if let Some(tag) = tag {
            let tag_ok = tag.len() <= 128
                && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !tag_ok {
                bail!(
                    "`{tag}` is not an image tag: use up to 128 letters, digits and `._-` ({usage})"
                );
            }
        }
        Ok(Destination {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            tag: tag.map(str::to_owned),
        })
    }

    /// `registry/repository`, the name a digest or tag is added to.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Whether the registry's host is a loopback address.
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.strip_prefix('[') {
            Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
            None => self
                .registry
                .split_once(':')
                .map_or(self.registry.as_str(), |(host, _port)| host),
        };
        host.eq_ignore_ascii_case("localhost")
            || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
            || host.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// How `image --push` was asked to push, checked before anything is built.
pub struct PushOptions {
    destination: Destination,
    /// The tag to push when the destination names none.
    default_tag: String,
    /// Also push `latest` (checked by the caller: a clean tree at the
    /// version tag).
    latest: bool,
    /// Plain HTTP or unverified TLS for a registry that is not on loopback.
    insecure: bool,
    credentials: Option<Credentials>,
}

impl PushOptions {
    pub fn new(
        destination: &str,
        default_tag: &str,
        latest: bool,
        insecure: bool,
    ) -> Result<PushOptions> {
        Ok(PushOptions {
            destination: Destination::parse(destination)?,
            default_tag: default_tag.to_owned(),
            latest,
            insecure,
            credentials: Credentials::from_env()?,
        })
    }
}

/// Pushes the archive, verifies what the registry serves against `image`,
/// and returns the pushed references.
pub fn push(
    ctx: &Ctx,
    skopeo: &Path,
    archive: &Path,
    image: &ImageInfo,
    options: &PushOptions,
    key: Option<&PrivateKey>,
) -> Result<Vec<PushedImage>> {
    let destination = &options.destination;
    let verify_tls = !(options.insecure || destination.is_loopback());
    let credentials = &options.credentials;
    let auth_file = match credentials {
        Some(credentials) => Some(AuthFile::write(ctx, &destination.registry, credentials)?),
        None => None,
    };
    let secrets: Vec<&str> = credentials
        .iter()
        .flat_map(|credentials| [credentials.password.as_str(), credentials.encoded.as_str()])
        .collect();
    if let Some(credentials) = &credentials {
        eprintln!(
            "credentials for {}: {USERNAME_VAR}={} and {PASSWORD_VAR}=*** in a 0600 auth file, removed after the push",
            destination.registry, credentials.username
        );
    }
    let dest_tls = format!("--dest-tls-verify={verify_tls}");
    let tls = format!("--tls-verify={verify_tls}");
    let (dest_auth, auth): (Vec<String>, Vec<String>) = match &auth_file {
        Some(file) => {
            let path = file.path.display().to_string();
            (
                vec!["--dest-authfile".into(), path.clone()],
                vec!["--authfile".into(), path],
            )
        }
        None => (Vec::new(), Vec::new()),
    };

    let mut tags = vec![
        destination
            .tag
            .clone()
            .unwrap_or_else(|| options.default_tag.clone()),
    ];
    if options.latest && !tags.contains(&"latest".to_owned()) {
        tags.push("latest".to_owned());
    }
    let source = format!("oci-archive:{}", archive.display());
    let name = destination.name();
    let mut pushed = Vec::new();
    for tag in &tags {
        let target = format!("docker://{name}:{tag}");
        let dest_auth = &dest_auth;
        let copy = cmd!(
            ctx.sh,
            "{skopeo} copy --all --preserve-digests {dest_tls} {dest_auth...} {source} {target}"
        );
        ctx.run_reporting_redacted(copy, &secrets)
            .map_err(|err| explain_failure(err, destination, credentials.is_some()))?;
        let pinned = format!("{name}@{}", image.index_digest);
        verify(
            ctx,
            skopeo,
            &format!("{name}:{tag}"),
            &pinned,
            image,
            &tls,
            &auth,
            &secrets,
        )
        .map_err(|err| explain_failure(err, destination, credentials.is_some()))?;
        pushed.push(PushedImage {
            tag: format!("{name}:{tag}"),
            pinned,
        });
    }
    // Signatures belong to digests, not tags: one set per repository.
    if let Some(key) = key {
        let mut digests = vec![image.index_digest.as_str()];
        digests.extend(
            image
                .platforms
                .iter()
                .map(|platform| platform.manifest_digest.as_str()),
        );
        let access = cosign::Access {
            verify_tls,
            auth_file: auth_file.as_ref().map(|file| file.path.as_path()),
            secrets: &secrets,
        };
        cosign::push_signatures(ctx, skopeo, key, &name, &digests, &tags, &access)
            .map_err(|err| explain_failure(err, destination, credentials.is_some()))?;
    }
    // Last, for scripts that read the pinned reference off the end.
    if !ctx.dry_run {
        for image in &pushed {
            println!("pushed {}", image.tag);
            println!("{}", image.pinned);
        }
    }
    Ok(pushed)
}

/// Reads the pushed index back by tag and each platform's manifest by
/// digest, and checks every digest against the ones `image` recorded.
#[allow(clippy::too_many_arguments)]
fn verify(
    ctx: &Ctx,
    skopeo: &Path,
    tagged: &str,
    pinned: &str,
    image: &ImageInfo,
    tls: &str,
    auth: &[String],
    secrets: &[&str],
) -> Result<()> {
    let read = |reference: &str| -> Result<Vec<u8>> {
        let reference = format!("docker://{reference}");
        ctx.read_bytes_echoed(
            cmd!(ctx.sh, "{skopeo} inspect --raw {tls} {auth...} {reference}"),
            secrets,
        )
    };
    let index = read(tagged)?;
    if ctx.dry_run {
        return Ok(());
    }
    let served = format!("sha256:{}", sha256_hex(&index));
    if served != image.index_digest {
        bail!(
            "the registry serves {served} for {tagged}, not the image index {} recorded in dist-manifest.json: another push may have moved the tag; push again",
            image.index_digest
        );
    }
    let listed = crate::artifacts::oci::index_manifest_digests(&index)
        .with_context(|| format!("read the image index the registry serves for {tagged}"))?;
    let name = pinned.split_once('@').map_or(pinned, |(name, _)| name);
    for platform in &image.platforms {
        if !listed.contains(&platform.manifest_digest) {
            bail!(
                "the index the registry serves for {tagged} lacks {} ({})",
                platform.platform,
                platform.manifest_digest
            );
        }
        let manifest = read(&format!("{name}@{}", platform.manifest_digest))?;
        let served = format!("sha256:{}", sha256_hex(&manifest));
        if served != platform.manifest_digest {
            bail!(
                "the registry serves {served} for the {} manifest {}: the registry rewrote it",
                platform.platform,
                platform.manifest_digest
            );
        }
    }
    Ok(())
}

/// A failed skopeo call, turned into what the user does next.
fn explain_failure(
    err: anyhow::Error,
    destination: &Destination,
    had_credentials: bool,
) -> anyhow::Error {
    let Some(failure) = err.downcast_ref::<CommandFailed>() else {
        return err;
    };
    let said = failure.last_said.to_ascii_lowercase();
    let registry = &destination.registry;
    if said.contains("unauthorized") || said.contains("authentication required") {
        if had_credentials {
            return anyhow::anyhow!(
                "push to {registry}: the registry refused the credentials in {USERNAME_VAR} and {PASSWORD_VAR}: check them, or unset both to use the auth file of `skopeo login {registry}`"
            );
        }
        return anyhow::anyhow!(
            "push to {registry}: the registry requires credentials: set {USERNAME_VAR} and {PASSWORD_VAR}, or log in once with `skopeo login {registry}` (podman login and docker login write the same auth file)"
        );
    }
    if said.contains("denied") {
        return anyhow::anyhow!(
            "push to {}: the registry denied access to {}: check that the account may push to that repository",
            registry,
            destination.repository
        );
    }
    if said.contains("http response to https client") {
        return anyhow::anyhow!(
            "push to {registry}: the registry speaks plain HTTP, and only loopback registries are pushed to without TLS: pass --insecure-registry if the network to it is trusted"
        );
    }
    if said.contains("certificate") || said.contains("x509") {
        return anyhow::anyhow!(
            "push to {registry}: its TLS certificate does not verify ({}): install its CA, or pass --insecure-registry if the network to it is trusted",
            failure.last_said
        );
    }
    err.context(format!("push to {registry}"))
}

/// `REGISTRY_USERNAME` and `REGISTRY_PASSWORD`, when set.
struct Credentials {
    username: String,
    password: String,
    /// `base64(username:password)`, as auth files hold it.
    encoded: String,
}

impl Credentials {
    fn from_env() -> Result<Option<Credentials>> {
        let read = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        match (read(USERNAME_VAR), read(PASSWORD_VAR)) {
            (None, None) => Ok(None),
            (Some(username), Some(password)) => {
                let encoded = base64(format!("{username}:{password}").as_bytes());
                Ok(Some(Credentials {
                    username,
                    password,
                    encoded,
                }))
            }
            (Some(_), None) => bail!(
                "{USERNAME_VAR} is set but {PASSWORD_VAR} is not: set both, or neither to use the auth file of `skopeo login`"
            ),
            (None, Some(_)) => bail!(
                "{PASSWORD_VAR} is set but {USERNAME_VAR} is not: set both, or neither to use the auth file of `skopeo login`"
            ),
        }
    }
}

/// A containers auth file holding one registry's credentials, readable by
/// this user only, removed when dropped.
struct AuthFile {
    path: PathBuf,
}

impl AuthFile {
    fn write(ctx: &Ctx, registry: &str, credentials: &Credentials) -> Result<AuthFile> {
        // The runtime folder is a per-user tmpfs: the file never reaches a disk.
        let folder = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|folder| folder.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        let path = folder.join(format!(
            "cargo-xtask-auth-{}-{nanos}.json",
            std::process::id()
        ));
        if ctx.dry_run {
            return Ok(AuthFile { path });
        }
        let contents = serde_json::json!({"auths": {registry: {"auth": credentials.encoded}}});
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("create the auth file {}", path.display()))?
        };
        // From here the guard removes the file, also when the write fails.
        let auth_file = AuthFile { path };
        file.write_all(contents.to_string().as_bytes())
            .with_context(|| format!("write the auth file {}", auth_file.path.display()))?;
        Ok(auth_file)
    }
}

impl Drop for AuthFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Standard base64 with padding, as the `auth` field of an auth file.
fn base64(bytes: &[u8]) -> String {
    use base64ct::{Base64, Encoding};
    Base64::encode_string(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("ci:canary-s3cret", "Y2k6Y2FuYXJ5LXMzY3JldA=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }

    #[test]
    fn destinations_are_parsed_and_loopback_is_recognised() {
        let cases: [(&str, &str, &str, Option<&str>, bool); 9] = [
            ("ghcr.io/acme/app", "ghcr.io", "acme/app", None, false),
            (
                "ghcr.io/acme/app:v1.2",
                "ghcr.io",
                "acme/app",
                Some("v1.2"),
                false,
            ),
            (
                "registry.example:5000/acme/app",
                "registry.example:5000",
                "acme/app",
                None,
                false,
            ),
            ("localhost/app", "localhost", "app", None, true),
            (
                "localhost:5000/team/app:1",
                "localhost:5000",
                "team/app",
                Some("1"),
                true,
            ),
            (
                "127.0.0.1:5055/acme/app",
                "127.0.0.1:5055",
                "acme/app",
                None,
                true,
            ),
            (
                "127.9.8.7:80/acme/app",
                "127.9.8.7:80",
                "acme/app",
                None,
                true,
            ),
            ("[::1]:5000/acme/app", "[::1]:5000", "acme/app", None, true),
            (
                "10.0.0.1:5000/acme/app",
                "10.0.0.1:5000",
                "acme/app",
                None,
                false,
            ),
        ];
        for (text, registry, repository, tag, loopback) in cases {
            let parsed = Destination::parse(text).unwrap();
            assert_eq!(parsed.registry, registry, "{text}");
            assert_eq!(parsed.repository, repository, "{text}");
            assert_eq!(parsed.tag.as_deref(), tag, "{text}");
            assert_eq!(parsed.is_loopback(), loopback, "{text}");
        }
        // A host merely named like loopback is not.
        assert!(
            !Destination::parse("localhost.example.com/app")
                .unwrap()
                .is_loopback()
        );
        assert!(
            !Destination::parse("127.0.0.1.nip.io/app")
                .unwrap()
                .is_loopback()
        );
    }

    #[test]
    fn bad_destinations_say_what_to_write() {
        for (text, expected) in [
            ("app", "names no registry"),
            ("acme/app", "`acme` is not a host"),
            ("ghcr.io/", "is not a repository name"),
            ("ghcr.io/Acme/app", "is not a repository name"),
            ("ghcr.io/acme//app", "is not a repository name"),
            ("ghcr.io/acme/app:", "is not an image tag"),
            ("ghcr.io/acme/app:-x", "is not an image tag"),
        ] {
            let err = Destination::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.contains("REGISTRY/NAME"), "{text}: {err}");
        }
    }
}
