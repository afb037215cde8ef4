//! The `flow_runs/{runId}` document as the worker sees it: step selection, the claim decision, the ownership check of a
//! finalize, and step-level validation. Pure functions over `serde_json::Value`, so every store adapter (in-memory,
//! local files, Firestore) runs the very same decision inside its own transaction.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::ids::{ClaimToken, StepId, TemplateId, WorkerId};
use super::timeframe::Timeframe;

pub const CHART_EXPORT: &str = "CHART_EXPORT";

/// Step statuses of the contract. Unknown ones are kept verbatim and are never claimable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum StepStatus {
    Pending,
    Ready,
    Running,
    Succeeded,
    Failed,
    Other(String),
}

impl StepStatus {
    pub fn parse(raw: Option<&str>) -> Self {
        match raw {
            Some("PENDING") => Self::Pending,
            Some("READY") => Self::Ready,
            Some("RUNNING") => Self::Running,
            Some("SUCCEEDED") => Self::Succeeded,
            Some("FAILED") => Self::Failed,
            Some(other) => Self::Other(other.to_owned()),
            None => Self::Other(String::new()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "PENDING",
            Self::Ready => "READY",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Other(s) => s,
        }
    }
}

/// Which step a delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepSelector {
    /// The first claimable CHART_EXPORT step in `stepId` order.
    First,
    /// This step, which must exist, be CHART_EXPORT and be claimable.
    Explicit(StepId),
}

/// What a claim needs besides the document.
#[derive(Debug, Clone)]
pub struct ClaimParams {
    pub worker: WorkerId,
    /// New for every claim attempt (not per process): a retried commit that finds this token on a RUNNING step knows
    /// the first try landed.
    pub token: ClaimToken,
    pub now: DateTime<Utc>,
    pub lease: Duration,
    /// Claims a step may have had; a claimable step that has used them all is finalized FAILED instead of claimed.
    pub max_attempts: u32,
}

/// The closed set of answers to "claim a step". Only `Claimed` (first try) is followed by a write.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum ClaimOutcome {
    /// The step is ours: `READY -> RUNNING` (or a RUNNING step whose lease had expired) was written, or a retried
    /// commit found our own token already there. `run` is the whole document as the transaction left it, so the
    /// core needs no second read; `attempt` counts this claim (1 for the first).
    Claimed {
        step_id: StepId,
        run: Value,
        reclaimed: bool,
        attempt: u32,
        /// The step had used all its attempts: this claim only settles it — SUCCEEDED from its manifest if one
        /// exists, else FAILED with the last error (code, message) — and renders nothing.
        #[serde(skip_serializing_if = "Option::is_none")]
        give_up: Option<GiveUp>,
    },
    RunNotFound,
    /// No CHART_EXPORT step is READY (or RUNNING with an expired lease), none waits for its not-before time and none
    /// is held by someone else.
    NoClaimableStep,
    StepNotFound {
        step_id: StepId,
    },
    WrongStepType {
        step_id: StepId,
        step_type: String,
    },
    /// Another claim holds a live lease.
    AlreadyRunning {
        step_id: StepId,
        claimed_by: Option<String>,
        lease_expires_at: Option<String>,
    },
    /// Released after a transient failure; not claimable before `not_before`.
    NotYet {
        step_id: StepId,
        not_before: String,
    },
    AlreadyFinished {
        step_id: StepId,
        status: String,
    },
    /// PENDING or an unknown status: not ours to touch.
    NotClaimable {
        step_id: StepId,
        status: String,
    },
}

/// Why a claim only settles its step: the attempts are used up, and the last error says how it failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GiveUp {
    pub code: String,
    pub message: String,
}

/// A claim past the last attempt (its `attempts` exceeds `max_attempts`) gives up; code and message come from the
/// step's `lastError`.
fn give_up_of(step: &Value, max_attempts: u32) -> Option<GiveUp> {
    if attempts_of(step) <= max_attempts {
        return None;
    }
    let last_error = step.get("lastError");
    let code = last_error
        .and_then(|e| str_field(e, "code"))
        .unwrap_or("STEP_ABANDONED")
        .to_owned();
    let last = last_error
        .and_then(|e| str_field(e, "message"))
        .unwrap_or("no error was recorded");
    let message = format!("gave up after {max_attempts} attempts; last error: {last}");
    Some(GiveUp { code, message })
}

/// A field-masked patch of `steps.<stepId>`: each key is a field of the step; `None` deletes the field.
/// Adapters turn it into `steps.<stepId>.<field>` update masks; nothing outside the step is ever written.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPatch {
    pub step_id: StepId,
    pub fields: BTreeMap<String, Option<Value>>,
}

impl StepPatch {
    /// Full field paths of the mask (`steps.<stepId>.<field>`), in a stable order.
    pub fn field_paths(&self) -> Vec<String> {
        self.fields
            .keys()
            .map(|f| format!("steps.{}.{}", self.step_id, f))
            .collect()
    }

    /// Applies the patch to a whole document (in-memory and local adapters, and tests of the Firestore mapping).
    pub fn apply_to(&self, doc: &mut Value) {
        let Some(step) = doc
            .get_mut("steps")
            .and_then(|s| s.get_mut(self.step_id.as_str()))
            .and_then(Value::as_object_mut)
        else {
            return;
        };
        for (field, value) in &self.fields {
            match value {
                Some(v) => {
                    step.insert(field.clone(), v.clone());
                }
                None => {
                    step.remove(field);
                }
            }
        }
    }
}

/// The form of every time the worker writes (`startedAt`, `leaseExpiresAt`, `finishedAt`, `updatedAt`, …): RFC 3339,
/// UTC, whole seconds, so a document reads the same from the in-memory, local-file and Firestore stores (Firestore
/// keeps them as timestamps, [`crate::firestore_codec::TIME_FIELDS`], and reads them back in this form).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v?.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn step_type(step: &Value) -> &str {
    step.get("stepType").and_then(Value::as_str).unwrap_or("")
}

fn status_of(step: &Value) -> StepStatus {
    StepStatus::parse(step.get("status").and_then(Value::as_str))
}

fn lease_expired(step: &Value, now: DateTime<Utc>) -> bool {
    // A RUNNING step without a readable lease is treated as live: reclaiming it could run the work twice.
    parse_time(step.get("leaseExpiresAt")).is_some_and(|t| t <= now)
}

fn str_field<'a>(step: &'a Value, field: &str) -> Option<&'a str> {
    step.get(field).and_then(Value::as_str)
}

/// Claims the step has had so far (`attempts`; absent = 0).
pub fn attempts_of(step: &Value) -> u32 {
    step.get("attempts")
        .and_then(Value::as_u64)
        .map(|n| n.min(u32::MAX as u64) as u32)
        .unwrap_or(0)
}

/// Where a step stands for a would-be claimer at `now`.
#[derive(Debug, Clone, PartialEq)]
enum Availability {
    /// READY (not-before passed or absent), or RUNNING with an expired lease (`reclaimed`).
    Claimable {
        reclaimed: bool,
    },
    /// RUNNING under this very claim token: a retried commit whose first try landed.
    Ours,
    /// RUNNING under another claim whose lease is live.
    HeldElsewhere,
    /// READY with a not-before time still ahead.
    NotYet(String),
    Finished,
    Other,
}

fn availability(step: &Value, now: DateTime<Utc>, token: Option<&ClaimToken>) -> Availability {
    match status_of(step) {
        StepStatus::Running if token.is_some_and(|t| str_field(step, "claimToken") == Some(t.as_str())) => {
            Availability::Ours
        }
        StepStatus::Running if lease_expired(step, now) => Availability::Claimable { reclaimed: true },
        StepStatus::Running => Availability::HeldElsewhere,
        StepStatus::Ready => match parse_time(step.get("notBefore")) {
            Some(t) if t > now => Availability::NotYet(rfc3339(t)),
            _ => Availability::Claimable { reclaimed: false },
        },
        StepStatus::Succeeded | StepStatus::Failed => Availability::Finished,
        _ => Availability::Other,
    }
}

/// Decides a claim on the document as read inside a transaction. Returns the outcome and the patch the transaction
/// must write (for a first-try `Claimed`).
pub fn decide_claim(
    doc: Option<&Value>,
    selector: &StepSelector,
    p: &ClaimParams,
) -> (ClaimOutcome, Option<StepPatch>) {
    let Some(doc) = doc else {
        return (ClaimOutcome::RunNotFound, None);
    };
    let steps = doc.get("steps").and_then(Value::as_object);
    let pick: Option<(StepId, &Value)> = match selector {
        StepSelector::Explicit(id) => match steps.and_then(|s| s.get(id.as_str())) {
            Some(step) => Some((id.clone(), step)),
            None => return (ClaimOutcome::StepNotFound { step_id: id.clone() }, None),
        },
        StepSelector::First => {
            // serde_json keeps insertion order; the contract says stepId order, so sort explicitly.
            let mut candidates: Vec<(&String, &Value, Availability)> = steps
                .into_iter()
                .flatten()
                .filter(|(_, s)| step_type(s) == CHART_EXPORT)
                .map(|(k, s)| (k, s, availability(s, p.now, Some(&p.token))))
                .collect();
            candidates.sort_by(|a, b| a.0.cmp(b.0));
            // A step that can be taken wins; else the first one that blocks (so the answer says who holds it or
            // when it may be retried); else there is nothing to do.
            let takeable = |a: &Availability| matches!(a, Availability::Claimable { .. } | Availability::Ours);
            let blocked = |a: &Availability| matches!(a, Availability::HeldElsewhere | Availability::NotYet(_));
            candidates
                .iter()
                .find(|c| takeable(&c.2))
                .or_else(|| candidates.iter().find(|c| blocked(&c.2)))
                .and_then(|(id, step, _)| StepId::parse(id.as_str()).ok().map(|id| (id, *step)))
        }
    };
    let Some((step_id, step)) = pick else {
        return (ClaimOutcome::NoClaimableStep, None);
    };
    if step_type(step) != CHART_EXPORT {
        let step_type = step_type(step).to_owned();
        return (ClaimOutcome::WrongStepType { step_id, step_type }, None);
    }
    let reclaimed = match availability(step, p.now, Some(&p.token)) {
        Availability::Claimable { reclaimed } => reclaimed,
        Availability::Ours => {
            let attempt = attempts_of(step);
            let give_up = give_up_of(step, p.max_attempts);
            return (
                ClaimOutcome::Claimed {
                    step_id,
                    run: doc.clone(),
                    reclaimed: false,
                    attempt,
                    give_up,
                },
                None,
            );
        }
        Availability::HeldElsewhere => {
            let claimed_by = str_field(step, "claimedBy").map(str::to_owned);
            let lease_expires_at = str_field(step, "leaseExpiresAt").map(str::to_owned);
            return (
                ClaimOutcome::AlreadyRunning {
                    step_id,
                    claimed_by,
                    lease_expires_at,
                },
                None,
            );
        }
        Availability::NotYet(not_before) => return (ClaimOutcome::NotYet { step_id, not_before }, None),
        Availability::Finished => {
            return (
                ClaimOutcome::AlreadyFinished {
                    step_id,
                    status: status_of(step).as_str().to_owned(),
                },
                None,
            );
        }
        Availability::Other => {
            return (
                ClaimOutcome::NotClaimable {
                    step_id,
                    status: status_of(step).as_str().to_owned(),
                },
                None,
            );
        }
    };
    let mut fields = BTreeMap::new();
    let progressed = charts_rendered_of(step) > 0;
    // A holder that vanished without progress (killed, cut off, or past its deadline without a word) is charged to
    // the fleet before the step, like a fenced holder's hand-back: while the step's `attemptsHandedBack` is below
    // `max_attempts`, its attempt is handed back here and that count raised; past it, the attempt counts.
    let vanished_free = reclaimed && !progressed && attempts_handed_back_of(step) < p.max_attempts;
    if reclaimed {
        let by = str_field(step, "claimedBy").unwrap_or("an unknown worker");
        let until = str_field(step, "leaseExpiresAt").unwrap_or("?");
        let mut message = format!("the lease of {by} expired at {until} while the step was RUNNING");
        if vanished_free {
            let handed = attempts_handed_back_of(step) + 1;
            message.push_str(&format!(
                "; its attempt was handed back ({handed} of {} such hand-backs)",
                p.max_attempts
            ));
            fields.insert(ATTEMPTS_HANDED_BACK.to_owned(), Some(json!(handed)));
        }
        let e = json!({ "code": "STEP_ABANDONED", "message": message });
        fields.insert("lastError".to_owned(), Some(e));
    }
    // A step that has used all its attempts is still claimed, past its last attempt (`give_up`): only a holder can
    // look for its manifest (SUCCEEDED from it) before it is finalized FAILED, and no chart is rendered.
    // An attempt that stored charts of its own hands its attempt back (its holder recorded them with its lease
    // renewals or its release, [`CHARTS_RENDERED`]): the next attempt starts further on, so only attempts without
    // progress use the step's attempts up. Bounded all the same: each attempt handed back stored at least one chart
    // a later attempt reuses, so a step has at most `max_attempts` + its charts attempts.
    let done = attempts_of(step).saturating_sub(u32::from(progressed || vanished_free));
    let attempt = done + 1;
    fields.insert("status".to_owned(), Some(json!("RUNNING")));
    fields.insert("claimedBy".to_owned(), Some(json!(p.worker.as_str())));
    fields.insert("claimToken".to_owned(), Some(json!(p.token.as_str())));
    fields.insert("attempts".to_owned(), Some(json!(attempt)));
    fields.insert("startedAt".to_owned(), Some(json!(rfc3339(p.now))));
    fields.insert("leaseExpiresAt".to_owned(), Some(json!(rfc3339(p.now + p.lease))));
    fields.insert("notBefore".to_owned(), None);
    if step.get(CHARTS_RENDERED).is_some() {
        fields.insert(CHARTS_RENDERED.to_owned(), None);
    }
    if parse_time(step.get(CHARTS_GENERATED_AT)).is_none() {
        let at = charts_time(doc, &step_id, p.now);
        fields.insert(CHARTS_GENERATED_AT.to_owned(), Some(json!(rfc3339(at))));
    }
    let patch = StepPatch {
        step_id: step_id.clone(),
        fields,
    };
    let mut run = doc.clone();
    patch.apply_to(&mut run);
    let give_up = give_up_of(&run["steps"][step_id.as_str()], p.max_attempts);
    (
        ClaimOutcome::Claimed {
            step_id,
            run,
            reclaimed,
            attempt,
            give_up,
        },
        Some(patch),
    )
}

/// The step field where the holder records how many charts its attempt rendered and stored (with each lease
/// renewal and its release): the next claim hands the attempt back when it is above zero, and clears it.
pub const CHARTS_RENDERED: &str = "chartsRendered";

/// [`CHARTS_RENDERED`] of a step (absent = 0).
pub fn charts_rendered_of(step: &Value) -> u64 {
    step.get(CHARTS_RENDERED).and_then(Value::as_u64).unwrap_or(0)
}

/// The step field where holders record how many of the step's charts are stored, as far as the attempt knows: the
/// charts it found stored at its start plus those it rendered, never less than what was recorded before (written
/// with the lease renewals and the release, never cleared). A holder cut off before recording its progress (killed
/// or fenced between two renewals) leaves more charts stored than recorded: the give-up claim counts the stored
/// charts, and when there are more than recorded, the step is handed back for one more attempt instead of given
/// up. Bounded: each such hand-back records the larger count, and a step has only so many charts.
pub const CHARTS_STORED: &str = "chartsStored";

/// [`CHARTS_STORED`] of a step (absent = 0).
pub fn charts_stored_of(step: &Value) -> u32 {
    step.get(CHARTS_STORED)
        .and_then(Value::as_u64)
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// The step field counting the attempts charged to the fleet rather than the step: a holder that lost its lease
/// (fenced: the store did not confirm a renewal in time) and released the step under its own token, and a holder
/// that vanished without recorded progress (killed or cut off: its lease expired and [`decide_claim`] reclaimed the
/// step). Neither is known to be the step's doing, so they do not use the step's attempts up, but only while this
/// count is below `CHART_EXPORT_MAX_ATTEMPTS`: a step whose holders keep dying or losing their leases (a step that
/// crashes its worker, a store that never heals) still ends, after at most twice that many attempts.
pub const ATTEMPTS_HANDED_BACK: &str = "attemptsHandedBack";

/// [`ATTEMPTS_HANDED_BACK`] of a step (absent = 0).
pub fn attempts_handed_back_of(step: &Value) -> u32 {
    step.get(ATTEMPTS_HANDED_BACK)
        .and_then(Value::as_u64)
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// The step field holding the `generatedAt` of its charts: the time in their object names (contract §6), fixed at the
/// step's first claim and kept by every later one, so an attempt finds the charts an earlier one stored under the
/// very names it would write.
pub const CHARTS_GENERATED_AT: &str = "chartsGeneratedAt";

/// A time for a step's charts: `now` to the second, moved on a second at a time past every time another step of
/// the run already has, so two steps of one run never name the same object (the claim transaction holds the run).
fn charts_time(doc: &Value, step_id: &StepId, now: DateTime<Utc>) -> DateTime<Utc> {
    let taken: Vec<DateTime<Utc>> = doc
        .get("steps")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != step_id.as_str())
        .filter_map(|(_, s)| parse_time(s.get(CHARTS_GENERATED_AT)))
        .collect();
    let mut at = parse_time(Some(&json!(rfc3339(now)))).unwrap_or(now);
    while taken.contains(&at) {
        at += Duration::seconds(1);
    }
    at
}

/// The answer of a guarded patch (finalize, release, lease renewal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum PatchOutcome {
    Applied,
    /// The step already shows this patch's status under our token: a retried commit whose first try landed.
    AlreadyApplied,
    /// The step is no longer RUNNING under this claim: finished, released, or reclaimed by another after our lease.
    NotOwner {
        status: String,
        claimed_by: Option<String>,
    },
    StepMissing,
}

impl PatchOutcome {
    /// Whether the patch is in the document now (written by this call or by an earlier try of it).
    pub fn landed(&self) -> bool {
        matches!(self, Self::Applied | Self::AlreadyApplied)
    }
}

/// A finalize, release or renewal applies only while the step is RUNNING under `token`. A step that already shows
/// the patch's target status under `token` answers `AlreadyApplied` (nothing to write).
pub fn check_owner(doc: Option<&Value>, patch: &StepPatch, token: &ClaimToken) -> PatchOutcome {
    let Some(step) = doc
        .and_then(|d| d.get("steps"))
        .and_then(|s| s.get(patch.step_id.as_str()))
    else {
        return PatchOutcome::StepMissing;
    };
    let ours = str_field(step, "claimToken") == Some(token.as_str());
    let status = status_of(step);
    let target = patch
        .fields
        .get("status")
        .and_then(|v| v.as_ref())
        .and_then(Value::as_str)
        .unwrap_or("RUNNING");
    if ours && status == StepStatus::Running {
        PatchOutcome::Applied
    } else if ours && status.as_str() == target {
        PatchOutcome::AlreadyApplied
    } else {
        PatchOutcome::NotOwner {
            status: status.as_str().to_owned(),
            claimed_by: str_field(step, "claimedBy").map(str::to_owned),
        }
    }
}

/// The lease renewal of a running step: `leaseExpiresAt` moves, [`CHARTS_RENDERED`] records the charts this
/// attempt has rendered and stored so far (once there are any), so a holder killed after progress hands its attempt
/// back, and [`CHARTS_STORED`] the step's charts stored as far as the attempt knows (once there are any).
pub fn renew_patch(
    step_id: &StepId,
    lease_expires_at: DateTime<Utc>,
    charts_rendered: u32,
    charts_stored: u32,
) -> StepPatch {
    let mut fields = BTreeMap::new();
    fields.insert("leaseExpiresAt".to_owned(), Some(json!(rfc3339(lease_expires_at))));
    if charts_rendered > 0 {
        fields.insert(CHARTS_RENDERED.to_owned(), Some(json!(charts_rendered)));
    }
    if charts_stored > 0 {
        fields.insert(CHARTS_STORED.to_owned(), Some(json!(charts_stored)));
    }
    StepPatch {
        step_id: step_id.clone(),
        fields,
    }
}

/// What a release (RUNNING → READY after a transient failure) records.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseParams {
    pub now: DateTime<Utc>,
    /// Not claimable before this time: the release write itself is delivered at once, bypassing Eventarc's backoff.
    pub not_before: DateTime<Utc>,
    pub code: String,
    pub message: String,
    /// Overrides the step's `attempts` (a shutdown hands back its attempt: it was not the step's fault).
    pub attempts: Option<u32>,
    /// Charts this attempt rendered and stored ([`CHARTS_RENDERED`]); ignored when `attempts` hands the attempt back
    /// already.
    pub charts_rendered: u32,
    /// The step's charts stored as far as this attempt knows ([`CHARTS_STORED`]; 0: not written).
    pub charts_stored: u32,
    /// [`ATTEMPTS_HANDED_BACK`] to write (a holder that lost its lease hands its attempt back).
    pub handed_back: Option<u32>,
}

/// The release patch. `claimToken` and `attempts` stay, so a retried release recognises itself and the next claim
/// counts on; `claimedBy` goes with the lease (nobody holds a READY step).
pub fn release_patch(step_id: &StepId, r: &ReleaseParams) -> StepPatch {
    let mut fields = BTreeMap::new();
    fields.insert("status".to_owned(), Some(json!("READY")));
    fields.insert("notBefore".to_owned(), Some(json!(rfc3339(r.not_before))));
    fields.insert(
        "lastError".to_owned(),
        Some(json!({ "code": r.code, "message": r.message })),
    );
    fields.insert("updatedAt".to_owned(), Some(json!(rfc3339(r.now))));
    if let Some(n) = r.attempts {
        fields.insert("attempts".to_owned(), Some(json!(n)));
        // Handed back once, not twice.
        fields.insert(CHARTS_RENDERED.to_owned(), None);
    } else if r.charts_rendered > 0 {
        fields.insert(CHARTS_RENDERED.to_owned(), Some(json!(r.charts_rendered)));
    }
    if r.charts_stored > 0 {
        fields.insert(CHARTS_STORED.to_owned(), Some(json!(r.charts_stored)));
    }
    if let Some(n) = r.handed_back {
        fields.insert(ATTEMPTS_HANDED_BACK.to_owned(), Some(json!(n)));
    }
    for f in ["leaseExpiresAt", "startedAt", "claimedBy"] {
        fields.insert(f.to_owned(), None);
    }
    StepPatch {
        step_id: step_id.clone(),
        fields,
    }
}

/// How `serve` may answer an event from its own data, before any store call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventVerdict {
    /// A step a claim could take now.
    Claimable,
    /// A released step whose not-before time is ahead: ask for a redelivery later.
    NotYet { not_before: String },
    /// A step RUNNING under a live lease: the holder's own write; its delivery is the watch.
    HeldLive,
    /// Nothing for this worker.
    Nothing,
}

/// The quick filter of the contract, run on event data before any store call.
pub fn event_verdict(doc: &Value, selector: &StepSelector, now: DateTime<Utc>) -> EventVerdict {
    let Some(steps) = doc.get("steps").and_then(Value::as_object) else {
        return EventVerdict::Nothing;
    };
    let mut chart_steps: Vec<(&String, &Value)> = steps
        .iter()
        .filter(|(k, s)| {
            step_type(s) == CHART_EXPORT
                && match selector {
                    StepSelector::First => true,
                    StepSelector::Explicit(id) => id.as_str() == k.as_str(),
                }
        })
        .collect();
    chart_steps.sort_by(|a, b| a.0.cmp(b.0));
    let states: Vec<Availability> = chart_steps.iter().map(|(_, s)| availability(s, now, None)).collect();
    if states.iter().any(|a| matches!(a, Availability::Claimable { .. })) {
        return EventVerdict::Claimable;
    }
    if let Some(Availability::NotYet(t)) = states.iter().find(|a| matches!(a, Availability::NotYet(_))) {
        return EventVerdict::NotYet { not_before: t.clone() };
    }
    if states.iter().any(|a| matches!(a, Availability::HeldElsewhere)) {
        return EventVerdict::HeldLive;
    }
    EventVerdict::Nothing
}

/// Does this document hold a step that a claim could take right now? Our own writes (RUNNING, SUCCEEDED, FAILED)
/// answer `false`.
pub fn has_claimable_step(doc: &Value, selector: &StepSelector, now: DateTime<Utc>) -> bool {
    event_verdict(doc, selector, now) == EventVerdict::Claimable
}

/// The inputs of a claimed step after step-level validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidStep {
    pub symbol: String,
    pub timeframe: Timeframe,
    pub min_images: u32,
    pub requests: Vec<TemplateId>,
    /// [`CHARTS_GENERATED_AT`]; `None` only for a step claimed before the field existed.
    pub charts_generated_at: Option<DateTime<Utc>>,
}

/// A step-level validation failure: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct StepInvalid {
    pub field: String,
    pub problem: String,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> StepInvalid {
    StepInvalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Validates `scope.symbol` and `steps.<id>.inputs` of a claimed step. Template contents are checked per request later.
pub fn validate_step(doc: &Value, step_id: &StepId, step: &Value) -> Result<ValidStep, StepInvalid> {
    let symbol = match doc.get("scope").and_then(|s| s.get("symbol")) {
        Some(Value::String(s)) if s.trim().is_empty() => return Err(invalid("scope.symbol", "must not be empty")),
        Some(Value::String(s)) if s.contains('/') => {
            return Err(invalid(
                "scope.symbol",
                format!("must be a bare instrument without '/', got {s:?}"),
            ))
        }
        Some(Value::String(s)) if s.contains(':') || s.chars().any(char::is_whitespace) => {
            return Err(invalid(
                "scope.symbol",
                format!("must be a bare instrument like BTCUSDT, got {s:?}"),
            ))
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid("scope.symbol", "must be a string")),
        None => return Err(invalid("scope.symbol", "is missing")),
    };
    let base = format!("steps.{step_id}.inputs");
    let inputs = match step.get("inputs") {
        Some(Value::Object(o)) => o,
        Some(_) => return Err(invalid(base, "must be a map")),
        None => return Err(invalid(base, "is missing")),
    };
    let timeframe = match inputs.get("timeframe") {
        Some(Value::String(s)) => {
            Timeframe::parse(s).map_err(|e| invalid(format!("{base}.timeframe"), e.to_string()))?
        }
        Some(_) => return Err(invalid(format!("{base}.timeframe"), "must be a string")),
        None => return Err(invalid(format!("{base}.timeframe"), "is missing")),
    };
    let requests = match inputs.get("requests") {
        Some(Value::Array(a)) if a.is_empty() => return Err(invalid(format!("{base}.requests"), "must not be empty")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(invalid(format!("{base}.requests"), "must be a list")),
        None => return Err(invalid(format!("{base}.requests"), "is missing")),
    };
    let mut ids: Vec<TemplateId> = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let field = format!("{base}.requests[{i}].chartTemplateId");
        let raw = r
            .get("chartTemplateId")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&field, "is missing or not a string"))?;
        let id = TemplateId::parse(raw).map_err(|e| invalid(&field, e.to_string()))?;
        if let Some(first) = ids.iter().position(|x| *x == id) {
            return Err(invalid(field, format!("duplicates requests[{first}] ({id})")));
        }
        ids.push(id);
    }
    let min_images = match inputs.get("minImages") {
        None => ids.len() as u32,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= u32::MAX as u64 => n as u32,
            _ => return Err(invalid(format!("{base}.minImages"), "must be a positive integer")),
        },
    };
    if min_images as usize > ids.len() {
        return Err(invalid(
            format!("{base}.minImages"),
            format!("is {min_images} but only {} requests are listed", ids.len()),
        ));
    }
    Ok(ValidStep {
        symbol,
        timeframe,
        min_images,
        requests: ids,
        charts_generated_at: parse_time(step.get(CHARTS_GENERATED_AT)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(now: &str) -> ClaimParams {
        params_with("t-1", now)
    }

    fn params_with(token: &str, now: &str) -> ClaimParams {
        ClaimParams {
            worker: WorkerId::parse("w-1").unwrap(),
            token: ClaimToken::parse(token).unwrap(),
            now: at(now),
            lease: Duration::minutes(15),
            max_attempts: 3,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn status_patch(status: &str) -> StepPatch {
        let mut fields = BTreeMap::new();
        fields.insert("status".to_owned(), Some(json!(status)));
        StepPatch {
            step_id: StepId::parse("charts_4h").unwrap(),
            fields,
        }
    }

    fn doc() -> Value {
        json!({
            "scope": {"symbol": "BTCUSDT"},
            "steps": {
                "z_other": {"stepType": "OTHER", "status": "READY"},
                "charts_4h": {"stepType": "CHART_EXPORT", "status": "READY",
                    "inputs": {"timeframe": "4h", "minImages": 1, "requests": [{"chartTemplateId": "a"}]}},
                "charts_1d": {"stepType": "CHART_EXPORT", "status": "PENDING"},
                "a_done": {"stepType": "CHART_EXPORT", "status": "SUCCEEDED"}
            }
        })
    }

    #[test]
    fn the_charts_time_is_fixed_at_the_first_claim_and_unique_in_the_run() {
        let mut d = doc();
        d["steps"]["charts_1h"] =
            json!({"stepType": "CHART_EXPORT", "status": "SUCCEEDED", "chartsGeneratedAt": "2026-11-28T10:00:00Z"});
        d["steps"]["charts_2h"] =
            json!({"stepType": "CHART_EXPORT", "status": "FAILED", "chartsGeneratedAt": "2026-11-28T10:00:01Z"});
        let p = params("2026-11-28T10:00:00.700Z");
        let (out, _) = decide_claim(
            Some(&d),
            &StepSelector::Explicit(StepId::parse("charts_4h").unwrap()),
            &p,
        );
        let ClaimOutcome::Claimed { run, .. } = out else {
            panic!("{out:?}")
        };
        // 10:00:00 and 10:00:01 are taken by the run's other steps.
        assert_eq!(run["steps"]["charts_4h"]["chartsGeneratedAt"], "2026-11-28T10:00:02Z");
        // A later claim (after a release) keeps the time, so the names an earlier attempt wrote are found again.
        let mut released = run.clone();
        released["steps"]["charts_4h"]["status"] = json!("READY");
        let later = params("2026-11-28T11:30:00Z");
        let (out, patch) = decide_claim(Some(&released), &StepSelector::First, &later);
        let ClaimOutcome::Claimed { run, .. } = out else {
            panic!("{out:?}")
        };
        assert_eq!(run["steps"]["charts_4h"]["chartsGeneratedAt"], "2026-11-28T10:00:02Z");
        assert!(!patch.unwrap().fields.contains_key(CHARTS_GENERATED_AT));
    }

    #[test]
    fn first_picks_the_lowest_ready_chart_export_step_and_writes_the_claim_fields() {
        let (out, patch) = decide_claim(Some(&doc()), &StepSelector::First, &params("2026-11-28T10:00:00Z"));
        let ClaimOutcome::Claimed {
            step_id,
            run,
            reclaimed,
            attempt,
            give_up: None,
        } = out
        else {
            panic!("{out:?}")
        };
        assert_eq!(step_id.as_str(), "charts_4h");
        let step = &run["steps"]["charts_4h"];
        assert_eq!(run["steps"]["z_other"], doc()["steps"]["z_other"]);
        assert!(!reclaimed);
        assert_eq!(attempt, 1);
        assert_eq!(step["status"], "RUNNING");
        assert_eq!(step["claimToken"], "t-1");
        assert_eq!(step["attempts"], 1);
        assert_eq!(step["leaseExpiresAt"], "2026-11-28T10:15:00Z");
        assert_eq!(
            patch.unwrap().field_paths(),
            vec![
                "steps.charts_4h.attempts",
                "steps.charts_4h.chartsGeneratedAt",
                "steps.charts_4h.claimToken",
                "steps.charts_4h.claimedBy",
                "steps.charts_4h.leaseExpiresAt",
                "steps.charts_4h.notBefore",
                "steps.charts_4h.startedAt",
                "steps.charts_4h.status"
            ]
        );
    }

    #[test]
    fn explicit_selector_reports_each_non_claimable_case() {
        let p = params("2026-11-28T10:00:00Z");
        let sel = |s: &str| StepSelector::Explicit(StepId::parse(s).unwrap());
        assert!(matches!(
            decide_claim(Some(&doc()), &sel("nope"), &p).0,
            ClaimOutcome::StepNotFound { .. }
        ));
        assert!(matches!(
            decide_claim(Some(&doc()), &sel("z_other"), &p).0,
            ClaimOutcome::WrongStepType { .. }
        ));
        assert!(matches!(
            decide_claim(Some(&doc()), &sel("a_done"), &p).0,
            ClaimOutcome::AlreadyFinished { .. }
        ));
        assert!(matches!(
            decide_claim(Some(&doc()), &sel("charts_1d"), &p).0,
            ClaimOutcome::NotClaimable { .. }
        ));
        assert_eq!(decide_claim(None, &sel("x"), &p).0, ClaimOutcome::RunNotFound);
    }

    #[test]
    fn a_running_step_is_reclaimed_only_after_its_lease() {
        let mut d = doc();
        d["steps"]["charts_4h"]["status"] = json!("RUNNING");
        d["steps"]["charts_4h"]["claimedBy"] = json!("w-0");
        d["steps"]["charts_4h"]["leaseExpiresAt"] = json!("2026-11-28T10:05:00Z");
        let (out, _) = decide_claim(Some(&d), &StepSelector::First, &params("2026-11-28T10:04:59Z"));
        assert!(
            matches!(out, ClaimOutcome::AlreadyRunning { ref lease_expires_at, .. } if lease_expires_at.as_deref() == Some("2026-11-28T10:05:00Z")),
            "{out:?}"
        );
        let sel = StepSelector::Explicit(StepId::parse("charts_4h").unwrap());
        let (out, _) = decide_claim(Some(&d), &sel, &params("2026-11-28T10:04:59Z"));
        assert!(matches!(out, ClaimOutcome::AlreadyRunning { claimed_by: Some(ref w), .. } if w == "w-0"));
        let (out, _) = decide_claim(Some(&d), &sel, &params("2026-11-28T10:05:00Z"));
        assert!(matches!(out, ClaimOutcome::Claimed { reclaimed: true, .. }));
    }

    #[test]
    fn only_the_claim_token_of_a_running_step_may_patch_it() {
        let mut d = doc();
        let mine = ClaimToken::parse("t-1").unwrap();
        let other = ClaimToken::parse("t-2").unwrap();
        let done = status_patch("SUCCEEDED");
        assert!(matches!(
            check_owner(Some(&d), &done, &mine),
            PatchOutcome::NotOwner { .. }
        ));
        d["steps"]["charts_4h"]["status"] = json!("RUNNING");
        d["steps"]["charts_4h"]["claimedBy"] = json!("w-1");
        d["steps"]["charts_4h"]["claimToken"] = json!("t-1");
        assert_eq!(check_owner(Some(&d), &done, &mine), PatchOutcome::Applied);
        // Same process, another claim: not ours.
        assert!(matches!(
            check_owner(Some(&d), &done, &other),
            PatchOutcome::NotOwner { .. }
        ));
        let mut missing = done.clone();
        missing.step_id = StepId::parse("x").unwrap();
        assert_eq!(check_owner(Some(&d), &missing, &mine), PatchOutcome::StepMissing);
        // A retried finalize whose first try landed.
        d["steps"]["charts_4h"]["status"] = json!("SUCCEEDED");
        assert_eq!(check_owner(Some(&d), &done, &mine), PatchOutcome::AlreadyApplied);
        assert!(matches!(
            check_owner(Some(&d), &status_patch("FAILED"), &mine),
            PatchOutcome::NotOwner { .. }
        ));
        assert!(matches!(
            check_owner(Some(&d), &done, &other),
            PatchOutcome::NotOwner { .. }
        ));
    }

    #[test]
    fn a_retried_claim_finds_its_own_token_and_writes_nothing() {
        let p = params("2026-11-28T10:00:00Z");
        let (_, patch) = decide_claim(Some(&doc()), &StepSelector::First, &p);
        let mut d = doc();
        patch.unwrap().apply_to(&mut d);
        let (again, write) = decide_claim(Some(&d), &StepSelector::First, &p);
        assert!(
            matches!(
                again,
                ClaimOutcome::Claimed {
                    attempt: 1,
                    reclaimed: false,
                    ..
                }
            ),
            "{again:?}"
        );
        assert!(write.is_none());
        // Another claim attempt (new token) of the same process meets a live lease.
        let (other, _) = decide_claim(
            Some(&d),
            &StepSelector::First,
            &params_with("t-9", "2026-11-28T10:00:01Z"),
        );
        assert!(matches!(other, ClaimOutcome::AlreadyRunning { .. }), "{other:?}");
    }

    #[test]
    fn a_released_step_waits_for_its_not_before_time_and_counts_attempts() {
        let mut d = doc();
        let id = StepId::parse("charts_4h").unwrap();
        let (_, claim) = decide_claim(Some(&d), &StepSelector::First, &params("2026-11-28T10:00:00Z"));
        claim.unwrap().apply_to(&mut d);
        let r = ReleaseParams {
            now: at("2026-11-28T10:00:05Z"),
            not_before: at("2026-11-28T10:00:15Z"),
            code: "STORE_FAILED".into(),
            message: "unavailable".into(),
            attempts: None,
            charts_rendered: 0,
            charts_stored: 0,
            handed_back: None,
        };
        let release = release_patch(&id, &r);
        assert_eq!(
            check_owner(Some(&d), &release, &ClaimToken::parse("t-1").unwrap()),
            PatchOutcome::Applied
        );
        release.apply_to(&mut d);
        assert_eq!(
            check_owner(Some(&d), &release, &ClaimToken::parse("t-1").unwrap()),
            PatchOutcome::AlreadyApplied
        );
        assert_eq!(
            event_verdict(&d, &StepSelector::First, at("2026-11-28T10:00:10Z")),
            EventVerdict::NotYet {
                not_before: "2026-11-28T10:00:15Z".into()
            }
        );
        let (early, _) = decide_claim(
            Some(&d),
            &StepSelector::First,
            &params_with("t-2", "2026-11-28T10:00:14Z"),
        );
        assert!(matches!(early, ClaimOutcome::NotYet { .. }), "{early:?}");
        let (late, patch) = decide_claim(
            Some(&d),
            &StepSelector::First,
            &params_with("t-2", "2026-11-28T10:00:15Z"),
        );
        assert!(matches!(late, ClaimOutcome::Claimed { attempt: 2, .. }), "{late:?}");
        patch.unwrap().apply_to(&mut d);
        assert!(d["steps"]["charts_4h"].get("notBefore").is_none());
        assert_eq!(d["steps"]["charts_4h"]["lastError"]["code"], "STORE_FAILED");
    }

    #[test]
    fn an_attempt_that_stored_charts_hands_its_attempt_back() {
        let id = StepId::parse("charts_4h").unwrap();
        let token = ClaimToken::parse("t-1").unwrap();
        // The first holder renews with two charts stored, then dies; its lease runs out.
        let mut d = doc();
        let (_, claim) = decide_claim(Some(&d), &StepSelector::First, &params("2026-11-28T10:00:00Z"));
        claim.unwrap().apply_to(&mut d);
        let renewal = renew_patch(&id, at("2026-11-28T10:01:20Z"), 2, 3);
        assert_eq!(check_owner(Some(&d), &renewal, &token), PatchOutcome::Applied);
        renewal.apply_to(&mut d);
        assert_eq!(d["steps"]["charts_4h"][CHARTS_RENDERED], 2);
        assert_eq!(charts_stored_of(&d["steps"]["charts_4h"]), 3);
        // Out of attempts by count (3 of 3), but the last one made progress: a regular claim, not a give-up.
        d["steps"]["charts_4h"]["attempts"] = json!(3);
        let mut p = params_with("t-2", "2026-11-28T10:02:00Z");
        p.max_attempts = 3;
        let (out, patch) = decide_claim(Some(&d), &StepSelector::First, &p);
        assert!(
            matches!(
                out,
                ClaimOutcome::Claimed {
                    attempt: 3,
                    reclaimed: true,
                    give_up: None,
                    ..
                }
            ),
            "{out:?}"
        );
        patch.unwrap().apply_to(&mut d);
        assert!(
            d["steps"]["charts_4h"].get(CHARTS_RENDERED).is_none(),
            "cleared by the claim"
        );
        assert_eq!(
            charts_stored_of(&d["steps"]["charts_4h"]),
            3,
            "kept by the claim: the give-up compares what is stored with it"
        );
        // That holder dies too before storing anything, with the fleet's hand-backs used up: now the attempt
        // counts, and the next claim gives up.
        d["steps"]["charts_4h"][ATTEMPTS_HANDED_BACK] = json!(3);
        let mut p = params_with("t-3", "2026-11-28T10:20:00Z");
        p.max_attempts = 3;
        let (out, _) = decide_claim(Some(&d), &StepSelector::First, &p);
        assert!(
            matches!(
                out,
                ClaimOutcome::Claimed {
                    attempt: 4,
                    give_up: Some(_),
                    ..
                }
            ),
            "{out:?}"
        );
        // A renewal with nothing stored writes no count.
        let empty = renew_patch(&id, at("2026-11-28T10:01:20Z"), 0, 0);
        assert!(!empty.fields.contains_key(CHARTS_RENDERED) && !empty.fields.contains_key(CHARTS_STORED));
    }

    #[test]
    fn a_release_records_progress_unless_it_hands_the_attempt_back_itself() {
        let id = StepId::parse("charts_4h").unwrap();
        let release = |attempts, charts_rendered| {
            release_patch(
                &id,
                &ReleaseParams {
                    now: at("2026-11-28T10:00:05Z"),
                    not_before: at("2026-11-28T10:00:15Z"),
                    code: "GCS_WRITE_FAILED".into(),
                    message: "503".into(),
                    attempts,
                    charts_rendered,
                    charts_stored: charts_rendered + 1,
                    handed_back: attempts.map(|_| 1),
                },
            )
        };
        assert_eq!(release(None, 4).fields[CHARTS_RENDERED], Some(json!(4)));
        assert_eq!(release(None, 4).fields[CHARTS_STORED], Some(json!(5)));
        assert!(!release(None, 0).fields.contains_key(CHARTS_RENDERED));
        // A shutdown hands its attempt back already: not a second time at the next claim; what is stored is kept.
        assert_eq!(release(Some(1), 4).fields[CHARTS_RENDERED], None);
        assert_eq!(release(Some(1), 4).fields[CHARTS_STORED], Some(json!(5)));
        assert_eq!(release(Some(1), 4).fields[ATTEMPTS_HANDED_BACK], Some(json!(1)));
        assert!(!release(None, 4).fields.contains_key(ATTEMPTS_HANDED_BACK));
    }

    #[test]
    fn a_step_out_of_attempts_is_claimed_only_to_be_settled_with_the_last_error() {
        let mut d = doc();
        d["steps"]["charts_4h"]["attempts"] = json!(3);
        d["steps"]["charts_4h"]["lastError"] = json!({"code": "GCS_WRITE_FAILED", "message": "503"});
        let (out, patch) = decide_claim(Some(&d), &StepSelector::First, &params("2026-11-28T10:00:00Z"));
        let ClaimOutcome::Claimed {
            attempt,
            give_up: Some(ref g),
            ..
        } = out
        else {
            panic!("{out:?}")
        };
        assert_eq!((attempt, g.code.as_str()), (4, "GCS_WRITE_FAILED"));
        assert!(g.message.contains("gave up after 3 attempts; last error: 503"), "{g:?}");
        patch.unwrap().apply_to(&mut d);
        // Held (so its manifest can be looked for), not finalized by the claim.
        assert_eq!(d["steps"]["charts_4h"]["status"], "RUNNING");
        // A retried commit of that claim still knows it only settles the step.
        let (again, _) = decide_claim(Some(&d), &StepSelector::First, &params("2026-11-28T10:00:01Z"));
        assert!(
            matches!(again, ClaimOutcome::Claimed { give_up: Some(_), .. }),
            "{again:?}"
        );
        // The last regular attempt is not a give-up.
        let mut d = doc();
        d["steps"]["charts_4h"]["attempts"] = json!(2);
        let (out, _) = decide_claim(Some(&d), &StepSelector::First, &params("2026-11-28T10:00:00Z"));
        assert!(
            matches!(
                out,
                ClaimOutcome::Claimed {
                    attempt: 3,
                    give_up: None,
                    ..
                }
            ),
            "{out:?}"
        );
        // A crashed holder's expired lease is recorded as the last error of a reclaim (the fleet's hand-backs used
        // up, so its attempt counts).
        let mut d = doc();
        d["steps"]["charts_4h"]["status"] = json!("RUNNING");
        d["steps"]["charts_4h"]["claimedBy"] = json!("w-dead");
        d["steps"]["charts_4h"]["leaseExpiresAt"] = json!("2026-11-28T09:00:00Z");
        d["steps"]["charts_4h"]["attempts"] = json!(3);
        d["steps"]["charts_4h"][ATTEMPTS_HANDED_BACK] = json!(3);
        let (out, _) = decide_claim(Some(&d), &StepSelector::First, &params("2026-11-28T10:00:00Z"));
        assert!(
            matches!(out, ClaimOutcome::Claimed { give_up: Some(ref g), .. } if g.code == "STEP_ABANDONED"),
            "{out:?}"
        );
    }

    #[test]
    fn a_vanished_holder_is_charged_to_the_fleet_until_its_hand_backs_are_used_up() {
        // Holders of the last attempt (3 of 3) keep dying before any progress is on record.
        let dead = |d: &mut Value, handed: Option<u32>| {
            let s = &mut d["steps"]["charts_4h"];
            s["status"] = json!("RUNNING");
            s["claimedBy"] = json!("w-dead");
            s["claimToken"] = json!("t-dead");
            s["leaseExpiresAt"] = json!("2026-11-28T09:00:00Z");
            s["attempts"] = json!(3);
            if let Some(n) = handed {
                s[ATTEMPTS_HANDED_BACK] = json!(n);
            }
        };
        let mut d = doc();
        dead(&mut d, None);
        for n in 1..=3 {
            let (out, patch) = decide_claim(Some(&d), &StepSelector::First, &params("2026-11-28T10:00:00Z"));
            assert_eq!(claimed_as(&out), Some((3, true, false)), "hand-back {n}: {out:?}");
            let patch = patch.unwrap();
            assert_eq!(patch.fields[ATTEMPTS_HANDED_BACK], Some(json!(n)));
            let e = patch.fields["lastError"].clone().unwrap();
            assert_eq!(e["code"], "STEP_ABANDONED");
            let m = e["message"].as_str().unwrap();
            assert!(
                m.contains(&format!("its attempt was handed back ({n} of 3 such hand-backs)")),
                "{m}"
            );
            patch.apply_to(&mut d);
            dead(&mut d, None);
        }
        // The fleet's share used up: the next vanished holder's attempt counts, and the claim gives up.
        let (out, patch) = decide_claim(Some(&d), &StepSelector::First, &params("2026-11-28T10:00:00Z"));
        assert!(
            matches!(out, ClaimOutcome::Claimed { attempt: 4, give_up: Some(ref g), .. } if g.code == "STEP_ABANDONED"),
            "{out:?}"
        );
        assert!(!patch.unwrap().fields.contains_key(ATTEMPTS_HANDED_BACK));
        // A dead holder with progress on record is handed back without using the fleet's share.
        let mut d = doc();
        dead(&mut d, Some(1));
        d["steps"]["charts_4h"][CHARTS_RENDERED] = json!(2);
        let (out, patch) = decide_claim(Some(&d), &StepSelector::First, &params("2026-11-28T10:00:00Z"));
        assert_eq!(claimed_as(&out), Some((3, true, false)), "{out:?}");
        assert!(!patch.unwrap().fields.contains_key(ATTEMPTS_HANDED_BACK));
    }

    /// A claim's attempt, whether it reclaimed, and whether it gives up; `None` for any other outcome.
    fn claimed_as(out: &ClaimOutcome) -> Option<(u32, bool, bool)> {
        match out {
            ClaimOutcome::Claimed {
                attempt,
                reclaimed,
                give_up,
                ..
            } => Some((*attempt, *reclaimed, give_up.is_some())),
            _ => None,
        }
    }

    #[test]
    fn patches_touch_only_their_step_fields() {
        let mut d = doc();
        let mut fields = BTreeMap::new();
        fields.insert("status".to_owned(), Some(json!("FAILED")));
        fields.insert("inputs".to_owned(), None);
        StepPatch {
            step_id: StepId::parse("charts_4h").unwrap(),
            fields,
        }
        .apply_to(&mut d);
        assert_eq!(
            d["steps"]["charts_4h"],
            json!({"stepType": "CHART_EXPORT", "status": "FAILED"})
        );
        assert_eq!(d["steps"]["z_other"], json!({"stepType": "OTHER", "status": "READY"}));
        assert_eq!(d["scope"], json!({"symbol": "BTCUSDT"}));
    }

    fn check_invalid(mutate: impl FnOnce(&mut Value), field: &str, problem: &str) {
        let mut d = doc();
        mutate(&mut d);
        let id = StepId::parse("charts_4h").unwrap();
        let step = d["steps"]["charts_4h"].clone();
        let err = validate_step(&d, &id, &step).unwrap_err();
        assert_eq!(err.field, field, "{err}");
        assert!(err.problem.contains(problem), "{err}");
    }

    #[test]
    fn step_validation_names_the_field() {
        check_invalid(
            |d| d["scope"]["symbol"] = json!("BTC/USDT"),
            "scope.symbol",
            "without '/'",
        );
        check_invalid(|d| d["scope"] = json!({}), "scope.symbol", "missing");
        check_invalid(
            |d| d["steps"]["charts_4h"]["inputs"]["timeframe"] = json!("4H"),
            "steps.charts_4h.inputs.timeframe",
            "unknown timeframe \"4H\"",
        );
        check_invalid(
            |d| d["steps"]["charts_4h"]["inputs"]["minImages"] = json!(2),
            "steps.charts_4h.inputs.minImages",
            "is 2 but only 1 requests",
        );
        check_invalid(
            |d| {
                d["steps"]["charts_4h"]["inputs"]["requests"] =
                    json!([{"chartTemplateId": "a"}, {"chartTemplateId": "a"}])
            },
            "steps.charts_4h.inputs.requests[1].chartTemplateId",
            "duplicates requests[0]",
        );
        check_invalid(
            |d| d["steps"]["charts_4h"]["inputs"]["requests"] = json!([]),
            "steps.charts_4h.inputs.requests",
            "must not be empty",
        );
    }

    #[test]
    fn a_valid_step_parses() {
        let d = doc();
        let id = StepId::parse("charts_4h").unwrap();
        let v = validate_step(&d, &id, &d["steps"]["charts_4h"]).unwrap();
        assert_eq!(v.symbol, "BTCUSDT");
        assert_eq!(v.timeframe.as_str(), "4h");
        assert_eq!(v.min_images, 1);
    }

    #[test]
    fn quick_filter_ignores_our_own_writes() {
        let now = Utc::now();
        let mut d = doc();
        assert!(has_claimable_step(&d, &StepSelector::First, now));
        d["steps"]["charts_4h"]["status"] = json!("RUNNING");
        d["steps"]["charts_4h"]["leaseExpiresAt"] = json!(rfc3339(now + Duration::minutes(5)));
        assert!(!has_claimable_step(&d, &StepSelector::First, now));
        assert_eq!(event_verdict(&d, &StepSelector::First, now), EventVerdict::HeldLive);
        d["steps"]["charts_4h"]["leaseExpiresAt"] = json!(rfc3339(now - Duration::minutes(5)));
        assert_eq!(event_verdict(&d, &StepSelector::First, now), EventVerdict::Claimable);
    }
}
