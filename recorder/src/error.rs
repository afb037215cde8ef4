//! Errors. None of them carries a request, a header or a body, so none can print a secret.

use std::fmt;
use std::path::PathBuf;

use crate::miss::Miss;

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
    Accounts(#[from] crate::accounts::AccountsError),
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

/// The error of [`Vcr::handle`](crate::Vcr::handle).
///
/// `Display` never prints the upstream error itself: upstream errors (a URL with a key in its query, a header dump)
/// are outside this crate's redaction. Reach it through the `Upstream` variant or `source()`.
// `Miss` makes this enum large; it is an error path, and a plain `Miss(Miss)` is easier to match on.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum VcrError<E> {
    /// No recorded answer, and the mode does not allow calling upstream.
    Miss(Miss),
    /// Upstream was called and failed; nothing was recorded.
    Upstream(E),
    /// Reading or writing the cassette failed.
    Store(Error),
}

impl<E> fmt::Display for VcrError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VcrError::Miss(m) => write!(f, "{m}"),
            VcrError::Upstream(_) => {
                f.write_str("the upstream call failed (error not shown here: it may hold secrets)")
            }
            VcrError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for VcrError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VcrError::Miss(_) => None,
            VcrError::Upstream(e) => Some(e),
            VcrError::Store(e) => Some(e),
        }
    }
}

impl<E> From<Error> for VcrError<E> {
    fn from(e: Error) -> Self {
        VcrError::Store(e)
    }
}

impl<E> From<Miss> for VcrError<E> {
    fn from(m: Miss) -> Self {
        VcrError::Miss(m)
    }
}
