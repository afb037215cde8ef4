//! `chart_img_accounts_usage/{accountId}`: the daily counter of each Chart-IMG account, and the pure decisions that
//! every usage store runs inside its transaction (reserve, give back, mark exhausted).

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{AccountId, OpId};
use super::step::rfc3339;

/// How long a usage document remembers an applied operation. A retry of an operation's commit (its reply lost) is
/// made by the same call of the adapter, whose retries end within minutes (the Firestore adapter's: 17 attempts of at
/// most 10 s each plus 30 s of waits), so a retry always finds its operation however many other writes landed
/// meanwhile; the memory is kept by time, not by count.
pub const OP_MEMORY: TimeDelta = TimeDelta::minutes(10);

/// A bound on the remembered operations that only keeps the document's size finite: at the about one write per second
/// a Firestore document sustains, [`OP_MEMORY`] holds about 600; this many (~250 KB) would take 7 writes a second for
/// ten minutes.
pub const MAX_RECENT_OPS: usize = 4096;

/// The stored counter. `day` is the UTC date the counter belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageDoc {
    pub day: String,
    pub usage_today: u32,
    pub daily_limit: u32,
    pub exhausted: bool,
    pub updated_at: String,
    /// Operations (reservations and give-backs) applied to this counter today in the last [`OP_MEMORY`], newest
    /// last: a retried commit whose first try landed finds its id here and applies nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_ops: Vec<OpRecord>,
}

/// One applied quota operation: its id, the units it moved (taken by a reservation, returned by a give-back) and
/// when it was applied (Unix seconds, the writer's clock; absent in documents written before it was recorded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpRecord {
    pub op: String,
    pub units: u32,
    #[serde(default)]
    pub at: i64,
}

impl UsageDoc {
    fn applied(&self, op: &OpId) -> Option<u32> {
        self.recent_ops.iter().find(|r| r.op == op.as_str()).map(|r| r.units)
    }

    /// Records `op` and forgets the operations applied more than [`OP_MEMORY`] before `now`.
    fn remember(&mut self, op: &OpId, units: u32, now: DateTime<Utc>) {
        let forget_before = (now - OP_MEMORY).timestamp();
        self.recent_ops.retain(|r| r.at >= forget_before);
        self.recent_ops.push(OpRecord {
            op: op.to_string(),
            units,
            at: now.timestamp(),
        });
        let excess = self.recent_ops.len().saturating_sub(MAX_RECENT_OPS);
        self.recent_ops.drain(..excess);
    }
}

/// The day a write made at `today` applies to on the counter `doc`: today, or the counter's own day when it is
/// already later (another instance's clock passed midnight first, or a retry began before midnight). A counter never
/// moves back to an earlier day.
pub fn counter_day(doc: Option<&UsageDoc>, today: NaiveDate) -> NaiveDate {
    doc.and_then(|d| d.day.parse::<NaiveDate>().ok())
        .filter(|d| *d > today)
        .unwrap_or(today)
}

impl UsageDoc {
    /// The counter as seen on `day`: a counter of another day reads as fresh (the reset of the contract).
    pub fn on_day(doc: Option<&UsageDoc>, day: NaiveDate, daily_limit: u32) -> UsageDoc {
        let day_s = day.to_string();
        match doc {
            Some(d) if d.day == day_s => UsageDoc {
                daily_limit,
                ..d.clone()
            },
            // A new day starts with no remembered operations: yesterday's ids can no longer be retried against it.
            Some(d) => UsageDoc {
                day: day_s,
                usage_today: 0,
                daily_limit,
                exhausted: false,
                updated_at: d.updated_at.clone(),
                recent_ops: Vec::new(),
            },
            None => UsageDoc {
                day: day_s,
                usage_today: 0,
                daily_limit,
                exhausted: false,
                updated_at: String::new(),
                recent_ops: Vec::new(),
            },
        }
    }

    pub fn remaining(&self) -> u32 {
        if self.exhausted {
            0
        } else {
            self.daily_limit.saturating_sub(self.usage_today)
        }
    }
}

/// An account as the quota logic needs it (no key: the stores never see secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountQuota {
    pub id: AccountId,
    pub daily_limit: u32,
}

/// Units taken from one account on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub account: AccountId,
    pub day: NaiveDate,
    pub units: u32,
}

/// The order in which the step `key` (`<runId>/<stepId>`) tries `accounts`: a rendezvous hash weighted by daily limit
/// (each account comes first for a share of steps proportional to its limit), so steps, and the transactions on
/// their usage counters, spread over every account instead of all starting on the first one configured. The same
/// step gets the same order on every instance and every attempt.
pub fn preference_order(key: &str, accounts: &[AccountQuota]) -> Vec<AccountQuota> {
    use sha2::{Digest, Sha256};
    let score = |a: &AccountQuota| {
        let h = Sha256::new()
            .chain_update(key.as_bytes())
            .chain_update([0])
            .chain_update(a.id.as_str().as_bytes())
            .finalize();
        let x = u64::from_be_bytes(h[..8].try_into().expect("8 bytes"));
        let u = (x as f64 + 0.5) / 18_446_744_073_709_551_616.0; // (0, 1)
        -u.ln() / f64::from(a.daily_limit.max(1))
    };
    let mut scored: Vec<(f64, &AccountQuota)> = accounts.iter().map(|a| (score(a), a)).collect();
    scored.sort_by(|x, y| x.0.total_cmp(&y.0));
    scored.into_iter().map(|(_, a)| a.clone()).collect()
}

/// Spreads `units` over the accounts in the order given, each up to its remaining quota, and returns the grants
/// plus the documents to write (only for accounts that granted something, so an idle account costs no write).
/// Each account's units are taken on its [`counter_day`]: `now`'s day, or the counter's when that is later (never
/// rewound); a grant carries the day it was taken on. A reservation `op` that a document already remembers (a retried
/// commit whose first try landed) answers the grants it made then and writes nothing.
pub fn plan_reservation(
    op: &OpId,
    accounts: &[AccountQuota],
    current: &[Option<UsageDoc>],
    units: u32,
    now: DateTime<Utc>,
) -> (Vec<Grant>, Vec<(AccountId, UsageDoc)>) {
    let today = now.date_naive();
    let seen: Vec<(NaiveDate, UsageDoc)> = accounts
        .iter()
        .zip(current)
        .map(|(acc, doc)| {
            let day = counter_day(doc.as_ref(), today);
            (day, UsageDoc::on_day(doc.as_ref(), day, acc.daily_limit))
        })
        .collect();
    let earlier: Vec<Grant> = accounts
        .iter()
        .zip(&seen)
        .filter_map(|(acc, (day, d))| {
            d.applied(op).map(|units| Grant {
                account: acc.id.clone(),
                day: *day,
                units,
            })
        })
        .collect();
    if !earlier.is_empty() {
        return (earlier.into_iter().filter(|g| g.units > 0).collect(), Vec::new());
    }
    let mut left = units;
    let mut grants = Vec::new();
    let mut writes = Vec::new();
    for (acc, (day, mut d)) in accounts.iter().zip(seen) {
        if left == 0 {
            break;
        }
        let take = d.remaining().min(left);
        if take == 0 {
            continue;
        }
        d.usage_today += take;
        d.updated_at = rfc3339(now);
        d.remember(op, take, now);
        left -= take;
        grants.push(Grant {
            account: acc.id.clone(),
            day,
            units: take,
        });
        writes.push((acc.id.clone(), d));
    }
    (grants, writes)
}

/// Gives back units that were reserved but never sent. A counter of another day was reset meanwhile: nothing to undo.
/// A give-back `op` already remembered (a retried commit whose first try landed) changes nothing: units are returned
/// once, so `usageToday` never under-counts.
pub fn plan_give_back(
    op: &OpId,
    doc: Option<&UsageDoc>,
    grant_day: NaiveDate,
    units: u32,
    now: DateTime<Utc>,
) -> Option<UsageDoc> {
    let d = doc?;
    if d.day != grant_day.to_string() || units == 0 || d.applied(op).is_some() {
        return None;
    }
    let mut next = UsageDoc {
        usage_today: d.usage_today.saturating_sub(units),
        updated_at: rfc3339(now),
        ..d.clone()
    };
    next.remember(op, units, now);
    Some(next)
}

/// Marks an account exhausted for `day` (a `429 Limit Exceeded`). Creates the counter if it does not exist yet.
pub fn plan_exhaust(doc: Option<&UsageDoc>, day: NaiveDate, daily_limit: u32, now: DateTime<Utc>) -> Option<UsageDoc> {
    if doc.is_some_and(|d| d.day.as_str() > day.to_string().as_str()) {
        return None; // The counter already moved to a later day; yesterday's 429 says nothing about today.
    }
    let mut d = UsageDoc::on_day(doc, day, daily_limit);
    if d.exhausted && doc.is_some_and(|x| x.day == d.day) {
        return None; // Already marked today (a retried commit whose first try landed): nothing to write.
    }
    d.exhausted = true;
    d.updated_at = rfc3339(now);
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(id: &str, limit: u32) -> AccountQuota {
        AccountQuota {
            id: AccountId::parse(id).unwrap(),
            daily_limit: limit,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn doc(day: &str, used: u32, limit: u32, exhausted: bool) -> UsageDoc {
        UsageDoc {
            day: day.into(),
            usage_today: used,
            daily_limit: limit,
            exhausted,
            updated_at: "x".into(),
            recent_ops: Vec::new(),
        }
    }

    fn op(s: &str) -> OpId {
        OpId::parse(s).unwrap()
    }

    #[test]
    fn reservation_fills_accounts_in_order_up_to_their_remaining_quota() {
        let accounts = [acc("a", 5), acc("b", 5), acc("c", 5)];
        let current = [
            Some(doc("2026-11-28", 3, 5, false)),
            None,
            Some(doc("2026-11-28", 0, 5, false)),
        ];
        let (grants, writes) = plan_reservation(&op("r1"), &accounts, &current, 4, at("2026-11-28T12:00:00Z"));
        let got: Vec<(&str, u32)> = grants.iter().map(|g| (g.account.as_str(), g.units)).collect();
        assert_eq!(got, vec![("a", 2), ("b", 2)]);
        assert_eq!(writes[0].1.usage_today, 5);
        assert_eq!(writes[1].1.usage_today, 2);
        assert_eq!(writes.len(), 2, "an account that grants nothing is not written");
    }

    #[test]
    fn steps_spread_over_accounts_in_proportion_to_their_daily_limits() {
        let accounts = [acc("a", 50), acc("b", 500), acc("c", 500)];
        let mut first = std::collections::BTreeMap::new();
        for i in 0..3000 {
            let order = preference_order(&format!("run-{i}/charts_4h"), &accounts);
            assert_eq!(order.len(), 3);
            *first.entry(order[0].id.to_string()).or_insert(0) += 1;
        }
        // Expected shares 50 : 500 : 500 of 3000 = 143, 1429, 1429.
        assert!((90..200).contains(&first["a"]), "{first:?}");
        assert!(
            (1300..1560).contains(&first["b"]) && (1300..1560).contains(&first["c"]),
            "{first:?}"
        );
        // Stable: the same step always gets the same order.
        assert_eq!(
            preference_order("run-7/s", &accounts),
            preference_order("run-7/s", &accounts)
        );
    }

    #[test]
    fn a_counter_from_yesterday_is_reset_and_exhaustion_cleared() {
        let (grants, writes) = plan_reservation(
            &op("r1"),
            &[acc("a", 5)],
            &[Some(doc("2026-11-27", 5, 5, true))],
            1,
            at("2026-11-28T00:00:01Z"),
        );
        assert_eq!(grants[0].units, 1);
        assert_eq!(
            writes[0].1,
            UsageDoc {
                day: "2026-11-28".into(),
                usage_today: 1,
                daily_limit: 5,
                exhausted: false,
                updated_at: "2026-11-28T00:00:01Z".into(),
                recent_ops: vec![OpRecord {
                    op: "r1".into(),
                    units: 1,
                    at: at("2026-11-28T00:00:01Z").timestamp(),
                }],
            }
        );
    }

    #[test]
    fn exhausted_or_full_accounts_grant_nothing() {
        let current = [
            Some(doc("2026-11-28", 1, 5, true)),
            Some(doc("2026-11-28", 5, 5, false)),
        ];
        let (grants, writes) = plan_reservation(
            &op("r1"),
            &[acc("a", 5), acc("b", 5)],
            &current,
            3,
            at("2026-11-28T08:00:00Z"),
        );
        assert!(grants.is_empty() && writes.is_empty());
    }

    #[test]
    fn give_back_only_undoes_units_of_the_same_day() {
        let d = doc("2026-11-28", 4, 5, false);
        let day = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        assert_eq!(
            plan_give_back(&op("g1"), Some(&d), day, 3, at("2026-11-28T09:00:00Z"))
                .unwrap()
                .usage_today,
            1
        );
        assert!(plan_give_back(
            &op("g1"),
            Some(&d),
            day.pred_opt().unwrap(),
            3,
            at("2026-11-28T09:00:00Z")
        )
        .is_none());
        assert!(plan_give_back(&op("g1"), None, day, 3, at("2026-11-28T09:00:00Z")).is_none());
    }

    #[test]
    fn a_retried_operation_applies_once() {
        let now = at("2026-11-28T09:00:00Z");
        let day = now.date_naive();
        let accounts = [acc("a", 3), acc("b", 5)];
        let (grants, writes) = plan_reservation(&op("r1"), &accounts, &[None, None], 4, now);
        let after: Vec<Option<UsageDoc>> = writes.iter().map(|(_, d)| Some(d.clone())).collect();
        // The retried commit reads the documents its first try wrote: the same grants, nothing written.
        let (again, rewrites) = plan_reservation(&op("r1"), &accounts, &after, 4, now);
        assert_eq!(again, grants);
        assert!(rewrites.is_empty());
        let back = plan_give_back(&op("g1"), after[1].as_ref(), day, 1, now).unwrap();
        assert_eq!(back.usage_today, 0);
        assert!(
            plan_give_back(&op("g1"), Some(&back), day, 1, now).is_none(),
            "a second give-back must not subtract again"
        );
    }

    /// M6: a retry comes back after the 10 s call timeout, or later; however many writes landed meanwhile, its
    /// operation is still remembered.
    #[test]
    fn an_operation_is_recognised_however_many_writes_landed_before_its_retry() {
        let a = [acc("a", 10_000)];
        let t0 = at("2026-11-28T09:00:00Z");
        let day = t0.date_naive();
        let (first, w) = plan_reservation(&op("r"), &a, &[None], 10, t0);
        let mut d = plan_give_back(&op("g"), Some(&w[0].1), day, 5, t0).unwrap();
        for i in 0..1000 {
            let now = t0 + chrono::Duration::milliseconds(100 * i);
            let (_, w) = plan_reservation(&op(&format!("x{i}")), &a, &[Some(d.clone())], 1, now);
            d = w[0].1.clone();
        }
        assert_eq!(d.usage_today, 1005);
        let later = t0 + chrono::Duration::seconds(120);
        assert!(
            plan_give_back(&op("g"), Some(&d), day, 5, later).is_none(),
            "the give-back's retry, 1000 writes later, subtracted again"
        );
        let (again, rewrites) = plan_reservation(&op("r"), &a, &[Some(d.clone())], 10, later);
        assert_eq!(
            again, first,
            "the reservation's retry, 1000 writes later, reserved again"
        );
        assert!(rewrites.is_empty());
    }

    #[test]
    fn remembered_operations_are_dropped_once_no_retry_can_come() {
        let a = [acc("a", 1000)];
        let t0 = at("2026-11-28T09:00:00Z");
        let (_, w) = plan_reservation(&op("old"), &a, &[None], 1, t0);
        let (_, w) = plan_reservation(&op("mid"), &a, &[Some(w[0].1.clone())], 1, t0 + OP_MEMORY / 2);
        let (_, w) = plan_reservation(
            &op("new"),
            &a,
            &[Some(w[0].1.clone())],
            1,
            t0 + OP_MEMORY + OP_MEMORY / 4,
        );
        let kept: Vec<&str> = w[0].1.recent_ops.iter().map(|r| r.op.as_str()).collect();
        assert_eq!(kept, vec!["mid", "new"]);
    }

    /// The memory must outlast every retry the Firestore adapter makes of one operation: its attempts each end
    /// within the call timeout, and the waits between them within the policy's total.
    #[test]
    fn operations_are_remembered_longer_than_any_retry_of_them_lasts() {
        let p = crate::retry::RetryPolicy::FIRESTORE;
        let longest = crate::adapters::firestore::DEFAULT_CALL_TIMEOUT * (p.max_retries as u32 + 1) + p.max_total_delay;
        assert!(
            OP_MEMORY.to_std().unwrap() >= 2 * longest,
            "{OP_MEMORY:?} against retries lasting up to {longest:?}"
        );
    }

    /// H2 (a): a reservation planned for day D (a clock a little behind, or a retry that began before midnight) on a
    /// counter another instance already moved to D+1 is made on D+1; it never rewinds the counter.
    #[test]
    fn a_reservation_never_rewinds_a_counter_of_a_later_day() {
        let (grants, writes) = plan_reservation(
            &op("r1"),
            &[acc("a", 50)],
            &[Some(doc("2026-11-29", 7, 50, false))],
            1,
            at("2026-11-28T23:59:59Z"),
        );
        assert_eq!(writes.len(), 1);
        let d = &writes[0].1;
        assert_eq!((d.day.as_str(), d.usage_today), ("2026-11-29", 8));
        assert_eq!(grants[0].day, NaiveDate::from_ymd_opt(2026, 11, 29).unwrap());
        // A full counter on D+1 grants nothing to a D reservation either.
        let (grants, writes) = plan_reservation(
            &op("r2"),
            &[acc("a", 50)],
            &[Some(doc("2026-11-29", 50, 50, false))],
            1,
            at("2026-11-28T23:59:59Z"),
        );
        assert!(grants.is_empty() && writes.is_empty());
    }

    #[test]
    fn exhaust_marks_today_and_ignores_a_stale_day() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let now = at("2026-11-28T09:00:00Z");
        assert!(plan_exhaust(None, day, 5, now).unwrap().exhausted);
        assert!(plan_exhaust(Some(&doc("2026-11-29", 0, 5, false)), day, 5, now).is_none());
        assert!(
            plan_exhaust(Some(&doc("2026-11-28", 1, 5, true)), day, 5, now).is_none(),
            "marking twice writes nothing"
        );
        assert!(
            plan_exhaust(Some(&doc("2026-11-27", 1, 5, true)), day, 5, now)
                .unwrap()
                .exhausted
        );
    }
}
