//! The Chart-IMG API as an OpenAPI 3.1 document, generated from this crate's facts: the routes ([`routes`]), the
//! request bodies with the enums, ranges and defaults of the catalogue (every study and drawing with its inputs),
//! every documented error body per status, and the plans' limits in the descriptions.
//!
//! No public OpenAPI document of Chart-IMG exists; this one says what `chart-img-api.md` says, no more. The file
//! `chart-img-spec/openapi.json` is [`document`] pretty-printed (a test fails when they differ), and mock-chart-img
//! serves it at `/__admin/chart-img-openapi.json`.
//!
//! ```
//! let doc = chart_img_spec::openapi::document();
//! assert_eq!(doc["openapi"], "3.1.0");
//! let body = &doc["components"]["schemas"]["AdvancedChartRequest"]["properties"];
//! assert_eq!(body["interval"]["enum"].as_array().unwrap().len(), chart_img_spec::INTERVALS.len());
//! assert_eq!(body["width"]["maximum"], 2048);
//! ```

use serde_json::{json, Map, Value};

use crate::{
    catalog::{self, defaults, InputType},
    errors::messages,
    plan::Plan,
    routes,
};

/// The version of this document (bumped when what it says changes, not with the crate).
pub const DOCUMENT_VERSION: &str = "2025-11-26";

/// The document, as a JSON value (keys in a stable order).
pub fn document() -> Value {
    let largest = Plan::ALL.iter().map(|p| p.limits()).fold((0, 0, 0), |(w, h, n), l| {
        (w.max(l.max_width), h.max(l.max_height), n.max(l.max_params))
    });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Chart-IMG API",
            "version": DOCUMENT_VERSION,
            "description": info_description(),
        },
        "servers": [{ "url": "https://api.chart-img.com" }],
        "tags": [
            { "name": "v2", "description": "TradingView charts (advanced and layout), as images or stored." },
            { "name": "v3", "description": "Exchanges and their symbols." }
        ],
        "paths": {
            routes::ADVANCED_CHART: { "post": chart_operation(false, false) },
            routes::ADVANCED_CHART_STORAGE: { "post": chart_operation(false, true) },
            routes::LAYOUT_CHART: { "post": chart_operation(true, false) },
            routes::LAYOUT_CHART_STORAGE: { "post": chart_operation(true, true) },
            routes::EXCHANGE_LIST: { "get": exchange_list() },
            routes::EXCHANGE_SYMBOLS: { "get": exchange_symbols() },
        },
        "components": {
            "securitySchemes": {
                "apiKey": { "type": "apiKey", "in": "header", "name": "x-api-key",
                    "description": "The account's API key. A missing, unknown or inactive key answers 403 Forbidden." },
                "apiKeyQuery": { "type": "apiKey", "in": "query", "name": "key",
                    "description": "The key as `?key=`: documented for GET on v3; some clients send it on v2 too (uncertain there)." }
            },
            "schemas": schemas(largest),
        }
    })
}

/// The document as the committed file holds it: pretty JSON, two-space indent, trailing newline.
pub fn document_text() -> String {
    let mut s = serde_json::to_string_pretty(&document()).expect("a JSON value serializes");
    s.push('\n');
    s
}

fn plan_table() -> String {
    let mut t = String::from(
        "| plan | req/s | burst | per day | max W×H | studies+drawings | CHART-IMG watermark | custom watermark | storage kept |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in Plan::ALL {
        let l = p.limits();
        let yes = |b: bool| if b { "yes" } else { "no" };
        t.push_str(&format!(
            "| {} | {} | {} | {} | {}×{} | {} | {} | {} | {} days |\n",
            p.name(),
            l.rate_per_sec,
            l.burst,
            l.daily_limit,
            l.max_width,
            l.max_height,
            l.max_params,
            yes(l.chart_img_watermark),
            yes(l.custom_watermark),
            l.storage_days
        ));
    }
    t
}

fn info_description() -> String {
    format!(
        "Chart-IMG renders TradingView charts as images. This document is generated from the `chart-img-spec` crate \
         (the project's record of what the real API does, `chart-img-api.md`); Chart-IMG publishes no OpenAPI \
         document of its own. Unknown body keys are ignored by the API. Numbers are read as express-validator reads \
         them: `800`, `800.0` and `\"800\"` are accepted for an integer field.\n\n\
         Checks run in this order: key (403) → per-second throttle (429 Too Many Requests) → daily quota (429 Limit \
         Exceeded) → body (400) → fields (422, an array with one entry per bad field) → plan limits (403) → semantic \
         checks (422 Invalid Symbol / Invalid Interval).\n\n\
         Limits per plan (account):\n\n{}",
        plan_table()
    )
}

fn message_schema(summary: &str, allowed: &[&str], patterns: &[String]) -> Value {
    let mut any: Vec<Value> = allowed.iter().map(|m| json!({ "const": m })).collect();
    any.extend(patterns.iter().map(|p| json!({ "pattern": p })));
    json!({
        "description": summary,
        "type": "object",
        "required": ["message"],
        "properties": { "message": { "type": "string", "anyOf": any } }
    })
}

fn json_error(description: &str, schema_ref: &str, example: Value) -> Value {
    json!({
        "description": description,
        "content": { "application/json": {
            "schema": { "$ref": format!("#/components/schemas/{schema_ref}") },
            "example": example
        } }
    })
}

fn limits_text(f: impl Fn(&crate::PlanLimits) -> String) -> String {
    Plan::ALL
        .iter()
        .map(|p| format!("{} {}", p.name(), f(&p.limits())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The documented error answers of a chart route.
fn chart_errors(layout: bool) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert(
        "400".into(),
        json_error(
            "The content type is not `application/json`, the JSON is invalid, or it is not an object (body inferred).",
            "BadRequest",
            json!({ "message": messages::BAD_REQUEST }),
        ),
    );
    r.insert(
        "401".into(),
        json_error(
            "Invalid request.",
            "InvalidRequest",
            json!({ "message": messages::INVALID_REQUEST }),
        ),
    );
    r.insert(
        "403".into(),
        json_error(
            &format!(
                "A missing, unknown or inactive key (`Forbidden`); a size over the plan's (`Exceed Max Usage Resolution \
                 Limit (WxH)`: {}); more studies+drawings than the plan allows (`Exceed Max Usage Parameter Limit (N)`: \
                 {}){}.",
                limits_text(|l| format!("{}x{}", l.max_width, l.max_height)),
                limits_text(|l| l.max_params.to_string()),
                if layout {
                    "; a layout that is not shared, without a session (`Layout Forbidden`)"
                } else {
                    ""
                }
            ),
            "Forbidden",
            json!({ "message": "Exceed Max Usage Resolution Limit (800x600)" }),
        ),
    );
    if layout {
        r.insert(
            "404".into(),
            json_error(
                "No layout with that id.",
                "RouteNotFound",
                json!({ "message": messages::ROUTE_NOT_FOUND }),
            ),
        );
    }
    r.insert(
        "409".into(),
        json_error(
            "The TradingView session is stale (transient; inferred for the advanced-chart routes).",
            "SessionDisconnected",
            json!({ "message": messages::SESSION_DISCONNECTED }),
        ),
    );
    r.insert(
        "422".into(),
        json!({
            "description": "Field validation (an array, one entry per bad field, in body order), or a semantic \
                            refusal (an object): the exchange does not have that symbol or interval.",
            "content": { "application/json": {
                "schema": { "oneOf": [
                    { "$ref": "#/components/schemas/FieldErrors" },
                    { "$ref": "#/components/schemas/Unprocessable" }
                ] },
                "examples": {
                    "fields": { "value": [{ "value": "4H", "msg": "must be a supported interval", "param": "interval", "location": "body" }] },
                    "symbol": { "value": { "message": messages::INVALID_SYMBOL } }
                }
            } }
        }),
    );
    r.insert(
        "429".into(),
        json_error(
            &format!(
                "`Too Many Requests`: over the plan's rate (per second, burst: {}), retry after a short backoff. \
                 `Limit Exceeded`: the daily quota is used up ({} per UTC day), do not retry this account today.",
                limits_text(|l| format!("{}/s burst {}", l.rate_per_sec, l.burst)),
                limits_text(|l| l.daily_limit.to_string())
            ),
            "TooManyRequests",
            json!({ "message": messages::LIMIT_EXCEEDED }),
        ),
    );
    r.insert(
        "500".into(),
        json_error(
            "Something went wrong.",
            "ServerError",
            json!({ "message": messages::SOMETHING_WENT_WRONG }),
        ),
    );
    r.insert(
        "504".into(),
        json_error(
            "The gateway's integration timeout (about 29 s) or the renderer's own timeout.",
            "Timeout",
            json!({ "message": messages::ENDPOINT_TIMED_OUT }),
        ),
    );
    r
}

fn session_headers() -> Vec<Value> {
    ["tradingview-session-id", "tradingview-session-id-sign"]
        .iter()
        .map(|h| {
            json!({
                "name": h, "in": "header", "required": false,
                "description": "With `tradingview-session-id` and `tradingview-session-id-sign` together (both or neither), the chart uses your own TradingView subscription data.",
                "schema": { "type": "string" }
            })
        })
        .collect()
}

fn chart_operation(layout: bool, storage: bool) -> Value {
    let (summary, id, body_ref) = match (layout, storage) {
        (false, false) => ("An advanced chart as an image", "advancedChart", "AdvancedChartRequest"),
        (false, true) => (
            "An advanced chart, stored; answers its URL",
            "advancedChartStorage",
            "AdvancedChartRequest",
        ),
        (true, false) => (
            "A saved TradingView layout as an image",
            "layoutChart",
            "LayoutChartRequest",
        ),
        (true, true) => (
            "A saved TradingView layout, stored; answers its URL",
            "layoutChartStorage",
            "LayoutChartRequest",
        ),
    };
    let mut parameters = Vec::new();
    if layout {
        parameters.push(json!({
            "name": "layoutId", "in": "path", "required": true,
            "description": "The id of a saved TradingView layout (shared, or reachable with the session headers).",
            "schema": { "type": "string", "minLength": 1 }, "example": "x3rvPm1q"
        }));
    }
    parameters.extend(session_headers());
    let ok = if storage {
        json!({
            "description": format!("Stored: the image stays downloadable at `url` until `expire` (now plus the plan's \
                                    storage period: {}).", limits_text(|l| format!("{} days", l.storage_days))),
            "content": { "application/json": {
                "schema": { "$ref": if layout { "#/components/schemas/LayoutStored" } else { "#/components/schemas/Stored" } }
            } }
        })
    } else {
        json!({
            "description": "The image: PNG, or JPEG for `format: jpeg`. On BASIC every image carries the CHART-IMG watermark.",
            "content": {
                "image/png": { "schema": { "type": "string", "contentMediaType": "image/png" } },
                "image/jpeg": { "schema": { "type": "string", "contentMediaType": "image/jpeg" } }
            }
        })
    };
    let mut responses = Map::new();
    responses.insert("200".into(), ok);
    responses.extend(chart_errors(layout));
    json!({
        "tags": ["v2"],
        "operationId": id,
        "summary": summary,
        "description": if layout {
            "A layout has its own symbol, interval, style and studies; the body may change the shared fields and zoom \
             or move it. Keys a layout does not have (`theme`, `style`, `studies`, …) are ignored. The docs ask for a \
             client timeout of at least 60 s."
        } else {
            "The body is optional: no body renders the default chart (BINANCE:BTCUSDT, 1D, 800×600 PNG). A chart \
             takes seconds: about 4 s at 800×600, 5–10 s for large charts with many studies."
        },
        "security": [{ "apiKey": [] }, { "apiKeyQuery": [] }],
        "parameters": parameters,
        "requestBody": {
            "required": false,
            "content": { "application/json": {
                "schema": { "$ref": format!("#/components/schemas/{body_ref}") },
                "example": if layout {
                    json!({ "interval": "4h", "width": 1280, "height": 720, "zoomIn": 2 })
                } else {
                    json!({ "symbol": "BINANCE:BTCUSDT", "interval": "4h", "width": 800, "height": 600, "theme": "dark",
                            "studies": [{ "name": "Volume", "forceOverlay": true }, { "name": "Relative Strength Index" }] })
                }
            } }
        },
        "responses": responses,
    })
}

fn v3_errors() -> Map<String, Value> {
    let mut r = Map::new();
    r.insert(
        "403".into(),
        json_error(
            "A missing, unknown or inactive key.",
            "Forbidden",
            json!({ "message": messages::FORBIDDEN }),
        ),
    );
    r.insert(
        "429".into(),
        json_error(
            "Over the plan's rate, or the daily quota is used up.",
            "TooManyRequests",
            json!({ "message": messages::TOO_MANY_REQUESTS }),
        ),
    );
    r.insert(
        "500".into(),
        json_error(
            "Something went wrong.",
            "ServerError",
            json!({ "message": messages::SOMETHING_WENT_WRONG }),
        ),
    );
    r
}

fn exchange_list() -> Value {
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({
            "description": "The exchange ids.",
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ExchangeList" } } }
        }),
    );
    responses.extend(v3_errors());
    json!({
        "tags": ["v3"],
        "operationId": "exchangeList",
        "summary": "The exchanges",
        "security": [{ "apiKey": [] }, { "apiKeyQuery": [] }],
        "responses": responses,
    })
}

fn exchange_symbols() -> Value {
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({
            "description": "The exchange's symbols, filtered by `symbol` and `type`.",
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ExchangeSymbols" } } }
        }),
    );
    responses.insert(
        "404".into(),
        json_error(
            "No exchange with that id (inferred).",
            "RouteNotFound",
            json!({ "message": messages::ROUTE_NOT_FOUND }),
        ),
    );
    responses.extend(v3_errors());
    json!({
        "tags": ["v3"],
        "operationId": "exchangeSymbols",
        "summary": "The symbols of one exchange",
        "security": [{ "apiKey": [] }, { "apiKeyQuery": [] }],
        "parameters": [
            { "name": "exchangeId", "in": "path", "required": true,
              "description": "An exchange id, case-insensitive in practice (`binance`).",
              "schema": { "type": "string", "minLength": 1 }, "example": "BINANCE" },
            { "name": "symbol", "in": "query", "required": false, "description": "Part of a symbol or its description.",
              "schema": { "type": "string" } },
            { "name": "type", "in": "query", "required": false, "description": "`spot`, `stock`, `futures`, …",
              "schema": { "type": "string" } }
        ],
        "responses": responses,
    })
}

fn enum_of(values: &[&str]) -> Value {
    json!(values)
}

fn input_schema(
    kind: InputType,
    min: Option<f64>,
    max: Option<f64>,
    one_of: &[String],
    default: Option<&Value>,
) -> Value {
    let mut s = match kind {
        InputType::Integer => json!({ "type": "integer" }),
        InputType::Float => json!({ "type": "number" }),
        InputType::Boolean => json!({ "type": "boolean" }),
        InputType::String if one_of.is_empty() => json!({ "type": "string" }),
        InputType::String => json!({ "type": "string", "enum": one_of }),
        InputType::Datetime => json!({ "type": "string", "format": "date-time" }),
    };
    let number = |f: f64| {
        if f.fract() == 0.0 && f.abs() < 9.0e15 {
            json!(f as i64)
        } else {
            json!(f)
        }
    };
    if matches!(kind, InputType::Integer | InputType::Float) {
        if let Some(m) = min {
            s["minimum"] = number(m);
        }
        if let Some(m) = max {
            s["maximum"] = number(m);
        }
    }
    if let Some(d) = default.filter(|d| !d.is_null()) {
        s["default"] = d.clone();
    }
    s
}

fn study_schemas() -> Vec<Value> {
    catalog::studies()
        .iter()
        .map(|s| {
            let mut inputs = Map::new();
            for i in &s.inputs {
                let mut schema = input_schema(i.kind, i.min, i.max, &i.one_of, Some(&i.default));
                if !i.label.is_empty() {
                    schema["description"] = json!(i.label);
                }
                inputs.insert(i.key.clone(), schema);
            }
            json!({
                "type": "object",
                "title": s.name,
                "description": format!("Draws {} by default.", match s.placement {
                    catalog::Placement::Overlay => "on the price pane",
                    catalog::Placement::Pane => "in a pane of its own",
                }),
                "required": ["name"],
                "properties": {
                    "name": { "const": s.name },
                    "forceOverlay": { "type": "boolean", "description": "Draw on the price pane." },
                    "input": { "type": "object", "properties": inputs },
                    "override": { "type": "object" }
                }
            })
        })
        .collect()
}

fn drawing_schemas() -> Vec<Value> {
    catalog::drawings()
        .iter()
        .map(|d| {
            let mut inputs = Map::new();
            let mut required = Vec::new();
            for i in &d.inputs {
                inputs.insert(i.key.clone(), input_schema(i.kind, None, None, &[], i.default.as_ref()));
                if i.required {
                    required.push(i.key.clone());
                }
            }
            let mut overrides = Map::new();
            for o in &d.overrides {
                overrides.insert(o.clone(), json!({}));
            }
            json!({
                "type": "object",
                "title": d.name,
                "required": ["name", "input"],
                "properties": {
                    "name": { "const": d.name },
                    "input": { "type": "object", "required": required, "properties": inputs },
                    "override": { "type": "object", "properties": overrides },
                    "zOrder": { "enum": enum_of(catalog::Z_ORDERS) }
                }
            })
        })
        .collect()
}

fn shared_chart_properties(largest: (u32, u32, u32)) -> Map<String, Value> {
    let (max_w, max_h, _) = largest;
    let mut p = Map::new();
    p.insert(
        "symbol".into(),
        json!({
            "type": "string",
            "default": defaults::SYMBOL,
            "description": format!("`EXCHANGE:SYMBOL`, or a formula of such symbols (`BINANCE:BTCUSDT/BINANCE:ETHUSDT`). \
                                    {} exchanges are documented for v2; an unknown one, or a symbol the exchange does \
                                    not have, answers 422 Invalid Symbol.",
                                   catalog::exchanges().iter().filter(|e| e.v2).count()),
            "example": defaults::SYMBOL
        }),
    );
    p.insert(
        "interval".into(),
        json!({ "enum": enum_of(catalog::INTERVALS), "default": defaults::INTERVAL, "description": "Case-sensitive." }),
    );
    p.insert(
        "width".into(),
        json!({
            "type": "integer", "minimum": defaults::MIN_WIDTH, "maximum": max_w, "default": defaults::WIDTH,
            "description": format!("Pixels. The plan's maximum (403 above it): {}.",
                                   limits_text(|l| l.max_width.to_string()))
        }),
    );
    p.insert(
        "height".into(),
        json!({
            "type": "integer", "minimum": defaults::MIN_HEIGHT, "maximum": max_h, "default": defaults::HEIGHT,
            "description": format!("Pixels. The plan's maximum (403 above it): {}.",
                                   limits_text(|l| l.max_height.to_string()))
        }),
    );
    p.insert(
        "format".into(),
        json!({ "enum": enum_of(catalog::FORMATS), "default": defaults::FORMAT }),
    );
    p.insert(
        "watermark".into(),
        json!({ "type": "string", "description": format!("A custom watermark text, drawn on {} only.",
            Plan::ALL.iter().filter(|p| p.limits().custom_watermark).map(|p| p.name()).collect::<Vec<_>>().join(" and ")) }),
    );
    p.insert(
        "watermarkSize".into(),
        json!({ "enum": catalog::WATERMARK_SIZES, "default": defaults::WATERMARK_SIZE }),
    );
    p.insert(
        "watermarkOpacity".into(),
        json!({ "type": "number", "minimum": 0.1, "maximum": 1.0, "default": defaults::WATERMARK_OPACITY }),
    );
    p
}

fn schemas(largest: (u32, u32, u32)) -> Value {
    let max_params = largest.2;
    let mut advanced = shared_chart_properties(largest);
    let mut add = |k: &str, v: Value| {
        advanced.insert(k.into(), v);
    };
    add(
        "style",
        json!({ "enum": enum_of(catalog::STYLES), "default": defaults::STYLE }),
    );
    add(
        "theme",
        json!({ "enum": enum_of(catalog::THEMES), "default": defaults::THEME }),
    );
    add(
        "scale",
        json!({ "enum": enum_of(catalog::SCALES), "default": defaults::SCALE }),
    );
    add(
        "session",
        json!({ "enum": enum_of(catalog::SESSIONS), "default": defaults::SESSION }),
    );
    add(
        "timezone",
        json!({ "enum": catalog::timezones(), "default": defaults::TIMEZONE, "description": "A fixed list, not any IANA name." }),
    );
    add(
        "range",
        json!({
            "description": "Overrides `interval`; about 1,000 bars at most.",
            "oneOf": [
                { "enum": enum_of(catalog::RANGES) },
                { "type": "object", "required": ["from", "to"], "properties": {
                    "from": { "type": "string", "format": "date-time" },
                    "to": { "type": "string", "format": "date-time", "description": "After `from`." }
                } }
            ]
        }),
    );
    add(
        "studies",
        json!({
            "type": "array", "maxItems": max_params,
            "description": format!("Studies + drawings at most: {}.", limits_text(|l| l.max_params.to_string())),
            "items": { "$ref": "#/components/schemas/Study" }
        }),
    );
    add(
        "drawings",
        json!({ "type": "array", "maxItems": max_params, "items": { "$ref": "#/components/schemas/Drawing" } }),
    );
    add(
        "override",
        json!({
            "type": "object",
            "description": "Chart options: per-style colours, price range, pane height, font size, `show…` booleans.",
            "properties": {
                "mainPaneHeight": { "type": "integer", "minimum": 100, "maximum": 1800 },
                "scalesFontSize": { "type": "integer", "minimum": 10, "maximum": 50 },
                "priceRange": { "type": "object", "properties": {
                    "from": { "type": "number" }, "to": { "type": "number" },
                    "margin": { "type": "number", "minimum": 0.001, "maximum": 0.1 }
                } }
            },
            "patternProperties": { "^show": { "type": "boolean" } }
        }),
    );
    add("shiftLeft", json!({ "type": "integer", "minimum": 1, "maximum": 1000 }));
    add(
        "shiftRight",
        json!({ "type": "integer", "minimum": 1, "maximum": 1000 }),
    );

    let mut layout = shared_chart_properties(largest);
    layout.insert(
        "symbol".into(),
        json!({ "type": "string", "description": "Default: the layout's own." }),
    );
    layout.insert(
        "interval".into(),
        json!({ "enum": enum_of(catalog::INTERVALS), "description": "Default: the layout's own." }),
    );
    layout.insert("resetZoom".into(), json!({ "type": "boolean" }));
    for (k, max) in [("zoomIn", 25), ("zoomOut", 25), ("moveLeft", 50), ("moveRight", 50)] {
        layout.insert(k.into(), json!({ "type": "integer", "minimum": 1, "maximum": max }));
    }

    let error = |summary: &str, allowed: &[&str]| message_schema(summary, allowed, &[]);
    let re = |s: &str| {
        s.chars().fold(String::new(), |mut out, c| {
            if "\\^$.|?*+()[]{}".contains(c) {
                out.push('\\');
            }
            out.push(c);
            out
        })
    };
    json!({
        "AdvancedChartRequest": { "type": "object", "properties": advanced },
        "LayoutChartRequest": { "type": "object", "properties": layout },
        "Study": {
            "description": format!("One of the {} supported studies, with its documented inputs.", catalog::studies().len()),
            "oneOf": study_schemas()
        },
        "Drawing": {
            "description": format!("One of the {} supported drawings, with its required inputs.", catalog::drawings().len()),
            "oneOf": drawing_schemas()
        },
        "Stored": {
            "type": "object", "required": ["url", "etag", "expire"],
            "properties": {
                "url": { "type": "string", "format": "uri" },
                "etag": { "type": "string", "pattern": "^[0-9a-f]{32}$" },
                "expire": { "type": "string", "format": "date-time" }
            }
        },
        "LayoutStored": {
            "type": "object", "required": ["url", "etag", "size", "expire"],
            "properties": {
                "url": { "type": "string", "format": "uri" },
                "etag": { "type": "string", "pattern": "^[0-9a-f]{32}$" },
                "size": { "type": "integer", "minimum": 0 },
                "expire": { "type": "string", "format": "date-time" }
            }
        },
        "ExchangeList": {
            "type": "object", "required": ["updatedAt", "payload"],
            "properties": {
                "updatedAt": { "type": ["string", "null"] },
                "payload": { "type": ["array", "null"], "items": { "type": "string" } }
            }
        },
        "ExchangeSymbols": {
            "type": "object", "required": ["updatedAt", "payload"],
            "properties": {
                "updatedAt": { "type": ["string", "null"] },
                "payload": { "type": ["array", "null"], "items": {
                    "type": "object", "required": ["symbol"],
                    "properties": {
                        "symbol": { "type": "string" }, "description": { "type": "string" }, "type": { "type": "string" },
                        "exchange": { "type": "string" }, "currency_code": { "type": ["string", "null"] },
                        "currency-logoid": { "type": "string" }, "base-currency-logoid": { "type": "string" },
                        "provider_id": { "type": "string" },
                        "source2": { "type": "object", "properties": {
                            "id": { "type": "string" }, "name": { "type": "string" }, "description": { "type": "string" }
                        } },
                        "source_id": { "type": "string" },
                        "typespecs": { "type": "array", "items": { "type": "string" } }
                    }
                } }
            }
        },
        "FieldErrors": {
            "description": "express-validator's array: one entry per bad field, in body order.",
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "required": ["value", "msg", "param", "location"],
                "properties": {
                    "value": { "description": "The value as sent (`null` when missing)." },
                    "msg": { "type": "string" },
                    "param": { "type": "string", "description": "The field path, e.g. `studies[0].input.in_1`." },
                    "location": { "const": "body" }
                }
            }
        },
        "BadRequest": error("400 body (inferred).", &[messages::BAD_REQUEST]),
        "InvalidRequest": error("401 body.", &[messages::INVALID_REQUEST]),
        "Forbidden": message_schema("403 bodies.", &[messages::FORBIDDEN, messages::LAYOUT_FORBIDDEN], &[
            format!("^{}\\([0-9]+x[0-9]+\\)$", re("Exceed Max Usage Resolution Limit ")),
            format!("^{}\\([0-9]+\\)$", re("Exceed Max Usage Parameter Limit ")),
        ]),
        "RouteNotFound": error("404 body.", &[messages::ROUTE_NOT_FOUND]),
        "SessionDisconnected": error("409 body.", &[messages::SESSION_DISCONNECTED]),
        "Unprocessable": error("422 object bodies (semantic validation).",
            &[messages::INVALID_SYMBOL, messages::INVALID_INTERVAL, messages::INVALID_REQUEST]),
        "TooManyRequests": error("429 bodies.", &[messages::TOO_MANY_REQUESTS, messages::LIMIT_EXCEEDED]),
        "ServerError": error("500 body.", &[messages::SOMETHING_WENT_WRONG]),
        "Timeout": error("504 bodies.", &[messages::ENDPOINT_TIMED_OUT, messages::EXTERNAL_TIMEOUT]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_entry_and_plan_reaches_the_document() {
        let doc = document();
        let s = &doc["components"]["schemas"];
        assert_eq!(s["Study"]["oneOf"].as_array().unwrap().len(), catalog::studies().len());
        assert_eq!(
            s["Drawing"]["oneOf"].as_array().unwrap().len(),
            catalog::drawings().len()
        );
        let bb = s["Study"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["title"] == "Bollinger Bands %B")
            .unwrap();
        assert_eq!(bb["properties"]["input"]["properties"]["in_1"]["minimum"], 0.001);
        assert_eq!(bb["properties"]["input"]["properties"]["in_1"]["maximum"], 50);
        let text = document_text();
        for p in Plan::ALL {
            assert!(
                text.contains(&format!("| {} |", p.name())),
                "plan {p} missing from the description"
            );
        }
        for status in ["400", "401", "403", "404", "409", "422", "429", "500", "504"] {
            assert!(
                doc["paths"][routes::LAYOUT_CHART]["post"]["responses"][status].is_object(),
                "{status}"
            );
        }
        let text_line = s["Drawing"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["title"] == "Text")
            .unwrap();
        assert_eq!(
            text_line["properties"]["input"]["required"],
            json!(["datetime", "price", "text"])
        );
    }
}
