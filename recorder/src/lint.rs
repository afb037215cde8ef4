//! `recorder lint`: finds API keys that reached a cassette anyway (hand edits, an old recorder, a bug).
//!
//! Three checks: every configured key value (text and binary files), every secret header whose value is not a
//! placeholder, and key-shaped strings (long tokens mixing upper case, lower case and digits). A finding names the
//! file and line but never prints the value.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::secrets::{is_placeholder, Secrets};

/// Shortest token that counts as key-shaped. Chart-IMG keys are 40 characters; 24 leaves room for other vendors
/// while staying above words, symbols and placeholder names.
const KEY_SHAPED_MIN_LEN: usize = 24;

/// What was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingKind {
    /// The key of a configured account.
    ConfiguredKey { account: String },
    /// A secret header (`x-api-key`, …) whose value is not a `<CHART_IMG_API_KEY:…>` placeholder.
    UnredactedHeader { header: String },
    /// A long token mixing upper case, lower case and digits, like an API key; `preview` shows 4 characters.
    KeyShaped { preview: String, len: usize },
}

/// One finding: the file, the 1-based line and column for text files, or the byte offset for binary ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub byte_offset: Option<usize>,
    pub kind: FindingKind,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column, self.byte_offset) {
            (Some(l), Some(c), _) => write!(f, "{}:{l}:{c}: ", self.path.display())?,
            (_, _, Some(o)) => write!(f, "{}: byte {o}: ", self.path.display())?,
            _ => write!(f, "{}: ", self.path.display())?,
        }
        match &self.kind {
            FindingKind::ConfiguredKey { account } => write!(f, "the API key of account {account}"),
            FindingKind::UnredactedHeader { header } => {
                write!(
                    f,
                    "header {header} holds a value that is not a <CHART_IMG_API_KEY:…> placeholder"
                )
            }
            FindingKind::KeyShaped { preview, len } => {
                write!(f, "key-shaped string {preview}… ({len} characters)")
            }
        }
    }
}

/// Scans files and directories (recursively, in name order) and returns every finding; empty means clean.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("cassette.json"), "{\n  \"x\": \"k-0123456789\"\n}\n").unwrap();
/// let secrets = recorder::Secrets::new().with_account("acc-1", "k-0123456789".into());
/// let findings = recorder::lint(&[dir.path()], &secrets).unwrap();
/// assert_eq!(findings[0].line, Some(2));
/// assert!(findings[0].to_string().ends_with("cassette.json:2:9: the API key of account acc-1"));
/// ```
pub fn lint(paths: &[impl AsRef<Path>], secrets: &Secrets) -> Result<Vec<Finding>, Error> {
    let mut findings = Vec::new();
    for root in paths {
        let root = root.as_ref();
        if !root.exists() {
            return Err(Error::Io {
                path: root.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            });
        }
        for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
            let entry = entry.map_err(|e| Error::Io {
                path: e.path().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf()),
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("directory walk failed")),
            })?;
            if entry.file_type().is_file() {
                let bytes = std::fs::read(entry.path()).map_err(Error::io(entry.path()))?;
                lint_bytes(entry.path(), &bytes, secrets, &mut findings);
            }
        }
    }
    Ok(findings)
}

fn lint_bytes(path: &Path, bytes: &[u8], secrets: &Secrets, out: &mut Vec<Finding>) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        // Binary (an image): only exact key values can be looked for.
        for (account, key) in secrets.keys() {
            for offset in memchr::memmem::find_iter(bytes, key.as_bytes()) {
                out.push(Finding {
                    path: path.to_path_buf(),
                    line: None,
                    column: None,
                    byte_offset: Some(offset),
                    kind: FindingKind::ConfiguredKey {
                        account: account.to_owned(),
                    },
                });
            }
        }
        return;
    };
    for (i, line) in text.lines().enumerate() {
        let at = |col: usize, kind| Finding {
            path: path.to_path_buf(),
            line: Some(i + 1),
            column: Some(line[..col].chars().count() + 1),
            byte_offset: None,
            kind,
        };
        for (account, key) in secrets.keys() {
            for col in memchr::memmem::find_iter(line.as_bytes(), key.as_bytes()) {
                out.push(at(
                    col,
                    FindingKind::ConfiguredKey {
                        account: account.to_owned(),
                    },
                ));
            }
        }
        for (col, header) in unredacted_headers(line, secrets) {
            out.push(at(col, FindingKind::UnredactedHeader { header }));
        }
        for (col, token) in key_shaped_tokens(line) {
            // A configured key is already reported as such.
            if secrets.keys().any(|(_, k)| k == token) {
                continue;
            }
            let preview: String = token.chars().take(4).collect();
            out.push(at(
                col,
                FindingKind::KeyShaped {
                    preview,
                    len: token.len(),
                },
            ));
        }
    }
}

/// `"x-api-key": "value"` (any case, as in cassette JSON) where the value is not a placeholder.
fn unredacted_headers(line: &str, secrets: &Secrets) -> Vec<(usize, String)> {
    let lower = line.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(rel) = lower[from..].find("\": \"") {
        let colon = from + rel;
        from = colon + 4;
        let Some(name_start) = lower[..colon].rfind('"') else {
            continue;
        };
        let name = &lower[name_start + 1..colon];
        if !secrets.is_secret_header(name) {
            continue;
        }
        let value_start = colon + 4;
        let value_end = line[value_start..].find('"').map_or(line.len(), |e| value_start + e);
        let value = &line[value_start..value_end];
        if !value.is_empty() && !is_placeholder(value) {
            out.push((value_start, name.to_owned()));
        }
    }
    out
}

/// Long `[A-Za-z0-9_-]` tokens with upper case, lower case and digits. Body file names (lower-case hex), UUIDs,
/// placeholders and chart parameters do not qualify.
fn key_shaped_tokens(line: &str) -> Vec<(usize, &str)> {
    let is_token = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices().chain(std::iter::once((line.len(), ' '))) {
        match (is_token(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                let token = &line[s..i];
                if token.len() >= KEY_SHAPED_MIN_LEN
                    && token.chars().any(|c| c.is_ascii_uppercase())
                    && token.chars().any(|c| c.is_ascii_lowercase())
                    && token.chars().any(|c| c.is_ascii_digit())
                {
                    out.push((s, token));
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shaped_ignores_hashes_and_words() {
        let line = r#""file": "bodies/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08.png", "k": "Relative Strength Index""#;
        assert!(key_shaped_tokens(line).is_empty());
        assert_eq!(key_shaped_tokens("x aB3dEf6hIj9kLm2nOp5qRs8tUv y").len(), 1);
    }

    #[test]
    fn unredacted_header_found_placeholder_not() {
        let s = Secrets::new();
        assert_eq!(unredacted_headers(r#"      "x-api-key": "abc""#, &s).len(), 1);
        assert!(unredacted_headers(r#"      "x-api-key": "<CHART_IMG_API_KEY:acc-1>""#, &s).is_empty());
        assert!(unredacted_headers(r#"      "content-type": "abc""#, &s).is_empty());
    }
}
