//! The accounts `recorder record` and `recorder verify` spend calls on: keys from the environment or a file (never
//! from a flag, which would land in shell history and process lists), with each account's plan and daily limit.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::error::{AccountsError, Error};
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

    /// The key as a secret, for holders that keep it wrapped (the worker's account pool).
    pub fn secret_key(&self) -> &SecretString {
        &self.key
    }
}

fn refuse(setting: impl Into<String>, problem: impl Into<String>) -> AccountsError {
    AccountsError {
        setting: setting.into(),
        problem: problem.into(),
    }
}

/// The one parser of the accounts JSON `[{"id","apiKey","dailyLimit","plan"}]` (contract §3,
/// `CHART_IMG_ACCOUNTS_JSON`), used by the worker, the recorder and mock-chart-img. `source` (a variable's or file's
/// name) prefixes every error, which names the entry and field (`CHART_IMG_ACCOUNTS_JSON[0].apiKey: is missing`).
///
/// Read field by field, so that no error message (serde's included) can quote a key. Refused: anything but a
/// non-empty array of objects; an id that is missing, not a string, blank or listed twice; an apiKey that is
/// missing, not a string or blank; an unknown plan; a `dailyLimit` that is not a positive 32-bit integer. A missing
/// plan is [`Plan::default`], a missing `dailyLimit` the plan's daily quota; other fields are ignored.
pub fn parse_accounts_json(source: &str, raw: &str) -> Result<Vec<Account>, AccountsError> {
    let value: Value = serde_json::from_str(raw).map_err(|e| {
        // serde_json's syntax errors give a position, never a value; keep only that.
        refuse(
            source,
            format!("is not valid JSON (line {}, column {})", e.line(), e.column()),
        )
    })?;
    let Value::Array(items) = value else {
        return Err(refuse(source, "must be a JSON array of accounts"));
    };
    if items.is_empty() {
        return Err(refuse(source, "lists no account"));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = |f: &str| format!("{source}[{i}].{f}");
        let Value::Object(mut o) = item else {
            return Err(refuse(format!("{source}[{i}]"), "must be an object"));
        };
        let id = match o.remove("id") {
            Some(Value::String(s)) if s.trim().is_empty() => return Err(refuse(at("id"), "must not be empty")),
            Some(Value::String(s)) if s.chars().any(char::is_control) => {
                return Err(refuse(at("id"), "must not contain control characters"))
            }
            Some(Value::String(s)) => s,
            Some(_) => return Err(refuse(at("id"), "must be a string")),
            None => return Err(refuse(at("id"), "is missing")),
        };
        if !seen.insert(id.clone()) {
            return Err(refuse(at("id"), format!("{id} is listed twice")));
        }
        let key = match o.remove("apiKey") {
            Some(Value::String(s)) if !s.trim().is_empty() => SecretString::from(s),
            Some(Value::String(_)) => return Err(refuse(at("apiKey"), "must not be empty")),
            Some(_) => return Err(refuse(at("apiKey"), "must be a string")),
            None => return Err(refuse(at("apiKey"), "is missing")),
        };
        let plan = match o.remove("plan") {
            None | Some(Value::Null) => Plan::default(),
            Some(Value::String(s)) => s
                .parse()
                .map_err(|e: chart_img_spec::UnknownPlan| refuse(at("plan"), e.to_string()))?,
            Some(_) => return Err(refuse(at("plan"), "must be a string")),
        };
        let daily_limit = match o.remove("dailyLimit") {
            None | Some(Value::Null) => plan.limits().daily_limit,
            Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n >= 1 => n,
                _ => return Err(refuse(at("dailyLimit"), "must be a positive integer")),
            },
        };
        out.push(Account {
            id,
            key,
            plan,
            daily_limit,
        });
    }
    Ok(out)
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
                match parse_accounts_json("accounts JSON", text) {
                    Ok(accounts) => Ok(Accounts {
                        accounts,
                        source: described,
                    }),
                    Err(e) => Err(Error::KeyFile {
                        path: path.clone(),
                        message: e.to_string(),
                    }),
                }
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
        Ok(Accounts {
            accounts: parse_accounts_json(source, json)?,
            source: source.into(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk_live_very_secret_123";

    #[test]
    fn entries_get_the_plan_and_its_quota_unless_given() {
        let raw = format!(
            r#"[{{"id":"acc-1","apiKey":"{KEY}","dailyLimit":5,"plan":"PRO","note":"ignored"}},{{"id":"acc-2","apiKey":"k2","plan":null}}]"#
        );
        let a = parse_accounts_json("CHART_IMG_ACCOUNTS_JSON", &raw).unwrap();
        assert_eq!((a[0].id.as_str(), a[0].daily_limit, a[0].plan), ("acc-1", 5, Plan::Pro));
        assert_eq!(
            (a[1].id.as_str(), a[1].daily_limit, a[1].plan),
            ("acc-2", Plan::default().limits().daily_limit, Plan::default())
        );
        assert_eq!(a[0].key(), KEY);
        assert!(!format!("{a:?}").contains(KEY), "Debug must not print the key");
    }

    #[test]
    fn refusals_name_the_entry_and_field_and_never_the_key() {
        let cases = [
            (
                format!(r#"{{"id":"a","apiKey":"{KEY}"}}"#),
                "SRC: must be a JSON array of accounts",
            ),
            ("[]".to_owned(), "SRC: lists no account"),
            (format!(r#"["{KEY}"]"#), "SRC[0]: must be an object"),
            (format!(r#"[{{"apiKey":"{KEY}"}}]"#), "SRC[0].id: is missing"),
            (
                format!(r#"[{{"id":7,"apiKey":"{KEY}"}}]"#),
                "SRC[0].id: must be a string",
            ),
            (
                format!(r#"[{{"id":" ","apiKey":"{KEY}"}}]"#),
                "SRC[0].id: must not be empty",
            ),
            (
                format!(r#"[{{"id":"a\nb","apiKey":"{KEY}"}}]"#),
                "SRC[0].id: must not contain control characters",
            ),
            (
                format!(r#"[{{"id":"a","apiKey":"{KEY}"}},{{"id":"a","apiKey":"{KEY}2"}}]"#),
                "SRC[1].id: a is listed twice",
            ),
            (r#"[{"id":"a"}]"#.to_owned(), "SRC[0].apiKey: is missing"),
            (
                format!(r#"[{{"id":"a","apiKey":["{KEY}"]}}]"#),
                "SRC[0].apiKey: must be a string",
            ),
            (
                r#"[{"id":"a","apiKey":"  "}]"#.to_owned(),
                "SRC[0].apiKey: must not be empty",
            ),
            (
                format!(r#"[{{"id":"a","apiKey":"{KEY}","plan":"GOLD"}}]"#),
                "SRC[0].plan: unknown plan",
            ),
            (
                format!(r#"[{{"id":"a","apiKey":"{KEY}","plan":3}}]"#),
                "SRC[0].plan: must be a string",
            ),
            (
                format!(r#"[{{"id":"a","apiKey":"{KEY}","dailyLimit":0}}]"#),
                "SRC[0].dailyLimit: must be a positive integer",
            ),
            (
                format!(r#"[{{"id":"a","apiKey":"{KEY}","dailyLimit":4294967296}}]"#),
                "SRC[0].dailyLimit: must be a positive integer",
            ),
            (
                format!(r#"[{{"id":"a","apiKey":"{KEY}","dailyLimit":"5"}}]"#),
                "SRC[0].dailyLimit: must be a positive integer",
            ),
            (
                format!(r#"[{{"id":"a","apiKey":"{KEY}""#),
                "SRC: is not valid JSON (line 1, column ",
            ),
        ];
        for (raw, want) in cases {
            let err = parse_accounts_json("SRC", &raw).unwrap_err().to_string();
            assert!(err.starts_with(want), "{raw}: {err:?} should start with {want:?}");
            assert!(!err.contains(KEY), "{err} quotes the key");
        }
    }

    #[test]
    fn accounts_and_secrets_read_through_the_one_parser() {
        let err = Accounts::from_json(r#"[{"id":"a"}]"#, ACCOUNTS_ENV).unwrap_err();
        assert_eq!(err.to_string(), "CHART_IMG_ACCOUNTS_JSON[0].apiKey: is missing");
        let err = Secrets::from_accounts_json(r#"[{"id":"a","apiKey":"k","dailyLimit":-1}]"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CHART_IMG_ACCOUNTS_JSON[0].dailyLimit: must be a positive integer"
        );
        let secrets = Secrets::from_accounts_json(&format!(r#"[{{"id":"acc-1","apiKey":"{KEY}"}}]"#)).unwrap();
        assert_eq!(secrets.placeholder_for(KEY), "<CHART_IMG_API_KEY:acc-1>");
    }
}
