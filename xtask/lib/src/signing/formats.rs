//! The signature formats a release carries, each written and checked here:
//!
//! - Sigstore bundle v0.3 (`<file>.sigstore.json`): a message signature
//!   with the file's SHA-256 and the key named by its hint, no transparency
//!   log. sigstore-js and cosign (`verify-blob --key … --insecure-ignore-tlog`)
//!   verify it offline. Those verifiers do not compare the recorded digest
//!   with the file when there is no log entry, so `check_bundle` does.
//! - SSH signatures (`SHA256SUMS.sig`, `ssh-keygen -Y sign` format,
//!   namespace `file`): OpenSSH's `ssh-keygen -Y verify` checks them with
//!   nothing but an `allowed_signers` line.
//! - DSSE envelopes (the provenance): the in-toto statement signed over
//!   DSSE's pre-authentication encoding.

use anyhow::{Context, Result, bail};
use base64ct::{Base64, Encoding};
use serde_json::{Value, json};

use super::{PrivateKey, PublicKey, sha256};

pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// What the SSH signature of a file signs for: `ssh-keygen -Y verify -n file`.
pub const SSH_NAMESPACE: &str = "file";
/// The payload type of an in-toto statement in a DSSE envelope.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// A Sigstore bundle v0.3 for `bytes`, one line of JSON and a newline.
pub fn bundle(key: &PrivateKey, bytes: &[u8]) -> Vec<u8> {
    let value = json!({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": key.public().key_id()},
            "tlogEntries": [],
        },
        "messageSignature": {
            "messageDigest": {
                "algorithm": "SHA2_256",
                "digest": Base64::encode_string(&sha256(bytes)),
            },
            "signature": Base64::encode_string(&key.sign(bytes)),
        },
    });
    let mut text = serde_json::to_vec(&value).expect("JSON serializes");
    text.push(b'\n');
    text
}

/// Checks a bundle against the file it signs: its media type, the key
/// hint, the recorded digest against the file, and the signature.
pub fn check_bundle(key: &PublicKey, bundle: &[u8], bytes: &[u8]) -> Result<()> {
    let value: Value = serde_json::from_slice(bundle).context("the bundle is not JSON")?;
    if value["mediaType"] != BUNDLE_MEDIA_TYPE {
        bail!("the bundle is not a Sigstore bundle v0.3");
    }
    let hint = value["verificationMaterial"]["publicKey"]["hint"]
        .as_str()
        .unwrap_or_default();
    if hint != key.key_id() {
        bail!(
            "the bundle names key {hint}, not {} (signed with another key)",
            key.key_id()
        );
    }
    let signature = &value["messageSignature"];
    let decode = |field: &Value| Base64::decode_vec(field.as_str().unwrap_or_default()).ok();
    if signature["messageDigest"]["algorithm"] != "SHA2_256"
        || decode(&signature["messageDigest"]["digest"]) != Some(sha256(bytes).to_vec())
    {
        bail!("the bundle's digest is not the file's SHA-256 (the file or the bundle was changed)");
    }
    let der = decode(&signature["signature"]).context("the bundle's signature is not base64")?;
    if !key.verifies(bytes, &der) {
        bail!(
            "the bundle's signature does not verify with the key (the file or the bundle was changed)"
        );
    }
    Ok(())
}

/// Appends an SSH `string`: a big-endian u32 length, then the bytes.
pub fn ssh_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).expect("short").to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends an SSH `mpint` of a non-negative big-endian number.
fn ssh_mpint(out: &mut Vec<u8>, number: &[u8]) {
    let trimmed: Vec<u8> = number
        .iter()
        .copied()
        .skip_while(|&byte| byte == 0)
        .collect();
    let mut bytes = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_some_and(|&byte| byte & 0x80 != 0) {
        bytes.push(0);
    }
    bytes.extend_from_slice(&trimmed);
    ssh_string(out, &bytes);
}

/// What an SSH signature signs: the magic, the namespace, the hash
/// algorithm and the hash of the message (OpenSSH's PROTOCOL.sshsig).
fn sshsig_signed_data(message: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha512};
    let mut data = b"SSHSIG".to_vec();
    ssh_string(&mut data, SSH_NAMESPACE.as_bytes());
    ssh_string(&mut data, b"");
    ssh_string(&mut data, b"sha512");
    ssh_string(&mut data, &Sha512::digest(message));
    data
}

/// An armored SSH signature of `message`, as `ssh-keygen -Y sign -n file`
/// writes it.
pub fn ssh_signature(key: &PrivateKey, message: &[u8]) -> Vec<u8> {
    let (r, s) = key.sign_scalars(&sshsig_signed_data(message));
    let mut scalars = Vec::new();
    ssh_mpint(&mut scalars, &r);
    ssh_mpint(&mut scalars, &s);
    let mut signature = Vec::new();
    ssh_string(&mut signature, b"ecdsa-sha2-nistp256");
    ssh_string(&mut signature, &scalars);

    let mut blob = b"SSHSIG".to_vec();
    blob.extend_from_slice(&1u32.to_be_bytes());
    ssh_string(&mut blob, &key.public().ssh_blob());
    ssh_string(&mut blob, SSH_NAMESPACE.as_bytes());
    ssh_string(&mut blob, b"");
    ssh_string(&mut blob, b"sha512");
    ssh_string(&mut blob, &signature);

    let encoded = Base64::encode_string(&blob);
    let mut text = "-----BEGIN SSH SIGNATURE-----\n".to_owned();
    for line in encoded.as_bytes().chunks(70) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str("-----END SSH SIGNATURE-----\n");
    text.into_bytes()
}

/// Reads SSH `string`s off the front of a buffer.
struct SshReader<'a>(&'a [u8]);

impl<'a> SshReader<'a> {
    fn string(&mut self) -> Result<&'a [u8]> {
        let length = self.0.get(..4).context("the signature is truncated")?;
        let length = u32::from_be_bytes(length.try_into().expect("4 bytes")) as usize;
        let bytes = self
            .0
            .get(4..4 + length)
            .context("the signature is truncated")?;
        self.0 = &self.0[4 + length..];
        Ok(bytes)
    }
}

/// Checks an armored SSH signature over `message` against the key.
pub fn check_ssh_signature(key: &PublicKey, armored: &[u8], message: &[u8]) -> Result<()> {
    let text = std::str::from_utf8(armored).context("the SSH signature is not text")?;
    let inner = text
        .split_once("-----BEGIN SSH SIGNATURE-----")
        .and_then(|(_, rest)| rest.split_once("-----END SSH SIGNATURE-----"))
        .map(|(inner, _)| inner)
        .context("not an armored SSH signature")?;
    let joined: String = inner.split_whitespace().collect();
    let blob = Base64::decode_vec(&joined)
        .map_err(|_| anyhow::anyhow!("the SSH signature is not base64"))?;
    let rest = blob
        .strip_prefix(b"SSHSIG\x00\x00\x00\x01")
        .context("not an SSHSIG version 1 signature")?;
    let mut reader = SshReader(rest);
    let public = reader.string()?;
    let namespace = reader.string()?;
    let _reserved = reader.string()?;
    let hash = reader.string()?;
    let signature = reader.string()?;
    if public != key.ssh_blob().as_slice() {
        bail!("the SSH signature was made with another key");
    }
    if namespace != SSH_NAMESPACE.as_bytes() || hash != b"sha512" {
        bail!("the SSH signature is not for namespace `file` with sha512");
    }
    let mut signature = SshReader(signature);
    if signature.string()? != b"ecdsa-sha2-nistp256" {
        bail!("the SSH signature is not ecdsa-sha2-nistp256");
    }
    let mut scalars = SshReader(signature.string()?);
    let (r, s) = (scalars.string()?, scalars.string()?);
    if !key.verifies_scalars(&sshsig_signed_data(message), r, s) {
        bail!(
            "the SSH signature does not verify with the key (the file or the signature was changed)"
        );
    }
    Ok(())
}

/// DSSE's pre-authentication encoding of a payload and its type.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut encoded = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    encoded.extend_from_slice(payload);
    encoded
}

/// A DSSE envelope of an in-toto statement, signed with the key (its id as
/// `keyid`), one line of JSON and a newline (an `.intoto.jsonl` line).
pub fn dsse_envelope(key: &PrivateKey, statement: &[u8]) -> Vec<u8> {
    let signature = key.sign(&pae(IN_TOTO_PAYLOAD_TYPE, statement));
    let value = json!({
        "payloadType": IN_TOTO_PAYLOAD_TYPE,
        "payload": Base64::encode_string(statement),
        "signatures": [{
            "keyid": key.public().key_id(),
            "sig": Base64::encode_string(&signature),
        }],
    });
    let mut text = serde_json::to_vec(&value).expect("JSON serializes");
    text.push(b'\n');
    text
}

/// Checks a DSSE envelope against the key and returns the statement it
/// signs.
pub fn check_dsse_envelope(key: &PublicKey, envelope: &[u8]) -> Result<Vec<u8>> {
    let value: Value = serde_json::from_slice(envelope).context("the envelope is not JSON")?;
    if value["payloadType"] != IN_TOTO_PAYLOAD_TYPE {
        bail!("the envelope does not hold an in-toto statement");
    }
    let payload = Base64::decode_vec(value["payload"].as_str().unwrap_or_default())
        .map_err(|_| anyhow::anyhow!("the envelope's payload is not base64"))?;
    let signed = pae(IN_TOTO_PAYLOAD_TYPE, &payload);
    let verified = value["signatures"].as_array().is_some_and(|signatures| {
        signatures.iter().any(|signature| {
            signature["keyid"] == key.key_id().as_str()
                && Base64::decode_vec(signature["sig"].as_str().unwrap_or_default())
                    .is_ok_and(|der| key.verifies(&signed, &der))
        })
    });
    if !verified {
        bail!(
            "no signature in the envelope verifies with the key (signed with another key, or changed)"
        );
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each format verifies with the key that made it and fails for a
    /// flipped byte anywhere (message or signature) and for another key.
    #[test]
    fn every_format_verifies_and_fails_for_a_flipped_byte_or_another_key() {
        let key = PrivateKey::generate().unwrap();
        let other = PrivateKey::generate().unwrap();
        let message = b"0123  app.tar.gz\n".to_vec();
        type Check = fn(&PublicKey, &[u8], &[u8]) -> Result<()>;
        let formats: [(&str, Vec<u8>, Check); 3] = [
            ("bundle", bundle(&key, &message), check_bundle),
            ("ssh", ssh_signature(&key, &message), check_ssh_signature),
            (
                "dsse",
                dsse_envelope(&key, &message),
                |key, envelope, message| {
                    let payload = check_dsse_envelope(key, envelope)?;
                    anyhow::ensure!(payload == message, "another payload");
                    Ok(())
                },
            ),
        ];
        for (name, signature, check) in formats {
            check(key.public(), &signature, &message)
                .unwrap_or_else(|err| panic!("{name}: {err:#}"));
            assert!(
                check(other.public(), &signature, &message).is_err(),
                "{name}: another key"
            );
            let mut flipped = message.clone();
            flipped[0] ^= 1;
            assert!(
                check(key.public(), &signature, &flipped).is_err(),
                "{name}: flipped message"
            );
            // A flipped bit inside the signed material (not the armor).
            let middle = signature.len() / 2;
            let mut tampered = signature.clone();
            tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
            assert!(
                check(key.public(), &tampered, &message).is_err(),
                "{name}: flipped signature"
            );
        }
        assert_eq!(
            bundle(&key, &message),
            bundle(&key, &message),
            "signatures are deterministic"
        );
    }
}
