//! The checks kube-score and Polaris run on a Deployment and its
//! companions, by their names in those tools, plus one of ours: the grace
//! period covers the app's drain, read from the config the pods mount.
//! They run on any set of objects: ours as rendered, or a folder a user
//! edited.

use serde_json::Value;

use super::render::EnvConfig;

/// One check: its name (kube-score's or Polaris's, where they have one),
/// and a function that says why a Deployment fails it.
pub struct Check {
    pub name: &'static str,
    pub what: &'static str,
    check: fn(&Objects, &Value) -> Result<(), String>,
}

/// The objects of one set (a file, or a rendered environment).
pub struct Objects {
    pub all: Vec<Value>,
}

impl Objects {
    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.all.iter().filter(move |object| object["kind"] == kind)
    }

    pub fn deployments(&self) -> Vec<&Value> {
        self.of_kind("Deployment").collect()
    }
}

/// The outcome of every check for one Deployment.
pub fn run(objects: &Objects, deployment: &Value) -> Vec<(&'static Check, Result<(), String>)> {
    CHECKS
        .iter()
        .map(|check| (check, (check.check)(objects, deployment)))
        .collect()
}

pub const CHECKS: [Check; 17] = [
    Check {
        name: "container-image-tag",
        what: "every image is pinned by digest (name@sha256:...)",
        check: image_pinned,
    },
    Check {
        name: "pod-probes",
        what: "liveness and readiness probes are present and not identical",
        check: probes,
    },
    Check {
        name: "container-resources",
        what: "CPU and memory requests and limits are set",
        check: resources,
    },
    Check {
        name: "container-ephemeral-storage-request-and-limit",
        what: "ephemeral-storage request and limit are set",
        check: ephemeral_storage,
    },
    Check {
        name: "container-security-context-user-group-id",
        what: "runs as non-root, uid and gid above 10000",
        check: user_group,
    },
    Check {
        name: "container-security-context-readonlyrootfilesystem",
        what: "the root filesystem is read-only",
        check: read_only_root,
    },
    Check {
        name: "container-security-context-privileged",
        what: "not privileged, no privilege escalation (Polaris privilegeEscalationAllowed)",
        check: unprivileged,
    },
    Check {
        name: "dangerousCapabilities",
        what: "all capabilities dropped, none added (Polaris)",
        check: capabilities,
    },
    Check {
        name: "container-seccomp-profile",
        what: "a seccomp profile is set (RuntimeDefault)",
        check: seccomp,
    },
    Check {
        name: "hostNamespaces",
        what: "no host network, PID or IPC namespace (Polaris)",
        check: host_namespaces,
    },
    Check {
        name: "automountServiceAccountToken",
        what: "the service account token is not mounted (Polaris)",
        check: no_token,
    },
    Check {
        name: "deployment-has-poddisruptionbudget",
        what: "a PodDisruptionBudget with minAvailable or maxUnavailable selects the pods",
        check: disruption_budget,
    },
    Check {
        name: "horizontalpodautoscaler-has-target",
        what: "an HPA targets the Deployment with a metric and minReplicas >= 2; no replicas on the Deployment (deployment-replicas)",
        check: autoscaler,
    },
    Check {
        name: "deployment-pod-topology-spread",
        what: "topologySpreadConstraints spread the pods across nodes",
        check: topology_spread,
    },
    Check {
        name: "networkpolicy-targets-pod",
        what: "a NetworkPolicy with an Ingress policy selects the pods (pod-networkpolicy)",
        check: network_policy,
    },
    Check {
        name: "service-targets-pod",
        what: "a Service selects the pods on a port they expose",
        check: service,
    },
    Check {
        name: "graceful-termination",
        what: "terminationGracePeriodSeconds >= the app's drain_delay + drain_timeout + tracing.export_timeout",
        check: grace_period,
    },
];

fn pod_spec(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]
}

fn pod_labels(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["metadata"]["labels"]
}

fn containers(deployment: &Value) -> Vec<&Value> {
    let spec = pod_spec(deployment);
    ["initContainers", "containers"]
        .into_iter()
        .flat_map(|key| spec[key].as_array().into_iter().flatten())
        .collect()
}

fn name_of(object: &Value) -> &str {
    object["name"]
        .as_str()
        .or_else(|| object["metadata"]["name"].as_str())
        .unwrap_or("?")
}

/// Whether `match_labels` (a selector's `matchLabels`, or a Service's
/// selector) is non-empty and every label of it is on the pods.
fn selects(match_labels: &Value, labels: &Value) -> bool {
    match match_labels.as_object() {
        Some(wanted) if !wanted.is_empty() => wanted
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value)),
        _ => false,
    }
}

/// Runs `check` on every container; the first failure names the container.
fn each_container(
    deployment: &Value,
    check: impl Fn(&Value) -> Result<(), String>,
) -> Result<(), String> {
    let all = containers(deployment);
    if all.is_empty() {
        return Err("the pod has no containers".to_owned());
    }
    for container in all {
        check(container).map_err(|why| format!("container {}: {why}", name_of(container)))?;
    }
    Ok(())
}

/// A security-context field of a container, else of the pod.
fn security<'a>(deployment: &'a Value, container: &'a Value, key: &str) -> &'a Value {
    let own = &container["securityContext"][key];
    if own.is_null() {
        &pod_spec(deployment)["securityContext"][key]
    } else {
        own
    }
}

fn image_pinned(_: &Objects, deployment: &Value) -> Result<(), String> {
    each_container(deployment, |container| {
        let image = container["image"].as_str().unwrap_or("");
        let digest = image.split_once("@sha256:").map(|(_, hex)| hex);
        match digest {
            Some(hex) if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) => Ok(()),
            _ => Err(format!("image `{image}` is not pinned by a sha256 digest")),
        }
    })
}

fn probes(_: &Objects, deployment: &Value) -> Result<(), String> {
    let container = pod_spec(deployment)["containers"]
        .get(0)
        .ok_or("the pod has no containers")?;
    let (liveness, readiness) = (&container["livenessProbe"], &container["readinessProbe"]);
    if liveness.is_null() {
        return Err("no livenessProbe".to_owned());
    }
    if readiness.is_null() {
        return Err("no readinessProbe".to_owned());
    }
    let handler = |probe: &Value| {
        ["httpGet", "tcpSocket", "exec", "grpc"]
            .into_iter()
            .map(|key| probe[key].clone())
            .collect::<Vec<_>>()
    };
    if handler(liveness) == handler(readiness) {
        return Err(
            "livenessProbe and readinessProbe ask the same thing: a busy pod would be restarted"
                .to_owned(),
        );
    }
    Ok(())
}

fn resource_set(container: &Value, keys: &[&str]) -> Result<(), String> {
    for kind in ["requests", "limits"] {
        for key in keys {
            if container["resources"][kind][key].is_null() {
                return Err(format!("no resources.{kind}.{key}"));
            }
        }
    }
    Ok(())
}

fn resources(_: &Objects, deployment: &Value) -> Result<(), String> {
    each_container(deployment, |container| {
        resource_set(container, &["cpu", "memory"])
    })
}

fn ephemeral_storage(_: &Objects, deployment: &Value) -> Result<(), String> {
    each_container(deployment, |container| {
        resource_set(container, &["ephemeral-storage"])
    })
}

fn user_group(_: &Objects, deployment: &Value) -> Result<(), String> {
    each_container(deployment, |container| {
        if security(deployment, container, "runAsNonRoot") != true {
            return Err("runAsNonRoot is not true".to_owned());
        }
        for key in ["runAsUser", "runAsGroup"] {
            match security(deployment, container, key).as_u64() {
                Some(id) if id > 10_000 => {}
                Some(id) => return Err(format!("{key} {id} is not above 10000")),
                None => return Err(format!("no {key}")),
            }
        }
        Ok(())
    })
}

fn read_only_root(_: &Objects, deployment: &Value) -> Result<(), String> {
    each_container(deployment, |container| {
        if container["securityContext"]["readOnlyRootFilesystem"] == true {
            Ok(())
        } else {
            Err("readOnlyRootFilesystem is not true".to_owned())
        }
    })
}

fn unprivileged(_: &Objects, deployment: &Value) -> Result<(), String> {
    each_container(deployment, |container| {
        let context = &container["securityContext"];
        if context["privileged"] == true {
            return Err("privileged".to_owned());
        }
        if context["allowPrivilegeEscalation"] != false {
            return Err("allowPrivilegeEscalation is not false".to_owned());
        }
        Ok(())
    })
}

fn capabilities(_: &Objects, deployment: &Value) -> Result<(), String> {
    each_container(deployment, |container| {
        let capabilities = &container["securityContext"]["capabilities"];
        let drops_all = capabilities["drop"]
            .as_array()
            .is_some_and(|drop| drop.iter().any(|name| name == "ALL"));
        if !drops_all {
            return Err("capabilities.drop does not hold ALL".to_owned());
        }
        match capabilities["add"].as_array() {
            Some(added) if !added.is_empty() => Err(format!("capabilities.add holds {added:?}")),
            _ => Ok(()),
        }
    })
}

fn seccomp(_: &Objects, deployment: &Value) -> Result<(), String> {
    each_container(deployment, |container| {
        match security(deployment, container, "seccompProfile")["type"].as_str() {
            Some("RuntimeDefault" | "Localhost") => Ok(()),
            Some(other) => Err(format!("seccompProfile type {other}")),
            None => Err("no seccompProfile".to_owned()),
        }
    })
}

fn host_namespaces(_: &Objects, deployment: &Value) -> Result<(), String> {
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod_spec(deployment)[key] == true {
            return Err(format!("{key} is true"));
        }
    }
    Ok(())
}

fn no_token(_: &Objects, deployment: &Value) -> Result<(), String> {
    if pod_spec(deployment)["automountServiceAccountToken"] == false {
        Ok(())
    } else {
        Err("automountServiceAccountToken is not false".to_owned())
    }
}

fn disruption_budget(objects: &Objects, deployment: &Value) -> Result<(), String> {
    let labels = pod_labels(deployment);
    let budget = objects
        .of_kind("PodDisruptionBudget")
        .find(|budget| selects(&budget["spec"]["selector"]["matchLabels"], labels))
        .ok_or("no PodDisruptionBudget selects the pods")?;
    if budget["spec"]["minAvailable"].is_null() && budget["spec"]["maxUnavailable"].is_null() {
        return Err(format!(
            "PodDisruptionBudget {} has neither minAvailable nor maxUnavailable",
            name_of(budget)
        ));
    }
    Ok(())
}

fn autoscaler(objects: &Objects, deployment: &Value) -> Result<(), String> {
    let name = name_of(deployment);
    let hpa = objects
        .of_kind("HorizontalPodAutoscaler")
        .find(|hpa| {
            let target = &hpa["spec"]["scaleTargetRef"];
            target["kind"] == "Deployment" && target["name"] == name
        })
        .ok_or_else(|| format!("no HorizontalPodAutoscaler targets Deployment {name}"))?;
    if hpa["spec"]["metrics"].as_array().is_none_or(Vec::is_empty) {
        return Err(format!("HPA {} has no metrics to scale on", name_of(hpa)));
    }
    match hpa["spec"]["minReplicas"].as_u64() {
        Some(min) if min >= 2 => {}
        Some(min) => return Err(format!("HPA minReplicas {min} is below 2")),
        None => return Err("HPA has no minReplicas (the default, 1, is below 2)".to_owned()),
    }
    if !deployment["spec"]["replicas"].is_null() {
        return Err(
            "the Deployment sets replicas while an HPA scales it: each apply resets the count"
                .to_owned(),
        );
    }
    Ok(())
}

fn topology_spread(_: &Objects, deployment: &Value) -> Result<(), String> {
    let labels = pod_labels(deployment);
    let spreads = pod_spec(deployment)["topologySpreadConstraints"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|constraint| {
            constraint["topologyKey"].is_string()
                && selects(&constraint["labelSelector"]["matchLabels"], labels)
        });
    if spreads {
        Ok(())
    } else {
        Err("no topologySpreadConstraints select the pods".to_owned())
    }
}

fn network_policy(objects: &Objects, deployment: &Value) -> Result<(), String> {
    let labels = pod_labels(deployment);
    let policy = objects
        .of_kind("NetworkPolicy")
        .find(|policy| selects(&policy["spec"]["podSelector"]["matchLabels"], labels))
        .ok_or("no NetworkPolicy selects the pods")?;
    let ingress = policy["spec"]["policyTypes"]
        .as_array()
        .is_some_and(|types| types.iter().any(|kind| kind == "Ingress"));
    if ingress {
        Ok(())
    } else {
        Err(format!(
            "NetworkPolicy {} has no Ingress policy type",
            name_of(policy)
        ))
    }
}

fn service(objects: &Objects, deployment: &Value) -> Result<(), String> {
    let labels = pod_labels(deployment);
    let service = objects
        .of_kind("Service")
        .find(|service| selects(&service["spec"]["selector"], labels))
        .ok_or("no Service selects the pods")?;
    let exposed: Vec<&Value> = containers(deployment)
        .into_iter()
        .flat_map(|container| container["ports"].as_array().into_iter().flatten())
        .collect();
    for port in service["spec"]["ports"].as_array().into_iter().flatten() {
        let target = if port["targetPort"].is_null() {
            &port["port"]
        } else {
            &port["targetPort"]
        };
        let found = exposed
            .iter()
            .any(|exposed| exposed["name"] == *target || exposed["containerPort"] == *target);
        if !found {
            return Err(format!(
                "Service {} targets port {target}, which no container exposes",
                name_of(service)
            ));
        }
    }
    Ok(())
}

/// The grace period against the drain in the config files of the
/// ConfigMap the pods mount, for the environment their `APP_ENV` names.
fn grace_period(objects: &Objects, deployment: &Value) -> Result<(), String> {
    let spec = pod_spec(deployment);
    let env_name = spec["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|var| var["name"] == "APP_ENV")
        .and_then(|var| var["value"].as_str())
        .unwrap_or("dev");
    let env_name = super::render::ENVIRONMENTS
        .into_iter()
        .find(|known| *known == env_name)
        .ok_or_else(|| format!("APP_ENV {env_name} is not one of dev, staging, prod"))?;
    let config_map = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|volume| volume["configMap"]["name"].as_str())
        .ok_or("the pods mount no ConfigMap to read the drain settings from")?;
    let data = &objects
        .of_kind("ConfigMap")
        .find(|map| map["metadata"]["name"] == config_map)
        .ok_or_else(|| format!("ConfigMap {config_map} is not among the objects"))?["data"];
    let files = ["base.toml".to_owned(), format!("{env_name}.toml")]
        .into_iter()
        .map(|file| {
            let text = data[&file]
                .as_str()
                .ok_or_else(|| format!("ConfigMap {config_map} has no {file}"))?;
            Ok((file, text.to_owned()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let env = EnvConfig::from_files(env_name, files).map_err(|err| format!("{err:#}"))?;
    let drain = env.stop_time().as_secs_f64();
    // Kubernetes' default when the field is absent.
    let grace = spec["terminationGracePeriodSeconds"]
        .as_f64()
        .unwrap_or(30.0);
    if grace >= drain {
        Ok(())
    } else {
        Err(format!(
            "terminationGracePeriodSeconds {grace} is shorter than the stop ({:?} drain delay + {:?} drain timeout + {:?} span export in ConfigMap {config_map}, APP_ENV {env_name}): pods are killed mid-request or before their last spans are exported",
            env.drain_delay, env.drain_timeout, env.flush_timeout
        ))
    }
}
