//! `recorder proxy` as a container service: every setting from the environment (`RECORDER_PROXY_*`, `PORT`,
//! `CHART_IMG_ACCOUNTS_JSON`), one `ready` line, `/__recorder/health`, the `healthcheck` subcommand, and a clean
//! stop on SIGTERM that writes the cassette. A real process over real HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_recorder");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the proxy if an assertion fails first (it would hold the test's output open).
struct Guard(Option<std::process::Child>);
impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn healthcheck(port: u16) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("healthcheck")
        .env_remove("RECORDER_PROXY_LISTEN")
        .env("PORT", port.to_string())
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn the_proxy_runs_from_its_environment_alone() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cassette = dir.path().join("c");
    let port = free_port();
    let mut child = Command::new(BIN)
        .arg("proxy")
        .env("PORT", port.to_string())
        .env("RECORDER_PROXY_UPSTREAM", upstream.url())
        .env("RECORDER_PROXY_CASSETTE", &cassette)
        .env("RECORDER_PROXY_MODE", "new_episodes")
        .env("RECORDER_PROXY_IGNORE_JSON_FIELDS", "width,height")
        .env("RECORDER_PROXY_WRITE", "each")
        .env(recorder::ACCOUNTS_ENV, accounts_json())
        .env_remove("RECORDER_PROXY_LISTEN")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut guard = Guard(Some(child));
    let first = lines.next().unwrap().unwrap();
    let ready: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(ready["message"], "ready", "{ready}");
    assert_eq!(ready["listen"], format!("0.0.0.0:{port}"), "{ready}");
    assert_eq!(ready["mode"], "new_episodes");

    let base = format!("http://127.0.0.1:{port}");
    let health: serde_json::Value = reqwest::get(format!("{base}{}", recorder::HEALTH_PATH))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, serde_json::json!({"status": "ok", "mode": "new_episodes"}));
    assert_eq!(healthcheck(port), (Some(0), String::new()));

    // Recorded through the proxy (a list variable, RECORDER_PROXY_IGNORE_JSON_FIELDS, parsed on the way).
    let client = reqwest::Client::new();
    for width in [800] {
        let r = client
            .post(format!("{base}{CHART_PATH}"))
            .header("x-api-key", KEY1)
            .header("content-type", "application/json")
            .body(format!(r#"{{"symbol":"BINANCE:BTCUSDT","width":{width}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(upstream.hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    let mut child = guard.0.take().unwrap();
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "clean stop on SIGTERM: {status}");
    let text = std::fs::read_to_string(cassette.join(recorder::CASSETTE_FILE)).unwrap();
    assert!(
        text.contains("<CHART_IMG_API_KEY:acc-1>") && !text.contains(KEY1),
        "{text}"
    );
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(!rest.join("\n").contains(KEY1));

    let (code, err) = healthcheck(port);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}{}", recorder::HEALTH_PATH)),
        "{err}"
    );
    upstream.stop().await;
}
