//! The published plans and the limits each carries (`chart-img-api.md`, "Plans").

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A published Chart-IMG plan. Written `BASIC`, `PRO`, … in configs (case-insensitive on input).
///
/// ```
/// use chart_img_spec::Plan;
/// let pro: Plan = "pro".parse().unwrap();
/// assert_eq!(pro.limits().max_width, 1920);
/// assert_eq!(Plan::most_permissive([Plan::Basic, Plan::Pro]), Some(Plan::Pro));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema), schema(as = PlanName))]
#[serde(rename_all = "UPPERCASE")]
pub enum Plan {
    /// The default, since an account whose plan is not given is held to the smallest (`contract.md`, §3).
    /// 1/s, burst 3, 50 a day, 800×600, 3 parameters, CHART-IMG watermark, 14 days of storage.
    #[default]
    Basic,
    /// 10/s, burst 15, 500 a day, 1920×1080, 5 parameters, 30 days.
    Pro,
    /// 15/s, burst 25, 1000 a day, 1920×1600, 10 parameters, 60 days.
    Mega,
    /// 35/s, burst 50, 3000 a day, 2048×1920, 25 parameters, 90 days, custom watermark.
    Ultra,
    /// At least 35/s, burst 50, 5000 a day, 2048×1920, 50 parameters, 120 days, custom watermark.
    Enterprise,
}

/// What a plan allows. Every [`Plan`] resolves to one; callers with contracts of their own (a mock's custom plan)
/// build one directly. Read from a config, `storage_days` defaults to 14, `chart_img_watermark` to no and
/// `custom_watermark` to yes; an unknown field is refused.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    /// Sustained requests per second.
    pub rate_per_sec: f64,
    /// Requests that may arrive at once before the per-second rate applies.
    pub burst: u32,
    /// Requests per UTC day.
    pub daily_limit: u32,
    /// Largest `width`.
    pub max_width: u32,
    /// Largest `height`.
    pub max_height: u32,
    /// Largest `studies.len() + drawings.len()`.
    pub max_params: u32,
    /// How long `/storage` images stay downloadable, in days.
    #[serde(default = "fourteen")]
    pub storage_days: u32,
    /// Every image carries the CHART-IMG watermark.
    #[serde(default)]
    pub chart_img_watermark: bool,
    /// A custom `watermark` text is honoured.
    #[serde(default = "yes")]
    pub custom_watermark: bool,
}

fn fourteen() -> u32 {
    14
}

fn yes() -> bool {
    true
}

impl PlanLimits {
    /// Limits so high they never bite (ENTERPRISE's size and parameter limits, no rate or quota): for load tests
    /// against a mock.
    pub const fn unlimited() -> PlanLimits {
        let enterprise = Plan::Enterprise.limits();
        PlanLimits {
            rate_per_sec: 1.0e9,
            burst: 1_000_000_000,
            daily_limit: u32::MAX,
            ..enterprise
        }
    }
}

impl Plan {
    /// Every plan, from the smallest to the largest.
    pub const ALL: [Plan; 5] = [Plan::Basic, Plan::Pro, Plan::Mega, Plan::Ultra, Plan::Enterprise];

    /// The plan's limits.
    pub const fn limits(self) -> PlanLimits {
        let (rate_per_sec, burst, daily_limit, max_width, max_height, max_params, storage_days) = match self {
            Plan::Basic => (1.0, 3, 50, 800, 600, 3, 14),
            Plan::Pro => (10.0, 15, 500, 1920, 1080, 5, 30),
            Plan::Mega => (15.0, 25, 1000, 1920, 1600, 10, 60),
            Plan::Ultra => (35.0, 50, 3000, 2048, 1920, 25, 90),
            Plan::Enterprise => (35.0, 50, 5000, 2048, 1920, 50, 120),
        };
        PlanLimits {
            rate_per_sec,
            burst,
            daily_limit,
            max_width,
            max_height,
            max_params,
            storage_days,
            chart_img_watermark: matches!(self, Plan::Basic),
            custom_watermark: matches!(self, Plan::Ultra | Plan::Enterprise),
        }
    }

    /// `BASIC`, `PRO`, `MEGA`, `ULTRA` or `ENTERPRISE`.
    pub const fn name(self) -> &'static str {
        match self {
            Plan::Basic => "BASIC",
            Plan::Pro => "PRO",
            Plan::Mega => "MEGA",
            Plan::Ultra => "ULTRA",
            Plan::Enterprise => "ENTERPRISE",
        }
    }

    /// The largest of `plans` (each plan allows at least what every smaller one does), `None` when empty.
    pub fn most_permissive(plans: impl IntoIterator<Item = Plan>) -> Option<Plan> {
        plans.into_iter().max()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A plan name that is not one of the five.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPlan(pub String);

impl fmt::Display for UnknownPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown plan {:?}; expected BASIC, PRO, MEGA, ULTRA or ENTERPRISE",
            self.0
        )
    }
}

impl std::error::Error for UnknownPlan {}

impl FromStr for Plan {
    type Err = UnknownPlan;
    fn from_str(s: &str) -> Result<Plan, UnknownPlan> {
        Plan::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownPlan(s.to_owned()))
    }
}

impl PlanLimits {
    /// Whether a `width`×`height` chart with `params` studies and drawings is within these limits.
    ///
    /// ```
    /// use chart_img_spec::Plan;
    /// assert!(!Plan::Basic.limits().fits(1920, 1080, 1));
    /// assert!(Plan::Pro.limits().fits(1920, 1080, 5));
    /// ```
    pub fn fits(&self, width: u32, height: u32, params: usize) -> bool {
        width <= self.max_width && height <= self.max_height && params <= self.max_params as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_grow_monotonically_so_the_largest_is_the_most_permissive() {
        for w in Plan::ALL.windows(2) {
            let (a, b) = (w[0].limits(), w[1].limits());
            assert!(a.max_width <= b.max_width && a.max_height <= b.max_height && a.max_params <= b.max_params);
            assert!(a.storage_days < b.storage_days && a.daily_limit < b.daily_limit);
        }
        assert_eq!("Enterprise".parse::<Plan>().unwrap(), Plan::Enterprise);
        assert!("GOLD"
            .parse::<Plan>()
            .unwrap_err()
            .to_string()
            .contains("unknown plan \"GOLD\""));
    }
}
