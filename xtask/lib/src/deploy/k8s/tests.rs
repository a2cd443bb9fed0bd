//! The checks on the objects as rendered for each environment, and each
//! check failing, alone, when the field it guards is removed or broken.

use serde_json::{Value, json};

use super::checks::{self, CHECKS, Objects};
use super::render::{self, ENVIRONMENTS, EnvConfig, Inputs};
use crate::project::K8sSettings;

fn config_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// The objects of one environment's flat file, as `k8s` renders them.
fn rendered(env: &'static str) -> Vec<Value> {
    let settings = K8sSettings::default();
    let inputs = Inputs {
        binary: "app",
        version: "0.1.0",
        port: 8080,
        image: format!("ghcr.io/example/app@sha256:{}", "ab".repeat(32)),
        settings: &settings,
        service_monitor: false,
    };
    let config = EnvConfig::read(&config_dir(), env).unwrap();
    let mut deployment = render::deployment(&inputs);
    render::apply_patch(&mut deployment, &render::env_patch(&config, 5)).unwrap();
    vec![
        render::config_map(&inputs, &config),
        deployment,
        render::service(&inputs),
        render::autoscaler(&inputs),
        render::disruption_budget(&inputs),
        render::network_policy(&inputs),
    ]
}

fn failures(objects: Vec<Value>) -> Vec<&'static str> {
    let objects = Objects { all: objects };
    let deployment = objects.deployments()[0].clone();
    checks::run(&objects, &deployment)
        .into_iter()
        .filter(|(_, outcome)| outcome.is_err())
        .map(|(check, _)| check.name)
        .collect()
}

#[test]
fn every_environment_passes_every_check() {
    for env in ENVIRONMENTS {
        assert_eq!(failures(rendered(env)), Vec::<&str>::new(), "{env}");
    }
}

/// A change to the objects: `kind`, a JSON pointer in it, and the new
/// value there (`None` removes it; a pointer of "" removes the object).
type Change = (&'static str, &'static str, Option<Value>);

fn apply(objects: &mut Vec<Value>, (kind, pointer, value): &Change) {
    let index = objects
        .iter()
        .position(|object| object["kind"] == *kind)
        .unwrap_or_else(|| panic!("no {kind}"));
    if pointer.is_empty() {
        objects.remove(index);
        return;
    }
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = objects[index]
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{kind} has no {parent}"));
    let map = parent.as_object_mut().unwrap();
    match value {
        Some(value) => {
            map.insert(key.to_owned(), value.clone());
        }
        None => {
            assert!(map.remove(key).is_some(), "{kind} has no {pointer}");
        }
    }
}

const CONTAINER: &str = "/spec/template/spec/containers/0";

#[test]
fn each_check_fails_alone_when_its_field_is_broken() {
    let container =
        |path: &str| -> &'static str { Box::leak(format!("{CONTAINER}{path}").into_boxed_str()) };
    let deployment = "Deployment";
    let cases: Vec<(&str, Vec<Change>)> = vec![
        (
            "container-image-tag",
            vec![(
                deployment,
                container("/image"),
                Some(json!("ghcr.io/example/app:0.1.0")),
            )],
        ),
        (
            "pod-probes",
            vec![(deployment, container("/livenessProbe"), None)],
        ),
        (
            "pod-probes",
            vec![(deployment, container("/readinessProbe"), None)],
        ),
        (
            "pod-probes",
            vec![(
                deployment,
                container("/livenessProbe"),
                Some(json!({"httpGet": {"path": "/readyz", "port": "http"}})),
            )],
        ),
        (
            "container-resources",
            vec![(deployment, container("/resources/limits/memory"), None)],
        ),
        (
            "container-resources",
            vec![(deployment, container("/resources/requests/cpu"), None)],
        ),
        (
            "container-ephemeral-storage-request-and-limit",
            vec![(
                deployment,
                container("/resources/requests/ephemeral-storage"),
                None,
            )],
        ),
        (
            "container-security-context-user-group-id",
            vec![
                (deployment, container("/securityContext/runAsUser"), None),
                (
                    deployment,
                    "/spec/template/spec/securityContext/runAsUser",
                    None,
                ),
            ],
        ),
        (
            "container-security-context-user-group-id",
            vec![(
                deployment,
                container("/securityContext/runAsGroup"),
                Some(json!(1000)),
            )],
        ),
        (
            "container-security-context-readonlyrootfilesystem",
            vec![(
                deployment,
                container("/securityContext/readOnlyRootFilesystem"),
                None,
            )],
        ),
        (
            "container-security-context-privileged",
            vec![(
                deployment,
                container("/securityContext/allowPrivilegeEscalation"),
                None,
            )],
        ),
        (
            "dangerousCapabilities",
            vec![(deployment, container("/securityContext/capabilities"), None)],
        ),
        (
            "container-seccomp-profile",
            vec![(
                deployment,
                "/spec/template/spec/securityContext/seccompProfile",
                None,
            )],
        ),
        (
            "hostNamespaces",
            vec![(
                deployment,
                "/spec/template/spec/hostNetwork",
                Some(json!(true)),
            )],
        ),
        (
            "automountServiceAccountToken",
            vec![(
                deployment,
                "/spec/template/spec/automountServiceAccountToken",
                None,
            )],
        ),
        (
            "deployment-has-poddisruptionbudget",
            vec![("PodDisruptionBudget", "", None)],
        ),
        (
            "deployment-has-poddisruptionbudget",
            vec![("PodDisruptionBudget", "/spec/maxUnavailable", None)],
        ),
        (
            "horizontalpodautoscaler-has-target",
            vec![("HorizontalPodAutoscaler", "", None)],
        ),
        (
            "horizontalpodautoscaler-has-target",
            vec![("HorizontalPodAutoscaler", "/spec/minReplicas", None)],
        ),
        (
            "horizontalpodautoscaler-has-target",
            vec![("HorizontalPodAutoscaler", "/spec/metrics", None)],
        ),
        (
            "horizontalpodautoscaler-has-target",
            vec![(deployment, "/spec/replicas", Some(json!(3)))],
        ),
        (
            "deployment-pod-topology-spread",
            vec![(
                deployment,
                "/spec/template/spec/topologySpreadConstraints",
                None,
            )],
        ),
        (
            "networkpolicy-targets-pod",
            vec![("NetworkPolicy", "", None)],
        ),
        (
            "networkpolicy-targets-pod",
            vec![("NetworkPolicy", "/spec/policyTypes", None)],
        ),
        ("service-targets-pod", vec![("Service", "", None)]),
        (
            "service-targets-pod",
            vec![("Service", "/spec/selector", Some(json!({"app": "other"})))],
        ),
        (
            "graceful-termination",
            vec![(
                deployment,
                "/spec/template/spec/terminationGracePeriodSeconds",
                None,
            )],
        ),
        (
            "graceful-termination",
            vec![(
                deployment,
                "/spec/template/spec/terminationGracePeriodSeconds",
                Some(json!(34)),
            )],
        ),
    ];
    let mut covered: Vec<&str> = Vec::new();
    for (check, changes) in &cases {
        // prod: its 35 s drain and 10 s export are longer than Kubernetes'
        // default 30 s grace.
        let mut objects = rendered("prod");
        for change in changes {
            apply(&mut objects, change);
        }
        assert_eq!(failures(objects), [*check], "{changes:?}");
        covered.push(check);
    }
    for check in &CHECKS {
        assert!(
            covered.contains(&check.name),
            "no case breaks {}",
            check.name
        );
    }
}
