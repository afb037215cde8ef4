//! Fault injection: latency, scripted statuses, random errors and broken connections, scoped to an account, a
//! route, or everything. This is how a client's retry code is exercised.
//!
//! **Invariant:** the fault list is consulted under one mutex, so a status sequence hands out each of its statuses
//! exactly once even when requests race, and `times` never lets a fault fire more often than asked.

use std::{sync::Mutex, time::Duration};

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which chart route a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// `POST /v2/tradingview/advanced-chart`
    AdvancedChart,
    /// `POST /v2/tradingview/advanced-chart/storage`
    Storage,
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Waits `ms` (or a random time in `min_ms..=max_ms`) and then answers normally; adds up with other faults.
    Latency,
    /// Answers the `statuses` in order, one per matching request (`200` lets that request through), then retires.
    StatusSequence,
    /// Answers `status` (default 500) with probability `rate`.
    ErrorRate,
    /// Closes the connection with a TCP reset before any byte of the answer.
    ConnectionReset,
    /// Closes the connection cleanly without answering (clients see an empty reply).
    EmptyResponse,
    /// Answers normally but cuts the body in half and closes the connection (the `content-length` is the full one).
    TruncatedBody,
    /// Answers 200 with a body that is not an image (`body`, default a short HTML page) and `content_type`
    /// (default `image/png`, so only a client that checks the bytes notices).
    NonImageBody,
}

impl FaultKind {
    /// The snake_case name, as in config files.
    pub fn as_str(&self) -> &'static str {
        match self {
            FaultKind::Latency => "latency",
            FaultKind::StatusSequence => "status_sequence",
            FaultKind::ErrorRate => "error_rate",
            FaultKind::ConnectionReset => "connection_reset",
            FaultKind::EmptyResponse => "empty_response",
            FaultKind::TruncatedBody => "truncated_body",
            FaultKind::NonImageBody => "non_image_body",
        }
    }
}

/// One fault: what it does, which requests it applies to, and how often.
///
/// The same flat shape is used in config files and by `POST /__admin/faults`:
///
/// ```yaml
/// faults:
///   - kind: status_sequence
///     account: acc-1          # optional: only this account's key
///     route: advanced-chart   # optional: advanced-chart | storage
///     statuses: [503, 503, 200]
/// ```
///
/// ```
/// use mock_chart_img::{FaultSpec, Route};
/// let f = FaultSpec::connection_reset().for_account("acc-1").on_route(Route::Storage).times(1);
/// assert_eq!(f.times, Some(1));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// What the fault does.
    pub kind: FaultKind,
    /// Only requests made with this account's key; any request (even without a key) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Only this route; both when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
    /// Fire for the next `times` matching requests only, then retire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// `latency`: fixed delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// `latency`: lower bound of a random delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ms: Option<u64>,
    /// `latency`: upper bound of a random delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
    /// `status_sequence`: the statuses to answer in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statuses: Option<Vec<u16>>,
    /// `error_rate`: probability in `0..=1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// `error_rate`: the status to answer (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `status_sequence` / `error_rate`: replaces the documented `message` of the status (e.g. `Limit Exceeded`
    /// for a 429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `non_image_body`: the content type to claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `non_image_body`: the body to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl FaultSpec {
    fn of(kind: FaultKind) -> Self {
        FaultSpec {
            kind,
            account: None,
            route: None,
            times: None,
            ms: None,
            min_ms: None,
            max_ms: None,
            statuses: None,
            rate: None,
            status: None,
            message: None,
            content_type: None,
            body: None,
        }
    }
    /// A fixed delay before the answer.
    pub fn latency_ms(ms: u64) -> Self {
        FaultSpec {
            ms: Some(ms),
            ..Self::of(FaultKind::Latency)
        }
    }
    /// A random delay in `min_ms..=max_ms` before the answer.
    pub fn random_latency_ms(min_ms: u64, max_ms: u64) -> Self {
        FaultSpec {
            min_ms: Some(min_ms),
            max_ms: Some(max_ms),
            ..Self::of(FaultKind::Latency)
        }
    }
    /// Answers these statuses in order (`200` = answer normally), then retires.
    pub fn status_sequence(statuses: impl IntoIterator<Item = u16>) -> Self {
        FaultSpec {
            statuses: Some(statuses.into_iter().collect()),
            ..Self::of(FaultKind::StatusSequence)
        }
    }
    /// Answers `status` with probability `rate`.
    pub fn error_rate(rate: f64, status: u16) -> Self {
        FaultSpec {
            rate: Some(rate),
            status: Some(status),
            ..Self::of(FaultKind::ErrorRate)
        }
    }
    /// Resets the connection.
    pub fn connection_reset() -> Self {
        Self::of(FaultKind::ConnectionReset)
    }
    /// Closes the connection without an answer.
    pub fn empty_response() -> Self {
        Self::of(FaultKind::EmptyResponse)
    }
    /// Sends half of the body.
    pub fn truncated_body() -> Self {
        Self::of(FaultKind::TruncatedBody)
    }
    /// Answers 200 with a body that is not an image.
    pub fn non_image_body() -> Self {
        Self::of(FaultKind::NonImageBody)
    }
    /// Only for requests made with `account`'s key.
    pub fn for_account(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }
    /// Only for `route`.
    pub fn on_route(mut self, route: Route) -> Self {
        self.route = Some(route);
        self
    }
    /// Only the next `n` matching requests.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
    /// Replaces the documented message of the injected status.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Checks the fields needed by `kind` are there and in range.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let k = self.kind.as_str();
        let status_ok = |s: u16| (100..=599).contains(&s);
        match self.kind {
            FaultKind::Latency => match (self.ms, self.min_ms, self.max_ms) {
                (Some(_), None, None) => Ok(()),
                (None, Some(a), Some(b)) if a <= b => Ok(()),
                (None, Some(_), Some(_)) => Err(format!("fault `{k}`: `min_ms` must not exceed `max_ms`")),
                _ => Err(format!("fault `{k}`: give either `ms` or both `min_ms` and `max_ms`")),
            },
            FaultKind::StatusSequence => match &self.statuses {
                Some(s) if !s.is_empty() && s.iter().all(|s| status_ok(*s)) => Ok(()),
                _ => Err(format!(
                    "fault `{k}`: `statuses` must be a non-empty list of HTTP statuses"
                )),
            },
            FaultKind::ErrorRate => match self.rate {
                Some(r) if (0.0..=1.0).contains(&r) && self.status.is_none_or(status_ok) => Ok(()),
                _ => Err(format!(
                    "fault `{k}`: `rate` must be within 0..=1 and `status` an HTTP status"
                )),
            },
            _ => Ok(()),
        }
    }
}

/// A fault as installed, with its progress.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstalledFault {
    /// Handle for `DELETE /__admin/faults/{id}`.
    pub id: u64,
    /// Where it came from: `config` (replaced on reload) or `admin`.
    pub origin: String,
    /// How many requests it has fired on.
    pub fired: u64,
    /// The fault itself.
    #[serde(flatten)]
    pub spec: FaultSpec,
    #[serde(skip)]
    seq_pos: usize,
}

/// What the faults decided for one request.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    pub latency: Duration,
    pub action: Option<Action>,
    /// Names of the faults that fired, for the journal.
    pub fired: Vec<&'static str>,
}

#[derive(Debug, Clone)]
pub(crate) enum Action {
    Status { status: u16, message: Option<String> },
    Reset,
    Empty,
    Truncate,
    NonImage { content_type: String, body: String },
}

pub(crate) struct Faults {
    inner: Mutex<FaultsInner>,
    /// How many faults are installed, readable without the lock: most requests meet no fault at all, and under
    /// load the lock would be the one point every request of every key queues on.
    count: std::sync::atomic::AtomicUsize,
}

struct FaultsInner {
    next_id: u64,
    list: Vec<InstalledFault>,
    // Seeded from the config so a failing test run can be replayed with the same dice.
    rng: StdRng,
}

impl Faults {
    pub fn new(seed: u64, specs: &[FaultSpec]) -> Self {
        let f = Faults {
            inner: Mutex::new(FaultsInner {
                next_id: 1,
                list: Vec::new(),
                rng: StdRng::seed_from_u64(seed),
            }),
            count: Default::default(),
        };
        f.replace_config(specs);
        f
    }

    pub fn add(&self, spec: FaultSpec, origin: &str) -> u64 {
        let mut g = self.inner.lock().unwrap();
        let id = g.next_id;
        g.next_id += 1;
        g.list.push(InstalledFault {
            id,
            origin: origin.to_string(),
            fired: 0,
            spec,
            seq_pos: 0,
        });
        self.count.store(g.list.len(), std::sync::atomic::Ordering::SeqCst);
        id
    }

    /// Swaps the faults that came from the config file, keeping those added at run time.
    pub fn replace_config(&self, specs: &[FaultSpec]) {
        {
            let mut g = self.inner.lock().unwrap();
            g.list.retain(|f| f.origin != "config");
            self.count.store(g.list.len(), std::sync::atomic::Ordering::SeqCst);
        }
        for s in specs {
            self.add(s.clone(), "config");
        }
    }

    pub fn remove(&self, id: u64) -> bool {
        let mut g = self.inner.lock().unwrap();
        let before = g.list.len();
        g.list.retain(|f| f.id != id);
        self.count.store(g.list.len(), std::sync::atomic::Ordering::SeqCst);
        g.list.len() != before
    }

    pub fn clear(&self) {
        self.inner.lock().unwrap().list.clear();
        self.count.store(0, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn list(&self) -> Vec<InstalledFault> {
        self.inner.lock().unwrap().list.clone()
    }

    /// Consults every fault for a request from `account` on `route`. Latencies add up; the first fault that
    /// decides the answer wins, and the ones after it are not consumed.
    pub fn decide(&self, account: Option<&str>, route: Route) -> Decision {
        let mut d = Decision::default();
        if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            return d;
        }
        let mut g = self.inner.lock().unwrap();
        let FaultsInner { list, rng, .. } = &mut *g;
        for f in list.iter_mut() {
            let s = &f.spec;
            if s.account.as_deref().is_some_and(|a| Some(a) != account) || s.route.is_some_and(|r| r != route) {
                continue;
            }
            if d.action.is_some() && f.spec.kind != FaultKind::Latency {
                continue;
            }
            let fired = match s.kind {
                FaultKind::Latency => {
                    let ms = match (s.ms, s.min_ms, s.max_ms) {
                        (Some(ms), _, _) => ms,
                        (None, Some(a), Some(b)) => rng.random_range(a..=b),
                        _ => 0,
                    };
                    d.latency += Duration::from_millis(ms);
                    true
                }
                FaultKind::StatusSequence => {
                    let statuses = s.statuses.as_deref().unwrap_or(&[]);
                    let status = statuses.get(f.seq_pos).copied();
                    f.seq_pos += 1;
                    match status {
                        Some(200) | None => {}
                        Some(status) => {
                            d.action = Some(Action::Status {
                                status,
                                message: s.message.clone(),
                            })
                        }
                    }
                    status.is_some()
                }
                FaultKind::ErrorRate => {
                    let hit = rng.random::<f64>() < s.rate.unwrap_or(0.0);
                    if hit {
                        d.action = Some(Action::Status {
                            status: s.status.unwrap_or(500),
                            message: s.message.clone(),
                        });
                    }
                    hit
                }
                FaultKind::ConnectionReset => {
                    d.action = Some(Action::Reset);
                    true
                }
                FaultKind::EmptyResponse => {
                    d.action = Some(Action::Empty);
                    true
                }
                FaultKind::TruncatedBody => {
                    d.action = Some(Action::Truncate);
                    true
                }
                FaultKind::NonImageBody => {
                    d.action = Some(Action::NonImage {
                        content_type: s.content_type.clone().unwrap_or_else(|| "image/png".into()),
                        body: s
                            .body
                            .clone()
                            .unwrap_or_else(|| "<html><body>502 Bad Gateway</body></html>".into()),
                    });
                    true
                }
            };
            if fired {
                f.fired += 1;
                d.fired.push(s.kind.as_str());
                if let Some(t) = f.spec.times.as_mut() {
                    *t = t.saturating_sub(1);
                }
            }
        }
        // Retire what is used up: sequences past their end, faults whose `times` ran out.
        list.retain(|f| {
            let seq_done = f.spec.kind == FaultKind::StatusSequence
                && f.seq_pos >= f.spec.statuses.as_ref().map_or(0, |s| s.len());
            !seq_done && f.spec.times != Some(0)
        });
        self.count.store(list.len(), std::sync::atomic::Ordering::SeqCst);
        d
    }
}
