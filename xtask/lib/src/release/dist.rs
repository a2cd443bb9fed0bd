//! `cargo xtask dist` and `cargo xtask release`: which targets, and for a
//! release the checks on the tree and the notes; the work itself is the
//! release pipeline (`pipeline`), and `release --split/--merge` is `parts`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::artifacts::pipeline::build_and_package;
use crate::artifacts::seal::Signing;
use crate::exec::Ctx;
use crate::release::parts;
use crate::targets;
use crate::tools::{self, Tool};

#[derive(clap::Args, Debug, Default)]
pub struct Dist {
    /// Target alias (x86_64, amd64, aarch64, arm64, all) or triple; repeatable
    /// [default: static musl for this machine]
    #[arg(long = "target", value_name = "TARGET")]
    targets: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct Release {
    /// Target alias (x86_64, amd64, aarch64, arm64, all) or triple; repeatable
    #[arg(
        long = "target",
        value_name = "TARGET",
        required_unless_present_any = ["merge", "matrix"]
    )]
    targets: Vec<String>,
    /// Release even though the working tree (or, with --merge, a part's) has
    /// uncommitted changes
    #[arg(long)]
    allow_dirty: bool,
    /// Write these targets' share of the release as a part, for --merge
    /// (one CI runner per target)
    #[arg(long, conflicts_with_all = ["merge", "matrix"])]
    split: bool,
    /// Where --split writes the part [default: target/dist-parts/<triples>]
    #[arg(long, value_name = "DIR", requires = "split")]
    out: Option<PathBuf>,
    /// Check the parts --split wrote and combine them into target/dist/,
    /// with one image index over every platform
    #[arg(long, value_name = "PART", num_args = 1.., conflicts_with_all = ["targets", "matrix"])]
    merge: Vec<PathBuf>,
    /// Print the targets of [workspace.metadata.xtask] as a JSON array for a
    /// CI matrix (also written to $GITHUB_OUTPUT as `targets=` when set)
    #[arg(long, conflicts_with = "targets")]
    matrix: bool,
}
impl Dist {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let targets = if self.targets.is_empty() {
            vec![targets::host_default(&ctx.stamp()?.host)?]
        } else {
            targets::resolve(&self.targets, &ctx.project.settings.targets)?
        };
        build_and_package(ctx, &targets, None, Signing::Later)
    }
}

impl Release {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        if self.matrix {
            return parts::print_matrix(ctx);
        }
        if !self.merge.is_empty() {
            return parts::merge(ctx, &self.merge, self.allow_dirty);
        }
        let targets = targets::resolve(&self.targets, &ctx.project.settings.targets)?;
        let stamp = ctx.stamp()?;
        if stamp.commit == crate::stamp::UNKNOWN {
            bail!(
                "release needs a git checkout with at least one commit: use `cargo xtask dist` for an unversioned build"
            );
        }
        if stamp.dirty && !self.allow_dirty {
            bail!(
                "the working tree has uncommitted changes (see `git status`): commit or stash them, or pass --allow-dirty"
            );
        }
        let git = tools::require(Tool::Git)?;
        let expected_tag = format!("v{}", ctx.project.version);
        let version_tags: Vec<&str> = stamp
            .tags
            .iter()
            .map(String::as_str)
            .filter(|tag| is_version_tag(tag))
            .collect();
        if !version_tags.is_empty() && !version_tags.contains(&expected_tag.as_str()) {
            bail!(
                "HEAD is tagged {} but the version in Cargo.toml is {}: tag the commit {expected_tag}, or set the version to match the tag",
                version_tags.join(", "),
                ctx.project.version
            );
        }
        let notes = release_notes(ctx, &git, version_tags.contains(&expected_tag.as_str()))?;
        if self.split {
            let out = self
                .out
                .unwrap_or_else(|| parts::default_out(ctx, &targets));
            return parts::split(ctx, &targets, notes, &out);
        }
        build_and_package(ctx, &targets, Some(notes), Signing::Later)
    }
}

fn is_version_tag(tag: &str) -> bool {
    tag.strip_prefix('v')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// The commit subjects since the previous version tag, as Markdown.
fn release_notes(ctx: &Ctx, git: &Path, head_is_tagged: bool) -> Result<String> {
    let sh = &ctx.sh;
    // The previous release: the nearest version tag before HEAD (before
    // HEAD's parent when HEAD itself is the release being made).
    let start = if head_is_tagged { "HEAD^" } else { "HEAD" };
    let previous = cmd!(
        sh,
        "{git} describe --tags --abbrev=0 --match v[0-9]* {start}"
    )
    .quiet()
    .ignore_status()
    .ignore_stderr()
    .read()?;
    let range = if previous.is_empty() {
        "HEAD".to_owned()
    } else {
        format!("{previous}..HEAD")
    };
    let format = "--format=- %s (%h)";
    let subjects = cmd!(sh, "{git} log --no-merges {format} {range}")
        .quiet()
        .read()
        .context("list the commits for the release notes")?;
    let since = if previous.is_empty() {
        "Changes".to_owned()
    } else {
        format!("Changes since {previous}")
    };
    Ok(format!(
        "# {} {}\n\n{since}:\n\n{}\n",
        ctx.project.settings.binary,
        ctx.project.version,
        if subjects.is_empty() {
            "- no changes"
        } else {
            &subjects
        }
    ))
}
