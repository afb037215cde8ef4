//! Typed identifiers, parsed at the edges so the rest of the code never re-checks them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a raw string was refused as an identifier. The message names the kind of id, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {reason}")]
pub struct IdError {
    kind: &'static str,
    reason: &'static str,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Accepts a non-empty id of at most 1500 bytes without `/` (a Firestore document id or a path segment).
            pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
                let raw = raw.into();
                let reason = if raw.is_empty() {
                    Some("must not be empty")
                } else if raw.contains('/') {
                    Some("must not contain '/'")
                } else if raw.len() > 1500 {
                    Some("must be at most 1500 bytes")
                } else if raw == "." || raw == ".." || raw.chars().any(char::is_control) {
                    Some("must be a plain name")
                } else {
                    None
                };
                match reason {
                    Some(reason) => Err(IdError { kind: $kind, reason }),
                    None => Ok(Self(raw)),
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, IdError> {
                Self::parse(raw)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

id_type!(
    /// `flow_runs/{runId}`.
    RunId,
    "runId"
);
id_type!(
    /// A key of `flow_runs/{runId}.steps`.
    StepId,
    "stepId"
);
id_type!(
    /// `chart_templates/{chartTemplateId}`.
    TemplateId,
    "chartTemplateId"
);
id_type!(
    /// A Chart-IMG account of `CHART_IMG_ACCOUNTS_JSON` and its `chart_img_accounts_usage/{accountId}` document.
    AccountId,
    "account id"
);
id_type!(
    /// The instance that claims a step (`claimedBy`).
    WorkerId,
    "worker id"
);
id_type!(
    /// One claim of a step (`claimToken`): new for every claim attempt, so a retried commit whose first try landed
    /// is recognised as its own, and two steps in one process never share a claim.
    ClaimToken,
    "claim token"
);
id_type!(
    /// One quota operation (a reservation or a give-back), remembered by the usage document so that a retried commit
    /// applies once.
    OpId,
    "quota operation id"
);

impl ClaimToken {
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }
}

impl OpId {
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_slashes_and_empty_strings_with_the_kind_named() {
        assert_eq!(RunId::parse("run-1").unwrap().as_str(), "run-1");
        assert_eq!(
            RunId::parse("a/b").unwrap_err().to_string(),
            "runId must not contain '/'"
        );
        assert_eq!(StepId::parse("").unwrap_err().to_string(), "stepId must not be empty");
        assert!(TemplateId::parse("..").is_err());
    }
}
