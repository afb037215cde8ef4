//! Runs one scenario for real: a fresh Firestore project and bucket on the emulators, a mock-chart-img server with
//! the scenario's keys and faults, the worker through its real entrypoints, then every `then` check. A failure comes
//! back as a report: what differed (expected vs actual per field), the mock's journal and the worker's log lines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use serde_json::{json, Value};
use worker_chart_export::adapters::docs::{ACCOUNTS_USAGE, CHART_TEMPLATES, FLOW_RUNS};
use worker_chart_export::adapters::gcs::emulator_endpoint;
use worker_chart_export::adapters::{FirestoreStore, GcsArtifacts, JsonDocs, LocalArtifacts, LocalBackend};
use worker_chart_export::chartimg::{CassetteChartImg, HttpChartImg};
use worker_chart_export::cli::{run_local_with, OutputFormat, RunLocalArgs};
use worker_chart_export::config::{parse_accounts, RetryPolicy, Settings};
use worker_chart_export::core::{run_chart_export_step, CoreSettings, StepReport, Worker};
use worker_chart_export::domain::{RunId, StepId, StepSelector, WorkerId};
use worker_chart_export::eventarc::encode_document_event;
use worker_chart_export::ports::{ChartRenderer, SystemClock};
use worker_chart_export::quota::AccountPool;
use worker_chart_export::serve::{router, AppState};

use crate::scenario::{Scenario, StepExpect, Templates};

/// Where the emulators listen (`host:port`, as in `FIRESTORE_EMULATOR_HOST` / `STORAGE_EMULATOR_HOST`).
#[derive(Debug, Clone)]
pub struct Emulators {
    pub firestore: String,
    pub storage: String,
}

impl Emulators {
    pub fn from_env() -> Option<Emulators> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(Emulators { firestore: get("FIRESTORE_EMULATOR_HOST")?, storage: get("STORAGE_EMULATOR_HOST")? })
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate sits in the workspace").to_path_buf()
}

/// What a run leaves for the caller: the manifest to snapshot, and the report of every check that failed.
#[derive(Debug, Default)]
pub struct Outcome {
    pub manifest: Option<Value>,
    pub differences: Vec<String>,
    pub journal: String,
}

/// One check's result, recorded as "field: expected X, actual Y".
struct Checks(Vec<String>);

impl Checks {
    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, field: &str, expected: T, actual: T) {
        if expected != actual {
            self.0.push(format!("{field}: expected {expected:?}, actual {actual:?}"));
        }
    }
    fn that(&mut self, field: &str, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(format!("{field}: {}", what()));
        }
    }
}

/// Read access to wherever the run wrote: the emulators, or the local state directory of `run_local`.
enum Backend {
    Emulators { fs: FirestoreStore, storage: String, bucket: String },
    Local { docs: JsonDocs<LocalBackend>, artifacts: LocalArtifacts, bucket: String },
}

struct Object {
    name: String,
    content_type: String,
    bytes: Vec<u8>,
}

impl Backend {
    async fn doc(&self, collection: &'static str, id: &str) -> anyhow::Result<Option<Value>> {
        Ok(match self {
            Backend::Emulators { fs, .. } => fs.get_doc(collection, id).await?,
            Backend::Local { docs, .. } => docs.get_doc(collection, id).await?,
        })
    }

    async fn objects(&self) -> anyhow::Result<Vec<Object>> {
        match self {
            Backend::Emulators { storage, bucket, .. } => {
                let http = reqwest::Client::new();
                let list: Value = http
                    .get(format!("http://{storage}/storage/v1/b/{bucket}/o"))
                    .send()
                    .await?
                    .json()
                    .await?;
                let mut out = Vec::new();
                for item in list["items"].as_array().cloned().unwrap_or_default() {
                    let name = item["name"].as_str().unwrap_or_default().to_owned();
                    let url = reqwest::Url::parse_with_params(
                        &format!("http://{storage}/storage/v1/b/{bucket}/o/{}", urlencode(&name)),
                        &[("alt", "media")],
                    )?;
                    let bytes = http.get(url).send().await?.bytes().await?.to_vec();
                    out.push(Object { name, content_type: item["contentType"].as_str().unwrap_or_default().to_owned(), bytes });
                }
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(out)
            }
            Backend::Local { artifacts, bucket, .. } => {
                let root = artifacts.root().join(bucket);
                let mut out = Vec::new();
                for f in walk(&root) {
                    let name = f.strip_prefix(&root)?.to_string_lossy().replace('\\', "/");
                    let content_type = worker_chart_export::adapters::artifacts::content_type_for(&name).to_owned();
                    out.push(Object { name, content_type, bytes: std::fs::read(&f)? });
                }
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(out)
            }
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn substitute(v: &Value) -> Value {
    let today = Utc::now().date_naive();
    let yesterday = today.pred_opt().expect("a day before today");
    match v {
        Value::String(s) => Value::String(s.replace("$TODAY", &today.to_string()).replace("$YESTERDAY", &yesterday.to_string())),
        Value::Array(a) => Value::Array(a.iter().map(substitute).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), substitute(v))).collect()),
        other => other.clone(),
    }
}

fn templates(s: &Scenario) -> anyhow::Result<BTreeMap<String, Value>> {
    Ok(match &s.given.templates {
        Templates::None => BTreeMap::new(),
        Templates::Inline(m) => m.clone(),
        Templates::Library(ids) => {
            let mut m = BTreeMap::new();
            for id in ids {
                let p = repo_root().join("scenarios/templates").join(format!("{id}.json"));
                let text = std::fs::read_to_string(&p).with_context(|| format!("given.templates: no template {}", p.display()))?;
                m.insert(id.clone(), serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))?);
            }
            m
        }
    })
}

fn retry_policy(r: &crate::scenario::Retry) -> RetryPolicy {
    RetryPolicy {
        max_retries: r.max_retries,
        min_delay: Duration::from_millis(r.min_delay_ms),
        max_delay: Duration::from_millis(r.max_delay_ms),
        max_total_delay: Duration::from_millis(r.max_total_delay_ms),
    }
}

fn slug(name: &str, max: usize) -> String {
    let s: String = name.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    s.chars().take(max).collect::<String>().trim_matches('-').to_owned()
}

/// Everything one scenario run set up.
struct World {
    scenario: Scenario,
    run_id: String,
    project: String,
    bucket: String,
    keys: Vec<(String, String)>,
    accounts_json: String,
    mock: mock_chart_img::MockServer,
    fs: FirestoreStore,
    seeded: Value,
    storage_endpoint: String,
    cassette_dir: Option<PathBuf>,
    emulators: Emulators,
    _tmp: tempfile::TempDir,
}

impl World {
    fn renderer(&self) -> anyhow::Result<Arc<dyn ChartRenderer>> {
        let http = HttpChartImg::new(&self.mock.base_url(), Duration::from_secs(10))?;
        let mut secrets = recorder::Secrets::new();
        for (id, key) in &self.keys {
            secrets = secrets.with_account(id.as_str(), secrecy::SecretString::from(key.clone()));
        }
        Ok(match self.scenario.given.mode.as_str() {
            "mock" => {
                let dir = self.cassette_dir.clone().expect("checked at parse");
                let cfg = recorder::VcrConfig { mode: recorder::Mode::None, ..Default::default() };
                Arc::new(CassetteChartImg::new(recorder::Vcr::open(dir, cfg, secrets)?, None))
            }
            "record" => {
                let dir = self.cassette_dir.clone().expect("set for record");
                let cfg = recorder::VcrConfig { mode: recorder::Mode::NewEpisodes, ..Default::default() };
                Arc::new(CassetteChartImg::new(recorder::Vcr::open(dir, cfg, secrets)?, Some(http)))
            }
            _ => Arc::new(http),
        })
    }

    fn settings(&self, i: usize) -> CoreSettings {
        let g = &self.scenario.given;
        let retry = g.retry.as_ref().map(retry_policy).unwrap_or(RetryPolicy {
                max_retries: 3,
                min_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(100),
                max_total_delay: Duration::from_secs(2),
            });
        CoreSettings {
            worker_id: WorkerId::parse(format!("worker-{i}")).expect("plain id"),
            bucket: self.bucket.clone(),
            timezone: "Etc/UTC".into(),
            concurrency: 8,
            lease: Duration::from_secs(g.lease_seconds.unwrap_or(900)),
            retry,
            lifecycle: worker_chart_export::config::Lifecycle::for_lease(Duration::from_secs(g.lease_seconds.unwrap_or(900))),
        }
    }

    fn worker(&self, i: usize) -> anyhow::Result<Worker> {
        Ok(Worker {
            flow_runs: Arc::new(self.fs.clone()),
            templates: Arc::new(self.fs.clone()),
            usage: Arc::new(self.fs.clone()),
            renderer: self.renderer()?,
            artifacts: Arc::new(GcsArtifacts::emulator(&self.storage_endpoint)),
            clock: Arc::new(SystemClock),
            accounts: AccountPool::new(parse_accounts("scenario accounts", &self.accounts_json)?),
            settings: self.settings(i),
            shutdown: Default::default(),
        })
    }

    fn doc_name(&self) -> String {
        format!("projects/{}/databases/(default)/documents/flow_runs/{}", self.project, self.run_id)
    }

    /// The HTTP request Eventarc sends for an update of the flow run: binary-mode CloudEvent headers and a
    /// protobuf `DocumentEventData` body.
    fn event(&self, client: &reqwest::Client, url: &str, kind: &str) -> reqwest::RequestBuilder {
        let p = &self.project;
        let run = &self.run_id;
        let mut ce_type = "google.cloud.firestore.document.v1.updated".to_owned();
        let mut document = format!("flow_runs/{run}");
        let mut body = encode_document_event(&self.doc_name(), &self.seeded, &["steps"]);
        let mut content_type = "application/protobuf";
        let mut headers = true;
        match kind {
            "regular" => {}
            "bad_protobuf" => body = b"\xff\xfe\x00not protobuf at all".to_vec(),
            "missing_headers" => headers = false,
            "wrong_type" => ce_type = "google.cloud.storage.object.v1.finalized".into(),
            "other_collection" => {
                document = format!("other_runs/{run}");
                body = encode_document_event(&format!("projects/{p}/databases/(default)/documents/other_runs/{run}"), &self.seeded, &["steps"]);
            }
            "no_data" => body = Vec::new(),
            "json_body" => {
                content_type = "application/json";
                body = serde_json::to_vec(&json!({"value": {"name": self.doc_name(), "fields": firestore_json_fields(&self.seeded)}}))
                    .unwrap_or_default();
            }
            other => panic!("unknown event kind {other} (scenario validation should have caught it)"),
        }
        let mut req = client.post(url).header("content-type", content_type).body(body);
        if headers {
            req = req
                .header("ce-specversion", "1.0")
                .header("ce-id", uuid::Uuid::new_v4().to_string())
                .header("ce-source", format!("//firestore.googleapis.com/projects/{p}/databases/(default)"))
                .header("ce-type", ce_type)
                .header("ce-subject", format!("documents/{document}"))
                .header("ce-time", Utc::now().to_rfc3339())
                .header("ce-dataschema", "https://github.com/googleapis/google-cloudevents/blob/main/proto/google/events/cloud/firestore/v1/data.proto")
                .header("ce-database", "(default)")
                .header("ce-namespace", "(default)")
                .header("ce-document", document)
                .header("ce-location", "nam5")
                .header("ce-project", p.as_str());
        }
        req
    }
}

/// proto3-JSON `fields` of a Firestore document (strings, integers, booleans, maps, arrays).
fn firestore_json_fields(v: &Value) -> Value {
    fn val(v: &Value) -> Value {
        match v {
            Value::Null => json!({"nullValue": null}),
            Value::Bool(b) => json!({"booleanValue": b}),
            Value::Number(n) if n.is_i64() || n.is_u64() => json!({"integerValue": n.to_string()}),
            Value::Number(n) => json!({"doubleValue": n}),
            Value::String(s) => json!({"stringValue": s}),
            Value::Array(a) => json!({"arrayValue": {"values": a.iter().map(val).collect::<Vec<_>>()}}),
            Value::Object(o) => json!({"mapValue": {"fields": o.iter().map(|(k, v)| (k.clone(), val(v))).collect::<serde_json::Map<_, _>>()}}),
        }
    }
    match v {
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), val(v))).collect()),
        _ => json!({}),
    }
}

/// Runs `scenario` (from `path`) against `emu`. Logs go wherever the caller's subscriber sends them; the caller
/// passes their text back through `logs` once the run is over.
pub async fn run(path: &Path, scenario: Scenario, emu: &Emulators, logs: impl Fn() -> String) -> anyhow::Result<Outcome> {
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let project = format!("s-{}-{suffix}", slug(&name, 20));
    let bucket = format!("scn-{}-{suffix}", slug(&name, 40));
    let run_id = scenario.given.run_id.clone().unwrap_or_else(|| slug(&name, 60));
    let g = &scenario.given;

    // Accounts: a fresh random key each, known only to this run (and checked for leaks at the end).
    let keys: Vec<(String, String)> =
        g.accounts.iter().map(|a| (a.id.clone(), format!("sk_live_{}", uuid::Uuid::new_v4().simple()))).collect();
    let accounts_json = Value::Array(
        g.accounts
            .iter()
            .zip(&keys)
            .map(|(a, (_, key))| {
                let mut o = json!({"id": a.id, "apiKey": key, "plan": a.plan.clone().unwrap_or_else(|| "PRO".into())});
                if let Some(l) = a.daily_limit {
                    o["dailyLimit"] = json!(l);
                }
                o
            })
            .collect(),
    )
    .to_string();
    let mut config = mock_chart_img::Config::default();
    for (a, (_, key)) in g.accounts.iter().zip(&keys) {
        let plan = a.mock_plan.clone().or_else(|| a.plan.clone()).unwrap_or_else(|| "PRO".into()).to_uppercase();
        let mut kc = json!({"key": key, "account": a.id, "plan": plan});
        if let Some(o) = &a.mock_overrides {
            kc["overrides"] = o.clone();
        }
        let kc: mock_chart_img::KeyConfig = serde_json::from_value(kc).context("given.accounts: mock key config")?;
        config = config.with_key_config(kc);
    }
    for f in &g.faults {
        config = config.with_fault(f.clone());
    }
    let mock = mock_chart_img::spawn(config).await.context("cannot start mock-chart-img")?;

    // Storage: a bucket of its own (or an endpoint nobody listens on).
    let storage_endpoint = if g.gcs.as_deref() == Some("unavailable") {
        "http://127.0.0.1:9".to_owned()
    } else {
        let resp = reqwest::Client::new()
            .post(format!("{}/storage/v1/b?project={project}", emulator_endpoint(&emu.storage)))
            .json(&json!({"name": bucket}))
            .send()
            .await
            .context("cannot reach the GCS emulator")?;
        anyhow::ensure!(resp.status().is_success(), "cannot create bucket {bucket}: {}", resp.status());
        emulator_endpoint(&emu.storage)
    };

    // Firestore: a project of its own, seeded.
    let fs = FirestoreStore::new(&project).await.context("cannot reach the Firestore emulator")?;
    let seeded = substitute(&g.flow_run);
    fs.put_doc(FLOW_RUNS, &run_id, seeded.clone()).await?;
    for (id, t) in templates(&scenario)? {
        fs.put_doc(CHART_TEMPLATES, &id, t).await?;
    }
    for (id, u) in &g.usage {
        fs.put_doc(ACCOUNTS_USAGE, id, substitute(u)).await?;
    }

    let tmp = tempfile::tempdir()?;
    let cassette_dir = match g.mode.as_str() {
        "mock" => Some(repo_root().join(g.cassette.as_deref().unwrap_or_default())),
        "record" => Some(tmp.path().join("cassette")),
        _ => None,
    };
    let world = World {
        scenario: scenario.clone(),
        run_id,
        project,
        bucket,
        keys,
        accounts_json,
        mock,
        fs,
        seeded,
        storage_endpoint,
        cassette_dir,
        emulators: emu.clone(),
        _tmp: tmp,
    };
    let (backend, http_answers, results) = deliver(&world).await?;
    check(&world, &backend, &http_answers, &results, &logs()).await
}

type HttpAnswer = (u16, String, Option<u16>);

/// Runs the `when` part. Returns where to read the results, the HTTP answers (status, body, expected status) and the
/// step results of `direct` / `run_local` runs.
async fn deliver(w: &World) -> anyhow::Result<(Backend, Vec<HttpAnswer>, Vec<String>)> {
    let when = &w.scenario.when;
    // Results are read from the real emulator even when the worker was pointed at a dead storage endpoint.
    let storage = w.emulators.storage.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let emu_backend = || Backend::Emulators { fs: w.fs.clone(), storage: storage.clone(), bucket: w.bucket.clone() };
    match when.via.as_str() {
        "eventarc" => {
            let mut urls = Vec::new();
            let mut servers = Vec::new();
            for i in 0..when.workers.max(1) {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                urls.push(format!("http://{}/", listener.local_addr()?));
                let app = router(AppState::new(w.worker(i)?));
                servers.push(tokio::spawn(async move { axum_serve(listener, app).await }));
            }
            let client = reqwest::Client::new();
            let mut answers = Vec::new();
            if when.events.is_empty() {
                let posts = (0..when.deliveries.max(1)).map(|k| w.event(&client, &urls[k % urls.len()], "regular").send());
                for r in futures::future::join_all(posts).await {
                    let r = r?;
                    answers.push((r.status().as_u16(), r.text().await?, None));
                }
            } else {
                for e in &when.events {
                    let r = w.event(&client, &urls[0], &e.kind).send().await?;
                    answers.push((r.status().as_u16(), format!("{}: {}", e.kind, r.text().await?), Some(e.expect_status)));
                }
            }
            for s in servers {
                s.abort();
            }
            Ok((emu_backend(), answers, Vec::new()))
        }
        "direct" => {
            let selector = match &when.step_id {
                Some(s) => StepSelector::Explicit(StepId::parse(s.as_str()).map_err(anyhow::Error::msg)?),
                None => StepSelector::First,
            };
            let run = RunId::parse(w.run_id.as_str()).map_err(anyhow::Error::msg)?;
            let mut results = Vec::new();
            if let Some(ms) = when.kill_after_ms {
                // A worker that dies mid-step: its future is dropped after the claim, so nothing releases the step.
                let doomed = w.worker(0)?;
                let (run2, sel2) = (run.clone(), selector.clone());
                let task = tokio::spawn(async move { run_chart_export_step(&doomed, &run2, &sel2, None).await });
                // Wait until the claim is committed (a slow emulator must not turn this into a kill before the claim).
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                loop {
                    let doc = w.fs.get_doc(FLOW_RUNS, &w.run_id).await?.unwrap_or(Value::Null);
                    if doc["steps"].as_object().is_some_and(|s| s.values().any(|st| st["status"] == "RUNNING")) {
                        break;
                    }
                    anyhow::ensure!(std::time::Instant::now() < deadline, "the first worker never claimed the step");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_millis(ms)).await;
                task.abort();
                let _ = task.await;
                let lease = w.scenario.given.lease_seconds.unwrap_or(900);
                tokio::time::sleep(Duration::from_secs(lease) + Duration::from_millis(200)).await;
                let report = run_chart_export_step(&w.worker(1)?, &run, &selector, None).await?;
                results.push(report_name(&report));
            } else {
                let workers: Vec<Worker> = (0..when.workers.max(1)).map(|i| w.worker(i)).collect::<Result<_, _>>()?;
                let runs = (0..when.deliveries.max(1)).map(|k| run_chart_export_step(&workers[k % workers.len()], &run, &selector, None));
                for r in futures::future::join_all(runs).await {
                    results.push(report_name(&r?));
                }
            }
            Ok((emu_backend(), Vec::new(), results))
        }
        _ => {
            // `run_local`: the CLI's own entry (flags → settings → local backend), as `worker-chart-export run-local`.
            let dir = w._tmp.path().join("local");
            std::fs::create_dir_all(dir.join("templates"))?;
            let file = dir.join(format!("{}.json", w.run_id));
            std::fs::write(&file, serde_json::to_vec(&w.seeded)?)?;
            for (id, t) in templates(&w.scenario)? {
                std::fs::write(dir.join("templates").join(format!("{id}.json")), serde_json::to_vec(&t)?)?;
            }
            let docs = JsonDocs::<LocalBackend>::local(&dir.join("state"))?;
            for (id, u) in &w.scenario.given.usage {
                docs.put_doc(ACCOUNTS_USAGE, id, substitute(u)).await?;
            }
            let mut settings = Settings::from_lookup(|_| None).map_err(anyhow::Error::msg)?;
            settings.accounts = parse_accounts("scenario accounts", &w.accounts_json)?;
            settings.base_url = w.mock.base_url().trim_end_matches('/').to_owned();
            if let Some(r) = &w.scenario.given.retry {
                settings.retry = retry_policy(r);
            }
            let mut results = Vec::new();
            for _ in 0..when.deliveries.max(1) {
                let args = RunLocalArgs {
                    flow_run: file.clone(),
                    run_id: None,
                    step_id: when.step_id.clone(),
                    bucket: w.bucket.clone(),
                    mode: Some(w.scenario.given.mode.clone()),
                    base_url: None,
                    cassette_dir: w.cassette_dir.clone(),
                    accounts: None,
                    templates: Some(dir.join("templates")),
                    state_dir: dir.join("state"),
                    artifacts_dir: Some(dir.join("gcs")),
                    replace_run: false,
                    format: OutputFormat::Json,
                    json_logs: true,
                };
                let code = run_local_with(settings.clone(), args).await?;
                results.push(format!("exit {code}"));
            }
            let backend = Backend::Local { docs, artifacts: LocalArtifacts::new(dir.join("gcs")), bucket: w.bucket.clone() };
            Ok((backend, Vec::new(), results))
        }
    }
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) {
    let _ = axum::serve(listener, app).await;
}

fn report_name(r: &StepReport) -> String {
    r.outcome().to_owned()
}

fn check_step(c: &mut Checks, field: &str, exp: &StepExpect, actual: &Value, seeded: &Value) {
    if let Some(s) = &exp.status {
        c.eq(&format!("{field}.status"), Some(s.as_str()), actual["status"].as_str());
    }
    if let Some(code) = &exp.error_code {
        c.eq(&format!("{field}.error.code"), Some(code.as_str()), actual["error"]["code"].as_str());
    }
    let message = actual["error"]["message"].as_str().unwrap_or_default();
    for want in &exp.error_message {
        c.that(&format!("{field}.error.message"), message.contains(want.as_str()), || {
            format!("expected to contain {want:?}, actual {message:?}")
        });
    }
    if exp.unchanged {
        c.eq(&format!("{field} (unchanged)"), seeded, actual);
    }
}

async fn check(w: &World, backend: &Backend, answers: &[HttpAnswer], results: &[String], logs: &str) -> anyhow::Result<Outcome> {
    let t = &w.scenario.then;
    let mut c = Checks(Vec::new());
    let run_doc = backend.doc(FLOW_RUNS, &w.run_id).await?.unwrap_or(Value::Null);
    let step = &run_doc["steps"][t.step_id.as_str()];
    check_step(&mut c, &format!("steps.{}", t.step_id), &t.step, step, &w.seeded["steps"][t.step_id.as_str()]);
    for (id, exp) in &t.steps {
        check_step(&mut c, &format!("steps.{id}"), exp, &run_doc["steps"][id.as_str()], &w.seeded["steps"][id.as_str()]);
    }
    if t.run_unchanged {
        c.eq("flow run (unchanged)", &w.seeded, &run_doc);
    }
    if let Some(r) = &t.result {
        c.that("result", results.iter().all(|x| x == r || (r == "succeeded" && x == "exit 0")), || format!("expected {r}, actual {results:?}"));
    }
    for (status, body, expected) in answers {
        match expected.or(t.http_status) {
            Some(e) => c.eq("http status", e, *status),
            None => c.that("http status", (200..300).contains(status), || format!("expected 2xx, actual {status}: {body}")),
        }
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
    for p in &pngs {
        c.eq(&format!("{} content type", p.name), "image/png", p.content_type.as_str());
        c.that(&format!("{} decodes as PNG", p.name), decodes(&p.bytes), || "not a valid PNG".into());
    }
    let mut manifest = None;
    match t.manifest.as_deref() {
        Some("snapshot") => {
            let path = format!("runs/{}/steps/{}/charts/manifest.json", w.run_id, t.step_id);
            let uri = format!("gs://{}/{path}", w.bucket);
            c.eq("outputsManifestGcsUri", Some(uri.as_str()), step["outputsManifestGcsUri"].as_str());
            match manifests.iter().find(|m| m.name == path) {
                Some(m) => {
                    c.eq("manifest content type", "application/json", m.content_type.as_str());
                    let v: Value = serde_json::from_slice(&m.bytes)?;
                    // Every item points at an object that exists, with the size and hash it claims.
                    for item in v["items"].as_array().cloned().unwrap_or_default() {
                        let name = item["gcsUri"].as_str().unwrap_or_default().trim_start_matches(&format!("gs://{}/", w.bucket)).to_owned();
                        match objects.iter().find(|o| o.name == name) {
                            Some(o) => {
                                c.eq(&format!("{name} bytes"), item["bytes"].as_u64(), Some(o.bytes.len() as u64));
                                c.eq(&format!("{name} sha256"), item["sha256"].as_str().map(str::to_owned), Some(digest_hex(&o.bytes)));
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
        c.eq(&format!("usage.{acc}.usageToday"), Some(*n as u64), u.as_ref().and_then(|u| u["usageToday"].as_u64()));
    }
    for acc in &t.exhausted {
        let u = backend.doc(ACCOUNTS_USAGE, acc).await?;
        c.eq(&format!("usage.{acc}.exhausted"), Some(true), u.as_ref().and_then(|u| u["exhausted"].as_bool()));
    }
    for (acc, n) in &t.mock_calls {
        c.eq(&format!("mockCalls.{acc}"), *n, calls(acc));
    }
    for acc in &t.usage_matches_calls {
        let u = backend.doc(ACCOUNTS_USAGE, acc).await?;
        let used = u.as_ref().and_then(|u| u["usageToday"].as_u64()).unwrap_or(0) as usize;
        c.eq(&format!("usage.{acc}.usageToday = calls received"), calls(acc), used);
    }

    // Log events.
    let lines: Vec<Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    for e in &t.log_events {
        c.that(&format!("log event {e}"), lines.iter().any(|l| l["event"] == e.as_str()), || "missing".into());
    }
    if let Some(n) = t.claims {
        let claims = lines
            .iter()
            .filter(|l| l["event"] == "claim_attempt" && matches!(l["outcome"].as_str(), Some("claimed" | "reclaimed")))
            .count();
        c.eq("claims", n, claims);
    }
    if let (Some(n), Some(dir)) = (t.cassette_interactions, &w.cassette_dir) {
        let cassette: Value = serde_json::from_slice(&std::fs::read(dir.join(recorder::CASSETTE_FILE)).unwrap_or_default()).unwrap_or(Value::Null);
        c.eq("cassette interactions", Some(n), cassette["interactions"].as_array().map(Vec::len));
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
        c.that(&format!("secret of {acc}"), !haystack.contains(key.as_str()), || "the API key appears in an output".into());
    }
    Ok(Outcome { manifest, differences: c.0, journal: journal_text })
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
