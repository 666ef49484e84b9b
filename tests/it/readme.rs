//! The README and `docs/` are the contract; two checks keep them honest.
//!
//! - The flag table (`docs/deploying.md`) is the documentation operators read: it must list
//!   exactly the flags, environment variables and defaults that `integers --help` does. A default
//!   the table gives as a value (in backticks) must be `--help`'s; one it describes in words
//!   (`off`, "what the open-files limit allows") must be a flag `--help` gives no value for, and
//!   `tests/it/defaults.rs` checks what the words say.
//! - The promise index: every promise has an id, `[§id]`, in the text where a reader sees it,
//!   and every id is named by a test that proves it, in a `// Promise: id, id` line right above
//!   the test (see `docs/testing.md`). This fails when an id has no test, when a test names an
//!   id no page has, and when a promise section holds a list item, table row or paragraph with
//!   no id. It cannot tell a strong test from a weak one: it makes a missing one visible.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A flag, its environment variable, and its default value if it has one.
type Row = (String, String, Option<String>);

/// The rows of `--help`.
fn flags_in_help() -> BTreeSet<Row> {
    let output = Command::new(env!("CARGO_BIN_EXE_integers"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let mut flags = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in help.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("--") {
            current = Some(format!("--{}", rest.split_whitespace().next().unwrap()));
        } else if let Some((_, env)) = line.split_once("[env: ") {
            // `[env: NAME=value]`, or `[env: NAME]` for a flag whose value `--help` hides.
            let name = env.split(['=', ']']).next().unwrap().to_owned();
            let default = env
                .split_once("[default: ")
                .map(|(_, value)| value.split(']').next().unwrap().to_owned());
            flags.insert((current.clone().expect("env before any flag"), name, default));
        }
    }
    flags
}

/// The rows of the flag table in docs/deploying.md: "| `--flag` | `ENV` | default | …".
fn flags_in_readme() -> BTreeSet<Row> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deploying.md")).unwrap();
    readme
        .lines()
        .filter_map(|line| {
            let cells: Vec<_> = line.split('|').map(str::trim).collect();
            let flag = cells.get(1)?.trim_matches('`');
            (cells.len() > 4 && flag.starts_with("--") && !flag.starts_with("---")).then(|| {
                let default = cells[3]
                    .strip_prefix('`')
                    .and_then(|value| value.strip_suffix('`'))
                    .map(str::to_owned);
                (
                    flag.to_owned(),
                    cells[2].trim_matches('`').to_owned(),
                    default,
                )
            })
        })
        .collect()
}

// Promise: flag-env, flag-table, flag-host, flag-port, flag-interval-ms, flag-client-backlog
// Promise: flag-max-client-message, flag-max-backlog, flag-state-file, flag-join-timeout-ms
// Promise: flag-drain-ms, flag-cluster-name
#[test]
fn the_readme_table_lists_every_flag_env_and_default_of_help_and_no_other() {
    let help = flags_in_help();
    let readme = flags_in_readme();
    assert!(
        help.len() >= 10,
        "parsed too few flags from --help: {help:?}"
    );
    assert!(
        help.iter()
            .filter(|(_, _, default)| default.is_some())
            .count()
            >= 10,
        "parsed too few defaults from --help: {help:?}"
    );
    let missing: Vec<_> = help.difference(&readme).collect();
    let stale: Vec<_> = readme.difference(&help).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "missing from docs/deploying.md: {missing:?}\nthere but not in --help: {stale:?}"
    );
}

/// Where the contract is written: each page, and the part of it that holds promises (from the
/// heading `from` to the next heading of the same level or higher, or the whole page).
const PROMISE_PAGES: &[(&str, Option<&str>)] = &[
    ("README.md", Some("## The contract")),
    ("docs/deploying.md", None),
    ("docs/cluster.md", None),
    ("docs/reliability.md", None),
];

/// Promises with no test yet that fails when they break, each with what such a test needs.
/// The index check accepts these and no others; an id here that gains a test, or that no page
/// gives any more, fails it, so the list only shrinks.
/// Empty now: every promise has one.
const NOT_YET_TESTED: &[(&str, &str)] = &[];

/// Where tests are: the ids they name are read from these files.
const TEST_FILES: &[&str] = &["tests", "tests/node", "src", "bench/run.sh", "tests/run.sh"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The ids in a piece of text: every `[§id]`.
fn ids_in(text: &str) -> Vec<String> {
    text.split("[§")
        .skip(1)
        .filter_map(|rest| rest.split_once(']').map(|(id, _)| id.to_owned()))
        .collect()
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A piece of a promise section that must carry an id: a list item with its continuation
/// lines, a table row, or a paragraph.
#[derive(Debug)]
struct Item {
    page: String,
    line: usize,
    text: String,
}

impl Item {
    /// A lead-in ("When something fails:") or a label ("Streams") promises nothing by itself.
    fn is_lead_in(&self) -> bool {
        let text = self.text.trim_end();
        text.ends_with(':') || (!text.contains('\n') && text.split_whitespace().count() < 6)
    }
}

/// The items of the promise part of `page`.
fn promise_items(page: &str, from: Option<&str>) -> Vec<Item> {
    let text = std::fs::read_to_string(root().join(page)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (start, level) = match from {
        Some(heading) => (
            lines
                .iter()
                .position(|line| *line == heading)
                .unwrap_or_else(|| panic!("{page} has no heading {heading:?}")),
            heading.split(' ').next().unwrap().len(),
        ),
        None => (0, 0),
    };
    let mut items: Vec<Item> = Vec::new();
    let mut in_code = false;
    // The item the current line continues, if any.
    let mut open = false;
    for (index, line) in lines.iter().enumerate().skip(start + 1) {
        let heading = line.chars().take_while(|c| *c == '#').count();
        if !in_code && heading > 0 && line[heading..].starts_with(' ') {
            if heading <= level {
                break;
            }
            open = false;
            continue;
        }
        if line.starts_with("```") {
            in_code = !in_code;
            open = false;
            continue;
        }
        let trimmed = line.trim_start();
        if in_code || trimmed.is_empty() {
            open = false;
            continue;
        }
        let new_item = |text: &str| Item {
            page: page.to_owned(),
            line: index + 1,
            text: text.to_owned(),
        };
        if trimmed.starts_with('|') {
            // A table's header is followed by its separator row; neither is a promise.
            let separator = |l: &str| l.starts_with("|---") || l.starts_with("| ---");
            let next_is_separator = lines.get(index + 1).is_some_and(|l| separator(l));
            if !separator(trimmed) && !next_is_separator {
                items.push(new_item(trimmed));
            }
            open = false;
        } else if trimmed.starts_with("- ") {
            items.push(new_item(trimmed));
            open = true;
        } else if open {
            let item = items.last_mut().unwrap();
            item.text.push('\n');
            item.text.push_str(trimmed);
        } else {
            items.push(new_item(trimmed));
            open = true;
        }
    }
    items
}

/// Every id the pages give, with where it is given.
fn ids_in_pages() -> (BTreeMap<String, String>, Vec<Item>) {
    let mut ids = BTreeMap::new();
    let mut without = Vec::new();
    let mut twice = Vec::new();
    for (page, from) in PROMISE_PAGES {
        for item in promise_items(page, *from) {
            let found = ids_in(&item.text);
            if found.is_empty() && !item.is_lead_in() {
                without.push(item);
                continue;
            }
            for id in found {
                assert!(valid_id(&id), "{page}: bad id {id:?}");
                let place = format!("{}:{}", item.page, item.line);
                if let Some(first) = ids.insert(id.clone(), place.clone()) {
                    twice.push(format!("{id} at {first} and {place}"));
                }
            }
        }
    }
    assert!(twice.is_empty(), "ids given twice: {twice:#?}");
    (ids, without)
}

/// The files under the test places, recursively for folders (not `node_modules`).
fn test_files() -> Vec<PathBuf> {
    fn walk(path: &Path, files: &mut Vec<PathBuf>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().is_some_and(|name| name == "node_modules") {
                    continue;
                }
                walk(&path, files);
            }
        } else if path
            .extension()
            .is_some_and(|ext| ext == "rs" || ext == "mjs" || ext == "sh")
        {
            files.push(path.to_owned());
        }
    }
    let mut files = Vec::new();
    for place in TEST_FILES {
        let path = root().join(place);
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                let entry = entry.unwrap().path();
                // A folder listed on its own is read on its own.
                let listed = TEST_FILES.iter().any(|other| root().join(other) == entry);
                if !listed {
                    walk(&entry, &mut files);
                }
            }
        } else {
            files.push(path);
        }
    }
    files
}

/// The ids a `Promise:` line names, if `line` is one: `// Promise: a, b` (`#` in shell).
fn promise_line(line: &str) -> Option<Vec<String>> {
    let comment = line.trim_start();
    let body = comment
        .strip_prefix("///")
        .or_else(|| comment.strip_prefix("//"))
        .or_else(|| comment.strip_prefix('#'))?;
    let ids = body.trim_start().strip_prefix("Promise:")?;
    Some(
        ids.split([',', ' '])
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

/// Whether the first line after a `Promise:` line that is not a comment declares a test:
/// a Rust test attribute, or Node's `test(` or `it(`. Shell scripts are checks as a whole.
fn declares_a_test(file: &Path, rest: &[&str]) -> bool {
    if file.extension().is_some_and(|ext| ext == "sh") {
        return true;
    }
    let Some(next) = rest
        .iter()
        .map(|line| line.trim_start())
        .find(|line| !line.starts_with("//"))
    else {
        return false;
    };
    next.starts_with("#[test]")
        || next.starts_with("#[tokio::test")
        || next.starts_with("test(")
        || next.starts_with("it(")
}

#[test]
fn every_promise_has_an_id_and_every_id_a_test() {
    let (ids, without) = ids_in_pages();
    assert!(ids.len() >= 100, "found too few ids: {}", ids.len());
    let mut proved: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut unknown = Vec::new();
    let mut misplaced = Vec::new();
    for file in test_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        for (index, line) in lines.iter().enumerate() {
            let Some(named) = promise_line(line) else {
                continue;
            };
            let place = format!("{name}:{}", index + 1);
            if named.is_empty() || !declares_a_test(&file, &lines[index + 1..]) {
                misplaced.push(place.clone());
            }
            for id in named {
                if ids.contains_key(&id) {
                    proved.entry(id).or_default().push(place.clone());
                } else {
                    unknown.push(format!("{place}: {id}"));
                }
            }
        }
    }
    let listed: BTreeMap<&str, &str> = NOT_YET_TESTED.iter().copied().collect();
    let untested: Vec<_> = ids
        .iter()
        .filter(|(id, _)| !proved.contains_key(*id) && !listed.contains_key(id.as_str()))
        .map(|(id, place)| format!("{id} ({place})"))
        .collect();
    let stale: Vec<_> = listed
        .keys()
        .filter(|id| proved.contains_key(**id) || !ids.contains_key(**id))
        .collect();
    for (id, needs) in &listed {
        eprintln!("not yet tested: {id}: {needs}");
    }
    let without: Vec<_> = without
        .iter()
        .map(|item| format!("{}:{}: {}", item.page, item.line, item.text))
        .collect();
    assert!(
        untested.is_empty()
            && stale.is_empty()
            && unknown.is_empty()
            && misplaced.is_empty()
            && without.is_empty(),
        "promises with no test naming them: {untested:#?}\n\
         listed as not yet tested, but tested or gone: {stale:#?}\n\
         tests naming ids no page gives: {unknown:#?}\n\
         `Promise:` lines not right above a test: {misplaced:#?}\n\
         promise text with no id: {without:#?}"
    );
}

#[test]
fn the_index_reader_finds_items_ids_and_promise_lines() {
    assert_eq!(ids_in("a [§x-1] b [§y]."), ["x-1", "y"]);
    assert!(valid_id("raw-after-2") && !valid_id("Raw") && !valid_id(""));
    assert_eq!(
        promise_line("    // Promise: a, b-c"),
        Some(vec!["a".to_owned(), "b-c".to_owned()])
    );
    assert_eq!(promise_line("// Promises are kept"), None);
    let rs = Path::new("x.rs");
    assert!(declares_a_test(
        rs,
        &["// why", "#[tokio::test]", "async fn f() {}"]
    ));
    assert!(!declares_a_test(rs, &["fn helper() {}", "#[test]"]));
    assert!(declares_a_test(
        Path::new("x.mjs"),
        &["test(\"x\", () => {});"]
    ));
    let lead = Item {
        page: String::new(),
        line: 0,
        text: "When something fails:".into(),
    };
    let promise = Item {
        text: "A client that reconnects with after misses nothing.".into(),
        ..lead
    };
    assert!(!promise.is_lead_in());
}
