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
    let (root, out) = (scratch.path().to_owned(), scratch.path().join("units"));
    let prefix = root.join("current");
    // `verify` checks that ExecStart names an executable.
    std::fs::create_dir_all(prefix.join("config")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_xtask"), prefix.join("app")).unwrap();
    stdout_of(
        xtask(&workspace_root())
            .arg("units")
            .arg("--root")
            .arg(&root)
            .arg("--out")
            .arg(&out),
    );
    let (service, socket) = (out.join("app.service"), out.join("app.socket"));
    let recover = out.join("app-recover.service");
    assert!(out.join("app.supervisor.conf").is_file());

    let verify = output(
        Command::new(&analyze)
            .arg("verify")
            .arg(&service)
            .arg(&socket)
            .arg(&recover),
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

    // The open-files limit covers the connections the production config
    // allows, plus what the service keeps for itself.
    let unit = std::fs::read_to_string(&service).unwrap();
    let limit: u64 = unit
        .lines()
        .find_map(|line| line.strip_prefix("LimitNOFILE="))
        .expect("the unit sets LimitNOFILE=")
        .parse()
        .unwrap();
    let max_connections = production_max_connections();
    assert!(
        limit >= max_connections + 64,
        "LimitNOFILE={limit} is below server.max_connections ({max_connections}) + 64"
    );
}

/// `server.max_connections` as `APP_ENV=prod` (the units' environment)
/// sees it: `config/prod.toml` over `config/base.toml`.
fn production_max_connections() -> u64 {
    let config = workspace_root().join("config");
    ["prod.toml", "base.toml"]
        .iter()
        .find_map(|file| {
            let text = std::fs::read_to_string(config.join(file)).unwrap();
            let table: toml::Table = text.parse().unwrap();
            table.get("server")?.get("max_connections")?.as_integer()
        })
        .map(|value| u64::try_from(value).unwrap())
        .expect("config/base.toml sets server.max_connections")
}
