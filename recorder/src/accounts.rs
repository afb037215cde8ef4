//! The accounts `recorder record` and `recorder verify` spend calls on: keys from the environment or a file (never
//! from a flag, which would land in shell history and process lists), with each account's plan and daily limit.

use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::Error;
use crate::secrets::{Secrets, ACCOUNTS_ENV};
use chart_img_spec::Plan;

/// The environment variable holding one bare key (the account id comes from the cassette or `--account`).
pub const API_KEY_ENV: &str = "CHART_IMG_API_KEY";

/// One account: its id (what placeholders name), its key, and the limits calls on it keep to.
pub struct Account {
    pub id: String,
    key: SecretString,
    pub plan: Plan,
    /// `dailyLimit` of the accounts JSON, else the plan's quota.
    pub daily_limit: u32,
}

impl Account {
    /// The key itself: for sending it, or for a server that must accept it (mock-chart-img's keys from the
    /// environment). Never print it.
    pub fn key(&self) -> &str {
        self.key.expose_secret()
    }
}

/// The accounts given, and where they came from (printed, so a user sees which source was used; never the keys).
pub struct Accounts {
    pub accounts: Vec<Account>,
    /// `CHART_IMG_ACCOUNTS_JSON`, `CHART_IMG_API_KEY` or `key file <path>`.
    pub source: String,
}

/// How to find the keys: a key file first, then `CHART_IMG_ACCOUNTS_JSON`, then `CHART_IMG_API_KEY`.
#[derive(Debug, Clone, Default)]
pub struct KeySource {
    /// A file holding the accounts JSON (`[{"id","apiKey","dailyLimit","plan"}]`) or one bare key.
    pub key_file: Option<PathBuf>,
    /// The account id of a bare key (`CHART_IMG_API_KEY` or a one-key file).
    pub account: String,
    /// The plan of a bare key.
    pub plan: Plan,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    id: String,
    api_key: SecretString,
    #[serde(default)]
    daily_limit: Option<u32>,
    #[serde(default)]
    plan: Option<String>,
}

impl Accounts {
    /// Reads the keys from the first source that is set; [`Error::NoKey`] when none is.
    pub fn load(source: &KeySource) -> Result<Accounts, Error> {
        if let Some(path) = &source.key_file {
            let text = std::fs::read_to_string(path).map_err(|e| Error::KeyFile {
                path: path.clone(),
                message: format!("cannot read it: {e}"),
            })?;
            let text = text.trim();
            let described = format!("key file {}", path.display());
            return if text.starts_with('[') {
                Self::parse_json(text, described).map_err(|m| Error::KeyFile {
                    path: path.clone(),
                    message: format!("malformed accounts JSON: {m}"),
                })
            } else if text.is_empty() || text.lines().count() != 1 {
                Err(Error::KeyFile {
                    path: path.clone(),
                    message: "expected one key on one line, or the accounts JSON [{\"id\",\"apiKey\",…}]".into(),
                })
            } else {
                Ok(Self::single(text, source, described))
            };
        }
        if let Ok(json) = std::env::var(ACCOUNTS_ENV) {
            if !json.trim().is_empty() {
                return Self::from_json(&json, ACCOUNTS_ENV);
            }
        }
        match std::env::var(API_KEY_ENV) {
            Ok(key) if !key.trim().is_empty() => Ok(Self::single(key.trim(), source, API_KEY_ENV.into())),
            _ => Err(Error::NoKey),
        }
    }

    /// Parses the accounts JSON `[{"id","apiKey","dailyLimit","plan"}]` read from `source` (an environment
    /// variable's name, say), which the error names; the error never quotes the input (it holds the keys).
    pub fn from_json(json: &str, source: &str) -> Result<Accounts, Error> {
        Self::parse_json(json, source.into()).map_err(|m| Error::Accounts(format!("{source}: {m}")))
    }

    fn single(key: &str, source: &KeySource, described: String) -> Accounts {
        Accounts {
            accounts: vec![Account {
                id: source.account.clone(),
                key: key.to_owned().into(),
                plan: source.plan,
                daily_limit: source.plan.limits().daily_limit,
            }],
            source: described,
        }
    }

    /// The error never quotes the input (it holds the keys).
    fn parse_json(json: &str, source: String) -> Result<Accounts, String> {
        let entries: Vec<Entry> = serde_json::from_str(json)
            .map_err(|e| format!("{:?} error at line {} column {}", e.classify(), e.line(), e.column()))?;
        if entries.is_empty() {
            return Err("the accounts JSON lists no account".into());
        }
        let mut accounts = Vec::new();
        for (i, e) in entries.into_iter().enumerate() {
            if e.id.trim().is_empty() || e.api_key.expose_secret().trim().is_empty() {
                return Err(format!("account #{i} has an empty id or apiKey"));
            }
            let plan: Plan = match &e.plan {
                Some(p) => p.parse().map_err(|m| format!("account {}: {m}", e.id))?,
                None => Plan::default(),
            };
            accounts.push(Account {
                daily_limit: e.daily_limit.unwrap_or(plan.limits().daily_limit),
                id: e.id,
                key: e.api_key,
                plan,
            });
        }
        Ok(Accounts { accounts, source })
    }

    /// The account with this id.
    pub fn get(&self, id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.id == id)
    }

    /// The key a placeholder stands for: the named account's, and for `<CHART_IMG_API_KEY:unknown>` (a key that was
    /// not configured when it was recorded) the only account's when there is exactly one.
    pub(crate) fn resolve(&self, id: &str) -> Option<&Account> {
        self.get(id).or(match (id, self.accounts.as_slice()) {
            ("unknown", [only]) => Some(only),
            _ => None,
        })
    }

    /// The redaction rules of every recording, with these accounts' keys.
    pub fn secrets(&self) -> Secrets {
        self.accounts
            .iter()
            .fold(Secrets::new(), |s, a| s.with_account(a.id.clone(), a.key.clone()))
    }
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounts")
            .field(
                "accounts",
                &self.accounts.iter().map(|a| (&a.id, a.plan)).collect::<Vec<_>>(),
            )
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("plan", &self.plan)
            .field("daily_limit", &self.daily_limit)
            .finish_non_exhaustive()
    }
}
