//! Phase 3, read-back: what the run left, in the emulators or in `run_local`'s state directory.

use std::path::{Path, PathBuf};

use serde_json::Value;
use worker_chart_export::adapters::{FirestoreStore, JsonDocs, LocalArtifacts, LocalBackend};

/// Read access to wherever the run wrote: the emulators, or the local state directory of `run_local`.
pub enum Backend {
    Emulators {
        fs: FirestoreStore,
        storage: String,
        bucket: String,
    },
    Local {
        docs: JsonDocs<LocalBackend>,
        artifacts: LocalArtifacts,
        bucket: String,
    },
}

pub struct Object {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl Backend {
    pub async fn doc(&self, collection: &'static str, id: &str) -> anyhow::Result<Option<Value>> {
        Ok(match self {
            Backend::Emulators { fs, .. } => fs.get_doc(collection, id).await?,
            Backend::Local { docs, .. } => docs.get_doc(collection, id).await?,
        })
    }

    pub async fn objects(&self) -> anyhow::Result<Vec<Object>> {
        match self {
            Backend::Emulators { storage, bucket, .. } => {
                let http = reqwest::Client::new();
                let list: Value = http
                    .get(format!("http://{storage}/storage/v1/b/{bucket}/o"))
                    .send()
                    .await?
                    .json()
                    .await?;
                let mut out = Vec::new();
                for item in list["items"].as_array().cloned().unwrap_or_default() {
                    let name = item["name"].as_str().unwrap_or_default().to_owned();
                    let url = reqwest::Url::parse_with_params(
                        &format!(
                            "http://{storage}/storage/v1/b/{bucket}/o/{}",
                            worker_chart_export::adapters::encode_component(&name)
                        ),
                        &[("alt", "media")],
                    )?;
                    let bytes = http.get(url).send().await?.bytes().await?.to_vec();
                    out.push(Object {
                        name,
                        content_type: item["contentType"].as_str().unwrap_or_default().to_owned(),
                        bytes,
                    });
                }
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(out)
            }
            Backend::Local { artifacts, bucket, .. } => {
                let root = artifacts.root().join(bucket);
                let mut out = Vec::new();
                for f in walk(&root) {
                    let name = f.strip_prefix(&root)?.to_string_lossy().replace('\\', "/");
                    let content_type = worker_chart_export::adapters::content_type_for(&name).to_owned();
                    out.push(Object {
                        name,
                        content_type,
                        bytes: std::fs::read(&f)?,
                    });
                }
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(out)
            }
        }
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
