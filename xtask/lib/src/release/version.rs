//! `cargo xtask version`: the stamp that builds of this tree embed, for humans
//! or as JSON (the same object the app prints with `--version --json`).

use anyhow::{Context, Result};

use crate::exec::Ctx;

#[derive(clap::Args, Debug)]
pub struct Version {
    /// Print the stamp as one JSON object
    #[arg(long)]
    json: bool,
    /// Target triple the stamp describes [default: this machine's]
    #[arg(long, value_name = "TRIPLE")]
    target: Option<String>,
    /// Cargo profile the stamp describes
    #[arg(long, default_value = "release")]
    profile: String,
}

impl Version {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let stamp = ctx.stamp()?;
        let target = self.target.as_deref().unwrap_or(&stamp.host);
        let json = stamp.json(target, &self.profile);
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json).context("serialize the stamp")?
            );
            return Ok(());
        }
        println!("{} {}", ctx.project.settings.binary, json.version);
        let rows = [
            ("describe", json.describe.to_owned()),
            ("commit", json.commit.to_owned()),
            ("branch", json.branch.to_owned()),
            ("dirty", json.dirty.to_string()),
            ("commit time", json.commit_time.to_owned()),
            ("source date epoch", json.source_date_epoch.to_string()),
            ("target", json.target.to_owned()),
            ("profile", json.profile.to_owned()),
            ("rustc", json.rustc.to_owned()),
        ];
        for (name, value) in rows {
            println!("  {name:<18} {value}");
        }
        Ok(())
    }
}
