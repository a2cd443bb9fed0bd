//! Where a deploy happens: this machine, or a host reached over ssh. Every
//! step is the same argv of POSIX tools and coreutils (`mkdir`, `mv -T`,
//! `ln -s`, `sha256sum`, `cat`, `tee -a`); only how it is started differs.
//! Over ssh the argv is quoted into one remote command line, files go with
//! `scp`, and HTTP probes of the service ride `ssh -W` to the host's own
//! loopback. One multiplexed ssh connection per host carries them all.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use xshell::Cmd;

use crate::exec::{Ctx, shell_quote};
use crate::tools::{self, Tool};

pub enum Transport {
    Local,
    Ssh {
        /// `[user@]host` as ssh takes it.
        destination: String,
        /// Options every ssh and scp call gets (config file, multiplexing).
        options: Vec<String>,
        /// The options that only tune the connection (batch mode,
        /// multiplexing), as echoed; left out of echoed commands.
        plumbing: String,
    },
}

pub struct Host {
    /// How the host is named in messages and the deploy log.
    pub label: String,
    /// The deploy root on the host: `releases/`, `current`, `deploys.log`.
    pub root: String,
    transport: Transport,
}

/// What a command on the host printed, for reads.
pub struct Output {
    pub stdout: String,
}

impl Host {
    pub fn local(root: &Path) -> Result<Host> {
        let root = std::path::absolute(root)
            .with_context(|| format!("make {} absolute", root.display()))?;
        Ok(Host {
            label: "local".to_owned(),
            root: root.display().to_string(),
            transport: Transport::Local,
        })
    }

    /// A host over ssh. `control_dir` holds the multiplexing socket, shared
    /// by every call to this host.
    pub fn ssh(
        destination: &str,
        root: &str,
        ssh_config: Option<&Path>,
        control_dir: &Path,
    ) -> Result<Host> {
        tools::require(Tool::Ssh)?;
        if !root.starts_with('/') {
            bail!(
                "the deploy root {root} for {destination} is relative: give an absolute path, e.g. /opt/app"
            );
        }
        let mut options = Vec::new();
        if let Some(config) = ssh_config {
            options.push("-F".to_owned());
            options.push(config.display().to_string());
        }
        let mut plumbing = Vec::new();
        for option in [
            "BatchMode=yes".to_owned(),
            "ControlMaster=auto".to_owned(),
            format!("ControlPath={}/%C", control_dir.display()),
            "ControlPersist=15".to_owned(),
        ] {
            plumbing.push(format!("-o {}", shell_quote(option.as_ref())));
            options.push("-o".to_owned());
            options.push(option);
        }
        Ok(Host {
            label: destination.to_owned(),
            root: root.to_owned(),
            transport: Transport::Ssh {
                destination: destination.to_owned(),
                options,
                plumbing: plumbing.join(" "),
            },
        })
    }

    /// A path under the root.
    pub fn path(&self, relative: &str) -> String {
        format!("{}/{relative}", self.root.trim_end_matches('/'))
    }

    /// The command that runs `argv` on the host, as an xshell command.
    fn command<'a>(&self, ctx: &'a Ctx, argv: &[&str]) -> Cmd<'a> {
        match &self.transport {
            Transport::Local => ctx.sh.cmd(argv[0]).args(&argv[1..]),
            Transport::Ssh {
                destination,
                options,
                ..
            } => {
                let line: Vec<String> =
                    argv.iter().map(|word| shell_quote(word.as_ref())).collect();
                ctx.sh
                    .cmd("ssh")
                    .args(options)
                    .arg(destination)
                    .arg("--")
                    .arg(line.join(" "))
            }
        }
    }

    /// Runs a step that changes the host: echoed first, skipped under
    /// `--dry-run`, and a failure quotes what the command said.
    pub fn change(&self, ctx: &Ctx, argv: &[&str]) -> Result<()> {
        self.exec(ctx, self.command(ctx, argv), None, true)
            .map(drop)
    }

    /// Like `change`, with `input` on the command's stdin.
    pub fn change_with_input(&self, ctx: &Ctx, argv: &[&str], input: &[u8]) -> Result<()> {
        self.exec(ctx, self.command(ctx, argv), Some(input), true)
            .map(drop)
    }

    /// Runs a read that changes nothing; not echoed, run under `--dry-run`.
    pub fn read(&self, ctx: &Ctx, argv: &[&str]) -> Result<Output> {
        self.exec(ctx, self.command(ctx, argv), None, false)
    }

    /// Starts `argv` on the host as a process that runs beside the deploy
    /// (the lock's holder), echoed, with its stdin, stdout and stderr piped;
    /// in a process group of its own, so that the Ctrl-C that asks a deploy
    /// to switch back does not end it. `None` under `--dry-run`.
    pub fn spawn_holder(&self, ctx: &Ctx, argv: &[&str]) -> Result<Option<std::process::Child>> {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::from(self.command(ctx, argv));
        let line = self.shown(ctx, &command);
        say!("$ {line}");
        if ctx.dry_run {
            return Ok(None);
        }
        let child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("start `{line}`"))?;
        Ok(Some(child))
    }

    /// A command as echoed: without the ssh options that only tune the
    /// connection.
    fn shown(&self, ctx: &Ctx, command: &std::process::Command) -> String {
        let line = ctx.display(command, false);
        match &self.transport {
            Transport::Ssh { plumbing, .. } => line.replacen(&format!(" {plumbing}"), "", 1),
            Transport::Local => line,
        }
    }

    /// Runs the user's activation command, a shell line, on the host.
    pub fn activate(&self, ctx: &Ctx, line: &str) -> Result<()> {
        let command = match &self.transport {
            Transport::Local => ctx.sh.cmd("sh").arg("-c").arg(line),
            Transport::Ssh {
                destination,
                options,
                ..
            } => ctx
                .sh
                .cmd("ssh")
                .args(options)
                .arg(destination)
                .arg("--")
                .arg(line),
        };
        self.exec(ctx, command, None, true).map(drop)
    }

    /// Copies the folder `local` to `path` on the host, modes kept.
    pub fn upload(&self, ctx: &Ctx, local: &Path, path: &str) -> Result<()> {
        let local = local.display().to_string();
        let command = match &self.transport {
            Transport::Local => ctx.sh.cmd("cp").args(["-R", "-p", &local, path]),
            Transport::Ssh {
                destination,
                options,
                ..
            } => ctx
                .sh
                .cmd("scp")
                .args(options)
                .args(["-q", "-r", "-p", &local])
                .arg(format!("{destination}:{path}")),
        };
        let copied = self.exec(ctx, command, None, true).map(drop);
        match copied {
            Err(err) if self.is_remote() => {
                let cut = format!("{err:#}").contains("(signal: ");
                Err(err).with_context(|| {
                    if cut {
                        format!(
                            "copy the release to {} with scp, which was killed: the partial copy is never used; deploy again",
                            self.label
                        )
                    } else {
                        // scp speaks SFTP since OpenSSH 9: a host whose sshd
                        // has no sftp subsystem closes the connection without
                        // saying why.
                        format!(
                            "copy the release to {} with scp, which needs the sftp subsystem on the host (`Subsystem sftp` in its sshd_config)",
                            self.label
                        )
                    }
                })
            }
            copied => copied,
        }
    }

    fn is_remote(&self) -> bool {
        matches!(self.transport, Transport::Ssh { .. })
    }

    fn exec(
        &self,
        ctx: &Ctx,
        command: Cmd<'_>,
        input: Option<&[u8]>,
        echo: bool,
    ) -> Result<Output> {
        let mut command = std::process::Command::from(command);
        let line = self.shown(ctx, &command);
        if echo {
            say!("$ {line}");
            if ctx.dry_run {
                return Ok(Output {
                    stdout: String::new(),
                });
            }
        }
        command
            .stdin(if input.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().with_context(|| format!("start `{line}`"))?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(input)
                .with_context(|| format!("write to `{line}`"))?;
        }
        let output = child
            .wait_with_output()
            .with_context(|| format!("wait for `{line}`"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let said = stderr
                .lines()
                .map(str::trim)
                .rfind(|said| !said.is_empty())
                .unwrap_or("");
            bail!("`{line}` failed ({}): {said}", output.status);
        }
        Ok(Output {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        })
    }

    /// `GET path` from the service at `address` as the host sees it (its
    /// own loopback, through ssh for a remote host): the status and body.
    pub fn http_get(&self, address: &str, path: &str) -> Result<(u16, String)> {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        let response = match &self.transport {
            Transport::Local => {
                return crate::util::http_request(address, &request)
                    .with_context(|| format!("GET {path} from {address}"));
            }
            Transport::Ssh {
                destination,
                options,
                ..
            } => {
                let mut child = std::process::Command::new("ssh")
                    .args(options)
                    .arg("-W")
                    .arg(address)
                    .arg(destination)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .context("start ssh -W")?;
                // Stdin stays open until the response is in: closing it
                // would half-close the forwarded connection early.
                let mut stdin = child.stdin.take().context("ssh -W stdin")?;
                stdin
                    .write_all(request.as_bytes())
                    .context("write to ssh -W")?;
                let output = child.wait_with_output().context("wait for ssh -W")?;
                drop(stdin);
                output.stdout
            }
        };
        crate::util::parse_http_response(&response)
            .with_context(|| format!("GET {path} from {address}"))
    }

    /// Ends the shared ssh connection, if any.
    pub fn disconnect(&self) {
        if let Transport::Ssh {
            destination,
            options,
            ..
        } = &self.transport
        {
            let _ = std::process::Command::new("ssh")
                .args(options)
                .args(["-O", "exit", destination])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
