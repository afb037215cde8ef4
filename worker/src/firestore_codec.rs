//! JSON ↔ Firestore values, shared by the Firestore adapter (documents it reads and writes) and the Eventarc parser
//! (documents inside `DocumentEventData`, whose `Value` shares Firestore's field numbers).
//!
//! Mapping: Firestore timestamps read as RFC 3339 strings, bytes as base64, references as their path, geo points as
//! `{latitude, longitude}`; map keys come out sorted, so a document reads the same every time. The time fields the
//! worker writes ([`TIME_FIELDS`]) are stored as Firestore timestamps, so they sort and filter as times in the console
//! and in queries.

use std::collections::HashMap;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use firestore::gcloud_sdk::google::firestore::v1 as fs;
use firestore::gcloud_sdk::google::r#type::LatLng;
use firestore::gcloud_sdk::prost_types::Timestamp;
use serde_json::{Map, Number, Value as Json};

use crate::ports::StoreError;

/// Fields the worker writes as times; stored as Firestore timestamps, read back as RFC 3339 strings.
pub const TIME_FIELDS: [&str; 5] = ["startedAt", "leaseExpiresAt", "finishedAt", "updatedAt", "notBefore"];

/// Quotes one segment of a field path when Firestore requires it: anything but `[A-Za-z_][A-Za-z0-9_]*` goes
/// between backticks, with `` ` `` and `\` escaped by a backslash.
pub fn quote_segment(s: &str) -> String {
    let simple = !s.is_empty()
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if simple {
        s.to_owned()
    } else {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('`');
        for c in s.chars() {
            if c == '`' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('`');
        out
    }
}

/// `a.b.c` from raw segments, each quoted as needed.
pub fn field_path(segments: &[&str]) -> String {
    segments.iter().map(|s| quote_segment(s)).collect::<Vec<_>>().join(".")
}

/// A top-level or step field: the worker's time fields become timestamps, everything else converts as is.
pub fn field_value(name: &str, v: &Json) -> fs::Value {
    if TIME_FIELDS.contains(&name) {
        if let Some(t) = v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()) {
            let t = t.with_timezone(&Utc);
            return fs::Value {
                value_type: Some(fs::value::ValueType::TimestampValue(Timestamp {
                    seconds: t.timestamp(),
                    // Firestore keeps microseconds; a finer time would be refused as not microsecond-aligned.
                    nanos: (t.timestamp_subsec_micros() * 1000) as i32,
                })),
            };
        }
    }
    json_to_value(v)
}

/// A JSON value as a Firestore value. Integers that fit `i64` stay integers; others become doubles.
pub fn json_to_value(v: &Json) -> fs::Value {
    use fs::value::ValueType as T;
    let t = match v {
        Json::Null => T::NullValue(0),
        Json::Bool(b) => T::BooleanValue(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => T::IntegerValue(i),
            None => T::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => T::StringValue(s.clone()),
        Json::Array(a) => T::ArrayValue(fs::ArrayValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Json::Object(o) => T::MapValue(fs::MapValue {
            fields: o.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect(),
        }),
    };
    fs::Value { value_type: Some(t) }
}

/// A whole JSON object as a document named `name` (the top level must be an object).
pub fn json_document(name: String, v: &Json) -> Result<fs::Document, StoreError> {
    let Json::Object(o) = v else {
        return Err(StoreError::Other(format!("{name}: a document must be a JSON object")));
    };
    Ok(fs::Document {
        name,
        fields: o.iter().map(|(k, v)| (k.clone(), field_value(k, v))).collect(),
        ..Default::default()
    })
}

/// RFC 3339 in UTC with `Z`; whole seconds print without a fraction, so times the worker wrote read back verbatim.
pub fn timestamp_to_rfc3339(t: &Timestamp) -> String {
    match DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.clamp(0, 999_999_999) as u32) {
        Some(dt) => dt.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => format!("{}s", t.seconds),
    }
}

/// A Firestore value as JSON (see the module documentation for the mapping). Map keys come out sorted, so a
/// document reads the same every time.
pub fn value_to_json(v: &fs::Value) -> Json {
    use fs::value::ValueType as T;
    match &v.value_type {
        None | Some(T::NullValue(_)) => Json::Null,
        Some(T::BooleanValue(b)) => Json::Bool(*b),
        Some(T::IntegerValue(i)) => Json::from(*i),
        // JSON has no NaN or infinity; they read as null.
        Some(T::DoubleValue(d)) => Number::from_f64(*d).map(Json::Number).unwrap_or(Json::Null),
        Some(T::TimestampValue(t)) => Json::String(timestamp_to_rfc3339(t)),
        Some(T::StringValue(s)) => Json::String(s.clone()),
        Some(T::BytesValue(b)) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Some(T::ReferenceValue(r)) => Json::String(r.clone()),
        Some(T::GeoPointValue(LatLng { latitude, longitude })) => {
            let mut m = Map::new();
            m.insert(
                "latitude".into(),
                Number::from_f64(*latitude).map(Json::Number).unwrap_or(Json::Null),
            );
            m.insert(
                "longitude".into(),
                Number::from_f64(*longitude).map(Json::Number).unwrap_or(Json::Null),
            );
            Json::Object(m)
        }
        Some(T::ArrayValue(a)) => Json::Array(a.values.iter().map(value_to_json).collect()),
        Some(T::MapValue(m)) => document_to_json(&m.fields),
        // Pipeline-only expressions never appear in stored documents.
        Some(T::FieldReferenceValue(_) | T::VariableReferenceValue(_) | T::FunctionValue(_) | T::PipelineValue(_)) => {
            Json::Null
        }
    }
}

/// The fields of a document (or map) as a JSON object with sorted keys.
pub fn document_to_json(fields: &HashMap<String, fs::Value>) -> Json {
    let mut keys: Vec<&String> = fields.keys().collect();
    keys.sort();
    Json::Object(
        keys.into_iter()
            .map(|k| (k.clone(), value_to_json(&fields[k])))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn segments_with_special_characters_are_quoted() {
        assert_eq!(quote_segment("status"), "status");
        assert_eq!(quote_segment("charts_4h"), "charts_4h");
        assert_eq!(quote_segment("charts-4h"), "`charts-4h`");
        assert_eq!(quote_segment("4h"), "`4h`");
        assert_eq!(quote_segment("a`b\\c"), "`a\\`b\\\\c`");
        assert_eq!(field_path(&["steps", "x.y", "claimedBy"]), "steps.`x.y`.claimedBy");
    }

    #[test]
    fn json_round_trips_through_firestore_values() {
        let v = json!({"a": 1, "b": -2.5, "c": "s", "d": [true, null, {"e": []}], "f": {}, "big": u64::MAX});
        let back = value_to_json(&json_to_value(&v));
        assert_eq!(back["a"], json!(1));
        assert_eq!(back["b"], json!(-2.5));
        assert_eq!(back["d"], json!([true, null, {"e": []}]));
        assert_eq!(back["f"], json!({}));
        assert_eq!(back["big"].as_f64(), Some(u64::MAX as f64));
    }

    #[test]
    fn time_fields_are_timestamps_that_read_back_verbatim() {
        for f in TIME_FIELDS {
            let v = field_value(f, &json!("2026-11-28T10:15:00Z"));
            assert!(
                matches!(v.value_type, Some(fs::value::ValueType::TimestampValue(_))),
                "{f}"
            );
            assert_eq!(value_to_json(&v), json!("2026-11-28T10:15:00Z"));
        }
        assert!(matches!(
            field_value("note", &json!("2026-11-28T10:15:00Z")).value_type,
            Some(fs::value::ValueType::StringValue(_))
        ));
        let bytes = fs::Value {
            value_type: Some(fs::value::ValueType::BytesValue(vec![0, 255])),
        };
        assert_eq!(value_to_json(&bytes), json!("AP8="));
    }
}
