//! The Chart-IMG API's OpenAPI document, served under `/__admin`: the committed file, byte for byte.

use mock_chart_img::Config;

use crate::start;

#[tokio::test]
async fn the_served_document_is_the_committed_openapi_json() {
    let ctx = start(Config::default()).await;
    let r = ctx
        .http
        .get(format!("{}/chart-img-openapi.json", ctx.server.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let served = r.text().await.unwrap();
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../chart-img-spec/openapi.json")).unwrap();
    assert!(
        served == committed,
        "the served document differs from chart-img-spec/openapi.json"
    );
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    // Listed in the admin API's own document too.
    let admin = ctx.admin_get("/openapi.json").await;
    assert!(admin["paths"]["/__admin/chart-img-openapi.json"].is_object());
    assert!(admin["paths"]["/__admin/replay/unused"].is_object());
}
