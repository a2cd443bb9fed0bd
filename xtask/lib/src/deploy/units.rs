//! The systemd units of the default activation, on each host: a deploy to
//! a host where `<binary>.service` is not installed installs the units
//! rendered for its deploy root (as `cargo xtask units --root` renders
//! them), enables the socket and starts the service; every later deploy
//! checks that the installed units run this root's binary.
//!
//! A copy of what `deploy` installed is kept in `<root>/.units/`. When the
//! units a deploy renders differ from the installed ones (a newer xtask
//! renders them otherwise), they are replaced and systemd reloaded
//! (`daemon-reload`, which changes no running process: the new settings
//! apply from the next start or upgrade) only if the installed files are
//! still what `deploy` put there. A unit edited on the host, or installed
//! by hand, is refused: local changes belong in drop-ins
//! (`systemctl edit <binary>`), which `deploy` never touches, or
//! `--replace-units` overwrites them.

use anyhow::{Result, bail};

use super::host::Host;
use super::plan::Plan;

/// Where the units go on a host.
const UNIT_DIR: &str = "/etc/systemd/system";
/// The copy of what `deploy` installed, under the deploy root.
const RECORD_DIR: &str = ".units";

/// What the default activation must do about the units of one host.
#[derive(Debug, PartialEq, Eq)]
pub enum Units {
    /// Installed, and what this deploy renders.
    Current,
    /// Not installed: install, enable the socket, start the service.
    Missing,
    /// Installed by `deploy` from other units: replace them, reload systemd.
    Outdated,
}

/// The unit files this deploy installs on `host`, by name.
fn rendered(plan: &Plan, host: &Host) -> Result<Vec<(String, String)>> {
    let project = &plan.ctx.project;
    let files = crate::artifacts::units::render(
        &project.settings,
        project.service_port()?,
        std::path::Path::new(&host.root),
    );
    Ok(files
        .into_iter()
        .filter(|(name, _)| name.ends_with(".service") || name.ends_with(".socket"))
        .collect())
}

/// Reads the units of every host before anything changes; refuses, naming
/// the host and what to do, when one runs another root's binary or was
/// changed by hand. A dry run reports what a real run would refuse.
pub fn inspect(plan: &Plan, hosts: &[Host], replace: bool) -> Result<Vec<Units>> {
    let Some(unit) = &plan.reloaded_unit else {
        return Ok(hosts.iter().map(|_| Units::Current).collect());
    };
    let mut found = Vec::new();
    for host in hosts {
        let verdict = inspect_host(plan, host, unit, replace);
        match verdict {
            Ok(units) => found.push(units),
            Err(problem) => {
                let message = format!(
                    "{}: {problem}; `deploy` installs and checks the units rendered for this root (`cargo xtask units --root {}`), or pass --activate CMD to start the service yourself",
                    host.label, host.root
                );
                if !plan.ctx.dry_run {
                    bail!(message);
                }
                eprintln!("(dry run: a real run would refuse here: {message})");
                found.push(Units::Current);
            }
        }
    }
    Ok(found)
}

fn inspect_host(plan: &Plan, host: &Host, unit: &str, replace: bool) -> Result<Units, String> {
    let ctx = plan.ctx;
    let binary = &ctx.project.settings.binary;
    let shown = host
        .read(
            ctx,
            &[
                "systemctl",
                "show",
                "--property=LoadState",
                "--property=ExecStart",
                unit,
            ],
        )
        .map_err(|err| format!("cannot read {unit}: {err:#}"))?
        .stdout;
    match unit_runs_from_root(&shown, unit, &host.path(&format!("current/{binary}"))) {
        Err(UnitProblem::NotInstalled) => return Ok(Units::Missing),
        Err(UnitProblem::Other(problem)) => return Err(problem),
        Ok(()) => {}
    }
    let files = rendered(plan, host).map_err(|err| format!("{err:#}"))?;
    let mut outdated = false;
    for (name, text) in &files {
        let installed = read_file(plan, host, &format!("{UNIT_DIR}/{name}"));
        if installed.as_deref() == Some(text.as_str()) {
            continue;
        }
        let recorded = read_file(plan, host, &host.path(&format!("{RECORD_DIR}/{name}")));
        // A unit this xtask adds (neither installed nor recorded) is new,
        // not edited.
        if installed == recorded || replace {
            outdated = true;
            continue;
        }
        return Err(format!(
            "{UNIT_DIR}/{name} differs from the unit this deploy installs, and `deploy` did not install it as it is (edited on the host, or installed by hand): move local changes to a drop-in (`systemctl edit {binary}`), or pass --replace-units to overwrite it"
        ));
    }
    Ok(if outdated {
        Units::Outdated
    } else {
        Units::Current
    })
}

/// The contents of a file on the host, if it can be read.
fn read_file(plan: &Plan, host: &Host, path: &str) -> Option<String> {
    host.read(plan.ctx, &["cat", "--", path])
        .ok()
        .map(|output| output.stdout)
}

/// Writes the rendered units into place (each under a temporary name, then
/// renamed), records them under the root, and has systemd read them.
pub fn install(plan: &Plan, host: &Host) -> Result<()> {
    let ctx = plan.ctx;
    let files = rendered(plan, host)?;
    let pid = std::process::id();
    host.change(ctx, &["mkdir", "-p", &host.path(RECORD_DIR)])?;
    for (name, text) in &files {
        for (dir, mode) in [(UNIT_DIR.to_owned(), "644"), (host.path(RECORD_DIR), "600")] {
            let temporary = format!("{dir}/.{name}.{pid}");
            host.change_with_input(ctx, &["tee", "--", &temporary], text.as_bytes())?;
            host.change(ctx, &["chmod", mode, "--", &temporary])?;
            host.change(
                ctx,
                &["mv", "-T", "--", &temporary, &format!("{dir}/{name}")],
            )?;
        }
    }
    host.change(ctx, &["systemctl", "daemon-reload"])?;
    // The boot check runs at boot only (multi-user.target wants it), never
    // during a deploy.
    let binary = &ctx.project.settings.binary;
    host.change(
        ctx,
        &["systemctl", "enable", &format!("{binary}-recover.service")],
    )
}

/// The command that starts the service for the first time: the socket
/// enabled (so the service comes back at boot), both started.
pub fn first_start(binary: &str) -> String {
    format!("systemctl enable --now {binary}.socket {binary}.service")
}

/// Why a unit does not run the binary of the root.
#[derive(Debug, PartialEq, Eq)]
pub enum UnitProblem {
    NotInstalled,
    Other(String),
}

/// Whether `systemctl show --property=LoadState --property=ExecStart`
/// output says the unit is installed and starts `expected`; the reason if
/// not.
pub fn unit_runs_from_root(shown: &str, unit: &str, expected: &str) -> Result<(), UnitProblem> {
    let property = |name: &str| {
        shown
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or("")
    };
    let load_state = property("LoadState");
    if load_state == "not-found" {
        return Err(UnitProblem::NotInstalled);
    }
    if load_state != "loaded" {
        return Err(UnitProblem::Other(format!(
            "{unit} cannot be loaded (LoadState={load_state}): see `systemctl status {unit}`"
        )));
    }
    // `ExecStart={ path=/opt/app/current/app ; argv[]=... ; ... }`
    let exec_start = property("ExecStart");
    let path = exec_start
        .split(" ; ")
        .find_map(|field| field.trim_start_matches('{').trim().strip_prefix("path="))
        .unwrap_or("");
    if path != expected {
        let root = path
            .strip_suffix(&format!(
                "/current/{}",
                expected.rsplit('/').next().unwrap_or("")
            ))
            .map(|root| format!(" (deploy to --root {root} for that one)"))
            .unwrap_or_default();
        return Err(UnitProblem::Other(format!(
            "{unit} runs {}, not {expected}{root}",
            if path.is_empty() {
                "no ExecStart"
            } else {
                path
            }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reloaded_unit_must_run_the_binary_of_the_root() {
        let shown = |path: &str| {
            format!(
                "LoadState=loaded\nExecStart={{ path={path} ; argv[]={path} --config-dir /x ; ignore_errors=no ; start_time=[n/a] ; pid=0 }}\n"
            )
        };
        let expected = "/srv/app/current/app";
        let problem = |text: &str| Err(UnitProblem::Other(text.to_owned()));
        assert_eq!(
            unit_runs_from_root(&shown(expected), "app.service", expected),
            Ok(())
        );
        assert_eq!(
            unit_runs_from_root(&shown("/opt/app/current/app"), "app.service", expected),
            problem(
                "app.service runs /opt/app/current/app, not /srv/app/current/app (deploy to --root /opt/app for that one)"
            )
        );
        assert_eq!(
            unit_runs_from_root(&shown("/usr/bin/app"), "app.service", expected),
            problem("app.service runs /usr/bin/app, not /srv/app/current/app")
        );
        assert_eq!(
            unit_runs_from_root("LoadState=not-found\nExecStart=\n", "app.service", expected),
            Err(UnitProblem::NotInstalled)
        );
        assert_eq!(
            unit_runs_from_root("LoadState=bad-setting\n", "app.service", expected),
            problem(
                "app.service cannot be loaded (LoadState=bad-setting): see `systemctl status app.service`"
            )
        );
    }
}
