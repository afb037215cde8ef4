//! The `flow_runs/{runId}` document as the worker sees it: step selection, the claim decision, the ownership check of a
//! finalize, and step-level validation. Pure functions over `serde_json::Value`, so every store adapter (in-memory,
//! local files, Firestore) runs the very same decision inside its own transaction.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::ids::{StepId, TemplateId, WorkerId};
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
    pub now: DateTime<Utc>,
    pub lease: Duration,
}

/// The closed set of answers to "claim a step". Only `Claimed` is followed by a write.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum ClaimOutcome {
    /// The step is ours: `READY -> RUNNING` (or a RUNNING step whose lease had expired) was written.
    /// `run` is the whole document as the transaction left it, so the core needs no second read.
    Claimed { step_id: StepId, run: Value, reclaimed: bool },
    RunNotFound,
    /// No CHART_EXPORT step is READY (or RUNNING with an expired lease).
    NoClaimableStep,
    StepNotFound { step_id: StepId },
    WrongStepType { step_id: StepId, step_type: String },
    /// Another worker holds a live lease.
    AlreadyRunning { step_id: StepId, claimed_by: Option<String> },
    AlreadyFinished { step_id: StepId, status: String },
    /// PENDING or an unknown status: not ours to touch.
    NotClaimable { step_id: StepId, status: String },
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
        self.fields.keys().map(|f| format!("steps.{}.{}", self.step_id, f)).collect()
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

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v?.as_str()?).ok().map(|t| t.with_timezone(&Utc))
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

/// Decides a claim on the document as read inside a transaction. Returns the outcome and, for `Claimed`, the patch
/// the transaction must write.
pub fn decide_claim(doc: Option<&Value>, selector: &StepSelector, p: &ClaimParams) -> (ClaimOutcome, Option<StepPatch>) {
    let Some(doc) = doc else { return (ClaimOutcome::RunNotFound, None) };
    let steps = doc.get("steps").and_then(Value::as_object);
    let pick: Option<(StepId, &Value)> = match selector {
        StepSelector::Explicit(id) => match steps.and_then(|s| s.get(id.as_str())) {
            Some(step) => Some((id.clone(), step)),
            None => return (ClaimOutcome::StepNotFound { step_id: id.clone() }, None),
        },
        StepSelector::First => {
            // serde_json keeps insertion order; the contract says stepId order, so sort explicitly.
            let mut candidates: Vec<(&String, &Value)> = steps
                .into_iter()
                .flatten()
                .filter(|(_, s)| step_type(s) == CHART_EXPORT)
                .filter(|(_, s)| match status_of(s) {
                    StepStatus::Ready => true,
                    StepStatus::Running => lease_expired(s, p.now),
                    _ => false,
                })
                .collect();
            candidates.sort_by(|a, b| a.0.cmp(b.0));
            match candidates.first() {
                Some((id, step)) => match StepId::parse(id.as_str()) {
                    Ok(id) => Some((id, *step)),
                    Err(_) => None,
                },
                None => None,
            }
        }
    };
    let Some((step_id, step)) = pick else { return (ClaimOutcome::NoClaimableStep, None) };
    if step_type(step) != CHART_EXPORT {
        let step_type = step_type(step).to_owned();
        return (ClaimOutcome::WrongStepType { step_id, step_type }, None);
    }
    let reclaimed = match status_of(step) {
        StepStatus::Ready => false,
        StepStatus::Running if lease_expired(step, p.now) => true,
        StepStatus::Running => {
            let claimed_by = step.get("claimedBy").and_then(Value::as_str).map(str::to_owned);
            return (ClaimOutcome::AlreadyRunning { step_id, claimed_by }, None);
        }
        s @ (StepStatus::Succeeded | StepStatus::Failed) => {
            return (ClaimOutcome::AlreadyFinished { step_id, status: s.as_str().to_owned() }, None);
        }
        s => return (ClaimOutcome::NotClaimable { step_id, status: s.as_str().to_owned() }, None),
    };
    let mut fields = BTreeMap::new();
    fields.insert("status".to_owned(), Some(json!("RUNNING")));
    fields.insert("claimedBy".to_owned(), Some(json!(p.worker.as_str())));
    fields.insert("startedAt".to_owned(), Some(json!(rfc3339(p.now))));
    fields.insert("leaseExpiresAt".to_owned(), Some(json!(rfc3339(p.now + p.lease))));
    let patch = StepPatch { step_id: step_id.clone(), fields };
    let mut run = doc.clone();
    patch.apply_to(&mut run);
    (ClaimOutcome::Claimed { step_id, run, reclaimed }, Some(patch))
}

/// The answer of a guarded patch (finalize, release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum PatchOutcome {
    Applied,
    /// The step is no longer RUNNING under this worker: finished, released, or reclaimed by another after our lease.
    NotOwner { status: String, claimed_by: Option<String> },
    StepMissing,
}

/// A finalize or release applies only while the step is RUNNING and claimed by `worker`.
pub fn check_owner(doc: Option<&Value>, step_id: &StepId, worker: &WorkerId) -> PatchOutcome {
    let Some(step) = doc.and_then(|d| d.get("steps")).and_then(|s| s.get(step_id.as_str())) else {
        return PatchOutcome::StepMissing;
    };
    let claimed_by = step.get("claimedBy").and_then(Value::as_str);
    let status = status_of(step);
    if status == StepStatus::Running && claimed_by == Some(worker.as_str()) {
        PatchOutcome::Applied
    } else {
        PatchOutcome::NotOwner { status: status.as_str().to_owned(), claimed_by: claimed_by.map(str::to_owned) }
    }
}

/// The quick filter of the contract, run on event data before any store call: does this document hold a step that
/// a claim could take right now? Our own writes (RUNNING, SUCCEEDED, FAILED) answer `false`.
pub fn has_claimable_step(doc: &Value, selector: &StepSelector, now: DateTime<Utc>) -> bool {
    let Some(steps) = doc.get("steps").and_then(Value::as_object) else { return false };
    let claimable = |s: &Value| {
        step_type(s) == CHART_EXPORT
            && match status_of(s) {
                StepStatus::Ready => true,
                StepStatus::Running => lease_expired(s, now),
                _ => false,
            }
    };
    match selector {
        StepSelector::First => steps.values().any(claimable),
        StepSelector::Explicit(id) => steps.get(id.as_str()).is_some_and(claimable),
    }
}

/// The inputs of a claimed step after step-level validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidStep {
    pub symbol: String,
    pub timeframe: Timeframe,
    pub min_images: u32,
    pub requests: Vec<TemplateId>,
}

/// A step-level validation failure: the field path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct StepInvalid {
    pub field: String,
    pub problem: String,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> StepInvalid {
    StepInvalid { field: field.into(), problem: problem.into() }
}

/// Validates `scope.symbol` and `steps.<id>.inputs` of a claimed step. Template contents are checked per request later.
pub fn validate_step(doc: &Value, step_id: &StepId, step: &Value) -> Result<ValidStep, StepInvalid> {
    let symbol = match doc.get("scope").and_then(|s| s.get("symbol")) {
        Some(Value::String(s)) if s.trim().is_empty() => return Err(invalid("scope.symbol", "must not be empty")),
        Some(Value::String(s)) if s.contains('/') => {
            return Err(invalid("scope.symbol", format!("must be a bare instrument without '/', got {s:?}")))
        }
        Some(Value::String(s)) if s.contains(':') || s.chars().any(char::is_whitespace) => {
            return Err(invalid("scope.symbol", format!("must be a bare instrument like BTCUSDT, got {s:?}")))
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
        Some(Value::String(s)) => Timeframe::parse(s).map_err(|e| invalid(format!("{base}.timeframe"), e.to_string()))?,
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
        let raw = r.get("chartTemplateId").and_then(Value::as_str).ok_or_else(|| invalid(&field, "is missing or not a string"))?;
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
    Ok(ValidStep { symbol, timeframe, min_images, requests: ids })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(now: &str) -> ClaimParams {
        ClaimParams {
            worker: WorkerId::parse("w-1").unwrap(),
            now: DateTime::parse_from_rfc3339(now).unwrap().with_timezone(&Utc),
            lease: Duration::minutes(15),
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
    fn first_picks_the_lowest_ready_chart_export_step_and_writes_the_claim_fields() {
        let (out, patch) = decide_claim(Some(&doc()), &StepSelector::First, &params("2026-11-28T10:00:00Z"));
        let ClaimOutcome::Claimed { step_id, run, reclaimed } = out else { panic!("{out:?}") };
        assert_eq!(step_id.as_str(), "charts_4h");
        let step = &run["steps"]["charts_4h"];
        assert_eq!(run["steps"]["z_other"], doc()["steps"]["z_other"]);
        assert!(!reclaimed);
        assert_eq!(step["status"], "RUNNING");
        assert_eq!(step["leaseExpiresAt"], "2026-11-28T10:15:00Z");
        assert_eq!(
            patch.unwrap().field_paths(),
            vec![
                "steps.charts_4h.claimedBy",
                "steps.charts_4h.leaseExpiresAt",
                "steps.charts_4h.startedAt",
                "steps.charts_4h.status"
            ]
        );
    }

    #[test]
    fn explicit_selector_reports_each_non_claimable_case() {
        let p = params("2026-11-28T10:00:00Z");
        let sel = |s: &str| StepSelector::Explicit(StepId::parse(s).unwrap());
        assert!(matches!(decide_claim(Some(&doc()), &sel("nope"), &p).0, ClaimOutcome::StepNotFound { .. }));
        assert!(matches!(decide_claim(Some(&doc()), &sel("z_other"), &p).0, ClaimOutcome::WrongStepType { .. }));
        assert!(matches!(decide_claim(Some(&doc()), &sel("a_done"), &p).0, ClaimOutcome::AlreadyFinished { .. }));
        assert!(matches!(decide_claim(Some(&doc()), &sel("charts_1d"), &p).0, ClaimOutcome::NotClaimable { .. }));
        assert_eq!(decide_claim(None, &sel("x"), &p).0, ClaimOutcome::RunNotFound);
    }

    #[test]
    fn a_running_step_is_reclaimed_only_after_its_lease() {
        let mut d = doc();
        d["steps"]["charts_4h"]["status"] = json!("RUNNING");
        d["steps"]["charts_4h"]["claimedBy"] = json!("w-0");
        d["steps"]["charts_4h"]["leaseExpiresAt"] = json!("2026-11-28T10:05:00Z");
        let (out, _) = decide_claim(Some(&d), &StepSelector::First, &params("2026-11-28T10:04:59Z"));
        assert_eq!(out, ClaimOutcome::NoClaimableStep);
        let sel = StepSelector::Explicit(StepId::parse("charts_4h").unwrap());
        let (out, _) = decide_claim(Some(&d), &sel, &params("2026-11-28T10:04:59Z"));
        assert!(matches!(out, ClaimOutcome::AlreadyRunning { claimed_by: Some(ref w), .. } if w == "w-0"));
        let (out, _) = decide_claim(Some(&d), &sel, &params("2026-11-28T10:05:00Z"));
        assert!(matches!(out, ClaimOutcome::Claimed { reclaimed: true, .. }));
    }

    #[test]
    fn only_the_owner_of_a_running_step_may_patch_it() {
        let mut d = doc();
        let id = StepId::parse("charts_4h").unwrap();
        let me = WorkerId::parse("w-1").unwrap();
        assert!(matches!(check_owner(Some(&d), &id, &me), PatchOutcome::NotOwner { .. }));
        d["steps"]["charts_4h"]["status"] = json!("RUNNING");
        d["steps"]["charts_4h"]["claimedBy"] = json!("w-1");
        assert_eq!(check_owner(Some(&d), &id, &me), PatchOutcome::Applied);
        assert_eq!(check_owner(Some(&d), &StepId::parse("x").unwrap(), &me), PatchOutcome::StepMissing);
    }

    #[test]
    fn patches_touch_only_their_step_fields() {
        let mut d = doc();
        let mut fields = BTreeMap::new();
        fields.insert("status".to_owned(), Some(json!("FAILED")));
        fields.insert("inputs".to_owned(), None);
        StepPatch { step_id: StepId::parse("charts_4h").unwrap(), fields }.apply_to(&mut d);
        assert_eq!(d["steps"]["charts_4h"], json!({"stepType": "CHART_EXPORT", "status": "FAILED"}));
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
        check_invalid(|d| d["scope"]["symbol"] = json!("BTC/USDT"), "scope.symbol", "without '/'");
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
            |d| d["steps"]["charts_4h"]["inputs"]["requests"] = json!([{"chartTemplateId": "a"}, {"chartTemplateId": "a"}]),
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
    }
}
