//! The command line: clap definitions for every task, the grouped task list
//! that `cargo xtask`, `cargo xtask help` and `--help` print, and usage errors
//! folded into one line.
//!
//! Parsing is kept apart from what the flags resolve into: a task turns its
//! flags into settings (targets, profiles, paths) in its own module.

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::OwnTasks;

/// Tasks in the order and groups `--help` lists them. A unit test checks that
/// every task appears here exactly once.
const TASK_GROUPS: &[(&str, &[&str])] = &[
    (
        "Develop",
        &[
            "build", "run", "dev", "test", "lint", "sanitize", "fuzz", "ci", "bench", "docs",
        ],
    ),
    (
        "Release",
        &[
            "dist", "release", "image", "package", "apt-repo", "publish", "keygen", "sign",
            "verify", "units", "version",
        ],
    ),
    ("Deploy", &["deploy", "rollback", "releases", "k8s"]),
    (
        "Maintain",
        &["setup", "doctor", "clean", "new", "update", "help"],
    ),
];

const AFTER_HELP: &str = "\
Every command that changes something is printed before it runs, as a line you can copy.
`cargo xtask help <task>` shows the flags of one task. Exit codes: 0 success, 1 a task failed, 2 bad command line.";

#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, test and release this workspace: each task is Rust code in xtask/.",
    disable_help_subcommand = true,
    disable_version_flag = true
)]
pub struct Xtask {
    /// Print every command a task would run, without running any of them
    #[arg(long, global = true)]
    pub dry_run: bool,

    #[command(subcommand)]
    task: Option<TaskOrHelp>,
}

// Parsed once per run: the size of the task's flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum TaskOrHelp {
    #[command(flatten)]
    Task(Task),
    /// Print this list of tasks, or the flags of one task
    Help {
        /// The task to explain
        task: Option<String>,
    },
}

/// A parsed command line that has a task to run.
#[derive(Debug)]
pub struct Flags {
    pub dry_run: bool,
    pub task: Task,
}

/// Every task `cargo xtask` runs.
#[derive(Subcommand, Debug)]
pub enum Task {
    /// Compile the shipped crates, stamped with the commit they come from
    Build(crate::develop::build::Build),
    /// Build the service and run it in the foreground with the dev config; Ctrl-C drains and stops it
    Run(crate::develop::run::Run),
    /// Like run, then rebuild on every save and upgrade the running service in place, without dropping a connection
    Dev(crate::develop::run::Dev),
    /// Run the test suite (cargo-nextest when installed, else cargo test)
    Test(crate::develop::test::Test),
    /// Check formatting, the import layering and lints (cargo fmt --check, clippy -D warnings)
    Lint(crate::develop::lint::Lint),
    /// Check the unsafe code that ships with Miri, AddressSanitizer and ThreadSanitizer (a pinned nightly)
    Sanitize(crate::develop::sanitize::Sanitize),
    /// Fuzz the parsers of what comes from outside (manifests, sums, signatures, archives, registries, headers, config) with cargo-fuzz, each target for a bounded time
    Fuzz(crate::develop::fuzz::Fuzz),
    /// Run exactly what CI runs, in order, stopping at the first failure
    Ci(crate::ci::Ci),
    /// Benchmark what ships: the service against Go (wrk), upgrades, the build tool, sizes
    Bench(crate::develop::bench::Bench),
    /// Write the reference pages of docs/reference/ from the code; --check fails if they differ
    Docs(crate::develop::docs::Docs),
    /// Build, check and package release artifacts into target/dist/
    Dist(crate::release::dist::Dist),
    /// Like dist, for named targets, from a committed tree whose v* tag (if any) matches the version, with notes; --split/--merge across machines
    Release(crate::release::dist::Release),
    /// Build a multi-platform OCI image of the dist binaries, no daemon needed
    Image(crate::release::image::Image),
    /// Build a .deb and an .rpm of each Linux binary dist built, signed and listed like every artifact
    Package(crate::release::package::Package),
    /// Add the Debian packages to a signed apt repository folder (its own OpenPGP key, from keygen --apt)
    AptRepo(crate::release::apt_repo::AptRepo),
    /// Publish target/dist/ as the GitHub release of the version tag (gh)
    Publish(crate::release::publish::Publish),
    /// Create the release signing key pair: the private key encrypted (cosign's format), the public key in keys/
    Keygen(crate::release::keygen::Keygen),
    /// Sign what dist, release or image wrote in target/dist/, the signing secrets given to this step alone
    Sign(crate::release::sign::Sign),
    /// Check a release folder, an archive or a pushed image against the public key: signatures, provenance, checksums
    Verify(crate::release::verify::Verify),
    /// Render the systemd units and supervisord program for the service
    Units(crate::release::units::Units),
    /// Print the version stamp (version, commit, branch, commit time) builds embed
    Version(crate::release::version::Version),
    /// Deploy a release to a root on this machine or on hosts over ssh, proven or rolled back
    Deploy(crate::deploy::Deploy),
    /// Switch back to the previous good release (or --to one), and prove it
    Rollback(crate::deploy::Rollback),
    /// List the releases on a root: version, commit, when deployed, current / previous / bad
    Releases(crate::deploy::Releases),
    /// Render Kubernetes manifests and Prometheus alerts from the settings, config and image; --check, --apply
    K8s(crate::deploy::k8s::K8s),
    /// Install what the tasks and tests need: rustup parts, packages, Python tools
    Setup(crate::maintain::setup::Setup),
    /// Show what each task needs, what is missing, and how to install it
    Doctor(crate::maintain::doctor::Doctor),
    /// Remove build outputs and everything the release tasks wrote
    Clean(crate::maintain::clean::Clean),
    /// Make a project of your own from the template, on the libraries at a release tag
    New(crate::maintain::adopt::New),
    /// Move this project to a later release of the libraries, and show what changed
    Update(crate::maintain::adopt::Update),
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed<T> {
    Run(Box<Flags>),
    /// A task of the workspace's own.
    Own {
        dry_run: bool,
        task: T,
    },
    /// Print this text (help) and exit successfully.
    Exit(String),
}

/// Parses the command line; a usage error comes back as one line of text
/// without the `error: ` prefix.
pub fn parse<T: OwnTasks>(args: impl IntoIterator<Item = OsString>) -> Result<Parsed<T>, String> {
    let mut command = command::<T>()?;
    command.build();
    let matches = match command.try_get_matches_from_mut(args) {
        Ok(matches) => matches,
        Err(err) => return clap_outcome(&err),
    };
    if matches.subcommand_name().is_some_and(T::has_subcommand) {
        let task = T::from_arg_matches(&matches).map_err(|err| usage_error(&err))?;
        let dry_run = matches.get_flag("dry_run");
        return Ok(Parsed::Own { dry_run, task });
    }
    let xtask = Xtask::from_arg_matches(&matches).map_err(|err| usage_error(&err))?;
    match xtask.task {
        Some(TaskOrHelp::Task(task)) => Ok(Parsed::Run(Box::new(Flags {
            dry_run: xtask.dry_run,
            task,
        }))),
        None | Some(TaskOrHelp::Help { task: None }) => {
            Ok(Parsed::Exit(command.render_help().to_string()))
        }
        Some(TaskOrHelp::Help { task: Some(name) }) => match command.find_subcommand_mut(&name) {
            Some(sub) => Ok(Parsed::Exit(sub.render_help().to_string())),
            None => Err(format!(
                "unknown task '{name}'; run `cargo xtask help` for the list of tasks"
            )),
        },
    }
}

/// The clap command, the workspace's own tasks added, with the task list
/// rendered in groups instead of clap's flat "Commands:" section (the own
/// tasks last, as "Project"). An own task with the name of one of the
/// library's is refused.
pub fn command<T: OwnTasks>() -> Result<clap::Command, String> {
    let ours = Xtask::command();
    let own_names = own_task_names::<T>();
    let own_names: Vec<&str> = own_names.iter().map(String::as_str).collect();
    if let Some(clash) = own_names
        .iter()
        .find(|name| ours.find_subcommand(name).is_some() || **name == "help")
    {
        return Err(format!(
            "the workspace's own task `{clash}` has the name of a task of xtask-lib: rename it in xtask/src/main.rs"
        ));
    }
    let own_group = [("Project", own_names)];
    let groups = TASK_GROUPS
        .iter()
        .map(|(group, tasks)| (*group, tasks.to_vec()))
        .chain(
            own_group
                .iter()
                .filter(|(_, tasks)| !tasks.is_empty())
                .cloned(),
        );
    // The derive gives the whole command the doc comment of the workspace's
    // task enum as its about; the task runner's own about stays.
    let about = ours.get_about().cloned();
    let mut command = T::augment_subcommands(ours);
    if let Some(about) = about {
        command = command.about(about);
    }
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    let mut task_list = String::new();
    for (group, tasks) in groups {
        task_list.push_str(&format!("{group}:\n"));
        for name in tasks {
            let about = command
                .find_subcommand(name)
                .and_then(|sub| sub.get_about())
                .map(ToString::to_string)
                .unwrap_or_default();
            task_list.push_str(&format!("  {name:<10} {about}\n"));
        }
        task_list.push('\n');
    }
    for name in names {
        command = command.mut_subcommand(name, |sub| sub.hide(true));
    }
    Ok(command
        .override_usage("cargo xtask [--dry-run] <TASK> [TASK OPTIONS]")
        .before_help(task_list.trim_end().to_owned())
        .after_help(AFTER_HELP)
        .help_template("{about-with-newline}\n{usage-heading} {usage}\n\n{before-help}Options:\n{options}{after-help}"))
}

/// Every help text as a user sees it: `cargo xtask --help`, then each
/// task's `--help` in the order the task list gives them, the workspace's
/// own last.
pub fn help_texts<T: OwnTasks>() -> Result<Vec<(String, String)>, String> {
    let mut command = command::<T>()?;
    command.build();
    let mut texts = vec![("cargo xtask".to_owned(), command.render_help().to_string())];
    let own_names = own_task_names::<T>();
    let library_names = TASK_GROUPS
        .iter()
        .flat_map(|(_, tasks)| tasks.iter().copied());
    for name in library_names.chain(own_names.iter().map(String::as_str)) {
        if let Some(sub) = command.find_subcommand_mut(name) {
            texts.push((
                format!("cargo xtask {name}"),
                sub.render_long_help().to_string(),
            ));
        }
    }
    Ok(texts)
}

/// The names of the workspace's own tasks, in their declared order.
fn own_task_names<T: OwnTasks>() -> Vec<String> {
    T::augment_subcommands(clap::Command::new("own"))
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect()
}

fn clap_outcome<T>(err: &clap::Error) -> Result<Parsed<T>, String> {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            Ok(Parsed::Exit(err.render().to_string()))
        }
        _ => Err(usage_error(err)),
    }
}

/// Folds clap's multi-line error (message, tips, usage) into one line.
fn usage_error(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let mut lines = rendered
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty());
    let headline = lines.next().unwrap_or("invalid command line");
    let mut headline = headline
        .strip_prefix("error: ")
        .unwrap_or(headline)
        .to_owned();
    let mut lines = lines.peekable();
    // "the following required arguments were not provided:" lists them on
    // the lines after it.
    if headline.ends_with(':') {
        let mut listed = Vec::new();
        while let Some(line) =
            lines.next_if(|line| !line.starts_with("Usage:") && !line.starts_with("tip:"))
        {
            listed.push(line);
        }
        headline = format!("{headline} {}", listed.join(", "));
    }
    let tips: Vec<&str> = lines
        .filter_map(|line| line.strip_prefix("tip: "))
        .collect();
    let mut message = headline
        .trim_end_matches([':', ' '])
        .replace("subcommand", "task");
    if !tips.is_empty() {
        message.push_str(&format!(
            " ({})",
            tips.join("; ").replace("subcommand", "task")
        ));
    }
    message.push_str("; run `cargo xtask --help` for usage");
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tasks a workspace might add, for the tests (a doc comment the help
    /// must not show as the task runner's own).
    #[derive(Subcommand, Debug, PartialEq)]
    enum Own {
        /// Print the greeting
        Greet {
            /// Whom to greet
            #[arg(long)]
            name: String,
        },
    }

    impl OwnTasks for Own {
        fn run(self, _: &crate::Ctx) -> anyhow::Result<()> {
            Ok(())
        }
    }

    /// An own task with a library task's name.
    #[derive(Subcommand, Debug)]
    enum Clashing {
        /// Not the library's dist
        Dist,
    }

    impl OwnTasks for Clashing {
        fn run(self, _: &crate::Ctx) -> anyhow::Result<()> {
            Ok(())
        }
    }

    fn parse_ok(line: &str) -> Parsed<crate::NoOwnTasks> {
        parse(line.split_whitespace().map(OsString::from)).expect("command line parses")
    }

    #[test]
    fn the_help_begins_with_the_task_runners_own_line() {
        let help = command::<Own>().unwrap().render_help().to_string();
        assert!(
            help.starts_with("Build, test and release this workspace"),
            "{help}"
        );
        assert!(!help.contains("a doc comment the help"), "{help}");
    }

    #[test]
    fn a_workspace_adds_its_own_tasks_beside_the_library_ones() {
        let parsed =
            parse::<Own>(["xtask", "--dry-run", "greet", "--name", "you"].map(OsString::from));
        match parsed {
            Ok(Parsed::Own { dry_run, task }) => {
                assert!(dry_run);
                assert_eq!(
                    task,
                    Own::Greet {
                        name: "you".to_owned()
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse::<Own>(["xtask", "clean"].map(OsString::from)),
            Ok(Parsed::Run(_))
        ));
        let help = match parse::<Own>(["xtask", "help"].map(OsString::from)) {
            Ok(Parsed::Exit(text)) => text,
            other => panic!("{other:?}"),
        };
        assert!(
            help.contains("Project:\n  greet      Print the greeting"),
            "{help}"
        );
        let texts = help_texts::<Own>().unwrap();
        assert_eq!(texts.last().unwrap().0, "cargo xtask greet");
        command::<Own>().unwrap().debug_assert();
        let clash = parse::<Clashing>(["xtask", "dist"].map(OsString::from)).unwrap_err();
        assert!(
            clash.contains("own task `dist` has the name of a task of xtask-lib"),
            "{clash}"
        );
    }

    #[test]
    fn every_task_is_listed_in_exactly_one_group() {
        let mut listed: Vec<&str> = TASK_GROUPS
            .iter()
            .flat_map(|(_, tasks)| tasks.iter().copied())
            .collect();
        listed.sort_unstable();
        let mut defined: Vec<String> = Xtask::command()
            .get_subcommands()
            .map(|sub| sub.get_name().to_owned())
            .collect();
        defined.sort_unstable();
        assert_eq!(listed, defined);
    }

    #[test]
    fn clap_definitions_are_consistent() {
        command::<crate::NoOwnTasks>().unwrap().debug_assert();
    }

    #[test]
    fn help_forms_print_the_same_task_list() {
        let texts: Vec<String> = ["xtask", "xtask help", "xtask --help", "xtask -h"]
            .into_iter()
            .map(|line| match parse_ok(line) {
                Parsed::Exit(text) => text,
                other => panic!("`{line}` gave {other:?} instead of printing help"),
            })
            .collect();
        assert!(
            texts.windows(2).all(|pair| pair[0] == pair[1]),
            "{texts:#?}"
        );
        assert!(
            texts[0].contains("Develop:") && texts[0].contains("  doctor "),
            "{}",
            texts[0]
        );
    }

    #[test]
    fn usage_errors_are_one_line() {
        let check = |line: &str, expected: &str| {
            let message = parse::<crate::NoOwnTasks>(line.split_whitespace().map(OsString::from))
                .expect_err("command line is rejected");
            assert!(!message.contains('\n'), "{message}");
            assert!(message.contains(expected), "`{line}` gave `{message}`");
        };
        check(
            "xtask bulid",
            "unrecognized task 'bulid' (some similar tasks exist:",
        );
        check("xtask bulid", "'build')");
        check("xtask build --relase", "unexpected argument '--relase'");
        check("xtask help nope", "unknown task 'nope'");
        check(
            "xtask image --latest",
            "the following required arguments were not provided: --push",
        );
    }

    #[test]
    fn dry_run_is_accepted_before_and_after_the_task() {
        for line in ["xtask --dry-run clean", "xtask clean --dry-run"] {
            match parse_ok(line) {
                Parsed::Run(flags) => assert!(flags.dry_run, "{line}"),
                Parsed::Exit(_) => panic!("{line} printed help"),
            }
        }
    }
}
