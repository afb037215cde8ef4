//! The v3 exchange routes' answer shapes (`chart-img-api.md`, "Routes" and "More route facts").

use serde::{Deserialize, Serialize};

/// `source2` of a [`V3Symbol`]: the data source of the symbol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V3Source {
    /// The source's id (`BINANCE`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
}

/// One element of `payload` in `GET /v3/tradingview/exchange/{EXCHANGE_ID}`: besides `symbol`, `description`,
/// `type`, `exchange` and `currency_code`, the real objects carry `currency-logoid`, `base-currency-logoid`,
/// `provider_id`, `source2`, `source_id` and `typespecs` (names exactly as the API spells them, hyphens and
/// underscores mixed).
///
/// ```
/// use chart_img_spec::{V3Source, V3Symbol};
/// let s = V3Symbol {
///     symbol: "BTCUSDT".into(),
///     description: "Bitcoin / TetherUS".into(),
///     kind: "spot".into(),
///     exchange: "BINANCE".into(),
///     currency_code: "USDT".into(),
///     currency_logoid: Some("crypto/XTVCUSDT".into()),
///     base_currency_logoid: Some("crypto/XTVCBTC".into()),
///     provider_id: "binance".into(),
///     source2: V3Source { id: "BINANCE".into(), name: "Binance".into(), description: "Binance".into() },
///     source_id: "BINANCE".into(),
///     typespecs: vec!["crypto".into()],
/// };
/// let v = serde_json::to_value(&s).unwrap();
/// assert_eq!(v["currency-logoid"], "crypto/XTVCUSDT");
/// assert_eq!(v["type"], "spot");
/// assert_eq!(v["source2"]["id"], "BINANCE");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V3Symbol {
    /// The ticker without the exchange.
    pub symbol: String,
    /// Human-readable name.
    pub description: String,
    /// `spot`, `swap`, `stock`, `index`, `forex`, `futures`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The exchange id, upper case.
    pub exchange: String,
    /// Quote currency.
    pub currency_code: String,
    /// Logo id of the quote currency (`country/US`, `crypto/XTVCUSDT`); absent when the symbol has none.
    #[serde(rename = "currency-logoid", skip_serializing_if = "Option::is_none", default)]
    pub currency_logoid: Option<String>,
    /// Logo id of the base currency (pairs only).
    #[serde(rename = "base-currency-logoid", skip_serializing_if = "Option::is_none", default)]
    pub base_currency_logoid: Option<String>,
    /// The data provider (`binance`).
    pub provider_id: String,
    /// The data source.
    pub source2: V3Source,
    /// The source's id.
    pub source_id: String,
    /// Type details (`crypto`, `common`, `perpetual`, `cfd`, …).
    pub typespecs: Vec<String>,
}
