//! [`GcsArtifacts`]: the artifact port on Cloud Storage's JSON API (or fake-gcs-server).
//!
//! Reads go through `gcloud-storage`. Uploads are one `uploadType=multipart` request (`multipart/related`: a JSON
//! metadata part, then the bytes with their own `Content-Type`) that this adapter builds itself, because the crate's
//! multipart upload sends its data part without a content type and its simple (`media`) upload cannot be made
//! create-only on fake-gcs-server 1.54, which honours `ifGenerationMatch` only on multipart uploads and takes the
//! stored content type from the data part. The request is the documented JSON API one, so production and the
//! emulator see the same bytes: `contentType` in the metadata (what GCS keeps), the same type on the data part (what
//! fake-gcs keeps), and `ifGenerationMatch=0` for create-only writes (HTTP 412 when the object exists).
//!
//! Credentials: anonymous against an emulator (`STORAGE_EMULATOR_HOST`); Application Default Credentials otherwise,
//! through the crate's token source, which the upload shares.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::Error as GcsError;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use token_source::{TokenSource, TokenSourceProvider};
use tracing::debug;

use crate::domain::ObjectRef;
use crate::ports::{ArtifactError, ArtifactStore, ObjectMetadata, StoredObject, WriteMode};
use crate::retry::RetryPolicy;

/// Everything but RFC 3986 unreserved characters is escaped in a path segment or a query value.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `s` percent-encoded as one URL path component of the JSON API (a bucket, an object name with its slashes): what the
/// harness and tests use too when they read objects back from fake-gcs-server.
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

pub const PRODUCTION_ENDPOINT: &str = "https://storage.googleapis.com";

/// Cloud Storage through its JSON API. Cheap to clone.
#[derive(Clone)]
pub struct GcsArtifacts {
    /// The HTTP clients, built on first use: building one loads the system's CA certificates (about 10 ms), which
    /// has no place on the path to the first health answer of a cold Cloud Run instance.
    clients: Arc<tokio::sync::OnceCell<Clients>>,
    /// `https://storage.googleapis.com`, or the emulator's `http://host:port`.
    endpoint: String,
    /// `None` against an emulator: requests go unauthenticated.
    token: Option<Arc<dyn TokenSource>>,
    /// Retries of one upload or read on a transient failure (408, 429, 5xx, transport, token); uploads are
    /// idempotent per mode, so a retry after a lost answer is safe.
    retry: RetryPolicy,
}

/// One `reqwest` client (one TLS root store) shared by the crate's client and the upload.
struct Clients {
    /// The crate's client: object metadata and downloads.
    client: Client,
    /// Plain HTTP for the multipart upload (see the module documentation).
    http: reqwest::Client,
}

impl fmt::Debug for GcsArtifacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsArtifacts")
            .field("endpoint", &self.endpoint)
            .field("authenticated", &self.token.is_some())
            .finish()
    }
}

/// `STORAGE_EMULATOR_HOST` as a base URL: `host:port` gets `http://`, a URL keeps its scheme.
pub fn emulator_endpoint(host: &str) -> String {
    let host = host.trim().trim_end_matches('/');
    if host.starts_with("http://") || host.starts_with("https://") {
        host.to_owned()
    } else {
        format!("http://{host}")
    }
}

impl GcsArtifacts {
    /// The emulator at `storage_emulator_host` when given, else production with Application Default Credentials.
    pub async fn new(storage_emulator_host: Option<&str>) -> Result<Self, ArtifactError> {
        match storage_emulator_host {
            Some(host) => Ok(Self::emulator(&emulator_endpoint(host))),
            None => Self::production().await,
        }
    }

    /// An emulator (or any endpoint) with anonymous credentials.
    pub fn emulator(endpoint: &str) -> Self {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        Self {
            clients: Arc::default(),
            endpoint,
            token: None,
            retry: RetryPolicy::GCS,
        }
    }

    /// `storage.googleapis.com` with Application Default Credentials (on Cloud Run: the service account).
    pub async fn production() -> Result<Self, ArtifactError> {
        let config = ClientConfig::default()
            .with_auth()
            .await
            .map_err(|e| ArtifactError::Unavailable(format!("no Google credentials for Cloud Storage: {e}")))?;
        let token = config.token_source_provider.as_ref().map(|p| p.token_source());
        Ok(Self {
            clients: Arc::default(),
            endpoint: PRODUCTION_ENDPOINT.to_owned(),
            token,
            retry: RetryPolicy::GCS,
        })
    }

    /// The clients, built once. The crate's client gets the shared `reqwest` client and this adapter's token
    /// source, so both paths authenticate the same way.
    async fn clients(&self) -> &Clients {
        self.clients
            .get_or_init(|| async {
                let http = http_client();
                let token = self.token.clone();
                let config = ClientConfig {
                    http: Some(reqwest_middleware::ClientBuilder::new(http.clone()).build()),
                    storage_endpoint: self.endpoint.clone(),
                    token_source_provider: token.map(|t| Box::new(SharedToken(t)) as Box<dyn TokenSourceProvider>),
                    ..Default::default()
                };
                Clients {
                    client: Client::new(config),
                    http,
                }
            })
            .await
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn authorization(&self) -> Result<Option<String>, ArtifactError> {
        match &self.token {
            None => Ok(None),
            Some(t) => t
                .token()
                .await
                .map(Some)
                .map_err(|e| ArtifactError::Unavailable(format!("cannot get a Cloud Storage token: {e}"))),
        }
    }

    async fn upload_once(
        &self,
        obj: &ObjectRef,
        bytes: &Bytes,
        content_type: &str,
        mode: WriteMode,
        custom: &ObjectMetadata,
    ) -> Result<(), Attempt> {
        let mut url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=multipart",
            self.endpoint,
            utf8_percent_encode(&obj.bucket, COMPONENT)
        );
        if mode == WriteMode::CreateOnly {
            url.push_str("&ifGenerationMatch=0");
        }
        let boundary = format!("worker-chart-export-{}", uuid::Uuid::new_v4().simple());
        let mut metadata = serde_json::json!({ "name": obj.path, "contentType": content_type });
        if !custom.is_empty() {
            metadata["metadata"] = serde_json::json!(custom);
        }
        let mut body = Vec::with_capacity(bytes.len() + 512);
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n").as_bytes(),
        );
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: {content_type}\r\n\r\n").as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut request = self
            .clients()
            .await
            .http
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/related; boundary={boundary}"),
            )
            .body(body);
        // A token that cannot be had right now (metadata server hiccup, refresh race) is a transient failure.
        if let Some(auth) = self
            .authorization()
            .await
            .map_err(|e| Attempt::Transient(e.to_string()))?
        {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Err(Attempt::Transient(format!("upload of {obj} failed: {e}"))),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let detail: String = text.chars().take(300).collect();
        match status.as_u16() {
            412 if mode == WriteMode::CreateOnly => Err(Attempt::Final(ArtifactError::AlreadyExists(obj.uri()))),
            408 | 429 | 500..=599 => Err(Attempt::Transient(format!("upload of {obj}: HTTP {status}: {detail}"))),
            401 if self.token.is_some() => Err(Attempt::Transient(format!(
                "upload of {obj}: HTTP {status} (token refresh)"
            ))),
            _ => Err(Attempt::Final(ArtifactError::Other(format!(
                "upload of {obj}: HTTP {status}: {detail}"
            )))),
        }
    }
}

/// Hands the adapter's token source to the crate's client.
#[derive(Debug)]
struct SharedToken(Arc<dyn TokenSource>);

impl TokenSourceProvider for SharedToken {
    fn token_source(&self) -> Arc<dyn TokenSource> {
        self.0.clone()
    }
}

enum Attempt {
    Transient(String),
    Final(ArtifactError),
}

/// The longest one Cloud Storage HTTP request (an upload of a chart or a manifest) may take; `deploy-plan`'s ack margin
/// counts it after the retry budget.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("a reqwest client with timeouts builds")
}

fn read_error(obj: &ObjectRef, e: GcsError) -> ArtifactError {
    match &e {
        GcsError::Response(r) if r.code == 408 || r.code == 429 || r.code >= 500 => {
            ArtifactError::Unavailable(format!("read of {obj}: {e}"))
        }
        GcsError::HttpClient(_) | GcsError::TokenSource(_) => ArtifactError::Unavailable(format!("read of {obj}: {e}")),
        _ => ArtifactError::Other(format!("read of {obj}: {e}")),
    }
}

fn is_not_found(e: &GcsError) -> bool {
    matches!(e, GcsError::Response(r) if r.code == 404)
}

#[async_trait]
impl ArtifactStore for GcsArtifacts {
    async fn put_with(
        &self,
        obj: &ObjectRef,
        bytes: Bytes,
        content_type: &str,
        mode: WriteMode,
        metadata: &ObjectMetadata,
    ) -> Result<(), ArtifactError> {
        // A create-only retry after a lost answer may meet its own object: that reads as AlreadyExists, which the
        // core treats as "the manifest is there", the right conclusion.
        self.retry
            .run(
                || self.upload_once(obj, &bytes, content_type, mode, metadata),
                |e| matches!(e, Attempt::Transient(_)),
                |e, after| {
                    if let Attempt::Transient(m) = e {
                        debug!(event = "gcs_upload_retry", after_ms = after.as_millis() as u64, "{m}");
                    }
                },
            )
            .await
            .map_err(|e| match e {
                Attempt::Final(e) => e,
                Attempt::Transient(m) => ArtifactError::Unavailable(m),
            })
    }

    async fn get(&self, obj: &ObjectRef) -> Result<Option<StoredObject>, ArtifactError> {
        self.retry
            .run(
                || self.get_once(obj),
                |e| matches!(e, ArtifactError::Unavailable(_)),
                |_, _| {},
            )
            .await
    }

    async fn delete(&self, obj: &ObjectRef) -> Result<bool, ArtifactError> {
        self.retry
            .run(
                || self.delete_once(obj),
                |e| matches!(e, ArtifactError::Unavailable(_)),
                |_, _| {},
            )
            .await
    }
}

impl GcsArtifacts {
    async fn delete_once(&self, obj: &ObjectRef) -> Result<bool, ArtifactError> {
        let req = DeleteObjectRequest {
            bucket: obj.bucket.clone(),
            object: obj.path.clone(),
            ..Default::default()
        };
        match self.clients().await.client.delete_object(&req).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(read_error(obj, e)),
        }
    }

    async fn get_once(&self, obj: &ObjectRef) -> Result<Option<StoredObject>, ArtifactError> {
        let req = GetObjectRequest {
            bucket: obj.bucket.clone(),
            object: obj.path.clone(),
            ..Default::default()
        };
        let client = &self.clients().await.client;
        let meta = match client.get_object(&req).await {
            Ok(m) => m,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(read_error(obj, e)),
        };
        let bytes = match client.download_object(&req, &Range::default()).await {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(read_error(obj, e)),
        };
        Ok(Some(StoredObject {
            bytes: bytes.into(),
            content_type: meta.content_type.unwrap_or_default(),
            metadata: meta.metadata.unwrap_or_default().into_iter().collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_host_becomes_a_base_url() {
        assert_eq!(emulator_endpoint("127.0.0.1:4443"), "http://127.0.0.1:4443");
        assert_eq!(emulator_endpoint("http://localhost:9023/"), "http://localhost:9023");
    }

    #[test]
    fn bucket_names_are_escaped_in_the_upload_url() {
        assert_eq!(utf8_percent_encode("a b/c", COMPONENT).to_string(), "a%20b%2Fc");
    }
}
