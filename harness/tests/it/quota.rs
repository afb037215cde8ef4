//! Exactly-once quota operations on the Firestore emulator through the fault proxy: a give-back whose commit reply
//! is lost is retried only after many other writes landed on its counter (M6 of the worker review).

use std::time::{Duration, Instant};

use chrono::Utc;
use firestore::{FirestoreDb, FirestoreDbOptions};
use harness::proxy::{Action, FaultProxy, Matcher, Rule, Upstream};
use worker_chart_export::adapters::FirestoreStore;
use worker_chart_export::domain::{AccountId, AccountQuota, OpId};
use worker_chart_export::ports::AccountUsageStore;

const COMMIT: &str = "/google.firestore.v1.Firestore/Commit";
const BATCH_GET: &str = "/google.firestore.v1.Firestore/BatchGetDocuments";
/// Other reservations landing between the lost reply and the retry's read.
const WRITES_BETWEEN: u32 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_give_back_retried_after_100_other_writes_counts_once() {
    let Some((firestore, _)) = crate::emulators("a_give_back_retried_after_100_other_writes") else {
        return;
    };
    let project = crate::project("quota-once");
    let proxy = FaultProxy::start(&firestore, Upstream::Http2).await.unwrap();
    let options = FirestoreDbOptions::new(project.clone()).with_firebase_api_url(proxy.url());
    let via = FirestoreStore::from_db(FirestoreDb::with_options(options).await.unwrap());
    let direct = FirestoreStore::new(&project).await.unwrap();
    let account = AccountQuota {
        id: AccountId::parse("acc-1").unwrap(),
        daily_limit: 10_000,
    };
    let now = Utc::now();
    let day = now.date_naive();
    direct
        .reserve(&OpId::random(), std::slice::from_ref(&account), 10, now)
        .await
        .unwrap();

    // The give-back's first commit lands but its reply is lost; the retry's read (the give-back's second read) is
    // held long enough for the other writes to land first (and less than the adapter's 10 s call timeout).
    let hold = Duration::from_secs(8);
    proxy.add_rule(Rule::new(Matcher::path(COMMIT), Action::DropReply).nth(1));
    proxy.add_rule(
        Rule::new(
            Matcher::path(BATCH_GET),
            Action::Delay {
                ms: hold.as_millis() as u64,
            },
        )
        .nth(2),
    );
    let give_back = {
        let (via, id) = (via.clone(), account.id.clone());
        tokio::spawn(async move { via.give_back(&OpId::random(), &id, day, 5, now).await })
    };
    let started = Instant::now();
    while !proxy
        .calls()
        .iter()
        .any(|c| c.path == COMMIT && c.action == "dropped_reply")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the give-back never committed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..WRITES_BETWEEN {
        direct
            .reserve(&OpId::random(), std::slice::from_ref(&account), 1, Utc::now())
            .await
            .unwrap();
    }
    assert!(
        !give_back.is_finished(),
        "the retry read back before the {WRITES_BETWEEN} writes had landed ({:?}): hold it longer",
        started.elapsed()
    );
    give_back.await.unwrap().unwrap();

    let calls = proxy.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.path == BATCH_GET && c.action == "delayed")
            .count(),
        1,
        "the give-back was retried: {calls:?}"
    );
    let u = direct.get_usage(&account.id).await.unwrap().unwrap();
    assert_eq!(
        u.usage_today,
        10 - 5 + WRITES_BETWEEN,
        "the give-back counted once: 10 reserved, 5 given back, {WRITES_BETWEEN} more reserved"
    );
}
