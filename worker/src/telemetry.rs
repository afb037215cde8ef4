//! How the worker binary writes its logs: Cloud Logging JSON lines (the layer is `cloud_run_kit`'s, shared with the
//! mock: a delivery's lines carry its trace, error lines Error Reporting's shape with this service's
//! `serviceContext`) or compact text, filtered by `RUST_LOG`.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use cloud_run_kit::{CloudLoggingLayer, ServiceContext};

/// Error Reporting's `serviceContext` of this binary: Cloud Run's `K_SERVICE`/`K_REVISION`, else its own name and
/// version.
pub fn service_context() -> ServiceContext {
    ServiceContext::from_env("worker-chart-export", env!("CARGO_PKG_VERSION"))
}

/// How logs are written by the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Cloud Logging JSON lines.
    Json,
    /// Compact human-readable lines.
    Text,
}

/// Installs the global subscriber: JSON or text on stderr (`to_stderr`) or stdout, filtered by `RUST_LOG`
/// (default `info`). Calling it twice is harmless.
pub fn init(format: LogFormat, to_stderr: bool) {
    init_with_default(format, to_stderr, "info")
}

/// [`init`] with another default level when `RUST_LOG` is unset.
pub fn init_with_default(format: LogFormat, to_stderr: bool, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match (format, to_stderr) {
        (LogFormat::Json, true) => registry
            .with(CloudLoggingLayer::new(std::io::stderr).with_service(service_context()))
            .try_init(),
        (LogFormat::Json, false) => registry
            .with(CloudLoggingLayer::new(std::io::stdout).with_service(service_context()))
            .try_init(),
        (LogFormat::Text, _) => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_target(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}
