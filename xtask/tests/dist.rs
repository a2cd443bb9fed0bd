//! `cargo xtask dist` and `release`, run as a user runs them: errors that
//! stop before building, the dry run, and (slow) real builds in fresh clones
//! that must produce identical bytes, pass `sha256sum -c`, run under qemu,
//! and rebuild nothing the second time.

#[path = "dist/kube.rs"]
mod kube;
#[path = "dist/parts.rs"]
mod parts;
#[path = "support/registry.rs"]
mod registry;
#[path = "dist/sbom.rs"]
mod sbom;
#[path = "dist/signing.rs"]
mod signing;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::*;

/// A clone of this repository's HEAD, as a new user gets it.
fn clone_head(into: &Path, name: &str) -> PathBuf {
    let root = workspace_root();
    let clone = into.join(name);
    git(
        into,
        &[
            "clone",
            "--quiet",
            "--no-hardlinks",
            root.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    clone
}

fn run_fails(command: &mut Command, expected: &str) {
    let run = output(command);
    let stderr = stderr_text(&run);
    assert_eq!(run.status.code(), Some(1), "{command:?}: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains(expected),
        "{command:?}: `{last}` lacks `{expected}`"
    );
}

#[test]
fn bad_targets_and_environments_fail_before_building() {
    let repo = repository();
    let dir = repo.path();
    let scratch = TempDir::new().unwrap();
    let target_dir = scratch.path().join("target");
    let xtask_in = |args: &[&str]| {
        let mut command = xtask(dir);
        command.args(args).env("CARGO_TARGET_DIR", &target_dir);
        // Under `cargo test`, the slow test's signing secrets reach every
        // run of this process; these runs compile and must not hold them.
        signing::without_secrets(&mut command);
        command
    };
    run_fails(
        &mut xtask_in(&["dist", "--target", "sparc"]),
        "unknown target `sparc`: use an alias: x86_64",
    );
    run_fails(
        &mut xtask_in(&["dist", "--target", "armv7-unknown-linux-musleabihf"]),
        "or a triple: x86_64-unknown-linux-musl, aarch64-unknown-linux-musl",
    );
    run_fails(
        xtask_in(&["dist"]).env("RUSTFLAGS", "-Copt-level=0"),
        "RUSTFLAGS is set",
    );

    // A PATH with cargo, rustc and git, but no cargo-zigbuild or zig, and
    // no tools' virtual environment (which the xtask would put on PATH).
    let bin = TempDir::new().unwrap();
    for tool in ["cargo", "rustc", "git"] {
        std::os::unix::fs::symlink(which(tool).unwrap(), bin.path().join(tool)).unwrap();
    }
    run_fails(
        xtask_in(&["dist", "--target", "x86_64-apple-darwin"])
            .env("PATH", bin.path())
            .env("XTASK_VENV", bin.path().join("no-venv")),
        "cargo-zigbuild not found on PATH (needed for glibc, macOS and Windows targets): install it with `cargo xtask setup --only python` or `cargo xtask setup`",
    );

    run_fails(
        &mut xtask_in(&["image", "--target", "x86_64-unknown-linux-gnu"]),
        "x86_64-unknown-linux-gnu cannot go into an image: images hold static Linux binaries",
    );
    run_fails(
        &mut xtask_in(&["image", "--tag", "App"]),
        "`App` is not an image reference",
    );

    fs::write(dir.join("LICENSE"), "changed").unwrap();
    run_fails(
        &mut xtask_in(&["release", "--target", "aarch64"]),
        "the working tree has uncommitted changes",
    );
    git(dir, &["checkout", "--quiet", "--", "LICENSE"]);
    git(dir, &["tag", "v9.9.9"]);
    run_fails(
        &mut xtask_in(&["release", "--target", "aarch64"]),
        "HEAD is tagged v9.9.9 but the version in Cargo.toml is 0.1.0",
    );
    assert!(
        !target_dir.join("dist").exists(),
        "a failed run wrote output"
    );

    let tarball = copy_workspace();
    run_fails(
        signing::without_secrets(&mut xtask(tarball.path()))
            .args(["release", "--target", "x86_64"])
            .env("CARGO_TARGET_DIR", &target_dir),
        "release needs a git checkout",
    );
}

#[test]
fn dist_dry_run_prints_the_build_without_running_it() {
    let scratch = TempDir::new().unwrap();
    let target_dir = scratch.path().join("target");
    let run = output(
        signing::without_secrets(&mut xtask(&workspace_root()))
            .args([
                "--dry-run",
                "dist",
                "--target",
                "arm64",
                "--target",
                "x86_64",
            ])
            .env("CARGO_TARGET_DIR", &target_dir),
    );
    let echoed = stderr_text(&run);
    assert!(run.status.success(), "{echoed}");
    for expected in [
        "cargo build --release --locked --package app --bin app --target aarch64-unknown-linux-musl --target x86_64-unknown-linux-musl",
        "target.aarch64-unknown-linux-musl.linker=\"rust-lld\"",
        "--remap-path-prefix=",
        // The plan: each target's checks and files, then the folder's.
        "x86_64-unknown-linux-musl: check its format; its memcpy linkage; run natively with --version",
        "aarch64-unknown-linux-musl: check its format; ",
        "write aarch64-unknown-linux-musl/app\n",
        "write app-0.1.0-aarch64-unknown-linux-musl.cdx.json\n",
        "write app-0.1.0-x86_64-unknown-linux-musl.tar.gz (app, app.cdx.json, OPERATING.md, LICENSE, units/app.socket,",
        "write SHA256SUMS, dist-manifest.json\n",
        "signatures: none yet: `cargo xtask sign` signs what this writes",
        "(dry run: nothing was built",
    ] {
        assert!(
            echoed.contains(expected),
            "`{expected}` missing from:\n{echoed}"
        );
    }
    assert!(
        !target_dir.exists(),
        "a dry run created {}",
        target_dir.display()
    );
}

fn dist_folder(target_dir: &Path) -> PathBuf {
    target_dir.join("dist")
}

fn manifest(target_dir: &Path) -> Value {
    serde_json::from_str(
        &fs::read_to_string(dist_folder(target_dir).join("dist-manifest.json")).unwrap(),
    )
    .unwrap()
}

fn artifact<'a>(manifest: &'a Value, kind: &str, target: &str) -> &'a Value {
    manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|artifact| artifact["kind"] == kind && artifact["target"] == target)
        .unwrap_or_else(|| panic!("no {kind} for {target} in {manifest:#}"))
}

/// `dist` of `targets` in two checkouts at once, each into its own target
/// directory, without the signing secrets (`sign` holds them, after).
fn dist_side_by_side(clones: [&Path; 2], target_dirs: [&Path; 2], targets: &[&str]) {
    let dist_in = |clone: &Path, target_dir: &Path| {
        let mut command = xtask(clone);
        command.arg("dist").env("CARGO_TARGET_DIR", target_dir);
        for target in targets {
            command.args(["--target", target]);
        }
        signing::without_secrets(&mut command);
        command
    };
    let (mut first_dist, mut second_dist) = (
        dist_in(clones[0], target_dirs[0]),
        dist_in(clones[1], target_dirs[1]),
    );
    let in_parallel = std::thread::spawn(move || output(&mut second_dist));
    let runs = [output(&mut first_dist), in_parallel.join().unwrap()];
    for run in &runs {
        assert!(run.status.success(), "{}", stderr_text(run));
    }
}

/// Two clones of HEAD in different folders (one with a space in its
/// name), each running `dist` for `targets` into its own target directory,
/// at once; both must succeed with the same `SHA256SUMS`. Fixed places under
/// `target/test-builds/<name>-*`, kept between local runs so that a rerun
/// finds its builds (the paths are part of the build flags). Returns the
/// first clone and both target directories.
/// With `keys`, both are then signed by `sign` (the first with the key in
/// files, the second in the variables themselves) while `/proc` is watched
/// for the secrets.
fn dist_in_two_checkouts(
    name: &str,
    targets: &[&str],
    keys: Option<&signing::Keys>,
) -> (PathBuf, [PathBuf; 2]) {
    let builds = workspace_root().join("target/test-builds");
    let clones = builds.join(format!("{name}-clones"));
    if clones.exists() {
        fs::remove_dir_all(&clones).unwrap();
    }
    fs::create_dir_all(&clones).unwrap();
    let (first, second) = (
        clone_head(&clones, "first"),
        clone_head(&clones, "second checkout"),
    );
    let target_dirs = [
        builds.join(format!("{name}-first")),
        builds.join(format!("{name}-second")),
    ];
    dist_side_by_side(
        [&first, &second],
        [&target_dirs[0], &target_dirs[1]],
        targets,
    );
    if let Some(keys) = keys {
        let sign_in = |clone: &Path, target_dir: &Path| {
            let mut command = xtask(clone);
            command.arg("sign").env("CARGO_TARGET_DIR", target_dir);
            command
        };
        let (first_sign, mut second_sign) = (
            sign_in(&first, &target_dirs[0]),
            sign_in(&second, &target_dirs[1]),
        );
        keys.by_value(&mut second_sign);
        let signed = signing::run_watching_proc(vec![first_sign, second_sign], &keys.secrets());
        for run in &signed {
            assert!(run.status.success(), "{}", stderr_text(run));
            assert!(
                !stderr_text(run).contains("Compiling"),
                "sign compiled:\n{}",
                stderr_text(run)
            );
        }
    }
    let sums =
        |target_dir: &Path| fs::read_to_string(dist_folder(target_dir).join("SHA256SUMS")).unwrap();
    assert_eq!(
        sums(&target_dirs[0]),
        sums(&target_dirs[1]),
        "the two checkouts built different artifacts"
    );
    (first, target_dirs)
}

/// The signed x86_64 and aarch64 release of two fresh clones of HEAD,
/// which the slow dist tests share: built once per commit and xtask binary
/// (in `target/test-builds/dist-fixture/`, kept between runs), by whichever
/// of them runs first. Each test holds the fixture's lock while it runs and
/// leaves the clones and the release as it found them (`Restore`).
struct Release {
    first: PathBuf,
    target_dir: PathBuf,
    second: PathBuf,
    second_target_dir: PathBuf,
    keys: signing::Keys,
    other_keys: signing::Keys,
    _lock: fs::File,
}

impl Release {
    fn get() -> Release {
        use std::os::fd::AsRawFd;
        let home = workspace_root().join("target/test-builds/dist-fixture");
        fs::create_dir_all(&home).unwrap();
        let lock = fs::File::create(home.join(".lock")).unwrap();
        // SAFETY: flock on a descriptor this function owns; released when
        // the release is dropped.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        let xtask = fs::metadata(env!("CARGO_BIN_EXE_xtask")).unwrap();
        let key = format!(
            "{} {} {:?}",
            git(&workspace_root(), &["rev-parse", "HEAD"]),
            xtask.len(),
            xtask.modified().unwrap()
        );
        let ready = home.join("ready");
        let clones = home.parent().unwrap().join("dist-clones");
        if fs::read_to_string(&ready).ok().as_deref() != Some(key.as_str()) {
            let _ = fs::remove_file(&ready);
            let keys_home = home.join("keys");
            if keys_home.exists() {
                fs::remove_dir_all(&keys_home).unwrap();
            }
            fs::create_dir_all(&keys_home).unwrap();
            // The keys are made in clones of their own: keygen writes the
            // public key and its setting into the clone it runs in.
            let keys = signing::Keys::make(
                &keys_home.join("release"),
                &clone_head(&keys_home, "release-clone"),
                "release",
            );
            signing::Keys::make(
                &keys_home.join("other"),
                &clone_head(&keys_home, "other-clone"),
                "other",
            );
            keys.sign_every_run();
            dist_in_two_checkouts("dist", &["x86_64", "aarch64"], Some(&keys));
            fs::write(&ready, &key).unwrap();
        }
        let release = Release {
            first: clones.join("first"),
            target_dir: home.parent().unwrap().join("dist-first"),
            second: clones.join("second checkout"),
            second_target_dir: home.parent().unwrap().join("dist-second"),
            keys: signing::Keys::load(&home.join("keys/release")),
            other_keys: signing::Keys::load(&home.join("keys/other")),
            _lock: lock,
        };
        release.keys.sign_every_run();
        release
    }

    fn dist(&self) -> PathBuf {
        dist_folder(&self.target_dir)
    }

    /// Puts `target/dist/` back as it is now, and deletes `tag`, when the
    /// returned guard is dropped (also when the test fails).
    fn restore_after(&self, tag: Option<&str>) -> Restore {
        Restore::keep(&self.first, &self.target_dir, tag)
    }
}

impl Restore {
    /// A guard that puts `target_dir`'s dist folder back as it is now, and
    /// deletes `tag` in `clone`, when dropped.
    fn keep(clone: &Path, target_dir: &Path, tag: Option<&str>) -> Restore {
        let dist = dist_folder(target_dir);
        let kept = target_dir.with_extension("kept");
        if kept.exists() {
            fs::remove_dir_all(&kept).unwrap();
        }
        let status = Command::new("cp")
            .arg("-a")
            .arg(&dist)
            .arg(&kept)
            .status()
            .unwrap();
        assert!(status.success());
        Restore {
            dist,
            kept,
            clone: clone.to_owned(),
            tag: tag.map(str::to_owned),
        }
    }
}

struct Restore {
    dist: PathBuf,
    kept: PathBuf,
    clone: PathBuf,
    tag: Option<String>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dist);
        let _ = fs::rename(&self.kept, &self.dist);
        if let Some(tag) = &self.tag {
            let _ = Command::new("git")
                .current_dir(&self.clone)
                .args(["tag", "--delete", tag])
                .output();
        }
    }
}

#[test]
fn slow_dist_two_clones_give_the_same_signed_bytes() {
    let release = Release::get();
    let sums =
        |target_dir: &Path| fs::read_to_string(dist_folder(target_dir).join("SHA256SUMS")).unwrap();
    assert_eq!(
        manifest(&release.target_dir),
        manifest(&release.second_target_dir)
    );
    assert_eq!(sums(&release.target_dir), sums(&release.second_target_dir));
    assert_eq!(
        sums(&release.target_dir).lines().count(),
        11,
        "two archives, two binaries, two SBOMs, four bundles and the provenance:\n{}",
        sums(&release.target_dir)
    );
    let manifest = manifest(&release.target_dir);
    let commit = git(&release.first, &["rev-parse", "HEAD"]);
    assert_eq!(manifest["stamp"]["commit"], commit.as_str());
    assert_eq!(manifest["stamp"]["dirty"], false);
}

#[test]
fn slow_dist_checksums_and_signatures_verify_and_tampering_is_refused() {
    let release = Release::get();
    let dist = release.dist();
    assert_checksums_verify(&dist);
    signing::check_with_other_tools(&dist, &release.keys);
    signing::check_tampering(&release.first, &dist, &release.keys, &release.other_keys);
}

#[test]
fn slow_dist_dependency_lists_and_sboms_name_what_is_inside() {
    let release = Release::get();
    sbom::check_dependency_lists_and_sboms(&release.first, &release.target_dir);
}

#[test]
fn slow_dist_deploy_by_target_installs_the_verified_archive() {
    let release = Release::get();
    let commit = git(&release.first, &["rev-parse", "HEAD"]);
    deploy_by_target(
        &release.first,
        &release.target_dir,
        &commit,
        &release.keys,
        &release.other_keys,
    );
}

/// `package` in both clones: the same Debian and RPM packages, byte for
/// byte, signed and listed like every artifact, that dpkg and rpm read as
/// packages holding the shipped binary, its config as conffiles and its
/// units; the binary they unpack reports the commit; lintian and rpmlint
/// find nothing but what is listed here.
#[test]
fn slow_dist_package_writes_the_same_signed_deb_and_rpm_packages_in_both_clones() {
    let Some(dpkg_deb) = tool_or_skip("dpkg-deb", "apt-get install -y dpkg") else {
        return;
    };
    let release = Release::get();
    let _first = Restore::keep(&release.first, &release.target_dir, None);
    let _second = Restore::keep(&release.second, &release.second_target_dir, None);
    for (clone, target_dir) in [
        (&release.first, &release.target_dir),
        (&release.second, &release.second_target_dir),
    ] {
        let run = output(
            xtask(clone)
                .arg("package")
                .env("CARGO_TARGET_DIR", target_dir),
        );
        let stderr = stderr_text(&run);
        assert!(run.status.success(), "{stderr}");
        assert!(
            stderr.contains("using the binaries in") && !stderr.contains("Compiling"),
            "package built again:\n{stderr}"
        );
    }
    let packages = |target_dir: &Path| -> Vec<String> {
        fs::read_to_string(dist_folder(target_dir).join("SHA256SUMS"))
            .unwrap()
            .lines()
            .filter(|line| {
                [".deb", ".deb.sigstore.json", ".rpm", ".rpm.sigstore.json"]
                    .iter()
                    .any(|end| line.ends_with(end))
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        packages(&release.target_dir),
        packages(&release.second_target_dir)
    );
    assert_eq!(
        packages(&release.target_dir).len(),
        8,
        "a .deb, an .rpm and their bundles per Linux target: {:?}",
        packages(&release.target_dir)
    );
    let dist = release.dist();
    let verified = output(
        xtask(&release.first)
            .args(["verify", "--public-key"])
            .arg(&release.keys.public)
            .env("CARGO_TARGET_DIR", &release.target_dir),
    );
    assert!(verified.status.success(), "{}", stderr_text(&verified));

    let deb = dist.join("app_0.1.0_amd64.deb");
    let dpkg = |args: &[&str]| stdout_of(Command::new(&dpkg_deb).args(args).arg(&deb));
    let info = dpkg(&["--info"]);
    for field in [
        " Package: app\n",
        " Version: 0.1.0\n",
        " Architecture: amd64\n",
        " Maintainer: Example maintainers <ops@example.com>\n",
    ] {
        assert!(info.contains(field), "{field} not in\n{info}");
    }
    let contents = dpkg(&["--contents"]);
    for entry in [
        "-rwxr-xr-x 0/0         ",
        " ./usr/bin/app\n",
        " ./etc/app/base.toml\n",
        " ./etc/app/prod.toml\n",
        " ./lib/systemd/system/app.socket\n",
        " ./lib/systemd/system/app.service\n",
        " ./usr/share/doc/app/copyright\n",
    ] {
        assert!(contents.contains(entry), "{entry} not in\n{contents}");
    }
    let conffiles = stdout_of(Command::new("sh").arg("-c").arg(format!(
        "'{}' --ctrl-tarfile '{}' | tar -xO ./conffiles",
        dpkg_deb.display(),
        deb.display()
    )));
    assert_eq!(
        conffiles,
        "/etc/app/base.toml\n/etc/app/dev.toml\n/etc/app/prod.toml\n/etc/app/staging.toml\n"
    );
    let unpacked = TempDir::new().unwrap();
    let run = output(
        Command::new(&dpkg_deb)
            .arg("-x")
            .arg(&deb)
            .arg(unpacked.path()),
    );
    assert!(run.status.success(), "{}", stderr_text(&run));
    let service =
        fs::read_to_string(unpacked.path().join("lib/systemd/system/app.service")).unwrap();
    assert!(
        service.contains("\nExecStart=/usr/bin/app --config-dir /etc/app\n"),
        "{service}"
    );
    let version = stdout_of(Command::new(unpacked.path().join("usr/bin/app")).arg("--version"));
    let commit = git(&release.first, &["rev-parse", "--short=7", "HEAD"]);
    assert!(version.contains(&commit), "{version}");

    // apt-repo over the release: the packages of both targets, once the
    // release verifies; a package changed since it was signed is refused.
    let apt = TempDir::new().unwrap();
    let (apt_key, keyring) = (apt.path().join("apt.key"), apt.path().join("ring.gpg"));
    let made = output(
        xtask(&release.first)
            .env("APT_SIGNING_PASSPHRASE", &release.keys.passphrase)
            .args(["keygen", "--apt", "--private-key"])
            .arg(&apt_key)
            .arg("--public-key")
            .arg(&keyring),
    );
    assert!(made.status.success(), "{}", stderr_text(&made));
    let repo = apt.path().join("repo");
    let apt_repo = || {
        output(
            xtask(&release.first)
                .env("CARGO_TARGET_DIR", &release.target_dir)
                .env("APT_SIGNING_KEY_FILE", &apt_key)
                .env("APT_SIGNING_PASSPHRASE", &release.keys.passphrase)
                .arg("apt-repo")
                .arg(&repo)
                .arg("--keyring")
                .arg(&keyring)
                .arg("--public-key")
                .arg(&release.keys.public),
        )
    };
    let added = apt_repo();
    assert!(added.status.success(), "{}", stderr_text(&added));
    for architecture in ["amd64", "arm64"] {
        let index = fs::read_to_string(
            repo.join(format!("dists/stable/main/binary-{architecture}/Packages")),
        )
        .unwrap();
        assert!(
            index.contains(&format!(
                "Filename: pool/main/app_0.1.0_{architecture}.deb\n"
            )),
            "{index}"
        );
    }
    if let Some(gpgv) = tool_or_skip("gpgv", "apt-get install -y gpgv") {
        let checked = output(
            Command::new(gpgv)
                .arg("--keyring")
                .arg(&keyring)
                .arg(repo.join("dists/stable/InRelease")),
        );
        assert!(checked.status.success(), "{}", stderr_text(&checked));
    }
    let original = fs::read(&deb).unwrap();
    let mut changed = original.clone();
    *changed.last_mut().unwrap() ^= 1;
    fs::write(&deb, &changed).unwrap();
    let refused = apt_repo();
    fs::write(&deb, &original).unwrap();
    assert!(
        !refused.status.success()
            && stderr_text(&refused).contains("does not verify against the release key"),
        "{}",
        stderr_text(&refused)
    );

    // Debian's policy checker: no error and no warning, with the
    // package's own overrides (each justified in the file); what is left
    // are notes, listed here so that a new one is seen.
    let Some(lintian) = tool_or_skip("lintian", "apt-get install -y lintian") else {
        return;
    };
    let checked = output(
        Command::new(lintian)
            .args([
                "--pedantic",
                "--display-info",
                "--allow-root",
                "--tag-display-limit",
                "0",
            ])
            .arg(&deb),
    );
    let report = String::from_utf8_lossy(&checked.stdout);
    let tags: Vec<&str> = report
        .lines()
        .filter(|line| !line.starts_with("N:"))
        .collect();
    assert_eq!(
        tags,
        [
            "I: app: binary-has-unneeded-section .comment [usr/bin/app]",
            "I: app: package-supports-alternative-init-but-no-init.d-script [lib/systemd/system/app.service]",
            "I: app: systemd-service-file-missing-documentation-key [lib/systemd/system/app.service]",
        ],
        "lintian ({}):\n{report}{}",
        checked.status,
        stderr_text(&checked)
    );

    // The RPM: what rpm reads of it, and rpmlint's findings, each either
    // fixed or listed here with why it stays.
    let rpm_file = dist.join("app-0.1.0-1.x86_64.rpm");
    let Some(rpm) = tool_or_skip("rpm", "apt-get install -y rpm") else {
        return;
    };
    let query = |args: &[&str]| {
        stdout_of(
            Command::new(&rpm)
                .args(["-qp", "--nosignature"])
                .args(args)
                .arg(&rpm_file),
        )
    };
    let listed = query(&["--list"]);
    for path in [
        "/usr/bin/app\n",
        "/etc/app/prod.toml\n",
        "/usr/lib/systemd/system/app.socket\n",
    ] {
        assert!(listed.contains(path), "{path} not in\n{listed}");
    }
    let scripts = query(&["--scripts"]);
    assert!(
        scripts.contains("systemctl reload app.service"),
        "{scripts}"
    );
    let Some(rpmlint) = tool_or_skip("rpmlint", "apt-get install -y rpmlint") else {
        return;
    };
    let filters = TempDir::new().unwrap();
    let rpmlintrc = filters.path().join("app.rpmlintrc");
    fs::write(
        &rpmlintrc,
        [
            // By design: a static binary is the product.
            "addFilter(\"statically-linked-binary\")",
            // The .rpm is signed by its Sigstore bundle and the signed
            // SHA256SUMS, not (yet) by an OpenPGP key rpm checks.
            "addFilter(\"no-signature\")",
        ]
        .join("\n"),
    )
    .unwrap();
    let linted = output(
        Command::new(rpmlint)
            .arg("-r")
            .arg(&rpmlintrc)
            .arg(&rpm_file),
    );
    let report = String::from_utf8_lossy(&linted.stdout);
    let findings: Vec<&str> = report
        .lines()
        .filter(|line| line.starts_with("app.x86_64: "))
        .collect();
    assert_eq!(
        findings,
        [
            "app.x86_64: W: only-non-binary-in-usr-lib",
            "app.x86_64: W: no-manual-page-for-binary app",
            "app.x86_64: W: invalid-license MIT",
        ],
        "rpmlint:\n{report}{}",
        stderr_text(&linted)
    );
    assert!(linted.status.success(), "rpmlint failed:\n{report}");
}

#[test]
fn slow_dist_archive_holds_the_service_owned_by_root_and_dated_at_the_commit() {
    let release = Release::get();
    let manifest = manifest(&release.target_dir);
    let epoch: u64 = git(&release.first, &["log", "-1", "--format=%ct"])
        .parse()
        .unwrap();
    // The archive: the binary, the docs and the sample config, owned by
    // 0:0, dated at the commit.
    let archive = artifact(&manifest, "archive", "x86_64-unknown-linux-musl")["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let listing = String::from_utf8(
        output(
            Command::new("tar")
                .args([
                    "--list",
                    "--verbose",
                    "--numeric-owner",
                    "--full-time",
                    "-zf",
                    &archive,
                ])
                .env("TZ", "UTC")
                .current_dir(release.dist()),
        )
        .stdout,
    )
    .unwrap();
    let top = "app-0.1.0-x86_64-unknown-linux-musl";
    // What the dry run's plan said this dist writes is what it wrote.
    let plan = output(
        signing::without_secrets(&mut xtask(&release.first))
            .args([
                "--dry-run",
                "dist",
                "--target",
                "x86_64",
                "--target",
                "arm64",
            ])
            .env("CARGO_TARGET_DIR", &release.target_dir),
    );
    let plan = stderr_text(&plan);
    let planned = |line: &str| -> Option<(String, Option<String>)> {
        let rest = line.trim().strip_prefix("write ")?;
        Some(match rest.split_once(" (") {
            Some((path, files)) => (
                path.to_owned(),
                Some(files.trim_end_matches(')').to_owned()),
            ),
            None => (rest.to_owned(), None),
        })
    };
    let written: Vec<(String, Option<String>)> = plan.lines().filter_map(planned).collect();
    assert!(written.len() >= 7, "the plan writes too little:\n{plan}");
    for (path, files) in &written {
        for path in path.split(", ") {
            assert!(
                release.dist().join(path).is_file(),
                "{path} planned, not written:\n{plan}"
            );
        }
        if path == &archive {
            let mut planned: Vec<&str> = files.as_deref().unwrap().split(", ").collect();
            let mut listed: Vec<&str> = listing
                .lines()
                .filter_map(|line| line.split(&format!("{top}/")).nth(1))
                .filter(|file| !file.is_empty() && !file.ends_with('/'))
                .collect();
            planned.sort_unstable();
            listed.sort_unstable();
            assert_eq!(planned, listed, "the archive holds what the plan said");
        }
    }
    for file in [
        "app",
        "app.cdx.json",
        "OPERATING.md",
        "LICENSE",
        "config/base.toml",
        "config/dev.toml",
        "config/staging.toml",
        "config/prod.toml",
        "units/app.service",
        "units/app.socket",
        "units/app-recover.service",
        "units/app.supervisor.conf",
    ] {
        let line = listing
            .lines()
            .find(|line| line.ends_with(&format!("{top}/{file}")))
            .unwrap_or_else(|| panic!("{file} missing from the archive:\n{listing}"));
        assert!(line.contains(" 0/0 "), "{line}");
        let mode = if file == "app" {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert!(line.starts_with(mode), "{line}");
    }
    let date = String::from_utf8(
        output(Command::new("date").args(["-u", "-d", &format!("@{epoch}"), "+%Y-%m-%d %H:%M"]))
            .stdout,
    )
    .unwrap();
    assert!(
        listing.lines().all(|line| line.contains(date.trim())),
        "every entry dates from the commit ({}):\n{listing}",
        date.trim()
    );
}

#[test]
fn slow_dist_aarch64_binary_is_static_and_reports_its_commit_under_qemu() {
    let release = Release::get();
    let manifest = manifest(&release.target_dir);
    // The aarch64 binary is static (it runs under qemu-user without a
    // loader) and reports the commit.
    let aarch64 = release.dist().join(
        artifact(&manifest, "binary", "aarch64-unknown-linux-musl")["path"]
            .as_str()
            .unwrap(),
    );
    let header = fs::read(&aarch64).unwrap();
    assert_eq!(&header[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([header[0x12], header[0x13]]),
        0xb7,
        "not an aarch64 ELF"
    );
    if let Some(qemu) = tool_or_skip("qemu-aarch64", "apt-get install -y qemu-user") {
        let version = stdout_of(Command::new(qemu).arg(&aarch64).arg("--version"));
        let short = git(&release.first, &["rev-parse", "--short", "HEAD"]);
        assert!(
            version.starts_with(&format!("app 0.1.0 ({short} "))
                && version.contains("aarch64-unknown-linux-musl"),
            "{version}"
        );
    }
}

#[test]
fn slow_dist_again_compiles_nothing_and_keeps_the_archive() {
    let release = Release::get();
    let _restore = release.restore_after(None);
    let dist_again = || {
        let run = output(signing::without_secrets(
            xtask(&release.first)
                .args(["dist", "--target", "x86_64", "--target", "aarch64"])
                .env("CARGO_TARGET_DIR", &release.target_dir),
        ));
        assert!(run.status.success(), "{}", stderr_text(&run));
        run
    };
    // Another test may have left a build of another stamp behind (release
    // builds from a tag): one dist brings the builds back to this commit.
    dist_again();
    let manifest = manifest(&release.target_dir);
    let archive = artifact(&manifest, "archive", "x86_64-unknown-linux-musl")["path"]
        .as_str()
        .unwrap()
        .to_owned();
    let inode = |path: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap());
    let archive_inode = inode(&release.dist().join(&archive));
    let again = dist_again();
    assert!(
        !stderr_text(&again).contains("Compiling"),
        "a no-op dist compiled:\n{}",
        stderr_text(&again)
    );
    assert!(stderr_text(&again).contains(&format!("unchanged {archive}")));
    // The workspace's own check (`check_dist` in xtask/src/main.rs) ran on
    // the folder.
    assert!(
        stderr_text(&again).contains("checked x86_64-unknown-linux-musl/app: ")
            && stderr_text(&again).contains("within its 2100000-byte budget"),
        "{}",
        stderr_text(&again)
    );
    assert_eq!(
        inode(&release.dist().join(&archive)),
        archive_inode,
        "the unchanged archive was rewritten"
    );
}

#[test]
fn slow_dist_image_is_reproducible_from_the_binaries_and_runs_in_podman() {
    let release = Release::get();
    let _restore = release.restore_after(None);
    check_image(&release.first, &release.target_dir);
}

/// The prod objects `k8s` renders, run by `podman kube play` with the
/// image `image` built (see `kube` for what podman lacks and how the
/// played copy makes up for it): the pod serves as the non-root user on a
/// read-only root, the rendered probe paths answer 200, the service reports
/// the settings of config/prod.toml and the env, with the admin token from
/// the Secret, and `kube down` drains it to exit 0. The same check fails
/// on a pod run as root and on a wrong readiness path.
#[test]
fn slow_dist_kube_play_runs_the_rendered_pod_non_root_read_only_ready_and_drains_it() {
    let Some(podman) = tool_or_skip("podman", "apt-get install -y podman runc catatonit") else {
        return;
    };
    if tool_or_skip("catatonit", "apt-get install -y catatonit").is_none() {
        return;
    }
    let release = Release::get();
    let _restore = release.restore_after(None);
    let (manifest, _) = image_run(&release.first, &release.target_dir);
    let rendered = output(
        xtask(&release.first)
            .args(["k8s", "--env", "prod"])
            .env("CARGO_TARGET_DIR", &release.target_dir),
    );
    assert!(rendered.status.success(), "{}", stderr_text(&rendered));
    let dist = dist_folder(&release.target_dir);
    let rendered = fs::read_to_string(dist.join("k8s/prod.yaml")).unwrap();
    let scratch = TempDir::new().unwrap();
    let podman = Podman::new(podman);
    kube::prepare(
        &podman,
        scratch.path(),
        &dist.join(manifest["image"]["archive"].as_str().unwrap()),
        "app",
    );

    let port = kube::free_port();
    let observed = kube::play(
        &podman,
        scratch.path(),
        &kube::adapt_for_podman(&rendered, port),
        port,
    )
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(observed.uid, "65532");
    assert!(
        observed.root_mount.contains(" ro,"),
        "{}",
        observed.root_mount
    );
    for line in [
        "listen = \"0.0.0.0:8080\"\n",
        "format = \"json\"\n",
        "token = \"[redacted]\"\n",
        "service_name = \"app\"\n",
    ] {
        assert!(
            observed.config.contains(line),
            "{line} not in\n{}",
            observed.config
        );
    }
    // The downward API's pod name; the namespace is podman's stand-in.
    for variable in [
        "APP_ENV=prod",
        "POD_NAME=app-pod-0",
        "POD_NAMESPACE=default",
    ] {
        assert!(
            observed.environment.iter().any(|entry| entry == variable),
            "{variable} not in {:?}",
            observed.environment
        );
    }
    assert_eq!(observed.exit_code, "0", "{}", observed.drain_log);
    for line in ["\"stop requested: draining\"", "\"stopped\""] {
        assert!(
            observed.drain_log.contains(line),
            "{line} not in\n{}",
            observed.drain_log
        );
    }

    // The same check refuses a pod run as root, and a readiness path the
    // service does not serve.
    let as_root = rendered
        .replace("runAsUser: 65532", "runAsUser: 0")
        .replace("runAsNonRoot: true", "runAsNonRoot: false");
    let wrong_path = rendered.replace("path: /readyz", "path: /ready");
    for (mutant, expected) in [
        (as_root, "the service runs as uid 0, not 65532"),
        (wrong_path, "the readiness path /ready answered Some(404)"),
    ] {
        let port = kube::free_port();
        let failure = kube::play(
            &podman,
            scratch.path(),
            &kube::adapt_for_podman(&mutant, port),
            port,
        )
        .expect_err(expected);
        assert!(failure.starts_with(expected), "{failure}");
    }
}

#[test]
fn slow_dist_image_push_to_local_registries_is_signed_and_keeps_the_password_hidden() {
    let release = Release::get();
    let _restore = release.restore_after(None);
    image_run(&release.first, &release.target_dir);
    push_to_local_registries(
        &release.first,
        &release.target_dir,
        &release.keys,
        &release.other_keys,
    );
}

#[test]
fn slow_release_adds_notes_and_parts_merge_into_the_same_release() {
    let release = Release::get();
    let _restore = release.restore_after(Some("v0.1.0"));
    // release: same build, plus release notes, from a tagged clean tree.
    git(&release.first, &["tag", "v0.1.0"]);
    let run = output(signing::without_secrets(
        xtask(&release.first)
            .args(["release", "--target", "aarch64"])
            .env("CARGO_TARGET_DIR", &release.target_dir),
    ));
    assert!(run.status.success(), "{}", stderr_text(&run));
    let notes = fs::read_to_string(release.dist().join("RELEASE_NOTES.md")).unwrap();
    let subject = git(&release.first, &["log", "-1", "--format=%s"]);
    assert!(
        notes.starts_with("# app 0.1.0\n") && notes.contains(&subject),
        "{notes}"
    );
    let released = manifest_after_release(&release.target_dir);
    assert_eq!(released["stamp"]["describe"], "v0.1.0");

    // The same release from two runners' parts, merged.
    parts::split_and_merge_equal_one_release(&release.first, &release.target_dir);
}

/// docs/releasing.md's "Cutting a release", line by line, in the fixture's
/// clone: the version bumped and committed, tagged, released for every
/// target, signed, verified, published (dry run: GitHub is not here),
/// pushed to a scratch repository standing in for `origin`, and a deploy
/// dry-run into a scratch root. The substitutions are the test's: the
/// scratch paths, the public key (the clone names none), and `--activate`
/// (no systemd here).
#[test]
fn slow_release_the_walkthrough_of_docs_releasing_md_runs_as_written() {
    let release = Release::get();
    // The second checkout: no other test builds there, so none has to
    // build its way back from 0.2.0.
    let clone = release.second.clone();
    let target_dir = release.second_target_dir.clone();
    let _restore = Restore::keep(&clone, &target_dir, Some("v0.2.0"));
    let head = git(&clone, &["rev-parse", "HEAD"]);
    let origin = git(&clone, &["remote", "get-url", "origin"]);
    struct Back {
        clone: PathBuf,
        head: String,
        origin: String,
    }
    impl Drop for Back {
        fn drop(&mut self) {
            for args in [
                vec!["reset", "--quiet", "--hard", self.head.as_str()],
                vec!["remote", "set-url", "origin", self.origin.as_str()],
            ] {
                let _ = Command::new("git")
                    .current_dir(&self.clone)
                    .args(args)
                    .output();
            }
        }
    }
    let _back = Back {
        clone: clone.clone(),
        head: head.clone(),
        origin,
    };
    let scratch = TempDir::new().unwrap();
    let remote = scratch.path().join("origin.git");
    git(scratch.path(), &["init", "--quiet", "--bare", "origin.git"]);
    git(
        &clone,
        &["remote", "set-url", "origin", remote.to_str().unwrap()],
    );
    let root = scratch.path().join("root");

    let page = fs::read_to_string(workspace_root().join("docs/releasing.md")).unwrap();
    let section = &page[page.find("## Cutting a release").unwrap()..];
    let block = &section[section.find("```sh\n").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    let mut ran = Vec::new();
    for line in block.lines() {
        let line = line.split(" # ").next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        let line = line.replace("/opt/app", root.to_str().unwrap());
        let words: Vec<&str> = line.split_whitespace().collect();
        let run = if words[..2] == ["cargo", "xtask"] {
            let mut command = xtask(&clone);
            command
                .args(&words[2..])
                .env("CARGO_TARGET_DIR", &target_dir);
            match words[2] {
                "sign" => {}
                "verify" | "deploy" => {
                    signing::without_secrets(&mut command)
                        .arg("--public-key")
                        .arg(&release.keys.public);
                    if words[2] == "deploy" {
                        command.args(["--activate", "true"]);
                    }
                }
                _ => {
                    signing::without_secrets(&mut command);
                }
            }
            output(&mut command)
        } else {
            let mut command = Command::new("sh");
            command
                .args(["-c", &line])
                .current_dir(&clone)
                .env("CARGO_NET_OFFLINE", "true")
                .env("GIT_AUTHOR_NAME", "Test")
                .env("GIT_AUTHOR_EMAIL", "test@example.com")
                .env("GIT_COMMITTER_NAME", "Test")
                .env("GIT_COMMITTER_EMAIL", "test@example.com");
            isolate_git(&mut command);
            output(&mut command)
        };
        assert!(
            run.status.success(),
            "docs/releasing.md: `{line}` failed:\n{}{}",
            String::from_utf8_lossy(&run.stdout),
            stderr_text(&run)
        );
        ran.push((
            line,
            format!(
                "{}{}",
                String::from_utf8_lossy(&run.stdout),
                stderr_text(&run)
            ),
        ));
    }
    let said = |start: &str| {
        ran.iter()
            .find(|(line, _)| line.starts_with(start))
            .map(|(_, printed)| printed.clone())
            .unwrap_or_else(|| panic!("the walkthrough has no `{start}` step"))
    };
    let manifest = manifest_after_release(&target_dir);
    assert_eq!(manifest["version"], "0.2.0");
    assert_eq!(manifest["stamp"]["describe"], "v0.2.0");
    assert!(
        said("cargo xtask verify").contains("verified"),
        "{}",
        said("cargo xtask verify")
    );
    assert!(
        said("cargo xtask publish").contains("$ gh release create v0.2.0 --draft"),
        "{}",
        said("cargo xtask publish")
    );
    assert!(
        git(&remote, &["tag", "--list"])
            .lines()
            .any(|tag| tag == "v0.2.0"),
        "the tag did not reach origin"
    );
    assert!(
        said("cargo xtask deploy").contains("(dry run: would wait for"),
        "{}",
        said("cargo xtask deploy")
    );
    assert!(!root.join("current").exists(), "the dry run deployed");
}

/// `sha256sum -c SHA256SUMS` in the dist folder, as a user checks a download.
/// `deploy --target x86_64` takes the shipped archive from the manifest
/// without building again, and the shipped binary, started from `current`
/// by the activation command, proves the commit.
fn deploy_by_target(
    clone: &Path,
    target_dir: &Path,
    commit: &str,
    keys: &signing::Keys,
    other_keys: &signing::Keys,
) {
    let scratch = TempDir::new().unwrap();
    let root = scratch.path().join("root");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pid_file = scratch.path().join("app.pid");
    let activate = format!(
        "APP__SERVER__LISTEN=127.0.0.1:{port} '{root}/current/app' --config-dir '{root}/current/config' \
         </dev/null >/dev/null 2>&1 & echo $! > '{pid}'",
        root = root.display(),
        pid = pid_file.display()
    );
    let run = output(
        xtask(clone)
            .args(["deploy", "--target", "x86_64", "--root"])
            .arg(&root)
            .args(["--activate", &activate, "--timeout", "20s"])
            .arg("--service")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--public-key")
            .arg(&keys.public)
            .env("CARGO_TARGET_DIR", target_dir),
    );
    if let Ok(pid) = fs::read_to_string(&pid_file) {
        let _ = Command::new("kill").arg(pid.trim()).status();
    }
    let stderr = stderr_text(&run);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("verified ") && stderr.contains("a subject of the provenance"),
        "deploy did not verify the release:\n{stderr}"
    );
    signing::check_deploy_refusals(clone, &dist_folder(target_dir), keys, other_keys, &root);
    assert!(
        stderr.contains("using the binaries in"),
        "deploy built again although dist was current:\n{stderr}"
    );
    let release = format!("0.1.0-{}", &commit[..7]);
    assert_eq!(
        fs::read_link(root.join("current")).unwrap(),
        Path::new("releases").join(&release)
    );
    assert!(
        stderr.contains(&format!("local: {release} serves (commit {commit})")),
        "{stderr}"
    );
}

fn assert_checksums_verify(dist: &Path) {
    let check = output(
        Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(dist),
    );
    assert!(
        check.status.success(),
        "sha256sum -c: {}{}",
        String::from_utf8_lossy(&check.stdout),
        stderr_text(&check)
    );
}

fn image_run(clone: &Path, target_dir: &Path) -> (Value, Vec<u8>) {
    let run = output(
        xtask(clone)
            .arg("image")
            .env("CARGO_TARGET_DIR", target_dir),
    );
    assert!(run.status.success(), "{}", stderr_text(&run));
    assert!(
        stderr_text(&run).contains("using the binaries in"),
        "image rebuilt the binaries: {}",
        stderr_text(&run)
    );
    let manifest = manifest(target_dir);
    let archive = dist_folder(target_dir).join(manifest["image"]["archive"].as_str().unwrap());
    (manifest, fs::read(archive).unwrap())
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap()
}

fn json_blob(layout: &Path, digest: &str) -> Value {
    serde_json::from_slice(&blob(layout, digest)).unwrap()
}

/// The files of a gzipped layer: path → contents.
fn layer_files(layer: &[u8]) -> std::collections::BTreeMap<String, (u32, Vec<u8>)> {
    let mut files = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mode = entry.header().mode().unwrap();
        let mut contents = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut contents).unwrap();
        files.insert(path, (mode, contents));
    }
    files
}

fn check_image(clone: &Path, target_dir: &Path) {
    let (first, first_archive) = image_run(clone, target_dir);
    let (second, second_archive) = image_run(clone, target_dir);
    let image = &first["image"];
    assert_eq!(
        image["index_digest"], second["image"]["index_digest"],
        "two image builds differ"
    );
    assert_eq!(first_archive, second_archive, "two OCI archives differ");
    assert_eq!(image["reference"], "ghcr.io/example/app:0.1.0");

    let dist = dist_folder(target_dir);
    let sums = fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    assert!(
        sums.contains(image["archive"].as_str().unwrap()),
        "SHA256SUMS lacks the OCI archive:\n{sums}"
    );
    assert_checksums_verify(&dist);

    // The layout: index.json names the image index, which lists one
    // manifest per platform.
    let layout = dist.join(image["layout"].as_str().unwrap());
    let top: Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        top["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        image["reference"]
    );
    assert_eq!(top["manifests"][0]["digest"], image["index_digest"]);
    let index = json_blob(&layout, image["index_digest"].as_str().unwrap());
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            format!(
                "{}/{}",
                entry["platform"]["os"].as_str().unwrap(),
                entry["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    sbom::check_sbom_referrers(&layout, image, &dist, &first);

    let commit = git(clone, &["rev-parse", "HEAD"]);
    let commit_time = git(clone, &["log", "-1", "--format=%cI"]);
    for (entry, triple) in index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"])
    {
        let image_manifest = json_blob(&layout, entry["digest"].as_str().unwrap());
        let config = json_blob(
            &layout,
            image_manifest["config"]["digest"].as_str().unwrap(),
        );
        let settings = &config["config"];
        assert_eq!(settings["User"], "65532:65532");
        assert_eq!(
            settings["Entrypoint"],
            serde_json::json!(["/usr/local/bin/app"])
        );
        assert_eq!(
            settings["ExposedPorts"],
            serde_json::json!({"8080/tcp": {}})
        );
        assert_eq!(settings["WorkingDir"], "/app");
        assert!(
            settings["Env"]
                .as_array()
                .unwrap()
                .contains(&Value::from("APP_ENV=prod")),
            "{settings:#}"
        );
        assert_eq!(config["created"], commit_time.as_str());
        for labels in [&settings["Labels"], &image_manifest["annotations"]] {
            assert_eq!(labels["org.opencontainers.image.revision"], commit.as_str());
            assert_eq!(labels["org.opencontainers.image.version"], "0.1.0");
            assert_eq!(
                labels["org.opencontainers.image.created"],
                commit_time.as_str()
            );
            assert_eq!(labels["org.opencontainers.image.title"], "app");
            assert_eq!(
                labels["org.opencontainers.image.source"],
                "https://github.com/example/app"
            );
        }

        // One layer: the binary of this platform's build, passwd and group
        // with the non-root user, the config; no shell.
        let layer = blob(
            &layout,
            image_manifest["layers"][0]["digest"].as_str().unwrap(),
        );
        let files = layer_files(&layer);
        let binary = artifact(&first, "binary", triple);
        let (mode, contents) = &files["usr/local/bin/app"];
        assert_eq!(
            (*mode, contents.len() as u64),
            (0o755, binary["size"].as_u64().unwrap())
        );
        let binary_bytes = fs::read(dist.join(binary["path"].as_str().unwrap())).unwrap();
        assert!(
            contents == &binary_bytes,
            "the {triple} image holds another binary"
        );
        // The size budget of the shipped binary (docs/releasing.md, "The binary's size").
        if triple == "x86_64-unknown-linux-musl" {
            assert!(
                binary_bytes.len() <= 2_100_000,
                "the stripped x86_64 binary is {} bytes, over its 2,100,000-byte budget",
                binary_bytes.len()
            );
        }
        assert!(String::from_utf8_lossy(&files["etc/passwd"].1).contains(":65532:65532:"));
        assert!(
            files.contains_key("app/config/prod.toml") && !files.contains_key("bin/sh"),
            "{:?}",
            files.keys()
        );
        let regular: Vec<&String> = files.keys().filter(|path| !path.ends_with('/')).collect();
        assert_eq!(
            regular.len(),
            7,
            "binary, passwd, group and four config files: {regular:?}"
        );
        let platform = &image["platforms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["target"] == triple)
            .unwrap();
        let overhead =
            platform["uncompressed_size"].as_u64().unwrap() - binary["size"].as_u64().unwrap();
        assert!(
            overhead < 100_000,
            "the image adds {overhead} bytes to the {triple} binary"
        );
    }

    if let Some(skopeo) = tool_or_skip("skopeo", "apt-get install -y skopeo") {
        let reference = format!(
            "oci:{}:{}",
            layout.display(),
            image["reference"].as_str().unwrap()
        );
        let inspected: Value = serde_json::from_str(&stdout_of(
            Command::new(skopeo).args(["inspect", &reference]),
        ))
        .unwrap();
        assert_eq!(inspected["Digest"], image["index_digest"]);
        assert_eq!(
            inspected["Labels"]["org.opencontainers.image.revision"],
            commit.as_str()
        );
    }
    if let Some(podman) = tool_or_skip("podman", "apt-get install -y podman runc") {
        let archive = dist.join(image["archive"].as_str().unwrap());
        let podman = Podman::new(podman);
        run_in_podman(
            &podman,
            &archive,
            image["reference"].as_str().unwrap(),
            &commit,
        );
    }
}

/// `image --push` as a user runs it, with credentials and auth files taken
/// only from what each call sets: HOME-independent auth lookups point into
/// `auth_home`, and no `REGISTRY_*` variable is inherited.
fn push_command(clone: &Path, target_dir: &Path, auth_home: &Path) -> Command {
    let mut command = xtask(clone);
    command
        .arg("image")
        .env("CARGO_TARGET_DIR", target_dir)
        .env("XDG_RUNTIME_DIR", auth_home)
        .env("XDG_CONFIG_HOME", auth_home)
        .env("DOCKER_CONFIG", auth_home)
        .env("REGISTRY_AUTH_FILE", auth_home.join("auth.json"))
        .env_remove("REGISTRY_USERNAME")
        .env_remove("REGISTRY_PASSWORD");
    command
}

/// Pushes the image `check_image` built to a plain-HTTP registry on
/// loopback and to one that requires a password, reads everything back, and
/// watches `/proc` for the password while the authenticated push runs.
fn push_to_local_registries(
    clone: &Path,
    target_dir: &Path,
    keys: &signing::Keys,
    other_keys: &signing::Keys,
) {
    let registry_tool = tool_or_skip("docker-registry", "apt-get install -y docker-registry");
    let htpasswd = tool_or_skip("htpasswd", "apt-get install -y apache2-utils");
    let skopeo = tool_or_skip("skopeo", "apt-get install -y skopeo");
    let (Some(registry_tool), Some(htpasswd), Some(skopeo)) = (registry_tool, htpasswd, skopeo)
    else {
        return;
    };
    let built = manifest(target_dir);
    let index_digest = built["image"]["index_digest"].as_str().unwrap().to_owned();
    let layout = dist_folder(target_dir).join(built["image"]["layout"].as_str().unwrap());
    let platforms: Vec<String> = built["image"]["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|platform| platform["manifest_digest"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(platforms.len(), 2, "amd64 and arm64: {built:#}");
    let auth_home = TempDir::new().unwrap();

    // A registry without authentication, over plain HTTP on loopback.
    let open = registry::Registry::start(&registry_tool, None);
    let name = format!("{}/acme/app", open.address);
    let refused = output(
        push_command(clone, target_dir, auth_home.path()).args(["--push", &name, "--latest"]),
    );
    assert_eq!(refused.status.code(), Some(1), "{}", stderr_text(&refused));
    assert!(
        stderr_text(&refused).trim().ends_with(
            "--latest moves `latest` only from the release commit, and HEAD is not tagged v0.1.0: tag it, or push without --latest"
        ),
        "{}",
        stderr_text(&refused)
    );
    let pushed = output(push_command(clone, target_dir, auth_home.path()).args(["--push", &name]));
    let stderr = stderr_text(&pushed);
    assert!(pushed.status.success(), "{stderr}\n{}", open.log());
    assert!(stderr.contains("--dest-tls-verify=false"), "{stderr}");
    let stdout = String::from_utf8_lossy(&pushed.stdout);
    let pinned = format!("{name}@{index_digest}");
    assert!(
        stdout.ends_with(&format!("pushed {name}:0.1.0\n{pinned}\n")),
        "{stdout}"
    );
    assert_eq!(
        manifest(target_dir)["image"]["pushed"],
        serde_json::json!([{"tag": format!("{name}:0.1.0"), "pinned": pinned}])
    );
    // Signed as cosign signs: read back through the registry API and
    // checked with openssl; then `verify` refuses each way to break it.
    assert!(stderr.contains("signed 3 manifests of"), "{stderr}");
    let curl = tool_or_skip("curl", "apt-get install -y curl");
    let openssl = tool_or_skip("openssl", "apt-get install -y openssl");
    if curl.is_some() && openssl.is_some() {
        signing::check_image_signature(&open.address, "acme/app", "0.1.0", keys);
        signing::check_image_refusals(clone, &open.address, "acme/app", "0.1.0", keys, other_keys);
    }
    // Read back by skopeo alone: the index by tag, each platform by digest,
    // byte for byte what the layout holds, then every blob pulled back.
    let raw = |reference: &str, extra: &[&str]| {
        let run = output(
            Command::new(&skopeo)
                .args(["inspect", "--raw", "--tls-verify=false"])
                .args(extra)
                .arg(format!("docker://{reference}")),
        );
        assert!(run.status.success(), "{reference}: {}", stderr_text(&run));
        run.stdout
    };
    assert_eq!(
        raw(&format!("{name}:0.1.0"), &[]),
        blob(&layout, &index_digest)
    );
    for digest in &platforms {
        assert_eq!(raw(&format!("{name}@{digest}"), &[]), blob(&layout, digest));
    }
    let pulled = TempDir::new().unwrap();
    let pull = output(Command::new(&skopeo).args([
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{name}:0.1.0"),
        &format!("oci:{}:pulled", pulled.path().display()),
    ]));
    assert!(pull.status.success(), "{}", stderr_text(&pull));
    let blobs = |folder: &Path| {
        let mut names: Vec<String> = fs::read_dir(folder.join("blobs/sha256"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    // Everything the image index reaches (the SBOM referrers are not pushed).
    let mut reachable = vec![index_digest.clone()];
    for digest in &platforms {
        let image_manifest = json_blob(&layout, digest);
        reachable.push(digest.clone());
        reachable.push(
            image_manifest["config"]["digest"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        for layer in image_manifest["layers"].as_array().unwrap() {
            reachable.push(layer["digest"].as_str().unwrap().to_owned());
        }
    }
    let mut reachable: Vec<String> = reachable
        .iter()
        .map(|digest| digest.trim_start_matches("sha256:").to_owned())
        .collect();
    reachable.sort();
    assert_eq!(blobs(pulled.path()), reachable, "the pulled image differs");
    for name in blobs(pulled.path()) {
        let digest = format!("sha256:{name}");
        assert_eq!(
            blob(pulled.path(), &digest),
            blob(&layout, &digest),
            "{digest}"
        );
    }

    // `latest` moves only from the release commit, tagged and clean.
    git(clone, &["tag", "v0.1.0"]);
    let latest = output(
        push_command(clone, target_dir, auth_home.path()).args(["--push", &name, "--latest"]),
    );
    git(clone, &["tag", "-d", "v0.1.0"]);
    assert!(latest.status.success(), "{}", stderr_text(&latest));
    assert_eq!(
        raw(&format!("{name}:latest"), &[]),
        blob(&layout, &index_digest)
    );
    drop(open);

    // A registry that requires a password (bcrypt, read from stdin so that
    // not even htpasswd's command line holds it).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let canary = format!("canary-{}-{nanos}", std::process::id());
    let mut hashing = Command::new(&htpasswd)
        .args(["-iBn", "ci"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut hashing.stdin.take().unwrap(), canary.as_bytes()).unwrap();
    let hashed = hashing.wait_with_output().unwrap();
    assert!(hashed.status.success());
    let htpasswd_file = auth_home.path().join("htpasswd");
    fs::write(&htpasswd_file, &hashed.stdout).unwrap();
    let secured = registry::Registry::start(&registry_tool, Some(&htpasswd_file));
    let name = format!("{}/acme/app", secured.address);

    let anonymous =
        output(push_command(clone, target_dir, auth_home.path()).args(["--push", &name]));
    let stderr = stderr_text(&anonymous);
    assert_eq!(anonymous.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(
        errors,
        [format!(
            "error: push to {0}: the registry requires credentials: set REGISTRY_USERNAME and REGISTRY_PASSWORD, or log in once with `skopeo login {0}` (podman login and docker login write the same auth file)",
            secured.address
        )],
        "{stderr}"
    );
    assert_eq!(stderr.lines().last(), Some(errors[0]), "{stderr}");

    // The push with the password, with /proc sampled until it ends.
    let logs = TempDir::new().unwrap();
    let (stdout_path, stderr_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = push_command(clone, target_dir, auth_home.path())
        .args(["--push", &name])
        .env("REGISTRY_USERNAME", "ci")
        .env("REGISTRY_PASSWORD", &canary)
        .stdout(fs::File::create(&stdout_path).unwrap())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let (mut samples, mut saw_skopeo, mut leaked) = (0, false, Vec::new());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the authenticated push took over 300 s");
        }
        samples += 1;
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            saw_skopeo |= cmdline.contains("skopeo copy");
            if cmdline.contains(&canary) {
                leaked.push(cmdline);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let (stdout, stderr) = (
        fs::read_to_string(&stdout_path).unwrap(),
        fs::read_to_string(&stderr_path).unwrap(),
    );
    assert!(status.success(), "{stderr}\n{}", secured.log());
    assert!(
        leaked.is_empty(),
        "the password was on a command line: {leaked:?}"
    );
    assert!(
        saw_skopeo,
        "{samples} samples of /proc never saw the push running"
    );
    assert!(
        !stdout.contains(&canary) && !stderr.contains(&canary),
        "{stderr}"
    );
    assert!(
        stderr.contains("REGISTRY_USERNAME=ci and REGISTRY_PASSWORD=*** in a 0600 auth file"),
        "{stderr}"
    );
    assert!(
        stdout.ends_with(&format!("{name}@{index_digest}\n")),
        "{stdout}"
    );
    let leftovers: Vec<_> = fs::read_dir(auth_home.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|file| file.starts_with("cargo-xtask-auth"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "the auth file was left behind: {leftovers:?}"
    );
    let credentials = format!("ci:{canary}");
    assert_eq!(
        raw(&format!("{name}:0.1.0"), &["--creds", &credentials]),
        blob(&layout, &index_digest)
    );
}

/// Podman with settings of the test's own: runc and cgroupfs (crun and the
/// systemd cgroup manager fail on some kernels and in containers), explicit
/// ulimits, the vfs driver (no fuse-overlayfs needed without root), and a
/// store in a temporary folder. Written as `containers.conf` and
/// `storage.conf` rather than root-only flags, so the same test runs as
/// root and as an unprivileged user (rootless podman), and leaves the
/// user's own images alone.
struct Podman {
    binary: PathBuf,
    config: TempDir,
}

impl Podman {
    fn new(binary: PathBuf) -> Podman {
        let config = TempDir::new().unwrap();
        let dir = config.path();
        fs::write(
            dir.join("containers.conf"),
            "[containers]\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             pids_limit = 0\n\
             [engine]\n\
             runtime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n",
        )
        .unwrap();
        fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                dir.join("storage").display(),
                dir.join("run").display()
            ),
        )
        .unwrap();
        Podman { binary, config }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env(
                "CONTAINERS_CONF",
                self.config.path().join("containers.conf"),
            )
            .env(
                "CONTAINERS_STORAGE_CONF",
                self.config.path().join("storage.conf"),
            );
        command
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // vfs layers may hold files only podman's own user namespace can
        // remove.
        let _ = self.command().args(["system", "reset", "--force"]).output();
    }
}

/// Loads the OCI archive, runs the amd64 image on loopback, and asks it
/// for `/healthz` and `/version`.
fn run_in_podman(podman: &Podman, archive: &Path, reference: &str, commit: &str) {
    let engine = || podman.command();
    stdout_of(engine().arg("load").arg("-i").arg(archive));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let name = format!("xtask-test-{}", std::process::id());
    stdout_of(
        engine()
            .args(["run", "--detach", "--name", &name, "--network", "host"])
            .args([
                "--env",
                &format!("APP__SERVER__LISTEN=127.0.0.1:{port}"),
                reference,
            ]),
    );
    let get = |path: &str| -> Option<String> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        std::io::Write::write_all(
            &mut stream,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).ok()?;
        Some(response)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let health = loop {
        if let Some(response) = get("/healthz") {
            break response;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the container never answered on port {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let version = get("/version").unwrap_or_default();
    let _ = engine().args(["rm", "--force", &name]).output();
    let _ = engine().args(["rmi", "--force", reference]).output();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        version.contains(&format!("\"commit\":\"{commit}\"")),
        "{version}"
    );
}

/// An ad-hoc code signature matches the bytes it signs: the CodeDirectory
/// in the signature's SuperBlob holds the SHA-256 of every page up to its
/// code limit (the format is big-endian; no certificate is involved).
fn check_ad_hoc_signature(macho: &[u8], command: &[u8]) {
    use sha2::Digest;
    let le = |bytes: &[u8], at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let be = |at: usize| u32::from_be_bytes(macho[at..at + 4].try_into().unwrap()) as usize;
    let (offset, size) = (le(command, 8) as usize, le(command, 12) as usize);
    assert!(
        offset + size <= macho.len(),
        "the signature lies outside the file"
    );
    assert_eq!(
        be(offset),
        0xfade_0cc0,
        "not an embedded-signature SuperBlob"
    );
    let blobs = be(offset + 8);
    let directory = (0..blobs)
        .map(|slot| {
            (
                be(offset + 12 + slot * 8),
                offset + be(offset + 16 + slot * 8),
            )
        })
        .find(|(kind, _)| *kind == 0)
        .map(|(_, at)| at)
        .expect("a CodeDirectory");
    assert_eq!(be(directory), 0xfade_0c02, "not a CodeDirectory");
    let hash_offset = directory + be(directory + 16);
    let code_slots = be(directory + 28);
    let code_limit = be(directory + 32);
    let (hash_size, hash_type, page_shift) = (
        macho[directory + 36] as usize,
        macho[directory + 37],
        macho[directory + 39],
    );
    assert_eq!((hash_size, hash_type), (32, 2), "SHA-256 page hashes");
    assert_eq!(
        code_limit, offset,
        "the signature covers everything before it"
    );
    let page = 1usize << page_shift;
    assert_eq!(code_slots, code_limit.div_ceil(page));
    for slot in 0..code_slots {
        let bytes = &macho[slot * page..((slot + 1) * page).min(code_limit)];
        let stored = &macho[hash_offset + slot * 32..hash_offset + (slot + 1) * 32];
        assert_eq!(
            sha2::Sha256::digest(bytes).as_slice(),
            stored,
            "page {slot} does not match its hash in the signature"
        );
    }
}

/// The load commands of a 64-bit little-endian Mach-O: (cmd, bytes).
fn mach_o_load_commands(macho: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let word = |at: usize| u32::from_le_bytes(macho[at..at + 4].try_into().unwrap());
    assert_eq!(word(0), 0xfeed_facf, "not a 64-bit Mach-O");
    let count = word(16) as usize;
    let mut at = 32;
    let mut commands = Vec::new();
    for _ in 0..count {
        let (command, size) = (word(at), word(at + 4) as usize);
        commands.push((command, macho[at..at + size].to_vec()));
        at += size;
    }
    commands
}

fn manifest_after_release(target_dir: &Path) -> Value {
    let value = manifest(target_dir);
    let kinds: Vec<&str> = value["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|kind| **kind == "release-notes")
            .count(),
        1,
        "{value:#}"
    );
    value
}

#[test]
fn slow_zig_targets_are_reproducible_and_give_a_pe_zip_and_mach_o_tarballs() {
    if tool_or_skip("cargo-zigbuild", "cargo xtask setup --only python").is_none() {
        return;
    }
    // Windows and both Apple architectures must give the same bytes too,
    // built in the fixture's two clones and target directories (whose
    // build scripts and proc macros are built already); their dist
    // folders are put back after.
    let release = Release::get();
    let _first = Restore::keep(&release.first, &release.target_dir, None);
    let _second = Restore::keep(&release.second, &release.second_target_dir, None);
    dist_side_by_side(
        [&release.first, &release.second],
        [&release.target_dir, &release.second_target_dir],
        &[
            "x86_64-pc-windows-gnu",
            "aarch64-apple-darwin",
            "x86_64-apple-darwin",
        ],
    );
    let target_dir = release.target_dir.clone();
    let sums =
        |target_dir: &Path| fs::read_to_string(dist_folder(target_dir).join("SHA256SUMS")).unwrap();
    assert_eq!(
        sums(&target_dir),
        sums(&release.second_target_dir),
        "the two checkouts built different artifacts"
    );
    assert_eq!(
        sums(&target_dir).lines().count(),
        9,
        "a binary, an archive and an SBOM per target:\n{}",
        sums(&target_dir)
    );
    let manifest = manifest(&target_dir);
    let dist = dist_folder(&target_dir);
    // The dependency list is embedded in PE and Mach-O binaries too.
    if let Some(audit_info) =
        tool_or_skip("rust-audit-info", "cargo install --locked rust-audit-info")
    {
        for triple in [
            "x86_64-pc-windows-gnu",
            "aarch64-apple-darwin",
            "x86_64-apple-darwin",
        ] {
            let path = artifact(&manifest, "binary", triple)["path"]
                .as_str()
                .unwrap();
            let listed: Value =
                serde_json::from_str(&stdout_of(Command::new(&audit_info).arg(dist.join(path))))
                    .unwrap();
            let packages = listed["packages"].as_array().unwrap();
            assert!(
                packages
                    .iter()
                    .any(|p| p["name"] == "app" && p["root"] == true)
                    && packages.iter().any(|p| p["name"] == "tokio"),
                "{triple}: {listed}"
            );
        }
    }
    for triple in ["aarch64-apple-darwin", "x86_64-apple-darwin"] {
        let path = artifact(&manifest, "binary", triple)["path"]
            .as_str()
            .unwrap();
        let commands = mach_o_load_commands(&fs::read(dist.join(path)).unwrap());
        let uuid = commands
            .iter()
            .find(|(command, _)| *command == 0x1b)
            .unwrap_or_else(|| panic!("{triple}: no LC_UUID"));
        assert!(
            uuid.1[8..24].iter().any(|byte| *byte != 0),
            "{triple}: an all-zero UUID"
        );
        // arm64 macOS runs only signed code, so the linker signs ad hoc
        // there; x86_64 binaries are left unsigned, as Apple's linker does.
        let signature = commands.iter().find(|(command, _)| *command == 0x1d);
        assert_eq!(
            signature.is_some(),
            triple.starts_with("aarch64"),
            "{triple}: LC_CODE_SIGNATURE"
        );
        if let Some((_, command)) = signature {
            check_ad_hoc_signature(&fs::read(dist.join(path)).unwrap(), command);
        }
    }

    let windows = artifact(&manifest, "binary", "x86_64-pc-windows-gnu")["path"]
        .as_str()
        .unwrap();
    assert!(windows.ends_with("/app.exe"));
    let exe = fs::read(dist.join(windows)).unwrap();
    let pe_at = u32::from_le_bytes(exe[0x3c..0x40].try_into().unwrap()) as usize;
    assert_eq!(
        (&exe[..2], &exe[pe_at..pe_at + 4]),
        (&b"MZ"[..], &b"PE\0\0"[..])
    );
    assert_eq!(
        u16::from_le_bytes([exe[pe_at + 4], exe[pe_at + 5]]),
        0x8664,
        "not an x86-64 PE"
    );
    let link_time = u32::from_le_bytes(exe[pe_at + 8..pe_at + 12].try_into().unwrap());
    assert_eq!(
        u64::from(link_time),
        manifest["stamp"]["source_date_epoch"].as_u64().unwrap(),
        "wall-clock link time left in"
    );
    assert!(
        artifact(&manifest, "archive", "x86_64-pc-windows-gnu")["path"]
            .as_str()
            .unwrap()
            .ends_with(".zip")
    );

    let mac = artifact(&manifest, "binary", "aarch64-apple-darwin")["path"]
        .as_str()
        .unwrap();
    let macho = fs::read(dist.join(mac)).unwrap();
    assert_eq!(
        &macho[..4],
        &[0xcf, 0xfa, 0xed, 0xfe],
        "not a 64-bit Mach-O"
    );
    assert_eq!(
        u32::from_le_bytes(macho[4..8].try_into().unwrap()),
        0x0100_000c,
        "not arm64"
    );
    let mac_archive = artifact(&manifest, "archive", "aarch64-apple-darwin")["path"]
        .as_str()
        .unwrap();
    assert!(mac_archive.ends_with(".tar.gz"), "{mac_archive}");
    // systemd units are for Linux archives only.
    let listing = String::from_utf8(
        output(
            Command::new("tar")
                .args(["--list", "-zf", mac_archive])
                .current_dir(&dist),
        )
        .stdout,
    )
    .unwrap();
    assert!(
        listing.contains("/config/prod.toml") && !listing.contains("/units/"),
        "{listing}"
    );
}
