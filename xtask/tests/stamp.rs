//! The version stamp in every repository state a build meets: no git at all,
//! a fresh repository, tags, a dirty tree, a detached HEAD, a shallow clone,
//! a worktree; and the stamp that a built binary reports.

mod support;

use std::fs;
use std::path::Path;

use serde_json::{Value, json};
use support::*;

fn stamp_in(dir: &Path) -> Value {
    serde_json::from_str(&stdout_of(xtask(dir).args(["version", "--json"])))
        .expect("version --json prints JSON")
}

/// Asserts the listed fields of a stamp, and that the fields every stamp has
/// are there with the right types.
fn check(stamp: &Value, expected: &[(&str, Value)]) {
    for (field, value) in expected {
        assert_eq!(&stamp[field], value, "field `{field}` of {stamp:#}");
    }
    let names: Vec<&str> = stamp
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "branch",
            "commit",
            "commit_short",
            "commit_time",
            "describe",
            "dirty",
            "profile",
            "rustc",
            "source_date_epoch",
            "target",
            "version"
        ]
    );
    assert!(
        stamp["rustc"].as_str().unwrap().starts_with("rustc 1."),
        "{stamp:#}"
    );
}

fn head(repo: &Path) -> (String, String) {
    (
        git(repo, &["rev-parse", "HEAD"]),
        git(repo, &["rev-parse", "--short", "HEAD"]),
    )
}

#[test]
fn stamp_of_a_source_tree_without_git() {
    let tree = copy_workspace();
    let unknown = json!("unknown");
    check(
        &stamp_in(tree.path()),
        &[
            ("version", json!("0.1.0")),
            ("commit", unknown.clone()),
            ("commit_short", unknown.clone()),
            ("describe", unknown.clone()),
            ("branch", unknown.clone()),
            ("commit_time", unknown),
            ("dirty", json!(false)),
            ("source_date_epoch", json!(0)),
            ("profile", json!("release")),
        ],
    );
    let with_epoch: Value = serde_json::from_str(&stdout_of(
        xtask(tree.path())
            .args([
                "version",
                "--json",
                "--target",
                "aarch64-unknown-linux-musl",
            ])
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    ))
    .unwrap();
    check(
        &with_epoch,
        &[
            ("source_date_epoch", json!(1_700_000_000)),
            ("target", json!("aarch64-unknown-linux-musl")),
        ],
    );

    let bad_epoch = output(
        xtask(tree.path())
            .arg("version")
            .env("SOURCE_DATE_EPOCH", "yesterday"),
    );
    assert_eq!(bad_epoch.status.code(), Some(1));
    assert!(
        stderr_text(&bad_epoch).contains("SOURCE_DATE_EPOCH=\"yesterday\" is not a whole number")
    );
}

#[test]
fn stamp_of_a_repository_without_commits() {
    let tree = copy_workspace();
    git(tree.path(), &["init", "--quiet", "--initial-branch=main"]);
    check(
        &stamp_in(tree.path()),
        &[
            ("commit", json!("unknown")),
            ("source_date_epoch", json!(0)),
        ],
    );
}

#[test]
fn stamp_follows_commits_tags_and_changes() {
    let repo = repository();
    let dir = repo.path();
    let (commit, short) = head(dir);
    check(
        &stamp_in(dir),
        &[
            ("commit", json!(commit)),
            ("commit_short", json!(short)),
            ("describe", json!(short)),
            ("branch", json!("main")),
            ("dirty", json!(false)),
            ("commit_time", json!(COMMIT_TIME)),
            ("source_date_epoch", json!(COMMIT_EPOCH)),
        ],
    );
    let with_epoch: Value = serde_json::from_str(&stdout_of(
        xtask(dir)
            .args(["version", "--json"])
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    ))
    .unwrap();
    check(
        &with_epoch,
        &[
            ("source_date_epoch", json!(1_700_000_000)),
            ("commit_time", json!(COMMIT_TIME)),
        ],
    );

    git(
        dir,
        &["tag", "--annotate", "v0.1.0", "--message", "release 0.1.0"],
    );
    check(
        &stamp_in(dir),
        &[("describe", json!("v0.1.0")), ("branch", json!("main"))],
    );

    git(
        dir,
        &["commit", "--quiet", "--allow-empty", "--message", "second"],
    );
    let (_, second_short) = head(dir);
    check(
        &stamp_in(dir),
        &[
            ("describe", json!(format!("v0.1.0-1-g{second_short}"))),
            ("dirty", json!(false)),
        ],
    );

    fs::write(dir.join("LICENSE"), "changed\n").unwrap();
    check(
        &stamp_in(dir),
        &[
            ("describe", json!(format!("v0.1.0-1-g{second_short}-dirty"))),
            ("dirty", json!(true)),
        ],
    );
    git(dir, &["checkout", "--quiet", "--", "LICENSE"]);
    fs::write(dir.join("untracked.txt"), "new\n").unwrap();
    check(&stamp_in(dir), &[("dirty", json!(true))]);
    fs::remove_file(dir.join("untracked.txt")).unwrap();
    check(&stamp_in(dir), &[("dirty", json!(false))]);

    // Build outputs in a target directory that .gitignore does not cover
    // are not changes to the source.
    fs::create_dir_all(dir.join("build-output/release")).unwrap();
    fs::write(dir.join("build-output/release/app"), "binary").unwrap();
    let in_checkout: Value = serde_json::from_str(&stdout_of(
        xtask(dir)
            .args(["version", "--json"])
            .env("CARGO_TARGET_DIR", dir.join("build-output")),
    ))
    .unwrap();
    check(&in_checkout, &[("dirty", json!(false))]);
    check(&stamp_in(dir), &[("dirty", json!(true))]);
}

#[test]
fn stamp_of_a_detached_head() {
    let repo = repository();
    let dir = repo.path();
    git(dir, &["tag", "v0.1.0"]);
    git(
        dir,
        &["commit", "--quiet", "--allow-empty", "--message", "second"],
    );
    git(dir, &["checkout", "--quiet", "--detach", "v0.1.0"]);
    check(
        &stamp_in(dir),
        &[("branch", json!("v0.1.0")), ("describe", json!("v0.1.0"))],
    );
    git(dir, &["checkout", "--quiet", "--detach", "main"]);
    let (commit, _) = head(dir);
    check(
        &stamp_in(dir),
        &[("branch", json!("HEAD")), ("commit", json!(commit))],
    );
}

#[test]
fn stamp_of_a_shallow_clone_without_tags() {
    let origin = repository();
    git(origin.path(), &["tag", "v0.1.0"]);
    git(
        origin.path(),
        &["commit", "--quiet", "--allow-empty", "--message", "second"],
    );
    let clones = TempDir::new().unwrap();
    let url = format!("file://{}", origin.path().display());
    git(
        clones.path(),
        &[
            "clone",
            "--quiet",
            "--depth=1",
            "--no-tags",
            &url,
            "shallow",
        ],
    );
    let shallow = clones.path().join("shallow");
    assert_eq!(
        git(&shallow, &["rev-parse", "--is-shallow-repository"]),
        "true"
    );
    let (commit, short) = head(&shallow);
    check(
        &stamp_in(&shallow),
        &[
            ("commit", json!(commit)),
            ("describe", json!(short)),
            ("branch", json!("main")),
            ("dirty", json!(false)),
            ("source_date_epoch", json!(COMMIT_EPOCH)),
        ],
    );
}

#[test]
fn stamp_of_a_git_worktree() {
    let repo = repository();
    let worktrees = TempDir::new().unwrap();
    let worktree = worktrees.path().join("feature");
    git(
        repo.path(),
        &[
            "worktree",
            "add",
            "--quiet",
            "-b",
            "feature",
            worktree.to_str().unwrap(),
        ],
    );
    let (commit, _) = head(repo.path());
    check(
        &stamp_in(&worktree),
        &[
            ("commit", json!(commit)),
            ("branch", json!("feature")),
            ("dirty", json!(false)),
        ],
    );
}

#[test]
fn stamp_of_this_repository_matches_git() {
    let root = workspace_root();
    if !root.join(".git").exists() {
        skip(
            &format!("{} is not a git checkout", root.display()),
            "git clone",
        );
        return;
    }
    let stamp = stamp_in(&root);
    let status = git(&root, &["status", "--porcelain"]);
    check(
        &stamp,
        &[
            ("commit", json!(git(&root, &["rev-parse", "HEAD"]))),
            (
                "commit_time",
                json!(git(&root, &["log", "-1", "--format=%cI"])),
            ),
            ("dirty", json!(!status.is_empty())),
        ],
    );
}
