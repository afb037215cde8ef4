//! The crate's data is the project's own copy of `shared/docs/chart-img-data/`; while that folder exists next to the
//! repository, the two must be identical byte for byte.

use std::path::PathBuf;

#[test]
fn embedded_data_matches_the_shared_reference_copy() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/docs/chart-img-data");
    if !shared.is_dir() {
        println!(
            "note: {} does not exist; the comparison with the shared copy is skipped",
            shared.display()
        );
        return;
    }
    let files = [
        ("studies.json", chart_img_spec::__data::STUDIES_JSON),
        ("drawings.json", chart_img_spec::__data::DRAWINGS_JSON),
        ("timezones.json", chart_img_spec::__data::TIMEZONES_JSON),
        ("exchanges.json", chart_img_spec::__data::EXCHANGES_JSON),
    ];
    for (name, embedded) in files {
        let reference = std::fs::read_to_string(shared.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"));
        assert!(
            reference == embedded,
            "chart-img-spec/data/{name} differs from {}; copy it again",
            shared.join(name).display()
        );
    }
}
