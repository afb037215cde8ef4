//! Configuration, read once at start (contract §3). Every malformed value is refused with a message that names the
//! variable and the problem, and never echoes a secret.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

use crate::domain::{AccountId, AccountQuota};

/// A Chart-IMG plan; its limits (rate, burst, daily quota, max size and parameters) are `chart-img-spec`'s.
use chart_img_spec::Plan;

/// Default of `CHART_EXPORT_CONCURRENCY`, the memory-safe maximum of charts of one step in flight.
pub const DEFAULT_CONCURRENCY: usize = 128;

/// Default of `CHART_EXPORT_MAX_REQUESTS`, the most charts one step may ask for.
pub const DEFAULT_MAX_REQUESTS: usize = 1000;

/// One entry of `CHART_IMG_ACCOUNTS_JSON`. The key is a `SecretString`: its `Debug` prints `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    pub id: AccountId,
    pub api_key: SecretString,
    pub daily_limit: u32,
    pub plan: Plan,
}

impl AccountConfig {
    pub fn quota(&self) -> AccountQuota {
        AccountQuota {
            id: self.id.clone(),
            daily_limit: self.daily_limit,
        }
    }
}

/// A configuration problem: which setting, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: String,
    pub problem: String,
}

fn cfg_err(setting: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.into(),
        problem: problem.into(),
    }
}

/// Parses the accounts JSON with the one parser of it (`recorder::parse_accounts_json`: its errors name the entry and
/// field and never quote a key), then holds each id to the worker's own rule ([`AccountId::parse`]: it is a Firestore
/// document id).
pub fn parse_accounts(source: &str, raw: &str) -> Result<Vec<AccountConfig>, ConfigError> {
    let accounts = recorder::parse_accounts_json(source, raw).map_err(|e| cfg_err(e.setting, e.problem))?;
    accounts
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            Ok(AccountConfig {
                id: AccountId::parse(a.id.as_str()).map_err(|e| cfg_err(format!("{source}[{i}].id"), e.to_string()))?,
                api_key: a.secret_key().clone(),
                daily_limit: a.daily_limit,
                plan: a.plan,
            })
        })
        .collect()
}

/// `CHART_IMG_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartImgMode {
    Real,
    Mock,
    Record,
}

impl FromStr for ChartImgMode {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "real" => Ok(Self::Real),
            "mock" => Ok(Self::Mock),
            "record" => Ok(Self::Record),
            _ => Err(cfg_err(
                "CHART_IMG_MODE",
                format!("unknown mode {s:?}; expected real, mock or record"),
            )),
        }
    }
}

impl fmt::Display for ChartImgMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Real => "real",
            Self::Mock => "mock",
            Self::Record => "record",
        })
    }
}

use crate::retry::RetryPolicy;

/// The Firestore database a project has unless told otherwise.
pub const DEFAULT_FIRESTORE_DATABASE: &str = firestore::FIREBASE_DEFAULT_DATABASE_ID;

/// Firestore's rule for database ids: `(default)`, or 4–63 characters of lowercase letters, digits and `-`, starting
/// with a letter and not ending with `-`.
pub fn check_database_id(id: &str) -> Result<(), String> {
    if id == DEFAULT_FIRESTORE_DATABASE {
        return Ok(());
    }
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let starts = id.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if !(4..=63).contains(&id.len()) || !ok_chars || !starts || id.ends_with('-') {
        return Err(format!(
            "{id:?} is not a Firestore database id: `{DEFAULT_FIRESTORE_DATABASE}` or 4-63 lowercase letters, digits and `-`, starting with a letter, not ending with `-`"
        ));
    }
    Ok(())
}

/// Everything the worker reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub project: Option<String>,
    /// The Firestore database id (`FIRESTORE_DATABASE`, default `(default)`); events for another database are
    /// answered 2xx and never run.
    pub firestore_database: String,
    pub firestore_emulator_host: Option<String>,
    pub storage_emulator_host: Option<String>,
    pub bucket: Option<String>,
    pub accounts: Vec<AccountConfig>,
    pub mode: ChartImgMode,
    pub base_url: String,
    pub cassette_dir: Option<PathBuf>,
    pub timezone: String,
    pub port: u16,
    /// Address `serve` listens on (`HOST`, default `0.0.0.0` as Cloud Run needs; tests use `127.0.0.1`).
    pub host: std::net::IpAddr,
    /// The memory-safe maximum of charts of one step in flight (`CHART_EXPORT_CONCURRENCY`, default 128, 1–1024):
    /// each holds one image (a few MiB at most at the largest plan size), so 128 stay well within a 512 MiB instance.
    /// The number in flight is computed from the plans and the latency seen (`quota::in_flight_for`), at most this.
    pub concurrency: usize,
    /// The most charts one step may ask for (`CHART_EXPORT_MAX_REQUESTS`, default 1000, 1–100000): a step with more
    /// requests fails `VALIDATION_FAILED` before anything is read or paid for.
    pub max_requests: usize,
    /// How long a claim holds before another worker may reclaim the step (`CHART_EXPORT_LEASE_SECONDS`, default
    /// 60 s); renewed while the step runs, so it bounds how long a crashed holder blocks its step.
    pub lease: Duration,
    /// The step's lifecycle timings (`CHART_EXPORT_HEARTBEAT_SECONDS`, `CHART_EXPORT_STEP_DEADLINE_SECONDS`,
    /// `CHART_EXPORT_MAX_ATTEMPTS`, `CHART_EXPORT_RELEASE_BACKOFF_SECONDS`, `CHART_EXPORT_SHUTDOWN_GRACE_SECONDS`).
    pub lifecycle: Lifecycle,
    /// The cassette's mode (`CHART_IMG_VCR_MODE`): `None` is the mode's own (`mock` replays only, `record` records
    /// new episodes).
    pub vcr_mode: Option<recorder::Mode>,
    /// Whether a replayed cassette may keep interactions a step did not use (`CHART_IMG_ALLOW_UNUSED`, default
    /// true); `false` reports them at the step's end and fails `run-local`.
    pub allow_unused: bool,
    /// Timeout of one Chart-IMG call (`CHART_IMG_TIMEOUT_SECONDS`); the API's own gateway gives up at about 29 s.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// Total time budget of one Firestore or Cloud Storage operation's retries (`CHART_EXPORT_STORE_RETRY_SECONDS`,
    /// default 30 s: an outage of a few seconds is waited out).
    pub store_retry_total: Duration,
}

pub const DEFAULT_BASE_URL: &str = "https://api.chart-img.com";

/// How a step lives: its lease renewal, its deadline, how often it may be retried and how a shutdown ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    /// Renewal interval of the lease while the step runs (default a third of the lease).
    pub heartbeat: Duration,
    /// Past this time after the claim no new Chart-IMG call starts and the step ends (default 540 s: the push
    /// subscription's ack deadline is at most 600 s, and calls already in flight finish within their own timeout).
    pub step_deadline: Duration,
    /// Claims a step may have (default 5); then it is FAILED with the last error's code.
    pub max_attempts: u32,
    /// Not-before delay of a release after attempt 1, doubling per attempt up to 10× (default 10 s, Eventarc's first
    /// backoff step).
    pub release_backoff: Duration,
    /// How long SIGTERM waits for in-flight steps to finish or be released (default 8 s; Cloud Run kills 10 s after
    /// SIGTERM).
    pub shutdown_grace: Duration,
}

impl Lifecycle {
    /// The defaults for a lease of `lease`.
    pub fn for_lease(lease: Duration) -> Self {
        Self {
            heartbeat: lease / 3,
            step_deadline: Duration::from_secs(540),
            max_attempts: 5,
            release_backoff: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(8),
        }
    }

    /// The not-before delay of the release that ends attempt `attempt` (1-based).
    pub fn release_delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(10)).min(10);
        self.release_backoff * factor
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::for_lease(Duration::from_secs(60))
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `get`, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let non_empty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let number = |k: &str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
            match non_empty(k) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(n),
                    _ => Err(cfg_err(
                        k,
                        format!("must be a whole number from {min} to {max}, got {v:?}"),
                    )),
                },
            }
        };
        // Durations in seconds, fractions allowed (scenarios run with leases of a second or two).
        let seconds = |k: &str, default: Duration, min: f64, max: f64| -> Result<Duration, ConfigError> {
            match non_empty(k) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<f64>() {
                    Ok(n) if n.is_finite() && (min..=max).contains(&n) => Ok(Duration::from_secs_f64(n)),
                    _ => Err(cfg_err(
                        k,
                        format!("must be a number of seconds from {min} to {max}, got {v:?}"),
                    )),
                },
            }
        };
        let lease = seconds("CHART_EXPORT_LEASE_SECONDS", Duration::from_secs(60), 0.5, 86_400.0)?;
        let defaults = Lifecycle::for_lease(lease);
        let lifecycle = Lifecycle {
            heartbeat: seconds("CHART_EXPORT_HEARTBEAT_SECONDS", defaults.heartbeat, 0.1, 86_400.0)?,
            step_deadline: seconds(
                "CHART_EXPORT_STEP_DEADLINE_SECONDS",
                defaults.step_deadline,
                0.5,
                3_600.0,
            )?,
            max_attempts: number("CHART_EXPORT_MAX_ATTEMPTS", defaults.max_attempts as u64, 1, 100)? as u32,
            release_backoff: seconds(
                "CHART_EXPORT_RELEASE_BACKOFF_SECONDS",
                defaults.release_backoff,
                0.0,
                3_600.0,
            )?,
            shutdown_grace: seconds("CHART_EXPORT_SHUTDOWN_GRACE_SECONDS", defaults.shutdown_grace, 0.0, 9.5)?,
        };
        if lifecycle.heartbeat >= lease {
            return Err(cfg_err(
                "CHART_EXPORT_HEARTBEAT_SECONDS",
                format!("must be shorter than the lease ({} s)", lease.as_secs_f64()),
            ));
        }
        let accounts = match non_empty("CHART_IMG_ACCOUNTS_JSON") {
            Some(raw) => parse_accounts("CHART_IMG_ACCOUNTS_JSON", &raw)?,
            None => Vec::new(),
        };
        let mode = non_empty("CHART_IMG_MODE")
            .map(|m| m.parse())
            .transpose()?
            .unwrap_or(ChartImgMode::Real);
        let vcr_mode = non_empty("CHART_IMG_VCR_MODE")
            .map(|v| v.trim().parse::<recorder::Mode>())
            .transpose()
            .map_err(|e| cfg_err("CHART_IMG_VCR_MODE", e.to_string()))?;
        let allow_unused = match non_empty("CHART_IMG_ALLOW_UNUSED") {
            None => true,
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(cfg_err(
                        "CHART_IMG_ALLOW_UNUSED",
                        format!("must be true or false, got {v:?}"),
                    ))
                }
            },
        };
        let base_url = non_empty("CHART_IMG_BASE_URL").unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        check_base_url(&base_url)?;
        let timezone = non_empty("CHARTS_DEFAULT_TIMEZONE").unwrap_or_else(|| "Etc/UTC".to_owned());
        if timezone.contains(char::is_whitespace) {
            return Err(cfg_err(
                "CHARTS_DEFAULT_TIMEZONE",
                format!("is not an IANA zone name: {timezone:?}"),
            ));
        }
        let firestore_database =
            non_empty("FIRESTORE_DATABASE").unwrap_or_else(|| DEFAULT_FIRESTORE_DATABASE.to_owned());
        check_database_id(&firestore_database).map_err(|why| cfg_err("FIRESTORE_DATABASE", why))?;
        Ok(Self {
            project: non_empty("GOOGLE_CLOUD_PROJECT"),
            firestore_database,
            firestore_emulator_host: non_empty("FIRESTORE_EMULATOR_HOST"),
            storage_emulator_host: non_empty("STORAGE_EMULATOR_HOST"),
            bucket: non_empty("ARTIFACTS_BUCKET"),
            accounts,
            mode,
            base_url: base_url.trim_end_matches('/').to_owned(),
            cassette_dir: non_empty("CHART_IMG_CASSETTE_DIR").map(PathBuf::from),
            vcr_mode,
            allow_unused,
            timezone,
            port: number("PORT", 8080, 1, 65535)? as u16,
            host: match non_empty("HOST") {
                None => std::net::IpAddr::from([0, 0, 0, 0]),
                Some(h) => h
                    .trim()
                    .parse()
                    .map_err(|_| cfg_err("HOST", format!("is not an IP address: {h:?}")))?,
            },
            concurrency: number("CHART_EXPORT_CONCURRENCY", DEFAULT_CONCURRENCY as u64, 1, 1024)? as usize,
            max_requests: number("CHART_EXPORT_MAX_REQUESTS", DEFAULT_MAX_REQUESTS as u64, 1, 100_000)? as usize,
            lease,
            lifecycle,
            request_timeout: Duration::from_secs(number("CHART_IMG_TIMEOUT_SECONDS", 35, 1, 600)?),
            retry: RetryPolicy::default(),
            store_retry_total: seconds(
                "CHART_EXPORT_STORE_RETRY_SECONDS",
                RetryPolicy::FIRESTORE.max_total_delay,
                0.0,
                300.0,
            )?,
        })
    }
}

pub fn check_base_url(url: &str) -> Result<(), ConfigError> {
    let ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(cfg_err(
            "CHART_IMG_BASE_URL",
            format!("must be an http(s) URL, got {url:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const KEY: &str = "sk_live_very_secret_123";

    #[test]
    fn database_ids_follow_firestores_rule() {
        for ok in ["(default)", "charts", "charts-db-2", "abcd"] {
            assert_eq!(check_database_id(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "abc",
            "Charts",
            "1charts",
            "charts-",
            "charts_db",
            "(other)",
            &"a".repeat(64),
        ] {
            let e = check_database_id(bad).unwrap_err();
            assert!(e.contains("is not a Firestore database id"), "{bad}: {e}");
        }
    }

    #[test]
    fn accounts_parse_with_plan_and_limit_defaults() {
        let raw = format!(
            r#"[{{"id":"acc-1","apiKey":"{KEY}","dailyLimit":5,"plan":"PRO"}},{{"id":"acc-2","apiKey":"k2"}}]"#
        );
        let a = parse_accounts("CHART_IMG_ACCOUNTS_JSON", &raw).unwrap();
        assert_eq!((a[0].id.as_str(), a[0].daily_limit, a[0].plan), ("acc-1", 5, Plan::Pro));
        assert_eq!((a[1].daily_limit, a[1].plan), (50, Plan::Basic));
        assert_eq!(a[0].api_key.expose_secret(), KEY);
        assert!(!format!("{a:?}").contains(KEY), "Debug must not print the key");
    }

    #[test]
    fn bad_accounts_are_refused_naming_the_field_and_never_the_key() {
        let cases = [
            (
                r#"{"id":1}"#.to_owned(),
                "CHART_IMG_ACCOUNTS_JSON: must be a JSON array",
            ),
            ("[]".to_owned(), "lists no account"),
            (
                format!(r#"[{{"id":"a","apiKey":"{KEY}","plan":"GOLD"}}]"#),
                "CHART_IMG_ACCOUNTS_JSON[0].plan: unknown plan",
            ),
            (
                format!(r#"[{{"id":"a","apiKey":"{KEY}","dailyLimit":-3}}]"#),
                "[0].dailyLimit: must be a positive integer",
            ),
            (format!(r#"[{{"apiKey":"{KEY}"}}]"#), "[0].id: is missing"),
            (r#"[{"id":"a","apiKey":42}]"#.to_owned(), "[0].apiKey: must be a string"),
            (
                format!(r#"[{{"id":"a","apiKey":"{KEY}"}},{{"id":"a","apiKey":"{KEY}"}}]"#),
                "[1].id: a is listed twice",
            ),
            (format!(r#"[{{"id":"a","apiKey":"{KEY}""#), "is not valid JSON (line 1"),
            // The worker's own id rule (a Firestore document id), on top of the shared parser's.
            (
                format!(r#"[{{"id":"ok","apiKey":"{KEY}"}},{{"id":"a/b","apiKey":"{KEY}"}}]"#),
                "CHART_IMG_ACCOUNTS_JSON[1].id: account id must not contain '/'",
            ),
        ];
        for (raw, want) in cases {
            let err = parse_accounts("CHART_IMG_ACCOUNTS_JSON", &raw).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should contain {want}");
            assert!(!err.contains(KEY) && !err.contains("42"), "{err} leaks the key");
        }
    }

    #[test]
    fn settings_defaults_and_errors() {
        let s = Settings::from_lookup(|_| None).unwrap();
        assert_eq!(
            (s.mode, s.base_url.as_str(), s.timezone.as_str(), s.port),
            (ChartImgMode::Real, DEFAULT_BASE_URL, "Etc/UTC", 8080)
        );
        let bad = |k: &'static str, v: &'static str| {
            Settings::from_lookup(move |q| (q == k).then(|| v.to_owned()))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad("CHART_IMG_MODE", "fake"),
            "CHART_IMG_MODE: unknown mode \"fake\"; expected real, mock or record"
        );
        assert!(bad("PORT", "http").starts_with("PORT: must be a whole number"));
        assert!(bad("CHART_IMG_BASE_URL", "ftp://x").starts_with("CHART_IMG_BASE_URL: must be an http(s) URL"));
        assert!(bad("CHART_EXPORT_LEASE_SECONDS", "soon")
            .starts_with("CHART_EXPORT_LEASE_SECONDS: must be a number of seconds"));
        assert!(bad("CHART_EXPORT_SHUTDOWN_GRACE_SECONDS", "12").contains("from 0 to 9.5"));
        assert!(bad("CHART_EXPORT_HEARTBEAT_SECONDS", "90").contains("shorter than the lease"));
        assert_eq!(
            bad("CHART_IMG_ALLOW_UNUSED", "maybe"),
            "CHART_IMG_ALLOW_UNUSED: must be true or false, got \"maybe\""
        );
        assert!(bad("CHART_IMG_VCR_MODE", "sometimes").starts_with("CHART_IMG_VCR_MODE: "));
        for v in ["0", "many", "100001"] {
            assert_eq!(
                bad("CHART_EXPORT_MAX_REQUESTS", v),
                format!("CHART_EXPORT_MAX_REQUESTS: must be a whole number from 1 to 100000, got \"{v}\"")
            );
        }
    }

    #[test]
    fn lifecycle_defaults_fit_cloud_run_and_pubsub() {
        let s = Settings::from_lookup(|_| None).unwrap();
        assert_eq!(s.lease, Duration::from_secs(60));
        assert_eq!(s.lifecycle.heartbeat, Duration::from_secs(20));
        assert!(
            s.lifecycle.step_deadline < Duration::from_secs(600),
            "below the maximum ack deadline"
        );
        assert!(
            s.lifecycle.shutdown_grace < Duration::from_secs(10),
            "below Cloud Run's SIGKILL"
        );
        assert_eq!(s.lifecycle.max_attempts, 5);
        let l = s.lifecycle;
        let delays: Vec<u64> = (1..=6).map(|a| l.release_delay(a).as_secs()).collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 100, 100]);
        let fast = Settings::from_lookup(|k| (k == "CHART_EXPORT_LEASE_SECONDS").then(|| "1.5".to_owned())).unwrap();
        assert_eq!(
            (fast.lease, fast.lifecycle.heartbeat),
            (Duration::from_millis(1500), Duration::from_millis(500))
        );
    }
}
