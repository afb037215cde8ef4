//! End-to-end scenarios. Each file in `scenarios/` is a situation (`given`), a delivery (`when`) and its expected
//! outcome (`then`); [`runner::run`] plays it against the Firestore and GCS emulators, mock-chart-img over HTTP and
//! the worker's real entrypoints. The format is documented in `scenarios/README.md`.
//!
//! Invariant: every scenario runs in its own Firestore project and bucket, so scenarios never see each other's data.

pub mod fleet;
pub mod private_firestore;
pub mod runner;
pub mod scenario;
