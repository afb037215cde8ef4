//! `local-eventarc`: Firestore emulator changes on a collection, delivered to `serve` as Eventarc delivers them.
//! Prints one JSON line with its admin URL once it listens; runs until Ctrl-C / SIGTERM.

use std::time::Duration;

use clap::Parser;
use harness::eventarc::{Config, EventType, LocalEventarc};
use worker_chart_export::entry::deploy::TRIGGER_EVENT_TYPES;

#[derive(Debug, Parser)]
#[command(about = "A local Eventarc: Firestore emulator changes → binary-mode CloudEvents, at least once")]
struct Args {
    /// Firestore project (the emulator from FIRESTORE_EMULATOR_HOST).
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    project: String,
    #[arg(long, default_value = "flow_runs")]
    collection: String,
    /// Where events are posted (repeat for several instances; round-robin).
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// The triggers' event types, comma-separated (`created`, `updated`, `deleted`, `written`); default: the types
    /// `deploy-plan`'s triggers subscribe to.
    #[arg(long, value_delimiter = ',', default_values_t = TRIGGER_EVENT_TYPES.to_vec())]
    types: Vec<EventType>,
    /// Multiplies backoff, ack deadline and retention (1 = production).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    #[arg(long, default_value_t = 600)]
    ack_deadline_seconds: u64,
    #[arg(long, default_value_t = 0.0)]
    duplicate_probability: f64,
    #[arg(long, default_value_t = 0)]
    reorder_window_ms: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Admin endpoint port on 127.0.0.1 (0 = any).
    #[arg(long, default_value_t = 0)]
    admin_port: u16,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if std::env::var("FIRESTORE_EMULATOR_HOST").map_or(true, |v| v.is_empty()) {
        eprintln!("error: FIRESTORE_EMULATOR_HOST is not set (local-eventarc listens to the Firestore emulator)");
        std::process::exit(2);
    }
    let mut config = Config::new(args.project).with_time_scale(args.time_scale);
    config.collection = args.collection;
    config.types = args.types;
    config.ack_deadline = Duration::from_secs(args.ack_deadline_seconds);
    config.duplicate_probability = args.duplicate_probability;
    config.reorder_window = Duration::from_millis(args.reorder_window_ms);
    config.seed = args.seed;
    let eventarc = match LocalEventarc::start(config, args.targets).await {
        Ok(e) => std::sync::Arc::new(e),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    };
    let admin = match harness::serve_admin(args.admin_port, eventarc.admin_router()).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: admin endpoint: {e:#}");
            std::process::exit(2);
        }
    };
    println!(
        "{}",
        serde_json::json!({"event": "local_eventarc_ready", "admin": format!("http://{admin}")})
    );
    wait_for_stop().await;
    eventarc.shutdown().await;
}

async fn wait_for_stop() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
