//! `recorder show` and `lint --max-age`, and every command on an unreadable cassette.

use std::path::Path;

use recorder::API_KEY_ENV;

use super::*;

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
async fn lint_max_age_flags_old_and_undated_cassettes_and_show_prints_ages() {
    let upstream = ChartUpstream::start().await;
    let root = tempfile::tempdir().unwrap();
    let fresh = root.path().join("fresh");
    seed(&fresh, &demo(KEY1)).await;
    let env = [(API_KEY_ENV, KEY1)];
    let rec = recorder(&record_args(&fresh, &upstream.url(), &[]), &env).await;
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
