//! The two URL forms of an S3 repository:
//!
//! * `s3://bucket/prefix`: endpoint from `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (AWS
//!   itself when unset).
//! * `s3:http://host:port/bucket/prefix` (or `https`): restic-style, carrying its own
//!   endpoint; for self-hosted stores.
//!
//! The region, for both: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`
//! ([`crate::credentials::region`]), else `us-east-1`. With an explicit endpoint, requests
//! use path-style addressing.

use haven_store::{ErrorClass, StoreError};

/// Where an S3 repository lives. Holds no credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The URL as the user gave it, for messages.
    pub url: String,
    /// `scheme://host[:port]`, or `None` for AWS.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Object key prefix without leading or trailing `/`; may be empty.
    pub prefix: String,
}

impl S3Location {
    /// Parse either URL form, with the endpoint and region from the environment.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let endpoint = env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL"));
        Self::parse_with(url, endpoint, crate::credentials::region())
    }

    /// Parse with the environment given explicitly (for tests).
    pub fn parse_with(
        url: &str,
        env_endpoint: Option<String>,
        env_region: Option<String>,
    ) -> Result<Self, StoreError> {
        let bad = |why: &str| {
            StoreError::new(
                ErrorClass::Permanent,
                url,
                "",
                format!("invalid S3 URL: {why}; expected s3://BUCKET/PREFIX or s3:http(s)://HOST:PORT/BUCKET/PREFIX"),
            )
        };
        let (endpoint, path) = if let Some(rest) = url.strip_prefix("s3://") {
            let endpoint = env_endpoint.map(|e| e.trim_end_matches('/').to_string());
            (endpoint, rest)
        } else if let Some(rest) = url.strip_prefix("s3:") {
            let (scheme, after) = rest
                .split_once("://")
                .filter(|(s, _)| *s == "http" || *s == "https")
                .ok_or_else(|| bad("the endpoint must start with http:// or https://"))?;
            let (host, path) = after.split_once('/').unwrap_or((after, ""));
            if host.is_empty() {
                return Err(bad("no host in the endpoint"));
            }
            (Some(format!("{scheme}://{host}")), path)
        } else {
            return Err(bad("not an S3 URL"));
        };
        let path = path.trim_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket name"));
        }
        let prefix = prefix
            .split('/')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        Ok(S3Location {
            url: url.to_string(),
            endpoint,
            region: env_region.unwrap_or_else(|| "us-east-1".to_string()),
            bucket: bucket.to_string(),
            prefix,
        })
    }

    /// The endpoint for messages.
    pub fn endpoint_display(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("AWS S3 ({})", self.region))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_scheme_uses_the_environment() {
        let l =
            S3Location::parse_with("s3://bkt/a/b/", Some("http://127.0.0.1:9000/".into()), None)
                .unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("bkt", "a/b"));
        assert_eq!(l.region, "us-east-1");
        let l = S3Location::parse_with("s3://bkt", None, Some("eu-west-1".into())).unwrap();
        assert_eq!((l.endpoint, l.prefix.as_str()), (None, ""));
        assert_eq!(l.region, "eu-west-1");
    }

    #[test]
    fn restic_style_carries_its_endpoint() {
        let l = S3Location::parse_with(
            "s3:http://store.example:3900/bucket/prefix",
            Some("http://ignored".into()),
            None,
        )
        .unwrap();
        assert_eq!(l.endpoint.as_deref(), Some("http://store.example:3900"));
        assert_eq!((l.bucket.as_str(), l.prefix.as_str()), ("bucket", "prefix"));
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in [
            "s3://",
            "s3:ftp://h/b",
            "s3:http://h",
            "s3:http:///b",
            "gs://b",
        ] {
            let e = S3Location::parse_with(url, None, None).unwrap_err();
            assert!(e.to_string().contains(url), "{e}");
        }
    }
}
