//! The cassette on disk: `cassette.json` (format version 1) plus byte-exact body files in `bodies/`.
//!
//! Everything here is deterministic: maps are sorted, interactions are sorted by request (stable, so repeated
//! identical requests keep their recorded order), no clock is read unless `record_timestamps` asks for it.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::canon::canonicalize;
use crate::error::Error;
use crate::model::{Request, Response, VcrConfig};
use crate::secrets::Secrets;

pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const CASSETTE_FILE: &str = "cassette.json";
pub(crate) const BODIES_DIR: &str = "bodies";
/// Lock file taken while the cassette is rewritten. It is never deleted: deleting a lock file races with a
/// process that has just opened it.
pub(crate) const LOCK_FILE: &str = ".lock";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CassetteFile {
    pub format_version: u32,
    #[serde(default)]
    pub interactions: Vec<StoredInteraction>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionOnly {
    format_version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct StoredInteraction {
    pub request: StoredRequest,
    pub response: StoredResponse,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct StoredRequest {
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<StoredBody>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct StoredResponse {
    pub status: u16,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<StoredBody>,
}

/// Exactly one of `json`, `text` or `file` is set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct StoredBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `bodies/<sha256>.<ext>`, relative to the cassette directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// A body file to write next to the cassette before the interaction naming it is written.
#[derive(Debug, Clone)]
pub(crate) struct Sidecar {
    pub rel_path: String,
    pub bytes: Bytes,
}

impl StoredRequest {
    /// A config-independent total order for writing: requests sort by what they are, so concurrent recorders and
    /// re-recordings write the same file whatever order the traffic came in.
    pub fn sort_key(&self) -> String {
        serde_json::to_string(self).expect("stored requests serialize")
    }
}

/// Redacts and canonicalizes a live request into its stored form. Also used for matching, so that a live
/// request and a recorded one go through the very same transformation.
pub(crate) fn store_request(req: &Request, secrets: &Secrets, config: &VcrConfig) -> (StoredRequest, Option<Sidecar>) {
    let (path, inline_query) = match req.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.path.as_str(), None),
    };
    let mut query: Vec<(String, String)> = req
        .query
        .iter()
        .cloned()
        .chain(
            inline_query
                .into_iter()
                .flat_map(|q| form_urlencoded::parse(q.as_bytes()).into_owned()),
        )
        .map(|(k, v)| {
            let v = if secrets.is_secret_query_param(&k) {
                secrets.redact_secret_value(&v)
            } else {
                secrets.redact(&v).into_owned()
            };
            (secrets.redact(&k).into_owned(), v)
        })
        .collect();
    query.sort();

    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &req.headers {
        let name = name.to_ascii_lowercase();
        let keep = name == "content-type"
            || secrets.is_secret_header(&name)
            || config.match_headers.iter().any(|h| h.eq_ignore_ascii_case(&name));
        if keep {
            store_header(&mut headers, name, value, secrets);
        }
    }

    let content_type = req.header("content-type").unwrap_or("");
    let (body, sidecar) = store_body(&req.body, content_type, secrets, config, true);
    (
        StoredRequest {
            method: req.method.to_ascii_uppercase(),
            path: secrets.redact(path).into_owned(),
            query,
            headers,
            body,
        },
        sidecar,
    )
}

/// Adds one header to its stored form: a secret header becomes its placeholder, any other value is redacted of
/// known keys; repeated headers are joined with ", " as HTTP allows.
fn store_header(headers: &mut BTreeMap<String, String>, name: String, value: &str, secrets: &Secrets) {
    let value = if secrets.is_secret_header(&name) {
        secrets.redact_secret_value(value)
    } else {
        secrets.redact(value).into_owned()
    };
    headers
        .entry(name)
        .and_modify(|v| *v = format!("{v}, {value}"))
        .or_insert(value);
}

/// Redacts a live response into its stored form, keeping only the configured response headers.
pub(crate) fn store_response(
    resp: &Response,
    secrets: &Secrets,
    config: &VcrConfig,
) -> (StoredResponse, Option<Sidecar>) {
    let mut headers = BTreeMap::new();
    for (name, value) in &resp.headers {
        let name = name.to_ascii_lowercase();
        if !config.response_headers.iter().any(|h| h.eq_ignore_ascii_case(&name)) {
            continue;
        }
        store_header(&mut headers, name, value, secrets);
    }
    let content_type = resp.header("content-type").unwrap_or("");
    let (body, sidecar) = store_body(&resp.body, content_type, secrets, config, false);
    (
        StoredResponse {
            status: resp.status,
            headers,
            body,
        },
        sidecar,
    )
}

/// Chooses how a body is stored.
///
/// Request bodies that parse as JSON are stored canonicalized (they are only matched, never sent again).
/// Response bodies are stored as JSON only when re-serializing the parsed value gives back the exact bytes, so
/// replay is byte-exact; otherwise as inline text, or as a sidecar file when binary or large.
fn store_body(
    bytes: &Bytes,
    content_type: &str,
    secrets: &Secrets,
    config: &VcrConfig,
    canonical: bool,
) -> (Option<StoredBody>, Option<Sidecar>) {
    if bytes.is_empty() {
        return (None, None);
    }
    let is_image = content_type.trim_start().to_ascii_lowercase().starts_with("image/");
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let looks_json = content_type.to_ascii_lowercase().contains("json") || matches!(first, Some(b'{' | b'['));
    if !is_image && looks_json {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
            if canonical {
                let mut v = canonicalize(value);
                secrets.redact_json(&mut v);
                return (
                    Some(StoredBody {
                        json: Some(v),
                        ..Default::default()
                    }),
                    None,
                );
            }
            if serde_json::to_vec(&value).is_ok_and(|v| v == bytes.as_ref()) {
                let mut v = value;
                secrets.redact_json(&mut v);
                return (
                    Some(StoredBody {
                        json: Some(v),
                        ..Default::default()
                    }),
                    None,
                );
            }
        }
    }
    if !is_image && bytes.len() <= config.inline_text_limit {
        if let Ok(text) = std::str::from_utf8(bytes) {
            return (
                Some(StoredBody {
                    text: Some(secrets.redact(text).into_owned()),
                    ..Default::default()
                }),
                None,
            );
        }
    }
    // Binary bodies cannot be redacted without corrupting them; the recorder refuses to write one that holds a
    // key (checked where files are written, so that matching never fails on it).
    let rel_path = format!(
        "{BODIES_DIR}/{}.{}",
        hex::encode(Sha256::digest(bytes)),
        extension_for(content_type)
    );
    let body = StoredBody {
        file: Some(rel_path.clone()),
        size: Some(bytes.len() as u64),
        ..Default::default()
    };
    (
        Some(body),
        Some(Sidecar {
            rel_path,
            bytes: bytes.clone(),
        }),
    )
}

fn extension_for(content_type: &str) -> &'static str {
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpg",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "image/svg+xml" => "svg",
        "application/pdf" => "pdf",
        "application/json" => "json",
        m if m.starts_with("text/") => "txt",
        _ => "bin",
    }
}

/// The bytes a stored body replays as. Body files are verified against the SHA-256 in their name once, at load.
pub(crate) fn body_bytes(
    body: Option<&StoredBody>,
    dir: &Path,
    cache: &mut HashMap<String, Bytes>,
) -> Result<Bytes, Error> {
    let Some(body) = body else {
        return Ok(Bytes::new());
    };
    let file_path = dir.join(CASSETTE_FILE);
    match (&body.json, &body.text, &body.file) {
        (Some(v), None, None) => Ok(Bytes::from(serde_json::to_vec(v).expect("JSON values serialize"))),
        (None, Some(t), None) => Ok(Bytes::from(t.clone())),
        (None, None, Some(rel)) => {
            if let Some(b) = cache.get(rel) {
                return Ok(b.clone());
            }
            let expected = Path::new(rel)
                .file_stem()
                .and_then(|s| s.to_str())
                .filter(|s| s.len() == 64 && rel.starts_with(&format!("{BODIES_DIR}/")) && !rel.contains(".."))
                .ok_or_else(|| Error::Format {
                    path: file_path.clone(),
                    message: format!("bad body file name {rel:?}"),
                })?
                .to_owned();
            let path = dir.join(rel);
            let bytes = Bytes::from(std::fs::read(&path).map_err(Error::io(&path))?);
            if hex::encode(Sha256::digest(&bytes)) != expected {
                return Err(Error::CorruptBody { path });
            }
            cache.insert(rel.clone(), bytes.clone());
            Ok(bytes)
        }
        _ => Err(Error::Format {
            path: file_path,
            message: "a body must have exactly one of \"json\", \"text\" or \"file\"".into(),
        }),
    }
}

/// Materializes a stored response for replay.
pub(crate) fn load_response(
    stored: &StoredResponse,
    dir: &Path,
    cache: &mut HashMap<String, Bytes>,
) -> Result<Response, Error> {
    Ok(Response {
        status: stored.status,
        headers: stored.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        body: body_bytes(stored.body.as_ref(), dir, cache)?,
    })
}

/// Reads `cassette.json`; `Ok(None)` when it does not exist.
pub(crate) fn read_cassette(dir: &Path) -> Result<Option<CassetteFile>, Error> {
    let path = dir.join(CASSETTE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Io { path, source: e }),
    };
    match serde_json::from_slice::<CassetteFile>(&bytes) {
        Ok(c) if c.format_version == FORMAT_VERSION => Ok(Some(c)),
        Ok(c) => Err(Error::Version {
            path,
            found: c.format_version.into(),
            supported: FORMAT_VERSION,
        }),
        Err(e) => match serde_json::from_slice::<VersionOnly>(&bytes) {
            Ok(v) if v.format_version != u64::from(FORMAT_VERSION) => Err(Error::Version {
                path,
                found: v.format_version,
                supported: FORMAT_VERSION,
            }),
            // serde_json messages quote at most a field name or a type, never a whole value.
            _ => Err(Error::Format {
                path,
                message: e.to_string(),
            }),
        },
    }
}

/// Serializes a cassette: pretty JSON, two-space indent, trailing newline.
pub(crate) fn render_cassette<'a>(interactions: impl Iterator<Item = &'a StoredInteraction>) -> Vec<u8> {
    // Same shape as `CassetteFile`, borrowed, so a rewrite does not clone every interaction.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Out<'a> {
        format_version: u32,
        interactions: Vec<&'a StoredInteraction>,
    }
    let file = Out {
        format_version: FORMAT_VERSION,
        interactions: interactions.collect(),
    };
    let mut out = serde_json::to_vec_pretty(&file).expect("cassettes serialize");
    out.push(b'\n');
    out
}

/// Writes a file atomically: a temporary file in the same directory, fsync, rename over the target.
/// Readers see the old or the new content, never a mix.
pub(crate) fn write_atomic(target: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(Error::io(dir))?;
    tmp.write_all(bytes).map_err(Error::io(tmp.path()))?;
    // Temporary files are created 0600; cassettes are ordinary, shareable project files.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(Error::io(tmp.path()))?;
    }
    tmp.as_file().sync_all().map_err(Error::io(tmp.path()))?;
    tmp.persist(target).map_err(|e| Error::Io {
        path: target.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Writes a body file unless an identical one is there (the name is the content hash, so same name = same bytes).
pub(crate) fn write_sidecar(dir: &Path, sidecar: &Sidecar) -> Result<(), Error> {
    let path: PathBuf = dir.join(&sidecar.rel_path);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == sidecar.bytes.len() as u64) {
        return Ok(());
    }
    let bodies = dir.join(BODIES_DIR);
    std::fs::create_dir_all(&bodies).map_err(Error::io(&bodies))?;
    write_atomic(&path, &sidecar.bytes)
}
