//! Release signing keys and signatures: ECDSA P-256 over SHA-256, the key
//! type cosign makes by default and every verifier we support reads.
//!
//! - Signatures use deterministic nonces (RFC 6979), so the same bytes
//!   signed with the same key give the same signature, and a signed release
//!   stays bit-reproducible. They are ASN.1 DER, which sigstore-js,
//!   securesystemslib, cosign and `openssl dgst -verify` all expect (the raw
//!   `r‖s` form fails in every one of them).
//! - The private key file is cosign's: a PEM block `ENCRYPTED COSIGN
//!   PRIVATE KEY` whose body is JSON (scrypt N=32768, r=8, p=1 over the
//!   passphrase, NaCl secretbox over the PKCS#8 DER key), which cosign and
//!   skopeo read too. The public key is a plain SPKI `PUBLIC KEY` PEM.
//! - The private key and its passphrase come only from the environment
//!   (`SIGNING_KEY` or `SIGNING_KEY_FILE`, `SIGNING_PASSPHRASE` or
//!   `SIGNING_PASSPHRASE_FILE`), never from arguments; no message here
//!   quotes either.
//!
//! The formats built on these signatures are in `formats`.

pub mod formats;
pub mod openpgp;

use std::path::Path;

use anyhow::{Context, Result, bail};
use base64ct::{Base64, Encoding};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The encrypted private key, as cosign's key file holds it.
pub const KEY_VAR: &str = "SIGNING_KEY";
/// A file holding the encrypted private key (instead of `SIGNING_KEY`).
pub const KEY_FILE_VAR: &str = "SIGNING_KEY_FILE";
/// The passphrase that opens the private key.
pub const PASSPHRASE_VAR: &str = "SIGNING_PASSPHRASE";
/// A file holding the passphrase (instead of `SIGNING_PASSPHRASE`).
pub const PASSPHRASE_FILE_VAR: &str = "SIGNING_PASSPHRASE_FILE";

/// The variables that carry one key and its passphrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyVars {
    /// What the key is, in messages.
    pub name: &'static str,
    pub key: &'static str,
    pub key_file: &'static str,
    pub passphrase: &'static str,
    pub passphrase_file: &'static str,
}

/// The release signing key's.
pub const RELEASE_KEY: KeyVars = KeyVars {
    name: "signing key",
    key: KEY_VAR,
    key_file: KEY_FILE_VAR,
    passphrase: PASSPHRASE_VAR,
    passphrase_file: PASSPHRASE_FILE_VAR,
};

/// The apt repository key's: a key of its own, so that the key every
/// host's apt trusts is not the one CI signs each release with.
pub const APT_KEY: KeyVars = KeyVars {
    name: "repository key",
    key: "APT_SIGNING_KEY",
    key_file: "APT_SIGNING_KEY_FILE",
    passphrase: "APT_SIGNING_PASSPHRASE",
    passphrase_file: "APT_SIGNING_PASSPHRASE_FILE",
};

/// Every variable that carries a secret, for the tasks that remove them
/// from what their commands inherit.
pub const SECRET_VARS: [&str; 8] = [
    RELEASE_KEY.key,
    RELEASE_KEY.key_file,
    RELEASE_KEY.passphrase,
    RELEASE_KEY.passphrase_file,
    APT_KEY.key,
    APT_KEY.key_file,
    APT_KEY.passphrase,
    APT_KEY.passphrase_file,
];

const ENCRYPTED_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
/// cosign's scrypt cost, which it requires exactly ("unexpected kdf
/// parameters" otherwise): log2(N) = 15, r = 8, p = 1.
const SCRYPT_LOG_N: u8 = 15;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;

/// A public key that verifies release signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

/// The private key that signs releases, opened with its passphrase.
pub struct PrivateKey {
    key: SigningKey,
    public: PublicKey,
}

impl PublicKey {
    /// Parses a `PUBLIC KEY` PEM (SPKI) of a P-256 key.
    pub fn from_pem(text: &str) -> Result<PublicKey> {
        let key = VerifyingKey::from_public_key_pem(text.trim()).map_err(|err| {
            anyhow::anyhow!("not a P-256 public key in PEM (`-----BEGIN PUBLIC KEY-----`): {err}")
        })?;
        Ok(PublicKey { key })
    }

    /// Reads a public key file, with an error that names it.
    pub fn read(path: &Path) -> Result<PublicKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the public key {}", path.display()))?;
        PublicKey::from_pem(&text).with_context(|| format!("read {}", path.display()))
    }

    /// The key as a `PUBLIC KEY` PEM, with LF line ends.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 key encodes")
    }

    /// The uncompressed point, as SSH, DER and OpenPGP formats hold it.
    fn point(&self) -> Vec<u8> {
        self.key.to_sec1_point(false).as_bytes().to_vec()
    }

    /// The key whose SEC1 point (`04 ‖ x ‖ y`) is `point`.
    fn from_point(point: &[u8]) -> Result<PublicKey> {
        let key = VerifyingKey::from_sec1_bytes(point)
            .map_err(|_| anyhow::anyhow!("not a point of NIST P-256"))?;
        Ok(PublicKey { key })
    }

    /// The key's id: what the bundles name as their key hint and the DSSE
    /// envelope as its `keyid`. It is securesystemslib's id for this key
    /// (SHA-256 of its canonical JSON form), so in-toto tooling that loads
    /// the PEM finds the envelope's signature by it.
    pub fn key_id(&self) -> String {
        // OLPC canonical JSON: sorted keys, no spaces, strings with only `"`
        // and `\` escaped (the PEM's line breaks stay raw).
        let pem = self.to_pem();
        let canonical = format!(
            "{{\"keytype\":\"ecdsa\",\"keyval\":{{\"public\":\"{pem}\"}},\"scheme\":\"ecdsa-sha2-nistp256\"}}"
        );
        crate::archive::sha256_hex(canonical.as_bytes())
    }

    /// The key in SSH's wire format (`ecdsa-sha2-nistp256`).
    pub fn ssh_blob(&self) -> Vec<u8> {
        let mut blob = Vec::new();
        formats::ssh_string(&mut blob, b"ecdsa-sha2-nistp256");
        formats::ssh_string(&mut blob, b"nistp256");
        formats::ssh_string(&mut blob, &self.point());
        blob
    }

    /// The key as an OpenSSH public key line, `ecdsa-sha2-nistp256 AAAA… comment`.
    pub fn ssh_line(&self, comment: &str) -> String {
        format!(
            "ecdsa-sha2-nistp256 {} {comment}",
            Base64::encode_string(&self.ssh_blob())
        )
    }

    /// Whether `signature` (ASN.1 DER) is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        Signature::from_der(signature)
            .is_ok_and(|signature| self.key.verify(message, &signature).is_ok())
    }

    /// Whether `(r, s)` (big-endian, as SSH's mpints hold them) is this
    /// key's signature over `message`.
    pub fn verifies_scalars(&self, message: &[u8], r: &[u8], s: &[u8]) -> bool {
        let pad = |bytes: &[u8]| -> Option<[u8; 32]> {
            let bytes = bytes.strip_prefix(&[0]).unwrap_or(bytes);
            let mut out = [0u8; 32];
            out.get_mut(32usize.checked_sub(bytes.len())?..)?
                .copy_from_slice(bytes);
            Some(out)
        };
        let (Some(r), Some(s)) = (pad(r), pad(s)) else {
            return false;
        };
        Signature::from_scalars(r, s)
            .is_ok_and(|signature| self.key.verify(message, &signature).is_ok())
    }
}

impl PrivateKey {
    /// A new random key, from the operating system's random source.
    pub fn generate() -> Result<PrivateKey> {
        loop {
            let bytes = random_bytes::<32>()?;
            // A random 32-byte string is a valid scalar but for a chance of
            // about 2^-32; draw again then.
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                return Ok(PrivateKey::from_signing_key(key));
            }
        }
    }

    fn from_signing_key(key: SigningKey) -> PrivateKey {
        let public = PublicKey {
            key: *key.verifying_key(),
        };
        PrivateKey { key, public }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The signature over `message`, ASN.1 DER.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: Signature = self.key.sign(message);
        let der: DerSignature = signature.to_der();
        der.as_bytes().to_vec()
    }

    /// `(r, s)` of the signature over `message`, for SSH's format.
    pub fn sign_scalars(&self, message: &[u8]) -> ([u8; 32], [u8; 32]) {
        let signature: Signature = self.key.sign(message);
        let (r, s) = signature.split_bytes();
        (r.into(), s.into())
    }

    /// `(r, s)` of the signature over a SHA-256 digest computed elsewhere,
    /// as OpenPGP signs: it hashes its own framing with the data.
    pub fn sign_digest_scalars(&self, digest: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let signature: Signature = self
            .key
            .sign_prehash(digest)
            .expect("a 32-byte digest is a valid prehash");
        let (r, s) = signature.split_bytes();
        (r.into(), s.into())
    }

    /// The key encrypted with `passphrase` in cosign's format.
    pub fn encrypt(&self, passphrase: &[u8]) -> Result<String> {
        use crypto_secretbox::aead::{Aead, KeyInit};
        let der = self
            .key
            .to_pkcs8_der()
            .map_err(|err| anyhow::anyhow!("encode the private key: {err}"))?;
        let salt = random_bytes::<32>()?;
        let nonce = random_bytes::<24>()?;
        let box_key = box_key(passphrase, &salt)?;
        let ciphertext = crypto_secretbox::XSalsa20Poly1305::new(&box_key.into())
            .encrypt(&nonce.into(), der.as_bytes())
            .map_err(|_| anyhow::anyhow!("encrypt the private key"))?;
        let body = json!({
            "kdf": {
                "name": "scrypt",
                "params": {"N": 1u32 << SCRYPT_LOG_N, "r": SCRYPT_R, "p": SCRYPT_P},
                "salt": Base64::encode_string(&salt),
            },
            "cipher": {"name": "nacl/secretbox", "nonce": Base64::encode_string(&nonce)},
            "ciphertext": Base64::encode_string(&ciphertext),
        });
        Ok(pem_block(
            ENCRYPTED_LABEL,
            serde_json::to_string(&body)?.as_bytes(),
        ))
    }

    /// Opens a key file in cosign's format. The errors say what is wrong
    /// with the file or the passphrase, never what either holds.
    pub fn decrypt(text: &str, passphrase: &[u8]) -> Result<PrivateKey> {
        use crypto_secretbox::aead::{Aead, KeyInit};
        let body = pem_body(text, ENCRYPTED_LABEL)?;
        let body: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| anyhow::anyhow!("the key's body is not cosign's JSON"))?;
        let field = |pointer: &str| {
            body.pointer(pointer)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("the key has no `{pointer}`"))
        };
        if field("/kdf/name")? != "scrypt" || field("/cipher/name")? != "nacl/secretbox" {
            bail!("the key is not encrypted with scrypt and nacl/secretbox");
        }
        let params = &body["kdf"]["params"];
        if (
            params["N"].as_u64(),
            params["r"].as_u64(),
            params["p"].as_u64(),
        ) != (
            Some(1u64 << SCRYPT_LOG_N),
            Some(SCRYPT_R.into()),
            Some(SCRYPT_P.into()),
        ) {
            bail!("the key's scrypt parameters are not cosign's (N=32768, r=8, p=1)");
        }
        let decode = |pointer: &str| -> Result<Vec<u8>> {
            Base64::decode_vec(&field(pointer)?)
                .map_err(|_| anyhow::anyhow!("the key's `{pointer}` is not base64"))
        };
        let (salt, nonce, ciphertext) = (
            decode("/kdf/salt")?,
            decode("/cipher/nonce")?,
            decode("/ciphertext")?,
        );
        let nonce: [u8; 24] = nonce
            .try_into()
            .map_err(|_| anyhow::anyhow!("the key's nonce is not 24 bytes"))?;
        let box_key = box_key(passphrase, &salt)?;
        let der = crypto_secretbox::XSalsa20Poly1305::new(&box_key.into())
            .decrypt(&nonce.into(), ciphertext.as_slice())
            .map_err(|_| anyhow::anyhow!("the passphrase does not open the key"))?;
        let key = SigningKey::from_pkcs8_der(&der)
            .map_err(|_| anyhow::anyhow!("the key is not a P-256 key"))?;
        Ok(PrivateKey::from_signing_key(key))
    }

    /// The signing key from the environment, if one is given: `SIGNING_KEY`
    /// or `SIGNING_KEY_FILE`, opened with `SIGNING_PASSPHRASE` or
    /// `SIGNING_PASSPHRASE_FILE`; with the variable it came from.
    pub fn from_env() -> Result<Option<(PrivateKey, &'static str)>> {
        PrivateKey::from_vars(RELEASE_KEY)
    }

    /// The key `vars` name, if it is given, with the variable it came from.
    pub fn from_vars(vars: KeyVars) -> Result<Option<(PrivateKey, &'static str)>> {
        let Some((key_text, key_source)) =
            secrets_of(vars).key.clone().map_err(anyhow::Error::msg)?
        else {
            return Ok(None);
        };
        let Some((passphrase, passphrase_source)) = passphrase_of(vars)? else {
            bail!(
                "{key_source} is set but neither {} nor {} is: give the key's passphrase in one of them",
                vars.passphrase,
                vars.passphrase_file
            );
        };
        let key = PrivateKey::decrypt(&key_text, passphrase.as_bytes()).with_context(|| {
            format!(
                "open the {} in {key_source} with the passphrase in {passphrase_source}",
                vars.name
            )
        })?;
        Ok(Some((key, key_source)))
    }
}

/// The passphrase `vars` name, with the variable it came from. A file's one
/// trailing newline is not part of the passphrase.
pub fn passphrase_of(vars: KeyVars) -> Result<Option<(String, &'static str)>> {
    let passphrase = secrets_of(vars)
        .passphrase
        .clone()
        .map_err(anyhow::Error::msg)?;
    Ok(passphrase.map(|(text, source)| {
        let text = if source == vars.passphrase_file {
            text.strip_suffix('\n').unwrap_or(&text).to_owned()
        } else {
            text
        };
        (text, source)
    }))
}

/// The secrets as the process started with them: read once, then removed
/// from the environment (`take_secrets_from_env`), so that no command a task
/// runs (cargo, build scripts, skopeo, ssh) inherits them.
struct Secrets {
    key: std::result::Result<Option<(String, &'static str)>, String>,
    passphrase: std::result::Result<Option<(String, &'static str)>, String>,
}

static RELEASE_SECRETS: std::sync::OnceLock<Secrets> = std::sync::OnceLock::new();
static APT_SECRETS: std::sync::OnceLock<Secrets> = std::sync::OnceLock::new();

fn secrets_of(vars: KeyVars) -> &'static Secrets {
    let cell = if vars == APT_KEY {
        &APT_SECRETS
    } else {
        &RELEASE_SECRETS
    };
    cell.get_or_init(|| read_secrets(vars))
}

fn read_secrets(vars: KeyVars) -> Secrets {
    let read = |var, file_var| secret_from_env(var, file_var).map_err(|err| format!("{err:#}"));
    Secrets {
        key: read(vars.key, vars.key_file),
        passphrase: read(vars.passphrase, vars.passphrase_file),
    }
}

/// The secret variables that were set when the process started.
static GIVEN: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();

/// Reads the signing secrets and removes their variables from this
/// process's environment, so that no command a task runs inherits them.
/// Called first thing in `main`, before any thread.
///
/// `remove_var` alone leaves the strings in the environment block the
/// kernel shows as `/proc/<pid>/environ`, which any process of the same
/// user can read: their bytes are overwritten in place. With a secret
/// given, the process also stops being dumpable, which makes its
/// `/proc/<pid>/{environ,mem,fd}` unreadable to other processes of the
/// user and refuses them ptrace.
pub fn take_secrets_from_env() {
    let given: Vec<&'static str> = SECRET_VARS
        .into_iter()
        .filter(|var| std::env::var_os(var).is_some_and(|value| !value.is_empty()))
        .collect();
    let _ = RELEASE_SECRETS.set(read_secrets(RELEASE_KEY));
    let _ = APT_SECRETS.set(read_secrets(APT_KEY));
    for var in SECRET_VARS {
        scrub_from_environment_block(var);
        // SAFETY: called first thing in `main`, before any thread exists
        // that could read the environment.
        unsafe { std::env::remove_var(var) };
    }
    let any = !given.is_empty();
    let _ = GIVEN.set(given);
    if any {
        #[cfg(target_os = "linux")]
        // SAFETY: prctl with PR_SET_DUMPABLE only changes this process's
        // flag.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
    }
}

/// Overwrites the value of `var` where the environment block holds it.
fn scrub_from_environment_block(var: &str) {
    let Ok(name) = std::ffi::CString::new(var) else {
        return;
    };
    // SAFETY: single-threaded (see `take_secrets_from_env`); getenv returns
    // a pointer into the process's environment strings, which are writable
    // and outlive this call; strlen stops at the string's own NUL, and only
    // the bytes before it are written.
    unsafe {
        let value = libc::getenv(name.as_ptr());
        if value.is_null() {
            return;
        }
        let length = libc::strlen(value);
        for at in 0..length {
            std::ptr::write_volatile(value.add(at), b'*' as libc::c_char);
        }
    }
}

/// Whether the signing secrets were given to this process.
pub fn secrets_given() -> bool {
    GIVEN.get().is_some_and(|given| !given.is_empty())
}

/// Refuses to go on to `what` (a step that compiles or runs project code:
/// build scripts, proc macros, tests, the service) while the signing
/// secrets were given: cargo, which started this process, still holds them
/// in its environment, where that code could read them.
pub fn refuse_project_code_with_secrets(what: &str) -> Result<()> {
    if secrets_given() {
        bail!(
            "the signing secrets ({}) are set, and {what} runs project code (build scripts, proc macros, tests), which must not see them: run it without them, then sign what it built with `cargo xtask sign` (docs/signing.md, \"Where the secrets go\")",
            GIVEN
                .get()
                .map(|given| given.join(", "))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Refuses the secrets when cargo compiled this very xtask on the way here
/// (`cargo xtask` on a fresh clone, or after a change to the xtask): the
/// compiler and the build scripts of its dependencies ran with them in
/// their environment. The xtask is to be built first, without them.
pub fn check_not_compiled_with_secrets() -> Result<()> {
    if !secrets_given() {
        return Ok(());
    }
    let parent = std::os::unix::process::parent_id();
    let parent_is_cargo = std::fs::read_to_string(format!("/proc/{parent}/comm"))
        .is_ok_and(|name| name.trim() == "cargo");
    if !parent_is_cargo {
        return Ok(());
    }
    let (Some(built), Some(cargo_started)) = (
        std::fs::metadata("/proc/self/exe")
            .and_then(|meta| meta.modified())
            .ok(),
        process_start(parent),
    ) else {
        return Ok(());
    };
    if built > cargo_started {
        bail!(
            "this xtask was compiled by the `cargo xtask` that runs it, with the signing secrets in cargo's environment, where the compiler and build scripts could read them: build the xtask first without them (e.g. `cargo xtask help`), then give them to the signing step alone; if that build ran code you do not trust, rotate the key (cargo xtask keygen --rotate)"
        );
    }
    Ok(())
}

/// When process `pid` started, from its `stat` and the boot time.
fn process_start(pid: u32) -> Option<std::time::SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces; `starttime` is field 22, the 20th after it.
    let after_name = stat.rsplit_once(')')?.1;
    let ticks: u64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf only reads a system setting.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    let started = std::time::Duration::from_millis(boot * 1000 + ticks * 1000 / per_second.max(1));
    Some(std::time::UNIX_EPOCH + started)
}

/// The value of `var`, else the contents of the file `file_var` names;
/// with the variable's name, for messages.
fn secret_from_env(
    var: &'static str,
    file_var: &'static str,
) -> Result<Option<(String, &'static str)>> {
    let direct = std::env::var(var).ok().filter(|value| !value.is_empty());
    let file = std::env::var_os(file_var).filter(|value| !value.is_empty());
    match (direct, file) {
        (Some(_), Some(_)) => bail!("both {var} and {file_var} are set: set one of them"),
        (Some(value), None) => Ok(Some((value, var))),
        (None, Some(path)) => {
            let path = Path::new(&path);
            let value = std::fs::read_to_string(path)
                .with_context(|| format!("read the file {file_var} names ({})", path.display()))?;
            Ok(Some((value, file_var)))
        }
        (None, None) => Ok(None),
    }
}

/// The secretbox key scrypt derives from the passphrase.
fn box_key(passphrase: &[u8], salt: &[u8]) -> Result<[u8; 32]> {
    let params = scrypt::Params::new(SCRYPT_LOG_N, SCRYPT_R, SCRYPT_P)
        .map_err(|err| anyhow::anyhow!("scrypt parameters: {err}"))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(passphrase, salt, &params, &mut key)
        .map_err(|err| anyhow::anyhow!("derive the key from the passphrase: {err}"))?;
    Ok(key)
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    use std::io::Read;
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes)
}

/// A PEM block: base64 in 64-character lines between the labels.
fn pem_block(label: &str, body: &[u8]) -> String {
    let encoded = Base64::encode_string(body);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// The bytes of the PEM block labelled `label` in `text`.
fn pem_body(text: &str, label: &str) -> Result<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let inner = text
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(inner, _)| inner)
        .with_context(|| {
            format!("not a `{label}` PEM block (a key written by `cargo xtask keygen` or `cosign generate-key-pair`)")
        })?;
    let joined: String = inner.split_whitespace().collect();
    Base64::decode_vec(&joined).map_err(|_| anyhow::anyhow!("the `{label}` block is not base64"))
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_cosigns_format_and_sign_deterministically() {
        let key = PrivateKey::generate().unwrap();
        let file = key.encrypt(b"correct horse").unwrap();
        assert!(file.starts_with("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n"));
        let opened = PrivateKey::decrypt(&file, b"correct horse").unwrap();
        assert_eq!(opened.public(), key.public());
        let error = PrivateKey::decrypt(&file, b"wrong").err().unwrap();
        assert_eq!(error.to_string(), "the passphrase does not open the key");

        let signature = key.sign(b"bytes");
        assert_eq!(signature, opened.sign(b"bytes"), "RFC 6979: deterministic");
        assert_eq!(signature[0], 0x30, "ASN.1 DER");
        assert!(key.public().verifies(b"bytes", &signature));
        assert!(!key.public().verifies(b"bytez", &signature));
        let other = PrivateKey::generate().unwrap();
        assert!(!other.public().verifies(b"bytes", &signature));

        let (r, s) = key.sign_scalars(b"bytes");
        assert!(key.public().verifies_scalars(b"bytes", &r, &s));
        assert!(!key.public().verifies_scalars(b"other", &r, &s));

        let pem = key.public().to_pem();
        assert_eq!(PublicKey::from_pem(&pem).unwrap(), *key.public());
        assert_eq!(key.public().key_id().len(), 64);
    }

    #[test]
    fn malformed_key_files_are_refused_with_what_is_wrong() {
        let key = PrivateKey::generate().unwrap();
        let file = key.encrypt(b"pass").unwrap();
        let body = pem_body(&file, ENCRYPTED_LABEL).unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        json["kdf"]["params"]["N"] = 16384.into();
        let weak = pem_block(ENCRYPTED_LABEL, json.to_string().as_bytes());
        let cases = [
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "not a `ENCRYPTED COSIGN PRIVATE KEY` PEM block",
            ),
            (weak.as_str(), "scrypt parameters are not cosign's"),
        ];
        for (text, expected) in cases {
            let error = PrivateKey::decrypt(text, b"pass")
                .err()
                .unwrap()
                .to_string();
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains("pass\""), "{error}");
        }
    }
}
