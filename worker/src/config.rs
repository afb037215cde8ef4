//! Configuration, read once at start (contract §3). Every malformed value is refused with a message that names the
//! variable and the problem, and never echoes a secret.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;

use crate::domain::{AccountId, AccountQuota};

/// A Chart-IMG plan; its limits (rate, burst, daily quota, max size and parameters) are `chart-img-spec`'s.
pub use chart_img_spec::Plan;

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
        AccountQuota { id: self.id.clone(), daily_limit: self.daily_limit }
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
    ConfigError { setting: setting.into(), problem: problem.into() }
}

/// Parses the accounts JSON field by field, so that no error message (serde's included) can quote a key.
pub fn parse_accounts(source: &str, raw: &str) -> Result<Vec<AccountConfig>, ConfigError> {
    let value: Value = serde_json::from_str(raw).map_err(|e| {
        // serde_json's syntax errors give a position, never a value; keep only that.
        cfg_err(source, format!("is not valid JSON (line {}, column {})", e.line(), e.column()))
    })?;
    let Value::Array(items) = value else { return Err(cfg_err(source, "must be a JSON array of accounts")) };
    if items.is_empty() {
        return Err(cfg_err(source, "lists no account"));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = |f: &str| format!("{source}[{i}].{f}");
        let Value::Object(mut o) = item else { return Err(cfg_err(format!("{source}[{i}]"), "must be an object")) };
        let id = match o.remove("id") {
            Some(Value::String(s)) => AccountId::parse(s).map_err(|e| cfg_err(at("id"), e.to_string()))?,
            Some(_) => return Err(cfg_err(at("id"), "must be a string")),
            None => return Err(cfg_err(at("id"), "is missing")),
        };
        if !seen.insert(id.clone()) {
            return Err(cfg_err(at("id"), format!("{id} is listed twice")));
        }
        let api_key = match o.remove("apiKey") {
            Some(Value::String(s)) if !s.trim().is_empty() => SecretString::from(s),
            Some(Value::String(_)) => return Err(cfg_err(at("apiKey"), "must not be empty")),
            Some(_) => return Err(cfg_err(at("apiKey"), "must be a string")),
            None => return Err(cfg_err(at("apiKey"), "is missing")),
        };
        let plan = match o.remove("plan") {
            None | Some(Value::Null) => Plan::default(),
            Some(Value::String(s)) => s.parse().map_err(|e: chart_img_spec::UnknownPlan| cfg_err(at("plan"), e.to_string()))?,
            Some(_) => return Err(cfg_err(at("plan"), "must be a string")),
        };
        let daily_limit = match o.remove("dailyLimit") {
            None | Some(Value::Null) => plan.limits().daily_limit,
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 && n <= u32::MAX as u64 => n as u32,
                _ => return Err(cfg_err(at("dailyLimit"), "must be a positive integer")),
            },
        };
        out.push(AccountConfig { id, api_key, daily_limit, plan });
    }
    Ok(out)
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
            _ => Err(cfg_err("CHART_IMG_MODE", format!("unknown mode {s:?}; expected real, mock or record"))),
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

/// Retry of transient Chart-IMG answers: exponential backoff with jitter, bounded in attempts and in total delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub max_total_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(4),
            max_total_delay: Duration::from_secs(20),
        }
    }
}

/// Everything the worker reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub project: Option<String>,
    pub firestore_emulator_host: Option<String>,
    pub storage_emulator_host: Option<String>,
    pub bucket: Option<String>,
    pub accounts: Vec<AccountConfig>,
    pub mode: ChartImgMode,
    pub base_url: String,
    pub cassette_dir: Option<PathBuf>,
    pub timezone: String,
    pub port: u16,
    /// Charts of one step rendered at once (`CHART_EXPORT_CONCURRENCY`).
    pub concurrency: usize,
    /// How long a claim holds before another worker may reclaim the step (`CHART_EXPORT_LEASE_SECONDS`).
    pub lease: Duration,
    /// Timeout of one Chart-IMG call (`CHART_IMG_TIMEOUT_SECONDS`); the API's own gateway gives up at about 29 s.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

pub const DEFAULT_BASE_URL: &str = "https://api.chart-img.com";

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
                    _ => Err(cfg_err(k, format!("must be a whole number from {min} to {max}, got {v:?}"))),
                },
            }
        };
        let accounts = match non_empty("CHART_IMG_ACCOUNTS_JSON") {
            Some(raw) => parse_accounts("CHART_IMG_ACCOUNTS_JSON", &raw)?,
            None => Vec::new(),
        };
        let mode = non_empty("CHART_IMG_MODE").map(|m| m.parse()).transpose()?.unwrap_or(ChartImgMode::Real);
        let base_url = non_empty("CHART_IMG_BASE_URL").unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        check_base_url(&base_url)?;
        let timezone = non_empty("CHARTS_DEFAULT_TIMEZONE").unwrap_or_else(|| "Etc/UTC".to_owned());
        if timezone.contains(char::is_whitespace) {
            return Err(cfg_err("CHARTS_DEFAULT_TIMEZONE", format!("is not an IANA zone name: {timezone:?}")));
        }
        Ok(Self {
            project: non_empty("GOOGLE_CLOUD_PROJECT"),
            firestore_emulator_host: non_empty("FIRESTORE_EMULATOR_HOST"),
            storage_emulator_host: non_empty("STORAGE_EMULATOR_HOST"),
            bucket: non_empty("ARTIFACTS_BUCKET"),
            accounts,
            mode,
            base_url: base_url.trim_end_matches('/').to_owned(),
            cassette_dir: non_empty("CHART_IMG_CASSETTE_DIR").map(PathBuf::from),
            timezone,
            port: number("PORT", 8080, 1, 65535)? as u16,
            concurrency: number("CHART_EXPORT_CONCURRENCY", 16, 1, 256)? as usize,
            lease: Duration::from_secs(number("CHART_EXPORT_LEASE_SECONDS", 900, 10, 86_400)?),
            request_timeout: Duration::from_secs(number("CHART_IMG_TIMEOUT_SECONDS", 35, 1, 600)?),
            retry: RetryPolicy::default(),
        })
    }
}

pub fn check_base_url(url: &str) -> Result<(), ConfigError> {
    let ok = reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(cfg_err("CHART_IMG_BASE_URL", format!("must be an http(s) URL, got {url:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const KEY: &str = "sk_live_very_secret_123";

    #[test]
    fn accounts_parse_with_plan_and_limit_defaults() {
        let raw = format!(r#"[{{"id":"acc-1","apiKey":"{KEY}","dailyLimit":5,"plan":"PRO"}},{{"id":"acc-2","apiKey":"k2"}}]"#);
        let a = parse_accounts("CHART_IMG_ACCOUNTS_JSON", &raw).unwrap();
        assert_eq!((a[0].id.as_str(), a[0].daily_limit, a[0].plan), ("acc-1", 5, Plan::Pro));
        assert_eq!((a[1].daily_limit, a[1].plan), (50, Plan::Basic));
        assert_eq!(a[0].api_key.expose_secret(), KEY);
        assert!(!format!("{a:?}").contains(KEY), "Debug must not print the key");
    }

    #[test]
    fn bad_accounts_are_refused_naming_the_field_and_never_the_key() {
        let cases = [
            (r#"{"id":1}"#.to_owned(), "CHART_IMG_ACCOUNTS_JSON: must be a JSON array"),
            ("[]".to_owned(), "lists no account"),
            (format!(r#"[{{"id":"a","apiKey":"{KEY}","plan":"GOLD"}}]"#), "CHART_IMG_ACCOUNTS_JSON[0].plan: unknown plan"),
            (format!(r#"[{{"id":"a","apiKey":"{KEY}","dailyLimit":-3}}]"#), "[0].dailyLimit: must be a positive integer"),
            (format!(r#"[{{"apiKey":"{KEY}"}}]"#), "[0].id: is missing"),
            (r#"[{"id":"a","apiKey":42}]"#.to_owned(), "[0].apiKey: must be a string"),
            (format!(r#"[{{"id":"a","apiKey":"{KEY}"}},{{"id":"a","apiKey":"{KEY}"}}]"#), "[1].id: a is listed twice"),
            (format!(r#"[{{"id":"a","apiKey":"{KEY}""#), "is not valid JSON (line 1"),
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
        assert_eq!((s.mode, s.base_url.as_str(), s.timezone.as_str(), s.port), (ChartImgMode::Real, DEFAULT_BASE_URL, "Etc/UTC", 8080));
        let bad = |k: &'static str, v: &'static str| {
            Settings::from_lookup(move |q| (q == k).then(|| v.to_owned())).unwrap_err().to_string()
        };
        assert_eq!(bad("CHART_IMG_MODE", "fake"), "CHART_IMG_MODE: unknown mode \"fake\"; expected real, mock or record");
        assert!(bad("PORT", "http").starts_with("PORT: must be a whole number"));
        assert!(bad("CHART_IMG_BASE_URL", "ftp://x").starts_with("CHART_IMG_BASE_URL: must be an http(s) URL"));
    }
}
