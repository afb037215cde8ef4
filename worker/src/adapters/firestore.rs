//! [`FirestoreStore`]: the flow-run, template and usage ports on Cloud Firestore (or its emulator), over the gRPC
//! client of the `firestore` crate.
//!
//! The adapter speaks the Firestore v1 RPCs itself (`BeginTransaction`, `BatchGetDocuments`, `Commit`, `Rollback`)
//! rather than through the crate's transaction helper, for three reasons: the retry budget must be bounded in attempts
//! and in time (the helper's default retries some errors forever); only ABORTED and transport failures may be retried
//! (a decode error or a refused document must surface at once); and every write must be a field-masked update with a
//! precondition, which the pure decisions of [`crate::domain`] describe as JSON.
//!
//! Documents cross the port as `serde_json::Value` (see [`document_to_json`] and [`json_to_value`]): Firestore
//! timestamps read as RFC 3339 strings, bytes as base64, references as their path, geo points as
//! `{latitude, longitude}`. The time fields the worker writes (`startedAt`, `leaseExpiresAt`, `finishedAt`,
//! `updatedAt`) are stored as Firestore timestamps, so they sort and filter as times in the console and in queries.
//!
//! Invariants:
//! - Every read-modify-write is one read-write transaction; its decision is the same pure function the embedded
//!   stores run ([`decide_claim`], [`check_owner`], [`plan_reservation`], [`plan_give_back`], [`plan_exhaust`]).
//! - A flow run is only ever written through `steps.<stepId>.<field>` masks, with an `updateTime` precondition
//!   taken from the transaction's own read; the rest of the document is never rewritten.
//! - A transaction is retried only on ABORTED, on a failed precondition and on transport failures, at most
//!   [`TxPolicy::max_attempts`] times within [`TxPolicy::max_total`]; then it fails with [`StoreError::Contention`]
//!   or [`StoreError::Unavailable`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use firestore::gcloud_sdk::google::firestore::v1 as fs;
use firestore::gcloud_sdk::google::firestore::v1::firestore_client::FirestoreClient;
use firestore::gcloud_sdk::google::r#type::LatLng;
use firestore::gcloud_sdk::prost_types::Timestamp;
use firestore::gcloud_sdk::tonic::{Code, Status};
use firestore::gcloud_sdk::GoogleAuthMiddleware;
use firestore::{FirestoreDb, FirestoreDbOptions};
use futures::StreamExt;
use serde_json::{Map, Number, Value as Json};
use tracing::{debug, warn};

use crate::adapters::docs::{ACCOUNTS_USAGE, CHART_TEMPLATES, FLOW_RUNS};
use crate::domain::step::{check_owner, decide_claim};
use crate::domain::usage::{plan_exhaust, plan_give_back, plan_reservation};
use crate::domain::{
    AccountId, AccountQuota, ClaimOutcome, ClaimParams, Grant, PatchOutcome, RunId, StepPatch, StepSelector,
    TemplateId, UsageDoc, WorkerId,
};
use crate::ports::{AccountUsageStore, FlowRunStore, StoreError, TemplateStore};

/// Fields the worker writes as times; stored as Firestore timestamps, read back as RFC 3339 strings.
const TIME_FIELDS: [&str; 4] = ["startedAt", "leaseExpiresAt", "finishedAt", "updatedAt"];

/// How a read-write transaction is retried, and how long one RPC may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxPolicy {
    /// Attempts of one transaction, the first included.
    pub max_attempts: u32,
    /// Wall-clock budget of one transaction, retries and backoff included.
    pub max_total: Duration,
    /// Backoff before the second attempt; doubles each time up to `max_backoff`, with full jitter.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Limit of one RPC; a call that takes longer counts as a transport failure.
    pub call_timeout: Duration,
}

impl Default for TxPolicy {
    /// Sized for Cloud Run: a delivery has 300 s by default, and a contended usage counter (about one write per
    /// second per document) clears a handful of concurrent transactions within seconds.
    fn default() -> Self {
        Self {
            max_attempts: 12,
            max_total: Duration::from_secs(90),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// The retry budget of one operation (a transaction or a plain call): full-jitter exponential backoff, bounded in
/// attempts and in total time by the [`TxPolicy`]. Shared by every retry loop of this adapter.
struct RetryBudget {
    op: &'static str,
    started: Instant,
    attempt: u32,
    backoff: Duration,
    max_backoff: Duration,
    max_attempts: u32,
    max_total: Duration,
}

impl RetryBudget {
    fn new(policy: &TxPolicy, op: &'static str) -> Self {
        RetryBudget {
            op,
            started: Instant::now(),
            attempt: 0,
            backoff: policy.min_backoff,
            max_backoff: policy.max_backoff,
            max_attempts: policy.max_attempts,
            max_total: policy.max_total,
        }
    }

    /// After a retryable failure: sleeps before the next attempt, or gives up with `Contention` (the failure was an
    /// aborted transaction) or `Unavailable` once the budget is spent.
    async fn wait(&mut self, contention: bool, message: String) -> Result<(), StoreError> {
        self.attempt += 1;
        let op = self.op;
        let sleep = self.backoff.mul_f64(rand::random::<f64>());
        if self.attempt >= self.max_attempts || self.started.elapsed() + sleep >= self.max_total {
            let what = format!("{op}: gave up after {} attempts in {:?}: {message}", self.attempt, self.started.elapsed());
            warn!(event = "transaction_gave_up", op, attempts = self.attempt, contention, "{what}");
            return Err(if contention { StoreError::Contention(what) } else { StoreError::Unavailable(what) });
        }
        debug!(event = "transaction_retry", op, attempt = self.attempt, contention, "{message}");
        tokio::time::sleep(sleep).await;
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        Ok(())
    }
}

/// The three document ports on one Firestore database. Cheap to clone.
#[derive(Clone)]
pub struct FirestoreStore {
    db: FirestoreDb,
    policy: TxPolicy,
}

impl std::fmt::Debug for FirestoreStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirestoreStore").field("database", self.db.get_database_path()).finish()
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

impl FirestoreStore {
    /// Connects to project `project_id`, database `(default)`. With `FIRESTORE_EMULATOR_HOST` set the emulator is
    /// used and no credentials are looked up; otherwise Application Default Credentials (on Cloud Run: the service's
    /// service account).
    pub async fn new(project_id: &str) -> Result<Self, StoreError> {
        let db = FirestoreDb::with_options(FirestoreDbOptions::new(project_id.to_owned()))
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to Firestore: {e}")))?;
        Ok(Self::from_db(db))
    }

    /// Wraps a client built elsewhere (other database id, explicit credentials).
    pub fn from_db(db: FirestoreDb) -> Self {
        Self { db, policy: TxPolicy::default() }
    }

    pub fn with_policy(mut self, policy: TxPolicy) -> Self {
        self.policy = policy;
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

    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, AttemptError> {
        match tokio::time::timeout(self.policy.call_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(status)) => Err(classify(&status)),
            Err(_) => Err(AttemptError::Retry {
                contention: false,
                message: format!("no answer within {:?}", self.policy.call_timeout),
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
                None => Ok(TxDoc { value: None, update_time: None }),
                Some(doc) => Ok(TxDoc { update_time: doc.update_time, value: Some(document_to_json(&doc.fields)) }),
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
        let mut budget = RetryBudget::new(&self.policy, op);
        let mut retry_transaction: Vec<u8> = Vec::new();
        loop {
            match self.attempt(&names, &mut decide, &mut retry_transaction).await {
                Ok(r) => return Ok(r),
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Retry { contention, message }) => budget.wait(contention, message).await?,
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
                mode: Some(fs::transaction_options::Mode::ReadWrite(fs::transaction_options::ReadWrite {
                    // Naming the aborted transaction keeps this one's place in the lock queue.
                    retry_transaction: std::mem::take(retry_transaction),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        let mut client = self.client();
        let tx = self.call(client.begin_transaction(begin)).await?.into_inner().transaction;
        *retry_transaction = tx.clone();
        let docs = match self.batch_get(names, Some(&tx)).await {
            Ok(d) => d,
            Err(e) => {
                self.rollback(tx);
                return Err(e);
            }
        };
        let (out, writes) = match decide(&docs) {
            Ok(x) => x,
            Err(e) => {
                self.rollback(tx);
                return Err(AttemptError::Fatal(e));
            }
        };
        if writes.is_empty() {
            // Nothing to write: release the read locks now rather than when the transaction times out.
            self.rollback(tx);
            return Ok(out);
        }
        let commit = fs::CommitRequest {
            database: self.database_path().to_owned(),
            writes,
            transaction: tx,
            ..Default::default()
        };
        self.call(client.commit(commit)).await?;
        Ok(out)
    }

    /// Best effort, in the background: a transaction that is not rolled back expires by itself.
    fn rollback(&self, transaction: Vec<u8>) {
        let mut client = self.client();
        let database = self.database_path().to_owned();
        tokio::spawn(async move {
            let _ = client.rollback(fs::RollbackRequest { database, transaction, ..Default::default() }).await;
        });
    }

    /// Non-transactional reads and writes, retried on transport failures within the policy.
    async fn with_retry<T, F, Fut>(&self, op: &'static str, mut f: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AttemptError>>,
    {
        let mut budget = RetryBudget::new(&self.policy, op);
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Retry { contention, message }) => budget.wait(contention, message).await?,
            }
        }
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
        let write = fs::Write { operation: Some(fs::write::Operation::Update(doc)), ..Default::default() };
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
        let write =
            fs::Write { operation: Some(fs::write::Operation::Delete(self.doc_name(collection, id))), ..Default::default() };
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

fn exists(yes: bool) -> fs::Precondition {
    fs::Precondition { condition_type: Some(fs::precondition::ConditionType::Exists(yes)) }
}

/// The precondition of a transactional write: the document is still the version the transaction read.
fn unchanged(doc: &TxDoc) -> fs::Precondition {
    match &doc.update_time {
        Some(t) => fs::Precondition { condition_type: Some(fs::precondition::ConditionType::UpdateTime(*t)) },
        None => exists(false),
    }
}

fn classify(status: &Status) -> AttemptError {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        // ABORTED: lost a lock or a commit race. FAILED_PRECONDITION on a transactional write: the document moved.
        Code::Aborted | Code::FailedPrecondition => AttemptError::Retry { contention: true, message },
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled | Code::Internal
        | Code::Unknown => AttemptError::Retry { contention: false, message },
        Code::AlreadyExists => AttemptError::Fatal(StoreError::Other(format!("ALREADY_EXISTS: {}", status.message()))),
        _ => AttemptError::Fatal(StoreError::Other(message)),
    }
}

/// Quotes one segment of a field path when Firestore requires it: anything but `[A-Za-z_][A-Za-z0-9_]*` goes
/// between backticks, with `` ` `` and `\` escaped by a backslash.
pub fn quote_segment(s: &str) -> String {
    let simple = !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if simple {
        s.to_owned()
    } else {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('`');
        for c in s.chars() {
            if c == '`' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('`');
        out
    }
}

/// `a.b.c` from raw segments, each quoted as needed.
pub fn field_path(segments: &[&str]) -> String {
    segments.iter().map(|s| quote_segment(s)).collect::<Vec<_>>().join(".")
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

fn map_value(fields: HashMap<String, fs::Value>) -> fs::Value {
    fs::Value { value_type: Some(fs::value::ValueType::MapValue(fs::MapValue { fields })) }
}

/// A top-level or step field: the worker's time fields become timestamps, everything else converts as is.
fn field_value(name: &str, v: &Json) -> fs::Value {
    if TIME_FIELDS.contains(&name) {
        if let Some(t) = v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()) {
            let t = t.with_timezone(&Utc);
            return fs::Value {
                value_type: Some(fs::value::ValueType::TimestampValue(Timestamp {
                    seconds: t.timestamp(),
                    // Firestore keeps microseconds; a finer time would be refused as not microsecond-aligned.
                    nanos: (t.timestamp_subsec_micros() * 1000) as i32,
                })),
            };
        }
    }
    json_to_value(v)
}

/// A JSON value as a Firestore value. Integers that fit `i64` stay integers; others become doubles.
pub fn json_to_value(v: &Json) -> fs::Value {
    use fs::value::ValueType as T;
    let t = match v {
        Json::Null => T::NullValue(0),
        Json::Bool(b) => T::BooleanValue(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => T::IntegerValue(i),
            None => T::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => T::StringValue(s.clone()),
        Json::Array(a) => T::ArrayValue(fs::ArrayValue { values: a.iter().map(json_to_value).collect() }),
        Json::Object(o) => T::MapValue(fs::MapValue {
            fields: o.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect(),
        }),
    };
    fs::Value { value_type: Some(t) }
}

/// A whole JSON object as a document named `name` (the top level must be an object).
pub fn json_document(name: String, v: &Json) -> Result<fs::Document, StoreError> {
    let Json::Object(o) = v else {
        return Err(StoreError::Other(format!("{name}: a document must be a JSON object")));
    };
    Ok(fs::Document {
        name,
        fields: o.iter().map(|(k, v)| (k.clone(), field_value(k, v))).collect(),
        ..Default::default()
    })
}

/// RFC 3339 in UTC with `Z`; whole seconds print without a fraction, so times the worker wrote read back verbatim.
pub fn timestamp_to_rfc3339(t: &Timestamp) -> String {
    match DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.clamp(0, 999_999_999) as u32) {
        Some(dt) => dt.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => format!("{}s", t.seconds),
    }
}

/// A Firestore value as JSON (see the module documentation for the mapping). Map keys come out sorted, so a
/// document reads the same every time.
pub fn value_to_json(v: &fs::Value) -> Json {
    use fs::value::ValueType as T;
    match &v.value_type {
        None | Some(T::NullValue(_)) => Json::Null,
        Some(T::BooleanValue(b)) => Json::Bool(*b),
        Some(T::IntegerValue(i)) => Json::from(*i),
        // JSON has no NaN or infinity; they read as null.
        Some(T::DoubleValue(d)) => Number::from_f64(*d).map(Json::Number).unwrap_or(Json::Null),
        Some(T::TimestampValue(t)) => Json::String(timestamp_to_rfc3339(t)),
        Some(T::StringValue(s)) => Json::String(s.clone()),
        Some(T::BytesValue(b)) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Some(T::ReferenceValue(r)) => Json::String(r.clone()),
        Some(T::GeoPointValue(LatLng { latitude, longitude })) => {
            let mut m = Map::new();
            m.insert("latitude".into(), Number::from_f64(*latitude).map(Json::Number).unwrap_or(Json::Null));
            m.insert("longitude".into(), Number::from_f64(*longitude).map(Json::Number).unwrap_or(Json::Null));
            Json::Object(m)
        }
        Some(T::ArrayValue(a)) => Json::Array(a.values.iter().map(value_to_json).collect()),
        Some(T::MapValue(m)) => document_to_json(&m.fields),
        // Pipeline-only expressions never appear in stored documents.
        Some(T::FieldReferenceValue(_) | T::VariableReferenceValue(_) | T::FunctionValue(_) | T::PipelineValue(_)) => {
            Json::Null
        }
    }
}

/// The fields of a document (or map) as a JSON object with sorted keys.
pub fn document_to_json(fields: &HashMap<String, fs::Value>) -> Json {
    let mut keys: Vec<&String> = fields.keys().collect();
    keys.sort();
    Json::Object(keys.into_iter().map(|k| (k.clone(), value_to_json(&fields[k]))).collect())
}

fn usage_of(doc: &TxDoc, id: &AccountId) -> Result<Option<UsageDoc>, StoreError> {
    doc.value
        .as_ref()
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| StoreError::Corrupt { path: format!("{ACCOUNTS_USAGE}/{id}"), reason: e.to_string() })
}

/// A usage counter write: its own five fields (other fields someone added survive), guarded by the version read.
fn usage_write(name: String, doc: &UsageDoc, read: &TxDoc) -> Result<fs::Write, StoreError> {
    let value = serde_json::to_value(doc).map_err(|e| StoreError::Other(e.to_string()))?;
    let document = json_document(name, &value)?;
    let mut mask: Vec<String> = document.fields.keys().map(|k| quote_segment(k)).collect();
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

    async fn claim_step(&self, run: &RunId, selector: &StepSelector, params: &ClaimParams) -> Result<ClaimOutcome, StoreError> {
        let name = self.doc_name(FLOW_RUNS, run.as_str());
        self.transact("claim_step", vec![name.clone()], |docs| {
            let (outcome, patch) = decide_claim(docs[0].value.as_ref(), selector, params);
            let writes = patch.map(|p| step_patch_write(name.clone(), &p, Some(unchanged(&docs[0])))).into_iter().collect();
            Ok((outcome, writes))
        })
        .await
    }

    async fn patch_owned_step(&self, run: &RunId, owner: &WorkerId, patch: &StepPatch) -> Result<PatchOutcome, StoreError> {
        let name = self.doc_name(FLOW_RUNS, run.as_str());
        self.transact("patch_owned_step", vec![name.clone()], |docs| {
            let outcome = check_owner(docs[0].value.as_ref(), &patch.step_id, owner);
            let writes = match outcome {
                PatchOutcome::Applied => vec![step_patch_write(name.clone(), patch, Some(unchanged(&docs[0])))],
                _ => Vec::new(),
            };
            Ok((outcome, writes))
        })
        .await
    }
}

#[async_trait]
impl TemplateStore for FirestoreStore {
    async fn get_templates(&self, ids: &[TemplateId]) -> Result<HashMap<TemplateId, Json>, StoreError> {
        let names: Vec<String> = ids.iter().map(|id| self.doc_name(CHART_TEMPLATES, id.as_str())).collect();
        let docs = self.with_retry("get_templates", || self.batch_get(&names, None)).await?;
        Ok(ids.iter().zip(docs).filter_map(|(id, d)| d.value.map(|v| (id.clone(), v))).collect())
    }
}

#[async_trait]
impl AccountUsageStore for FirestoreStore {
    async fn reserve(&self, accounts: &[AccountQuota], units: u32, now: DateTime<Utc>) -> Result<Vec<Grant>, StoreError> {
        let names: Vec<String> = accounts.iter().map(|a| self.doc_name(ACCOUNTS_USAGE, a.id.as_str())).collect();
        self.transact("reserve", names.clone(), |docs| {
            let current: Vec<Option<UsageDoc>> =
                docs.iter().zip(accounts).map(|(d, a)| usage_of(d, &a.id)).collect::<Result<_, _>>()?;
            let (grants, plan) = plan_reservation(accounts, &current, units, now);
            let mut writes = Vec::with_capacity(plan.len());
            for (id, doc) in plan {
                let i = accounts.iter().position(|a| a.id == id).expect("writes name configured accounts");
                writes.push(usage_write(names[i].clone(), &doc, &docs[i])?);
            }
            Ok((grants, writes))
        })
        .await
    }

    async fn give_back(&self, account: &AccountId, day: NaiveDate, units: u32, now: DateTime<Utc>) -> Result<(), StoreError> {
        let name = self.doc_name(ACCOUNTS_USAGE, account.as_str());
        self.transact("give_back", vec![name.clone()], |docs| {
            let writes = match plan_give_back(usage_of(&docs[0], account)?.as_ref(), day, units, now) {
                Some(doc) => vec![usage_write(name.clone(), &doc, &docs[0])?],
                None => Vec::new(),
            };
            Ok(((), writes))
        })
        .await
    }

    async fn mark_exhausted(&self, account: &AccountQuota, day: NaiveDate, now: DateTime<Utc>) -> Result<(), StoreError> {
        let name = self.doc_name(ACCOUNTS_USAGE, account.id.as_str());
        self.transact("mark_exhausted", vec![name.clone()], |docs| {
            let writes = match plan_exhaust(usage_of(&docs[0], &account.id)?.as_ref(), day, account.daily_limit, now) {
                Some(doc) => vec![usage_write(name.clone(), &doc, &docs[0])?],
                None => Vec::new(),
            };
            Ok(((), writes))
        })
        .await
    }

    async fn get_usage(&self, account: &AccountId) -> Result<Option<UsageDoc>, StoreError> {
        let v = self.get_doc(ACCOUNTS_USAGE, account.as_str()).await?;
        usage_of(&TxDoc { value: v, update_time: None }, account)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::domain::StepId;

    #[test]
    fn segments_with_special_characters_are_quoted() {
        assert_eq!(quote_segment("status"), "status");
        assert_eq!(quote_segment("charts_4h"), "charts_4h");
        assert_eq!(quote_segment("charts-4h"), "`charts-4h`");
        assert_eq!(quote_segment("4h"), "`4h`");
        assert_eq!(quote_segment("a`b\\c"), "`a\\`b\\\\c`");
        assert_eq!(field_path(&["steps", "x.y", "claimedBy"]), "steps.`x.y`.claimedBy");
    }

    #[test]
    fn json_round_trips_through_firestore_values() {
        let v = json!({"a": 1, "b": -2.5, "c": "s", "d": [true, null, {"e": []}], "f": {}, "big": u64::MAX});
        let back = value_to_json(&json_to_value(&v));
        assert_eq!(back["a"], json!(1));
        assert_eq!(back["b"], json!(-2.5));
        assert_eq!(back["d"], json!([true, null, {"e": []}]));
        assert_eq!(back["f"], json!({}));
        assert_eq!(back["big"].as_f64(), Some(u64::MAX as f64));
    }

    #[test]
    fn time_fields_are_timestamps_that_read_back_verbatim() {
        let v = field_value("leaseExpiresAt", &json!("2026-11-28T10:15:00Z"));
        assert!(matches!(v.value_type, Some(fs::value::ValueType::TimestampValue(_))));
        assert_eq!(value_to_json(&v), json!("2026-11-28T10:15:00Z"));
        assert!(matches!(field_value("note", &json!("2026-11-28T10:15:00Z")).value_type, Some(fs::value::ValueType::StringValue(_))));
        let bytes = fs::Value { value_type: Some(fs::value::ValueType::BytesValue(vec![0, 255])) };
        assert_eq!(value_to_json(&bytes), json!("AP8="));
    }

    #[test]
    fn a_step_patch_masks_every_field_and_sends_only_the_set_ones() {
        let mut fields = BTreeMap::new();
        fields.insert("status".to_owned(), Some(json!("READY")));
        fields.insert("claimedBy".to_owned(), None);
        let patch = StepPatch { step_id: StepId::parse("charts-4h").unwrap(), fields };
        let w = step_patch_write("n".into(), &patch, None);
        assert_eq!(w.update_mask.unwrap().field_paths, vec!["steps.`charts-4h`.claimedBy", "steps.`charts-4h`.status"]);
        let Some(fs::write::Operation::Update(doc)) = w.operation else { panic!() };
        assert_eq!(document_to_json(&doc.fields), json!({"steps": {"charts-4h": {"status": "READY"}}}));
    }
}
