//! `recorder`: the recording proxy, re-recording, drift checks, the cassette linter and viewer. All logic lives in
//! the library.

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
    /// With --max-age, also report interactions older than that (or of unknown age).
    Lint(LintArgs),
    /// Re-record cassettes from a live endpoint, from the requests they hold. A dry run unless --yes.
    Record(RecordArgs),
    /// Send a cassette's requests to a live endpoint and report drift per interaction; exit 1 on drift.
    Verify(VerifyArgs),
    /// Print a cassette's interactions: method, path, body summary, status, size, age.
    Show(ShowArgs),
    /// Ask a running proxy's `/__recorder/health` (on the address the proxy's settings give) and exit 0 when it
    /// answers `ok`, 1 otherwise: a container HEALTHCHECK without curl.
    Healthcheck(HealthcheckArgs),
    /// Cassettes as HAR 1.2 (browsers' DevTools, mitmproxy, Polly.js, WireMock) and back.
    #[command(subcommand)]
    Har(HarCommand),
}

#[derive(Subcommand)]
enum HarCommand {
    /// Write a cassette as HAR 1.2: images base64, keys as their placeholders. Importing it gives the same cassette.
    Export {
        /// A cassette directory.
        cassette: PathBuf,
        /// Output file (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Base URL the exported requests are addressed to.
        #[arg(long, default_value = recorder::har::DEFAULT_BASE_URL)]
        base_url: String,
    },
    /// Write the entries of a HAR file as a new cassette, redacted exactly as a recording is; entries for other hosts
    /// are skipped and counted.
    Import {
        /// A HAR file (e.g. saved by DevTools' "Save all as HAR").
        har: PathBuf,
        /// The new cassette's directory (must not hold a cassette yet).
        cassette: PathBuf,
        /// Host (host[:port]) whose entries are imported. Repeatable; default api.chart-img.com.
        #[arg(long = "host")]
        hosts: Vec<String>,
        #[command(flatten)]
        secrets: SecretArgs,
    },
}

/// Where `recorder proxy` listens when neither `--listen` nor `PORT` says.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8089);

#[derive(clap::Args)]
struct ListenArgs {
    /// Address to listen on (port 0 picks a free port; the `ready` log line gives the bound address). Default:
    /// 0.0.0.0:$PORT when PORT is set (Cloud Run), else 127.0.0.1:8089.
    #[arg(long, env = "RECORDER_PROXY_LISTEN")]
    listen: Option<SocketAddr>,
}

impl ListenArgs {
    fn listen(&self) -> anyhow::Result<SocketAddr> {
        cloud_run_kit::service::listen_address(self.listen, DEFAULT_LISTEN).map_err(anyhow::Error::msg)
    }
}

#[derive(clap::Args)]
struct HealthcheckArgs {
    #[command(flatten)]
    listen: ListenArgs,
    /// Give up after this many seconds.
    #[arg(long, env = "RECORDER_PROXY_HEALTHCHECK_TIMEOUT_SECS", default_value_t = 3)]
    timeout_secs: u64,
}

#[derive(clap::Args)]
struct LiveArgs {
    /// Base URL of the live endpoint, e.g. https://api.chart-img.com
    #[arg(long)]
    upstream: String,
    /// File holding the accounts JSON [{"id","apiKey","dailyLimit","plan"}] or one bare key. Without it the keys
    /// come from CHART_IMG_ACCOUNTS_JSON, then CHART_IMG_API_KEY. Never a key as a flag.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Account id of a bare key (CHART_IMG_API_KEY or a one-key file); default: the account the cassettes name.
    #[arg(long)]
    account: Option<String>,
    /// Plan of a bare key (accounts JSON entries carry their own `plan`): BASIC, PRO, MEGA, ULTRA, ENTERPRISE.
    #[arg(long, default_value = "BASIC")]
    plan: recorder::Plan,
    /// Calls in flight at once; each account also keeps to its plan's rate and burst.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Timeout of one call, in seconds (Chart-IMG renders take seconds; the docs ask for at least 60 s).
    #[arg(long, default_value_t = 90)]
    timeout_secs: u64,
}

impl LiveArgs {
    fn key_source(&self) -> recorder::KeySource {
        recorder::KeySource {
            key_file: self.key_file.clone(),
            account: self.account.clone().unwrap_or_default(),
            plan: self.plan,
        }
    }
}

#[derive(clap::Args)]
struct RecordArgs {
    /// Cassette directories, or folders: every cassette below is re-recorded.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    live: LiveArgs,
    /// Spend the calls. Without it nothing is sent: the requests, calls per account and quota are printed.
    #[arg(long)]
    yes: bool,
    /// Calls an account already spent today (UTC), e.g. acc-1=12, to compare with its daily limit. Repeatable.
    #[arg(long = "used-today", value_parser = parse_used_today)]
    used_today: Vec<(String, u32)>,
}

/// Keeps the text as written, to repeat it in the findings (`90d`, not `2months 29days 13h…`).
fn parse_age(s: &str) -> Result<(String, std::time::Duration), String> {
    humantime::parse_duration(s)
        .map(|d| (s.trim().to_owned(), d))
        .map_err(|e| format!("{e} (write it like 90d, 12w or 36h)"))
}

fn parse_used_today(s: &str) -> Result<(String, u32), String> {
    let (id, n) = s
        .split_once('=')
        .ok_or_else(|| format!("expected ACCOUNT=N, got {s:?}"))?;
    let n = n
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of calls after '=', got {n:?}"))?;
    Ok((id.trim().to_owned(), n))
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Cassette directories, or folders of cassettes.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    live: LiveArgs,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(clap::Args)]
struct ShowArgs {
    /// A cassette directory (or its cassette.json).
    cassette: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

/// Every flag also reads the environment variable named in its help (`RECORDER_PROXY_*`; lists comma-separated), so
/// the proxy runs as a container service from its environment alone.
#[derive(clap::Args)]
struct ProxyArgs {
    /// Upstream base URL, e.g. https://api.chart-img.com
    #[arg(long, env = "RECORDER_PROXY_UPSTREAM")]
    upstream: String,
    /// Cassette directory, e.g. cassettes/demo
    #[arg(long, env = "RECORDER_PROXY_CASSETTE")]
    cassette: PathBuf,
    #[command(flatten)]
    listen: ListenArgs,
    /// none | once | new_episodes | all | spy
    #[arg(long, env = "RECORDER_PROXY_MODE", default_value = "new_episodes")]
    mode: Mode,
    /// repeat | error: what to answer once every recorded answer to a request was played.
    #[arg(long, env = "RECORDER_PROXY_ON_EXHAUSTED", default_value = "repeat")]
    on_exhausted: OnExhausted,
    /// JSON body field left out of matching (bare name at any depth, or a JSON pointer). Repeatable.
    #[arg(
        long = "ignore-json-field",
        env = "RECORDER_PROXY_IGNORE_JSON_FIELDS",
        value_delimiter = ','
    )]
    ignore_json_fields: Vec<String>,
    /// Query parameter left out of matching. Repeatable.
    #[arg(
        long = "ignore-query-param",
        env = "RECORDER_PROXY_IGNORE_QUERY_PARAMS",
        value_delimiter = ','
    )]
    ignore_query_params: Vec<String>,
    /// Request header that must match. Repeatable.
    #[arg(long = "match-header", env = "RECORDER_PROXY_MATCH_HEADERS", value_delimiter = ',')]
    match_headers: Vec<String>,
    /// Store each interaction's upstream latency (makes re-recordings differ).
    #[arg(long, env = "RECORDER_PROXY_RECORD_LATENCY")]
    record_latency: bool,
    /// Store when each interaction was recorded (`recordedAt`, what `show` and `lint --max-age` read). Every
    /// re-recording through the proxy then differs; `recorder record` keeps the date of identical interactions.
    #[arg(long, env = "RECORDER_PROXY_RECORD_TIMESTAMPS")]
    record_timestamps: bool,
    /// `batched`: keep new interactions in memory and write the cassette every `--flush-ms` and on shutdown
    /// (adds ~0.3 ms per recorded request; a kill -9 loses at most the last interval). `each`: write, fsync and
    /// rename after every interaction (~5 ms per recorded request; nothing is ever lost).
    #[arg(long, value_enum, env = "RECORDER_PROXY_WRITE", default_value = "batched")]
    write: WriteArg,
    /// Interval of the batched writes.
    #[arg(long, env = "RECORDER_PROXY_FLUSH_MS", default_value_t = 500)]
    flush_ms: u64,
    /// `false`: at shutdown (Ctrl-C / SIGTERM), list the recorded interactions no request used and exit 1 (Ruby
    /// VCR's `allow_unused_http_interactions: false`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    allow_unused: bool,
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
    /// Also report interactions recorded longer ago than this (90d, 12w, 36h), or with no recordedAt.
    #[arg(long, value_parser = parse_age)]
    max_age: Option<(String, std::time::Duration)>,
    /// With --max-age: exit 1 when an interaction is too old or of unknown age (default: a warning).
    #[arg(long, requires = "max_age")]
    deny_old: bool,
    #[command(flatten)]
    secrets: SecretArgs,
}

#[derive(clap::Args)]
struct SecretArgs {
    /// Accounts JSON `[{"id":"acc-1","apiKey":"…"}]`, mapping keys to account ids for placeholders.
    #[arg(long = "accounts-json", env = recorder::ACCOUNTS_ENV, hide_env_values = true)]
    accounts_json: Option<String>,
    /// Name of an environment variable holding one more key (account id: the variable's name). Repeatable.
    #[arg(long = "key-env", env = "RECORDER_KEY_ENVS", value_delimiter = ',')]
    key_envs: Vec<String>,
}

impl SecretArgs {
    fn secrets(&self) -> anyhow::Result<Secrets> {
        let mut secrets = match &self.accounts_json {
            Some(json) if !json.trim().is_empty() => Secrets::from_accounts_json(json)?,
            _ => Secrets::new(),
        };
        for var in &self.key_envs {
            let value = std::env::var(var).with_context(|| format!("environment variable {var} is not set"))?;
            secrets = secrets.with_account(var.clone(), value.into());
        }
        Ok(secrets)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if matches!(cli.command, Command::Proxy(_)) {
        // A service: Cloud Logging JSON lines, the shape mock-chart-img and the worker write.
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        tracing_subscriber::registry()
            .with(filter())
            .with(cloud_run_kit::CloudLoggingLayer::new(std::io::stderr))
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter())
            .init();
    }
    match run(cli) {
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
            let mut stale = 0;
            if let Some((text, max_age)) = args.max_age {
                let now = chrono::Utc::now();
                let level = if args.deny_old { "error" } else { "warning" };
                for age in recorder::inspect::cassette_ages(&args.paths, max_age, now)? {
                    for line in recorder::inspect::age_findings(&age, &text, now) {
                        println!("{level}: {line}");
                        stale += 1;
                    }
                }
            }
            if findings.is_empty() {
                eprintln!("recorder lint: no keys found");
            } else {
                eprintln!("recorder lint: {} finding(s)", findings.len());
            }
            if !findings.is_empty() || (args.deny_old && stale > 0) {
                Ok(ExitCode::from(1))
            } else {
                Ok(ExitCode::SUCCESS)
            }
        }
        Command::Record(args) => {
            let opts = recorder::record::RecordOptions {
                paths: args.paths,
                upstream: args.live.upstream.clone(),
                keys: args.live.key_source(),
                yes: args.yes,
                used_today: args.used_today.into_iter().collect(),
                concurrency: args.live.concurrency,
                timeout: std::time::Duration::from_secs(args.live.timeout_secs),
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let outcome = runtime.block_on(recorder::record::record(&opts, &mut std::io::stdout()))?;
            Ok(match outcome {
                recorder::record::RecordOutcome::Failed => ExitCode::from(1),
                _ => ExitCode::SUCCESS,
            })
        }
        Command::Verify(args) => {
            let opts = recorder::verify::VerifyOptions {
                paths: args.paths,
                upstream: args.live.upstream.clone(),
                keys: args.live.key_source(),
                concurrency: args.live.concurrency,
                timeout: std::time::Duration::from_secs(args.live.timeout_secs),
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let report = runtime.block_on(recorder::verify::verify(&opts))?;
            match args.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Format::Text => recorder::verify::print_report(&report, &mut std::io::stdout())?,
            }
            Ok(if report.drifted > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Show(args) => {
            let (dir, rows) = recorder::inspect::show(&args.cassette, chrono::Utc::now())?;
            match args.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Format::Text => recorder::inspect::print_table(&dir, &rows, &mut std::io::stdout())?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Har(HarCommand::Export {
            cassette,
            output,
            base_url,
        }) => {
            let text = recorder::har::export_json(&cassette, &base_url)?;
            match output {
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Har(HarCommand::Import {
            har,
            cassette,
            mut hosts,
            secrets,
        }) => {
            if hosts.is_empty() {
                hosts.push(
                    url::Url::parse(recorder::har::DEFAULT_BASE_URL)?
                        .host_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
            let report = recorder::har::import(&har, &cassette, &hosts, &secrets.secrets()?)?;
            eprintln!("recorder har import: {report} into {}", cassette.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck(args) => {
            let runtime = tokio::runtime::Runtime::new()?;
            let timeout = std::time::Duration::from_secs(args.timeout_secs.max(1));
            let probe = cloud_run_kit::service::healthcheck(args.listen.listen()?, recorder::HEALTH_PATH, timeout);
            Ok(match runtime.block_on(probe) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e}");
                    ExitCode::from(1)
                }
            })
        }
        Command::Proxy(args) => {
            let listen = args.listen.listen()?;
            let config = VcrConfig {
                mode: args.mode,
                on_exhausted: args.on_exhausted,
                ignore_json_fields: args.ignore_json_fields,
                ignore_query_params: args.ignore_query_params,
                match_headers: args.match_headers,
                record_latency: args.record_latency,
                record_timestamps: args.record_timestamps,
                allow_unused: args.allow_unused,
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
                            Ok(Err(e)) => {
                                eprintln!("recorder proxy: cannot write the cassette: {e}")
                            }
                            Err(e) => eprintln!("recorder proxy: flush task failed: {e}"),
                            Ok(Ok(())) => {}
                        }
                    }
                }
            });
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                // Before the port is bound: a stop sent as soon as the proxy answers ends it cleanly.
                let shutdown = cloud_run_kit::shutdown_signal();
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                // The one start-up line, for log-wait strategies: `"message":"ready"`.
                tracing::info!(
                    listen = %listener.local_addr()?,
                    upstream = %args.upstream,
                    cassette = %args.cassette.display(),
                    mode = %args.mode,
                    "ready"
                );
                let flushing = flusher.map(|f| tokio::spawn(f()));
                // run_proxy flushes once more after the last request, so batched writes lose nothing on Ctrl-C.
                recorder::run_proxy(listener, ProxyConfig::new(args.upstream, vcr.clone()), shutdown).await?;
                if let Some(f) = flushing {
                    f.abort();
                }
                // The end of a proxy session is its shutdown: what was recorded but never asked for is reported now.
                if let Err(unused) = vcr.check_unused() {
                    eprint!("recorder proxy: {unused}");
                    return Ok(ExitCode::from(1));
                }
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}
