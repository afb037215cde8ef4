//! The symbol catalogue: which tickers each exchange lists. It decides `Invalid Symbol` under `symbols: strict` and
//! answers `GET /v3/tradingview/exchange/{id}`. Built in (`data/symbols.yaml`) or read from the config's
//! `symbol_catalogue` file (same format).

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

/// One listed symbol, as the v3 exchange route answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolEntry {
    /// The ticker without the exchange (`BTCUSDT`).
    pub symbol: String,
    /// Human-readable name.
    #[serde(default)]
    pub description: String,
    /// `spot`, `swap`, `stock`, `index`, `forex`, `futures`, …
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Quote currency.
    #[serde(default)]
    pub currency_code: String,
}

/// The catalogue: exchange id → listed symbols.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    /// `updatedAt` of the v3 answers.
    #[serde(default = "default_updated")]
    pub updated_at: String,
    /// The symbols of each exchange.
    pub exchanges: BTreeMap<String, Vec<SymbolEntry>>,
}

fn default_updated() -> String {
    "2026-11-30T00:00:00.000Z".into()
}

const BUILT_IN: &str = include_str!("../data/symbols.yaml");

impl Catalogue {
    /// The built-in catalogue.
    pub fn built_in() -> Catalogue {
        serde_yaml::from_str(BUILT_IN).expect("data/symbols.yaml is part of the crate and parses")
    }

    /// Reads a catalogue file (YAML or JSON); the error names the file and line.
    pub fn from_file(path: &Path) -> anyhow::Result<Catalogue> {
        let text =
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
        serde_yaml::from_str(&text).map_err(|e| {
            let line = e.location().map(|l| format!(":{}", l.line())).unwrap_or_default();
            anyhow::anyhow!(
                "{}{line}: {}",
                path.display(),
                e.to_string().split(" at line ").next().unwrap_or_default()
            )
        })
    }

    /// `Some(listed)` when the catalogue has entries for `exchange`, `None` when it knows nothing about it.
    pub fn lists(&self, exchange: &str, ticker: &str) -> Option<bool> {
        self.exchanges
            .get(exchange)
            .map(|list| list.iter().any(|s| s.symbol == ticker))
    }

    /// Every exchange the v3 list answers: the documented ones, then any extra the catalogue has.
    pub fn exchange_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = chart_img_spec::exchanges().iter().map(|e| e.id.clone()).collect();
        for id in self.exchanges.keys() {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_catalogue_parses_and_lists_only_documented_exchanges() {
        let c = Catalogue::built_in();
        assert_eq!(c.lists("BINANCE", "BTCUSDT"), Some(true));
        assert_eq!(c.lists("BINANCE", "NOTACOIN"), Some(false));
        assert_eq!(c.lists("BVB", "TLV"), None);
        for id in c.exchanges.keys() {
            assert!(
                chart_img_spec::exchange(id).is_some_and(|e| e.v2),
                "{id} is not a documented v2 exchange"
            );
        }
    }
}
