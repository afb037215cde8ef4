//! API v1, the legacy GET routes (`chart-img-api.md`, "API v1"): routes, parameters with their defaults and
//! minimums, study codes, the storage answer and the error bodies. Whether the live API still serves them is
//! *uncertain*; several public clients (the API author's own bots among them) still call them.
//!
//! [`to_v2`] turns a v1 query into the v2 body it means, so a v1 request is then validated and rendered as a v2 one:
//! plans, limits and semantic checks are the same. [`v1_rejection`] gives a v2 refusal its v1 body.

use serde_json::{json, Map, Value};

use crate::{catalog, FieldError, Options, PlanLimits, Rejection, ValidatedChart};

/// `GET /v1/tradingview/mini-chart` (`/storage` appended: the storage variant).
pub const MINI_CHART: &str = "/v1/tradingview/mini-chart";
/// `GET /v1/tradingview/advanced-chart` (`/storage` appended: the storage variant).
pub const ADVANCED_CHART: &str = "/v1/tradingview/advanced-chart";
/// Where v1 storage URLs point, on the API host: `<base>/v1/storage/pub/<uuid>.png`.
pub const STORAGE_PREFIX: &str = "/v1/storage/pub";

/// The two v1 charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V1Chart {
    /// `mini-chart`: a small line chart over a period.
    Mini,
    /// `advanced-chart`: the TradingView chart with studies.
    Advanced,
}

impl V1Chart {
    /// The chart a path segment names (`mini-chart`, `advanced-chart`).
    pub fn from_segment(s: &str) -> Option<V1Chart> {
        match s {
            "mini-chart" => Some(V1Chart::Mini),
            "advanced-chart" => Some(V1Chart::Advanced),
            _ => None,
        }
    }

    /// Defaults and minimums of this chart.
    pub fn rules(self) -> &'static V1Rules {
        match self {
            V1Chart::Mini => &MINI,
            V1Chart::Advanced => &ADVANCED,
        }
    }
}

/// The documented defaults and minimums of one v1 chart.
#[derive(Debug)]
pub struct V1Rules {
    /// The accepted `interval` values.
    pub intervals: &'static [&'static str],
    /// `interval` when absent.
    pub interval: &'static str,
    /// `theme` when absent.
    pub theme: &'static str,
    /// `width` when absent, and its minimum.
    pub width: u32,
    /// Smallest `width`.
    pub min_width: u32,
    /// `height` when absent.
    pub height: u32,
    /// Smallest `height`.
    pub min_height: u32,
}

/// mini-chart: `interval` is the period shown, one of `1D 1M 3M 1Y 5Y ALL` (lower case seen in the API author's own
/// config: case-insensitive, *inferred*), default `1M`; `theme` default `dark`; 350×220 by default, at least
/// 320×220.
pub const MINI: V1Rules = V1Rules {
    intervals: &["1D", "1M", "3M", "1Y", "5Y", "ALL"],
    interval: "1M",
    theme: "dark",
    width: 350,
    min_width: 320,
    height: 220,
    min_height: 220,
};

/// advanced-chart: the v2 intervals without `6h 8h 12h 2D 3D`; 800×600 by default, at least 320×220. Its default
/// theme is not documented: v2's `light` (*decided*).
pub const ADVANCED: V1Rules = V1Rules {
    intervals: &[
        "1m", "3m", "5m", "15m", "30m", "45m", "1h", "2h", "3h", "4h", "1D", "1W", "1M", "3M", "6M", "1Y",
    ],
    interval: "1D",
    theme: "light",
    width: 800,
    min_width: 320,
    height: 600,
    min_height: 220,
};

/// The six v1 chart styles (the first six of v2's; *inferred* from "style (6 values)").
pub const STYLES: &[&str] = &["bar", "candle", "line", "area", "heikinAshi", "hollowCandle"];

/// The v1 study codes the documentation's examples name (`RSI:14,close`, `EMA:12`, `BB`, `MACD`, `Volume`), each
/// with the v2 study it draws and the v2 input key of each positional argument (`None`: accepted, but the v2 study
/// has no such input). The v1 list had 60+ codes; the others are not in the reference data, so they are refused
/// like an unknown code.
pub const STUDY_CODES: &[(&str, &str, &[Option<&str>])] = &[
    ("RSI", "Relative Strength Index", &[Some("length"), None]),
    ("EMA", "Moving Average Exponential", &[Some("length"), Some("source")]),
    ("BB", "Bollinger Bands", &[Some("in_0"), Some("in_1")]),
    (
        "MACD",
        "MACD",
        &[Some("in_0"), Some("in_1"), Some("in_2"), Some("in_3")],
    ),
    ("Volume", "Volume", &[]),
];

/// The v1 error texts (`{"error": …}`, except the 404's `message`).
pub mod messages {
    /// 422, the exchange does not have that symbol.
    pub const INVALID_SYMBOL: &str = "Invalid symbol.";
    /// 422, the exchange does not support that interval (not documented for v1: the mock's wording).
    pub const INVALID_INTERVAL: &str = "Invalid interval.";
    /// 500.
    pub const SERVER_ERROR: &str = "Server error.";
    /// 504.
    pub const PROCESS_TIMEOUT: &str = "Process timeout.";
    /// 404, as `{"message": …}`.
    pub const ROUTE_NOT_FOUND: &str = "Route not found.";
}

/// `{"error": m}`, the v1 error body.
///
/// ```
/// assert_eq!(chart_img_spec::v1::error_body("Server error.").to_string(), r#"{"error":"Server error."}"#);
/// ```
pub fn error_body(m: &str) -> Value {
    json!({ "error": m })
}

/// The v1 404: `{"message":"Route not found."}`.
pub fn route_not_found() -> Rejection {
    Rejection::message(404, messages::ROUTE_NOT_FOUND)
}

/// `422 {"errors": [{"value","msg","param","location":"query"}, …]}`: v1 field errors.
fn field_errors(errors: Vec<FieldError>) -> Rejection {
    let field = errors.first().map(|e| e.param.clone());
    Rejection {
        status: 422,
        body: json!({ "errors": errors }),
        field,
    }
}

fn query_error(param: &str, value: Option<&str>, msg: &str) -> FieldError {
    FieldError {
        value: value.map_or(Value::Null, |v| Value::String(v.to_owned())),
        msg: msg.to_owned(),
        param: param.to_owned(),
        location: "query",
    }
}

/// The v2 body a v1 query means (`query`: the decoded pairs, repeated `studies` kept in order), after the v1-only
/// checks (interval list, size minimums, styles, study codes), which answer v1 field errors. The v2 validation of
/// that body does the rest (symbol, theme, timezone, range, plan limits); give its refusals to [`v1_rejection`].
///
/// ```
/// use chart_img_spec::v1::{to_v2, V1Chart};
/// let q = |s: &[(&str, &str)]| s.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
/// let body = to_v2(V1Chart::Advanced, &q(&[("symbol", "BINANCE:BTCUSDT"), ("studies", "RSI:14,close"), ("studies", "EMA:12")])).unwrap();
/// assert_eq!(body["studies"][0], serde_json::json!({"name": "Relative Strength Index", "input": {"length": "14"}}));
/// assert_eq!((body["width"].as_u64(), body["interval"].as_str()), (Some(800), Some("1D")));
/// let mini = to_v2(V1Chart::Mini, &q(&[("interval", "3m")])).unwrap();
/// assert_eq!((mini["range"].as_str(), mini["theme"].as_str(), mini["width"].as_u64()), (Some("3M"), Some("dark"), Some(350)));
/// let bad = to_v2(V1Chart::Advanced, &q(&[("interval", "6h"), ("width", "300")])).unwrap_err();
/// assert_eq!(bad.body["errors"][0]["param"], "interval");
/// assert_eq!(bad.body["errors"][1]["location"], "query");
/// ```
pub fn to_v2(chart: V1Chart, query: &[(String, String)]) -> Result<Value, Rejection> {
    let rules = chart.rules();
    let one = |k: &str| query.iter().rev().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
    let mut errors = Vec::new();
    let mut body = Map::new();
    if let Some(s) = one("symbol") {
        body.insert("symbol".into(), json!(s));
    }
    let interval = one("interval").unwrap_or(rules.interval);
    let known = match chart {
        // The mini chart's period: case-insensitive (`1m` is one month there: it has no minutes).
        V1Chart::Mini => rules.intervals.iter().find(|i| i.eq_ignore_ascii_case(interval)),
        V1Chart::Advanced => rules.intervals.iter().find(|i| **i == interval),
    };
    match (known, chart) {
        (None, _) => errors.push(query_error("interval", Some(interval), "must be a supported interval")),
        (Some(i), V1Chart::Mini) => {
            body.insert("range".into(), json!(i));
        }
        (Some(i), V1Chart::Advanced) => {
            body.insert("interval".into(), json!(i));
        }
    }
    for (key, default, min) in [
        ("width", rules.width, rules.min_width),
        ("height", rules.height, rules.min_height),
    ] {
        match one(key).map(|v| v.trim().parse::<u32>()) {
            None => {
                body.insert(key.into(), json!(default));
            }
            Some(Ok(n)) if n >= min => {
                body.insert(key.into(), json!(n));
            }
            _ => errors.push(query_error(
                key,
                one(key),
                &format!("must be an integer greater than or equal to {min}"),
            )),
        }
    }
    body.insert("theme".into(), json!(one("theme").unwrap_or(rules.theme)));
    if chart == V1Chart::Mini {
        body.insert("style".into(), json!("line"));
    }
    if let Some(style) = one("style") {
        if chart == V1Chart::Advanced && STYLES.contains(&style) {
            body.insert("style".into(), json!(style));
        } else if chart == V1Chart::Advanced {
            errors.push(query_error(
                "style",
                Some(style),
                &format!("must be one of: {}", STYLES.join(", ")),
            ));
        }
    }
    for key in ["timezone", "range"] {
        if let (Some(v), V1Chart::Advanced) = (one(key), chart) {
            body.insert(key.into(), json!(v));
        }
    }
    let mut studies = Vec::new();
    if chart == V1Chart::Advanced {
        for (i, (_, code)) in query.iter().filter(|(k, _)| k == "studies").enumerate() {
            match study(code) {
                Some(s) => studies.push(s),
                None => errors.push(query_error(
                    &format!("studies[{i}]"),
                    Some(code),
                    "must be a supported study",
                )),
            }
        }
    }
    if !studies.is_empty() {
        body.insert("studies".into(), Value::Array(studies));
    }
    if errors.is_empty() {
        Ok(Value::Object(body))
    } else {
        Err(field_errors(errors))
    }
}

/// The whole validation of a v1 request: [`to_v2`], then the v2 validation of that body for `plan` (its refusals
/// with their v1 bodies, [`v1_rejection`]). v1 sizes may be below v2's minimums (a mini chart is 350×220): the v2
/// validation sees them raised to those minimums, the chart keeps the v1 size.
///
/// ```
/// use chart_img_spec::{v1::{validate_v1, V1Chart}, Options, Plan};
/// let chart = validate_v1(V1Chart::Mini, &[], &Plan::Basic.limits(), &Options::default()).unwrap();
/// assert_eq!((chart.width, chart.height, chart.theme.as_str(), chart.range.as_str()), (350, 220, "dark", Some("1M")));
/// let big = [("width".to_string(), "1920".to_string())];
/// let refused = validate_v1(V1Chart::Advanced, &big, &Plan::Basic.limits(), &Options::default()).unwrap_err();
/// assert_eq!((refused.status, refused.body["message"].as_str()), (403, Some("Exceed Max Usage Resolution Limit (800x600)")));
/// ```
pub fn validate_v1(
    chart: V1Chart,
    query: &[(String, String)],
    plan: &PlanLimits,
    options: &Options,
) -> Result<ValidatedChart, Rejection> {
    let mut body = to_v2(chart, query)?;
    let size = |k: &str| body[k].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    let (width, height) = (size("width"), size("height"));
    body["width"] = json!(width.max(catalog::defaults::MIN_WIDTH));
    body["height"] = json!(height.max(catalog::defaults::MIN_HEIGHT));
    let mut chart = crate::validate_advanced_chart_with(&body, plan, options).map_err(v1_rejection)?;
    chart.width = width;
    chart.height = height;
    Ok(chart)
}

/// `CODE` or `CODE:arg,arg` as the v2 study object it means.
fn study(code: &str) -> Option<Value> {
    let (name, args) = code.split_once(':').unwrap_or((code, ""));
    let (_, v2, keys) = STUDY_CODES
        .iter()
        .find(|(c, _, _)| c.eq_ignore_ascii_case(name.trim()))?;
    debug_assert!(catalog::study(v2).is_some(), "{v2} is a documented study");
    let args: Vec<&str> = args.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    if args.len() > keys.len() {
        return None;
    }
    let input: Map<String, Value> = args
        .iter()
        .zip(keys.iter())
        .filter_map(|(a, k)| k.map(|k| (k.to_owned(), json!(a))))
        .collect();
    Some(if input.is_empty() {
        json!({ "name": v2 })
    } else {
        json!({ "name": v2, "input": input })
    })
}

/// A v2 refusal of the body [`to_v2`] built, with its v1 body: field errors as `{"errors": […, "location":
/// "query"]}`, `Invalid Symbol` as `{"error":"Invalid symbol."}`; plan limits (403) keep the v2 body (the gateway's).
///
/// ```
/// use chart_img_spec::{v1::v1_rejection, Rejection};
/// assert_eq!(v1_rejection(Rejection::invalid_symbol()).body.to_string(), r#"{"error":"Invalid symbol."}"#);
/// ```
pub fn v1_rejection(r: Rejection) -> Rejection {
    let Rejection { status, body, field } = r;
    let body = match body {
        Value::Array(mut entries) => {
            for e in &mut entries {
                if let Some(o) = e.as_object_mut() {
                    o.insert("location".into(), json!("query"));
                }
            }
            json!({ "errors": entries })
        }
        Value::Object(o) if status == 422 => match o.get("message").and_then(Value::as_str) {
            Some(crate::messages::INVALID_SYMBOL) => error_body(messages::INVALID_SYMBOL),
            Some(crate::messages::INVALID_INTERVAL) => error_body(messages::INVALID_INTERVAL),
            _ => Value::Object(o),
        },
        other => other,
    };
    Rejection { status, body, field }
}

/// The v1 storage answer: `{"url","size","cors","etag","expireAt","createdAt"}`, the URL on the API host
/// (`<base>/v1/storage/pub/<name>`). `cors` is documented without a description: the same URL (*decided*).
pub fn storage_answer(base: &str, name: &str, size: usize, etag: &str, expire_at: &str, created_at: &str) -> Value {
    let url = format!("{}{STORAGE_PREFIX}/{name}", base.trim_end_matches('/'));
    json!({ "url": url, "size": size, "cors": url, "etag": etag, "expireAt": expire_at, "createdAt": created_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_study_code_draws_a_documented_study_and_the_advanced_intervals_are_v2_ones() {
        for (code, v2, keys) in STUDY_CODES {
            let s = catalog::study(v2).unwrap_or_else(|| panic!("{code}: {v2} is not a documented study"));
            for k in keys.iter().flatten() {
                assert!(s.inputs.iter().any(|i| i.key == *k), "{code}: {v2} has no input {k}");
            }
        }
        let v2: Vec<_> = catalog::INTERVALS
            .iter()
            .filter(|i| !["6h", "8h", "12h", "2D", "3D"].contains(i))
            .collect();
        assert_eq!(ADVANCED.intervals.iter().collect::<Vec<_>>(), v2);
        assert!(
            MINI.intervals.iter().all(|i| catalog::RANGES.contains(i)),
            "a mini chart's interval is a v2 range"
        );
    }

    #[test]
    fn study_codes_with_arguments() {
        assert_eq!(
            study("MACD:12,26,9"),
            Some(json!({"name": "MACD", "input": {"in_0": "12", "in_1": "26", "in_2": "9"}}))
        );
        assert_eq!(study("bb"), Some(json!({"name": "Bollinger Bands"})));
        assert_eq!(study("Volume:1"), None, "more arguments than the study takes");
        assert_eq!(study("ICHIMOKU"), None);
    }
}
