//! The rendered systemd units pass `systemd-analyze verify` and reach an
//! exposure of 0.2 or less in `systemd-analyze security --offline=yes`.

mod support;

use std::process::Command;

use support::*;

#[test]
fn rendered_units_verify_and_are_locked_down() {
    let Some(analyze) = tool_or_skip("systemd-analyze", "apt-get install -y systemd") else {
        return;
    };
    let scratch = TempDir::new().unwrap();
    let (prefix, out) = (scratch.path().join("current"), scratch.path().join("units"));
    // `verify` checks that ExecStart names an executable.
    std::fs::create_dir_all(prefix.join("config")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_xtask"), prefix.join("app")).unwrap();
    stdout_of(
        xtask(&workspace_root())
            .arg("units")
            .arg("--prefix")
            .arg(&prefix)
            .arg("--out")
            .arg(&out),
    );
    let (service, socket) = (out.join("app.service"), out.join("app.socket"));
    assert!(out.join("app.supervisor.conf").is_file());

    let verify = output(
        Command::new(&analyze)
            .arg("verify")
            .arg(&service)
            .arg(&socket),
    );
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        stderr_text(&verify)
    );
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {complaints}"
    );

    // The threshold is on systemd's 0-100 scale: 2 is an exposure of 0.2.
    let security = output(
        Command::new(&analyze)
            .args(["security", "--offline=yes", "--threshold=2"])
            .arg(&service),
    );
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(
        security.status.success(),
        "exposure above 0.2:\n{report}{}",
        stderr_text(&security)
    );
    assert!(
        report.contains("Overall exposure level for app.service: 0.2 SAFE"),
        "{report}"
    );
}
