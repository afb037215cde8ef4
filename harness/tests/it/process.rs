//! The `worker-serve` binary as a child: health, JSON logs, SIGTERM timed to the exit, SIGKILL, a new instance.

use std::time::Duration;

use harness::process::{ServeProcess, ServeSpec};

fn spec(name: &str, firestore: &str, storage: &str, project: &str) -> ServeSpec {
    ServeSpec::new(name, env!("CARGO_BIN_EXE_worker-serve"))
        .env("FIRESTORE_EMULATOR_HOST", firestore)
        .env("STORAGE_EMULATOR_HOST", format!("http://{storage}"))
        .env("GOOGLE_CLOUD_PROJECT", project)
        .env("ARTIFACTS_BUCKET", "unused")
        .env(
            "CHART_IMG_ACCOUNTS_JSON",
            r#"[{"id":"acc-1","apiKey":"k-process-test","dailyLimit":5}]"#,
        )
}

#[tokio::test]
async fn serve_starts_logs_json_stops_on_sigterm_and_dies_on_sigkill() {
    let Some((firestore, storage)) = crate::emulators("serve_starts_logs_json") else {
        return;
    };
    let project = crate::project("proc");
    let mut a = ServeProcess::start(spec("serve-1", &firestore, &storage, &project))
        .await
        .unwrap();
    assert!(a.running());
    let r = reqwest::get(format!("{}/health", a.url())).await.unwrap();
    assert!(r.status().is_success());
    let started = a
        .json_logs()
        .into_iter()
        .find(|l| l["event"] == "serve_started")
        .expect("a serve_started JSON line");
    assert_eq!(started["port"], a.port);
    let t = a.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(t.by_itself && t.status.unwrap().success(), "{t:?}");
    assert!(
        t.after < Duration::from_secs(5),
        "an idle serve exits at once on SIGTERM: {t:?}"
    );

    // A new instance: a new process with its own worker id.
    let mut b = ServeProcess::start(spec("serve-2", &firestore, &storage, &project))
        .await
        .unwrap();
    assert_ne!(a.pid(), b.pid());
    let id = |p: &ServeProcess| {
        p.json_logs()
            .into_iter()
            .find(|l| l["event"] == "serve_started")
            .unwrap()["worker"]
            .clone()
    };
    assert_ne!(id(&a), id(&b));
    b.kill().await;
    assert!(!b.running());
    assert!(!b.exit_status().unwrap().success(), "SIGKILL is not a clean exit");
    assert!(reqwest::get(format!("{}/health", b.url())).await.is_err());
}

#[tokio::test]
async fn a_bad_configuration_fails_the_start_with_the_childs_message() {
    let Some((firestore, storage)) = crate::emulators("a_bad_configuration_fails_the_start") else {
        return;
    };
    let s = spec("serve-bad", &firestore, &storage, "p").env("CHART_IMG_ACCOUNTS_JSON", "[]");
    let e = ServeProcess::start(s).await.unwrap_err().to_string();
    assert!(e.contains("exited") && e.contains("CHART_IMG_ACCOUNTS_JSON"), "{e}");
}
