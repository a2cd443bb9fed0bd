//! `deploy` to real systemd hosts: Debian 12 booted with systemd-nspawn
//! (see `support::hosts`), with the units `deploy` installs, through the
//! real `systemctl`, journald and sshd.

mod support;

use std::fs;

use support::hosts::{Host, ssh_key, tree_or_skip};
use support::*;

#[test]
fn slow_a_host_boots_and_answers_ssh() {
    let Some(tree) = tree_or_skip() else {
        return;
    };
    let scratch = TempDir::new().unwrap();
    let key = ssh_key(scratch.path());
    let host = Host::boot(&tree, scratch.path(), "alpha", &key);
    let config = scratch.path().join("ssh_config");
    fs::write(&config, host.ssh_config(&key)).unwrap();
    let said = stdout_of(
        std::process::Command::new("ssh")
            .arg("-F")
            .arg(&config)
            .args(["alpha", "systemctl --version | head -1"]),
    );
    assert!(said.starts_with("systemd 252"), "{said}");
}
