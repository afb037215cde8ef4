//! Which values are secret and how they are replaced by placeholders naming the account.

use std::borrow::Cow;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::error::Error;

/// The environment variable holding `[{"id":"acc-1","apiKey":"…","dailyLimit":50}, …]`.
pub const ACCOUNTS_ENV: &str = "CHART_IMG_ACCOUNTS_JSON";

const PLACEHOLDER_PREFIX: &str = "<CHART_IMG_API_KEY:";

/// The API keys of the Chart-IMG accounts (by account id) and where secrets hide in a request.
///
/// On write, the value of `x-api-key` (and of every configured header, query parameter or JSON field) becomes
/// `<CHART_IMG_API_KEY:acc-1>` when it is a known key, `<CHART_IMG_API_KEY:unknown>` otherwise; any known key
/// found anywhere else in text is replaced the same way.
///
/// ```
/// use recorder::Secrets;
/// let secrets = Secrets::from_accounts_json(r#"[{"id":"acc-1","apiKey":"k-123456789","dailyLimit":50}]"#).unwrap();
/// assert_eq!(secrets.placeholder_for("k-123456789"), "<CHART_IMG_API_KEY:acc-1>");
/// assert_eq!(secrets.placeholder_for("other"), "<CHART_IMG_API_KEY:unknown>");
/// assert_eq!(secrets.redact("url?key=k-123456789"), "url?key=<CHART_IMG_API_KEY:acc-1>");
/// assert!(!format!("{secrets:?}").contains("k-123456789"));
/// ```
#[derive(Clone)]
pub struct Secrets {
    /// Sorted longest key first, so that a key which is a prefix of another never leaves a tail behind.
    accounts: Vec<(String, SecretString)>,
    headers: Vec<String>,
    query_params: Vec<String>,
    json_fields: Vec<String>,
}

impl Default for Secrets {
    fn default() -> Self {
        Secrets::new()
    }
}

impl Secrets {
    /// No known keys; redacts the `x-api-key`, `authorization` and `proxy-authorization` headers, the query
    /// parameters `apiKey`, `api_key`, `key`, and JSON fields named `apiKey`.
    pub fn new() -> Self {
        Secrets {
            accounts: Vec::new(),
            headers: crate::model::ALWAYS_SECRET_HEADERS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            query_params: vec!["apiKey".into(), "api_key".into(), "key".into()],
            json_fields: vec!["apiKey".into()],
        }
    }

    /// Adds an account's key. Empty keys are ignored (they would match everywhere).
    pub fn with_account(mut self, id: impl Into<String>, key: SecretString) -> Self {
        if !key.expose_secret().is_empty() {
            self.accounts.push((id.into(), key));
            self.accounts.sort_by(|a, b| {
                b.1.expose_secret()
                    .len()
                    .cmp(&a.1.expose_secret().len())
                    .then_with(|| a.0.cmp(&b.0))
            });
        }
        self
    }

    /// The keys of the accounts JSON of the worker (`[{"id", "apiKey", …}]`), read by
    /// [`crate::parse_accounts_json`] (its errors name [`ACCOUNTS_ENV`] and never quote the input).
    pub fn from_accounts_json(json: &str) -> Result<Self, Error> {
        Ok(crate::Accounts::from_json(json, ACCOUNTS_ENV)?.secrets())
    }

    /// Reads [`ACCOUNTS_ENV`]; an unset or empty variable gives no known keys.
    pub fn from_env() -> Result<Self, Error> {
        match std::env::var(ACCOUNTS_ENV) {
            Ok(v) if !v.trim().is_empty() => Secrets::from_accounts_json(&v),
            _ => Ok(Secrets::new()),
        }
    }

    /// Also treats this header (case-insensitive) as secret.
    pub fn redact_header(mut self, name: impl Into<String>) -> Self {
        self.headers.push(name.into().to_ascii_lowercase());
        self
    }

    /// Also treats this query parameter as secret.
    pub fn redact_query_param(mut self, name: impl Into<String>) -> Self {
        self.query_params.push(name.into());
        self
    }

    /// Also treats JSON fields with this name (at any depth) as secret.
    pub fn redact_json_field(mut self, name: impl Into<String>) -> Self {
        self.json_fields.push(name.into());
        self
    }

    /// The ids of the known accounts.
    pub fn account_ids(&self) -> impl Iterator<Item = &str> {
        self.accounts.iter().map(|(id, _)| id.as_str())
    }

    /// The placeholder that replaces a secret value: it names the account whose key it is.
    pub fn placeholder_for(&self, value: &str) -> String {
        if is_placeholder(value) {
            return value.to_owned();
        }
        let id = self.account_of(value).unwrap_or("unknown");
        format!("{PLACEHOLDER_PREFIX}{id}>")
    }

    /// What a value in a secret slot (header, query parameter, JSON field) is stored as: the account's
    /// placeholder for an exact key, the value with the key replaced when it embeds one (`Bearer <…:acc-1>`),
    /// else `<CHART_IMG_API_KEY:unknown>` (an unknown value in a secret slot is still a secret).
    pub(crate) fn redact_secret_value(&self, value: &str) -> String {
        if is_placeholder(value) || self.account_of(value).is_some() {
            return self.placeholder_for(value);
        }
        match self.redact(value) {
            Cow::Owned(r) => r,
            Cow::Borrowed(_) => format!("{PLACEHOLDER_PREFIX}unknown>"),
        }
    }

    /// Replaces every known key inside `text` by its placeholder.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for (id, key) in &self.accounts {
            let key = key.expose_secret();
            if out.contains(key) {
                out = Cow::Owned(out.replace(key, &format!("{PLACEHOLDER_PREFIX}{id}>")));
            }
        }
        out
    }

    /// The account whose key appears in these bytes, if any (used to refuse writing binary bodies holding a key).
    pub fn find_in_bytes(&self, haystack: &[u8]) -> Option<&str> {
        self.accounts
            .iter()
            .find(|(_, key)| memchr::memmem::find(haystack, key.expose_secret().as_bytes()).is_some())
            .map(|(id, _)| id.as_str())
    }

    pub(crate) fn account_of(&self, value: &str) -> Option<&str> {
        self.accounts
            .iter()
            .find(|(_, k)| k.expose_secret() == value)
            .map(|(id, _)| id.as_str())
    }

    pub(crate) fn is_secret_header(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    pub(crate) fn is_secret_query_param(&self, name: &str) -> bool {
        self.query_params.iter().any(|q| q.eq_ignore_ascii_case(name))
    }

    pub(crate) fn is_secret_json_field(&self, name: &str) -> bool {
        self.json_fields.iter().any(|f| f == name)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.accounts.iter().map(|(id, k)| (id.as_str(), k.expose_secret()))
    }

    /// Redacts a JSON value in place: configured fields become placeholders, known keys inside strings too.
    pub(crate) fn redact_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                if let Cow::Owned(r) = self.redact(s) {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if self.is_secret_json_field(k) {
                        let placeholder = match v {
                            Value::String(s) => self.redact_secret_value(s),
                            _ => format!("{PLACEHOLDER_PREFIX}unknown>"),
                        };
                        *v = Value::String(placeholder);
                    } else {
                        self.redact_json(v);
                    }
                }
                // Keys may hold a secret too (rare, but nothing secret may reach disk).
                if map.keys().any(|k| matches!(self.redact(k), Cow::Owned(_))) {
                    let old = std::mem::take(map);
                    *map = old
                        .into_iter()
                        .map(|(k, v)| (self.redact(&k).into_owned(), v))
                        .collect();
                }
            }
            _ => {}
        }
    }
}

/// Replaces every placeholder `<CHART_IMG_API_KEY:id>` in `text` by `key_for(id)` (the reverse of redaction, for
/// sending recorded requests again). `Err(id)` names the first account `key_for` has no key for.
pub(crate) fn fill_placeholders<'k>(text: &str, key_for: &dyn Fn(&str) -> Option<&'k str>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(PLACEHOLDER_PREFIX) {
        let after = &rest[start + PLACEHOLDER_PREFIX.len()..];
        let Some(end) = after.find('>') else { break };
        let id = &after[..end];
        out.push_str(&rest[..start]);
        out.push_str(key_for(id).ok_or_else(|| id.to_owned())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The account ids of the placeholders in `text`, in order of appearance.
pub(crate) fn placeholder_ids(text: &str) -> Vec<&str> {
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(PLACEHOLDER_PREFIX) {
        let after = &rest[start + PLACEHOLDER_PREFIX.len()..];
        let Some(end) = after.find('>') else { break };
        ids.push(&after[..end]);
        rest = &after[end + 1..];
    }
    ids
}

/// Whether a value is already a placeholder written by this crate.
pub(crate) fn is_placeholder(value: &str) -> bool {
    value.starts_with(PLACEHOLDER_PREFIX) && value.ends_with('>')
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("accounts", &self.account_ids().collect::<Vec<_>>())
            .field("headers", &self.headers)
            .field("query_params", &self.query_params)
            .field("json_fields", &self.json_fields)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_back_per_account() {
        let keys = |id: &str| match id {
            "acc-1" => Some("K1"),
            "acc-2" => Some("K2"),
            _ => None,
        };
        let text = "a <CHART_IMG_API_KEY:acc-2> b <CHART_IMG_API_KEY:acc-1>";
        assert_eq!(fill_placeholders(text, &keys).unwrap(), "a K2 b K1");
        assert_eq!(placeholder_ids(text), vec!["acc-2", "acc-1"]);
        assert_eq!(
            fill_placeholders("<CHART_IMG_API_KEY:acc-3>", &keys).unwrap_err(),
            "acc-3"
        );
        assert_eq!(fill_placeholders("no placeholder", &keys).unwrap(), "no placeholder");
    }
}
