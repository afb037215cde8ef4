//! Embedded artifact stores: [`MemoryArtifacts`] for unit tests and [`LocalArtifacts`], a directory where
//! `gs://<bucket>/<path>` is `<dir>/<bucket>/<path>`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use crate::domain::ObjectRef;
use crate::ports::{ArtifactError, ArtifactStore, ObjectMetadata, StoredObject, WriteMode};

/// Objects in a map. `set_unavailable(true)` makes every write fail, as an unreachable bucket would.
#[derive(Debug, Default)]
pub struct MemoryArtifacts {
    objects: Mutex<HashMap<ObjectRef, StoredObject>>,
    unavailable: AtomicBool,
}

impl MemoryArtifacts {
    pub fn set_unavailable(&self, on: bool) {
        self.unavailable.store(on, Ordering::SeqCst);
    }

    /// Every object, sorted by URI.
    pub fn list(&self) -> Vec<(ObjectRef, StoredObject)> {
        let mut all: Vec<_> = self
            .objects
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by_key(|(k, _)| k.uri());
        all
    }
}

#[async_trait]
impl ArtifactStore for MemoryArtifacts {
    async fn put_with(
        &self,
        obj: &ObjectRef,
        bytes: Bytes,
        content_type: &str,
        mode: WriteMode,
        metadata: &ObjectMetadata,
    ) -> Result<(), ArtifactError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(ArtifactError::Unavailable(format!(
                "bucket {} is unreachable",
                obj.bucket
            )));
        }
        let mut objects = self.objects.lock().unwrap();
        if mode == WriteMode::CreateOnly && objects.contains_key(obj) {
            return Err(ArtifactError::AlreadyExists(obj.uri()));
        }
        objects.insert(
            obj.clone(),
            StoredObject {
                bytes,
                content_type: content_type.to_owned(),
                metadata: metadata.clone(),
            },
        );
        Ok(())
    }

    async fn get(&self, obj: &ObjectRef) -> Result<Option<StoredObject>, ArtifactError> {
        Ok(self.objects.lock().unwrap().get(obj).cloned())
    }

    async fn delete(&self, obj: &ObjectRef) -> Result<bool, ArtifactError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(ArtifactError::Unavailable(format!(
                "bucket {} is unreachable",
                obj.bucket
            )));
        }
        Ok(self.objects.lock().unwrap().remove(obj).is_some())
    }
}

/// A directory standing in for Cloud Storage. Writes go through a temp file in the target folder; a create-only
/// write is published with a hard link (`persist_noclobber`), which fails atomically when the object exists, so two
/// processes racing on a manifest cannot both win. The content type is not stored: it is derived from the extension;
/// neither is custom metadata (so `run-local` never reuses a chart an earlier attempt stored: it renders it again).
#[derive(Debug, Clone)]
pub struct LocalArtifacts {
    root: PathBuf,
}

impl LocalArtifacts {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `obj`. Paths with `..` or empty segments are refused.
    pub fn file_of(&self, obj: &ObjectRef) -> Result<PathBuf, ArtifactError> {
        let ok = |s: &str| !s.is_empty() && s != "." && s != "..";
        if !ok(&obj.bucket) || obj.bucket.contains('/') || !obj.path.split('/').all(ok) {
            return Err(ArtifactError::Other(format!("refusing object name {}", obj.uri())));
        }
        Ok(self.root.join(&obj.bucket).join(&obj.path))
    }
}

pub fn content_type_for(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[async_trait]
impl ArtifactStore for LocalArtifacts {
    async fn put_with(
        &self,
        obj: &ObjectRef,
        bytes: Bytes,
        _content_type: &str,
        mode: WriteMode,
        _metadata: &ObjectMetadata,
    ) -> Result<(), ArtifactError> {
        let file = self.file_of(obj)?;
        let uri = obj.uri();
        tokio::task::spawn_blocking(move || {
            let io = |e: std::io::Error| ArtifactError::Unavailable(format!("cannot write {}: {e}", file.display()));
            let dir = file.parent().expect("object files live in a bucket folder");
            std::fs::create_dir_all(dir).map_err(io)?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
            tmp.write_all(&bytes).map_err(io)?;
            tmp.as_file().sync_all().map_err(io)?;
            match mode {
                WriteMode::Overwrite => tmp.persist(&file).map(drop).map_err(|e| io(e.error)),
                WriteMode::CreateOnly => match tmp.persist_noclobber(&file) {
                    Ok(_) => Ok(()),
                    Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                        Err(ArtifactError::AlreadyExists(uri))
                    }
                    Err(e) => Err(io(e.error)),
                },
            }
        })
        .await
        .map_err(|e| ArtifactError::Other(format!("write task failed: {e}")))?
    }

    async fn get(&self, obj: &ObjectRef) -> Result<Option<StoredObject>, ArtifactError> {
        let file = self.file_of(obj)?;
        match tokio::fs::read(&file).await {
            Ok(b) => Ok(Some(StoredObject {
                bytes: b.into(),
                content_type: content_type_for(&obj.path).to_owned(),
                metadata: ObjectMetadata::new(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ArtifactError::Unavailable(format!(
                "cannot read {}: {e}",
                file.display()
            ))),
        }
    }

    async fn delete(&self, obj: &ObjectRef) -> Result<bool, ArtifactError> {
        let file = self.file_of(obj)?;
        match tokio::fs::remove_file(&file).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ArtifactError::Unavailable(format!(
                "cannot delete {}: {e}",
                file.display()
            ))),
        }
    }
}
