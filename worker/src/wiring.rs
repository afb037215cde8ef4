//! The wiring of a worker process: the ports and settings a step runs with, built here and nowhere else —
//! [`Worker::with_documents`] for any document store, [`Worker::on_google_cloud`] for the production one.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::adapters::{FirestoreStore, GcsArtifacts};
use crate::config::{Lifecycle, Settings};
use crate::domain::WorkerId;
use crate::pacing::{SharedRate, WindowSettings};
use crate::ports::{AccountUsageStore, ArtifactStore, ChartRenderer, Clock, FlowRunStore, SystemClock, TemplateStore};
use crate::quota::AccountPool;
use crate::retry::RetryPolicy;
use crate::shutdown::Shutdown;

/// Settings of the core, separate from the process configuration so tests can build them directly.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub worker_id: WorkerId,
    pub bucket: String,
    pub timezone: String,
    /// The memory-safe maximum of charts of one step in flight; the number in flight is computed from the accounts'
    /// plans and the latency seen ([`AccountPool::in_flight`]), at most this.
    pub concurrency: usize,
    /// The most charts one step may ask for; more fail the step `VALIDATION_FAILED`.
    pub max_requests: usize,
    /// How long a claim (or its last renewal) holds before another worker may reclaim the step.
    pub lease: Duration,
    /// Retries of one Chart-IMG call.
    pub retry: RetryPolicy,
    /// Heartbeat, step deadline, attempts, release backoff, shutdown grace.
    pub lifecycle: Lifecycle,
}

/// The ports and settings one worker process runs steps with. Cheap to clone.
#[derive(Clone)]
pub struct Worker {
    pub flow_runs: Arc<dyn FlowRunStore>,
    pub templates: Arc<dyn TemplateStore>,
    pub usage: Arc<dyn AccountUsageStore>,
    pub renderer: Arc<dyn ChartRenderer>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub clock: Arc<dyn Clock>,
    pub accounts: AccountPool,
    pub settings: CoreSettings,
    /// Fired on SIGTERM: running steps stop starting calls and finish or release within the grace period.
    pub shutdown: Shutdown,
}

impl CoreSettings {
    /// The core's part of the process configuration, for the instance `worker_id` writing to `bucket`.
    pub fn from_settings(settings: &Settings, worker_id: WorkerId, bucket: String) -> Self {
        CoreSettings {
            worker_id,
            bucket,
            timezone: settings.timezone.clone(),
            concurrency: settings.concurrency,
            max_requests: settings.max_requests,
            lease: settings.lease,
            retry: settings.retry,
            lifecycle: settings.lifecycle,
        }
    }
}

impl Worker {
    /// A worker whose flow runs, templates and usage live in one document store (`JsonDocs` embedded, or
    /// `FirestoreStore`), on the system clock, with a shutdown that never fires (see [`Worker::with_clock`] and
    /// [`Worker::with_shutdown`]).
    pub fn with_documents<D>(
        docs: D,
        renderer: Arc<dyn ChartRenderer>,
        artifacts: Arc<dyn ArtifactStore>,
        accounts: AccountPool,
        settings: CoreSettings,
    ) -> Self
    where
        D: FlowRunStore + TemplateStore + AccountUsageStore + Clone + 'static,
    {
        Worker {
            flow_runs: Arc::new(docs.clone()),
            templates: Arc::new(docs.clone()),
            usage: Arc::new(docs),
            renderer,
            artifacts,
            clock: Arc::new(SystemClock),
            accounts,
            settings,
            shutdown: Shutdown::never(),
        }
    }

    /// The same worker on another clock (tests move time by hand).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same worker stopped by `shutdown` (SIGTERM in `serve`).
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// The production worker: Firestore and Cloud Storage (or their emulators), the renderer of `CHART_IMG_MODE`,
    /// every key's rate shared with the other instances through rate windows.
    pub async fn on_google_cloud(settings: &Settings) -> anyhow::Result<Worker> {
        if settings.accounts.is_empty() {
            anyhow::bail!("CHART_IMG_ACCOUNTS_JSON: no Chart-IMG account configured");
        }
        let bucket = settings.bucket.clone().context("ARTIFACTS_BUCKET: is not set")?;
        let project = match &settings.project {
            Some(p) => p.clone(),
            None => firestore::gcloud_sdk::GoogleEnvironment::detect_google_project_id()
                .await
                .context("GOOGLE_CLOUD_PROJECT: is not set and no project could be detected from the environment")?,
        };
        let store = FirestoreStore::connect(&project, &settings.firestore_database)
            .await?
            .with_policy(RetryPolicy {
                max_total_delay: settings.store_retry_total,
                ..RetryPolicy::FIRESTORE
            });
        let artifacts = GcsArtifacts::new(settings.storage_emulator_host.as_deref())
            .await?
            .with_retry(RetryPolicy {
                max_total_delay: settings.store_retry_total,
                ..RetryPolicy::GCS
            });
        let renderer = crate::renderers::build(settings)?;
        let worker_id = worker_id("serve");
        // Every instance of the service shares the keys: each key's rate goes through windows in Firestore.
        let rate = SharedRate {
            store: Arc::new(store.clone()),
            clock: Arc::new(SystemClock),
            holder: worker_id.to_string(),
            windows: WindowSettings::default(),
        };
        let core = CoreSettings::from_settings(settings, worker_id, bucket);
        Ok(Worker::with_documents(
            store,
            renderer,
            Arc::new(artifacts),
            AccountPool::shared(settings.accounts.clone(), rate),
            core,
        ))
    }
}

/// A worker id unique to this process.
pub fn worker_id(prefix: &str) -> WorkerId {
    let host = std::env::var("K_REVISION")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "local".into());
    let raw = format!(
        "{prefix}-{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    WorkerId::parse(raw.replace('/', "_")).expect("generated worker ids are plain")
}
