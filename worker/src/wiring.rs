//! The wiring of a worker process: the ports and settings a step runs with.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Lifecycle;
use crate::domain::WorkerId;
use crate::ports::{AccountUsageStore, ArtifactStore, ChartRenderer, Clock, FlowRunStore, TemplateStore};
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
