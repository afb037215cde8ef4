//! `recorder har export/import`: the round trip cassette → HAR → cassette is byte-identical (every committed
//! cassette, and one with every body kind); an imported HAR is redacted exactly as a recording; a HAR built from a
//! real headless Chromium's DevTools Network events, for a page that calls mock-chart-img, imports and replays.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use recorder::{Mode, Request, Response, Secrets, Vcr, VcrConfig};
use serde_json::{json, Value};

use crate::support::{accounts_json, assert_no_keys, cassette_text, secrets, snapshot, Proxy, CHART_PATH, KEY1, KEY2};

const BIN: &str = env!("CARGO_BIN_EXE_recorder");

fn recorder(args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .env(recorder::ACCOUNTS_ENV, accounts_json())
        .output()
        .unwrap()
}

fn round_trip(cassette: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let har = tmp.path().join("c.har");
    let back = tmp.path().join("back");
    let out = recorder(&["har", "export", cassette.to_str().unwrap(), "-o", har.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = recorder(&["har", "import", har.to_str().unwrap(), back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before: Vec<_> = snapshot(cassette)
        .into_iter()
        .filter(|(p, _)| !p.starts_with("."))
        .collect();
    let after = snapshot(&back);
    assert_eq!(
        before.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        after.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        "{}",
        cassette.display()
    );
    for ((path, a), (_, b)) in before.iter().zip(&after) {
        assert!(
            a == b,
            "{}: {} differs after the round trip",
            cassette.display(),
            path.display()
        );
    }
}

/// Every cassette directory under `dir`.
fn cassettes_under(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.join(recorder::CASSETTE_FILE).is_file() {
        out.push(dir.to_path_buf());
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && p.file_name() != Some("bodies".as_ref()) {
            cassettes_under(&p, out);
        }
    }
}

#[test]
fn every_committed_cassette_survives_the_round_trip_byte_for_byte() {
    let mut all = Vec::new();
    cassettes_under(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../cassettes"), &mut all);
    assert!(!all.is_empty(), "no committed cassette found");
    for c in all {
        round_trip(&c);
    }
}

#[tokio::test]
async fn a_cassette_with_every_body_kind_survives_the_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kinds");
    let config = VcrConfig {
        mode: Mode::NewEpisodes,
        record_latency: true,
        record_timestamps: true,
        ..VcrConfig::default()
    };
    let vcr = Vcr::open(&dir, config, secrets()).unwrap();
    let answers: Vec<(Request, Response)> = vec![
        (
            Request::post_json(CHART_PATH, &json!({"symbol": "NASDAQ:AAPL", "format": "jpeg"}))
                .with_header("x-api-key", KEY1),
            Response::new(200)
                .with_header("content-type", "image/jpeg")
                .with_body(&b"\xff\xd8\xff\xe0jpeg\x00\x01"[..]),
        ),
        (
            Request::post_json(CHART_PATH, &json!({"interval": "4H"})).with_header("x-api-key", KEY2),
            Response::new(422)
                .with_header("content-type", "application/json")
                .with_body(
                    r#"[{"value":"4H","msg":"must be a supported interval","param":"interval","location":"body"}]"#,
                ),
        ),
        (
            // Not byte-exact JSON (spaces): stored as text.
            Request::new("GET", "/v3/tradingview/exchange/BINANCE")
                .with_query("symbol", "BTC")
                .with_query("key", KEY1),
            Response::new(429)
                .with_header("content-type", "application/json")
                .with_header("retry-after", "1")
                .with_body(r#"{ "message": "Too Many Requests" }"#),
        ),
        (Request::new("POST", CHART_PATH), Response::new(500)),
    ];
    for (req, resp) in answers {
        vcr.handle(req, |_| async move { Ok::<_, std::io::Error>(resp) })
            .await
            .unwrap();
    }
    // Two identical requests with different answers: their order must survive.
    for n in ["first", "second"] {
        let req = Request::post_json(CHART_PATH, &json!({"symbol": "BINANCE:ETHUSDT"}));
        vcr.handle(req, |_| async move {
            Ok::<_, std::io::Error>(Response::new(200).with_body(n))
        })
        .await
        .unwrap();
    }
    drop(vcr);
    // And one interaction without recordedAt and latencyMs, as cassettes recorded with the defaults have.
    let plain = Vcr::open(
        &dir,
        VcrConfig {
            mode: Mode::NewEpisodes,
            ..VcrConfig::default()
        },
        secrets(),
    )
    .unwrap();
    plain
        .handle(Request::new("DELETE", "/x"), |_| async {
            Ok::<_, std::io::Error>(Response::new(204))
        })
        .await
        .unwrap();
    drop(plain);
    let text = cassette_text(&dir);
    for kind in [
        "\"file\"",
        "\"json\"",
        "\"text\"",
        "latencyMs",
        "recordedAt",
        "\"query\"",
    ] {
        assert!(text.contains(kind), "the fixture lacks {kind}: {text}");
    }
    round_trip(&dir);
}

/// A HAR as a browser saves it: real keys in headers, query and JSON; an entry for another host; one that failed.
fn browser_har(image: &[u8]) -> Value {
    let entry = |method: &str, url: &str, headers: Value, post: Option<&str>, status: i64, content: Value| {
        let mut e = json!({
            "startedDateTime": "2026-12-07T10:11:12.345678Z", "time": 812.4,
            "request": {"method": method, "url": url, "httpVersion": "http/1.1", "cookies": [], "headers": headers,
                        "queryString": [], "headersSize": -1, "bodySize": 0},
            "response": {"status": status, "statusText": "", "httpVersion": "http/1.1", "cookies": [],
                         "headers": [{"name": "Content-Type", "value": content["mimeType"].clone()},
                                     {"name": "x-amzn-RequestId", "value": "3f1c"}, {"name": "date", "value": "Mon"}],
                         "content": content, "redirectURL": "", "headersSize": -1, "bodySize": -1, "_transferSize": 10},
            "cache": {}, "timings": {"blocked": 1.0, "dns": -1, "ssl": -1, "connect": -1, "send": 0.1, "wait": 800.0, "receive": 11.2},
            "_resourceType": "fetch"
        });
        if let Some(p) = post {
            e["request"]["postData"] = json!({"mimeType": "application/json", "text": p});
        }
        e
    };
    let key_headers = |k: &str| {
        json!([{"name": ":authority", "value": "api.chart-img.com"}, {"name": "X-Api-Key", "value": k},
               {"name": "Content-Type", "value": "application/json"}, {"name": "User-Agent", "value": "Chrome"}])
    };
    json!({"log": {"version": "1.2", "creator": {"name": "WebInspector", "version": "537.36"}, "pages": [], "entries": [
        entry("POST", "https://api.chart-img.com/v2/tradingview/advanced-chart", key_headers(KEY1),
              Some(r#"{"symbol":"BINANCE:BTCUSDT","interval":"4h"}"#), 200,
              json!({"size": image.len(), "mimeType": "image/png",
                     "text": base64::engine::general_purpose::STANDARD.encode(image), "encoding": "base64"})),
        entry("GET", &format!("https://api.chart-img.com/v3/tradingview/exchange/list?key={KEY2}"), json!([]), None, 200,
              json!({"size": 30, "mimeType": "application/json", "text": "{\"updatedAt\":null,\"payload\":[]}"})),
        entry("POST", "https://api.chart-img.com/v2/tradingview/advanced-chart/storage", key_headers(KEY2),
              Some(&format!(r#"{{"apiKey":"{KEY2}","symbol":"NASDAQ:AAPL"}}"#)), 403,
              json!({"size": 23, "mimeType": "application/json", "text": "{\"message\":\"Forbidden\"}"})),
        entry("GET", "https://cdn.example.com/logo.png", json!([]), None, 200,
              json!({"size": 4, "mimeType": "image/png", "text": "AAAA", "encoding": "base64"})),
        entry("POST", "https://api.chart-img.com/v2/tradingview/advanced-chart", key_headers(KEY1),
              Some("{}"), 0, json!({"size": 0, "mimeType": "x-unknown"})),
    ]}})
}

#[test]
fn an_imported_har_is_redacted_as_a_recording_and_other_hosts_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let image = b"\x89PNG\r\n\x1a\n\x00\xffimage".to_vec();
    let har = tmp.path().join("browser.har");
    std::fs::write(&har, browser_har(&image).to_string()).unwrap();
    let dir = tmp.path().join("imported");
    let out = recorder(&["har", "import", har.to_str().unwrap(), dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("imported 3 interaction(s); skipped 1 entr(ies) for other hosts (cdn.example.com: 1); skipped 1 entr(ies) without an answer"),
        "{stderr}"
    );
    assert!(!stderr.contains(KEY1) && !stderr.contains(KEY2));
    assert_no_keys(&dir);
    let text = cassette_text(&dir);
    for wanted in [
        "\"x-api-key\": \"<CHART_IMG_API_KEY:acc-1>\"",
        "\"x-api-key\": \"<CHART_IMG_API_KEY:acc-2>\"",
        "\"apiKey\": \"<CHART_IMG_API_KEY:acc-2>\"",
        "\"<CHART_IMG_API_KEY:acc-2>\"", // ?key=
        "\"recordedAt\": \"2026-12-07T10:11:12.345Z\"",
    ] {
        assert!(text.contains(wanted), "{wanted} missing: {text}");
    }
    // Only what a recording keeps: no user agent, request id, date or HTTP/2 pseudo-header; no latency by default.
    for unwanted in [
        "\"user-agent\"",
        "\"x-amzn-requestid\"",
        "\"date\"",
        "\":authority\"",
        "\"latencyms\"",
    ] {
        assert!(!text.to_ascii_lowercase().contains(unwanted), "{unwanted} kept: {text}");
    }
    // The image became a body file, byte-exact, and the cassette replays it.
    let vcr = Vcr::open(&dir, VcrConfig::default(), Secrets::new()).unwrap();
    let req = Request::post_json(CHART_PATH, &json!({"interval": "4h", "symbol": "BINANCE:BTCUSDT"}));
    assert_eq!(vcr.replay(&req).unwrap().body.as_ref(), image.as_slice());

    // Importing again into the same directory is refused: nothing is overwritten.
    let again = recorder(&["har", "import", har.to_str().unwrap(), dir.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a cassette"));

    // `--host` picks another host: here only the CDN entry.
    let cdn = tmp.path().join("cdn");
    let out = recorder(&[
        "har",
        "import",
        har.to_str().unwrap(),
        cdn.to_str().unwrap(),
        "--host",
        "cdn.example.com",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("imported 1 interaction(s); skipped 4 entr(ies) for other hosts (api.chart-img.com: 4)"));
}

#[test]
fn a_binary_body_holding_a_key_and_a_file_that_is_not_har_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut image = b"\x89PNG\r\n\x1a\n".to_vec();
    image.extend_from_slice(KEY1.as_bytes());
    let har = tmp.path().join("leaky.har");
    std::fs::write(&har, browser_har(&image).to_string()).unwrap();
    let dir = tmp.path().join("c");
    let out = recorder(&["har", "import", har.to_str().unwrap(), dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("contains the API key of account acc-1"), "{stderr}");
    assert!(!dir.join(recorder::CASSETTE_FILE).exists());

    let bad = tmp.path().join("bad.har");
    std::fs::write(
        &bad,
        format!(r#"{{"log": {{"version": "1.2", "entries": [{{"x-api-key": "{KEY1}"}}]}}}}"#),
    )
    .unwrap();
    let out = recorder(&["har", "import", bad.to_str().unwrap(), dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not a HAR 1.2 file") && !stderr.contains(KEY1),
        "{stderr}"
    );
}

/// Builds a HAR from the DevTools `Network` events the way DevTools' "Save all as HAR" does (Chromium's
/// `HARWriter`/`HARLog`): one entry per finished or failed request, request headers as sent, `postData`, the
/// response headers, the body from `Network.getResponseBody` (base64 for binary), timings from `response.timing`.
fn har_from_devtools(page: &mut chromium_test::devtools::Page, events: &[Value]) -> Value {
    use std::collections::BTreeMap;
    let mut sent: BTreeMap<String, &Value> = BTreeMap::new();
    let mut received: BTreeMap<String, &Value> = BTreeMap::new();
    let mut done: Vec<(String, f64, Option<String>)> = Vec::new();
    for e in events {
        let p = &e["params"];
        let id = p["requestId"].as_str().unwrap_or_default().to_owned();
        match e["method"].as_str().unwrap_or_default() {
            "Network.requestWillBeSent" => {
                sent.insert(id, p);
            }
            "Network.responseReceived" => {
                received.insert(id, p);
            }
            "Network.loadingFinished" => done.push((id, p["timestamp"].as_f64().unwrap_or(0.0), None)),
            "Network.loadingFailed" => done.push((
                id,
                p["timestamp"].as_f64().unwrap_or(0.0),
                p["errorText"].as_str().map(str::to_owned),
            )),
            _ => {}
        }
    }
    let list = |headers: &Value| -> Value {
        Value::Array(
            headers
                .as_object()
                .into_iter()
                .flatten()
                .map(|(n, v)| json!({"name": n, "value": v.as_str().unwrap_or_default()}))
                .collect(),
        )
    };
    let mut entries = Vec::new();
    for (id, finished, error) in done {
        let Some(s) = sent.get(&id) else { continue };
        let req = &s["request"];
        let resp = received.get(&id).map(|r| &r["response"]);
        let started = s["timestamp"].as_f64().unwrap_or(0.0);
        let wall = s["wallTime"].as_f64().unwrap_or(0.0);
        let started_at = chrono::DateTime::from_timestamp_micros((wall * 1e6) as i64).unwrap();
        let url = url::Url::parse(req["url"].as_str().unwrap()).unwrap();
        let (body, base64) = match (error.is_none(), resp) {
            (true, Some(_)) => {
                let b = page
                    .call("Network.getResponseBody", json!({"requestId": id}))
                    .unwrap_or_default();
                (
                    b["body"].as_str().map(str::to_owned),
                    b["base64Encoded"].as_bool().unwrap_or(false),
                )
            }
            _ => (None, false),
        };
        let protocol = resp.and_then(|r| r["protocol"].as_str()).unwrap_or("http/1.1");
        let timing = resp.map(|r| &r["timing"]).filter(|t| t.is_object());
        let t = |k: &str| timing.and_then(|t| t[k].as_f64()).unwrap_or(-1.0);
        let total = (finished - started) * 1000.0;
        let (send, wait) = match timing {
            Some(_) => (t("sendEnd") - t("sendStart"), t("receiveHeadersEnd") - t("sendEnd")),
            None => (0.0, total),
        };
        let mut content = json!({
            "size": body.as_ref().map_or(0, |b| if base64 {
                base64::engine::general_purpose::STANDARD.decode(b).map_or(0, |d| d.len())
            } else { b.len() }),
            "mimeType": resp.and_then(|r| r["mimeType"].as_str()).unwrap_or("x-unknown"),
        });
        if let Some(b) = body {
            content["text"] = json!(b);
            if base64 {
                content["encoding"] = json!("base64");
            }
        }
        let mut request = json!({
            "method": req["method"], "url": url.as_str(), "httpVersion": protocol,
            "headers": list(resp.map_or(&req["headers"], |r| if r["requestHeaders"].is_object() { &r["requestHeaders"] } else { &req["headers"] })),
            "queryString": url.query_pairs().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
            "cookies": [], "headersSize": -1,
            "bodySize": req["postData"].as_str().map_or(0, str::len),
        });
        if let Some(text) = req["postData"].as_str() {
            let mime = req["headers"]
                .as_object()
                .and_then(|h| h.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-type")))
                .and_then(|(_, v)| v.as_str())
                .unwrap_or("");
            request["postData"] = json!({"mimeType": mime, "text": text});
        }
        entries.push(json!({
            "_initiator": s["initiator"], "_priority": req["initialPriority"], "_resourceType": s["type"].as_str().unwrap_or("other").to_ascii_lowercase(),
            "cache": {}, "connection": resp.and_then(|r| r["connectionId"].as_f64()).map(|c| c.to_string()),
            "pageref": "page_1",
            "request": request,
            "response": {
                "status": resp.and_then(|r| r["status"].as_i64()).unwrap_or(0),
                "statusText": resp.and_then(|r| r["statusText"].as_str()).unwrap_or(""),
                "httpVersion": protocol,
                "headers": resp.map_or(json!([]), |r| list(&r["headers"])),
                "cookies": [], "content": content, "redirectURL": "", "headersSize": -1, "bodySize": -1,
                "_transferSize": resp.and_then(|r| r["encodedDataLength"].as_i64()).unwrap_or(0),
                "_error": error,
            },
            "serverIPAddress": resp.and_then(|r| r["remoteIPAddress"].as_str()).map(|a| a.trim_matches(['[', ']'])),
            "startedDateTime": started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "time": total,
            "timings": {"blocked": t("dnsStart").max(-1.0), "dns": -1, "ssl": -1, "connect": -1,
                        "send": send, "wait": wait, "receive": (total - send - wait).max(0.0), "_blocked_queueing": -1},
        }));
    }
    json!({"log": {"version": "1.2", "creator": {"name": "WebInspector", "version": "537.36"},
                   "pages": [{"startedDateTime": entries.first().map(|e| e["startedDateTime"].clone()), "id": "page_1",
                              "title": "", "pageTimings": {"onContentLoad": -1, "onLoad": -1}}],
                   "entries": entries}})
}

#[tokio::test]
async fn a_har_saved_from_chromium_for_a_page_calling_the_mock_imports_and_replays() {
    let Some(chromium) = chromium_test::Chromium::for_test("har import from Chromium") else {
        return;
    };
    let server =
        mock_chart_img::spawn(mock_chart_img::Config::default().with_key(KEY1, "acc-1", mock_chart_img::Plan::PRO))
            .await
            .unwrap();
    // Another host the page also talks to (allowed cross-origin): its entry is skipped at import.
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_addr = other.local_addr().unwrap();
    let other_app = axum::Router::new().route(
        "/pixel",
        axum::routing::get(|| async {
            (
                [("access-control-allow-origin", "*"), ("content-type", "text/plain")],
                "px",
            )
        }),
    );
    let other_task = tokio::spawn(async move { axum::serve(other, other_app).await });
    let mock_host = server.addr().to_string();
    let base = server.base_url();
    let bodies = [
        json!({"symbol": "BINANCE:BTCUSDT", "interval": "4h", "width": 800, "height": 600, "studies": [{"name": "Volume"}]}),
        json!({"symbol": "NASDAQ:AAPL", "interval": "1D", "theme": "dark", "format": "jpeg"}),
    ];
    let script = format!(
        r#"(async () => {{
            const out = [];
            for (const body of {bodies}) {{
                const r = await fetch('/v2/tradingview/advanced-chart', {{method: 'POST',
                    headers: {{'x-api-key': '{KEY1}', 'content-type': 'application/json'}}, body: JSON.stringify(body)}});
                const bytes = new Uint8Array(await r.arrayBuffer());
                const hash = Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)))
                    .map(b => b.toString(16).padStart(2, '0')).join('');
                out.push([r.status, r.headers.get('content-type'), hash]);
            }}
            await (await fetch('http://{other_addr}/pixel')).text();
            return out;
        }})()"#,
        bodies = Value::Array(bodies.to_vec())
    );
    let (har, seen) = tokio::task::spawn_blocking(move || {
        let mut page = chromium.launch(800, 600).expect("chromium starts");
        // A page of the mock's own origin, so the calls are same-origin as an app served next to the API would make.
        page.goto(&format!("{base}/")).unwrap();
        page.collect_events();
        page.call("Network.enable", json!({})).unwrap();
        let seen = page.eval(&script).unwrap();
        // Let the last loadingFinished events arrive.
        page.wait_for(
            "new Promise(r => setTimeout(() => r(true), 200))",
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        let events = page.take_events();
        (har_from_devtools(&mut page, &events), seen)
    })
    .await
    .unwrap();
    assert_eq!(seen[0][0], 200, "{seen}");
    assert_eq!(
        (&seen[1][0], &seen[1][1]),
        (&json!(200), &json!("image/jpeg")),
        "{seen}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let har_path = tmp.path().join("chromium.har");
    std::fs::write(&har_path, serde_json::to_vec_pretty(&har).unwrap()).unwrap();
    let saved = std::fs::read_to_string(&har_path).unwrap();
    assert!(
        saved.contains(KEY1),
        "the browser's HAR holds the key, as a real one does"
    );
    let dir = tmp.path().join("from-chromium");
    let out = recorder(&[
        "har",
        "import",
        har_path.to_str().unwrap(),
        dir.to_str().unwrap(),
        "--host",
        &mock_host,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The two chart calls, and whatever else the browser asked the mock on its own (a favicon, say).
    let on_mock = har["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["request"]["url"]
                .as_str()
                .unwrap()
                .starts_with(&format!("http://{mock_host}/"))
        })
        .count();
    assert!(on_mock >= 2, "{har}");
    assert!(
        stderr.contains(&format!("imported {on_mock} interaction(s)"))
            && stderr.contains(&format!("other hosts ({other_addr}: 1)")),
        "{stderr}"
    );
    assert_no_keys(&dir);
    assert!(cassette_text(&dir).contains("<CHART_IMG_API_KEY:acc-1>"));
    server.shutdown().await.unwrap();
    other_task.abort();

    // Replay over HTTP with the mock gone: the proxy in replay-only mode answers the browser's exact bytes.
    let vcr = Vcr::open(
        &dir,
        VcrConfig {
            allow_unused: false,
            ..VcrConfig::default()
        },
        secrets(),
    )
    .unwrap();
    let proxy = Proxy::start("http://127.0.0.1:9".into(), vcr.clone()).await;
    let client = reqwest::Client::new();
    for (body, seen) in bodies.iter().zip(seen.as_array().unwrap()) {
        let r = client
            .post(format!("{}{CHART_PATH}", proxy.url()))
            .header("x-api-key", KEY2)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"].to_str().unwrap(), seen[1].as_str().unwrap());
        let bytes = r.bytes().await.unwrap();
        use sha2::Digest;
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&bytes)),
            seen[2].as_str().unwrap(),
            "replayed bytes differ"
        );
    }
    proxy.stop().await;
    let unused = vcr.unused();
    assert!(
        unused.iter().all(|u| u.request.method != "POST"),
        "both chart interactions were replayed: {unused:?}"
    );
}
