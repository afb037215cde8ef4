//! The one validation of an advanced-chart body, in the real API's order: body (400) → fields (422, the
//! express-validator array) → plan limits (403) → semantic checks (422 object form).
//!
//! Numbers are read as express-validator reads them: the validator sees `String(value)`, so a JSON number with no
//! fraction (`800`, `800.0`: JavaScript cannot tell them apart) and a string of digits (`"800"`) pass `isInt`, and
//! `800.5` or `"800.0"` do not; `isFloat` takes numbers and numeric strings.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    catalog::{self, defaults, InputType, Placement},
    errors::{FieldError, Rejection},
    plan::PlanLimits,
};

/// What to do with a custom `watermark` on a plan that does not include one (the evidence leaves it open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WatermarkRule {
    /// Render without the custom text (the default).
    #[default]
    Ignore,
    /// Refuse with a field error on `watermark`.
    Refuse,
}

/// Choices the evidence leaves open, and additions for callers with contracts of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Custom watermark text on plans without one.
    pub watermark: WatermarkRule,
    /// Exchange prefixes accepted besides the documented v2 exchanges.
    pub extra_exchanges: Vec<String>,
}

/// A study as validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartStudy {
    /// A supported name.
    pub name: String,
    /// Its natural placement (from the study list).
    pub placement: Placement,
    /// `forceOverlay`.
    pub force_overlay: bool,
    /// `input` as sent (an object; unknown keys kept, they are ignored by the API).
    pub input: Value,
    /// `override` as sent (an object).
    #[serde(rename = "override")]
    pub override_: Value,
}

impl ChartStudy {
    /// Drawn on the price pane: overlay studies, and any study with `forceOverlay`.
    pub fn on_price_pane(&self) -> bool {
        self.force_overlay || self.placement == Placement::Overlay
    }
}

/// A drawing as validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartDrawing {
    /// A supported name.
    pub name: String,
    /// `input`, with every required key present.
    pub input: Value,
    /// `override` (an object).
    #[serde(rename = "override")]
    pub override_: Value,
    /// `top` or `bottom`.
    pub z_order: String,
}

/// A body the API accepts, with every default filled in. It serializes (camelCase, as the API spells the fields)
/// to the same text for the same chart once [`ValidatedChart::canonical`] has key-sorted its free-form objects:
/// the mock's cache key.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct ValidatedChart {
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
    /// `null`, a named range, or `{"from","to"}`.
    pub range: Value,
    pub studies: Vec<ChartStudy>,
    pub drawings: Vec<ChartDrawing>,
    #[serde(rename = "override")]
    pub override_: Value,
    pub shift_left: Option<u32>,
    pub shift_right: Option<u32>,
    /// The custom watermark text as it will be drawn (`None` when absent or ignored on this plan).
    pub watermark: Option<String>,
    pub watermark_size: u32,
    pub watermark_opacity: f64,
    /// The plan stamps the CHART-IMG watermark on every image.
    pub chart_img_watermark: bool,
}

/// The text of the watermark the plans that stamp one (BASIC) put on every image.
pub const CHART_IMG_WATERMARK: &str = "CHART-IMG";

impl ValidatedChart {
    /// `studies + drawings`, what the plan's parameter limit counts.
    pub fn params(&self) -> usize {
        self.studies.len() + self.drawings.len()
    }

    /// The watermark text drawn on the image: the custom one where the plan honours it, else `CHART-IMG` on plans
    /// that stamp it, else none.
    pub fn drawn_watermark(&self) -> Option<&str> {
        self.watermark
            .as_deref()
            .or(self.chart_img_watermark.then_some(CHART_IMG_WATERMARK))
    }

    /// `image/png` or `image/jpeg`.
    pub fn content_type(&self) -> &'static str {
        if self.format == "jpeg" {
            "image/jpeg"
        } else {
            "image/png"
        }
    }

    /// The same chart with the keys of its free-form objects (`range`, `input`, `override`) sorted, so two bodies
    /// that mean the same serialize the same.
    pub fn canonical(mut self) -> Self {
        self.range = canonical_json(&self.range);
        self.override_ = canonical_json(&self.override_);
        for s in &mut self.studies {
            s.input = canonical_json(&s.input);
            s.override_ = canonical_json(&s.override_);
        }
        for d in &mut self.drawings {
            d.input = canonical_json(&d.input);
            d.override_ = canonical_json(&d.override_);
        }
        self
    }

    /// The canonical JSON text of this chart (call on a [`ValidatedChart::canonical`] one): equal for equal charts.
    pub fn cache_key(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `v` with object keys sorted recursively.
pub fn canonical_json(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), canonical_json(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical_json).collect()),
        other => other.clone(),
    }
}

/// Validates `body` for a key on `plan` with the default [`Options`].
///
/// ```
/// use chart_img_spec::{validate_advanced_chart, Plan};
/// use serde_json::json;
///
/// let ok = validate_advanced_chart(&json!({"width": "800", "studies": [{"name": "Volume"}]}), &Plan::Basic.limits()).unwrap();
/// assert_eq!((ok.width, ok.symbol.as_str(), ok.interval.as_str()), (800, "BINANCE:BTCUSDT", "1D"));
///
/// let bad = validate_advanced_chart(&json!({"studies": [{"name": "RSI"}]}), &Plan::Basic.limits()).unwrap_err();
/// assert_eq!(bad.status, 422);
/// assert_eq!(bad.body, json!([{"value":"RSI","msg":"must be a supported name","param":"studies[0].name","location":"body"}]));
///
/// let big = validate_advanced_chart(&json!({"width": 1920, "height": 1080}), &Plan::Basic.limits()).unwrap_err();
/// assert_eq!((big.status, big.body), (403, json!({"message": "Exceed Max Usage Resolution Limit (800x600)"})));
/// ```
pub fn validate_advanced_chart(body: &Value, plan: &PlanLimits) -> Result<ValidatedChart, Rejection> {
    validate_advanced_chart_with(body, plan, &Options::default())
}

/// [`validate_advanced_chart`] with explicit [`Options`].
pub fn validate_advanced_chart_with(
    body: &Value,
    plan: &PlanLimits,
    options: &Options,
) -> Result<ValidatedChart, Rejection> {
    let obj = body.as_object().ok_or_else(Rejection::bad_request)?;
    let mut chart = fields(obj).map_err(Rejection::fields)?;
    if chart.width > plan.max_width || chart.height > plan.max_height {
        return Err(Rejection::resolution(plan.max_width, plan.max_height));
    }
    if chart.params() > plan.max_params as usize {
        return Err(Rejection::parameters(plan.max_params));
    }
    if chart.watermark.is_some() && !plan.custom_watermark {
        match options.watermark {
            WatermarkRule::Ignore => chart.watermark = None,
            WatermarkRule::Refuse => {
                let v = obj.get("watermark").cloned().unwrap_or(Value::Null);
                return Err(Rejection::fields(vec![FieldError::new(
                    "watermark",
                    v,
                    "custom watermark requires the ULTRA or ENTERPRISE plan",
                )]));
            }
        }
    }
    chart.chart_img_watermark = plan.chart_img_watermark;
    for (exchange, _) in symbol_parts(&chart.symbol) {
        let documented = catalog::exchange(&exchange).is_some_and(|e| e.v2);
        if !documented && !options.extra_exchanges.contains(&exchange) {
            return Err(Rejection::invalid_symbol());
        }
    }
    Ok(chart)
}

/// The body keys a layout chart shares with an advanced chart; the layout itself supplies the rest.
const LAYOUT_SHARED: &[&str] = &[
    "symbol",
    "interval",
    "width",
    "height",
    "format",
    "watermark",
    "watermarkSize",
    "watermarkOpacity",
];

/// Validates the body of `POST /v2/tradingview/layout-chart/{id}`: `resetZoom` (boolean), `zoomIn`/`zoomOut`
/// (1-25), `moveLeft`/`moveRight` (1-50), and the fields it shares with an advanced chart, checked as
/// [`validate_advanced_chart_with`] checks them (other keys are ignored).
///
/// ```
/// use chart_img_spec::{validate_layout_chart, Options, Plan};
/// let r = validate_layout_chart(&serde_json::json!({"zoomIn": 26}), &Plan::Pro.limits(), &Options::default()).unwrap_err();
/// assert_eq!((r.status, r.body[0]["param"].as_str()), (422, Some("zoomIn")));
/// ```
pub fn validate_layout_chart(body: &Value, plan: &PlanLimits, options: &Options) -> Result<ValidatedChart, Rejection> {
    let obj = body.as_object().ok_or_else(Rejection::bad_request)?;
    let mut e = Errors(Vec::new());
    e.bool("resetZoom", obj.get("resetZoom"));
    e.int("zoomIn", obj.get("zoomIn"), 1, Some(25));
    e.int("zoomOut", obj.get("zoomOut"), 1, Some(25));
    e.int("moveLeft", obj.get("moveLeft"), 1, Some(50));
    e.int("moveRight", obj.get("moveRight"), 1, Some(50));
    let shared: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| LAYOUT_SHARED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    match (
        validate_advanced_chart_with(&Value::Object(shared), plan, options),
        e.0.is_empty(),
    ) {
        (Ok(chart), true) => Ok(chart),
        (Ok(_), false) => Err(Rejection::fields(e.0)),
        (Err(r), true) => Err(r),
        (Err(r), false) => {
            // Field errors of both parts come together, as one array; any other rejection waits for them.
            let mut all = e.0;
            if let (422, Value::Array(more)) = (r.status, &r.body) {
                all.extend(more.iter().filter_map(|m| {
                    Some(FieldError::new(
                        m.get("param")?.as_str()?,
                        m.get("value")?.clone(),
                        m.get("msg")?.as_str()?,
                    ))
                }));
            }
            Err(Rejection::fields(all))
        }
    }
}

/// Reads a request body as the API's JSON parser does: no body is an empty object (the default chart); a body needs
/// the `application/json` content type and valid JSON, otherwise `400`. Whether it is an object is checked by
/// [`validate_advanced_chart`].
///
/// ```
/// use chart_img_spec::read_body;
/// assert_eq!(read_body(None, b"").unwrap(), serde_json::json!({}));
/// assert_eq!(read_body(Some("application/json; charset=utf-8"), br#"{"width":800}"#).unwrap()["width"], 800);
/// assert_eq!(read_body(Some("text/plain"), b"{}").unwrap_err().status, 400);
/// assert_eq!(read_body(Some("application/json"), b"{nope").unwrap_err().status, 400);
/// ```
pub fn read_body(content_type: Option<&str>, bytes: &[u8]) -> Result<Value, Rejection> {
    let json = content_type
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if bytes.iter().all(u8::is_ascii_whitespace) && (json || content_type.is_none()) {
        return Ok(Value::Object(Map::new()));
    }
    if !json {
        return Err(Rejection::bad_request());
    }
    serde_json::from_slice(bytes).map_err(|_| Rejection::bad_request())
}

/// The `EXCHANGE:SYMBOL` parts of a (possibly formula) symbol: `(exchange, ticker)`.
///
/// ```
/// let parts = chart_img_spec::symbol_parts("(NASDAQ:AAPL+NASDAQ:MSFT)/2");
/// assert_eq!(parts, [("NASDAQ".to_string(), "AAPL".to_string()), ("NASDAQ".to_string(), "MSFT".to_string())]);
/// ```
pub fn symbol_parts(s: &str) -> Vec<(String, String)> {
    s.split(|c: char| "+*/() ".contains(c))
        .filter_map(|p| p.trim().split_once(':'))
        .map(|(e, s)| (e.to_string(), s.trim_end_matches('-').to_string()))
        .collect()
}

/// Is `s` a well-formed `EXCHANGE:SYMBOL`, or a formula of them (`BINANCE:BTCUSDT/BINANCE:ETHUSDT`)? Uppercase only:
/// whether the API accepts lowercase is open, and refusing it keeps clients on the documented form.
pub fn symbol_is_well_formed(s: &str) -> bool {
    fn part(p: &str) -> bool {
        let p = p.trim();
        if p.is_empty() {
            return false;
        }
        if p.parse::<f64>().is_ok() {
            return true;
        }
        let Some((ex, sym)) = p.split_once(':') else {
            return false;
        };
        let ex_ok = !ex.is_empty()
            && ex
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        let sym_ok = !sym.is_empty()
            && sym
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || "._!-".contains(c));
        ex_ok && sym_ok
    }
    let cleaned: String = s.chars().map(|c| if "()".contains(c) { ' ' } else { c }).collect();
    !s.trim().is_empty() && cleaned.split(['+', '-', '*', '/']).all(part)
        // `-` is both an operator and a symbol character (`BRK-B`); accept either reading.
        || cleaned.split(['+', '*', '/']).all(part)
}

/// express-validator's `isInt` on `String(v)`.
pub(crate) fn read_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => {
            let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        }
        _ => None,
    }
}

/// express-validator's `isFloat` on `String(v)`.
pub(crate) fn read_float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let ok = !s.is_empty() && s != "." && s.bytes().all(|b| b.is_ascii_digit() || b".+-eE".contains(&b));
            ok.then(|| s.parse::<f64>().ok()).flatten().filter(|f| f.is_finite())
        }
        _ => None,
    }
}

/// express-validator's `isBoolean` (loose): `true false 1 0`, as values or strings.
fn read_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" || s == "1" => Some(true),
        Value::String(s) if s == "false" || s == "0" => Some(false),
        Value::Number(n) if n.as_f64() == Some(1.0) => Some(true),
        Value::Number(n) if n.as_f64() == Some(0.0) => Some(false),
        _ => None,
    }
}

fn is_iso8601(s: &str) -> bool {
    parse_instant(s).is_some()
}

fn parse_instant(s: &str) -> Option<chrono::NaiveDateTime> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.naive_utc())
        .ok()
        .or_else(|| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok())
        .or_else(|| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").ok())
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
}

fn range_text(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!(" between {a} and {b}"),
        (Some(a), None) => format!(" greater than or equal to {a}"),
        (None, Some(b)) => format!(" less than or equal to {b}"),
        (None, None) => String::new(),
    }
}

struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, param: impl Into<String>, value: &Value, msg: impl Into<String>) {
        self.0.push(FieldError::new(param, value.clone(), msg));
    }

    fn string<'a>(&mut self, body: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
        match body.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(v) => {
                self.push(field, v, "must be a string");
                None
            }
        }
    }

    fn one_of(&mut self, body: &Map<String, Value>, field: &str, allowed: &[&str], default: &str) -> String {
        match self.string(body, field) {
            None => default.to_string(),
            Some(s) if allowed.contains(&s) => s.to_string(),
            Some(s) => {
                self.push(
                    field,
                    &Value::String(s.into()),
                    format!("must be one of: {}", allowed.join(", ")),
                );
                default.to_string()
            }
        }
    }

    /// An integer field with bounds; `None` when absent (or refused).
    fn int(&mut self, param: &str, v: Option<&Value>, min: i64, max: Option<i64>) -> Option<i64> {
        let v = v.filter(|v| !v.is_null())?;
        match read_int(v) {
            Some(n) if n >= min && max.is_none_or(|m| n <= m) => Some(n),
            _ => {
                let bounds = range_text(Some(min as f64), max.map(|m| m as f64));
                self.push(param, v, format!("must be an integer{bounds}"));
                None
            }
        }
    }

    fn float(&mut self, param: &str, v: Option<&Value>, min: Option<f64>, max: Option<f64>) -> Option<f64> {
        let v = v.filter(|v| !v.is_null())?;
        match read_float(v) {
            Some(f) if min.is_none_or(|m| f >= m) && max.is_none_or(|m| f <= m) => Some(f),
            _ => {
                self.push(param, v, format!("must be a number{}", range_text(min, max)));
                None
            }
        }
    }

    fn bool(&mut self, param: &str, v: Option<&Value>) -> Option<bool> {
        let v = v.filter(|v| !v.is_null())?;
        let b = read_bool(v);
        if b.is_none() {
            self.push(param, v, "must be a boolean");
        }
        b
    }

    /// An input value of a study or drawing, checked against its documented type.
    fn input(
        &mut self,
        param: &str,
        v: &Value,
        kind: InputType,
        min: Option<f64>,
        max: Option<f64>,
        one_of: &[String],
    ) {
        match kind {
            InputType::Integer => {
                let ok =
                    read_int(v).is_some_and(|n| min.is_none_or(|m| n as f64 >= m) && max.is_none_or(|m| n as f64 <= m));
                if !ok {
                    self.push(param, v, format!("must be an integer{}", range_text(min, max)));
                }
            }
            InputType::Float => {
                self.float(param, Some(v), min, max);
            }
            InputType::Boolean => {
                self.bool(param, Some(v));
            }
            InputType::String => match v.as_str() {
                Some(s) if one_of.is_empty() || one_of.iter().any(|o| o == s) => {}
                Some(_) => self.push(param, v, format!("must be one of: {}", one_of.join(", "))),
                None => self.push(param, v, "must be a string"),
            },
            InputType::Datetime => {
                if !v.as_str().is_some_and(is_iso8601) {
                    self.push(param, v, "must be an ISO8601 datetime");
                }
            }
        }
    }

    fn object(&mut self, param: &str, v: Option<&Value>) -> Value {
        match v {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(v @ Value::Object(_)) => v.clone(),
            Some(v) => {
                self.push(param, v, "must be an object");
                Value::Object(Map::new())
            }
        }
    }
}

/// The field checks; `Err` holds every field error, in body order.
fn fields(body: &Map<String, Value>) -> Result<ValidatedChart, Vec<FieldError>> {
    let mut e = Errors(Vec::new());
    let symbol = match e.string(body, "symbol") {
        None => defaults::SYMBOL.to_string(),
        Some(s) if symbol_is_well_formed(s) => s.to_string(),
        Some(s) => {
            e.push(
                "symbol",
                &Value::String(s.into()),
                "must be a valid tradingview EXCHANGE:SYMBOL",
            );
            String::new()
        }
    };
    let interval = match body.get("interval") {
        None | Some(Value::Null) => defaults::INTERVAL.to_string(),
        Some(Value::String(s)) if catalog::INTERVALS.contains(&s.as_str()) => s.clone(),
        Some(v) => {
            e.push("interval", v, "must be a supported interval");
            String::new()
        }
    };
    let width = e
        .int("width", body.get("width"), defaults::MIN_WIDTH.into(), None)
        .map_or(defaults::WIDTH, clamp_u32);
    let height = e
        .int("height", body.get("height"), defaults::MIN_HEIGHT.into(), None)
        .map_or(defaults::HEIGHT, clamp_u32);
    let style = e.one_of(body, "style", catalog::STYLES, defaults::STYLE);
    let theme = e.one_of(body, "theme", catalog::THEMES, defaults::THEME);
    let scale = e.one_of(body, "scale", catalog::SCALES, defaults::SCALE);
    let session = e.one_of(body, "session", catalog::SESSIONS, defaults::SESSION);
    let timezone = match body.get("timezone") {
        None | Some(Value::Null) => defaults::TIMEZONE.to_string(),
        Some(Value::String(tz)) if catalog::is_timezone(tz) => tz.clone(),
        Some(v) => {
            e.push("timezone", v, "must be a supported timezone");
            defaults::TIMEZONE.to_string()
        }
    };
    let format = e.one_of(body, "format", catalog::FORMATS, defaults::FORMAT);
    let range = match body.get("range") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(r)) if catalog::RANGES.contains(&r.as_str()) => Value::String(r.clone()),
        Some(v @ Value::Object(m)) => {
            let from = m.get("from").and_then(Value::as_str).and_then(parse_instant);
            let to = m.get("to").and_then(Value::as_str).and_then(parse_instant);
            match (from, to) {
                (Some(f), Some(t)) if f < t => v.clone(),
                (Some(_), Some(_)) => {
                    e.push("range", v, "`from` must be before `to`");
                    Value::Null
                }
                _ => {
                    e.push("range", v, "`from` and `to` must be ISO8601 dates");
                    Value::Null
                }
            }
        }
        Some(v) => {
            e.push(
                "range",
                v,
                format!("must be one of: {} or {{from, to}}", catalog::RANGES.join(", ")),
            );
            Value::Null
        }
    };
    let studies = studies(&mut e, body.get("studies"));
    let drawings = drawings(&mut e, body.get("drawings"));
    let override_ = e.object("override", body.get("override"));
    if let Value::Object(o) = &override_ {
        e.int("override.mainPaneHeight", o.get("mainPaneHeight"), 100, Some(1800));
        e.int("override.scalesFontSize", o.get("scalesFontSize"), 10, Some(50));
        match o.get("priceRange") {
            None | Some(Value::Null) => {}
            Some(Value::Object(p)) => {
                e.float("override.priceRange.from", p.get("from"), None, None);
                e.float("override.priceRange.to", p.get("to"), None, None);
                e.float("override.priceRange.margin", p.get("margin"), Some(0.001), Some(0.1));
            }
            Some(v) => e.push("override.priceRange", v, "must be an object"),
        }
        for (k, v) in o.iter().filter(|(k, _)| k.starts_with("show")) {
            e.bool(&format!("override.{k}"), Some(v));
        }
    }
    let shift_left = e.int("shiftLeft", body.get("shiftLeft"), 1, Some(1000)).map(clamp_u32);
    let shift_right = e
        .int("shiftRight", body.get("shiftRight"), 1, Some(1000))
        .map(clamp_u32);
    let watermark = e.string(body, "watermark").map(str::to_string);
    let watermark_size = match body.get("watermarkSize") {
        None | Some(Value::Null) => defaults::WATERMARK_SIZE,
        Some(v) => match read_int(v)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| catalog::WATERMARK_SIZES.contains(n))
        {
            Some(n) => n,
            None => {
                e.push("watermarkSize", v, "must be one of: 16, 32, 64, 128");
                defaults::WATERMARK_SIZE
            }
        },
    };
    let watermark_opacity = e
        .float("watermarkOpacity", body.get("watermarkOpacity"), Some(0.1), Some(1.0))
        .unwrap_or(defaults::WATERMARK_OPACITY);
    if !e.0.is_empty() {
        return Err(e.0);
    }
    Ok(ValidatedChart {
        symbol,
        interval,
        width,
        height,
        style,
        theme,
        scale,
        session,
        timezone,
        format,
        range,
        studies,
        drawings,
        override_,
        shift_left,
        shift_right,
        watermark,
        watermark_size,
        watermark_opacity,
        chart_img_watermark: false,
    })
}

fn clamp_u32(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn studies(e: &mut Errors, v: Option<&Value>) -> Vec<ChartStudy> {
    let mut out = Vec::new();
    let items = match v {
        None | Some(Value::Null) => return out,
        Some(Value::Array(items)) => items,
        Some(v) => {
            e.push("studies", v, "must be an array");
            return out;
        }
    };
    for (i, s) in items.iter().enumerate() {
        let p = |f: &str| format!("studies[{i}].{f}");
        let Some(m) = s.as_object() else {
            e.push(format!("studies[{i}]"), s, "must be an object");
            continue;
        };
        let spec = m.get("name").and_then(Value::as_str).and_then(catalog::study);
        if spec.is_none() {
            e.push(
                p("name"),
                m.get("name").unwrap_or(&Value::Null),
                "must be a supported name",
            );
        }
        let force_overlay = e.bool(&p("forceOverlay"), m.get("forceOverlay")).unwrap_or(false);
        let input = e.object(&p("input"), m.get("input"));
        if let (Some(spec), Value::Object(given)) = (spec, &input) {
            // Unknown input keys are ignored, as the API does.
            for def in &spec.inputs {
                if let Some(v) = given.get(&def.key).filter(|v| !v.is_null()) {
                    e.input(
                        &format!("studies[{i}].input.{}", def.key),
                        v,
                        def.kind,
                        def.min,
                        def.max,
                        &def.one_of,
                    );
                }
            }
        }
        let override_ = e.object(&p("override"), m.get("override"));
        if let Some(spec) = spec {
            out.push(ChartStudy {
                name: spec.name.clone(),
                placement: spec.placement,
                force_overlay,
                input,
                override_,
            });
        }
    }
    out
}

fn drawings(e: &mut Errors, v: Option<&Value>) -> Vec<ChartDrawing> {
    let mut out = Vec::new();
    let items = match v {
        None | Some(Value::Null) => return out,
        Some(Value::Array(items)) => items,
        Some(v) => {
            e.push("drawings", v, "must be an array");
            return out;
        }
    };
    for (i, d) in items.iter().enumerate() {
        let p = |f: &str| format!("drawings[{i}].{f}");
        let Some(m) = d.as_object() else {
            e.push(format!("drawings[{i}]"), d, "must be an object");
            continue;
        };
        let spec = m.get("name").and_then(Value::as_str).and_then(catalog::drawing);
        if spec.is_none() {
            e.push(
                p("name"),
                m.get("name").unwrap_or(&Value::Null),
                "must be a supported name",
            );
        }
        let input = match m.get("input") {
            Some(v @ Value::Object(_)) => v.clone(),
            None | Some(Value::Null) => {
                e.push(p("input"), &Value::Null, "is required");
                Value::Null
            }
            Some(v) => {
                e.push(p("input"), v, "must be an object");
                Value::Null
            }
        };
        if let (Some(spec), Value::Object(given)) = (spec, &input) {
            for def in &spec.inputs {
                let param = format!("drawings[{i}].input.{}", def.key);
                match given.get(&def.key).filter(|v| !v.is_null()) {
                    Some(v) => e.input(&param, v, def.kind, None, None, &[]),
                    None if def.required => e.push(param, &Value::Null, "is required"),
                    None => {}
                }
            }
        }
        let override_ = e.object(&p("override"), m.get("override"));
        let z_order = match m.get("zOrder") {
            None | Some(Value::Null) => "top".to_string(),
            Some(Value::String(z)) if catalog::Z_ORDERS.contains(&z.as_str()) => z.clone(),
            Some(v) => {
                e.push(p("zOrder"), v, "must be one of: top, bottom");
                "top".into()
            }
        };
        if let Some(spec) = spec {
            out.push(ChartDrawing {
                name: spec.name.clone(),
                input,
                override_,
                z_order,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Plan;
    use serde_json::json;

    fn check(body: Value, plan: Plan) -> Result<ValidatedChart, (u16, Value)> {
        validate_advanced_chart(&body, &plan.limits()).map_err(|r| (r.status, r.body))
    }

    fn field(param: &str, value: Value, msg: &str) -> (u16, Value) {
        (
            422,
            json!([{ "value": value, "msg": msg, "param": param, "location": "body" }]),
        )
    }

    #[test]
    fn numbers_are_read_as_express_validator_reads_them() {
        for ok in [json!(800), json!(800.0), json!("800"), json!("+800")] {
            assert_eq!(check(json!({ "width": ok }), Plan::Basic).unwrap().width, 800, "{ok}");
        }
        for bad in [
            json!(800.5),
            json!("800.0"),
            json!("8e2"),
            json!(""),
            json!(true),
            json!(399),
        ] {
            assert_eq!(
                check(json!({ "width": bad }), Plan::Basic).unwrap_err(),
                field("width", bad.clone(), "must be an integer greater than or equal to 400"),
                "{bad}"
            );
        }
        assert_eq!(
            check(json!({ "watermarkOpacity": "0.5" }), Plan::Basic)
                .unwrap()
                .watermark_opacity,
            0.5
        );
        assert_eq!(
            check(json!({ "watermarkSize": "64" }), Plan::Basic)
                .unwrap()
                .watermark_size,
            64
        );
    }

    #[test]
    fn study_inputs_are_checked_by_type_and_range_and_unknown_keys_ignored() {
        let ok = json!({ "studies": [{ "name": "Bollinger Bands", "input": { "in_0": "20", "in_1": 2.5, "nonsense": [1] } }] });
        assert_eq!(check(ok, Plan::Basic).unwrap().studies[0].placement, Placement::Overlay);
        let bad = json!({ "studies": [{ "name": "Bollinger Bands", "input": { "in_1": 51 } }] });
        assert_eq!(
            check(bad, Plan::Basic).unwrap_err(),
            field(
                "studies[0].input.in_1",
                json!(51),
                "must be a number between 0.001 and 50"
            )
        );
        let bad = json!({ "studies": [{ "name": "MACD", "input": { "in_3": "median" } }] });
        assert_eq!(
            check(bad, Plan::Basic).unwrap_err(),
            field(
                "studies[0].input.in_3",
                json!("median"),
                "must be one of: open, high, low, close, hl2, hlc3, ohlc4"
            )
        );
        let bad = json!({ "studies": [{ "name": "Keltner Channels", "input": { "in_0": "yes" } }] });
        assert_eq!(
            check(bad, Plan::Basic).unwrap_err(),
            field("studies[0].input.in_0", json!("yes"), "must be a boolean")
        );
    }

    #[test]
    fn drawings_need_a_supported_name_and_their_required_inputs() {
        let bad = json!({ "drawings": [{ "name": "Trend Line", "input": { "startDatetime": "2026-01-01T00:00:00Z", "startPrice": 1 } }] });
        assert_eq!(
            check(bad, Plan::Basic).unwrap_err().1,
            json!([
                { "value": null, "msg": "is required", "param": "drawings[0].input.endDatetime", "location": "body" },
                { "value": null, "msg": "is required", "param": "drawings[0].input.endPrice", "location": "body" }
            ])
        );
        let bad = json!({ "drawings": [{ "name": "Circle", "input": {} }] });
        assert_eq!(
            check(bad, Plan::Basic).unwrap_err(),
            field("drawings[0].name", json!("Circle"), "must be a supported name")
        );
        let bad = json!({ "drawings": [{ "name": "Horizontal Line", "input": { "price": 1 }, "zOrder": "middle" }] });
        assert_eq!(
            check(bad, Plan::Basic).unwrap_err(),
            field("drawings[0].zOrder", json!("middle"), "must be one of: top, bottom")
        );
    }

    #[test]
    fn order_is_fields_then_plan_then_semantic() {
        // A field error wins over the size limit, the size limit over an unknown exchange.
        let body = json!({ "symbol": "NOPE:X", "width": 4000, "height": 3000, "theme": "pink" });
        assert_eq!(check(body, Plan::Basic).unwrap_err().0, 422);
        let body = json!({ "symbol": "NOPE:X", "width": 4000, "height": 3000 });
        assert_eq!(
            check(body.clone(), Plan::Basic).unwrap_err(),
            (403, json!({ "message": "Exceed Max Usage Resolution Limit (800x600)" }))
        );
        assert_eq!(
            check(json!({ "symbol": "NOPE:X" }), Plan::Basic).unwrap_err(),
            (422, json!({ "message": "Invalid Symbol" }))
        );
        assert_eq!(
            check(json!({ "symbol": "BAHRAIN:BATELCO" }), Plan::Basic).unwrap_err(),
            (422, json!({ "message": "Invalid Symbol" }))
        );
        assert!(check(json!({ "symbol": "BIST:THYAO" }), Plan::Basic).is_ok());
        let four = json!({ "studies": [{ "name": "Volume" }, { "name": "MACD" }, { "name": "Relative Strength Index" }, { "name": "Aroon" }] });
        assert_eq!(
            check(four, Plan::Basic).unwrap_err(),
            (403, json!({ "message": "Exceed Max Usage Parameter Limit (3)" }))
        );
    }

    #[test]
    fn custom_watermark_is_ignored_or_refused_below_ultra() {
        let body = json!({ "watermark": "mine" });
        let basic = check(body.clone(), Plan::Basic).unwrap();
        assert_eq!((basic.watermark, basic.chart_img_watermark), (None, true));
        assert_eq!(
            check(body.clone(), Plan::Ultra).unwrap().watermark.as_deref(),
            Some("mine")
        );
        let refuse = Options {
            watermark: WatermarkRule::Refuse,
            ..Options::default()
        };
        let r = validate_advanced_chart_with(&body, &Plan::Pro.limits(), &refuse).unwrap_err();
        assert_eq!(r.status, 422);
        assert_eq!(r.field.as_deref(), Some("watermark"));
    }
}
