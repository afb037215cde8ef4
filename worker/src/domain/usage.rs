//! `chart_img_accounts_usage/{accountId}`: the daily counter of each Chart-IMG account, and the pure decisions that
//! every usage store runs inside its transaction (reserve, give back, mark exhausted).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::ids::AccountId;
use super::step::rfc3339;

/// The stored counter. `day` is the UTC date the counter belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageDoc {
    pub day: String,
    pub usage_today: u32,
    pub daily_limit: u32,
    pub exhausted: bool,
    pub updated_at: String,
}

impl UsageDoc {
    /// The counter as seen on `day`: a counter of another day reads as fresh (the reset of the contract).
    pub fn on_day(doc: Option<&UsageDoc>, day: NaiveDate, daily_limit: u32) -> UsageDoc {
        let day_s = day.to_string();
        match doc {
            Some(d) if d.day == day_s => UsageDoc { daily_limit, ..d.clone() },
            Some(d) => UsageDoc { day: day_s, usage_today: 0, daily_limit, exhausted: false, updated_at: d.updated_at.clone() },
            None => UsageDoc { day: day_s, usage_today: 0, daily_limit, exhausted: false, updated_at: String::new() },
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

/// Spreads `units` over the accounts in their configured order, each up to its remaining quota, and returns the grants
/// plus the documents to write (only for accounts that granted something, so an idle account costs no write).
pub fn plan_reservation(
    accounts: &[AccountQuota],
    current: &[Option<UsageDoc>],
    units: u32,
    now: DateTime<Utc>,
) -> (Vec<Grant>, Vec<(AccountId, UsageDoc)>) {
    let day = now.date_naive();
    let mut left = units;
    let mut grants = Vec::new();
    let mut writes = Vec::new();
    for (acc, doc) in accounts.iter().zip(current) {
        if left == 0 {
            break;
        }
        let mut d = UsageDoc::on_day(doc.as_ref(), day, acc.daily_limit);
        let take = d.remaining().min(left);
        if take == 0 {
            continue;
        }
        d.usage_today += take;
        d.updated_at = rfc3339(now);
        left -= take;
        grants.push(Grant { account: acc.id.clone(), day, units: take });
        writes.push((acc.id.clone(), d));
    }
    (grants, writes)
}

/// Gives back units that were reserved but never sent. A counter of another day was reset meanwhile: nothing to undo.
pub fn plan_give_back(doc: Option<&UsageDoc>, grant_day: NaiveDate, units: u32, now: DateTime<Utc>) -> Option<UsageDoc> {
    let d = doc?;
    if d.day != grant_day.to_string() || units == 0 {
        return None;
    }
    Some(UsageDoc { usage_today: d.usage_today.saturating_sub(units), updated_at: rfc3339(now), ..d.clone() })
}

/// Marks an account exhausted for `day` (a `429 Limit Exceeded`). Creates the counter if it does not exist yet.
pub fn plan_exhaust(doc: Option<&UsageDoc>, day: NaiveDate, daily_limit: u32, now: DateTime<Utc>) -> Option<UsageDoc> {
    if doc.is_some_and(|d| d.day.as_str() > day.to_string().as_str()) {
        return None; // The counter already moved to a later day; yesterday's 429 says nothing about today.
    }
    let mut d = UsageDoc::on_day(doc, day, daily_limit);
    d.exhausted = true;
    d.updated_at = rfc3339(now);
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(id: &str, limit: u32) -> AccountQuota {
        AccountQuota { id: AccountId::parse(id).unwrap(), daily_limit: limit }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn doc(day: &str, used: u32, limit: u32, exhausted: bool) -> UsageDoc {
        UsageDoc { day: day.into(), usage_today: used, daily_limit: limit, exhausted, updated_at: "x".into() }
    }

    #[test]
    fn reservation_fills_accounts_in_order_up_to_their_remaining_quota() {
        let accounts = [acc("a", 5), acc("b", 5), acc("c", 5)];
        let current = [Some(doc("2026-11-28", 3, 5, false)), None, Some(doc("2026-11-28", 0, 5, false))];
        let (grants, writes) = plan_reservation(&accounts, &current, 4, at("2026-11-28T12:00:00Z"));
        let got: Vec<(&str, u32)> = grants.iter().map(|g| (g.account.as_str(), g.units)).collect();
        assert_eq!(got, vec![("a", 2), ("b", 2)]);
        assert_eq!(writes[0].1.usage_today, 5);
        assert_eq!(writes[1].1.usage_today, 2);
        assert_eq!(writes.len(), 2, "an account that grants nothing is not written");
    }

    #[test]
    fn a_counter_from_yesterday_is_reset_and_exhaustion_cleared() {
        let (grants, writes) = plan_reservation(
            &[acc("a", 5)],
            &[Some(doc("2026-11-27", 5, 5, true))],
            1,
            at("2026-11-28T00:00:01Z"),
        );
        assert_eq!(grants[0].units, 1);
        assert_eq!(writes[0].1, UsageDoc {
            day: "2026-11-28".into(),
            usage_today: 1,
            daily_limit: 5,
            exhausted: false,
            updated_at: "2026-11-28T00:00:01Z".into()
        });
    }

    #[test]
    fn exhausted_or_full_accounts_grant_nothing() {
        let current = [Some(doc("2026-11-28", 1, 5, true)), Some(doc("2026-11-28", 5, 5, false))];
        let (grants, writes) = plan_reservation(&[acc("a", 5), acc("b", 5)], &current, 3, at("2026-11-28T08:00:00Z"));
        assert!(grants.is_empty() && writes.is_empty());
    }

    #[test]
    fn give_back_only_undoes_units_of_the_same_day() {
        let d = doc("2026-11-28", 4, 5, false);
        let day = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        assert_eq!(plan_give_back(Some(&d), day, 3, at("2026-11-28T09:00:00Z")).unwrap().usage_today, 1);
        assert!(plan_give_back(Some(&d), day.pred_opt().unwrap(), 3, at("2026-11-28T09:00:00Z")).is_none());
        assert!(plan_give_back(None, day, 3, at("2026-11-28T09:00:00Z")).is_none());
    }

    #[test]
    fn exhaust_marks_today_and_ignores_a_stale_day() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let now = at("2026-11-28T09:00:00Z");
        assert!(plan_exhaust(None, day, 5, now).unwrap().exhausted);
        assert!(plan_exhaust(Some(&doc("2026-11-29", 0, 5, false)), day, 5, now).is_none());
    }
}
