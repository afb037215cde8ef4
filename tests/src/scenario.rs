//! The scenario file format (documented in `scenarios/README.md`). Parsing is strict: an unknown field or a wrong
//! type is an error naming the file, the field path and the line.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scenario {
    /// One sentence: the situation and what must happen.
    pub description: String,
    pub given: Given,
    #[serde(default)]
    pub when: When,
    pub then: Then,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Given {
    /// `flow_runs/{runId}`; the run id is the file stem (underscores become hyphens) unless `runId` is set.
    pub flow_run: Value,
    #[serde(default)]
    pub run_id: Option<String>,
    /// Template ids from `scenarios/templates/`, or a map of id → inline template document.
    #[serde(default)]
    pub templates: Templates,
    /// `chart_img_accounts_usage/{id}` documents; `$TODAY`, `$YESTERDAY` and `$TOMORROW` in strings become UTC dates.
    #[serde(default)]
    pub usage: BTreeMap<String, Value>,
    /// Accounts; each gets a fresh random API key that the run then checks for leaks.
    pub accounts: Vec<Account>,
    /// Faults installed in mock-chart-img (its `FaultSpec` format; `account` names an account id).
    #[serde(default)]
    pub faults: Vec<mock_chart_img::FaultSpec>,
    /// `real` (default, against mock-chart-img over HTTP), `mock` (replay `cassette`) or `record`.
    #[serde(default = "real")]
    pub mode: String,
    /// A cassette directory relative to the repository root (mode `mock`).
    #[serde(default)]
    pub cassette: Option<String>,
    /// `unavailable` points the worker at a storage endpoint that refuses connections.
    #[serde(default)]
    pub gcs: Option<String>,
    /// Retry policy of the worker, for scenarios that exercise backoff.
    #[serde(default)]
    pub retry: Option<Retry>,
    /// Lease of a claim in seconds (default: the worker's; `CHART_EXPORT_LEASE_SECONDS` of `serve` processes).
    #[serde(default)]
    pub lease_seconds: Option<u64>,
    /// Environment of every `serve` process (`via: local_eventarc`), passed through as is: worker settings such as
    /// `CHART_EXPORT_LEASE_SECONDS`. Set after the harness's own variables, so a scenario can override them.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Fault-proxy rules per dependency (`via: local_eventarc`): `firestore` (gRPC), `gcs`, `chartimg` (HTTP).
    #[serde(default)]
    pub dependency_faults: DependencyFaults,
}

/// Rules of the fault proxy in front of each dependency, in the harness's `Rule` format.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DependencyFaults {
    #[serde(default)]
    pub firestore: Vec<harness::proxy::Rule>,
    #[serde(default)]
    pub gcs: Vec<harness::proxy::Rule>,
    #[serde(default)]
    pub chartimg: Vec<harness::proxy::Rule>,
}

/// A dependency of the worker, behind its fault proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dependency {
    Firestore,
    Gcs,
    Chartimg,
}

fn real() -> String {
    "real".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum Templates {
    #[default]
    None,
    Library(Vec<String>),
    Inline(BTreeMap<String, Value>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Account {
    pub id: String,
    /// The plan the worker is told (rate and burst it keeps to); default PRO.
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default)]
    pub daily_limit: Option<u32>,
    /// The plan mock-chart-img enforces for this key, when it differs from `plan`.
    #[serde(default)]
    pub mock_plan: Option<String>,
    /// mock-chart-img limit overrides (`daily_limit`, `max_width`, ...).
    #[serde(default)]
    pub mock_overrides: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retry {
    pub max_retries: usize,
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    pub max_total_delay_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct When {
    /// `eventarc` (a CloudEvent posted to the `serve` router, as Eventarc sends it), `run_local` (the CLI's entry
    /// on the embedded local backend) or `direct` (the core on the emulator adapters).
    #[serde(default = "eventarc")]
    pub via: String,
    /// How many identical deliveries, all at once.
    #[serde(default = "one")]
    pub deliveries: usize,
    /// How many worker instances (each its own id and account limiters); deliveries are spread over them.
    #[serde(default = "one")]
    pub workers: usize,
    /// An explicit step (`run_local` and `direct`).
    #[serde(default)]
    pub step_id: Option<String>,
    /// Hand-made events instead of the regular delivery, each with the HTTP status it must get.
    #[serde(default)]
    pub events: Vec<EventCase>,
    /// `local_eventarc`: how many `serve` child processes run from the start (default 1).
    #[serde(default)]
    pub processes: Option<usize>,
    /// `local_eventarc`: the delivery semantics.
    #[serde(default)]
    pub eventarc: EventarcSettings,
    /// `local_eventarc`: what happens while the step runs, in order.
    #[serde(default)]
    pub actions: Vec<Action>,
}

impl Default for When {
    fn default() -> Self {
        When {
            via: eventarc(),
            deliveries: 1,
            workers: 1,
            step_id: None,
            events: Vec::new(),
            processes: None,
            eventarc: EventarcSettings::default(),
            actions: Vec::new(),
        }
    }
}

/// The local Eventarc's settings; durations are Eventarc's own, all multiplied by `timeScale`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventarcSettings {
    /// Default 0.02: backoff 10 s → 200 ms, ack deadline 600 s → 12 s.
    #[serde(default = "time_scale")]
    pub time_scale: f64,
    #[serde(default = "ack_deadline")]
    pub ack_deadline_seconds: u64,
    #[serde(default)]
    pub duplicate_probability: f64,
    #[serde(default)]
    pub reorder_window_ms: u64,
    #[serde(default = "seed")]
    pub seed: u64,
    /// The triggers' event types (`created`, `updated`, `deleted`, `written`); default: the types `deploy-plan`'s
    /// triggers subscribe to (`worker_chart_export::entry::deploy::TRIGGER_EVENT_TYPES`).
    #[serde(default)]
    pub types: Option<Vec<harness::eventarc::EventType>>,
}

impl Default for EventarcSettings {
    fn default() -> Self {
        EventarcSettings {
            time_scale: time_scale(),
            ack_deadline_seconds: ack_deadline(),
            duplicate_probability: 0.0,
            reorder_window_ms: 0,
            seed: seed(),
            types: None,
        }
    }
}

fn time_scale() -> f64 {
    0.02
}
fn ack_deadline() -> u64 {
    600
}
fn seed() -> u64 {
    1
}

/// One step of `when.actions`: wait (`afterMs`, then `when` / `afterMockCalls`), then `do` it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Action {
    /// Wait this long after the previous action (or the write of the flow run).
    #[serde(default)]
    pub after_ms: Option<u64>,
    /// Then wait until this holds (at most 60 s).
    #[serde(default)]
    pub when: Option<Trigger>,
    /// Then wait until mock-chart-img has journaled this many calls: it journals a call when it answers it (or when
    /// its client closes the connection), not when the call arrives.
    #[serde(default)]
    pub after_mock_calls: Option<usize>,
    #[serde(rename = "do")]
    pub act: Verb,
    /// `kill` / `sigterm` / `redeliver`: the process by start order (0 = first); default for `kill` and `sigterm`:
    /// the one holding the step's claim, else the first one still running; for `redeliver`: the first running one
    /// that does not hold it.
    #[serde(default)]
    pub process: Option<usize>,
    /// `heal` / `fault`: which proxy.
    #[serde(default)]
    pub dependency: Option<Dependency>,
    /// `fault`: the rule to add.
    #[serde(default)]
    pub rule: Option<harness::proxy::Rule>,
    /// `sigterm`: how long to wait for the exit before SIGKILL (default 30000).
    #[serde(default)]
    pub budget_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The step (`then.stepId`) is RUNNING in Firestore.
    Claimed,
    /// The step is SUCCEEDED or FAILED.
    Final,
    /// The local Eventarc has made a delivery attempt.
    Delivered,
    /// The step is RUNNING and its `leaseExpiresAt` passed (by 200 ms): its holder's lease has lapsed unrenewed.
    LeaseLapsed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// SIGKILL (a crash); the process leaves the Eventarc targets.
    Kill,
    /// SIGTERM (Cloud Run's stop); it leaves the targets first; the time to exit is measured.
    Sigterm,
    /// A new `serve` process (a new instance), added to the targets once healthy.
    Start,
    /// The local Eventarc sends the flow run's latest event once more, now, to `process` (default: the first
    /// running process that does not hold the step's claim) — a redelivery at a chosen moment.
    Redeliver,
    /// Remove every rule of `dependency`'s proxy.
    Heal,
    /// Add `rule` to `dependency`'s proxy.
    Fault,
}

fn eventarc() -> String {
    "eventarc".into()
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventCase {
    /// `bad_protobuf`, `missing_headers`, `wrong_type`, `other_collection`, `no_data`, `json_body`, `pubsub_envelope`.
    pub kind: String,
    pub expect_status: u16,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StepExpect {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub error_code: Option<String>,
    /// Substrings the step's `error.message` must contain.
    #[serde(default)]
    pub error_message: Vec<String>,
    /// `true`: the step is exactly as seeded.
    #[serde(default)]
    pub unchanged: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Then {
    /// The step the scenario is about (default `charts_4h`).
    #[serde(default = "default_step")]
    pub step_id: String,
    #[serde(default)]
    pub step: StepExpect,
    /// Other steps by id.
    #[serde(default)]
    pub steps: BTreeMap<String, StepExpect>,
    /// `true`: the whole flow-run document is exactly as seeded (nothing written at all).
    #[serde(default)]
    pub run_unchanged: bool,
    /// `snapshot` (exists, `outputsManifestGcsUri` points at it, insta snapshot) or `absent`.
    #[serde(default)]
    pub manifest: Option<String>,
    /// Object counts in the bucket.
    #[serde(default)]
    pub objects: Option<Objects>,
    /// `usageToday` per account.
    #[serde(default)]
    pub usage: BTreeMap<String, u32>,
    /// Accounts whose counter must say `exhausted: true`.
    #[serde(default)]
    pub exhausted: Vec<String>,
    /// Calls mock-chart-img received per account.
    #[serde(default)]
    pub mock_calls: BTreeMap<String, usize>,
    /// At most this many calls mock-chart-img received per account (a step paid for each chart about once).
    #[serde(default)]
    pub mock_calls_at_most: BTreeMap<String, usize>,
    /// Accounts whose `usageToday` must equal the calls mock-chart-img received with their key.
    #[serde(default)]
    pub usage_matches_calls: Vec<String>,
    /// Answers mock-chart-img gave, by HTTP status (from its journal): `{429: 0}` — no call was throttled.
    #[serde(default)]
    pub mock_statuses: BTreeMap<u16, usize>,
    /// `local_eventarc`: at least this many `serve` processes sent Chart-IMG calls during one common stretch of
    /// time (each one's first call before every other one's last, as mock-chart-img's journal received them), so
    /// their calls met at the key.
    #[serde(default)]
    pub calling_processes: Option<usize>,
    /// `local_eventarc`: no Chart-IMG call of a `serve` process reaches mock-chart-img after another process
    /// claimed the step later than its own claim: every call's most recent claim (the journal's arrival time and
    /// process of the call, the `claim_attempt` claimed/reclaimed/give_up lines) is its own process's — two
    /// holders never render at once.
    #[serde(default)]
    pub holders_apart: bool,
    /// `local_eventarc`: no Chart-IMG call of a `serve` process reaches mock-chart-img after its own SIGTERM (the
    /// journal's arrival times against the process's `shutdown_started`), queued callers included.
    #[serde(default)]
    pub no_call_after_sigterm: bool,
    /// `local_eventarc`: no Chart-IMG call of a `serve` process reaches mock-chart-img after its step's deadline
    /// (the journal's arrival times against the process's `step_deadline`), queued callers included.
    #[serde(default)]
    pub no_call_after_deadline: bool,
    /// How many deliveries claimed the step (log events `claim_attempt` with outcome claimed/reclaimed).
    #[serde(default)]
    pub claims: Option<usize>,
    /// HTTP status every delivery must get (default: any 2xx).
    #[serde(default)]
    pub http_status: Option<u16>,
    /// Log events (`event` field) that must appear.
    #[serde(default)]
    pub log_events: Vec<String>,
    /// Interactions the recorded cassette must hold (mode `record`).
    #[serde(default)]
    pub cassette_interactions: Option<usize>,
    /// Exit-like result of a `run_local`/`direct` run: succeeded, failed, noop, rejected. A run that produces no
    /// result (any other `via`) fails this check.
    #[serde(default)]
    pub result: Option<String>,
    /// `local_eventarc`: the step reaches `step.status` within this many seconds of the flow run's write.
    #[serde(default)]
    pub within_seconds: Option<f64>,
    /// `local_eventarc`: delivery attempts of the local Eventarc.
    #[serde(default)]
    pub deliveries: Option<DeliveriesExpect>,
    /// Accounts whose `usageToday` is at least the calls mock-chart-img received with their key (never
    /// under-counted; a crash may over-count).
    #[serde(default)]
    pub usage_covers_calls: Vec<String>,
    /// At most this many units of `usageToday` above the calls mock-chart-img received with the account's key (what
    /// a killed process may leave counted: its held units, one reservation at most).
    #[serde(default)]
    pub usage_over_calls_at_most: BTreeMap<String, usize>,
    /// No template has more than one PNG and no step more than one manifest.
    #[serde(default)]
    pub no_duplicates: bool,
    /// `local_eventarc`: every `sigterm` action's process exited by itself within this many ms of the signal.
    #[serde(default)]
    pub sigterm_exit_within_ms: Option<u64>,
    /// `local_eventarc`: at least how many calls a fault rule applied to, per dependency proxy (so a fault that
    /// never fired cannot pass as survived).
    #[serde(default)]
    pub faults_applied: BTreeMap<Dependency, usize>,
}

/// What the local Eventarc's delivery attempts must look like.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeliveriesExpect {
    #[serde(default)]
    pub min: Option<usize>,
    #[serde(default)]
    pub max: Option<usize>,
    /// Every attempt's answer is one of these: an HTTP status (`200`), `error` (no answer: refused, reset) or
    /// `ack_deadline`.
    #[serde(default)]
    pub answers: Vec<serde_yaml::Value>,
    /// Every event was acknowledged in the end (none given up or still pending).
    #[serde(default)]
    pub all_acked: bool,
}

fn default_step() -> String {
    "charts_4h".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Objects {
    #[serde(default)]
    pub pngs: Option<usize>,
    #[serde(default)]
    pub manifests: Option<usize>,
    #[serde(default)]
    pub total: Option<usize>,
}

/// Parses a scenario file; the error names the file, the field path and the line.
pub fn load(path: &Path) -> anyhow::Result<Scenario> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn parse(text: &str) -> Result<Scenario, String> {
    let de = serde_yaml::Deserializer::from_str(text);
    let s: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "?" { "(syntax)".to_owned() } else { path };
        format!(
            "{}: {}",
            if path == "." { "(top level)".into() } else { path },
            e.into_inner()
        )
    })?;
    for (i, a) in s.given.accounts.iter().enumerate() {
        for (field, plan) in [("plan", &a.plan), ("mockPlan", &a.mock_plan)] {
            if let Some(p) = plan {
                if p.parse::<chart_img_spec::Plan>().is_err() {
                    return Err(format!("given.accounts[{i}].{field}: unknown plan {p:?}"));
                }
            }
        }
    }
    if !matches!(s.given.mode.as_str(), "real" | "mock" | "record") {
        return Err(format!("given.mode: {:?} is not real, mock or record", s.given.mode));
    }
    if s.given.mode == "mock" && s.given.cassette.is_none() {
        return Err("given.cassette: mode mock needs a cassette".into());
    }
    if !matches!(
        s.when.via.as_str(),
        "eventarc" | "run_local" | "direct" | "local_eventarc"
    ) {
        return Err(format!(
            "when.via: {:?} is not eventarc, local_eventarc, run_local or direct",
            s.when.via
        ));
    }
    let live = s.when.via == "local_eventarc";
    if !live {
        let g = &s.given;
        let w = &s.when;
        let t = &s.then;
        for (field, used) in [
            ("given.env", !g.env.is_empty()),
            (
                "given.dependencyFaults",
                !(g.dependency_faults.firestore.is_empty()
                    && g.dependency_faults.gcs.is_empty()
                    && g.dependency_faults.chartimg.is_empty()),
            ),
            ("when.processes", w.processes.is_some()),
            ("when.actions", !w.actions.is_empty()),
            ("then.withinSeconds", t.within_seconds.is_some()),
            ("then.deliveries", t.deliveries.is_some()),
            ("then.sigtermExitWithinMs", t.sigterm_exit_within_ms.is_some()),
            ("then.faultsApplied", !t.faults_applied.is_empty()),
            ("then.callingProcesses", t.calling_processes.is_some()),
            ("then.holdersApart", t.holders_apart),
            ("then.noCallAfterSigterm", t.no_call_after_sigterm),
            ("then.noCallAfterDeadline", t.no_call_after_deadline),
        ] {
            if used {
                return Err(format!("{field}: needs via: local_eventarc"));
            }
        }
    } else {
        let w = &s.when;
        for (field, used) in [
            ("given.retry", s.given.retry.is_some()),
            ("when.deliveries", w.deliveries != 1),
            ("when.workers", w.workers != 1),
            ("when.stepId", w.step_id.is_some()),
            ("when.events", !w.events.is_empty()),
        ] {
            if used {
                return Err(format!(
                    "{field}: not used by via: local_eventarc (serve processes take settings through given.env; deliveries come from the local Eventarc)"
                ));
            }
        }
        if s.when.processes == Some(0) && !s.when.actions.iter().any(|a| a.act == Verb::Start) {
            return Err("when.processes: 0 processes and no start action: nothing would ever handle a delivery".into());
        }
        if !(s.when.eventarc.time_scale > 0.0 && s.when.eventarc.time_scale <= 1.0) {
            return Err(format!(
                "when.eventarc.timeScale: must be in (0, 1], got {}",
                s.when.eventarc.time_scale
            ));
        }
        if !(0.0..=1.0).contains(&s.when.eventarc.duplicate_probability) {
            return Err(format!(
                "when.eventarc.duplicateProbability: must be in 0..=1, got {}",
                s.when.eventarc.duplicate_probability
            ));
        }
        for (i, a) in s.when.actions.iter().enumerate() {
            let at = |f: &str| format!("when.actions[{i}].{f}");
            match a.act {
                Verb::Heal | Verb::Fault if a.dependency.is_none() => {
                    return Err(format!("{}: {:?} needs a dependency", at("dependency"), a.act))
                }
                Verb::Fault if a.rule.is_none() => return Err(format!("{}: fault needs a rule", at("rule"))),
                Verb::Kill | Verb::Sigterm | Verb::Start | Verb::Heal | Verb::Redeliver if a.rule.is_some() => {
                    return Err(format!("{}: only fault takes a rule", at("rule")))
                }
                _ => {}
            }
        }
        if let Some(d) = &s.then.deliveries {
            for (i, a) in d.answers.iter().enumerate() {
                let ok = a.as_u64().is_some_and(|c| (100..600).contains(&c))
                    || matches!(a.as_str(), Some("error" | "ack_deadline"));
                if !ok {
                    return Err(format!(
                        "then.deliveries.answers[{i}]: {a:?} is not an HTTP status, error or ack_deadline"
                    ));
                }
            }
        }
    }
    if s.then.result.is_some() && !matches!(s.when.via.as_str(), "run_local" | "direct") {
        return Err(format!(
            "then.result: via {} gives no result to check (only run_local and direct do)",
            s.when.via
        ));
    }
    if let Some(m) = &s.then.manifest {
        if m != "snapshot" && m != "absent" {
            return Err(format!("then.manifest: {m:?} is not snapshot or absent"));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field_and_line() {
        let e =
            parse("description: x\ngiven:\n  flowRun: {}\n  accounts: [{id: a, plan: GOLD}]\nthen: {}\n").unwrap_err();
        assert_eq!(e, "given.accounts[0].plan: unknown plan \"GOLD\"");
        let e = parse("description: x\ngiven:\n  flowRun: {}\n  acounts: []\nthen: {}\n").unwrap_err();
        assert!(e.starts_with("given.acounts: given: unknown field `acounts`"), "{e}");
        assert!(e.contains("line 4"), "{e}");
        let e = parse("description: x\ngiven:\n  flowRun: {}\n  accounts: []\nwhen: {via: carrier_pigeon}\nthen: {}\n")
            .unwrap_err();
        assert_eq!(
            e,
            "when.via: \"carrier_pigeon\" is not eventarc, local_eventarc, run_local or direct"
        );
    }

    const HEAD: &str = "description: x\ngiven:\n  flowRun: {}\n  accounts: []\n";

    #[test]
    fn live_fields_need_the_live_path_and_are_checked() {
        let e = parse(&format!(
            "{HEAD}when: {{via: eventarc, actions: [{{do: kill}}]}}\nthen: {{}}\n"
        ))
        .unwrap_err();
        assert_eq!(e, "when.actions: needs via: local_eventarc");
        let e = parse(&format!(
            "{HEAD}when: {{via: local_eventarc, actions: [{{do: heal}}]}}\nthen: {{}}\n"
        ))
        .unwrap_err();
        assert_eq!(e, "when.actions[0].dependency: Heal needs a dependency");
        let e = parse(&format!(
            "{HEAD}when: {{via: local_eventarc, actions: [{{do: explode}}]}}\nthen: {{}}\n"
        ))
        .unwrap_err();
        assert!(
            e.starts_with("when.actions[0].do: ") && e.contains("unknown variant `explode`"),
            "{e}"
        );
        let e = parse(&format!(
            "{HEAD}when: {{via: local_eventarc, actions: [{{when: lease_lapsed, do: redeliver, rule: {{action: {{kind: refuse}}}}}}]}}\nthen: {{}}\n"
        ))
        .unwrap_err();
        assert_eq!(e, "when.actions[0].rule: only fault takes a rule");
        let e = parse(&format!(
            "{HEAD}when: {{via: local_eventarc}}\nthen: {{deliveries: {{answers: [teapot]}}}}\n"
        ))
        .unwrap_err();
        assert!(e.starts_with("then.deliveries.answers[0]:"), "{e}");
        let e = parse(&format!("{HEAD}  dependencyFaults: {{gcs: [{{action: {{kind: refuse}}, tmes: 2}}]}}\nwhen: {{via: local_eventarc}}\nthen: {{}}\n")).unwrap_err();
        assert!(e.starts_with("given.dependencyFaults.gcs[0].tmes:"), "{e}");
        let ok = parse(&format!(
            "{HEAD}  env: {{CHART_EXPORT_LEASE_SECONDS: '10'}}\n  dependencyFaults: {{firestore: [{{match: {{pathPrefix: /google.firestore.v1.Firestore/Commit}}, action: {{kind: drop_reply}}, skip: 1, times: 1}}]}}\nwhen:\n  via: local_eventarc\n  processes: 2\n  actions: [{{when: claimed, do: kill}}, {{afterMs: 100, do: start}}, {{when: lease_lapsed, do: redeliver, process: 1}}, {{do: fault, dependency: gcs, rule: {{action: {{kind: reset}}}}}}]\nthen: {{withinSeconds: 5, deliveries: {{min: 1, answers: [200, 503, error, ack_deadline]}}, faultsApplied: {{firestore: 1}}}}\n"
        ));
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn in_process_knobs_are_refused_on_the_live_path() {
        let e = parse(&format!("{HEAD}  retry: {{maxRetries: 1, minDelayMs: 1, maxDelayMs: 1, maxTotalDelayMs: 1}}\nwhen: {{via: local_eventarc}}\nthen: {{}}\n")).unwrap_err();
        assert!(e.starts_with("given.retry: not used by via: local_eventarc"), "{e}");
        let e = parse(&format!(
            "{HEAD}when: {{via: local_eventarc, deliveries: 3}}\nthen: {{}}\n"
        ))
        .unwrap_err();
        assert!(e.starts_with("when.deliveries: not used"), "{e}");
    }

    #[test]
    fn a_result_expectation_needs_a_run_that_gives_one() {
        let e = parse(&format!("{HEAD}when: {{via: eventarc}}\nthen: {{result: succeeded}}\n")).unwrap_err();
        assert_eq!(
            e,
            "then.result: via eventarc gives no result to check (only run_local and direct do)"
        );
    }
}
