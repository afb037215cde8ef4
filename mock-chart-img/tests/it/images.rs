//! The images: valid PNG/JPEG of the requested size, deterministic, themed, cached.

use mock_chart_img::{spawn, Config, Plan};
use serde_json::{json, Value};

use crate::start;

fn config() -> Config {
    Config::default().with_seed(3).with_key("k", "acc", Plan::ENTERPRISE)
}

/// Decodes a PNG: (width, height, RGB(A) pixels, bytes per pixel).
fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>, usize) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()));
    let mut reader = decoder.read_info().expect("a valid PNG header");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).expect("valid PNG data");
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf, info.color_type.samples())
}

async fn png_of(ctx: &crate::Ctx, body: Value) -> Vec<u8> {
    let r = ctx.chart("k", body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn a_valid_png_of_the_requested_size() {
    let ctx = start(config()).await;
    for (w, h) in [(800, 600), (400, 300), (1280, 720), (401, 999)] {
        let bytes = png_of(&ctx, json!({ "width": w, "height": h, "interval": "1h" })).await;
        let (dw, dh, pixels, spp) = decode(&bytes);
        assert_eq!((dw, dh), (w, h));
        assert_eq!(pixels.len(), (w * h) as usize * spp);
    }
    // Defaults: 800x600.
    let (dw, dh, ..) = decode(&png_of(&ctx, json!({})).await);
    assert_eq!((dw, dh), (800, 600));
}

#[tokio::test]
async fn same_request_same_bytes_across_servers() {
    let ctx = start(config()).await;
    let body = json!({ "symbol": "NASDAQ:AAPL", "interval": "1D", "studies": [{ "name": "Relative Strength Index" }] });
    let a = png_of(&ctx, body.clone()).await;
    let b = png_of(&ctx, body.clone()).await;
    assert_eq!(a, b);
    // A fresh server (empty cache) with the same seed draws the same bytes: determinism, not just caching.
    let other = start(config()).await;
    assert_eq!(png_of(&other, body.clone()).await, a);
    // Another symbol, interval, or seed draws another chart.
    let mut c = body.clone();
    c["symbol"] = json!("NASDAQ:MSFT");
    assert_ne!(png_of(&ctx, c).await, a);
    let mut d = body.clone();
    d["interval"] = json!("1W");
    assert_ne!(png_of(&ctx, d).await, a);
    let reseeded = start(config().with_seed(4)).await;
    assert_ne!(png_of(&reseeded, body).await, a);
}

#[tokio::test]
async fn repeated_requests_are_answered_from_the_cache() {
    let ctx = start(config()).await;
    // Same meaning, different key order and an ignored field: one rendering.
    png_of(
        &ctx,
        json!({ "symbol": "BINANCE:ETHUSDT", "studies": [{ "name": "Volume", "input": { "a": 1, "b": 2 } }] }),
    )
    .await;
    png_of(
        &ctx,
        json!({ "studies": [{ "input": { "b": 2, "a": 1 }, "name": "Volume" }], "symbol": "BINANCE:ETHUSDT", "x": 1 }),
    )
    .await;
    let health = ctx.admin_get("/health").await;
    assert_eq!(
        (health["renders"].as_u64(), health["cache_hits"].as_u64()),
        (Some(1), Some(1))
    );
    let journal = ctx.admin_get("/requests").await;
    assert_eq!(journal[0]["cache_hit"], true);
    assert_eq!(journal[1]["cache_hit"], false);
}

#[tokio::test]
async fn theme_colours() {
    let ctx = start(config()).await;
    // The bottom-right corner is background in every layout.
    for (theme, rgb) in [("light", [0xFF, 0xFF, 0xFF]), ("dark", [0x13, 0x17, 0x22])] {
        let (w, h, px, spp) = decode(&png_of(&ctx, json!({ "theme": theme })).await);
        let i = (((h - 2) * w + (w - 2)) as usize) * spp;
        assert_eq!(&px[i..i + 3], &rgb, "{theme}");
    }
}

#[tokio::test]
async fn symbol_and_interval_are_written_and_studies_get_panes() {
    let ctx = start(config()).await;
    let plain = decode(&png_of(&ctx, json!({ "theme": "dark" })).await);
    // Text colour of the dark theme appears in the title band (top 30 px).
    let title_band = &plain.2[..(plain.0 * 30) as usize * plain.3];
    let text_px = title_band
        .chunks(plain.3)
        .filter(|p| p[..3] == [0xD1, 0xD4, 0xDC])
        .count();
    assert!(text_px > 200, "title text drawn ({text_px} px)");
    // A study pane: the bottom third changes and carries the study name in the text colour.
    let with_rsi = decode(
        &png_of(
            &ctx,
            json!({ "theme": "dark", "studies": [{ "name": "Relative Strength Index" }] }),
        )
        .await,
    );
    let bottom = |img: &(u32, u32, Vec<u8>, usize)| {
        let from = (img.0 * img.1 * 2 / 3) as usize * img.3;
        img.2[from..]
            .chunks(img.3)
            .filter(|p| p[..3] == [0xD1, 0xD4, 0xDC])
            .count()
    };
    assert!(bottom(&with_rsi) > bottom(&plain) + 50, "study pane label drawn");
}

#[tokio::test]
async fn every_style_renders() {
    let ctx = start(config()).await;
    let mut seen = std::collections::HashSet::new();
    for style in chart_img_spec::STYLES {
        let bytes = png_of(&ctx, json!({ "style": style, "width": 400, "height": 300 })).await;
        decode(&bytes);
        assert!(seen.insert(bytes), "{style} looks like another style");
    }
}

#[tokio::test]
async fn jpeg_when_asked() {
    let ctx = start(config()).await;
    let r = ctx
        .chart("k", json!({ "format": "jpeg", "width": 640, "height": 480 }))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    let b = r.bytes().await.unwrap();
    assert!(b.starts_with(&[0xFF, 0xD8, 0xFF]) && b.ends_with(&[0xFF, 0xD9]));
    // The SOF0 frame header carries the size.
    let sof = b.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG");
    let h = u16::from_be_bytes([b[sof + 5], b[sof + 6]]);
    let w = u16::from_be_bytes([b[sof + 7], b[sof + 8]]);
    assert_eq!((w, h), (640, 480));
}

#[tokio::test]
async fn spawned_servers_shut_down_cleanly() {
    let server = spawn(config()).await.unwrap();
    let url = server.base_url();
    server.shutdown().await.unwrap();
    assert!(reqwest::get(format!("{url}/__admin/health")).await.is_err());
}

/// Each study is drawn where its spec placement says: Super Trend over the price, Bollinger Bands %B in a pane.
#[tokio::test]
async fn studies_are_placed_by_the_spec() {
    let ctx = start(config()).await;
    let blue = |p: &[u8]| p[..3] == [0x29, 0x62, 0xFF];
    // 800x600 with mainPaneHeight 300: the price pane is rows 30..330, a study pane rows 330..580.
    for (name, in_pane) in [
        ("Super Trend", false),
        ("Bollinger Bands %B", true),
        ("Relative Strength Index", true),
    ] {
        let body = json!({ "override": { "mainPaneHeight": 300 }, "studies": [{ "name": name }] });
        let (w, _, px, spp) = decode(&png_of(&ctx, body).await);
        let rows = |r: std::ops::Range<u32>| {
            px[(r.start * w) as usize * spp..(r.end * w) as usize * spp]
                .chunks(spp)
                .filter(|p| blue(p))
                .count()
        };
        let (price, pane) = (rows(30..330), rows(332..580));
        if in_pane {
            assert!(pane > 50 && price == 0, "{name}: price {price}, pane {pane}");
        } else {
            assert!(price > 50, "{name}: price {price}");
            // No pane border at row 330 in the scale column.
            let border = (w - 70..w - 8)
                .filter(|x| px[((330 * w + x) as usize) * spp..][..3] == [0xF0, 0xF3, 0xFA])
                .count();
            assert!(border < 30, "{name}: no pane");
        }
    }
}
