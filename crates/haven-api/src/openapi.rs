//! The OpenAPI 3 document of the API, written by hand next to the routes it describes
//! (`openapi.json`); the tests check that it parses and that it and the router list the
//! same routes.

/// The document served at `/api/v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");
