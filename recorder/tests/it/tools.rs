//! `recorder record`, `verify`, `show` and `lint --max-age`, through the real binary, against real HTTP servers:
//! mock-chart-img (in-process, as the roundtrip tests use it) where its own behaviour is what is tested, and the
//! scripted `ChartUpstream` where a test must make the n-th call fail or change an answer while it runs.

use std::path::{Path, PathBuf};

use recorder::{Mode, Response, ACCOUNTS_ENV, API_KEY_ENV};

use crate::support::*;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with no key in its environment but `env`; fails the test if a key shows up in its output.
async fn recorder(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_recorder"))
        .args(args)
        .env_remove(ACCOUNTS_ENV)
        .env_remove(API_KEY_ENV)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    for key in [KEY1, KEY2] {
        assert!(
            !run.stdout.contains(key) && !run.stderr.contains(key),
            "an API key reached the output of recorder {args:?}"
        );
    }
    run
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A cassette recorded in-process with stand-in answers (what a re-recording replaces).
async fn seed(dir: &Path, requests: &[(&str, serde_json::Value)]) {
    let vcr = open(dir, Mode::NewEpisodes);
    for (key, body) in requests {
        let png = fake_png(&serde_json::to_vec(body).unwrap());
        vcr.handle(chart_request(key, body), |_| async move {
            Ok::<_, std::io::Error>(
                Response::new(200)
                    .with_header("content-type", "image/png")
                    .with_body(png),
            )
        })
        .await
        .unwrap();
    }
}

fn demo(key: &str) -> Vec<(&str, serde_json::Value)> {
    demo_bodies().into_iter().map(|b| (key, b)).collect()
}

fn with_size(mut body: serde_json::Value, w: u32, h: u32) -> serde_json::Value {
    body["width"] = w.into();
    body["height"] = h.into();
    body
}

fn partial_dir(root: &Path, name: &str) -> PathBuf {
    root.join(format!(".{name}.record-partial"))
}

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
            .starts_with("error: the accounts JSON is malformed: CHART_IMG_ACCOUNTS_JSON: Eof error at line 1"),
        "{}",
        bad.stderr
    );
    assert_eq!(bad.stderr.lines().count(), 1);
}

#[tokio::test]
async fn an_unreadable_cassette_is_a_clear_error_for_every_command() {
    let root = tempfile::tempdir().unwrap();
    let broken = root.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("cassette.json"), "{ not json").unwrap();
    let future = root.path().join("future");
    std::fs::create_dir_all(&future).unwrap();
    std::fs::write(
        future.join("cassette.json"),
        r#"{"formatVersion": 9, "interactions": []}"#,
    )
    .unwrap();
    let empty = root.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let env = [(API_KEY_ENV, KEY1)];
    let up = "http://127.0.0.1:9";
    let commands = |p: &Path| -> Vec<Vec<String>> {
        let p = s(p).to_owned();
        vec![
            vec!["show".into(), p.clone()],
            vec!["record".into(), p.clone(), "--upstream".into(), up.into()],
            vec!["verify".into(), p.clone(), "--upstream".into(), up.into()],
            vec!["lint".into(), p, "--max-age".into(), "90d".into()],
        ]
    };
    let cases = [
        (
            &broken,
            format!(
                "error: cassette file {} is malformed: ",
                broken.join("cassette.json").display()
            ),
        ),
        (
            &future,
            format!(
                "error: cassette file {} has formatVersion 9; this recorder reads version 1",
                future.join("cassette.json").display()
            ),
        ),
        (
            &empty,
            format!("error: {}: no cassette (cassette.json) in it or below", empty.display()),
        ),
    ];
    for (path, expected) in &cases {
        for args in commands(path) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = recorder(&args, &env).await;
            assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
            assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
            assert!(run.stderr.starts_with(expected.as_str()), "{args:?}: {}", run.stderr);
        }
    }
    let nowhere = root.path().join("nowhere");
    let run = recorder(&["show", s(&nowhere)], &env).await;
    assert_eq!(run.code, Some(2));
    assert!(
        run.stderr
            .starts_with(&format!("error: cassette I/O failed on {}: ", nowhere.display())),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn verify_catches_the_drift_when_the_mock_config_changes() {
    let config = |plan| mock_chart_img::Config::default().with_key(KEY1, "acc-1", plan);
    let pro = mock_chart_img::spawn(config(mock_chart_img::Plan::PRO)).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sizes");
    seed(
        &dir,
        &[
            (KEY1, demo_bodies()[0].clone()),
            (KEY1, with_size(demo_bodies()[1].clone(), 1280, 720)),
        ],
    )
    .await;
    let env = [(API_KEY_ENV, KEY1)];
    let rec = recorder(
        &[
            "record",
            s(&dir),
            "--upstream",
            &pro.base_url(),
            "--plan",
            "PRO",
            "--yes",
        ],
        &env,
    )
    .await;
    assert_eq!(rec.code, Some(0), "{}\n{}", rec.stdout, rec.stderr);
    let recorded = snapshot(&dir);

    let same = recorder(&["verify", s(&dir), "--upstream", &pro.base_url()], &env).await;
    assert_eq!(same.code, Some(0), "{}\n{}", same.stdout, same.stderr);
    assert!(same.stdout.contains("0 of 2 interactions drifted"), "{}", same.stdout);
    pro.shutdown().await.unwrap();

    // The account is BASIC now: the 1280x720 chart is refused, the 800x600 one still renders.
    let basic = mock_chart_img::spawn(config(mock_chart_img::Plan::BASIC))
        .await
        .unwrap();
    let drift = recorder(&["verify", s(&dir), "--upstream", &basic.base_url()], &env).await;
    assert_eq!(drift.code, Some(1), "{}\n{}", drift.stdout, drift.stderr);
    assert!(drift.stdout.contains("1 of 2 interactions drifted"), "{}", drift.stdout);
    let row = drift
        .stdout
        .lines()
        .find(|l| l.contains("1280x720"))
        .expect("a row for the drifted request");
    assert!(
        row.contains("status") && row.contains("200") && row.contains("403"),
        "{row}"
    );
    assert!(
        drift.stdout.contains("Exceed Max Usage Resolution Limit (800x600)"),
        "{}",
        drift.stdout
    );

    // A fresh mock for the JSON run: two runs in a row would exceed BASIC's burst (each run keeps to the rate
    // on its own, but the mock counts both).
    basic.shutdown().await.unwrap();
    let basic = mock_chart_img::spawn(config(mock_chart_img::Plan::BASIC))
        .await
        .unwrap();
    let json = recorder(
        &["verify", s(&dir), "--upstream", &basic.base_url(), "--format", "json"],
        &env,
    )
    .await;
    assert_eq!(json.code, Some(1));
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["drifted"], 1);
    let interactions = report["cassettes"][0]["interactions"].as_array().unwrap();
    let drifted: Vec<&serde_json::Value> = interactions
        .iter()
        .filter(|i| !i["drift"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(drifted.len(), 1);
    assert!(drifted[0]["request"].as_str().unwrap().contains("1280x720"));
    let fields: Vec<(&str, &serde_json::Value, &serde_json::Value)> = drifted[0]["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["field"].as_str().unwrap(), &d["recorded"], &d["live"]))
        .collect();
    let j = |v: &str| serde_json::Value::String(v.into());
    let null = serde_json::Value::Null;
    assert_eq!(
        fields,
        vec![
            ("status", &j("200"), &j("403")),
            ("content-type", &j("image/png"), &j("application/json")),
            ("image format", &j("png"), &null),
            ("image size", &j("1280x720"), &null),
            ("body shape", &null, &j("{message}")),
            (
                "error message",
                &null,
                &j("Exceed Max Usage Resolution Limit (800x600)")
            ),
        ]
    );
    assert_eq!(snapshot(&dir), recorded, "verify writes nothing");
    basic.shutdown().await.unwrap();
}

#[tokio::test]
async fn verify_compares_image_size_and_error_bodies_but_never_image_bytes() {
    let upstream = ChartUpstream::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("c");
    let mut bad = demo_bodies()[0].clone();
    bad["interval"] = "4H".into();
    seed(&dir, &[(KEY1, demo_bodies()[0].clone()), (KEY1, bad)]).await;
    let env = [(API_KEY_ENV, KEY1)];
    let rec = recorder(&["record", s(&dir), "--upstream", &upstream.url(), "--yes"], &env).await;
    // A 422 is an answer like any other: it is recorded, not a failure.
    assert_eq!(rec.code, Some(0), "{}\n{}", rec.stdout, rec.stderr);
    assert!(cassette_text(&dir).contains("must be a supported interval"));

    // Every call answers other pixels (the upstream's shade changes per call); only format and size are compared.
    let same = recorder(&["verify", s(&dir), "--upstream", &upstream.url()], &env).await;
    assert_eq!(same.code, Some(0), "{}", same.stdout);

    upstream.state.shrink.store(true, std::sync::atomic::Ordering::SeqCst);
    let drift = recorder(
        &["verify", s(&dir), "--upstream", &upstream.url(), "--format", "json"],
        &env,
    )
    .await;
    assert_eq!(drift.code, Some(1), "{}", drift.stdout);
    let report: serde_json::Value = serde_json::from_str(&drift.stdout).unwrap();
    let all: Vec<&serde_json::Value> = report["cassettes"][0]["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["drift"].as_array().unwrap())
        .collect();
    assert_eq!(
        all,
        vec![&serde_json::json!({"field": "image size", "recorded": "800x600", "live": "400x300"})]
    );
    upstream.stop().await;
}

/// Sets `recordedAt` of interaction `n` in a cassette file.
fn set_recorded_at(dir: &Path, n: usize, at: Option<&str>) {
    let path = dir.join("cassette.json");
    let mut file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let i = &mut file["interactions"][n];
    match at {
        Some(at) => i["recordedAt"] = at.into(),
        None => {
            i.as_object_mut().unwrap().remove("recordedAt");
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
}

#[tokio::test]
async fn lint_max_age_flags_old_and_undated_cassettes_and_show_prints_ages() {
    let upstream = ChartUpstream::start().await;
    let root = tempfile::tempdir().unwrap();
    let fresh = root.path().join("fresh");
    seed(&fresh, &demo(KEY1)).await;
    let env = [(API_KEY_ENV, KEY1)];
    let rec = recorder(&["record", s(&fresh), "--upstream", &upstream.url(), "--yes"], &env).await;
    assert_eq!(rec.code, Some(0), "{}", rec.stderr);
    let old = root.path().join("old");
    std::fs::create_dir_all(old.join("bodies")).unwrap();
    for (rel, bytes) in snapshot(&fresh) {
        std::fs::write(old.join(rel), bytes).unwrap();
    }
    set_recorded_at(&old, 1, Some("2020-01-01T00:00:00.000Z"));
    let legacy = root.path().join("legacy");
    seed(&legacy, &demo(KEY1)).await;

    let ok = recorder(&["lint", s(&fresh), "--max-age", "90d", "--deny-old"], &[]).await;
    assert_eq!(ok.code, Some(0), "{}", ok.stdout);
    assert_eq!(ok.stdout, "");

    let warn = recorder(&["lint", s(root.path()), "--max-age", "90d"], &[]).await;
    assert_eq!(warn.code, Some(0), "warnings only without --deny-old: {}", warn.stdout);
    let lines: Vec<&str> = warn.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", warn.stdout);
    assert!(
        lines[0].starts_with(&format!(
            "warning: {}: 3 of 3 interactions have no recordedAt (age unknown",
            legacy.display()
        )),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with(&format!(
            "warning: {}: 1 of 3 interactions recorded more than 90d ago (#1; oldest 2020-01-01T00:00:00Z, ",
            old.display()
        )),
        "{}",
        lines[1]
    );

    let deny = recorder(&["lint", s(&old), "--max-age", "90d", "--deny-old"], &[]).await;
    assert_eq!(deny.code, Some(1));
    assert!(deny.stdout.starts_with("error: "), "{}", deny.stdout);
    let bad = recorder(&["lint", s(&old), "--max-age", "ninety"], &[]).await;
    assert_eq!(bad.code, Some(2));
    assert!(bad.stderr.contains("--max-age"), "{}", bad.stderr);

    let show = recorder(&["show", s(&old)], &[]).await;
    assert_eq!(show.code, Some(0), "{}", show.stderr);
    let rows: Vec<&str> = show.stdout.lines().collect();
    assert_eq!(rows[0], format!("{}: 3 interaction(s)", old.display()));
    let header: Vec<&str> = rows[1].split_whitespace().collect();
    assert_eq!(header, ["#", "method", "path", "body", "status", "type", "size", "age"]);
    assert!(rows[3].contains(&format!("POST    {CHART_PATH}")), "{}", rows[3]);
    assert!(rows[3].contains("BINANCE:BTCUSDT 4h 800x600"), "{}", rows[3]);
    assert!(rows[3].contains("200     image/png"), "{}", rows[3]);
    let age_of = |row: &str| row.split_whitespace().last().unwrap().to_owned();
    assert!(
        age_of(rows[3]).ends_with('d') && age_of(rows[3]).len() >= 5,
        "{}",
        rows[3]
    );
    assert!(
        age_of(rows[2]).ends_with('s') || age_of(rows[2]).ends_with('m'),
        "{}",
        rows[2]
    );
    let legacy_show = recorder(&["show", s(&legacy), "--format", "json"], &[]).await;
    let shown: serde_json::Value = serde_json::from_str(&legacy_show.stdout).unwrap();
    assert_eq!(shown.as_array().unwrap().len(), 3);
    assert!(shown[0]["recordedAt"].is_null() && shown[0]["ageSeconds"].is_null());
    assert_eq!(shown[0]["account"], "acc-1");
    upstream.stop().await;
}

/// What CI runs for the committed cassettes: `recorder verify cassettes` against mock-chart-img as they were
/// recorded (BASIC plan, default seed). A change of the mock's answers (status, type, size, error body) fails here.
#[tokio::test]
async fn committed_cassettes_verify_against_mock_chart_img() {
    let mock =
        mock_chart_img::spawn(mock_chart_img::Config::default().with_key(KEY1, "acc-1", mock_chart_img::Plan::BASIC))
            .await
            .unwrap();
    let cassettes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cassettes");
    let run = recorder(
        &["verify", s(&cassettes), "--upstream", &mock.base_url()],
        &[(API_KEY_ENV, KEY1)],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("demo against") && run.stdout.contains("0 of 3 interactions drifted"),
        "{}",
        run.stdout
    );
    mock.shutdown().await.unwrap();
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
        &[
            "record",
            s(&dir),
            "--upstream",
            &upstream.url(),
            "--yes",
            "--concurrency",
            "5",
        ],
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
        &[
            "record",
            s(&dir),
            "--upstream",
            &upstream.url(),
            "--yes",
            "--concurrency",
            "1",
        ],
        &[(API_KEY_ENV, KEY1)],
    )
    .await;
    assert_eq!(rec.code, Some(0), "{}\n{}", rec.stdout, rec.stderr);
    assert_eq!(upstream.hits(), 5, "two throttled calls, sent again");
    assert!(!cassette_text(&dir).contains("Too Many Requests"));
    upstream.stop().await;
}
