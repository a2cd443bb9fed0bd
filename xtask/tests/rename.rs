//! Slow end to end: adopting the workspace for another service. Renaming
//! the package and its binary (to `hello`) in a copy, as README's "Make it
//! your service" says, gives `hello` archives, units and image, and a binary
//! that calls itself `hello`.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use support::*;

fn replace_in(path: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} lacks `{from}`", path.display());
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn slow_a_renamed_service_names_itself_everywhere() {
    let copy = copy_workspace();
    let root = copy.path();
    // The rename README describes: the package, the settings, the lock file.
    replace_in(
        &root.join("app/Cargo.toml"),
        "name = \"app\"",
        "name = \"hello\"",
    );
    let manifest = root.join("Cargo.toml");
    replace_in(&manifest, "package = \"app\"", "package = \"hello\"");
    replace_in(&manifest, "binary = \"app\"", "binary = \"hello\"");
    replace_in(
        &manifest,
        "image = \"ghcr.io/example/app\"",
        "image = \"ghcr.io/example/hello\"",
    );
    stdout_of(
        Command::new(env!("CARGO"))
            .args(["update", "--workspace", "--offline"])
            .current_dir(root),
    );
    git(root, &["init", "--quiet", "--initial-branch=main"]);
    git(root, &["add", "--all"]);
    git(root, &["commit", "--quiet", "--message", "hello"]);

    // A target directory kept between local runs, so a rerun builds
    // incrementally; the copy's own path is part of the build flags.
    let target_dir = workspace_root().join("target/test-builds/renamed");
    stdout_of(
        xtask(root)
            .args(["dist", "--target", "x86_64"])
            .env("CARGO_TARGET_DIR", &target_dir),
    );
    let dist = target_dir.join("dist");
    let archive = dist.join("hello-0.1.0-x86_64-unknown-linux-musl.tar.gz");
    assert!(archive.is_file(), "no {}", archive.display());
    let listing = stdout_of(Command::new("tar").arg("-tzf").arg(&archive));
    for expected in [
        "hello-0.1.0-x86_64-unknown-linux-musl/hello",
        "hello-0.1.0-x86_64-unknown-linux-musl/units/hello.service",
        "hello-0.1.0-x86_64-unknown-linux-musl/units/hello.socket",
    ] {
        assert!(
            listing.lines().any(|line| line == expected),
            "{expected} not in:\n{listing}"
        );
    }

    let binary = dist.join("x86_64-unknown-linux-musl/hello");
    let version = stdout_of(Command::new(&binary).arg("--version"));
    assert!(version.starts_with("hello 0.1.0 ("), "{version}");
    let help = stdout_of(Command::new(&binary).arg("--help"));
    assert!(help.starts_with("Usage: hello "), "{help}");
    let config = stdout_of(
        Command::new(&binary)
            .args(["config", "show"])
            .current_dir(root)
            .env_remove("APP_ENV"),
    );
    assert!(config.contains("name = \"hello\""), "{config}");

    let units = copy.path().join("units-out");
    stdout_of(xtask(root).arg("units").arg("--out").arg(&units));
    let service = fs::read_to_string(units.join("hello.service")).unwrap();
    assert!(
        service
            .contains("ExecStart=/opt/hello/current/hello --config-dir /opt/hello/current/config"),
        "{service}"
    );
    assert!(units.join("hello.socket").is_file());
}
