//! `worker-chart-export report` through the built binary, on a step that `run-local` rendered against a real
//! mock-chart-img server (real PNGs, a real 422 for one template): the page in headless Chromium (every image
//! decodes, the failure is listed, the outcome shown), bad input, a `gs://` manifest on the GCS emulator, the demo.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use chromium_test::{file_url, probe_result, with_probe, Chromium};
use serde_json::{json, Value};
use worker_chart_export::domain::ObjectRef;
use worker_chart_export::ports::{ArtifactStore, WriteMode};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_worker-chart-export");

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn run(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("STORAGE_EMULATOR_HOST")
        .env_remove("CHART_IMG_ACCOUNTS_JSON")
        .envs(env);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A template id with markup in it (ids may hold anything but `/` and control characters).
const BROKEN: &str = r#"bad<i>&"style""#;

/// A finished step on the local layout: `price_volume` and `rsi_14` rendered by mock-chart-img, [`BROKEN`] refused
/// by it (422 `Invalid Symbol`: the mock is told its symbol is not listed, which no client can check beforehand).
struct Step {
    dir: tempfile::TempDir,
    bucket: String,
}

impl Step {
    async fn render(bucket: &str) -> Self {
        let mut config = mock_chart_img::Config::default().with_key(KEY_1, "acc-1", mock_chart_img::Plan::PRO);
        config.invalid_symbols = vec!["COINBASE:BTCUSDT".into()];
        let mock = mock_chart_img::spawn(config).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir(p.join("templates")).unwrap();
        let request = |extra: Value| {
            let mut r = json!({"style": "candle", "theme": "dark", "width": 800, "height": 600});
            r.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            json!({"chartImgSymbolTemplate": "BINANCE:{symbol}", "request": r})
        };
        let mut broken = request(json!({}));
        broken["chartImgSymbolTemplate"] = json!("COINBASE:{symbol}");
        let templates = [
            ("price_volume", request(json!({}))),
            (
                "rsi_14",
                request(json!({"width": 640, "height": 400, "studies": [{"name": "Relative Strength Index"}]})),
            ),
            (BROKEN, broken),
        ];
        for (id, t) in &templates {
            std::fs::write(p.join("templates").join(format!("{id}.json")), t.to_string()).unwrap();
        }
        std::fs::write(p.join("accounts.json"), accounts_json(&[("acc-1", KEY_1, 50)])).unwrap();
        std::fs::write(
            p.join("run-7.json"),
            flow_run(&["price_volume", "rsi_14", BROKEN], 2).to_string(),
        )
        .unwrap();
        let out = run(
            [
                "run-local",
                &s(&p.join("run-7.json")),
                "--templates",
                &s(&p.join("templates")),
                "--accounts",
                &s(&p.join("accounts.json")),
                "--state-dir",
                &s(&p.join("state")),
                "--base-url",
                &mock.base_url(),
                "--bucket",
                bucket,
            ]
            .map(String::from)
            .to_vec(),
            vec![],
        )
        .await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        mock.shutdown().await.unwrap();
        Self {
            dir,
            bucket: bucket.to_owned(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn manifest(&self) -> PathBuf {
        self.path()
            .join("state/gcs")
            .join(&self.bucket)
            .join("runs/run-7/steps/charts_4h/charts/manifest.json")
    }

    fn manifest_json(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.manifest()).unwrap()).unwrap()
    }
}

/// Reports, from a `load` handler, what the browser made of the page.
const PROBE: &str = r#"addEventListener('load', () => __probe({
  images: [...document.images].map(i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight})),
  dimensions: [...document.querySelectorAll('td.dimensions')].map(t => t.textContent),
  failures: [...document.querySelectorAll('tr.failure')].map(r => [...r.cells].map(c => c.textContent)),
  outcome: document.getElementById('outcome').textContent,
  scripts: document.scripts.length
}));"#;

#[tokio::test]
async fn report_page_loads_its_images_and_lists_the_failures_in_chromium() {
    let step = Step::render("report-bucket").await;
    let page = step.path().join("report.html");
    let out = run(
        vec!["report".into(), s(&step.manifest()), "--out".into(), s(&page)],
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), s(&page));
    let html = std::fs::read_to_string(&page).unwrap();
    let m = step.manifest_json();
    assert_eq!(m["items"].as_array().unwrap().len(), 2, "{m}");
    assert_eq!(m["failures"][0]["chartTemplateId"], BROKEN);
    // On the page the template id is text, not markup.
    assert!(
        !html.contains("<i>") && html.contains("bad&lt;i&gt;&amp;&quot;style&quot;"),
        "the template id is escaped"
    );
    assert!(!html.contains("<script"), "the report has no script of its own");

    let Some(chromium) = Chromium::for_test("report_page_loads_its_images_and_lists_the_failures_in_chromium") else {
        return;
    };
    let started = Instant::now();
    let probed = step.path().join("probed.html");
    std::fs::write(&probed, with_probe(&html, PROBE)).unwrap();
    let seen = probe_result(&chromium.dump_dom(&file_url(&probed)).unwrap()).unwrap();
    let images = seen["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{seen}");
    for (img, dims) in images.iter().zip(seen["dimensions"].as_array().unwrap()) {
        assert!(
            img["complete"].as_bool().unwrap() && img["w"].as_u64().unwrap() > 0,
            "{img} did not load"
        );
        // The pixels read from the PNG header are the ones the browser decoded.
        assert_eq!(
            dims.as_str().unwrap(),
            format!("{} × {} px", img["w"], img["h"]),
            "{seen}"
        );
    }
    assert_eq!(images[0]["alt"], "price_volume");
    assert_eq!(
        (images[0]["w"].as_u64(), images[1]["w"].as_u64()),
        (Some(800), Some(640)),
        "{seen}"
    );
    let failures = seen["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{seen}");
    assert_eq!(
        failures[0].as_array().unwrap()[0..3],
        [json!(BROKEN), json!("CHART_API_FAILED"), json!("422")],
        "{seen}"
    );
    assert!(failures[0][3].as_str().unwrap().contains("Invalid Symbol"), "{seen}");
    assert_eq!(seen["outcome"], "SUCCEEDED");
    assert_eq!(seen["scripts"], 1, "only the probe ran");

    // The same check fails on a page whose image does not decode: the probe can tell.
    let broken = html.replacen("data:image/png;base64,iVBOR", "data:image/png;base64,AAAAA", 1);
    std::fs::write(&probed, with_probe(&broken, PROBE)).unwrap();
    let seen = probe_result(&chromium.dump_dom(&file_url(&probed)).unwrap()).unwrap();
    assert_eq!(seen["images"][0]["w"], 0, "{seen}");
    assert!(seen["images"][1]["w"].as_u64().unwrap() > 0);

    // A screenshot of the page as a person sees it.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report.png");
    chromium.screenshot(&file_url(&page), &shot, 1280, 1400).unwrap();
    let size = imagesize::size(&shot).unwrap();
    assert_eq!((size.width, size.height), (1280, 1400));
    eprintln!(
        "report screenshot: {} (browser part took {:.1} s)",
        shot.display(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn report_bad_input_is_one_line_naming_it_and_exit_2() {
    let step = Step::render("report-bucket").await;
    let p = step.path();
    let out_page = s(&p.join("r.html"));
    std::fs::write(p.join("not-json.json"), "{\"items\": [").unwrap();
    // A manifest copied out of its layout, and a layout with one image gone.
    std::fs::copy(step.manifest(), p.join("copied.json")).unwrap();
    let item0 = step.manifest_json()["items"][0]["gcsUri"].as_str().unwrap().to_owned();
    let missing_in_wrong_dir = format!("missing image {item0} (items[0], price_volume)");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![s(&p.join("nope.json"))], "cannot read manifest"),
        (
            vec![s(&p.join("run-7.json"))],
            "run-7.json is not a step manifest: manifest: ",
        ),
        (
            vec![s(&p.join("not-json.json"))],
            "not-json.json is not a step manifest: not JSON",
        ),
        (
            vec!["gs://only-a-bucket".into()],
            "\"gs://only-a-bucket\" is not a gs://bucket/path URI",
        ),
        (
            vec!["https://example.com/manifest.json".into()],
            "a manifest is a local path or a gs://bucket/path URI",
        ),
        (vec![s(&p.join("copied.json"))], "pass --artifacts-dir <dir>"),
        (
            vec![s(&p.join("copied.json")), "--artifacts-dir".into(), s(p)],
            &missing_in_wrong_dir,
        ),
    ];
    for (args, want) in cases {
        let mut all_args = vec!["report".to_owned()];
        all_args.extend(args.clone());
        all_args.extend(["--out".to_owned(), out_page.clone()]);
        let out = run(all_args, vec![]).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked") && out.stdout.is_empty(), "{args:?}: {err}");
    }
    assert!(!p.join("r.html").exists(), "no page is written for bad input");

    // With the artifacts folder named, the copied manifest reports fine; then an image goes missing.
    let copied = vec![
        "report".into(),
        s(&p.join("copied.json")),
        "--artifacts-dir".into(),
        s(&p.join("state/gcs")),
        "--out".into(),
        out_page.clone(),
    ];
    let out = run(copied.clone(), vec![]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let png = p.join("state/gcs").join(item0.strip_prefix("gs://").unwrap());
    std::fs::remove_file(&png).unwrap();
    let out = run(copied, vec![]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("missing image {item0}")),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn report_reads_a_gs_manifest_and_its_images_from_the_gcs_emulator() {
    let Some((gcs, bucket)) = crate::emulators::gcs("report_reads_a_gs_manifest").await else {
        return;
    };
    let step = Step::render(&bucket).await;
    // Upload the step's objects as the worker would have on Cloud Storage.
    let root = step.path().join("state/gcs").join(&bucket);
    let m = step.manifest_json();
    let mut paths: Vec<String> = m["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| ObjectRef::parse_uri(i["gcsUri"].as_str().unwrap()).unwrap().path)
        .collect();
    paths.push("runs/run-7/steps/charts_4h/charts/manifest.json".into());
    for path in &paths {
        let bytes = std::fs::read(root.join(path)).unwrap();
        let obj = ObjectRef {
            bucket: bucket.clone(),
            path: path.clone(),
        };
        gcs.put(&obj, bytes.into(), "application/octet-stream", WriteMode::Overwrite)
            .await
            .unwrap();
    }
    let host = std::env::var("STORAGE_EMULATOR_HOST").unwrap();
    let uri = format!("gs://{bucket}/runs/run-7/steps/charts_4h/charts/manifest.json");
    let page = step.path().join("gs.html");
    let out = run(
        vec!["report".into(), uri.clone(), "--out".into(), s(&page)],
        vec![("STORAGE_EMULATOR_HOST", host.clone())],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("<img ").count(), 2);
    assert_eq!(html.matches("✓ matches the bytes").count(), 2);
    assert!(html.contains(&format!("From <code>{uri}</code>")));

    let missing = format!("gs://{bucket}/runs/run-7/steps/nope/charts/manifest.json");
    let out = run(
        vec!["report".into(), missing.clone()],
        vec![("STORAGE_EMULATOR_HOST", host)],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        format!("error: manifest {missing} does not exist")
    );
}

#[tokio::test]
async fn report_of_the_demo_is_printed_beside_its_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(vec!["demo".into(), "--out-dir".into(), s(dir.path())], vec![]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("report    "))
        .unwrap_or_else(|| panic!("no report line: {stdout}"));
    let page = PathBuf::from(line.trim_start_matches("report    "));
    assert!(page.starts_with(dir.path()), "{line}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("<img ").count(), 3, "the demo's three charts");
    assert!(html.contains("id=\"outcome\">SUCCEEDED</span>") && html.contains("id=\"no-failures\""));
    // Printed after the chart lines.
    let last_chart = stdout.rfind("chart     ").unwrap();
    assert!(stdout.find("report    ").unwrap() > last_chart, "{stdout}");
}
