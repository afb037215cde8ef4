//! `deploy-plan`: the built binary on a sample accounts file — the exact commands (snapshot) and each refusal.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_worker-chart-export");
const ACCOUNTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/deploy-accounts.json");

fn deploy_plan(extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "deploy-plan",
        "--project",
        "acme-charts",
        "--region",
        "europe-west1",
        "--firestore-location",
        "eur3",
        "--database",
        "charts",
        "--bucket",
        "acme-chart-artifacts",
        "--accounts-file",
        ACCOUNTS,
    ];
    // `extra` is flag/value pairs: a flag given above has its value replaced, others are appended.
    for pair in extra.chunks(2) {
        if let Some(i) = args.iter().position(|a| *a == pair[0]) {
            args[i + 1] = pair[1];
        } else {
            args.extend_from_slice(pair);
        }
    }
    let out = Command::new(BIN)
        .args(&args)
        .env_remove("CHART_IMG_ACCOUNTS_JSON")
        .output()
        .expect("run the binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_sample_configuration_prints_the_expected_commands_and_no_key() {
    let (code, stdout, stderr) = deploy_plan(&["--step-deadline", "540", "--ack-deadline", "600", "--tag", "v1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("sk_sample"), "a key was printed:\n{stdout}");
    // eur3 is a multi-region: Eventarc's location is europe-west4.
    assert!(stdout.contains("--location=europe-west4"), "{stdout}");
    assert!(
        stdout.contains("--ack-deadline=600") && stdout.contains("--timeout=600"),
        "{stdout}"
    );
    assert!(
        stdout.contains("--event-filters=database='charts'") && stdout.contains("FIRESTORE_DATABASE=charts"),
        "{stdout}"
    );
    // BASIC (1/s, burst 3) + 2 × PRO (10/s, burst 15) at 6 s: 3 + 6 + 2 × (15 + 60) = 159 charts; 128 per instance.
    assert!(
        stdout.contains("--max-instances=2") && stdout.contains("--concurrency=80"),
        "{stdout}"
    );
    insta::assert_snapshot!("deploy_plan_sample", stdout);
}

#[test]
fn the_defaults_are_the_workers_and_a_regional_database_keeps_its_region() {
    let (code, stdout, stderr) = deploy_plan(&["--firestore-location", "us-east1"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("--location=us-east1"), "{stdout}");
    // Default step deadline 540 s + 30 s margin.
    assert!(
        stdout.contains("CHART_EXPORT_STEP_DEADLINE_SECONDS=540") && stdout.contains("--ack-deadline=570"),
        "{stdout}"
    );
    let (_, stdout, _) = deploy_plan(&["--firestore-location", "nam5"]);
    assert!(stdout.contains("--location=us-central1"), "{stdout}");
}

#[test]
fn inconsistent_parameters_are_refused_naming_what_is_wrong() {
    let cases: &[(&[&str], &str)] = &[
        (&["--ack-deadline", "601"], "above Pub/Sub's maximum of 600 s"),
        (
            &["--step-deadline", "540", "--ack-deadline", "560"],
            "below the step deadline (540 s) + 30 s",
        ),
        (&["--step-deadline", "590"], "below the step deadline (590 s) + 30 s"),
        (&["--step-deadline", "0"], "--step-deadline must be at least 1 s"),
        (
            &["--firestore-location", "nam7"],
            "--firestore-location \"nam7\" is not a known Firestore location",
        ),
        (&["--firestore-location", "us"], "is not a known Firestore location"),
        (&["--region", "europe"], "--region \"europe\" is not a region name"),
        (&["--database", "Charts_DB"], "is not a Firestore database id"),
        (&["--project", "a b"], "--project \"a b\" must be"),
        (&["--max-in-flight", "0"], "--max-in-flight must be at least 1"),
        (
            &["--accounts-file", "/nonexistent/accounts.json"],
            "cannot read --accounts-file",
        ),
    ];
    for (extra, want) in cases {
        let (code, stdout, stderr) = deploy_plan(extra);
        assert_eq!(code, 2, "{extra:?} was accepted:\n{stdout}");
        assert!(stdout.is_empty(), "{extra:?} printed commands:\n{stdout}");
        assert!(stderr.contains(want), "{extra:?}: want {want:?} in {stderr:?}");
    }
}

#[test]
fn bad_accounts_files_are_refused_without_printing_a_key() {
    let dir = std::env::temp_dir().join(format!("deploy-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.json");
    std::fs::write(&empty, "[]").unwrap();
    let (code, _, stderr) = deploy_plan(&["--accounts-file", empty.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("lists no account"), "{stderr}");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"[{"id":"a","apiKey":"sk_secret_zzz","plan":"GOLD"}]"#).unwrap();
    let (code, _, stderr) = deploy_plan(&["--accounts-file", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--accounts-file") && !stderr.contains("sk_secret_zzz"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
