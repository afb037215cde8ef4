//! Adapters of the ports. Embedded ones (memory, local files) need no cloud; the Google Cloud ones talk to Firestore
//! and Cloud Storage (or their emulators).

mod artifacts;
mod docs;
pub(crate) mod firestore;
pub(crate) mod gcs;

pub use artifacts::{content_type_for, LocalArtifacts, MemoryArtifacts};
pub use docs::{JsonDocs, LocalBackend, MemoryBackend};
pub use firestore::FirestoreStore;
pub use gcs::{emulator_endpoint, encode_component, GcsArtifacts};
