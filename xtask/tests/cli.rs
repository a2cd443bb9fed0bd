//! The task runner's command line, run as a user runs it: the task list,
//! `--dry-run`, errors, settings from `[workspace.metadata.xtask]`, and how
//! often `cargo metadata` runs.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::*;

const TASKS: [&str; 17] = [
    "build", "test", "lint", "ci", "bench", "dist", "release", "image", "package", "publish",
    "keygen", "verify", "units", "version", "doctor", "clean", "help",
];

#[test]
fn help_lists_every_task_with_a_description() {
    for args in [&[][..], &["help"], &["--help"]] {
        let help = stdout_of(xtask(&workspace_root()).args(args));
        for task in TASKS {
            let line = help
                .lines()
                .find(|line| line.trim_start().starts_with(&format!("{task} ")))
                .unwrap_or_else(|| panic!("`xtask {args:?}` does not list {task}:\n{help}"));
            assert!(
                line.split_whitespace().count() > 3,
                "{task} has no description: {line:?}"
            );
        }
    }
}

/// The template's own task (`xtask/src/main.rs`) sits beside the library's:
/// listed under "Project", with `--dry-run`, and run: the service's own
/// `config show` for the environment asked.
#[test]
fn the_workspaces_own_task_runs_beside_the_librarys() {
    let help = stdout_of(xtask(&workspace_root()).arg("help"));
    let project = help.split("Project:\n").nth(1).expect("a Project group");
    assert!(project.starts_with("  config "), "{help}");
    let dry = output(xtask(&workspace_root()).args(["--dry-run", "config", "--env", "prod"]));
    assert!(dry.status.success(), "{}", stderr_text(&dry));
    assert!(
        stderr_text(&dry).contains("$ APP_ENV=prod "),
        "{}",
        stderr_text(&dry)
    );
    let shown = output(xtask(&workspace_root()).args(["config", "--env", "prod"]));
    assert!(shown.status.success(), "{}", stderr_text(&shown));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.starts_with("# APP_ENV=prod\n"), "{text}");
    assert!(text.contains("config/prod.toml"), "{text}");
    let bad = output(xtask(&workspace_root()).args(["config", "--env"]));
    assert_eq!(bad.status.code(), Some(2), "{}", stderr_text(&bad));
}

/// A `cargo` that logs its first argument before running the real one.
fn logging_cargo(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let log = dir.join("cargo.log");
    let script = dir.join("cargo");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            env!("CARGO")
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (script, log)
}

fn cargo_calls(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn help_runs_no_cargo_and_tasks_run_cargo_metadata_once() {
    let scratch = TempDir::new().unwrap();
    let (cargo, log) = logging_cargo(scratch.path());
    for args in [
        &[][..],
        &["help"],
        &["--help"],
        &["help", "build"],
        &["build", "--help"],
    ] {
        stdout_of(xtask(&workspace_root()).args(args).env("CARGO", &cargo));
        assert_eq!(
            cargo_calls(&log),
            Vec::<String>::new(),
            "`xtask {args:?}` ran cargo"
        );
    }
    stdout_of(
        xtask(&workspace_root())
            .args(["--dry-run", "ci"])
            .env("CARGO", &cargo),
    );
    assert_eq!(
        cargo_calls(&log),
        ["metadata"],
        "a dry run of ci may read metadata once, and run nothing else"
    );
}

#[test]
fn dry_run_prints_commands_without_running_them() {
    let scratch = TempDir::new().unwrap();
    let target_dir = scratch.path().join("target");
    let marker = target_dir.join("marker");
    fs::create_dir_all(&target_dir).unwrap();
    fs::write(&marker, "").unwrap();

    let dry = output(
        xtask(&workspace_root())
            .args(["--dry-run", "clean"])
            .env("CARGO_TARGET_DIR", &target_dir),
    );
    assert!(dry.status.success());
    assert!(
        stderr_text(&dry).contains("$ cargo clean\n"),
        "{}",
        stderr_text(&dry)
    );
    assert!(
        marker.exists(),
        "--dry-run clean removed the target directory"
    );

    let dry_build = output(
        xtask(&workspace_root())
            .args(["build", "--release", "--dry-run"])
            .env("CARGO_TARGET_DIR", &target_dir),
    );
    let echoed = stderr_text(&dry_build);
    assert!(
        echoed.contains(" cargo build --workspace --exclude xtask --exclude xtask-lib --release\n"),
        "{echoed}"
    );
    assert!(
        echoed.contains("STAMP_COMMIT="),
        "the echo shows the stamp variables: {echoed}"
    );
    assert!(
        !target_dir.join("release").exists(),
        "--dry-run build compiled something"
    );

    let real = output(
        xtask(&workspace_root())
            .arg("clean")
            .env("CARGO_TARGET_DIR", &target_dir),
    );
    assert!(real.status.success(), "{}", stderr_text(&real));
    assert!(
        !marker.exists(),
        "clean without --dry-run left the target directory"
    );
}

/// Every task that needs nothing built or installed before it answers a
/// dry run, in a fresh checkout with an empty target directory: it exits 0,
/// says what it would run or write, and leaves the tree and the target directory empty.
#[test]
fn tasks_dry_run_in_a_fresh_checkout_and_change_nothing() {
    let repo = repository();
    let target_dir = repo.path().join("scratch-target");
    let dry_runs: &[&[&str]] = &[
        &["build"],
        &["dist"],
        &["dist", "--target", "aarch64"],
        &["docs"],
        &["units"],
        &["lint"],
        &["test", "--fast"],
        &["ci", "--fast"],
        &["clean"],
    ];
    for args in dry_runs {
        let run = output(
            xtask(repo.path())
                .arg("--dry-run")
                .args(*args)
                .env("CARGO_TARGET_DIR", &target_dir),
        );
        let printed = stderr_text(&run);
        assert!(
            run.status.success(),
            "--dry-run {args:?} failed:\n{printed}"
        );
        assert!(
            printed.contains("$ ") || printed.contains("(dry run: would"),
            "--dry-run {args:?} said nothing of what it would do:\n{printed}"
        );
        assert_eq!(
            git(repo.path(), &["status", "--porcelain", "--ignored"]),
            "",
            "--dry-run {args:?} changed the tree"
        );
    }
}

#[test]
fn ci_dry_run_lists_its_steps_in_order() {
    let run = output(xtask(&workspace_root()).args(["--dry-run", "ci"]));
    assert!(run.status.success(), "{}", stderr_text(&run));
    let echoed = stderr_text(&run);
    let expected_in_order = [
        "==> ci step 1/7: fmt",
        "cargo fmt --all --check",
        "==> ci step 2/7: layering",
        "layering: xtask and app import only in the allowed directions, with no circle",
        "==> ci step 3/7: clippy",
        "cargo clippy --workspace --all-targets -- -D warnings",
        "cargo clippy --package app --target x86_64-pc-windows-gnu --target aarch64-apple-darwin -- -D warnings",
        "==> ci step 4/7: dist",
        "cargo build --release --locked --package app --bin app --target x86_64-unknown-linux-musl",
        "==> ci step 5/7: test",
        "==> ci step 6/7: sanitize",
        "cargo +nightly-2026-05-20 miri test --package platform-unsafe --lib",
        "-Zsanitizer=address cargo +nightly-2026-05-20 test -Zbuild-std --target x86_64-unknown-linux-gnu",
        "-Zsanitizer=thread cargo +nightly-2026-05-20 test -Zbuild-std --target x86_64-unknown-linux-gnu",
        "==> ci step 7/7: bench",
        "==> ci summary",
    ];
    in_order(&echoed, &expected_in_order);

    // The fast tier: the same steps up to the tests, which leave out the
    // slow end-to-end ones; no sanitizer, no benchmark.
    let fast = output(xtask(&workspace_root()).args(["--dry-run", "ci", "--fast"]));
    assert!(fast.status.success(), "{}", stderr_text(&fast));
    let echoed = stderr_text(&fast);
    in_order(
        &echoed,
        &[
            "==> ci step 1/5: fmt",
            "==> ci step 3/5: clippy",
            "==> ci step 4/5: dist",
            "==> ci step 5/5: test",
            // In the syntax of the runner `test` finds.
            if which("cargo-nextest").is_some() {
                "not test(/^slow_/)"
            } else {
                "--skip slow_"
            },
            "==> ci summary",
        ],
    );
    assert!(
        !echoed.contains("sanitize") && !echoed.contains("bench"),
        "{echoed}"
    );

    // The three parts, which CI's full run spreads over three machines:
    // together every step and every test of `ci`, each test once.
    let nextest = which("cargo-nextest").is_some();
    for (part, steps, filter) in [
        (
            "checks",
            &[
                "fmt", "layering", "clippy", "dist", "test", "sanitize", "bench",
            ][..],
            if nextest {
                "not test(/^slow_/)"
            } else {
                "--skip slow_"
            },
        ),
        (
            "slow",
            &["dist", "test"][..],
            if nextest {
                "test(/^slow_/) & not test(/^slow_on_hosts_/)"
            } else {
                "slow_ --skip slow_on_hosts_"
            },
        ),
        (
            "hosts",
            &["dist", "test"][..],
            if nextest {
                "test(/^slow_on_hosts_/)"
            } else {
                "-- slow_on_hosts_"
            },
        ),
    ] {
        let run = output(xtask(&workspace_root()).args(["--dry-run", "ci", "--part", part]));
        assert!(run.status.success(), "{}", stderr_text(&run));
        let echoed = stderr_text(&run);
        // Each step in order, the test step followed by its filter.
        let mut expected = Vec::new();
        for (index, step) in steps.iter().enumerate() {
            expected.push(format!("==> ci step {}/{}: {step}", index + 1, steps.len()));
            if *step == "test" {
                expected.push(filter.to_owned());
            }
        }
        expected.push("==> ci summary".to_owned());
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        in_order(&echoed, &expected);
    }
}

fn in_order(text: &str, expected_in_order: &[&str]) {
    let mut rest = text;
    for expected in expected_in_order {
        let at = rest
            .find(expected)
            .unwrap_or_else(|| panic!("`{expected}` missing or out of order in:\n{text}"));
        rest = &rest[at + expected.len()..];
    }
}

#[test]
fn user_mistakes_are_one_line_errors_with_a_usage_or_failure_code() {
    let outside = TempDir::new().unwrap();
    let cases: [(&Path, &[&str], i32, &str); 28] = [
        (
            &workspace_root(),
            &["package", "--target", "x86_64-pc-windows-gnu"],
            1,
            "error: x86_64-pc-windows-gnu cannot go into a Debian package: packages hold Linux binaries, use x86_64 or aarch64",
        ),
        (
            &workspace_root(),
            &[
                "package",
                "--target",
                "x86_64",
                "--target",
                "aarch64",
                "--binary",
                "app",
                "--out",
                "/nonexistent",
            ],
            1,
            "error: --binary packages one binary: name its one --target",
        ),
        (
            &workspace_root(),
            &["package", "--binary", "app"],
            2,
            "error: the following required arguments were not provided: --out <DIR>",
        ),
        (
            &workspace_root(),
            &["update"],
            1,
            "error: Cargo.toml takes none of the libraries (platform, xtask-lib) by git tag",
        ),
        (
            &workspace_root(),
            &["new", "/nonexistent/Shop"],
            1,
            "error: the folder's name cannot name the service: give one with --name: `Shop` cannot name a service",
        ),
        (
            &workspace_root(),
            &[
                "new",
                "/nonexistent/shop",
                "--tag",
                "libraries-v0.0.0-no-such",
            ],
            1,
            "error: the tag libraries-v0.0.0-no-such is not in this repository",
        ),
        (
            &workspace_root(),
            &["new", "app", "--name", "shop"],
            1,
            "error: app exists: `new` makes a project in a folder of its own",
        ),
        (
            &workspace_root(),
            &["fuzz", "tarball"],
            1,
            "error: no fuzz target \"tarball\": the targets are manifest, sums,",
        ),
        (
            &workspace_root(),
            &["fuzz", "--time", "5h"],
            2,
            "error: invalid value '5h' for '--time <DURATION>': \"5h\" is not a duration",
        ),
        (
            &workspace_root(),
            &["deploy-everything"],
            2,
            "error: unrecognized task 'deploy-everything'",
        ),
        (
            &workspace_root(),
            &["build", "--relase"],
            2,
            "error: unexpected argument '--relase'",
        ),
        (
            &workspace_root(),
            &["help", "nope"],
            2,
            "error: unknown task 'nope'",
        ),
        (
            &workspace_root(),
            &["test", "--app-binary", "/nonexistent/app"],
            1,
            "error: --app-binary /nonexistent/app: no such file (build it first",
        ),
        (
            &workspace_root(),
            &["units", "--root", "opt/app", "--out", "/nonexistent/units"],
            1,
            "error: --root opt/app: systemd needs an absolute path for ExecStart=: pass the deploy root, e.g. /opt/app",
        ),
        (
            outside.path(),
            &["version"],
            1,
            "could not find `Cargo.toml`",
        ),
        (
            &workspace_root(),
            &["deploy", "--keep", "1", "--root", "/nonexistent/app"],
            1,
            "error: --keep 1: keep at least 2 releases",
        ),
        (
            &workspace_root(),
            &["deploy"],
            1,
            "error: no --root given: name the deploy root",
        ),
        (
            &workspace_root(),
            &[
                "rollback",
                "--root",
                "/nonexistent/app",
                "--ssh-config",
                "ssh.conf",
            ],
            1,
            "error: --ssh-config is for --host deploys",
        ),
        (
            &workspace_root(),
            &["releases", "--host", "web1"],
            1,
            "error: --host web1 has no root: pass --root DIR, or --host web1:DIR",
        ),
        (
            &workspace_root(),
            &["releases", "--host", "web1:opt/app"],
            1,
            "error: the deploy root opt/app for web1 is relative",
        ),
        (
            &workspace_root(),
            &["k8s", "--apply"],
            1,
            "error: --apply needs exactly one --env",
        ),
        (
            &workspace_root(),
            &["k8s", "--dir", "/nonexistent/k8s"],
            2,
            "the following required arguments were not provided",
        ),
        (
            &workspace_root(),
            &["deploy", "--root", "/nonexistent/app", "--timeout", "soon"],
            2,
            "invalid value 'soon' for '--timeout <DURATION>': `soon` is not a duration",
        ),
        (
            &workspace_root(),
            &["bench", "--compare", "/tmp/old/app"],
            2,
            "`/tmp/old/app` is not NAME=BINARY: e.g. --compare before=/tmp/old/app",
        ),
        (
            &workspace_root(),
            &["image", "--push", "acme/app"],
            1,
            "error: `acme/app` names no registry (`acme` is not a host): write REGISTRY/NAME[:TAG]",
        ),
        (
            &workspace_root(),
            &["image", "--push", "ghcr.io/acme/app:-x"],
            1,
            "error: `-x` is not an image tag",
        ),
        (
            &workspace_root(),
            &["image", "--latest"],
            2,
            "the following required arguments were not provided: --push",
        ),
        (
            &workspace_root(),
            &["bench", "--compare", "before=/nonexistent/app"],
            2,
            "/nonexistent/app is not a file: pass the path of a built service binary",
        ),
    ];
    for (dir, args, code, expected) in cases {
        let run = output(
            xtask(dir)
                .args(args)
                .env_remove("REGISTRY_USERNAME")
                .env_remove("REGISTRY_PASSWORD"),
        );
        let stderr = stderr_text(&run);
        assert_eq!(run.status.code(), Some(code), "xtask {args:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "xtask {args:?} printed more than one line: {stderr}"
        );
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "xtask {args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// What `image --push --dry-run` prints: TLS verification stays on for a
/// registry off loopback unless `--insecure-registry` turns it off, and
/// credentials reach skopeo as an auth file, never as words.
#[test]
fn image_push_dry_run_verifies_tls_off_loopback_and_keeps_credentials_off_the_command_line() {
    let canary = format!("canary-{}", std::process::id());
    let push = |args: &[&str], password: Option<&str>| -> Vec<String> {
        let mut command = xtask(&workspace_root());
        command
            .args(["image", "--dry-run", "--target", "x86_64"])
            .args(args)
            .env_remove("REGISTRY_USERNAME")
            .env_remove("REGISTRY_PASSWORD");
        if let Some(password) = password {
            command
                .env("REGISTRY_USERNAME", "ci")
                .env("REGISTRY_PASSWORD", password);
        }
        let run = output(&mut command);
        let stderr = stderr_text(&run);
        assert!(run.status.success(), "xtask image {args:?}: {stderr}");
        assert!(
            !stderr.contains(&canary),
            "the password was printed: {stderr}"
        );
        stderr
            .lines()
            .filter(|line| line.starts_with("$ skopeo "))
            // `[::1]` is quoted for the shell.
            .map(|line| line.replace('\'', ""))
            .collect()
    };
    let copy_and_reads = |lines: &[String], verify: bool, reference: &str| {
        assert_eq!(lines.len(), 2, "one copy and one read-back: {lines:?}");
        assert!(
            lines[0].starts_with("$ skopeo copy --all --preserve-digests ")
                && lines[0].contains(&format!(" --dest-tls-verify={verify} "))
                && lines[0].ends_with(&format!(" docker://{reference}")),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with(&format!("$ skopeo inspect --raw --tls-verify={verify} "))
                && lines[1].ends_with(&format!(" docker://{reference}")),
            "{lines:?}"
        );
        let relaxed = lines.iter().any(|line| line.contains("verify=false"));
        assert_eq!(relaxed, !verify, "{lines:?}");
    };

    let off_loopback = push(&["--push", "registry.example:5000/acme/app"], None);
    copy_and_reads(&off_loopback, true, "registry.example:5000/acme/app:0.1.0");
    assert!(!off_loopback[0].contains("authfile"), "{off_loopback:?}");
    let insecure = push(
        &[
            "--push",
            "registry.example:5000/acme/app",
            "--insecure-registry",
        ],
        None,
    );
    copy_and_reads(&insecure, false, "registry.example:5000/acme/app:0.1.0");
    for loopback in ["127.0.0.1:5000", "localhost:5000", "[::1]:5000"] {
        let lines = push(&["--push", &format!("{loopback}/acme/app:edge")], None);
        copy_and_reads(&lines, false, &format!("{loopback}/acme/app:edge"));
    }
    // No destination: the --tag reference, which defaults to the image
    // setting and the version.
    let default = push(&["--push"], None);
    copy_and_reads(&default, true, "ghcr.io/example/app:0.1.0");

    let with_credentials = push(&["--push", "registry.example:5000/acme/app"], Some(&canary));
    copy_and_reads(
        &with_credentials,
        true,
        "registry.example:5000/acme/app:0.1.0",
    );
    assert!(
        with_credentials[0].contains(" --dest-authfile ")
            && with_credentials[1].contains(" --authfile "),
        "{with_credentials:?}"
    );

    let half = output(
        xtask(&workspace_root())
            .args([
                "image",
                "--dry-run",
                "--push",
                "registry.example:5000/acme/app",
            ])
            .env_remove("REGISTRY_PASSWORD")
            .env("REGISTRY_USERNAME", "ci"),
    );
    assert_eq!(half.status.code(), Some(1));
    assert_eq!(
        stderr_text(&half).trim(),
        "error: REGISTRY_USERNAME is set but REGISTRY_PASSWORD is not: set both, or neither to use the auth file of `skopeo login`"
    );
}

#[test]
fn settings_come_from_workspace_metadata() {
    let workspace = copy_workspace();
    let manifest = workspace.path().join("Cargo.toml");
    let original = fs::read_to_string(&manifest).unwrap();
    let edited = original
        .replace("binary = \"app\"", "binary = \"svc\"")
        .replace(
            "targets = [\"x86_64-unknown-linux-musl\", \"aarch64-unknown-linux-musl\"]",
            "targets = [\"wasm32-wasip1\"]",
        );
    assert_ne!(
        edited, original,
        "the settings in Cargo.toml changed shape; update this test"
    );
    fs::write(&manifest, &edited).unwrap();

    let version = stdout_of(xtask(workspace.path()).arg("version"));
    assert!(version.starts_with("svc 0.1.0\n"), "{version}");
    let doctor = stdout_of(xtask(workspace.path()).arg("doctor"));
    assert!(doctor.contains("wasm32-wasip1"), "{doctor}");
    assert!(!doctor.contains("aarch64-unknown-linux-musl "), "{doctor}");

    fs::write(
        &manifest,
        edited.replace("keep-releases = 5", "keep-releases = 5\nprot = 80"),
    )
    .unwrap();
    let run = output(xtask(workspace.path()).arg("version"));
    assert_eq!(run.status.code(), Some(1));
    let stderr = stderr_text(&run);
    assert!(
        stderr.contains("[workspace.metadata.xtask]") && stderr.contains("unknown field `prot`"),
        "{stderr}"
    );

    // The port has one home, the config; the old key says where it went.
    fs::write(
        &manifest,
        edited.replace("keep-releases = 5", "keep-releases = 5\nport = 8080"),
    )
    .unwrap();
    let run = output(xtask(workspace.path()).arg("version"));
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stderr_text(&run).contains("port lives in server.listen of config/base.toml"),
        "{}",
        stderr_text(&run)
    );
}

#[test]
fn a_missing_tool_fails_fast_with_the_install_command() {
    // A PATH with cargo and rustc but no git, in a git checkout.
    let repo = repository();
    let bin = TempDir::new().unwrap();
    for tool in ["cargo", "rustc"] {
        let path = which(tool).unwrap_or_else(|| panic!("{tool} is not on PATH"));
        std::os::unix::fs::symlink(path, bin.path().join(tool)).unwrap();
    }
    let run = output(xtask(repo.path()).arg("version").env("PATH", bin.path()));
    let stderr = stderr_text(&run);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "error: compute the version stamp: git not found on PATH (needed for the version stamp of every build): install it with `apt-get install -y git` or `cargo xtask setup`, or run `cargo xtask doctor` to check every tool"
    );

    let doctor = stdout_of(xtask(repo.path()).arg("doctor").env("PATH", bin.path()));
    let git_line = doctor
        .lines()
        .find(|line| line.contains(" git "))
        .expect("doctor lists git");
    assert!(
        git_line.contains("missing") && git_line.contains("apt-get install -y git"),
        "{git_line}"
    );
}

/// A package names its maintainer: without `authors`, `package` stops in
/// one line before it builds anything.
#[test]
fn package_without_authors_says_where_to_name_the_maintainer() {
    let repo = repository();
    for manifest in ["Cargo.toml", "app/Cargo.toml"] {
        let path = repo.path().join(manifest);
        let text = fs::read_to_string(&path).unwrap();
        let text: String = text
            .lines()
            .filter(|line| !line.starts_with("authors"))
            .map(|line| format!("{line}\n"))
            .collect();
        fs::write(&path, text).unwrap();
    }
    let run = output(
        xtask(repo.path())
            .arg("package")
            .env("CARGO_TARGET_DIR", repo.path().join("scratch-target")),
    );
    let stderr = stderr_text(&run);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "error: the package app names no authors: set authors = [\"Name <email>\"] in its Cargo.toml (or [workspace.package]); a Debian package names its maintainer"
    );
    assert!(!repo.path().join("scratch-target/dist").exists());
}

/// `doctor --disk` measures what setup left where it is: a virtual
/// environment of 3 MB written here reads as 3 MB at its path, and a tree
/// that is not there as none.
#[test]
fn doctor_disk_sizes_what_setup_left_where_it_is() {
    let repo = repository();
    let data = TempDir::new().unwrap();
    let venv = data.path().join("venv");
    fs::create_dir_all(venv.join("lib")).unwrap();
    fs::write(venv.join("lib/blob"), vec![7u8; 3_000_000]).unwrap();
    let doctor = stdout_of(
        xtask(repo.path())
            .args(["doctor", "--disk"])
            .env("XTASK_VENV", &venv)
            .env("XTASK_HOST_TREE", data.path().join("no-tree")),
    );
    let disk = &doctor[doctor.find("what setup left").expect("the disk section")..];
    let line = |what: &str| {
        disk.lines()
            .find(|line| line.contains(what))
            .unwrap_or_else(|| panic!("no {what} line:\n{doctor}"))
            .to_owned()
    };
    let venv_line = line("virtual environment");
    assert!(
        venv_line.trim_start().starts_with("3 MB")
            && venv_line.ends_with(&venv.display().to_string()),
        "{venv_line}"
    );
    let tree_line = line("Debian 12 tree");
    assert!(
        tree_line.trim_start().starts_with("0 MB") && tree_line.ends_with("(none)"),
        "{tree_line}"
    );
    line("Rust targets");
}

fn workflows() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = fs::read_dir(workspace_root().join(".github/workflows"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "ci.yml and release.yml: {files:?}");
    files
}

#[test]
fn every_workflow_passes_actionlint() {
    let Some(actionlint) = tool_or_skip("actionlint", "cargo xtask setup --only python") else {
        return;
    };
    let run = output(
        std::process::Command::new(actionlint)
            .args(workflows())
            .current_dir(workspace_root()),
    );
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        stderr_text(&run)
    );
}

/// The workflows hold no build logic: every `run:` is a `cargo xtask` call,
/// the same line a developer types.
#[test]
fn every_workflow_step_that_runs_something_is_a_cargo_xtask_call() {
    let mut seen = 0;
    for file in workflows() {
        let text = fs::read_to_string(&file).unwrap();
        let documents = yaml_rust2::YamlLoader::load_from_str(&text).unwrap();
        let jobs = documents[0]["jobs"].as_hash().expect("a workflow has jobs");
        for (job, body) in jobs {
            for step in body["steps"].as_vec().expect("a job has steps") {
                let Some(run) = step["run"].as_str() else {
                    assert!(
                        step["uses"].as_str().is_some(),
                        "{}: a step of {job:?} neither runs nor uses",
                        file.display()
                    );
                    continue;
                };
                seen += 1;
                let lines: Vec<&str> = run.lines().filter(|line| !line.trim().is_empty()).collect();
                assert!(
                    lines.len() == 1 && lines[0].starts_with("cargo xtask "),
                    "{}: job {job:?} runs `{run}`, which is not one `cargo xtask` call",
                    file.display()
                );
            }
        }
    }
    assert!(seen >= 6, "only {seen} run steps found");
}

#[test]
fn release_matrix_is_the_targets_setting_as_json_and_a_github_output() {
    let folder = TempDir::new().unwrap();
    let github_output = folder.path().join("output");
    fs::write(&github_output, "earlier=1\n").unwrap();
    let printed = stdout_of(
        xtask(&workspace_root())
            .args(["release", "--matrix"])
            .env("GITHUB_OUTPUT", &github_output),
    );
    let expected = r#"["x86_64-unknown-linux-musl","aarch64-unknown-linux-musl"]"#;
    assert_eq!(printed, format!("{expected}\n"));
    assert_eq!(
        fs::read_to_string(&github_output).unwrap(),
        format!("earlier=1\ntargets={expected}\n")
    );
}

#[test]
fn a_test_run_without_a_tool_says_what_it_did_not_exercise() {
    // This machine's PATH without systemd-analyze: a folder of links to
    // everything on it but that; the skips go to a log of this test's own.
    let bin = TempDir::new().unwrap();
    let toolchain = Path::new(env!("CARGO")).parent().unwrap().to_owned();
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    for folder in std::iter::once(toolchain).chain(std::env::split_paths(&inherited)) {
        let Ok(entries) = fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let link = bin.path().join(entry.file_name());
            if entry.file_name() != "systemd-analyze" && !link.exists() {
                std::os::unix::fs::symlink(entry.path(), link).unwrap();
            }
        }
    }
    let path = bin.path().as_os_str().to_owned();
    let run = output(
        xtask(&workspace_root())
            .args(["test", "--test", "units"])
            .env("PATH", path)
            .env("XTASK_SKIPPED", bin.path().join("skipped.tsv"))
            .env_remove("CI"),
    );
    let stderr = stderr_text(&run);
    assert!(run.status.success(), "{stderr}");
    let summary = &stderr[stderr
        .find("not exercised:")
        .expect("a summary of what was skipped")..];
    assert!(
        summary.starts_with(
            "not exercised: 1 test(s) passed without running their real part, for want of 1 tool:\n  \
             systemd-analyze is not installed (`apt-get install -y systemd`): rendered_units_verify_and_are_locked_down\n  \
             `cargo xtask setup` installs every one of them"
        ),
        "{summary}"
    );
}
