//! [`FirestoreStore`]: the flow-run, template and usage ports on Cloud Firestore (or its emulator), over the gRPC
//! client of the `firestore` crate.
//!
//! The adapter speaks the Firestore v1 RPCs itself (`BeginTransaction`, `BatchGetDocuments`, `Commit`, `Rollback`)
//! rather than through the crate's transaction helper, for three reasons: the retry budget must be bounded in attempts
//! and in time (the helper's default retries some errors forever); only ABORTED and transport failures may be retried
//! (a decode error or a refused document must surface at once); and every write must be a field-masked update with a
//! precondition, which the pure decisions of [`crate::domain`] describe as JSON.
//!
//! Documents cross the port as `serde_json::Value`, converted by [`crate::firestore_codec`].
//!
//! Invariants:
//! - Every read-modify-write of one document (a claim, a lease renewal, a release or finalize, a rate window, a
//!   usage counter) is a plain read and a commit guarded by the version read (`compare_and_set`), which holds no
//!   lock: a process killed between the two leaves nothing behind, where a read-write transaction's lock would stall
//!   every other writer of the document until the server expires it (a minute). Only a reservation over several
//!   counters at once is a read-write transaction (`transact`). Each decision is the same pure function the embedded
//!   stores run ([`decide_claim`], [`check_owner`], [`plan_reservation`], [`plan_give_back`], [`plan_exhaust`]).
//! - A flow run is only ever written through `steps.<stepId>.<field>` masks, with an `updateTime` precondition
//!   taken from the read it was decided on; the rest of the document is never rewritten.
//! - A read-modify-write is retried (the one [`RetryPolicy`]) on ABORTED, a failed precondition, transport failures
//!   and the retryable codes of Google's guidance, then fails with [`StoreError::Contention`] or
//!   [`StoreError::Unavailable`]. A retried commit may find its first try applied (the reply was lost): the
//!   decisions recognise their own claim token and quota operation id, so nothing applies twice.
//! - A transaction that does not commit is rolled back on every way out, the caller dropping it half-way included
//!   (`OpenTransaction`), so its read locks do not wait for the server's minute-long expiry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use firestore::gcloud_sdk::google::firestore::v1 as fs;
use firestore::gcloud_sdk::google::firestore::v1::firestore_client::FirestoreClient;
use firestore::gcloud_sdk::prost_types::Timestamp;
use firestore::gcloud_sdk::tonic::{Code, Status};
use firestore::gcloud_sdk::GoogleAuthMiddleware;
use firestore::{FirestoreDb, FirestoreDbOptions};
use futures::StreamExt;
use serde_json::Value as Json;
use tracing::{debug, info, warn};

use crate::firestore_codec::{document_to_json, field_path, field_value, json_document, quote_segment};
use crate::retry::RetryPolicy;

use crate::domain::collections::{ACCOUNTS_USAGE, CHART_TEMPLATES, FLOW_RUNS, RATE_WINDOWS};
use crate::domain::rate::plan_window;
use crate::domain::step::{check_owner, decide_claim};
use crate::domain::usage::{plan_exhaust, plan_give_back, plan_reservation};
use crate::domain::{
    AccountId, AccountQuota, ClaimOutcome, ClaimParams, ClaimToken, Grant, OpId, PatchOutcome, RateDoc, RunId,
    StepPatch, StepSelector, TemplateId, UsageDoc, Window, WindowAsk,
};
use crate::ports::{AccountUsageStore, FlowRunStore, RateWindowStore, StoreError, TemplateStore};

/// Limit of one RPC; a call that takes longer counts as a transport failure (and is retried).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Templates read per BatchGet: a step of 1,000 charts reads them in 10 requests of bounded size.
const TEMPLATE_BATCH: usize = 100;

/// The three document ports on one Firestore database. Cheap to clone.
#[derive(Clone)]
pub struct FirestoreStore {
    db: FirestoreDb,
    /// Retries of one transaction or call (attempts and total time).
    policy: RetryPolicy,
    /// Limit of one RPC.
    call_timeout: Duration,
}

impl std::fmt::Debug for FirestoreStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirestoreStore")
            .field("database", self.db.get_database_path())
            .finish()
    }
}

/// One document as a transaction read it.
#[derive(Debug, Clone)]
struct TxDoc {
    value: Option<Json>,
    update_time: Option<Timestamp>,
}

/// Why one attempt of a transaction failed.
enum AttemptError {
    /// Not worth a retry: surface as is.
    Fatal(StoreError),
    /// Worth a retry; `contention` tells ABORTED / precondition from transport failures.
    Retry { contention: bool, message: String },
}

/// A read-write transaction that is rolled back when dropped, unless [`OpenTransaction::committed`] said it landed.
///
/// The rollback is sent in the background on the current tokio runtime; a transaction that is never rolled back
/// (the process died) expires on the server by itself.
struct OpenTransaction {
    client: FirestoreClient<GoogleAuthMiddleware>,
    database: String,
    id: Vec<u8>,
    done: bool,
}

impl OpenTransaction {
    fn new(client: FirestoreClient<GoogleAuthMiddleware>, database: &str, id: Vec<u8>) -> Self {
        Self {
            client,
            database: database.to_owned(),
            id,
            done: false,
        }
    }

    fn id(&self) -> &[u8] {
        &self.id
    }

    /// The commit was answered: nothing to roll back.
    fn committed(mut self) {
        self.done = true;
    }
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut client = self.client.clone();
        let request = fs::RollbackRequest {
            database: std::mem::take(&mut self.database),
            transaction: std::mem::take(&mut self.id),
            ..Default::default()
        };
        runtime.spawn(async move {
            if let Err(e) = client.rollback(request).await {
                debug!(event = "transaction_rollback_failed", error = %e.message(), "rollback not applied (the transaction may have committed or expired)");
            }
        });
    }
}

impl FirestoreStore {
    /// Connects to project `project_id`, database `(default)`. With `FIRESTORE_EMULATOR_HOST` set the emulator is
    /// used and no credentials are looked up; otherwise Application Default Credentials (on Cloud Run: the service's
    /// service account).
    pub async fn new(project_id: &str) -> Result<Self, StoreError> {
        Self::connect(project_id, crate::config::DEFAULT_FIRESTORE_DATABASE).await
    }

    /// Connects to database `database_id` (`FIRESTORE_DATABASE`) of project `project_id`, as [`Self::new`] does.
    pub async fn connect(project_id: &str, database_id: &str) -> Result<Self, StoreError> {
        let options = FirestoreDbOptions::new(project_id.to_owned()).with_database_id(database_id.to_owned());
        let db = FirestoreDb::with_options(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to Firestore: {e}")))?;
        Ok(Self::from_db(db))
    }

    /// Wraps a client built elsewhere (other database id, explicit credentials).
    pub fn from_db(db: FirestoreDb) -> Self {
        Self {
            db,
            policy: RetryPolicy::FIRESTORE,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// `projects/<p>/databases/<d>`.
    pub fn database_path(&self) -> &str {
        self.db.get_database_path()
    }

    /// The resource name of `collection/id`.
    pub fn doc_name(&self, collection: &str, id: &str) -> String {
        format!("{}/{collection}/{id}", self.db.get_documents_path())
    }

    fn client(&self) -> FirestoreClient<GoogleAuthMiddleware> {
        self.db.client().get()
    }

    async fn call<T>(&self, fut: impl std::future::Future<Output = Result<T, Status>>) -> Result<T, AttemptError> {
        match tokio::time::timeout(self.call_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(status)) => Err(classify(&status)),
            Err(_) => Err(AttemptError::Retry {
                contention: false,
                message: format!("no answer within {:?}", self.call_timeout),
            }),
        }
    }

    /// Reads `names` (in order) in one `BatchGetDocuments`, inside `transaction` when given.
    async fn batch_get(&self, names: &[String], transaction: Option<&[u8]>) -> Result<Vec<TxDoc>, AttemptError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let request = fs::BatchGetDocumentsRequest {
            database: self.database_path().to_owned(),
            documents: names.to_vec(),
            consistency_selector: transaction
                .map(|t| fs::batch_get_documents_request::ConsistencySelector::Transaction(t.to_vec())),
            ..Default::default()
        };
        let mut client = self.client();
        let collect = async {
            let mut stream = client.batch_get_documents(request).await?.into_inner();
            let mut found: HashMap<String, fs::Document> = HashMap::new();
            while let Some(item) = stream.next().await {
                if let Some(fs::batch_get_documents_response::Result::Found(doc)) = item?.result {
                    found.insert(doc.name.clone(), doc);
                }
            }
            Ok::<_, Status>(found)
        };
        let mut found = self.call(collect).await?;
        names
            .iter()
            .map(|name| match found.remove(name) {
                None => Ok(TxDoc {
                    value: None,
                    update_time: None,
                }),
                Some(doc) => Ok(TxDoc {
                    update_time: doc.update_time,
                    value: Some(document_to_json(&doc.fields)),
                }),
            })
            .collect()
    }

    /// Runs `decide` in a read-write transaction over `names` and commits the writes it returns, retrying within the
    /// policy. `decide` may run several times (once per attempt) and must not have side effects.
    async fn transact<R>(
        &self,
        op: &'static str,
        names: Vec<String>,
        mut decide: impl FnMut(&[TxDoc]) -> Result<(R, Vec<fs::Write>), StoreError>,
    ) -> Result<R, StoreError> {
        let mut budget = self.policy.start();
        let mut retry_transaction: Vec<u8> = Vec::new();
        loop {
            match self.attempt(&names, &mut decide, &mut retry_transaction).await {
                Ok(r) => return Ok(r),
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Retry { contention, message }) => {
                    give_up_or_wait(&mut budget, op, contention, message).await?
                }
            }
        }
    }

    async fn attempt<R>(
        &self,
        names: &[String],
        decide: &mut impl FnMut(&[TxDoc]) -> Result<(R, Vec<fs::Write>), StoreError>,
        retry_transaction: &mut Vec<u8>,
    ) -> Result<R, AttemptError> {
        let begin = fs::BeginTransactionRequest {
            database: self.database_path().to_owned(),
            options: Some(fs::TransactionOptions {
                mode: Some(fs::transaction_options::Mode::ReadWrite(
                    fs::transaction_options::ReadWrite {
                        // Naming the aborted transaction keeps this one's place in the lock queue.
                        retry_transaction: std::mem::take(retry_transaction),
                        ..Default::default()
                    },
                )),
            }),
            ..Default::default()
        };
        let mut client = self.client();
        let tx = self
            .call(client.begin_transaction(begin))
            .await?
            .into_inner()
            .transaction;
        *retry_transaction = tx.clone();
        // From here on the transaction holds locks on the emulator (and on Firestore) until it commits, is rolled back
        // or times out on the server (about a minute). The guard rolls it back on every way out, including the caller
        // dropping this future half-way (a timeout, a `select!`, a lease renewal abandoned when its step ended).
        let open = OpenTransaction::new(client.clone(), self.database_path(), tx);
        let docs = self.batch_get(names, Some(open.id())).await?;
        let (out, writes) = decide(&docs).map_err(AttemptError::Fatal)?;
        if writes.is_empty() {
            // Nothing to write: the guard releases the read locks now rather than when the transaction times out.
            return Ok(out);
        }
        let commit = fs::CommitRequest {
            database: self.database_path().to_owned(),
            writes,
            transaction: open.id().to_vec(),
            ..Default::default()
        };
        // A failed (or unanswered) commit is rolled back by the guard. If the commit did land (its reply was lost),
        // the rollback is refused, harmlessly.
        self.call(client.commit(commit)).await?;
        open.committed();
        Ok(out)
    }

    /// Non-transactional reads and writes, retried on transport failures within the policy.
    async fn with_retry<T, F, Fut>(&self, op: &'static str, mut f: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AttemptError>>,
    {
        let mut budget = self.policy.start();
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Retry { contention, message }) => {
                    give_up_or_wait(&mut budget, op, contention, message).await?
                }
            }
        }
    }

    /// One document's read-modify-write without a transaction: a plain read, then a commit guarded by the version it
    /// read (`updateTime`, or "does not exist"), all again from the read when another writer got there first
    /// (FAILED_PRECONDITION, counted as contention). No lock is held between the read and the write, so writers of a
    /// hot document never wait on each other's locks — on the emulator two read-write transactions on one document
    /// each hold a read lock the other's commit needs, until a lock timeout aborts one. A retry after a lost commit
    /// reply reads what its first try wrote, and `decide` (a pure decision that recognises its own operation) writes
    /// nothing again.
    async fn compare_and_set<R>(
        &self,
        op: &'static str,
        name: String,
        decide: impl Fn(&TxDoc) -> Result<(R, Option<fs::Write>), StoreError>,
    ) -> Result<R, StoreError> {
        let names = vec![name];
        let decide = &decide;
        let names = &names;
        self.with_retry(op, move || async move {
            let docs = self.batch_get(names, None).await?;
            let (out, write) = decide(&docs[0]).map_err(AttemptError::Fatal)?;
            if let Some(mut w) = write {
                w.current_document = Some(unchanged(&docs[0]));
                let request = fs::CommitRequest {
                    database: self.database_path().to_owned(),
                    writes: vec![w],
                    ..Default::default()
                };
                let mut client = self.client();
                match self.call(client.commit(request)).await {
                    // "Does not exist" failed: another writer created the document first.
                    Err(AttemptError::Fatal(StoreError::Other(m))) if m.starts_with("ALREADY_EXISTS") => {
                        return Err(AttemptError::Retry {
                            contention: true,
                            message: m,
                        });
                    }
                    r => r?,
                };
            }
            Ok(out)
        })
        .await
    }

    /// One document as JSON, or `None` when it does not exist.
    pub async fn get_doc(&self, collection: &str, id: &str) -> Result<Option<Json>, StoreError> {
        let names = vec![self.doc_name(collection, id)];
        let mut docs = self.with_retry("get", || self.batch_get(&names, None)).await?;
        Ok(docs.pop().and_then(|d| d.value))
    }

    /// Writes a whole document, replacing any (seeding from tools and tests; the worker itself only patches).
    pub async fn put_doc(&self, collection: &str, id: &str, value: Json) -> Result<(), StoreError> {
        let doc = json_document(self.doc_name(collection, id), &value)?;
        let write = fs::Write {
            operation: Some(fs::write::Operation::Update(doc)),
            ..Default::default()
        };
        self.commit_plain("put", write).await.map(drop)
    }

    /// Creates a document unless it exists; answers whether it was created.
    pub async fn create_doc(&self, collection: &str, id: &str, value: Json) -> Result<bool, StoreError> {
        let doc = json_document(self.doc_name(collection, id), &value)?;
        let write = fs::Write {
            operation: Some(fs::write::Operation::Update(doc)),
            current_document: Some(exists(false)),
            ..Default::default()
        };
        match self.commit_plain("create", write).await {
            Ok(()) => Ok(true),
            Err(StoreError::Other(m)) if m.contains("ALREADY_EXISTS") || m.contains("already exists") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes a document (tests and tools).
    pub async fn delete_doc(&self, collection: &str, id: &str) -> Result<(), StoreError> {
        let write = fs::Write {
            operation: Some(fs::write::Operation::Delete(self.doc_name(collection, id))),
            ..Default::default()
        };
        self.commit_plain("delete", write).await
    }

    async fn commit_plain(&self, op: &'static str, write: fs::Write) -> Result<(), StoreError> {
        self.with_retry(op, || {
            let request = fs::CommitRequest {
                database: self.database_path().to_owned(),
                writes: vec![write.clone()],
                ..Default::default()
            };
            let mut client = self.client();
            async move { self.call(client.commit(request)).await.map(drop) }
        })
        .await
    }
}

/// Retries of Firestore calls in this process since it started, by cause: `contention` (ABORTED, a failed
/// precondition: another transaction won the document) or not (transport failures, timeouts). Each retry is also
/// logged as `transaction_retry` with the same `contention` flag.
#[derive(Debug, Default)]
pub struct RetryCounts {
    contention: AtomicU64,
    other: AtomicU64,
}

impl RetryCounts {
    fn count(&self, contention: bool) {
        let c = if contention { &self.contention } else { &self.other };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Retries after contention so far.
    pub fn contention(&self) -> u64 {
        self.contention.load(Ordering::Relaxed)
    }

    /// Retries after other failures so far.
    pub fn other(&self) -> u64 {
        self.other.load(Ordering::Relaxed)
    }
}

static RETRIES: RetryCounts = RetryCounts {
    contention: AtomicU64::new(0),
    other: AtomicU64::new(0),
};

/// This process's retry counts (every `FirestoreStore` together).
pub fn retry_counts() -> &'static RetryCounts {
    &RETRIES
}

/// After a retryable failure: sleeps before the next attempt, or gives up with `Contention` (the failure was an
/// aborted transaction) or `Unavailable` once the budget is spent.
async fn give_up_or_wait(
    budget: &mut crate::retry::Attempts,
    op: &'static str,
    contention: bool,
    message: String,
) -> Result<(), StoreError> {
    let attempts = budget.attempts();
    RETRIES.count(contention);
    info!(
        event = "transaction_retry",
        op,
        attempt = attempts,
        contention,
        "{message}"
    );
    if budget.wait().await {
        return Ok(());
    }
    let what = format!(
        "{op}: gave up after {attempts} attempts in {:?}: {message}",
        budget.elapsed()
    );
    warn!(event = "transaction_gave_up", op, attempts, contention, "{what}");
    Err(if contention {
        StoreError::Contention(what)
    } else {
        StoreError::Unavailable(what)
    })
}

fn exists(yes: bool) -> fs::Precondition {
    fs::Precondition {
        condition_type: Some(fs::precondition::ConditionType::Exists(yes)),
    }
}

/// The precondition of a transactional write: the document is still the version the transaction read.
fn unchanged(doc: &TxDoc) -> fs::Precondition {
    match &doc.update_time {
        Some(t) => fs::Precondition {
            condition_type: Some(fs::precondition::ConditionType::UpdateTime(*t)),
        },
        None => exists(false),
    }
}

fn classify(status: &Status) -> AttemptError {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        // ABORTED: lost a lock or a commit race. FAILED_PRECONDITION on a transactional write: the document moved.
        Code::Aborted | Code::FailedPrecondition => AttemptError::Retry {
            contention: true,
            message,
        },
        // Google's retry guidance for Firestore, plus UNAUTHENTICATED (an expired token is refreshed on the next
        // call) and CANCELLED/UNKNOWN (what a reset connection surfaces as).
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Cancelled
        | Code::Internal
        | Code::Unknown
        | Code::Unauthenticated => AttemptError::Retry {
            contention: false,
            message,
        },
        Code::AlreadyExists => AttemptError::Fatal(StoreError::Other(format!("ALREADY_EXISTS: {}", status.message()))),
        _ => AttemptError::Fatal(StoreError::Other(message)),
    }
}

/// A step patch as one Firestore write: the set fields nested under `steps.<stepId>`, the mask naming every field
/// of the patch (a field in the mask but absent from the document is deleted), and `precondition`.
pub fn step_patch_write(doc_name: String, patch: &StepPatch, precondition: Option<fs::Precondition>) -> fs::Write {
    let mut step_fields = HashMap::new();
    let mut mask = Vec::with_capacity(patch.fields.len());
    for (field, value) in &patch.fields {
        mask.push(field_path(&["steps", patch.step_id.as_str(), field]));
        if let Some(v) = value {
            step_fields.insert(field.clone(), field_value(field, v));
        }
    }
    let step = map_value(step_fields);
    let steps = map_value(HashMap::from([(patch.step_id.to_string(), step)]));
    fs::Write {
        operation: Some(fs::write::Operation::Update(fs::Document {
            name: doc_name,
            fields: HashMap::from([("steps".to_owned(), steps)]),
            ..Default::default()
        })),
        update_mask: Some(fs::DocumentMask { field_paths: mask }),
        current_document: precondition,
        ..Default::default()
    }
}

pub fn map_value(fields: HashMap<String, fs::Value>) -> fs::Value {
    fs::Value {
        value_type: Some(fs::value::ValueType::MapValue(fs::MapValue { fields })),
    }
}

fn usage_of(doc: &TxDoc, id: &AccountId) -> Result<Option<UsageDoc>, StoreError> {
    doc.value
        .as_ref()
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| StoreError::Corrupt {
            path: format!("{ACCOUNTS_USAGE}/{id}"),
            reason: e.to_string(),
        })
}

/// A usage counter write: its own five fields (other fields someone added survive), guarded by the version read.
fn usage_write(name: String, doc: &UsageDoc, read: &TxDoc) -> Result<fs::Write, StoreError> {
    let value = serde_json::to_value(doc).map_err(|e| StoreError::Other(e.to_string()))?;
    let document = json_document(name, &value)?;
    let mut mask: Vec<String> = document.fields.keys().map(|k| quote_segment(k)).collect();
    // `recentOps` is left out of an empty list's JSON; naming it anyway clears yesterday's list.
    if !mask.iter().any(|m| m == "recentOps") {
        mask.push("recentOps".to_owned());
    }
    mask.sort();
    Ok(fs::Write {
        operation: Some(fs::write::Operation::Update(document)),
        update_mask: Some(fs::DocumentMask { field_paths: mask }),
        current_document: Some(unchanged(read)),
        ..Default::default()
    })
}

#[async_trait]
impl FlowRunStore for FirestoreStore {
    async fn get_run(&self, run: &RunId) -> Result<Option<Json>, StoreError> {
        self.get_doc(FLOW_RUNS, run.as_str()).await
    }

    async fn claim_step(
        &self,
        run: &RunId,
        selector: &StepSelector,
        params: &ClaimParams,
    ) -> Result<ClaimOutcome, StoreError> {
        let name = self.doc_name(FLOW_RUNS, run.as_str());
        // A compare-and-set, not a read-write transaction: most deliveries find the step held, finished or not yet
        // due and write nothing, and a claim holds no lock, so a process killed mid-claim leaves none behind (the
        // emulator kept such a lock for 60-70 s, stalling every other claim and renewal of the run; Firestore keeps
        // an idle transaction's for up to 60 s). Each attempt decides at its own time: a claim that commits after
        // seconds of contention retries writes a lease counted from that attempt, not one already spent (the holder
        // reads it back from the document).
        let began = tokio::time::Instant::now();
        self.compare_and_set("claim_step", name.clone(), |doc| {
            let params = &ClaimParams {
                now: params.now + chrono::Duration::from_std(began.elapsed()).unwrap_or_default(),
                ..params.clone()
            };
            let (outcome, patch) = decide_claim(doc.value.as_ref(), selector, params);
            Ok((outcome, patch.map(|p| step_patch_write(name.clone(), &p, None))))
        })
        .await
    }

    async fn patch_owned_step(
        &self,
        run: &RunId,
        token: &ClaimToken,
        patch: &StepPatch,
    ) -> Result<PatchOutcome, StoreError> {
        let name = self.doc_name(FLOW_RUNS, run.as_str());
        // A compare-and-set too: a renewal cut short (its holder killed, its future dropped at the fence) holds no lock.
        self.compare_and_set("patch_owned_step", name.clone(), |doc| {
            let outcome = check_owner(doc.value.as_ref(), patch, token);
            let write = (outcome == PatchOutcome::Applied).then(|| step_patch_write(name.clone(), patch, None));
            Ok((outcome, write))
        })
        .await
    }
}

#[async_trait]
impl TemplateStore for FirestoreStore {
    async fn get_templates(&self, ids: &[TemplateId]) -> Result<HashMap<TemplateId, Json>, StoreError> {
        let names: Vec<String> = ids
            .iter()
            .map(|id| self.doc_name(CHART_TEMPLATES, id.as_str()))
            .collect();
        // Read in batches, so a step of many charts never asks one BatchGet for all its templates at once.
        let mut found = HashMap::with_capacity(ids.len());
        for (ids, names) in ids.chunks(TEMPLATE_BATCH).zip(names.chunks(TEMPLATE_BATCH)) {
            let docs = self.with_retry("get_templates", || self.batch_get(names, None)).await?;
            found.extend(
                ids.iter()
                    .zip(docs)
                    .filter_map(|(id, d)| d.value.map(|v| (id.clone(), v))),
            );
        }
        Ok(found)
    }
}

#[async_trait]
impl AccountUsageStore for FirestoreStore {
    async fn reserve(
        &self,
        op: &OpId,
        accounts: &[AccountQuota],
        units: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<Grant>, StoreError> {
        let names: Vec<String> = accounts
            .iter()
            .map(|a| self.doc_name(ACCOUNTS_USAGE, a.id.as_str()))
            .collect();
        if let ([account], [name]) = (accounts, names.as_slice()) {
            // One counter (the ledger's case): compare-and-set, so steps reserving on one account at once never wait
            // on each other's transaction locks.
            return self
                .compare_and_set("reserve", name.clone(), |doc| {
                    let (grants, plan) = plan_reservation(op, accounts, &[usage_of(doc, &account.id)?], units, now);
                    let write = plan
                        .first()
                        .map(|(_, d)| usage_write(name.clone(), d, doc))
                        .transpose()?;
                    Ok((grants, write))
                })
                .await;
        }
        self.transact("reserve", names.clone(), |docs| {
            let current: Vec<Option<UsageDoc>> = docs
                .iter()
                .zip(accounts)
                .map(|(d, a)| usage_of(d, &a.id))
                .collect::<Result<_, _>>()?;
            let (grants, plan) = plan_reservation(op, accounts, &current, units, now);
            let mut writes = Vec::with_capacity(plan.len());
            for (id, doc) in plan {
                let i = accounts
                    .iter()
                    .position(|a| a.id == id)
                    .expect("writes name configured accounts");
                writes.push(usage_write(names[i].clone(), &doc, &docs[i])?);
            }
            Ok((grants, writes))
        })
        .await
    }

    async fn give_back(
        &self,
        op: &OpId,
        account: &AccountId,
        day: NaiveDate,
        units: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let name = self.doc_name(ACCOUNTS_USAGE, account.as_str());
        self.compare_and_set("give_back", name.clone(), |doc| {
            let write = plan_give_back(op, usage_of(doc, account)?.as_ref(), day, units, now)
                .map(|d| usage_write(name.clone(), &d, doc))
                .transpose()?;
            Ok(((), write))
        })
        .await
    }

    async fn mark_exhausted(
        &self,
        account: &AccountQuota,
        day: NaiveDate,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let name = self.doc_name(ACCOUNTS_USAGE, account.id.as_str());
        self.compare_and_set("mark_exhausted", name.clone(), |doc| {
            let write = plan_exhaust(usage_of(doc, &account.id)?.as_ref(), day, account.daily_limit, now)
                .map(|d| usage_write(name.clone(), &d, doc))
                .transpose()?;
            Ok(((), write))
        })
        .await
    }

    async fn get_usage(&self, account: &AccountId) -> Result<Option<UsageDoc>, StoreError> {
        let v = self.get_doc(ACCOUNTS_USAGE, account.as_str()).await?;
        usage_of(
            &TxDoc {
                value: v,
                update_time: None,
            },
            account,
        )
    }
}

#[async_trait]
impl RateWindowStore for FirestoreStore {
    async fn reserve_window(
        &self,
        account: &AccountId,
        ask: &WindowAsk,
        now: DateTime<Utc>,
    ) -> Result<Window, StoreError> {
        let name = self.doc_name(RATE_WINDOWS, account.as_str());
        // A hot document written about once a second per busy instance: compare-and-set, not a locking transaction.
        self.compare_and_set("reserve_window", name.clone(), |doc| {
            let current: Option<RateDoc> = doc
                .value
                .as_ref()
                .map(|v| serde_json::from_value(v.clone()))
                .transpose()
                .map_err(|e| StoreError::Corrupt {
                    path: format!("{RATE_WINDOWS}/{account}"),
                    reason: e.to_string(),
                })?;
            let (window, write) = plan_window(current.as_ref(), ask, now);
            let writes = match write {
                Some(doc) => {
                    let value = serde_json::to_value(&doc).map_err(|e| StoreError::Other(e.to_string()))?;
                    let document = json_document(name.clone(), &value)?;
                    Some(fs::Write {
                        operation: Some(fs::write::Operation::Update(document)),
                        ..Default::default()
                    })
                }
                None => None,
            };
            Ok((window, writes))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::domain::StepId;

    #[test]
    fn a_step_patch_masks_every_field_and_sends_only_the_set_ones() {
        let mut fields = BTreeMap::new();
        fields.insert("status".to_owned(), Some(json!("READY")));
        fields.insert("claimedBy".to_owned(), None);
        let patch = StepPatch {
            step_id: StepId::parse("charts-4h").unwrap(),
            fields,
        };
        let w = step_patch_write("n".into(), &patch, None);
        assert_eq!(
            w.update_mask.unwrap().field_paths,
            vec!["steps.`charts-4h`.claimedBy", "steps.`charts-4h`.status"]
        );
        let Some(fs::write::Operation::Update(doc)) = w.operation else {
            panic!()
        };
        assert_eq!(
            document_to_json(&doc.fields),
            json!({"steps": {"charts-4h": {"status": "READY"}}})
        );
    }

    #[test]
    fn token_errors_and_googles_retryable_codes_are_retried() {
        for code in [
            Code::Unavailable,
            Code::Aborted,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Internal,
            Code::Unauthenticated,
        ] {
            assert!(
                matches!(classify(&Status::new(code, "x")), AttemptError::Retry { .. }),
                "{code:?}"
            );
        }
        for code in [Code::PermissionDenied, Code::InvalidArgument, Code::NotFound] {
            assert!(
                matches!(classify(&Status::new(code, "x")), AttemptError::Fatal(_)),
                "{code:?}"
            );
        }
    }
}
