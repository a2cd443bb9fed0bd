//! Release folders as `dist` lays them out (an archive, `SHA256SUMS`,
//! `dist-manifest.json`), made from any binary, for the deploy tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{manifest_at, stdout_of, workspace_root};

/// The target the test releases are named for.
pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// A dist folder holding one release archive with `binary` and `config`
/// files, its SHA256SUMS and dist-manifest.json; returns the archive.
pub fn release(dir: &Path, commit: &str, binary: &[u8], config: &[(&str, String)]) -> PathBuf {
    let top = format!("app-0.1.0-{TARGET}");
    let tree = dir.join("tree").join(&top);
    fs::create_dir_all(tree.join("config")).unwrap();
    fs::write(tree.join("app"), binary).unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(tree.join("app"))
        .status()
        .unwrap();
    for (name, text) in config {
        fs::write(tree.join("config").join(name), text).unwrap();
    }
    let archive = dir.join(format!("{top}.tar.gz"));
    stdout_of(
        Command::new("tar")
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(dir.join("tree"))
            .arg(&top),
    );
    write_sums_and_manifest(dir, &archive, commit);
    archive
}

pub fn write_sums_and_manifest(dir: &Path, archive: &Path, commit: &str) {
    let sum = stdout_of(Command::new("sha256sum").arg(archive));
    let sum = sum.split_whitespace().next().unwrap();
    let name = archive.file_name().unwrap().to_str().unwrap();
    fs::write(dir.join("SHA256SUMS"), format!("{sum}  {name}\n")).unwrap();
    fs::write(
        dir.join("dist-manifest.json"),
        manifest_at(commit).to_string(),
    )
    .unwrap();
}

/// The named files of the workspace's `config/`, as `release` takes them.
pub fn config_files(names: &[&'static str]) -> Vec<(&'static str, String)> {
    names
        .iter()
        .copied()
        .map(|name| {
            (
                name,
                fs::read_to_string(workspace_root().join("config").join(name)).unwrap(),
            )
        })
        .collect()
}
