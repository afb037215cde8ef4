//! `openapi.json` is the generated document, committed so that it can be read, diffed and fed to tools without a
//! build. This test fails when the two differ; `UPDATE_OPENAPI=1` rewrites the file.

use std::path::Path;

#[test]
fn the_committed_openapi_json_is_the_generated_document() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let generated = chart_img_spec::openapi::document_text();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} differs from chart_img_spec::openapi::document(); regenerate it with\n  \
         UPDATE_OPENAPI=1 cargo test -p chart-img-spec --test openapi\nand commit the result",
        path.display()
    );
}
