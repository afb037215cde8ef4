//! The embedded document stores: one generic implementation of the flow-run, template and usage ports over a
//! [`DocBackend`] that can run a closure on a few JSON documents exclusively. Two backends: [`MemoryBackend`] (unit
//! tests) and [`LocalBackend`] (JSON files under a state directory, exclusive across processes through a file lock).
//! Both run the same pure decisions as the Firestore adapter, so they differ from it only in how exclusivity is had.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use crate::domain::rate::plan_window;
use crate::domain::step::{check_owner, decide_claim};
use crate::domain::usage::{plan_exhaust, plan_give_back, plan_reservation};
use crate::domain::{
    AccountId, AccountQuota, ClaimOutcome, ClaimParams, ClaimToken, Grant, OpId, PatchOutcome, RateDoc, RunId,
    StepPatch, StepSelector, TemplateId, UsageDoc, Window, WindowAsk,
};
use crate::ports::{AccountUsageStore, FlowRunStore, RateWindowStore, StoreError, TemplateStore};

use crate::domain::collections::{ACCOUNTS_USAGE, CHART_TEMPLATES, FLOW_RUNS, RATE_WINDOWS};

/// `(collection, document id)`; ids are typed ids already checked for `/`.
pub type DocKey = (&'static str, String);

/// Runs `f` on the named documents with nobody else reading or writing them, then stores what `f` changed.
pub trait DocBackend: Send + Sync + 'static {
    fn transact<R>(&self, keys: &[DocKey], f: &mut dyn FnMut(&mut [Option<Value>]) -> R) -> Result<R, StoreError>;
}

/// Documents in a map behind a mutex.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    docs: Mutex<HashMap<DocKey, Value>>,
}

impl DocBackend for MemoryBackend {
    fn transact<R>(&self, keys: &[DocKey], f: &mut dyn FnMut(&mut [Option<Value>]) -> R) -> Result<R, StoreError> {
        let mut docs = self.docs.lock().unwrap_or_else(|p| p.into_inner());
        let mut slots: Vec<Option<Value>> = keys.iter().map(|k| docs.get(k).cloned()).collect();
        let out = f(&mut slots);
        for (k, v) in keys.iter().zip(slots) {
            match v {
                Some(v) => docs.insert(k.clone(), v),
                None => docs.remove(k),
            };
        }
        Ok(out)
    }
}

/// JSON files `<root>/<collection>/<id>.json`. A transaction holds an exclusive lock on `<root>/.lock` (so two
/// processes on one machine serialize like two Firestore transactions), and every write is a temp file + rename, so a
/// crash leaves either the old or the new document, never half of one.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

impl LocalBackend {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        fs::create_dir_all(&root)
            .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", root.display())))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &DocKey) -> PathBuf {
        self.root.join(key.0).join(format!("{}.json", key.1))
    }

    fn read(&self, key: &DocKey) -> Result<Option<Value>, StoreError> {
        let path = self.path(key);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Unavailable(format!("cannot read {}: {e}", path.display()))),
        }
    }

    fn write(&self, key: &DocKey, value: Option<&Value>) -> Result<(), StoreError> {
        let path = self.path(key);
        let io = |e: std::io::Error| StoreError::Unavailable(format!("cannot write {}: {e}", path.display()));
        let Some(value) = value else {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
                _ => Ok(()),
            };
        };
        let dir = path.parent().expect("document paths have a collection folder");
        fs::create_dir_all(dir).map_err(io)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Other(e.to_string()))?;
        bytes.push(b'\n');
        tmp.write_all(&bytes).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

impl DocBackend for LocalBackend {
    fn transact<R>(&self, keys: &[DocKey], f: &mut dyn FnMut(&mut [Option<Value>]) -> R) -> Result<R, StoreError> {
        let lock_path = self.root.join(".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", lock_path.display())))?;
        lock.lock()
            .map_err(|e| StoreError::Unavailable(format!("cannot lock {}: {e}", lock_path.display())))?;
        let before: Vec<Option<Value>> = keys.iter().map(|k| self.read(k)).collect::<Result<_, _>>()?;
        let mut slots = before.clone();
        let out = f(&mut slots);
        for ((k, old), new) in keys.iter().zip(&before).zip(&slots) {
            if old != new {
                self.write(k, new.as_ref())?;
            }
        }
        // The lock is released when `lock` is dropped, after every write has been renamed into place.
        drop(lock);
        Ok(out)
    }
}

/// The flow-run, template and usage ports over one backend.
#[derive(Debug)]
pub struct JsonDocs<B> {
    backend: Arc<B>,
}

impl<B> Clone for JsonDocs<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
        }
    }
}

impl JsonDocs<MemoryBackend> {
    pub fn in_memory() -> Self {
        Self {
            backend: Arc::new(MemoryBackend::default()),
        }
    }
}

impl JsonDocs<LocalBackend> {
    /// Documents under `<state_dir>/firestore`.
    pub fn local(state_dir: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Arc::new(LocalBackend::open(state_dir.join("firestore"))?),
        })
    }
}

impl<B: DocBackend> JsonDocs<B> {
    /// Runs a transaction on a blocking thread: file locks and fsync must not stall the async runtime.
    async fn tx<R: Send + 'static>(
        &self,
        keys: Vec<DocKey>,
        mut f: impl FnMut(&mut [Option<Value>]) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || backend.transact(&keys, &mut f))
            .await
            .map_err(|e| StoreError::Other(format!("store task failed: {e}")))?
    }

    pub async fn get_doc(&self, collection: &'static str, id: &str) -> Result<Option<Value>, StoreError> {
        self.tx(vec![(collection, id.to_owned())], |d| d[0].clone()).await
    }

    /// Writes a whole document (seeding from the CLI and tests; the worker itself only patches).
    pub async fn put_doc(&self, collection: &'static str, id: &str, value: Value) -> Result<(), StoreError> {
        self.tx(vec![(collection, id.to_owned())], move |d| d[0] = Some(value.clone()))
            .await
    }

    /// Creates a document unless it exists; answers whether it was created.
    pub async fn create_doc(&self, collection: &'static str, id: &str, value: Value) -> Result<bool, StoreError> {
        self.tx(vec![(collection, id.to_owned())], move |d| {
            if d[0].is_some() {
                false
            } else {
                d[0] = Some(value.clone());
                true
            }
        })
        .await
    }
}

fn usage_of(v: &Option<Value>, id: &AccountId) -> Result<Option<UsageDoc>, StoreError> {
    v.as_ref()
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| StoreError::Corrupt {
            path: format!("{ACCOUNTS_USAGE}/{id}"),
            reason: e.to_string(),
        })
}

fn to_value(d: &UsageDoc) -> Value {
    serde_json::to_value(d).expect("usage documents serialize")
}

#[async_trait]
impl<B: DocBackend> FlowRunStore for JsonDocs<B> {
    async fn get_run(&self, run: &RunId) -> Result<Option<Value>, StoreError> {
        self.get_doc(FLOW_RUNS, run.as_str()).await
    }

    async fn claim_step(
        &self,
        run: &RunId,
        selector: &StepSelector,
        params: &ClaimParams,
    ) -> Result<ClaimOutcome, StoreError> {
        let (selector, params) = (selector.clone(), params.clone());
        self.tx(vec![(FLOW_RUNS, run.to_string())], move |d| {
            let (outcome, patch) = decide_claim(d[0].as_ref(), &selector, &params);
            if let (Some(patch), Some(doc)) = (patch, d[0].as_mut()) {
                patch.apply_to(doc);
            }
            outcome
        })
        .await
    }

    async fn patch_owned_step(
        &self,
        run: &RunId,
        token: &ClaimToken,
        patch: &StepPatch,
    ) -> Result<PatchOutcome, StoreError> {
        let (token, patch) = (token.clone(), patch.clone());
        self.tx(vec![(FLOW_RUNS, run.to_string())], move |d| {
            let outcome = check_owner(d[0].as_ref(), &patch, &token);
            if let (PatchOutcome::Applied, Some(doc)) = (&outcome, d[0].as_mut()) {
                patch.apply_to(doc);
            }
            outcome
        })
        .await
    }
}

#[async_trait]
impl<B: DocBackend> TemplateStore for JsonDocs<B> {
    async fn get_templates(&self, ids: &[TemplateId]) -> Result<HashMap<TemplateId, Value>, StoreError> {
        let keys = ids.iter().map(|id| (CHART_TEMPLATES, id.to_string())).collect();
        let ids = ids.to_vec();
        self.tx(keys, move |d| {
            ids.iter()
                .zip(d.iter())
                .filter_map(|(id, v)| v.clone().map(|v| (id.clone(), v)))
                .collect()
        })
        .await
    }
}

#[async_trait]
impl<B: DocBackend> AccountUsageStore for JsonDocs<B> {
    async fn reserve(
        &self,
        op: &OpId,
        accounts: &[AccountQuota],
        units: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<Grant>, StoreError> {
        let keys = accounts.iter().map(|a| (ACCOUNTS_USAGE, a.id.to_string())).collect();
        let accounts = accounts.to_vec();
        let op = op.clone();
        self.tx(keys, move |d| -> Result<Vec<Grant>, StoreError> {
            let current: Vec<Option<UsageDoc>> = d
                .iter()
                .zip(&accounts)
                .map(|(v, a)| usage_of(v, &a.id))
                .collect::<Result<_, _>>()?;
            let (grants, writes) = plan_reservation(&op, &accounts, &current, units, now);
            for (id, doc) in writes {
                let i = accounts
                    .iter()
                    .position(|a| a.id == id)
                    .expect("writes name configured accounts");
                d[i] = Some(to_value(&doc));
            }
            Ok(grants)
        })
        .await?
    }

    async fn give_back(
        &self,
        op: &OpId,
        account: &AccountId,
        day: NaiveDate,
        units: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = account.clone();
        let op = op.clone();
        self.tx(
            vec![(ACCOUNTS_USAGE, account.to_string())],
            move |d| -> Result<(), StoreError> {
                if let Some(doc) = plan_give_back(&op, usage_of(&d[0], &id)?.as_ref(), day, units, now) {
                    d[0] = Some(to_value(&doc));
                }
                Ok(())
            },
        )
        .await?
    }

    async fn mark_exhausted(
        &self,
        account: &AccountQuota,
        day: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let acc = account.clone();
        self.tx(
            vec![(ACCOUNTS_USAGE, account.id.to_string())],
            move |d| -> Result<(), StoreError> {
                if let Some(doc) = plan_exhaust(usage_of(&d[0], &acc.id)?.as_ref(), day, acc.daily_limit, now) {
                    d[0] = Some(to_value(&doc));
                }
                Ok(())
            },
        )
        .await?
    }

    async fn get_usage(&self, account: &AccountId) -> Result<Option<UsageDoc>, StoreError> {
        let v = self.get_doc(ACCOUNTS_USAGE, account.as_str()).await?;
        usage_of(&v, account)
    }
}

#[async_trait]
impl<B: DocBackend> RateWindowStore for JsonDocs<B> {
    async fn reserve_window(
        &self,
        account: &AccountId,
        ask: &WindowAsk,
        now: DateTime<Utc>,
    ) -> Result<Window, StoreError> {
        let (id, ask) = (account.clone(), ask.clone());
        self.tx(
            vec![(RATE_WINDOWS, account.to_string())],
            move |d| -> Result<Window, StoreError> {
                let current: Option<RateDoc> = d[0]
                    .as_ref()
                    .map(|v| serde_json::from_value(v.clone()))
                    .transpose()
                    .map_err(|e| StoreError::Corrupt {
                        path: format!("{RATE_WINDOWS}/{id}"),
                        reason: e.to_string(),
                    })?;
                let (window, write) = plan_window(current.as_ref(), &ask, now);
                if let Some(doc) = write {
                    d[0] = Some(serde_json::to_value(&doc).expect("rate documents serialize"));
                }
                Ok(window)
            },
        )
        .await?
    }
}
