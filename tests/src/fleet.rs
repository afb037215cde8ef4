//! The fleet simulation (`fleet-sim`): production's shape at full load on this machine. N `serve` processes of the
//! real worker, one Firestore project on the emulator, one bucket on the GCS emulator, one mock-chart-img that
//! enforces each key's plan (rate, burst, daily quota) with its `realistic` latency profile × `time_scale`, three
//! accounts (BASIC, PRO, PRO, each with its plan's daily limit), and `runs` flow runs of `charts` charts written at
//! once and delivered by the local Eventarc (round-robin over the processes, at least once, Pub/Sub's backoff ×
//! `time_scale`).
//!
//! What it measures ([`Report`]): wall time from the first write to the last step's `finishedAt`, against
//! [`ideal_bound`] (the keys' summed rates and bursts and the profile's median latency, nothing of the worker);
//! `429 Too Many Requests` answered by the mock (goal 0); Firestore contention retries (the processes' JSON log lines
//! `"event":"transaction_retry"` with `"contention":true`); per account `usageToday` against the calls the mock
//! received on that key; every step's final status. [`Report::problems`] lists what makes the run fail: a step not
//! final within the timeout or FAILED, a `429 Too Many Requests`, a key's `usageToday` under its calls, an
//! over-count past `max_over_count_pct` (none allowed without kills), calls per chart past `max_calls_per_chart`, a
//! PNG no manifest names, wall time past `max_bound_ratio` × the bound.
//!
//! Chaos ([`Options::kill_every`], [`Options::freeze`]): during a window after the runs are written, a random
//! instance is SIGKILLed now and then (restarted a little later), and the Firestore emulator is frozen (SIGSTOP,
//! then SIGCONT 1–3 s later) now and then — the simulation's own emulator, never a shared one.
//!
//! The set-up is the scenario runner's (`runner::setup::keys`, `create_bucket`, `library_templates`,
//! `runner::live::serve_env`) and the harness's (`ServeProcess`, `LocalEventarc`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use harness::eventarc::{Config as EventarcConfig, Delivery, LocalEventarc};
use harness::process::ServeProcess;
use mock_chart_img::MockServer;
use serde::Serialize;
use serde_json::{json, Value};
use worker_chart_export::adapters::FirestoreStore;
use worker_chart_export::config::{parse_accounts, AccountConfig};
use worker_chart_export::domain::collections::{ACCOUNTS_USAGE, CHART_TEMPLATES, FLOW_RUNS};
use worker_chart_export::{ideal_bound, ideal_bound_for, ideal_bound_in_order};

use crate::runner::live::{serve_env, serve_spec, Wiring};
use crate::runner::setup::{create_bucket, keys, library_templates, Keys};
use crate::runner::Emulators;
use crate::scenario::Account;

/// The step every flow run carries.
pub const STEP_ID: &str = "charts";

/// Templates of `scenarios/templates/` a BASIC key can render (800×600, at most 3 parameters); chart `j` of a run
/// uses the `j % 6`-th.
const TEMPLATES: [&str; 6] = ["price_volume", "rsi_14", "macd", "line_dark", "area_light", "ema_cross"];

const SYMBOLS: [&str; 8] = [
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "LTCUSDT",
];

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    pub instances: usize,
    pub runs: usize,
    pub charts: usize,
    /// Multiplies the mock's realistic latency and the local Eventarc's backoff (1.0 = Chart-IMG's real 4–10 s).
    pub time_scale: f64,
    /// How long the steps may take to be final; default 4 × the ideal bound + 60 s.
    pub timeout: Option<Duration>,
    /// Seed of the mock's latency dice and chart data.
    pub seed: u64,
    /// `RUST_LOG` of the `serve` processes.
    pub rust_log: String,
    /// Where to write every process's log lines (one file, `<process> <line>`), for a look afterwards.
    pub logs: Option<PathBuf>,
    /// Chaos: SIGKILL a random `serve` instance about this often (±50 %), restarting it 0.5–3 s later, during the
    /// first `chaos_window` after the runs are written.
    pub kill_every: Option<Duration>,
    pub chaos_window: Duration,
    /// A problem when Chart-IMG calls per chart in a manifest exceed it.
    pub max_calls_per_chart: Option<f64>,
    /// A problem when Chart-IMG calls per chart, the calls lost in flight at a SIGKILL left out, exceed this: what
    /// the worker paid twice by its own doing (re-renders after a release, a reclaim, a fence, a deadline).
    pub max_calls_per_chart_beyond_kills: Option<f64>,
    /// Chaos: freezes (SIGSTOP, then SIGCONT) of the Firestore emulator during the chaos window. The emulator must
    /// be the simulation's own (`fleet-sim` starts a private one: [`crate::private_firestore`]).
    pub freeze: Option<Freezes>,
    /// A problem when the usage over-count (Σ over keys of `usageToday` − calls, / Σ calls, in %) exceeds it.
    /// `None`: 0 without kills (`usageToday` must equal the calls), no limit with kills.
    pub max_over_count_pct: Option<f64>,
    /// A problem when the wall time exceeds this many times the ideal bound.
    pub max_bound_ratio: Option<f64>,
    /// A problem when the wall time exceeds this many times [`ideal_bound_in_order`] of the latencies the mock drew:
    /// what the worker itself adds, the dice's tail left out.
    pub max_in_order_ratio: Option<f64>,
}

/// Freezes of the Firestore emulator: one about every `every` (±50 %), each lasting 1 s to `longest` (uniform).
#[derive(Debug, Clone)]
pub struct Freezes {
    pub every: Duration,
    pub longest: Duration,
    /// The emulator's process id.
    pub pid: u32,
}

/// What the freezes did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FreezeFigures {
    pub count: usize,
    pub total_ms: u64,
    pub longest_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            instances: 4,
            runs: 100,
            charts: 5,
            time_scale: 0.25,
            timeout: None,
            seed: 1,
            // Debug for the Firestore adapter: its `transaction_retry` lines are info lines now, and the rollback
            // lines stay debug; the filter keeps both.
            rust_log: "info,worker_chart_export::adapters::firestore=debug,h2=warn,hyper=warn,tonic=warn,tower=warn"
                .into(),
            logs: None,
            kill_every: None,
            chaos_window: Duration::from_secs(30),
            max_calls_per_chart: None,
            max_calls_per_chart_beyond_kills: None,
            freeze: None,
            max_over_count_pct: None,
            max_bound_ratio: None,
            max_in_order_ratio: None,
        }
    }
}

/// A small deterministic generator for the chaos (xorshift64*), seeded from `--seed`.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[lo, hi)`.
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + (hi - lo).mul_f64((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
}

impl Options {
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.instances >= 1, "--instances must be at least 1");
        anyhow::ensure!(self.runs >= 1, "--runs must be at least 1");
        anyhow::ensure!(
            (1..=50).contains(&self.charts),
            "--charts must be within 1..=50 (a step's requests)"
        );
        anyhow::ensure!(
            self.time_scale.is_finite() && self.time_scale > 0.0 && self.time_scale <= 10.0,
            "--time-scale must be above 0 and at most 10, got {}",
            self.time_scale
        );
        if let Some(f) = &self.freeze {
            anyhow::ensure!(
                !f.every.is_zero() && !f.longest.is_zero(),
                "freezes need a positive period and length"
            );
        }
        Ok(())
    }
}

/// The three accounts: one BASIC (1/s, burst 3, 50 a day) and two PRO (10/s, burst 15, 500 a day). `dailyLimit` is
/// left to the plan (the worker then uses the plan's, as the mock does), so the day allows 1050 charts.
pub fn accounts() -> Vec<Account> {
    [("acc-basic", "BASIC"), ("acc-pro-1", "PRO"), ("acc-pro-2", "PRO")]
        .into_iter()
        .map(|(id, plan)| Account {
            id: id.into(),
            plan: Some(plan.into()),
            daily_limit: None,
            mock_plan: None,
            mock_overrides: None,
        })
        .collect()
}

/// One account's figures.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountFigures {
    pub id: String,
    pub plan: String,
    pub daily_limit: u32,
    /// `usageToday` of the worker's `chart_img_accounts_usage/{id}` (0 when the document does not exist).
    pub usage_today: u64,
    /// Every request the mock received with the key (throttled ones included: each of them cost the worker a unit).
    pub mock_calls: u64,
    /// Requests that passed the mock's gateway (its own daily counter).
    pub mock_used_today: u32,
    /// `429 Too Many Requests` answers.
    pub too_many_requests: u64,
    /// `429 Limit Exceeded` answers.
    pub limit_exceeded: u64,
    pub usage_matches_calls: bool,
}

/// Latency of the mock's `200` answers.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyFigures {
    pub p50_ms: u64,
    pub p95_ms: u64,
    pub max_ms: u64,
    /// When the mock received its first Chart-IMG call, after the runs were written (the start-up: claims, template
    /// reads, the first rate slot).
    pub first_call_ms: Option<u64>,
    /// When it received the last call, after the runs were written (the wall time less this is the last call's
    /// answer and the step's settling).
    pub last_call_ms: Option<u64>,
    /// Calls received per second between the first and the last (the steady rate, against the keys' summed rate).
    pub calls_per_sec: Option<f64>,
    /// Every `200` answer's duration, for [`ideal_bound_for`].
    #[serde(skip)]
    pub drawn: Vec<Duration>,
    /// The same in the order the mock received the calls, for [`ideal_bound_in_order`].
    #[serde(skip)]
    pub drawn_in_order: Vec<Duration>,
}

/// Everything one simulation measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub started_at: DateTime<Utc>,
    pub instances: usize,
    pub runs: usize,
    pub charts_per_run: usize,
    pub charts: usize,
    pub time_scale: f64,
    /// First write to the last step's `finishedAt`; `None` when some step never finished.
    pub wall_ms: Option<u64>,
    /// [`ideal_bound`] of all charts on the three keys at [`Report::model_latency_ms`].
    pub ideal_bound_ms: u64,
    /// `wall_ms / ideal_bound_ms`.
    pub ratio: Option<f64>,
    /// [`ideal_bound_for`] the durations the mock drew for its `200` answers: the keys' rates and bursts with the
    /// run's own latencies, the longest calls on the earliest starts (no scheduler can beat it, even one knowing
    /// every duration in advance; the tail of the realistic profile is in it, unlike [`Report::ideal_bound_ms`]).
    pub drawn_bound_ms: Option<u64>,
    /// `wall_ms / drawn_bound_ms`.
    pub drawn_ratio: Option<f64>,
    /// [`ideal_bound_in_order`] of the same durations in the order the mock received the calls (its dice draws in
    /// that order): the keys' earliest starts meeting the latencies this run met, the tail included.
    pub in_order_bound_ms: Option<u64>,
    /// `wall_ms / in_order_bound_ms`.
    pub in_order_ratio: Option<f64>,
    /// The realistic profile's median for the templates' size × `time_scale` (the latency of the bound).
    pub model_latency_ms: u64,
    pub observed_latency: LatencyFigures,
    pub too_many_requests: u64,
    pub limit_exceeded: u64,
    /// `504 Endpoint request timed out` (the profile's outliers past the gateway timeout).
    pub gateway_timeouts: u64,
    /// `transaction_retry` log lines with `contention: true`, over every process.
    pub contention_retries: u64,
    /// Contention retries by the transaction's `op` (claim, reserve, …): which documents collide.
    pub contention_by_op: BTreeMap<String, u64>,
    /// `transaction_retry` lines without contention (transport failures).
    pub other_transaction_retries: u64,
    pub transactions_gave_up: u64,
    /// `quota_give_back_failed` lines: unused units not given back, so `usageToday` over-counts by them.
    pub give_backs_failed: u64,
    /// `chart_api_retry` log lines: Chart-IMG calls the worker retried.
    pub chart_retries: u64,
    pub accounts: Vec<AccountFigures>,
    /// Steps by status (`SUCCEEDED`, `FAILED`, and anything not final).
    pub steps: BTreeMap<String, usize>,
    /// Failed steps by `error.code`.
    pub failed_by: BTreeMap<String, usize>,
    /// Each failed step: its run id and its `error.message`.
    pub failed: Vec<(String, String)>,
    pub all_final: bool,
    pub deliveries: u64,
    /// Delivery attempts not acknowledged (non-2xx, broken, ack deadline).
    pub deliveries_not_acked: u64,
    /// Delivery attempts by answer (`200`, `503`, `error`, `ack_deadline`, `no_target`).
    pub deliveries_by_answer: BTreeMap<String, u64>,
    /// Instances SIGKILLed during the chaos window (each restarted).
    pub kills: usize,
    /// Freezes of the Firestore emulator (SIGSTOP … SIGCONT) during the chaos window.
    pub freezes: FreezeFigures,
    /// Σ over keys of `usageToday` − calls where positive: units a killed holder still held.
    pub usage_over_count: u64,
    /// `usage_over_count` / Σ calls × 100.
    pub over_count_pct: Option<f64>,
    /// Σ over keys of calls − `usageToday` where positive: calls no counter holds (always a problem).
    pub usage_under_count: u64,
    /// Charts named by the manifests (every SUCCEEDED step's items).
    pub charts_in_manifests: usize,
    /// Chart-IMG calls (every key) per chart in a manifest.
    pub calls_per_chart: Option<f64>,
    /// Calls whose sender was SIGKILLed while they were in flight (the mock's journal: `client_closed`, sent under
    /// the killed process's `/__via/` label, closed at or after its kill): paid, and their answer lost with the
    /// process. No worker can keep them; a kill costs what the process had in flight.
    pub calls_lost_to_kills: u64,
    /// Other calls whose client closed the connection before the answer: the worker abandoned them (a fence, the
    /// deadline, SIGTERM, its own timeout).
    pub calls_abandoned: u64,
    /// `calls_per_chart` with `calls_lost_to_kills` left out: what the worker's own re-renders cost.
    pub calls_per_chart_beyond_kills: Option<f64>,
    /// PNGs in the bucket that no manifest names.
    pub orphan_pngs: usize,
    pub problems: Vec<String>,
}

/// Runs the simulation; `program` is the `serve` executable (started as `<program> serve`). The phases: `setup`
/// (mock, project, bucket, local Eventarc, processes), `write_runs`, `drive` (poll until final, with the chaos),
/// `stop`, the figures (logs, accounts, mock latency, steps, bucket) and `judge` (the problems and the [`Report`]).
pub async fn run(opts: &Options, emu: &Emulators, program: PathBuf) -> anyhow::Result<Report> {
    opts.check()?;
    let started_at = Utc::now();
    let mut fleet = Fleet::setup(opts, emu, program).await?;
    let (written_at, written) = fleet.write_runs().await?;
    let driven = fleet.drive(written).await?;
    let deliveries = fleet.stop().await;
    let logs = LogFigures::read(opts, &fleet.procs, &driven.dead)?;
    let accounts = fleet.account_figures().await?;
    let (observed_latency, gateway_timeouts, closed) = fleet.journal_figures(&driven.killed, written_at);
    let _ = fleet.mock.shutdown().await;
    let steps = StepFigures::of(&fleet.run_ids, &driven.steps, written_at, &logs.completed);
    let bucket = bucket_figures(&fleet.fs, emu, &fleet.bucket).await?;
    let collected = Collected {
        deliveries,
        logs,
        accounts,
        observed_latency,
        gateway_timeouts,
        closed,
        steps,
        bucket,
    };
    Ok(judge(
        opts,
        started_at,
        &fleet.sizes,
        &fleet.run_ids,
        &driven,
        collected,
    ))
}

/// The run's size and what it is judged by: the charts, the bound's latency, the ideal bound and the timeout.
struct Sizes {
    charts: usize,
    model_latency: Duration,
    ideal: Duration,
    timeout: Duration,
    /// The accounts, for the bound of the latencies the mock drew ([`ideal_bound_for`]).
    configs: Vec<worker_chart_export::config::AccountConfig>,
}

/// What [`Fleet::setup`] started: the mock, the project's templates, the local Eventarc and the `serve` processes.
struct Fleet<'a> {
    opts: &'a Options,
    program: PathBuf,
    bucket: String,
    accounts: Vec<Account>,
    configs: Vec<AccountConfig>,
    templates: Vec<(String, Value)>,
    sizes: Sizes,
    mock: MockServer,
    fs: FirestoreStore,
    eventarc: LocalEventarc,
    env: BTreeMap<String, String>,
    procs: Vec<ServeProcess>,
    run_ids: Vec<String>,
}

/// What [`Fleet::drive`] saw: every run's last-read step, the killed processes (for their logs) and the kills.
struct Driven {
    steps: BTreeMap<String, Value>,
    dead: Vec<ServeProcess>,
    kills: usize,
    /// Each SIGKILL: the process's name (its `/__via/` label) and when.
    killed: Vec<(String, DateTime<Utc>)>,
    freezes: FreezeFigures,
}

/// The counts of the processes' JSON log lines.
#[derive(Default)]
struct LogFigures {
    contention: u64,
    contention_by_op: BTreeMap<String, u64>,
    other_retries: u64,
    gave_up: u64,
    chart_retries: u64,
    give_backs_failed: u64,
    /// When each run's step was seen final by its holder (`step_completed`, millisecond log times): `finishedAt`
    /// holds whole seconds (the contract's time format), too coarse for a wall time of a few seconds.
    completed: BTreeMap<String, DateTime<Utc>>,
}

/// The steps' statuses and the wall time.
struct StepFigures {
    by_status: BTreeMap<String, usize>,
    failed_by: BTreeMap<String, usize>,
    failed: Vec<(String, String)>,
    all_final: bool,
    wall_ms: Option<u64>,
}

/// What the bucket holds.
struct BucketFigures {
    charts_in_manifests: usize,
    orphan_pngs: usize,
}

/// Every figure collected after the fleet stopped.
struct Collected {
    deliveries: Vec<Delivery>,
    logs: LogFigures,
    accounts: Vec<AccountFigures>,
    observed_latency: LatencyFigures,
    gateway_timeouts: u64,
    closed: ClosedCalls,
    steps: StepFigures,
    bucket: BucketFigures,
}

/// Calls whose client closed the connection before the answer (the mock journals them `client_closed`).
#[derive(Debug, Default, PartialEq)]
struct ClosedCalls {
    /// In flight when their process was SIGKILLed.
    lost_to_kills: u64,
    /// Closed by a live worker.
    abandoned: u64,
}

impl ClosedCalls {
    /// A closed call is lost to a kill when its sender (`via`) was killed while it was in flight: it arrived before
    /// the kill and the mock saw the connection close at or after it.
    fn of(journal: &[mock_chart_img::JournalEntry], killed: &[(String, DateTime<Utc>)]) -> Self {
        let mut closed = ClosedCalls::default();
        for e in journal.iter().filter(|e| e.client_closed) {
            let lost = killed
                .iter()
                .any(|(name, at)| e.via.as_deref() == Some(name.as_str()) && e.received_at <= *at && e.at >= *at);
            if lost {
                closed.lost_to_kills += 1;
            } else {
                closed.abandoned += 1;
            }
        }
        closed
    }
}

impl<'a> Fleet<'a> {
    /// Keys, templates and the bound; starts the mock, fills the project and the bucket, starts the local Eventarc
    /// and the `serve` processes (its targets).
    async fn setup(opts: &'a Options, emu: &Emulators, program: PathBuf) -> anyhow::Result<Self> {
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let project = format!("fleet-sim-{suffix}");
        let bucket = format!("fleet-sim-{suffix}");
        let accounts = accounts();
        let Keys {
            keys: _,
            accounts_json,
            mock: mut mock_config,
        } = keys(&accounts)?;
        let configs = parse_accounts("fleet accounts", &accounts_json)?;

        let charts = opts.runs * opts.charts;
        let templates: Vec<(String, Value)> = {
            let ids: Vec<String> = TEMPLATES.iter().map(|t| (*t).to_owned()).collect();
            let lib = library_templates(&ids)?;
            (0..opts.charts)
                .map(|j| (format!("sim_{j:02}"), lib[TEMPLATES[j % TEMPLATES.len()]].clone()))
                .collect()
        };
        // The bound's latency: the profile's median for the templates' size and fewest parameters (a lower bound).
        let model_latency = templates
            .iter()
            .map(|(_, t)| {
                let r = &t["request"];
                let dim = |k: &str, d: u64| r[k].as_u64().unwrap_or(d) as u32;
                let params = r["studies"].as_array().map_or(0, Vec::len) + r["drawings"].as_array().map_or(0, Vec::len);
                mock_chart_img::latency::median(dim("width", 800), dim("height", 600), params)
            })
            .min()
            .unwrap_or_default()
            .mul_f64(opts.time_scale);
        let ideal = ideal_bound(charts as u64, model_latency, &configs).with_context(|| {
            let total: u64 = configs.iter().map(|c| u64::from(c.daily_limit)).sum();
            format!("{charts} charts: the accounts' daily limits allow {total} a day")
        })?;
        let timeout = opts.timeout.unwrap_or(ideal * 4 + Duration::from_secs(60));

        mock_config.latency = mock_chart_img::LatencyProfile::Realistic;
        mock_config.time_scale = opts.time_scale;
        mock_config.seed = opts.seed;
        mock_config.journal_capacity = charts * 4 + 1000;
        let mock = mock_chart_img::spawn(mock_config)
            .await
            .context("cannot start mock-chart-img")?;

        let storage = create_bucket(&emu.storage, &project, &bucket).await?;
        let fs = FirestoreStore::new(&project)
            .await
            .context("cannot reach the Firestore emulator")?;
        for (id, t) in &templates {
            fs.put_doc(CHART_TEMPLATES, id, t.clone()).await?;
        }

        let mut eventarc_config = EventarcConfig::new(&project).with_time_scale(opts.time_scale);
        // The event types deploy-plan's triggers subscribe to: runs start as the deployment would see them.
        eventarc_config.types = worker_chart_export::entry::deploy::TRIGGER_EVENT_TYPES.to_vec();
        // Backoff scaled, but the ack deadline stays production's 600 s: a step runs inside its delivery.
        eventarc_config.ack_deadline = Duration::from_secs(600).div_f64(opts.time_scale);
        let eventarc = LocalEventarc::start(eventarc_config, Vec::new()).await?;

        let mut env = serve_env(&Wiring {
            firestore: emu.firestore.clone(),
            storage,
            chartimg: mock.base_url(),
            project: project.clone(),
            bucket: bucket.clone(),
            accounts_json,
            mode: "real".into(),
        });
        env.insert("RUST_LOG".into(), opts.rust_log.clone());
        if opts.kill_every.is_some() {
            // A killed holder's step comes back when its lease ends: production's 60 s on the simulation's time
            // scale (at least 4 s), renewed every third of it.
            let lease = (60.0 * opts.time_scale).max(4.0);
            env.insert("CHART_EXPORT_LEASE_SECONDS".into(), format!("{lease}"));
            env.insert("CHART_EXPORT_HEARTBEAT_SECONDS".into(), format!("{}", lease / 3.0));
        }
        let mut procs = Vec::new();
        for i in 0..opts.instances {
            procs.push(ServeProcess::start(serve_spec(format!("serve-{i}"), &program, &env)).await?);
        }
        eventarc.set_targets(procs.iter().map(|p| format!("{}/", p.url())).collect());

        let run_ids: Vec<String> = (0..opts.runs).map(|i| format!("sim-{i:03}")).collect();
        Ok(Fleet {
            opts,
            program,
            bucket,
            accounts,
            configs: configs.clone(),
            templates,
            sizes: Sizes {
                charts,
                model_latency,
                ideal,
                timeout,
                configs,
            },
            mock,
            fs,
            eventarc,
            env,
            procs,
            run_ids,
        })
    }

    /// Writes every flow run at once (READY steps); returns when they were written.
    async fn write_runs(&self) -> anyhow::Result<(DateTime<Utc>, Instant)> {
        let opts = self.opts;
        let requests: Vec<Value> = self
            .templates
            .iter()
            .map(|(id, _)| json!({"chartTemplateId": id}))
            .collect();
        let written_at = Utc::now();
        let written = Instant::now();
        let writes = futures::future::join_all(self.run_ids.iter().enumerate().map(|(i, id)| {
            let doc = json!({
                "scope": {"symbol": SYMBOLS[i % SYMBOLS.len()]},
                "steps": {STEP_ID: {"stepType": "CHART_EXPORT", "status": "READY",
                    "inputs": {"timeframe": "4h", "minImages": opts.charts, "requests": requests}}}
            });
            let fs = self.fs.clone();
            async move { fs.put_doc(FLOW_RUNS, id, doc).await }
        }))
        .await;
        for w in writes {
            w.context("cannot write a flow run")?;
        }
        Ok((written_at, written))
    }

    /// Until every step is final (or the timeout): polls the runs not final yet, and during the chaos window
    /// SIGKILLs a random instance now and then and restarts it a little later.
    async fn drive(&mut self, written: Instant) -> anyhow::Result<Driven> {
        let opts = self.opts;
        let mut steps: BTreeMap<String, Value> = BTreeMap::new();
        let mut pending: Vec<String> = self.run_ids.clone();
        let mut dice = Dice(opts.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut dead: Vec<ServeProcess> = Vec::new();
        let mut restarts: Vec<(Instant, usize)> = Vec::new();
        let mut kills = 0usize;
        let mut killed = Vec::new();
        let mut next_kill = opts.kill_every.map(|k| written + dice.between(k / 2, k * 3 / 2));
        let (stop_freezes, stopped) = tokio::sync::watch::channel(false);
        let freezer = opts.freeze.clone().map(|f| {
            let dice = Dice(opts.seed.wrapping_mul(0x517c_c1b7_2722_0a95) | 1);
            tokio::spawn(freeze_loop(f, written + opts.chaos_window, dice, stopped))
        });
        let mut last_poll = written;
        while !pending.is_empty() && written.elapsed() < self.sizes.timeout {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = Instant::now();
            let mut changed = false;
            if let (Some(at), Some(every)) = (next_kill, opts.kill_every) {
                if now >= at && written.elapsed() < opts.chaos_window && !self.procs.is_empty() {
                    let i = (dice.next() % self.procs.len() as u64) as usize;
                    let mut victim = self.procs.remove(i);
                    let at = Utc::now();
                    victim.kill().await;
                    killed.push((victim.name.clone(), at));
                    kills += 1;
                    restarts.push((
                        now + dice.between(Duration::from_millis(500), Duration::from_secs(3)),
                        kills,
                    ));
                    dead.push(victim);
                    next_kill = Some(now + dice.between(every / 2, every * 3 / 2));
                    changed = true;
                }
            }
            let due: Vec<usize> = restarts.iter().filter(|(t, _)| *t <= now).map(|(_, k)| *k).collect();
            restarts.retain(|(t, _)| *t > now);
            for k in due {
                let spec = serve_spec(format!("serve-r{k}"), &self.program, &self.env);
                self.procs.push(ServeProcess::start(spec).await?);
                changed = true;
            }
            if changed {
                self.eventarc
                    .set_targets(self.procs.iter().map(|p| format!("{}/", p.url())).collect());
            }
            if now.duration_since(last_poll) < Duration::from_millis(500) {
                continue;
            }
            last_poll = now;
            let poll = futures::stream::iter(pending.clone())
                .map(|id| {
                    let fs = self.fs.clone();
                    async move {
                        let doc = fs.get_doc(FLOW_RUNS, &id).await.map_err(anyhow::Error::from);
                        (id, doc)
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<(String, anyhow::Result<Option<Value>>)>>();
            // A frozen emulator holds the reads: the kills go on meanwhile, the unread runs are read next time.
            let Ok(read) = tokio::time::timeout(Duration::from_secs(3), poll).await else {
                continue;
            };
            for (id, doc) in read {
                match doc {
                    Ok(doc) => {
                        steps.insert(id, doc.unwrap_or(Value::Null)["steps"][STEP_ID].clone());
                    }
                    Err(e) if opts.freeze.is_none() => return Err(e.context(format!("cannot read flow run {id}"))),
                    Err(_) => {}
                }
            }
            pending.retain(|id| !steps.get(id).is_some_and(is_final));
        }
        let _ = stop_freezes.send(true);
        let freezes = match freezer {
            Some(task) => task.await.context("the freezer task")??,
            None => FreezeFigures::default(),
        };
        Ok(Driven {
            steps,
            dead,
            kills,
            killed,
            freezes,
        })
    }

    /// Lets the deliveries the last writes caused (no-ops) run out, stops the processes and the local Eventarc;
    /// returns every delivery.
    async fn stop(&mut self) -> Vec<Delivery> {
        self.eventarc
            .wait_settled(Duration::from_millis(400), Duration::from_secs(15))
            .await;
        self.eventarc.set_targets(Vec::new());
        for p in self.procs.iter_mut() {
            if p.running() {
                let _ = p.terminate(Duration::from_secs(10)).await;
            }
        }
        let deliveries = self.eventarc.deliveries();
        self.eventarc.shutdown().await;
        deliveries
    }

    /// The mock's side, per key, and the worker's counters.
    async fn account_figures(&self) -> anyhow::Result<Vec<AccountFigures>> {
        let mut figures = Vec::new();
        for (a, c) in self.accounts.iter().zip(&self.configs) {
            let u = self
                .mock
                .state()
                .usage(&a.id)
                .with_context(|| format!("the mock has no account {}", a.id))?;
            let doc = self.fs.get_doc(ACCOUNTS_USAGE, &a.id).await?;
            let usage_today = doc.as_ref().and_then(|d| d["usageToday"].as_u64()).unwrap_or(0);
            figures.push(AccountFigures {
                id: a.id.clone(),
                plan: format!("{:?}", c.plan).to_uppercase(),
                daily_limit: c.daily_limit,
                usage_today,
                mock_calls: u.requests,
                mock_used_today: u.used_today,
                too_many_requests: u.throttled,
                limit_exceeded: u.quota_rejected,
                usage_matches_calls: usage_today == u.requests,
            });
        }
        Ok(figures)
    }

    /// The latency of the mock's `200` answers, its `504` count and the calls whose client closed the connection
    /// first (lost to a kill, abandoned by the worker), from its journal.
    fn journal_figures(
        &self,
        killed: &[(String, DateTime<Utc>)],
        written_at: DateTime<Utc>,
    ) -> (LatencyFigures, u64, ClosedCalls) {
        let journal = self.mock.state().journal(&Default::default());
        let received = journal.iter().filter(|e| e.account.is_some()).map(|e| e.received_at);
        let (first, last) = (received.clone().min(), received.clone().max());
        let after_write = |t: Option<DateTime<Utc>>| t.map(|t| (t - written_at).num_milliseconds().max(0) as u64);
        let calls_per_sec = match (first, last) {
            (Some(f), Some(l)) if l > f => {
                Some((received.count() - 1) as f64 / ((l - f).num_milliseconds() as f64 / 1000.0))
            }
            _ => None,
        };
        let closed = ClosedCalls::of(&journal, killed);
        let mut answered: Vec<_> = journal.iter().filter(|e| e.status == Some(200)).collect();
        answered.sort_by_key(|e| e.seq);
        let drawn_in_order = answered.iter().map(|e| Duration::from_millis(e.duration_ms)).collect();
        let mut took: Vec<u64> = answered.iter().map(|e| e.duration_ms).collect();
        took.sort_unstable();
        let pct = |p: f64| {
            took.get(((took.len() as f64 * p) as usize).min(took.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        let observed_latency = LatencyFigures {
            p50_ms: pct(0.5),
            p95_ms: pct(0.95),
            max_ms: took.last().copied().unwrap_or(0),
            first_call_ms: after_write(first),
            last_call_ms: after_write(last),
            calls_per_sec,
            drawn: took.iter().map(|ms| Duration::from_millis(*ms)).collect(),
            drawn_in_order,
        };
        let gateway_timeouts = journal.iter().filter(|e| e.status == Some(504)).count() as u64;
        (observed_latency, gateway_timeouts, closed)
    }
}

/// Freezes the Firestore emulator about every `f.every` (±50 %) for 1 s to `f.longest` until `until` (a freeze
/// begun before it runs its length) or until `stop` turns true; the emulator is always left running.
async fn freeze_loop(
    f: Freezes,
    until: Instant,
    mut dice: Dice,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<FreezeFigures> {
    let mut figures = FreezeFigures::default();
    loop {
        let at = Instant::now() + dice.between(f.every / 2, f.every * 3 / 2);
        if at >= until {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let hold = dice.between(Duration::from_secs(1).min(f.longest), f.longest);
        crate::private_firestore::freeze(f.pid, true)?;
        let t = Instant::now();
        let stopped = tokio::select! {
            _ = tokio::time::sleep(hold) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        crate::private_firestore::freeze(f.pid, false)?;
        let held = t.elapsed().as_millis() as u64;
        figures.count += 1;
        figures.total_ms += held;
        figures.longest_ms = figures.longest_ms.max(held);
        if stopped {
            break;
        }
    }
    Ok(figures)
}

/// What the bucket holds: every PNG must be named by a manifest.
async fn bucket_figures(fs: &FirestoreStore, emu: &Emulators, bucket: &str) -> anyhow::Result<BucketFigures> {
    let objects = crate::runner::readback::Backend::Emulators {
        fs: fs.clone(),
        storage: emu
            .storage
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
        bucket: bucket.to_owned(),
    }
    .objects()
    .await
    .context("cannot list the bucket")?;
    let mut named = std::collections::BTreeSet::new();
    for o in objects.iter().filter(|o| o.name.ends_with("manifest.json")) {
        let m: Value = serde_json::from_slice(&o.bytes).unwrap_or_default();
        for item in m["items"].as_array().into_iter().flatten() {
            if let Some(uri) = item["gcsUri"].as_str() {
                named.insert(
                    uri.split_once(&format!("gs://{bucket}/"))
                        .map_or(uri, |(_, p)| p)
                        .to_owned(),
                );
            }
        }
    }
    let charts_in_manifests = named.len();
    let orphan_pngs = objects
        .iter()
        .filter(|o| o.name.ends_with(".png") && !named.contains(&o.name))
        .count();
    Ok(BucketFigures {
        charts_in_manifests,
        orphan_pngs,
    })
}

impl LogFigures {
    /// Counts the processes' log lines (the running ones and the killed ones); writes them all to `--logs`.
    fn read(opts: &Options, procs: &[ServeProcess], dead: &[ServeProcess]) -> anyhow::Result<Self> {
        let mut f = LogFigures::default();
        if let Some(path) = &opts.logs {
            let mut text = String::new();
            for p in procs.iter().chain(dead) {
                for l in p.logs() {
                    text.push_str(&format!("{} {l}\n", p.name));
                }
            }
            std::fs::write(path, text).with_context(|| format!("cannot write the logs to {}", path.display()))?;
        }
        for p in procs.iter().chain(dead) {
            for l in p.json_logs() {
                match l["event"].as_str() {
                    Some("transaction_retry") if l["contention"] == true => {
                        f.contention += 1;
                        *f.contention_by_op
                            .entry(l["op"].as_str().unwrap_or("?").to_owned())
                            .or_default() += 1;
                    }
                    Some("transaction_retry") => f.other_retries += 1,
                    Some("transaction_gave_up") => f.gave_up += 1,
                    Some("chart_api_retry") => f.chart_retries += 1,
                    Some("quota_give_back_failed") => f.give_backs_failed += 1,
                    Some("step_completed") => {
                        let at = l["time"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
                        if let (Some(run), Some(at)) = (l["runId"].as_str(), at) {
                            let at = at.with_timezone(&Utc);
                            let e = f.completed.entry(run.to_owned()).or_insert(at);
                            *e = (*e).max(at);
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(f)
    }
}

impl StepFigures {
    /// The steps by status, the failed ones by code, whether all are final, and the wall time from the write to
    /// the last step final (when all are): each step's `finishedAt`, or its `step_completed` log time where later
    /// (`completed`: `finishedAt` has whole seconds).
    fn of(
        run_ids: &[String],
        steps: &BTreeMap<String, Value>,
        written_at: DateTime<Utc>,
        completed: &BTreeMap<String, DateTime<Utc>>,
    ) -> Self {
        let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
        for id in run_ids {
            let s = steps
                .get(id)
                .and_then(|s| s["status"].as_str())
                .unwrap_or("(unread)")
                .to_owned();
            *by_status.entry(s).or_default() += 1;
        }
        // Each failed step once: its run and message, and the count by code.
        let mut failed_by: BTreeMap<String, usize> = BTreeMap::new();
        let mut failed = Vec::new();
        for (id, s) in run_ids.iter().filter_map(|id| Some((id, steps.get(id)?))) {
            if s["status"] == "FAILED" {
                *failed_by
                    .entry(s["error"]["code"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
                failed.push((id.to_string(), s["error"]["message"].as_str().unwrap_or("?").to_owned()));
            }
        }
        let all_final = run_ids.iter().all(|id| steps.get(id).is_some_and(is_final));
        let last_finished = run_ids
            .iter()
            .filter_map(|id| {
                let finished = steps.get(id)?["finishedAt"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())?
                    .with_timezone(&Utc);
                Some(completed.get(id).map_or(finished, |c| finished.max(*c)))
            })
            .max();
        let wall_ms = match (all_final, last_finished) {
            (true, Some(t)) => Some((t - written_at).num_milliseconds().max(0) as u64),
            _ => None,
        };
        StepFigures {
            by_status,
            failed_by,
            failed,
            all_final,
            wall_ms,
        }
    }
}

/// The verdict: the problems that fail the run, and the [`Report`] of every figure.
fn judge(
    opts: &Options,
    started_at: DateTime<Utc>,
    sizes: &Sizes,
    run_ids: &[String],
    driven: &Driven,
    c: Collected,
) -> Report {
    let Collected {
        deliveries,
        logs,
        accounts: figures,
        observed_latency,
        gateway_timeouts,
        closed,
        steps:
            StepFigures {
                by_status,
                failed_by,
                failed,
                all_final,
                wall_ms,
            },
        bucket: BucketFigures {
            charts_in_manifests,
            orphan_pngs,
        },
    } = c;
    let (steps, kills, timeout) = (&driven.steps, driven.kills, sizes.timeout);
    let freezes = driven.freezes.clone();
    let ideal_bound_ms = sizes.ideal.as_millis() as u64;
    let calls: u64 = figures.iter().map(|f| f.mock_calls).sum();
    let calls_per_chart = (charts_in_manifests > 0).then(|| calls as f64 / charts_in_manifests as f64);
    let calls_per_chart_beyond_kills = (charts_in_manifests > 0)
        .then(|| calls.saturating_sub(closed.lost_to_kills) as f64 / charts_in_manifests as f64);

    let mut problems = Vec::new();
    if let Some(n) = by_status.get("FAILED") {
        problems.push(format!("{n} steps FAILED ({failed_by:?})"));
    }
    if orphan_pngs > 0 {
        problems.push(format!("{orphan_pngs} PNGs in the bucket that no manifest names"));
    }
    if let (Some(max), Some(c)) = (opts.max_calls_per_chart, calls_per_chart) {
        if c > max {
            problems.push(format!("{c:.3} Chart-IMG calls per chart, above {max}"));
        }
    }
    if let (Some(max), Some(c)) = (opts.max_calls_per_chart_beyond_kills, calls_per_chart_beyond_kills) {
        if c > max {
            problems.push(format!(
                "{c:.3} Chart-IMG calls per chart beyond the {} lost in flight at kills, above {max}",
                closed.lost_to_kills
            ));
        }
    }
    if !all_final {
        let open: Vec<&String> = run_ids
            .iter()
            .filter(|id| !steps.get(*id).is_some_and(is_final))
            .collect();
        problems.push(format!(
            "{} of {} steps not final within {:.0} s (first: {})",
            open.len(),
            run_ids.len(),
            timeout.as_secs_f64(),
            open.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    let too_many_requests: u64 = figures.iter().map(|f| f.too_many_requests).sum();
    if too_many_requests > 0 {
        let by_key: Vec<String> = figures
            .iter()
            .filter(|f| f.too_many_requests > 0)
            .map(|f| format!("{} {}", f.id, f.too_many_requests))
            .collect();
        problems.push(format!(
            "{too_many_requests} × 429 Too Many Requests answered by the mock ({})",
            by_key.join(", ")
        ));
    }
    // Fewer units counted than calls sent is always a problem; more is what a killed holder can leave counted, up
    // to the allowed over-count (none without kills unless --max-over-count-pct says otherwise).
    for f in figures.iter().filter(|f| f.usage_today < f.mock_calls) {
        problems.push(format!(
            "{}: usageToday {} under-counts the {} calls the mock received",
            f.id, f.usage_today, f.mock_calls
        ));
    }
    let usage_over_count: u64 = figures.iter().map(|f| f.usage_today.saturating_sub(f.mock_calls)).sum();
    let usage_under_count: u64 = figures.iter().map(|f| f.mock_calls.saturating_sub(f.usage_today)).sum();
    let over_count_pct = (calls > 0).then(|| usage_over_count as f64 * 100.0 / calls as f64);
    let max_over = opts.max_over_count_pct.or((kills == 0).then_some(0.0));
    if let Some(max) = max_over {
        let pct = over_count_pct.unwrap_or(if usage_over_count > 0 { f64::INFINITY } else { 0.0 });
        if pct > max {
            let by_key: Vec<String> = figures
                .iter()
                .filter(|f| f.usage_today > f.mock_calls)
                .map(|f| format!("{} usageToday {} vs {} calls", f.id, f.usage_today, f.mock_calls))
                .collect();
            problems.push(format!(
                "usage over-count {usage_over_count} units = {pct:.1} % of {calls} calls, above {max} % ({})",
                by_key.join(", ")
            ));
        }
    }
    let ratio = wall_ms.map(|w| w as f64 / ideal_bound_ms.max(1) as f64);
    let drawn_bound_ms = ideal_bound_for(&observed_latency.drawn, &sizes.configs).map(|d| d.as_millis() as u64);
    let drawn_ratio = wall_ms.zip(drawn_bound_ms).map(|(w, b)| w as f64 / b.max(1) as f64);
    let in_order_bound_ms =
        ideal_bound_in_order(&observed_latency.drawn_in_order, &sizes.configs).map(|d| d.as_millis() as u64);
    let in_order_ratio = wall_ms.zip(in_order_bound_ms).map(|(w, b)| w as f64 / b.max(1) as f64);
    if let (Some(max), Some(r)) = (opts.max_bound_ratio, ratio) {
        if r > max {
            problems.push(format!(
                "wall {} ms = {r:.2}× the ideal bound ({ideal_bound_ms} ms), above {max}×",
                wall_ms.unwrap_or_default()
            ));
        }
    }
    if let (Some(max), Some(r)) = (opts.max_in_order_ratio, in_order_ratio) {
        if r > max {
            problems.push(format!(
                "wall {} ms = {r:.2}× the bound in the order drawn ({} ms), above {max}×",
                wall_ms.unwrap_or_default(),
                in_order_bound_ms.unwrap_or_default()
            ));
        }
    }
    Report {
        started_at,
        instances: opts.instances,
        runs: opts.runs,
        charts_per_run: opts.charts,
        charts: sizes.charts,
        time_scale: opts.time_scale,
        wall_ms,
        ideal_bound_ms,
        ratio,
        drawn_bound_ms,
        in_order_bound_ms,
        in_order_ratio,
        drawn_ratio,
        model_latency_ms: sizes.model_latency.as_millis() as u64,
        observed_latency,
        too_many_requests,
        limit_exceeded: figures.iter().map(|f| f.limit_exceeded).sum(),
        gateway_timeouts,
        contention_retries: logs.contention,
        contention_by_op: logs.contention_by_op,
        other_transaction_retries: logs.other_retries,
        transactions_gave_up: logs.gave_up,
        give_backs_failed: logs.give_backs_failed,
        chart_retries: logs.chart_retries,
        accounts: figures,
        steps: by_status,
        failed_by,
        failed,
        all_final,
        deliveries: deliveries.len() as u64,
        deliveries_not_acked: deliveries.iter().filter(|d| !d.outcome.acked()).count() as u64,
        deliveries_by_answer: deliveries.iter().fold(BTreeMap::new(), |mut m, d| {
            let k = match &d.outcome {
                harness::eventarc::Outcome::Status { code } => code.to_string(),
                harness::eventarc::Outcome::Error { .. } => "error".into(),
                harness::eventarc::Outcome::AckDeadline => "ack_deadline".into(),
                harness::eventarc::Outcome::NoTarget => "no_target".into(),
            };
            *m.entry(k).or_default() += 1;
            m
        }),
        kills,
        freezes,
        usage_over_count,
        over_count_pct,
        usage_under_count,
        charts_in_manifests,
        calls_per_chart,
        calls_lost_to_kills: closed.lost_to_kills,
        calls_abandoned: closed.abandoned,
        calls_per_chart_beyond_kills,
        orphan_pngs,
        problems,
    }
}

fn is_final(step: &Value) -> bool {
    matches!(step["status"].as_str(), Some("SUCCEEDED" | "FAILED"))
}

impl Report {
    /// The report as a table for humans.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |k: &str, v: String| out.push_str(&format!("{k:<34} {v}\n"));
        row(
            "simulation",
            format!(
                "{} instances, {} runs × {} charts = {} charts, time scale {}",
                self.instances, self.runs, self.charts_per_run, self.charts, self.time_scale
            ),
        );
        row("started", self.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string());
        row(
            "wall (write → last step final)",
            match (self.wall_ms, self.ratio) {
                (Some(w), Some(r)) => format!("{w} ms = {r:.2}× the ideal bound"),
                _ => "— (not every step finished)".into(),
            },
        );
        row(
            "bound of the drawn latencies",
            match (self.drawn_bound_ms, self.drawn_ratio) {
                (Some(b), Some(r)) => format!("{b} ms (wall = {r:.2}×: the run's own latencies, longest first)"),
                (Some(b), None) => format!("{b} ms"),
                _ => "—".into(),
            },
        );
        row(
            "bound in the order drawn",
            match (self.in_order_bound_ms, self.in_order_ratio) {
                (Some(b), Some(r)) => {
                    format!("{b} ms (wall = {r:.2}×: the k-th earliest start meets the k-th latency drawn)")
                }
                (Some(b), None) => format!("{b} ms"),
                _ => "—".into(),
            },
        );
        row(
            "ideal bound",
            format!(
                "{} ms (summed rates and bursts of the keys, latency {} ms)",
                self.ideal_bound_ms, self.model_latency_ms
            ),
        );
        row(
            "mock latency of 200s",
            format!(
                "p50 {} ms, p95 {} ms, max {} ms",
                self.observed_latency.p50_ms, self.observed_latency.p95_ms, self.observed_latency.max_ms
            ),
        );
        let l = &self.observed_latency;
        row(
            "calls after the write",
            match (l.first_call_ms, l.last_call_ms, l.calls_per_sec) {
                (Some(f), Some(t), Some(r)) => format!("first {f} ms, last {t} ms, {r:.1} calls/s between"),
                _ => "—".into(),
            },
        );
        row("instances killed (SIGKILL)", self.kills.to_string());
        row(
            "Firestore freezes (SIGSTOP)",
            format!(
                "{} ({} ms in all, longest {} ms)",
                self.freezes.count, self.freezes.total_ms, self.freezes.longest_ms
            ),
        );
        row(
            "Chart-IMG calls per chart",
            match self.calls_per_chart {
                Some(c) => format!("{c:.3} ({} charts in manifests)", self.charts_in_manifests),
                None => "— (no manifest)".into(),
            },
        );
        row(
            "  beyond the calls lost to kills",
            match self.calls_per_chart_beyond_kills {
                Some(c) => format!(
                    "{c:.3} ({} calls in flight at a SIGKILL, {} more abandoned by a live worker)",
                    self.calls_lost_to_kills, self.calls_abandoned
                ),
                None => "—".into(),
            },
        );
        row("PNGs no manifest names (goal 0)", self.orphan_pngs.to_string());
        row(
            "usageToday over the calls",
            match self.over_count_pct {
                Some(p) => format!("{} ({p:.1} % of the calls)", self.usage_over_count),
                None => self.usage_over_count.to_string(),
            },
        );
        row(
            "usageToday under the calls (goal 0)",
            self.usage_under_count.to_string(),
        );
        row("429 Too Many Requests (goal 0)", self.too_many_requests.to_string());
        row("429 Limit Exceeded", self.limit_exceeded.to_string());
        row("504 gateway timeouts", self.gateway_timeouts.to_string());
        row("Chart-IMG retries (worker)", self.chart_retries.to_string());
        row(
            "Firestore contention retries",
            format!(
                "{} {:?} (other transaction retries {}, gave up {})",
                self.contention_retries,
                self.contention_by_op,
                self.other_transaction_retries,
                self.transactions_gave_up
            ),
        );
        let steps: Vec<String> = self.steps.iter().map(|(s, n)| format!("{s} {n}")).collect();
        row(
            "steps",
            format!(
                "{}{}",
                steps.join(", "),
                if self.all_final {
                    " (all final)"
                } else {
                    " (NOT all final)"
                }
            ),
        );
        if !self.failed_by.is_empty() {
            row("failed steps by error code", format!("{:?}", self.failed_by));
        }
        for (run, message) in &self.failed {
            row("  failed", format!("{run}: {message}"));
        }
        row(
            "quota give-backs failed",
            format!("{} (each leaves usageToday above the calls)", self.give_backs_failed),
        );
        row(
            "deliveries",
            format!(
                "{} attempts, {} not acknowledged, by answer {:?}",
                self.deliveries, self.deliveries_not_acked, self.deliveries_by_answer
            ),
        );
        out.push_str(&format!(
            "\n{:<10} {:<6} {:>6} {:>11} {:>10} {:>15} {:>8} {:>8} {}\n",
            "account",
            "plan",
            "daily",
            "usageToday",
            "mock calls",
            "mock usedToday",
            "429 TMR",
            "429 LE",
            "usage = calls"
        ));
        for a in &self.accounts {
            out.push_str(&format!(
                "{:<10} {:<6} {:>6} {:>11} {:>10} {:>15} {:>8} {:>8} {}\n",
                a.id,
                a.plan,
                a.daily_limit,
                a.usage_today,
                a.mock_calls,
                a.mock_used_today,
                a.too_many_requests,
                a.limit_exceeded,
                if a.usage_matches_calls { "yes" } else { "NO (mismatch)" }
            ));
        }
        if self.problems.is_empty() {
            out.push_str("\nresult: ok\n");
        } else {
            out.push_str("\nresult: FAILED\n");
            for p in &self.problems {
                out.push_str(&format!("  - {p}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(via: &str, received: &str, closed: &str, client_closed: bool) -> mock_chart_img::JournalEntry {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        mock_chart_img::JournalEntry {
            seq: 1,
            at: t(closed),
            received_at: t(received),
            via: Some(via.into()),
            method: "POST".into(),
            path: "/v2/tradingview/advanced-chart".into(),
            account: Some("acc-pro-1".into()),
            key_status: "valid".into(),
            status: (!client_closed).then_some(200),
            duration_ms: 0,
            error: None,
            faults: Vec::new(),
            symbol: None,
            interval: None,
            symbol_listed: None,
            cache_hit: None,
            replayed: None,
            query: Vec::new(),
            routed: true,
            stub: None,
            bodies_kept: false,
            queue_ms: None,
            shared_render: None,
            client_closed,
        }
    }

    #[test]
    fn a_closed_call_is_lost_to_a_kill_only_when_its_own_sender_died_while_it_was_in_flight() {
        let kill = |name: &str, at: &str| {
            (
                name.to_owned(),
                DateTime::parse_from_rfc3339(at).unwrap().with_timezone(&Utc),
            )
        };
        let killed = [kill("serve-1", "2026-12-07T10:00:05Z")];
        let journal = [
            // In flight at serve-1's kill.
            entry("serve-1", "2026-12-07T10:00:04Z", "2026-12-07T10:00:05.010Z", true),
            // Closed by serve-1 before its kill (a fence): the worker's doing.
            entry("serve-1", "2026-12-07T10:00:01Z", "2026-12-07T10:00:02Z", true),
            // Another process's call closed at the same moment.
            entry("serve-0", "2026-12-07T10:00:04Z", "2026-12-07T10:00:05.010Z", true),
            // Answered: not a closed call at all.
            entry("serve-1", "2026-12-07T10:00:04Z", "2026-12-07T10:00:05.010Z", false),
        ];
        assert_eq!(
            ClosedCalls::of(&journal, &killed),
            ClosedCalls {
                lost_to_kills: 1,
                abandoned: 2
            }
        );
    }
}
