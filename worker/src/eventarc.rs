//! Eventarc deliveries of Firestore document events, parsed into a [`FirestoreEvent`] before any I/O.
//!
//! Three shapes arrive on the wire (see `eventarc.md` in the shared docs):
//! - CloudEvents **binary mode**: `ce-*` headers, the body is `DocumentEventData` as protobuf
//!   (`application/protobuf`, production) or proto3 JSON (`application/json`, tests and hand-made events). Parsed
//!   with `cloudevents-sdk`; should the SDK refuse the headers, the few attributes the worker needs are read from the
//!   `ce-*` headers directly, so an attribute the SDK finds odd never loses a delivery.
//! - CloudEvents **structured mode** (`application/cloudevents+json`), through the SDK.
//! - The raw **Pub/Sub push envelope** Eventarc falls back to when a header value is illegal on the wire:
//!   `{"message": {"attributes": {...}, "data": "<base64>"}, "subscription": "..."}`.
//!
//! The protobuf types of `google.events.cloud.firestore.v1` are generated at build time from the vendored
//! `proto/` files (see `build.rs`). Document values are converted to JSON by the same function the Firestore
//! adapter reads documents with ([`crate::firestore_codec::document_to_json`]): the event's `Document` and
//! Firestore's own share their field numbers, so the event document is re-read as Firestore's type from its bytes.

use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use firestore::gcloud_sdk::google::firestore::v1 as fs;
use http::HeaderMap;
use prost::Message as _;
use serde_json::Value as Json;

use crate::domain::collections::FLOW_RUNS;
use crate::domain::RunId;
use crate::firestore_codec::document_to_json;

/// Types generated from `proto/google/events/cloud/firestore/v1/data.proto` and `proto/google/type/latlng.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    pub mod google {
        pub mod events {
            pub mod cloud {
                pub mod firestore {
                    pub mod v1 {
                        include!(concat!(env!("OUT_DIR"), "/google.events.cloud.firestore.v1.rs"));
                    }
                }
            }
        }
        pub mod r#type {
            include!(concat!(env!("OUT_DIR"), "/google.r#type.rs"));
        }
    }
    pub use google::events::cloud::firestore::v1::*;
}

/// The Firestore document event types Eventarc offers, the one home of their `ce-type` strings: `deploy-plan`
/// prints triggers on [`crate::entry::deploy::TRIGGER_EVENT_TYPES`], and the local Eventarc, the live scenarios and
/// `fleet-sim` deliver those same types. A trigger on `written` delivers every create, update and delete as a
/// `written` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Created,
    Updated,
    Deleted,
    Written,
}

impl EventType {
    pub const ALL: [EventType; 4] = [Self::Created, Self::Updated, Self::Deleted, Self::Written];

    /// The short name (`created`, …), as scenarios and `--types` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
            Self::Written => "written",
        }
    }

    /// The `ce-type` (and a trigger's `type` filter), e.g. `google.cloud.firestore.document.v1.written`.
    pub fn ce_type(self) -> &'static str {
        match self {
            Self::Created => "google.cloud.firestore.document.v1.created",
            Self::Updated => "google.cloud.firestore.document.v1.updated",
            Self::Deleted => "google.cloud.firestore.document.v1.deleted",
            Self::Written => "google.cloud.firestore.document.v1.written",
        }
    }

    /// The type whose `ce-type` is `ce_type` (the `.withAuthContext` variants included).
    pub fn from_ce_type(ce_type: &str) -> Option<Self> {
        let base = ce_type.strip_suffix(".withAuthContext").unwrap_or(ce_type);
        Self::ALL.into_iter().find(|t| t.ce_type() == base)
    }

    /// Whether a trigger on `self` delivers a change of kind `change` (`created`, `updated` or `deleted`).
    pub fn delivers(self, change: EventType) -> bool {
        self == change || (self == Self::Written && change != Self::Written)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown event type {s:?}; expected created, updated, deleted or written"))
    }
}

/// A Firestore event as the worker needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct FirestoreEvent {
    /// `ce-id` (empty for a Pub/Sub envelope without one).
    pub id: String,
    /// `ce-type`, e.g. `google.cloud.firestore.document.v1.updated`.
    pub event_type: String,
    /// The document path inside the database: `flow_runs/<runId>`.
    pub document: String,
    /// The document after the write, as JSON. `None` for a delete, or when Eventarc left the data out (documents
    /// over 10 MiB): then the worker re-reads the document.
    pub value: Option<Json>,
    /// The body carried no `DocumentEventData` at all (the large-document case).
    pub data_omitted: bool,
    /// The Firestore database id the event is from: `ce-database`, else the one in the data's document name; `None`
    /// when the event says neither.
    pub database: Option<String>,
}

impl FirestoreEvent {
    /// `Some(runId)` when the document is `flow_runs/<runId>` (and not a sub-collection document below it).
    pub fn flow_run(&self) -> Option<RunId> {
        let mut parts = self.document.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(FLOW_RUNS), Some(id), None) => RunId::parse(id).ok(),
            _ => None,
        }
    }

    pub fn is_delete(&self) -> bool {
        self.event_type.contains(".deleted")
    }
}

/// A delivery that can never be handled, however often it is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event: {0}")]
pub struct Malformed(pub String);

/// Prefix of every Eventarc Firestore document event type (`created`, `updated`, `deleted`, `written`, and their
/// `.withAuthContext` variants).
const FIRESTORE_DOCUMENT_EVENT: &str = "google.cloud.firestore.document.v1.";

fn malformed(m: impl Into<String>) -> Malformed {
    Malformed(m.into())
}

/// Parses one HTTP delivery.
pub fn parse(headers: &HeaderMap, body: &Bytes) -> Result<FirestoreEvent, Malformed> {
    let content_type = header(headers, "content-type").unwrap_or_default();
    if headers.contains_key("ce-specversion") {
        return match cloudevents::binding::http::to_event(headers, body.to_vec()) {
            Ok(event) => from_cloudevent(&event),
            Err(e) => {
                tracing::warn!(event = "cloud_event_sdk_refused", error = %e, "reading the ce-* headers directly");
                from_headers(headers, &content_type, body)
            }
        };
    }
    if content_type.starts_with("application/cloudevents+json") {
        let event =
            cloudevents::binding::http::to_event(headers, body.to_vec()).map_err(|e| malformed(e.to_string()))?;
        return from_cloudevent(&event);
    }
    let json: Json = serde_json::from_slice(body)
        .map_err(|_| malformed("no ce-specversion header, and the body is not a Pub/Sub push envelope (not JSON)"))?;
    if json.get("message").is_some_and(Json::is_object) {
        return from_pubsub(&json);
    }
    Err(malformed(
        "no ce-specversion header, and the body is not a Pub/Sub push envelope (no message)",
    ))
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
}

fn from_cloudevent(event: &cloudevents::Event) -> Result<FirestoreEvent, Malformed> {
    use cloudevents::event::{AttributesReader, Data};
    let ext = |name: &str| event.extension(name).map(|v| v.to_string());
    let content_type = event.datacontenttype().unwrap_or_default().to_owned();
    let data: Option<Bytes> = match event.data() {
        None => None,
        Some(Data::Binary(b)) => Some(Bytes::from(b.clone())),
        Some(Data::String(s)) => Some(Bytes::from(s.clone().into_bytes())),
        Some(Data::Json(j)) => Some(Bytes::from(serde_json::to_vec(j).unwrap_or_default())),
    };
    build(
        event.id().to_owned(),
        event.ty().to_owned(),
        ext("document"),
        event.subject().map(str::to_owned),
        ext("database"),
        &content_type,
        data.as_ref(),
    )
}

fn from_headers(headers: &HeaderMap, content_type: &str, body: &Bytes) -> Result<FirestoreEvent, Malformed> {
    build(
        header(headers, "ce-id").unwrap_or_default(),
        header(headers, "ce-type").unwrap_or_default(),
        header(headers, "ce-document"),
        header(headers, "ce-subject"),
        header(headers, "ce-database"),
        content_type,
        (!body.is_empty()).then_some(body),
    )
}

fn from_pubsub(envelope: &Json) -> Result<FirestoreEvent, Malformed> {
    let message = &envelope["message"];
    let attrs: HashMap<String, String> = message
        .get("attributes")
        .and_then(Json::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.to_ascii_lowercase(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    // Attribute names are the CloudEvents ones, with or without the `ce-` prefix of the HTTP binding.
    let attr = |name: &str| attrs.get(&format!("ce-{name}")).or_else(|| attrs.get(name)).cloned();
    let data = match message.get("data").and_then(Json::as_str) {
        None | Some("") => None,
        Some(b64) => Some(Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| malformed(format!("message.data is not base64: {e}")))?,
        )),
    };
    let content_type = attr("datacontenttype")
        .or_else(|| attr("content-type"))
        .unwrap_or_default();
    build(
        attr("id")
            .or_else(|| message.get("messageId").and_then(Json::as_str).map(str::to_owned))
            .unwrap_or_default(),
        attr("type").unwrap_or_default(),
        attr("document"),
        attr("subject"),
        attr("database"),
        &content_type,
        data.as_ref(),
    )
}

fn build(
    id: String,
    event_type: String,
    document: Option<String>,
    subject: Option<String>,
    database: Option<String>,
    content_type: &str,
    data: Option<&Bytes>,
) -> Result<FirestoreEvent, Malformed> {
    if !event_type.starts_with(FIRESTORE_DOCUMENT_EVENT) {
        // Another event type routed here by a misconfigured trigger: no redelivery will change it.
        return Err(malformed(format!(
            "event type {event_type:?} is not a Firestore document event ({FIRESTORE_DOCUMENT_EVENT}*)"
        )));
    }
    let decoded = match data {
        None => None,
        Some(d) if d.is_empty() => None,
        Some(d) => Some(decode_data(content_type, d)?),
    };
    let data_omitted = decoded.is_none();
    let (value, name) = match decoded {
        Some(Decoded { value, name }) => (value, name),
        None => (None, None),
    };
    // Which database: `ce-database`, else `projects/<p>/databases/<d>/documents/…` in the data.
    let database = database.filter(|d| !d.is_empty()).or_else(|| {
        name.as_deref()
            .and_then(|n| n.split_once("/databases/"))
            .and_then(|(_, rest)| rest.split_once("/documents"))
            .map(|(d, _)| d.to_owned())
    });
    // Where the document is: `ce-document`, else `ce-subject` (`documents/<path>`), else the name in the data.
    let document = document
        .filter(|d| !d.is_empty())
        .or_else(|| subject.and_then(|s| s.strip_prefix("documents/").map(str::to_owned)))
        .or_else(|| name.and_then(|n| n.split_once("/documents/").map(|(_, p)| p.to_owned())))
        .ok_or_else(|| {
            malformed("no document path: neither ce-document, ce-subject nor a document name in the data")
        })?;
    Ok(FirestoreEvent {
        id,
        event_type,
        document,
        value,
        data_omitted,
        database,
    })
}

struct Decoded {
    value: Option<Json>,
    name: Option<String>,
}

/// `DocumentEventData` by content type: protobuf, or proto3 JSON. Without a content type, protobuf is tried first.
fn decode_data(content_type: &str, data: &Bytes) -> Result<Decoded, Malformed> {
    let ct = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match ct.as_str() {
        "application/protobuf" | "application/x-protobuf" | "application/octet-stream" => decode_protobuf(data),
        "application/json" | "text/json" => decode_json(data),
        "" => decode_protobuf(data).or_else(|e| decode_json(data).map_err(|_| e)),
        other => Err(malformed(format!("unsupported data content type {other:?}"))),
    }
}

fn decode_protobuf(data: &Bytes) -> Result<Decoded, Malformed> {
    let event = proto::DocumentEventData::decode(data.clone())
        .map_err(|e| malformed(format!("data is not a protobuf DocumentEventData: {e}")))?;
    let Some(doc) = event.value else {
        return Ok(Decoded {
            value: None,
            name: None,
        });
    };
    // Same field numbers as google.firestore.v1.Document: one conversion for events and reads.
    let fs_doc = fs::Document::decode(doc.encode_to_vec().as_slice())
        .map_err(|e| malformed(format!("document in the event cannot be read: {e}")))?;
    Ok(Decoded {
        value: Some(document_to_json(&fs_doc.fields)),
        name: Some(doc.name),
    })
}

fn decode_json(data: &Bytes) -> Result<Decoded, Malformed> {
    let v: Json = serde_json::from_slice(data).map_err(|e| malformed(format!("data is not JSON: {e}")))?;
    let Some(doc) = v.get("value").filter(|d| !d.is_null()) else {
        return Ok(Decoded {
            value: None,
            name: None,
        });
    };
    let name = doc.get("name").and_then(Json::as_str).map(str::to_owned);
    let fields = match doc.get("fields") {
        None | Some(Json::Null) => HashMap::new(),
        Some(Json::Object(o)) => o
            .iter()
            .map(|(k, v)| Ok((k.clone(), proto3_json_value(v, k)?)))
            .collect::<Result<HashMap<_, _>, Malformed>>()?,
        Some(_) => return Err(malformed("value.fields must be an object")),
    };
    Ok(Decoded {
        value: Some(document_to_json(&fields)),
        name,
    })
}

/// One Firestore `Value` in proto3 JSON (`{"stringValue": "x"}`, `{"integerValue": "42"}`, ...); both the JSON
/// (`mapValue`) and the original (`map_value`) field names are accepted, as proto3 JSON parsers must.
fn proto3_json_value(v: &Json, at: &str) -> Result<fs::Value, Malformed> {
    use fs::value::ValueType as T;
    let bad = |what: &str| malformed(format!("{at}: {what}"));
    let Json::Object(o) = v else {
        return Err(bad("a Firestore value must be an object"));
    };
    let Some((key, inner)) = o.iter().next() else {
        return Err(bad("empty Firestore value"));
    };
    let t = match key.as_str() {
        "nullValue" | "null_value" => T::NullValue(0),
        "booleanValue" | "boolean_value" => T::BooleanValue(inner.as_bool().ok_or_else(|| bad("booleanValue"))?),
        "integerValue" | "integer_value" => T::IntegerValue(match inner {
            Json::String(s) => s.parse().map_err(|_| bad("integerValue"))?,
            Json::Number(n) => n.as_i64().ok_or_else(|| bad("integerValue"))?,
            _ => return Err(bad("integerValue")),
        }),
        "doubleValue" | "double_value" => T::DoubleValue(match inner {
            Json::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            Json::String(s) => s.parse().map_err(|_| bad("doubleValue"))?,
            _ => return Err(bad("doubleValue")),
        }),
        "timestampValue" | "timestamp_value" => {
            let s = inner.as_str().ok_or_else(|| bad("timestampValue"))?;
            let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|_| bad("timestampValue"))?;
            T::TimestampValue(prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: t.timestamp_subsec_nanos() as i32,
            })
        }
        "stringValue" | "string_value" => T::StringValue(inner.as_str().ok_or_else(|| bad("stringValue"))?.to_owned()),
        "bytesValue" | "bytes_value" => T::BytesValue(
            base64::engine::general_purpose::STANDARD
                .decode(inner.as_str().ok_or_else(|| bad("bytesValue"))?)
                .map_err(|_| bad("bytesValue"))?,
        ),
        "referenceValue" | "reference_value" => {
            T::ReferenceValue(inner.as_str().ok_or_else(|| bad("referenceValue"))?.to_owned())
        }
        "geoPointValue" | "geo_point_value" => T::GeoPointValue(firestore::gcloud_sdk::google::r#type::LatLng {
            latitude: inner.get("latitude").and_then(Json::as_f64).unwrap_or(0.0),
            longitude: inner.get("longitude").and_then(Json::as_f64).unwrap_or(0.0),
        }),
        "arrayValue" | "array_value" => T::ArrayValue(fs::ArrayValue {
            values: inner
                .get("values")
                .and_then(Json::as_array)
                .map(|a| {
                    a.iter()
                        .map(|v| proto3_json_value(v, at))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?
                .unwrap_or_default(),
        }),
        "mapValue" | "map_value" => T::MapValue(fs::MapValue {
            fields: inner
                .get("fields")
                .and_then(Json::as_object)
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| Ok((k.clone(), proto3_json_value(v, &format!("{at}.{k}"))?)))
                        .collect::<Result<HashMap<_, _>, Malformed>>()
                })
                .transpose()?
                .unwrap_or_default(),
        }),
        other => return Err(bad(&format!("unknown Firestore value kind {other:?}"))),
    };
    Ok(fs::Value { value_type: Some(t) })
}

/// Firestore's `Document` as the event's: the two share their field numbers, so one is re-read as the other (the
/// reverse of what [`parse`] does with an event's document).
pub fn to_event_document(d: &fs::Document) -> proto::Document {
    proto::Document::decode(d.encode_to_vec().as_slice())
        .expect("google.firestore.v1.Document and the event's Document are wire-compatible")
}

/// Encodes a JSON document as Eventarc's protobuf `DocumentEventData` (tests, tools, and the measurement script):
/// `value` is `doc` named `name`, no old value, and `update_mask` lists `changed`.
pub fn encode_document_event(name: &str, doc: &Json, changed: &[&str]) -> Vec<u8> {
    let fs_doc = crate::firestore_codec::json_document(name.to_owned(), doc).expect("a JSON object");
    proto::DocumentEventData {
        value: Some(to_event_document(&fs_doc)),
        old_value: None,
        update_mask: Some(proto::DocumentMask {
            field_paths: changed.iter().map(|s| s.to_string()).collect(),
        }),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn binary_headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "evt-1"),
            ("ce-source", "//firestore.googleapis.com/projects/p/databases/(default)"),
            ("ce-type", "google.cloud.firestore.document.v1.updated"),
            ("ce-subject", "documents/flow_runs/run-1"),
            ("ce-time", "2026-11-28T10:00:00.123456Z"),
            ("ce-dataschema", "https://github.com/googleapis/google-cloudevents/blob/main/proto/google/events/cloud/firestore/v1/data.proto"),
            ("ce-database", "(default)"),
            ("ce-namespace", "(default)"),
            ("ce-document", "flow_runs/run-1"),
            ("ce-location", "nam5"),
            ("ce-project", "p"),
            ("content-type", content_type),
        ] {
            h.insert(k, v.parse().unwrap());
        }
        h
    }

    fn doc() -> Json {
        json!({"scope": {"symbol": "BTCUSDT"}, "n": 3, "steps": {"charts-4h": {"status": "READY", "startedAt": "x"}}})
    }

    #[test]
    fn a_binary_protobuf_event_parses() {
        let body = Bytes::from(encode_document_event(
            "projects/p/databases/(default)/documents/flow_runs/run-1",
            &doc(),
            &["steps"],
        ));
        let e = parse(&binary_headers("application/protobuf"), &body).unwrap();
        assert_eq!(e.flow_run().unwrap().as_str(), "run-1");
        assert_eq!(e.value.unwrap(), doc());
        assert_eq!((e.id.as_str(), e.data_omitted), ("evt-1", false));
    }

    #[test]
    fn the_database_comes_from_ce_database_else_from_the_document_name() {
        let body = Bytes::from(encode_document_event(
            "projects/p/databases/charts-db/documents/flow_runs/run-1",
            &doc(),
            &[],
        ));
        let e = parse(&binary_headers("application/protobuf"), &body).unwrap();
        assert_eq!(e.database.as_deref(), Some("(default)"), "ce-database wins");
        let mut h = binary_headers("application/protobuf");
        h.remove("ce-database");
        assert_eq!(parse(&h, &body).unwrap().database.as_deref(), Some("charts-db"));
        assert_eq!(
            parse(&h, &Bytes::new()).unwrap().database,
            None,
            "neither header nor data: unknown"
        );
    }

    #[test]
    fn a_proto3_json_event_parses() {
        let body = json!({"value": {"name": "projects/p/databases/(default)/documents/flow_runs/run-1", "fields": {
            "scope": {"mapValue": {"fields": {"symbol": {"stringValue": "BTCUSDT"}}}},
            "n": {"integerValue": "3"},
            "steps": {"map_value": {"fields": {"charts-4h": {"mapValue": {"fields": {
                "status": {"stringValue": "READY"}, "startedAt": {"stringValue": "x"}}}}}}}
        }}, "updateMask": {"fieldPaths": ["n"]}});
        let e = parse(&binary_headers("application/json"), &Bytes::from(body.to_string())).unwrap();
        assert_eq!(e.value.unwrap(), doc());
    }

    #[test]
    fn an_empty_body_means_the_data_was_left_out() {
        let e = parse(&binary_headers("application/protobuf"), &Bytes::new()).unwrap();
        assert!(e.data_omitted && e.value.is_none());
        assert_eq!(e.document, "flow_runs/run-1");
    }

    #[test]
    fn a_pubsub_envelope_parses() {
        let data = encode_document_event("projects/p/databases/(default)/documents/flow_runs/run-9", &doc(), &[]);
        let body = json!({"message": {"attributes": {"type": "google.cloud.firestore.document.v1.updated",
            "document": "flow_runs/run-9", "datacontenttype": "application/protobuf"},
            "data": base64::engine::general_purpose::STANDARD.encode(data), "messageId": "m-1"},
            "subscription": "projects/p/subscriptions/s"});
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        let e = parse(&h, &Bytes::from(body.to_string())).unwrap();
        assert_eq!((e.flow_run().unwrap().as_str(), e.id.as_str()), ("run-9", "m-1"));
        assert_eq!(e.value.unwrap(), doc());
    }

    #[test]
    fn garbage_is_malformed_and_other_collections_are_not_flow_runs() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "text/plain".parse().unwrap());
        assert!(parse(&h, &Bytes::from_static(b"hello")).is_err());
        assert!(parse(
            &binary_headers("application/protobuf"),
            &Bytes::from_static(b"\xff\xff\xff")
        )
        .is_err());
        let mut e = parse(&binary_headers("application/protobuf"), &Bytes::new()).unwrap();
        e.document = "chart_templates/x".into();
        assert!(e.flow_run().is_none());
        e.document = "flow_runs/run-1/logs/l1".into();
        assert!(e.flow_run().is_none());
    }
}
