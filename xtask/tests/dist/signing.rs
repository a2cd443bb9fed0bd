//! Signed releases, checked by tools we did not write: sigstore-js
//! (`@sigstore/verify`, offline, the key as its only trust), OpenSSH's
//! `ssh-keygen -Y verify`, securesystemslib's DSSE verifier, and `openssl
//! dgst -verify` for the image signature read back through the registry
//! API. Then every way of breaking a release must fail them and `verify`,
//! and `deploy` must refuse it with the host unchanged.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::*;

/// A throwaway signing key pair, made by `keygen` in a clone of its own.
pub struct Keys {
    pub private: PathBuf,
    pub passphrase_file: PathBuf,
    pub passphrase: String,
    pub public: PathBuf,
    pub allowed_signers: PathBuf,
}

impl Keys {
    /// A new key pair made by `keygen` in `clone`, its files kept in `dir`.
    pub fn make(dir: &Path, clone: &Path, label: &str) -> Keys {
        fs::create_dir_all(dir).unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let passphrase = format!("canary-{label}-{}-{nanos}", std::process::id());
        let passphrase_file = dir.join("passphrase");
        fs::write(&passphrase_file, format!("{passphrase}\n")).unwrap();
        let private = dir.join("signing.key");
        let made = output(
            xtask(clone)
                .args(["keygen", "--private-key"])
                .arg(&private)
                .env("SIGNING_PASSPHRASE_FILE", &passphrase_file),
        );
        let stdout = String::from_utf8_lossy(&made.stdout).into_owned();
        assert!(made.status.success(), "{}", stderr_text(&made));
        assert!(!stdout.contains(&passphrase) && !stderr_text(&made).contains(&passphrase));
        fs::copy(clone.join("keys/app.pub"), dir.join("app.pub")).unwrap();
        fs::copy(
            clone.join("keys/app.allowed_signers"),
            dir.join("app.allowed_signers"),
        )
        .unwrap();
        Keys::load(dir)
    }

    /// The key pair `make` left in `dir`.
    pub fn load(dir: &Path) -> Keys {
        let passphrase_file = dir.join("passphrase");
        let passphrase = fs::read_to_string(&passphrase_file)
            .unwrap()
            .trim_end()
            .to_owned();
        Keys {
            private: dir.join("signing.key"),
            passphrase_file,
            passphrase,
            public: dir.join("app.pub"),
            allowed_signers: dir.join("app.allowed_signers"),
        }
    }

    /// Every later `xtask` command of this test signs with the key, given
    /// as files (what CI's secrets would be written to).
    pub fn sign_every_run(&self) {
        add_xtask_env("SIGNING_KEY_FILE", &self.private);
        add_xtask_env("SIGNING_PASSPHRASE_FILE", &self.passphrase_file);
    }

    /// The key and passphrase in the variables themselves (GitHub's
    /// secrets), instead of the files.
    pub fn by_value<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command
            .env_remove("SIGNING_KEY_FILE")
            .env_remove("SIGNING_PASSPHRASE_FILE")
            .env("SIGNING_KEY", fs::read_to_string(&self.private).unwrap())
            .env("SIGNING_PASSPHRASE", &self.passphrase)
    }

    /// What must never appear on a command line or in output: the
    /// passphrase, and a line from the middle of the encrypted key.
    pub fn secrets(&self) -> Vec<String> {
        let key = fs::read_to_string(&self.private).unwrap();
        let line = key.lines().nth(2).unwrap().to_owned();
        vec![self.passphrase.clone(), line]
    }
}

/// `command` without the signing secrets the test gives every run: for the
/// tasks that compile, which refuse them.
pub fn without_secrets(command: &mut Command) -> &mut Command {
    for var in [
        "SIGNING_KEY",
        "SIGNING_KEY_FILE",
        "SIGNING_PASSPHRASE",
        "SIGNING_PASSPHRASE_FILE",
    ] {
        command.env_remove(var);
    }
    command
}

/// Runs the commands at once, sampling every process's command line and
/// environment until all end; fails if a secret shows there or in their
/// output. The xtasks started here were given the secrets, which the
/// kernel shows in their environment from exec until their `main`
/// overwrites them: each is watched from its first line of output on.
pub fn run_watching_proc(commands: Vec<Command>, secrets: &[String]) -> Vec<std::process::Output> {
    let logs = TempDir::new().unwrap();
    let mut children = Vec::new();
    for (index, mut command) in commands.into_iter().enumerate() {
        let (out, err) = (
            logs.path().join(format!("{index}.out")),
            logs.path().join(format!("{index}.err")),
        );
        let child = command
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        children.push((child, out, err));
    }
    let own: Vec<(String, PathBuf)> = children
        .iter()
        .map(|(child, _, err)| (child.id().to_string(), err.clone()))
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let (mut samples, mut leaked) = (0, Vec::new());
    let mut statuses = vec![None; children.len()];
    while statuses.iter().any(Option::is_none) {
        for (index, (child, ..)) in children.iter_mut().enumerate() {
            if statuses[index].is_none() {
                statuses[index] = child.try_wait().unwrap();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the signing runs took over 600 s"
        );
        samples += 1;
        // Signing compiles nothing and takes a fraction of a second: every
        // sample reads every command line and environment.
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let starting = own.iter().any(|(own_pid, err)| {
                *own_pid == pid && fs::metadata(err).is_ok_and(|meta| meta.len() == 0)
            });
            let mut places = vec![("cmdline", fs::read(entry.path().join("cmdline")))];
            if !starting {
                places.push(("environ", fs::read(entry.path().join("environ"))));
            }
            for (place, bytes) in places {
                let Ok(bytes) = bytes else { continue };
                let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
                if secrets.iter().any(|secret| text.contains(secret.as_str())) {
                    leaked.push(format!("{pid} {place}: {}", &text[..text.len().min(200)]));
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(
        leaked.is_empty(),
        "a signing secret leaked into /proc: {leaked:?}"
    );
    assert!(samples > 10, "{samples} samples of /proc");
    children
        .into_iter()
        .zip(statuses)
        .map(|((_, out, err), status)| {
            let output = std::process::Output {
                status: status.unwrap(),
                stdout: fs::read(out).unwrap(),
                stderr: fs::read(err).unwrap(),
            };
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                stderr_text(&output)
            );
            for secret in secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "a signing secret was printed:\n{text}"
                );
            }
            output
        })
        .collect()
}

/// `SHA256SUMS` as `(path, sha256)`.
fn sums(dist: &Path) -> Vec<(String, String)> {
    fs::read_to_string(dist.join("SHA256SUMS"))
        .unwrap()
        .lines()
        .map(|line| {
            let (sum, path) = line.split_once("  ").unwrap();
            (path.to_owned(), sum.to_owned())
        })
        .collect()
}

/// The files of `dist` that carry a bundle, with their bundle.
fn bundled(dist: &Path) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = sums(dist)
        .into_iter()
        .filter_map(|(path, _)| {
            let file = path.strip_suffix(".sigstore.json")?.to_owned();
            Some((file, path))
        })
        .collect();
    pairs.push((
        "SHA256SUMS".to_owned(),
        "SHA256SUMS.sigstore.json".to_owned(),
    ));
    pairs
}

/// What a verifier printed: `Ok` when it accepted, `Err` when it refused.
fn verdict(run: &std::process::Output) -> Result<String, String> {
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        stderr_text(run)
    );
    if run.status.success() {
        Ok(report)
    } else {
        Err(report)
    }
}

/// sigstore-js on every bundle of the folder; `Err` with its report when
/// any fails.
fn sigstore_js(dist: &Path, keys: &Keys) -> Option<Result<String, String>> {
    let node = tool_or_skip("node", "apt-get install -y nodejs")?;
    let modules = python_venv()
        .map(|venv| venv.with_file_name("node").join("node_modules"))
        .filter(|modules| modules.join("@sigstore/verify/package.json").is_file());
    let Some(modules) = modules else {
        skip(
            "@sigstore/verify (npm) is not installed",
            "cargo xtask setup --only node",
        );
        return None;
    };
    let script = workspace_root().join("xtask/tests/support/sigstore-verify.cjs");
    let mut command = Command::new(node);
    command
        .arg(&script)
        .arg(&keys.public)
        .current_dir(dist)
        .env("NODE_PATH", &modules);
    for (file, bundle) in bundled(dist) {
        command.arg(file).arg(bundle);
    }
    let run = output(&mut command);
    Some(verdict(&run))
}

fn ssh_keygen_verify(dist: &Path, keys: &Keys) -> Option<Result<String, String>> {
    let ssh_keygen = tool_or_skip("ssh-keygen", "apt-get install -y openssh-client")?;
    let run = output(
        Command::new(ssh_keygen)
            .args(["-Y", "verify", "-f"])
            .arg(&keys.allowed_signers)
            .args(["-I", "app-release", "-n", "file", "-s", "SHA256SUMS.sig"])
            .stdin(fs::File::open(dist.join("SHA256SUMS")).unwrap())
            .current_dir(dist),
    );
    Some(verdict(&run))
}

/// securesystemslib verifies the DSSE envelope with the PEM key (its own
/// key id), and every subject's sha256 is the file's (those present).
const DSSE_CHECK: &str = include_str!("../support/dsse-verify.py");

fn in_toto_verify(dist: &Path, keys: &Keys) -> Option<Result<String, String>> {
    let python = python_venv()
        .map(|venv| venv.join("bin/python3"))
        .filter(|python| {
            Command::new(python)
                .args(["-c", "import securesystemslib.dsse, in_toto"])
                .status()
                .is_ok_and(|status| status.success())
        });
    let Some(python) = python else {
        skip(
            "in-toto and securesystemslib (PyPI) are not installed",
            "cargo xtask setup --only python",
        );
        return None;
    };
    let run = output(
        Command::new(python)
            .args(["-c", DSSE_CHECK])
            .arg(&keys.public)
            .current_dir(dist),
    );
    Some(verdict(&run))
}

/// Every tool accepts the signed folder.
pub fn check_with_other_tools(dist: &Path, keys: &Keys) {
    for (tool, result) in [
        ("sigstore-js", sigstore_js(dist, keys)),
        ("ssh-keygen -Y verify", ssh_keygen_verify(dist, keys)),
        ("securesystemslib", in_toto_verify(dist, keys)),
    ] {
        if let Some(result) = result {
            let report = result
                .unwrap_or_else(|report| panic!("{tool} refused {}:\n{report}", dist.display()));
            assert!(!report.contains("FAIL"), "{tool}: {report}");
        }
    }
    let bundles = bundled(dist).len();
    assert!(
        bundles >= 5,
        "two archives, two SBOMs and SHA256SUMS at least: {bundles}"
    );
}

fn copy_folder(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        let path = entry.path();
        if path.is_file() {
            fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

/// `copy_folder`, with the folders inside (a dist folder with its bare
/// binaries, which `sign` reads).
fn copy_tree(from: &Path, to: &Path) {
    copy_folder(from, to);
    for entry in fs::read_dir(from).unwrap().flatten() {
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    }
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

/// A flipped byte in an archive, in a bundle, in `SHA256SUMS` or in the
/// provenance: the other tools and `verify` refuse each, `verify` in one
/// line naming the file.
pub fn check_tampering(clone: &Path, dist: &Path, keys: &Keys, other: &Keys) {
    let sums = sums(dist);
    let archive = sums
        .iter()
        .find(|(path, _)| path.ends_with(".tar.gz"))
        .unwrap()
        .0
        .clone();
    let bundle = format!("{archive}.sigstore.json");
    let provenance = sums
        .iter()
        .find(|(path, _)| path.ends_with(".intoto.jsonl"))
        .unwrap()
        .0
        .clone();
    let scratch = TempDir::new().unwrap();
    // (file to flip, byte, the tools that must refuse, what verify names)
    type Tool = fn(&Path, &Keys) -> Option<Result<String, String>>;
    let cases: [(&str, usize, &[Tool], &str); 4] = [
        (&archive, 1000, &[sigstore_js], &archive),
        // Inside the base64 signature of the bundle.
        (&bundle, 300, &[sigstore_js], &bundle),
        (
            SHA256SUMS_NAME,
            3,
            &[sigstore_js, ssh_keygen_verify],
            "SHA256SUMS",
        ),
        (&provenance, 400, &[in_toto_verify], &provenance),
    ];
    for (index, (file, at, tools, named)) in cases.into_iter().enumerate() {
        let copy = scratch.path().join(index.to_string());
        copy_folder(dist, &copy);
        flip_byte(&copy.join(file), at);
        for tool in tools {
            if let Some(result) = tool(&copy, keys) {
                assert!(
                    result.is_err(),
                    "a flipped byte {at} in {file} passed: {result:?}"
                );
            }
        }
        let verify = output(
            xtask(clone)
                .arg("verify")
                .arg(&copy)
                .arg("--public-key")
                .arg(&keys.public),
        );
        let stderr = stderr_text(&verify);
        assert_eq!(verify.status.code(), Some(1), "{file}: {stderr}");
        let failures: Vec<&str> = stderr
            .lines()
            .filter(|line| line.starts_with("FAIL "))
            .collect();
        assert!(
            !failures.is_empty() && failures.iter().any(|line| line.contains(named)),
            "verify after a flipped byte in {file} names no failure of {named}:\n{stderr}"
        );
        assert!(
            stderr.lines().last().unwrap().starts_with("error: ")
                && stderr
                    .lines()
                    .last()
                    .unwrap()
                    .contains("failed verification"),
            "{stderr}"
        );
    }
    // The same folder, checked against another key: every signature fails.
    let verify = output(
        xtask(clone)
            .arg("verify")
            .arg(dist)
            .arg("--public-key")
            .arg(&other.public),
    );
    let stderr = stderr_text(&verify);
    assert_eq!(verify.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .lines()
            .filter(|line| line.starts_with("FAIL "))
            .count()
            >= 6,
        "{stderr}"
    );
}

const SHA256SUMS_NAME: &str = "SHA256SUMS";

/// A snapshot of every file under `root`: path, link target or contents.
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_symlink() {
                files.push((
                    path.clone(),
                    fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                ));
            } else if meta.is_dir() {
                stack.push(path);
            } else {
                files.push((path.clone(), fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// `deploy --archive` of a genuine archive beside an edited manifest (a new
/// label, a path that climbs out), an unsigned, a wrongly signed and a
/// tampered archive: each refused in one line, before the host changes. `root` holds
/// a release deployed before.
pub fn check_deploy_refusals(clone: &Path, dist: &Path, keys: &Keys, other: &Keys, root: &Path) {
    let scratch = TempDir::new().unwrap();
    let archive = sums(dist)
        .into_iter()
        .find(|(path, _)| path.ends_with("x86_64-unknown-linux-musl.tar.gz"))
        .unwrap()
        .0;
    let before = snapshot(root);

    let unsigned = scratch.path().join("unsigned");
    copy_folder(dist, &unsigned);
    fs::remove_file(unsigned.join(format!("{archive}.sigstore.json"))).unwrap();
    let tampered = scratch.path().join("tampered");
    copy_folder(dist, &tampered);
    flip_byte(&tampered.join(&archive), 5000);
    // The attacker rewrites SHA256SUMS to match, as anyone who can replace
    // the archive can.
    let sum = sha256_of(&fs::read(tampered.join(&archive)).unwrap());
    let sums_text: String = fs::read_to_string(tampered.join("SHA256SUMS"))
        .unwrap()
        .lines()
        .map(|line| match line.split_once("  ") {
            Some((_, path)) if path == archive => format!("{sum}  {path}\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    fs::write(tampered.join("SHA256SUMS"), sums_text).unwrap();
    // The genuine signed files with an edited (unsigned) manifest: a new
    // label, and a version that would climb out of releases/.
    let relabel = |folder: &str, version: &str| {
        let relabelled = scratch.path().join(folder);
        copy_folder(dist, &relabelled);
        edit_manifest(&relabelled, |manifest| {
            manifest["version"] = serde_json::json!(version);
        });
        relabelled.join(&archive)
    };

    // The other half of a mix: the genuine signed files beside the manifest
    // of another release (the commit before), as a mirror could pair them.
    let other_commit = stdout_of(
        Command::new("git")
            .args(["rev-parse", "HEAD~1"])
            .current_dir(clone),
    )
    .trim()
    .to_owned();
    let mixed = scratch.path().join("mixed");
    copy_folder(dist, &mixed);
    edit_manifest(&mixed, |manifest| {
        manifest["stamp"]["commit"] = serde_json::json!(other_commit);
        manifest["stamp"]["commit_short"] = serde_json::json!(other_commit[..7]);
    });
    // A release signed from a tree with uncommitted changes: its commit
    // does not say what was built.
    let dirty_target = scratch.path().join("dirty-target");
    let dirty = dirty_target.join("dist");
    copy_tree(dist, &dirty);
    edit_manifest(&dirty, |manifest| {
        manifest["stamp"]["dirty"] = serde_json::json!(true);
        let describe = format!("{}-dirty", manifest["stamp"]["describe"].as_str().unwrap());
        manifest["stamp"]["describe"] = serde_json::json!(describe);
    });
    let readme = clone.join("README.md");
    let committed = fs::read_to_string(&readme).unwrap();
    fs::write(&readme, format!("{committed}\n<!-- not committed -->\n")).unwrap();
    let signed = output(
        xtask(clone)
            .arg("sign")
            .env("CARGO_TARGET_DIR", &dirty_target),
    );
    fs::write(&readme, committed).unwrap();
    assert!(signed.status.success(), "{}", stderr_text(&signed));
    let verify_dirty = |allow: bool| {
        output(
            xtask(clone)
                .arg("verify")
                .arg(&dirty)
                .arg("--public-key")
                .arg(&keys.public)
                .args(allow.then_some("--allow-dirty")),
        )
    };
    let refused = verify_dirty(false);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr_text(&refused));
    assert!(
        stderr_text(&refused).contains("built from a tree with uncommitted changes"),
        "{}",
        stderr_text(&refused)
    );
    let allowed = verify_dirty(true);
    assert!(allowed.status.success(), "{}", stderr_text(&allowed));

    let cases = [
        (
            mixed.join(&archive),
            keys.public.clone(),
            &*format!("at commit \"{other_commit}\", the signed provenance"),
        ),
        (
            dirty.join(&archive),
            keys.public.clone(),
            "its signed provenance says it was built from a tree with uncommitted changes",
        ),
        (
            relabel("relabelled", "9.9.9"),
            keys.public.clone(),
            "the manifest says version \"9.9.9\"",
        ),
        (
            relabel("climbing", "../../ESCAPED"),
            keys.public.clone(),
            "the manifest says version \"../../ESCAPED\"",
        ),
        (unsigned.join(&archive), keys.public.clone(), "unsigned (no"),
        (
            dist.join(&archive),
            other.public.clone(),
            "(signed with another key)",
        ),
        (
            tampered.join(&archive),
            keys.public.clone(),
            "the bundle's digest is not the file's SHA-256",
        ),
    ];
    for (path, public, expected) in cases {
        let run = output(
            xtask(clone)
                .args(["deploy", "--archive"])
                .arg(&path)
                .arg("--public-key")
                .arg(&public)
                .arg("--root")
                .arg(root)
                .args([
                    "--activate",
                    "true",
                    "--service",
                    "127.0.0.1:9",
                    "--timeout",
                    "2s",
                ]),
        );
        let stderr = stderr_text(&run);
        assert_eq!(run.status.code(), Some(1), "{}: {stderr}", path.display());
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: refusing to deploy") && last.contains(expected),
            "{}: `{last}` lacks `{expected}`",
            path.display()
        );
        assert_eq!(
            snapshot(root),
            before,
            "the refused deploy of {} changed the host",
            path.display()
        );
    }
}

/// Rewrites a release folder's `dist-manifest.json` with `edit`.
fn edit_manifest(folder: &Path, edit: impl FnOnce(&mut Value)) {
    let path = folder.join("dist-manifest.json");
    let mut manifest: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut manifest);
    fs::write(&path, manifest.to_string()).unwrap();
}

/// The image's signature as a verifier finds it: the tag
/// `sha256-<index hex>.sig` in the repository, read through the registry's
/// HTTP API (not our code); its payload names the digest the registry
/// serves for the tag, and `openssl dgst -sha256 -verify` accepts the
/// signature over the payload with the public key.
pub fn check_image_signature(address: &str, repository: &str, tag: &str, keys: &Keys) {
    let get = |path: &str, accept: &str| -> Vec<u8> {
        let run = output(
            Command::new("curl")
                .args(["-sSf", "-H", &format!("Accept: {accept}")])
                .arg(format!("http://{address}/v2/{repository}/{path}")),
        );
        assert!(run.status.success(), "GET {path}: {}", stderr_text(&run));
        run.stdout
    };
    let index = get(
        &format!("manifests/{tag}"),
        "application/vnd.oci.image.index.v1+json",
    );
    let digest = format!("sha256:{}", sha256_of(&index));
    let index: Value = serde_json::from_slice(&index).unwrap();
    let mut digests = vec![digest.clone()];
    digests.extend(
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap().to_owned()),
    );
    let scratch = TempDir::new().unwrap();
    for signed in digests {
        let signature_tag = format!("{}.sig", signed.replace(':', "-"));
        let manifest: Value = serde_json::from_slice(&get(
            &format!("manifests/{signature_tag}"),
            "application/vnd.oci.image.manifest.v1+json",
        ))
        .unwrap();
        let layer = &manifest["layers"][0];
        assert_eq!(
            layer["mediaType"],
            "application/vnd.dev.cosign.simplesigning.v1+json"
        );
        let payload = get(
            &format!("blobs/{}", layer["digest"].as_str().unwrap()),
            "*/*",
        );
        let payload_json: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            payload_json["critical"]["image"]["docker-manifest-digest"],
            signed.as_str()
        );
        assert_eq!(
            payload_json["critical"]["identity"]["docker-reference"],
            format!("{address}/{repository}")
        );
        assert_eq!(
            payload_json["critical"]["type"],
            "cosign container image signature"
        );
        let signature = layer["annotations"]["dev.cosignproject.cosign/signature"]
            .as_str()
            .unwrap();
        let (payload_path, signature_path) = (
            scratch.path().join("payload"),
            scratch.path().join("signature"),
        );
        fs::write(&payload_path, &payload).unwrap();
        let encoded = scratch.path().join("encoded");
        fs::write(&encoded, signature).unwrap();
        let decoded = output(Command::new("base64").arg("-d").arg(&encoded));
        assert!(decoded.status.success());
        fs::write(&signature_path, &decoded.stdout).unwrap();
        let verified = output(
            Command::new("openssl")
                .args(["dgst", "-sha256", "-verify"])
                .arg(&keys.public)
                .arg("-signature")
                .arg(&signature_path)
                .arg(&payload_path),
        );
        assert!(
            verified.status.success()
                && String::from_utf8_lossy(&verified.stdout).contains("Verified OK"),
            "openssl refused the signature of {signed}: {}",
            stderr_text(&verified)
        );
    }
}

fn sha256_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `verify` of the pushed image passes, then refuses it: signed with
/// another key, with the index pushed again with one byte more (the tag
/// now names an unsigned digest), and with the signature removed.
pub fn check_image_refusals(
    clone: &Path,
    address: &str,
    repository: &str,
    tag: &str,
    keys: &Keys,
    other: &Keys,
) {
    let reference = format!("{address}/{repository}:{tag}");
    let verify = |key: &Path| {
        output(
            xtask(clone)
                .args(["verify", &reference, "--public-key"])
                .arg(key),
        )
    };
    let good = verify(&keys.public);
    assert!(good.status.success(), "{}", stderr_text(&good));
    let refused = |run: std::process::Output, expected: &str| {
        let stderr = stderr_text(&run);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(
            stderr
                .lines()
                .any(|line| line.starts_with("FAIL ") && line.contains(expected)),
            "no FAIL line with `{expected}`:\n{stderr}"
        );
    };
    refused(verify(&other.public), "is not signed by key");

    let url = |path: &str| format!("http://{address}/v2/{repository}/{path}");
    let index_type = "application/vnd.oci.image.index.v1+json";
    let index = output(
        Command::new("curl")
            .args(["-sSf", "-H", &format!("Accept: {index_type}")])
            .arg(url(&format!("manifests/{tag}"))),
    )
    .stdout;
    let digest = format!("sha256:{}", sha256_of(&index));
    // The signature removed: its tag now holds a manifest with no layer.
    let empty_config = b"{}";
    let put_blob = |bytes: &[u8]| {
        let digest = format!("sha256:{}", sha256_of(bytes));
        let run = output(
            Command::new("curl")
                .args(["-sSf", "-X", "POST", "-o", "/dev/null", "-D", "-"])
                .arg(url("blobs/uploads/")),
        );
        let headers = String::from_utf8_lossy(&run.stdout).into_owned();
        let location = headers
            .lines()
            .find_map(|line| {
                line.strip_prefix("Location: ")
                    .or_else(|| line.strip_prefix("location: "))
            })
            .unwrap()
            .trim()
            .to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://{address}{location}")
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let scratch = TempDir::new().unwrap();
        let file = scratch.path().join("blob");
        fs::write(&file, bytes).unwrap();
        let put = output(
            Command::new("curl")
                .args([
                    "-sSf",
                    "-X",
                    "PUT",
                    "-H",
                    "Content-Type: application/octet-stream",
                    "--data-binary",
                ])
                .arg(format!("@{}", file.display()))
                .arg(format!("{location}{separator}digest={digest}")),
        );
        assert!(put.status.success(), "{}", stderr_text(&put));
        digest
    };
    let config_digest = put_blob(empty_config);
    let empty = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2, "digest": config_digest},
        "layers": [],
    });
    let put_manifest = |reference: &str, media_type: &str, bytes: &[u8]| {
        let scratch = TempDir::new().unwrap();
        let file = scratch.path().join("manifest");
        fs::write(&file, bytes).unwrap();
        let put = output(
            Command::new("curl")
                .args([
                    "-sSf",
                    "-X",
                    "PUT",
                    "-H",
                    &format!("Content-Type: {media_type}"),
                    "--data-binary",
                ])
                .arg(format!("@{}", file.display()))
                .arg(url(&format!("manifests/{reference}"))),
        );
        assert!(
            put.status.success(),
            "PUT {reference}: {}",
            stderr_text(&put)
        );
    };
    let signature_tag = format!("{}.sig", digest.replace(':', "-"));
    let signature = output(
        Command::new("curl")
            .args([
                "-sSf",
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
            ])
            .arg(url(&format!("manifests/{signature_tag}"))),
    )
    .stdout;
    put_manifest(
        &signature_tag,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&empty).unwrap(),
    );
    refused(verify(&keys.public), "no cosign signature layer");
    put_manifest(
        &signature_tag,
        "application/vnd.oci.image.manifest.v1+json",
        &signature,
    );
    let again = verify(&keys.public);
    assert!(again.status.success(), "{}", stderr_text(&again));

    // The signed index under another tag (a tag moved to it, as to an
    // older release): its signature names the tag it was pushed under.
    put_manifest("9.9.9", index_type, &index);
    let moved = output(
        xtask(clone)
            .args([
                "verify",
                &format!("{address}/{repository}:9.9.9"),
                "--public-key",
            ])
            .arg(&keys.public),
    );
    refused(moved, &format!("it was signed for tag(s) {tag}, not 9.9.9"));
    let pinned = output(
        xtask(clone)
            .args([
                "verify",
                &format!("{address}/{repository}@{digest}"),
                "--public-key",
            ])
            .arg(&keys.public),
    );
    assert!(pinned.status.success(), "{}", stderr_text(&pinned));

    // The index pushed again with one byte more: same content to a reader,
    // another digest, which nobody signed.
    let mut changed = index.clone();
    changed.push(b'\n');
    put_manifest(tag, index_type, &changed);
    refused(verify(&keys.public), "has no signature");
    put_manifest(tag, index_type, &index);
}
