//! `recorder har export` / `recorder har import`: cassettes as HAR 1.2 (what browsers' DevTools, mitmproxy, Polly.js
//! and WireMock read and write) and back.
//!
//! - **Export** writes one entry per interaction, in cassette order: the request as stored (placeholders, never a
//!   key), `postData.text` the canonical JSON body; the response with `content.text` the exact bytes a replay gives
//!   (binary bodies base64, `encoding: "base64"`). `startedDateTime` is `recordedAt`, `time` is `latencyMs`; the entry's
//!   `comment` (`recorder:recordedAt,latencyMs`) says which of the two the cassette really had, so that importing the
//!   file gives back the same cassette, byte for byte.
//! - **Import** turns every entry for the chosen hosts (default `api.chart-img.com`) into an interaction through the
//!   very transformation recording uses (`cassette::store_request`/`store_response` with the `Secrets` given): keys
//!   become placeholders, only the headers a recording keeps are kept, images become body files. Entries for other
//!   hosts, and entries without an answer (blocked, failed: status 0), are skipped and counted. A HAR from a browser
//!   gets `recordedAt` from `startedDateTime`.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use bytes::Bytes;
use har::v1_2;

use crate::cassette::{
    read_cassette, render_cassette, store_request, store_response, write_atomic, write_sidecar, StoredBody,
    StoredInteraction, CASSETTE_FILE,
};
use crate::error::Error;
use crate::model::{Request, Response, VcrConfig};
use crate::secrets::Secrets;

/// The base URL exported requests are addressed to, and the host imported by default.
pub const DEFAULT_BASE_URL: &str = "https://api.chart-img.com";

/// Marks an entry written by [`export`]; followed by the optional cassette fields it carries.
const MARKER: &str = "recorder:";
/// `startedDateTime` of an interaction without `recordedAt` (HAR requires one).
const NO_DATE: &str = "1970-01-01T00:00:00.000Z";
/// `postData.comment` of a request body that is base64 (HAR 1.2 has no `encoding` for request bodies).
const BASE64_POST: &str = "recorder:base64";

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    /// Interactions written.
    pub imported: usize,
    /// Entries skipped because their URL is on another host, by `host[:port]`.
    pub other_hosts: BTreeMap<String, usize>,
    /// Entries skipped because they have no answer (status 0: blocked, cancelled, failed).
    pub unanswered: usize,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "imported {} interaction(s)", self.imported)?;
        let other: usize = self.other_hosts.values().sum();
        if other > 0 {
            let hosts: Vec<String> = self.other_hosts.iter().map(|(h, n)| format!("{h}: {n}")).collect();
            write!(f, "; skipped {other} entr(ies) for other hosts ({})", hosts.join(", "))?;
        }
        if self.unanswered > 0 {
            write!(f, "; skipped {} entr(ies) without an answer", self.unanswered)?;
        }
        Ok(())
    }
}

fn format_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The cassette in `dir` as a HAR 1.2 document; requests are addressed to `base_url`.
pub fn export(dir: &Path, base_url: &str) -> Result<har::Har, Error> {
    let file = read_cassette(dir)?.ok_or_else(|| {
        Error::Usage(format!(
            "{} holds no cassette ({CASSETTE_FILE} is missing)",
            dir.display()
        ))
    })?;
    let base = base_url.trim_end_matches('/');
    let mut entries = Vec::with_capacity(file.interactions.len());
    for i in &file.interactions {
        entries.push(export_entry(dir, base, i)?);
    }
    Ok(har::Har {
        log: har::Spec::V1_2(v1_2::Log {
            creator: v1_2::Creator {
                name: "recorder".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                comment: Some(format!("cassette {}", dir.display())),
            },
            entries,
            ..Default::default()
        }),
    })
}

/// [`export`] as the text `recorder har export` writes: pretty JSON and a trailing newline.
pub fn export_json(dir: &Path, base_url: &str) -> Result<String, Error> {
    let har = export(dir, base_url)?;
    let mut text = har::to_json(&har).map_err(|e| format_error(dir, e.to_string()))?;
    text.push('\n');
    Ok(text)
}

fn headers_of(map: &BTreeMap<String, String>) -> Vec<v1_2::Headers> {
    map.iter()
        .map(|(name, value)| v1_2::Headers {
            name: name.clone(),
            value: value.clone(),
            comment: None,
        })
        .collect()
}

/// The bytes a stored body replays as.
fn body_of(dir: &Path, body: Option<&StoredBody>) -> Result<Bytes, Error> {
    crate::cassette::body_bytes(body, dir, &mut Default::default())
}

fn export_entry(dir: &Path, base: &str, i: &StoredInteraction) -> Result<v1_2::Entries, Error> {
    let req = &i.request;
    let mut url = format!("{base}{}", req.path);
    if !req.query.is_empty() {
        url.push('?');
        url.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .extend_pairs(req.query.iter())
                .finish(),
        );
    }
    let post_data = match &req.body {
        None => None,
        Some(b) => {
            let bytes = body_of(dir, Some(b))?;
            let mime_type = req.headers.get("content-type").cloned().unwrap_or_default();
            Some(match (b.file.is_some(), std::str::from_utf8(&bytes)) {
                (false, Ok(text)) => v1_2::PostData {
                    mime_type,
                    text: Some(text.to_owned()),
                    ..Default::default()
                },
                _ => v1_2::PostData {
                    mime_type,
                    text: Some(base64::engine::general_purpose::STANDARD.encode(&bytes)),
                    comment: Some(BASE64_POST.into()),
                    ..Default::default()
                },
            })
        }
    };
    let resp = &i.response;
    let bytes = body_of(dir, resp.body.as_ref())?;
    let binary = resp.body.as_ref().is_some_and(|b| b.file.is_some());
    let content = v1_2::Content {
        size: bytes.len() as i64,
        mime_type: Some(resp.headers.get("content-type").cloned().unwrap_or_default()),
        text: (!bytes.is_empty()).then(|| match (binary, std::str::from_utf8(&bytes)) {
            (false, Ok(t)) => t.to_owned(),
            _ => base64::engine::general_purpose::STANDARD.encode(&bytes),
        }),
        encoding: (binary && !bytes.is_empty()).then(|| "base64".to_owned()),
        ..Default::default()
    };
    let mut fields = Vec::new();
    if i.recorded_at.is_some() {
        fields.push("recordedAt");
    }
    if i.latency_ms.is_some() {
        fields.push("latencyMs");
    }
    let time = i.latency_ms.unwrap_or(0) as f64;
    Ok(v1_2::Entries {
        started_date_time: i.recorded_at.clone().unwrap_or_else(|| NO_DATE.to_owned()),
        time,
        request: v1_2::Request {
            method: req.method.clone(),
            url,
            http_version: "HTTP/1.1".into(),
            headers: headers_of(&req.headers),
            query_string: req
                .query
                .iter()
                .map(|(name, value)| v1_2::QueryString {
                    name: name.clone(),
                    value: value.clone(),
                    comment: None,
                })
                .collect(),
            body_size: post_data
                .as_ref()
                .map_or(0, |_| body_of(dir, req.body.as_ref()).map_or(0, |b| b.len() as i64)),
            post_data,
            headers_size: -1,
            ..Default::default()
        },
        response: v1_2::Response {
            status: i64::from(resp.status),
            status_text: http::StatusCode::from_u16(resp.status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("")
                .to_owned(),
            http_version: "HTTP/1.1".into(),
            headers: headers_of(&resp.headers),
            body_size: bytes.len() as i64,
            content,
            redirect_url: Some(String::new()),
            headers_size: -1,
            ..Default::default()
        },
        timings: v1_2::Timings {
            blocked: Some(-1.0),
            dns: Some(-1.0),
            connect: Some(-1.0),
            send: 0.0,
            wait: time,
            receive: 0.0,
            ssl: Some(-1.0),
            comment: None,
        },
        comment: Some(format!("{MARKER}{}", fields.join(","))),
        ..Default::default()
    })
}

/// `host[:port]` of a URL, the port only when the URL names one.
fn authority(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => String::new(),
    }
}

/// Reads a HAR file (1.2, or 1.3 which only adds fields) and writes its entries for `hosts` (`host[:port]`, e.g.
/// `api.chart-img.com` or `127.0.0.1:8089`) as a new cassette in `dir`, redacted with `secrets`. Refuses to
/// overwrite an existing cassette.
pub fn import(har_path: &Path, dir: &Path, hosts: &[String], secrets: &Secrets) -> Result<ImportReport, Error> {
    let bytes = std::fs::read(har_path).map_err(Error::io(har_path))?;
    // A HAR holds keys until it is redacted, and serde's messages may quote a value: only the kind of error and its
    // place are reported.
    let har = har::from_slice(&bytes).map_err(|e| {
        let place = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<serde_json::Error>())
            .map(|j| format!(": {:?} error at line {} column {}", j.classify(), j.line(), j.column()))
            .unwrap_or_default();
        format_error(har_path, format!("not a HAR 1.2 file ({e}{place})"))
    })?;
    let entries: Vec<v1_2::Entries> = match har.log {
        har::Spec::V1_2(log) => log.entries,
        // 1.3 entries are 1.2 entries plus optional fields; read them through their JSON.
        har::Spec::V1_3(log) => serde_json::to_value(log.entries)
            .and_then(serde_json::from_value)
            .map_err(|e| format_error(har_path, format!("HAR 1.3 entries: {e}")))?,
    };
    if read_cassette(dir)?.is_some() {
        return Err(Error::Usage(format!(
            "{} already holds a cassette; import into a new directory",
            dir.display()
        )));
    }
    let mut report = ImportReport::default();
    let mut interactions: Vec<(String, StoredInteraction)> = Vec::new();
    let mut sidecars = Vec::new();
    for (n, e) in entries.iter().enumerate() {
        let where_ = |m: &str| format_error(har_path, format!("entry {n}: {m}"));
        let url = url::Url::parse(&e.request.url).map_err(|err| where_(&format!("request.url: {err}")))?;
        let host = authority(&url);
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
            *report.other_hosts.entry(host).or_default() += 1;
            continue;
        }
        if e.response.status <= 0 {
            report.unanswered += 1;
            continue;
        }
        let status = u16::try_from(e.response.status).map_err(|_| where_("response.status is not an HTTP status"))?;
        let ours = e.comment.as_deref().and_then(|c| c.strip_prefix(MARKER));
        let request = Request {
            method: e.request.method.to_ascii_uppercase(),
            path: url.path().to_owned(),
            query: url.query_pairs().into_owned().collect(),
            headers: e
                .request
                .headers
                .iter()
                .filter(|h| !h.name.starts_with(':'))
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            body: match &e.request.post_data {
                None => Bytes::new(),
                Some(p) if p.comment.as_deref() == Some(BASE64_POST) => Bytes::from(
                    base64::engine::general_purpose::STANDARD
                        .decode(p.text.as_deref().unwrap_or_default())
                        .map_err(|err| where_(&format!("request.postData.text: {err}")))?,
                ),
                Some(p) => Bytes::from(p.text.clone().unwrap_or_default()),
            },
        };
        let c = &e.response.content;
        let body = match (&c.text, c.encoding.as_deref()) {
            (None, _) => Bytes::new(),
            (Some(t), Some("base64")) => Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(t)
                    .map_err(|err| where_(&format!("response.content.text: {err}")))?,
            ),
            (Some(t), _) => Bytes::from(t.clone()),
        };
        let mut headers: Vec<(String, String)> = e
            .response
            .headers
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
            if let Some(m) = c.mime_type.as_ref().filter(|m| !m.is_empty()) {
                headers.push(("content-type".into(), m.clone()));
            }
        }
        let response = Response { status, headers, body };
        // A recorder export holds only what a recording kept: keep all of it. Anything else is filtered exactly as a
        // recording filters it.
        let config = match ours {
            Some(_) => VcrConfig {
                match_headers: request.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect(),
                response_headers: response.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect(),
                ..VcrConfig::default()
            },
            None => VcrConfig::default(),
        };
        let (stored_req, req_sidecar) = store_request(&request, secrets, &config);
        let (stored_resp, resp_sidecar) = store_response(&response, secrets, &config);
        for (what, sc) in [("request", &req_sidecar), ("response", &resp_sidecar)] {
            if let Some(account) = sc.as_ref().and_then(|sc| secrets.find_in_bytes(&sc.bytes)) {
                return Err(Error::SecretInBinaryBody {
                    what,
                    account: account.to_owned(),
                });
            }
        }
        sidecars.extend(req_sidecar.into_iter().chain(resp_sidecar));
        let has = |f: &str| ours.is_some_and(|list| list.split(',').any(|x| x == f));
        let recorded_at = match ours {
            Some(_) => has("recordedAt").then(|| e.started_date_time.clone()),
            None => chrono::DateTime::parse_from_rfc3339(&e.started_date_time)
                .ok()
                .map(|d| d.to_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        };
        let interaction = StoredInteraction {
            request: stored_req,
            response: stored_resp,
            latency_ms: has("latencyMs").then_some(e.time.max(0.0).round() as u64),
            recorded_at,
        };
        interactions.push((interaction.request.sort_key(), interaction));
    }
    // Stable: repeated identical requests keep the HAR's order, which replay follows.
    interactions.sort_by(|a, b| a.0.cmp(&b.0));
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    for sc in &sidecars {
        write_sidecar(dir, sc)?;
    }
    write_atomic(
        &dir.join(CASSETTE_FILE),
        &render_cassette(interactions.iter().map(|(_, i)| i)),
    )?;
    report.imported = interactions.len();
    Ok(report)
}
