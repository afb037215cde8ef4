//! Chart-IMG intervals, case-sensitive as the API is (`4H` is refused with 422 there, so it is refused here first).

use std::fmt;

/// The list is the spec's: the worker keeps no interval list of its own.
const ALL: &[&str] = chart_img_spec::INTERVALS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeframe(&'static str);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown timeframe {0:?}; expected one of {list}", list = ALL.join(" "))]
pub struct UnknownTimeframe(pub String);

impl Timeframe {
    pub fn parse(raw: &str) -> Result<Self, UnknownTimeframe> {
        ALL.iter()
            .find(|t| **t == raw)
            .map(|t| Timeframe(t))
            .ok_or_else(|| UnknownTimeframe(raw.to_owned()))
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_case_sensitive() {
        assert_eq!(Timeframe::parse("4h").unwrap().as_str(), "4h");
        assert_eq!(Timeframe::parse("1M").unwrap().as_str(), "1M");
        assert!(Timeframe::parse("4H").is_err());
        assert!(Timeframe::parse("").is_err());
    }
}
