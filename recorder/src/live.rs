//! What `recorder record` and `recorder verify` share: finding cassettes, turning recorded requests back into live
//! ones (placeholders → the right account's key), and sending them at each account's plan rate.

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::accounts::Accounts;
use crate::cassette::{body_bytes, read_cassette, StoredInteraction, StoredRequest, BODIES_DIR, CASSETTE_FILE};
use crate::error::Error;
use crate::model::{Request, Response};
use crate::secrets::{fill_placeholders, placeholder_ids};
use chart_img_spec::Limit429;

/// A cassette as it is on disk now.
pub(crate) struct Loaded {
    pub dir: PathBuf,
    /// The exact bytes of `cassette.json`: a re-recording checks them again before it swaps the new one in.
    pub bytes: Vec<u8>,
    pub interactions: Vec<StoredInteraction>,
}

/// The cassette directories named by `paths`: a cassette directory, its `cassette.json`, or a folder holding
/// cassettes at any depth (hidden directories, such as a re-recording's partial state, are skipped).
pub(crate) fn find_cassettes(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(Error::io(path))?;
        if meta.is_file() {
            match (path.file_name(), path.parent()) {
                (Some(n), Some(parent)) if n == CASSETTE_FILE => {
                    out.push(if parent.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        parent.to_path_buf()
                    });
                    continue;
                }
                _ => {
                    return Err(Error::Usage(format!(
                        "{} is not a cassette: give a cassette directory (holding {CASSETTE_FILE}) or a folder of them",
                        path.display()
                    )))
                }
            }
        }
        if path.join(CASSETTE_FILE).is_file() {
            out.push(path.clone());
            continue;
        }
        let before = out.len();
        let walk = walkdir::WalkDir::new(path)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                e.depth() == 0 || !(e.file_name().to_string_lossy().starts_with('.') || e.file_name() == BODIES_DIR)
            });
        for entry in walk {
            let entry = entry.map_err(|e| Error::Io {
                path: e.path().map_or_else(|| path.clone(), Path::to_path_buf),
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("directory walk failed")),
            })?;
            if entry.file_type().is_dir() && entry.path().join(CASSETTE_FILE).is_file() {
                out.push(entry.path().to_path_buf());
            }
        }
        if out.len() == before {
            return Err(Error::Usage(format!(
                "{}: no cassette ({CASSETTE_FILE}) in it or below",
                path.display()
            )));
        }
    }
    Ok(out)
}

/// Reads a cassette; a directory without `cassette.json` is an error here (there is nothing to re-record or verify).
pub(crate) fn load(dir: &Path) -> Result<Loaded, Error> {
    let path = dir.join(CASSETTE_FILE);
    let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
    let file = read_cassette(dir)?.ok_or_else(|| Error::Io {
        path: path.clone(),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    Ok(Loaded {
        dir: dir.to_path_buf(),
        bytes,
        interactions: file.interactions,
    })
}

/// The account a recorded request was sent with: the first placeholder in its headers, then its query, path and
/// body. `None`: the request carried no key.
pub(crate) fn account_of(req: &StoredRequest) -> Option<String> {
    let headers = req.headers.values().map(String::as_str);
    let query = req.query.iter().map(|(_, v)| v.as_str());
    let body = req
        .body
        .as_ref()
        .and_then(|b| b.json.as_ref().map(|j| j.to_string()).or(b.text.clone()));
    headers
        .chain(query)
        .chain(std::iter::once(req.path.as_str()))
        .chain(body.as_deref())
        .find_map(|t| placeholder_ids(t).first().map(|s| (*s).to_owned()))
}

/// Every account id the requests name, with how many requests name it.
pub(crate) fn accounts_named<'a>(requests: impl Iterator<Item = &'a StoredRequest>) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for req in requests {
        let text = serde_json::to_string(req).expect("stored requests serialize");
        let ids: HashSet<&str> = placeholder_ids(&text).into_iter().collect();
        for id in ids {
            match counts.iter_mut().find(|(i, _)| i == id) {
                Some((_, n)) => *n += 1,
                None => counts.push((id.to_owned(), 1)),
            }
        }
    }
    counts.sort();
    counts
}

/// Fails with [`Error::MissingKey`] before anything is sent when a request names an account without a key.
pub(crate) fn check_keys<'a>(
    requests: impl Iterator<Item = &'a StoredRequest>,
    accounts: &Accounts,
) -> Result<(), Error> {
    for (id, n) in accounts_named(requests) {
        if accounts.resolve(&id).is_none() {
            return Err(Error::MissingKey {
                account: id,
                requests: n,
            });
        }
    }
    Ok(())
}

/// The request to send again: the recorded one with every placeholder replaced by its account's key, and the
/// body as recorded (canonical JSON: same keys and values, keys sorted).
pub(crate) fn live_request(
    stored: &StoredRequest,
    dir: &Path,
    accounts: &Accounts,
    cache: &mut HashMap<String, Bytes>,
) -> Result<Request, Error> {
    let key_for = |id: &str| accounts.resolve(id).map(|a| a.key());
    let fill = |t: &str| fill_placeholders(t, &key_for).map_err(|account| Error::MissingKey { account, requests: 1 });
    let mut headers = Vec::new();
    for (k, v) in &stored.headers {
        headers.push((k.clone(), fill(v)?));
    }
    let mut query = Vec::new();
    for (k, v) in &stored.query {
        query.push((k.clone(), fill(v)?));
    }
    let body = match &stored.body {
        Some(b) if b.json.is_some() => {
            let mut json = b.json.clone().expect("checked");
            fill_json(&mut json, &fill)?;
            Bytes::from(serde_json::to_vec(&json).expect("JSON values serialize"))
        }
        Some(b) if b.text.is_some() => Bytes::from(fill(b.text.as_deref().expect("checked"))?),
        other => body_bytes(other.as_ref(), dir, cache)?,
    };
    Ok(Request {
        method: stored.method.clone(),
        path: fill(&stored.path)?,
        query,
        headers,
        body,
    })
}

fn fill_json(value: &mut serde_json::Value, fill: &dyn Fn(&str) -> Result<String, Error>) -> Result<(), Error> {
    match value {
        serde_json::Value::String(s) => *s = fill(s)?,
        serde_json::Value::Array(items) => {
            for v in items {
                fill_json(v, fill)?;
            }
        }
        serde_json::Value::Object(map) => {
            for v in map.values_mut() {
                fill_json(v, fill)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `base` + path + the query, encoded as browsers and reqwest do.
pub(crate) fn url(base: &str, req: &Request) -> String {
    let mut url = format!("{}{}", base.trim_end_matches('/'), req.path);
    if !req.query.is_empty() {
        let q = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(req.query.iter())
            .finish();
        url.push('?');
        url.push_str(&q);
    }
    url
}

pub(crate) use chart_img_spec::message_of as error_message;

/// Whether an answer is the daily quota's 429 (the other 429 is the per-second throttle).
pub(crate) fn is_limit_exceeded(resp: &Response) -> bool {
    resp.status == 429 && Limit429::of(&resp.body) == Limit429::DailyQuota
}

/// Whether an answer is the per-second throttle's 429 (`Too Many Requests`), not the daily quota's.
pub(crate) fn is_throttled(resp: &Response) -> bool {
    resp.status == 429 && !is_limit_exceeded(resp)
}

/// How often a throttled call is sent again before its 429 is the answer.
const THROTTLE_RETRIES: u32 = 3;

/// `retry-after` seconds when the answer has them (at most 10), else 1 s, 2 s, 4 s.
fn throttle_wait(resp: &Response, attempt: u32) -> Duration {
    resp.header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(10)))
        .unwrap_or_else(|| Duration::from_secs(1 << (attempt - 1).min(3)))
}

/// One request to send.
pub(crate) struct Job {
    /// The caller's handle for it (the position in its list).
    pub id: usize,
    pub account: Option<String>,
    pub url: String,
    pub request: Request,
}

/// What became of a job.
pub(crate) enum Sent {
    Answered(Response),
    /// The call failed (connection, timeout); the message is redacted.
    Failed(String),
    /// Not sent: its account had answered `Limit Exceeded` already.
    Skipped(String),
}

/// Sends jobs with at most `concurrency` in flight, each account at its plan's rate and burst; a `Too Many
/// Requests` is sent again (up to 3 times, after `retry-after` or 1, 2, 4 s); after an account answers `Limit
/// Exceeded`, its remaining jobs are not sent (they would fail the same way).
pub(crate) struct Runner {
    pub client: reqwest::Client,
    pub concurrency: usize,
    limiters: HashMap<String, Arc<DefaultDirectRateLimiter>>,
    redact: Arc<dyn Fn(&str) -> String + Send + Sync>,
}

impl Runner {
    pub fn new(accounts: &Accounts, concurrency: usize, timeout: Duration) -> Runner {
        let limiters = accounts
            .accounts
            .iter()
            .map(|a| {
                let limits = a.plan.limits();
                let period = Duration::from_secs_f64(1.0 / limits.rate_per_sec.max(0.001));
                let quota = Quota::with_period(period)
                    .expect("the period is positive")
                    .allow_burst(NonZeroU32::new(limits.burst.max(1)).expect("at least 1"));
                (a.id.clone(), Arc::new(RateLimiter::direct(quota)))
            })
            .collect();
        let secrets = accounts.secrets();
        Runner {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(timeout)
                .build()
                .expect("a client without custom TLS settings always builds"),
            concurrency: concurrency.max(1),
            limiters,
            redact: Arc::new(move |t| secrets.redact(t).into_owned()),
        }
    }

    /// Runs every job; `on_done` sees each outcome as it arrives (progress, partial state).
    pub async fn run(&self, jobs: Vec<Job>, mut on_done: impl FnMut(usize, &Sent)) {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(self.concurrency));
        let exhausted: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut set = tokio::task::JoinSet::new();
        for job in jobs {
            let semaphore = Arc::clone(&semaphore);
            let exhausted = Arc::clone(&exhausted);
            let limiter = job.account.as_ref().and_then(|a| self.limiters.get(a)).cloned();
            let client = self.client.clone();
            let redact = Arc::clone(&self.redact);
            set.spawn(async move {
                let _permit = semaphore.acquire_owned().await.expect("never closed");
                let is_exhausted = |a: &Option<String>| {
                    a.as_ref()
                        .is_some_and(|a| exhausted.lock().unwrap_or_else(PoisonError::into_inner).contains(a))
                };
                let skipped = || {
                    Sent::Skipped(format!(
                        "not sent: account {} answered Limit Exceeded",
                        job.account.as_deref().unwrap_or("?")
                    ))
                };
                if is_exhausted(&job.account) {
                    return (job.id, skipped());
                }
                let mut attempt = 0;
                let sent = loop {
                    if let Some(l) = &limiter {
                        l.until_ready().await;
                    }
                    if is_exhausted(&job.account) {
                        return (job.id, skipped());
                    }
                    let request = job.request.clone();
                    match crate::proxy::send(&client, job.url.clone(), request, &*redact).await {
                        Ok(resp) if is_throttled(&resp) && attempt < THROTTLE_RETRIES => {
                            // The per-second throttle (another client, or a run just before this one, spent the
                            // burst): transient by definition, so wait and send again rather than report it.
                            attempt += 1;
                            tokio::time::sleep(throttle_wait(&resp, attempt)).await;
                        }
                        Ok(resp) => {
                            if let (true, Some(a)) = (is_limit_exceeded(&resp), &job.account) {
                                exhausted
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                                    .insert(a.clone());
                            }
                            break Sent::Answered(resp);
                        }
                        Err(message) => break Sent::Failed(message),
                    }
                };
                (job.id, sent)
            });
        }
        while let Some(done) = set.join_next().await {
            match done {
                Ok((id, sent)) => on_done(id, &sent),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
    }
}

/// A progress bar on stderr when it is a terminal; hidden otherwise (callers then print a line per call).
pub(crate) fn progress_bar(len: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} calls  eta {eta}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(status: u16, body: &str) -> Response {
        Response::new(status)
            .with_header("content-type", "application/json")
            .with_body(body.to_owned())
    }

    #[test]
    fn the_two_429s_are_told_apart_by_their_message() {
        let quota = json(429, r#"{"message":"Limit Exceeded"}"#);
        let throttle = json(429, r#"{"message":"Too Many Requests"}"#);
        assert!(is_limit_exceeded(&quota) && !is_throttled(&quota));
        assert!(is_throttled(&throttle) && !is_limit_exceeded(&throttle));
        assert!(!is_throttled(&json(500, r#"{"message":"Something Went Wrong"}"#)));
    }

    #[test]
    fn throttle_waits_follow_retry_after_or_double() {
        let plain = json(429, r#"{"message":"Too Many Requests"}"#);
        let waits: Vec<u64> = (1..=3).map(|a| throttle_wait(&plain, a).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4]);
        let told = plain.clone().with_header("retry-after", "3");
        assert_eq!(throttle_wait(&told, 1), Duration::from_secs(3));
        let long = plain.with_header("retry-after", "600");
        assert_eq!(throttle_wait(&long, 1), Duration::from_secs(10));
    }

    #[test]
    fn urls_carry_the_query_encoded() {
        let req = Request::new("GET", "/v3/tradingview/exchange/BINANCE")
            .with_query("symbol", "BTC USDT")
            .with_query("type", "spot");
        assert_eq!(
            url("http://127.0.0.1:1/", &req),
            "http://127.0.0.1:1/v3/tradingview/exchange/BINANCE?symbol=BTC+USDT&type=spot"
        );
    }
}
