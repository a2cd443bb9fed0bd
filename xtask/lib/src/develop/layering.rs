//! The directions imports may take between the modules of the workspace,
//! checked by `lint` (and `ci`) from the sources: the xtask's tasks import
//! the release machinery (`artifacts/`) and the core, never another stage,
//! and neither imports a task,
//! the service's business part reaches the platform only through the
//! surface the `platform` crate's root (`app/platform/src/lib.rs`)
//! declares, and no crate has an import circle.
//!
//! An import is a `crate::…` or `super::…` path anywhere in a module's code
//! (a `use` line or a path written inline), braces expanded, or a path
//! into another crate the rules read (`platform::…` from the service).
//! Relative paths from a `mod.rs` into its own children are declarations
//! of the folder, not arrows, and are not read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::exec::Ctx;

/// How one crate, or a crate and the library crates it is built on, is
/// layered: which layer a module is in, and which layers each layer may
/// import.
pub struct Rules {
    /// `(source folder, module prefix)`: each crate's modules are named
    /// under its prefix (the crate's name as the others import it; empty
    /// for the crate the rules are named after).
    pub crates: &'static [(&'static str, &'static str)],
    pub layer_of: fn(&str) -> &'static str,
    /// `(layer, the layers it may import)`; a layer imports itself freely.
    pub allowed: &'static [(&'static str, &'static [&'static str])],
}

/// The xtask: the entry (`lib.rs`, `flags`, `ci`, which runs other tasks,
/// and `fuzz`) dispatches to the
/// stages' tasks; the tasks are thin over `artifacts/`, the release
/// machinery they share, and everything stands on the core at the root of
/// `src/`. No stage imports another.
pub const XTASK: Rules = Rules {
    crates: &[("xtask/lib/src", "")],
    layer_of: |module| match module.split("::").next().unwrap_or_default() {
        "" | "flags" | "fuzz" | "ci" => "entry",
        "develop" => "develop",
        "release" => "release",
        "deploy" => "deploy",
        "maintain" => "maintain",
        "artifacts" => "artifacts",
        _ => "core",
    },
    allowed: &[
        (
            "entry",
            &[
                "core",
                "artifacts",
                "develop",
                "release",
                "deploy",
                "maintain",
            ],
        ),
        ("develop", &["core", "artifacts"]),
        ("release", &["core", "artifacts"]),
        ("deploy", &["core", "artifacts"]),
        ("maintain", &["core"]),
        ("artifacts", &["core"]),
        ("core", &[]),
    ],
};

/// The service: `main.rs` joins the business part (`service/`) to the
/// platform crate; the business part sees only its surface (the crate's
/// root, `lib.rs`). That the platform never sees the business part, the
/// crates' dependency already holds.
pub const APP: Rules = Rules {
    crates: &[
        ("app/src", ""),
        ("app/platform/src", "platform"),
        ("app/platform/config/src", "platform_config"),
    ],
    layer_of: |module| {
        let mut segments = module.split("::");
        match (segments.next().unwrap_or_default(), segments.next()) {
            ("service", _) => "business",
            ("platform", None) => "surface",
            ("platform", Some(_)) | ("platform_config", _) => "platform",
            _ => "entry",
        }
    },
    allowed: &[
        ("entry", &["business", "surface", "platform"]),
        ("business", &["surface"]),
        ("surface", &["platform"]),
        ("platform", &["surface"]),
    ],
};

/// `cargo xtask lint`'s check of both crates.
pub fn check(ctx: &Ctx) -> Result<()> {
    let mut problems = Vec::new();
    for rules in [&XTASK, &APP] {
        let modules = read_crates(&ctx.project.root, rules)?;
        if modules.is_empty() {
            // A project made by `cargo xtask new` takes xtask-lib by tag.
            continue;
        }
        problems.extend(
            violations(&modules, rules)
                .into_iter()
                .map(|problem| format!("{}: {problem}", rules.crates[0].0)),
        );
    }
    if !problems.is_empty() {
        bail!(
            "{} import(s) against the layering (ARCHITECTURE.md, \"Layers\"): {}; move the shared code down a layer, or into the surface",
            problems.len(),
            problems.join("; ")
        );
    }
    eprintln!("layering: xtask and app import only in the allowed directions, with no circle");
    Ok(())
}

/// The modules of every crate the rules name, under their prefixes.
pub fn read_crates(root: &Path, rules: &Rules) -> Result<BTreeMap<String, String>> {
    let mut modules = BTreeMap::new();
    // Read once, and only when a library is not in the tree.
    let mut metadata = None;
    for (src, prefix) in rules.crates {
        let mut src = root.join(src);
        if !src.is_dir() {
            // A project made by `cargo xtask new` takes the library from
            // the libraries' tag: its source is where cargo checked it out.
            if metadata.is_none() {
                metadata = Some(
                    cargo_metadata::MetadataCommand::new()
                        .current_dir(root)
                        .exec()
                        .context("find the libraries' sources with `cargo metadata`")?,
                );
            }
            match library_source(metadata.as_ref().expect("read above"), prefix) {
                Some(checked_out) => src = checked_out,
                None => continue,
            }
        }
        for (module, text) in read_modules(&src)? {
            let name = [*prefix, module.as_str()]
                .into_iter()
                .filter(|part| !part.is_empty())
                .collect::<Vec<_>>()
                .join("::");
            modules.insert(name, text);
        }
    }
    Ok(modules)
}

/// Every `.rs` file under `src`, as (module path, source text).
pub fn read_modules(src: &Path) -> Result<BTreeMap<String, String>> {
    let mut modules = BTreeMap::new();
    let mut folders = vec![src.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in
            std::fs::read_dir(&folder).with_context(|| format!("read {}", folder.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative = path.strip_prefix(src).expect("under src");
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("read {}", path.display()))?;
                modules.insert(module_path(&relative.to_string_lossy()), text);
            }
        }
    }
    Ok(modules)
}

/// The source folder of the library `prefix` names, as cargo resolved it
/// (a git checkout); `None` for the crate itself or a library the
/// workspace does not use.
fn library_source(metadata: &cargo_metadata::Metadata, prefix: &str) -> Option<std::path::PathBuf> {
    if prefix.is_empty() {
        return None;
    }
    metadata
        .packages
        .iter()
        .find(|package| package.name.replace('-', "_") == prefix)
        .and_then(|package| package.manifest_path.parent())
        .map(|dir| dir.join("src").into_std_path_buf())
}

/// `release/dist.rs` → `release::dist`, `deploy/mod.rs` → `deploy`,
/// `main.rs` → `` (the crate root).
fn module_path(relative: &str) -> String {
    let without = relative.trim_end_matches(".rs").replace('\\', "/");
    let mut segments: Vec<&str> = without.split('/').collect();
    if matches!(segments.last(), Some(&"mod" | &"main" | &"lib")) {
        segments.pop();
    }
    segments.join("::")
}

/// What breaks the rules: forbidden arrows, then circles.
pub fn violations(modules: &BTreeMap<String, String>, rules: &Rules) -> Vec<String> {
    let graph = imports(modules, rules);
    let mut problems = Vec::new();
    for (from, targets) in &graph {
        let from_layer = (rules.layer_of)(from);
        let allowed = rules
            .allowed
            .iter()
            .find(|(layer, _)| *layer == from_layer)
            .map_or(&[][..], |(_, allowed)| *allowed);
        for to in targets {
            let to_layer = (rules.layer_of)(to);
            if to_layer != from_layer && !allowed.contains(&to_layer) {
                problems.push(format!(
                    "{} imports {} ({from_layer} may import {})",
                    display(from),
                    display(to),
                    if allowed.is_empty() {
                        format!("only {from_layer}")
                    } else {
                        format!("{from_layer}, {}", allowed.join(", "))
                    }
                ));
            }
        }
    }
    problems.extend(circles(&graph).into_iter().map(|circle| {
        let names: Vec<&str> = circle.iter().map(|module| display(module)).collect();
        format!("import circle {}", names.join(" -> "))
    }));
    problems
}

fn display(module: &str) -> &str {
    if module.is_empty() { "main" } else { module }
}

/// For each module, the other modules its code names.
fn imports(
    modules: &BTreeMap<String, String>,
    rules: &Rules,
) -> BTreeMap<String, BTreeSet<String>> {
    let libraries: Vec<&str> = rules
        .crates
        .iter()
        .map(|(_, prefix)| *prefix)
        .filter(|prefix| !prefix.is_empty())
        .collect();
    let aliases = reexported_crates(modules, &libraries);
    let mut graph = BTreeMap::new();
    for (module, text) in modules {
        // The crate this module is in: `crate::` paths start there.
        let own_crate = libraries
            .iter()
            .find(|prefix| module == *prefix || module.starts_with(&format!("{prefix}::")))
            .map(|prefix| vec![(*prefix).to_owned()])
            .unwrap_or_default();
        let mut targets = BTreeSet::new();
        for path in paths_in(text, &libraries) {
            let absolute = match path.first().map(String::as_str) {
                Some("crate") => [own_crate.clone(), path[1..].to_vec()].concat(),
                Some(library) if libraries.contains(&library) => path,
                Some("super") => {
                    let mut base: Vec<String> = module.split("::").map(str::to_owned).collect();
                    let mut rest = &path[..];
                    while rest.first().is_some_and(|segment| segment == "super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    // `super::` from a file's own `mod tests` names the file.
                    if rest.first().is_some_and(|segment| segment == "*") {
                        continue;
                    }
                    base.extend(rest.iter().cloned());
                    base
                }
                _ => continue,
            };
            let absolute = through_aliases(absolute, &aliases);
            let target = longest_module(modules, &absolute);
            if target != *module {
                targets.insert(target);
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

/// A library crate re-exported under a module's name (`pub use
/// platform_config as config;` in `platform`'s root): the module path it
/// is reached by, and the crate's prefix.
fn reexported_crates(
    modules: &BTreeMap<String, String>,
    libraries: &[&str],
) -> Vec<(Vec<String>, String)> {
    let mut aliases = Vec::new();
    for (module, text) in modules {
        for line in code_only(text).lines() {
            let Some(rest) = line.trim().strip_prefix("pub use ") else {
                continue;
            };
            let words: Vec<&str> = rest.trim_end_matches(';').split_whitespace().collect();
            if let [library, "as", name] = words[..]
                && libraries.contains(&library)
            {
                let mut path: Vec<String> = module
                    .split("::")
                    .filter(|segment| !segment.is_empty())
                    .map(str::to_owned)
                    .collect();
                path.push(name.to_owned());
                aliases.push((path, library.to_owned()));
            }
        }
    }
    aliases
}

/// `path` with a re-exported crate's module path replaced by the crate.
fn through_aliases(path: Vec<String>, aliases: &[(Vec<String>, String)]) -> Vec<String> {
    for (alias, library) in aliases {
        if path.starts_with(alias) {
            return std::iter::once(library.clone())
                .chain(path[alias.len()..].iter().cloned())
                .collect();
        }
    }
    path
}

/// The longest prefix of `path` that is a module of the crate.
fn longest_module(modules: &BTreeMap<String, String>, path: &[String]) -> String {
    (0..=path.len())
        .rev()
        .map(|length| path[..length].join("::"))
        .find(|candidate| modules.contains_key(candidate))
        .unwrap_or_default()
}

/// `text` with its comments and the insides of its string and character
/// literals blanked out, so that only code is read.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut code = String::with_capacity(text.len());
    let mut at = 0;
    while at < chars.len() {
        let rest = &chars[at..];
        match rest {
            ['/', '/', ..] => {
                while at < chars.len() && chars[at] != '\n' {
                    at += 1;
                }
            }
            ['/', '*', ..] => {
                at += 2;
                while at < chars.len() && !(chars[at] == '*' && chars.get(at + 1) == Some(&'/')) {
                    at += 1;
                }
                at += 2;
            }
            ['r', '#' | '"', ..] if at == 0 || !is_ident(chars[at - 1]) => {
                let hashes = rest[1..].iter().take_while(|c| **c == '#').count();
                if rest.get(1 + hashes) != Some(&'"') {
                    code.push('r');
                    at += 1;
                    continue;
                }
                at += 2 + hashes;
                while at < chars.len()
                    && !(chars[at] == '"'
                        && chars[at + 1..]
                            .iter()
                            .take(hashes)
                            .filter(|c| **c == '#')
                            .count()
                            == hashes)
                {
                    at += 1;
                }
                at += 1 + hashes;
                code.push_str("\"\"");
            }
            ['"', ..] => {
                at += 1;
                while at < chars.len() && chars[at] != '"' {
                    at += if chars[at] == '\\' { 2 } else { 1 };
                }
                at += 1;
                code.push_str("\"\"");
            }
            ['\'', '\\', ..] => {
                at += 2;
                while at < chars.len() && chars[at] != '\'' {
                    at += 1;
                }
                at += 1;
            }
            ['\'', _, '\'', ..] => at += 3,
            [c, ..] => {
                code.push(*c);
                at += 1;
            }
            [] => break,
        }
    }
    code
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every `crate::…` and `super::…` path in `text` outside comments, and
/// every path into one of `libraries`, with `{a, b::c}` groups expanded
/// into one path each.
fn paths_in(text: &str, libraries: &[&str]) -> Vec<Vec<String>> {
    let code = code_only(text);
    let bytes = code.as_bytes();
    let mut paths = Vec::new();
    let starts = ["crate", "super"]
        .iter()
        .chain(libraries)
        .map(|root| format!("{root}::"));
    for start in starts {
        let start = start.as_str();
        let mut from = 0;
        while let Some(found) = code[from..].find(start) {
            let at = from + found;
            from = at + start.len();
            let preceded_by_ident = at > 0 && {
                let before = bytes[at - 1];
                before.is_ascii_alphanumeric() || before == b'_' || before == b':'
            };
            if preceded_by_ident {
                continue;
            }
            let root = start.trim_end_matches("::").to_owned();
            paths.extend(use_tree(&code[from..], vec![root]).0);
        }
    }
    paths
}

/// Parses the use tree at the start of `text`, after `prefix::`: the
/// paths it names and how many bytes it takes.
fn use_tree(text: &str, prefix: Vec<String>) -> (Vec<Vec<String>>, usize) {
    let skip_blanks = |at: usize| at + (text[at..].len() - text[at..].trim_start().len());
    let mut at = skip_blanks(0);
    if text[at..].starts_with('{') {
        at += 1;
        let mut paths = Vec::new();
        loop {
            at = skip_blanks(at);
            if at >= text.len() || text[at..].starts_with('}') {
                return (paths, (at + 1).min(text.len()));
            }
            let (found, used) = use_tree(&text[at..], prefix.clone());
            paths.extend(found);
            at = skip_blanks(at + used);
            match text[at..].chars().next() {
                Some(',') => at += 1,
                Some('}') => return (paths, at + 1),
                _ => return (paths, at),
            }
        }
    }
    let length = text[at..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '*'))
        .unwrap_or(text.len() - at);
    let mut path = prefix;
    if length == 0 {
        return (vec![path], at);
    }
    path.push(text[at..at + length].to_owned());
    at += length;
    if text[at..].starts_with("::") {
        let (paths, used) = use_tree(&text[at + 2..], path);
        return (paths, at + 2 + used);
    }
    (vec![path], at)
}

/// The circles of the graph, each once, as the modules around it.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut reported = BTreeSet::new();
    for start in graph.keys() {
        // Depth-first from `start`, looking for a way back to it.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((module, path)) = stack.pop() {
            for next in graph.get(&module).into_iter().flatten() {
                if next == start {
                    let mut members: Vec<String> = path.clone();
                    members.sort();
                    if reported.insert(members) {
                        let mut circle = path.clone();
                        circle.push(start.clone());
                        found.push(circle);
                    }
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(path, text)| (module_path(path), (*text).to_owned()))
            .collect()
    }

    #[test]
    fn paths_are_read_from_use_trees_and_inline_paths_but_not_comments() {
        let text = "use crate::release::{dist::{self, Dist}, oci};\n\
                    // crate::deploy is only mentioned\n\
                    let x = crate::targets::resolve(a);\n\
                    use super::host::Host;\n\
                    use super::*;";
        let paths: Vec<String> = paths_in(text, &[])
            .iter()
            .map(|path| path.join("::"))
            .collect();
        assert_eq!(
            paths,
            [
                "crate::release::dist::self",
                "crate::release::dist::Dist",
                "crate::release::oci",
                "crate::targets::resolve",
                "super::host::Host",
                "super::*",
            ]
        );
    }

    #[test]
    fn the_workspace_imports_only_in_the_allowed_directions() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for rules in [&XTASK, &APP] {
            let modules = read_crates(&root, rules).unwrap();
            assert!(modules.len() > 3, "{:?}: {modules:?}", rules.crates);
            let found = violations(&modules, rules);
            assert!(found.is_empty(), "{:?}: {found:#?}", rules.crates);
        }
    }

    #[test]
    fn an_arrow_up_from_the_core_or_the_machinery_or_across_stages_is_refused() {
        let tree = modules(&[
            ("lib.rs", "use crate::release::dist::Dist;"),
            ("manifest.rs", "use crate::artifacts::oci::Blobs;"),
            ("artifacts/mod.rs", ""),
            ("artifacts/oci.rs", ""),
            ("artifacts/seal.rs", "use crate::release::dist::Dist;"),
            ("release/mod.rs", ""),
            ("release/dist.rs", "use crate::artifacts::pipeline;"),
            ("artifacts/pipeline.rs", ""),
            ("deploy/mod.rs", ""),
            ("deploy/host.rs", "use crate::release::dist;"),
            ("develop/mod.rs", ""),
            (
                "develop/bench.rs",
                "use crate::artifacts::pipeline::binaries_for;",
            ),
        ]);
        let found = violations(&tree, &XTASK);
        assert_eq!(
            found,
            [
                "artifacts::seal imports release::dist (artifacts may import artifacts, core)",
                "deploy::host imports release::dist (deploy may import deploy, core, artifacts)",
                "manifest imports artifacts::oci (core may import only core)",
            ]
        );
    }

    #[test]
    fn a_circle_is_refused_even_within_a_layer() {
        let tree = modules(&[
            ("exec.rs", "use crate::stamp::Stamp;"),
            ("stamp.rs", "fn f(ctx: &crate::exec::Ctx) {}"),
            ("targets.rs", "use crate::exec;"),
        ]);
        assert_eq!(
            violations(&tree, &XTASK),
            ["import circle exec -> stamp -> exec"]
        );
    }

    #[test]
    fn the_business_part_sees_the_surface_and_not_the_platform_inside() {
        // As `read_crates` names them: the platform crate's modules under
        // `platform`, its own paths as `crate::`.
        let tree = modules(&[
            (
                "main.rs",
                "fn main() { platform::main::<service::Greeter>(platform::package!()) }",
            ),
            ("platform/mod.rs", "pub trait Service {}"),
            ("platform/config.rs", "use crate::Service;"),
            ("platform/server.rs", "use crate::config::Settings;"),
            (
                "service/mod.rs",
                "use platform::{Service, Setup, config::Settings};",
            ),
            ("service/tests.rs", "let s = platform::server::run();"),
            ("allocations.rs", "use platform::server;"),
            ("platform_config/mod.rs", "pub struct Settings;"),
            ("service/own.rs", "use platform_config::Settings;"),
            ("platform/lib.rs", "pub use platform_config as settings;"),
            ("service/aliased.rs", "use platform::settings::Settings;"),
        ]);
        assert_eq!(
            violations(&tree, &APP),
            [
                "service imports platform::config (business may import business, surface)",
                "service::aliased imports platform_config (business may import business, surface)",
                "service::own imports platform_config (business may import business, surface)",
                "service::tests imports platform::server (business may import business, surface)",
            ]
        );
    }
}
