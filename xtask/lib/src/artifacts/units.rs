//! The systemd units and the supervisord program that run the service,
//! rendered from `[workspace.metadata.xtask]` for a deploy root (`cargo xtask
//! units` writes them; `dist` ships them; `deploy` installs them).
//!
//! `<binary>.socket` owns the port (socket activation), so even a full
//! restart queues connections instead of refusing them; `<binary>.service`
//! is `Type=notify`, upgrades without downtime on `systemctl reload`
//! (SIGHUP: the service starts the binary the `current` symlink now points
//! at, hands it the socket, and names it to systemd with `MAINPID=`), and is
//! sandboxed as far as systemd allows, with a comment on each relaxation
//! that remains. `<binary>-recover.service` runs at boot, before the
//! service: it undoes a deploy's switch that was never proven (see
//! `deploy`). Checked with `systemd-analyze verify` and `systemd-analyze
//! security --offline=yes --threshold=2` in the tests. `dist` ships the same
//! files, rendered for the default deploy root, in every Linux archive.

use std::path::{Path, PathBuf};

use crate::project::Settings;

/// Longest a stop may take: the drain delay and drain timeout of
/// `config/base.toml` (5 s + 30 s), the final export of spans
/// (`tracing.export_timeout`, 10 s), plus a margin.
const STOP_TIMEOUT_SECONDS: u32 = 50;

/// The open-files limit of the service: each connection costs a descriptor,
/// so it must be at least `server.max_connections` of the config (4096 in
/// `config/base.toml`) plus the 64 the service keeps for itself
/// (`DESCRIPTORS_KEPT` in `app/platform/src/server.rs`). Twice the connections leaves
/// room to raise them. The service would raise its own soft limit to the
/// hard one, but the unit's system call filter forbids `setrlimit`, so the
/// unit sets both.
const OPEN_FILES_LIMIT: u32 = 8192;

/// The deploy root the archives' units are rendered for: `/opt/<binary>`.
pub fn default_root(settings: &Settings) -> PathBuf {
    Path::new("/opt").join(&settings.binary)
}

/// Where a unit finds the service: its binary, its config folder, and how a
/// new release arrives (which the service unit's upgrade comment says).
pub struct Paths {
    pub binary: PathBuf,
    pub config: PathBuf,
    /// How a new release replaces the running one before `systemctl reload`.
    pub upgrade: String,
}

impl Paths {
    /// The service's command line: its binary and config folder.
    pub fn exec(&self) -> String {
        format!(
            "{} --config-dir {}",
            self.binary.display(),
            self.config.display()
        )
    }

    /// A deploy root: the release its `current` symlink points at, which is
    /// what `deploy --root` switches (and checks before a reload).
    pub fn deploy_root(root: &Path, binary: &str) -> Paths {
        let prefix = root.join("current");
        Paths {
            binary: prefix.join(binary),
            config: prefix.join("config"),
            upgrade: "switch the `current` symlink to the new release,\n# then".to_owned(),
        }
    }
}

/// The files, by name: the socket unit, the service unit, the boot check
/// (`<binary>-recover.service`), the supervisord program, for the deploy
/// root `root`: they run the release its `current` symlink points at,
/// which is what `deploy --root` switches (and checks before a `systemctl
/// reload`). `port` is the service's (`Project::service_port`, from the
/// config).
pub fn render(settings: &Settings, port: u16, root: &Path) -> Vec<(String, String)> {
    let name = &settings.binary;
    let paths = Paths::deploy_root(root, name);
    let exec = paths.exec();
    let [socket, service] = socket_and_service(settings, port, &paths);
    let root_text = root.display();
    let recover = format!(
        r#"# Rendered by `cargo xtask units` from [workspace.metadata.xtask]; edit there.
# At boot, before {name}.service starts: if a deploy switched `current` to a
# release and never proved it (killed, cut off, the host lost power), switch
# back to the last release proven to serve (`current.proven`), and log it.
# A deploy that holds the lock owns the switch, so this never races one.
[Unit]
Description={name}: back to the last proven release after an unfinished deploy
Before={name}.service
ConditionPathIsSymbolicLink={root_text}/current.proven

[Service]
Type=oneshot
# Once per boot: a later start of {name}.service does not run it again.
RemainAfterExit=yes
ExecStart=/bin/sh -c 'cd {root_text} || exit 0; \
  exec 9>>.deploy-lock; flock -n 9 || exit 0; \
  proven=$$(readlink current.proven) || exit 0; current=$$(readlink current); \
  [ "$$current" = "$$proven" ] && exit 0; \
  ln -sfn "$$proven" .current-recover && mv -T .current-recover current || exit 1; \
  host=$$(cat /proc/sys/kernel/hostname); \
  printf \'{{"time":"%%s","user":"root","controller":"%%s","host":"%%s","action":"recover","from":"%%s","to":"%%s","result":"ok","step":"boot","duration_ms":0}}\\n\' \
    "$$(date -u +%%Y-%%m-%%dT%%H:%%M:%%SZ)" "$$host" "$$host" "$${{current#releases/}}" "$${{proven#releases/}}" >> deploys.log; \
  sync deploys.log; \
  echo "switched current back from $${{current#releases/}}, never proven, to $${{proven#releases/}}"'

[Install]
WantedBy=multi-user.target
"#
    );
    let supervisor = format!(
        "\
; Rendered by `cargo xtask units` from [workspace.metadata.xtask] and the
; port in server.listen of config/base.toml; edit there.
; supervisord has no socket activation and cannot follow a process that hands
; its socket to a successor, so here an upgrade is a restart
; (`supervisorctl restart {name}`), and the program must not be sent SIGHUP
; (the successor it starts would run unsupervised). Use the systemd units
; for upgrades without dropped connections.
; The service raises its soft open-files limit to the hard one, which it
; inherits from supervisord ([supervisord] minfds=): keep that at least
; server.max_connections of the config plus 64.
; Create the user first: useradd --system {name}
[program:{name}]
command={exec} --listen 0.0.0.0:{port}
environment=APP_ENV=\"prod\"
user={name}
autostart=true
autorestart=unexpected
exitcodes=0
stopsignal=TERM
stopwaitsecs={STOP_TIMEOUT_SECONDS}
redirect_stderr=true
stdout_logfile=/var/log/{name}/{name}.log
"
    );
    vec![
        (format!("{name}.socket"), socket),
        (format!("{name}.service"), service),
        (format!("{name}-recover.service"), recover),
        (format!("{name}.supervisor.conf"), supervisor),
    ]
}

/// The socket unit and the service unit, for a service found at `paths`.
pub fn socket_and_service(settings: &Settings, port: u16, paths: &Paths) -> [String; 2] {
    let name = &settings.binary;
    let upgrade = &paths.upgrade;
    let exec = paths.exec();
    let socket = format!(
        "\
# Rendered by `cargo xtask units` from [workspace.metadata.xtask] and the
# port in server.listen of config/base.toml; edit there.
# systemd owns the port: connections queue here while the service starts or
# restarts, instead of being refused.
[Unit]
Description={name} listening socket

[Socket]
ListenStream={port}
# One socket for one service instance (LISTEN_FDS=1).
Accept=no
NoDelay=true

[Install]
WantedBy=sockets.target
"
    );
    let service = format!(
        "\
# Rendered by `cargo xtask units` from [workspace.metadata.xtask] and the
# port in server.listen of config/base.toml; edit there.
[Unit]
Description={name}
Requires={name}.socket
After={name}.socket network.target

[Service]
# The service sends READY=1 once it serves and STOPPING=1 when it drains.
Type=notify
NotifyAccess=main
ExecStart={exec}
# Upgrade without downtime: {upgrade} `systemctl reload {name}`. On SIGHUP the service starts the binary at
# the ExecStart path with the listening socket; once that one reports ready,
# the old process sends MAINPID=<new pid> and READY=1, stops accepting,
# drains, and exits. If the new one fails, the old one keeps serving and
# logs why.
ExecReload=/bin/kill -HUP $MAINPID
Environment=APP_ENV=prod
Restart=on-failure
RestartSec=1s
# A fixed figure, not read from the config: the drain delay and drain
# timeout of config/base.toml (5 s + 30 s), the last spans' export (10 s)
# and a margin. Raise it with them.
TimeoutStopSec={STOP_TIMEOUT_SECONDS}s
# Soft and hard open-files limit, a fixed figure: twice server.max_connections
# of config/base.toml (4096); it must stay at least max_connections plus 64
# for the service itself. Set here because the system call filter below
# forbids the service to raise its own (setrlimit).
LimitNOFILE={OPEN_FILES_LIMIT}
# The admin token, if used: put it in /etc/credstore/admin.token and
# uncomment. The service reads it from $CREDENTIALS_DIRECTORY.
#LoadCredential=admin.token

# Sandbox. An unprivileged user made up for the service, no capabilities,
# a read-only view of the system, and no network of its own: it serves on
# the socket systemd passes, which lives outside its network namespace.
DynamicUser=yes
CapabilityBoundingSet=
AmbientCapabilities=
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateUsers=yes
PrivateNetwork=yes
PrivateIPC=yes
PrivateMounts=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
# Hides /proc/stat: process_start_time_seconds is not reported; the other
# process metrics read /proc/self only.
ProcSubset=pid
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
# Relaxation: AF_UNIX stays allowed, since the notify protocol is a Unix
# datagram socket. No AF_INET/AF_INET6: the listening socket is passed in.
RestrictAddressFamilies=AF_UNIX
# Applies to sockets the service creates itself; connections on the socket
# systemd passes are governed by the socket unit (systemd.resource-control).
IPAddressDeny=any
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
UMask=0077
RemoveIPC=yes
DevicePolicy=closed
KeyringMode=private
# Relaxation: no RootDirectory=; the service runs a static binary from the
# host's file system, read-only (ProtectSystem=strict).

[Install]
WantedBy=multi-user.target
"
    );
    [socket, service]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_rendered_from_the_settings() {
        let settings = Settings {
            package: "svc".into(),
            binary: "svc".into(),
            image: "example/svc".into(),
            targets: Vec::new(),
            keep_releases: None,
            public_key: None,
            previous_keys: Vec::new(),
            k8s: Default::default(),
            canary: Default::default(),
        };
        let files = render(&settings, 9090, Path::new("/srv"));
        let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "svc.socket",
                "svc.service",
                "svc-recover.service",
                "svc.supervisor.conf"
            ]
        );
        let (socket, service, recover, supervisor) =
            (&files[0].1, &files[1].1, &files[2].1, &files[3].1);
        assert!(
            recover.contains("\nBefore=svc.service\n")
                && recover.contains("\nConditionPathIsSymbolicLink=/srv/current.proven\n")
                && recover.contains("'cd /srv || exit 0;")
                && recover.contains("\nWantedBy=multi-user.target\n"),
            "{recover}"
        );
        assert!(socket.contains("\nListenStream=9090\n"), "{socket}");
        assert!(service.contains("\nRequires=svc.socket\n"), "{service}");
        assert!(
            service.contains("\nExecStart=/srv/current/svc --config-dir /srv/current/config\n"),
            "{service}"
        );
        assert!(
            service.contains("\nType=notify\n")
                && service.contains("\nNotifyAccess=main\n")
                && service.contains("\nExecReload=/bin/kill -HUP $MAINPID\n")
                && service.contains("\nRestrictAddressFamilies=AF_UNIX\n")
        );
        assert!(supervisor.contains("[program:svc]\ncommand=/srv/current/svc --config-dir /srv/current/config --listen 0.0.0.0:9090\n"));
    }
}
