//! Turning a chart template and a step into one Chart-IMG request body.

use serde_json::{Map, Value};

use super::ids::TemplateId;
use super::timeframe::Timeframe;

/// The image format a request asks for; decides the content type, the file extension and the magic bytes expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Jpeg,
}

impl ImageFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
        }
    }

    /// Whether `bytes` start like an image of this format.
    pub fn matches(self, bytes: &[u8]) -> bool {
        match self {
            Self::Png => bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            Self::Jpeg => bytes.starts_with(&[0xFF, 0xD8, 0xFF]),
        }
    }
}

/// One chart to render: the JSON body Chart-IMG receives, and what to expect back.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartRequest {
    pub template_id: TemplateId,
    pub body: Map<String, Value>,
    pub format: ImageFormat,
}

/// A template problem, reported as a per-request failure. The message names the field of `chart_templates/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chart_templates/{template_id}.{field}: {problem}")]
pub struct TemplateInvalid {
    pub template_id: TemplateId,
    pub field: &'static str,
    pub problem: String,
}

/// Builds the body: the template's `request` fields, then `symbol`, `interval` and `timezone` on top.
pub fn build_request(
    template_id: &TemplateId,
    template: &Value,
    symbol: &str,
    timeframe: Timeframe,
    timezone: &str,
) -> Result<ChartRequest, TemplateInvalid> {
    let bad = |field: &'static str, problem: String| TemplateInvalid { template_id: template_id.clone(), field, problem };
    let symbol_template = match template.get("chartImgSymbolTemplate") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(bad("chartImgSymbolTemplate", "must be a string".into())),
        None => return Err(bad("chartImgSymbolTemplate", "is missing".into())),
    };
    let count = symbol_template.matches("{symbol}").count();
    if count != 1 {
        return Err(bad(
            "chartImgSymbolTemplate",
            format!("must contain {{symbol}} exactly once, found {count} in {symbol_template:?}"),
        ));
    }
    let full = symbol_template.replace("{symbol}", symbol);
    let well_formed = full
        .split_once(':')
        .is_some_and(|(ex, sym)| !ex.is_empty() && !sym.is_empty() && !sym.contains(':') && !full.contains(char::is_whitespace));
    if !well_formed {
        return Err(bad("chartImgSymbolTemplate", format!("must yield EXCHANGE:SYMBOL, got {full:?}")));
    }
    let mut body = match template.get("request") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(bad("request", "must be a map of Chart-IMG request fields".into())),
    };
    let format = match body.get("format") {
        None => ImageFormat::Png,
        Some(Value::String(f)) if f == "png" => ImageFormat::Png,
        Some(Value::String(f)) if f == "jpeg" => ImageFormat::Jpeg,
        Some(other) => return Err(bad("request", format!("format must be \"png\" or \"jpeg\", got {other}"))),
    };
    body.insert("symbol".into(), Value::String(full));
    body.insert("interval".into(), Value::String(timeframe.as_str().into()));
    body.insert("timezone".into(), Value::String(timezone.into()));
    Ok(ChartRequest { template_id: template_id.clone(), body, format })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id() -> TemplateId {
        TemplateId::parse("price_volume").unwrap()
    }

    #[test]
    fn body_is_the_template_request_with_symbol_interval_and_timezone_on_top() {
        let t = json!({"chartImgSymbolTemplate": "BINANCE:{symbol}",
                        "request": {"theme": "dark", "interval": "1D", "studies": [{"name": "Volume"}]}});
        let r = build_request(&id(), &t, "BTCUSDT", Timeframe::parse("4h").unwrap(), "Etc/UTC").unwrap();
        assert_eq!(
            Value::Object(r.body),
            json!({"theme": "dark", "interval": "4h", "studies": [{"name": "Volume"}],
                   "symbol": "BINANCE:BTCUSDT", "timezone": "Etc/UTC"})
        );
        assert_eq!(r.format, ImageFormat::Png);
    }

    #[test]
    fn symbol_template_needs_exactly_one_placeholder_and_an_exchange() {
        let tf = Timeframe::parse("4h").unwrap();
        for (tpl, problem) in [
            ("BINANCE:BTC", "found 0"),
            ("{symbol}:{symbol}", "found 2"),
            ("{symbol}", "EXCHANGE:SYMBOL"),
            (":{symbol}", "EXCHANGE:SYMBOL"),
        ] {
            let err = build_request(&id(), &json!({"chartImgSymbolTemplate": tpl}), "BTCUSDT", tf, "Etc/UTC").unwrap_err();
            assert_eq!(err.field, "chartImgSymbolTemplate");
            assert!(err.to_string().contains(problem), "{err}");
            assert!(err.to_string().starts_with("chart_templates/price_volume.chartImgSymbolTemplate"));
        }
        let err = build_request(&id(), &json!({}), "BTCUSDT", tf, "Etc/UTC").unwrap_err();
        assert!(err.to_string().contains("is missing"));
    }

    #[test]
    fn jpeg_format_is_honoured_and_magic_bytes_checked() {
        let t = json!({"chartImgSymbolTemplate": "X:{symbol}", "request": {"format": "jpeg"}});
        let r = build_request(&id(), &t, "A", Timeframe::parse("1D").unwrap(), "Etc/UTC").unwrap();
        assert_eq!(r.format, ImageFormat::Jpeg);
        assert!(ImageFormat::Jpeg.matches(&[0xFF, 0xD8, 0xFF, 0xE0]));
        assert!(!ImageFormat::Png.matches(b"<html>"));
    }
}
