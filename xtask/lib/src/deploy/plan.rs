//! What a deploy, rollback or releases run is given: where (a local root,
//! or hosts over ssh), how a switched release is started and proven, and
//! the plan every step reads.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::host::Host;
use crate::exec::Ctx;
use crate::util::TempFolder;

/// Where to deploy: one local root, or hosts over ssh.
#[derive(clap::Args, Debug)]
pub struct Where {
    /// The deploy root on each host: releases/, current, deploys.log
    #[arg(long, value_name = "DIR")]
    pub(super) root: Option<PathBuf>,
    /// Deploy over ssh to this host, `[USER@]HOST`, or `[USER@]HOST:DIR`
    /// for a root of its own; repeatable, deployed in order (for deploy:
    /// see --batch) [default: this machine]
    #[arg(long = "host", value_name = "HOST")]
    pub(super) hosts: Vec<String>,
    /// An ssh config file for ssh and scp (ports, keys, jump hosts)
    #[arg(long, value_name = "FILE")]
    pub(super) ssh_config: Option<PathBuf>,
}

/// How a switched release is started and proven.
#[derive(clap::Args, Debug)]
pub struct Activation {
    /// Shell command run on the host after the switch [default: systemctl
    /// reload <binary>, the units' zero-downtime upgrade]
    #[arg(long, value_name = "CMD")]
    pub(super) activate: Option<String>,
    /// The service's address as seen on the host, for the proof
    /// [default: 127.0.0.1:<port>]
    #[arg(long, value_name = "ADDR")]
    pub(super) service: Option<String>,
    /// How long the new release has to answer /readyz and /version
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::util::parse_duration)]
    pub(super) timeout: Duration,
    /// Wait this long for another deploy's lock instead of failing
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = crate::util::parse_duration)]
    pub(super) lock_wait: Duration,
}

/// Everything a step needs to know besides the host.
pub(super) struct Plan<'a> {
    pub(super) activate: String,
    /// The unit the default activation reloads (`<binary>.service`); `None`
    /// with `--activate`, whose command is the user's to choose.
    pub(super) reloaded_unit: Option<String>,
    pub(super) service: String,
    pub(super) timeout: Duration,
    pub(super) lock_wait: Duration,
    /// `deploy --allow-downgrade`: a release older than a host's goes on.
    pub(super) allow_downgrade: bool,
    pub(super) ctx: &'a Ctx,
}

impl Where {
    pub(super) fn hosts(&self, control: &TempFolder) -> Result<Vec<Host>> {
        if self.hosts.is_empty() {
            let root = self.root.as_ref().context(
                "no --root given: name the deploy root, e.g. --root /opt/app (and --host to deploy over ssh)",
            )?;
            if self.ssh_config.is_some() {
                bail!("--ssh-config is for --host deploys: add --host, or drop --ssh-config");
            }
            return Ok(vec![Host::local(root)?]);
        }
        self.hosts
            .iter()
            .map(|spec| {
                let (destination, root) = match spec.split_once(':') {
                    Some((destination, root)) => (destination, root.to_owned()),
                    None => (
                        spec.as_str(),
                        self.root
                            .as_ref()
                            .with_context(|| {
                                format!("--host {spec} has no root: pass --root DIR, or --host {spec}:DIR")
                            })?
                            .display()
                            .to_string(),
                    ),
                };
                Host::ssh(destination, &root, self.ssh_config.as_deref(), control.path())
            })
            .collect()
    }
}

impl Activation {
    pub(super) fn plan<'a>(&self, ctx: &'a Ctx) -> Result<Plan<'a>> {
        let settings = &ctx.project.settings;
        let service = match &self.service {
            Some(service) => service.clone(),
            None => format!("127.0.0.1:{}", ctx.project.service_port()?),
        };
        Ok(Plan {
            activate: self
                .activate
                .clone()
                .unwrap_or_else(|| format!("systemctl reload {}", settings.binary)),
            reloaded_unit: self
                .activate
                .is_none()
                .then(|| format!("{}.service", settings.binary)),
            service,
            timeout: self.timeout,
            lock_wait: self.lock_wait,
            allow_downgrade: false,
            ctx,
        })
    }
}
