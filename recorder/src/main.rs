//! `recorder`: the recording proxy and the cassette linter. All logic lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use recorder::{Mode, OnExhausted, ProxyConfig, Secrets, Vcr, VcrConfig};

#[derive(Parser)]
#[command(
    name = "recorder",
    version,
    about = "Record and replay Chart-IMG HTTP traffic as cassettes, secrets removed"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a recording proxy: clients send requests here instead of to the upstream API.
    Proxy(ProxyArgs),
    /// Scan cassettes for API keys (configured ones and key-shaped strings); exit 1 with file:line on a finding.
    Lint(LintArgs),
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// Upstream base URL, e.g. https://api.chart-img.com
    #[arg(long)]
    upstream: String,
    /// Cassette directory, e.g. cassettes/demo
    #[arg(long)]
    cassette: PathBuf,
    /// Address to listen on (port 0 picks a free port; the bound address is printed on stderr).
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// none | once | new_episodes | all | spy
    #[arg(long, default_value = "new_episodes")]
    mode: Mode,
    /// repeat | error: what to answer once every recorded answer to a request was played.
    #[arg(long, default_value = "repeat")]
    on_exhausted: OnExhausted,
    /// JSON body field left out of matching (bare name at any depth, or a JSON pointer). Repeatable.
    #[arg(long = "ignore-json-field")]
    ignore_json_fields: Vec<String>,
    /// Query parameter left out of matching. Repeatable.
    #[arg(long = "ignore-query-param")]
    ignore_query_params: Vec<String>,
    /// Request header that must match. Repeatable.
    #[arg(long = "match-header")]
    match_headers: Vec<String>,
    /// Store each interaction's upstream latency (makes re-recordings differ).
    #[arg(long)]
    record_latency: bool,
    /// `batched`: keep new interactions in memory and write the cassette every `--flush-ms` and on shutdown
    /// (adds ~0.3 ms per recorded request; a kill -9 loses at most the last interval). `each`: write, fsync and
    /// rename after every interaction (~5 ms per recorded request; nothing is ever lost).
    #[arg(long, value_enum, default_value = "batched")]
    write: WriteArg,
    /// Interval of the batched writes.
    #[arg(long, default_value_t = 500)]
    flush_ms: u64,
    #[command(flatten)]
    secrets: SecretArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WriteArg {
    Batched,
    Each,
}

#[derive(clap::Args)]
struct LintArgs {
    /// Cassette directories or files.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    secrets: SecretArgs,
}

#[derive(clap::Args)]
struct SecretArgs {
    /// Accounts JSON `[{"id":"acc-1","apiKey":"…"}]`, mapping keys to account ids for placeholders.
    #[arg(long = "accounts-json", env = recorder::ACCOUNTS_ENV, hide_env_values = true)]
    accounts_json: Option<String>,
    /// Name of an environment variable holding one more key (account id: the variable's name). Repeatable.
    #[arg(long = "key-env")]
    key_envs: Vec<String>,
}

impl SecretArgs {
    fn secrets(&self) -> anyhow::Result<Secrets> {
        let mut secrets = match &self.accounts_json {
            Some(json) if !json.trim().is_empty() => Secrets::from_accounts_json(json)?,
            _ => Secrets::new(),
        };
        for var in &self.key_envs {
            let value = std::env::var(var)
                .with_context(|| format!("environment variable {var} is not set"))?;
            secrets = secrets.with_account(var.clone(), value.into());
        }
        Ok(secrets)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Lint(args) => {
            let findings = recorder::lint(&args.paths, &args.secrets.secrets()?)?;
            for f in &findings {
                println!("{f}");
            }
            if findings.is_empty() {
                eprintln!("recorder lint: no keys found");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("recorder lint: {} finding(s)", findings.len());
                Ok(ExitCode::from(1))
            }
        }
        Command::Proxy(args) => {
            let config = VcrConfig {
                mode: args.mode,
                on_exhausted: args.on_exhausted,
                ignore_json_fields: args.ignore_json_fields,
                ignore_query_params: args.ignore_query_params,
                match_headers: args.match_headers,
                record_latency: args.record_latency,
                write: match args.write {
                    WriteArg::Batched => recorder::WritePolicy::OnFlush,
                    WriteArg::Each => recorder::WritePolicy::EachInteraction,
                },
                ..VcrConfig::default()
            };
            let vcr = Vcr::open(&args.cassette, config, args.secrets.secrets()?)?;
            let flusher = (args.write == WriteArg::Batched).then(|| {
                let vcr = vcr.clone();
                let every = std::time::Duration::from_millis(args.flush_ms.max(10));
                move || async move {
                    let mut tick = tokio::time::interval(every);
                    loop {
                        tick.tick().await;
                        let v = vcr.clone();
                        match tokio::task::spawn_blocking(move || v.flush()).await {
                            Ok(Err(e)) => eprintln!("recorder proxy: cannot write the cassette: {e}"),
                            Err(e) => eprintln!("recorder proxy: flush task failed: {e}"),
                            Ok(Ok(())) => {}
                        }
                    }
                }
            });
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(args.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", args.listen))?;
                eprintln!(
                    "recorder proxy listening on http://{} -> {} (cassette {}, mode {})",
                    listener.local_addr()?,
                    args.upstream,
                    args.cassette.display(),
                    args.mode
                );
                let flushing = flusher.map(|f| tokio::spawn(f()));
                let shutdown = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                // run_proxy flushes once more after the last request, so batched writes lose nothing on Ctrl-C.
                recorder::run_proxy(listener, ProxyConfig::new(args.upstream, vcr), shutdown)
                    .await?;
                if let Some(f) = flushing {
                    f.abort();
                }
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}
