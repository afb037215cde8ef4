//! The Firestore collections the worker reads and writes (`contract.md` §2), named once for every adapter, the
//! event parser and the tools that seed or read them.

/// `flow_runs/{runId}`: the flow runs whose steps the worker runs; their events wake it.
pub const FLOW_RUNS: &str = "flow_runs";
/// `chart_templates/{templateId}`: the chart templates a step's requests name.
pub const CHART_TEMPLATES: &str = "chart_templates";
/// `chart_img_accounts_usage/{accountId}`: each key's daily usage and its grants.
pub const ACCOUNTS_USAGE: &str = "chart_img_accounts_usage";
/// `chart_img_rate/{accountId}`: the per-key rate windows shared by every instance ([`crate::domain::rate`]).
pub const RATE_WINDOWS: &str = "chart_img_rate";
