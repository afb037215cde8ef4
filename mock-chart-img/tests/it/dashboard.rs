//! The dashboard at `/__admin/ui`: its assets and endpoints over HTTP, then the page in headless Chromium (driven
//! over the DevTools protocol): the journal shows the requests just sent with thumbnails of their images, the gauges
//! count them, a fault toggle adds a fault that the next request meets and removes it again, and no key is shown.

use std::time::{Duration, Instant};

use chromium_test::Chromium;
use mock_chart_img::{serve, AppState, Config, Criteria, Expectation, FaultSpec, LayoutConfig, Plan};
use serde_json::json;

use crate::{small, start};

const KEY: &str = "dash-secret-key-0001";
const OTHER_KEY: &str = "dash-secret-key-0002";

fn config() -> Config {
    let mut c = Config::default()
        .with_key(KEY, "acc-dash", Plan::PRO)
        .with_key(OTHER_KEY, "acc-other", Plan::BASIC)
        .with_fault(FaultSpec::latency_ms(1).for_account("acc-other"));
    // A private layout: its TradingView session values are secrets as much as the keys.
    c.layouts.push(LayoutConfig {
        id: "lay-1".into(),
        symbol: None,
        interval: None,
        session_id: Some("dash-secret-session".into()),
        session_sign: Some("dash-secret-sign".into()),
        disconnected: false,
    });
    c
}

#[tokio::test]
async fn dashboard_assets_are_embedded_and_served_with_a_strict_policy() {
    let ctx = start(config()).await;
    let admin = ctx.server.admin_url();
    let page = ctx.http.get(format!("{admin}/ui")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.starts_with("default-src 'none'; script-src 'self'"), "{csp}");
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/__admin/ui/app.js") && !html.contains("http"),
        "nothing from elsewhere: {html}"
    );
    for (path, ct) in [("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")] {
        let r = ctx.http.get(format!("{admin}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with(ct), "{path}");
    }

    // Thumbnails: the images answered, by journal sequence number; none for an error.
    let png = ctx.chart(KEY, small()).await.bytes().await.unwrap();
    ctx.chart(KEY, json!({"interval": "4H"})).await;
    let seqs = ctx.admin_get("/ui/thumbs").await;
    assert_eq!(seqs, json!([1]));
    let thumb = ctx.http.get(format!("{admin}/ui/thumbs/1")).send().await.unwrap();
    assert_eq!(thumb.headers()["content-type"], "image/png");
    assert_eq!(thumb.bytes().await.unwrap(), png);
    assert_eq!(
        ctx.http
            .get(format!("{admin}/ui/thumbs/2"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // The loaded config, without keys.
    let cfg = ctx.admin_get("/config").await;
    assert_eq!(cfg["keys"][0]["account"], "acc-dash", "{cfg}");
    assert_eq!(cfg["faults"][0]["kind"], "latency", "{cfg}");
    assert_eq!(cfg["layouts"], json!(["lay-1"]), "{cfg}");
    let text = cfg.to_string();
    assert!(
        !text.contains("dash-secret"),
        "the config view leaks a key or a session: {text}"
    );
}

#[tokio::test]
async fn dashboard_is_not_on_the_public_listener() {
    // The binary serves `api_router` on a non-loopback --listen and `/__admin` (the dashboard included) elsewhere.
    let state = AppState::new(&config()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, mock_chart_img::api_router(state.clone()), async {
        rx.await.ok();
    }));
    for path in [
        "/__admin/ui",
        "/__admin/ui/app.js",
        "/__admin/ui/thumbs",
        "/__admin/config",
    ] {
        let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        assert_eq!(r.status(), 404, "{path} is on the public listener");
    }
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// The page's view of things, as one JSON value.
const READ_PAGE: &str = r#"(() => {
  const rows = [...document.querySelectorAll('#journal tbody tr')].map(r => ({
    seq: Number(r.dataset.seq),
    status: r.querySelector('td.status').textContent,
    account: r.cells[3].textContent,
    faults: r.cells[8].textContent,
    unlisted: !!r.querySelector('.unlisted'),
    img: r.querySelector('td.thumb img') && {complete: r.querySelector('td.thumb img').complete,
                                            w: r.querySelector('td.thumb img').naturalWidth},
  }));
  const cards = [...document.querySelectorAll('#accounts .card')].map(c => ({account: c.dataset.account, text: c.textContent}));
  return {rows, cards, config: document.querySelector('#config').textContent, text: document.body.innerText,
          html: document.documentElement.outerHTML, refreshed: Number(document.body.dataset.refreshed || 0)};
})()"#;

#[tokio::test]
async fn dashboard_in_chromium_shows_the_journal_and_a_fault_toggle_takes_effect() {
    let Some(chromium) = Chromium::for_test("dashboard_in_chromium_shows_the_journal_and_a_fault_toggle_takes_effect")
    else {
        return;
    };
    let ctx = start(config()).await;
    // Requests just sent: two images for acc-dash (the second of a symbol the catalogue does not list), one refused
    // (unknown key), one image for acc-other.
    assert_eq!(ctx.chart(KEY, small()).await.status(), 200);
    assert_eq!(
        ctx.chart(
            KEY,
            json!({"symbol": "BINANCE:DASHTESTCOINUSDT", "interval": "1h", "width": 500, "height": 300})
        )
        .await
        .status(),
        200
    );
    assert_eq!(ctx.chart("dash-wrong-key", small()).await.status(), 403);
    assert_eq!(ctx.chart(OTHER_KEY, small()).await.status(), 200);
    let url = format!("{}/ui", ctx.server.admin_url());

    let started = Instant::now();
    let wait = Duration::from_secs(15);
    // The DevTools client blocks: each stage runs on a blocking thread, the requests between them on the runtime.
    let (tab, seen) = tokio::task::spawn_blocking(move || {
        let mut tab = chromium.launch(1280, 1100).unwrap();
        tab.goto(&url).unwrap();
        // Every request in the journal, every image decoded.
        tab.wait_for(
            "document.querySelectorAll('#journal tbody tr').length === 4 && \
             [...document.querySelectorAll('td.thumb img')].length === 3 && \
             [...document.querySelectorAll('td.thumb img')].every(i => i.complete && i.naturalWidth > 0)",
            wait,
        )
        .unwrap();
        let seen = tab.eval(READ_PAGE).unwrap();
        // Toggle "500 on every request" on: the page installs the fault through the admin API.
        tab.eval("document.querySelector('[data-preset=error-500] input').click()")
            .unwrap();
        tab.wait_for(
            "document.querySelector('[data-preset=error-500]').classList.contains('on') && \
             document.querySelectorAll('#faults tbody tr').length === 2",
            wait,
        )
        .unwrap();
        (tab, seen)
    })
    .await
    .unwrap();
    let installed = ctx.admin_get("/faults").await;
    assert!(
        installed
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "error_rate" && f["status"] == 500),
        "{installed}"
    );
    // A request now meets it, and the dashboard shows that request with the fault.
    let status = ctx.chart(KEY, small()).await.status().as_u16();
    let (tab, on, shot) = tokio::task::spawn_blocking(move || {
        let mut tab = tab;
        tab.wait_for(
            "document.querySelector('#journal tbody tr td.status').textContent === '500'",
            wait,
        )
        .unwrap();
        let on = tab.eval(READ_PAGE).unwrap();
        let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        tab.screenshot(&shot).unwrap();
        // And off again.
        tab.eval("document.querySelector('[data-preset=error-500] input').click()")
            .unwrap();
        tab.wait_for(
            "!document.querySelector('[data-preset=error-500]').classList.contains('on') && \
             document.querySelectorAll('#faults tbody tr').length === 1",
            wait,
        )
        .unwrap();
        (tab, on, shot)
    })
    .await
    .unwrap();
    let after_on = (status, on);
    let installed = ctx.admin_get("/faults").await;
    assert_eq!(
        installed.as_array().unwrap().len(),
        1,
        "toggled off again: only the config's fault is left: {installed}"
    );
    assert_eq!(ctx.chart(KEY, small()).await.status(), 200);
    let after_off = tokio::task::spawn_blocking(move || {
        let mut tab = tab;
        tab.wait_for(
            "document.querySelector('#journal tbody tr td.status').textContent === '200'",
            wait,
        )
        .unwrap();
        tab.eval(READ_PAGE).unwrap()
    })
    .await
    .unwrap();
    let browser_s = started.elapsed().as_secs_f64();

    let rows = seen["rows"].as_array().unwrap();
    let statuses: Vec<&str> = rows.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["200", "403", "200", "200"], "newest first: {seen}");
    let accounts: Vec<&str> = rows.iter().map(|r| r["account"].as_str().unwrap()).collect();
    assert_eq!(accounts, ["acc-other", "—", "acc-dash", "acc-dash"]);
    assert!(rows[1]["img"].is_null(), "no thumbnail for a refused request");
    let unlisted: Vec<bool> = rows.iter().map(|r| r["unlisted"].as_bool().unwrap()).collect();
    assert_eq!(
        unlisted,
        [false, false, true, false],
        "the unlisted symbol is marked: {seen}"
    );
    for r in [&rows[0], &rows[2], &rows[3]] {
        assert!(r["img"]["w"].as_u64().unwrap() > 0, "{r}");
    }
    let dash = seen["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["account"] == "acc-dash")
        .unwrap();
    let daily = mock_chart_img::Plan::PRO.limits().daily_limit;
    assert!(
        dash["text"].as_str().unwrap().contains(&format!("2 / {daily}")),
        "{dash}"
    );
    assert!(
        seen["config"].as_str().unwrap().contains("\"account\": \"acc-other\""),
        "{seen}"
    );

    let (status, on) = after_on;
    assert_eq!(status, 500, "the toggled fault answered the next request");
    let newest = &on["rows"][0];
    assert_eq!(
        (newest["status"].as_str(), newest["faults"].as_str()),
        (Some("500"), Some("error_rate")),
        "{newest}"
    );
    assert!(after_off["refreshed"].as_u64().unwrap() > 1);

    // No key on the page, in any state.
    for page in [&seen, &on, &after_off] {
        let all = format!("{}{}", page["html"], page["text"]);
        assert!(
            !all.contains("dash-secret") && !all.contains("dash-wrong-key"),
            "a key or session reached the page"
        );
    }
    let size = imagesize::size(&shot).unwrap();
    assert_eq!((size.width, size.height), (1280, 1100));
    eprintln!(
        "dashboard screenshot: {} (browser part took {browser_s:.1} s)",
        shot.display()
    );
}

#[tokio::test]
async fn dashboard_in_chromium_adds_a_stub_that_answers_then_removes_it() {
    let Some(chromium) = Chromium::for_test("dashboard_in_chromium_adds_a_stub_that_answers_then_removes_it") else {
        return;
    };
    let ctx = start(config()).await;
    // Two ETH charts are expected: the one the stub answers and the one rendered after it is removed.
    ctx.server.expect(
        Expectation::new(Criteria::route("/v2/tradingview/advanced-chart").body("symbol", "BINANCE:ETHUSDT"))
            .times(2)
            .named("two ETH charts"),
    );
    let url = format!("{}/ui", ctx.server.admin_url());
    let wait = Duration::from_secs(15);
    let eth = json!({"symbol": "BINANCE:ETHUSDT", "interval": "4h", "width": 400, "height": 300});
    let tab = tokio::task::spawn_blocking(move || {
        let mut tab = chromium.launch(1280, 1100).unwrap();
        tab.goto(&url).unwrap();
        tab.wait_for("Number(document.body.dataset.refreshed || 0) > 0", wait)
            .unwrap();
        tab.wait_for(
            "document.querySelector('#verdict').textContent === '(1 of 1 unmet)' && \
             document.querySelector('#expectations tbody tr').cells[5].textContent === 'unmet'",
            wait,
        )
        .unwrap();
        // A stub the server refuses: its message is shown, nothing is installed.
        tab.eval(
            r#"document.querySelector('#stub-json').value = '{"answer":{"status":99}}';
               document.querySelector('#add-stub button').click()"#,
        )
        .unwrap();
        tab.wait_for(
            "document.querySelector('#stub-error').textContent.includes('99 is not an HTTP status')",
            wait,
        )
        .unwrap();
        // The form's example: ETH charts answer 500.
        tab.eval(
            r#"document.querySelector('#stub-json').value =
                 '{"criteria":{"body":{"symbol":"BINANCE:ETHUSDT"}},"answer":{"status":500}}';
               document.querySelector('#add-stub button').click()"#,
        )
        .unwrap();
        tab.wait_for("document.querySelectorAll('#stubs tbody tr').length === 1", wait)
            .unwrap();
        tab
    })
    .await
    .unwrap();
    let stubs = ctx.admin_get("/stubs").await;
    assert_eq!(stubs.as_array().unwrap().len(), 1, "{stubs}");
    assert_eq!(stubs[0]["origin"], "admin");
    assert_eq!(ctx.chart(KEY, eth.clone()).await.status(), 500);
    assert_eq!(ctx.chart(KEY, small()).await.status(), 200);

    let seen = tokio::task::spawn_blocking(move || {
        let mut tab = tab;
        // The stub's count, and the journal row it answered.
        tab.wait_for(
            "document.querySelector('#stubs tbody tr').cells[6].textContent === '1' && \
             [...document.querySelectorAll('#journal tbody tr')].some(r => r.cells[8].textContent === 'stub 1')",
            wait,
        )
        .unwrap();
        let seen = tab
            .eval("document.querySelector('#stubs tbody tr').textContent")
            .unwrap();
        tab.eval("document.querySelector('#stubs tbody tr button.remove').click()")
            .unwrap();
        tab.wait_for("document.querySelectorAll('#stubs tbody tr').length === 0", wait)
            .unwrap();
        (seen, tab)
    })
    .await
    .unwrap();
    let (seen, tab) = seen;
    let row = seen.as_str().unwrap();
    assert!(row.contains("BINANCE:ETHUSDT") && row.contains("after"), "{row}");
    assert_eq!(ctx.admin_get("/stubs").await, json!([]));
    assert_eq!(
        ctx.chart(KEY, eth).await.status(),
        200,
        "removed from the page: renders again"
    );
    // Both ETH charts were answered: the page's verdict turns to "all hold".
    tokio::task::spawn_blocking(move || {
        let mut tab = tab;
        tab.wait_for(
            "document.querySelector('#verdict').textContent === '(all 1 hold)' && \
             document.querySelector('#expectations tbody tr').cells[4].textContent === '2'",
            wait,
        )
        .unwrap();
    })
    .await
    .unwrap();
}
