//! Phase 1, set-up: a Firestore project and a bucket of the scenario's own, mock-chart-img with fresh random keys
//! and the scenario's faults, the seeded documents, and the [`World`] the other phases share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use serde_json::{json, Value};
use worker_chart_export::adapters::emulator_endpoint;
use worker_chart_export::adapters::{FirestoreStore, GcsArtifacts};
use worker_chart_export::config::{parse_accounts, Lifecycle, Settings};
use worker_chart_export::domain::collections::{ACCOUNTS_USAGE, CHART_TEMPLATES, FLOW_RUNS};
use worker_chart_export::domain::WorkerId;
use worker_chart_export::eventarc::encode_document_event;
use worker_chart_export::ports::ChartRenderer;
use worker_chart_export::AccountPool;
use worker_chart_export::RetryPolicy;
use worker_chart_export::{CassetteChartImg, HttpChartImg};
use worker_chart_export::{CoreSettings, Worker};

use super::{repo_root, Emulators};
use crate::scenario::{Scenario, Templates};

pub fn substitute(v: &Value) -> Value {
    let today = Utc::now().date_naive();
    let yesterday = today.pred_opt().expect("a day before today");
    let tomorrow = today.succ_opt().expect("a day after today");
    match v {
        Value::String(s) => Value::String(
            s.replace("$TODAY", &today.to_string())
                .replace("$YESTERDAY", &yesterday.to_string())
                .replace("$TOMORROW", &tomorrow.to_string()),
        ),
        Value::Array(a) => Value::Array(a.iter().map(substitute).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), substitute(v))).collect()),
        other => other.clone(),
    }
}

pub fn templates(s: &Scenario) -> anyhow::Result<BTreeMap<String, Value>> {
    Ok(match &s.given.templates {
        Templates::None => BTreeMap::new(),
        Templates::Inline(m) => m.clone(),
        Templates::Library(ids) => library_templates(ids)?,
    })
}

/// Templates of `scenarios/templates/` by id.
pub fn library_templates(ids: &[String]) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut m = BTreeMap::new();
    for id in ids {
        let p = repo_root().join("scenarios/templates").join(format!("{id}.json"));
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("given.templates: no template {}", p.display()))?;
        m.insert(
            id.clone(),
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))?,
        );
    }
    Ok(m)
}

/// The accounts of a run as both sides see them: a fresh random key each (known only to this run), the worker's
/// `CHART_IMG_ACCOUNTS_JSON`, and a mock-chart-img config holding the same keys with each account's plan (and
/// overrides) enforced per key. The caller adds faults, latency and the like to `mock`.
#[derive(Debug)]
pub struct Keys {
    /// (account id, its API key).
    pub keys: Vec<(String, String)>,
    pub accounts_json: String,
    pub mock: mock_chart_img::Config,
}

pub fn keys(accounts: &[crate::scenario::Account]) -> anyhow::Result<Keys> {
    let keys: Vec<(String, String)> = accounts
        .iter()
        .map(|a| (a.id.clone(), format!("sk_live_{}", uuid::Uuid::new_v4().simple())))
        .collect();
    let accounts_json = Value::Array(
        accounts
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
    let mut mock = mock_chart_img::Config::default();
    for (a, (_, key)) in accounts.iter().zip(&keys) {
        let plan = a
            .mock_plan
            .clone()
            .or_else(|| a.plan.clone())
            .unwrap_or_else(|| "PRO".into())
            .to_uppercase();
        let mut kc = json!({"key": key, "account": a.id, "plan": plan});
        if let Some(o) = &a.mock_overrides {
            kc["overrides"] = o.clone();
        }
        let kc: mock_chart_img::KeyConfig = serde_json::from_value(kc).context("given.accounts: mock key config")?;
        mock = mock.with_key_config(kc);
    }
    Ok(Keys {
        keys,
        accounts_json,
        mock,
    })
}

/// Creates `bucket` on the GCS emulator at `storage` (`STORAGE_EMULATOR_HOST`) and answers the endpoint the worker's
/// storage client uses.
pub async fn create_bucket(storage: &str, project: &str, bucket: &str) -> anyhow::Result<String> {
    let endpoint = emulator_endpoint(storage);
    let resp = reqwest::Client::new()
        .post(format!("{endpoint}/storage/v1/b?project={project}"))
        .json(&json!({"name": bucket}))
        .send()
        .await
        .context("cannot reach the GCS emulator")?;
    anyhow::ensure!(
        resp.status().is_success(),
        "cannot create bucket {bucket}: {}",
        resp.status()
    );
    Ok(endpoint)
}

pub fn retry_policy(r: &crate::scenario::Retry) -> RetryPolicy {
    RetryPolicy {
        max_retries: r.max_retries,
        min_delay: Duration::from_millis(r.min_delay_ms),
        max_delay: Duration::from_millis(r.max_delay_ms),
        max_total_delay: Duration::from_millis(r.max_total_delay_ms),
    }
}

fn slug(name: &str, max: usize) -> String {
    let s: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s.chars().take(max).collect::<String>().trim_matches('-').to_owned()
}

/// Everything one scenario run set up.
pub struct World {
    pub scenario: Scenario,
    pub run_id: String,
    pub project: String,
    pub bucket: String,
    /// (account id, its random API key).
    pub keys: Vec<(String, String)>,
    pub accounts_json: String,
    pub mock: mock_chart_img::MockServer,
    /// The scenario's project on the emulator, unproxied (set-up, read-back, action triggers).
    pub fs: FirestoreStore,
    pub seeded: Value,
    /// Where the worker's storage client points (the emulator, or a dead endpoint for `gcs: unavailable`).
    pub storage_endpoint: String,
    pub cassette_dir: Option<PathBuf>,
    pub emulators: Emulators,
    pub tmp: tempfile::TempDir,
}

impl World {
    pub fn renderer(&self) -> anyhow::Result<Arc<dyn ChartRenderer>> {
        let http = HttpChartImg::new(&self.mock.base_url(), Duration::from_secs(10))?;
        let mut secrets = recorder::Secrets::new();
        for (id, key) in &self.keys {
            secrets = secrets.with_account(id.as_str(), secrecy::SecretString::from(key.clone()));
        }
        Ok(match self.scenario.given.mode.as_str() {
            "mock" => {
                let dir = self.cassette_dir.clone().expect("checked at parse");
                let cfg = recorder::VcrConfig {
                    mode: recorder::Mode::None,
                    ..Default::default()
                };
                Arc::new(CassetteChartImg::new(recorder::Vcr::open(dir, cfg, secrets)?, None))
            }
            "record" => {
                let dir = self.cassette_dir.clone().expect("set for record");
                let cfg = recorder::VcrConfig {
                    mode: recorder::Mode::NewEpisodes,
                    ..Default::default()
                };
                Arc::new(CassetteChartImg::new(
                    recorder::Vcr::open(dir, cfg, secrets)?,
                    Some(http),
                ))
            }
            _ => Arc::new(http),
        })
    }

    pub fn settings(&self, i: usize) -> CoreSettings {
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
            max_requests: worker_chart_export::config::DEFAULT_MAX_REQUESTS,
            lease: self.lease(),
            retry,
            lifecycle: Lifecycle::for_lease(self.lease()),
        }
    }

    /// The claim lease: `given.leaseSeconds`, else the worker's own default (`Settings` of an empty environment), so
    /// an in-process scenario runs with the lease a `serve` process has.
    pub fn lease(&self) -> Duration {
        match self.scenario.given.lease_seconds {
            Some(s) => Duration::from_secs(s),
            None => {
                Settings::from_lookup(|_| None)
                    .expect("an empty environment is a valid configuration")
                    .lease
            }
        }
    }

    pub fn worker(&self, i: usize) -> anyhow::Result<Worker> {
        let settings = self.settings(i);
        // In-process, Cloud Storage retries on the scenario's short policy too: `gcs: unavailable` then takes as
        // long as the other refusals instead of the production budget of 30 s (the live path keeps the real one).
        let artifacts = GcsArtifacts::emulator(&self.storage_endpoint).with_retry(settings.retry);
        Ok(Worker::with_documents(
            self.fs.clone(),
            self.renderer()?,
            Arc::new(artifacts),
            AccountPool::new(parse_accounts("scenario accounts", &self.accounts_json)?),
            settings,
        ))
    }

    pub fn doc_name(&self) -> String {
        format!(
            "projects/{}/databases/(default)/documents/flow_runs/{}",
            self.project, self.run_id
        )
    }

    /// The HTTP request Eventarc sends for an update of the flow run: binary-mode CloudEvent headers and a
    /// protobuf `DocumentEventData` body.
    pub fn event(&self, client: &reqwest::Client, url: &str, kind: &str) -> reqwest::RequestBuilder {
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
                body = encode_document_event(
                    &format!("projects/{p}/databases/(default)/documents/other_runs/{run}"),
                    &self.seeded,
                    &["steps"],
                );
            }
            "no_data" => body = Vec::new(),
            "json_body" => {
                content_type = "application/json";
                body = serde_json::to_vec(
                    &json!({"value": {"name": self.doc_name(), "fields": firestore_json_fields(&self.seeded)}}),
                )
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
            Value::Object(o) => {
                json!({"mapValue": {"fields": o.iter().map(|(k, v)| (k.clone(), val(v))).collect::<serde_json::Map<_, _>>()}})
            }
        }
    }
    match v {
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), val(v))).collect()),
        _ => json!({}),
    }
}

/// Sets up everything `scenario` (from `path`) needs on `emu`. The flow run itself is written here, except for
/// `via: local_eventarc`, where the delivery phase writes it once the local Eventarc listens (its write is the event).
pub async fn setup(path: &Path, scenario: Scenario, emu: &Emulators) -> anyhow::Result<World> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let project = format!("s-{}-{suffix}", slug(&name, 20));
    let bucket = format!("scn-{}-{suffix}", slug(&name, 40));
    let run_id = scenario.given.run_id.clone().unwrap_or_else(|| slug(&name, 60));
    let g = &scenario.given;

    // Accounts: a fresh random key each, known only to this run (and checked for leaks at the end).
    let Keys {
        keys,
        accounts_json,
        mock: mut config,
    } = self::keys(&g.accounts)?;
    for f in &g.faults {
        config = config.with_fault(f.clone());
    }
    let mock = mock_chart_img::spawn(config)
        .await
        .context("cannot start mock-chart-img")?;

    // Storage: a bucket of its own (or an endpoint nobody listens on).
    let storage_endpoint = if g.gcs.as_deref() == Some("unavailable") {
        "http://127.0.0.1:9".to_owned()
    } else {
        create_bucket(&emu.storage, &project, &bucket).await?
    };

    // Firestore: a project of its own, seeded.
    let fs = FirestoreStore::new(&project)
        .await
        .context("cannot reach the Firestore emulator")?;
    let seeded = substitute(&g.flow_run);
    if scenario.when.via != "local_eventarc" {
        fs.put_doc(FLOW_RUNS, &run_id, seeded.clone()).await?;
    }
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
    Ok(World {
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
        tmp,
    })
}
