//! The project: where the workspace is, where outputs go, and the settings in
//! `[workspace.metadata.xtask]` of the root `Cargo.toml`, read once per
//! invocation through `cargo metadata`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// `[workspace.metadata.xtask]`: what changes from one service to another.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// The package that is built, stamped and shipped.
    pub package: String,
    /// The binary that package produces.
    pub binary: String,
    /// Image name used when no `--tag` is given.
    pub image: String,
    /// The release matrix: what `--target all` means.
    pub targets: Vec<String>,
    /// Releases `deploy` keeps on each host (default 5).
    #[serde(default)]
    pub keep_releases: Option<usize>,
    /// The release signing key's public half (a `PUBLIC KEY` PEM), relative
    /// to the workspace root: what `verify` and `deploy` check releases
    /// against, and what the private key `dist` signs with must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Keys that signed earlier releases, still accepted by `verify` and
    /// `deploy` (until their date, if they have one) after `keygen
    /// --rotate` made a new `public-key`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_keys: Vec<PreviousKey>,
    /// `[workspace.metadata.xtask.k8s]`: what `cargo xtask k8s` renders.
    #[serde(default)]
    pub k8s: K8sSettings,
    /// `[workspace.metadata.xtask.canary]`: what `deploy --canary` allows.
    #[serde(default)]
    pub canary: CanarySettings,
}

/// Every key of `[workspace.metadata.xtask]` as `(table, key, type,
/// default, meaning)`; `None` as the default of a `k8s` key means
/// `K8sSettings::default()`'s. `docs/reference/project.md` is written
/// from it, and a test holds it to the structs' fields both ways.
pub const KEYS: &[(&str, &str, &str, Option<&str>, &str)] = &[
    (
        "",
        "package",
        "string",
        Some("required"),
        "The package that is built, stamped and shipped.",
    ),
    (
        "",
        "binary",
        "string",
        Some("required"),
        "The binary that package produces; archives, units, the image and the deploy root are named after it.",
    ),
    (
        "",
        "image",
        "string",
        Some("required"),
        "The image's name when `image` is given no `--tag` (its tag is the version).",
    ),
    (
        "",
        "targets",
        "array of strings",
        Some("required"),
        "The release matrix: the target triples `--target all` and `release --matrix` mean.",
    ),
    (
        "",
        "keep-releases",
        "integer",
        Some("5"),
        "Releases `deploy` keeps on each host, the current and the previous one included (at least 2).",
    ),
    (
        "",
        "public-key",
        "string",
        Some("none"),
        "The release signing key's public half (PEM), relative to the workspace root, which `keygen` writes: `verify` and `deploy` check releases against it, and `release` runs only with its private half.",
    ),
    (
        "",
        "previous-keys",
        "array of tables",
        Some("[]"),
        "Keys that signed earlier releases, still accepted (each `{ key = \"keys/…pub\", until = \"YYYY-MM-DD\" }`, `until` optional), written by `keygen --rotate`.",
    ),
    (
        "k8s",
        "min-replicas",
        "integer",
        None,
        "The HorizontalPodAutoscaler's floor (at least 2, so that one pod can be disrupted).",
    ),
    (
        "k8s",
        "max-replicas",
        "integer",
        None,
        "The HorizontalPodAutoscaler's ceiling.",
    ),
    (
        "k8s",
        "cpu-utilization",
        "integer",
        None,
        "Average CPU use, in percent of the request, the HPA aims at.",
    ),
    (
        "k8s",
        "requests-per-second",
        "integer",
        None,
        "Requests per second per pod the HPA aims at (a Pods metric the Prometheus Adapter serves from the recording rule `k8s` renders).",
    ),
    (
        "k8s",
        "otlp-endpoint",
        "string",
        None,
        "The cluster's trace collector (OTLP/HTTP), set as `OTEL_EXPORTER_OTLP_ENDPOINT`; empty: no tracing.",
    ),
    (
        "k8s",
        "trace-sampling-ratio",
        "float",
        None,
        "The share of new traces sampled (`OTEL_TRACES_SAMPLER_ARG` of `parentbased_traceidratio`).",
    ),
    (
        "k8s",
        "cpu-request",
        "string",
        None,
        "The container's CPU request.",
    ),
    (
        "k8s",
        "cpu-limit",
        "string",
        None,
        "The container's CPU limit, which is also its worker count (`server.workers = \"auto\"` counts the CPU quota).",
    ),
    (
        "k8s",
        "memory-request",
        "string",
        None,
        "The container's memory request.",
    ),
    (
        "k8s",
        "memory-limit",
        "string",
        None,
        "The container's memory limit.",
    ),
    (
        "k8s",
        "ephemeral-storage",
        "string",
        None,
        "The container's ephemeral storage, request and limit.",
    ),
    (
        "k8s",
        "grace-margin-seconds",
        "integer",
        None,
        "Seconds added to `drain_delay` + `drain_timeout` for the pods' grace period.",
    ),
    (
        "k8s",
        "alert-error-ratio",
        "float",
        None,
        "The share of requests answered 5xx above which the error alert fires.",
    ),
    (
        "k8s",
        "alert-p99-seconds",
        "float",
        None,
        "The p99 latency, in seconds, above which the latency alert fires.",
    ),
    (
        "k8s",
        "alert-selector",
        "string",
        Some("job=\"<binary>\""),
        "Label matchers every alert puts on the service's series, `key=\"value\"` separated by commas.",
    ),
    (
        "canary",
        "max-error-ratio",
        "float",
        Some("k8s.alert-error-ratio"),
        "The share of a canary's requests answered 5xx over its soak above which `deploy --canary` switches it back.",
    ),
    (
        "canary",
        "max-p99-seconds",
        "float",
        Some("k8s.alert-p99-seconds"),
        "The canary's p99 latency, in seconds, above which it is switched back.",
    ),
];

/// A key that signed earlier releases: `{ key = "keys/app.1a2b3c4d5e6f.pub",
/// until = "2027-03-01" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PreviousKey {
    /// The public key, relative to the workspace root.
    pub key: String,
    /// The last day (UTC, `YYYY-MM-DD`) a release it signed is accepted;
    /// none: until the entry is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// A key releases may be signed with, as the project names it.
pub struct AcceptedKey {
    pub key: crate::signing::PublicKey,
    /// Where it came from, for messages: `public-key` or `previous-keys`.
    pub label: String,
    /// The last day it is accepted, if it has one.
    pub until: Option<String>,
}

impl AcceptedKey {
    /// Whether `today` (`YYYY-MM-DD`) is past the key's last day.
    pub fn retired(&self, today: &str) -> bool {
        self.until.as_deref().is_some_and(|until| today > until)
    }
}

/// The bounds a canary must stay within over its soak; by default the
/// thresholds of the alerts `k8s` renders.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CanarySettings {
    /// Most of its requests answered with 5xx, as a ratio (0.01 is 1%).
    pub max_error_ratio: Option<f64>,
    /// Highest p99 latency, in seconds.
    pub max_p99_seconds: Option<f64>,
}

/// Sizing, scaling and alert thresholds of the Kubernetes manifests; every
/// key is optional.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct K8sSettings {
    /// The HorizontalPodAutoscaler's floor (at least 2, so that one pod
    /// can be disrupted) and ceiling.
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Average CPU use, in percent of the request, that the HPA aims at.
    pub cpu_utilization: u32,
    /// Requests per second per pod that the HPA aims at (a Pods metric
    /// served by the Prometheus Adapter from the recording rule `k8s`
    /// renders).
    pub requests_per_second: u32,
    /// The OTLP/HTTP endpoint of the cluster's trace collector, set as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; empty: tracing off.
    pub otlp_endpoint: String,
    /// The share of new traces sampled (`OTEL_TRACES_SAMPLER_ARG` of
    /// `parentbased_traceidratio`).
    pub trace_sampling_ratio: f64,
    pub cpu_request: String,
    pub cpu_limit: String,
    pub memory_request: String,
    pub memory_limit: String,
    pub ephemeral_storage: String,
    /// Seconds added to drain_delay + drain_timeout for the grace period.
    pub grace_margin_seconds: u64,
    /// Alert when more than this share of requests fail with 5xx.
    pub alert_error_ratio: f64,
    /// Alert when the p99 latency is above this many seconds.
    pub alert_p99_seconds: f64,
    /// Label matchers every alert puts on the app's series, `key="value"`
    /// separated by commas [default: job="<binary>"].
    pub alert_selector: Option<String>,
}

impl Default for K8sSettings {
    fn default() -> K8sSettings {
        K8sSettings {
            min_replicas: 2,
            max_replicas: 10,
            cpu_utilization: 70,
            requests_per_second: 3000,
            otlp_endpoint: "http://otel-collector.observability:4318".to_owned(),
            trace_sampling_ratio: 0.01,
            cpu_request: "100m".to_owned(),
            cpu_limit: "1".to_owned(),
            memory_request: "64Mi".to_owned(),
            memory_limit: "256Mi".to_owned(),
            ephemeral_storage: "64Mi".to_owned(),
            grace_margin_seconds: 5,
            alert_error_ratio: 0.01,
            alert_p99_seconds: 0.5,
            alert_selector: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    /// Cargo's target directory (honours `CARGO_TARGET_DIR`).
    pub target_dir: PathBuf,
    pub settings: Settings,
    /// The version of the shipped package, from its `Cargo.toml`.
    pub version: String,
    /// The shipped package's `repository`, for image labels.
    pub repository: Option<String>,
    /// The shipped package's `authors` and `description`, for the
    /// packages' maintainer and summary.
    pub authors: Vec<String>,
    pub description: Option<String>,
    /// The shipped package's folder (its `Cargo.toml`'s), which `dev`
    /// watches.
    pub package_dir: PathBuf,
    /// The root `Cargo.toml` and every member's: what the dependency
    /// resolve depends on besides `Cargo.lock`.
    pub manifests: Vec<PathBuf>,
}

impl Project {
    /// The port the service listens on as deployed, as the service's own
    /// settings code reads `config/` for prod (`service::deployed_port`).
    pub fn service_port(&self) -> Result<u16> {
        crate::service::deployed_port(&self.root)
    }

    /// The public key `public-key` names, if the project names one.
    pub fn public_key(&self) -> Result<Option<crate::signing::PublicKey>> {
        let Some(relative) = &self.settings.public_key else {
            return Ok(None);
        };
        crate::signing::PublicKey::read(&self.root.join(relative))
            .map(Some)
            .context("read public-key of [workspace.metadata.xtask]: run `cargo xtask keygen`, or fix the path")
    }

    /// Every key the project accepts signatures from: `public-key` first,
    /// then `previous-keys` in order. Empty without a `public-key`.
    pub fn accepted_keys(&self) -> Result<Vec<AcceptedKey>> {
        let Some(current) = self.public_key()? else {
            return Ok(Vec::new());
        };
        let mut keys = vec![AcceptedKey {
            key: current,
            label: format!(
                "public-key {}",
                self.settings.public_key.as_deref().unwrap_or_default()
            ),
            until: None,
        }];
        for previous in &self.settings.previous_keys {
            if let Some(until) = &previous.until {
                check_day(until).with_context(|| {
                    format!(
                        "previous-keys of [workspace.metadata.xtask]: until = {until:?} of {}",
                        previous.key
                    )
                })?;
            }
            let key = crate::signing::PublicKey::read(&self.root.join(&previous.key))
                .with_context(|| {
                    format!(
                        "read {} of previous-keys in [workspace.metadata.xtask]: fix the path, or remove the entry",
                        previous.key
                    )
                })?;
            keys.push(AcceptedKey {
                key,
                label: format!("previous key {}", previous.key),
                until: previous.until.clone(),
            });
        }
        Ok(keys)
    }

    pub fn load(cargo: &Path) -> Result<Project> {
        let metadata = cargo_metadata::MetadataCommand::new()
            .cargo_path(cargo)
            .no_deps()
            .exec()
            .map_err(|err| anyhow::anyhow!(metadata_error(&err)))
            .context(
                "read the workspace with `cargo metadata` (run cargo xtask inside the workspace)",
            )?;
        let settings = parse_settings(&metadata.workspace_metadata)?;
        let Some(package) = metadata
            .workspace_packages()
            .into_iter()
            .find(|p| *p.name == settings.package)
        else {
            bail!(
                "[workspace.metadata.xtask] names package `{}`, which is not a workspace member: set `package` to one of {}",
                settings.package,
                metadata
                    .workspace_packages()
                    .iter()
                    .map(|p| format!("`{}`", p.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        let version = package.version.to_string();
        let repository = package.repository.clone();
        let authors = package.authors.clone();
        let description = package.description.clone();
        let package_dir = package
            .manifest_path
            .parent()
            .map(|dir| dir.as_std_path().to_owned())
            .unwrap_or_default();
        let root = metadata.workspace_root.clone().into_std_path_buf();
        let mut manifests = vec![root.join("Cargo.toml")];
        for member in metadata.workspace_packages() {
            let path = member.manifest_path.clone().into_std_path_buf();
            if !manifests.contains(&path) {
                manifests.push(path);
            }
        }
        Ok(Project {
            manifests,
            root: metadata.workspace_root.into_std_path_buf(),
            target_dir: metadata.target_directory.into_std_path_buf(),
            version,
            repository,
            authors,
            description,
            package_dir,
            settings,
        })
    }

    /// The one output folder of the release tasks. It sits in the target
    /// directory, so `CARGO_TARGET_DIR` moves it and `cargo clean` removes it.
    pub fn dist_dir(&self) -> PathBuf {
        self.target_dir.join("dist")
    }
}

/// Parses `[workspace.metadata.xtask]` out of the workspace metadata.
pub fn parse_settings(workspace_metadata: &serde_json::Value) -> Result<Settings> {
    let Some(table) = workspace_metadata.get("xtask") else {
        bail!(
            "the root Cargo.toml has no [workspace.metadata.xtask] table: add one (every key: docs/reference/project.md)"
        );
    };
    if table.get("port").is_some() {
        bail!(
            "[workspace.metadata.xtask] port is no longer read: the service's port lives in server.listen of config/base.toml, which the image, units, k8s objects and deploy proof follow; remove `port` from the root Cargo.toml"
        );
    }
    serde_json::from_value(table.clone())
        .context("read [workspace.metadata.xtask] in the root Cargo.toml")
}

/// Checks a day written `YYYY-MM-DD`.
pub fn check_day(day: &str) -> Result<()> {
    let parts: Vec<&str> = day.split('-').collect();
    let numbers: Option<Vec<u32>> = parts.iter().map(|part| part.parse().ok()).collect();
    match (parts.as_slice(), numbers.as_deref()) {
        ([year, month, date], Some([_, month_number, date_number]))
            if year.len() == 4
                && month.len() == 2
                && date.len() == 2
                && (1..=12).contains(month_number)
                && (1..=31).contains(date_number) =>
        {
            Ok(())
        }
        _ => bail!("{day:?} is not a day written YYYY-MM-DD (e.g. 2027-03-01)"),
    }
}

/// The first line cargo printed, without its own `error: ` prefix.
fn metadata_error(err: &cargo_metadata::Error) -> String {
    match err {
        cargo_metadata::Error::CargoMetadata { stderr } => {
            let line = stderr
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("failed");
            format!(
                "cargo metadata: {}",
                line.strip_prefix("error: ").unwrap_or(line)
            )
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(metadata: serde_json::Value, expected: Result<Settings, &str>) {
        let actual = parse_settings(&metadata).map_err(|err| format!("{err:#}"));
        match (actual, expected) {
            (Ok(actual), Ok(expected)) => assert_eq!(actual, expected),
            (Err(actual), Err(expected)) => {
                assert!(
                    actual.contains(expected),
                    "error `{actual}` does not mention `{expected}`"
                )
            }
            (actual, expected) => panic!("got {actual:?}, expected {expected:?}"),
        }
    }

    fn sample() -> serde_json::Value {
        json!({"xtask": {
            "package": "app", "binary": "app", "image": "ghcr.io/example/app",
            "targets": ["x86_64-unknown-linux-musl"]
        }})
    }

    #[test]
    fn settings_are_read_from_workspace_metadata() {
        check(
            sample(),
            Ok(Settings {
                package: "app".into(),
                binary: "app".into(),
                image: "ghcr.io/example/app".into(),
                targets: vec!["x86_64-unknown-linux-musl".into()],
                keep_releases: None,
                public_key: None,
                previous_keys: Vec::new(),
                k8s: Default::default(),
                canary: Default::default(),
            }),
        );
    }

    #[test]
    fn the_key_list_is_every_field_of_the_settings() {
        let mut full = parse_settings(&sample()).unwrap();
        full.keep_releases = Some(5);
        full.public_key = Some("keys/app.pub".into());
        full.previous_keys = vec![PreviousKey {
            key: "keys/old.pub".into(),
            until: None,
        }];
        full.k8s.alert_selector = Some("job=\"app\"".into());
        full.canary = CanarySettings {
            max_error_ratio: Some(0.01),
            max_p99_seconds: Some(0.5),
        };
        let value = serde_json::to_value(&full).unwrap();
        let mut fields = Vec::new();
        for (key, field) in value.as_object().unwrap() {
            match key.as_str() {
                "k8s" | "canary" => fields.extend(
                    field
                        .as_object()
                        .unwrap()
                        .keys()
                        .map(|inner| format!("{key}.{inner}")),
                ),
                _ => fields.push(key.clone()),
            }
        }
        let mut listed: Vec<String> = KEYS
            .iter()
            .map(|(table, key, ..)| {
                if table.is_empty() {
                    (*key).to_owned()
                } else {
                    format!("{table}.{key}")
                }
            })
            .collect();
        fields.sort();
        listed.sort();
        assert_eq!(
            listed, fields,
            "project::KEYS and the settings' fields differ"
        );
        // A `k8s` key without a stated default has one in K8sSettings.
        let defaults = serde_json::to_value(K8sSettings::default()).unwrap();
        for (table, key, _, default, _) in KEYS {
            if default.is_none() {
                assert_eq!(*table, "k8s", "{key} needs a stated default");
                assert!(!defaults[key].is_null(), "k8s.{key} has no default");
            }
        }
    }

    #[test]
    fn bad_settings_name_the_problem() {
        check(json!({}), Err("has no [workspace.metadata.xtask] table"));
        check(json!(null), Err("has no [workspace.metadata.xtask] table"));
        let mut unknown_key = sample();
        unknown_key["xtask"]["prot"] = json!(80);
        check(unknown_key, Err("unknown field `prot`"));
        let mut missing = sample();
        missing["xtask"].as_object_mut().unwrap().remove("binary");
        check(missing, Err("missing field `binary`"));
        let mut old_port = sample();
        old_port["xtask"]["port"] = json!(8080);
        check(
            old_port,
            Err("port lives in server.listen of config/base.toml"),
        );
    }
}
