//! The defaults worker/README.md documents (its "Configuration" table, the one place they are written down) are the
//! code's: every variable `Settings` reads has a row, every row names a variable the worker reads, and each row's
//! default, given to `Settings` as the variable's value, yields exactly the settings of an empty environment.
//!
//! Comparing "set to the documented value" with "unset" needs no per-variable knowledge here, so a new setting is
//! checked as soon as it has a row.

use std::cell::RefCell;
use std::collections::BTreeSet;

use clap::CommandFactory;
use worker_chart_export::config::Settings;
use worker_chart_export::entry::Cli;

const README: &str = include_str!("../../README.md");
const SECTION: &str = "## Configuration";
/// What a row says when the variable has no default (unset means "none").
const NONE: &str = "—";

/// Variables in the table that `Settings` does not read, with where they are read instead.
const OUTSIDE_SETTINGS: [&str; 2] = ["CHART_IMG_VCR_MODE", "WORKER_STATE_DIR"];

/// One row of the table: its line number in worker/README.md, the variable and the documented default.
struct Row {
    line: usize,
    var: String,
    default: String,
}

/// The rows of the table under [`SECTION`], or an error naming what is wrong with its shape.
fn rows(readme: &str) -> Result<Vec<Row>, String> {
    let mut lines = readme.lines().enumerate();
    lines
        .by_ref()
        .find(|(_, l)| l.trim() == SECTION)
        .ok_or_else(|| format!("worker/README.md has no `{SECTION}` section"))?;
    let mut out = Vec::new();
    let mut in_table = false;
    for (i, line) in lines {
        if line.starts_with("## ") {
            break;
        }
        if !line.starts_with('|') {
            if in_table {
                break;
            }
            continue;
        }
        in_table = true;
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.first().is_some_and(|c| *c == "variable" || c.starts_with("---")) {
            continue;
        }
        let [var, default, ..] = cells.as_slice() else {
            return Err(format!(
                "worker/README.md:{}: a row needs a variable and a default",
                i + 1
            ));
        };
        let var = var.trim_matches('`');
        if var.is_empty()
            || !var
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!("worker/README.md:{}: `{var}` is not one variable name", i + 1));
        }
        out.push(Row {
            line: i + 1,
            var: var.to_owned(),
            default: default.trim_matches('`').to_owned(),
        });
    }
    if out.is_empty() {
        return Err(format!("worker/README.md: the `{SECTION}` section has no table"));
    }
    Ok(out)
}

/// The variables `Settings` asks its environment for.
fn variables_settings_reads() -> BTreeSet<String> {
    let asked = RefCell::new(BTreeSet::new());
    Settings::from_lookup(|k| {
        asked.borrow_mut().insert(k.to_owned());
        None
    })
    .expect("an empty environment is a valid configuration");
    asked.into_inner()
}

/// `Settings` with only `var` set to `value`, printed in full (its `Debug` redacts keys; none are set here).
fn settings_with(var: &str, value: &str) -> Result<String, String> {
    Settings::from_lookup(|k| (k == var).then(|| value.to_owned()))
        .map(|s| format!("{s:?}"))
        .map_err(|e| e.to_string())
}

/// A default written as an expression of another row's (`lease / 3`), evaluated with that row's documented value.
fn evaluate(default: &str, rows: &[Row]) -> String {
    let Some((name, divisor)) = default.split_once(" / ") else {
        return default.to_owned();
    };
    let var = format!("CHART_EXPORT_{}_SECONDS", name.trim().to_ascii_uppercase());
    match (
        rows.iter()
            .find(|r| r.var == var)
            .and_then(|r| r.default.parse::<f64>().ok()),
        divisor.trim().parse::<f64>(),
    ) {
        (Some(base), Ok(d)) => format!("{}", base / d),
        _ => default.to_owned(),
    }
}

/// The problems of one row, as messages that name the line to fix.
fn check_row(row: &Row, rows: &[Row], read: &BTreeSet<String>, unset: &str) -> Option<String> {
    let at = format!("worker/README.md:{}: `{}`", row.line, row.var);
    if OUTSIDE_SETTINGS.contains(&row.var.as_str()) {
        return check_outside(row, &at);
    }
    if !read.contains(&row.var) {
        return Some(format!(
            "{at} is not read by `Settings`: remove the row, or add the variable to OUTSIDE_SETTINGS with where it is read"
        ));
    }
    if row.default == NONE {
        return None;
    }
    let value = evaluate(&row.default, rows);
    match settings_with(&row.var, &value) {
        Ok(set) if set == unset => None,
        Ok(_) => Some(format!(
            "{at} documents the default `{}`, but `Settings` with {}={value:?} differs from `Settings` with it unset: \
             write the code's default on that line",
            row.default, row.var
        )),
        Err(e) => Some(format!(
            "{at} documents the default `{}`, which `Settings` refuses ({e}): write the code's default on that line",
            row.default
        )),
    }
}

/// Rows read outside `Settings`: `WORKER_STATE_DIR` is `run-local`'s `--state-dir` (clap's default);
/// `CHART_IMG_VCR_MODE` depends on `CHART_IMG_MODE` (`src/renderers.rs`) and has no single value to compare.
fn check_outside(row: &Row, at: &str) -> Option<String> {
    if row.var != "WORKER_STATE_DIR" {
        return None;
    }
    let cli = Cli::command();
    let run_local = cli.find_subcommand("run-local").expect("the run-local command");
    let arg = run_local
        .get_arguments()
        .find(|a| a.get_env().is_some_and(|e| e == "WORKER_STATE_DIR"))
        .expect("run-local reads WORKER_STATE_DIR");
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    (defaults != [row.default.clone()]).then(|| {
        format!(
            "{at} documents the default `{}`, but run-local's --state-dir defaults to {defaults:?}: write that on the line",
            row.default
        )
    })
}

#[test]
fn the_documented_defaults_are_the_settings_defaults() {
    let rows = rows(README).unwrap_or_else(|e| panic!("{e}"));
    let read = variables_settings_reads();
    let unset = settings_with("", "").expect("an empty environment is a valid configuration");

    let mut problems: Vec<String> = rows.iter().filter_map(|r| check_row(r, &rows, &read, &unset)).collect();
    for var in &read {
        if !rows.iter().any(|r| &r.var == var) {
            problems.push(format!(
                "worker/README.md, `{SECTION}`: `Settings` reads `{var}`, which has no row: add `| `{var}` | <default> | <meaning> |`"
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for r in &rows {
        if !seen.insert(&r.var) {
            problems.push(format!("worker/README.md:{}: `{}` has a second row", r.line, r.var));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// The check itself: a wrong default, a missing row and a row of no variable are each caught and named by line.
#[test]
fn a_wrong_or_missing_default_is_reported_with_its_line() {
    let read = variables_settings_reads();
    let unset = settings_with("", "").unwrap();
    let table = "## Configuration\n\n| variable | default | meaning |\n|---|---|---|\n\
                 | `CHART_EXPORT_LEASE_SECONDS` | 900 | lease |\n\
                 | `CHART_EXPORT_HEARTBEAT_SECONDS` | lease / 3 | renewal |\n\
                 | `PORT` | 8080 | port |\n\
                 | `NOT_A_SETTING` | 1 | nothing |\n";
    let rows = rows(table).unwrap();
    let problems: Vec<String> = rows.iter().filter_map(|r| check_row(r, &rows, &read, &unset)).collect();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].starts_with("worker/README.md:5: `CHART_EXPORT_LEASE_SECONDS` documents the default `900`"));
    // 900 / 3 is the heartbeat of the wrong lease, so that row is wrong too, named by its own line.
    assert!(problems[1].starts_with("worker/README.md:6: `CHART_EXPORT_HEARTBEAT_SECONDS`"));
    assert!(problems[2].starts_with("worker/README.md:8: `NOT_A_SETTING` is not read by `Settings`"));
}
