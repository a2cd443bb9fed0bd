//! OpenPGP (RFC 4880, version 4 keys and signatures) for the apt
//! repository: apt checks `InRelease` and `Release.gpg` with `gpgv`
//! against the keyring a host's `signed-by=` names, so the repository key
//! must be an OpenPGP key. It is the same kind of key as the release key,
//! ECDSA P-256 over SHA-256 (public key algorithm 19), which gpgv has read
//! since GnuPG 2.1, written here packet by packet rather than through a
//! GnuPG home directory:
//!
//! - signatures use RFC 6979 nonces, so the same index signed at the same
//!   time gives the same bytes;
//! - the key's creation time is part of its fingerprint, so it is stored
//!   in the keyring file, which is the one place the key lives publicly;
//!   the signing task reads it back from there.
//!
//! Only what apt needs is written: a public key with one user id and its
//! self-signature, binary-document signatures (armored, `Release.gpg`) and
//! cleartext signatures (`InRelease`).

use anyhow::{Context, Result, bail};
use base64ct::{Base64, Encoding};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::{PrivateKey, PublicKey};

/// RFC 4880 9.1: ECDSA.
const ALGORITHM_ECDSA: u8 = 19;
/// RFC 4880 9.4: SHA256.
const HASH_SHA256: u8 = 8;
/// RFC 6637 11: the OID of NIST P-256, without its DER tag and length.
const OID_P256: [u8; 8] = [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];

const TAG_SIGNATURE: u8 = 2;
const TAG_PUBLIC_KEY: u8 = 6;
const TAG_USER_ID: u8 = 13;

/// Signature types (RFC 4880 5.2.1).
const SIGNATURE_BINARY: u8 = 0x00;
const SIGNATURE_TEXT: u8 = 0x01;
const SIGNATURE_POSITIVE_CERTIFICATION: u8 = 0x13;

/// A public key as OpenPGP holds it: the point and the creation time, which
/// together make the fingerprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub key: PublicKey,
    pub created: u32,
}

impl Certificate {
    /// The public-key packet's body (version 4).
    fn body(&self) -> Vec<u8> {
        let mut body = vec![4];
        body.extend_from_slice(&self.created.to_be_bytes());
        body.push(ALGORITHM_ECDSA);
        body.push(OID_P256.len() as u8);
        body.extend_from_slice(&OID_P256);
        mpi(&mut body, &self.key.point());
        body
    }

    /// The v4 fingerprint: SHA-1 over the key packet, as RFC 4880 12.2
    /// defines it.
    pub fn fingerprint(&self) -> [u8; 20] {
        let body = self.body();
        let mut hasher = Sha1::new();
        hasher.update([0x99]);
        hasher.update((body.len() as u16).to_be_bytes());
        hasher.update(&body);
        hasher.finalize().into()
    }

    /// The fingerprint in upper-case hex, as `gpg --show-keys` prints it.
    pub fn fingerprint_hex(&self) -> String {
        self.fingerprint()
            .iter()
            .map(|byte| format!("{byte:02X}"))
            .collect()
    }

    /// Reads the first public key of a binary keyring (what `keygen --apt`
    /// wrote, or any OpenPGP certificate of a P-256 ECDSA key): checks the
    /// packet's framing, version, algorithm and curve.
    pub fn parse(bytes: &[u8]) -> Result<Certificate> {
        let (tag, body, _) = packet(bytes).context("not an OpenPGP keyring")?;
        if tag != TAG_PUBLIC_KEY {
            bail!("the keyring starts with an OpenPGP packet of tag {tag}, not a public key (6)");
        }
        let [version, c0, c1, c2, c3, algorithm, oid_length, rest @ ..] = body else {
            bail!("the public key packet is {} bytes, too short", body.len());
        };
        if *version != 4 {
            bail!("the public key is OpenPGP version {version}; only version 4 is read");
        }
        if *algorithm != ALGORITHM_ECDSA {
            bail!("the public key's algorithm is {algorithm}, not ECDSA (19)");
        }
        let (oid, rest) = rest
            .split_at_checked(usize::from(*oid_length))
            .context("the public key's curve OID is cut short")?;
        if oid != OID_P256 {
            bail!("the public key's curve is not NIST P-256");
        }
        let [bits_high, bits_low, point @ ..] = rest else {
            bail!("the public key has no point");
        };
        let bits = u16::from_be_bytes([*bits_high, *bits_low]);
        if usize::from(bits).div_ceil(8) != point.len() {
            bail!(
                "the public key's point is {} bytes, and its length says {bits} bits",
                point.len()
            );
        }
        let key = PublicKey::from_point(point).context("the public key's point")?;
        Ok(Certificate {
            key,
            created: u32::from_be_bytes([*c0, *c1, *c2, *c3]),
        })
    }
}

/// A transferable public key (RFC 4880 11.1): the key, one user id and the
/// key's own positive certification of it, as `signed-by=` keyrings hold
/// it. `created` is the key's creation time and the certification's.
pub fn keyring(key: &PrivateKey, created: u32, user_id: &str) -> Vec<u8> {
    let certificate = Certificate {
        key: key.public().clone(),
        created,
    };
    let key_body = certificate.body();
    let mut certified = vec![0x99];
    certified.extend_from_slice(&(key_body.len() as u16).to_be_bytes());
    certified.extend_from_slice(&key_body);
    certified.push(0xB4);
    certified.extend_from_slice(&(user_id.len() as u32).to_be_bytes());
    certified.extend_from_slice(user_id.as_bytes());
    // Key flags: certify (0x01) and sign data (0x02).
    let extra = [subpacket(27, &[0x03]), subpacket(21, &[HASH_SHA256])];
    let signature = signature(
        key,
        &certificate,
        SIGNATURE_POSITIVE_CERTIFICATION,
        &certified,
        created,
        &extra,
    );
    let mut out = packet_bytes(TAG_PUBLIC_KEY, &key_body);
    out.extend(packet_bytes(TAG_USER_ID, user_id.as_bytes()));
    out.extend(packet_bytes(TAG_SIGNATURE, &signature));
    out
}

/// An armored detached signature over `data` as binary (`Release.gpg`).
pub fn detached(key: &PrivateKey, certificate: &Certificate, data: &[u8], time: u32) -> String {
    let body = signature(key, certificate, SIGNATURE_BINARY, data, time, &[]);
    armor("PGP SIGNATURE", &packet_bytes(TAG_SIGNATURE, &body))
}

/// `text` in the cleartext signature framework (RFC 4880 7), `InRelease`:
/// the text as it is, with lines that start with a dash escaped, then an
/// armored text signature over its canonical form.
pub fn clearsign(key: &PrivateKey, certificate: &Certificate, text: &str, time: u32) -> String {
    let lines: Vec<&str> = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .collect();
    // What is signed: each line without trailing spaces and tabs, joined
    // by CR LF, without the line end before the signature's header.
    let canonical = lines
        .iter()
        .map(|line| line.trim_end_matches([' ', '\t', '\r']))
        .collect::<Vec<_>>()
        .join("\r\n");
    let body = signature(
        key,
        certificate,
        SIGNATURE_TEXT,
        canonical.as_bytes(),
        time,
        &[],
    );
    let mut out = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n".to_owned();
    for line in lines {
        if line.starts_with('-') {
            out.push_str("- ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&armor("PGP SIGNATURE", &packet_bytes(TAG_SIGNATURE, &body)));
    out
}

/// A version 4 signature packet's body over `data` (already in the form
/// the signature type hashes), made at `time`, with the issuer named in
/// the hashed area (gpgv finds the key by it) and `extra` subpackets.
fn signature(
    key: &PrivateKey,
    certificate: &Certificate,
    kind: u8,
    data: &[u8],
    time: u32,
    extra: &[Vec<u8>],
) -> Vec<u8> {
    let fingerprint = certificate.fingerprint();
    let mut hashed = subpacket(2, &time.to_be_bytes());
    let mut issuer = vec![4];
    issuer.extend_from_slice(&fingerprint);
    hashed.extend(subpacket(33, &issuer));
    for sub in extra {
        hashed.extend_from_slice(sub);
    }
    let mut head = vec![4, kind, ALGORITHM_ECDSA, HASH_SHA256];
    head.extend_from_slice(&(hashed.len() as u16).to_be_bytes());
    head.extend_from_slice(&hashed);

    let mut hasher = Sha256::new();
    hasher.update(data);
    hasher.update(&head);
    hasher.update([4, 0xFF]);
    hasher.update((head.len() as u32).to_be_bytes());
    let digest: [u8; 32] = hasher.finalize().into();
    let (r, s) = key.sign_digest_scalars(&digest);

    let mut body = head;
    // The unhashed area: the issuer's key id, for older readers.
    let unhashed = subpacket(16, &fingerprint[12..]);
    body.extend_from_slice(&(unhashed.len() as u16).to_be_bytes());
    body.extend_from_slice(&unhashed);
    body.extend_from_slice(&digest[..2]);
    mpi(&mut body, &r);
    mpi(&mut body, &s);
    body
}

/// A signature subpacket: its length (one octet: every one here is short),
/// its type, its data.
fn subpacket(kind: u8, data: &[u8]) -> Vec<u8> {
    debug_assert!(data.len() < 191);
    let mut out = vec![(data.len() + 1) as u8, kind];
    out.extend_from_slice(data);
    out
}

/// A multiprecision integer: its length in bits, then its bytes without
/// leading zeros.
fn mpi(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = bytes
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    let bits = match bytes.first() {
        Some(first) => (bytes.len() * 8) as u16 - first.leading_zeros() as u16,
        None => 0,
    };
    out.extend_from_slice(&bits.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// A packet with a new-format header (RFC 4880 4.2.2).
fn packet_bytes(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xC0 | tag];
    let length = body.len();
    if length < 192 {
        out.push(length as u8);
    } else if length < 8384 {
        let rest = length - 192;
        out.push((rest >> 8) as u8 + 192);
        out.push(rest as u8);
    } else {
        out.push(0xFF);
        out.extend_from_slice(&(length as u32).to_be_bytes());
    }
    out.extend_from_slice(body);
    out
}

/// The first packet of `bytes`: its tag, its body and what follows it.
/// New- and old-format headers with definite lengths are read.
fn packet(bytes: &[u8]) -> Result<(u8, &[u8], &[u8])> {
    let (&first, rest) = bytes.split_first().context("empty")?;
    if first & 0x80 == 0 {
        bail!("the first byte is not a packet header");
    }
    let (tag, length, rest) = if first & 0x40 != 0 {
        let tag = first & 0x3F;
        match rest {
            [length @ 0..192, rest @ ..] => (tag, usize::from(*length), rest),
            [high @ 192..224, low, rest @ ..] => (
                tag,
                (usize::from(*high) - 192) * 256 + usize::from(*low) + 192,
                rest,
            ),
            [0xFF, a, b, c, d, rest @ ..] => {
                (tag, u32::from_be_bytes([*a, *b, *c, *d]) as usize, rest)
            }
            _ => bail!("a packet of tag {tag} has a partial or cut length"),
        }
    } else {
        let tag = (first >> 2) & 0x0F;
        match (first & 0x03, rest) {
            (0, [length, rest @ ..]) => (tag, usize::from(*length), rest),
            (1, [a, b, rest @ ..]) => (tag, usize::from(u16::from_be_bytes([*a, *b])), rest),
            (2, [a, b, c, d, rest @ ..]) => {
                (tag, u32::from_be_bytes([*a, *b, *c, *d]) as usize, rest)
            }
            _ => bail!("a packet of tag {tag} has an indefinite or cut length"),
        }
    };
    if rest.len() < length {
        bail!(
            "a packet of tag {tag} says {length} bytes and {} follow",
            rest.len()
        );
    }
    let (body, after) = rest.split_at(length);
    Ok((tag, body, after))
}

/// ASCII armor (RFC 4880 6.2): base64 in 64-character lines and the
/// CRC-24 checksum.
fn armor(label: &str, bytes: &[u8]) -> String {
    let mut out = format!("-----BEGIN {label}-----\n\n");
    let encoded = Base64::encode_string(bytes);
    for line in encoded.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    let crc = crc24(bytes).to_be_bytes();
    out.push('=');
    out.push_str(&Base64::encode_string(&crc[1..]));
    out.push_str(&format!("\n-----END {label}-----\n"));
    out
}

/// RFC 4880 6.1's CRC-24.
fn crc24(bytes: &[u8]) -> u32 {
    let mut crc: u32 = 0x00B7_04CE;
    for byte in bytes {
        crc ^= u32::from(*byte) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= 0x0186_4CFB;
            }
        }
    }
    crc & 0x00FF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_integers_and_checksums_follow_rfc_4880() {
        // The new-format lengths' three sizes, each read back.
        for length in [0, 191, 192, 8383, 8384, 70_000] {
            let body = vec![7u8; length];
            let bytes = packet_bytes(TAG_USER_ID, &body);
            let (tag, read, after) = packet(&bytes).unwrap();
            assert_eq!((tag, read.len(), after.len()), (TAG_USER_ID, length, 0));
        }
        let mut out = Vec::new();
        mpi(&mut out, &[0, 0, 1, 0xFF]);
        assert_eq!(out, [0, 9, 1, 0xFF]);
        // RFC 4880 6.1's CRC of nothing is its initial value.
        assert_eq!(crc24(b""), 0x00B7_04CE);
        assert_eq!(crc24(b"123456789"), 0x0021_CF02);
    }

    #[test]
    fn a_keyring_reads_back_as_the_key_and_its_time() {
        let key = PrivateKey::generate().unwrap();
        let ring = keyring(&key, 1_796_644_884, "svc apt repository");
        let certificate = Certificate::parse(&ring).unwrap();
        assert_eq!(certificate.key, *key.public());
        assert_eq!(certificate.created, 1_796_644_884);
        assert_eq!(certificate.fingerprint_hex().len(), 40);
        assert_eq!(keyring(&key, 1_796_644_884, "svc apt repository"), ring);
        let cases: [(&[u8], &str); 4] = [
            (b"", "not an OpenPGP keyring"),
            (&ring[..40], "says"),
            (&packet_bytes(TAG_USER_ID, b"x"), "not a public key (6)"),
            (&packet_bytes(TAG_PUBLIC_KEY, &[3; 12]), "version 3"),
        ];
        for (bytes, expected) in cases {
            let error = format!("{:#}", Certificate::parse(bytes).unwrap_err());
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn cleartext_escapes_dashes_and_keeps_the_text() {
        let key = PrivateKey::generate().unwrap();
        let certificate = Certificate {
            key: key.public().clone(),
            created: 1,
        };
        let signed = clearsign(&key, &certificate, "Origin: svc\n-x\n", 2);
        assert!(
            signed.starts_with(
                "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: svc\n- -x\n-----BEGIN PGP SIGNATURE-----\n\n"
            ),
            "{signed}"
        );
        assert!(signed.ends_with("-----END PGP SIGNATURE-----\n"));
        assert_eq!(
            signed,
            clearsign(&key, &certificate, "Origin: svc\n-x\n", 2)
        );
    }

    /// GnuPG's own verifier, as apt runs it, over a keyring, a detached
    /// and a cleartext signature; a changed byte fails each.
    #[test]
    fn gpgv_accepts_the_signatures_and_refuses_changed_text() {
        let Some(gpgv) = crate::util::test_tool("gpgv", "apt-get install gpgv") else {
            return;
        };
        let folder = crate::util::TempFolder::new("xtask-openpgp-test").unwrap();
        let dir = folder.path();
        let key = PrivateKey::generate().unwrap();
        let created = 1_796_644_884;
        std::fs::write(dir.join("ring.gpg"), keyring(&key, created, "svc apt")).unwrap();
        let certificate = Certificate {
            key: key.public().clone(),
            created,
        };
        let text = "Origin: svc\nSuite: stable\n SHA256:\n -dash   \n";
        std::fs::write(dir.join("Release"), text).unwrap();
        std::fs::write(
            dir.join("Release.gpg"),
            detached(&key, &certificate, text.as_bytes(), created + 5),
        )
        .unwrap();
        std::fs::write(
            dir.join("InRelease"),
            clearsign(&key, &certificate, text, created + 5),
        )
        .unwrap();
        let verify = |args: &[&str]| {
            let output = std::process::Command::new(&gpgv)
                .arg("--keyring")
                .arg(dir.join("ring.gpg"))
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            (
                output.status.success(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        };
        for args in [&["Release.gpg", "Release"][..], &["InRelease"]] {
            let (ok, stderr) = verify(args);
            assert!(ok, "gpgv {args:?}: {stderr}");
            assert!(stderr.contains(&certificate.fingerprint_hex()), "{stderr}");
        }
        std::fs::write(dir.join("Release"), text.replace("stable", "stablf")).unwrap();
        let inrelease = std::fs::read_to_string(dir.join("InRelease")).unwrap();
        std::fs::write(dir.join("InRelease"), inrelease.replace("stable", "stablf")).unwrap();
        for args in [&["Release.gpg", "Release"][..], &["InRelease"]] {
            let (ok, stderr) = verify(args);
            assert!(
                !ok && stderr.contains("BAD signature"),
                "gpgv {args:?}: {stderr}"
            );
        }
    }
}
