//! Validation and normalization of the chart request body, following `shared/docs/chart-img-api.md`.
//!
//! The order mirrors the real service: field validation (`422` array form, express-validator style) first, then the
//! plan checks (`403`), then the semantic checks (`422 {"message": "Invalid Interval" | "Invalid Symbol"}`).
//! Unknown fields are ignored. The normalized request has every default filled in and its free-form objects
//! key-sorted, so two requests that mean the same thing serialize to the same cache key.

use serde::Serialize;
use serde_json::{Map, Value};

/// The intervals the API knows (case-sensitive).
pub const INTERVALS: &[&str] = &[
    "1m", "2m", "3m", "5m", "15m", "30m", "45m", "1h", "2h", "3h", "4h", "6h", "8h", "12h", "1D", "2D", "3D", "1W",
    "1M", "3M", "6M", "1Y",
];
const STYLES: &[&str] = &["bar", "candle", "line", "area", "heikinAshi", "hollowCandle", "baseline", "hiLo", "column"];
const THEMES: &[&str] = &["light", "dark"];
const SCALES: &[&str] = &["regular", "percent", "indexedTo100", "logarithmic"];
const SESSIONS: &[&str] = &["regular", "extended"];
const FORMATS: &[&str] = &["png", "jpeg"];
const RANGES: &[&str] = &["1D", "5D", "1M", "3M", "6M", "1Y", "5Y", "ALL", "DTD", "WTD", "MTD", "YTD"];
const Z_ORDERS: &[&str] = &["top", "bottom"];

/// Exchanges a symbol may name without extra config. Anything else is `Invalid Symbol` unless listed under
/// `extra_exchanges`: a mock that accepted every prefix would let a typo pass that the real service refuses.
pub const KNOWN_EXCHANGES: &[&str] = &[
    "BINANCE", "BINANCEUS", "BYBIT", "OKX", "COINBASE", "KRAKEN", "BITSTAMP", "BITFINEX", "KUCOIN", "GATEIO", "HTX",
    "BITGET", "MEXC", "GEMINI", "CRYPTO", "CRYPTOCAP", "DERIBIT", "BITMEX", "POLONIEX", "UPBIT", "NASDAQ", "NYSE",
    "AMEX", "ARCA", "OTC", "CBOE", "CME", "CME_MINI", "CBOT", "COMEX", "NYMEX", "ICEUS", "ICEEUR", "EUREX", "LSE",
    "XETR", "FWB", "EURONEXT", "SIX", "TSX", "ASX", "HKEX", "SSE", "SZSE", "TSE", "NSE", "BSE", "KRX", "MOEX", "FX",
    "FX_IDC", "OANDA", "FXCM", "SAXO", "PEPPERSTONE", "FOREXCOM", "TVC", "SP", "DJ", "INDEX", "ECONOMICS", "FRED",
    "SKILLING", "CAPITALCOM", "EASYMARKETS", "BLACKBULL", "ICMARKETS", "PYTH",
];

/// One field error of the `422` array form.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldError {
    /// The value as sent.
    pub value: Value,
    /// Why it is refused.
    pub msg: String,
    /// The field path (`studies[0].name`).
    pub param: String,
    /// Always `body`.
    pub location: &'static str,
}

/// A study as normalized.
#[derive(Debug, Clone, Serialize)]
pub struct Study {
    /// Display name (`Relative Strength Index`).
    pub name: String,
    /// Drawn on the price pane instead of a pane of its own.
    #[serde(rename = "forceOverlay")]
    pub force_overlay: bool,
    /// Key-sorted `input`.
    pub input: Value,
    /// Key-sorted `override`.
    #[serde(rename = "override")]
    pub override_: Value,
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
    pub watermark: Option<String>,
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

struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, param: impl Into<String>, value: &Value, msg: impl Into<String>) {
        self.0.push(FieldError { value: value.clone(), msg: msg.into(), param: param.into(), location: "body" });
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
                self.push(field, &Value::String(s.into()), format!("must be one of: {}", allowed.join(", ")));
                default.to_string()
            }
        }
    }

    fn int(&mut self, body: &Map<String, Value>, field: &str, min: u64, max: u64) -> Option<u32> {
        match body.get(field) {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if n >= min && n <= max => Some(n as u32),
                _ if max == u64::from(u32::MAX) => {
                    self.push(field, v, format!("must be an integer greater than or equal to {min}"));
                    None
                }
                _ => {
                    self.push(field, v, format!("must be an integer between {min} and {max}"));
                    None
                }
            },
        }
    }
}

/// Is `s` a well-formed `EXCHANGE:SYMBOL`, or a formula of them (`BINANCE:BTCUSDT/BINANCE:ETHUSDT`)?
pub fn symbol_is_well_formed(s: &str) -> bool {
    fn part(p: &str) -> bool {
        let p = p.trim();
        if p.is_empty() {
            return false;
        }
        if p.parse::<f64>().is_ok() {
            return true;
        }
        let Some((ex, sym)) = p.split_once(':') else { return false };
        let ex_ok = !ex.is_empty() && ex.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        let sym_ok = !sym.is_empty()
            && sym.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || "._!-".contains(c));
        ex_ok && sym_ok
    }
    let cleaned: String = s.chars().map(|c| if "()".contains(c) { ' ' } else { c }).collect();
    !s.trim().is_empty() && cleaned.split(['+', '-', '*', '/']).all(part)
        // `-` is both an operator and a symbol character (`BRK-B`); accept either reading.
        || cleaned.split(['+', '*', '/']).all(part)
}

/// The `EXCHANGE:SYMBOL` parts of a (possibly formula) symbol.
pub fn symbol_parts(s: &str) -> Vec<(String, String)> {
    s.split(|c: char| "+*/() ".contains(c))
        .filter_map(|p| p.trim().split_once(':'))
        .map(|(e, s)| (e.to_string(), s.trim_end_matches('-').to_string()))
        .collect()
}

fn is_iso8601(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
        || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
        || chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

fn parse_instant(s: &str) -> Option<chrono::NaiveDateTime> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.naive_utc())
        .ok()
        .or_else(|| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok())
        .or_else(|| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
}

fn object_or_empty(errs: &mut Errors, param: String, v: Option<&Value>, required: bool) -> Value {
    match v {
        None | Some(Value::Null) if !required => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => canonical(v),
        Some(v) => {
            errs.push(param, v, "must be an object");
            Value::Null
        }
        None => {
            errs.push(param, &Value::Null, "is required");
            Value::Null
        }
    }
}

/// Validates the fields of a JSON body. `Err` holds the `422` array.
pub fn validate(body: &Map<String, Value>) -> Result<ChartRequest, Vec<FieldError>> {
    let mut e = Errors(Vec::new());
    let symbol = match e.string(body, "symbol") {
        None => "BINANCE:BTCUSDT".to_string(),
        Some(s) if symbol_is_well_formed(s) => s.to_string(),
        Some(s) => {
            e.push("symbol", &Value::String(s.into()), "must be a valid tradingview EXCHANGE:SYMBOL");
            String::new()
        }
    };
    // The interval's *value* is a semantic check (object-form 422); only its type is a field error.
    let interval = e.string(body, "interval").unwrap_or("1D").to_string();
    let width = e.int(body, "width", 400, u64::from(u32::MAX)).unwrap_or(800);
    let height = e.int(body, "height", 300, u64::from(u32::MAX)).unwrap_or(600);
    let style = e.one_of(body, "style", STYLES, "candle");
    let theme = e.one_of(body, "theme", THEMES, "light");
    let scale = e.one_of(body, "scale", SCALES, "regular");
    let session = e.one_of(body, "session", SESSIONS, "regular");
    let format = e.one_of(body, "format", FORMATS, "png");
    let timezone = match e.string(body, "timezone") {
        None => "Etc/UTC".to_string(),
        Some(tz) if tz == "UTC" || (tz.contains('/') && tz.chars().all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))) => {
            tz.to_string()
        }
        Some(tz) => {
            e.push("timezone", &Value::String(tz.into()), "must be a valid IANA timezone");
            "Etc/UTC".into()
        }
    };
    let range = match body.get("range") {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(r)) if RANGES.contains(&r.as_str()) => Value::String(r.clone()),
        Some(Value::Object(m)) => {
            let from = m.get("from").and_then(Value::as_str).filter(|s| is_iso8601(s));
            let to = m.get("to").and_then(Value::as_str).filter(|s| is_iso8601(s));
            match (from.and_then(parse_instant), to.and_then(parse_instant)) {
                (Some(f), Some(t)) if f < t => canonical(&Value::Object(m.clone())),
                (Some(_), Some(_)) => {
                    e.push("range", &body["range"], "`from` must be before `to`");
                    Value::Null
                }
                _ => {
                    e.push("range", &body["range"], "`from` and `to` must be ISO8601 dates");
                    Value::Null
                }
            }
        }
        Some(v) => {
            e.push("range", v, format!("must be one of: {} or {{from, to}}", RANGES.join(", ")));
            Value::Null
        }
    };
    let mut studies = Vec::new();
    match body.get("studies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, s) in items.iter().enumerate() {
                let p = |f: &str| format!("studies[{i}].{f}");
                let Some(m) = s.as_object() else {
                    e.push(format!("studies[{i}]"), s, "must be an object");
                    continue;
                };
                let name = match m.get("name") {
                    Some(Value::String(n)) if !n.trim().is_empty() => n.clone(),
                    v => {
                        e.push(p("name"), v.unwrap_or(&Value::Null), "must be a study name");
                        String::new()
                    }
                };
                let force_overlay = match m.get("forceOverlay") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(v) => {
                        e.push(p("forceOverlay"), v, "must be a boolean");
                        false
                    }
                };
                let input = object_or_empty(&mut e, p("input"), m.get("input"), false);
                let override_ = object_or_empty(&mut e, p("override"), m.get("override"), false);
                studies.push(Study { name, force_overlay, input, override_ });
            }
        }
        Some(v) => e.push("studies", v, "must be an array"),
    }
    let mut drawings = Vec::new();
    match body.get("drawings") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, d) in items.iter().enumerate() {
                let p = |f: &str| format!("drawings[{i}].{f}");
                let Some(m) = d.as_object() else {
                    e.push(format!("drawings[{i}]"), d, "must be an object");
                    continue;
                };
                let name = match m.get("name") {
                    Some(Value::String(n)) if !n.trim().is_empty() => n.clone(),
                    v => {
                        e.push(p("name"), v.unwrap_or(&Value::Null), "must be a drawing name");
                        String::new()
                    }
                };
                let input = object_or_empty(&mut e, p("input"), m.get("input"), true);
                let override_ = object_or_empty(&mut e, p("override"), m.get("override"), false);
                let z_order = match m.get("zOrder") {
                    None | Some(Value::Null) => "top".to_string(),
                    Some(Value::String(z)) if Z_ORDERS.contains(&z.as_str()) => z.clone(),
                    Some(v) => {
                        e.push(p("zOrder"), v, "must be one of: top, bottom");
                        "top".into()
                    }
                };
                drawings.push(Drawing { name, input, override_, z_order });
            }
        }
        Some(v) => e.push("drawings", v, "must be an array"),
    }
    let override_ = object_or_empty(&mut e, "override".into(), body.get("override"), false);
    let shift_left = e.int(body, "shiftLeft", 1, 1000);
    let shift_right = e.int(body, "shiftRight", 1, 1000);
    let watermark = e.string(body, "watermark").map(str::to_string);
    if !e.0.is_empty() {
        return Err(e.0);
    }
    Ok(ChartRequest {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols() {
        for ok in ["BINANCE:BTCUSDT", "NYSE:BRK-B", "BINANCE:BTCUSDT/BINANCE:ETHUSDT", "(NASDAQ:AAPL+NASDAQ:MSFT)/2"] {
            assert!(symbol_is_well_formed(ok), "{ok}");
        }
        for bad in ["BTCUSDT", "binance:btcusdt", ":BTC", "BINANCE:", "", "BINANCE BTC"] {
            assert!(!symbol_is_well_formed(bad), "{bad}");
        }
    }

    #[test]
    fn key_order_does_not_change_the_cache_key() {
        let a: Value = serde_json::from_str(r#"{"studies":[{"name":"RSI","input":{"a":1,"b":2}}]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"studies":[{"input":{"b":2,"a":1},"name":"RSI"}],"x":1}"#).unwrap();
        let ka = validate(a.as_object().unwrap()).unwrap().cache_key();
        let kb = validate(b.as_object().unwrap()).unwrap().cache_key();
        assert_eq!(ka, kb);
    }
}
