//! `keygen` and the signing key's refusals, as a new user meets them: the
//! key files and the setting keygen writes, then every misconfiguration
//! refused in one line before anything is built, with no secret in the
//! output. (Signed releases themselves are checked by the slow release test
//! in `dist.rs`, against tools we did not write.)

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::*;

const PASSPHRASE: &str = "canary-passphrase-7f3a9c";

/// keygen in `repo`, the private key in `keys_dir`.
fn keygen(repo: &Path, keys_dir: &Path) -> std::process::Output {
    output(
        xtask(repo)
            .arg("keygen")
            .env("XDG_CONFIG_HOME", keys_dir)
            .env("SIGNING_PASSPHRASE", PASSPHRASE),
    )
}

#[test]
fn keygen_writes_a_cosign_key_the_public_key_and_the_setting_and_refusals_are_one_line() {
    let repo = repository();
    let keys_dir = TempDir::new().unwrap();
    let made = keygen(repo.path(), keys_dir.path());
    let stdout = String::from_utf8_lossy(&made.stdout).into_owned();
    assert!(made.status.success(), "{}", stderr_text(&made));
    assert!(!stdout.contains(PASSPHRASE) && !stderr_text(&made).contains(PASSPHRASE));

    // The private key: cosign's encrypted format, readable by its owner only.
    let private = keys_dir.path().join("cargo-xtask/app-signing.key");
    let mode = fs::metadata(&private).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", private.display());
    let text = fs::read_to_string(&private).unwrap();
    assert!(
        text.starts_with("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n"),
        "{text}"
    );
    let body: String = text
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let body_file = keys_dir.path().join("body");
    fs::write(&body_file, &body).unwrap();
    let decoded = output(Command::new("base64").arg("-d").arg(&body_file));
    let json: serde_json::Value = serde_json::from_slice(&decoded.stdout).unwrap();
    assert_eq!(json["kdf"]["name"], "scrypt");
    assert_eq!(
        json["kdf"]["params"],
        serde_json::json!({"N": 32768, "r": 8, "p": 1})
    );
    assert_eq!(json["cipher"]["name"], "nacl/secretbox");

    // The public key, which openssl reads, and the SSH signers line, in
    // the repository, named by the settings.
    let public = repo.path().join("keys/app.pub");
    let read = output(
        Command::new("openssl")
            .args(["pkey", "-pubin", "-noout", "-text", "-in"])
            .arg(&public),
    );
    assert!(read.status.success(), "{}", stderr_text(&read));
    assert!(String::from_utf8_lossy(&read.stdout).contains("NIST CURVE: P-256"));
    let signers = fs::read_to_string(repo.path().join("keys/app.allowed_signers")).unwrap();
    assert!(
        signers.starts_with("app-release namespaces=\"file\" ecdsa-sha2-nistp256 AAAA"),
        "{signers}"
    );
    let cargo_toml = fs::read_to_string(repo.path().join("Cargo.toml")).unwrap();
    assert!(
        cargo_toml
            .contains("\n[workspace.metadata.xtask]\n# The release signing key's public half"),
        "{cargo_toml}"
    );
    assert!(cargo_toml.contains("\npublic-key = \"keys/app.pub\"\n"));
    let key_id = stdout
        .lines()
        .next()
        .unwrap()
        .strip_prefix("key id ")
        .unwrap()
        .to_owned();

    // Another key pair, in another copy: the wrong key for this project.
    let other_repo = repository();
    let other_dir = TempDir::new().unwrap();
    assert!(keygen(other_repo.path(), other_dir.path()).status.success());
    let other_private = other_dir.path().join("cargo-xtask/app-signing.key");

    let passphrase_file = keys_dir.path().join("passphrase");
    fs::write(&passphrase_file, format!("{PASSPHRASE}\n")).unwrap();
    let key_text = fs::read_to_string(&private).unwrap();
    // (arguments, variables, what the error line says)
    type Case<'a> = (&'a [&'a str], Vec<(&'a str, &'a std::ffi::OsStr)>, String);
    let cases: Vec<Case> = vec![
        (&["keygen"], vec![("XDG_CONFIG_HOME", keys_dir.path().as_os_str()), ("SIGNING_PASSPHRASE", PASSPHRASE.as_ref())],
            format!("{} exists, and keygen replaces no key", private.display())),
        (&["sign"], vec![("SIGNING_KEY_FILE", private.as_os_str()), ("SIGNING_PASSPHRASE", "wrong-passphrase".as_ref())],
            "open the signing key in SIGNING_KEY_FILE with the passphrase in SIGNING_PASSPHRASE: the passphrase does not open the key".to_owned()),
        (&["sign"], vec![("SIGNING_KEY", key_text.as_ref()), ("SIGNING_KEY_FILE", private.as_os_str()), ("SIGNING_PASSPHRASE", PASSPHRASE.as_ref())],
            "both SIGNING_KEY and SIGNING_KEY_FILE are set: set one of them".to_owned()),
        (&["sign"], vec![("SIGNING_KEY", key_text.as_ref())],
            "SIGNING_KEY is set but neither SIGNING_PASSPHRASE nor SIGNING_PASSPHRASE_FILE is".to_owned()),
        (&["sign"], vec![("SIGNING_KEY_FILE", other_private.as_os_str()), ("SIGNING_PASSPHRASE_FILE", passphrase_file.as_os_str())],
            format!("is not the one public-key of [workspace.metadata.xtask] names ({key_id})")),
        (&["sign"], vec![],
            format!("the project's public-key ({key_id}) says releases are signed, and no signing key is given")),
        (&["sign"], vec![("SIGNING_KEY_FILE", private.as_os_str()), ("SIGNING_PASSPHRASE", PASSPHRASE.as_ref())],
            "nothing to sign in ".to_owned()),
        // Tasks that compile refuse the secrets before anything runs.
        (&["dist"], vec![("SIGNING_KEY_FILE", private.as_os_str()), ("SIGNING_PASSPHRASE", PASSPHRASE.as_ref())],
            "the signing secrets (SIGNING_KEY_FILE, SIGNING_PASSPHRASE) are set, and a release build runs project code".to_owned()),
        // The apt repository's key is kept from project code the same way.
        (&["dist"], vec![("APT_SIGNING_PASSPHRASE", PASSPHRASE.as_ref())],
            "the signing secrets (APT_SIGNING_PASSPHRASE) are set, and a release build runs project code".to_owned()),
        (&["apt-repo", "apt"], vec![],
            "keys/app-archive-keyring.gpg: make the repository's key first (cargo xtask keygen --apt)".to_owned()),
        (&["apt-repo", "apt", "--keyring", "Cargo.toml"], vec![],
            "read Cargo.toml: not an OpenPGP keyring: the first byte is not a packet header".to_owned()),
        (&["release", "--target", "x86_64", "--allow-dirty"], vec![("SIGNING_PASSPHRASE_FILE", passphrase_file.as_os_str())],
            "are set, and a release build runs project code".to_owned()),
        (&["test", "--fast"], vec![("SIGNING_KEY", key_text.as_ref())],
            "are set, and this task's cargo build runs project code".to_owned()),
        (&["verify", "no-such-folder"], vec![],
            "no-such-folder is neither a folder, a file nor an image REGISTRY/NAME:TAG".to_owned()),
        (&["verify", "--public-key", "Cargo.toml"], vec![],
            "not a P-256 public key in PEM".to_owned()),
    ];
    for (args, vars, expected) in cases {
        let mut command = xtask(repo.path());
        command
            .args(args)
            .env("CARGO_TARGET_DIR", repo.path().join("target"));
        for (name, value) in &vars {
            command.env(name, value);
        }
        let run = output(&mut command);
        let stderr = stderr_text(&run);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ") && last.contains(&expected),
            "{args:?}: `{last}` lacks `{expected}`"
        );
        assert!(
            !stderr.contains("Compiling"),
            "{args:?} built before refusing:\n{stderr}"
        );
        let everything = format!("{}{stderr}", String::from_utf8_lossy(&run.stdout));
        assert!(
            !everything.contains(PASSPHRASE),
            "{args:?} printed the passphrase:\n{everything}"
        );
        assert!(
            !everything.contains(key_text.lines().nth(2).unwrap()),
            "{args:?} printed the key"
        );
    }
    // A weak passphrase, in a project without keys: refused, nothing written.
    let fresh = repository();
    let weak_dir = TempDir::new().unwrap();
    let weak = output(
        xtask(fresh.path())
            .arg("keygen")
            .env("XDG_CONFIG_HOME", weak_dir.path())
            .env("SIGNING_PASSPHRASE", "hunter2"),
    );
    let stderr = stderr_text(&weak);
    assert_eq!(weak.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.lines().last().unwrap_or_default(),
        "error: the passphrase is refused: it has 7 characters, fewer than 12; choose one of at least 12 characters mixing words, digits and signs (e.g. four random words), or generate one: `openssl rand -base64 24`"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert!(
        !weak_dir.path().join("cargo-xtask").exists(),
        "a refused keygen wrote a key"
    );
    assert!(
        !fresh.path().join("keys").exists(),
        "a refused keygen wrote keys/"
    );
    // A project without a public key: verify needs one named.
    let plain = repository();
    let run = output(xtask(plain.path()).arg("verify"));
    assert!(
        stderr_text(&run).trim_end().ends_with("no public key: pass --public-key FILE, or name one as public-key in [workspace.metadata.xtask] (cargo xtask keygen makes a pair)"),
        "{}",
        stderr_text(&run)
    );
}

#[test]
fn keygen_rotate_keeps_the_old_key_accepted_until_its_day_and_replaces_no_file() {
    let repo = repository();
    let keys_dir = TempDir::new().unwrap();
    assert!(keygen(repo.path(), keys_dir.path()).status.success());
    let public = repo.path().join("keys/app.pub");
    let first = fs::read_to_string(&public).unwrap();

    let rotate = |until: &str| {
        output(
            xtask(repo.path())
                .args(["keygen", "--rotate", "--until", until])
                .env("XDG_CONFIG_HOME", keys_dir.path())
                .env("SIGNING_PASSPHRASE", PASSPHRASE),
        )
    };
    let rotated = rotate("2999-12-31");
    let stdout = String::from_utf8_lossy(&rotated.stdout).into_owned();
    assert!(rotated.status.success(), "{}", stderr_text(&rotated));
    let second = fs::read_to_string(&public).unwrap();
    assert_ne!(first, second, "the project's key is new");
    // The old public key, renamed by its id, and the old private key beside
    // the new one.
    let kept: Vec<String> = fs::read_dir(repo.path().join("keys"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("app.") && name.ends_with(".pub") && name != "app.pub")
        .collect();
    let [old_public] = kept.as_slice() else {
        panic!("one old public key expected: {kept:?}");
    };
    assert_eq!(
        fs::read_to_string(repo.path().join("keys").join(old_public)).unwrap(),
        first
    );
    let id = old_public
        .trim_start_matches("app.")
        .trim_end_matches(".pub");
    assert!(
        keys_dir
            .path()
            .join(format!("cargo-xtask/app-signing.{id}.key"))
            .is_file()
    );
    assert!(
        keys_dir
            .path()
            .join("cargo-xtask/app-signing.key")
            .is_file()
    );
    let settings = fs::read_to_string(repo.path().join("Cargo.toml")).unwrap();
    assert!(
        settings.contains(&format!(
            "previous-keys = [{{ key = \"keys/{old_public}\", until = \"2999-12-31\" }}]"
        )),
        "{settings}"
    );
    let signers = fs::read_to_string(repo.path().join("keys/app.allowed_signers")).unwrap();
    assert_eq!(signers.lines().count(), 2, "{signers}");
    assert!(
        signers
            .lines()
            .nth(1)
            .unwrap()
            .contains("valid-before=\"29991231235959Z\""),
        "{signers}"
    );
    assert!(
        stdout.contains("stays accepted until 2999-12-31"),
        "{stdout}"
    );

    // The settings still read (verify names every key it tries), and a
    // second rotation adds to the list.
    let second_rotation = rotate("2999-12-31");
    assert!(
        second_rotation.status.success(),
        "{}",
        stderr_text(&second_rotation)
    );
    let settings = fs::read_to_string(repo.path().join("Cargo.toml")).unwrap();
    let line = settings
        .lines()
        .find(|line| line.starts_with("previous-keys = ["))
        .unwrap();
    assert_eq!(line.matches("key = ").count(), 2, "{line}");
    let verify = output(xtask(repo.path()).args(["verify", "no-such-folder"]));
    assert!(
        stderr_text(&verify).contains("no-such-folder is neither a folder"),
        "{}",
        stderr_text(&verify)
    );

    // A day that is not one is refused before anything changes.
    let before = fs::read_to_string(&public).unwrap();
    let refused = rotate("next week");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr_text(&refused).contains("\"next week\" is not a day written YYYY-MM-DD"),
        "{}",
        stderr_text(&refused)
    );
    assert_eq!(fs::read_to_string(&public).unwrap(), before);
}

/// The build script of the scratch copy, with a hostile part first: it
/// looks for `marker` in its own environment and in every
/// `/proc/*/environ` and `/proc/*/cmdline` it can read, and writes what it
/// found, and how many places it read, to `report`.
fn hostile_build_script(original: &str, marker: &str, report: &Path) -> String {
    let original = original.replacen("fn main() {", "fn original_main() {", 1);
    format!(
        r#"{original}

fn main() {{
    look_for_secrets();
    original_main();
}}

fn look_for_secrets() {{
    let marker: &str = {marker:?};
    let mut found = Vec::new();
    let mut read = 0;
    for (name, value) in std::env::vars_os() {{
        if value.to_string_lossy().contains(marker) {{
            found.push(format!("own environment: {{}}", name.to_string_lossy()));
        }}
    }}
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {{
        for place in ["environ", "cmdline"] {{
            if let Ok(bytes) = std::fs::read(entry.path().join(place)) {{
                read += 1;
                if String::from_utf8_lossy(&bytes).contains(marker) {{
                    found.push(format!("{{}}/{{place}}", entry.path().display()));
                }}
            }}
        }}
    }}
    std::fs::write({report:?}, format!("read {{read}}\n{{}}", found.join("\n"))).unwrap();
}}
"#
    )
}

/// A build script that would steal the passphrase finds nothing on the
/// documented path: a task that compiles refuses to start while the
/// secrets are set (so the script never runs beside them), and built
/// without them the script sees none; `sign` then compiles nothing. The
/// parent shell holds the secrets in its environment for as long as the
/// xtask runs, as the cargo of `cargo xtask` does.
#[test]
fn slow_a_hostile_build_script_never_runs_beside_the_signing_secrets() {
    let repo = repository();
    let keys_dir = TempDir::new().unwrap();
    assert!(keygen(repo.path(), keys_dir.path()).status.success());
    let private = keys_dir.path().join("cargo-xtask/app-signing.key");
    let report = keys_dir.path().join("report");
    let build_rs = repo.path().join("app/build.rs");
    let original = fs::read_to_string(&build_rs).unwrap();
    fs::write(
        &build_rs,
        hostile_build_script(&original, PASSPHRASE, &report),
    )
    .unwrap();
    let target_dir = copies_target_dir();
    let through_a_parent = |task: &[&str], secrets: bool| {
        let mut command = Command::new("sh");
        command
            .args(["-c", "\"$0\" \"$@\"; status=$?; exit $status"])
            .arg(env!("CARGO_BIN_EXE_xtask"))
            .args(task)
            .current_dir(repo.path())
            .env("CARGO", env!("CARGO"))
            .env("CARGO_TARGET_DIR", &target_dir);
        if secrets {
            command
                .env("SIGNING_KEY_FILE", &private)
                .env("SIGNING_PASSPHRASE", PASSPHRASE);
        }
        output(&mut command)
    };

    // With the secrets: refused before cargo runs.
    for task in [
        &["build"][..],
        &["test", "--fast", "-p", "app", "--test", "greeter"],
    ] {
        let refused = through_a_parent(task, true);
        let stderr = stderr_text(&refused);
        assert_eq!(refused.status.code(), Some(1), "{task:?}: {stderr}");
        assert!(
            stderr.contains("are set, and this task's cargo build runs project code"),
            "{task:?}: {stderr}"
        );
        assert!(
            !report.exists(),
            "{task:?}: the build script ran beside the secrets"
        );
    }
    // Without them: the script runs, reads /proc, and finds nothing.
    let built = through_a_parent(&["build"], false);
    assert!(built.status.success(), "{}", stderr_text(&built));
    let found = fs::read_to_string(&report).expect("the build script ran");
    let (read, leaks) = found.split_once('\n').unwrap();
    let read: usize = read.trim_start_matches("read ").parse().unwrap();
    assert!(read > 10, "the build script read only {read} places");
    assert_eq!(leaks, "", "the build script found the passphrase");
    // `sign` with the secrets compiles nothing: the script does not run.
    fs::remove_file(&report).unwrap();
    let signed = through_a_parent(&["sign"], true);
    assert!(
        stderr_text(&signed).contains("nothing to sign in"),
        "{}",
        stderr_text(&signed)
    );
    assert!(!report.exists(), "sign ran the build script");
}
