//! `allow_unused: false`: what a replay left unused is reported at its end (the library's `check_unused`, the proxy's
//! shutdown), over the committed demo cassette.

use std::path::{Path, PathBuf};

use recorder::{Mode, Secrets, Vcr, VcrConfig};

use crate::support::{accounts_json, chart_request, demo_bodies, post_chart, KEY1};

/// The committed `cassettes/demo`, copied so nothing a test does can touch it.
pub fn demo_copy() -> (tempfile::TempDir, PathBuf) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cassettes/demo");
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("demo");
    copy_dir(&src, &dst);
    (tmp, dst)
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let to = dst.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &to);
        } else {
            std::fs::copy(&p, &to).unwrap();
        }
    }
}

fn strict() -> VcrConfig {
    VcrConfig {
        allow_unused: false,
        ..VcrConfig::default()
    }
}

#[test]
fn check_unused_lists_what_no_request_used_until_every_interaction_was() {
    let (_tmp, dir) = demo_copy();
    let vcr = Vcr::open(&dir, strict(), Secrets::new()).unwrap();
    let bodies = demo_bodies();
    vcr.replay(&chart_request(KEY1, &bodies[1])).unwrap();
    let unused = vcr.check_unused().unwrap_err();
    assert_eq!((unused.total, unused.interactions.len()), (3, 2));
    let report = unused.to_string();
    assert!(
        report.starts_with("2 of 3 recorded interactions of cassette ") && report.contains("(allow_unused: false)"),
        "{report}"
    );
    assert_eq!(report.lines().count(), 3, "{report}");
    assert!(report.contains("POST /v2/tradingview/advanced-chart"), "{report}");
    // The RSI chart was used; Volume and MACD were not.
    assert!(
        !report.contains("Relative Strength Index") && report.contains("MACD"),
        "{report}"
    );
    assert!(!report.contains(KEY1));

    vcr.replay(&chart_request(KEY1, &bodies[0])).unwrap();
    vcr.replay(&chart_request(KEY1, &bodies[2])).unwrap();
    assert_eq!(vcr.check_unused(), Ok(()));
    // A rewind starts over: nothing is used again.
    vcr.rewind();
    assert_eq!(vcr.unused().len(), 3);

    // The default allows unused interactions (and still lists them on request).
    let lenient = Vcr::open(&dir, VcrConfig::default(), Secrets::new()).unwrap();
    assert_eq!(lenient.check_unused(), Ok(()));
    assert_eq!(lenient.unused().len(), 3);
}

#[tokio::test]
async fn an_interaction_recorded_in_this_session_or_re_recorded_is_not_unused() {
    let (_tmp, dir) = demo_copy();
    let config = VcrConfig {
        mode: Mode::All,
        ..strict()
    };
    let vcr = Vcr::open(&dir, config, Secrets::new()).unwrap();
    for body in demo_bodies() {
        vcr.handle(chart_request(KEY1, &body), |_| async {
            Ok::<_, std::io::Error>(recorder::Response::new(200).with_body("png"))
        })
        .await
        .unwrap();
    }
    assert_eq!(vcr.check_unused(), Ok(()));
}

/// Sends SIGTERM (what a supervisor or Cloud Run sends) to a child process.
fn terminate(child: &tokio::process::Child) {
    let pid = child.id().expect("child still running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts `recorder proxy` in replay-only mode on `cassette` and waits until it answers.
async fn start_proxy(cassette: &Path, extra: &[&str]) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_recorder"))
        // Replay only: the upstream is never called (and nothing listens there).
        .args([
            "proxy",
            "--mode",
            "none",
            "--upstream",
            "http://127.0.0.1:9",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--cassette")
        .arg(cassette)
        .args(extra)
        .env(recorder::ACCOUNTS_ENV, accounts_json())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return (child, base);
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("recorder proxy did not listen on {base}");
}

#[tokio::test]
async fn the_proxy_reports_unused_interactions_at_shutdown_and_exits_1() {
    let (_tmp, dir) = demo_copy();
    let client = reqwest::Client::new();
    let bodies = demo_bodies();

    let (child, base) = start_proxy(&dir, &["--allow-unused", "false"]).await;
    let (status, ct, _) = post_chart(&client, &base, KEY1, &bodies[0]).await;
    assert_eq!((status, ct.as_str()), (200, "image/png"));
    terminate(&child);
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("2 of 3 recorded interactions"), "{stderr}");
    assert!(stderr.contains("Relative Strength Index") && stderr.contains("MACD") && !stderr.contains("Volume"));
    assert!(!stderr.contains(KEY1));

    // Every interaction used: a clean exit.
    let (child, base) = start_proxy(&dir, &["--allow-unused", "false"]).await;
    for body in &bodies {
        assert_eq!(post_chart(&client, &base, KEY1, body).await.0, 200);
    }
    terminate(&child);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    // The default allows them.
    let (child, _) = start_proxy(&dir, &[]).await;
    terminate(&child);
    assert_eq!(child.wait_with_output().await.unwrap().status.code(), Some(0));
}
