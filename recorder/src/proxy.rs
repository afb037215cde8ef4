//! The recording proxy: any HTTP client (curl, Python tools, the worker in `real` mode) points at it instead of
//! Chart-IMG; it answers from the cassette or forwards upstream and records, per the `Vcr`'s mode.
//!
//! The API key travels in the client's own `x-api-key` header and is forwarded as is; only the cassette gets the
//! placeholder. Errors the proxy itself produces are JSON `{"code", "message", "details"?}` and never quote a key.

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::Router;
use bytes::Bytes;

use crate::model::{Request, Response};
use crate::vcr::{Vcr, VcrError};

/// Largest request body the proxy accepts (Chart-IMG bodies are a few KiB).
const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;

/// Largest upstream answer the proxy reads and records (Chart-IMG's largest images are a few MiB; the worker caps
/// its own reads at the same size).
pub const MAX_UPSTREAM_BODY: usize = 25 * 1024 * 1024;

/// Limits of one upstream exchange: connecting, and the whole request (Chart-IMG's own gateway gives up at ~29 s).
pub const UPSTREAM_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
pub const UPSTREAM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the ones the HTTP stacks
/// recompute. `accept-encoding` is dropped so upstream answers uncompressed and the cassette holds plain bodies.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "accept-encoding",
];

/// What the proxy needs: the upstream base URL, the cassette and the HTTP client used to reach upstream.
///
/// ```
/// let vcr = recorder::Vcr::open(tempfile::tempdir().unwrap().path(), Default::default(), Default::default()).unwrap();
/// let config = recorder::ProxyConfig::new("https://api.chart-img.com", vcr);
/// let _router: axum::Router = recorder::proxy_router(config);
/// ```
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Base URL without a trailing path, e.g. `https://api.chart-img.com`; the request's path and query follow it.
    pub upstream: String,
    pub vcr: Vcr,
    /// Redirects are not followed: the client sees what upstream answered, and that is what gets recorded.
    pub client: reqwest::Client,
}

impl ProxyConfig {
    pub fn new(upstream: impl Into<String>, vcr: Vcr) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(UPSTREAM_CONNECT_TIMEOUT)
            .timeout(UPSTREAM_TIMEOUT)
            .build()
            .expect("a client without custom TLS settings always builds");
        ProxyConfig {
            upstream: upstream.into().trim_end_matches('/').to_owned(),
            vcr,
            client,
        }
    }
}

/// The proxy's own health route (not a Chart-IMG path, so it is never forwarded): `{"status":"ok","mode"}`.
pub const HEALTH_PATH: &str = "/__recorder/health";

/// The proxy as a router: every method and path but [`HEALTH_PATH`] is forwarded. Test it with
/// `tower::ServiceExt::oneshot`.
pub fn proxy_router(config: ProxyConfig) -> Router {
    Router::new()
        .route(HEALTH_PATH, axum::routing::get(health))
        .fallback(forward)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .with_state(Arc::new(config))
}

/// Serves the proxy on `listener` until `shutdown` completes, then finishes in-flight requests.
///
/// ```no_run
/// # async fn f(vcr: recorder::Vcr) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let config = recorder::ProxyConfig::new("https://api.chart-img.com", vcr);
/// recorder::run_proxy(listener, config, async { let _ = tokio::signal::ctrl_c().await; }).await
/// # }
/// ```
pub async fn run_proxy(
    listener: tokio::net::TcpListener,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let vcr = config.vcr.clone();
    axum::serve(listener, proxy_router(config))
        .with_graceful_shutdown(shutdown)
        .await?;
    // Only WritePolicy::OnFlush leaves anything; report a failure here instead of only logging it on drop.
    vcr.flush().map_err(std::io::Error::other)
}

async fn health(State(config): State<Arc<ProxyConfig>>) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok", "mode": config.vcr.mode().to_string() }))
}

/// An upstream failure, already redacted (reqwest errors quote the URL, which may hold a key).
#[derive(Debug)]
struct UpstreamFailure(String);

async fn forward(State(config): State<Arc<ProxyConfig>>, req: axum::extract::Request) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "REQUEST_TOO_LARGE",
                "request body too large",
                None,
            )
        }
    };
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str()).to_owned();
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str().to_owned(), v.to_owned())))
        .collect();
    let request = Request {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query,
        headers,
        body,
    };

    let url = format!("{}{}", config.upstream, path_and_query);
    let result = config.vcr.handle(request, |r| send_upstream(&config, url, r)).await;
    match result {
        Ok(resp) => into_axum(resp),
        Err(VcrError::Miss(miss)) => error_response(
            StatusCode::NOT_FOUND,
            "CHART_API_MOCK_MISSING",
            &miss.to_string(),
            serde_json::to_value(&miss).ok(),
        ),
        Err(VcrError::Upstream(UpstreamFailure(message))) => {
            error_response(StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE", &message, None)
        }
        Err(VcrError::Store(e)) => {
            tracing::error!(error = %e, "could not record the interaction");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "CASSETTE_WRITE_FAILED",
                &e.to_string(),
                None,
            )
        }
    }
}

async fn send_upstream(config: &ProxyConfig, url: String, req: Request) -> Result<Response, UpstreamFailure> {
    send(&config.client, url, req, &|t| config.vcr.redact(t))
        .await
        .map_err(UpstreamFailure)
}

/// Sends a request as is (secrets included) and reads the whole answer. The error is redacted with `redact`
/// (reqwest errors quote the URL, which may hold a key). Shared by the proxy and `recorder record`/`verify`.
pub(crate) async fn send(
    client: &reqwest::Client,
    url: String,
    req: Request,
    redact: &(dyn Fn(&str) -> String + Sync),
) -> Result<Response, String> {
    let redacted = |e: &dyn std::fmt::Display| redact(&format!("upstream request failed: {e}"));
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|e| redacted(&e))?;
    let mut builder = client.request(method, url);
    for (name, value) in &req.headers {
        if !NOT_FORWARDED.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            builder = builder.header(name.as_str(), value.as_str());
        }
    }
    let resp = builder.body(req.body).send().await.map_err(|e| redacted(&e))?;
    let status = resp.status().as_u16();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(n, _)| !NOT_FORWARDED.iter().any(|h| n.as_str().eq_ignore_ascii_case(h)))
        .filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str().to_owned(), v.to_owned())))
        .collect();
    if resp.content_length().is_some_and(|n| n > MAX_UPSTREAM_BODY as u64) {
        return Err(format!(
            "upstream answered a body larger than {MAX_UPSTREAM_BODY} bytes"
        ));
    }
    // Read in chunks so a body without (or with a lying) Content-Length is cut at the cap, never buffered whole.
    let mut resp = resp;
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| redacted(&e))? {
        if body.len() + chunk.len() > MAX_UPSTREAM_BODY {
            return Err(format!(
                "upstream answered a body larger than {MAX_UPSTREAM_BODY} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    Ok(Response { status, headers, body })
}

fn into_axum(resp: Response) -> axum::response::Response {
    let mut out = axum::response::Response::new(Body::from(resp.body));
    *out.status_mut() = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in resp.headers {
        if NOT_FORWARDED.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            out.headers_mut().append(n, v);
        }
    }
    out
}

fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    details: Option<serde_json::Value>,
) -> axum::response::Response {
    let mut body = serde_json::json!({ "code": code, "message": message });
    if let Some(d) = details {
        body["details"] = d;
    }
    let mut out = axum::response::Response::new(Body::from(Bytes::from(body.to_string())));
    *out.status_mut() = status;
    out.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out.headers_mut().insert(
        "x-recorder-error",
        HeaderValue::from_str(code).unwrap_or(HeaderValue::from_static("error")),
    );
    out
}
