//! A fault-injecting reverse proxy between the worker and one dependency: gRPC over cleartext HTTP/2 (the
//! Firestore emulator) or HTTP/1.1 (fake-gcs-server, Chart-IMG).
//!
//! Clients connect to [`FaultProxy::url`] with HTTP/1.1 or HTTP/2 (prior knowledge, as gRPC clients do); each
//! request is forwarded to the upstream with the protocol the upstream speaks, unless a [`Rule`] matches it:
//! - `delay` — wait, then forward;
//! - `reset` — close the connection (HTTP/2: reset the stream) without forwarding;
//! - `refuse` — answer at once without forwarding: 503 for HTTP, `UNAVAILABLE` for gRPC;
//! - `status` — answer this HTTP status (gRPC: this gRPC status code) without forwarding;
//! - `drop_reply` — forward, wait for the upstream's complete answer (so the upstream applied the request), then
//!   close the connection / reset the stream: the client never learns. The lost-commit case.
//!
//! A rule matches by method, path prefix (`/google.firestore.v1.Firestore/Commit`, `/upload/storage/v1/`) and what the
//! body contains (`/documents/flow_runs/`: the calls naming a flow run, not the quota's), and
//! applies to a range of its matching calls (`skip` then `times`) and/or a time window. Rules change at run time
//! ([`FaultProxy::add_rule`], or the admin routes of [`FaultProxy::admin_router`]); every call is recorded.
//!
//! No package from a registry does this: toxiproxy and its ports work on TCP streams and cannot tell one gRPC call
//! from another on a multiplexed HTTP/2 connection, nor forward a request and then drop only its reply.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// Which requests a rule is about. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Matcher {
    /// `POST`, `GET`, … (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// The request path starts with this (`/google.firestore.v1.Firestore/Commit`, `/upload/`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The request body contains these bytes (`/documents/flow_runs/`: a gRPC call naming a flow run, whose document
    /// names travel as plain UTF-8 in the protobuf). While a rule has one, the proxy reads each request's body before
    /// it forwards it.
    #[serde(default)]
    pub body_contains: Option<String>,
}

impl Matcher {
    pub fn path(prefix: &str) -> Self {
        Matcher {
            method: None,
            path_prefix: Some(prefix.into()),
            body_contains: None,
        }
    }

    /// `body`: the request's body when a rule reads bodies (else `None`, which no `body_contains` matches).
    fn matches(&self, method: &str, path: &str, body: Option<&[u8]>) -> bool {
        self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path_prefix.as_deref().is_none_or(|p| path.starts_with(p))
            && self
                .body_contains
                .as_deref()
                .is_none_or(|needle| body.is_some_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes())))
    }
}

/// What a rule does to a request it applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    Delay { ms: u64 },
    Reset,
    Refuse,
    Status { code: u16 },
    DropReply,
}

/// A fault: which requests, what happens, and to which of the matching calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    #[serde(default, rename = "match")]
    pub matcher: Matcher,
    pub action: Action,
    /// Matching calls let through first (`skip: 2, times: 1` = the third matching call only).
    #[serde(default)]
    pub skip: u32,
    /// How many matching calls (after `skip`) it applies to; every one when absent.
    #[serde(default)]
    pub times: Option<u32>,
    /// The rule is active from this long after it was added…
    #[serde(default)]
    pub after_ms: Option<u64>,
    /// …for this long. Without `afterMs` the window opens at the first matching call.
    #[serde(default)]
    pub for_ms: Option<u64>,
}

impl Rule {
    pub fn new(matcher: Matcher, action: Action) -> Self {
        Rule {
            matcher,
            action,
            skip: 0,
            times: None,
            after_ms: None,
            for_ms: None,
        }
    }
    /// Only the `n`th matching call (1-based).
    pub fn nth(mut self, n: u32) -> Self {
        self.skip = n.saturating_sub(1);
        self.times = Some(1);
        self
    }
    /// The next `n` matching calls.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
    /// Active for `d` from the first matching call.
    pub fn for_duration(mut self, d: Duration) -> Self {
        self.for_ms = Some(d.as_millis() as u64);
        self
    }
}

/// A rule and how often it matched and applied.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleStatus {
    pub id: u64,
    pub rule: Rule,
    pub matched: u32,
    pub applied: u32,
}

struct RuleState {
    id: u64,
    rule: Rule,
    added: Instant,
    first_match: Option<Instant>,
    matched: u32,
    applied: u32,
}

impl RuleState {
    /// Counts a matching call and says whether the rule applies to it.
    fn hit(&mut self, now: Instant) -> bool {
        self.matched += 1;
        let first = *self.first_match.get_or_insert(now);
        let n = self.matched;
        let r = &self.rule;
        let in_range = n > r.skip && r.times.is_none_or(|t| n <= r.skip.saturating_add(t));
        let start = match r.after_ms {
            Some(ms) => self.added + Duration::from_millis(ms),
            None => first,
        };
        let in_window = now >= start && r.for_ms.is_none_or(|ms| now < start + Duration::from_millis(ms));
        let applies = in_range && in_window;
        if applies {
            self.applied += 1;
        }
        applies
    }
}

/// One request through the proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    /// Ms since the proxy started.
    pub at_ms: u64,
    pub method: String,
    pub path: String,
    pub grpc: bool,
    /// Id of the rule that applied, if any.
    pub rule: Option<u64>,
    /// `forwarded`, `delayed`, `reset`, `refused`, `status`, `dropped_reply`, `upstream_error`, or `client_gone` (the
    /// client gave up before the call ended, e.g. during a delay: not forwarded).
    pub action: String,
    /// The upstream's HTTP status (forwarded calls) or the status the proxy answered.
    pub status: Option<u16>,
    pub duration_ms: u64,
}

struct Shared {
    upstream: String,
    started: Instant,
    client: Client<HttpConnector, Body>,
    rules: Mutex<(u64, Vec<RuleState>)>,
    calls: Mutex<Vec<Call>>,
}

/// A running proxy. Dropping it stops accepting connections.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .finish()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How the proxy talks to its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// HTTP/1.1 (fake-gcs-server, Chart-IMG).
    Http1,
    /// Cleartext HTTP/2 with prior knowledge (gRPC: the Firestore emulator).
    Http2,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards to `upstream` (`host:port`, or an `http://` URL).
    pub async fn start(upstream: &str, protocol: Upstream) -> anyhow::Result<FaultProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::with_listener(listener, upstream, protocol)
    }

    pub fn with_listener(
        listener: tokio::net::TcpListener,
        upstream: &str,
        protocol: Upstream,
    ) -> anyhow::Result<FaultProxy> {
        let upstream = upstream
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        anyhow::ensure!(
            !upstream.is_empty() && !upstream.contains('/'),
            "fault proxy: upstream must be host:port, got {upstream:?}"
        );
        let addr = listener.local_addr()?;
        let mut builder = Client::builder(TokioExecutor::new());
        builder.http2_only(protocol == Upstream::Http2);
        let shared = Arc::new(Shared {
            upstream,
            started: Instant::now(),
            client: builder.build(HttpConnector::new()),
            rules: Mutex::new((1, Vec::new())),
            calls: Mutex::new(Vec::new()),
        });
        let accept_shared = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = accept_shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { handle(shared, req).await }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(FaultProxy { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:<port>` (the form of `FIRESTORE_EMULATOR_HOST`).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Adds a rule (checked after the ones already there); returns its id.
    pub fn add_rule(&self, rule: Rule) -> u64 {
        let mut g = self.shared.rules.lock().unwrap_or_else(|p| p.into_inner());
        let id = g.0;
        g.0 += 1;
        g.1.push(RuleState {
            id,
            rule,
            added: Instant::now(),
            first_match: None,
            matched: 0,
            applied: 0,
        });
        id
    }

    pub fn remove_rule(&self, id: u64) -> bool {
        let mut g = self.shared.rules.lock().unwrap_or_else(|p| p.into_inner());
        let before = g.1.len();
        g.1.retain(|r| r.id != id);
        g.1.len() != before
    }

    /// Removes every rule: from now on everything is forwarded (a healed dependency).
    pub fn clear_rules(&self) {
        self.shared.rules.lock().unwrap_or_else(|p| p.into_inner()).1.clear();
    }

    pub fn rules(&self) -> Vec<RuleStatus> {
        let g = self.shared.rules.lock().unwrap_or_else(|p| p.into_inner());
        g.1.iter()
            .map(|r| RuleStatus {
                id: r.id,
                rule: r.rule.clone(),
                matched: r.matched,
                applied: r.applied,
            })
            .collect()
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `GET /rules`, `POST /rules` (a [`Rule`]; answers its id), `DELETE /rules`, `DELETE /rules/{id}`,
    /// `GET /calls`, `GET /health`.
    pub fn admin_router(self: &Arc<Self>) -> axum::Router {
        use axum::extract::Path;
        use axum::routing::{delete, get};
        use axum::Json;
        let (a, b, c, d, e) = (self.clone(), self.clone(), self.clone(), self.clone(), self.clone());
        axum::Router::new()
            .route("/health", get(|| async { "ok" }))
            .route(
                "/rules",
                get(move || async move { Json(a.rules()) })
                    .post(move |Json(r): Json<Rule>| async move { Json(serde_json::json!({"id": b.add_rule(r)})) })
                    .delete(move || async move {
                        c.clear_rules();
                        StatusCode::NO_CONTENT
                    }),
            )
            .route(
                "/rules/{id}",
                delete(move |Path(id): Path<u64>| async move {
                    if d.remove_rule(id) {
                        StatusCode::NO_CONTENT
                    } else {
                        StatusCode::NOT_FOUND
                    }
                }),
            )
            .route("/calls", get(move || async move { Json(e.calls()) }))
    }
}

fn full(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(text.to_owned()))
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// A trailers-only gRPC answer with `code`.
fn grpc_status(code: u16, message: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()).map_err(|e: Infallible| match e {}).boxed());
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(message) {
        h.insert("grpc-message", v);
    }
    r
}

/// Not forwarded; the client sets `host` from the upstream URI.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Returned to hyper to close the connection (HTTP/1) or reset the stream (HTTP/2) without an answer.
#[derive(Debug, thiserror::Error)]
#[error("fault proxy: {0}")]
struct Cut(String);

/// A call through the proxy, recorded once when it ends — or, when hyper drops its future half-way because the
/// client went away, as `client_gone`.
struct PendingCall<'a> {
    shared: &'a Shared,
    call: Call,
    t0: Instant,
    recorded: std::sync::atomic::AtomicBool,
}

impl PendingCall<'_> {
    fn record(&self, action: &str, status: Option<u16>) {
        if self.recorded.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let call = Call {
            action: action.to_owned(),
            status,
            duration_ms: self.t0.elapsed().as_millis() as u64,
            ..self.call.clone()
        };
        self.shared.calls.lock().unwrap_or_else(|p| p.into_inner()).push(call);
    }
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        self.record("client_gone", None);
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Cut> {
    let t0 = Instant::now();
    let at_ms = shared.started.elapsed().as_millis() as u64;
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let reads_bodies = {
        let g = shared.rules.lock().unwrap_or_else(|p| p.into_inner());
        g.1.iter().any(|r| r.rule.matcher.body_contains.is_some())
    };
    let (parts, body) = req.into_parts();
    let (body, read): (Body, Option<Bytes>) = if reads_bodies {
        let bytes = body
            .collect()
            .await
            .map_err(|e| Cut(format!("reading the request body: {e}")))?
            .to_bytes();
        (
            Full::new(bytes.clone()).map_err(|never| match never {}).boxed(),
            Some(bytes),
        )
    } else {
        (body.map_err(|e| Box::new(e) as BoxError).boxed(), None)
    };
    let applied: Option<(u64, Action)> = {
        let mut g = shared.rules.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut found = None;
        for r in g.1.iter_mut() {
            if r.rule.matcher.matches(&method, &path, read.as_deref()) && r.hit(now) && found.is_none() {
                found = Some((r.id, r.rule.action.clone()));
            }
        }
        found
    };
    let call = Call {
        at_ms,
        method,
        path,
        grpc,
        rule: applied.as_ref().map(|(id, _)| *id),
        action: String::new(),
        status: None,
        duration_ms: 0,
    };
    let pending = PendingCall {
        shared: &shared,
        call,
        t0,
        recorded: Default::default(),
    };
    let record = |action: &str, status: Option<u16>| pending.record(action, status);
    let mut drop_reply = false;
    let mut label = "forwarded";
    match applied.as_ref().map(|(_, a)| a) {
        None => {}
        Some(Action::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            label = "delayed";
        }
        Some(Action::Reset) => {
            record("reset", None);
            return Err(Cut("connection reset by rule".into()));
        }
        Some(Action::Refuse) => {
            record("refused", Some(if grpc { 200 } else { 503 }));
            return Ok(if grpc {
                grpc_status(14, "fault proxy: refused")
            } else {
                full(StatusCode::SERVICE_UNAVAILABLE, "fault proxy: refused")
            });
        }
        Some(Action::Status { code }) => {
            record("status", Some(*code));
            return Ok(if grpc {
                grpc_status(*code, "fault proxy: status")
            } else {
                full(
                    StatusCode::from_u16(*code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    "fault proxy: status",
                )
            });
        }
        Some(Action::DropReply) => {
            drop_reply = true;
            label = "dropped_reply";
        }
    }

    let mut parts = parts;
    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    parts.uri = format!("http://{}{pq}", shared.upstream)
        .parse()
        .map_err(|e| Cut(format!("bad upstream URI: {e}")))?;
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    parts.version = http::Version::HTTP_11;
    let upstream_req = Request::from_parts(parts, body);
    let resp = match shared.client.request(upstream_req).await {
        Ok(r) => r,
        Err(e) => {
            record("upstream_error", None);
            return Err(Cut(format!("upstream: {e}")));
        }
    };
    let status = resp.status().as_u16();
    if drop_reply {
        // The upstream's whole answer (gRPC trailers included): by then it has applied the request.
        let _ = resp.into_body().collect().await;
        record(label, Some(status));
        return Err(Cut("reply dropped by rule".into()));
    }
    record(label, Some(status));
    let (mut parts, body) = resp.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    Ok(Response::from_parts(
        parts,
        body.map_err(|e| Box::new(e) as BoxError).boxed(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(rule: Rule) -> RuleState {
        RuleState {
            id: 1,
            rule,
            added: Instant::now(),
            first_match: None,
            matched: 0,
            applied: 0,
        }
    }

    #[test]
    fn nth_and_times_pick_matching_calls() {
        let now = Instant::now();
        let mut s = state(Rule::new(Matcher::default(), Action::Reset).nth(3));
        let hits: Vec<bool> = (0..5).map(|_| s.hit(now)).collect();
        assert_eq!(hits, [false, false, true, false, false]);
        let mut s = state(Rule::new(Matcher::default(), Action::Refuse).times(2));
        let hits: Vec<bool> = (0..4).map(|_| s.hit(now)).collect();
        assert_eq!(hits, [true, true, false, false]);
        assert_eq!((s.matched, s.applied), (4, 2));
    }

    #[test]
    fn a_window_opens_at_the_first_match_or_after_the_given_time() {
        let t = Instant::now();
        let mut s = state(Rule::new(Matcher::default(), Action::Refuse).for_duration(Duration::from_millis(100)));
        assert!(s.hit(t + Duration::from_secs(5)));
        assert!(s.hit(t + Duration::from_millis(5099)));
        assert!(!s.hit(t + Duration::from_millis(5100)));
        let mut r = Rule::new(Matcher::default(), Action::Refuse);
        r.after_ms = Some(50);
        r.for_ms = Some(50);
        let mut s = state(r);
        let added = s.added;
        assert!(!s.hit(added + Duration::from_millis(10)));
        assert!(s.hit(added + Duration::from_millis(60)));
        assert!(!s.hit(added + Duration::from_millis(101)));
    }

    #[test]
    fn matchers_compare_method_path_prefix_and_body() {
        let mut m = Matcher {
            method: Some("post".into()),
            path_prefix: Some("/google.firestore.v1.Firestore/Commit".into()),
            body_contains: None,
        };
        assert!(m.matches("POST", "/google.firestore.v1.Firestore/Commit", None));
        assert!(!m.matches("POST", "/google.firestore.v1.Firestore/BeginTransaction", None));
        assert!(!m.matches("GET", "/google.firestore.v1.Firestore/Commit", None));
        assert!(Matcher::default().matches("GET", "/anything", None));
        m.body_contains = Some("/documents/flow_runs/".into());
        let commit = b"\x00\x00\x00\x00\x40\x0a\x3eprojects/p/databases/(default)/documents/flow_runs/run-1";
        assert!(m.matches("POST", "/google.firestore.v1.Firestore/Commit", Some(commit)));
        let usage = b"\x0a\x3eprojects/p/databases/(default)/documents/chart_img_accounts_usage/acc-1";
        assert!(!m.matches("POST", "/google.firestore.v1.Firestore/Commit", Some(usage)));
        assert!(
            !m.matches("POST", "/google.firestore.v1.Firestore/Commit", None),
            "a body never read matches no needle"
        );
    }

    #[test]
    fn rules_parse_from_json_strictly() {
        let r: Rule =
            serde_json::from_str(r#"{"match": {"pathPrefix": "/upload/"}, "action": {"kind": "refuse"}, "times": 3}"#)
                .unwrap();
        assert_eq!(r, Rule::new(Matcher::path("/upload/"), Action::Refuse).times(3));
        let e = serde_json::from_str::<Rule>(r#"{"action": {"kind": "explode"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("explode"), "{e}");
        assert!(serde_json::from_str::<Rule>(r#"{"action": {"kind": "reset"}, "tmes": 1}"#).is_err());
    }
}
