//! Chart-IMG plans and the limits each one carries (see `shared/docs/chart-img-api.md`, "Plans").

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The limits a key is held to. Every named [`Plan`] resolves to one of these; a custom plan spells them out.
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

/// The published Chart-IMG plans.
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

impl Plan {
    /// BASIC: 1 req/s, burst 3, 50 a day, 800×600, 3 studies+drawings.
    pub const BASIC: Plan = Plan::Named(PlanName::Basic);
    /// PRO: 10 req/s, burst 15, 500 a day, 1920×1080, 5 studies+drawings.
    pub const PRO: Plan = Plan::Named(PlanName::Pro);
    /// MEGA: 15 req/s, burst 25, 1000 a day, 1920×1600, 10 studies+drawings.
    pub const MEGA: Plan = Plan::Named(PlanName::Mega);
    /// ULTRA: 35 req/s, burst 50, 3000 a day, 2048×1920, 25 studies+drawings.
    pub const ULTRA: Plan = Plan::Named(PlanName::Ultra);
    /// ENTERPRISE: at least 35 req/s, burst 50, 5000 a day, 2048×1920, 50 studies+drawings
    /// (raise them per key with the overrides of [`KeyConfig`](crate::KeyConfig)).
    pub const ENTERPRISE: Plan = Plan::Named(PlanName::Enterprise);

    /// A plan with limits of your own.
    pub fn custom(limits: PlanLimits) -> Plan {
        Plan::Custom(limits)
    }

    /// The limits this plan stands for.
    pub fn limits(&self) -> PlanLimits {
        match self {
            Plan::Custom(l) => *l,
            Plan::Named(n) => {
                let (rate, burst, daily, w, h, params) = match n {
                    PlanName::Basic => (1.0, 3, 50, 800, 600, 3),
                    PlanName::Pro => (10.0, 15, 500, 1920, 1080, 5),
                    PlanName::Mega => (15.0, 25, 1000, 1920, 1600, 10),
                    PlanName::Ultra => (35.0, 50, 3000, 2048, 1920, 25),
                    PlanName::Enterprise => (35.0, 50, 5000, 2048, 1920, 50),
                };
                PlanLimits {
                    rate_per_sec: rate,
                    burst,
                    daily_limit: daily,
                    max_width: w,
                    max_height: h,
                    max_params: params,
                }
            }
        }
    }

    /// `BASIC`, `PRO`, … or `custom`, as shown by the admin API.
    pub fn label(&self) -> &'static str {
        match self {
            Plan::Named(PlanName::Basic) => "BASIC",
            Plan::Named(PlanName::Pro) => "PRO",
            Plan::Named(PlanName::Mega) => "MEGA",
            Plan::Named(PlanName::Ultra) => "ULTRA",
            Plan::Named(PlanName::Enterprise) => "ENTERPRISE",
            Plan::Custom(_) => "custom",
        }
    }
}

impl PlanLimits {
    /// Limits so high they never bite: for load tests.
    pub fn unlimited() -> PlanLimits {
        PlanLimits {
            rate_per_sec: 1.0e9,
            burst: 1_000_000_000,
            daily_limit: u32::MAX,
            max_width: 2048,
            max_height: 1920,
            max_params: 50,
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
                match s.to_ascii_uppercase().as_str() {
                    "BASIC" => Ok(Plan::BASIC),
                    "PRO" => Ok(Plan::PRO),
                    "MEGA" => Ok(Plan::MEGA),
                    "ULTRA" => Ok(Plan::ULTRA),
                    "ENTERPRISE" => Ok(Plan::ENTERPRISE),
                    _ => Err(E::custom(format!(
                        "unknown plan `{s}`: expected BASIC, PRO, MEGA, ULTRA, ENTERPRISE or a map of custom limits \
                         (rate_per_sec, burst, daily_limit, max_width, max_height, max_params)"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Plan, A::Error> {
                PlanLimits::deserialize(de::value::MapAccessDeserializer::new(map)).map(Plan::Custom)
            }
        }
        d.deserialize_any(V)
    }
}
