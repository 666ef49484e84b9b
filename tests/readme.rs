//! The README's flag table is the documentation operators read: it must list exactly the
//! flags and environment variables that `integers --help` does.

use std::collections::BTreeSet;
use std::process::Command;

/// `(flag, env)` pairs from `--help`.
fn flags_in_help() -> BTreeSet<(String, String)> {
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
            let env = env.split('=').next().unwrap().to_owned();
            flags.insert((current.clone().expect("env before any flag"), env));
        }
    }
    flags
}

/// `(flag, env)` pairs from the README's table rows: "| `--flag` | `ENV` | …".
fn flags_in_readme() -> BTreeSet<(String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    readme
        .lines()
        .filter_map(|line| {
            let cells: Vec<_> = line
                .split('|')
                .map(|cell| cell.trim().trim_matches('`'))
                .collect();
            (cells.len() > 3 && cells[1].starts_with("--") && !cells[1].starts_with("---"))
                .then(|| (cells[1].to_owned(), cells[2].to_owned()))
        })
        .collect()
}

#[test]
fn the_readme_table_lists_every_flag_of_help_and_no_other() {
    let help = flags_in_help();
    let readme = flags_in_readme();
    assert!(
        help.len() >= 10,
        "parsed too few flags from --help: {help:?}"
    );
    let missing: Vec<_> = help.difference(&readme).collect();
    let stale: Vec<_> = readme.difference(&help).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "missing from README: {missing:?}\nin README but not in --help: {stale:?}"
    );
}
