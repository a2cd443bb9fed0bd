//! `cargo xtask keygen`: the release signing key pair.
//!
//! - The private key goes outside the repository (by default
//!   `$XDG_CONFIG_HOME/cargo-xtask/<binary>-signing.key`, mode 0600),
//!   encrypted with a passphrase in cosign's format, so cosign and skopeo
//!   read it too. The passphrase comes from `SIGNING_PASSPHRASE` or
//!   `SIGNING_PASSPHRASE_FILE`, or is asked for twice on the terminal
//!   without echo; never from an argument.
//! - The public key goes into the repository, `keys/<binary>.pub` (PEM),
//!   beside `keys/<binary>.allowed_signers` (the line `ssh-keygen -Y verify`
//!   needs), and `public-key` in `[workspace.metadata.xtask]` names it.
//!
//! `keygen --apt` makes the apt repository's key instead: an OpenPGP key
//! (apt reads no other kind), its private half in the same encrypted
//! format (`<binary>-apt.key`), its public half the keyring hosts name in
//! `signed-by=`, `keys/<binary>-archive-keyring.gpg`.
//!
//! Nothing is overwritten: a key that signed releases is replaced on
//! purpose, by removing it first.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::exec::Ctx;
use crate::signing::{self, PrivateKey};
use crate::util::write_atomically;

#[derive(clap::Args, Debug)]
pub struct Keygen {
    /// Where the encrypted private key goes
    /// [default: $XDG_CONFIG_HOME/cargo-xtask/<binary>-signing.key]
    #[arg(long, value_name = "FILE")]
    private_key: Option<PathBuf>,
    /// Where the public key goes, relative to the workspace root
    /// [default: keys/<binary>.pub]
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,
    /// Replace the project's key with a new one: the old public key stays
    /// accepted as a previous key (previous-keys), its private key is
    /// renamed aside
    #[arg(long)]
    rotate: bool,
    /// With --rotate: the last day (YYYY-MM-DD, UTC) a release the old key
    /// signed is accepted [default: until its previous-keys entry is removed]
    #[arg(long, value_name = "DATE", requires = "rotate")]
    until: Option<String>,
    /// Make the apt repository's OpenPGP key instead (apt-repo signs with
    /// it): the public keyring goes to keys/<binary>-archive-keyring.gpg,
    /// the passphrase comes from APT_SIGNING_PASSPHRASE(_FILE)
    #[arg(long, conflicts_with = "rotate")]
    apt: bool,
}

/// The identity the SSH signature of `SHA256SUMS` is checked under
/// (`ssh-keygen -Y verify -I …`).
pub fn ssh_identity(binary: &str) -> String {
    format!("{binary}-release")
}

impl Keygen {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        if self.rotate {
            return self.rotate(ctx);
        }
        if self.apt {
            return self.apt_key(ctx);
        }
        let binary = &ctx.project.settings.binary;
        let private_path = match self.private_key {
            Some(path) => path,
            None => default_private_key(binary, "signing")?,
        };
        let public_relative = self
            .public_key
            .unwrap_or_else(|| PathBuf::from(format!("keys/{binary}.pub")));
        if public_relative.is_absolute() {
            bail!(
                "--public-key {} is absolute: give a path inside the workspace, which the repository keeps",
                public_relative.display()
            );
        }
        let public_path = ctx.project.root.join(&public_relative);
        let signers_path = public_path.with_extension("allowed_signers");
        for path in [&private_path, &public_path, &signers_path] {
            if path.exists() {
                bail!(
                    "{} exists, and keygen replaces no key: releases signed with it verify only with it; remove it first if it is to be replaced",
                    path.display()
                );
            }
        }
        if let Some(configured) = &ctx.project.settings.public_key
            && Path::new(configured) != public_relative
        {
            bail!(
                "[workspace.metadata.xtask] already names public-key = \"{configured}\": remove that line (and retire that key) before making another"
            );
        }
        if ctx.dry_run {
            println!(
                "(dry run) would write {}, {} and {}",
                private_path.display(),
                public_path.display(),
                signers_path.display()
            );
            return Ok(());
        }
        let passphrase = passphrase(signing::RELEASE_KEY)?;
        let key = PrivateKey::generate()?;
        let encrypted = key.encrypt(passphrase.as_bytes())?;
        write_private(&private_path, encrypted.as_bytes())?;

        let public = key.public();
        for (path, text) in [
            (&public_path, public.to_pem()),
            (&signers_path, signers_line(binary, public)),
        ] {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("create {}", parent.display()))?;
            }
            write_atomically(path, text.as_bytes())?;
        }
        let relative = public_relative.to_string_lossy().replace('\\', "/");
        if ctx.project.settings.public_key.is_none() {
            name_in_settings(&ctx.project.root.join("Cargo.toml"), &relative)?;
        }
        println!("key id {}", public.key_id());
        println!("private key (encrypted): {}", private_path.display());
        println!(
            "public key: {} (public-key = \"{relative}\" in Cargo.toml)",
            public_path.display()
        );
        println!("SSH allowed signers: {}", signers_path.display());
        println!(
            "commit the public files; keep the private key and its passphrase out of the repository, e.g. as CI secrets:\n  gh secret set {} < {}\n  gh secret set {}",
            signing::KEY_VAR,
            private_path.display(),
            signing::PASSPHRASE_VAR
        );
        Ok(())
    }
}

impl Keygen {
    /// `keygen --apt`: the apt repository's key pair.
    fn apt_key(self, ctx: &Ctx) -> Result<()> {
        let binary = &ctx.project.settings.binary;
        let private_path = match self.private_key {
            Some(path) => path,
            None => default_private_key(binary, "apt")?,
        };
        // Relative to the workspace, or anywhere: apt-repo is told with
        // --keyring where a key outside the workspace is.
        let public_relative = self
            .public_key
            .unwrap_or_else(|| PathBuf::from(crate::release::apt_repo::keyring_path(binary)));
        let public_path = ctx.project.root.join(&public_relative);
        for path in [&private_path, &public_path] {
            if path.exists() {
                bail!(
                    "{} exists, and keygen replaces no key: every host that trusts the repository holds its public half; docs/releasing.md says how to rotate it",
                    path.display()
                );
            }
        }
        if ctx.dry_run {
            println!(
                "(dry run) would write {} and {}",
                private_path.display(),
                public_path.display()
            );
            return Ok(());
        }
        let passphrase = passphrase(signing::APT_KEY)?;
        let key = PrivateKey::generate()?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs();
        let created = u32::try_from(created).context("the clock is past 2106")?;
        let keyring = signing::openpgp::keyring(&key, created, &format!("{binary} apt repository"));
        write_private(
            &private_path,
            key.encrypt(passphrase.as_bytes())?.as_bytes(),
        )?;
        if let Some(parent) = public_path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("create {}", parent.display()))?;
        }
        write_atomically(&public_path, &keyring)?;
        let certificate = signing::openpgp::Certificate::parse(&keyring)?;
        println!("OpenPGP fingerprint {}", certificate.fingerprint_hex());
        println!("private key (encrypted): {}", private_path.display());
        println!(
            "public keyring: {} (commit it; hosts install it for signed-by=)",
            public_path.display()
        );
        println!(
            "keep the private key and its passphrase out of the repository, e.g. as CI secrets:\n  gh secret set {} < {}\n  gh secret set {}",
            signing::APT_KEY.key,
            private_path.display(),
            signing::APT_KEY.passphrase
        );
        Ok(())
    }

    /// `keygen --rotate`: a new key pair where the project's is; the old
    /// public key renamed to `<name>.<key id>.pub` and listed in
    /// `previous-keys`, the old private key renamed the same way. Every
    /// check comes before the first change.
    fn rotate(self, ctx: &Ctx) -> Result<()> {
        let project = &ctx.project;
        let binary = &project.settings.binary;
        let configured = project.settings.public_key.clone().context(
            "nothing to rotate: [workspace.metadata.xtask] names no public-key; run `cargo xtask keygen` to make the first key",
        )?;
        if let Some(named) = &self.public_key
            && *named != Path::new(&configured)
        {
            bail!(
                "--public-key {} with --rotate: the new key goes where public-key = \"{configured}\" is; drop --public-key",
                named.display()
            );
        }
        if let Some(until) = &self.until {
            crate::project::check_day(until).context("--until")?;
        }
        let public_path = project.root.join(&configured);
        let signers_path = public_path.with_extension("allowed_signers");
        let old = signing::PublicKey::read(&public_path)
            .with_context(|| format!("read the key to rotate, {}", public_path.display()))?;
        let id = &old.key_id()[..12];
        let aside = |path: &Path, extension: &str| {
            path.with_file_name(format!(
                "{}.{id}.{extension}",
                path.file_stem().unwrap_or_default().to_string_lossy()
            ))
        };
        let old_public = aside(&public_path, "pub");
        let old_public_relative = Path::new(&configured)
            .with_file_name(old_public.file_name().unwrap_or_default())
            .to_string_lossy()
            .replace('\\', "/");
        if project
            .settings
            .previous_keys
            .iter()
            .any(|previous| previous.key == old_public_relative)
        {
            bail!(
                "{old_public_relative} is already a previous key: this key was rotated out before"
            );
        }
        let private_path = match &self.private_key {
            Some(path) => path.clone(),
            None => default_private_key(binary, "signing")?,
        };
        let old_private = aside(&private_path, "key");
        for path in [&old_public, &old_private] {
            if path.exists() {
                bail!(
                    "{} exists, and keygen replaces no key: move it away first",
                    path.display()
                );
            }
        }
        let old_signers = std::fs::read_to_string(&signers_path).unwrap_or_default();
        if ctx.dry_run {
            println!(
                "(dry run) would rename {} to {}, write a new key to {} and {}, and list the old one in previous-keys",
                public_path.display(),
                old_public.display(),
                public_path.display(),
                private_path.display()
            );
            return Ok(());
        }
        let passphrase = passphrase(signing::RELEASE_KEY)?;
        let key = PrivateKey::generate()?;
        let encrypted = key.encrypt(passphrase.as_bytes())?;
        let public = key.public();

        if private_path.exists() {
            std::fs::rename(&private_path, &old_private).with_context(|| {
                format!(
                    "rename the old private key {} to {}",
                    private_path.display(),
                    old_private.display()
                )
            })?;
        }
        write_private(&private_path, encrypted.as_bytes())?;
        std::fs::rename(&public_path, &old_public).with_context(|| {
            format!(
                "rename {} to {}",
                public_path.display(),
                old_public.display()
            )
        })?;
        write_atomically(&public_path, public.to_pem().as_bytes())?;
        // The old key keeps verifying SHA256SUMS.sig with ssh-keygen too,
        // until the day after --until.
        let valid_before = self
            .until
            .as_deref()
            .map(|until| format!(",valid-before=\"{}235959Z\"", until.replace('-', "")))
            .unwrap_or_default();
        let old_lines: String = old_signers
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| match line.split_once(" namespaces=") {
                Some((identity, rest)) if !line.contains("valid-before=") => {
                    let (options, key) = rest.split_once(' ').unwrap_or((rest, ""));
                    format!("{identity} namespaces={options}{valid_before} {key}\n")
                }
                _ => format!("{line}\n"),
            })
            .collect();
        write_atomically(
            &signers_path,
            format!("{}{old_lines}", signers_line(binary, public)).as_bytes(),
        )?;
        add_previous_key(
            &project.root.join("Cargo.toml"),
            &old_public_relative,
            self.until.as_deref(),
        )?;
        println!("key id {} signs from now on", public.key_id());
        println!(
            "key id {} ({old_public_relative}) stays accepted {}",
            old.key_id(),
            match &self.until {
                Some(until) => format!("until {until}"),
                None => "until its previous-keys entry is removed".to_owned(),
            }
        );
        println!(
            "private keys: the new one {}, the old one renamed to {}",
            private_path.display(),
            old_private.display()
        );
        println!(
            "commit keys/ and Cargo.toml; replace the CI secrets:\n  gh secret set {} < {}\n  gh secret set {}",
            signing::KEY_VAR,
            private_path.display(),
            signing::PASSPHRASE_VAR
        );
        Ok(())
    }
}

/// The `allowed_signers` line of `key`, as `ssh-keygen -Y verify` reads it.
fn signers_line(binary: &str, key: &signing::PublicKey) -> String {
    format!(
        "{} namespaces=\"{}\" {}\n",
        ssh_identity(binary),
        signing::formats::SSH_NAMESPACE,
        key.ssh_line(&ssh_identity(binary))
    )
}

/// Lists the rotated-out key in `previous-keys` of the settings, as a new
/// line after `public-key`, or added to an existing one-line list.
fn add_previous_key(cargo_toml: &Path, relative: &str, until: Option<&str>) -> Result<()> {
    let text = std::fs::read_to_string(cargo_toml)
        .with_context(|| format!("read {}", cargo_toml.display()))?;
    let entry = match until {
        Some(until) => format!("{{ key = \"{relative}\", until = \"{until}\" }}"),
        None => format!("{{ key = \"{relative}\" }}"),
    };
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if let Some(line) = lines
        .iter_mut()
        .find(|line| line.starts_with("previous-keys = ["))
    {
        if !line.trim_end().ends_with(']') {
            bail!(
                "{}: previous-keys spans several lines: add {entry} to it by hand",
                cargo_toml.display()
            );
        }
        *line = line.replacen(
            "previous-keys = [",
            &format!("previous-keys = [{entry}, "),
            1,
        );
        *line = line.replace(", ]", "]");
    } else {
        let at = lines
            .iter()
            .position(|line| line.starts_with("public-key = "))
            .with_context(|| {
                format!(
                    "{} names no public-key line: add previous-keys = [{entry}] to [workspace.metadata.xtask] by hand",
                    cargo_toml.display()
                )
            })?;
        lines.insert(
            at + 1,
            format!(
                "# Keys that signed earlier releases, still accepted (cargo xtask keygen --rotate).\nprevious-keys = [{entry}]"
            ),
        );
    }
    let mut updated = lines.join("\n");
    updated.push('\n');
    write_atomically(cargo_toml, updated.as_bytes())
}

/// `$XDG_CONFIG_HOME/cargo-xtask/<binary>-<purpose>.key`.
fn default_private_key(binary: &str, purpose: &str) -> Result<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .context("neither XDG_CONFIG_HOME nor HOME is set: pass --private-key FILE")?;
    Ok(config
        .join("cargo-xtask")
        .join(format!("{binary}-{purpose}.key")))
}

/// The new key's passphrase: from the variables `vars` name, else asked
/// for twice on the terminal.
fn passphrase(vars: signing::KeyVars) -> Result<String> {
    if let Some((passphrase, _)) = signing::passphrase_of(vars)? {
        check_strength(&passphrase)?;
        return Ok(passphrase);
    }
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| {
            anyhow::anyhow!(
                "no passphrase: set {} or {} (there is no terminal to ask on)",
                vars.passphrase,
                vars.passphrase_file
            )
        })?;
    let first = read_hidden(&tty, "passphrase for the new signing key: ")?;
    let second = read_hidden(&tty, "the same passphrase again: ")?;
    if first != second {
        bail!("the two passphrases differ: run keygen again");
    }
    check_strength(&first)?;
    Ok(first)
}

/// The shortest passphrase keygen accepts, in characters.
const MIN_LENGTH: usize = 12;
/// The least estimated strength, in bits (see `estimated_bits`).
const MIN_BITS: f64 = 60.0;
/// The fewest different characters.
const MIN_DISTINCT: usize = 6;

/// Refuses a passphrase that guessing would find: the rule is at least
/// `MIN_LENGTH` characters, `MIN_DISTINCT` of them different, and an
/// estimated `MIN_BITS` bits. Whoever steals the key file (a CI cache, a
/// laptop backup) can try passphrases offline, slowed only by scrypt.
fn check_strength(passphrase: &str) -> Result<()> {
    let length = passphrase.chars().count();
    let distinct = passphrase
        .chars()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let bits = estimated_bits(passphrase);
    let problem = if length == 0 {
        "it is empty, which would leave the key unprotected".to_owned()
    } else if length < MIN_LENGTH {
        format!("it has {length} characters, fewer than {MIN_LENGTH}")
    } else if distinct < MIN_DISTINCT {
        format!("it has {distinct} different characters, fewer than {MIN_DISTINCT}")
    } else if bits < MIN_BITS {
        format!("its estimated strength is {bits:.0} bits, under {MIN_BITS:.0}")
    } else {
        return Ok(());
    };
    bail!(
        "the passphrase is refused: {problem}; choose one of at least {MIN_LENGTH} characters mixing words, digits and signs (e.g. four random words), or generate one: `openssl rand -base64 24`"
    )
}

/// Length times the bits of the alphabet its characters come from
/// (lowercase 26, uppercase 26, digits 10, anything else 33): what a
/// brute-force search over that alphabet would need, an upper bound for a
/// passphrase made of words.
fn estimated_bits(passphrase: &str) -> f64 {
    let has = |test: fn(&char) -> bool| passphrase.chars().any(|c| test(&c));
    let alphabet = [
        (has(char::is_ascii_lowercase), 26),
        (has(char::is_ascii_uppercase), 26),
        (has(char::is_ascii_digit), 10),
        (has(|c| !c.is_ascii_alphanumeric()), 33),
    ]
    .iter()
    .filter(|(present, _)| *present)
    .map(|(_, size)| size)
    .sum::<u32>();
    passphrase.chars().count() as f64 * f64::from(alphabet.max(1)).log2()
}

/// One line from the terminal with echo off.
fn read_hidden(tty: &std::fs::File, prompt: &str) -> Result<String> {
    use std::io::BufRead;
    use std::os::fd::AsRawFd;
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open terminal for the duration of these calls.
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        bail!("read the terminal's settings");
    }
    let mut hidden = saved;
    hidden.c_lflag &= !libc::ECHO;
    // SAFETY: as above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &hidden) };
    let mut writer = tty;
    let _ = write!(writer, "{prompt}");
    let _ = writer.flush();
    let mut line = String::new();
    let read = std::io::BufReader::new(tty).read_line(&mut line);
    // SAFETY: as above; echo comes back whatever the read did.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    let _ = writeln!(writer);
    read.context("read the passphrase")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Writes the private key readable by its owner only, from the first byte.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("create {}", parent.display()))?;
    }
    let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("create {}", temporary.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("move {} into place", path.display()))
}

/// Adds `public-key = "<path>"` to `[workspace.metadata.xtask]` of the root
/// `Cargo.toml`, right under the table's header.
fn name_in_settings(cargo_toml: &Path, relative: &str) -> Result<()> {
    let text = std::fs::read_to_string(cargo_toml)
        .with_context(|| format!("read {}", cargo_toml.display()))?;
    let header = "[workspace.metadata.xtask]\n";
    let Some(at) = text.find(header) else {
        bail!(
            "{} has no [workspace.metadata.xtask] table: add public-key = \"{relative}\" to it by hand",
            cargo_toml.display()
        );
    };
    let insert = at + header.len();
    let updated = format!(
        "{}# The release signing key's public half (cargo xtask keygen): what verify and deploy check.\npublic-key = \"{relative}\"\n{}",
        &text[..insert],
        &text[insert..]
    );
    write_atomically(cargo_toml, updated.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_passphrases_are_refused_with_the_rule() {
        for (weak, why) in [
            ("", "it is empty"),
            ("x", "1 characters, fewer than 12"),
            ("hunter2hunt", "11 characters"),
            ("aaaaaaaaaaaaaaaaaaaa", "1 different characters"),
            ("abcabcabcabcab", "3 different characters"),
            ("123456789012", "estimated strength is 40 bits"),
            ("1234567890123", "estimated strength is 43 bits"),
        ] {
            let refused = format!("{:#}", check_strength(weak).unwrap_err());
            assert!(refused.contains(why), "{weak:?}: {refused}");
            assert!(refused.contains("openssl rand -base64 24"), "{refused}");
        }
        for strong in [
            "canary-passphrase-7f3a9c",
            "correct horse battery staple",
            "Tr0ub4dor&3xyz",
        ] {
            assert!(check_strength(strong).is_ok(), "{strong}");
        }
    }
}
