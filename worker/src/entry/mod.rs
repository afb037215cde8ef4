//! The process's entrypoints, one module each, dispatched from here: `run-local` ([`cli`]: one step on the embedded
//! local backend), `serve` ([`serve`]: the Cloud Run service Eventarc calls), `deploy-plan` ([`deploy`]: the gcloud
//! commands of a deployment) and `demo` ([`demo`]: the local demo
//! against an in-process mock Chart-IMG server). Dependencies point one way: this module → the entrypoints,
//! `demo` → `cli`; no entrypoint imports this module's dispatcher back.

pub mod cli;
#[cfg(feature = "demo")]
pub mod demo;
pub mod deploy;
pub mod serve;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "worker-chart-export",
    version,
    about = "Renders CHART_EXPORT steps through Chart-IMG"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one step of a flow-run JSON file on the local state directory (no cloud needed).
    RunLocal(cli::RunLocalArgs),
    /// The Cloud Run entrypoint: serve Eventarc Firestore events on 0.0.0.0:$PORT (configuration from the
    /// environment; Firestore and Cloud Storage, or their emulators).
    Serve(ServeArgs),
    /// Print the exact gcloud commands that deploy the worker for the given parameters (refusing inconsistent ones).
    DeployPlan(deploy::DeployPlanArgs),
    /// The local demo: start a mock Chart-IMG server in this process, run a sample flow run through the worker on
    /// the embedded backend, and print where the PNGs and the manifest are.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Write one self-contained HTML page of a finished step from its manifest (a local file or gs:// URI): the
    /// charts with their template, size, pixels, sha256 and time, the failures, the outcome.
    Report(crate::report::ReportArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Log lines as text instead of Cloud Logging JSON (JSON on stdout is what Cloud Run expects).
    #[arg(long)]
    pub text_logs: bool,
}

/// Exit codes: 0 SUCCEEDED or no-op, 1 step FAILED / rejected / lost, 2 bad input, 3 infrastructure failure.
pub async fn main_with(cli: Cli) -> i32 {
    match cli.command {
        Command::RunLocal(args) => {
            telemetry::init(
                if args.json_logs {
                    LogFormat::Json
                } else {
                    LogFormat::Text
                },
                true,
            );
            match cli::run_local(args).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    e.downcast_ref::<cli::Exit>().map(|x| x.0).unwrap_or(2)
                }
            }
        }
        #[cfg(feature = "demo")]
        Command::Demo(args) => {
            telemetry::init_with_default(LogFormat::Text, true, "warn");
            match demo::run(args).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    2
                }
            }
        }
        Command::Report(args) => crate::report::main(args).await,
        Command::DeployPlan(args) => deploy::run(args),
        Command::Serve(args) => {
            telemetry::init(
                if args.text_logs {
                    LogFormat::Text
                } else {
                    LogFormat::Json
                },
                false,
            );
            match serve::main_from_env().await {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(event = "serve_failed", error = %format!("{e:#}"), "serve failed");
                    eprintln!("error: {e:#}");
                    2
                }
            }
        }
    }
}
