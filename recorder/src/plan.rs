//! The plan facts `recorder record` and `recorder verify` keep to: requests per second, burst and daily quota.
//!
//! TO BE REPLACED BY `chart_img_spec::Plan` AT MERGE. This is the recorder's only copy of the "Plans" table of
//! `chart-img-api.md`, with the same names (`Plan`, `limits()`, `rate_per_sec`, `burst`, `daily_limit`) as that crate,
//! so the merge is a `use` line. The recorder cannot take the table from the worker or mock-chart-img (they depend on
//! the recorder, not the other way round).

use std::fmt;
use std::str::FromStr;

/// A published Chart-IMG plan, written `BASIC`, `PRO`, … (case-insensitive) in the accounts JSON's `plan` field.
///
/// ```
/// let pro: recorder::Plan = "pro".parse().unwrap();
/// assert_eq!(pro.limits().burst, 15);
/// assert_eq!(recorder::Plan::default(), recorder::Plan::Basic);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Plan {
    /// The contract's default when an account names no plan.
    #[default]
    Basic,
    Pro,
    Mega,
    Ultra,
    Enterprise,
}

/// The limits of a plan that matter for spending calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanLimits {
    /// Sustained requests per second.
    pub rate_per_sec: f64,
    /// Requests that may arrive at once before the per-second rate applies.
    pub burst: u32,
    /// Requests per UTC day.
    pub daily_limit: u32,
}

impl Plan {
    pub const ALL: [Plan; 5] = [
        Plan::Basic,
        Plan::Pro,
        Plan::Mega,
        Plan::Ultra,
        Plan::Enterprise,
    ];

    /// The plan's limits (ENTERPRISE: the published minimum).
    pub const fn limits(self) -> PlanLimits {
        let (rate_per_sec, burst, daily_limit) = match self {
            Plan::Basic => (1.0, 3, 50),
            Plan::Pro => (10.0, 15, 500),
            Plan::Mega => (15.0, 25, 1000),
            Plan::Ultra => (35.0, 50, 3000),
            Plan::Enterprise => (35.0, 50, 5000),
        };
        PlanLimits {
            rate_per_sec,
            burst,
            daily_limit,
        }
    }

    /// `BASIC`, `PRO`, `MEGA`, `ULTRA` or `ENTERPRISE`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Plan::Basic => "BASIC",
            Plan::Pro => "PRO",
            Plan::Mega => "MEGA",
            Plan::Ultra => "ULTRA",
            Plan::Enterprise => "ENTERPRISE",
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Plan {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Plan::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!("unknown plan {s:?}; expected one of BASIC, PRO, MEGA, ULTRA, ENTERPRISE")
            })
    }
}

/// The message of the daily quota's 429 (`chart-img-api.md`, "Errors"); the per-second throttle's 429 says
/// `Too Many Requests`. Also to be replaced by the spec crate's constant at merge.
pub(crate) const LIMIT_EXCEEDED_MESSAGE: &str = "Limit Exceeded";
