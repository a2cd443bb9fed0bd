//! The Kubernetes objects, as JSON values, from the settings, the app's
//! config files and the pinned image. One function per object; what
//! differs between environments is a list of JSON-patch `add` operations,
//! applied here for the flat `<env>.yaml` and written as-is into each
//! kustomize overlay, so both layouts say the same thing.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::archive::sha256_hex;
use crate::project::K8sSettings;

/// The environments the app knows (`APP_ENV`).
pub const ENVIRONMENTS: [&str; 3] = ["dev", "staging", "prod"];

/// The uid and gid of the image's non-root user.
pub const USER_ID: u32 = 65532;

/// Where the config files are mounted, and read through `APP_CONFIG_DIR`.
const CONFIG_DIR: &str = "/etc/app";

/// Everything the objects are made from.
pub struct Inputs<'a> {
    pub binary: &'a str,
    pub version: &'a str,
    pub port: u16,
    /// `name@sha256:...`.
    pub image: String,
    pub settings: &'a K8sSettings,
    pub service_monitor: bool,
}

/// One environment's config: its files and the drain they set.
pub struct EnvConfig {
    pub name: &'static str,
    /// `base.toml` and `<env>.toml`, as the ConfigMap holds them.
    pub files: Vec<(String, String)>,
    pub drain_delay: Duration,
    pub drain_timeout: Duration,
    /// `tracing.export_timeout`: after the drain, the process exports the
    /// spans it still holds for up to this long before it exits.
    pub flush_timeout: Duration,
}

impl EnvConfig {
    /// Reads `base.toml` and `<env>.toml` from `config_dir`.
    pub fn read(config_dir: &std::path::Path, name: &'static str) -> Result<EnvConfig> {
        let mut files = Vec::new();
        for file in ["base.toml".to_owned(), format!("{name}.toml")] {
            let path = config_dir.join(&file);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "read {}: each environment needs its config file",
                    path.display()
                )
            })?;
            files.push((file, text));
        }
        EnvConfig::from_files(name, files)
    }

    /// The drain settings `files` (`base.toml`, then `<env>.toml`) give,
    /// as the service's own settings code reads them.
    pub fn from_files(name: &'static str, files: Vec<(String, String)>) -> Result<EnvConfig> {
        let settings = crate::service::settings_from_files(name, &files)?;
        Ok(EnvConfig {
            name,
            drain_delay: settings.server.drain_delay,
            drain_timeout: settings.server.drain_timeout,
            flush_timeout: settings.tracing.export_timeout,
            files,
        })
    }

    /// The longest a stop takes: the whole drain, then the final export
    /// of spans.
    pub fn stop_time(&self) -> Duration {
        self.drain_delay + self.drain_timeout + self.flush_timeout
    }

    /// The pods' `terminationGracePeriodSeconds`: the longest stop plus a
    /// margin, rounded up.
    pub fn grace_seconds(&self, margin: u64) -> u64 {
        self.stop_time().as_secs_f64().ceil() as u64 + margin
    }
}

pub fn labels(binary: &str) -> Value {
    json!({"app.kubernetes.io/name": binary})
}

pub fn deployment(inputs: &Inputs) -> Value {
    let binary = inputs.binary;
    let settings = inputs.settings;
    let resources = json!({
        "requests": {"cpu": settings.cpu_request, "memory": settings.memory_request,
                     "ephemeral-storage": settings.ephemeral_storage},
        "limits": {"cpu": settings.cpu_limit, "memory": settings.memory_limit,
                   "ephemeral-storage": settings.ephemeral_storage},
    });
    let mut annotations = serde_json::Map::new();
    if !inputs.service_monitor {
        annotations.insert("prometheus.io/scrape".into(), "true".into());
        annotations.insert("prometheus.io/port".into(), inputs.port.to_string().into());
        annotations.insert("prometheus.io/path".into(), "/metrics".into());
    }
    let mut pod_labels = labels(binary);
    pod_labels["app.kubernetes.io/version"] = inputs.version.into();
    let mut env = vec![
        json!({"name": "APP_CONFIG_DIR", "value": CONFIG_DIR}),
        json!({"name": "APP__SERVER__LISTEN", "value": format!("0.0.0.0:{}", inputs.port)}),
        json!({"name": "APP__ADMIN__TOKEN_FILE", "value": format!("/run/secrets/{binary}/token")}),
    ];
    env.extend(tracing_env(inputs));
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": binary, "labels": labels(binary)},
        "spec": {
            // No replicas: the HorizontalPodAutoscaler owns the count.
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": labels(binary)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": annotations},
                "spec": {
                    "automountServiceAccountToken": false,
                    "enableServiceLinks": false,
                    "securityContext": {
                        "runAsNonRoot": true, "runAsUser": USER_ID, "runAsGroup": USER_ID,
                        "fsGroup": USER_ID, "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": labels(binary)},
                    }],
                    "containers": [{
                        "name": binary,
                        "image": inputs.image,
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"name": "http", "containerPort": inputs.port, "protocol": "TCP"}],
                        "env": env,
                        "volumeMounts": [
                            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": true},
                            {"name": "admin-token", "mountPath": format!("/run/secrets/{binary}"), "readOnly": true},
                        ],
                        // Startup: up to 30 s to listen. Liveness: the process
                        // answers at all (/healthz), slowly judged, so load does
                        // not restart it. Readiness: it should get traffic
                        // (/readyz, 503 from the first moment of a drain).
                        "startupProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                         "periodSeconds": 1, "failureThreshold": 30},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                          "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"},
                                           "periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 1},
                        "resources": resources,
                        "securityContext": {
                            "allowPrivilegeEscalation": false, "privileged": false,
                            "readOnlyRootFilesystem": true, "runAsNonRoot": true,
                            "runAsUser": USER_ID, "runAsGroup": USER_ID,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": format!("{binary}-config")}},
                        {"name": "admin-token", "secret": {"secretName": format!("{binary}-admin"),
                                                          "defaultMode": 0o440,
                                                          "items": [{"key": "token", "path": "token"}]}},
                    ],
                },
            },
        },
    })
}

pub fn service(inputs: &Inputs) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": inputs.binary, "labels": labels(inputs.binary)},
        "spec": {
            "type": "ClusterIP",
            "selector": labels(inputs.binary),
            "ports": [{"name": "http", "port": inputs.port, "targetPort": "http", "protocol": "TCP"}],
        },
    })
}

pub fn autoscaler(inputs: &Inputs) -> Value {
    let settings = inputs.settings;
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": inputs.binary, "labels": labels(inputs.binary)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": inputs.binary},
            "minReplicas": settings.min_replicas,
            "maxReplicas": settings.max_replicas,
            // Whichever asks for more pods wins: CPU, or requests per
            // second per pod (served by the Prometheus Adapter, whose rule
            // `k8s` writes to prometheus-adapter.yaml).
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": settings.cpu_utilization}}},
                {"type": "Pods", "pods": {"metric": {"name": crate::artifacts::alerts::PODS_METRIC},
                    "target": {"type": "AverageValue", "averageValue": settings.requests_per_second.to_string()}}},
            ],
        },
    })
}

/// OpenTelemetry's variables, which the service maps into its `[tracing]`
/// settings: the collector, the service's name, parent-based sampling at
/// the settings' ratio, and the pod and namespace (downward API) as
/// resource attributes. No endpoint: only the name, tracing stays off.
fn tracing_env(inputs: &Inputs) -> Vec<Value> {
    let settings = inputs.settings;
    let mut env = vec![
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
        json!({"name": "OTEL_SERVICE_NAME", "value": inputs.binary}),
        json!({"name": "OTEL_RESOURCE_ATTRIBUTES",
               "value": "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)"}),
    ];
    if !settings.otlp_endpoint.is_empty() {
        env.extend([
            json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": settings.otlp_endpoint}),
            json!({"name": "OTEL_TRACES_SAMPLER", "value": "parentbased_traceidratio"}),
            json!({"name": "OTEL_TRACES_SAMPLER_ARG", "value": format!("{:?}", settings.trace_sampling_ratio)}),
        ]);
    }
    env
}

pub fn disruption_budget(inputs: &Inputs) -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": inputs.binary, "labels": labels(inputs.binary)},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(inputs.binary)}},
    })
}

pub fn network_policy(inputs: &Inputs) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": inputs.binary, "labels": labels(inputs.binary)},
        "spec": {
            "podSelector": {"matchLabels": labels(inputs.binary)},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"port": inputs.port, "protocol": "TCP"}]}],
        },
    })
}

pub fn service_monitor(inputs: &Inputs) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": inputs.binary, "labels": labels(inputs.binary)},
        "spec": {
            "selector": {"matchLabels": labels(inputs.binary)},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
        },
    })
}

pub fn prometheus_rule(inputs: &Inputs, groups: &Value) -> Value {
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": inputs.binary, "labels": labels(inputs.binary)},
        "spec": {"groups": groups},
    })
}

pub fn config_map(inputs: &Inputs, env: &EnvConfig) -> Value {
    let data: serde_json::Map<String, Value> = env
        .files
        .iter()
        .map(|(name, text)| (name.clone(), Value::String(text.clone())))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("{}-config", inputs.binary), "labels": labels(inputs.binary)},
        "data": data,
    })
}

/// A fingerprint of the env's config files: a pod template annotation, so
/// that a config change rolls the pods.
pub fn config_checksum(env: &EnvConfig) -> String {
    let mut all = String::new();
    for (name, text) in &env.files {
        all.push_str(name);
        all.push('\0');
        all.push_str(text);
        all.push('\0');
    }
    sha256_hex(all.as_bytes())
}

/// What the environment adds to the base Deployment, as JSON-patch `add`
/// operations.
pub fn env_patch(env: &EnvConfig, margin: u64) -> Value {
    json!([
        {"op": "add", "path": "/spec/template/spec/terminationGracePeriodSeconds",
         "value": env.grace_seconds(margin)},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-",
         "value": {"name": "APP_ENV", "value": env.name}},
        {"op": "add", "path": "/spec/template/metadata/annotations/checksum~1config",
         "value": config_checksum(env)},
    ])
}

/// Applies JSON-patch `add` operations (RFC 6902), the subset `env_patch`
/// uses: object members and appending to arrays with `-`.
pub fn apply_patch(document: &mut Value, patch: &Value) -> Result<()> {
    for operation in patch.as_array().context("a patch is a list")? {
        let path = operation["path"].as_str().context("a patch path")?;
        if operation["op"] != "add" {
            bail!("only `add` operations are applied, not {}", operation["op"]);
        }
        let mut tokens: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|token| token.replace("~1", "/").replace("~0", "~"))
            .collect();
        let last = tokens.pop().context("an empty patch path")?;
        let mut target = &mut *document;
        for token in &tokens {
            target = match target {
                Value::Object(map) => map.get_mut(token),
                Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
                _ => None,
            }
            .with_context(|| format!("{path}: nothing at `{token}`"))?;
        }
        let value = operation["value"].clone();
        match target {
            Value::Object(map) => {
                map.insert(last, value);
            }
            Value::Array(items) if last == "-" => items.push(value),
            _ => bail!("{path}: cannot add there"),
        }
    }
    Ok(())
}

/// The comment above a Deployment: where its grace period comes from.
pub fn deployment_comment(binary: &str, env: Option<&EnvConfig>, margin: u64) -> String {
    let grace = match env {
        Some(env) => format!(
            "terminationGracePeriodSeconds {} = drain_delay {:?} + drain_timeout {:?}\n\
             + tracing.export_timeout {:?} (the last spans' export) + {margin}s margin,\n\
             from config/base.toml and config/{}.toml.",
            env.grace_seconds(margin),
            env.drain_delay,
            env.drain_timeout,
            env.flush_timeout,
            env.name
        ),
        None => "Each overlay adds APP_ENV and terminationGracePeriodSeconds = drain_delay +\n\
                 drain_timeout + tracing.export_timeout + margin, computed from that\n\
                 environment's config files."
            .to_owned(),
    };
    format!(
        "Rendered by `cargo xtask k8s`; edit the settings or config files and render again.\n\
         {grace}\n\
         On SIGTERM the app keeps serving for drain_delay while /readyz answers 503 and the\n\
         endpoints drop the pod, then finishes in-flight requests within drain_timeout.\n\
         The image has no shell, so there is no preStop sleep: drain_delay does that job.\n\
         The admin token is read from the Secret {binary}-admin (key `token`), which this tool\n\
         never creates: kubectl create secret generic {binary}-admin --from-file=token=FILE"
    )
}
