//! The README's flag table is the documentation operators read: it must list exactly the
//! flags, environment variables and defaults that `integers --help` does. A default the table
//! gives as a value (in backticks) must be `--help`'s; one it describes in words (`off`,
//! "what the open-files limit allows") must be a flag `--help` gives no value for, and
//! `tests/defaults.rs` checks what the words say.

use std::collections::BTreeSet;
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

/// The rows of the README's table: "| `--flag` | `ENV` | default | …".
fn flags_in_readme() -> BTreeSet<Row> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
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
        "missing from README: {missing:?}\nin README but not in --help: {stale:?}"
    );
}
