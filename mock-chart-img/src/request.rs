//! The normalized chart request the renderer draws and the cache keys on, built from the spec's
//! [`ValidatedChart`](chart_img_spec::ValidatedChart). Validation itself is `chart_img_spec::validate_advanced_chart`
//! (the one the worker runs too); this module only shapes its result for rendering.
//!
//! Free-form objects (`input`, `override`) are key-sorted, so two requests that mean the same thing serialize to
//! the same cache key.

use chart_img_spec::{Placement, PlanLimits, Rejection, ValidatedChart};
use serde::Serialize;
use serde_json::{Map, Value};

/// The text of the watermark BASIC images always carry.
pub const CHART_IMG_WATERMARK: &str = "CHART-IMG";

/// A study as normalized.
#[derive(Debug, Clone, Serialize)]
pub struct Study {
    /// Display name (`Relative Strength Index`).
    pub name: String,
    /// Its natural placement, from the spec's study list.
    pub placement: Placement,
    /// Drawn on the price pane instead of a pane of its own.
    #[serde(rename = "forceOverlay")]
    pub force_overlay: bool,
    /// Key-sorted `input`.
    pub input: Value,
    /// Key-sorted `override`.
    #[serde(rename = "override")]
    pub override_: Value,
}

impl Study {
    /// On the price pane: an overlay study, or any study with `forceOverlay`.
    pub fn on_price_pane(&self) -> bool {
        self.force_overlay || self.placement == Placement::Overlay
    }
}

/// A drawing as normalized.
#[derive(Debug, Clone, Serialize)]
pub struct Drawing {
    /// Display name (`Horizontal Line`).
    pub name: String,
    /// Key-sorted `input`.
    pub input: Value,
    /// Key-sorted `override`.
    #[serde(rename = "override")]
    pub override_: Value,
    /// `top` or `bottom`.
    #[serde(rename = "zOrder")]
    pub z_order: String,
}

/// A valid request with every default filled in.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct ChartRequest {
    pub symbol: String,
    pub interval: String,
    pub width: u32,
    pub height: u32,
    pub style: String,
    pub theme: String,
    pub scale: String,
    pub session: String,
    pub timezone: String,
    pub format: String,
    pub range: Value,
    pub studies: Vec<Study>,
    pub drawings: Vec<Drawing>,
    #[serde(rename = "override")]
    pub override_: Value,
    #[serde(rename = "shiftLeft")]
    pub shift_left: Option<u32>,
    #[serde(rename = "shiftRight")]
    pub shift_right: Option<u32>,
    /// The watermark text drawn: the custom one where the plan honours it, `CHART-IMG` on plans that stamp it.
    pub watermark: Option<String>,
    #[serde(rename = "watermarkSize")]
    pub watermark_size: u32,
    #[serde(rename = "watermarkOpacity")]
    pub watermark_opacity: f64,
}

impl ChartRequest {
    /// The cache key: the canonical JSON of the normalized request.
    pub fn cache_key(&self) -> String {
        serde_json::to_string(self).expect("a normalized request always serializes")
    }

    /// `studies.len() + drawings.len()`, what the plan's parameter limit counts.
    pub fn params(&self) -> usize {
        self.studies.len() + self.drawings.len()
    }

    /// `image/png` or `image/jpeg`.
    pub fn content_type(&self) -> &'static str {
        if self.format == "jpeg" {
            "image/jpeg"
        } else {
            "image/png"
        }
    }
}

impl From<ValidatedChart> for ChartRequest {
    fn from(v: ValidatedChart) -> ChartRequest {
        let watermark = match (v.watermark, v.chart_img_watermark) {
            (Some(custom), _) => Some(custom),
            (None, true) => Some(CHART_IMG_WATERMARK.to_owned()),
            (None, false) => None,
        };
        ChartRequest {
            symbol: v.symbol,
            interval: v.interval,
            width: v.width,
            height: v.height,
            style: v.style,
            theme: v.theme,
            scale: v.scale,
            session: v.session,
            timezone: v.timezone,
            format: v.format,
            range: canonical(&v.range),
            studies: v
                .studies
                .into_iter()
                .map(|s| Study {
                    name: s.name,
                    placement: s.placement,
                    force_overlay: s.force_overlay,
                    input: canonical(&s.input),
                    override_: canonical(&s.override_),
                })
                .collect(),
            drawings: v
                .drawings
                .into_iter()
                .map(|d| Drawing { name: d.name, input: canonical(&d.input), override_: canonical(&d.override_), z_order: d.z_order })
                .collect(),
            override_: canonical(&v.override_),
            shift_left: v.shift_left,
            shift_right: v.shift_right,
            watermark,
            watermark_size: v.watermark_size,
            watermark_opacity: v.watermark_opacity,
        }
    }
}

/// Validates a body with the spec for a key without plan limits in the way (the ENTERPRISE limits) and
/// normalizes it: for benchmarks and tools that render without a server.
///
/// ```
/// let req = mock_chart_img::request::validate(serde_json::json!({"studies": [{"name": "Volume"}]}).as_object().unwrap()).unwrap();
/// assert_eq!((req.width, req.studies.len()), (800, 1));
/// ```
pub fn validate(body: &Map<String, Value>) -> Result<ChartRequest, Rejection> {
    let limits: PlanLimits = chart_img_spec::Plan::Enterprise.limits();
    chart_img_spec::validate_advanced_chart(&Value::Object(body.clone()), &limits).map(ChartRequest::from)
}

/// Sorts object keys recursively so key order never changes a cache key.
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), canonical(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_does_not_change_the_cache_key() {
        let a: Value = serde_json::from_str(r#"{"studies":[{"name":"MACD","input":{"in_0":1,"in_1":2}}]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"studies":[{"input":{"in_1":2,"in_0":1},"name":"MACD"}],"x":1}"#).unwrap();
        let ka = validate(a.as_object().unwrap()).unwrap().cache_key();
        let kb = validate(b.as_object().unwrap()).unwrap().cache_key();
        assert_eq!(ka, kb);
    }
}
