//! `release --split` and `release --merge`, run in the slow dist test's
//! clone at its tag, with its builds: the merged release must equal one
//! machine's `release` + `image` byte for byte, and every bad set of parts
//! must be refused with one line and nothing written to `target/dist/`.

use super::*;

/// The outputs that must be identical: SHA256SUMS, the manifest, and the
/// image index digest.
fn release_outputs(target_dir: &Path) -> (String, Value) {
    let dist = dist_folder(target_dir);
    (
        fs::read_to_string(dist.join("SHA256SUMS")).unwrap(),
        manifest(target_dir),
    )
}

fn run_ok(command: &mut Command) -> String {
    let run = output(command);
    assert!(run.status.success(), "{command:?}: {}", stderr_text(&run));
    stderr_text(&run)
}

/// The part's description, edited by `edit`, written back.
fn edit_part(part: &Path, edit: impl FnOnce(&mut Value)) {
    let path = part.join("part.json");
    let mut value: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

fn copy_folder(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// What `target/dist/` holds, to prove a refused merge wrote nothing.
fn snapshot(dist: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut files = Vec::new();
    let mut stack = vec![dist.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in fs::read_dir(&folder).unwrap().flatten() {
            let metadata = entry.metadata().unwrap();
            if metadata.is_dir() {
                stack.push(entry.path());
            } else {
                files.push((
                    entry.path().display().to_string(),
                    std::os::unix::fs::MetadataExt::ino(&metadata),
                    metadata.modified().unwrap(),
                ));
            }
        }
    }
    files.sort();
    files
}

pub fn split_and_merge_equal_one_release(clone: &Path, target_dir: &Path) {
    let in_clone = |args: &[&str]| {
        let mut command = xtask(clone);
        command.args(args).env("CARGO_TARGET_DIR", target_dir);
        // `release` compiles, so it never holds the signing secrets; the
        // image and the merge, which do not, sign.
        if args[0] == "release" && !args.contains(&"--merge") {
            signing::without_secrets(&mut command);
        }
        command
    };
    // One machine: both targets, then the image.
    run_ok(&mut in_clone(&[
        "release", "--target", "x86_64", "--target", "aarch64",
    ]));
    run_ok(&mut in_clone(&["image"]));
    let (one_sums, one_manifest) = release_outputs(target_dir);
    assert!(one_sums.contains("app-0.1.0.oci.tar"), "{one_sums}");

    // Two runners' parts, from the same target directory.
    let parts = TempDir::new().unwrap();
    let (x86, arm) = (parts.path().join("x86"), parts.path().join("arm"));
    for (target, out) in [("x86_64", &x86), ("aarch64", &arm)] {
        run_ok(&mut in_clone(&[
            "release",
            "--target",
            target,
            "--split",
            "--out",
            out.to_str().unwrap(),
        ]));
        let part: Value =
            serde_json::from_str(&fs::read_to_string(out.join("part.json")).unwrap()).unwrap();
        assert_eq!(part["images"].as_array().unwrap().len(), 1, "{part:#}");
        assert!(
            !out.join("image/index.json").exists(),
            "a part holds no index"
        );
    }
    // A folder of the user's is never replaced by a part.
    let theirs = parts.path().join("theirs");
    fs::create_dir(&theirs).unwrap();
    fs::write(theirs.join("notes.txt"), "mine").unwrap();
    let refused = output(&mut in_clone(&[
        "release",
        "--target",
        "x86_64",
        "--split",
        "--out",
        theirs.to_str().unwrap(),
    ]));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr_text(&refused).trim().ends_with(&format!(
            "error: --out {} holds files that are not a release part: name a new or empty folder",
            theirs.display()
        )),
        "{}",
        stderr_text(&refused)
    );
    assert_eq!(
        fs::read_to_string(theirs.join("notes.txt")).unwrap(),
        "mine"
    );
    fs::remove_dir_all(&theirs).unwrap();

    let merged = run_ok(&mut in_clone(&[
        "release",
        "--merge",
        x86.to_str().unwrap(),
        arm.to_str().unwrap(),
    ]));
    let (merged_sums, merged_manifest) = release_outputs(target_dir);
    assert_eq!(merged_sums, one_sums, "{merged}");
    assert_eq!(merged_manifest, one_manifest);
    assert_eq!(
        merged_manifest["image"]["index_digest"],
        one_manifest["image"]["index_digest"]
    );
    assert_checksums_verify(&dist_folder(target_dir));

    // The folder CI downloads the parts into, and the same target twice
    // with the same bytes: both taken as one.
    let again = parts.path().join("x86-again");
    copy_folder(&x86, &again);
    let twice = run_ok(&mut in_clone(&[
        "release",
        "--merge",
        parts.path().to_str().unwrap(),
    ]));
    assert!(
        twice.contains("holds the same bytes as") && twice.contains("taken once"),
        "{twice}"
    );
    assert_eq!(
        release_outputs(target_dir),
        (one_sums.clone(), one_manifest)
    );
    fs::remove_dir_all(&again).unwrap();

    // publish checks the merged release and names every asset (dry run: no
    // gh call, no network).
    let published = run_ok(&mut in_clone(&["publish", "--dry-run"]));
    let dist = dist_folder(target_dir);
    let line = published
        .lines()
        .find(|line| line.starts_with("$ gh release create "))
        .unwrap_or_else(|| panic!("{published}"));
    let expected = format!(
        "$ gh release create v0.1.0 --draft --verify-tag --title 'app 0.1.0' --notes-file {0}/RELEASE_NOTES.md {0}/SHA256SUMS {0}/dist-manifest.json {0}/SHA256SUMS.sig {0}/SHA256SUMS.sigstore.json {0}/app-0.1.0-aarch64-unknown-linux-musl.cdx.json {0}/app-0.1.0-aarch64-unknown-linux-musl.cdx.json.sigstore.json {0}/app-0.1.0-aarch64-unknown-linux-musl.tar.gz {0}/app-0.1.0-aarch64-unknown-linux-musl.tar.gz.sigstore.json {0}/app-0.1.0-x86_64-unknown-linux-musl.cdx.json {0}/app-0.1.0-x86_64-unknown-linux-musl.cdx.json.sigstore.json {0}/app-0.1.0-x86_64-unknown-linux-musl.tar.gz {0}/app-0.1.0-x86_64-unknown-linux-musl.tar.gz.sigstore.json {0}/app-0.1.0.intoto.jsonl {0}/app-0.1.0.oci.tar {0}/app-0.1.0.oci.tar.sigstore.json",
        dist.display()
    );
    assert_eq!(line, expected);
    assert!(
        published.contains("\n$ gh release edit v0.1.0 --draft=false\n"),
        "the draft is published once every asset is up:\n{published}"
    );
    assert!(
        published.contains("checked 16 artifacts against SHA256SUMS"),
        "{published}"
    );

    refusals(&x86, &arm, parts.path(), &in_clone, &dist);
}

/// Each bad set of parts: one line naming what disagrees, exit code 1, and
/// `target/dist/` exactly as it was.
fn refusals(
    x86: &Path,
    arm: &Path,
    parts: &Path,
    in_clone: &dyn Fn(&[&str]) -> Command,
    dist: &Path,
) {
    type Mutation = Box<dyn Fn(&Path)>;
    let flip_archive_byte = |part: &Path, target: &str| {
        let archive = part.join(format!("app-0.1.0-{target}.tar.gz"));
        let mut bytes = fs::read(&archive).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&archive, &bytes).unwrap();
        bytes
    };
    let cases: Vec<(&str, &Path, Mutation, Vec<&str>, String)> = vec![
        (
            "another commit",
            arm,
            Box::new(|part| edit_part(part, |value| value["stamp"]["commit"] = "0".repeat(40).into())),
            vec![],
            "disagree on the commit (".into(),
        ),
        (
            "another version",
            arm,
            Box::new(|part| edit_part(part, |value| value["version"] = "0.2.0".into())),
            vec![],
            "disagree on the version (0.1.0 against 0.2.0)".into(),
        ),
        (
            "another rustc",
            arm,
            Box::new(|part| edit_part(part, |value| value["stamp"]["rustc"] = "rustc 1.0.0".into())),
            vec![],
            "disagree on the rustc (".into(),
        ),
        (
            "a file that does not match its checksum",
            arm,
            Box::new(move |part| {
                flip_archive_byte(part, "aarch64-unknown-linux-musl");
            }),
            vec![],
            "app-0.1.0-aarch64-unknown-linux-musl.tar.gz does not match its checksum".into(),
        ),
        (
            "a missing image blob",
            arm,
            Box::new(|part| {
                let blobs = part.join("image/blobs/sha256");
                let first = fs::read_dir(&blobs).unwrap().next().unwrap().unwrap();
                fs::remove_file(first.path()).unwrap();
            }),
            vec![],
            " is missing (".into(),
        ),
        (
            "the same target twice with different bytes",
            // A second x86_64 part whose archive differs, with checksums
            // that match it: only the comparison can catch it.
            x86,
            Box::new(move |part| {
                let bytes = flip_archive_byte(part, "x86_64-unknown-linux-musl");
                let sha: String = <sha2::Sha256 as sha2::Digest>::digest(&bytes)
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect();
                edit_part(part, |value| {
                    for artifact in value["artifacts"].as_array_mut().unwrap() {
                        if artifact["path"] == "app-0.1.0-x86_64-unknown-linux-musl.tar.gz" {
                            artifact["sha256"] = sha.clone().into();
                        }
                    }
                });
            }),
            vec!["extra"],
            "both hold x86_64-unknown-linux-musl, with different bytes".into(),
        ),
        (
            "dirty parts",
            arm,
            Box::new(|part| edit_part(part, |value| value["stamp"]["dirty"] = true.into())),
            vec!["all dirty"],
            "was built from a tree with uncommitted changes: build it from a clean checkout, or pass --allow-dirty".into(),
        ),
        (
            "a folder that is not a part",
            arm,
            Box::new(|part| fs::remove_file(part.join("part.json")).unwrap()),
            vec![],
            "is not a release part (no part.json)".into(),
        ),
    ];
    let before = snapshot(dist);
    for (name, original, mutate, flags, expected) in cases {
        let scratch = TempDir::new_in(parts).unwrap();
        let bad = scratch.path().join("bad");
        copy_folder(original, &bad);
        mutate(&bad);
        let mut folders: Vec<PathBuf> = if flags.contains(&"extra") {
            vec![x86.to_path_buf(), arm.to_path_buf(), bad.clone()]
        } else if original == arm {
            vec![x86.to_path_buf(), bad.clone()]
        } else {
            vec![bad.clone(), arm.to_path_buf()]
        };
        if flags.contains(&"all dirty") {
            let dirty_x86 = scratch.path().join("dirty-x86");
            copy_folder(x86, &dirty_x86);
            edit_part(&dirty_x86, |value| value["stamp"]["dirty"] = true.into());
            folders[0] = dirty_x86;
        }
        let mut command = in_clone(&["release", "--merge"]);
        command.args(&folders);
        let run = output(&mut command);
        let stderr = stderr_text(&run);
        assert_eq!(run.status.code(), Some(1), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(&expected),
            "{name}: expected `{expected}` in {stderr}"
        );
        assert_eq!(snapshot(dist), before, "{name}: target/dist/ changed");
    }
}
