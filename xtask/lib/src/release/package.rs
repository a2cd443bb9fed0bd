//! `cargo xtask package`: a Debian package (`artifacts::deb`) and an RPM
//! package (`artifacts::rpm`) of each Linux binary `dist` built, written
//! into `target/dist/`, listed in the manifest and `SHA256SUMS`, and signed
//! like every other artifact. A task of its own, like `image`: it
//! repackages what `dist` built, so a plain `dist` stays as fast as before
//! and its outputs do not change.

use anyhow::{Context, Result, bail};

use crate::artifacts::deb::{self, Package as Deb};
use crate::artifacts::pipeline;
use crate::artifacts::rpm;
use crate::artifacts::seal::{self, Signing};
use crate::artifacts::units::{Paths, socket_and_service};
use crate::exec::Ctx;
use crate::manifest::{Artifact, ArtifactKind};
use crate::targets::{self, Target};
use crate::util::write_atomically;

#[derive(clap::Args, Debug)]
pub struct Package {
    /// Target alias or triple, repeatable; Linux targets only [default: the
    /// Linux targets in [workspace.metadata.xtask] targets]
    #[arg(long = "target", value_name = "TARGET")]
    targets: Vec<String>,
    /// Package this binary, built elsewhere, for the one --target given,
    /// into --out, instead of what dist built into target/dist/ (unsigned,
    /// unlisted)
    #[arg(long, value_name = "FILE", requires = "out")]
    binary: Option<std::path::PathBuf>,
    /// With --binary: the folder the package is written to
    #[arg(long, value_name = "DIR", requires = "binary")]
    out: Option<std::path::PathBuf>,
    /// With --binary: the package's version [default: the workspace's,
    /// a pre-release's `-` as `~`]
    #[arg(long, value_name = "VERSION", requires = "binary")]
    version: Option<String>,
}

impl Package {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let project = &ctx.project;
        let settings = &project.settings;
        let targets: Vec<Target> = if self.targets.is_empty() {
            targets::resolve(&settings.targets, &settings.targets)?
                .into_iter()
                .filter(|target| target.debian_architecture().is_some())
                .collect()
        } else {
            targets::resolve(&self.targets, &settings.targets)?
        };
        if targets.is_empty() {
            bail!(
                "no Linux target in [workspace.metadata.xtask] targets: add x86_64-unknown-linux-musl, or pass --target"
            );
        }
        if let Some(target) = targets
            .iter()
            .find(|target| target.debian_architecture().is_none())
        {
            bail!(
                "{} cannot go into a Debian package: packages hold Linux binaries, use x86_64 or aarch64",
                target.triple
            );
        }
        let maintainer = project.authors.first().with_context(|| {
            format!(
                "the package {} names no authors: set authors = [\"Name <email>\"] in its Cargo.toml (or [workspace.package]); a Debian package names its maintainer",
                settings.package
            )
        })?;
        let version = match &self.version {
            Some(version) => {
                crate::artifacts::apt::check_version(version).context("--version")?;
                version.clone()
            }
            None => deb::debian_version(&project.version),
        };
        let version = &version;
        let config = pipeline::config_files(&project.root.join("config"))?;
        let license = std::fs::read(project.root.join("LICENSE"))
            .with_context(|| format!("read {}", project.root.join("LICENSE").display()))?;
        let guide = pipeline::operating_guide(&settings.binary);
        let paths = Paths {
            binary: std::path::Path::new("/usr/bin").join(&settings.binary),
            config: std::path::Path::new("/etc").join(&settings.binary),
            upgrade: format!(
                "install the new package (dpkg replaces /usr/bin/{}),\n# and its postinst runs",
                settings.binary
            ),
        };
        let units = socket_and_service(settings, project.service_port()?, &paths);
        let summary = project
            .description
            .clone()
            .unwrap_or_else(|| format!("The {} service", settings.binary));
        // The two packages of one architecture: (file name, kind).
        let packages_of = |architecture: &str| -> Result<[(String, ArtifactKind); 2]> {
            Ok([
                (
                    deb::file_name(&settings.binary, version, architecture),
                    ArtifactKind::Deb,
                ),
                (
                    rpm::file_name(&settings.binary, version, rpm::arch_of(architecture)?),
                    ArtifactKind::Rpm,
                ),
            ])
        };
        let would_write = |folder: &std::path::Path, architecture: &str| -> Result<()> {
            let [(deb, _), (rpm, _)] = packages_of(architecture)?;
            eprintln!(
                "(dry run: would write {} and {})",
                folder.join(deb).display(),
                folder.join(rpm).display()
            );
            Ok(())
        };
        // Both packages of one binary: (file name, kind, bytes).
        let build = |architecture: &str,
                     binary: &[u8],
                     mtime: u64|
         -> Result<[(String, ArtifactKind, Vec<u8>); 2]> {
            let contents = Deb {
                name: &settings.binary,
                version,
                architecture,
                maintainer,
                homepage: project.repository.as_deref(),
                summary: &summary,
                binary,
                config: config.clone(),
                units: units.clone(),
                guide: &guide,
                license: &license,
                mtime,
            };
            let [(deb_name, deb_kind), (rpm_name, rpm_kind)] = packages_of(architecture)?;
            Ok([
                (deb_name, deb_kind, deb::build(&contents)?),
                (
                    rpm_name,
                    rpm_kind,
                    rpm::build(&contents, rpm::arch_of(architecture)?)?,
                ),
            ])
        };

        if let (Some(binary), Some(out)) = (&self.binary, &self.out) {
            let [target] = targets.as_slice() else {
                bail!("--binary packages one binary: name its one --target");
            };
            let architecture = target.debian_architecture().unwrap_or_default();
            if ctx.dry_run {
                return would_write(out, architecture);
            }
            let bytes = std::fs::read(binary)
                .with_context(|| format!("read --binary {}", binary.display()))?;
            std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
            for (name, _, package) in build(architecture, &bytes, ctx.stamp()?.source_date_epoch)? {
                write_atomically(&out.join(&name), &package)?;
                println!("{}", out.join(&name).display());
            }
            return Ok(());
        }

        let key = if ctx.dry_run {
            None
        } else {
            seal::signing_key(ctx, Signing::IfGiven)?
        };
        let mut manifest = pipeline::binaries_for(ctx, &targets)?;
        let dist_dir = project.dist_dir();
        if ctx.dry_run {
            for target in &targets {
                would_write(&dist_dir, target.debian_architecture().unwrap_or_default())?;
            }
            return Ok(());
        }
        for target in &targets {
            let architecture = target.debian_architecture().unwrap_or_default();
            let binary = manifest
                .artifact_for(ArtifactKind::Binary, target.triple)
                .with_context(|| format!("the dist manifest lists no {} binary", target.triple))?;
            let binary = std::fs::read(dist_dir.join(&binary.path))
                .with_context(|| format!("read the {} binary", target.triple))?;
            for (name, kind, bytes) in
                build(architecture, &binary, manifest.stamp.source_date_epoch)?
            {
                write_atomically(&dist_dir.join(&name), &bytes)?;
                manifest.artifacts.retain(|artifact| artifact.path != name);
                manifest.artifacts.push(Artifact::new(
                    &name,
                    kind,
                    Some(target.triple),
                    &bytes,
                    None,
                ));
                println!("{}", dist_dir.join(&name).display());
            }
        }
        seal::seal(ctx, &dist_dir, &mut manifest, key.as_ref())
    }
}
