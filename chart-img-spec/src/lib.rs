//! `chart-img-spec`: the Chart-IMG API's facts, once, for every crate that needs them (the worker checks its
//! requests with them before spending quota; the mock server answers with them).
//!
//! # Layout
//! - [`Plan`] and [`PlanLimits`]: rate, burst, daily quota, max size, max parameters, storage days, watermarks.
//! - The enums of the request body ([`INTERVALS`], [`STYLES`], [`THEMES`], [`SCALES`], [`SESSIONS`], [`FORMATS`],
//!   [`RANGES`], [`Z_ORDERS`], [`WATERMARK_SIZES`], [`defaults`]) and the reference data: [`studies`] with their
//!   inputs and natural [`Placement`] (the documented ones, then the observed `Pivot Points Standard`), [`drawings`]
//!   with their required inputs, [`timezones`], [`exchanges`] with their v2 availability ([`exchange_v3`]: v3 ids
//!   are case-insensitive). The data is embedded from `data/*.json`, the project's copy of
//!   `shared/docs/chart-img-data/` (a test compares the two while that folder exists; `data/studies-observed.json`
//!   is the crate's own), and parsed once.
//! - [`v1`]: API v1, the legacy GET routes: parameters, defaults and minimums, study codes, the v2 body a v1 query
//!   means, the storage answer and the v1 error bodies.
//! - [`V3Symbol`]: the v3 exchange route's symbol object.
//! - The documented error bodies: [`messages`], [`message_body`], [`FieldError`] (the 422 array entry) and
//!   [`Rejection`] (status + exact body).
//! - Reading answers: [`message_of`] (an error body's message) and [`Limit429`] (the daily quota's 429 or the
//!   throttle's); the routes' paths in [`routes`].
//! - [`validate_advanced_chart`]: the one validation of an advanced-chart body, in the API's order
//!   (body → fields → plan → semantic), returning a [`ValidatedChart`] with defaults filled in or the exact
//!   [`Rejection`]; [`validate_layout_chart`] for the layout-chart body; [`read_body`] turns raw request bytes into the JSON the validation takes.
//!
//! - [`openapi`]: the API as an OpenAPI 3.1 document generated from all of the above (committed as
//!   `openapi.json`), with the documented paths from [`routes`].
//!
//! # Invariants
//! - **Each fact once:** no other crate of the workspace lists plans, intervals, study names or error texts.
//! - **Pure:** no I/O, no clock; the same body and plan always give the same answer.
//!
//! # Example
//! ```
//! use chart_img_spec::{validate_advanced_chart, Plan};
//! use serde_json::json;
//!
//! let body = json!({"symbol": "NASDAQ:AAPL", "interval": "4H"});
//! let refused = validate_advanced_chart(&body, &Plan::Pro.limits()).unwrap_err();
//! assert_eq!(refused.status, 422);
//! assert_eq!(refused.field.as_deref(), Some("interval"));
//! assert_eq!(refused.body[0]["msg"], "must be a supported interval");
//! ```

mod answers;
mod catalog;
mod errors;
pub mod openapi;
mod plan;
pub mod routes;
pub mod v1;
mod v3;
mod validate;

pub use answers::{message_of, Limit429};
pub use catalog::{
    defaults, drawing, drawings, exchange, exchange_v3, exchanges, is_timezone, studies, study, timezones, Drawing,
    DrawingInput, Exchange, InputType, Placement, Study, StudyInput, FORMATS, INTERVALS, RANGES, SCALES, SESSIONS,
    STYLES, THEMES, WATERMARK_SIZES, Z_ORDERS,
};
pub use errors::{message_body, messages, FieldError, Rejection};
pub use plan::{Plan, PlanLimits, UnknownPlan};
pub use v3::{V3Source, V3Symbol};
pub use validate::{
    canonical_json, read_body, symbol_is_well_formed, symbol_parts, validate_advanced_chart,
    validate_advanced_chart_with, validate_layout_chart, ChartDrawing, ChartStudy, Options, ValidatedChart,
    WatermarkRule, CHART_IMG_WATERMARK,
};

#[doc(hidden)]
pub mod __data {
    //! The embedded files, for the test that compares them with the shared copy.
    pub use crate::catalog::{DRAWINGS_JSON, EXCHANGES_JSON, STUDIES_JSON, STUDIES_OBSERVED_JSON, TIMEZONES_JSON};
}
