//! `flow-run`: writes a flow run (and its chart templates) into the Firestore emulator, as the system that owns
//! flow runs would, waits until every CHART_EXPORT step is final, and prints where the charts are: the gs:// URIs
//! of the manifest and each PNG, and how to fetch them from fake-gcs-server (optionally downloading them).
//! Uses FIRESTORE_EMULATOR_HOST and STORAGE_EMULATOR_HOST. Exit status: 0 all steps SUCCEEDED, 1 a step FAILED,
//! 2 bad input, 3 timeout or an emulator unreachable.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use worker_chart_export::adapters::emulator_endpoint;
use worker_chart_export::adapters::FirestoreStore;
use worker_chart_export::domain::collections::{CHART_TEMPLATES, FLOW_RUNS};

#[derive(Debug, Parser)]
#[command(
    about = "Write a flow run into the Firestore emulator and print where its charts are once its steps are final"
)]
struct Args {
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    project: String,
    /// The flow_runs document (JSON), e.g. worker/demo/flow_run.json.
    #[arg(long, default_value = "worker/demo/flow_run.json")]
    flow_run: PathBuf,
    /// Chart templates, one <templateId>.json each; written to chart_templates first.
    #[arg(long, default_value = "worker/demo/templates")]
    templates: PathBuf,
    /// The run id (default: the file's stem and the current time, so every submission is a new run).
    #[arg(long)]
    run_id: Option<String>,
    /// Seconds to wait for every CHART_EXPORT step to be SUCCEEDED or FAILED.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Also download every PNG and the manifest into this folder.
    #[arg(long)]
    download: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    std::process::exit(match run(args).await {
        Ok(code) => code,
        Err((code, e)) => {
            eprintln!("error: {e:#}");
            code
        }
    });
}

async fn run(args: Args) -> Result<i32, (i32, anyhow::Error)> {
    let bad = |e: anyhow::Error| (2, e);
    let infra = |e: anyhow::Error| (3, e);
    let storage = std::env::var("STORAGE_EMULATOR_HOST")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|h| emulator_endpoint(&h))
        .ok_or_else(|| bad(anyhow::anyhow!("STORAGE_EMULATOR_HOST is not set")))?;
    if std::env::var("FIRESTORE_EMULATOR_HOST").map_or(true, |v| v.is_empty()) {
        return Err(bad(anyhow::anyhow!(
            "FIRESTORE_EMULATOR_HOST is not set (this tool writes into the emulator only)"
        )));
    }
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let default_id = format!(
        "{}-{stamp}",
        args.flow_run
            .file_stem()
            .map(|s| s.to_string_lossy().replace('_', "-"))
            .unwrap_or_default()
    );
    let (run_id, doc) = worker_chart_export::entry::cli::load_flow_run(
        &args.flow_run,
        Some(args.run_id.as_deref().unwrap_or(&default_id)),
    )
    .map_err(bad)?;
    let templates = worker_chart_export::entry::cli::load_templates(&args.templates).map_err(bad)?;
    let store = FirestoreStore::new(&args.project).await.map_err(|e| infra(e.into()))?;
    for (id, t) in &templates {
        store
            .put_doc(CHART_TEMPLATES, id.as_str(), t.clone())
            .await
            .map_err(|e| infra(e.into()))?;
    }
    store
        .put_doc(FLOW_RUNS, run_id.as_str(), doc.clone())
        .await
        .map_err(|e| infra(e.into()))?;
    println!(
        "wrote flow_runs/{run_id} and {} templates to project {}; waiting for its CHART_EXPORT steps…",
        templates.len(),
        args.project
    );

    let chart_steps: Vec<String> = doc["steps"]
        .as_object()
        .map(|s| {
            s.iter()
                .filter(|(_, v)| v["stepType"] == "CHART_EXPORT")
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let current = loop {
        let current = store
            .get_doc(FLOW_RUNS, run_id.as_str())
            .await
            .map_err(|e| infra(e.into()))?
            .unwrap_or(Value::Null);
        let done = chart_steps
            .iter()
            .all(|s| matches!(current["steps"][s]["status"].as_str(), Some("SUCCEEDED" | "FAILED")));
        if done {
            break current;
        }
        if Instant::now() >= deadline {
            let states: Vec<String> = chart_steps
                .iter()
                .map(|s| format!("{s}: {}", current["steps"][s]["status"]))
                .collect();
            return Err(infra(anyhow::anyhow!(
                "not final after {} s ({}); is local-eventarc delivering to serve?",
                args.timeout,
                states.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let http = reqwest::Client::new();
    let mut code = 0;
    for s in &chart_steps {
        let step = &current["steps"][s];
        println!("\nstep {s}: {}", step["status"].as_str().unwrap_or("?"));
        if step["status"] == "FAILED" {
            code = 1;
            println!(
                "  error: {} — {}",
                step["error"]["code"].as_str().unwrap_or("?"),
                step["error"]["message"].as_str().unwrap_or("")
            );
        }
        let Some(uri) = step["outputsManifestGcsUri"].as_str() else {
            continue;
        };
        let media = |gs: &str| -> Option<String> {
            let (bucket, name) = gs.strip_prefix("gs://")?.split_once('/')?;
            Some(format!(
                "{storage}/storage/v1/b/{bucket}/o/{}?alt=media",
                worker_chart_export::adapters::encode_component(name)
            ))
        };
        println!("  manifest: {uri}");
        let Some(url) = media(uri) else { continue };
        println!("    curl -s '{url}'");
        let manifest: Value = http
            .get(&url)
            .send()
            .await
            .map_err(|e| infra(e.into()))?
            .json()
            .await
            .map_err(|e| infra(e.into()))?;
        let mut files = vec![(uri.to_owned(), url)];
        for item in manifest["items"].as_array().cloned().unwrap_or_default() {
            let Some(gs) = item["gcsUri"].as_str() else { continue };
            let Some(url) = media(gs) else { continue };
            println!(
                "  chart {}: {gs} ({} bytes)",
                item["chartTemplateId"].as_str().unwrap_or("?"),
                item["bytes"]
            );
            println!("    curl -s -o chart.png '{url}'");
            files.push((gs.to_owned(), url));
        }
        for f in manifest["failures"].as_array().cloned().unwrap_or_default() {
            println!("  failed request: {f}");
        }
        if let Some(dir) = &args.download {
            for (gs, url) in files {
                let name = gs.rsplit('/').next().unwrap_or("object");
                let path = dir.join(run_id.as_str()).join(s).join(name);
                std::fs::create_dir_all(path.parent().expect("a parent")).map_err(|e| infra(e.into()))?;
                let bytes = http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| infra(e.into()))?
                    .bytes()
                    .await
                    .map_err(|e| infra(e.into()))?;
                std::fs::write(&path, &bytes).map_err(|e| infra(e.into()))?;
                println!("  downloaded {}", path.display());
            }
        }
    }
    Ok(code)
}
