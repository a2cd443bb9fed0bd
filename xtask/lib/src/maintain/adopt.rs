//! `cargo xtask new` and `cargo xtask update`: a project of its own made
//! from the template, which takes the libraries (`platform`,
//! `platform-build`, `xtask-lib`) as git dependencies at one tag, and the
//! move of such a project to a later tag.
//!
//! The partition is what makes an update a non-event: the files an adopter
//! owns and edits (the business part, its tests, the config, the settings,
//! the thin `main.rs` files, CI) are copied once (`TEMPLATE_FILES`); what
//! changes with the libraries stays behind the tag. Updating is an edit of
//! the tag in `[workspace.dependencies]` and a `cargo update` of the three
//! crates, never a merge.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use xshell::cmd;

use crate::exec::Ctx;
use crate::util::write_atomically;

/// The libraries a made project takes by tag, in `[workspace.dependencies]`.
const LIBRARIES: [&str; 3] = ["platform", "platform-build", "xtask-lib"];

/// What a project made from the template holds: the files an adopter owns
/// (a folder ends in `/`). The rest of the repository is the libraries,
/// their tests and their docs, taken by tag.
const TEMPLATE_FILES: &[&str] = &[
    ".cargo/config.toml",
    ".ci/run",
    ".config/nextest.toml",
    ".github/workflows/",
    ".gitignore",
    "Cargo.lock",
    "Cargo.toml",
    "LICENSE",
    "app/Cargo.toml",
    "app/build.rs",
    "app/src/main.rs",
    "app/src/service/",
    "app/tests/greeter.rs",
    "app/tests/support/",
    "bench/",
    "config/",
    "xtask/Cargo.toml",
    "xtask/src/",
];

/// Tags of the libraries' releases: `libraries-v<version>`, the version
/// of both crates (they are released together).
const TAG_PREFIX: &str = "libraries-v";

#[derive(clap::Args, Debug)]
pub struct New {
    /// The folder to create (it must not exist)
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// The service's name: its package, binary, units and image (default: the folder's name)
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// The git repository of the libraries (default: `repository` of [workspace.package])
    #[arg(long, value_name = "URL")]
    libraries: Option<String>,
    /// The libraries' release to take, a tag of this repository (default: libraries-v<this xtask-lib's version>)
    #[arg(long, value_name = "TAG")]
    tag: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct Update {
    /// The libraries' release to move to (default: the newest libraries-v* tag of their repository)
    #[arg(long, value_name = "TAG")]
    to: Option<String>,
}

impl New {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let folder_name = self
            .dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .with_context(|| format!("{} names no folder", self.dir.display()))?;
        let name = match &self.name {
            Some(name) => check_service_name(name)?,
            None => check_service_name(&folder_name)
                .context("the folder's name cannot name the service: give one with --name")?,
        };
        ensure!(
            !self.dir.exists(),
            "{} exists: `new` makes a project in a folder of its own; name one that does not exist",
            self.dir.display()
        );
        let libraries = match self.libraries.clone().or(ctx.project.repository.clone()) {
            Some(url) => check_url(&url)?,
            None => bail!(
                "no repository to take the libraries from: pass --libraries <git URL>, or set `repository` in [workspace.package]"
            ),
        };
        let tag = match &self.tag {
            Some(tag) => check_tag(tag)?.to_owned(),
            None => format!("{TAG_PREFIX}{}", env!("CARGO_PKG_VERSION")),
        };
        // The shell is in the workspace root: the template is this repository.
        let commit_of_tag = format!("{tag}^{{commit}}");
        let known = cmd!(ctx.sh, "git rev-parse --verify --quiet {commit_of_tag}")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run();
        if known.is_err() {
            bail!(
                "the tag {tag} is not in this repository ({}): the template's files come from the libraries' release they match; fetch it (`git fetch --tags`) or name another with --tag",
                ctx.project.root.display()
            );
        }

        let parent = match self.dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let partial = parent.join(format!(".{folder_name}.new-{}", std::process::id()));
        if ctx.dry_run {
            eprintln!(
                "would write {} from the template at {tag}: {}",
                self.dir.display(),
                TEMPLATE_FILES.join(" ")
            );
            eprintln!(
                "would take {} from {libraries} at {tag}, name the service `{name}`, and resolve Cargo.lock",
                LIBRARIES.join(", ")
            );
            return Ok(());
        }
        let mut written = Partial(Some(partial.clone()));
        let files = template_at(ctx, &tag)?;
        let project = Made {
            name,
            libraries: &libraries,
            tag: &tag,
        };
        for (path, (mode, bytes)) in files {
            let bytes = project
                .rewrite(&path, bytes)
                .with_context(|| format!("make {path} from the template at {tag}"))?;
            let destination = partial.join(&path);
            std::fs::create_dir_all(destination.parent().expect("a file in a folder"))
                .with_context(|| format!("create the folder of {}", destination.display()))?;
            std::fs::write(&destination, bytes)
                .with_context(|| format!("write {}", destination.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&destination, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("set the mode of {}", destination.display()))?;
        }
        std::fs::write(partial.join("README.md"), project.readme())
            .context("write the project's README.md")?;

        // The lock keeps every version the template was tested with; only
        // the members and the libraries' source change.
        let cargo = ctx.cargo_path();
        let _in_project = ctx.sh.push_dir(&partial);
        ctx.run(cmd!(ctx.sh, "{cargo} update --workspace"))
            .with_context(|| format!("resolve the libraries at {tag} from {libraries}"))?;
        ctx.run(cmd!(ctx.sh, "git init --quiet"))
            .context("make the project a git repository")?;
        drop(_in_project);
        std::fs::rename(&partial, &self.dir).with_context(|| {
            format!(
                "move {} into place as {}",
                partial.display(),
                self.dir.display()
            )
        })?;
        written.0 = None;
        eprintln!(
            "made {}: the service `{name}`, on the libraries at {tag}",
            self.dir.display()
        );
        eprintln!(
            "next: cd {} && git add -A && git commit -m \"{name} from the template\" && cargo xtask test",
            self.dir.display()
        );
        Ok(())
    }
}

/// A project being written; removed unless it was moved into place.
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// The template's files at `tag`, read from git (the working tree may be
/// ahead of the release): path to (mode, contents).
fn template_at(ctx: &Ctx, tag: &str) -> Result<BTreeMap<String, (u32, Vec<u8>)>> {
    let paths = TEMPLATE_FILES;
    let archive = ctx
        .read_bytes_echoed(
            cmd!(ctx.sh, "git archive --format=tar {tag} -- {paths...}"),
            &[],
        )
        .with_context(|| format!("read the template's files at {tag}"))?;
    let mut files = BTreeMap::new();
    let mut entries = tar::Archive::new(archive.as_slice());
    for entry in entries.entries().context("read git's archive")? {
        let mut entry = entry.context("read git's archive")?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path().context("a path in git's archive")?;
        let path = path.to_string_lossy().into_owned();
        let plain = std::path::Path::new(&path)
            .components()
            .all(|part| matches!(part, std::path::Component::Normal(_)));
        ensure!(
            plain,
            "git's archive holds `{path}`, which is not a plain relative path"
        );
        let mode = if entry.header().mode()? & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .with_context(|| format!("read {path} from git's archive"))?;
        files.insert(path, (mode, bytes));
    }
    for wanted in TEMPLATE_FILES {
        ensure!(
            files
                .keys()
                .any(|path| path == wanted || (wanted.ends_with('/') && path.starts_with(wanted))),
            "the template at {tag} has no {wanted}: it is older than this xtask-lib knows; run `new` from a checkout of {tag}"
        );
    }
    Ok(files)
}

/// What a made project is: its service's name and where its libraries are.
struct Made<'a> {
    name: &'a str,
    libraries: &'a str,
    tag: &'a str,
}

impl Made<'_> {
    /// A template file as the made project holds it.
    fn rewrite(&self, path: &str, bytes: Vec<u8>) -> Result<Vec<u8>> {
        let edit: fn(&Self, String) -> Result<String> = match path {
            "Cargo.toml" => Self::workspace_manifest,
            "app/Cargo.toml" => Self::app_manifest,
            "xtask/Cargo.toml" => Self::xtask_manifest,
            // The allocation test counts the platform's inside: the
            // platform's own test, run where the platform is built.
            "app/src/main.rs" => {
                |_, text| replace_once(&text, "#[cfg(test)]\nmod allocations;\n", "")
            }
            _ => return Ok(bytes),
        };
        let text = String::from_utf8(bytes).context("not UTF-8")?;
        Ok(edit(self, text)?.into_bytes())
    }

    fn workspace_manifest(&self, text: String) -> Result<String> {
        let mut lines: Vec<&str> = Vec::new();
        let mut replaced_members = false;
        for line in text.lines() {
            if line.starts_with("members = ") {
                lines.push("members = [\"app\", \"xtask\"]");
                replaced_members = true;
            } else if line.starts_with("exclude = ") {
                // The libraries' fuzz workspace, with the comment above it.
                while lines.last().is_some_and(|line| line.starts_with('#')) {
                    lines.pop();
                }
            } else {
                lines.push(line);
            }
        }
        ensure!(replaced_members, "no `members = ` line in [workspace]");
        let mut text = lines.join("\n") + "\n";
        let dependencies = self.dependencies();
        text = replace_once(
            &text,
            "\n[workspace.package]\n",
            &format!("\n{dependencies}\n[workspace.package]\n"),
        )?;
        for key in ["package", "binary"] {
            text = replace_once(
                &text,
                &format!("\n{key} = \"app\"\n"),
                &format!("\n{key} = \"{}\"\n", self.name),
            )?;
        }
        replace_once(
            &text,
            "\nimage = \"ghcr.io/example/app\"\n",
            &format!("\nimage = \"ghcr.io/example/{}\"\n", self.name),
        )
    }

    fn dependencies(&self) -> String {
        let (url, tag) = (self.libraries, self.tag);
        let mut section = "[workspace.dependencies]\n\
            # The template's libraries, all at one tag. `cargo xtask update` moves them\n\
            # to a later release (README, \"Updating the libraries\").\n"
            .to_owned();
        for library in LIBRARIES {
            section.push_str(&format!(
                "{library} = {{ git = \"{url}\", tag = \"{tag}\" }}\n"
            ));
        }
        section
    }

    fn app_manifest(&self, text: String) -> Result<String> {
        let text = replace_once(
            &text,
            "\nname = \"app\"\n",
            &format!("\nname = \"{}\"\n", self.name),
        )?;
        let text = replace_once(
            &text,
            "\nplatform = { path = \"platform\" }\n",
            "\nplatform.workspace = true\n",
        )?;
        replace_once(
            &text,
            "\nplatform-build = { path = \"platform/build\" }\n",
            "\nplatform-build.workspace = true\n",
        )
    }

    fn xtask_manifest(&self, text: String) -> Result<String> {
        let text = replace_once(
            &text,
            "\nxtask-lib = { path = \"lib\" }\n",
            "\nxtask-lib.workspace = true\n",
        )?;
        // The dev-dependencies are the libraries' tests', which stay with
        // them: the section goes, up to the next one.
        let mut kept = Vec::new();
        let mut in_dev_dependencies = false;
        for line in text.lines() {
            if line.starts_with('[') {
                in_dev_dependencies = line == "[dev-dependencies]";
            }
            if !in_dev_dependencies {
                kept.push(line);
            }
        }
        while kept.last().is_some_and(|line| line.is_empty()) {
            kept.pop();
        }
        Ok(kept.join("\n") + "\n")
    }

    fn readme(&self) -> String {
        let (name, url, tag) = (self.name, self.libraries, self.tag);
        format!(
            "# {name}\n\n\
             Made from the template: the business part is `app/src/service/`,\n\
             its tests `app/tests/`, its settings `config/`. It runs on the\n\
             `platform` library and is built, released and deployed by the\n\
             `xtask-lib` library, both from {url} at `{tag}`\n\
             (`[workspace.dependencies]` in `Cargo.toml`); their docs are there.\n\n\
             - `cargo xtask help`: the tasks.\n\
             - `cargo xtask test`: the tests.\n\
             - `cargo xtask dist`: the release archive of this machine's target in `target/dist/`.\n\n\
             ## Updating the libraries\n\n\
             `cargo xtask update` moves the libraries to their newest release\n\
             (`--to <tag>` for another one), prints what changed from their\n\
             changelogs, and leaves the change to `Cargo.toml` and `Cargo.lock`\n\
             to review and commit. Then `cargo xtask ci`.\n"
        )
    }
}

impl Update {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let root = &ctx.project.root;
        let manifest_path = root.join("Cargo.toml");
        let manifest = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("read {}", manifest_path.display()))?;
        let pinned = pinned_libraries(&manifest)?;
        let (url, from) = (&pinned.url, &pinned.tag);
        let to = match &self.to {
            Some(tag) => check_tag(tag)?.to_owned(),
            None => newest_release(ctx, url)?,
        };
        if &to == from {
            eprintln!("the libraries are at {to} already");
            return Ok(());
        }
        let edited = retag(&manifest, &pinned.names, from, &to)?;
        let lock_path = root.join("Cargo.lock");
        let lock_before = std::fs::read(&lock_path).ok();
        let cargo = ctx.cargo_path();
        let packages: Vec<String> = pinned
            .names
            .iter()
            .flat_map(|name| ["-p".to_owned(), name.clone()])
            .collect();
        let update = cmd!(ctx.sh, "{cargo} update {packages...}");
        if ctx.dry_run {
            eprintln!(
                "would move {} from {from} to {to} in Cargo.toml",
                pinned.names.join(", ")
            );
            return ctx.run(update);
        }
        write_atomically(&manifest_path, edited.as_bytes())?;
        if let Err(err) = ctx.run(update) {
            write_atomically(&manifest_path, manifest.as_bytes())?;
            if let Some(lock) = &lock_before {
                write_atomically(&lock_path, lock)?;
            }
            return Err(err.context(format!(
                "resolve the libraries at {to} from {url}; Cargo.toml and Cargo.lock are as they were"
            )));
        }
        let before = lock_before
            .map(|bytes| locked_versions(&String::from_utf8_lossy(&bytes)))
            .unwrap_or_default();
        let after_text = std::fs::read_to_string(&lock_path)
            .with_context(|| format!("read {}", lock_path.display()))?;
        let after = locked_versions(&after_text);
        let metadata = cargo_metadata::MetadataCommand::new()
            .cargo_path(cargo)
            .manifest_path(&manifest_path)
            .exec()
            .context("read the workspace's packages after the update")?;
        for name in &pinned.names {
            let old = before.get(name).map_or("?", String::as_str);
            let new = after.get(name).map_or("?", String::as_str);
            println!("{name} {old} -> {new}");
            let changelog = metadata
                .packages
                .iter()
                .find(|package| package.name.as_str() == name)
                .and_then(|package| package.manifest_path.parent())
                .map(|dir| dir.join("CHANGELOG.md"));
            if let Some(text) = changelog.and_then(|path| std::fs::read_to_string(path).ok()) {
                for section in changes_since(&text, old) {
                    println!("{section}");
                }
            }
        }
        eprintln!(
            "updated the libraries from {from} to {to}: review and commit Cargo.toml and Cargo.lock, then run `cargo xtask ci`"
        );
        Ok(())
    }
}

/// The libraries `[workspace.dependencies]` takes by tag, from one
/// repository at one tag.
#[derive(Debug, PartialEq)]
struct Pinned {
    names: Vec<String>,
    url: String,
    tag: String,
}

fn pinned_libraries(manifest: &str) -> Result<Pinned> {
    let parsed: toml::Table = toml::from_str(manifest).context("parse Cargo.toml")?;
    let dependencies = parsed
        .get("workspace")
        .and_then(|workspace| workspace.get("dependencies"))
        .and_then(toml::Value::as_table);
    let mut pinned: Option<Pinned> = None;
    for name in LIBRARIES {
        let Some(dependency) = dependencies.and_then(|table| table.get(name)) else {
            continue;
        };
        let field = |key: &str| dependency.get(key).and_then(toml::Value::as_str);
        let (Some(url), Some(tag)) = (field("git"), field("tag")) else {
            bail!(
                "`{name}` in [workspace.dependencies] is not taken by git tag (`{name} = {{ git = \"…\", tag = \"…\" }}`): `update` moves the tag of a project made by `cargo xtask new`"
            );
        };
        match &mut pinned {
            None => {
                pinned = Some(Pinned {
                    names: vec![name.to_owned()],
                    url: url.to_owned(),
                    tag: tag.to_owned(),
                })
            }
            Some(pinned) if pinned.url == url && pinned.tag == tag => {
                pinned.names.push(name.to_owned())
            }
            Some(pinned) => bail!(
                "the libraries are not at one release: `{name}` is at {url} {tag}, `{}` at {} {}; give them the same git and tag in [workspace.dependencies]",
                pinned.names[0],
                pinned.url,
                pinned.tag
            ),
        }
    }
    pinned.context(
        "Cargo.toml takes none of the libraries (platform, xtask-lib) by git tag in [workspace.dependencies]: this workspace builds them from its own tree; `update` is for a project made by `cargo xtask new`",
    )
}

/// `manifest` with each library's `tag = "from"` set to `to`, one line each.
fn retag(manifest: &str, names: &[String], from: &str, to: &str) -> Result<String> {
    let old = format!("tag = \"{from}\"");
    let new = format!("tag = \"{to}\"");
    let mut retagged = Vec::new();
    let lines: Vec<String> = manifest
        .lines()
        .map(|line| {
            let key = line.split(['=', '.', ' ']).next().unwrap_or_default();
            if names.iter().any(|name| name == key) && line.matches(&old).count() == 1 {
                retagged.push(key.to_owned());
                line.replace(&old, &new)
            } else {
                line.to_owned()
            }
        })
        .collect();
    for name in names {
        ensure!(
            retagged.contains(name),
            "`{name}` in [workspace.dependencies] is not one line with `{old}`: write it as `{name} = {{ git = \"…\", tag = \"{from}\" }}`, or change the tag by hand"
        );
    }
    Ok(lines.join("\n") + "\n")
}

/// The newest `libraries-v<version>` tag of the repository at `url`.
fn newest_release(ctx: &Ctx, url: &str) -> Result<String> {
    let pattern = format!("refs/tags/{TAG_PREFIX}*");
    let listing = ctx
        .read_echoed(cmd!(ctx.sh, "git ls-remote --tags {url} {pattern}"))
        .with_context(|| format!("list the libraries' releases at {url}"))?;
    listing
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1)?.strip_prefix("refs/tags/"))
        .filter(|tag| !tag.ends_with("^{}"))
        .filter_map(|tag| Some((version_key(tag.strip_prefix(TAG_PREFIX)?)?, tag)))
        .max()
        .map(|(_, tag)| tag.to_owned())
        .with_context(|| format!("{url} has no {TAG_PREFIX}<version> tag: name one with --to"))
}

/// `major.minor.patch` as numbers, for ordering.
fn version_key(version: &str) -> Option<(u64, u64, u64)> {
    let mut parts = version.split('.').map(|part| part.parse::<u64>().ok());
    let key = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(key)
}

/// Package name to version, for the packages `Cargo.lock` takes from git.
fn locked_versions(lock: &str) -> BTreeMap<String, String> {
    let Ok(parsed) = toml::from_str::<toml::Table>(lock) else {
        return BTreeMap::new();
    };
    let packages = parsed.get("package").and_then(toml::Value::as_array);
    packages
        .into_iter()
        .flatten()
        .filter(|package| {
            package
                .get("source")
                .and_then(toml::Value::as_str)
                .is_some_and(|source| source.starts_with("git+"))
        })
        .filter_map(|package| {
            let field = |key: &str| Some(package.get(key)?.as_str()?.to_owned());
            Some((field("name")?, field("version")?))
        })
        .collect()
}

/// The sections of a changelog (`## <version> …`) newer than `since`.
fn changes_since(changelog: &str, since: &str) -> Vec<String> {
    let since = version_key(since);
    let mut sections: Vec<String> = Vec::new();
    let mut keep = false;
    for line in changelog.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            let version = heading.split_whitespace().next().and_then(version_key);
            keep = matches!((version, since), (Some(version), Some(since)) if version > since);
            if keep {
                sections.push(String::new());
            }
        }
        if keep && let Some(section) = sections.last_mut() {
            section.push_str(line);
            section.push('\n');
        }
    }
    sections
}

fn replace_once(text: &str, from: &str, to: &str) -> Result<String> {
    ensure!(
        text.matches(from).count() == 1,
        "the template's text `{}` is not there exactly once: the template and this xtask-lib disagree",
        from.trim()
    );
    Ok(text.replacen(from, to, 1))
}

/// A service's name: the package, the binary, the units, the image's
/// last part and the system user; lower-case letters, digits and `-`.
fn check_service_name(name: &str) -> Result<&str> {
    let valid = name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    ensure!(
        valid,
        "`{name}` cannot name a service: use lower-case letters, digits and `-`, starting with a letter (up to 32), e.g. `orders`"
    );
    ensure!(
        !LIBRARIES.contains(&name) && !["xtask", "platform-unsafe"].contains(&name),
        "`{name}` is the name of one of the template's crates: choose another"
    );
    Ok(name)
}

/// A tag that is safe to write into Cargo.toml and pass to git.
fn check_tag(tag: &str) -> Result<&str> {
    let valid = !tag.is_empty()
        && !tag.starts_with(['-', '.', '/'])
        && !tag.contains("..")
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    ensure!(
        valid,
        "`{tag}` is not a tag: use letters, digits, `.`, `_`, `-` and `/`, e.g. {TAG_PREFIX}0.2.0"
    );
    Ok(tag)
}

/// A git URL that is safe to write into Cargo.toml.
fn check_url(url: &str) -> Result<String> {
    let valid = !url.starts_with('-')
        && !url
            .chars()
            .any(|c| c.is_control() || matches!(c, '"' | '\\' | ' '))
        && ["https://", "http://", "ssh://", "git://", "file://"]
            .iter()
            .any(|scheme| url.starts_with(scheme));
    ensure!(
        valid,
        "`{url}` is not a git URL cargo takes: give an https://, ssh://, git:// or file:// URL"
    );
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const PINNED: &str = "[workspace]\nmembers = [\"app\", \"xtask\"]\n\n[workspace.dependencies]\nplatform = { git = \"file:///l\", tag = \"libraries-v0.1.0\" }\nplatform-build = { git = \"file:///l\", tag = \"libraries-v0.1.0\" }\nxtask-lib = { git = \"file:///l\", tag = \"libraries-v0.1.0\" }\n";

    #[test]
    fn the_libraries_move_together_and_nothing_else_changes() {
        let pinned = pinned_libraries(PINNED).unwrap();
        assert_eq!(pinned.names, LIBRARIES);
        assert_eq!(pinned.tag, "libraries-v0.1.0");
        let moved = retag(PINNED, &pinned.names, &pinned.tag, "libraries-v0.2.0").unwrap();
        assert_eq!(moved, PINNED.replace("v0.1.0", "v0.2.0"));
    }

    #[test]
    fn a_workspace_not_made_by_new_or_with_split_libraries_is_refused() {
        for (manifest, expected) in [
            ("[workspace]\n", "takes none of the libraries"),
            (
                "[workspace.dependencies]\nplatform = { path = \"app/platform\" }\n",
                "not taken by git tag",
            ),
            (
                &PINNED.replacen(
                    "tag = \"libraries-v0.1.0\" }\nxtask",
                    "tag = \"libraries-v0.0.9\" }\nxtask",
                    1,
                ),
                "not at one release",
            ),
        ] {
            let err = pinned_libraries(manifest).unwrap_err().to_string();
            assert!(err.contains(expected), "{manifest}: {err}");
        }
        let multiline = "[workspace.dependencies.platform]\ngit = \"file:///l\"\ntag = \"t\"\n";
        let pinned = pinned_libraries(multiline).unwrap();
        let err = retag(multiline, &pinned.names, "t", "u")
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not one line"), "{err}");
    }

    #[test]
    fn changelog_sections_newer_than_the_old_version_are_shown() {
        let changelog = "# Changelog\n\nintro\n\n## 0.3.0\n\n- three\n\n## 0.2.0 (2026-12-01)\n\n- two\n\n## 0.1.0\n\n- one\n";
        let sections = changes_since(changelog, "0.1.0");
        assert_eq!(sections.len(), 2);
        assert!(sections[0].starts_with("## 0.3.0\n") && sections[0].contains("- three"));
        assert!(sections[1].contains("- two") && !sections[1].contains("- one"));
        assert!(changes_since(changelog, "0.3.0").is_empty());
        assert!(changes_since(changelog, "?").is_empty());
    }

    #[test]
    fn names_tags_and_urls_that_would_break_a_manifest_are_refused() {
        for name in ["App", "-x", "x-", "a b", "xtask", "platform", "", "ab\"c"] {
            assert!(check_service_name(name).is_err(), "{name}");
        }
        assert!(check_service_name("orders-2").is_ok());
        for tag in ["", "-x", "a\"b", "a..b", "a b", "/x"] {
            assert!(check_tag(tag).is_err(), "{tag}");
        }
        assert!(check_tag("libraries-v1.2.3").is_ok());
        for url in ["/tmp/x", "-u", "file:///a\"b", "https://x y"] {
            assert!(check_url(url).is_err(), "{url}");
        }
        assert_eq!(version_key("1.2.3"), Some((1, 2, 3)));
        assert_eq!(version_key("1.2"), None);
    }

    #[test]
    fn a_made_projects_manifests_take_the_libraries_by_tag() {
        let made = Made {
            name: "shop",
            libraries: "file:///l",
            tag: "libraries-v0.1.0",
        };
        let root =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml"))
                .unwrap();
        let root = made.workspace_manifest(root).unwrap();
        assert!(root.contains("members = [\"app\", \"xtask\"]\n"), "{root}");
        assert!(
            !root.contains("exclude") && !root.contains("cargo-fuzz"),
            "{root}"
        );
        assert!(
            root.contains("\npackage = \"shop\"\nbinary = \"shop\"\n"),
            "{root}"
        );
        assert_eq!(pinned_libraries(&root).unwrap().names, LIBRARIES);
        let xtask =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
                .unwrap();
        let xtask = made.xtask_manifest(xtask).unwrap();
        assert!(xtask.contains("\nxtask-lib.workspace = true\n"), "{xtask}");
        assert!(
            !xtask.contains("dev-dependencies") && xtask.contains("\n[lints]\n"),
            "{xtask}"
        );
        let app = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../app/Cargo.toml"),
        )
        .unwrap();
        let app = made.app_manifest(app).unwrap();
        assert!(app.contains("\nname = \"shop\"\n"), "{app}");
        assert!(app.contains("\nplatform.workspace = true\n"), "{app}");
        assert!(app.contains("\nplatform-build.workspace = true\n"), "{app}");
    }
}
