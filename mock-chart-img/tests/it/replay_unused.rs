//! `replay: {allow_unused: false}`: the recorded interactions no request used, reported by
//! `GET /__admin/replay/unused` and at the binary's shutdown (exit 1), over a copy of the committed demo cassette.

use std::path::{Path, PathBuf};

use mock_chart_img::{Config, Plan};
use serde_json::Value;

use crate::start;

fn demo_copy() -> (tempfile::TempDir, PathBuf) {
    fn copy_dir(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let p = e.unwrap().path();
            let to = dst.join(p.file_name().unwrap());
            if p.is_dir() {
                copy_dir(&p, &to)
            } else {
                std::fs::copy(&p, &to).map(drop).unwrap()
            }
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("demo");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../cassettes/demo"), &dst);
    (tmp, dst)
}

/// The request bodies the demo cassette holds, in its order.
fn recorded_bodies(dir: &Path) -> Vec<Value> {
    let file: Value = serde_json::from_slice(&std::fs::read(dir.join("cassette.json")).unwrap()).unwrap();
    file["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["request"]["body"]["json"].clone())
        .collect()
}

fn config(dir: &Path, allow_unused: bool) -> Config {
    let mut c = Config::default().with_key("k", "acc", Plan::PRO).with_replay(dir, true);
    c.replay.as_mut().unwrap().allow_unused = allow_unused;
    c
}

async fn unused(ctx: &crate::Ctx) -> (u16, Value) {
    let r = ctx
        .http
        .get(format!("{}/replay/unused", ctx.server.admin_url()))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn the_admin_call_lists_unused_interactions_and_answers_409_until_all_were_used() {
    let (_tmp, dir) = demo_copy();
    let bodies = recorded_bodies(&dir);
    let ctx = start(config(&dir, false)).await;
    let (status, report) = unused(&ctx).await;
    assert_eq!((status, report["total"].as_u64()), (409, Some(3)), "{report}");
    assert_eq!(report["allowUnused"], false);

    let r = ctx.chart("k", bodies[1].clone()).await;
    assert_eq!(r.status(), 200);
    let (status, report) = unused(&ctx).await;
    assert_eq!(status, 409);
    let left: Vec<u64> = report["interactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["index"].as_u64().unwrap())
        .collect();
    assert_eq!(left, [0, 2], "{report}");
    assert_eq!(
        report["interactions"][0]["request"]["path"],
        "/v2/tradingview/advanced-chart"
    );

    for i in [0, 2] {
        assert_eq!(ctx.chart("k", bodies[i].clone()).await.status(), 200);
    }
    let (status, report) = unused(&ctx).await;
    assert_eq!((status, report["interactions"].as_array().unwrap().len()), (200, 0));
    assert_eq!(ctx.server.state().check_replay_unused(), Ok(()));

    // Allowed: listed, but 200.
    let lenient = start(config(&dir, true)).await;
    let (status, report) = unused(&lenient).await;
    assert_eq!((status, report["interactions"].as_array().unwrap().len()), (200, 3));

    // No cassette: 404.
    let none = start(Config::default()).await;
    assert_eq!(unused(&none).await.0, 404);
}

#[test]
fn the_binary_reports_unused_interactions_at_shutdown_and_exits_1() {
    use std::io::{BufRead, BufReader};
    let (tmp, dir) = demo_copy();
    let bodies = recorded_bodies(&dir);
    let path = tmp.path().join("mock.yaml");
    std::fs::write(
        &path,
        format!(
            "keys:\n  - {{key: k, account: acc, plan: PRO}}\nreplay:\n  dir: {}\n  strict: true\n  allow_unused: false\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mock-chart-img"))
        .args(["--listen", "127.0.0.1:0", "--log-summary-secs", "0", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the mock exited before listening"
        );
        if let Some(a) = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|l| l["listen"].as_str().map(str::to_owned))
        {
            break a;
        }
    };
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "x-api-key: k"])
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(bodies[0].to_string())
        .arg(format!("http://{addr}/v2/tradingview/advanced-chart"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(rest.contains("2 of 3 recorded interactions"), "{rest}");
    assert!(
        rest.contains("#1 POST /v2/tradingview/advanced-chart") && rest.contains("#2 POST"),
        "{rest}"
    );
}
