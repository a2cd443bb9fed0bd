//! The rendered Kubernetes objects run by `podman kube play`, the nearest
//! thing to a cluster these machines have: one pod of the Deployment, with
//! its ConfigMap mounted and its admin Secret, from the image `image`
//! built. What is checked from outside the pod, since podman runs httpGet
//! probes as a command inside the container, which a `FROM scratch` image
//! cannot: the process's user and root mount, the rendered probes' paths,
//! the settings the service reports, and the drain when the pod stops.
//!
//! What podman 4.3 lacks is adapted in the played copy only, each change
//! counted so that a render that no longer needs it fails here:
//! - a secret volume's `optional` is read without a default (it panics), so
//!   it is set to its Kubernetes default, `false`; the Secret's `data` is
//!   written to the volume undecoded (see `secret_yaml`);
//! - `fieldRef` knows `metadata.name` but not `metadata.namespace`, whose
//!   variable gets the value `default`;
//! - a cluster routes to the pod through the Service; podman publishes the
//!   container port instead, here on loopback;
//! - it does not expand `$(VAR)` references in env values (a cluster
//!   does), so `OTEL_RESOURCE_ATTRIBUTES` reaches the service unexpanded;
//! - `kube down` removes a running pod at once (SIGKILL), and
//!   `terminationGracePeriodSeconds` is not read, so the pod is stopped
//!   first with `pod stop --time <the rendered grace period>`: SIGTERM,
//!   then the wait, as a kubelet does;
//! - the Service, HorizontalPodAutoscaler, PodDisruptionBudget,
//!   NetworkPolicy and PrometheusRule are skipped: podman has no such
//!   objects.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::Podman;

/// The admin token the played Secret holds.
pub const TOKEN: &str = "kubePlayAdminToken7d1eXY";

/// The Secret the rendered Deployment mounts (operators create it; the
/// render names it only). podman 4.3 writes a `data` value into the volume
/// as it stands, without decoding its base64 (and `stringData` not at
/// all), so the value is the token itself, which is also valid base64.
pub fn secret_yaml(binary: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {binary}-admin\ndata:\n  token: {TOKEN}\n"
    )
}

/// `rendered` as podman 4.3 runs it (see the module's list), with the
/// container port published on `127.0.0.1:port`.
pub fn adapt_for_podman(rendered: &str, port: u16) -> String {
    let lines: Vec<&str> = rendered.lines().collect();
    let mut out = Vec::new();
    let (mut secrets, mut namespaces, mut ports) = (0, 0, 0);
    let mut at = 0;
    while at < lines.len() {
        let line = lines[at];
        let indent = &line[..line.len() - line.trim_start().len()];
        let trimmed = line.trim_start();
        if trimmed == "valueFrom:"
            && lines
                .get(at + 2)
                .is_some_and(|line| line.trim() == "fieldPath: metadata.namespace")
        {
            out.push(format!("{indent}value: default"));
            namespaces += 1;
            at += 3;
            continue;
        }
        out.push(line.to_owned());
        if trimmed.starts_with("secretName:") {
            out.push(format!("{indent}optional: false"));
            secrets += 1;
        }
        if trimmed.starts_with("containerPort:") {
            out.push(format!("{indent}hostIP: 127.0.0.1"));
            out.push(format!("{indent}hostPort: {port}"));
            ports += 1;
        }
        at += 1;
    }
    assert_eq!(
        (secrets, namespaces, ports),
        (1, 1, 1),
        "the render changed: the adaptations for podman (secret volumes, fieldRef metadata.namespace, container ports) do not apply once each"
    );
    out.join("\n") + "\n"
}

/// What a played pod showed.
#[derive(Debug)]
pub struct Observed {
    pub uid: String,
    pub root_mount: String,
    pub config: String,
    pub environment: Vec<String>,
    pub drain_log: String,
    pub exit_code: String,
}

/// The probe paths of the Deployment in `yaml`: (startup, liveness,
/// readiness), and its grace period in seconds.
pub fn pod_spec(yaml: &str) -> (String, String, String, i64) {
    let documents = yaml_rust2::YamlLoader::load_from_str(yaml).unwrap();
    let deployment = documents
        .iter()
        .find(|document| document["kind"].as_str() == Some("Deployment"))
        .expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let path = |probe: &str| {
        container[probe]["httpGet"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("no {probe} path"))
            .to_owned()
    };
    (
        path("startupProbe"),
        path("livenessProbe"),
        path("readinessProbe"),
        pod["terminationGracePeriodSeconds"]
            .as_i64()
            .expect("a grace period"),
    )
}

/// A GET on loopback: the status and the body.
pub fn get(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n{authorization}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// Plays `yaml` (already adapted, publishing on `port`) after the Secret,
/// checks the pod from outside, and takes it down; the first failed check
/// is the error. The pod is taken down in every case.
pub fn play(podman: &Podman, scratch: &Path, yaml: &str, port: u16) -> Result<Observed, String> {
    let file = scratch.join("play.yaml");
    fs::write(&file, yaml).unwrap();
    let run = |args: &[&str]| podman.command().args(args).output().expect("podman runs");
    let played = podman
        .command()
        .args(["kube", "play"])
        .arg(&file)
        .output()
        .unwrap();
    let result = if played.status.success() {
        check(podman, yaml, port)
    } else {
        Err(format!(
            "podman kube play failed: {}",
            String::from_utf8_lossy(&played.stderr)
        ))
    };
    let _ = podman.command().args(["kube", "down"]).arg(&file).output();
    let _ = run(&["pod", "rm", "--all", "--force"]);
    result
}

fn check(podman: &Podman, yaml: &str, port: u16) -> Result<Observed, String> {
    let (startup, liveness, readiness, grace) = pod_spec(yaml);
    let names = String::from_utf8_lossy(
        &podman
            .command()
            .args(["ps", "--all", "--format", "{{.Names}}"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    let container = names
        .lines()
        .find(|name| !name.ends_with("-infra"))
        .ok_or_else(|| format!("no container in the played pod: {names:?}"))?
        .to_owned();
    let inspect = |format: &str| {
        String::from_utf8_lossy(
            &podman
                .command()
                .args(["inspect", "--format", format, &container])
                .output()
                .unwrap()
                .stdout,
        )
        .trim()
        .to_owned()
    };
    let logs = || {
        let output = podman
            .command()
            .args(["logs", &container])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };

    // Started: the startup probe's path answers 200 (within its 30 s);
    // then the readiness and liveness paths answer 200 as their probes
    // expect, within a few of their periods.
    let answers_200 = |path: &str, within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            match get(port, path, None) {
                Some((200, _)) => return Ok(()),
                answer if Instant::now() > deadline => {
                    return Err(answer.map(|(status, _)| status));
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    };
    if let Err(answer) = answers_200(&startup, Duration::from_secs(30)) {
        return Err(format!(
            "the startup path {startup} answered {answer:?} within 30 s; the container: {}\n{}",
            inspect("{{.State.Status}} {{.State.ExitCode}}"),
            logs()
        ));
    }
    for (probe, path) in [("readiness", &readiness), ("liveness", &liveness)] {
        if let Err(answer) = answers_200(path, Duration::from_secs(5)) {
            return Err(format!("the {probe} path {path} answered {answer:?}"));
        }
    }

    // The process as the kernel sees it.
    let pid = inspect("{{.State.Pid}}");
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).map_err(|err| err.to_string())?;
    let uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    if uid != "65532" {
        return Err(format!("the service runs as uid {uid}, not 65532"));
    }
    let mounts =
        fs::read_to_string(format!("/proc/{pid}/mounts")).map_err(|err| err.to_string())?;
    let root_mount = mounts
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some("/"))
        .unwrap_or_default()
        .to_owned();
    let options = root_mount.split_whitespace().nth(3).unwrap_or_default();
    if !options.split(',').any(|option| option == "ro") {
        return Err(format!("the root file system is writable: {root_mount}"));
    }
    let environment: Vec<String> = fs::read(format!("/proc/{pid}/environ"))
        .map_err(|err| err.to_string())?
        .split(|byte| *byte == 0)
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect();

    // The settings the running service reports, with the Secret's token.
    let config = match get(port, "/admin/config", Some(TOKEN)) {
        Some((200, body)) => body,
        answer => {
            return Err(format!(
                "/admin/config with the Secret's token answered {:?}",
                answer.map(|(status, _)| status)
            ));
        }
    };

    // The pod stops: SIGTERM, a drain, exit 0.
    let mut wait = podman
        .command()
        .args(["wait", &container])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // `pod stop`, as a kubelet stops a pod: SIGTERM, then the rendered
    // grace period, which podman 4.3 does not take from the YAML. (Its
    // `kube down` removes the pod at once: SIGKILL, exit 137.)
    let stop = podman
        .command()
        .args(["pod", "stop", "--all", "--time", &grace.to_string()])
        .output()
        .unwrap();
    if !stop.status.success() {
        let _ = wait.kill();
        let _ = wait.wait();
        return Err(format!(
            "podman pod stop: {}",
            String::from_utf8_lossy(&stop.stderr)
        ));
    }
    let mut exit_code = String::new();
    wait.stdout
        .take()
        .unwrap()
        .read_to_string(&mut exit_code)
        .unwrap();
    let _ = wait.wait();
    // The stopped container keeps its log until the pod is removed.
    let drain_log = logs();
    Ok(Observed {
        uid,
        root_mount,
        config,
        environment,
        drain_log,
        exit_code: exit_code.trim().to_owned(),
    })
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `podman` with the image loaded from `archive` and the Secret played.
pub fn prepare(podman: &Podman, scratch: &Path, archive: &Path, binary: &str) {
    let loaded = podman
        .command()
        .arg("load")
        .arg("-i")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        loaded.status.success(),
        "podman load: {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let secret = scratch.join("secret.yaml");
    fs::write(&secret, secret_yaml(binary)).unwrap();
    let played = podman
        .command()
        .args(["kube", "play"])
        .arg(&secret)
        .output()
        .unwrap();
    assert!(
        played.status.success(),
        "podman kube play of the Secret: {}",
        String::from_utf8_lossy(&played.stderr)
    );
}
