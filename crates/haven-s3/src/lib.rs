//! A Haven repository in an S3 bucket (AWS, or a self-hosted store: garage, MinIO, moto).
//!
//! [`S3Backend`] implements the blocking `haven_store` traits on top of the async
//! `object_store` crate: the backend owns a small tokio runtime and `block_on`s each
//! call, so the store trait stays synchronous and the crates below know nothing of
//! tokio (ADR 0009). [`S3Location`] parses the two URL forms the CLI accepts.
//!
//! Layout: `<prefix>/` + [`FileKind::path`], the same as a local folder. A write is a
//! single PUT, which S3 makes atomic (a reader sees the whole object or none), so there
//! are no temporary objects to clean up. `create` claims an empty prefix by writing a
//! small `<prefix>/.haven-layout` object, the counterpart of the local backend's folders.
//!
//! Credentials come from the AWS SDKs' chain ([`credentials`]: environment, shared-file
//! profile, web identity through STS, container, instance metadata); the temporary ones
//! are renewed before they expire ([`providers`]).
//!
//! Errors: 404 is `NotFound`; 5xx, timeouts and connection failures are `Transient`;
//! refused credentials, a missing bucket and everything else are `Permanent`. Messages
//! name the repository URL and the source of the credentials, never the credentials.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use haven_store::{
    ErrorClass, FileInfo, FileKind, ReadBackend, SharedBytes, StoreError, WriteBackend,
};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, RetryConfig};

pub mod credentials;
mod location;
pub mod providers;
pub use location::S3Location;

/// Object written by `create` so that a second `create` on the same prefix fails.
const LAYOUT_OBJECT: &str = ".haven-layout";
/// Upper bound for one HTTP request, so a stalled connection cannot hang a backup.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// True when `location` is an S3 URL this crate opens (`s3://…` or `s3:http(s)://…`).
pub fn is_s3_url(location: &str) -> bool {
    location.starts_with("s3://")
        || location.starts_with("s3:http://")
        || location.starts_with("s3:https://")
}

/// A repository under a prefix of an S3 bucket.
pub struct S3Backend {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    location: S3Location,
    url: String,
    /// Set once the bucket answered a listing: only then may a 404 mean "no such file".
    bucket_checked: AtomicBool,
    /// Where the credentials came from, for "access denied" messages.
    credential_source: String,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend").field("url", &self.url).finish()
    }
}

/// Access keys for the store. Kept out of `Debug` and out of every message.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

impl S3Backend {
    /// Open the repository at an S3 URL, taking endpoint and region from the environment
    /// and the profile ([`S3Location::parse`]) and credentials from the AWS chain
    /// ([`credentials::resolve`]).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let location = S3Location::parse(url)?;
        Self::with_credentials(location, credentials::resolve(url)?)
    }

    /// A backend for `location` using `credentials`. Nothing is sent until the first call.
    pub fn new(location: S3Location, credentials: Credentials) -> Result<Self, StoreError> {
        Self::with_credentials(
            location,
            credentials::Resolved {
                found: credentials::Found::Static(credentials),
                source: "the given keys".into(),
            },
        )
    }

    /// A backend for `location` with credentials from the chain ([`credentials::resolve`]).
    pub fn with_credentials(
        location: S3Location,
        resolved: credentials::Resolved,
    ) -> Result<Self, StoreError> {
        let url = location.url.clone();
        let fail = |what: String| StoreError::new(ErrorClass::Permanent, &url, "", what);
        let mut client = ClientOptions::new()
            .with_timeout(REQUEST_TIMEOUT)
            .with_connect_timeout(CONNECT_TIMEOUT);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&location.bucket)
            .with_region(&location.region)
            // The body is not hashed into the signature: every object is authenticated
            // by its own AES-GCM tags and content-derived name, checked on every read
            // (ADR 0012), and hashing each 16 MiB pack once more cost a core's time.
            .with_unsigned_payload(true)
            .with_retry(retry_config());
        use credentials::Found;
        match &resolved.found {
            Found::Static(c) => {
                builder = builder
                    .with_access_key_id(&c.access_key_id)
                    .with_secret_access_key(&c.secret_access_key);
                if let Some(token) = &c.session_token {
                    builder = builder.with_token(token);
                }
            }
            Found::WebIdentity {
                role_arn,
                token_file,
                session_name,
            } => {
                builder = builder.with_credentials(Arc::new(providers::WebIdentity::new(
                    role_arn.clone(),
                    token_file.clone(),
                    session_name.clone(),
                    providers::sts_endpoint(&location.region),
                )));
            }
            Found::ContainerRelative(path) => {
                builder = builder.with_config(
                    object_store::aws::AmazonS3ConfigKey::ContainerCredentialsRelativeUri,
                    path,
                );
            }
            Found::ContainerFull { url, token } => {
                builder = builder.with_credentials(Arc::new(providers::ContainerCredentials::new(
                    url.clone(),
                    token.clone(),
                )));
            }
            // object_store's instance provider is what a builder without keys uses.
            Found::InstanceMetadata => {}
        }
        if let Some(endpoint) = &location.endpoint {
            // Self-hosted stores rarely have per-bucket DNS names: use path-style.
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
            client = client.with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder
            .with_client_options(client)
            .build()
            .map_err(|e| fail(format!("invalid S3 configuration: {}", one_line(&e))))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("haven-s3")
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start the S3 client runtime: {e}")))?;
        Ok(S3Backend {
            store: Arc::new(store),
            runtime,
            location,
            url,
            bucket_checked: AtomicBool::new(false),
            credential_source: resolved.source,
        })
    }

    fn key(&self, kind: FileKind, name: &str) -> Path {
        self.under(&kind.path(name))
    }

    fn under(&self, rel: &str) -> Path {
        if self.location.prefix.is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.location.prefix))
        }
    }

    fn prefix_path(&self) -> Option<Path> {
        (!self.location.prefix.is_empty()).then(|| Path::from(self.location.prefix.as_str()))
    }

    /// Classify an `object_store` error on `file`.
    fn err(&self, file: &str, action: &str, e: object_store::Error) -> StoreError {
        use object_store::Error as E;
        let text = one_line(&e);
        if let Some(at) = text.find(providers::PROVIDER_MARK) {
            // Our providers' messages already say what to do.
            let why = &text[at + providers::PROVIDER_MARK.len()..];
            let class = if why.contains("did not answer") {
                ErrorClass::Transient
            } else {
                ErrorClass::Permanent
            };
            return StoreError::new(
                class,
                &self.url,
                file,
                format!(
                    "{action} failed: no S3 credentials from {}: {why}",
                    self.credential_source
                ),
            );
        }
        let (class, message) = match &e {
            E::NotFound { .. } if text.contains("NoSuchBucket") => {
                (ErrorClass::Permanent, self.no_bucket())
            }
            E::NotFound { .. } => (ErrorClass::NotFound, format!("{action} failed: not found")),
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
                (ErrorClass::Permanent, self.access_denied())
            }
            _ if text.contains("InvalidAccessKeyId")
                || text.contains("SignatureDoesNotMatch")
                || text.contains("AccessDenied") =>
            {
                (ErrorClass::Permanent, self.access_denied())
            }
            _ if text.contains("NoSuchBucket") => (ErrorClass::Permanent, self.no_bucket()),
            _ if is_transient(&text) => (
                ErrorClass::Transient,
                format!(
                    "{action} failed: the S3 endpoint {} did not answer ({text}); check the endpoint and the network, then run the command again",
                    self.location.endpoint_display()
                ),
            ),
            _ => (ErrorClass::Permanent, format!("{action} failed: {text}")),
        };
        StoreError::new(class, &self.url, file, message)
    }

    fn access_denied(&self) -> String {
        format!(
            "access denied: check the credentials (from {})",
            self.credential_source
        )
    }

    fn no_bucket(&self) -> String {
        format!(
            "bucket {} does not exist at {}; create it first",
            self.location.bucket,
            self.location.endpoint_display()
        )
    }

    /// Make sure the bucket exists and answers before a 404 is trusted to mean "no such
    /// file"; S3 also answers 404 for a missing bucket. Done once per backend.
    fn check_bucket(&self) -> Result<(), StoreError> {
        if self.bucket_checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.first_object()?;
        Ok(())
    }

    /// Any one object under the prefix (listing is also the bucket check).
    fn first_object(&self) -> Result<Option<Path>, StoreError> {
        let prefix = self.prefix_path();
        let found = self.runtime.block_on(async {
            use futures_util::StreamExt;
            let mut stream = self.store.list(prefix.as_ref());
            stream.next().await.transpose()
        });
        let found = found.map_err(|e| match self.err("", "listing the bucket", e) {
            // A 404 on a bucket listing can only mean the bucket is missing.
            e if e.class == ErrorClass::NotFound => {
                StoreError::new(ErrorClass::Permanent, &self.url, "", self.no_bucket())
            }
            e => e,
        })?;
        self.bucket_checked.store(true, Ordering::Relaxed);
        Ok(found.map(|m| m.location))
    }

    fn list_all(&self, prefix: &Path) -> Result<Vec<object_store::ObjectMeta>, StoreError> {
        self.runtime
            .block_on(async {
                use futures_util::TryStreamExt;
                // `list` pages through ListObjectsV2 continuation tokens itself.
                self.store.list(Some(prefix)).try_collect().await
            })
            .map_err(|e| self.err(prefix.as_ref(), "listing", e))
    }

    /// One PUT: atomic on S3, and durable when the store acknowledges it. A repeated
    /// write of the same name carries the same content (names are content ids).
    fn put(&self, kind: FileKind, name: &str, payload: bytes::Bytes) -> Result<(), StoreError> {
        self.check_bucket()?;
        let rel = kind.path(name);
        let key = self.key(kind, name);
        self.runtime
            .block_on(self.store.put(&key, payload.into()))
            .map(|_| ())
            .map_err(|e| self.err(&rel, "writing", e))
    }
}

fn retry_config() -> RetryConfig {
    // No retries inside the client: the retry layer composed around every backend
    // (`haven_store::wrap`, RetryBackend) is the only one, so a dead endpoint costs one
    // retry budget, not the product of two.
    RetryConfig {
        max_retries: 0,
        retry_timeout: Duration::from_secs(30),
        backoff: BackoffConfig::default(),
    }
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_transient(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "server error",
        "timed out",
        "timeout",
        "connect",
        "connection",
        "error sending request",
        "503",
        "500",
        "502",
        "504",
        "slowdown",
    ]
    .iter()
    .any(|w| t.contains(w))
}

impl ReadBackend for S3Backend {
    fn location(&self) -> String {
        self.url.clone()
    }

    fn remote(&self) -> bool {
        true
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>, StoreError> {
        self.check_bucket()?;
        if matches!(kind, FileKind::Marker | FileKind::Config) {
            let rel = kind.path("");
            let key = self.key(kind, "");
            return match self.runtime.block_on(self.store.head(&key)) {
                Ok(meta) => Ok(vec![FileInfo {
                    name: rel,
                    size: meta.size,
                }]),
                Err(object_store::Error::NotFound { .. }) => Ok(vec![]),
                Err(e) => Err(self.err(&rel, "reading metadata", e)),
            };
        }
        let folder = self.under(kind.folder());
        let mut out = Vec::new();
        for meta in self.list_all(&folder)? {
            let Some(rel) = meta.location.prefix_match(&folder) else {
                continue;
            };
            let parts: Vec<_> = rel.collect();
            // Packs live one level down (`data/xx/name`); other kinds directly in their folder.
            let depth = if kind == FileKind::Pack { 2 } else { 1 };
            if parts.len() != depth {
                continue;
            }
            let name = parts[depth - 1].as_ref().to_string();
            out.push(FileInfo {
                name,
                size: meta.size,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>, StoreError> {
        self.check_bucket()?;
        let rel = kind.path(name);
        let key = self.key(kind, name);
        self.runtime
            .block_on(async { self.store.get(&key).await?.bytes().await })
            .map(Vec::from)
            .map_err(|e| self.err(&rel, "reading", e))
    }

    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, StoreError> {
        self.check_bucket()?;
        let rel = kind.path(name);
        let key = self.key(kind, name);
        let truncated = || {
            StoreError::new(
                ErrorClass::Permanent,
                &self.url,
                &rel,
                format!("file is shorter than expected (wanted {length} bytes at offset {offset}): truncated"),
            )
        };
        if length == 0 {
            // An empty range is not expressible in HTTP; check existence and size instead.
            let meta = self
                .runtime
                .block_on(self.store.head(&key))
                .map_err(|e| self.err(&rel, "reading metadata", e))?;
            return if offset <= meta.size {
                Ok(Vec::new())
            } else {
                Err(truncated())
            };
        }
        let end = offset.checked_add(length).ok_or_else(truncated)?;
        let opts = GetOptions {
            range: Some(GetRange::Bounded(offset..end)),
            ..GetOptions::default()
        };
        let got = self
            .runtime
            .block_on(async { self.store.get_opts(&key, opts).await?.bytes().await });
        match got {
            Ok(bytes) if bytes.len() as u64 == length => Ok(Vec::from(bytes)),
            Ok(_) => Err(truncated()),
            Err(e @ object_store::Error::NotFound { .. }) => Err(self.err(&rel, "reading", e)),
            Err(e) => {
                // S3 answers a range past the end with 416, object_store with its own
                // error: tell a truncated file from other failures by its size.
                match self.runtime.block_on(self.store.head(&key)) {
                    Ok(meta) if meta.size < end => Err(truncated()),
                    _ => Err(self.err(&rel, "reading", e)),
                }
            }
        }
    }
}

impl WriteBackend for S3Backend {
    fn create(&self) -> Result<(), StoreError> {
        if let Some(existing) = self.first_object()? {
            return Err(StoreError::new(
                ErrorClass::Permanent,
                &self.url,
                "",
                format!(
                    "the location already holds objects (for example {existing}); choose an empty bucket or a new prefix for a new repository"
                ),
            ));
        }
        let key = self.under(LAYOUT_OBJECT);
        let payload = bytes::Bytes::from_static(b"haven repository layout\n");
        self.runtime
            .block_on(self.store.put(&key, payload.into()))
            .map(|_| ())
            .map_err(|e| self.err(LAYOUT_OBJECT, "creating the repository", e))
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), StoreError> {
        self.put(kind, name, bytes::Bytes::copy_from_slice(data))
    }

    fn write_shared(
        &self,
        kind: FileKind,
        name: &str,
        data: SharedBytes,
    ) -> Result<(), StoreError> {
        // No copy: the request body borrows the caller's buffer until the PUT is done.
        self.put(kind, name, bytes::Bytes::from_owner(data))
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<(), StoreError> {
        self.check_bucket()?;
        let rel = kind.path(name);
        let key = self.key(kind, name);
        match self.runtime.block_on(self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(&rel, "removing", e)),
        }
    }
}
