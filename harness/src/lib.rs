//! A harness as harsh as production, for the worker's end-to-end tests and the local production path:
//! - [`eventarc`] — a local Eventarc: Firestore's Listen API on the emulator, delivered as Eventarc delivers
//!   (binary-mode CloudEvents, protobuf `DocumentEventData`, at least once with Pub/Sub's backoff and ack deadline,
//!   optional duplicates and reordering), every attempt recorded;
//! - [`proxy`] — fault proxies between the worker and each dependency (gRPC to Firestore, HTTP to GCS and
//!   Chart-IMG): delay, reset, refuse, and forward-then-drop-the-reply, for chosen calls or a time window;
//! - [`process`] — the worker's `serve` as a child process: real SIGKILL, SIGTERM timed to the exit, new instances;
//! - [`serve`] — the `worker-serve` binary's entrypoint (the worker's serve path, bound to 127.0.0.1).
//!
//! Binaries: `local-eventarc`, `fault-proxy`, `worker-serve`, `flow-run` (each with `--help`); `scripts/prod-local.sh`
//! wires them up.

pub mod eventarc;
pub mod process;
pub mod proxy;
pub mod serve;

/// Binds `127.0.0.1:<port>` (0 = a port from the kernel) and serves `router` there until the process ends.
pub async fn serve_admin(port: u16, router: axum::Router) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}
