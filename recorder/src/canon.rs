//! Canonical JSON: the form request bodies are stored, matched and diffed in.
//!
//! The workspace enables serde_json's `preserve_order`, so objects keep insertion order; canonical form rebuilds
//! every object with its keys sorted, which makes `{"a":1,"b":2}` and `{"b":2,"a":1}` the same request.

use serde_json::{Map, Number, Value};

/// Largest integer an f64 holds exactly (2^53); beyond it an integral float is left as a float.
const MAX_EXACT_F64_INT: f64 = 9_007_199_254_740_992.0;

/// Sorts object keys at every depth and writes integral floats as integers (`800.0` → `800`, `-0.0` → `0`), so
/// that two clients serializing the same numbers differently still match.
pub(crate) fn canonicalize(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonicalize(v)))
                    .collect::<Map<_, _>>(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonicalize).collect()),
        Value::Number(n) => Value::Number(canonical_number(n)),
        other => other,
    }
}

/// Whether `canonicalize` would leave the value unchanged (checked without allocating: cassettes written by this
/// crate are canonical already, and loading 10 000 of them should not rebuild every map).
pub(crate) fn is_canonical(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.keys().zip(map.keys().skip(1)).all(|(a, b)| a < b) && map.values().all(is_canonical),
        Value::Array(items) => items.iter().all(is_canonical),
        Value::Number(n) => canonical_number(n.clone()) == *n,
        _ => true,
    }
}

fn canonical_number(n: Number) -> Number {
    match n.as_f64() {
        Some(f) if !n.is_i64() && !n.is_u64() && f.is_finite() && f.fract() == 0.0 && f.abs() <= MAX_EXACT_F64_INT => {
            // The cast is exact: f is integral and within ±2^53.
            Number::from(f as i64)
        }
        _ => n,
    }
}

/// Removes ignored fields: a bare name at any depth, a JSON pointer (`/a/0/b`) at that place only.
pub(crate) fn strip_ignored(value: &mut Value, ignored: &[String]) {
    if ignored.is_empty() {
        return;
    }
    let (pointers, names): (Vec<&String>, Vec<&String>) = ignored.iter().partition(|f| f.starts_with('/'));
    for p in pointers {
        remove_pointer(value, p);
    }
    if !names.is_empty() {
        strip_names(value, &names);
    }
}

fn strip_names(value: &mut Value, names: &[&String]) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !names.contains(&k));
            map.values_mut().for_each(|v| strip_names(v, names));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| strip_names(v, names)),
        _ => {}
    }
}

fn remove_pointer(value: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    match value.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.shift_remove(&last);
        }
        Some(Value::Array(items)) => {
            if let Ok(i) = last.parse::<usize>() {
                if i < items.len() {
                    items.remove(i);
                }
            }
        }
        _ => {}
    }
}

/// Flattens a JSON value into `(field, compact JSON)` leaves named like `body.studies[0].name`, for miss reports.
pub(crate) fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        leaf => out.push((prefix.to_owned(), leaf.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_and_normalizes_numbers() {
        let v: Value = serde_json::from_str(r#"{"b":800.0,"a":{"z":1,"y":[{"d":-0.0,"c":1.5}]}}"#).unwrap();
        assert_eq!(
            canonicalize(v).to_string(),
            r#"{"a":{"y":[{"c":1.5,"d":0}],"z":1},"b":800}"#
        );
    }

    #[test]
    fn is_canonical_agrees_with_canonicalize() {
        for text in [
            r#"{"a":1,"b":[{"c":2}]}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"a":[{"d":1,"c":2}]}"#,
            r#"{"w":800.0}"#,
            "[1.5]",
        ] {
            let v: Value = serde_json::from_str(text).unwrap();
            // With preserve_order, equal text means equal key order too.
            let (canonical, original) = (canonicalize(v.clone()).to_string(), v.to_string());
            assert_eq!(is_canonical(&v), canonical == original, "{text}");
        }
    }

    #[test]
    fn strips_names_and_pointers() {
        let mut v = json!({"timezone": "UTC", "studies": [{"name": "RSI", "timezone": 1}, {"name": "MACD"}]});
        strip_ignored(&mut v, &["timezone".into(), "/studies/1".into()]);
        assert_eq!(v, json!({"studies": [{"name": "RSI"}]}));
    }

    #[test]
    fn flattens_with_paths() {
        let mut out = Vec::new();
        flatten("body", &json!({"a": [1, {"b": "x"}], "e": {}}), &mut out);
        assert_eq!(
            out,
            vec![
                ("body.a[0]".to_owned(), "1".to_owned()),
                ("body.a[1].b".to_owned(), "\"x\"".to_owned()),
                ("body.e".to_owned(), "{}".to_owned())
            ]
        );
    }
}
