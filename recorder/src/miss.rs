//! The "no match" report: the request as recorded (redacted), the closest recorded interaction and every field
//! that differs. Built only from stored (already redacted) requests, so it cannot hold a secret.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::canon::{flatten, strip_ignored};
use crate::cassette::StoredRequest;
use crate::model::{Mode, VcrConfig};

/// Why a request got no recorded answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum MissReason {
    /// No recorded request matches.
    NoMatch,
    /// Matching interactions exist but were all played and `on_exhausted` is `error`.
    #[serde(rename_all = "camelCase")]
    Exhausted { recorded: usize },
}

/// A request as stored in a cassette: redacted, canonical JSON body.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestSummary {
    pub method: String,
    pub path: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<(String, String)>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The JSON body, the text body as a string, or `"<file bodies/…, N bytes>"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
}

/// The recorded interaction most like the missed request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Closest {
    /// Position in the cassette's `interactions` array (as loaded, then recordings of this session).
    pub index: usize,
    pub request: RequestSummary,
}

/// One field that differs between the closest recorded request (`expected`) and the missed one (`actual`).
/// Values are compact JSON; `None` means the field is absent on that side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldDiff {
    /// `method`, `path`, `query.<name>`, `header.<name>`, `body` or `body.<path>` like `body.studies[0].name`.
    pub field: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
}

/// A request with no recorded answer. `Display` is a readable multi-line report; `Serialize` gives the same as
/// JSON for error details (`CHART_API_MOCK_MISSING`).
///
/// ```no_run
/// # fn f(vcr: &recorder::Vcr, req: &recorder::Request) {
/// if let Err(miss) = vcr.replay(req) {
///     eprintln!("{miss}");
///     let details = serde_json::to_value(&miss).unwrap();
/// #   let _ = details;
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Miss {
    pub cassette: String,
    pub mode: Mode,
    pub reason: MissReason,
    pub request: RequestSummary,
    pub closest: Option<Closest>,
    pub diffs: Vec<FieldDiff>,
}

impl RequestSummary {
    pub(crate) fn from_stored(req: &StoredRequest) -> Self {
        let body = req.body.as_ref().map(|b| match (&b.json, &b.text, &b.file) {
            (Some(v), _, _) => v.clone(),
            (_, Some(t), _) => serde_json::Value::String(t.clone()),
            (_, _, Some(f)) => serde_json::Value::String(format!("<file {f}, {} bytes>", b.size.unwrap_or(0))),
            _ => serde_json::Value::Null,
        });
        RequestSummary {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req.headers.clone(),
            body,
        }
    }
}

/// The fields that take part in matching, flattened, in report order (method, path, query, headers, body).
pub(crate) fn match_fields(req: &StoredRequest, config: &VcrConfig) -> Vec<(String, String)> {
    let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let mut out = vec![("method".to_owned(), q(&req.method)), ("path".to_owned(), q(&req.path))];
    let mut query: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in &req.query {
        if !config.ignore_query_params.iter().any(|i| i == k) {
            query.entry(k).or_default().push(v);
        }
    }
    out.extend(
        query
            .into_iter()
            .map(|(k, vs)| (format!("query.{k}"), q(&vs.join("&")))),
    );
    for (name, value) in &req.headers {
        if config.match_headers.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            out.push((format!("header.{name}"), q(value)));
        }
    }
    if let Some(body) = &req.body {
        match (&body.json, &body.text, &body.file) {
            (Some(v), _, _) => {
                let mut v = v.clone();
                strip_ignored(&mut v, &config.ignore_json_fields);
                flatten("body", &v, &mut out);
            }
            (_, Some(t), _) => out.push(("body".into(), q(t))),
            (_, _, Some(f)) => out.push(("body".into(), q(&format!("<file {f}>")))),
            _ => {}
        }
    }
    out
}

pub(crate) fn diff(expected: &[(String, String)], actual: &[(String, String)]) -> Vec<FieldDiff> {
    let actual_map: BTreeMap<&str, &str> = actual.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expected_map: BTreeMap<&str, &str> = expected.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = Vec::new();
    for (k, v) in expected {
        match actual_map.get(k.as_str()) {
            Some(a) if a == v => {}
            a => out.push(FieldDiff {
                field: k.clone(),
                expected: Some(v.clone()),
                actual: a.map(|s| (*s).to_owned()),
            }),
        }
    }
    for (k, v) in actual {
        if !expected_map.contains_key(k.as_str()) {
            out.push(FieldDiff {
                field: k.clone(),
                expected: None,
                actual: Some(v.clone()),
            });
        }
    }
    out
}

/// Reports longer than this are cut in `Display` (the JSON form keeps everything).
const DISPLAY_VALUE_LIMIT: usize = 2_000;

fn clip(s: &str) -> String {
    if s.len() <= DISPLAY_VALUE_LIMIT {
        return s.to_owned();
    }
    let mut end = DISPLAY_VALUE_LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}

fn write_request(f: &mut fmt::Formatter<'_>, r: &RequestSummary) -> fmt::Result {
    write!(f, "    {} {}", r.method, r.path)?;
    if !r.query.is_empty() {
        let q: Vec<String> = r.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        write!(f, "?{}", q.join("&"))?;
    }
    writeln!(f)?;
    for (k, v) in &r.headers {
        writeln!(f, "    {k}: {v}")?;
    }
    if let Some(body) = &r.body {
        writeln!(f, "    body: {}", clip(&body.to_string()))?;
    }
    Ok(())
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            MissReason::NoMatch => writeln!(
                f,
                "no recorded interaction matches {} {} (cassette {}, mode {})",
                self.request.method, self.request.path, self.cassette, self.mode
            )?,
            MissReason::Exhausted { recorded } => writeln!(
                f,
                "all {recorded} recorded answers to {} {} were already played and on_exhausted is \"error\" (cassette {}, mode {})",
                self.request.method, self.request.path, self.cassette, self.mode
            )?,
        }
        writeln!(f, "  request:")?;
        write_request(f, &self.request)?;
        match &self.closest {
            None => writeln!(f, "  closest recorded interaction: none (the cassette is empty)")?,
            Some(c) => {
                writeln!(f, "  closest recorded interaction: #{}", c.index)?;
                write_request(f, &c.request)?;
            }
        }
        if !self.diffs.is_empty() {
            writeln!(f, "  differences (recorded -> requested):")?;
            for d in &self.diffs {
                let show = |v: &Option<String>| v.as_deref().map(clip).unwrap_or_else(|| "<absent>".into());
                writeln!(f, "    {}: {} -> {}", d.field, show(&d.expected), show(&d.actual))?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Miss {}

/// One recorded interaction no request used.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnusedInteraction {
    /// Position in the cassette's `interactions` array.
    pub index: usize,
    pub request: RequestSummary,
    /// The recorded answer's status.
    pub status: u16,
}

/// The interactions of a cassette that a replay with `allow_unused: false` left unused. `Display` is a report
/// (one line per interaction), `Serialize` the same as JSON; built from stored (redacted) requests only.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unused {
    pub cassette: String,
    /// Interactions the cassette holds.
    pub total: usize,
    pub interactions: Vec<UnusedInteraction>,
}

impl fmt::Display for Unused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} of {} recorded interactions of cassette {} were not used (allow_unused: false):",
            self.interactions.len(),
            self.total,
            self.cassette
        )?;
        for u in &self.interactions {
            let body = u.request.body.as_ref().map(compact).unwrap_or_default();
            writeln!(
                f,
                "  #{} {} {} {body} -> {}",
                u.index, u.request.method, u.request.path, u.status
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Unused {}

/// A body for a one-line report, cut at 120 characters.
fn compact(v: &serde_json::Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}
