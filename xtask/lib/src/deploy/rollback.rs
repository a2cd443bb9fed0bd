//! `cargo xtask rollback`: back to the previous good release (or `--to`
//! one) on every host, proven, the release left marked bad.

use anyhow::{Result, bail};

use super::interrupt::catch_interrupts;
use super::plan::{Activation, Where};
use super::steps::{Undo, rollback_host};
use super::units::{self, Units};
use crate::exec::Ctx;
use crate::util::TempFolder;

#[derive(clap::Args, Debug)]
pub struct Rollback {
    /// The release to return to [default: the previous good one, from the
    /// deploy log]
    #[arg(long, value_name = "RELEASE")]
    to: Option<String>,
    #[command(flatten)]
    place: Where,
    #[command(flatten)]
    activation: Activation,
}

impl Rollback {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        if let Some(to) = &self.to {
            crate::names::component("--to", to)?;
        }
        let control = TempFolder::new("xtask-ssh")?;
        let hosts = self.place.hosts(&control)?;
        let plan = self.activation.plan(ctx)?;
        for (host, units) in hosts.iter().zip(units::inspect(&plan, &hosts, false)?) {
            if units == Units::Missing {
                bail!(
                    "{}: {}.service is not installed, so there is nothing to roll back: `cargo xtask deploy` installs it",
                    host.label,
                    ctx.project.settings.binary
                );
            }
        }
        catch_interrupts();
        let mut result = Ok(());
        for host in &hosts {
            result = rollback_host(&plan, host, self.to.as_deref(), Undo::Rollback);
            if result.is_err() {
                break;
            }
        }
        for host in &hosts {
            host.disconnect();
        }
        result
    }
}
