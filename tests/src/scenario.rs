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
    /// `chart_img_accounts_usage/{id}` documents; `$TODAY` and `$YESTERDAY` in strings become UTC dates.
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
    /// Lease of a claim in seconds (default 900).
    #[serde(default)]
    pub lease_seconds: Option<u64>,
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
    /// on the embedded local backend) or `direct` (the core on the emulator adapters; needed for `kill`).
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
    /// Simulate a crash: the first worker's run is dropped this many ms after its claim is committed; after the
    /// lease a second delivery must reclaim the step.
    #[serde(default)]
    pub kill_after_ms: Option<u64>,
}

impl Default for When {
    fn default() -> Self {
        When { via: eventarc(), deliveries: 1, workers: 1, step_id: None, events: Vec::new(), kill_after_ms: None }
    }
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
    /// Accounts whose `usageToday` must equal the calls mock-chart-img received with their key.
    #[serde(default)]
    pub usage_matches_calls: Vec<String>,
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
    /// Exit-like result of a `run_local`/`direct` run: succeeded, failed, noop, rejected.
    #[serde(default)]
    pub result: Option<String>,
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
        format!("{}: {}", if path == "." { "(top level)".into() } else { path }, e.into_inner())
    })?;
    for (i, a) in s.given.accounts.iter().enumerate() {
        for (field, plan) in [("plan", &a.plan), ("mockPlan", &a.mock_plan)] {
            if let Some(p) = plan {
                if p.parse::<worker_chart_export::config::Plan>().is_err() {
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
    if !matches!(s.when.via.as_str(), "eventarc" | "run_local" | "direct") {
        return Err(format!("when.via: {:?} is not eventarc, run_local or direct", s.when.via));
    }
    if s.when.kill_after_ms.is_some() && s.when.via != "direct" {
        return Err("when.killAfterMs: needs via: direct".into());
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
        let e = parse("description: x\ngiven:\n  flowRun: {}\n  accounts: [{id: a, plan: GOLD}]\nthen: {}\n").unwrap_err();
        assert_eq!(e, "given.accounts[0].plan: unknown plan \"GOLD\"");
        let e = parse("description: x\ngiven:\n  flowRun: {}\n  acounts: []\nthen: {}\n").unwrap_err();
        assert!(e.starts_with("given.acounts: given: unknown field `acounts`"), "{e}");
        assert!(e.contains("line 4"), "{e}");
        let e = parse("description: x\ngiven:\n  flowRun: {}\n  accounts: []\nwhen: {via: carrier_pigeon}\nthen: {}\n").unwrap_err();
        assert_eq!(e, "when.via: \"carrier_pigeon\" is not eventarc, run_local or direct");
    }
}
