//! `worker-chart-export demo`: the whole product on one machine with nothing installed. A `mock-chart-img` server
//! runs in this process on a random loopback port; the worker renders the sample flow run (`worker/demo/`) through it
//! over real HTTP, on the embedded local backend, and prints where the images and the manifest are.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::cli::{run_local_with, OutputFormat, RunLocalArgs};
use crate::config::{parse_accounts, Settings};
use crate::domain::manifest::manifest_path;
use crate::domain::{RunId, StepId};

const FLOW_RUN: &str = include_str!("../../demo/flow_run.json");
const TEMPLATES: &[(&str, &str)] = &[
    ("price_volume", include_str!("../../demo/templates/price_volume.json")),
    ("rsi_14", include_str!("../../demo/templates/rsi_14.json")),
    ("macd", include_str!("../../demo/templates/macd.json")),
];

/// A key known only to the in-process mock server; not a secret.
const DEMO_KEY: &str = "demo-key-not-secret";

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where the demo writes its inputs, state and artifacts.
    #[arg(long, default_value = "demo-output")]
    pub out_dir: PathBuf,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    let out = &args.out_dir;
    let inputs = out.join("inputs");
    std::fs::create_dir_all(inputs.join("templates")).with_context(|| format!("cannot create {}", inputs.display()))?;
    // A fresh run id per invocation: the state directory keeps earlier runs, as Firestore would.
    let run_id = format!("demo-{}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
    let flow_run = inputs.join(format!("{run_id}.json"));
    std::fs::write(&flow_run, FLOW_RUN)?;
    for (id, body) in TEMPLATES {
        std::fs::write(inputs.join("templates").join(format!("{id}.json")), body)?;
    }

    let mock = mock_chart_img::spawn(mock_chart_img::Config::default().with_key(
        DEMO_KEY,
        "acc-demo",
        mock_chart_img::Plan::PRO,
    ))
    .await
    .context("cannot start the mock Chart-IMG server")?;
    eprintln!("mock Chart-IMG server on {}", mock.base_url());

    let mut settings = Settings::from_lookup(|_| None).map_err(|e| anyhow::anyhow!("{e}"))?;
    settings.base_url = mock.base_url().trim_end_matches('/').to_owned();
    settings.accounts = parse_accounts(
        "demo accounts",
        &format!(r#"[{{"id":"acc-demo","apiKey":"{DEMO_KEY}","plan":"PRO","dailyLimit":500}}]"#),
    )?;
    let bucket = "demo-artifacts".to_owned();
    let run_args = RunLocalArgs {
        flow_run,
        run_id: Some(run_id.clone()),
        step_id: None,
        bucket: bucket.clone(),
        mode: None,
        base_url: None,
        cassette_dir: None,
        accounts: None,
        templates: Some(inputs.join("templates")),
        state_dir: out.join("state"),
        artifacts_dir: Some(out.join("gcs")),
        replace_run: true,
        format: OutputFormat::Text,
        json_logs: false,
    };
    let code = run_local_with(settings, run_args).await?;
    mock.shutdown().await.ok();
    if code == 0 {
        // The sample's one CHART_EXPORT step is `charts_4h` (demo/flow_run.json).
        let (run, step) = (RunId::parse(run_id.as_str())?, StepId::parse("charts_4h")?);
        let manifest = out.join("gcs").join(&bucket).join(manifest_path(&run, &step));
        let page = out.join(format!("report-{run_id}.html"));
        let page = crate::report::write(&manifest.to_string_lossy(), None, Some(&page)).await?;
        println!("report    {}", page.display());
        println!("\nOpen the PNG files above with any image viewer, or the report in a browser; the manifest lists them with their sha256.");
    }
    Ok(code)
}
