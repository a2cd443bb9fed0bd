//! `cargo xtask apt-repo DIR`: adds Debian packages to the signed apt
//! repository in DIR (`artifacts::apt`) and signs its index with the
//! repository's own key (`keygen --apt`). It compiles nothing, so, like
//! `sign`, it may hold a key.
//!
//! The packages are the ones `package` wrote into `target/dist/`, checked
//! against that release's manifest and, when the project names a public
//! key, against the release signature first: the repository key vouches
//! only for what the release key signed. `--deb FILE` adds a package built
//! elsewhere instead, on the operator's word.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::artifacts::apt::Repository;
use crate::artifacts::checks::{
    Missing, check_folder, first_signer, named_or_configured_keys, today,
};
use crate::exec::Ctx;
use crate::manifest::{ArtifactKind, MANIFEST, Manifest};
use crate::signing::openpgp::Certificate;
use crate::signing::{self, PrivateKey};

#[derive(clap::Args, Debug)]
pub struct AptRepo {
    /// The repository folder; made if missing, added to if not
    #[arg(value_name = "DIR")]
    repo: PathBuf,
    /// A package to add instead of those in target/dist/ (repeatable)
    #[arg(long = "deb", value_name = "FILE")]
    debs: Vec<PathBuf>,
    /// The suite (and codename) hosts name in their sources
    #[arg(long, default_value = "stable", value_name = "NAME")]
    suite: String,
    /// The repository's public keyring [default:
    /// keys/<binary>-archive-keyring.gpg]
    #[arg(long, value_name = "FILE")]
    keyring: Option<PathBuf>,
    /// The release key target/dist/ is checked against [default:
    /// public-key of [workspace.metadata.xtask]]
    #[arg(long, value_name = "FILE", conflicts_with = "debs")]
    public_key: Option<PathBuf>,
}

/// Where `keygen --apt` puts the public keyring, relative to the root.
pub fn keyring_path(binary: &str) -> String {
    format!("keys/{binary}-archive-keyring.gpg")
}

impl AptRepo {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let binary = &ctx.project.settings.binary;
        crate::names::component("--suite", &self.suite)?;
        let keyring_file = self
            .keyring
            .clone()
            .unwrap_or_else(|| ctx.project.root.join(keyring_path(binary)));
        let keyring = std::fs::read(&keyring_file).with_context(|| {
            format!(
                "read the repository keyring {}: make the repository's key first (cargo xtask keygen --apt)",
                keyring_file.display()
            )
        })?;
        let certificate = Certificate::parse(&keyring)
            .with_context(|| format!("read {}", keyring_file.display()))?;
        let packages = self.packages(ctx)?;
        if ctx.dry_run {
            for (path, _) in &packages {
                eprintln!(
                    "(dry run: would add {} to {})",
                    path.display(),
                    self.repo.display()
                );
            }
            return Ok(());
        }
        let key = repository_key(&certificate, &keyring_file)?;

        let repository = Repository {
            root: self.repo.clone(),
            suite: self.suite.clone(),
            origin: binary.clone(),
        };
        for (path, bytes) in &packages {
            let control = repository.add(bytes, path)?;
            println!(
                "{} {} ({}) in {}",
                control.package,
                control.version,
                control.architecture,
                self.repo.join(control.pool_path()).display()
            );
        }
        // The index is dated now, unless a reproducible date is asked for.
        let date = match crate::stamp::source_date_epoch_from_env()? {
            Some(epoch) => epoch,
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("the clock is before 1970")?
                .as_secs(),
        };
        repository.index(&key, &certificate, date)?;
        let published_keyring = self.repo.join(format!("{binary}-archive-keyring.gpg"));
        crate::util::write_atomically(&published_keyring, &keyring)?;
        println!(
            "signed {} with the key {}\nhosts install {} as /usr/share/keyrings/{binary}-archive-keyring.gpg and add:\n  deb [signed-by=/usr/share/keyrings/{binary}-archive-keyring.gpg] <URL of {}> {} main",
            self.repo
                .join("dists")
                .join(&self.suite)
                .join("InRelease")
                .display(),
            certificate.fingerprint_hex(),
            published_keyring.display(),
            self.repo.display(),
            self.suite
        );
        Ok(())
    }

    /// The packages to add, read and checked.
    fn packages(&self, ctx: &Ctx) -> Result<Vec<(PathBuf, Vec<u8>)>> {
        if !self.debs.is_empty() {
            return self
                .debs
                .iter()
                .map(|path| {
                    let bytes = std::fs::read(path)
                        .with_context(|| format!("read --deb {}", path.display()))?;
                    Ok((path.clone(), bytes))
                })
                .collect();
        }
        let dist = ctx.project.dist_dir();
        let keys = named_or_configured_keys(ctx, self.public_key.as_deref())?;
        if keys.is_empty() {
            eprintln!(
                "note: the project names no public-key, so the packages of {} are checked against its manifest only",
                dist.display()
            );
        } else if let Err(failures) = first_signer(&keys, &today(), |key| {
            Ok(check_folder(&dist, key, Missing::Pass))
        })? {
            for failure in &failures {
                eprintln!("FAIL {failure}");
            }
            bail!(
                "{} does not verify against the release key ({} problems, listed above): the repository key signs only what the release key signed; sign it (cargo xtask sign) or build it again",
                dist.display(),
                failures.len()
            );
        }
        let manifest = Manifest::require(&dist.join(MANIFEST)).with_context(|| {
            format!(
                "no release in {}: build the packages first (cargo xtask dist, then cargo xtask package), or pass --deb FILE",
                dist.display()
            )
        })?;
        let mut packages = Vec::new();
        for artifact in manifest
            .artifacts
            .iter()
            .filter(|artifact| artifact.kind == ArtifactKind::Deb)
        {
            let path = dist.join(crate::names::relative_path("a package", &artifact.path)?);
            let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
            if crate::archive::sha256_hex(&bytes) != artifact.sha256 {
                bail!(
                    "{} is not the package the manifest lists (its SHA-256 differs): build it again (cargo xtask package)",
                    path.display()
                );
            }
            packages.push((path, bytes));
        }
        if packages.is_empty() {
            bail!(
                "the release in {} has no Debian package: run cargo xtask package first, or pass --deb FILE",
                dist.display()
            );
        }
        Ok(packages)
    }
}

/// The repository's private key, from `APT_SIGNING_KEY(_FILE)` and its
/// passphrase, checked against the keyring it will be verified with.
fn repository_key(certificate: &Certificate, keyring_file: &Path) -> Result<PrivateKey> {
    let vars = signing::APT_KEY;
    let (key, source) = PrivateKey::from_vars(vars)?.with_context(|| {
        format!(
            "no repository key: set {} (or {}) and {} (or {}); cargo xtask keygen --apt makes one",
            vars.key_file, vars.key, vars.passphrase_file, vars.passphrase
        )
    })?;
    if *key.public() != certificate.key {
        bail!(
            "the key in {source} is not the one of {} (fingerprint {}): use that key's private half, or pass --keyring with this key's",
            keyring_file.display(),
            certificate.fingerprint_hex()
        );
    }
    eprintln!(
        "signing the index with the key in {source} (fingerprint {})",
        certificate.fingerprint_hex()
    );
    Ok(key)
}
