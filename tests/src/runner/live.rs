//! Phase 2 for `via: local_eventarc`: production's path on this machine. `serve` runs as child processes (the
//! `scenario-serve` binary, the worker's serve entrypoint on 127.0.0.1), each dependency sits behind a fault proxy
//! (Firestore over gRPC, GCS and mock-chart-img over HTTP), and the local Eventarc delivers the flow run's writes
//! to the processes at least once, with Pub/Sub's backoff (time-scaled). The flow run is written once everything
//! listens — that write is the first event — then `when.actions` run in order (kill -9 the claim's holder,
//! SIGTERM, a new instance, a fault added or healed), and the phase ends when the step reached `then.step.status`
//! (or the deliveries settled), after which every process gets SIGTERM.
//!
//! Each process reaches mock-chart-img under `/__via/<process name>/`, so the mock's journal names the process of
//! every call it received (`JournalEntry::via`) and the time it arrived (`received_at`): the checks of who called
//! when (`holdersApart`, `noCallAfterSigterm`, `noCallAfterDeadline`, `callingProcesses`) read those, not the
//! processes' own log lines.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use harness::eventarc::{Config, Delivery, EventRecord, LocalEventarc};
use harness::process::{ServeProcess, ServeSpec, Terminated};
use harness::proxy::{Call, FaultProxy, Upstream};
use serde_json::Value;
use worker_chart_export::domain::collections::FLOW_RUNS;

use super::delivery::Delivered;
use super::readback::Backend;
use super::setup::World;
use crate::scenario::{Action, Dependency, Trigger, Verb};

/// What happened on the live path, for the checks and the failure report.
#[derive(Debug, Default)]
pub struct LiveReport {
    pub deliveries: Vec<Delivery>,
    pub events: Vec<EventRecord>,
    /// Every line of every process, in start order.
    pub process_logs: String,
    /// (process name, how its SIGTERM ended) for each `sigterm` action.
    pub sigterms: Vec<(String, Terminated)>,
    /// Ms from the flow run's write until the step had `then.step.status`; `None` if it never did.
    pub reached_ms: Option<u64>,
    /// The step's status at the end.
    pub final_status: Option<String>,
    /// What the harness did, with times.
    pub timeline: Vec<String>,
    pub proxy_calls: BTreeMap<Dependency, Vec<Call>>,
    /// Per process (start order): when each of its Chart-IMG calls arrived at mock-chart-img (the journal's
    /// `received_at` of the entries whose `via` names the process).
    pub call_times: Vec<(String, Vec<DateTime<Utc>>)>,
    /// Per process (start order): the times of its claims of a step (`claim_attempt` claimed/reclaimed/give_up).
    pub claim_times: Vec<(String, Vec<DateTime<Utc>>)>,
    /// Per process (start order): when it began shutting down (`shutdown_started`), if it did.
    pub shutdown_times: Vec<(String, Option<DateTime<Utc>>)>,
    /// Per process (start order): when a step it ran first reached its deadline (`step_deadline`), if one did.
    pub deadline_times: Vec<(String, Option<DateTime<Utc>>)>,
}

impl LiveReport {
    /// One line per delivery attempt and per timeline entry, for failure reports.
    pub fn describe(&self) -> String {
        let mut out: Vec<String> = self.timeline.clone();
        for d in &self.deliveries {
            out.push(format!(
                "delivery {} #{}{} at {} ms to {}: {:?} after {} ms {}",
                &d.event_id[..8.min(d.event_id.len())],
                d.attempt,
                match d.chain {
                    0 => "",
                    harness::eventarc::REDELIVERY_CHAIN => " (redelivery)",
                    _ => " (duplicate)",
                },
                d.at_ms,
                d.target.as_deref().unwrap_or("-"),
                d.outcome,
                d.duration_ms,
                d.body.chars().take(200).collect::<String>()
            ));
        }
        out.join("\n")
    }
}

/// Where a `serve` child finds its dependencies and what it runs with.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// `host:port` of Firestore (the emulator or a proxy in front of it).
    pub firestore: String,
    /// The GCS endpoint URL.
    pub storage: String,
    /// Chart-IMG's base URL (mock-chart-img or a proxy in front of it).
    pub chartimg: String,
    pub project: String,
    pub bucket: String,
    pub accounts_json: String,
    /// `CHART_IMG_MODE`.
    pub mode: String,
}

/// The environment of a `serve` child (shared by the live scenarios and the fleet simulation): the wiring, and
/// info-level logs without the HTTP/2 stack's.
pub fn serve_env(w: &Wiring) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("FIRESTORE_EMULATOR_HOST".into(), w.firestore.clone()),
        ("STORAGE_EMULATOR_HOST".into(), w.storage.clone()),
        ("CHART_IMG_BASE_URL".into(), w.chartimg.clone()),
        ("GOOGLE_CLOUD_PROJECT".into(), w.project.clone()),
        ("ARTIFACTS_BUCKET".into(), w.bucket.clone()),
        ("CHART_IMG_ACCOUNTS_JSON".into(), w.accounts_json.clone()),
        ("CHART_IMG_MODE".into(), w.mode.clone()),
        (
            "RUST_LOG".into(),
            "info,h2=warn,hyper=warn,tonic=warn,tower=warn".into(),
        ),
    ])
}

fn serve_program(w: &World) -> anyhow::Result<PathBuf> {
    match &w.emulators.serve_bin {
        Some(p) => Ok(p.clone()),
        None => harness::process::locate("worker-serve"),
    }
}

struct Live<'a> {
    w: &'a World,
    program: PathBuf,
    env: BTreeMap<String, String>,
    procs: Vec<ServeProcess>,
    eventarc: LocalEventarc,
    proxies: BTreeMap<Dependency, FaultProxy>,
    /// When the live phase started (the time base of the timeline).
    t0: Instant,
    timeline: Vec<String>,
    sigterms: Vec<(String, Terminated)>,
}

impl Live<'_> {
    fn note(&mut self, what: String) {
        self.timeline
            .push(format!("{:>6} ms: {what}", self.t0.elapsed().as_millis()));
    }

    fn refresh_targets(&mut self) {
        let urls = self
            .procs
            .iter_mut()
            .filter_map(|p| p.running().then(|| format!("{}/", p.url())))
            .collect();
        self.eventarc.set_targets(urls);
    }

    async fn start_process(&mut self) -> anyhow::Result<()> {
        let name = format!("serve-{}", self.procs.len());
        let p = ServeProcess::start(serve_spec(name.clone(), &self.program, &self.env)).await?;
        self.note(format!("started {name} (pid {}, port {})", p.pid(), p.port));
        self.procs.push(p);
        Ok(())
    }

    async fn step(&self) -> anyhow::Result<Value> {
        let doc = self
            .w
            .fs
            .get_doc(FLOW_RUNS, &self.w.run_id)
            .await?
            .unwrap_or(Value::Null);
        Ok(doc["steps"][self.w.scenario.then.step_id.as_str()].clone())
    }

    /// The process whose worker id holds the step's claim, else the first one still running.
    async fn pick(&mut self, explicit: Option<usize>) -> anyhow::Result<usize> {
        if let Some(i) = explicit {
            anyhow::ensure!(
                i < self.procs.len(),
                "process {i}: only {} were started",
                self.procs.len()
            );
            return Ok(i);
        }
        match self.holder().await? {
            Some(i) => Ok(i),
            None => self
                .procs
                .iter_mut()
                .position(|p| p.running())
                .context("no process is running"),
        }
    }

    /// The first running process that does not hold the step's claim.
    async fn other_than_holder(&mut self) -> anyhow::Result<usize> {
        let holder = self.holder().await?;
        self.procs
            .iter_mut()
            .enumerate()
            .position(|(i, p)| Some(i) != holder && p.running())
            .context("no running process other than the step's holder")
    }

    /// The running process whose worker id is the step's `claimedBy` (its `serve_started` line), if any.
    async fn holder(&mut self) -> anyhow::Result<Option<usize>> {
        let Some(h) = self.step().await?["claimedBy"].as_str().map(str::to_owned) else {
            return Ok(None);
        };
        Ok(self.procs.iter_mut().position(|p| {
            let theirs = p
                .json_logs()
                .iter()
                .any(|l| l["event"] == "serve_started" && l["worker"] == h.as_str());
            theirs && p.running()
        }))
    }

    async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        mut ok: impl AsyncFnMut(&Self) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if ok(self).await? {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{what} did not happen within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn act(&mut self, i: usize, a: &Action) -> anyhow::Result<()> {
        if let Some(ms) = a.after_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let limit = Duration::from_secs(60);
        if let Some(t) = a.when {
            let what = format!("when.actions[{i}].when {t:?}");
            self.wait_for(&what, limit, async |l: &Self| {
                Ok(match t {
                    Trigger::Claimed => l.step().await?["status"] == "RUNNING",
                    Trigger::Final => matches!(l.step().await?["status"].as_str(), Some("SUCCEEDED" | "FAILED")),
                    Trigger::Delivered => !l.eventarc.deliveries().is_empty(),
                    Trigger::LeaseLapsed => lease_until(&l.step().await?).is_some(),
                })
            })
            .await?;
            if t == Trigger::LeaseLapsed {
                // The lease the step has now, however the document changes meanwhile (renewed, released, claimed).
                let until = lease_until(&self.step().await?).context("the step's lease disappeared")?;
                let wait = (until + LAPSE_SLACK - Utc::now()).to_std().unwrap_or_default();
                self.note(format!(
                    "action {i}: waiting {} ms for the lease of {} to lapse",
                    wait.as_millis(),
                    super::checks::clock(&until)
                ));
                tokio::time::sleep(wait).await;
            }
        }
        if let Some(n) = a.after_mock_calls {
            let what = format!("when.actions[{i}].afterMockCalls {n}");
            self.wait_for(&what, limit, async |l: &Self| {
                Ok(l.w.mock.state().journal(&Default::default()).len() >= n)
            })
            .await?;
        }
        match a.act {
            Verb::Kill => {
                let p = self.pick(a.process).await?;
                self.procs[p].kill().await;
                self.refresh_targets();
                let name = self.procs[p].name.clone();
                self.note(format!("action {i}: SIGKILL {name}"));
            }
            Verb::Sigterm => {
                let p = self.pick(a.process).await?;
                // Cloud Run stops routing to an instance before it signals it.
                let url = format!("{}/", self.procs[p].url());
                let rest: Vec<String> = self.eventarc.targets().into_iter().filter(|t| *t != url).collect();
                self.eventarc.set_targets(rest);
                let name = self.procs[p].name.clone();
                self.note(format!("action {i}: SIGTERM {name}"));
                let t = self.procs[p]
                    .terminate(Duration::from_millis(a.budget_ms.unwrap_or(30_000)))
                    .await?;
                self.note(format!(
                    "{name} exited {} ms after SIGTERM (by itself: {})",
                    t.after.as_millis(),
                    t.by_itself
                ));
                self.sigterms.push((name, t));
                self.refresh_targets();
            }
            Verb::Redeliver => {
                let p = match a.process {
                    Some(i) => self.pick(Some(i)).await?,
                    None => self.other_than_holder().await?,
                };
                let name = self.procs[p].name.clone();
                let document = format!("{FLOW_RUNS}/{}", self.w.run_id);
                let d = self
                    .eventarc
                    .redeliver(&document, &format!("{}/", self.procs[p].url()))
                    .await?;
                self.note(format!(
                    "action {i}: redelivered the latest event to {name}: {:?} after {} ms",
                    d.outcome, d.duration_ms
                ));
            }
            Verb::Start => {
                self.start_process().await?;
                self.refresh_targets();
                self.note(format!("action {i}: new instance"));
            }
            Verb::Heal | Verb::Fault => {
                let dep = a.dependency.context("checked at parse")?;
                let proxy = self
                    .proxies
                    .get(&dep)
                    .with_context(|| format!("when.actions[{i}]: no proxy for {dep:?} (gcs: unavailable?)"))?;
                if a.act == Verb::Heal {
                    proxy.clear_rules();
                    self.note(format!("action {i}: healed {dep:?}"));
                } else {
                    proxy.add_rule(a.rule.clone().context("checked at parse")?);
                    self.note(format!("action {i}: fault on {dep:?}"));
                }
            }
        }
        Ok(())
    }
}

fn host_port(url: &str) -> String {
    url.trim()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// `when: lease_lapsed` holds this long after the step's `leaseExpiresAt` (the harness's and the emulator's clocks
/// are one machine's; the slack covers the claim transaction's own reading of "now").
/// The step's `leaseExpiresAt` while it is RUNNING.
fn lease_until(step: &Value) -> Option<DateTime<Utc>> {
    if step["status"] != "RUNNING" {
        return None;
    }
    let t = step["leaseExpiresAt"].as_str()?;
    Some(DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc))
}

const LAPSE_SLACK: chrono::TimeDelta = chrono::TimeDelta::milliseconds(200);

pub async fn deliver(w: &World) -> anyhow::Result<Delivered> {
    let g = &w.scenario.given;
    let when = &w.scenario.when;
    let storage = host_port(&w.emulators.storage);

    // A proxy in front of every dependency, with the scenario's rules.
    let mut proxies = BTreeMap::new();
    proxies.insert(
        Dependency::Firestore,
        FaultProxy::start(&w.emulators.firestore, Upstream::Http2).await?,
    );
    if g.gcs.as_deref() != Some("unavailable") {
        proxies.insert(Dependency::Gcs, FaultProxy::start(&storage, Upstream::Http1).await?);
    }
    proxies.insert(
        Dependency::Chartimg,
        FaultProxy::start(&host_port(&w.mock.base_url()), Upstream::Http1).await?,
    );
    for (dep, rules) in [
        (Dependency::Firestore, &g.dependency_faults.firestore),
        (Dependency::Gcs, &g.dependency_faults.gcs),
        (Dependency::Chartimg, &g.dependency_faults.chartimg),
    ] {
        if rules.is_empty() {
            continue;
        }
        let proxy = proxies
            .get(&dep)
            .with_context(|| format!("given.dependencyFaults: no {dep:?} proxy (gcs: unavailable)"))?;
        for r in rules {
            proxy.add_rule(r.clone());
        }
    }

    // The environment of every serve process: the harness's wiring, then the scenario's own variables.
    let mut env = serve_env(&Wiring {
        firestore: proxies[&Dependency::Firestore].host(),
        storage: proxies
            .get(&Dependency::Gcs)
            .map(FaultProxy::url)
            .unwrap_or_else(|| w.storage_endpoint.clone()),
        chartimg: proxies[&Dependency::Chartimg].url(),
        project: w.project.clone(),
        bucket: w.bucket.clone(),
        accounts_json: w.accounts_json.clone(),
        mode: g.mode.clone(),
    });
    let mut put = |k: &str, v: String| {
        env.insert(k.to_owned(), v);
    };
    if let Some(dir) = &w.cassette_dir {
        put("CHART_IMG_CASSETTE_DIR", dir.display().to_string());
    }
    if let Some(l) = g.lease_seconds {
        put("CHART_EXPORT_LEASE_SECONDS", l.to_string());
    }
    for (k, v) in &g.env {
        put(k, v.clone());
    }

    let s = &when.eventarc;
    let mut cfg = Config::new(&w.project).with_time_scale(s.time_scale);
    cfg.ack_deadline = Duration::from_secs(s.ack_deadline_seconds);
    cfg.duplicate_probability = s.duplicate_probability;
    cfg.reorder_window = Duration::from_millis(s.reorder_window_ms);
    cfg.seed = s.seed;
    if let Some(t) = &s.types {
        cfg.types = t.clone();
    }
    let eventarc = LocalEventarc::start(cfg, Vec::new()).await?;
    let mut live = Live {
        w,
        program: serve_program(w)?,
        env,
        procs: Vec::new(),
        eventarc,
        proxies,
        t0: Instant::now(),
        timeline: Vec::new(),
        sigterms: Vec::new(),
    };
    let result = drive(&mut live).await;

    // Whatever happened: stop every process (SIGTERM, then SIGKILL), then the local Eventarc.
    live.eventarc.set_targets(Vec::new());
    for p in live.procs.iter_mut() {
        if p.running() {
            let _ = p.terminate(Duration::from_secs(10)).await;
        }
    }
    live.eventarc.shutdown().await;
    let journal = w.mock.state().journal(&Default::default());
    let call_times = live
        .procs
        .iter()
        .map(|p| {
            let mut times: Vec<DateTime<Utc>> = journal
                .iter()
                .filter(|e| e.routed && e.via.as_deref() == Some(p.name.as_str()))
                .map(|e| e.received_at)
                .collect();
            times.sort();
            (p.name.clone(), times)
        })
        .collect();
    let time_of = |l: &Value| {
        l["time"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let claim_times = live
        .procs
        .iter()
        .map(|p| {
            let times = p
                .json_logs()
                .iter()
                .filter(|l| {
                    l["event"] == "claim_attempt"
                        && matches!(l["outcome"].as_str(), Some("claimed" | "reclaimed" | "give_up"))
                })
                .filter_map(time_of)
                .collect();
            (p.name.clone(), times)
        })
        .collect();
    let first_time = |event: &str| -> Vec<(String, Option<DateTime<Utc>>)> {
        live.procs
            .iter()
            .map(|p| {
                let at = p.json_logs().iter().find(|l| l["event"] == event).and_then(time_of);
                (p.name.clone(), at)
            })
            .collect()
    };
    let shutdown_times = first_time("shutdown_started");
    let deadline_times = first_time("step_deadline");
    let mut process_logs = String::new();
    for p in &live.procs {
        for l in p.logs() {
            process_logs.push_str(&l);
            process_logs.push('\n');
        }
    }
    let (reached_ms, final_status) = match result {
        Ok(r) => r,
        Err(e) => {
            anyhow::bail!(
                "{e:#}\n--- timeline and deliveries ---\n{}\n--- serve processes ---\n{process_logs}",
                {
                    let mut r = LiveReport {
                        deliveries: live.eventarc.deliveries(),
                        timeline: live.timeline.clone(),
                        ..Default::default()
                    };
                    r.timeline.push("(run aborted)".into());
                    r.describe()
                }
            );
        }
    };
    let report = LiveReport {
        deliveries: live.eventarc.deliveries(),
        events: live.eventarc.events(),
        process_logs,
        sigterms: std::mem::take(&mut live.sigterms),
        reached_ms,
        final_status,
        timeline: std::mem::take(&mut live.timeline),
        proxy_calls: live.proxies.iter().map(|(d, p)| (*d, p.calls())).collect(),
        call_times,
        claim_times,
        shutdown_times,
        deadline_times,
    };
    let backend = Backend::Emulators {
        fs: w.fs.clone(),
        storage,
        bucket: w.bucket.clone(),
    };
    Ok(Delivered {
        backend,
        answers: Vec::new(),
        results: Vec::new(),
        live: Some(report),
    })
}

/// Starts the processes, writes the flow run, runs the actions and waits for the end. Answers when the step reached
/// `then.step.status` (ms after the write) and its status at the end.
async fn drive(live: &mut Live<'_>) -> anyhow::Result<(Option<u64>, Option<String>)> {
    let w = live.w;
    for _ in 0..w.scenario.when.processes.unwrap_or(1) {
        live.start_process().await?;
    }
    live.refresh_targets();
    w.fs.put_doc(FLOW_RUNS, &w.run_id, w.seeded.clone()).await?;
    let written = Instant::now();
    live.note("flow run written".into());
    for (i, a) in w.scenario.when.actions.iter().enumerate() {
        live.act(i, a).await?;
    }
    let t = &w.scenario.then;
    let mut reached = None;
    if let Some(want) = &t.step.status {
        let limit = Duration::from_secs_f64(t.within_seconds.map(|s| s + 5.0).unwrap_or(90.0));
        let deadline = written + limit;
        while Instant::now() < deadline {
            if live.step().await?["status"] == want.as_str() {
                reached = Some(written.elapsed().as_millis() as u64);
                live.note(format!("step {want}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    // Let the deliveries the last writes caused run out (each of them quick: a no-op or a retry answer).
    let settled = live
        .eventarc
        .wait_settled(Duration::from_millis(400), Duration::from_secs(30))
        .await;
    if !settled {
        live.note("deliveries still pending after 30 s".into());
    }
    let status = live.step().await?["status"].as_str().map(str::to_owned);
    Ok((reached, status))
}

/// A `serve` child named `name` that reaches mock-chart-img under `/__via/<name>/`: the mock journals the label, so
/// each call (and each call a kill cut off) names the process that sent it.
pub fn serve_spec(name: String, program: &std::path::Path, env: &BTreeMap<String, String>) -> ServeSpec {
    let mut spec = ServeSpec::new(&name, program);
    spec.env = env.clone();
    if let Some(base) = spec.env.get_mut("CHART_IMG_BASE_URL") {
        *base = format!("{}/__via/{name}", base.trim_end_matches('/'));
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_lease_is_read_only_from_a_running_step() {
        let at = "2026-12-08T03:00:05Z";
        assert_eq!(
            lease_until(&json!({"status": "RUNNING", "leaseExpiresAt": at})),
            Some(DateTime::parse_from_rfc3339(at).unwrap().with_timezone(&Utc))
        );
        assert_eq!(lease_until(&json!({"status": "READY", "leaseExpiresAt": at})), None);
        assert_eq!(lease_until(&json!({"status": "RUNNING"})), None);
        assert_eq!(
            lease_until(&json!({"status": "RUNNING", "leaseExpiresAt": "soon"})),
            None
        );
    }
}
