//! The ceiling of the wrk load bench (`benches/wrk.sh`): a bare axum server that answers every
//! `POST /v2/tradingview/advanced-chart` with the same PNG bytes, and nothing else — no key, no limits, no journal,
//! no logs. Same runtime (tokio multi-thread) and HTTP stack as the mock, so the ratio of the two is the cost of what
//! the mock does per request.
//!
//! `cargo run --release -p mock-chart-img --example bare_axum -- chart.png` prints `listening on 127.0.0.1:PORT`
//! (a port from the kernel, loopback only).

use axum::{http::header, routing::post, Router};
use bytes::Bytes;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bare_axum <file.png>"))?;
    let png = Bytes::from(std::fs::read(&path)?);
    let app = if std::env::var_os("BARE_BODY").is_some() {
        // Reads the request body as the mock must (to compare, not as the ceiling: the ceiling reads nothing).
        Router::new().route(
            "/v2/tradingview/advanced-chart",
            post(move |body: Bytes| {
                let png = png.clone();
                async move {
                    drop(body);
                    ([(header::CONTENT_TYPE, "image/png")], png)
                }
            }),
        )
    } else {
        Router::new().route(
            "/v2/tradingview/advanced-chart",
            post(move || {
                let png = png.clone();
                async move { ([(header::CONTENT_TYPE, "image/png")], png) }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on {}", listener.local_addr()?);
    if std::env::var_os("BARE_NODELAY").is_some() {
        // The mock's own socket option (TCP_NODELAY on every connection), for a like-for-like transport.
        use axum::serve::ListenerExt;
        axum::serve(listener.tap_io(|tcp| drop(tcp.set_nodelay(true))), app).await?;
    } else {
        axum::serve(listener, app).await?;
    }
    Ok(())
}
