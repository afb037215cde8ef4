//! `recorder verify`: sends a cassette's requests to a live endpoint and reports, per interaction, what no longer
//! matches the recording: status, content type, image format and dimensions (read from the PNG/JPEG header —
//! image bytes are never compared, a live chart never has the recorded pixels), body shape, and the error message.
//! Nothing is written; every interaction costs one call on its account (at the plan's rate).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::accounts::KeySource;
use crate::cassette::{body_bytes, StoredInteraction};
use crate::error::Error;
use crate::inspect::{print_columns, request_summary};
use crate::live::{self, error_message, progress_bar, Job, Runner, Sent};
use crate::model::Response;
use crate::record::load_accounts;

/// What `recorder verify` was asked to do.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub paths: Vec<PathBuf>,
    pub upstream: String,
    pub keys: KeySource,
    pub concurrency: usize,
    pub timeout: Duration,
}

/// One compared property that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// `status`, `content-type`, `image format`, `image size`, `body shape`, `error message` or `call`.
    pub field: String,
    pub recorded: Option<String>,
    pub live: Option<String>,
}

/// One interaction's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct InteractionReport {
    pub index: usize,
    pub request: String,
    pub account: Option<String>,
    pub drift: Vec<Drift>,
}

/// One cassette's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct CassetteReport {
    pub cassette: PathBuf,
    pub interactions: Vec<InteractionReport>,
    pub drifted: usize,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Redacted.
    pub upstream: String,
    pub cassettes: Vec<CassetteReport>,
    pub drifted: usize,
}

/// The properties compared, in report order.
fn features(resp: &Response) -> Vec<(&'static str, Option<String>)> {
    let content_type = resp
        .header("content-type")
        .map(|ct| ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    let is_image =
        content_type.as_deref().is_some_and(|c| c.starts_with("image/")) || imagesize::image_type(&resp.body).is_ok();
    let (format, size) = if is_image {
        match (imagesize::image_type(&resp.body), imagesize::blob_size(&resp.body)) {
            (Ok(t), Ok(s)) => (
                Some(format!("{t:?}").to_ascii_lowercase()),
                Some(format!("{}x{}", s.width, s.height)),
            ),
            _ => (Some("undecodable".to_owned()), None),
        }
    } else {
        (None, None)
    };
    let shape = (!is_image).then(|| body_shape(&resp.body));
    let message = (resp.status >= 400).then(|| {
        error_message(&resp.body).unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&resp.body);
            text.trim().chars().take(120).collect()
        })
    });
    vec![
        ("status", Some(resp.status.to_string())),
        ("content-type", content_type),
        ("image format", format),
        ("image size", size),
        ("body shape", shape),
        ("error message", message),
    ]
}

/// `{etag,expire,url}`, `[{location,msg,param,value}]`, `text`, `empty`, `binary`: what a body is, not its values.
fn body_shape(body: &[u8]) -> String {
    fn shape(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
                keys.sort_unstable();
                format!("{{{}}}", keys.join(","))
            }
            serde_json::Value::Array(items) => match items.first() {
                Some(first) => format!("[{}]", shape(first)),
                None => "[]".into(),
            },
            serde_json::Value::String(_) => "string".into(),
            serde_json::Value::Number(_) => "number".into(),
            serde_json::Value::Bool(_) => "boolean".into(),
            serde_json::Value::Null => "null".into(),
        }
    }
    if body.is_empty() {
        return "empty".into();
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => shape(&v),
        Err(_) if std::str::from_utf8(body).is_ok() => "text".into(),
        Err(_) => "binary".into(),
    }
}

/// What differs between the recorded answer and the live one.
pub(crate) fn compare(recorded: &Response, live: &Response) -> Vec<Drift> {
    features(recorded)
        .into_iter()
        .zip(features(live))
        .filter(|((_, r), (_, l))| r != l)
        .map(|((field, r), (_, l))| Drift {
            field: field.to_owned(),
            recorded: r,
            live: l,
        })
        .collect()
}

fn recorded_response(
    i: &StoredInteraction,
    dir: &std::path::Path,
    cache: &mut HashMap<String, bytes::Bytes>,
) -> Result<Response, Error> {
    Ok(Response {
        status: i.response.status,
        headers: i.response.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        body: body_bytes(i.response.body.as_ref(), dir, cache)?,
    })
}

/// Runs `recorder verify` and returns the report (print it with [`print_report`] or as JSON).
pub async fn verify(opts: &VerifyOptions) -> Result<VerifyReport, Error> {
    let dirs = live::find_cassettes(&opts.paths)?;
    let loaded: Vec<live::Loaded> = dirs.iter().map(|d| live::load(d)).collect::<Result<_, _>>()?;
    let accounts = load_accounts(&opts.keys, &loaded)?;
    let secrets = accounts.secrets();

    let mut jobs = Vec::new();
    let mut ids = Vec::new();
    let mut recorded = Vec::new();
    let mut reports: Vec<CassetteReport> = Vec::new();
    for (c, l) in loaded.iter().enumerate() {
        let mut cache = HashMap::new();
        let mut interactions = Vec::new();
        for (i, interaction) in l.interactions.iter().enumerate() {
            let req = live::live_request(&interaction.request, &l.dir, &accounts, &mut cache)?;
            let account =
                live::account_of(&interaction.request).and_then(|id| accounts.resolve(&id).map(|a| a.id.clone()));
            recorded.push(recorded_response(interaction, &l.dir, &mut cache)?);
            jobs.push(Job {
                id: ids.len(),
                account: account.clone(),
                url: live::url(&opts.upstream, &req),
                request: req,
            });
            ids.push((c, i));
            interactions.push(InteractionReport {
                index: i,
                request: request_summary(&interaction.request),
                account,
                drift: Vec::new(),
            });
        }
        reports.push(CassetteReport {
            cassette: l.dir.clone(),
            interactions,
            drifted: 0,
        });
    }
    eprintln!(
        "recorder verify: {} call(s) to {} (keys from {})",
        jobs.len(),
        secrets.redact(&opts.upstream),
        accounts.source
    );
    let runner = Runner::new(&accounts, opts.concurrency, opts.timeout);
    let progress = progress_bar(jobs.len() as u64);
    runner
        .run(jobs, |id, sent| {
            progress.inc(1);
            let (c, i) = ids[id];
            let drift = match sent {
                Sent::Answered(live) => compare(&recorded[id], live),
                Sent::Failed(m) | Sent::Skipped(m) => vec![Drift {
                    field: "call".into(),
                    recorded: Some("answered".into()),
                    live: Some(m.clone()),
                }],
            };
            reports[c].interactions[i].drift = drift;
        })
        .await;
    progress.finish_and_clear();
    for r in &mut reports {
        r.drifted = r.interactions.iter().filter(|i| !i.drift.is_empty()).count();
    }
    Ok(VerifyReport {
        upstream: secrets.redact(&opts.upstream).into_owned(),
        drifted: reports.iter().map(|r| r.drifted).sum(),
        cassettes: reports,
    })
}

/// The human form: one line per cassette, then a row per drifted property.
pub fn print_report(report: &VerifyReport, out: &mut dyn Write) -> std::io::Result<()> {
    for c in &report.cassettes {
        writeln!(
            out,
            "{} against {}: {} of {} interactions drifted",
            c.cassette.display(),
            report.upstream,
            c.drifted,
            c.interactions.len()
        )?;
        let rows: Vec<[String; 5]> = c
            .interactions
            .iter()
            .flat_map(|i| {
                i.drift.iter().enumerate().map(move |(n, d)| {
                    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                    [
                        if n == 0 { format!("#{}", i.index) } else { String::new() },
                        if n == 0 { i.request.clone() } else { String::new() },
                        d.field.clone(),
                        show(&d.recorded),
                        show(&d.live),
                    ]
                })
            })
            .collect();
        if !rows.is_empty() {
            let header = ["#", "request", "field", "recorded", "live"].map(str::to_owned);
            print_columns(&header, &rows, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Grayscale);
        let mut writer = enc.write_header().unwrap();
        writer.write_image_data(&vec![0u8; (w * h) as usize]).unwrap();
        drop(writer);
        out
    }

    #[test]
    fn images_compare_by_format_and_size_never_by_bytes() {
        let a = Response::new(200)
            .with_header("content-type", "image/png")
            .with_body(png(8, 6));
        let mut other_pixels = png(8, 6);
        let n = other_pixels.len();
        other_pixels[n - 20] ^= 0xff;
        let b = Response::new(200)
            .with_header("content-type", "image/png")
            .with_body(other_pixels);
        assert_eq!(compare(&a, &b), vec![]);
        let c = Response::new(200)
            .with_header("content-type", "image/png")
            .with_body(png(10, 6));
        assert_eq!(
            compare(&a, &c),
            vec![Drift {
                field: "image size".into(),
                recorded: Some("8x6".into()),
                live: Some("10x6".into()),
            }]
        );
    }

    #[test]
    fn error_bodies_compare_by_shape_and_message() {
        let err = |body: &str| {
            Response::new(422)
                .with_header("content-type", "application/json")
                .with_body(body.to_owned())
        };
        let a = err(r#"[{"value":"4H","msg":"must be a supported interval","param":"interval","location":"body"}]"#);
        let b = err(r#"{"message":"Invalid Interval"}"#);
        let fields: Vec<String> = compare(&a, &b).into_iter().map(|d| d.field).collect();
        assert_eq!(fields, vec!["body shape", "error message"]);
        assert_eq!(compare(&b, &err(r#"{"message": "Invalid Interval"}"#)), vec![]);
    }
}
