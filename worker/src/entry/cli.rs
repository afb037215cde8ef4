//! `run-local`: one step of a flow-run file on the embedded local backend. Raw flags become validated settings here,
//! before any work starts.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::adapters::{JsonDocs, LocalArtifacts, LocalBackend};
use crate::config::{check_base_url, parse_accounts, ChartImgMode, Settings};
use crate::domain::collections::{CHART_TEMPLATES, FLOW_RUNS};
use crate::domain::{ObjectRef, RunId, StepId, StepSelector, TemplateId};
use crate::ports::StepObserver;
use crate::quota::AccountPool;
use crate::step_run::{run_chart_export_step, StepReport};
use crate::wiring::{CoreSettings, Worker};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct RunLocalArgs {
    /// The flow run: the `flow_runs/{runId}` document, optionally with a top-level `runId`.
    pub flow_run: PathBuf,
    /// Overrides the run id (default: the file's `runId`, else the file stem).
    #[arg(long)]
    pub run_id: Option<String>,
    /// The step to run (default: the first READY CHART_EXPORT step by stepId).
    #[arg(long)]
    pub step_id: Option<String>,
    /// Bucket name for artifacts.
    #[arg(long, env = "ARTIFACTS_BUCKET", default_value = "local-artifacts")]
    pub bucket: String,
    /// Chart-IMG mode: real, mock or record.
    #[arg(long, env = "CHART_IMG_MODE")]
    pub mode: Option<String>,
    /// Chart-IMG base URL (real and record modes).
    #[arg(long, env = "CHART_IMG_BASE_URL")]
    pub base_url: Option<String>,
    /// Cassette directory (mock and record modes).
    #[arg(long, env = "CHART_IMG_CASSETTE_DIR")]
    pub cassette_dir: Option<PathBuf>,
    /// A JSON file of accounts, as in CHART_IMG_ACCOUNTS_JSON (default: that variable).
    #[arg(long)]
    pub accounts: Option<PathBuf>,
    /// A folder of `<chartTemplateId>.json` templates, loaded into the state before the run.
    #[arg(long)]
    pub templates: Option<PathBuf>,
    /// Where documents (flow runs, templates, usage) persist between runs.
    #[arg(long, env = "WORKER_STATE_DIR", default_value = ".worker-state")]
    pub state_dir: PathBuf,
    /// Where artifacts go: `gs://b/p` is `<dir>/b/p` (default: `<state-dir>/gcs`).
    #[arg(long)]
    pub artifacts_dir: Option<PathBuf>,
    /// Replace the stored flow run with the file's content (default: keep the stored one, as Firestore would).
    #[arg(long)]
    pub replace_run: bool,
    /// Summary format on stdout.
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    /// Log lines on stderr as Cloud Logging JSON instead of text.
    #[arg(long)]
    pub json_logs: bool,
}

/// An error that carries its own exit code.
#[derive(Debug, thiserror::Error)]
#[error("{1}")]
pub(crate) struct Exit(pub(crate) i32, pub(crate) String);

fn read_json(path: &Path, what: &str) -> anyhow::Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "{what} {} is not valid JSON: {e} (line {}, column {})",
            path.display(),
            e.line(),
            e.column()
        )
    })
}

/// Parses the flow-run file into its run id and document.
pub fn load_flow_run(path: &Path, run_id: Option<&str>) -> anyhow::Result<(RunId, Value)> {
    let mut doc = read_json(path, "flow run")?;
    let Some(obj) = doc.as_object_mut() else {
        bail!("flow run {}: must be a JSON object", path.display())
    };
    let in_file = match obj.remove("runId") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => bail!("flow run {}: runId must be a string", path.display()),
    };
    if !obj.get("steps").is_some_and(Value::is_object) {
        bail!("flow run {}: steps must be a map keyed by stepId", path.display());
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    let raw = run_id.map(str::to_owned).or(in_file).or(stem).unwrap_or_default();
    let id = RunId::parse(raw).map_err(|e| anyhow::anyhow!("flow run {}: {e}", path.display()))?;
    Ok((id, doc))
}

/// Loads `<dir>/*.json` as templates, sorted by name so a bad file is reported deterministically.
pub fn load_templates(dir: &Path) -> anyhow::Result<Vec<(TemplateId, Value)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read templates folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let id = TemplateId::parse(stem).map_err(|e| anyhow::anyhow!("template {}: {e}", p.display()))?;
            let v = read_json(p, "template")?;
            if !v.is_object() {
                bail!("template {}: must be a JSON object", p.display());
            }
            Ok((id, v))
        })
        .collect()
}

pub(crate) async fn run_local(args: RunLocalArgs) -> anyhow::Result<i32> {
    let settings = Settings::from_env().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    run_local_with(settings, args).await
}

/// `run-local` on given settings (the flags override them).
pub async fn run_local_with(mut settings: Settings, args: RunLocalArgs) -> anyhow::Result<i32> {
    if let Some(m) = &args.mode {
        settings.mode = m
            .parse::<ChartImgMode>()
            .map_err(|e| anyhow::anyhow!("--mode: {}", e.problem))?;
    }
    if let Some(u) = &args.base_url {
        check_base_url(u).map_err(|e| anyhow::anyhow!("--base-url: {}", e.problem))?;
        settings.base_url = u.trim_end_matches('/').to_owned();
    }
    if let Some(d) = &args.cassette_dir {
        settings.cassette_dir = Some(d.clone());
    }
    if let Some(path) = &args.accounts {
        let raw =
            std::fs::read_to_string(path).with_context(|| format!("cannot read accounts file {}", path.display()))?;
        settings.accounts = parse_accounts(&format!("accounts file {}", path.display()), &raw)?;
    }
    if settings.accounts.is_empty() {
        bail!("no Chart-IMG account: set CHART_IMG_ACCOUNTS_JSON or pass --accounts <file>");
    }
    let bucket = args.bucket.clone();
    if bucket.is_empty() || bucket.contains('/') {
        bail!("--bucket: {bucket:?} is not a bucket name");
    }
    let (run_id, doc) = load_flow_run(&args.flow_run, args.run_id.as_deref())?;
    let selector = match &args.step_id {
        Some(s) => StepSelector::Explicit(StepId::parse(s.as_str()).map_err(|e| anyhow::anyhow!("--step-id: {e}"))?),
        None => StepSelector::First,
    };
    let templates = args.templates.as_deref().map(load_templates).transpose()?;

    let docs = JsonDocs::<LocalBackend>::local(&args.state_dir)?;
    if args.replace_run {
        docs.put_doc(FLOW_RUNS, run_id.as_str(), doc).await?;
    } else if !docs.create_doc(FLOW_RUNS, run_id.as_str(), doc).await? {
        tracing::info!(
            event = "state_reused",
            "flow_runs/{run_id} already in {}; using the stored document",
            args.state_dir.display()
        );
    }
    for (id, t) in templates.into_iter().flatten() {
        docs.put_doc(CHART_TEMPLATES, id.as_str(), t).await?;
    }
    let artifacts_dir = args.artifacts_dir.clone().unwrap_or_else(|| args.state_dir.join("gcs"));
    let artifacts = LocalArtifacts::new(&artifacts_dir);
    let renderer = crate::renderers::build(&settings)?;
    let core = CoreSettings::from_settings(&settings, crate::wiring::worker_id("run-local"), bucket);
    let accounts = AccountPool::new(settings.accounts.clone());
    let worker = Worker::with_documents(docs.clone(), renderer, Arc::new(artifacts.clone()), accounts, core);
    let bar = ProgressObserver::new();
    let report = run_chart_export_step(
        &worker,
        &run_id,
        &selector,
        bar.as_ref().map(|b| b as &dyn StepObserver),
    )
    .await
    .map_err(|e| Exit(3, format!("infrastructure failure (the step was released): {e}")))?;
    if let Some(b) = &bar {
        b.0.finish_and_clear();
    }
    print_report(&report, args.format, &artifacts);
    // The step is over: a cassette replayed with CHART_IMG_ALLOW_UNUSED=false reports what the step did not use.
    if let Err(unused) = worker.renderer.check_unused() {
        eprint!("{unused}");
        return Ok(1);
    }
    Ok(if report.is_ok() { 0 } else { 1 })
}

fn print_report(report: &StepReport, format: OutputFormat, artifacts: &LocalArtifacts) {
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(report).unwrap_or_default());
        return;
    }
    let file = |uri: &str| {
        ObjectRef::parse_uri(uri)
            .and_then(|o| artifacts.file_of(&o).ok())
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    match report {
        StepReport::Succeeded {
            run_id,
            step_id,
            manifest_uri,
            requested,
            items,
            failures,
        } => {
            println!(
                "SUCCEEDED flow_runs/{run_id} step {step_id}: {} of {requested} charts",
                items.len()
            );
            println!("manifest  {manifest_uri}\n          {}", file(manifest_uri));
            for i in items {
                println!(
                    "chart     {} {} bytes\n          {}",
                    i.chart_template_id,
                    i.bytes,
                    file(&i.gcs_uri)
                );
            }
            for f in failures {
                println!("failed    {} {} {}", f.chart_template_id, f.code, f.message);
            }
        }
        StepReport::Failed {
            run_id,
            step_id,
            code,
            message,
            ..
        } => {
            println!("FAILED flow_runs/{run_id} step {step_id}: {code}: {message}");
        }
        StepReport::NoOp { run_id, reason, .. } => println!("NO-OP flow_runs/{run_id}: {reason}"),
        StepReport::Rejected {
            run_id, code, message, ..
        } => println!("REJECTED flow_runs/{run_id}: {code}: {message}"),
        StepReport::LostClaim {
            run_id,
            step_id,
            reason,
        } => println!("LOST flow_runs/{run_id} step {step_id}: {reason}"),
        StepReport::Released {
            run_id,
            step_id,
            attempt,
            not_before,
            code,
            message,
        } => {
            println!("RELEASED flow_runs/{run_id} step {step_id} after attempt {attempt} ({code}: {message}); claimable from {not_before}")
        }
        StepReport::Busy {
            run_id,
            step_id,
            claimed_by,
            lease_expires_at,
        } => println!(
            "BUSY flow_runs/{run_id} step {step_id}: RUNNING under {} until {}",
            claimed_by.as_deref().unwrap_or("another claim"),
            lease_expires_at.as_deref().unwrap_or("?")
        ),
        StepReport::NotYet {
            run_id,
            step_id,
            not_before,
        } => {
            println!("NOT YET flow_runs/{run_id} step {step_id}: released, claimable from {not_before}")
        }
    }
}

/// A progress bar on a terminal; none when stderr is piped (`new` answers `None`).
struct ProgressObserver(indicatif::ProgressBar);

impl ProgressObserver {
    fn new() -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} charts {pos}/{len} {wide_bar} {elapsed}")
        {
            bar.set_style(style);
        }
        Some(Self(bar))
    }
}

impl StepObserver for ProgressObserver {
    fn charts_planned(&self, total: usize) {
        self.0.set_length(total as u64);
    }
    fn chart_done(&self, _t: &TemplateId, _ok: bool) {
        self.0.inc(1);
    }
}
