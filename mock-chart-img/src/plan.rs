//! Plans as the mock's config names them. The numbers come from `chart-img-spec` (the one plan table of the
//! workspace); this module only adds what a config file needs: custom limits and their parsing.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The limits a key is held to. Every named [`Plan`] resolves to the spec's limits; a custom plan spells them out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    /// Sustained requests per second (fractions allowed: `0.1` is one request every ten seconds).
    pub rate_per_sec: f64,
    /// How many requests may arrive at once before the per-second rate applies.
    pub burst: u32,
    /// Successful gateway passes per UTC day (`429 Limit Exceeded` after that).
    pub daily_limit: u32,
    /// Largest accepted `width`.
    pub max_width: u32,
    /// Largest accepted `height`.
    pub max_height: u32,
    /// Largest accepted `studies.len() + drawings.len()`.
    pub max_params: u32,
    /// Days a `/storage` image stays downloadable (custom plans: 14 unless given).
    #[serde(default = "fourteen")]
    pub storage_days: u32,
    /// Every image carries the CHART-IMG watermark (custom plans: no unless given).
    #[serde(default)]
    pub chart_img_watermark: bool,
    /// A custom `watermark` text is honoured (custom plans: yes unless given).
    #[serde(default = "yes")]
    pub custom_watermark: bool,
}

fn fourteen() -> u32 {
    14
}
fn yes() -> bool {
    true
}

/// A named plan, or custom limits.
///
/// In config files a named plan is written as a bare string (`plan: PRO`) and a custom one as a map of
/// [`PlanLimits`] fields.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Plan {
    /// One of the published plans.
    Named(PlanName),
    /// Limits of your own, e.g. a huge rate for load tests.
    Custom(PlanLimits),
}

/// The published Chart-IMG plans (their limits: [`chart_img_spec::Plan::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
#[allow(missing_docs)]
pub enum PlanName {
    Basic,
    Pro,
    Mega,
    Ultra,
    Enterprise,
}

impl PlanName {
    /// The spec's plan of that name.
    pub fn spec(self) -> chart_img_spec::Plan {
        match self {
            PlanName::Basic => chart_img_spec::Plan::Basic,
            PlanName::Pro => chart_img_spec::Plan::Pro,
            PlanName::Mega => chart_img_spec::Plan::Mega,
            PlanName::Ultra => chart_img_spec::Plan::Ultra,
            PlanName::Enterprise => chart_img_spec::Plan::Enterprise,
        }
    }
}

impl Plan {
    /// BASIC (see [`chart_img_spec::Plan::Basic`]).
    pub const BASIC: Plan = Plan::Named(PlanName::Basic);
    /// PRO.
    pub const PRO: Plan = Plan::Named(PlanName::Pro);
    /// MEGA.
    pub const MEGA: Plan = Plan::Named(PlanName::Mega);
    /// ULTRA.
    pub const ULTRA: Plan = Plan::Named(PlanName::Ultra);
    /// ENTERPRISE (raise its limits per key with the overrides of [`KeyConfig`](crate::KeyConfig)).
    pub const ENTERPRISE: Plan = Plan::Named(PlanName::Enterprise);

    /// A plan with limits of your own.
    pub fn custom(limits: PlanLimits) -> Plan {
        Plan::Custom(limits)
    }

    /// The limits this plan stands for.
    pub fn limits(&self) -> PlanLimits {
        match self {
            Plan::Custom(l) => *l,
            Plan::Named(n) => PlanLimits::from(n.spec().limits()),
        }
    }

    /// `BASIC`, `PRO`, … or `custom`, as shown by the admin API.
    pub fn label(&self) -> &'static str {
        match self {
            Plan::Named(n) => n.spec().name(),
            Plan::Custom(_) => "custom",
        }
    }
}

impl From<chart_img_spec::Plan> for Plan {
    fn from(p: chart_img_spec::Plan) -> Plan {
        Plan::Named(match p {
            chart_img_spec::Plan::Basic => PlanName::Basic,
            chart_img_spec::Plan::Pro => PlanName::Pro,
            chart_img_spec::Plan::Mega => PlanName::Mega,
            chart_img_spec::Plan::Ultra => PlanName::Ultra,
            chart_img_spec::Plan::Enterprise => PlanName::Enterprise,
        })
    }
}

impl From<chart_img_spec::PlanLimits> for PlanLimits {
    fn from(l: chart_img_spec::PlanLimits) -> PlanLimits {
        PlanLimits {
            rate_per_sec: l.rate_per_sec,
            burst: l.burst,
            daily_limit: l.daily_limit,
            max_width: l.max_width,
            max_height: l.max_height,
            max_params: l.max_params,
            storage_days: l.storage_days,
            chart_img_watermark: l.chart_img_watermark,
            custom_watermark: l.custom_watermark,
        }
    }
}

impl From<PlanLimits> for chart_img_spec::PlanLimits {
    fn from(l: PlanLimits) -> chart_img_spec::PlanLimits {
        chart_img_spec::PlanLimits {
            rate_per_sec: l.rate_per_sec,
            burst: l.burst,
            daily_limit: l.daily_limit,
            max_width: l.max_width,
            max_height: l.max_height,
            max_params: l.max_params,
            storage_days: l.storage_days,
            chart_img_watermark: l.chart_img_watermark,
            custom_watermark: l.custom_watermark,
        }
    }
}

impl PlanLimits {
    /// Limits so high they never bite (the ENTERPRISE size and parameter limits, no rate or quota): for load tests.
    pub fn unlimited() -> PlanLimits {
        PlanLimits {
            rate_per_sec: 1.0e9,
            burst: 1_000_000_000,
            daily_limit: u32::MAX,
            ..PlanLimits::from(chart_img_spec::Plan::Enterprise.limits())
        }
    }
}

// Hand-written rather than `#[serde(untagged)]`: an untagged enum reports only "did not match any variant" at the
// start of the enclosing map, while this names the bad plan and points at its line.
impl<'de> Deserialize<'de> for Plan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Plan, D::Error> {
        use serde::de::{self, MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Plan;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a plan name (BASIC, PRO, MEGA, ULTRA, ENTERPRISE) or a map of custom limits")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Plan, E> {
                s.parse::<chart_img_spec::Plan>().map(Plan::from).map_err(|_| {
                    E::custom(format!(
                        "unknown plan `{s}`: expected BASIC, PRO, MEGA, ULTRA, ENTERPRISE or a map of custom \
                         limits (rate_per_sec, burst, daily_limit, max_width, max_height, max_params)"
                    ))
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Plan, A::Error> {
                PlanLimits::deserialize(de::value::MapAccessDeserializer::new(map)).map(Plan::Custom)
            }
        }
        d.deserialize_any(V)
    }
}
