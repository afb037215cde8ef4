//! Turning a chart template and a step into one Chart-IMG request body, and checking it with the spec's validation
//! before any quota is spent on it.

use chart_img_spec::{Plan, PlanLimits};
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
    /// What an account's plan must allow for this request (set by [`check_request`]).
    pub needs: PlanNeeds,
}

/// The size and parameter count of a request: an account whose plan does not allow them is never chosen for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanNeeds {
    pub width: u32,
    pub height: u32,
    /// Studies plus drawings.
    pub params: usize,
}

impl PlanNeeds {
    /// Needs every plan meets (the API's smallest chart, no studies).
    pub const NONE: PlanNeeds = PlanNeeds {
        width: 0,
        height: 0,
        params: 0,
    };

    pub fn fits(&self, plan: Plan) -> bool {
        plan.limits().fits(self.width, self.height, self.params)
    }
}

/// A template problem, reported as a per-request failure. The message names the field of `chart_templates/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chart_templates/{template_id}.{field}: {problem}")]
pub struct TemplateInvalid {
    pub template_id: TemplateId,
    pub field: String,
    pub problem: String,
}

/// Checks a built request as Chart-IMG would (`chart_img_spec::validate_advanced_chart`) for the most permissive of
/// the configured `plans`, so a request the API would refuse fails here without a reservation or a call. Sets
/// [`ChartRequest::needs`] for the account choice. With no plan configured there is nothing to check against (the
/// caller fails the request for want of an account).
pub fn check_request(mut req: ChartRequest, plans: &[Plan]) -> Result<ChartRequest, TemplateInvalid> {
    let Some(largest) = Plan::most_permissive(plans.iter().copied()) else {
        return Ok(req);
    };
    let bad = |field: String, problem: String| TemplateInvalid {
        template_id: req.template_id.clone(),
        field,
        problem,
    };
    // Fields and semantics first, with the size and parameter limits out of the way: which plan fits is decided next,
    // with a message that says so.
    let unbounded = PlanLimits {
        max_width: u32::MAX,
        max_height: u32::MAX,
        max_params: u32::MAX,
        ..largest.limits()
    };
    let chart = chart_img_spec::validate_advanced_chart(&Value::Object(req.body.clone()), &unbounded).map_err(|r| {
        let field = format!("request.{}", r.field.as_deref().unwrap_or("body"));
        bad(
            field,
            format!("Chart-IMG would refuse it with {} {}", r.status, r.summary()),
        )
    })?;
    let needs = PlanNeeds {
        width: chart.width,
        height: chart.height,
        params: chart.params(),
    };
    if !needs.fits(largest) {
        let l = largest.limits();
        let (field, what) = if chart.width > l.max_width || chart.height > l.max_height {
            ("request.width", format!("{}x{}", chart.width, chart.height))
        } else {
            ("request.studies", format!("{} studies and drawings", needs.params))
        };
        return Err(bad(
            field.to_owned(),
            format!(
                "{what}: no configured account's plan fits (the largest, {largest}, allows {}x{} and {} studies and drawings)",
                l.max_width, l.max_height, l.max_params
            ),
        ));
    }
    req.needs = needs;
    Ok(req)
}

/// Builds the body: the template's `request` fields, then `symbol`, `interval` and `timezone` on top.
pub fn build_request(
    template_id: &TemplateId,
    template: &Value,
    symbol: &str,
    timeframe: Timeframe,
    timezone: &str,
) -> Result<ChartRequest, TemplateInvalid> {
    let bad = |field: &'static str, problem: String| TemplateInvalid {
        template_id: template_id.clone(),
        field: field.to_owned(),
        problem,
    };
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
    let well_formed = full.split_once(':').is_some_and(|(ex, sym)| {
        !ex.is_empty() && !sym.is_empty() && !sym.contains(':') && !full.contains(char::is_whitespace)
    });
    if !well_formed {
        return Err(bad(
            "chartImgSymbolTemplate",
            format!("must yield EXCHANGE:SYMBOL, got {full:?}"),
        ));
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
        Some(other) => {
            return Err(bad(
                "request",
                format!("format must be \"png\" or \"jpeg\", got {other}"),
            ))
        }
    };
    body.insert("symbol".into(), Value::String(full));
    body.insert("interval".into(), Value::String(timeframe.as_str().into()));
    body.insert("timezone".into(), Value::String(timezone.into()));
    Ok(ChartRequest {
        template_id: template_id.clone(),
        body,
        format,
        needs: PlanNeeds::NONE,
    })
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
            let err =
                build_request(&id(), &json!({"chartImgSymbolTemplate": tpl}), "BTCUSDT", tf, "Etc/UTC").unwrap_err();
            assert_eq!(err.field, "chartImgSymbolTemplate");
            assert!(err.to_string().contains(problem), "{err}");
            assert!(err
                .to_string()
                .starts_with("chart_templates/price_volume.chartImgSymbolTemplate"));
        }
        let err = build_request(&id(), &json!({}), "BTCUSDT", tf, "Etc/UTC").unwrap_err();
        assert!(err.to_string().contains("is missing"));
    }

    fn built(request: Value) -> ChartRequest {
        let t = json!({"chartImgSymbolTemplate": "BINANCE:{symbol}", "request": request});
        build_request(&id(), &t, "BTCUSDT", Timeframe::parse("4h").unwrap(), "Etc/UTC").unwrap()
    }

    #[test]
    fn requests_the_api_would_refuse_fail_naming_the_field() {
        let plans = [Plan::Basic, Plan::Pro];
        for (request, field, problem) in [
            (
                json!({"studies": [{"name": "RSI"}]}),
                "request.studies[0].name",
                "422 studies[0].name: must be a supported name (\"RSI\")",
            ),
            (
                json!({"studies": [{"name": "MACD", "input": {"in_2": 51}}]}),
                "request.studies[0].input.in_2",
                "must be an integer between 1 and 50",
            ),
            (
                json!({"drawings": [{"name": "Horizontal Line", "input": {}}]}),
                "request.drawings[0].input.price",
                "is required",
            ),
            (
                json!({"drawings": [{"name": "Circle", "input": {}}]}),
                "request.drawings[0].name",
                "must be a supported name",
            ),
        ] {
            let err = check_request(built(request), &plans).unwrap_err();
            assert_eq!(err.field, field);
            assert!(err.problem.contains(problem), "{err}");
            assert!(
                err.to_string().starts_with(&format!(
                    "chart_templates/price_volume.{field}: Chart-IMG would refuse it with 422"
                )),
                "{err}"
            );
        }
        // The timezone comes from the worker's settings, so a bad one is named too.
        let t = json!({"chartImgSymbolTemplate": "BINANCE:{symbol}"});
        let req = build_request(&id(), &t, "BTCUSDT", Timeframe::parse("4h").unwrap(), "Europe/Vaduz").unwrap();
        assert_eq!(check_request(req, &plans).unwrap_err().field, "request.timezone");
        let t = json!({"chartImgSymbolTemplate": "BAHRAIN:{symbol}"});
        let req = build_request(&id(), &t, "BATELCO", Timeframe::parse("4h").unwrap(), "Etc/UTC").unwrap();
        let err = check_request(req, &plans).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.problem.as_str()),
            ("request.symbol", "Chart-IMG would refuse it with 422 Invalid Symbol")
        );
    }

    #[test]
    fn size_and_parameters_are_checked_against_the_most_permissive_plan_and_recorded_for_the_account_choice() {
        let big = json!({"width": 1920, "height": 1080});
        let ok = check_request(built(big.clone()), &[Plan::Basic, Plan::Pro]).unwrap();
        assert_eq!(
            ok.needs,
            PlanNeeds {
                width: 1920,
                height: 1080,
                params: 0
            }
        );
        assert!(!ok.needs.fits(Plan::Basic) && ok.needs.fits(Plan::Pro));
        let err = check_request(built(big), &[Plan::Basic]).unwrap_err();
        assert_eq!(err.field, "request.width");
        assert_eq!(err.problem, "1920x1080: no configured account's plan fits (the largest, BASIC, allows 800x600 and 3 studies and drawings)");
        let four: Vec<Value> = ["Volume", "MACD", "Aroon", "Momentum"]
            .iter()
            .map(|n| json!({"name": n}))
            .collect();
        let err = check_request(built(json!({"studies": four})), &[Plan::Basic]).unwrap_err();
        assert_eq!(
            (
                err.field.as_str(),
                err.problem
                    .starts_with("4 studies and drawings: no configured account's plan fits")
            ),
            ("request.studies", true)
        );
        // Numbers as the API reads them: "800" is 800.
        assert_eq!(
            check_request(built(json!({"width": "800"})), &[Plan::Basic])
                .unwrap()
                .needs
                .width,
            800
        );
        // No account configured: nothing to check against.
        assert!(check_request(built(json!({"studies": [{"name": "RSI"}]})), &[]).is_ok());
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
