//! Releases only move forward: a deploy refuses a release older than the
//! one a host runs (by version, as SemVer orders them, then by the time of
//! the commit both were built from), unless a person asks for it by name
//! (`--allow-downgrade`, or `rollback`); either is logged as a downgrade.

use std::cmp::Ordering;

use anyhow::{Result, bail};

use super::source::Source;
use super::state::State;

/// How `version` compares with `other` under SemVer's precedence (build
/// metadata ignored); `None` if either is not `MAJOR.MINOR.PATCH[-PRE][+BUILD]`.
pub fn compare_versions(version: &str, other: &str) -> Option<Ordering> {
    let (core, pre) = parse(version)?;
    let (other_core, other_pre) = parse(other)?;
    Some(core.cmp(&other_core).then_with(|| match (pre, other_pre) {
        (None, None) => Ordering::Equal,
        // A pre-release comes before its release.
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(pre), Some(other_pre)) => compare_pre_releases(pre, other_pre),
    }))
}

fn parse(version: &str) -> Option<([u64; 3], Option<&str>)> {
    let version = version
        .split_once('+')
        .map_or(version, |(version, _)| version);
    let (core, pre) = match version.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (version, None),
    };
    let mut numbers = core.split('.').map(|number| number.parse::<u64>().ok());
    let core = [numbers.next()??, numbers.next()??, numbers.next()??];
    if numbers.next().is_some() || pre.is_some_and(str::is_empty) {
        return None;
    }
    Some((core, pre))
}

/// Dot-separated identifiers, left to right: numbers numerically and
/// before words, words in ASCII order, a shorter list first when equal so far.
fn compare_pre_releases(pre: &str, other: &str) -> Ordering {
    let mut left = pre.split('.');
    let mut right = other.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(a), Some(b)) => {
                let order = match (a.parse::<u64>(), b.parse::<u64>()) {
                    (Ok(a), Ok(b)) => a.cmp(&b),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => a.cmp(b),
                };
                if order != Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

/// Whether deploying `source` on a host in `state` goes back, and why:
/// the release compared is the last proven one (or `current` on a root
/// without that record). `None` when it goes forward, is the same, or
/// cannot be ordered (a release named by hand).
pub fn going_back(state: &State, source: &Source) -> Option<String> {
    let running = state.proven.as_ref().or(state.current.as_ref())?;
    if *running == source.name {
        return None;
    }
    let (running_version, _) = named_identity(running)?;
    match compare_versions(&source.version, running_version)? {
        Ordering::Less => Some(format!(
            "version {} is older than {running_version}",
            source.version
        )),
        Ordering::Greater => None,
        Ordering::Equal => {
            let running_time = state.commit_time_of(running)?;
            let time = source.commit_time.as_deref()?;
            (time < running_time).then(|| {
                format!(
                    "both are version {running_version}, and its commit ({time}) is older than {running}'s ({running_time})"
                )
            })
        }
    }
}

/// Refuses a release that goes back on `host`, unless allowed; returns
/// whether it goes back (the deploy is then logged as a downgrade).
pub fn check_forward(state: &State, source: &Source, host: &str, allowed: bool) -> Result<bool> {
    let Some(why) = going_back(state, source) else {
        return Ok(false);
    };
    let running = state.proven.as_ref().or(state.current.as_ref());
    let running = running.map_or("", String::as_str);
    if !allowed {
        bail!(
            "refusing to deploy {} over {running} on {host}: {why}, and releases only move forward; go back with `cargo xtask rollback --to {}` if it is still on the host, or pass --allow-downgrade",
            source.name,
            source.name
        );
    }
    say!(
        "{host}: warning: --allow-downgrade: deploying {} over {running} ({why})",
        source.name
    );
    Ok(true)
}

/// The version and commit in a release name as `deploy` writes it,
/// `<version>-<short commit>` (`0.1.0-abc1234`).
pub(super) fn named_identity(release: &str) -> Option<(&str, &str)> {
    let (version, commit) = release.rsplit_once('-')?;
    let is_commit =
        (7..=40).contains(&commit.len()) && commit.bytes().all(|byte| byte.is_ascii_hexdigit());
    is_commit.then_some((version, commit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_ordered_as_semver_orders_them() {
        let ascending = [
            "0.1.0",
            "0.9.0",
            "0.10.0",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "2.0.0",
        ];
        for (index, version) in ascending.iter().enumerate() {
            for (other_index, other) in ascending.iter().enumerate() {
                assert_eq!(
                    compare_versions(version, other),
                    Some(index.cmp(&other_index)),
                    "{version} vs {other}"
                );
            }
        }
        assert_eq!(
            compare_versions("1.0.0+build.1", "1.0.0+build.2"),
            Some(Ordering::Equal)
        );
        for unordered in ["1.0", "1.0.0.0", "v1.0.0", "1.0.0-", "a.b.c"] {
            assert_eq!(compare_versions(unordered, "1.0.0"), None, "{unordered}");
        }
    }
}
