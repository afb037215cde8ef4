//! `recorder record`: re-records cassettes from a live endpoint, from the requests they already hold.
//!
//! - **Dry run first.** Without `yes` nothing is sent: the requests, the calls per account and the quota they
//!   spend against what is left today (known only from `used_today`; the API has no usage endpoint).
//! - **Plan rate.** Calls keep to each account's plan rate and burst (`live::Runner`).
//! - **Resume.** Every interaction recorded as intended is kept at once in a partial state next to the cassette
//!   (`<parent>/.<name>.record-partial/`: `state.json` + `bodies/`); a rerun skips those. The state names the
//!   SHA-256 of the `cassette.json` it re-records and the upstream, and is dropped when either differs.
//! - **All or nothing.** The new cassette is swapped in (under the cassette's lock: body files first, then
//!   `cassette.json` atomically, then body files nothing names any more) only when every interaction was
//!   recorded as intended. A 429 or a 5xx (unless the old interaction recorded that very status) or a failed call
//!   leaves the old cassette untouched and is listed.
//! - **Same traffic, same bytes.** An interaction whose new request and response equal the old ones is kept as it
//!   was, `recordedAt` included; a changed one gets the time it was recorded. So re-recording identical traffic
//!   leaves `git diff` empty, and `recordedAt` is the age of the answer as it is now.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use fs4::FileExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::accounts::{Accounts, KeySource};
use crate::cassette::{
    render_cassette, store_request, store_response, write_atomic, write_sidecar, Sidecar, StoredBody,
    StoredInteraction, BODIES_DIR, CASSETTE_FILE, LOCK_FILE,
};
use crate::error::Error;
use crate::inspect::request_summary;
use crate::live::{self, error_message, progress_bar, Job, Loaded, Runner, Sent};
use crate::model::{Request, VcrConfig};
use crate::secrets::Secrets;

const STATE_FILE: &str = "state.json";

/// What `recorder record` was asked to do.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// Cassette directories, their `cassette.json`, or folders of cassettes.
    pub paths: Vec<PathBuf>,
    /// Base URL of the live endpoint, e.g. `https://api.chart-img.com`.
    pub upstream: String,
    pub keys: KeySource,
    /// Spend the calls; without it, only the dry run is printed.
    pub yes: bool,
    /// Calls each account already spent today (UTC), as the user knows it.
    pub used_today: BTreeMap<String, u32>,
    /// Calls in flight at once (the plan's rate applies on top).
    pub concurrency: usize,
    /// Per call.
    pub timeout: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOutcome {
    /// Nothing was sent.
    DryRun,
    /// Every cassette was re-recorded (or was already identical).
    Recorded,
    /// At least one interaction failed: those cassettes were left untouched; the rest is kept for a rerun.
    Failed,
}

/// The partial state of an interrupted or failed re-recording.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Partial {
    /// SHA-256 of the `cassette.json` being re-recorded.
    source_sha256: String,
    /// The upstream it was recorded from (redacted).
    upstream: String,
    /// Interactions recorded as intended, by their position in the old cassette.
    done: BTreeMap<usize, StoredInteraction>,
}

/// One cassette being re-recorded.
struct Work {
    loaded: Loaded,
    partial_dir: PathBuf,
    partial: Partial,
    /// How many interactions of `partial` an earlier run recorded.
    resumed: usize,
    /// Positions still to record, their account and live request.
    pending: Vec<(usize, Option<String>, Request)>,
    failures: Vec<(usize, String)>,
}

/// `<parent>/.<name>.record-partial`.
fn partial_dir_for(dir: &Path) -> Result<PathBuf, Error> {
    let abs = std::fs::canonicalize(dir).map_err(Error::io(dir))?;
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cassette".into());
    let parent = abs.parent().unwrap_or(Path::new("/"));
    Ok(parent.join(format!(".{name}.record-partial")))
}

/// The account id a bare key stands for when the user named none: the one account the cassettes name, else `acc-1`.
pub(crate) fn default_account(named: &[(String, usize)]) -> String {
    let real: Vec<&String> = named.iter().map(|(id, _)| id).filter(|id| *id != "unknown").collect();
    match real.as_slice() {
        [one] => (*one).clone(),
        _ => "acc-1".into(),
    }
}

/// Loads the keys for these cassettes (a bare key gets the account the cassettes name).
pub(crate) fn load_accounts(keys: &KeySource, loaded: &[Loaded]) -> Result<Accounts, Error> {
    let mut keys = keys.clone();
    if keys.account.is_empty() {
        let named = live::accounts_named(loaded.iter().flat_map(|l| l.interactions.iter().map(|i| &i.request)));
        keys.account = default_account(&named);
    }
    let accounts = Accounts::load(&keys)?;
    live::check_keys(
        loaded.iter().flat_map(|l| l.interactions.iter().map(|i| &i.request)),
        &accounts,
    )?;
    Ok(accounts)
}

/// Runs `recorder record`; the report goes to `out`, progress to stderr.
pub async fn record(opts: &RecordOptions, out: &mut dyn Write) -> Result<RecordOutcome, Error> {
    let dirs = live::find_cassettes(&opts.paths)?;
    let loaded: Vec<Loaded> = dirs.iter().map(|d| live::load(d)).collect::<Result<_, _>>()?;
    let accounts = load_accounts(&opts.keys, &loaded)?;
    let secrets = accounts.secrets();
    let upstream = secrets.redact(&opts.upstream).into_owned();
    let config = VcrConfig::default();

    let mut works = Vec::new();
    for l in loaded {
        let partial_dir = partial_dir_for(&l.dir)?;
        let source_sha256 = hex::encode(Sha256::digest(&l.bytes));
        let mut partial = read_partial(&partial_dir)?.unwrap_or_default();
        if partial.source_sha256 != source_sha256 || partial.upstream != upstream {
            partial = Partial {
                source_sha256,
                upstream: upstream.clone(),
                done: BTreeMap::new(),
            };
        }
        partial.done.retain(|&i, _| i < l.interactions.len());
        let mut cache = HashMap::new();
        let mut pending = Vec::new();
        for (i, interaction) in l.interactions.iter().enumerate() {
            if partial.done.contains_key(&i) {
                continue;
            }
            let req = live::live_request(&interaction.request, &l.dir, &accounts, &mut cache)?;
            let account =
                live::account_of(&interaction.request).and_then(|id| accounts.resolve(&id).map(|a| a.id.clone()));
            pending.push((i, account, req));
        }
        works.push(Work {
            resumed: partial.done.len(),
            loaded: l,
            partial_dir,
            partial,
            pending,
            failures: Vec::new(),
        });
    }

    print_plan(opts, &accounts, &works, &upstream, out).map_err(stdout_error)?;
    if !opts.yes {
        writeln!(out, "dry run: nothing was sent; add --yes to spend these calls").map_err(stdout_error)?;
        return Ok(RecordOutcome::DryRun);
    }
    check_quota(opts, &accounts, &works)?;

    // One runner for every cassette: the plan's rate is per account, whatever cassette a call is for.
    let mut jobs = Vec::new();
    let mut ids: Vec<(usize, usize)> = Vec::new();
    let mut sent_requests: Vec<Request> = Vec::new();
    for (w, work) in works.iter().enumerate() {
        for (i, account, req) in &work.pending {
            jobs.push(Job {
                id: ids.len(),
                account: account.clone(),
                url: live::url(&opts.upstream, req),
                request: req.clone(),
            });
            ids.push((w, *i));
            sent_requests.push(req.clone());
        }
    }
    let progress = progress_bar(jobs.len() as u64);
    let runner = Runner::new(&accounts, opts.concurrency, opts.timeout);
    runner
        .run(jobs, |id, sent| {
            let (w, i) = ids[id];
            let work = &mut works[w];
            let answer = match sent {
                Sent::Answered(r) => format!(
                    " ({} {}, {} bytes)",
                    r.status,
                    r.header("content-type").unwrap_or("no content type"),
                    r.body.len()
                ),
                _ => String::new(),
            };
            let line = match keep(work, i, &sent_requests[id], sent, &secrets, &config) {
                Ok(None) => format!("#{i} recorded{answer}"),
                Ok(Some(reason)) => {
                    let line = format!("#{i} FAILED: {reason}");
                    work.failures.push((i, reason));
                    line
                }
                Err(e) => {
                    let reason = format!("could not keep it: {e}");
                    let line = format!("#{i} FAILED: {reason}");
                    work.failures.push((i, reason));
                    line
                }
            };
            let line = format!("{}: {line}", work.loaded.dir.display());
            if progress.is_hidden() {
                eprintln!("{line}");
            } else {
                progress.println(line);
            }
            progress.inc(1);
        })
        .await;
    progress.finish_and_clear();

    let mut outcome = RecordOutcome::Recorded;
    for work in &mut works {
        let dir = work.loaded.dir.display().to_string();
        if work.loaded.interactions.is_empty() {
            writeln!(out, "{dir}: no interactions, nothing to record").map_err(stdout_error)?;
            continue;
        }
        if !work.failures.is_empty() {
            outcome = RecordOutcome::Failed;
            work.failures.sort();
            writeln!(
                out,
                "{dir}: {} of {} interactions were not recorded as intended; the cassette is untouched. \
                 {} recorded interaction(s) are kept in {}: rerun the same command to record only the rest.",
                work.failures.len(),
                work.loaded.interactions.len(),
                work.partial.done.len(),
                work.partial_dir.display()
            )
            .map_err(stdout_error)?;
            for (i, reason) in &work.failures {
                let summary = request_summary(&work.loaded.interactions[*i].request);
                writeln!(out, "  #{i} {summary} -> {reason}").map_err(stdout_error)?;
            }
            continue;
        }
        match swap_in(work) {
            Ok((changed, total)) => {
                let what = if changed == 0 {
                    "identical to the recorded traffic: cassette.json unchanged".to_owned()
                } else {
                    format!("{changed} of {total} interactions changed; cassette.json replaced")
                };
                let resumed = if work.resumed > 0 {
                    format!(" ({} from an earlier run)", work.resumed)
                } else {
                    String::new()
                };
                writeln!(out, "{dir}: recorded {total} interactions{resumed}; {what}").map_err(stdout_error)?;
            }
            Err(e) => {
                outcome = RecordOutcome::Failed;
                writeln!(out, "{dir}: not swapped in: {e}; the cassette is untouched").map_err(stdout_error)?;
            }
        }
    }
    Ok(outcome)
}

fn stdout_error(e: std::io::Error) -> Error {
    Error::Io {
        path: PathBuf::from("<stdout>"),
        source: e,
    }
}

/// Stores an answer in the partial state when it is what was intended; else the reason it is not.
fn keep(
    work: &mut Work,
    index: usize,
    request: &Request,
    sent: &Sent,
    secrets: &Secrets,
    config: &VcrConfig,
) -> Result<Option<String>, Error> {
    let resp = match sent {
        Sent::Answered(resp) => resp,
        Sent::Failed(message) | Sent::Skipped(message) => return Ok(Some(message.clone())),
    };
    let old = &work.loaded.interactions[index];
    let transient = resp.status == 429 || resp.status >= 500;
    if transient && resp.status != old.response.status {
        let message = error_message(&resp.body)
            .map(|m| format!(" {}", secrets.redact(&m)))
            .unwrap_or_default();
        return Ok(Some(format!("{}{message}", resp.status)));
    }
    let (stored_request, req_sidecar) = store_request(request, secrets, config);
    let (stored_response, resp_sidecar) = store_response(resp, secrets, config);
    for (what, sidecar) in [("request", &req_sidecar), ("response", &resp_sidecar)] {
        if let Some(account) = sidecar.as_ref().and_then(|s| secrets.find_in_bytes(&s.bytes)) {
            return Err(Error::SecretInBinaryBody {
                what,
                account: account.to_owned(),
            });
        }
    }
    for sc in [&req_sidecar, &resp_sidecar].into_iter().flatten() {
        write_sidecar(&work.partial_dir, sc)?;
    }
    let interaction = StoredInteraction {
        request: stored_request,
        response: stored_response,
        latency_ms: None,
        recorded_at: Some(now()),
    };
    work.partial.done.insert(index, interaction);
    write_partial(&work.partial_dir, &work.partial)?;
    Ok(None)
}

pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn read_partial(dir: &Path) -> Result<Option<Partial>, Error> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { path, source: e }),
    }
}

fn write_partial(dir: &Path, partial: &Partial) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let mut bytes = serde_json::to_vec_pretty(partial).expect("the partial state serializes");
    bytes.push(b'\n');
    write_atomic(&dir.join(STATE_FILE), &bytes)
}

/// The body file a stored body names, if any.
fn body_file(body: &Option<StoredBody>) -> Option<&str> {
    body.as_ref().and_then(|b| b.file.as_deref())
}

/// Replaces the cassette with the re-recorded interactions, under its lock; returns (changed, total).
fn swap_in(work: &Work) -> Result<(usize, usize), Error> {
    let dir = &work.loaded.dir;
    let mut changed = 0;
    let mut interactions: Vec<(String, StoredInteraction)> = Vec::new();
    for (i, old) in work.loaded.interactions.iter().enumerate() {
        let new = work
            .partial
            .done
            .get(&i)
            .ok_or_else(|| Error::Usage(format!("interaction #{i} is missing from the partial state")))?;
        let same = old.request == new.request && old.response == new.response;
        let kept = if same && old.recorded_at.is_some() {
            old.clone()
        } else {
            changed += 1;
            new.clone()
        };
        interactions.push((kept.request.sort_key(), kept));
    }
    // Stable: identical requests keep their recorded order, which replay depends on.
    interactions.sort_by(|a, b| a.0.cmp(&b.0));
    let bytes = render_cassette(interactions.iter().map(|(_, i)| i));

    let lock_path = dir.join(LOCK_FILE);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(Error::io(&lock_path))?;
    FileExt::lock(&lock).map_err(Error::io(&lock_path))?;
    let result = (|| {
        let path = dir.join(CASSETTE_FILE);
        let current = std::fs::read(&path).map_err(Error::io(&path))?;
        if current != work.loaded.bytes {
            return Err(Error::Usage(format!(
                "{} changed while it was being re-recorded; rerun to record it again",
                path.display()
            )));
        }
        // Body files first, so that cassette.json never names a missing one.
        let mut referenced: Vec<&str> = Vec::new();
        for (_, i) in &interactions {
            for rel in [body_file(&i.request.body), body_file(&i.response.body)]
                .into_iter()
                .flatten()
            {
                referenced.push(rel);
                if !dir.join(rel).exists() {
                    let staged = work.partial_dir.join(rel);
                    let bytes = std::fs::read(&staged).map_err(Error::io(&staged))?;
                    write_sidecar(
                        dir,
                        &Sidecar {
                            rel_path: rel.to_owned(),
                            bytes: Bytes::from(bytes),
                        },
                    )?;
                }
            }
        }
        if current != bytes {
            write_atomic(&path, &bytes)?;
        }
        // Body files only the old cassette named: nothing refers to them any more.
        let bodies = dir.join(BODIES_DIR);
        if let Ok(entries) = std::fs::read_dir(&bodies) {
            for entry in entries.flatten() {
                let rel = format!("{BODIES_DIR}/{}", entry.file_name().to_string_lossy());
                let stem_is_hash = entry
                    .path()
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()));
                if stem_is_hash && !referenced.contains(&rel.as_str()) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    })();
    let _ = FileExt::unlock(&lock);
    result?;
    let _ = std::fs::remove_dir_all(&work.partial_dir);
    Ok((changed, interactions.len()))
}

fn print_plan(
    opts: &RecordOptions,
    accounts: &Accounts,
    works: &[Work],
    upstream: &str,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(out, "recorder record from {upstream} (keys from {})", accounts.source)?;
    for work in works {
        let total = work.loaded.interactions.len();
        let resumed = if work.resumed > 0 {
            format!(
                ", {} already recorded by an earlier run (kept in {})",
                work.resumed,
                work.partial_dir.display()
            )
        } else {
            String::new()
        };
        writeln!(
            out,
            "{}: {total} interactions, {} to record{resumed}",
            work.loaded.dir.display(),
            work.pending.len()
        )?;
        for (i, account, _) in &work.pending {
            let summary = request_summary(&work.loaded.interactions[*i].request);
            writeln!(
                out,
                "  #{i:<3} {:<8} {summary}",
                account.as_deref().unwrap_or("(no key)")
            )?;
        }
    }
    writeln!(out, "calls per account:")?;
    for (account, calls) in calls_per_account(accounts, works) {
        let limits = account.plan.limits();
        let left = match opts.used_today.get(&account.id) {
            Some(&used) => {
                let left = account.daily_limit.saturating_sub(used);
                let verdict = if calls > left {
                    format!("NOT ENOUGH: {} calls short", calls - left)
                } else {
                    format!("{} left after this run", left - calls)
                };
                format!("used today {used} (--used-today): {left} left; {verdict}")
            }
            None => format!(
                "used today unknown (the API does not say; pass --used-today {}=N): at most {} left",
                account.id, account.daily_limit
            ),
        };
        writeln!(
            out,
            "  {:<8} {calls} call(s); plan {} ({}/s, burst {}); daily limit {}; {left}",
            account.id, account.plan, limits.rate_per_sec, limits.burst, account.daily_limit
        )?;
    }
    let keyless = works
        .iter()
        .flat_map(|w| &w.pending)
        .filter(|(_, a, _)| a.is_none())
        .count();
    if keyless > 0 {
        writeln!(out, "  (no key) {keyless} call(s) recorded without a key")?;
    }
    Ok(())
}

fn calls_per_account<'a>(accounts: &'a Accounts, works: &[Work]) -> Vec<(&'a crate::accounts::Account, u32)> {
    accounts
        .accounts
        .iter()
        .map(|a| {
            let calls = works
                .iter()
                .flat_map(|w| &w.pending)
                .filter(|(_, acc, _)| acc.as_deref() == Some(a.id.as_str()))
                .count() as u32;
            (a, calls)
        })
        .filter(|(_, calls)| *calls > 0)
        .collect()
}

/// Refuses to start a run that the known quota cannot finish.
fn check_quota(opts: &RecordOptions, accounts: &Accounts, works: &[Work]) -> Result<(), Error> {
    for (account, calls) in calls_per_account(accounts, works) {
        if let Some(&used) = opts.used_today.get(&account.id) {
            let left = account.daily_limit.saturating_sub(used);
            if calls > left {
                return Err(Error::Usage(format!(
                    "account {} needs {calls} calls but only {left} of its {} are left today (--used-today {used}); nothing was sent",
                    account.id, account.daily_limit
                )));
            }
        }
    }
    Ok(())
}
