//! Errors. None of them carries a request, a header or a body, so none can print a secret.

use std::path::PathBuf;

/// A problem with a cassette on disk or with the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cassette I/O failed on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cassette file {path} is malformed: {message}")]
    Format { path: PathBuf, message: String },
    #[error("cassette file {path} has formatVersion {found}; this recorder reads version {supported}")]
    Version { path: PathBuf, found: u64, supported: u32 },
    #[error("body file {path} does not match the SHA-256 in its name (edited or truncated?)")]
    CorruptBody { path: PathBuf },
    /// A refused accounts JSON: its message names the variable, entry and field, never a key.
    #[error("{0}")]
    Accounts(#[from] AccountsError),
    #[error("a binary {what} body contains the API key of account {account}; refusing to write it to the cassette")]
    SecretInBinaryBody { what: &'static str, account: String },
    /// No key source at all (`recorder record`/`verify`).
    #[error("no API key: set CHART_IMG_API_KEY or CHART_IMG_ACCOUNTS_JSON, or pass --key-file FILE (never the key itself as a flag)")]
    NoKey,
    /// Requests name an account (`<CHART_IMG_API_KEY:acc-2>`) that no key was given for.
    #[error("no API key for account {account} (named by {requests} recorded request(s)); add it to CHART_IMG_ACCOUNTS_JSON or the key file")]
    MissingKey { account: String, requests: usize },
    /// A key file that cannot be read or parsed. The message never quotes the file's content.
    #[error("key file {path}: {message}")]
    KeyFile { path: PathBuf, message: String },
    /// A path or argument that does not name what the command needs.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// A refused accounts JSON: the setting or field (`CHART_IMG_ACCOUNTS_JSON[0].apiKey`) and what is wrong with it.
/// Neither ever quotes a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct AccountsError {
    pub setting: String,
    pub problem: String,
}
