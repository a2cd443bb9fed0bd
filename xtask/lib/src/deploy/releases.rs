//! `cargo xtask releases`: the releases on a root, with the current, the
//! previous and the bad ones, from each host's log.

use anyhow::Result;

use super::plan::Where;
use super::state::State;
use super::steps::release_identity;
use crate::exec::Ctx;
use crate::util::TempFolder;

#[derive(clap::Args, Debug)]
pub struct Releases {
    /// Print JSON, for scripts
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    place: Where,
}

impl Releases {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let control = TempFolder::new("xtask-ssh")?;
        let hosts = self.place.hosts(&control)?;
        let mut report = Vec::new();
        for host in &hosts {
            let state = State::read(ctx, host)?;
            let bad = state.bad();
            let previous = state.previous_good();
            let releases: Vec<serde_json::Value> = state
                .releases
                .iter()
                .map(|name| {
                    // A release whose binary cannot say is listed without.
                    let (version, commit) =
                        release_identity(ctx, host, name).unwrap_or_else(|err| {
                            eprintln!("warning: {err:#}");
                            (String::new(), String::new())
                        });
                    serde_json::json!({
                        "name": name,
                        "version": version,
                        "commit": commit,
                        "deployed": state.deployed_at(name),
                        "current": state.current.as_deref() == Some(name.as_str()),
                        "previous": previous.as_deref() == Some(name.as_str()),
                        "bad": bad.contains(name),
                    })
                })
                .collect();
            report.push(serde_json::json!({
                "host": host.label,
                "root": host.root,
                "releases": releases,
            }));
            host.disconnect();
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(());
        }
        for host in &report {
            println!(
                "{} {}",
                host["host"].as_str().unwrap_or(""),
                host["root"].as_str().unwrap_or("")
            );
            let releases = host["releases"].as_array().cloned().unwrap_or_default();
            if releases.is_empty() {
                println!("  no releases");
            }
            for release in releases {
                let marks: Vec<&str> = ["current", "previous", "bad"]
                    .into_iter()
                    .filter(|mark| release[*mark] == true)
                    .collect();
                println!(
                    "  {:<24} version {:<10} commit {:<9} deployed {:<21} {}",
                    release["name"].as_str().unwrap_or(""),
                    release["version"].as_str().unwrap_or(""),
                    release["commit"].as_str().unwrap_or(""),
                    release["deployed"].as_str().unwrap_or("never"),
                    marks.join(" ")
                );
            }
        }
        Ok(())
    }
}
