//! The API's routes, as paths (axum's `{param}` syntax where a path has a parameter). The worker's client, the
//! recorder and the mock's route table take them from here.

/// `POST`: an advanced chart, answered with the image.
pub const ADVANCED_CHART: &str = "/v2/tradingview/advanced-chart";
/// `POST`: an advanced chart, stored; answered with JSON naming its URL.
pub const ADVANCED_CHART_STORAGE: &str = "/v2/tradingview/advanced-chart/storage";
/// `POST`: a chart of a saved TradingView layout (`{id}`), answered with the image.
pub const LAYOUT_CHART: &str = "/v2/tradingview/layout-chart/{id}";
/// `POST`: a chart of a saved layout, stored.
pub const LAYOUT_CHART_STORAGE: &str = "/v2/tradingview/layout-chart/storage/{id}";
/// `GET`: the exchanges.
pub const EXCHANGE_LIST: &str = "/v3/tradingview/exchange/list";
/// `GET`: the symbols of one exchange (`{id}`).
pub const EXCHANGE: &str = "/v3/tradingview/exchange/{id}";

/// A route path with its `{param}` replaced by `value` (the value is put in as given: percent-encode it first).
pub fn with_param(route: &str, value: &str) -> String {
    match (route.find('{'), route.find('}')) {
        (Some(a), Some(b)) if a < b => format!("{}{}{}", &route[..a], value, &route[b + 1..]),
        _ => route.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_parameter_is_filled_in() {
        assert_eq!(
            super::with_param(super::EXCHANGE, "BINANCE"),
            "/v3/tradingview/exchange/BINANCE"
        );
        assert_eq!(super::with_param(super::ADVANCED_CHART, "x"), super::ADVANCED_CHART);
    }
}
