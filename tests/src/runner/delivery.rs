//! Phase 2, delivery: the `when` part through the worker's real entrypoints.

use worker_chart_export::adapters::{JsonDocs, LocalArtifacts, LocalBackend};
use worker_chart_export::config::{parse_accounts, Settings};
use worker_chart_export::domain::collections::ACCOUNTS_USAGE;
use worker_chart_export::domain::{RunId, StepId, StepSelector};
use worker_chart_export::entry::cli::{run_local_with, OutputFormat, RunLocalArgs};
use worker_chart_export::entry::serve::{router, AppState};
use worker_chart_export::Worker;
use worker_chart_export::{run_chart_export_step, StepReport};

use super::readback::Backend;
use super::setup::{retry_policy, substitute, templates, World};

/// One HTTP answer: status, body, and the status the scenario expects for it (hand-made events).
pub type HttpAnswer = (u16, String, Option<u16>);

/// What the delivery phase leaves for the checks.
pub struct Delivered {
    pub backend: Backend,
    pub answers: Vec<HttpAnswer>,
    /// Step results of `direct` / `run_local` runs.
    pub results: Vec<String>,
    pub live: Option<super::live::LiveReport>,
}

/// Runs the `when` part.
pub async fn deliver(w: &World) -> anyhow::Result<Delivered> {
    if w.scenario.when.via == "local_eventarc" {
        return super::live::deliver(w).await;
    }
    let (backend, answers, results) = deliver_in_process(w).await?;
    Ok(Delivered {
        backend,
        answers,
        results,
        live: None,
    })
}

async fn deliver_in_process(w: &World) -> anyhow::Result<(Backend, Vec<HttpAnswer>, Vec<String>)> {
    let when = &w.scenario.when;
    // Results are read from the real emulator even when the worker was pointed at a dead storage endpoint.
    let storage = w
        .emulators
        .storage
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let emu_backend = || Backend::Emulators {
        fs: w.fs.clone(),
        storage: storage.clone(),
        bucket: w.bucket.clone(),
    };
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
                let posts =
                    (0..when.deliveries.max(1)).map(|k| w.event(&client, &urls[k % urls.len()], "regular").send());
                for r in futures::future::join_all(posts).await {
                    let r = r?;
                    answers.push((r.status().as_u16(), r.text().await?, None));
                }
            } else {
                for e in &when.events {
                    let r = w.event(&client, &urls[0], &e.kind).send().await?;
                    answers.push((
                        r.status().as_u16(),
                        format!("{}: {}", e.kind, r.text().await?),
                        Some(e.expect_status),
                    ));
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
            let workers: Vec<Worker> = (0..when.workers.max(1))
                .map(|i| w.worker(i))
                .collect::<Result<_, _>>()?;
            let runs = (0..when.deliveries.max(1))
                .map(|k| run_chart_export_step(&workers[k % workers.len()], &run, &selector, None));
            for r in futures::future::join_all(runs).await {
                results.push(report_name(&r?));
            }
            Ok((emu_backend(), Vec::new(), results))
        }
        _ => {
            // `run_local`: the CLI's own entry (flags → settings → local backend), as `worker-chart-export run-local`.
            let dir = w.tmp.path().join("local");
            std::fs::create_dir_all(dir.join("templates"))?;
            let file = dir.join(format!("{}.json", w.run_id));
            std::fs::write(&file, serde_json::to_vec(&w.seeded)?)?;
            for (id, t) in templates(&w.scenario)? {
                std::fs::write(
                    dir.join("templates").join(format!("{id}.json")),
                    serde_json::to_vec(&t)?,
                )?;
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
            let backend = Backend::Local {
                docs,
                artifacts: LocalArtifacts::new(dir.join("gcs")),
                bucket: w.bucket.clone(),
            };
            Ok((backend, Vec::new(), results))
        }
    }
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) {
    let _ = axum::serve(listener, app).await;
}

pub fn report_name(r: &StepReport) -> String {
    r.outcome().to_owned()
}
