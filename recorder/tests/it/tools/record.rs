//! `recorder record`: what it records, how it paces and retries, and how it fails.

use recorder::{Mode, ACCOUNTS_ENV, API_KEY_ENV};

use super::*;

#[tokio::test]
async fn record_against_mock_chart_img_and_again_gives_identical_bytes() {
    let mock =
        mock_chart_img::spawn(mock_chart_img::Config::default().with_key(KEY1, "acc-1", mock_chart_img::Plan::PRO))
            .await
            .unwrap();
    let url = mock.base_url();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("demo");
    seed(&dir, &demo(KEY1)).await;
    let before = snapshot(&dir);
    let env = [(API_KEY_ENV, KEY1)];

    let dry = recorder(&["record", s(&dir), "--upstream", &url], &env).await;
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    assert!(dry.stdout.contains("3 interactions, 3 to record"), "{}", dry.stdout);
    assert!(
        dry.stdout.contains("BINANCE:BTCUSDT 4h 800x600 Volume"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains("acc-1    3 call(s); plan BASIC (1/s, burst 3); daily limit 50; used today unknown"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("(keys from CHART_IMG_API_KEY)"), "{}", dry.stdout);
    assert!(dry.stdout.contains("dry run: nothing was sent"), "{}", dry.stdout);
    assert_eq!(snapshot(&dir), before, "a dry run changes nothing");

    let rec = recorder(&["record", s(&dir), "--upstream", &url, "--plan", "PRO", "--yes"], &env).await;
    assert_eq!(rec.code, Some(0), "{}\n{}", rec.stdout, rec.stderr);
    assert!(
        rec.stdout
            .contains("recorded 3 interactions; 3 of 3 interactions changed"),
        "{}",
        rec.stdout
    );
    assert_eq!(cassette_text(&dir).matches("\"recordedAt\"").count(), 3);
    assert!(!partial_dir(root.path(), "demo").exists());
    assert_no_keys(root.path());

    // The new cassette replays what the mock answers now, byte for byte; the stand-in bodies are gone.
    let vcr = open(&dir, Mode::None);
    let client = reqwest::Client::new();
    for body in demo_bodies() {
        let replayed = vcr.replay(&chart_request(KEY1, &body)).unwrap();
        let (status, ct, live) = post_chart(&client, &url, KEY1, &body).await;
        assert_eq!((replayed.status, status, ct.as_str()), (200, 200, "image/png"));
        assert_eq!(replayed.body, live);
    }
    assert_eq!(std::fs::read_dir(dir.join("bodies")).unwrap().count(), 3);
    let lint = recorder(&["lint", s(root.path())], &[(ACCOUNTS_ENV, &accounts_json())]).await;
    assert_eq!(lint.code, Some(0), "{}", lint.stdout);

    // Identical traffic: nothing changes, the recording dates included.
    let first = snapshot(&dir);
    let again = recorder(&["record", s(&dir), "--upstream", &url, "--plan", "PRO", "--yes"], &env).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(
        again
            .stdout
            .contains("identical to the recorded traffic: cassette.json unchanged"),
        "{}",
        again.stdout
    );
    assert_eq!(snapshot(&dir), first);
    mock.shutdown().await.unwrap();
}

#[tokio::test]
async fn dry_run_shows_calls_and_quota_per_account_and_each_call_uses_its_accounts_key() {
    let upstream = ChartUpstream::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("two-accounts");
    let mut requests = demo(KEY1);
    let mut other = demo_bodies()[0].clone();
    other["interval"] = "1h".into();
    requests.push((KEY2, other));
    seed(&dir, &requests).await;
    let secret_dir = tempfile::tempdir().unwrap();
    let key_file = secret_dir.path().join("accounts.json");
    std::fs::write(
        &key_file,
        format!(
            r#"[{{"id":"acc-1","apiKey":"{KEY1}","dailyLimit":50,"plan":"PRO"}},{{"id":"acc-2","apiKey":"{KEY2}","dailyLimit":50}}]"#
        ),
    )
    .unwrap();
    let base = [
        "record",
        s(&dir),
        "--upstream",
        &upstream.url(),
        "--key-file",
        s(&key_file),
    ];

    let dry = recorder(&[&base[..], &["--used-today", "acc-1=48"]].concat(), &[]).await;
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    assert!(
        dry.stdout
            .contains(&format!("(keys from key file {})", key_file.display())),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("acc-1    3 call(s); plan PRO (10/s, burst 15); daily limit 50; used today 48 (--used-today): 2 left; NOT ENOUGH: 1 calls short"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains("acc-2    1 call(s); plan BASIC (1/s, burst 3); daily limit 50; used today unknown"),
        "{}",
        dry.stdout
    );
    assert_eq!(upstream.hits(), 0);

    let refused = recorder(&[&base[..], &["--used-today", "acc-1=48", "--yes"]].concat(), &[]).await;
    assert_eq!(refused.code, Some(2));
    assert_eq!(
        refused.stderr.trim(),
        "error: account acc-1 needs 3 calls but only 2 of its 50 are left today (--used-today 48); nothing was sent"
    );
    assert_eq!(upstream.hits(), 0);

    let rec = recorder(&[&base[..], &["--used-today", "acc-1=10", "--yes"]].concat(), &[]).await;
    assert_eq!(rec.code, Some(0), "{}\n{}", rec.stdout, rec.stderr);
    assert!(
        rec.stdout
            .contains("used today 10 (--used-today): 40 left; 37 left after this run"),
        "{}",
        rec.stdout
    );
    let mut seen = upstream.state.keys_seen.lock().unwrap().clone();
    seen.sort();
    let mut expected = vec![KEY1, KEY1, KEY1, KEY2];
    expected.sort();
    assert_eq!(seen, expected);
    let text = cassette_text(&dir);
    assert_eq!(text.matches("<CHART_IMG_API_KEY:acc-1>").count(), 3);
    assert_eq!(text.matches("<CHART_IMG_API_KEY:acc-2>").count(), 1);
    assert_no_keys(root.path());
    upstream.stop().await;
}

#[tokio::test]
async fn a_failed_re_record_leaves_the_old_cassette_byte_identical_and_a_rerun_resumes() {
    for (status, message) in [(429, "Limit Exceeded"), (500, "Something Went Wrong")] {
        let upstream = ChartUpstream::start().await;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("c");
        let mut requests = demo(KEY1);
        requests.push((KEY1, with_size(demo_bodies()[0].clone(), 640, 480)));
        seed(&dir, &requests).await;
        let before = snapshot(&dir);
        let accounts = accounts_json();
        let env = [(ACCOUNTS_ENV, accounts.as_str())];
        let args = [
            "record",
            s(&dir),
            "--upstream",
            &upstream.url(),
            "--yes",
            "--concurrency",
            "1",
        ];

        upstream.fail_from(2, status, message);
        let failed = recorder(&args, &env).await;
        assert_eq!(failed.code, Some(1), "{}\n{}", failed.stdout, failed.stderr);
        assert!(
            failed
                .stdout
                .contains("2 of 4 interactions were not recorded as intended; the cassette is untouched"),
            "{}",
            failed.stdout
        );
        assert!(
            failed.stdout.contains(&format!("-> {status} {message}")),
            "{}",
            failed.stdout
        );
        if status == 429 {
            // The quota is gone for the day: the rest is not sent at all.
            assert!(
                failed
                    .stdout
                    .contains("-> not sent: account acc-1 answered Limit Exceeded"),
                "{}",
                failed.stdout
            );
            assert_eq!(upstream.hits(), 3);
        } else {
            assert_eq!(upstream.hits(), 4);
        }
        assert_eq!(snapshot(&dir), before, "the old cassette must be byte-identical");
        assert!(partial_dir(root.path(), "c").join("state.json").is_file());
        assert_no_keys(root.path());

        upstream.heal();
        let hits = upstream.hits();
        let resumed = recorder(&args, &env).await;
        assert_eq!(resumed.code, Some(0), "{}\n{}", resumed.stdout, resumed.stderr);
        assert!(
            resumed
                .stdout
                .contains("4 interactions, 2 to record, 2 already recorded by an earlier run"),
            "{}",
            resumed.stdout
        );
        assert!(
            resumed
                .stdout
                .contains("recorded 4 interactions (2 from an earlier run)"),
            "{}",
            resumed.stdout
        );
        assert_eq!(upstream.hits() - hits, 2, "only the unfinished requests are sent again");
        assert!(!partial_dir(root.path(), "c").exists());
        let vcr = open(&dir, Mode::None);
        assert_eq!(vcr.len(), 4);
        for (key, body) in &requests {
            let resp = vcr.replay(&chart_request(key, body)).unwrap();
            assert_eq!(resp.status, 200);
            assert!(resp.body.starts_with(b"\x89PNG\r\n\x1a\n"));
        }
        assert_no_keys(root.path());
        upstream.stop().await;
    }
}

#[tokio::test]
async fn missing_keys_and_bad_key_files_are_one_clear_line() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("c");
    let mut requests = demo(KEY1);
    requests.push((KEY2, demo_bodies()[1].clone()));
    seed(&dir, &requests).await;
    let up = "http://127.0.0.1:9";

    for command in ["record", "verify"] {
        let none = recorder(&[command, s(&dir), "--upstream", up], &[]).await;
        assert_eq!(none.code, Some(2));
        assert_eq!(
            none.stderr.trim(),
            "error: no API key: set CHART_IMG_API_KEY or CHART_IMG_ACCOUNTS_JSON, or pass --key-file FILE (never the key itself as a flag)"
        );
    }
    let only_one = format!(r#"[{{"id":"acc-1","apiKey":"{KEY1}"}}]"#);
    let missing = recorder(&["record", s(&dir), "--upstream", up], &[(ACCOUNTS_ENV, &only_one)]).await;
    assert_eq!(missing.code, Some(2));
    assert_eq!(
        missing.stderr.trim(),
        "error: no API key for account acc-2 (named by 1 recorded request(s)); add it to CHART_IMG_ACCOUNTS_JSON or the key file"
    );
    let nofile = root.path().join("absent.json");
    let absent = recorder(&["record", s(&dir), "--upstream", up, "--key-file", s(&nofile)], &[]).await;
    assert_eq!(absent.code, Some(2));
    assert!(
        absent
            .stderr
            .starts_with(&format!("error: key file {}: cannot read it", nofile.display())),
        "{}",
        absent.stderr
    );
    assert_eq!(absent.stderr.lines().count(), 1);
    // A malformed accounts JSON is named, its content (the keys) is not quoted.
    let broken = format!(r#"[{{"id":"acc-1","apiKey":"{KEY1}""#);
    let bad = recorder(&["record", s(&dir), "--upstream", up], &[(ACCOUNTS_ENV, &broken)]).await;
    assert_eq!(bad.code, Some(2));
    assert!(
        bad.stderr
            .starts_with("error: CHART_IMG_ACCOUNTS_JSON: is not valid JSON (line 1, column "),
        "{}",
        bad.stderr
    );
    assert_eq!(bad.stderr.lines().count(), 1);
}

/// BASIC allows a burst of 3, then 1 call a second: five calls cannot all arrive within 2 s, however many may be
/// in flight. Only lower bounds are asserted (a slow machine makes the calls later, never earlier).
#[tokio::test]
async fn record_keeps_to_the_plans_burst_and_rate() {
    let upstream = ChartUpstream::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("c");
    let mut requests = demo(KEY1);
    requests.push((KEY1, with_size(demo_bodies()[0].clone(), 640, 480)));
    requests.push((KEY1, with_size(demo_bodies()[0].clone(), 500, 400)));
    seed(&dir, &requests).await;
    let rec = recorder(
        &record_args(&dir, &upstream.url(), &["--concurrency", "5"]),
        &[(API_KEY_ENV, KEY1)],
    )
    .await;
    assert_eq!(rec.code, Some(0), "{}\n{}", rec.stdout, rec.stderr);
    let mut at = upstream.state.arrivals.lock().unwrap().clone();
    at.sort();
    assert_eq!(at.len(), 5);
    let after = |i: usize| at[i].duration_since(at[0]).as_secs_f64();
    assert!(after(3) >= 0.9, "4th call {:.3} s after the first", after(3));
    assert!(after(4) >= 1.9, "5th call {:.3} s after the first", after(4));
    upstream.stop().await;
}

/// The per-second throttle's 429 is transient: the call is sent again, and the run succeeds.
#[tokio::test]
async fn a_throttled_call_is_sent_again() {
    let upstream = ChartUpstream::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("c");
    seed(&dir, &demo(KEY1)).await;
    *upstream.state.throttle.lock().unwrap() = vec![0, 1];
    let rec = recorder(
        &record_args(&dir, &upstream.url(), &["--concurrency", "1"]),
        &[(API_KEY_ENV, KEY1)],
    )
    .await;
    assert_eq!(rec.code, Some(0), "{}\n{}", rec.stdout, rec.stderr);
    assert_eq!(upstream.hits(), 5, "two throttled calls, sent again");
    assert!(!cassette_text(&dir).contains("Too Many Requests"));
    upstream.stop().await;
}
