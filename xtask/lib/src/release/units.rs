//! `cargo xtask units`: the systemd units and the supervisord program,
//! rendered by `artifacts::units` for a deploy root, written to a folder.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::artifacts::units::{default_root, render};
use crate::exec::Ctx;
use crate::util::write_atomically;

#[derive(clap::Args, Debug)]
pub struct Units {
    /// The deploy root the units are for, as given to `deploy --root`: they
    /// run DIR/current/<binary> with DIR/current/config [default:
    /// /opt/<binary>]
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Folder to write the units into [default: target/units]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

impl Units {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let settings = &ctx.project.settings;
        let root = self.root.unwrap_or_else(|| default_root(settings));
        if !root.is_absolute() {
            bail!(
                "--root {}: systemd needs an absolute path for ExecStart=: pass the deploy root, e.g. {}",
                root.display(),
                default_root(settings).display()
            );
        }
        let out = self
            .out
            .unwrap_or_else(|| ctx.project.target_dir.join("units"));
        let files = render(settings, ctx.project.service_port()?, &root);
        if ctx.dry_run {
            for (name, _) in &files {
                eprintln!("(dry run: would write {})", out.join(name).display());
            }
            return Ok(());
        }
        std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
        for (name, text) in &files {
            let path = out.join(name);
            write_atomically(&path, text.as_bytes())?;
            println!("{}", path.display());
        }
        Ok(())
    }
}
