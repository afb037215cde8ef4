//! Adapters of the ports. Embedded ones (memory, local files) need no cloud; the Google Cloud ones talk to Firestore
//! and Cloud Storage (or their emulators).

pub mod artifacts;
pub mod docs;
pub mod firestore;
pub mod gcs;

pub use artifacts::{LocalArtifacts, MemoryArtifacts};
pub use docs::{JsonDocs, LocalBackend, MemoryBackend};
pub use firestore::FirestoreStore;
pub use gcs::GcsArtifacts;
