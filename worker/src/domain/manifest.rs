//! Storage layout (contract §6), the manifest (§7) and its JSON Schema check, and the error codes (§8).

use std::fmt;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ids::{RunId, StepId, TemplateId};
use super::request::ImageFormat;
use super::timeframe::Timeframe;

/// The error codes of the contract; the only values `error.code` and `failures[].code` ever take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    ValidationFailed,
    ChartApiFailed,
    ChartApiLimitExceeded,
    ChartApiMockMissing,
    GcsWriteFailed,
    ManifestWriteFailed,
    /// Step-level only: Firestore refused an operation for good, or stayed unavailable through every attempt.
    StoreFailed,
    /// Step-level only: the step's holders stopped renewing their lease (crash, kill, lost network) too often.
    StepAbandoned,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 8] = [
        Self::ValidationFailed,
        Self::ChartApiFailed,
        Self::ChartApiLimitExceeded,
        Self::ChartApiMockMissing,
        Self::GcsWriteFailed,
        Self::ManifestWriteFailed,
        Self::StoreFailed,
        Self::StepAbandoned,
    ];

    /// The code named `s` (as stored in `error.code` / `lastError.code`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ValidationFailed => "VALIDATION_FAILED",
            Self::ChartApiFailed => "CHART_API_FAILED",
            Self::ChartApiLimitExceeded => "CHART_API_LIMIT_EXCEEDED",
            Self::ChartApiMockMissing => "CHART_API_MOCK_MISSING",
            Self::GcsWriteFailed => "GCS_WRITE_FAILED",
            Self::ManifestWriteFailed => "MANIFEST_WRITE_FAILED",
            Self::StoreFailed => "STORE_FAILED",
            Self::StepAbandoned => "STEP_ABANDONED",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An object in a bucket. Displays as `gs://bucket/path`, the only form of URI the worker records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub bucket: String,
    pub path: String,
}

impl ObjectRef {
    pub fn uri(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.path)
    }

    /// Parses `gs://bucket/path`.
    pub fn parse_uri(uri: &str) -> Option<ObjectRef> {
        let rest = uri.strip_prefix("gs://")?;
        let (bucket, path) = rest.split_once('/')?;
        (!bucket.is_empty() && !path.is_empty()).then(|| ObjectRef {
            bucket: bucket.into(),
            path: path.into(),
        })
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gs://{}/{}", self.bucket, self.path)
    }
}

/// `YYYYMMDDTHHMMSSZ`, the time stamp inside object names.
pub fn compact_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// `runs/<runId>/charts/<timeframe>/<chartTemplateId>/<generatedAt>_<symbolSlug>_<timeframe>_<chartTemplateId>.png`
pub fn chart_path(
    run: &RunId,
    tf: Timeframe,
    template: &TemplateId,
    symbol: &str,
    at: DateTime<Utc>,
    f: ImageFormat,
) -> String {
    format!(
        "runs/{run}/charts/{tf}/{template}/{}_{symbol}_{tf}_{template}.{}",
        compact_time(at),
        f.extension()
    )
}

/// `runs/<runId>/steps/<stepId>/charts/manifest.json`
pub fn manifest_path(run: &RunId, step: &StepId) -> String {
    format!("runs/{run}/steps/{step}/charts/manifest.json")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestItem {
    pub chart_template_id: String,
    pub gcs_uri: String,
    pub content_type: String,
    pub bytes: u64,
    pub sha256: String,
    pub generated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestFailure {
    pub chart_template_id: String,
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    pub run_id: String,
    pub step_id: String,
    pub created_at: String,
    pub symbol: String,
    pub timeframe: String,
    pub min_images: u32,
    pub requested: u32,
    pub items: Vec<ManifestItem>,
    pub failures: Vec<ManifestFailure>,
}

pub const MANIFEST_SCHEMA: &str = include_str!("../../schemas/manifest.schema.json");

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let schema: serde_json::Value =
            serde_json::from_str(MANIFEST_SCHEMA).expect("the bundled manifest schema is JSON");
        jsonschema::validator_for(&schema).expect("the bundled manifest schema compiles")
    })
}

/// Contract §8: a step SUCCEEDED when at least `minImages` charts were stored; otherwise it FAILED.
pub fn enough_images(stored: usize, min_images: u32) -> bool {
    stored as u64 >= u64::from(min_images)
}

impl Manifest {
    /// The outcome of the step this manifest records ([`enough_images`]).
    pub fn succeeded(&self) -> bool {
        enough_images(self.items.len(), self.min_images)
    }

    /// Reads a manifest: JSON, checked against `schemas/manifest.schema.json`, then typed. The error says what is
    /// wrong (the JSON error with its position, or the schema violations with their JSON pointers).
    pub fn from_validated_json(bytes: &[u8]) -> Result<Manifest, String> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("not JSON: {e} (line {}, column {})", e.line(), e.column()))?;
        let errors: Vec<String> = validator()
            .iter_errors(&value)
            .take(3)
            .map(|e| format!("manifest{}: {}", e.instance_path(), e))
            .collect();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    /// Serializes the manifest after checking it against `schemas/manifest.schema.json`.
    /// The error lists every violation with its JSON pointer.
    pub fn to_validated_json(&self) -> Result<Vec<u8>, String> {
        let value = serde_json::to_value(self).map_err(|e| e.to_string())?;
        let errors: Vec<String> = validator()
            .iter_errors(&value)
            .map(|e| format!("manifest{}: {}", e.instance_path(), e))
            .collect();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let mut bytes = serde_json::to_vec_pretty(&value).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            schema_version: 1,
            run_id: "run-1".into(),
            step_id: "charts_4h".into(),
            created_at: "2026-11-28T13:25:12Z".into(),
            symbol: "BTCUSDT".into(),
            timeframe: "4h".into(),
            min_images: 1,
            requested: 2,
            items: vec![ManifestItem {
                chart_template_id: "price_volume".into(),
                gcs_uri: "gs://bucket-1/runs/run-1/charts/4h/price_volume/20261128T132511Z_BTCUSDT_4h_price_volume.png"
                    .into(),
                content_type: "image/png".into(),
                bytes: 10,
                sha256: "a".repeat(64),
                generated_at: "2026-11-28T13:25:11Z".into(),
            }],
            failures: vec![ManifestFailure {
                chart_template_id: "rsi".into(),
                code: ErrorCode::ChartApiFailed,
                message: "500 Something Went Wrong".into(),
                http_status: Some(500),
            }],
        }
    }

    #[test]
    fn a_well_formed_manifest_passes_the_schema() {
        let bytes = manifest().to_validated_json().unwrap();
        let back: Manifest = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, manifest());
    }

    #[test]
    fn schema_violations_are_reported_with_their_path() {
        let mut m = manifest();
        m.items[0].sha256 = "nothex".into();
        m.items[0].gcs_uri = "https://signed.example/x.png?expires_at=1".into();
        let err = m.to_validated_json().unwrap_err();
        assert!(err.contains("manifest/items/0/sha256"), "{err}");
        assert!(err.contains("manifest/items/0/gcsUri"), "{err}");
    }

    #[test]
    fn reading_checks_the_schema_and_the_outcome_follows_min_images() {
        let m = manifest();
        let back = Manifest::from_validated_json(&m.to_validated_json().unwrap()).unwrap();
        assert_eq!(back, m);
        assert!(m.succeeded());
        let mut short = m.clone();
        short.min_images = 2;
        assert!(!short.succeeded());
        assert!(Manifest::from_validated_json(b"{").unwrap_err().starts_with("not JSON"));
        let err = Manifest::from_validated_json(br#"{"flow": "run"}"#).unwrap_err();
        assert!(err.starts_with("manifest: "), "{err}");
    }

    #[test]
    fn paths_follow_the_contract() {
        let run = RunId::parse("run-123").unwrap();
        let t = TemplateId::parse("rsi_14").unwrap();
        let at = DateTime::parse_from_rfc3339("2026-11-28T13:25:11Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            chart_path(
                &run,
                Timeframe::parse("4h").unwrap(),
                &t,
                "BTCUSDT",
                at,
                ImageFormat::Png
            ),
            "runs/run-123/charts/4h/rsi_14/20261128T132511Z_BTCUSDT_4h_rsi_14.png"
        );
        assert_eq!(
            manifest_path(&run, &StepId::parse("charts_4h").unwrap()),
            "runs/run-123/steps/charts_4h/charts/manifest.json"
        );
        let o = ObjectRef::parse_uri("gs://b/p/q.json").unwrap();
        assert_eq!(
            (o.bucket.as_str(), o.path.as_str(), o.uri()),
            ("b", "p/q.json", "gs://b/p/q.json".to_owned())
        );
    }
}
