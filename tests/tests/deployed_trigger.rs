//! A flow run created with its step READY — the commonest start — runs through the local Eventarc configured with
//! exactly the trigger types `deploy-plan` prints (review-worker M8: the deployed trigger once named `updated` only,
//! and such runs stayed READY in production while every scenario started through `created`).

use std::path::PathBuf;

use worker_chart_export::entry::deploy::{plan, DeployPlanArgs};
use worker_chart_export::eventarc::EventType;

/// The event types of the triggers in `deploy-plan`'s output, read from its `--event-filters=type=…` words.
fn printed_trigger_types() -> Vec<EventType> {
    let args = DeployPlanArgs {
        project: "acme-charts".into(),
        region: "europe-west1".into(),
        firestore_location: "eur3".into(),
        database: "(default)".into(),
        bucket: "acme-chart-artifacts".into(),
        accounts_file: PathBuf::from("accounts.json"),
        step_deadline: None,
        ack_deadline: None,
        max_in_flight: 128,
        repo: "workers".into(),
        tag: "v1".into(),
    };
    let printed = plan(
        &args,
        r#"[{"id":"acc-1","apiKey":"sk_unused","dailyLimit":50,"plan":"PRO"}]"#,
    )
    .unwrap();
    let words: Vec<String> = printed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| shlex::split(l).unwrap_or_default())
        .collect();
    let types: Vec<EventType> = words
        .iter()
        .filter_map(|w| w.strip_prefix("--event-filters=type="))
        .map(|t| EventType::from_ce_type(t).unwrap_or_else(|| panic!("deploy-plan printed an unknown type {t}")))
        .collect();
    assert!(!types.is_empty(), "deploy-plan printed no trigger:\n{printed}");
    types
}

#[test]
fn a_run_created_ready_runs_through_the_triggers_deploy_plan_prints() {
    let Some(mut emu) = tests::runner::Emulators::from_env() else {
        let required = chromium_test::required();
        assert!(
            !required,
            "FIRESTORE_EMULATOR_HOST and STORAGE_EMULATOR_HOST are not set"
        );
        eprintln!("SKIPPED: the emulators are not running");
        return;
    };
    emu.serve_bin = Some(env!("CARGO_BIN_EXE_scenario-serve").into());
    let types = printed_trigger_types();
    // live_happy_path writes the flow run with its step READY: its first (and only needed) event is the create.
    let path = tests::runner::repo_root().join("scenarios/live_happy_path.yaml");
    let mut scenario = tests::scenario::load(&path).unwrap();
    scenario.when.eventarc.types = Some(types.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt
        .block_on(tests::runner::run(&path, scenario, &emu, String::new))
        .unwrap();
    assert!(
        outcome.differences.is_empty(),
        "with the printed trigger types {types:?} the created READY run did not run as expected:\n  {}\n--- deliveries ---\n{}",
        outcome.differences.join("\n  "),
        outcome.deliveries
    );
}
