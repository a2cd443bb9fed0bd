//! `cargo xtask k8s` in a copy of the workspace with a recorded image:
//! the error without one, the rendered files passing `kubernetes-validate`,
//! `promtool` and our own `--check` (also on each kustomize overlay as
//! `kubectl kustomize` renders it), no secret in the output, the grace
//! period and the ports following the config and settings, an edited
//! folder failing `--check --dir`, and every metric the alerts name
//! present in the running app's `/metrics`.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::*;

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const CANARY: &str = "canary-admin-token-5f2c9a";

/// Records an image in the copy's dist manifest, as `cargo xtask image`
/// would, for the commit at HEAD.
fn record_image(repo: &Path) {
    let commit = git(repo, &["rev-parse", "HEAD"]);
    let mut manifest = manifest_at(&commit);
    manifest["image"] = serde_json::json!({
        "reference": "ghcr.io/example/app:0.1.0", "index_digest": DIGEST,
        "layout": "image", "archive": "app-0.1.0.oci.tar", "platforms": []});
    let dist = repo.join("target/dist");
    fs::create_dir_all(&dist).unwrap();
    fs::write(dist.join("dist-manifest.json"), manifest.to_string()).unwrap();
}

fn k8s(repo: &Path, args: &[&str]) -> std::process::Output {
    output(
        xtask(repo)
            .arg("k8s")
            .args(args)
            .env("APP__ADMIN__TOKEN", CANARY)
            .env("CARGO_TARGET_DIR", repo.join("target")),
    )
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The lines of `prod.yaml` outside its ConfigMap (the first document),
/// whose config file text keeps its own listen address.
fn prod_objects(out: &Path) -> String {
    let text = fs::read_to_string(out.join("prod.yaml")).unwrap();
    let (config_map, rest) = text.split_once("\n---\n").unwrap();
    assert!(config_map.contains("kind: ConfigMap"), "{config_map}");
    rest.to_owned()
}

#[test]
fn k8s_renders_checked_manifests_that_follow_the_config_and_settings() {
    let repo = repository();
    let out = repo.path().join("target/dist/k8s");

    // No image yet: one line naming `cargo xtask image`, nothing written.
    let run = k8s(repo.path(), &[]);
    let stderr = stderr_text(&run);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("run `cargo xtask image` first"), "{stderr}");
    assert!(!out.exists());

    record_image(repo.path());
    // A dry run renders and checks, and writes nothing: no folder, the
    // manifest as it was.
    let manifest_path = repo.path().join("target/dist/dist-manifest.json");
    let manifest_before = fs::read(&manifest_path).unwrap();
    let run = output(
        xtask(repo.path())
            .args(["--dry-run", "k8s", "--check"])
            .env("CARGO_TARGET_DIR", repo.path().join("target")),
    );
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{stdout}\n{}", stderr_text(&run));
    assert!(stdout.contains("(dry run) "), "{stdout}");
    assert_eq!(stdout.matches("  ok      ").count(), 3 * 17, "{stdout}");
    assert!(!out.exists(), "a dry run wrote {}", out.display());
    assert_eq!(fs::read(&manifest_path).unwrap(), manifest_before);

    let run = k8s(repo.path(), &["--check"]);
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "{stdout}\n{}", stderr_text(&run));
    assert_eq!(stdout.matches("  ok      ").count(), 3 * 17, "{stdout}");

    let files = files_under(&out);
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        assert!(
            !text.contains(CANARY),
            "{} holds the admin token",
            file.display()
        );
    }
    let prod = fs::read_to_string(out.join("prod.yaml")).unwrap();
    assert!(
        prod.contains(&format!("image: ghcr.io/example/app@{DIGEST}")),
        "{prod}"
    );

    // Every file is recorded in the manifest.
    let manifest: Value = serde_json::from_str(
        &fs::read_to_string(repo.path().join("target/dist/dist-manifest.json")).unwrap(),
    )
    .unwrap();
    let recorded: Vec<&str> = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|artifact| artifact["kind"] == "kubernetes")
        .map(|artifact| artifact["path"].as_str().unwrap())
        .collect();
    assert_eq!(recorded.len(), files.len(), "{recorded:?}");

    // The autoscaler scales on CPU and on each pod's request rate, which
    // the adapter rule serves from the recording rule; the pods send their
    // traces to the collector the settings name, with their own names.
    let hpa = fs::read_to_string(out.join("base/hpa.yaml")).unwrap();
    for expected in [
        "averageUtilization: 70",
        "type: Pods",
        "name: http_requests_per_second",
        "averageValue: \"3000\"",
    ] {
        assert!(hpa.contains(expected), "{expected} in:\n{hpa}");
    }
    let adapter = fs::read_to_string(out.join("prometheus-adapter.yaml")).unwrap();
    let rules = fs::read_to_string(out.join("alerts.rules.yml")).unwrap();
    assert!(
        adapter.contains("as: http_requests_per_second")
            && adapter.contains("namespace_pod:http_requests:rate1m{")
            && rules.contains("record: namespace_pod:http_requests:rate1m"),
        "{adapter}\n{rules}"
    );
    let deployment = fs::read_to_string(out.join("base/deployment.yaml")).unwrap();
    for expected in [
        "name: OTEL_EXPORTER_OTLP_ENDPOINT",
        "value: http://otel-collector.observability:4318",
        "name: OTEL_TRACES_SAMPLER_ARG",
        "value: \"0.01\"",
        "fieldPath: metadata.name",
        "value: \"k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)\"",
    ] {
        assert!(
            deployment.contains(expected),
            "{expected} in:\n{deployment}"
        );
    }

    // Schemas: every Kubernetes object file (not the kustomizations and
    // the Prometheus rule files).
    if let Some(validate) = tool_or_skip("kubernetes-validate", "cargo xtask setup") {
        let objects: Vec<&PathBuf> = files
            .iter()
            .filter(|file| {
                let name = file.file_name().unwrap().to_string_lossy();
                name.ends_with(".yaml")
                    && name != "kustomization.yaml"
                    && name != "prometheus-adapter.yaml"
            })
            .collect();
        assert!(objects.len() >= 9, "{objects:?}");
        stdout_of(
            Command::new(validate)
                .args(["--strict", "--quiet"])
                .args(&objects),
        );
    }
    if let Some(promtool) = tool_or_skip("promtool", "cargo xtask setup") {
        stdout_of(
            Command::new(&promtool)
                .args(["check", "rules", "alerts.rules.yml"])
                .current_dir(&out),
        );
        let tested = stdout_of(
            Command::new(&promtool)
                .args(["test", "rules", "alerts.test.yml"])
                .current_dir(&out),
        );
        assert!(tested.contains("SUCCESS"), "{tested}");
    }
    // Each overlay, as kustomize renders it, passes the same checks.
    if let Some(kubectl) = tool_or_skip("kubectl", "cargo xtask setup") {
        let rendered = repo.path().join("kustomized");
        fs::create_dir_all(&rendered).unwrap();
        for env in ["dev", "staging", "prod"] {
            let text = stdout_of(
                Command::new(&kubectl)
                    .arg("kustomize")
                    .arg(out.join("overlays").join(env)),
            );
            assert!(
                text.contains(&format!("value: {env}")) && text.contains("checksum/config"),
                "{text}"
            );
            fs::write(rendered.join(format!("{env}.yaml")), text).unwrap();
        }
        let run = k8s(
            repo.path(),
            &["--check", "--dir", rendered.to_str().unwrap()],
        );
        let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
        assert!(run.status.success(), "{stdout}\n{}", stderr_text(&run));
        assert_eq!(stdout.matches("  ok      ").count(), 3 * 17, "{stdout}");
    }

    // A user-edited copy that lost a field fails --check --dir with a table
    // and one line.
    let edited = repo.path().join("edited");
    fs::create_dir_all(&edited).unwrap();
    fs::write(
        edited.join("prod.yaml"),
        prod.replace(
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: false",
        ),
    )
    .unwrap();
    let run = k8s(repo.path(), &["--check", "--dir", edited.to_str().unwrap()]);
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), stderr_text(&run));
    assert_eq!(run.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("FAILED  container-security-context-readonlyrootfilesystem"),
        "{stdout}"
    );
    assert_eq!(
        stderr.trim(),
        "error: 1 check failed (prod.yaml: container-security-context-readonlyrootfilesystem): see the table above"
    );

    // --apply hands one environment to kubectl; --dry-run shows how.
    let run = output(
        xtask(repo.path())
            .args(["--dry-run", "k8s", "--env", "prod", "--apply"])
            .env("CARGO_TARGET_DIR", repo.path().join("target")),
    );
    let stderr = stderr_text(&run);
    assert!(run.status.success(), "{stderr}");
    for line in [
        format!("$ kubectl apply -f {}", out.join("prod.yaml").display()),
        "$ kubectl rollout status deployment/app --timeout=5m".to_owned(),
    ] {
        assert!(stderr.contains(&line), "no `{line}` in:\n{stderr}");
    }

    // The grace period follows drain_timeout in config/prod.toml (5 s
    // delay + 30 s drain + 10 s span export + 5 s margin)...
    assert!(prod.contains("terminationGracePeriodSeconds: 50"), "{prod}");
    let prod_toml = repo.path().join("config/prod.toml");
    let text = fs::read_to_string(&prod_toml).unwrap();
    fs::write(
        &prod_toml,
        text.replace("[server]\n", "[server]\ndrain_timeout = \"50s\"\n"),
    )
    .unwrap();
    // ...and every port follows server.listen in config/base.toml.
    let base_toml = repo.path().join("config/base.toml");
    let text = fs::read_to_string(&base_toml).unwrap();
    fs::write(
        &base_toml,
        text.replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:9091\""),
    )
    .unwrap();
    let run = k8s(repo.path(), &["--check"]);
    assert!(run.status.success(), "{}", stderr_text(&run));
    let objects = prod_objects(&out);
    assert!(
        objects.contains("terminationGracePeriodSeconds: 70"),
        "{objects}"
    );
    assert!(!objects.contains("8080"), "{objects}");
    for port in [
        "containerPort: 9091",
        "- port: 9091",
        "prometheus.io/port: \"9091\"",
        "value: \"0.0.0.0:9091\"",
    ] {
        assert!(objects.contains(port), "no `{port}` in:\n{objects}");
    }
}

#[test]
fn every_metric_an_alert_names_is_exported_by_the_running_app() {
    let repo = repository();
    record_image(repo.path());
    let run = k8s(repo.path(), &[]);
    assert!(run.status.success(), "{}", stderr_text(&run));
    let rules = fs::read_to_string(repo.path().join("target/dist/k8s/alerts.rules.yml")).unwrap();
    let mut names: Vec<String> = Vec::new();
    for line in rules
        .lines()
        .filter(|line| line.trim_start().starts_with("expr:"))
    {
        let mut rest = line;
        while let Some(brace) = rest.find('{') {
            let name: String = rest[..brace]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if !name.is_empty() && !names.contains(&name) {
                names.push(name);
            }
            rest = &rest[brace + 1..];
        }
    }
    assert_eq!(names.len(), 5, "{names:?} from:\n{rules}");

    // The binary the suite tests (the shipped one under `cargo xtask ci`),
    // else a debug build.
    let binary = std::env::var_os("APP_TEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| app_built_at(&"f".repeat(40)));
    let app = RunningApp::start(Command::new(&binary), &workspace_root().join("config"));
    // One request, so that the request counters and histogram have series.
    assert!(app.get("/version").starts_with("HTTP/1.1 200"));
    let metrics = app.get("/metrics");
    drop(app);
    for name in &names {
        assert!(
            metrics
                .lines()
                .any(|line| line.starts_with(&format!("{name}{{"))
                    || line.starts_with(&format!("{name} "))),
            "the alert rules name {name}, which /metrics does not export:\n{metrics}"
        );
    }
}
