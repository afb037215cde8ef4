//! Phase 4, checks: every `then` expectation, each difference recorded as "field: expected X, actual Y".

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use worker_chart_export::domain::collections::{ACCOUNTS_USAGE, FLOW_RUNS};

use super::delivery::Delivered;
use super::readback::{walk, Object};
use super::setup::World;
use super::Outcome;
use crate::scenario::StepExpect;

/// One check's result, recorded as "field: expected X, actual Y".
struct Checks(Vec<String>);

impl Checks {
    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, field: &str, expected: T, actual: T) {
        if expected != actual {
            self.0
                .push(format!("{field}: expected {expected:?}, actual {actual:?}"));
        }
    }
    fn that(&mut self, field: &str, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(format!("{field}: {}", what()));
        }
    }
}

fn check_step(c: &mut Checks, field: &str, exp: &StepExpect, actual: &Value, seeded: &Value) {
    if let Some(s) = &exp.status {
        c.eq(&format!("{field}.status"), Some(s.as_str()), actual["status"].as_str());
    }
    if let Some(code) = &exp.error_code {
        c.eq(
            &format!("{field}.error.code"),
            Some(code.as_str()),
            actual["error"]["code"].as_str(),
        );
    }
    let message = actual["error"]["message"].as_str().unwrap_or_default();
    for want in &exp.error_message {
        c.that(
            &format!("{field}.error.message"),
            message.contains(want.as_str()),
            || format!("expected to contain {want:?}, actual {message:?}"),
        );
    }
    if exp.unchanged {
        c.eq(&format!("{field} (unchanged)"), seeded, actual);
    }
}

/// Every check of `then` on what the run left; `logs` holds the worker's JSON log lines (in-process and children).
pub async fn check(w: &World, d: &Delivered, logs: &str) -> anyhow::Result<Outcome> {
    let (backend, answers, results) = (&d.backend, &d.answers, &d.results);
    let t = &w.scenario.then;
    let mut c = Checks(Vec::new());
    let run_doc = backend.doc(FLOW_RUNS, &w.run_id).await?.unwrap_or(Value::Null);
    let step = &run_doc["steps"][t.step_id.as_str()];
    check_step(
        &mut c,
        &format!("steps.{}", t.step_id),
        &t.step,
        step,
        &w.seeded["steps"][t.step_id.as_str()],
    );
    for (id, exp) in &t.steps {
        check_step(
            &mut c,
            &format!("steps.{id}"),
            exp,
            &run_doc["steps"][id.as_str()],
            &w.seeded["steps"][id.as_str()],
        );
    }
    if t.run_unchanged {
        c.eq("flow run (unchanged)", &w.seeded, &run_doc);
    }
    if let Some(r) = &t.result {
        if let Some(problem) = result_problem(r, results) {
            c.0.push(format!("result: {problem}"));
        }
    }
    for (status, body, expected) in answers {
        match expected.or(t.http_status) {
            Some(e) => c.eq("http status", e, *status),
            None => c.that("http status", (200..300).contains(status), || {
                format!("expected 2xx, actual {status}: {body}")
            }),
        }
    }

    if let Some(live) = &d.live {
        check_live(&mut c, t, live);
    }

    // Objects and the manifest.
    let objects = backend.objects().await?;
    let pngs: Vec<&Object> = objects.iter().filter(|o| o.name.ends_with(".png")).collect();
    let manifests: Vec<&Object> = objects.iter().filter(|o| o.name.ends_with("/manifest.json")).collect();
    if let Some(o) = &t.objects {
        if let Some(n) = o.pngs {
            c.eq("objects.pngs", n, pngs.len());
        }
        if let Some(n) = o.manifests {
            c.eq("objects.manifests", n, manifests.len());
        }
        if let Some(n) = o.total {
            c.eq("objects.total", n, objects.len());
        }
    }
    if t.no_duplicates {
        // One PNG per template directory (`runs/<run>/charts/<tf>/<template>/`), one manifest per step.
        let mut dirs: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &pngs {
            *dirs.entry(p.name.rsplit_once('/').map_or("", |(d, _)| d)).or_default() += 1;
        }
        for (dir, n) in dirs.iter().filter(|(_, n)| **n > 1) {
            c.0.push(format!("noDuplicates: {n} PNGs in {dir}/"));
        }
        let mut steps: BTreeMap<&str, usize> = BTreeMap::new();
        for m in &manifests {
            *steps.entry(m.name.as_str()).or_default() += 1;
        }
        for (m, n) in steps.iter().filter(|(_, n)| **n > 1) {
            c.0.push(format!("noDuplicates: {n} manifests {m}"));
        }
    }
    for p in &pngs {
        c.eq(
            &format!("{} content type", p.name),
            "image/png",
            p.content_type.as_str(),
        );
        c.that(&format!("{} decodes as PNG", p.name), decodes(&p.bytes), || {
            "not a valid PNG".into()
        });
    }
    let mut manifest = None;
    match t.manifest.as_deref() {
        Some("snapshot") => {
            let path = format!("runs/{}/steps/{}/charts/manifest.json", w.run_id, t.step_id);
            let uri = format!("gs://{}/{path}", w.bucket);
            c.eq(
                "outputsManifestGcsUri",
                Some(uri.as_str()),
                step["outputsManifestGcsUri"].as_str(),
            );
            match manifests.iter().find(|m| m.name == path) {
                Some(m) => {
                    c.eq("manifest content type", "application/json", m.content_type.as_str());
                    let v: Value = serde_json::from_slice(&m.bytes)?;
                    // Every item points at an object that exists, with the size and hash it claims.
                    for item in v["items"].as_array().cloned().unwrap_or_default() {
                        let name = item["gcsUri"]
                            .as_str()
                            .unwrap_or_default()
                            .trim_start_matches(&format!("gs://{}/", w.bucket))
                            .to_owned();
                        match objects.iter().find(|o| o.name == name) {
                            Some(o) => {
                                c.eq(
                                    &format!("{name} bytes"),
                                    item["bytes"].as_u64(),
                                    Some(o.bytes.len() as u64),
                                );
                                c.eq(
                                    &format!("{name} sha256"),
                                    item["sha256"].as_str().map(str::to_owned),
                                    Some(digest_hex(&o.bytes)),
                                );
                            }
                            None => c.0.push(format!("manifest item {name}: no such object")),
                        }
                    }
                    manifest = Some(v);
                }
                None => c.0.push(format!("manifest: expected {uri}, none found")),
            }
        }
        Some("absent") => {
            c.eq("manifests", 0, manifests.len());
            c.eq("outputsManifestGcsUri", None, step["outputsManifestGcsUri"].as_str());
        }
        _ => {}
    }

    // Usage counters and the calls the mock saw.
    let journal = w.mock.state().journal(&mock_chart_img::JournalQuery::default());
    let calls = |acc: &str| journal.iter().filter(|e| e.account.as_deref() == Some(acc)).count();
    for (acc, n) in &t.usage {
        let u = backend.doc(ACCOUNTS_USAGE, acc).await?;
        c.eq(
            &format!("usage.{acc}.usageToday"),
            Some(*n as u64),
            u.as_ref().and_then(|u| u["usageToday"].as_u64()),
        );
    }
    for acc in &t.exhausted {
        let u = backend.doc(ACCOUNTS_USAGE, acc).await?;
        c.eq(
            &format!("usage.{acc}.exhausted"),
            Some(true),
            u.as_ref().and_then(|u| u["exhausted"].as_bool()),
        );
    }
    for (acc, n) in &t.mock_calls {
        c.eq(&format!("mockCalls.{acc}"), *n, calls(acc));
    }
    for (acc, n) in &t.mock_calls_at_most {
        let got = calls(acc);
        c.that(&format!("mockCallsAtMost.{acc}"), got <= *n, || {
            format!("expected at most {n} calls, actual {got}")
        });
    }
    for acc in &t.usage_covers_calls {
        let u = backend.doc(ACCOUNTS_USAGE, acc).await?;
        let used = u.as_ref().and_then(|u| u["usageToday"].as_u64()).unwrap_or(0) as usize;
        c.that(
            &format!("usage.{acc}.usageToday >= calls received"),
            used >= calls(acc),
            || {
                format!(
                    "usageToday {used} under-counts the {} calls mock-chart-img received",
                    calls(acc)
                )
            },
        );
    }
    for (acc, most) in &t.usage_over_calls_at_most {
        let u = backend.doc(ACCOUNTS_USAGE, acc).await?;
        let used = u.as_ref().and_then(|u| u["usageToday"].as_u64()).unwrap_or(0) as usize;
        c.that(
            &format!("usageOverCallsAtMost.{acc}"),
            used >= calls(acc) && used - calls(acc) <= *most,
            || {
                format!(
                    "usageToday {used} against {} calls mock-chart-img received: expected 0 to {most} above them",
                    calls(acc)
                )
            },
        );
    }
    for (status, n) in &t.mock_statuses {
        let answered: Vec<&mock_chart_img::JournalEntry> =
            journal.iter().filter(|e| e.status == Some(*status)).collect();
        c.that(&format!("mockStatuses.{status}"), answered.len() == *n, || {
            let first: Vec<String> = answered
                .iter()
                .take(5)
                .map(|e| format!("#{} at {} {:?}", e.seq, e.at, e.error))
                .collect();
            format!(
                "expected {n} answers {status}, actual {} (first: {})",
                answered.len(),
                first.join("; ")
            )
        });
    }
    for acc in &t.usage_matches_calls {
        let u = backend.doc(ACCOUNTS_USAGE, acc).await?;
        let used = u.as_ref().and_then(|u| u["usageToday"].as_u64()).unwrap_or(0) as usize;
        c.eq(&format!("usage.{acc}.usageToday = calls received"), calls(acc), used);
    }

    // Log events.
    let lines: Vec<Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    for e in &t.log_events {
        c.that(
            &format!("log event {e}"),
            lines.iter().any(|l| l["event"] == e.as_str()),
            || "missing".into(),
        );
    }
    if let Some(n) = t.claims {
        let claims = lines
            .iter()
            .filter(|l| l["event"] == "claim_attempt" && matches!(l["outcome"].as_str(), Some("claimed" | "reclaimed")))
            .count();
        c.eq("claims", n, claims);
    }
    if let (Some(n), Some(dir)) = (t.cassette_interactions, &w.cassette_dir) {
        let cassette: Value =
            serde_json::from_slice(&std::fs::read(dir.join(recorder::CASSETTE_FILE)).unwrap_or_default())
                .unwrap_or(Value::Null);
        c.eq(
            "cassette interactions",
            Some(n),
            cassette["interactions"].as_array().map(Vec::len),
        );
    }

    // No secret anywhere: logs, documents, objects, HTTP answers, cassettes, the mock's journal.
    let mut haystack = String::from(logs);
    haystack.push_str(&run_doc.to_string());
    for (acc, _) in &w.keys {
        if let Some(u) = backend.doc(ACCOUNTS_USAGE, acc).await? {
            haystack.push_str(&u.to_string());
        }
    }
    for o in &objects {
        haystack.push_str(&String::from_utf8_lossy(&o.bytes));
    }
    for (_, body, _) in answers {
        haystack.push_str(body);
    }
    if let Some(dir) = &w.cassette_dir {
        for f in walk(dir) {
            haystack.push_str(&String::from_utf8_lossy(&std::fs::read(f).unwrap_or_default()));
        }
    }
    let journal_text = serde_json::to_string_pretty(&journal).unwrap_or_default();
    haystack.push_str(&journal_text);
    for (acc, key) in &w.keys {
        c.that(&format!("secret of {acc}"), !haystack.contains(key.as_str()), || {
            "the API key appears in an output".into()
        });
    }
    Ok(Outcome {
        manifest,
        differences: c.0,
        journal: journal_text,
        ..Default::default()
    })
}

/// Why a `result:` expectation fails, if it does: a run that produced no result is a failure, never a pass.
pub fn result_problem(expected: &str, results: &[String]) -> Option<String> {
    if results.is_empty() {
        return Some(format!("expected {expected}, but this run produced no result to check"));
    }
    let ok = results
        .iter()
        .all(|x| x == expected || (expected == "succeeded" && x == "exit 0"));
    (!ok).then(|| format!("expected {expected}, actual {results:?}"))
}

/// The expectations only the live path (local Eventarc, `serve` processes) can meet.
fn check_live(c: &mut Checks, t: &crate::scenario::Then, live: &super::live::LiveReport) {
    use harness::eventarc::Outcome as O;
    if let Some(limit) = t.within_seconds {
        let want = t.step.status.as_deref().unwrap_or("?");
        match live.reached_ms {
            Some(ms) => c.that("withinSeconds", ms as f64 <= limit * 1000.0, || {
                format!(
                    "expected {want} within {limit} s, reached after {:.1} s",
                    ms as f64 / 1000.0
                )
            }),
            None => c.0.push(format!(
                "withinSeconds: expected {want} within {limit} s, never reached (status {:?})",
                live.final_status
            )),
        }
    }
    if let Some(code) = t.http_status {
        let statuses: Vec<u16> = live
            .deliveries
            .iter()
            .filter_map(|d| match d.outcome {
                O::Status { code } => Some(code),
                _ => None,
            })
            .collect();
        c.that(
            "httpStatus",
            !statuses.is_empty() && statuses.iter().all(|s| *s == code),
            || format!("expected every delivery answered {code}, actual {statuses:?}"),
        );
    }
    if let Some(e) = &t.deliveries {
        let n = live.deliveries.len();
        if let Some(min) = e.min {
            c.that("deliveries.min", n >= min, || {
                format!("expected at least {min} delivery attempts, actual {n}")
            });
        }
        if let Some(max) = e.max {
            c.that("deliveries.max", n <= max, || {
                format!("expected at most {max} delivery attempts, actual {n}")
            });
        }
        if !e.answers.is_empty() {
            for d in &live.deliveries {
                let ok = e.answers.iter().any(|a| match (&d.outcome, a.as_u64(), a.as_str()) {
                    (O::Status { code }, Some(want), _) => u64::from(*code) == want,
                    (O::Error { .. } | O::NoTarget, _, Some("error")) => true,
                    (O::AckDeadline, _, Some("ack_deadline")) => true,
                    _ => false,
                });
                c.that("deliveries.answers", ok, || {
                    format!(
                        "attempt {} of {}: {:?} is not among {:?}",
                        d.attempt, d.event_id, d.outcome, e.answers
                    )
                });
            }
        }
        if e.all_acked {
            for ev in &live.events {
                c.that("deliveries.allAcked", ev.acked, || {
                    format!(
                        "event {} ({:?}) was never acknowledged (gave up: {}, chains pending: {})",
                        ev.id, ev.kind, ev.gave_up, ev.pending_chains
                    )
                });
            }
        }
    }
    for (dep, n) in &t.faults_applied {
        let applied = live
            .proxy_calls
            .get(dep)
            .map_or(0, |calls| calls.iter().filter(|c| c.rule.is_some()).count());
        // At least: a time-window fault applies to as many calls as the worker's retries make within the window.
        c.that(&format!("faultsApplied.{dep:?}"), applied >= *n, || {
            format!("expected at least {n}, actual {applied}")
        });
    }
    if let Some(n) = t.calling_processes {
        let spans: Vec<(&str, String, String, usize)> = live
            .call_times
            .iter()
            .filter_map(|(name, times)| {
                Some((
                    name.as_str(),
                    clock(times.iter().min()?),
                    clock(times.iter().max()?),
                    times.len(),
                ))
            })
            .collect();
        let first_last = |name: &str| {
            let times = &live.call_times.iter().find(|(n, _)| n == name)?.1;
            Some((*times.iter().min()?, *times.iter().max()?))
        };
        let latest_first = spans.iter().filter_map(|s| first_last(s.0)).map(|(f, _)| f).max();
        let earliest_last = spans.iter().filter_map(|s| first_last(s.0)).map(|(_, l)| l).min();
        let together = latest_first.zip(earliest_last).is_some_and(|(f, l)| f <= l);
        c.that("callingProcesses", spans.len() >= n && together, || {
            format!("expected at least {n} processes calling Chart-IMG at the same time (mock journal), actual (process, first, last, calls): {spans:?}")
        });
    }
    if t.holders_apart {
        // Each call as mock-chart-img received it (the journal's arrival time and the process it names), against
        // the claims of the step (the processes' claim lines): the holder of a call is the last claimant before it.
        let claims: Vec<(DateTime<Utc>, &str)> = live
            .claim_times
            .iter()
            .flat_map(|(name, times)| times.iter().map(move |t| (*t, name.as_str())))
            .collect();
        let overlapping: Vec<String> = live
            .call_times
            .iter()
            .flat_map(|(name, times)| times.iter().map(move |t| (*t, name.as_str())))
            .filter_map(|(call, caller)| {
                let holder = claims
                    .iter()
                    .filter(|(t, _)| *t + IN_FLIGHT_SLACK <= call)
                    .max_by_key(|(t, _)| *t)?;
                (holder.1 != caller).then(|| {
                    format!(
                        "{caller}'s call arrived at the mock at {} after {} claimed at {}",
                        clock(&call),
                        holder.1,
                        clock(&holder.0)
                    )
                })
            })
            .collect();
        c.that("holdersApart", overlapping.is_empty(), || {
            format!("calls after another holder's claim (mock journal): {overlapping:?}")
        });
    }
    for (field, wanted, times, what) in [
        (
            "noCallAfterSigterm",
            t.no_call_after_sigterm,
            &live.shutdown_times,
            "its SIGTERM",
        ),
        (
            "noCallAfterDeadline",
            t.no_call_after_deadline,
            &live.deadline_times,
            "its step deadline",
        ),
    ] {
        if !wanted {
            continue;
        }
        // Arrival times at the mock (journal) against the moment the process saw the signal or the deadline.
        let late: Vec<String> = times
            .iter()
            .filter_map(|(name, at)| Some((name, (*at)?)))
            .flat_map(|(name, at)| {
                let calls = live
                    .call_times
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, c)| c.as_slice());
                calls
                    .unwrap_or_default()
                    .iter()
                    .filter(move |c| **c > at + IN_FLIGHT_SLACK)
                    .map(move |c| {
                        format!(
                            "{name}'s call arrived at the mock at {} after {what} at {}",
                            clock(c),
                            clock(&at)
                        )
                    })
            })
            .collect();
        c.that(
            field,
            times.iter().any(|(_, at)| at.is_some()) && late.is_empty(),
            || format!("never reached, or calls after it: {late:?}"),
        );
    }
    if let Some(ms) = t.sigterm_exit_within_ms {
        c.that("sigtermExitWithinMs", !live.sigterms.is_empty(), || {
            "no sigterm action ran".into()
        });
        for (name, s) in &live.sigterms {
            c.that(
                &format!("sigtermExitWithinMs ({name})"),
                s.by_itself && s.after.as_millis() as u64 <= ms,
                || {
                    format!(
                        "expected an exit within {ms} ms of SIGTERM, exited by itself: {}, after {} ms",
                        s.by_itself,
                        s.after.as_millis()
                    )
                },
            );
        }
    }
}

/// How long a call that left before a claim, a SIGTERM or a deadline may take to reach mock-chart-img (through
/// the fault proxy) and still count as sent before it: the journal times arrivals, the processes time the events.
/// A call started after the event is caught unless it arrives within this; the mutations these checks guard
/// against (no fence, queued callers starting late) start their calls hundreds of ms after it.
const IN_FLIGHT_SLACK: chrono::TimeDelta = chrono::TimeDelta::milliseconds(50);

/// A time of day with milliseconds, for the checks' messages.
pub(super) fn clock(t: &DateTime<Utc>) -> String {
    t.format("%H:%M:%S%.3f").to_string()
}

fn decodes(bytes: &[u8]) -> bool {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    match decoder.read_info() {
        Ok(mut reader) => {
            let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
            reader.next_frame(&mut buf).is_ok()
        }
        Err(_) => false,
    }
}

/// The hex SHA-256 the manifest must state for an object.
fn digest_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_expectation_without_a_result_fails() {
        assert!(result_problem("succeeded", &[]).unwrap().contains("no result"));
        assert!(result_problem("succeeded", &["noop".into()]).is_some());
        assert_eq!(
            result_problem("succeeded", &["succeeded".into(), "exit 0".into()]),
            None
        );
    }
}
