//! `recorder show` (a cassette's interactions in a table) and the cassette age that `recorder lint --max-age` checks.
//!
//! Age is per interaction: `recordedAt` (RFC 3339, UTC). `recorder record` writes it, and keeps the old one when a
//! re-recorded interaction is identical, so the date is when the answer last changed. Interactions recorded before
//! ages were kept have none: their age is unknown.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cassette::{StoredBody, StoredInteraction, StoredRequest};
use crate::error::Error;
use crate::live;

/// One line of `recorder show`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShownInteraction {
    pub index: usize,
    pub method: String,
    pub path: String,
    /// The chart parameters (`BINANCE:BTCUSDT 4h 800x600 Volume`) or the start of the body.
    pub body: String,
    /// The account of the key placeholder, if the request had one.
    pub account: Option<String>,
    pub status: u16,
    pub content_type: Option<String>,
    /// Response body size in bytes.
    pub size: u64,
    pub recorded_at: Option<String>,
    /// Whole seconds since `recordedAt`.
    pub age_seconds: Option<i64>,
}

/// The interactions of one cassette (directory or its `cassette.json`), in file order.
pub fn show(path: &Path, now: DateTime<Utc>) -> Result<(PathBuf, Vec<ShownInteraction>), Error> {
    let dir = match live::find_cassettes(&[path.to_path_buf()])?.as_slice() {
        [one] => one.clone(),
        many => {
            return Err(Error::Usage(format!(
                "{} holds {} cassettes; show takes one",
                path.display(),
                many.len()
            )))
        }
    };
    let loaded = live::load(&dir)?;
    let shown = loaded
        .interactions
        .iter()
        .enumerate()
        .map(|(index, i)| {
            let recorded = recorded_at(i);
            ShownInteraction {
                index,
                method: i.request.method.clone(),
                path: i.request.path.clone(),
                body: body_summary(&i.request),
                account: live::account_of(&i.request),
                status: i.response.status,
                content_type: i.response.headers.get("content-type").cloned(),
                size: body_size(&i.response.body),
                recorded_at: i.recorded_at.clone(),
                age_seconds: recorded.map(|t| (now - t).num_seconds()),
            }
        })
        .collect();
    Ok((dir, shown))
}

/// Prints `show`'s table.
pub fn print_table(dir: &Path, rows: &[ShownInteraction], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{}: {} interaction(s)", dir.display(), rows.len())?;
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                format!("#{}", r.index),
                r.method.clone(),
                r.path.clone(),
                r.body.clone(),
                r.status.to_string(),
                r.content_type.clone().unwrap_or_default(),
                human_size(r.size),
                r.age_seconds
                    .map_or_else(|| "unknown".to_owned(), |s| human_age(s.max(0) as u64)),
            ]
        })
        .collect();
    let header = ["#", "method", "path", "body", "status", "type", "size", "age"].map(str::to_owned);
    print_columns(&header, &table, out)
}

/// Left-aligned columns, two spaces apart.
pub(crate) fn print_columns<const N: usize>(
    header: &[String; N],
    rows: &[[String; N]],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "  {}", line.trim_end())?;
    }
    Ok(())
}

/// `POST /path BINANCE:BTCUSDT 4h …`: how a request is named in reports.
pub(crate) fn request_summary(req: &StoredRequest) -> String {
    let body = body_summary(req);
    if body.is_empty() {
        format!("{} {}", req.method, req.path)
    } else {
        format!("{} {} {body}", req.method, req.path)
    }
}

/// A chart request's parameters (symbol, interval, size, studies and drawings by name), else the start of the body.
pub(crate) fn body_summary(req: &StoredRequest) -> String {
    let Some(body) = &req.body else {
        return String::new();
    };
    match (&body.json, &body.text, &body.file) {
        (Some(json), _, _) => {
            let s = |k: &str| json.get(k).and_then(|v| v.as_str());
            let names = |k: &str| -> Vec<String> {
                json.get(k)
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|i| i.get("name").and_then(|n| n.as_str()).map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            if s("symbol").is_some() || s("interval").is_some() {
                let mut parts: Vec<String> = [s("symbol"), s("interval"), s("format")]
                    .into_iter()
                    .flatten()
                    .map(str::to_owned)
                    .collect();
                if let (Some(w), Some(h)) = (json.get("width"), json.get("height")) {
                    parts.push(format!("{w}x{h}"));
                }
                let params: Vec<String> = names("studies").into_iter().chain(names("drawings")).collect();
                if !params.is_empty() {
                    parts.push(params.join("+"));
                }
                parts.join(" ")
            } else {
                truncate(&json.to_string(), 60)
            }
        }
        (_, Some(text), _) => truncate(text, 60),
        (_, _, Some(file)) => format!("<{} bytes, {file}>", body.size.unwrap_or(0)),
        _ => String::new(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

fn body_size(body: &Option<StoredBody>) -> u64 {
    match body {
        None => 0,
        Some(b) => match (&b.json, &b.text, b.size) {
            (Some(j), _, _) => j.to_string().len() as u64,
            (_, Some(t), _) => t.len() as u64,
            (_, _, Some(n)) => n,
            _ => 0,
        },
    }
}

fn human_size(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1024 * 1024 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)),
    }
}

/// `42s`, `5m`, `3h`, `12d`.
pub(crate) fn human_age(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn recorded_at(i: &StoredInteraction) -> Option<DateTime<Utc>> {
    i.recorded_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// How old one cassette's interactions are, against a maximum age.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CassetteAge {
    pub cassette: PathBuf,
    pub interactions: usize,
    /// Positions of the interactions recorded longer ago than the maximum age.
    pub too_old: Vec<usize>,
    /// Positions of the interactions without (or with an unreadable) `recordedAt`.
    pub unknown: Vec<usize>,
    pub oldest: Option<DateTime<Utc>>,
}

impl CassetteAge {
    /// Whether nothing is past the age or of unknown age.
    pub fn is_fresh(&self) -> bool {
        self.too_old.is_empty() && self.unknown.is_empty()
    }
}

/// The age of every cassette under `paths` (see [`live::find_cassettes`] for what a path may be).
pub fn cassette_ages(paths: &[PathBuf], max_age: Duration, now: DateTime<Utc>) -> Result<Vec<CassetteAge>, Error> {
    let max = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
    let mut out = Vec::new();
    for dir in live::find_cassettes(paths)? {
        let loaded = live::load(&dir)?;
        let mut age = CassetteAge {
            cassette: dir,
            interactions: loaded.interactions.len(),
            too_old: Vec::new(),
            unknown: Vec::new(),
            oldest: None,
        };
        for (i, interaction) in loaded.interactions.iter().enumerate() {
            match recorded_at(interaction) {
                None => age.unknown.push(i),
                Some(t) => {
                    if now - t > max {
                        age.too_old.push(i);
                    }
                    age.oldest = Some(age.oldest.map_or(t, |o| o.min(t)));
                }
            }
        }
        out.push(age);
    }
    Ok(out)
}

/// The lines `recorder lint --max-age` prints for one cassette (none when it is fresh).
pub fn age_findings(age: &CassetteAge, max_age_text: &str, now: DateTime<Utc>) -> Vec<String> {
    let dir = age.cassette.display();
    let mut lines = Vec::new();
    if !age.too_old.is_empty() {
        let oldest = age.oldest.expect("an old interaction has a date");
        let list: Vec<String> = age.too_old.iter().map(|i| format!("#{i}")).collect();
        lines.push(format!(
            "{dir}: {} of {} interactions recorded more than {max_age_text} ago ({}; oldest {}, {} ago); re-record: recorder record {dir} --upstream URL",
            age.too_old.len(),
            age.interactions,
            list.join(" "),
            oldest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            human_age((now - oldest).num_seconds().max(0) as u64),
        ));
    }
    if !age.unknown.is_empty() {
        lines.push(format!(
            "{dir}: {} of {} interactions have no recordedAt (age unknown: recorded before ages were kept); re-record with recorder record to date them",
            age.unknown.len(),
            age.interactions
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_people_write_them() {
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(3 * 3600 + 5), "3h");
        assert_eq!(human_age(91 * 86_400), "91d");
        assert_eq!(human_size(18_695), "18.3 KiB");
    }
}
