//! Request parameters held to the OpenAPI document: the document (`openapi.json`) is the
//! one place a parameter's type, bounds and default are written, and this middleware
//! reads them from it, so the two cannot drift.
//!
//! ```text
//! request ──auth──> validate: the matched route's documented parameters (path, query)
//!   ──any value outside its schema──> 400 {"error": "…"}     ──else──> handler
//! ```
//! Supported schemas are what the document uses: `integer` (`format: int64`, optional
//! `minimum`/`maximum`) and `string`. A documented parameter of another type fails
//! [`SPEC`]'s parsing, which a test runs.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::{MatchedPath, Query, RawPathParams, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::routes::Failure;

/// A parameter's schema, as far as validation needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Schema {
    Integer { min: Option<i64>, max: Option<i64> },
    String,
}

#[derive(Debug, Clone)]
pub(crate) struct Param {
    pub name: String,
    /// `path` or `query`.
    pub place: String,
    pub required: bool,
    pub schema: Schema,
    pub default: Option<Value>,
}

/// Every operation's parameters, by (lower-case method, path template).
pub(crate) struct Spec(HashMap<(String, String), Vec<Param>>);

/// The parsed document; a malformed parameter is a bug of this crate, found by the tests.
pub(crate) static SPEC: LazyLock<Spec> =
    LazyLock::new(|| Spec::parse(crate::openapi::OPENAPI_JSON).expect("openapi.json parameters"));

impl Spec {
    pub(crate) fn parse(document: &str) -> Result<Spec, String> {
        let doc: Value = serde_json::from_str(document).map_err(|e| e.to_string())?;
        let mut ops = HashMap::new();
        let paths = doc["paths"].as_object().ok_or("no paths")?;
        for (path, item) in paths {
            for (method, op) in item.as_object().ok_or("a path item is not an object")? {
                let mut params = vec![];
                for p in op["parameters"].as_array().into_iter().flatten() {
                    params.push(Param::parse(p).map_err(|e| format!("{method} {path}: {e}"))?);
                }
                ops.insert((method.clone(), path.clone()), params);
            }
        }
        Ok(Spec(ops))
    }

    pub(crate) fn params(&self, method: &str, path: &str) -> &[Param] {
        self.0
            .get(&(method.to_ascii_lowercase(), path.to_string()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The documented default of an integer query parameter.
    pub(crate) fn default_int(&self, method: &str, path: &str, name: &str) -> Option<i64> {
        self.params(method, path)
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.default.as_ref())
            .and_then(Value::as_i64)
    }
}

impl Param {
    fn parse(p: &Value) -> Result<Param, String> {
        let name = p["name"].as_str().ok_or("a parameter without a name")?;
        let place = p["in"].as_str().ok_or("a parameter without `in`")?;
        if place != "path" && place != "query" {
            return Err(format!("{name}: parameters in {place} are not validated"));
        }
        let s = &p["schema"];
        let bound = |key: &str| match &s[key] {
            Value::Null => Ok(None),
            v => v
                .as_i64()
                .map(Some)
                .ok_or(format!("{name}: {key} is not an integer")),
        };
        let schema = match s["type"].as_str() {
            Some("integer") => Schema::Integer {
                min: bound("minimum")?,
                max: bound("maximum")?,
            },
            Some("string") => Schema::String,
            other => return Err(format!("{name}: type {other:?} is not supported")),
        };
        Ok(Param {
            name: name.into(),
            place: place.into(),
            required: p["required"].as_bool().unwrap_or(false),
            schema,
            default: s.get("default").cloned(),
        })
    }

    /// `value` against the schema; the error names the parameter and what it must be.
    pub(crate) fn check(&self, value: &str) -> Result<(), String> {
        let Schema::Integer { min, max } = self.schema else {
            return Ok(());
        };
        let bounds = match (min, max) {
            (Some(lo), Some(hi)) => format!(" from {lo} to {hi}"),
            (Some(lo), None) => format!(" of at least {lo}"),
            (None, Some(hi)) => format!(" of at most {hi}"),
            (None, None) => String::new(),
        };
        let wrong = || {
            format!(
                "{} `{}` must be an integer{bounds}, not {value:?}",
                self.place, self.name
            )
        };
        let n: i64 = value.parse().map_err(|_| wrong())?;
        if min.is_some_and(|lo| n < lo) || max.is_some_and(|hi| n > hi) {
            return Err(wrong());
        }
        Ok(())
    }
}

/// The middleware: every documented parameter of the matched route is checked before
/// the handler runs.
pub(crate) async fn validate(
    matched: MatchedPath,
    raw_path: RawPathParams,
    request: Request,
    next: Next,
) -> Response {
    match check_request(&matched, &raw_path, &request) {
        Ok(()) => next.run(request).await,
        Err(why) => Failure(StatusCode::BAD_REQUEST, why).into_response(),
    }
}

fn check_request(
    matched: &MatchedPath,
    raw_path: &RawPathParams,
    request: &Request,
) -> Result<(), String> {
    let params = SPEC.params(request.method().as_str(), matched.as_str());
    let has_query_params = params.iter().any(|p| p.place == "query");
    let query: Vec<(String, String)> = match request.uri().query() {
        Some(_) if has_query_params => {
            Query::<Vec<(String, String)>>::try_from_uri(request.uri())
                .map_err(|e| format!("malformed query: {}", e.body_text()))?
                .0
        }
        _ => vec![],
    };
    for p in params {
        let given: Vec<&str> = if p.place == "path" {
            raw_path
                .iter()
                .filter(|(k, _)| *k == p.name)
                .map(|(_, v)| v)
                .collect()
        } else {
            query
                .iter()
                .filter(|(k, _)| *k == p.name)
                .map(|(_, v)| v.as_str())
                .collect()
        };
        match given.as_slice() {
            [] if p.required => return Err(format!("{} `{}` is required", p.place, p.name)),
            [] => {}
            [value] => p.check(value)?,
            _ => return Err(format!("{} `{}` is given more than once", p.place, p.name)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_parameter_is_understood() {
        let spec = Spec::parse(crate::openapi::OPENAPI_JSON).unwrap();
        let limit = spec
            .params("get", "/api/v1/jobs")
            .iter()
            .find(|p| p.name == "limit")
            .unwrap();
        assert_eq!(
            limit.schema,
            Schema::Integer {
                min: Some(0),
                max: Some(1000)
            }
        );
        assert!(limit.check("1000").is_ok());
        assert!(limit.check("1001").unwrap_err().contains("from 0 to 1000"));
        assert!(spec.default_int("get", "/api/v1/jobs", "limit").is_some());
    }
}
