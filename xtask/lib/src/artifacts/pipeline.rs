//! The release pipeline that `dist`, `release` (whole, `--split` and
//! `--merge`), `image`, `deploy` and `bench` share: release builds of the
//! shipped binary for one or more targets, checked, packaged and
//! checksummed into `target/dist/`, with `dist-manifest.json` describing
//! every artifact for the tasks that come after (images, deploys).
//!
//! The output is reproducible: paths are remapped out of the binaries, the
//! only time recorded is the source date epoch, and archives are written by
//! `archive`, whose bytes depend only on their contents. It is also
//! incremental and atomic: an artifact whose inputs did not change is kept
//! as it is, and the folder is assembled beside the old one and swapped in
//! only once complete, so a failed run leaves the previous output whole.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::archive::{self, Entry};
use crate::artifacts::sbom;
use crate::artifacts::seal::{self, Signing};
use crate::artifacts::units;
use crate::artifacts::{binfmt, linkage};
use crate::exec::Ctx;
use crate::manifest::{Artifact, ArtifactKind, Manifest, SHA256SUMS};
use crate::signing::PrivateKey;
use crate::targets::{self, Arch, ArchiveFormat, Libc, Linker, Os, Runner, Target};
use crate::tools::{self, Tool};

/// Files shipped next to the binary in every archive, from the workspace root.
const SHIPPED_FILES: [&str; 1] = ["LICENSE"];
/// The operator's guide, shipped as `OPERATING.md` with the binary's name
/// in place of `app` (the developer README stays in the repository). It
/// describes what the libraries do on a host, so it comes with them.
const OPERATING_GUIDE: &str = include_str!("../../templates/operating.md");
/// Folders whose files are shipped too.
const SHIPPED_DIRS: [&str; 1] = ["config"];
/// A built and checked binary, and the SBOM of what is in it.
struct Built {
    planned: Planned,
    bytes: Vec<u8>,
    sbom: Vec<u8>,
}

pub fn build_and_package(
    ctx: &Ctx,
    targets: &[Target],
    notes: Option<String>,
    signing: Signing,
) -> Result<()> {
    if std::env::var_os("RUSTFLAGS").is_some()
        || std::env::var_os("CARGO_ENCODED_RUSTFLAGS").is_some()
    {
        bail!(
            "RUSTFLAGS is set, which would replace the flags that make release builds reproducible: unset it, or move the flags to [target.<triple>] rustflags in .cargo/config.toml"
        );
    }
    // Missing tools fail before anything is downloaded or compiled.
    if targets.iter().any(|target| target.linker() == Linker::Zig) {
        tools::require(Tool::CargoZigbuild)?;
        tools::require(Tool::Zig)?;
    }
    // Compiling runs project code, which must not share a process tree
    // with the signing secrets.
    crate::signing::refuse_project_code_with_secrets("a release build")?;
    let triples: Vec<&str> = targets.iter().map(|target| target.triple).collect();
    let plan = Plan::new(ctx, targets, notes.is_some(), signing)?;
    if ctx.dry_run {
        crate::rustup::ensure_targets(ctx, &triples)?;
        return plan.print(ctx);
    }
    // A wrong passphrase fails before anything is built.
    let key = seal::signing_key(ctx, signing)?;
    crate::rustup::ensure_targets(ctx, &triples)?;
    // The dependency lists the build embeds, and the SBOMs come from.
    let dependencies = sbom::prepare(ctx, targets)?;
    let Plan {
        builds,
        targets,
        port,
        ..
    } = plan;
    for (build, specs) in builds {
        ctx.run(build).with_context(|| {
            format!(
                "build {} for {}",
                ctx.project.settings.binary,
                specs.join(", ")
            )
        })?;
    }
    let previous = Manifest::read(&ctx.project.dist_dir().join(crate::manifest::MANIFEST));
    let stamp = crate::manifest::ManifestStamp::from(ctx.stamp()?);
    let mut built = Vec::new();
    for (planned, dependencies) in targets.into_iter().zip(&dependencies) {
        let bytes = check_binary(ctx, &planned, previous.as_ref())?;
        let mut sbom =
            serde_json::to_vec_pretty(&dependencies.cyclonedx(&stamp, env!("CARGO_PKG_VERSION")))?;
        sbom.push(b'\n');
        built.push(Built {
            planned,
            bytes,
            sbom,
        });
    }
    package(ctx, &built, port, notes, previous.as_ref(), key.as_ref())
}

/// What a `dist` or `release` does, decided before anything runs:
/// `--dry-run` prints it, and the pipeline follows it (the same commands,
/// checks and file names).
struct Plan<'a> {
    /// One cargo invocation per linker, all of that linker's targets at
    /// once, so that build scripts and proc macros compile once.
    builds: Vec<(xshell::Cmd<'a>, Vec<String>)>,
    targets: Vec<Planned>,
    /// The service's port as deployed, which the archives' units listen on.
    port: u16,
    notes: bool,
    signing: Signing,
}

/// One target's share of the plan.
struct Planned {
    target: Target,
    /// `<binary>-<version>-<triple>`: the archive's top folder and the
    /// stem of its name and of the SBOM's.
    top: String,
    /// Where the built binary is read from.
    built: PathBuf,
    /// The binary's path in the dist folder, `<triple>/<binary>[.exe]`.
    binary_path: String,
    sbom_path: String,
    archive_path: String,
    /// The archive's files, as `archive_entries` lists them.
    archive_files: Vec<String>,
    /// Whether the memcpy linkage is scanned (x86_64 musl, whose libc
    /// memcpy the service replaces).
    memcpy_check: bool,
    run: RunCheck,
}

/// How the built binary is run to check the commit it reports.
enum RunCheck {
    Natively,
    Under(PathBuf),
    /// Not run: the qemu it needs is not installed.
    QemuMissing(&'static str),
    /// Not run: no way to run it on this machine (another OS).
    Cannot,
}

impl<'a> Plan<'a> {
    fn new(ctx: &'a Ctx, targets: &[Target], notes: bool, signing: Signing) -> Result<Plan<'a>> {
        let settings = &ctx.project.settings;
        let port = ctx.project.service_port()?;
        let host = targets::host(&ctx.stamp()?.host);
        let mut planned = Vec::new();
        for target in targets {
            let name = &settings.binary;
            let top = format!("{name}-{}-{}", ctx.project.version, target.triple);
            let binary = format!("{name}{}", target.exe_suffix());
            // Listed by the code that writes the archive, over no bytes.
            let archive_files = archive_entries(ctx, target, Vec::new(), Vec::new(), port)?
                .into_iter()
                .map(|entry| entry.path)
                .collect();
            let run = match target.runner(&host) {
                Runner::Native => RunCheck::Natively,
                Runner::Qemu(qemu) => match which::which(qemu) {
                    Ok(path) => RunCheck::Under(path),
                    Err(_) => RunCheck::QemuMissing(qemu),
                },
                Runner::Unavailable => RunCheck::Cannot,
            };
            planned.push(Planned {
                target: target.clone(),
                built: ctx
                    .project
                    .target_dir
                    .join(target.triple)
                    .join("release")
                    .join(&binary),
                binary_path: format!("{}/{binary}", target.triple),
                sbom_path: format!("{top}.cdx.json"),
                archive_path: format!("{top}.{}", target.archive_extension()),
                archive_files,
                memcpy_check: (target.arch, target.os, target.libc)
                    == (Arch::X86_64, Os::Linux, Libc::Musl),
                run,
                top,
            });
        }
        Ok(Plan {
            builds: build_commands(ctx, targets)?,
            targets: planned,
            port,
            notes,
            signing,
        })
    }

    /// The plan as `--dry-run` prints it: the commands echoed as they would
    /// run, then each target's checks and files.
    fn print(self, ctx: &Ctx) -> Result<()> {
        for (build, _) in self.builds {
            ctx.run(build)?;
        }
        let dist_dir = ctx.project.dist_dir();
        eprintln!("plan, into {}:", dist_dir.display());
        for planned in &self.targets {
            let triple = planned.target.triple;
            let mut checks = vec!["its format".to_owned()];
            if planned.memcpy_check {
                checks.push("its memcpy linkage".to_owned());
            }
            checks.push(match &planned.run {
                RunCheck::Natively => "run natively with --version".to_owned(),
                RunCheck::Under(qemu) => format!("run under {} with --version", qemu.display()),
                RunCheck::QemuMissing(qemu) => format!("not run: {}", qemu_missing(qemu)),
                RunCheck::Cannot => "not run: it cannot run on this machine".to_owned(),
            });
            eprintln!("  {triple}: check {}", checks.join("; "));
            eprintln!("    write {}", planned.binary_path);
            eprintln!("    write {}", planned.sbom_path);
            eprintln!(
                "    write {} ({})",
                planned.archive_path,
                planned.archive_files.join(", ")
            );
        }
        if self.notes {
            eprintln!("  write RELEASE_NOTES.md");
        }
        eprintln!("  write {SHA256SUMS}, {}", crate::manifest::MANIFEST);
        eprintln!(
            "  signatures: {}",
            match self.signing {
                Signing::Off => "none: the parts are signed when merged",
                _ => "none yet: `cargo xtask sign` signs what this writes",
            }
        );
        eprintln!("(dry run: nothing was built, so nothing is checked or packaged)");
        Ok(())
    }
}

/// The cargo commands `dist` runs for `targets`, stamped, each with the
/// targets it builds (`bench` times one against `dist` itself).
pub fn build_commands<'a>(
    ctx: &'a Ctx,
    targets: &[Target],
) -> Result<Vec<(xshell::Cmd<'a>, Vec<String>)>> {
    let settings = &ctx.project.settings;
    let (package, binary) = (&settings.package, &settings.binary);
    let cargo = ctx.cargo_path();
    let mut commands = Vec::new();
    for linker in [Linker::RustLld, Linker::Zig] {
        let group: Vec<&Target> = targets
            .iter()
            .filter(|target| target.linker() == linker)
            .collect();
        if group.is_empty() {
            continue;
        }
        let mut config = Vec::new();
        for target in &group {
            config.push("--config".to_owned());
            config.push(format!(
                "target.{}.rustflags={}",
                target.triple,
                reproducible_flags(ctx, target)?
            ));
            if linker == Linker::RustLld {
                config.push("--config".to_owned());
                config.push(format!("target.{}.linker=\"rust-lld\"", target.triple));
            }
        }
        let (subcommand, specs): (&str, Vec<String>) = match linker {
            Linker::RustLld => (
                "build",
                group
                    .iter()
                    .map(|target| target.triple.to_owned())
                    .collect(),
            ),
            Linker::Zig => (
                "zigbuild",
                group.iter().map(|target| target.zig_spec()).collect(),
            ),
        };
        let target_args: Vec<String> = specs
            .iter()
            .flat_map(|spec| ["--target".to_owned(), spec.clone()])
            .collect();
        let build = cmd!(
            ctx.sh,
            "{cargo} {subcommand} --release --locked --package {package} --bin {binary} {target_args...} {config...}"
        )
        .env(sbom::DEP_V0_DIR_VAR, sbom::dep_v0_dir(ctx));
        commands.push((ctx.stamped(build)?, specs));
    }
    Ok(commands)
}

/// Rustflags, as a TOML array, that make the binary depend only on the
/// sources: `--remap-path-prefix` takes the checkout, the target directory
/// and cargo's home out of it, so that two checkouts in different places
/// build the same bytes. (The link time the Windows linker stamps into PE
/// headers is replaced afterwards, see `binfmt::set_pe_timestamp`.)
///
/// Apple targets also link with `-S`: zig's Mach-O linker derives `LC_UUID`
/// from a hash of the output, debug stabs included, and those name the
/// objects in rustc's temporary folders, so without it every link gets
/// another UUID (and code signature), even though rustc strips the stabs
/// afterwards. With `-S` the linker writes no stabs, and two links of the
/// same objects are byte-identical.
fn reproducible_flags(ctx: &Ctx, target: &Target) -> Result<String> {
    let cargo_home = match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => {
            PathBuf::from(std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?)
                .join(".cargo")
        }
    };
    // The last matching prefix wins, so the target directory (usually inside
    // the checkout) comes after the checkout.
    let remaps = [
        (cargo_home.as_path(), "/cargo"),
        (ctx.project.root.as_path(), "/build"),
        (ctx.project.target_dir.as_path(), "/build/target"),
    ];
    let mut flags: Vec<String> = remaps
        .iter()
        .map(|(from, to)| format!("--remap-path-prefix={}={to}", from.display()))
        .collect();
    if target.os == Os::Darwin {
        flags.push("-Clink-arg=-Wl,-S".to_owned());
    }
    let flags: Vec<String> = flags
        .iter()
        .map(|flag| serde_json::to_string(flag).expect("a string serializes"))
        .collect();
    Ok(format!("[{}]", flags.join(",")))
}

/// Why a binary whose qemu is missing is not run, and the fix.
fn qemu_missing(qemu: &str) -> String {
    format!("{qemu} not found (install it with `apt-get install -y qemu-user`)")
}

/// Checks the built binary as planned and returns its bytes as shipped.
fn check_binary(ctx: &Ctx, planned: &Planned, previous: Option<&Manifest>) -> Result<Vec<u8>> {
    let (target, path) = (&planned.target, &planned.built);
    let mut bytes =
        std::fs::read(path).with_context(|| format!("read the built binary {}", path.display()))?;
    if target.os == Os::Windows {
        // The linker stamps the wall-clock link time into the PE header;
        // the shipped copy carries the source date instead.
        binfmt::set_pe_timestamp(&mut bytes, ctx.stamp()?.source_date_epoch)
            .with_context(|| format!("set the timestamp of {}", path.display()))?;
    }
    let format =
        binfmt::verify(target, &bytes).with_context(|| format!("check {}", path.display()))?;
    eprintln!("checked {}: {}", target.triple, format.describe());
    // Scanning the machine code and running the binary are the slow checks;
    // a binary whose bytes a previous dist recorded passed them already,
    // so a no-op dist does neither again.
    let sha256 = archive::sha256_hex(&bytes);
    let already_run = previous.is_some_and(|manifest| {
        manifest
            .artifacts
            .iter()
            .any(|artifact| artifact.kind == ArtifactKind::Binary && artifact.sha256 == sha256)
    });
    if planned.memcpy_check {
        if already_run {
            eprintln!(
                "checked {}: memcpy linkage, as the previous dist checked these bytes",
                target.triple
            );
        } else {
            let at = linkage::check_memcpy(&bytes)
                .with_context(|| format!("check the memcpy of {}", path.display()))?;
            eprintln!(
                "checked {}: memcpy, __memcpy_fwd and memmove's forward copies are the service's own (at {at:#x})",
                target.triple
            );
        }
    }
    let runner = match &planned.run {
        RunCheck::Natively => None,
        RunCheck::Under(qemu) => Some(qemu),
        RunCheck::QemuMissing(qemu) => {
            eprintln!(
                "note: the {} binary was not run: {}",
                target.triple,
                qemu_missing(qemu)
            );
            return Ok(bytes);
        }
        RunCheck::Cannot => return Ok(bytes),
    };
    if !already_run {
        let expected = &ctx.stamp()?.commit_short;
        let sh = &ctx.sh;
        let output = match runner {
            Some(qemu) => cmd!(sh, "{qemu} {path} --version").quiet().read(),
            None => cmd!(sh, "{path} --version").quiet().read(),
        }
        .with_context(|| format!("run the {} binary with --version", target.triple))?;
        if !output.contains(&format!("({expected} ")) {
            bail!(
                "the {} binary reports `{output}`, not commit {expected}",
                target.triple
            );
        }
        let how = runner.map_or("natively".to_owned(), |qemu| {
            format!("under {}", qemu.display())
        });
        eprintln!("ran {} {how}: {output}", target.triple);
    }
    Ok(bytes)
}

/// The files of one archive, in no particular order (the archive sorts):
/// the binary's `bytes`, its `sbom` and what ships beside them. `port` is
/// the service's, which the units listen on.
fn archive_entries(
    ctx: &Ctx,
    target: &Target,
    bytes: Vec<u8>,
    sbom: Vec<u8>,
    port: u16,
) -> Result<Vec<Entry>> {
    let binary = format!("{}{}", ctx.project.settings.binary, target.exe_suffix());
    let mut entries = vec![
        Entry {
            path: binary,
            contents: bytes,
            executable: true,
        },
        Entry {
            path: format!("{}.cdx.json", ctx.project.settings.binary),
            contents: sbom,
            executable: false,
        },
    ];
    entries.push(Entry {
        path: "OPERATING.md".to_owned(),
        contents: named_for(OPERATING_GUIDE, &ctx.project.settings.binary).into_bytes(),
        executable: false,
    });
    for file in SHIPPED_FILES {
        let path = ctx.project.root.join(file);
        let contents = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        entries.push(Entry {
            path: file.to_owned(),
            contents,
            executable: false,
        });
    }
    // Linux archives carry the systemd units and the supervisord program,
    // rendered for an install under the default prefix.
    if target.os == Os::Linux {
        let settings = &ctx.project.settings;
        for (name, text) in units::render(settings, port, &units::default_root(settings)) {
            entries.push(Entry {
                path: format!("units/{name}"),
                contents: text.into_bytes(),
                executable: false,
            });
        }
    }
    for dir in SHIPPED_DIRS {
        for (name, contents) in config_files(&ctx.project.root.join(dir))? {
            entries.push(Entry {
                path: format!("{dir}/{name}"),
                contents,
                executable: false,
            });
        }
    }
    Ok(entries)
}

/// The files of a folder (not its subfolders), sorted by name.
pub fn config_files(folder: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).with_context(|| format!("list {}", folder.display()))? {
        let path = entry
            .with_context(|| format!("list {}", folder.display()))?
            .path();
        if path.is_file() {
            let contents =
                std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
            files.push((
                path.file_name()
                    .expect("a file has a name")
                    .to_string_lossy()
                    .into_owned(),
                contents,
            ));
        }
    }
    files.sort();
    Ok(files)
}

/// A fingerprint of everything that decides an archive's bytes.
fn inputs_fingerprint(top: &str, entries: &[Entry], epoch: u64) -> String {
    let mut description = format!("archive-v1 {top} {epoch}\n");
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|left, right| left.path.cmp(&right.path));
    for entry in sorted {
        description.push_str(&format!(
            "{} {:o} {}\n",
            entry.path,
            entry.mode(),
            archive::sha256_hex(&entry.contents)
        ));
    }
    archive::sha256_hex(description.as_bytes())
}

/// Writes the folder from the checked binaries; `port` is the plan's.
fn package(
    ctx: &Ctx,
    built: &[Built],
    port: u16,
    notes: Option<String>,
    previous: Option<&Manifest>,
    key: Option<&PrivateKey>,
) -> Result<()> {
    let stamp = ctx.stamp()?;
    let dist_dir = ctx.project.dist_dir();
    let staging = ctx
        .project
        .target_dir
        .join(format!(".dist-staging-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("remove {}", staging.display()))?;
    }
    std::fs::create_dir_all(&staging).with_context(|| format!("create {}", staging.display()))?;
    let result = (|| {
        let mut artifacts = Vec::new();
        for binary in built {
            let planned = &binary.planned;
            let (top, binary_path) = (&planned.top, &planned.binary_path);
            let triple = planned.target.triple;
            write_file(&staging.join(binary_path), &binary.bytes, true)?;
            artifacts.push(Artifact::new(
                binary_path,
                ArtifactKind::Binary,
                Some(triple),
                &binary.bytes,
                None,
            ));

            let sbom_path = &planned.sbom_path;
            write_file(&staging.join(sbom_path), &binary.sbom, false)?;
            artifacts.push(Artifact::new(
                sbom_path,
                ArtifactKind::Sbom,
                Some(triple),
                &binary.sbom,
                None,
            ));

            let entries = archive_entries(
                ctx,
                &planned.target,
                binary.bytes.clone(),
                binary.sbom.clone(),
                port,
            )?;
            let archive_path = &planned.archive_path;
            let inputs = inputs_fingerprint(top, &entries, stamp.source_date_epoch);
            let unchanged = previous.and_then(|manifest| manifest.unchanged(archive_path, &inputs));
            let archive_artifact = match unchanged {
                // Same inputs, same bytes: keep the file (and its mtime) by
                // linking it into the new folder instead of writing it again.
                Some(old)
                    if std::fs::hard_link(
                        dist_dir.join(archive_path),
                        staging.join(archive_path),
                    )
                    .is_ok() =>
                {
                    eprintln!("unchanged {archive_path}");
                    Artifact {
                        inputs: Some(inputs),
                        ..old.clone()
                    }
                }
                _ => {
                    let bytes = match planned.target.archive_format() {
                        ArchiveFormat::TarGz => {
                            archive::tar_gz(top, &entries, stamp.source_date_epoch)?
                        }
                        ArchiveFormat::Zip => archive::zip(top, &entries)?,
                    };
                    write_file(&staging.join(archive_path), &bytes, false)?;
                    eprintln!("wrote {archive_path} ({} bytes)", bytes.len());
                    Artifact::new(
                        archive_path,
                        ArtifactKind::Archive,
                        Some(triple),
                        &bytes,
                        Some(inputs),
                    )
                }
            };
            artifacts.push(archive_artifact);
        }
        if let Some(notes) = &notes {
            write_file(&staging.join("RELEASE_NOTES.md"), notes.as_bytes(), false)?;
            artifacts.push(Artifact::new(
                "RELEASE_NOTES.md",
                ArtifactKind::ReleaseNotes,
                None,
                notes.as_bytes(),
                None,
            ));
        }
        artifacts.sort_by(|left, right| left.path.cmp(&right.path));
        let mut manifest = Manifest::new(&ctx.project.settings.binary, stamp, artifacts);
        seal::seal(ctx, &staging, &mut manifest, key)?;
        ctx.check_dist(&staging)?;
        Ok(manifest)
    })();
    let manifest = match result {
        Ok(manifest) => manifest,
        Err(err) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(err);
        }
    };
    swap_into_place(&staging, &dist_dir)?;
    print_summary(&dist_dir, &manifest);
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], executable: bool) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("write {}", path.display()))?;
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("make {} executable", path.display()))?;
    }
    Ok(())
}

/// `text` with the word `app` (the template's binary) replaced by `binary`:
/// `/opt/app/current` and `app.service` follow a renamed service, while
/// `app_*` metric names and `APP_*` variables, which do not change, stay.
/// The operator's guide every archive and package carries, for `binary`.
pub fn operating_guide(binary: &str) -> String {
    named_for(OPERATING_GUIDE, binary)
}

fn named_for(text: &str, binary: &str) -> String {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut named = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("app") {
        let before = rest[..at].chars().next_back();
        let after = rest[at + 3..].chars().next();
        named.push_str(&rest[..at]);
        if before.is_some_and(is_word) || after.is_some_and(is_word) {
            named.push_str("app");
        } else {
            named.push_str(binary);
        }
        rest = &rest[at + 3..];
    }
    named.push_str(rest);
    named
}

/// Replaces `dist_dir` with the complete `staging` folder: the old output is
/// moved aside, the new one renamed in, then the old one removed.
pub fn swap_into_place(staging: &Path, dist_dir: &Path) -> Result<()> {
    let old = staging.with_file_name(format!(".dist-old-{}", std::process::id()));
    let had_old = dist_dir.exists();
    if had_old {
        std::fs::rename(dist_dir, &old)
            .with_context(|| format!("move the previous {} aside", dist_dir.display()))?;
    }
    if let Err(err) = std::fs::rename(staging, dist_dir) {
        if had_old {
            let _ = std::fs::rename(&old, dist_dir);
        }
        return Err(err)
            .with_context(|| format!("move the new output into {}", dist_dir.display()));
    }
    if had_old {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("remove the previous output {}", old.display()))?;
    }
    Ok(())
}

pub fn print_summary(dist_dir: &Path, manifest: &Manifest) {
    println!("{}:", dist_dir.display());
    for artifact in &manifest.artifacts {
        println!(
            "  {:<48} {:>10} bytes  sha256:{}",
            artifact.path,
            artifact.size,
            &artifact.sha256[..16]
        );
    }
    println!("  {SHA256SUMS}, {}", crate::manifest::MANIFEST);
}

/// The dist manifest with binaries for `targets` from this very tree;
/// `dist` runs first when there is none (it is a no-op when nothing changed).
pub fn binaries_for(ctx: &Ctx, targets: &[Target]) -> Result<Manifest> {
    let path = ctx.project.dist_dir().join(crate::manifest::MANIFEST);
    let stamp = ctx.stamp()?;
    let current = Manifest::read(&path).filter(|manifest| {
        !stamp.dirty
            && manifest.stamp.commit == stamp.commit
            && manifest.stamp.source_date_epoch == stamp.source_date_epoch
            && targets.iter().all(|target| {
                manifest
                    .artifact_for(ArtifactKind::Binary, target.triple)
                    .is_some()
            })
    });
    if let Some(manifest) = current {
        eprintln!("using the binaries in {}", path.display());
        return Ok(manifest);
    }
    build_and_package(ctx, targets, None, Signing::Later)?;
    if ctx.dry_run {
        return Ok(Manifest::new(
            &ctx.project.settings.binary,
            stamp,
            Vec::new(),
        ));
    }
    Manifest::require(&path)
}

#[cfg(test)]
mod tests {
    use super::named_for;

    #[test]
    fn the_guide_follows_the_binary_name_and_keeps_the_contracts() {
        assert_eq!(
            named_for(
                "# Operating app\n/opt/app/current app.service `app` app_ready APP_ENV happy apps",
                "hello"
            ),
            "# Operating hello\n/opt/hello/current hello.service `hello` app_ready APP_ENV happy apps"
        );
    }
}
