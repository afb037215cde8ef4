//! The normalized chart request the renderer draws and the cache keys on: the spec's
//! [`ValidatedChart`](chart_img_spec::ValidatedChart) with its free-form objects (`input`, `override`, `range`)
//! key-sorted, so two requests that mean the same thing serialize to the same cache key. Validation itself is
//! `chart_img_spec::validate_advanced_chart` (the one the worker runs too).

use chart_img_spec::{PlanLimits, Rejection};
use serde_json::{Map, Value};

/// The normalized request: the spec's validated chart, key-sorted ([`ChartRequest::canonical`]).
pub use chart_img_spec::{
    canonical_json as canonical, ChartDrawing as Drawing, ChartStudy as Study, ValidatedChart as ChartRequest,
    CHART_IMG_WATERMARK,
};

/// Validates a body with the spec for a key without plan limits in the way (the ENTERPRISE limits) and
/// normalizes it: for benchmarks and tools that render without a server.
///
/// ```
/// let req = mock_chart_img::request::validate(serde_json::json!({"studies": [{"name": "Volume"}]}).as_object().unwrap()).unwrap();
/// assert_eq!((req.width, req.studies.len()), (800, 1));
/// ```
pub fn validate(body: &Map<String, Value>) -> Result<ChartRequest, Rejection> {
    let limits: PlanLimits = chart_img_spec::Plan::Enterprise.limits();
    chart_img_spec::validate_advanced_chart(&Value::Object(body.clone()), &limits).map(ChartRequest::canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_does_not_change_the_cache_key() {
        let a: Value = serde_json::from_str(r#"{"studies":[{"name":"MACD","input":{"in_0":1,"in_1":2}}]}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"studies":[{"input":{"in_1":2,"in_0":1},"name":"MACD"}],"x":1}"#).unwrap();
        let ka = validate(a.as_object().unwrap()).unwrap().cache_key();
        let kb = validate(b.as_object().unwrap()).unwrap().cache_key();
        assert_eq!(ka, kb);
    }
}
