//! The README and the docs say what is true, once, and briefly: the quick
//! start, run as written, answers as written; every relative link leads to
//! a file; the docs stay under their word count, and each fact with a home
//! is stated only there; the generated reference pages are what the code
//! writes; every error docs/troubleshooting.md quotes is what its command
//! prints.

mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

fn read(relative: &str) -> String {
    fs::read_to_string(workspace_root().join(relative)).unwrap()
}

/// The lines of the first ```sh block after `heading`.
fn shell_block(markdown: &str, heading: &str) -> Vec<String> {
    let after = &markdown[markdown.find(heading).expect("the heading")..];
    let start = after.find("```sh\n").expect("a sh block") + 6;
    let end = start + after[start..].find("```").unwrap();
    after[start..end].lines().map(str::to_owned).collect()
}

#[test]
fn the_readme_is_at_most_250_lines() {
    let lines = read("README.md").lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines: move detail into docs/"
    );
}

/// The hand-written docs: README, ARCHITECTURE, CONTRIBUTING and
/// `docs/*.md`, not the generated `docs/reference/`.
fn hand_written_docs() -> Vec<(String, String)> {
    let root = workspace_root();
    let mut names = vec![
        "README.md".to_owned(),
        "ARCHITECTURE.md".to_owned(),
        "CONTRIBUTING.md".to_owned(),
    ];
    for entry in fs::read_dir(root.join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            names.push(format!("docs/{name}"));
        }
    }
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let text = read(&name);
            (name, text)
        })
        .collect()
}

/// At most 14,000 words (as `wc -w` counts them) in the hand-written docs:
/// detail belongs in the generated reference, in rustdoc, or in the commit
/// log.
#[test]
fn the_docs_are_at_most_14000_words() {
    let docs = hand_written_docs();
    let words: usize = docs
        .iter()
        .map(|(_, text)| text.split_whitespace().count())
        .sum();
    let mut largest: Vec<_> = docs
        .iter()
        .map(|(name, text)| (text.split_whitespace().count(), name.as_str()))
        .collect();
    largest.sort_unstable_by(|a, b| b.cmp(a));
    assert!(
        words <= 14_000,
        "the docs have {words} words, more than 14,000; the largest: {:?}",
        &largest[..3]
    );
}

/// A fact with one home: the page that states it; every other page links.
struct Fact {
    what: &'static str,
    home: &'static str,
    /// Whether a paragraph states the fact.
    stated: fn(&str) -> bool,
}

/// The tasks, from the generated CLI page's headings.
fn task_names() -> Vec<String> {
    read("docs/reference/cli.md")
        .lines()
        .filter_map(|line| line.strip_prefix("## `cargo xtask "))
        .filter_map(|rest| rest.split([' ', '`']).next())
        .filter(|name| !name.is_empty() && !name.starts_with('-'))
        .map(str::to_owned)
        .collect()
}

/// Whether a paragraph lists six tasks or more, as table rows or as the
/// help's lines.
fn lists_the_tasks(paragraph: &str) -> bool {
    let tasks = task_names();
    let listed = tasks
        .iter()
        .filter(|task| {
            paragraph.contains(&format!("| `{task}` |"))
                || paragraph
                    .lines()
                    .any(|line| line.starts_with(&format!("  {task} ")))
        })
        .count();
    listed >= 6
}

/// A ratio (`1.76×`), or a size in megabytes: measured figures, which only
/// the generated pages hold.
fn quotes_a_figure(paragraph: &str) -> bool {
    let chars: Vec<char> = paragraph.chars().collect();
    chars
        .windows(2)
        .any(|pair| pair[0].is_ascii_digit() && pair[1] == '×')
        || paragraph
            .match_indices(" MB")
            .any(|(at, _)| paragraph[..at].ends_with(|c: char| c.is_ascii_digit()))
}

const FACTS: &[Fact] = &[
    Fact {
        what: "the task list",
        home: "docs/reference/cli.md",
        stated: lists_the_tasks,
    },
    Fact {
        what: "the error contract (one line, `error: <what failed>: <cause>`, exit 1)",
        home: "ARCHITECTURE.md",
        stated: |paragraph| paragraph.contains("error: <") || paragraph.contains("exit code 1"),
    },
    Fact {
        what: "the port's home (`server.listen` in `config/base.toml`)",
        home: "docs/service.md",
        stated: |paragraph| paragraph.contains("server.listen") && paragraph.contains("base.toml"),
    },
    Fact {
        what: "the config layering (defaults, base.toml, the environment's file, variables, flags)",
        home: "docs/service.md",
        stated: |paragraph| {
            paragraph.contains("base.toml")
                && (paragraph.contains("<APP_ENV>.toml") || paragraph.contains("<env>.toml"))
                && paragraph.contains("APP__")
        },
    },
    Fact {
        what: "measured figures (ratios, sizes)",
        home: "docs/reference/",
        stated: quotes_a_figure,
    },
];

/// The facts of `facts` that `docs` state outside their home, each as
/// "page: what (its home)".
fn restated(docs: &[(String, String)], facts: &[Fact]) -> Vec<String> {
    let mut found = Vec::new();
    for (name, text) in docs {
        for fact in facts.iter().filter(|fact| !name.starts_with(fact.home)) {
            if text.split("\n\n").any(fact.stated) {
                found.push(format!("{name}: {} (its home: {})", fact.what, fact.home));
            }
        }
    }
    found
}

#[test]
fn each_fact_has_one_home() {
    assert!(task_names().len() >= 20, "{:?}", task_names());
    // Each fact is found in its home, so a detector that finds nothing
    // fails here rather than passing everything.
    for fact in FACTS {
        let home = if fact.home.ends_with('/') {
            read("docs/reference/benchmarks.md")
        } else {
            read(fact.home)
        };
        assert!(
            home.split("\n\n").any(fact.stated),
            "{} does not state {}: the test's detector is out of date",
            fact.home,
            fact.what
        );
    }
    let found = restated(&hand_written_docs(), FACTS);
    assert!(
        found.is_empty(),
        "facts stated away from their home (say them there, link here):\n{}",
        found.join("\n")
    );
}

#[test]
fn every_relative_link_in_the_docs_leads_to_a_file() {
    let root = workspace_root();
    let mut pages = vec![
        root.join("README.md"),
        root.join("ARCHITECTURE.md"),
        root.join("CONTRIBUTING.md"),
    ];
    for entry in fs::read_dir(root.join("docs")).unwrap() {
        pages.push(entry.unwrap().path());
    }
    for page in pages
        .iter()
        .filter(|page| page.extension().is_some_and(|ext| ext == "md"))
    {
        let text = fs::read_to_string(page).unwrap();
        for (at, _) in text.match_indices("](") {
            let target: String = text[at + 2..].chars().take_while(|c| *c != ')').collect();
            if target.contains("://") || target.starts_with('#') {
                continue;
            }
            let path = target.split('#').next().unwrap();
            let resolved = page.parent().unwrap().join(path);
            assert!(
                resolved.exists(),
                "{} links to {target}, which does not exist",
                page.display()
            );
        }
    }
}

/// Slow end to end: the quick start as the README writes it. The service is
/// started with the README's command (on a free port instead of 8080, which
/// may be taken), and each `curl` line's answer starts as its comment says.
#[test]
fn slow_the_quick_start_answers_as_the_readme_says() {
    let Some(curl) = tool_or_skip("curl", "apt-get install -y curl") else {
        return;
    };
    let readme = read("README.md");
    let start = shell_block(&readme, "## Quick start");
    let run = start[0].split('#').next().unwrap().trim();
    assert_eq!(run, "cargo run -p app", "the quick start's command changed");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut service = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "-p", "app"])
        .current_dir(workspace_root())
        .env("APP__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("APP__LOG__FORMAT", "json")
        .env_remove("APP_ENV")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(service.stdout.take().unwrap()).lines();
    let started = Instant::now();
    loop {
        let line = lines
            .next()
            .expect("the service logs until it listens")
            .unwrap();
        if line.contains("\"listening\"") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no listening line"
        );
    }
    std::thread::spawn(move || lines.for_each(drop));

    // The curl lines, each with the answer its comment (on its line or the
    // next) begins with.
    let block = shell_block(&readme, "In another terminal");
    let mut checked = 0;
    let mut index = 0;
    while index < block.len() {
        let line = &block[index];
        index += 1;
        let (command, comment) = line.split_once('#').unwrap_or((line, ""));
        if !command.trim_start().starts_with("curl ") {
            continue;
        }
        let mut comment = comment.trim().to_owned();
        if comment.is_empty() && index < block.len() && block[index].trim_start().starts_with('#') {
            comment = block[index].trim_start()[1..].trim().to_owned();
            index += 1;
        }
        let expected = comment
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_end_matches(':');
        let args = shell_words(command.trim())
            .into_iter()
            .skip(1)
            .map(|arg| arg.replace("localhost:8080", &format!("127.0.0.1:{port}")));
        let output = Command::new(&curl).arg("-s").args(args).output().unwrap();
        let answer = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{command}: curl failed");
        if expected.starts_with('{') {
            assert_eq!(answer.trim(), comment, "{command}");
        } else {
            assert!(
                answer.contains("# TYPE http_requests"),
                "{command}: {answer}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 4, "the README's quick start has four curl lines");
    let _ = service.kill();
    let _ = service.wait();
}

/// Splits a command line written with single quotes, as the README's are.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            other => {
                word.push(other);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

#[test]
fn shell_words_keep_quoted_spaces() {
    assert_eq!(
        shell_words("curl -d '{\"name\": \"Ada\"}' -H 'A: b' x"),
        ["curl", "-d", "{\"name\": \"Ada\"}", "-H", "A: b", "x"]
    );
}

#[test]
fn the_reference_pages_are_what_the_code_writes() {
    let run = output(xtask(&workspace_root()).args(["docs", "--check"]));
    assert!(
        run.status.success(),
        "docs/reference/ is stale: {}",
        stderr_text(&run)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("6 reference pages match the code"));
}

#[test]
fn a_page_that_differs_fails_the_check_with_the_command_that_rewrites_it() {
    let copy = TempDir::new().unwrap();
    for page in [
        "cli.md",
        "tools.md",
        "config.md",
        "metrics.md",
        "manifest.md",
    ] {
        fs::copy(
            workspace_root().join("docs/reference").join(page),
            copy.path().join(page),
        )
        .unwrap();
    }
    // A default edited by hand in the page instead of in config/base.toml.
    let config = copy.path().join("config.md");
    let text = fs::read_to_string(&config).unwrap();
    let edited = text.replacen("`4096`", "`1024`", 1);
    assert_ne!(edited, text, "config.md shows max_connections = 4096");
    fs::write(&config, edited).unwrap();
    fs::remove_file(copy.path().join("tools.md")).unwrap();
    let run = output(
        xtask(&workspace_root())
            .args(["docs", "--check", "--dir"])
            .arg(copy.path()),
    );
    assert_eq!(run.status.code(), Some(1));
    let stderr = stderr_text(&run);
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: the reference pages differ from what the code writes now: ")
            && last.contains("config.md (line ")
            && last.contains("`1024`")
            && last.contains("tools.md (missing)")
            && last.ends_with("run `cargo xtask docs` and commit the result"),
        "{last}"
    );
    assert!(!last.contains("cli.md"), "{last}");
}

/// The console blocks of docs/troubleshooting.md: each `$ ` line a command
/// (`cargo xtask …` or a shell command that prepares the copy), each
/// `error: ` line what the command before it must print last.
fn troubleshooting_blocks() -> Vec<Vec<(String, Option<String>)>> {
    let page = read("docs/troubleshooting.md");
    let mut blocks = Vec::new();
    let mut rest = page.as_str();
    while let Some(start) = rest.find("```console\n") {
        let body = &rest[start + 11..];
        let end = body.find("```").expect("a closed block");
        let mut steps: Vec<(String, Option<String>)> = Vec::new();
        for line in body[..end].lines() {
            if let Some(command) = line.strip_prefix("$ ") {
                steps.push((command.to_owned(), None));
            } else if line.starts_with("error: ") {
                let step = steps.last_mut().expect("an error after a command");
                step.1 = Some(line.to_owned());
            }
        }
        blocks.push(steps);
        rest = &body[end + 3..];
    }
    blocks
}

/// Whether `printed` is `quoted`, where each `…` of `quoted` stands for
/// any text.
fn matches_quoted(printed: &str, quoted: &str) -> bool {
    let parts: Vec<&str> = quoted.split('…').collect();
    let mut rest = printed;
    for (index, part) in parts.iter().enumerate() {
        if index == 0 {
            let Some(after) = rest.strip_prefix(part) else {
                return false;
            };
            rest = after;
        } else if index == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    rest.is_empty()
}

#[test]
fn the_troubleshooting_errors_are_what_the_tasks_print() {
    assert!(matches_quoted(
        "error: in /a/b/x.json: run",
        "error: in …/x.json: run"
    ));
    assert!(!matches_quoted(
        "error: in /a/b/y.json: run",
        "error: in …/x.json: run"
    ));
    let blocks = troubleshooting_blocks();
    let quoted: usize = blocks
        .iter()
        .flatten()
        .filter(|(_, error)| error.is_some())
        .count();
    assert!(quoted >= 10, "only {quoted} errors quoted");
    for steps in blocks {
        // Each block in a committed copy of its own, as a clone would be.
        let copy = repository();
        for (line, expected) in steps {
            let mut words = shell_words(&line);
            let mut variables = Vec::new();
            while words[0].contains('=') && !words[0].starts_with('-') {
                let word = words.remove(0);
                let (name, value) = word.split_once('=').unwrap();
                variables.push((name.to_owned(), value.replace('…', "x")));
            }
            if words[..3] == ["cargo", "run", "-p"] {
                // The service's own error, from the service built once for
                // the tests, with the port it would listen on taken.
                let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let port = taken.local_addr().unwrap().port();
                let run = output(
                    Command::new(app_built_at(&"f".repeat(40)))
                        .current_dir(copy.path())
                        .env("APP__SERVER__LISTEN", format!("127.0.0.1:{port}")),
                );
                let printed = stderr_text(&run);
                let last = printed.lines().last().unwrap_or_default();
                let expected = expected.expect("the service's line quotes its error");
                assert!(
                    run.status.code() == Some(4) && matches_quoted(last, &expected),
                    "docs/troubleshooting.md quotes, for `{line}`:\n{expected}\nbut it printed:\n{last}"
                );
                continue;
            }
            if words[..2] != ["cargo", "xtask"] {
                // Preparation; its output is not read, so that a process it
                // leaves in the background does not hold the test up.
                let status = Command::new("sh")
                    .args(["-c", &line])
                    .current_dir(copy.path())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "{line}: {status}");
                continue;
            }
            let mut command = xtask(copy.path());
            command.args(&words[2..]).envs(variables);
            // As on a machine without the Python tools (cargo-zigbuild):
            // no virtual environment, and none of its folders on PATH.
            let path = std::env::var_os("PATH").unwrap_or_default();
            let path = std::env::join_paths(
                std::env::split_paths(&path).filter(|dir| !dir.join("cargo-zigbuild").exists()),
            )
            .unwrap();
            command
                .env("XTASK_VENV", copy.path().join("no-venv"))
                .env("PATH", path);
            let run = output(&mut command);
            let printed = stderr_text(&run);
            let last = printed.lines().last().unwrap_or_default();
            let Some(expected) = expected else {
                assert!(run.status.success(), "{line}: {printed}");
                continue;
            };
            assert!(
                !run.status.success() && matches_quoted(last, &expected),
                "docs/troubleshooting.md quotes, for `{line}`:\n{expected}\nbut it printed:\n{last}"
            );
        }
    }
}
