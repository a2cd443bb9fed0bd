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
        (&["dist"], vec![("SIGNING_KEY_FILE", private.as_os_str()), ("SIGNING_PASSPHRASE", "wrong-passphrase".as_ref())],
            "open the signing key in SIGNING_KEY_FILE with the passphrase in SIGNING_PASSPHRASE: the passphrase does not open the key".to_owned()),
        (&["dist"], vec![("SIGNING_KEY", key_text.as_ref()), ("SIGNING_KEY_FILE", private.as_os_str()), ("SIGNING_PASSPHRASE", PASSPHRASE.as_ref())],
            "both SIGNING_KEY and SIGNING_KEY_FILE are set: set one of them".to_owned()),
        (&["dist"], vec![("SIGNING_KEY", key_text.as_ref())],
            "SIGNING_KEY is set but neither SIGNING_PASSPHRASE nor SIGNING_PASSPHRASE_FILE is".to_owned()),
        (&["dist"], vec![("SIGNING_KEY_FILE", other_private.as_os_str()), ("SIGNING_PASSPHRASE_FILE", passphrase_file.as_os_str())],
            format!("is not the one public-key of [workspace.metadata.xtask] names ({key_id})")),
        (&["release", "--target", "x86_64", "--allow-dirty"], vec![],
            format!("the project's public-key ({key_id}) says releases are signed, and no signing key is given")),
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
