//! The binary's settings, WireMock-style: every flag also reads an environment variable (`MOCK_CHART_IMG_*`),
//! `PORT` is honoured as Cloud Run sets it, keys come from the environment as well as from the config file, and
//! `/__admin` is served where the settings say (see [`AdminPlacement`]). Secrets (keys, the admin token) are read
//! from the environment only, never from a flag, which would land in shell history and process lists.
//!
//! These names are the one home of the container's interface: the Containerfile, the recipes in the README and
//! the testcontainers image (module `testcontainers`, feature `testcontainers`) use them.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};

use crate::{
    admin::{AdminToken, HEALTH_PATH},
    config::{Config, KeyConfig, LatencyProfile},
    plan::Plan,
};

/// Keys in short form: `key:PLAN,key2:PRO` (or `account=key:PLAN`).
pub const KEYS_ENV: &str = "MOCK_CHART_IMG_KEYS";
/// Keys in the worker's accounts JSON (`[{"id","apiKey","dailyLimit","plan"}]`).
pub const ACCOUNTS_JSON_ENV: &str = "MOCK_CHART_IMG_ACCOUNTS_JSON";
/// The worker's own variable, read when [`ACCOUNTS_JSON_ENV`] is not set: a CI job that sets it for its client
/// gives the mock the same keys.
pub const WORKER_ACCOUNTS_JSON_ENV: &str = recorder::ACCOUNTS_ENV;
/// The admin token: when set, `/__admin` is served on the API port and needs `Authorization: Bearer <token>`.
pub const ADMIN_TOKEN_ENV: &str = "MOCK_CHART_IMG_ADMIN_TOKEN";
/// Where the API listens when neither `--listen` nor `PORT` says.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8089);

/// A standalone server that behaves like the Chart-IMG API (keys, plans, quotas, faults, real images).
///
/// Every flag can also be set by the environment variable named in its help (`MOCK_CHART_IMG_*`); keys come from
/// MOCK_CHART_IMG_KEYS (`key:PLAN,…`), MOCK_CHART_IMG_ACCOUNTS_JSON or CHART_IMG_ACCOUNTS_JSON, and the config file.
#[derive(Debug, Parser)]
#[command(name = "mock-chart-img", version)]
pub struct Cli {
    /// What to do; without one, serve.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// How to serve.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask a running mock's `/__admin/health` (on the address the same settings give) and exit 0 when it answers
    /// `ok`, 1 otherwise: a container HEALTHCHECK without curl.
    Healthcheck(HealthcheckArgs),
}

/// The address settings the server and `healthcheck` share.
#[derive(Debug, Clone, Args)]
pub struct AddrArgs {
    /// Address of the Chart-IMG API. Default: 0.0.0.0:$PORT when PORT is set (Cloud Run), else 127.0.0.1:8089.
    #[arg(long, env = "MOCK_CHART_IMG_LISTEN")]
    pub listen: Option<SocketAddr>,
}

impl AddrArgs {
    /// `--listen` / `MOCK_CHART_IMG_LISTEN`, else `0.0.0.0:$PORT`, else [`DEFAULT_LISTEN`].
    pub fn listen(&self) -> anyhow::Result<SocketAddr> {
        cloud_run_kit::service::listen_address(self.listen, DEFAULT_LISTEN).map_err(anyhow::Error::msg)
    }
}

/// `healthcheck`'s settings.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// Where the server listens (the same settings as the server's).
    #[command(flatten)]
    pub addr: AddrArgs,
    /// Give up after this many seconds.
    #[arg(long, env = "MOCK_CHART_IMG_HEALTHCHECK_TIMEOUT_SECS", default_value_t = 3)]
    pub timeout_secs: u64,
}

/// The server's settings.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Config file (`.yaml`, `.yml` or `.toml`); reloaded when it changes. Keys from the environment are added to
    /// its keys.
    #[arg(long, env = "MOCK_CHART_IMG_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the API listens.
    #[command(flatten)]
    pub addr: AddrArgs,
    /// Address of a separate `/__admin` listener. Default: none when the API listens on loopback or
    /// MOCK_CHART_IMG_ADMIN_TOKEN is set (admin is then on the API port), otherwise 127.0.0.1 on the next port.
    #[arg(long, env = "MOCK_CHART_IMG_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Where `/storage` images are kept (overrides the file's `storage_dir`; the image sets /data).
    #[arg(long, env = "MOCK_CHART_IMG_STORAGE_DIR")]
    pub storage_dir: Option<PathBuf>,
    /// Seed of the chart data and fault dice (overrides the file's `seed`).
    #[arg(long, env = "MOCK_CHART_IMG_SEED")]
    pub seed: Option<u64>,
    /// `instant` or `realistic` chart times (overrides the file's `latency`).
    #[arg(long, env = "MOCK_CHART_IMG_LATENCY", value_parser = OneOf(&["instant", "realistic"]))]
    pub latency: Option<String>,
    /// Multiplies realistic waits (overrides the file's `time_scale`), e.g. 0.01 for tests.
    #[arg(long, env = "MOCK_CHART_IMG_TIME_SCALE")]
    pub time_scale: Option<f64>,
    /// `off` or `emulate`: the legacy API v1 GET routes (overrides the file's `v1`; uncertain upstream, see the
    /// README's "API v1").
    #[arg(long, env = "MOCK_CHART_IMG_V1", value_parser = OneOf(&["off", "emulate"]))]
    pub v1: Option<String>,
    /// Human-readable logs instead of Cloud Logging JSON lines.
    #[arg(long, env = "MOCK_CHART_IMG_PRETTY_LOGS")]
    pub pretty_logs: bool,
    /// Seconds between the `traffic summary` log lines (per-request lines are `debug`); 0: no summary.
    #[arg(long, env = "MOCK_CHART_IMG_LOG_SUMMARY_SECS", default_value_t = 10)]
    pub log_summary_secs: u64,
}

/// A flag whose value is one of a list. Refused, it names the environment variable as well as the flag (clap's own
/// message names only `--flag`, which a container user never typed) and the values allowed; the help lists them.
#[derive(Debug, Clone, Copy)]
struct OneOf(&'static [&'static str]);

impl clap::builder::TypedValueParser for OneOf {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let value = value.to_string_lossy();
        if self.0.contains(&value.as_ref()) {
            return Ok(value.into_owned());
        }
        let mut names = Vec::new();
        if let Some(env) = arg.and_then(clap::Arg::get_env) {
            names.push(env.to_string_lossy().into_owned());
        }
        if let Some(long) = arg.and_then(clap::Arg::get_long) {
            names.push(format!("--{long}"));
        }
        let message = format!(
            "invalid value '{value}' for {}: expected one of: {}\n",
            names.join(" / "),
            self.0.join(", ")
        );
        Err(clap::Error::raw(clap::error::ErrorKind::InvalidValue, message).with_cmd(cmd))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(self.0.iter().map(|v| clap::builder::PossibleValue::new(*v))))
    }
}

/// Where `/__admin` is served and who may use it.
#[derive(Debug, Clone)]
pub struct AdminPlacement {
    /// `/__admin` (every route) on the API port. Otherwise only `/__admin/health` is there.
    pub on_api_port: bool,
    /// A listener of its own, when there is one.
    pub separate: Option<SocketAddr>,
    /// Every admin route but health needs `Authorization: Bearer <token>`, wherever it is served.
    pub token: Option<AdminToken>,
}

impl AdminPlacement {
    /// The rule: with a token, admin is on the API port (and on `--admin-listen` if given), token required. Without
    /// one, admin is on the API port only when that is loopback; on a public address it moves to `--admin-listen`,
    /// by default 127.0.0.1 on the next port, so it is never exposed by accident.
    pub fn decide(listen: SocketAddr, admin_listen: Option<SocketAddr>, token: Option<AdminToken>) -> Self {
        let on_api_port = token.is_some() || (listen.ip().is_loopback() && admin_listen.is_none());
        let separate = match admin_listen {
            Some(a) => Some(a),
            None if on_api_port => None,
            None => Some(SocketAddr::from(([127, 0, 0, 1], listen.port().wrapping_add(1)))),
        };
        AdminPlacement {
            on_api_port,
            separate,
            token,
        }
    }
}

/// What the settings resolve to, before anything is bound.
#[derive(Debug)]
pub struct Resolved {
    /// The config file (or the default) with the flags and the keys from the environment applied.
    pub config: Config,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Where `/__admin` is served.
    pub admin: AdminPlacement,
    /// Where the keys came from (`config file`, `MOCK_CHART_IMG_KEYS`, …), for the readiness line.
    pub key_sources: Vec<String>,
    /// The keys from the environment, to add to every reload of the config file.
    pub env_keys: Vec<KeyConfig>,
}

impl ServeArgs {
    /// Reads the config file and the environment; every error names the setting that is wrong (never a key).
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let mut config = match &self.config {
            // `ConfigError` already reads `file:line: message`.
            Some(path) => Config::from_file(path).map_err(|e| anyhow::anyhow!("{e}"))?,
            None => Config::default(),
        };
        let mut key_sources = Vec::new();
        if !config.keys.is_empty() {
            key_sources.push("config file".to_string());
        }
        let env_keys = keys_from_env()?;
        key_sources.extend(env_keys.sources.iter().cloned());
        self.overlay(&mut config, &env_keys.keys)
            .map_err(|m| anyhow::anyhow!("{m}"))?;
        let listen = self.addr.listen()?;
        let token = std::env::var(ADMIN_TOKEN_ENV).ok().and_then(|t| AdminToken::new(&t));
        Ok(Resolved {
            config,
            listen,
            admin: AdminPlacement::decide(listen, self.admin_listen, token),
            key_sources,
            env_keys: env_keys.keys,
        })
    }

    /// Applies the flags and `env_keys` to a config (at start, and to every reload of the file); the merged config
    /// must be valid (e.g. a key given twice is refused, named by its account).
    pub fn overlay(&self, config: &mut Config, env_keys: &[KeyConfig]) -> Result<(), String> {
        if let Some(seed) = self.seed {
            config.seed = seed;
        }
        match self.latency.as_deref() {
            Some("realistic") => config.latency = LatencyProfile::Realistic,
            Some(_) => config.latency = LatencyProfile::Instant,
            None => {}
        }
        if let Some(scale) = self.time_scale {
            config.time_scale = scale;
        }
        match self.v1.as_deref() {
            Some("emulate") => config.v1 = crate::config::V1Mode::Emulate,
            Some(_) => config.v1 = crate::config::V1Mode::Off,
            None => {}
        }
        if let Some(dir) = &self.storage_dir {
            config.storage_dir = Some(dir.clone());
        }
        config.keys.extend(env_keys.iter().cloned());
        config
            .validate()
            .map_err(|(_, m)| format!("invalid configuration: {m}"))
    }
}

/// Keys read from the environment, and the variables they came from.
#[derive(Debug, Default)]
pub struct EnvKeys {
    /// The keys.
    pub keys: Vec<KeyConfig>,
    /// The variables that held them.
    pub sources: Vec<String>,
}

/// Reads [`KEYS_ENV`] and [`ACCOUNTS_JSON_ENV`] (else [`WORKER_ACCOUNTS_JSON_ENV`]).
pub fn keys_from_env() -> anyhow::Result<EnvKeys> {
    let mut out = EnvKeys::default();
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(short) = var(KEYS_ENV) {
        out.keys
            .extend(parse_short_keys(&short).map_err(|m| anyhow::anyhow!("{KEYS_ENV}: {m}"))?);
        out.sources.push(KEYS_ENV.to_string());
    }
    let json = [ACCOUNTS_JSON_ENV, WORKER_ACCOUNTS_JSON_ENV]
        .into_iter()
        .find_map(|name| var(name).map(|v| (name, v)));
    if let Some((name, json)) = json {
        // The worker's and recorder's format, read by the recorder's parser (no third copy of it).
        let accounts = recorder::Accounts::from_json(&json, name)?;
        for a in &accounts.accounts {
            let mut key = KeyConfig::new(a.key(), a.id.clone(), Plan::from(a.plan));
            if a.daily_limit != a.plan.limits().daily_limit {
                key.overrides.daily_limit = Some(a.daily_limit);
            }
            out.keys.push(key);
        }
        out.sources.push(name.to_string());
    }
    Ok(out)
}

/// Parses `key:PLAN,key2:PRO` (`account=key:PLAN` names the account; otherwise the n-th key is account `key-n`; no
/// plan is BASIC). Errors name the entry by position, never by its text (it holds a key).
pub fn parse_short_keys(text: &str) -> Result<Vec<KeyConfig>, String> {
    let mut keys = Vec::new();
    for (i, entry) in text.split(',').map(str::trim).enumerate() {
        let n = i + 1;
        if entry.is_empty() {
            return Err(format!("entry {n} is empty (write key:PLAN,key2:PLAN)"));
        }
        let (account, rest) = match entry.split_once('=') {
            Some((a, r)) => (a.trim().to_string(), r.trim()),
            None => (format!("key-{n}"), entry),
        };
        let (key, plan) = match rest.rsplit_once(':') {
            Some((k, p)) => {
                let plan: chart_img_spec::Plan = p.trim().parse().map_err(|_| {
                    format!(
                        "entry {n}: unknown plan `{}` (expected BASIC, PRO, MEGA, ULTRA or ENTERPRISE)",
                        p.trim()
                    )
                })?;
                (k.trim(), Plan::from(plan))
            }
            None => (rest, Plan::BASIC),
        };
        if key.is_empty() || account.is_empty() {
            return Err(format!("entry {n} has an empty key or account"));
        }
        keys.push(KeyConfig::new(key, account, plan));
    }
    Ok(keys)
}

/// The line logged when no key is configured (no key is ever printed).
pub const NO_KEYS_WARNING: &str = "no API keys: every chart request is answered 403 Forbidden. Add one with \
     MOCK_CHART_IMG_KEYS=my-key:PRO (short form, comma-separated), MOCK_CHART_IMG_ACCOUNTS_JSON or \
     CHART_IMG_ACCOUNTS_JSON (the worker's accounts JSON), `keys:` in the config file, or POST /__admin/keys";

/// `mock-chart-img healthcheck`: `Ok(())` when `/__admin/health` answers `200` with `"status":"ok"`; otherwise the
/// reason.
pub async fn healthcheck(args: &HealthcheckArgs) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    cloud_run_kit::service::healthcheck(args.addr.listen()?, HEALTH_PATH, timeout)
        .await
        .map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn admin_placement_follows_the_rule() {
        let token = AdminToken::new("t");
        let cases = [
            // (listen, --admin-listen, token) -> (on the API port, separate listener)
            ("127.0.0.1:8089", None, false, true, None),
            ("0.0.0.0:8080", None, false, false, Some("127.0.0.1:8081")),
            ("0.0.0.0:8080", Some("127.0.0.1:9"), false, false, Some("127.0.0.1:9")),
            ("0.0.0.0:8080", None, true, true, None),
            ("0.0.0.0:8080", Some("127.0.0.1:9"), true, true, Some("127.0.0.1:9")),
            ("127.0.0.1:8089", Some("127.0.0.1:9"), false, false, Some("127.0.0.1:9")),
        ];
        for (listen, admin, with_token, on_api, separate) in cases {
            let p = AdminPlacement::decide(
                addr(listen),
                admin.map(addr),
                if with_token { token.clone() } else { None },
            );
            assert_eq!(
                (p.on_api_port, p.separate),
                (on_api, separate.map(addr)),
                "{listen} {admin:?} {with_token}"
            );
        }
        assert!(AdminToken::new("  ").is_none(), "an empty token would let anyone in");
        assert_eq!(
            format!("{:?}", AdminToken::new("secret-t")),
            "Some(AdminToken(<redacted>))"
        );
    }

    #[test]
    fn short_keys_parse_and_errors_never_quote_a_key() {
        let keys = parse_short_keys("k1:PRO, acc-x=k2:mega ,k3").unwrap();
        let got: Vec<(&str, &str, &str)> = keys
            .iter()
            .map(|k| (k.key.as_str(), k.account.as_str(), k.plan.label()))
            .collect();
        assert_eq!(
            got,
            [
                ("k1", "key-1", "PRO"),
                ("k2", "acc-x", "MEGA"),
                ("k3", "key-3", "BASIC")
            ]
        );
        for (text, says) in [
            ("k1:PRO,,k3", "entry 2 is empty"),
            ("secret-1:GOLD", "entry 1: unknown plan `GOLD`"),
            ("a=:PRO", "entry 1 has an empty key or account"),
            ("=secret-1", "entry 1 has an empty key or account"),
        ] {
            let e = parse_short_keys(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
            assert!(!e.contains("secret-1"), "{e}");
        }
    }
}
