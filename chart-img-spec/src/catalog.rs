//! The reference data: studies, drawings, timezones and exchanges, embedded from `data/*.json` (the project's own
//! copy of `shared/docs/chart-img-data/`) and parsed once, plus the small enums of the request body.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Intervals, case-sensitive (`4H`, `1H`, `60` are refused). `2m` appears in the changelog only and is left out.
pub const INTERVALS: &[&str] = &[
    "1m", "3m", "5m", "15m", "30m", "45m", "1h", "2h", "3h", "4h", "6h", "8h", "12h", "1D", "2D", "3D", "1W", "1M",
    "3M", "6M", "1Y",
];
/// Chart styles.
pub const STYLES: &[&str] = &[
    "bar",
    "candle",
    "line",
    "area",
    "heikinAshi",
    "hollowCandle",
    "baseline",
    "hiLo",
    "column",
];
/// Themes (case-sensitive).
pub const THEMES: &[&str] = &["light", "dark"];
/// Price scales.
pub const SCALES: &[&str] = &["regular", "percent", "indexedTo100", "logarithmic"];
/// Sessions.
pub const SESSIONS: &[&str] = &["regular", "extended"];
/// Image formats.
pub const FORMATS: &[&str] = &["png", "jpeg"];
/// Named ranges (a range may also be `{"from", "to"}`).
pub const RANGES: &[&str] = &[
    "1D", "5D", "1M", "3M", "6M", "1Y", "5Y", "ALL", "DTD", "WTD", "MTD", "YTD",
];
/// A drawing's `zOrder`.
pub const Z_ORDERS: &[&str] = &["top", "bottom"];
/// The allowed `watermarkSize` values.
pub const WATERMARK_SIZES: &[u32] = &[16, 32, 64, 128];

/// The defaults of an advanced-chart body (what a POST without a body renders).
pub mod defaults {
    /// `symbol`.
    pub const SYMBOL: &str = "BINANCE:BTCUSDT";
    /// `interval`.
    pub const INTERVAL: &str = "1D";
    /// `width`.
    pub const WIDTH: u32 = 800;
    /// `height`.
    pub const HEIGHT: u32 = 600;
    /// `style`.
    pub const STYLE: &str = "candle";
    /// `theme`.
    pub const THEME: &str = "light";
    /// `scale`.
    pub const SCALE: &str = "regular";
    /// `session`.
    pub const SESSION: &str = "regular";
    /// `timezone`.
    pub const TIMEZONE: &str = "Etc/UTC";
    /// `format`.
    pub const FORMAT: &str = "png";
    /// `watermarkSize`.
    pub const WATERMARK_SIZE: u32 = 16;
    /// `watermarkOpacity`.
    pub const WATERMARK_OPACITY: f64 = 1.0;
    /// Smallest `width`.
    pub const MIN_WIDTH: u32 = 400;
    /// Smallest `height`.
    pub const MIN_HEIGHT: u32 = 300;
}

/// Where a study draws when `forceOverlay` is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// On the price pane (moving averages, bands).
    Overlay,
    /// In a pane of its own below the price (oscillators, volume).
    Pane,
}

/// The type of a study or drawing input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Read as express-validator's `isInt`.
    Integer,
    /// Read as `isFloat`.
    Float,
    /// `true`/`false` (also `"true"`, `"false"`, `0`, `1`).
    Boolean,
    /// A string, limited to `one_of` when that is not empty.
    String,
    /// An ISO 8601 date or date-time.
    Datetime,
}

/// One documented `input` key of a study.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StudyInput {
    /// `in_0`…`in_8` or a name (`length`, `source`, …).
    pub key: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: InputType,
    /// The documented default.
    pub default: Value,
    /// Smallest value (numbers).
    #[serde(default)]
    pub min: Option<f64>,
    /// Largest value (numbers).
    #[serde(default)]
    pub max: Option<f64>,
    /// The allowed values (strings); empty when any string goes.
    #[serde(default, rename = "oneOf")]
    pub one_of: Vec<String>,
    /// What the input means.
    #[serde(default)]
    pub label: String,
}

/// A supported study (indicator).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Study {
    /// The exact name the API accepts (`Relative Strength Index`).
    pub name: String,
    /// `false` for the documented studies; `true` for a study seen rendering live that the documentation does not
    /// list (`data/studies-observed.json`; its inputs are unknown, so none are checked).
    #[serde(skip)]
    pub observed: bool,
    /// Its natural place.
    pub placement: Placement,
    /// Its documented inputs.
    #[serde(rename = "input")]
    pub inputs: Vec<StudyInput>,
}

/// One input of a drawing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DrawingInput {
    /// `price`, `startDatetime`, `text`, …
    pub key: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: InputType,
    /// Must be present.
    pub required: bool,
    /// The documented default of an optional input.
    #[serde(default)]
    pub default: Option<Value>,
}

/// A supported drawing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Drawing {
    /// The exact name (`Horizontal Line`).
    pub name: String,
    /// Its inputs.
    #[serde(rename = "input")]
    pub inputs: Vec<DrawingInput>,
    /// The `override` keys it knows.
    #[serde(rename = "override", default)]
    pub overrides: Vec<String>,
}

/// A documented exchange prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// `BINANCE`, `NASDAQ`, …
    pub id: String,
    /// The documentation's section (`Crypto Currency`, `Stocks - Europe`, …).
    pub category: String,
    /// Available on the v2 routes (six documented exchanges are not).
    pub v2: bool,
}

#[derive(Deserialize)]
struct StudiesFile {
    studies: Vec<Study>,
}
#[derive(Deserialize)]
struct DrawingsFile {
    drawings: Vec<Drawing>,
}
#[derive(Deserialize)]
struct TimezonesFile {
    default: String,
    timezones: Vec<String>,
}
#[derive(Deserialize)]
struct ExchangesFile {
    exchanges: serde_json::Map<String, Value>,
}
#[derive(Deserialize)]
struct ExchangeEntry {
    id: String,
    v2: bool,
}

/// The embedded `data/studies.json`.
pub const STUDIES_JSON: &str = include_str!("../data/studies.json");
/// The embedded `data/studies-observed.json`: studies the live API renders that the documentation does not list.
pub const STUDIES_OBSERVED_JSON: &str = include_str!("../data/studies-observed.json");
/// The embedded `data/drawings.json`.
pub const DRAWINGS_JSON: &str = include_str!("../data/drawings.json");
/// The embedded `data/timezones.json`.
pub const TIMEZONES_JSON: &str = include_str!("../data/timezones.json");
/// The embedded `data/exchanges.json`.
pub const EXCHANGES_JSON: &str = include_str!("../data/exchanges.json");

// The embedded files are part of the crate and checked by its tests, so a parse failure is a build defect.
static STUDIES: LazyLock<Vec<Study>> = LazyLock::new(|| {
    let mut all = serde_json::from_str::<StudiesFile>(STUDIES_JSON)
        .expect("data/studies.json parses")
        .studies;
    let observed = serde_json::from_str::<StudiesFile>(STUDIES_OBSERVED_JSON)
        .expect("data/studies-observed.json parses")
        .studies;
    all.extend(observed.into_iter().map(|s| Study { observed: true, ..s }));
    all
});
static DRAWINGS: LazyLock<Vec<Drawing>> = LazyLock::new(|| {
    serde_json::from_str::<DrawingsFile>(DRAWINGS_JSON)
        .expect("data/drawings.json parses")
        .drawings
});
static TIMEZONES: LazyLock<Vec<String>> = LazyLock::new(|| {
    let f: TimezonesFile = serde_json::from_str(TIMEZONES_JSON).expect("data/timezones.json parses");
    let mut all = f.timezones;
    if !all.contains(&f.default) {
        all.push(f.default);
    }
    all
});
static EXCHANGES: LazyLock<Vec<Exchange>> = LazyLock::new(|| {
    let f: ExchangesFile = serde_json::from_str(EXCHANGES_JSON).expect("data/exchanges.json parses");
    f.exchanges
        .into_iter()
        .flat_map(|(category, list)| {
            let list: Vec<ExchangeEntry> = serde_json::from_value(list).expect("data/exchanges.json entries parse");
            list.into_iter().map(move |e| Exchange {
                id: e.id,
                category: category.clone(),
                v2: e.v2,
            })
        })
        .collect()
});

/// The 92 documented studies, in the documentation's order, then the observed ones (seen rendering live, not
/// documented: `Pivot Points Standard`), marked [`Study::observed`].
///
/// ```
/// use chart_img_spec::{studies, study, Placement};
/// assert_eq!(studies().iter().filter(|s| !s.observed).count(), 92);
/// assert_eq!(study("Super Trend").unwrap().placement, Placement::Overlay);
/// assert!(study("Pivot Points Standard").unwrap().observed);
/// assert!(study("RSI").is_none());
/// ```
pub fn studies() -> &'static [Study] {
    &STUDIES
}

/// The study of that exact name.
pub fn study(name: &str) -> Option<&'static Study> {
    STUDIES.iter().find(|s| s.name == name)
}

/// The 15 documented drawings.
///
/// ```
/// let text = chart_img_spec::drawing("Text").unwrap();
/// let required: Vec<_> = text.inputs.iter().filter(|i| i.required).map(|i| i.key.as_str()).collect();
/// assert_eq!(required, ["datetime", "price", "text"]);
/// ```
pub fn drawings() -> &'static [Drawing] {
    &DRAWINGS
}

/// The drawing of that exact name.
pub fn drawing(name: &str) -> Option<&'static Drawing> {
    DRAWINGS.iter().find(|d| d.name == name)
}

/// The accepted timezones: the documented 81 plus the default `Etc/UTC`.
///
/// ```
/// assert!(chart_img_spec::is_timezone("Europe/Berlin"));
/// assert!(chart_img_spec::is_timezone("Etc/UTC"));
/// assert!(!chart_img_spec::is_timezone("Europe/Vaduz"));
/// ```
pub fn timezones() -> &'static [String] {
    &TIMEZONES
}

/// Whether `tz` is one of [`timezones`].
pub fn is_timezone(tz: &str) -> bool {
    TIMEZONES.iter().any(|t| t == tz)
}

/// The 207 documented exchanges.
///
/// ```
/// let bist = chart_img_spec::exchange("BIST").unwrap();
/// assert!(bist.v2);
/// assert!(!chart_img_spec::exchange("BAHRAIN").unwrap().v2);
/// assert_eq!(chart_img_spec::exchanges().len(), 207);
/// ```
pub fn exchanges() -> &'static [Exchange] {
    &EXCHANGES
}

/// The exchange with that id (exact: symbols in a chart body are upper case).
pub fn exchange(id: &str) -> Option<&'static Exchange> {
    EXCHANGES.iter().find(|e| e.id == id)
}

/// The exchange a v3 route's `{EXCHANGE_ID}` names: v3 ids are case-insensitive (the official example is
/// `GET /v3/tradingview/exchange/binance`); the answer names the exchange by its upper-case [`Exchange::id`].
///
/// ```
/// assert_eq!(chart_img_spec::exchange_v3("binance").unwrap().id, "BINANCE");
/// assert!(chart_img_spec::exchange_v3("nosuch").is_none());
/// ```
pub fn exchange_v3(id: &str) -> Option<&'static Exchange> {
    EXCHANGES.iter().find(|e| e.id.eq_ignore_ascii_case(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_data_has_the_documented_sizes() {
        assert_eq!(studies().iter().filter(|s| !s.observed).count(), 92);
        let observed: Vec<_> = studies()
            .iter()
            .filter(|s| s.observed)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(observed, ["Pivot Points Standard"]);
        assert_eq!(drawings().len(), 15);
        assert_eq!(timezones().len(), 82, "81 documented zones plus the default Etc/UTC");
        assert_eq!(exchanges().len(), 207);
        let off: Vec<_> = exchanges().iter().filter(|e| !e.v2).map(|e| e.id.as_str()).collect();
        assert_eq!(off, ["BAHRAIN", "BVMT", "NSEKE", "BSSE", "BVCV", "TFX"]);
        let bb = study("Bollinger Bands %B").unwrap();
        assert_eq!(
            (bb.placement, bb.inputs[1].min, bb.inputs[1].max),
            (Placement::Pane, Some(0.001), Some(50.0))
        );
        assert_eq!(drawing("Horizontal Line").unwrap().inputs[0].key, "price");
    }
}
