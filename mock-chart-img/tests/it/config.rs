//! Config files: parsing, errors that name the line, and reload while running.

use std::time::Duration;

use mock_chart_img::{
    spawn_with_state, watch_config, AppState, Config, ConfigFormat, FaultKind, LatencyProfile, SymbolMode,
    WatermarkMode,
};

use crate::small;

#[test]
fn the_example_config_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.yaml");
    let c = Config::from_file(path).unwrap();
    assert_eq!(c.seed, 42);
    assert_eq!(c.keys.len(), 5);
    assert_eq!(c.keys[3].limits().rate_per_sec, 1_000_000.0);
    assert!(!c.keys[4].active);
    assert_eq!(c.faults[0].kind, FaultKind::StatusSequence);
    // Debug output never shows a key.
    assert!(!format!("{c:?}").contains("test-key"));
}

#[test]
fn toml_works_too() {
    let text = r#"
seed = 5

[[keys]]
key = "k"
account = "acc"
plan = "MEGA"

[[faults]]
kind = "latency"
ms = 10
"#;
    let c = Config::parse(text, ConfigFormat::Toml, "t.toml").unwrap();
    assert_eq!((c.seed, c.keys[0].limits().burst), (5, 25));
}

#[test]
fn errors_name_the_line() {
    let cases: &[(&str, ConfigFormat, usize, &str)] = &[
        (
            "seed: 1\nkeys:\n  - key: a\n    account: b\n    plann: PRO\n",
            ConfigFormat::Yaml,
            5,
            "plann",
        ),
        (
            "seed: 1\nkeys:\n  - key: a\n    account: b\n    plan: GOLD\n",
            ConfigFormat::Yaml,
            5,
            "unknown plan `GOLD`",
        ),
        ("seed: one\n", ConfigFormat::Yaml, 1, "invalid type"),
        (
            "keys:\n  - key: a\n    account: x\n  - key: b\n    account: x\n",
            ConfigFormat::Yaml,
            5,
            "listed twice",
        ),
        (
            "faults:\n  - kind: status_sequence\n    statuses: [503]\n  - kind: status_sequence\n    statuses: []\n",
            ConfigFormat::Yaml,
            4,
            "statuses",
        ),
        (
            "seed = 1\n\n[[keys]]\nkey = \"a\"\nacount = \"b\"\n",
            ConfigFormat::Toml,
            5,
            "acount",
        ),
    ];
    for (text, format, line, needle) in cases {
        let e = Config::parse(text, *format, "mock.cfg").unwrap_err();
        assert_eq!(e.line, Some(*line), "{text:?} → {e}");
        let shown = e.to_string();
        assert!(shown.starts_with(&format!("mock.cfg:{line}: ")), "{shown}");
        assert!(shown.contains(needle), "{shown}");
    }
}

#[test]
fn a_config_error_never_shows_a_key() {
    let e = Config::parse(
        "keys:\n  - key: s3cr3t\n    account: a\n  - key: s3cr3t\n    account: b\n",
        ConfigFormat::Yaml,
        "c",
    )
    .unwrap_err();
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
    assert_eq!(e.line, Some(5));
}

#[tokio::test]
async fn reloads_when_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mock.yaml");
    std::fs::write(&path, "keys:\n  - key: k1\n    account: acc-1\n    plan: PRO\n").unwrap();
    let config = Config::from_file(&path).unwrap();
    let state = AppState::new(&config).unwrap();
    let watch = watch_config(&path, state.clone()).unwrap();
    let server = spawn_with_state(state).await.unwrap();
    let http = reqwest::Client::new();
    let chart = |key: &'static str| {
        http.post(format!("{}/v2/tradingview/advanced-chart", server.base_url()))
            .header("x-api-key", key)
            .json(&small())
            .send()
    };
    assert_eq!(chart("k1").await.unwrap().status(), 200);
    assert_eq!(chart("k2").await.unwrap().status(), 403);

    std::fs::write(
        &path,
        "keys:\n  - key: k1\n    account: acc-1\n    plan: PRO\n  - key: k2\n    account: acc-2\n    plan: BASIC\nfaults:\n  - kind: status_sequence\n    account: acc-1\n    statuses: [503]\n",
    )
    .unwrap();
    wait_for(|| watch.reloads() >= 1).await;
    assert_eq!(chart("k2").await.unwrap().status(), 200);
    assert_eq!(
        chart("k1").await.unwrap().status(),
        503,
        "faults come from the new file"
    );
    assert_eq!(
        server.state().usage("acc-1").unwrap().used_today,
        1,
        "an unchanged account keeps its counters"
    );

    // A bad edit is refused with its line; the last good config stays.
    std::fs::write(&path, "keys:\n  - key: k3\n    acount: acc-3\n").unwrap();
    wait_for(|| watch.last_error().is_some()).await;
    let e = watch.last_error().unwrap();
    assert!(e.contains("mock.yaml:3:") && e.contains("acount"), "{e}");
    assert_eq!(chart("k2").await.unwrap().status(), 200);
    assert_eq!(chart("k3").await.unwrap().status(), 403);
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 5 s");
}

#[test]
fn the_binary_refuses_a_bad_config_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "seed: 1\nkeys:\n  - key: a\n    account: b\n    plan: GOLD\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mock-chart-img"))
        .args(["--config", path.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:5:"), "{err}");
}

#[test]
fn the_binary_serves_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mock-chart-img"))
        .args(["--listen", "127.0.0.1:0", "--seed", "3"])
        .env_remove("MOCK_CHART_IMG_KEYS")
        .env_remove("CHART_IMG_ACCOUNTS_JSON")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // No keys: a WARN saying how to add one, then the one `ready` line.
    let warn: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).expect("JSON log lines");
    assert_eq!(warn["severity"], "WARNING", "{warn}");
    assert!(
        warn["message"]
            .as_str()
            .unwrap()
            .contains("MOCK_CHART_IMG_KEYS=my-key:PRO"),
        "{warn}"
    );
    let log: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).expect("JSON log lines");
    assert_eq!(log["message"], "ready", "{log}");
    let addr = log["listen"].as_str().unwrap().to_string();
    assert_eq!(crate::serve::get(&addr, "/__admin/health", &[]).0, 200);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit on SIGTERM: {status}");
}

/// The binary refuses a bad config with one line naming the file and line, exit 2, and no backtrace even when
/// `RUST_BACKTRACE=1`.
#[test]
fn the_binary_reports_a_bad_config_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "seed: 1\nkeys:\n  - {key: k, account: a, plan: GOLD}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mock-chart-img"))
        .arg("--config")
        .arg(&path)
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("bad.yaml:3:") && err.contains("unknown plan `GOLD`"),
        "{err}"
    );
}

#[test]
fn the_issue_9_keys_parse_and_bad_values_name_their_line() {
    let text =
        "symbols: strict\nunsupported_intervals: {BIST: [\"1m\"]}\ncustom_watermark: refuse\nquery_key_on_v2: false\n\
                latency: realistic\ntime_scale: 0.01\ngateway_timeout_ms: 5000\nstorage_max_bytes: 1000\n\
                layouts:\n  - {id: L1, symbol: \"NASDAQ:AAPL\", session_id: s, session_sign: t}\n";
    let c = Config::parse(text, ConfigFormat::Yaml, "m.yaml").unwrap();
    assert_eq!(
        (c.symbols, c.custom_watermark, c.latency),
        (SymbolMode::Strict, WatermarkMode::Refuse, LatencyProfile::Realistic)
    );
    assert_eq!(
        (
            c.query_key_on_v2,
            c.time_scale,
            c.gateway_timeout_ms,
            c.storage_max_bytes
        ),
        (false, 0.01, 5000, 1000)
    );
    assert_eq!(c.layouts[0].session_id.as_deref(), Some("s"));

    let bad = |text: &str| {
        Config::parse(text, ConfigFormat::Yaml, "m.yaml")
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        bad("seed: 1\nunsupported_intervals:\n  BIST: [\"4H\"]\n"),
        "m.yaml:3: unsupported_intervals.BIST: `4H` is not a Chart-IMG interval"
    );
    assert!(
        bad("symbols: loose\n").starts_with("m.yaml:1: symbols: unknown variant `loose`"),
        "{}",
        bad("symbols: loose\n")
    );
    assert_eq!(
        bad("layouts:\n  - {id: L1, session_id: s}\n"),
        "m.yaml:2: layout `L1`: give both `session_id` and `session_sign`, or neither"
    );
    assert_eq!(bad("time_scale: -1\n"), "m.yaml:1: `time_scale` must be a number >= 0");
}
