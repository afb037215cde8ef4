//! Verification as the control API: [`AppState`]'s methods (count, find, unmatched, expectations, verify) and their
//! `/__admin` routes. The criteria and expectations themselves are [`crate::verify`]'s.

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};
use utoipa::OpenApi;

use super::reply::{admin_error, parse_body, AdminError, Created};
use crate::{
    record::JournalEntry,
    state::AppState,
    verify::{
        CountAnswer, Criteria, Expectation, ExpectationResult, FindQuery, InstalledExpectation, NearRequest,
        VerifyReport, View,
    },
};

/// How many closest requests a report lists per unmet expectation.
const CLOSEST: usize = 3;

impl AppState {
    /// How many journaled requests match `criteria` (see [`CountAnswer::complete`]).
    pub fn count(&self, criteria: &Criteria) -> Result<CountAnswer, String> {
        criteria.validate()?;
        Ok(self.inner.journal.scan(|records, complete| {
            let mut count = 0;
            let mut complete = complete;
            for (_, r) in records {
                if criteria.needs_body() && r.bodies.is_none() {
                    complete = false;
                    continue;
                }
                count += u64::from(criteria.matches(&View::of(r)));
            }
            CountAnswer { count, complete }
        }))
    }

    /// The journaled requests matching `criteria`, newest first.
    pub fn find(&self, criteria: &Criteria, limit: Option<usize>) -> Result<Vec<JournalEntry>, String> {
        criteria.validate()?;
        Ok(self.inner.journal.scan(|records, _| {
            records
                .filter(|(_, r)| criteria.matches(&View::of(r)))
                .take(limit.unwrap_or(usize::MAX))
                .map(|(seq, r)| r.entry(seq))
                .collect()
        }))
    }

    /// Requests no route took (`404`/`405` paths) and requests refused before a key was known (missing or unknown
    /// key), newest first.
    pub fn unmatched(&self) -> Vec<JournalEntry> {
        self.inner.journal.scan(|records, _| {
            records
                .filter(|(_, r)| !r.routed || matches!(r.key_status, "missing" | "unknown"))
                .map(|(seq, r)| r.entry(seq))
                .collect()
        })
    }

    /// Installs an expectation; its count starts at 0.
    pub fn add_expectation(&self, expectation: Expectation) -> Result<u64, String> {
        expectation.validate()?;
        Ok(self.inner.journal.expectations.add(expectation, "admin"))
    }

    /// Every expectation's verdict, with the closest requests of the unmet ones.
    pub fn verify(&self) -> VerifyReport {
        let list = self.inner.journal.expectations.list();
        let results: Vec<ExpectationResult> = list
            .into_iter()
            .map(|e| {
                let ok = e.spec.holds(e.matched);
                let closest = if ok {
                    Vec::new()
                } else {
                    let too_many = e.spec.count.or(e.spec.max).is_some_and(|m| e.matched > m);
                    self.closest(&e.spec.criteria, too_many)
                };
                ExpectationResult {
                    id: e.id,
                    name: e.spec.name.clone(),
                    wanted: e.spec.wanted(),
                    matched: e.matched,
                    ok,
                    criteria: e.spec.criteria,
                    closest,
                }
            })
            .collect();
        let unmet = results.iter().filter(|r| !r.ok).count();
        VerifyReport {
            ok: unmet == 0,
            unmet,
            expectations: results,
        }
    }

    /// Too many: the newest matching requests. Too few: the requests failing the fewest criteria (newest first
    /// among equals).
    fn closest(&self, criteria: &Criteria, too_many: bool) -> Vec<NearRequest> {
        // A body field the criteria name may hold a key the client sent: differences show placeholders.
        let secrets = self.secrets();
        self.inner.journal.scan(|records, _| {
            let mut near: Vec<(usize, NearRequest)> = records
                .filter_map(|(seq, r)| {
                    let differs: Vec<String> = criteria
                        .mismatches(&View::of(r))
                        .into_iter()
                        .map(|d| secrets.redact(&d).into_owned())
                        .collect();
                    if too_many != differs.is_empty() {
                        return None;
                    }
                    Some((
                        differs.len(),
                        NearRequest {
                            seq,
                            request: format!("{} {}", r.method_str(), r.path),
                            account: r.account.as_deref().map(str::to_owned),
                            status: r.status,
                            differs,
                        },
                    ))
                })
                .collect();
            // Among equals, a request that has the field with another value is closer than one without it.
            let without = |r: &NearRequest| r.differs.iter().filter(|d| !d.contains(", got ")).count();
            near.sort_by_key(|(n, r)| (*n, without(r), std::cmp::Reverse(r.seq)));
            near.into_iter().take(CLOSEST).map(|(_, r)| r).collect()
        })
    }
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/__admin/requests/count", post(count))
        .route("/__admin/requests/find", post(find))
        .route("/__admin/requests/unmatched", get(unmatched))
        .route(
            "/__admin/expectations",
            get(list_expectations).post(add_expectation).delete(clear_expectations),
        )
        .route("/__admin/expectations/{id}", delete(remove_expectation))
        .route("/__admin/verify", get(verify))
}

/// How many journaled requests match the criteria.
#[utoipa::path(post, path = "/__admin/requests/count", request_body = Criteria,
    responses((status = 200, body = CountAnswer), (status = 400, body = AdminError)))]
async fn count(State(st): State<AppState>, body: Bytes) -> Response {
    let criteria: Criteria = match parse_body("criteria", &body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match st.count(&criteria) {
        Ok(a) => Json(a).into_response(),
        Err(m) => admin_error(StatusCode::BAD_REQUEST, m),
    }
}

/// The journaled requests matching the criteria, newest first.
#[utoipa::path(post, path = "/__admin/requests/find", request_body = Criteria, params(FindQuery),
    responses((status = 200, body = Vec<JournalEntry>), (status = 400, body = AdminError)))]
async fn find(State(st): State<AppState>, Query(q): Query<FindQuery>, body: Bytes) -> Response {
    let criteria: Criteria = match parse_body("criteria", &body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match st.find(&criteria, q.limit) {
        Ok(a) => Json(a).into_response(),
        Err(m) => admin_error(StatusCode::BAD_REQUEST, m),
    }
}

/// Requests no route took (404/405) and requests refused before a key was known, newest first.
#[utoipa::path(get, path = "/__admin/requests/unmatched", responses((status = 200, body = Vec<JournalEntry>)))]
async fn unmatched(State(st): State<AppState>) -> Json<Vec<JournalEntry>> {
    Json(st.unmatched())
}

/// The installed expectations with their counts.
#[utoipa::path(get, path = "/__admin/expectations", responses((status = 200, body = Vec<InstalledExpectation>)))]
async fn list_expectations(State(st): State<AppState>) -> Json<Vec<InstalledExpectation>> {
    Json(st.inner.journal.expectations.list())
}

/// Installs an expectation (criteria and `count`, or `min`/`max`); it counts the requests journaled from now on.
#[utoipa::path(post, path = "/__admin/expectations", request_body = Expectation,
    responses((status = 201, body = Created), (status = 400, body = AdminError)))]
async fn add_expectation(State(st): State<AppState>, body: Bytes) -> Response {
    let spec: Expectation = match parse_body("expectation", &body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match st.add_expectation(spec) {
        Ok(id) => (StatusCode::CREATED, Json(Created { id: id.to_string() })).into_response(),
        Err(m) => admin_error(StatusCode::BAD_REQUEST, m),
    }
}

/// Removes one expectation.
#[utoipa::path(delete, path = "/__admin/expectations/{id}", params(("id" = u64, Path)),
    responses((status = 204), (status = 404, body = AdminError)))]
async fn remove_expectation(State(st): State<AppState>, Path(id): Path<u64>) -> Response {
    if st.inner.journal.expectations.remove(id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        admin_error(StatusCode::NOT_FOUND, format!("no expectation {id}"))
    }
}

/// Removes every expectation (those from the config file too, until the next reload).
#[utoipa::path(delete, path = "/__admin/expectations", responses((status = 204)))]
async fn clear_expectations(State(st): State<AppState>) -> StatusCode {
    st.inner.journal.expectations.clear();
    StatusCode::NO_CONTENT
}

/// Checks every expectation: `200` when all hold, `417` with each unmet one and its closest requests otherwise.
#[utoipa::path(get, path = "/__admin/verify",
    responses((status = 200, body = VerifyReport), (status = 417, body = VerifyReport)))]
async fn verify(State(st): State<AppState>) -> Response {
    let report = st.verify();
    let status = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::EXPECTATION_FAILED
    };
    (status, Json(report)).into_response()
}

/// The verification routes' part of the admin OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(
        count,
        find,
        unmatched,
        list_expectations,
        add_expectation,
        remove_expectation,
        clear_expectations,
        verify
    ),
    components(schemas(
        Criteria,
        CountAnswer,
        Expectation,
        InstalledExpectation,
        VerifyReport,
        ExpectationResult,
        NearRequest
    ))
)]
pub(crate) struct VerifyApi;
