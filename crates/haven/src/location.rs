//! Which backend a repository location opens. The one place that knows the URL schemes:
//!
//! * `s3://BUCKET/PREFIX` and `s3:http(s)://HOST:PORT/BUCKET/PREFIX`: [`haven_s3::S3Backend`]
//!   (endpoint, region and credentials from the `AWS_*` environment variables).
//! * anything else: a local folder (`haven_store::open_location`).

use std::sync::Arc;

use anyhow::Result;
use haven_store::DynBackend;

/// Open the backend for a location given with `--repo` or `HAVEN_REPOSITORY`.
pub fn open_backend(location: &str) -> Result<DynBackend> {
    if haven_s3::is_s3_url(location) {
        return Ok(Arc::new(haven_s3::S3Backend::open(location)?));
    }
    // `mirror:` locations (haven_store::mirror) are dispatched here once that lands.
    Ok(haven_store::open_location(location)?)
}
