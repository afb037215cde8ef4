//! Snapshots: `POST /__admin/snapshot` writes the journaled interactions (those matching optional criteria) as a
//! cassette in the `recorder` crate's format, through the recorder's own writer and key redactor: every key becomes
//! `<CHART_IMG_API_KEY:account>`, images are sidecar files under `bodies/`. A session against the mock becomes a
//! cassette the worker's `mock` mode, `recorder proxy` or the mock's own `replay:` can answer from.
//!
//! The journal keeps each request's and answer's bodies for this (and for body criteria) within
//! `journal_body_budget` bytes: past it the oldest records' bodies go first, and a snapshot skips those records
//! and says how many it skipped.
//!
//! **Invariant:** the journal holds no key; the snapshot puts each account's key back only on its way into the
//! recorder, which replaces it by the placeholder before anything is written.

use std::{collections::HashMap, path::PathBuf};

use axum::{
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::reply::{admin_error, parse_body, AdminError};
use crate::{
    state::AppState,
    verify::{Criteria, View},
};

/// `POST /__admin/snapshot`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// The cassette directory to write (on the server's file system; created if missing). It must not hold a
    /// cassette already.
    #[schema(value_type = String)]
    pub dir: PathBuf,
    /// Only the interactions matching these (all when absent).
    #[serde(default)]
    pub criteria: Criteria,
}

/// What a snapshot wrote.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotOutcome {
    /// The cassette directory.
    pub dir: String,
    /// Interactions written, oldest first.
    pub interactions: usize,
    /// Matching records whose bodies the journal no longer kept (`journal_body_budget`), or whose answer was
    /// dropped or cut by a fault: not written.
    pub skipped: usize,
}

impl AppState {
    /// Account → key, for putting keys back on their way into the recorder.
    fn keys(&self) -> HashMap<String, String> {
        self.inner
            .accounts
            .all()
            .iter()
            .map(|a| (a.id().to_string(), a.config.key.clone()))
            .collect()
    }

    /// The recorder's redactor, knowing every key of the mock: the one place keys become placeholders.
    pub(crate) fn secrets(&self) -> recorder::Secrets {
        self.keys()
            .into_iter()
            .fold(recorder::Secrets::new(), |s, (account, key)| {
                s.with_account(account, key.into())
            })
    }

    /// Writes the journaled interactions matching `criteria` as a cassette in `dir` (see the module doc).
    pub async fn snapshot(&self, dir: impl Into<PathBuf>, criteria: &Criteria) -> Result<SnapshotOutcome, String> {
        let dir = dir.into();
        criteria.validate()?;
        if dir.join(recorder::CASSETTE_FILE).exists() {
            return Err(format!(
                "{} already holds a cassette; snapshot into a new directory",
                dir.display()
            ));
        }
        let keys = self.keys();
        let secrets = self.secrets();
        // The recorder's placeholder for a key it does not know; the journal never kept an unknown key.
        let key_of = |account: Option<&str>| {
            account
                .and_then(|a| keys.get(a))
                .cloned()
                .unwrap_or_else(|| "unknown".into())
        };
        let headless = Criteria {
            body: Default::default(),
            ..criteria.clone()
        };
        let (pairs, skipped) = self.inner.journal.scan(|records, _| {
            let mut pairs = Vec::new();
            let mut skipped = 0;
            for (_, r) in records {
                if r.bodies.is_none() {
                    // Not writable; counted when it may match (its body can no longer be checked).
                    skipped += usize::from(headless.matches(&View::of(r)));
                    continue;
                }
                if !criteria.matches(&View::of(r)) {
                    continue;
                }
                let answered = r
                    .status
                    .zip(r.bodies.as_ref().and_then(|b| b.response.clone().map(|x| (b, x))));
                let Some((status, (b, answer))) = answered.filter(|_| !r.faults.contains(&"truncated_body")) else {
                    skipped += 1;
                    continue;
                };
                let mut req = recorder::Request::new(r.method_str(), r.path.to_string());
                for (k, v) in r.query_pairs() {
                    req = req.with_query(k, v);
                }
                if r.key_status != "missing" {
                    let key = key_of(r.account.as_deref());
                    req = if r.key_in_query {
                        req.with_query("key", key)
                    } else {
                        req.with_header("x-api-key", key)
                    };
                }
                if let Some(ct) = &b.request_type {
                    req = req.with_header("content-type", ct.as_ref());
                }
                req = req.with_body(b.request.clone());
                let mut resp = recorder::Response::new(status).with_body(answer);
                if let Some(ct) = &b.response_type {
                    resp = resp.with_header("content-type", ct.as_ref());
                }
                pairs.push((req, resp));
            }
            // Oldest first: repeated identical requests replay in the order they were answered.
            pairs.reverse();
            (pairs, skipped)
        });
        if pairs.is_empty() {
            return Err(format!(
                "no journaled interaction to write ({skipped} matching records without their bodies or answer)"
            ));
        }
        let config = recorder::VcrConfig {
            mode: recorder::Mode::All,
            write: recorder::WritePolicy::OnFlush,
            ..recorder::VcrConfig::default()
        };
        let vcr =
            recorder::Vcr::open(&dir, config, secrets).map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
        let n = pairs.len();
        for (req, resp) in pairs {
            vcr.handle(req, |_| async { Ok::<_, std::convert::Infallible>(resp) })
                .await
                .map_err(|e| match e {
                    recorder::VcrError::Store(e) => format!("cannot write the cassette: {e}"),
                    other => format!("cannot record: {other}"),
                })?;
        }
        vcr.flush().map_err(|e| format!("cannot write the cassette: {e}"))?;
        Ok(SnapshotOutcome {
            dir: dir.display().to_string(),
            interactions: n,
            skipped,
        })
    }
}

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/__admin/snapshot", post(snapshot))
}

/// Writes the journaled interactions (matching the optional criteria) as a recorder cassette.
#[utoipa::path(post, path = "/__admin/snapshot", request_body = SnapshotRequest,
    responses((status = 201, body = SnapshotOutcome), (status = 400, body = AdminError),
              (status = 409, body = AdminError)))]
async fn snapshot(State(st): State<AppState>, body: Bytes) -> Response {
    let req: SnapshotRequest = match parse_body("snapshot", &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match st.snapshot(req.dir, &req.criteria).await {
        Ok(o) => (StatusCode::CREATED, Json(o)).into_response(),
        Err(m) if m.contains("already holds a cassette") => admin_error(StatusCode::CONFLICT, m),
        Err(m) => admin_error(StatusCode::BAD_REQUEST, m),
    }
}

/// The snapshot route's part of the admin OpenAPI document.
#[derive(OpenApi)]
#[openapi(paths(snapshot), components(schemas(SnapshotRequest, SnapshotOutcome)))]
pub(crate) struct SnapshotApi;
