//! Bearer-token authentication, as a middleware in front of the protected routes: a request
//! without the right token never reaches a handler.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::routes::error_body;

/// The expected token, kept as its BLAKE3 digest: `blake3::Hash` compares in constant time
/// and equal-length digests hide the token's length as well.
#[derive(Clone)]
pub(crate) struct Token(Arc<blake3::Hash>);

impl Token {
    /// Surrounding whitespace is not part of a token (on either side: a token file's
    /// trailing newline must not lock everyone out).
    pub(crate) fn new(token: &str) -> Self {
        Token(Arc::new(blake3::hash(token.trim().as_bytes())))
    }

    fn accepts(&self, header: Option<&HeaderValue>) -> Result<(), &'static str> {
        let header = header.ok_or("missing API token")?;
        let value = header
            .to_str()
            .map_err(|_| "malformed Authorization header")?;
        let (scheme, given) = value
            .split_once(' ')
            .ok_or("malformed Authorization header")?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err("the Authorization header must use the Bearer scheme");
        }
        if blake3::hash(given.trim().as_bytes()) == *self.0 {
            Ok(())
        } else {
            Err("wrong API token")
        }
    }
}

pub(crate) async fn require_token(
    State(token): State<Token>,
    request: Request,
    next: Next,
) -> Response {
    match token.accepts(request.headers().get(AUTHORIZATION)) {
        Ok(()) => next.run(request).await,
        Err(why) => {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                error_body(format!(
                    "{why}: send `Authorization: Bearer <token>` with the daemon's \
                     HAVEN_API_TOKEN"
                )),
            )
                .into_response();
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"haven\""),
            );
            response
        }
    }
}
