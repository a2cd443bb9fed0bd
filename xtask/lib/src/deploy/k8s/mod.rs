//! `cargo xtask k8s`: Kubernetes manifests and Prometheus alerts derived
//! from the settings, the app's config files and the image `image`
//! recorded, written as a kustomize base with one overlay per environment
//! and as one flat `<env>.yaml` each; `--check` runs kube-score's and
//! Polaris's checks on them (or on a folder a user edited), `--apply`
//! hands one environment to `kubectl`.

mod checks;
mod render;
mod yaml;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use xshell::cmd;

use crate::artifacts::alerts;
use crate::artifacts::seal::{self, Signing};
use crate::exec::Ctx;
use crate::manifest::{Artifact, ArtifactKind, MANIFEST, Manifest};
use render::{ENVIRONMENTS, EnvConfig, Inputs};
use yaml::Document;

#[derive(clap::Args, Debug)]
pub struct K8s {
    /// Environment to render, repeatable [default: dev, staging and prod]
    #[arg(long = "env", value_name = "ENV", value_parser = ["dev", "staging", "prod"])]
    envs: Vec<String>,
    /// Output folder [default: target/dist/k8s, recorded in the manifest]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Run the kube-score and Polaris checks on the rendered files
    #[arg(long)]
    check: bool,
    /// With --check: check the YAML files in DIR instead of rendering
    #[arg(long, value_name = "DIR", requires = "check")]
    dir: Option<PathBuf>,
    /// Render a ServiceMonitor instead of the prometheus.io scrape annotations
    #[arg(long)]
    service_monitor: bool,
    /// kubectl apply the one --env given, then wait for its rollout
    #[arg(long)]
    apply: bool,
}

/// The folder name of the rendered files inside `target/dist/`.
const OUT: &str = "k8s";

impl K8s {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        if let Some(dir) = &self.dir {
            return check_folder(dir);
        }
        let envs: Vec<&'static str> = if self.envs.is_empty() {
            ENVIRONMENTS.to_vec()
        } else {
            ENVIRONMENTS
                .into_iter()
                .filter(|env| self.envs.iter().any(|wanted| wanted == env))
                .collect()
        };
        if self.apply && envs.len() != 1 {
            bail!(
                "--apply needs exactly one --env: say which environment to apply, e.g. --env prod"
            );
        }
        let dist_dir = ctx.project.dist_dir();
        let out = self.out.clone().unwrap_or_else(|| dist_dir.join(OUT));
        let files = self.render(ctx, &envs)?;
        // A dry run renders (so that every error shows) and checks in a
        // folder of its own, and leaves `out` and the manifest alone.
        let scratch = if ctx.dry_run {
            Some(crate::util::TempFolder::new("xtask-k8s-dry-run")?)
        } else {
            None
        };
        let written = scratch
            .as_ref()
            .map_or(out.as_path(), |scratch| scratch.path());
        write_folder(written, &files)?;
        if scratch.is_some() {
            println!(
                "(dry run) {} files would be written in {}",
                files.len(),
                out.display()
            );
        } else {
            if out.starts_with(&dist_dir) {
                record(ctx, &dist_dir, &out, &files)?;
            }
            println!("{} files in {}", files.len(), out.display());
        }
        if self.check {
            let mut failed = Vec::new();
            for env in &envs {
                let file = written.join(format!("{env}.yaml"));
                failed.extend(check_files(&[file], &[])?);
            }
            report_failures(&failed)?;
        }
        if self.apply {
            apply(ctx, &out, envs[0])?;
        }
        Ok(())
    }

    /// Every file, by its path under the output folder.
    fn render(&self, ctx: &Ctx, envs: &[&'static str]) -> Result<Vec<(String, String)>> {
        let settings = &ctx.project.settings;
        let k8s = &settings.k8s;
        if k8s.min_replicas < 2 {
            bail!(
                "k8s min-replicas = {}: keep at least 2 replicas, so that a node drain or a disruption never takes the service down",
                k8s.min_replicas
            );
        }
        if k8s.max_replicas < k8s.min_replicas {
            bail!(
                "k8s max-replicas = {} is below min-replicas = {}",
                k8s.max_replicas,
                k8s.min_replicas
            );
        }
        let inputs = Inputs {
            binary: &settings.binary,
            version: &ctx.project.version,
            port: ctx.project.service_port()?,
            image: pinned_image(ctx)?,
            settings: k8s,
            service_monitor: self.service_monitor,
        };
        let configs: Vec<EnvConfig> = envs
            .iter()
            .map(|env| EnvConfig::read(&ctx.project.root.join("config"), env))
            .collect::<Result<_>>()?;
        let groups = alerts::groups(k8s, &settings.binary)?;
        let one = |comment: &str, value: &Value| yaml::to_string(&[Document { comment, value }]);
        let header =
            "Rendered by `cargo xtask k8s`; edit the settings or config files and render again.";

        let mut base: Vec<(&str, Value)> = vec![
            ("deployment.yaml", render::deployment(&inputs)),
            ("service.yaml", render::service(&inputs)),
            ("hpa.yaml", render::autoscaler(&inputs)),
            ("pdb.yaml", render::disruption_budget(&inputs)),
            ("networkpolicy.yaml", render::network_policy(&inputs)),
            (
                "prometheusrule.yaml",
                render::prometheus_rule(&inputs, &groups),
            ),
        ];
        if self.service_monitor {
            base.push(("servicemonitor.yaml", render::service_monitor(&inputs)));
        }
        let margin = k8s.grace_margin_seconds;
        let mut files = Vec::new();
        files.push((
            "base/kustomization.yaml".to_owned(),
            one(
                header,
                &json!({
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": base.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
                }),
            ),
        ));
        for (name, value) in &base {
            let comment = if *name == "deployment.yaml" {
                render::deployment_comment(&settings.binary, None, margin)
            } else {
                header.to_owned()
            };
            files.push((format!("base/{name}"), one(&comment, value)));
        }
        for env in &configs {
            let overlay = format!("overlays/{}", env.name);
            let config_files: Vec<&str> = env.files.iter().map(|(name, _)| name.as_str()).collect();
            files.push((
                format!("{overlay}/kustomization.yaml"),
                one(
                    &format!(
                        "{header}\nThe {} environment: its config files as the ConfigMap, and APP_ENV,\n\
                         the grace period and the config checksum added to the Deployment.",
                        env.name
                    ),
                    &json!({
                        "apiVersion": "kustomize.config.k8s.io/v1beta1",
                        "kind": "Kustomization",
                        "resources": ["../../base"],
                        "configMapGenerator": [{
                            "name": format!("{}-config", settings.binary),
                            "files": config_files,
                            "options": {"labels": render::labels(&settings.binary)},
                        }],
                        "generatorOptions": {"disableNameSuffixHash": true},
                        "patches": [{
                            "target": {"kind": "Deployment", "name": settings.binary},
                            "patch": yaml::to_string(&[Document {
                                comment: "",
                                value: &render::env_patch(env, margin),
                            }]),
                        }],
                    }),
                ),
            ));
            for (name, text) in &env.files {
                files.push((format!("{overlay}/{name}"), text.clone()));
            }
            // The flat file: the same objects with the overlay applied.
            let mut deployment = render::deployment(&inputs);
            render::apply_patch(&mut deployment, &render::env_patch(env, margin))?;
            let config_map = render::config_map(&inputs, env);
            let deployment_comment =
                render::deployment_comment(&settings.binary, Some(env), margin);
            let mut documents = vec![
                Document {
                    comment: header,
                    value: &config_map,
                },
                Document {
                    comment: &deployment_comment,
                    value: &deployment,
                },
            ];
            for (name, value) in &base {
                if *name != "deployment.yaml" {
                    documents.push(Document { comment: "", value });
                }
            }
            files.push((format!("{}.yaml", env.name), yaml::to_string(&documents)));
        }
        files.push((
            alerts::RULES_FILE.to_owned(),
            one(
                &format!(
                    "{header}\nAlerts on the app's own metrics; check with `promtool check rules {}`.",
                    alerts::RULES_FILE
                ),
                &alerts::rules_file(&groups),
            ),
        ));
        files.push((
            alerts::ADAPTER_FILE.to_owned(),
            one(
                &format!(
                    "{header}\nThe Prometheus Adapter rule that serves each pod's request rate (the recording\n\
                     rule {} of {}) as the Pods metric {} the HorizontalPodAutoscaler\n\
                     scales on; add its rules to the adapter's (Helm: rules.custom).",
                    alerts::RECORDED_RATE,
                    alerts::RULES_FILE,
                    alerts::PODS_METRIC
                ),
                &alerts::adapter_config(),
            ),
        ));
        files.push((
            alerts::TESTS_FILE.to_owned(),
            one(
                &format!(
                    "{header}\nEach alert quiet on healthy series and firing on bad ones: `promtool test rules {}`.",
                    alerts::TESTS_FILE
                ),
                &alerts::tests_file(k8s, &settings.binary)?,
            ),
        ));
        Ok(files)
    }
}

/// The image `image` recorded, pinned by its index digest: by the name it
/// was pushed to last, else by its `--tag` name.
fn pinned_image(ctx: &Ctx) -> Result<String> {
    let path = ctx.project.dist_dir().join(MANIFEST);
    let manifest = Manifest::read(&path);
    let Some(image) = manifest
        .as_ref()
        .and_then(|manifest| manifest.image.as_ref())
    else {
        bail!(
            "no image is recorded in {}: run `cargo xtask image` first (and push it), since the manifests pin the image by its digest",
            path.display()
        );
    };
    let manifest = manifest.as_ref().expect("an image implies a manifest");
    let stamp = ctx.stamp()?;
    if manifest.stamp.commit != stamp.commit {
        bail!(
            "the image in {} was built from commit {}, but HEAD is {}: run `cargo xtask image` again",
            path.display(),
            manifest.stamp.commit_short,
            stamp.commit_short
        );
    }
    // Where it was pushed last is where the cluster pulls it from.
    if let Some(pushed) = image.pushed.last() {
        return Ok(pushed.pinned.clone());
    }
    // `name:tag` → `name`; a registry port (`host:5000/name`) is not a tag.
    let reference = &image.reference;
    let name = match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => name,
        _ => reference.as_str(),
    };
    Ok(format!("{name}@{}", image.index_digest))
}

/// Writes every file into a new folder beside `out`, then swaps it in, so
/// `out` is never half-written.
fn write_folder(out: &Path, files: &[(String, String)]) -> Result<()> {
    let parent = out.parent().context("the output folder has a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let name = out
        .file_name()
        .context("an output folder name")?
        .to_string_lossy();
    let fresh = parent.join(format!(".{name}.new-{}", std::process::id()));
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh)?;
    }
    for (path, text) in files {
        let path = fresh.join(path);
        std::fs::create_dir_all(path.parent().expect("files sit in a folder"))
            .with_context(|| format!("create {}", path.display()))?;
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    if out.exists() {
        std::fs::rename(out, &old).with_context(|| format!("move {} aside", out.display()))?;
    }
    std::fs::rename(&fresh, out).with_context(|| format!("move {} into place", out.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).with_context(|| format!("remove {}", old.display()))?;
    }
    Ok(())
}

/// Records the rendered files in the manifest, and seals the dist folder
/// again (SHA256SUMS and, with a key, the signatures).
fn record(ctx: &Ctx, dist_dir: &Path, out: &Path, files: &[(String, String)]) -> Result<()> {
    let path = dist_dir.join(MANIFEST);
    let mut manifest = Manifest::require(&path)?;
    let relative = out
        .strip_prefix(dist_dir)
        .expect("checked by the caller")
        .to_string_lossy()
        .replace('\\', "/");
    manifest
        .artifacts
        .retain(|artifact| artifact.kind != ArtifactKind::Kubernetes);
    for (name, text) in files {
        manifest.artifacts.push(Artifact::new(
            &format!("{relative}/{name}"),
            ArtifactKind::Kubernetes,
            None,
            text.as_bytes(),
            None,
        ));
    }
    manifest
        .artifacts
        .sort_by(|left, right| left.path.cmp(&right.path));
    let key = seal::signing_key(ctx, Signing::IfGiven)?;
    seal::seal(ctx, dist_dir, &mut manifest, key.as_ref())
}

/// Checks the YAML files directly in `dir`: each file with a Deployment is
/// a set of its own, joined by the objects of the files without one.
fn check_folder(dir: &Path) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    let mut with_deployment = Vec::new();
    let mut shared = Vec::new();
    for file in &files {
        let objects = read_objects(file)?;
        if objects.iter().any(|object| object["kind"] == "Deployment") {
            with_deployment.push(file.clone());
        } else {
            shared.extend(objects);
        }
    }
    if with_deployment.is_empty() {
        bail!(
            "no Deployment in the YAML files of {}: point --dir at the folder with the rendered <env>.yaml files",
            dir.display()
        );
    }
    let failed = check_files(&with_deployment, &shared)?;
    report_failures(&failed)
}

/// The Kubernetes objects of a YAML file (documents with a kind).
fn read_objects(file: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    Ok(yaml::parse(&text)
        .with_context(|| format!("read {}", file.display()))?
        .into_iter()
        .filter(|object| object["kind"].is_string() && object["apiVersion"].is_string())
        .collect())
}

/// Runs every check on each file's Deployments and prints the table;
/// returns `file: check` for each failure.
fn check_files(files: &[PathBuf], shared: &[Value]) -> Result<Vec<String>> {
    let mut failed = Vec::new();
    for file in files {
        let mut all = read_objects(file)?;
        all.extend(shared.iter().cloned());
        let objects = checks::Objects { all };
        let label = file.file_name().map_or_else(
            || file.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        for deployment in objects.deployments() {
            println!(
                "{label}: Deployment {}",
                deployment["metadata"]["name"].as_str().unwrap_or("?")
            );
            for (check, outcome) in checks::run(&objects, deployment) {
                match outcome {
                    Ok(()) => println!("  ok      {:<50} {}", check.name, check.what),
                    Err(why) => {
                        println!("  FAILED  {:<50} {why}", check.name);
                        failed.push(format!("{label}: {}", check.name));
                    }
                }
            }
        }
    }
    Ok(failed)
}

fn report_failures(failed: &[String]) -> Result<()> {
    if failed.is_empty() {
        return Ok(());
    }
    bail!(
        "{} check{} failed ({}): see the table above",
        failed.len(),
        if failed.len() == 1 { "" } else { "s" },
        failed.join(", ")
    )
}

/// `kubectl apply` of one environment's flat file, then its rollout.
fn apply(ctx: &Ctx, out: &Path, env: &str) -> Result<()> {
    if which::which("kubectl").is_err() && !ctx.dry_run {
        bail!(
            "kubectl is not installed: install it, or apply {}/{env}.yaml with your own tooling",
            out.display()
        );
    }
    let file = out.join(format!("{env}.yaml"));
    let deployment = format!("deployment/{}", ctx.project.settings.binary);
    ctx.run(cmd!(ctx.sh, "kubectl apply -f {file}"))?;
    ctx.run(cmd!(
        ctx.sh,
        "kubectl rollout status {deployment} --timeout=5m"
    ))
}

#[cfg(test)]
mod tests;
