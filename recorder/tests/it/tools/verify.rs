//! `recorder verify`: drift between a cassette and the upstream it was recorded from.

use std::path::Path;

use recorder::API_KEY_ENV;

use super::*;

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
    let rec = recorder(&record_args(&dir, &upstream.url(), &[]), &env).await;
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
