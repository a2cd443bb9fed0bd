//! What the xtask knows of the service's settings, and where it comes
//! from: the service's own settings code (the `platform-config` crate, the
//! one `config show` prints from), reading the project's `config/` as the
//! service reads it in an environment. This is the boundary: no task merges
//! config files or parses `config show` itself.
//!
//! The developer's own `APP_*` and `OTEL_*` variables are not read: what
//! the tasks render (units, images, manifests, the deploy's probe) is for
//! hosts, which have their own.
//!
//! Also here: starting a built service (or a reference server) on a free
//! loopback port, for the tasks that measure or read it (`bench`, `docs`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use platform_config::{Env, Environment, Overrides, Settings};

/// The environment a release runs in on a host, which the units, the
/// image and the deploy's probe are rendered for.
pub const DEPLOYED: &str = "prod";

/// The effective settings of `env` from the files in `config_dir`, read
/// as the service reads them with `APP_ENV={env}`.
pub fn settings(config_dir: &Path, env: &str) -> Result<Settings> {
    let overrides = Overrides {
        config_dir: Some(config_dir.to_path_buf()),
        listen: None,
    };
    let environment = Environment([("APP_ENV".to_owned(), env.to_owned())].into());
    Settings::load(&overrides, &environment, &|_| Ok(())).with_context(|| {
        format!(
            "the service's settings for APP_ENV={env} from {}",
            config_dir.display()
        )
    })
}

/// The effective settings of `env` from config files given as
/// `(name, text)`, base first (a ConfigMap's, a folder a user edited).
pub fn settings_from_files(env: &str, files: &[(String, String)]) -> Result<Settings> {
    let parsed = Env::parse(env)?;
    let files: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(name, text)| (PathBuf::from(name), text.clone()))
        .collect();
    Settings::from_files(parsed, &files, None, &Environment::default(), &|_| Ok(()))
        .with_context(|| format!("the service's settings for APP_ENV={env}"))
}

/// The port the service listens on as deployed.
pub fn deployed_port(root: &Path) -> Result<u16> {
    Ok(settings(&root.join("config"), DEPLOYED)?
        .server
        .listen
        .port())
}

/// A server process on loopback, killed when dropped.
pub struct Server {
    /// What reports call it (`app`, `go`, `floor`, a build's name).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The process.
    pub child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the service's `binary` on a free loopback port with the
/// config (prod) of the project at `root`; it is killed when the `Server`
/// drops.
pub fn start_app(root: &Path, name: &str, binary: &Path) -> Result<Server> {
    start_app_with(root, name, binary, &[])
}

/// `start_app` with more environment variables.
pub fn start_app_with(
    root: &Path,
    name: &str,
    binary: &Path,
    env: &[(&str, String)],
) -> Result<Server> {
    let addr = free_port()?;
    // A build from another checkout (`bench --compare`) reads that
    // checkout's config, which its settings match.
    let config = binary
        .ancestors()
        .skip(1)
        .map(|dir| dir.join("config"))
        .find(|config| config.join("base.toml").is_file())
        .unwrap_or_else(|| root.join("config"));
    let command = Command::new(binary)
        .arg("--config-dir")
        .arg(config)
        .arg("--listen")
        .arg(addr.to_string())
        .env("APP_ENV", "prod")
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdout(Stdio::null())
        .spawn();
    Ok(Server {
        name: name.to_owned(),
        addr,
        child: command.with_context(|| format!("start {}", binary.display()))?,
    })
}

/// A loopback address no one listens on now.
pub fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("find a free loopback port")?;
    Ok(listener.local_addr()?)
}

/// Waits up to 10 s for `addr` to accept connections.
pub fn wait_until_listening(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployed_port_is_the_services_reading_of_base_and_prod() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("config")).unwrap();
        let write = |file: &str, text: &str| {
            std::fs::write(root.path().join("config").join(file), text).unwrap();
        };
        let port = || deployed_port(root.path()).map_err(|err| format!("{err:#}"));
        assert!(port().unwrap_err().contains("base.toml"), "no base.toml");
        write("base.toml", "[server]\nlisten = \"127.0.0.1:9191\"\n");
        assert_eq!(port(), Ok(9191), "base alone");
        write("prod.toml", "[server]\nlisten = \"0.0.0.0\"\n");
        assert_eq!(port(), Ok(9191), "a host alone keeps the port");
        write("prod.toml", "[server]\nlisten = \"0.0.0.0:7000\"\n");
        assert_eq!(port(), Ok(7000), "prod's own port");
        write("prod.toml", "[server]\nlisten = \"localhost\"\n");
        let err = port().unwrap_err();
        assert!(
            err.contains("prod.toml line 2: `localhost` is neither an address with a port"),
            "{err}"
        );
        write("prod.toml", "");
        write("base.toml", "[server]\nlisten = \"0.0.0.0\"\n");
        assert!(port().unwrap_err().contains("server.listen names no port"));
        // The developer's own variables are not the hosts'.
        write("base.toml", "[server]\nlisten = \"127.0.0.1:9191\"\n");
        let settings_with_env = settings(&root.path().join("config"), "dev").unwrap();
        assert_eq!(settings_with_env.env.name(), "dev");
        // Validation is the service's: a bad value in prod's file fails.
        write("prod.toml", "[server]\ndrain_timeout = \"0s\"\n");
        assert!(port().unwrap_err().contains("server.drain_timeout is 0s"));
    }

    #[test]
    fn a_configmaps_files_give_that_environments_settings() {
        let files = [
            (
                "base.toml".to_owned(),
                "[server]\nlisten = \"127.0.0.1:8080\"\ndrain_timeout = \"30s\"\n".to_owned(),
            ),
            (
                "staging.toml".to_owned(),
                "[server]\ndrain_timeout = \"25s\"\n".to_owned(),
            ),
        ];
        let staging = settings_from_files("staging", &files).unwrap();
        assert_eq!(staging.server.drain_timeout, Duration::from_secs(25));
        assert!(settings_from_files("qa", &files).is_err());
    }
}
