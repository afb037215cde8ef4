//! Plans as the mock's config names them. The numbers come from `chart-img-spec` (the one plan table of the
//! workspace); this module only adds what a config file needs: custom limits and their parsing.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use chart_img_spec::PlanLimits;

/// A named plan, or custom limits.
///
/// In config files a named plan is written as a bare string (`plan: PRO`) and a custom one as a map of
/// [`PlanLimits`] fields.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Plan {
    /// One of the published plans.
    Named(chart_img_spec::Plan),
    /// Limits of your own, e.g. a huge rate for load tests.
    Custom(PlanLimits),
}

impl Plan {
    /// BASIC (see [`chart_img_spec::Plan::Basic`]).
    pub const BASIC: Plan = Plan::Named(chart_img_spec::Plan::Basic);
    /// PRO.
    pub const PRO: Plan = Plan::Named(chart_img_spec::Plan::Pro);
    /// MEGA.
    pub const MEGA: Plan = Plan::Named(chart_img_spec::Plan::Mega);
    /// ULTRA.
    pub const ULTRA: Plan = Plan::Named(chart_img_spec::Plan::Ultra);
    /// ENTERPRISE (raise its limits per key with the overrides of [`KeyConfig`](crate::KeyConfig)).
    pub const ENTERPRISE: Plan = Plan::Named(chart_img_spec::Plan::Enterprise);

    /// A plan with limits of your own.
    pub fn custom(limits: PlanLimits) -> Plan {
        Plan::Custom(limits)
    }

    /// The limits this plan stands for.
    pub fn limits(&self) -> PlanLimits {
        match self {
            Plan::Custom(l) => *l,
            Plan::Named(n) => n.limits(),
        }
    }

    /// `BASIC`, `PRO`, … or `custom`, as shown by the admin API.
    pub fn label(&self) -> &'static str {
        match self {
            Plan::Named(n) => n.name(),
            Plan::Custom(_) => "custom",
        }
    }
}

impl From<chart_img_spec::Plan> for Plan {
    fn from(p: chart_img_spec::Plan) -> Plan {
        Plan::Named(p)
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
                let named = s.parse::<chart_img_spec::Plan>().map_err(|_| {
                    E::custom(format!(
                        "unknown plan `{s}`: expected BASIC, PRO, MEGA, ULTRA, ENTERPRISE or a map of custom \
                         limits (rate_per_sec, burst, daily_limit, max_width, max_height, max_params)"
                    ))
                })?;
                Ok(Plan::Named(named))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Plan, A::Error> {
                PlanLimits::deserialize(de::value::MapAccessDeserializer::new(map)).map(Plan::Custom)
            }
        }
        d.deserialize_any(V)
    }
}
