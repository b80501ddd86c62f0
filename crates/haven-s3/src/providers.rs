//! The temporary-credential providers Haven runs itself (the chain that picks one is
//! [`crate::credentials`]):
//!
//! * [`WebIdentity`]: reads the token file, sends STS `AssumeRoleWithWebIdentity` (an
//!   unsigned form POST) to [`sts_endpoint`], and reads the keys out of the XML answer.
//!   object_store has its own, but it refuses an `http://` STS endpoint, so it could reach
//!   neither a local test stand-in nor a self-hosted store's STS (MinIO), and it reads
//!   the variables itself instead of taking them from the chain.
//! * [`ContainerCredentials`]: a GET of `AWS_CONTAINER_CREDENTIALS_FULL_URI` with the
//!   authorization token from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (re-read each
//!   time) or `AWS_CONTAINER_AUTHORIZATION_TOKEN`, which object_store does not take, and
//!   the JSON answer of the ECS agent / EKS Pod Identity agent.
//!
//! Both keep their keys in a [`Renewing`] cache: every S3 request asks for credentials,
//! the cache answers until five minutes before they expire, then one request fetches
//! new ones. Secrets (keys, session tokens, the web identity or authorization token)
//! never appear in `Debug` output or in messages.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use object_store::aws::AwsCredential;

/// Renew this long before the keys expire.
pub const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// Assumed when an answer names no expiry (the shortest session STS issues).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(900);
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Temporary keys and when to fetch new ones.
#[derive(Debug)]
pub struct Renewing {
    renew_before: Duration,
    slot: Mutex<Option<(Arc<AwsCredential>, Instant)>>,
}

impl Renewing {
    pub fn new(renew_before: Duration) -> Self {
        Renewing {
            renew_before,
            slot: Mutex::new(None),
        }
    }

    /// The cached keys, if they are not yet due for renewal at `now`.
    fn fresh(&self, now: Instant) -> Option<Arc<AwsCredential>> {
        let slot = self.slot.lock().expect("credential cache");
        slot.as_ref()
            .filter(|(_, renew_at)| now < *renew_at)
            .map(|(c, _)| c.clone())
    }

    /// The cached keys, or new ones from `fetch` (keys and how long they are valid) when
    /// there are none or they are due for renewal.
    async fn get_or_fetch(
        &self,
        fetch: impl std::future::Future<Output = Result<(AwsCredential, Duration), String>>,
    ) -> Result<Arc<AwsCredential>, String> {
        if let Some(c) = self.fresh(Instant::now()) {
            return Ok(c);
        }
        let (credential, lifetime) = fetch.await?;
        Ok(self.keep(credential, lifetime, Instant::now()))
    }

    /// Keep keys that are valid for `lifetime` from `now`.
    fn keep(
        &self,
        credential: AwsCredential,
        lifetime: Duration,
        now: Instant,
    ) -> Arc<AwsCredential> {
        let credential = Arc::new(credential);
        let renew_at = now + lifetime.saturating_sub(self.renew_before);
        *self.slot.lock().expect("credential cache") = Some((credential.clone(), renew_at));
        credential
    }
}

/// How long keys expiring at `expiration` (RFC 3339) are valid from now: zero when that
/// is past, [`DEFAULT_LIFETIME`] when the answer names no time.
fn lifetime(expiration: Option<&str>) -> Duration {
    match expiration.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => (t.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO),
        None => DEFAULT_LIFETIME,
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .expect("an HTTP client with default settings")
}

/// The STS endpoint as the AWS SDKs choose it: `AWS_ENDPOINT_URL_STS`, else the global
/// `AWS_ENDPOINT_URL`, else the regional `https://sts.<region>.amazonaws.com`.
pub fn sts_endpoint(region: &str) -> String {
    env("AWS_ENDPOINT_URL_STS")
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"))
}

/// Temporary keys from STS `AssumeRoleWithWebIdentity`, renewed before they expire.
pub struct WebIdentity {
    pub role_arn: String,
    pub token_file: PathBuf,
    pub session_name: String,
    pub endpoint: String,
    client: reqwest::Client,
    cache: Renewing,
}

impl std::fmt::Debug for WebIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebIdentity")
            .field("role_arn", &self.role_arn)
            .field("token_file", &self.token_file)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl WebIdentity {
    /// Nothing is sent until the first request asks for keys.
    pub fn new(
        role_arn: String,
        token_file: PathBuf,
        session_name: String,
        endpoint: String,
    ) -> Self {
        WebIdentity {
            role_arn,
            token_file,
            session_name,
            endpoint,
            client: http_client(),
            cache: Renewing::new(RENEW_BEFORE),
        }
    }

    /// Renew this long before expiry instead of [`RENEW_BEFORE`] (tests use a margin
    /// longer than the session to make every call a renewal).
    pub fn renew_before(mut self, margin: Duration) -> Self {
        self.cache = Renewing::new(margin);
        self
    }

    async fn fetch(&self) -> Result<(AwsCredential, Duration), String> {
        // Read on every exchange: Kubernetes rotates the projected token in place.
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| {
            format!(
                "web identity token file {}: {e}; check AWS_WEB_IDENTITY_TOKEN_FILE",
                self.token_file.display()
            )
        })?;
        let form = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", self.role_arn.as_str()),
            ("RoleSessionName", self.session_name.as_str()),
            ("WebIdentityToken", token.trim()),
            ("DurationSeconds", "3600"),
        ];
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let resp = self
            .client
            .post(&self.endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("STS at {} did not answer: {e}", self.endpoint))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("reading the answer of STS at {}: {e}", self.endpoint))?;
        if !status.is_success() {
            let code = xml_value(&text, "Code").unwrap_or_else(|| status.to_string());
            return Err(format!(
                "STS at {} refused AssumeRoleWithWebIdentity for {} ({code}); check AWS_ROLE_ARN, the role's trust policy and the token",
                self.endpoint, self.role_arn
            ));
        }
        let get = |tag: &str| {
            xml_value(&text, tag)
                .ok_or_else(|| format!("the answer of STS at {} has no {tag}", self.endpoint))
        };
        let credential = AwsCredential {
            key_id: get("AccessKeyId")?,
            secret_key: get("SecretAccessKey")?,
            token: Some(get("SessionToken")?),
        };
        Ok((
            credential,
            lifetime(xml_value(&text, "Expiration").as_deref()),
        ))
    }

    /// The current keys, fetched now if there are none or they are due for renewal.
    pub async fn current(&self) -> Result<Arc<AwsCredential>, String> {
        self.cache.get_or_fetch(self.fetch()).await
    }
}

#[async_trait::async_trait]
impl object_store::CredentialProvider for WebIdentity {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        self.current().await.map_err(provider_error)
    }
}

/// Where the container agent's authorization token comes from.
#[derive(Clone)]
pub enum ContainerToken {
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`: re-read on every renewal.
    File(PathBuf),
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
    Value(String),
}

impl std::fmt::Debug for ContainerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContainerToken::File(p) => write!(f, "File({})", p.display()),
            ContainerToken::Value(_) => f.write_str("Value(..)"),
        }
    }
}

/// Keys from a container credentials endpoint (`AWS_CONTAINER_CREDENTIALS_FULL_URI`).
pub struct ContainerCredentials {
    pub url: String,
    pub token: Option<ContainerToken>,
    client: reqwest::Client,
    cache: Renewing,
}

impl std::fmt::Debug for ContainerCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerCredentials")
            .field("url", &self.url)
            .field("token", &self.token)
            .finish()
    }
}

impl ContainerCredentials {
    pub fn new(url: String, token: Option<ContainerToken>) -> Self {
        ContainerCredentials {
            url,
            token,
            client: http_client(),
            cache: Renewing::new(RENEW_BEFORE),
        }
    }

    async fn fetch(&self) -> Result<(AwsCredential, Duration), String> {
        let token = match &self.token {
            None => None,
            Some(ContainerToken::Value(v)) => Some(v.trim().to_string()),
            Some(ContainerToken::File(p)) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| {
                        format!(
                            "container authorization token file {}: {e}; check AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                            p.display()
                        )
                    })?
                    .trim()
                    .to_string(),
            ),
        };
        let mut request = self.client.get(&self.url);
        if let Some(token) = token {
            if token.contains(['\r', '\n']) {
                return Err("the container authorization token holds a line break; check AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)".into());
            }
            request = request.header("authorization", token);
        }
        let resp = request.send().await.map_err(|e| {
            format!(
                "the container credentials endpoint {} did not answer: {e}",
                self.url
            )
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| {
            format!(
                "reading the answer of the container credentials endpoint {}: {e}",
                self.url
            )
        })?;
        if !status.is_success() {
            return Err(format!(
                "the container credentials endpoint {} answered {status}; check AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE) and the task or pod role",
                self.url
            ));
        }
        parse_container_answer(&text).ok_or_else(|| {
            format!(
                "the container credentials endpoint {} answered without keys",
                self.url
            )
        })
    }

    /// The current keys, fetched now if there are none or they are due for renewal.
    pub async fn current(&self) -> Result<Arc<AwsCredential>, String> {
        self.cache.get_or_fetch(self.fetch()).await
    }
}

#[async_trait::async_trait]
impl object_store::CredentialProvider for ContainerCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        self.current().await.map_err(provider_error)
    }
}

/// The agents' JSON: `{"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}`.
fn parse_container_answer(text: &str) -> Option<(AwsCredential, Duration)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let get = |k: &str| v.get(k)?.as_str().map(str::to_string);
    let credential = AwsCredential {
        key_id: get("AccessKeyId")?,
        secret_key: get("SecretAccessKey")?,
        token: get("Token"),
    };
    Some((credential, lifetime(get("Expiration").as_deref())))
}

/// Marks a provider's message so that the backend shows it as it is (it already says
/// what to do) instead of as an S3 failure.
pub(crate) const PROVIDER_MARK: &str = "credentials: ";

fn provider_error(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source: format!("{PROVIDER_MARK}{message}").into(),
    }
}

fn form_encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The text of the first `<tag>...</tag>` in `xml` (STS answers are flat enough).
fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> AwsCredential {
        AwsCredential {
            key_id: id.into(),
            secret_key: "s".into(),
            token: None,
        }
    }

    #[test]
    fn cached_keys_are_renewed_the_margin_before_they_expire() {
        let cache = Renewing::new(Duration::from_secs(300));
        let t0 = Instant::now();
        assert!(cache.fresh(t0).is_none(), "nothing fetched yet");
        cache.keep(key("A"), Duration::from_secs(3600), t0);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(cache.fresh(at(3299)).unwrap().key_id, "A");
        assert!(
            cache.fresh(at(3300)).is_none(),
            "due 5 minutes before expiry"
        );
        // Keys shorter-lived than the margin are fetched again on every request.
        cache.keep(key("B"), Duration::from_secs(60), at(3300));
        assert!(cache.fresh(at(3300)).is_none());
    }

    #[test]
    fn sts_answers_are_read() {
        let xml = "<AssumeRoleWithWebIdentityResponse><Credentials><AccessKeyId>AK</AccessKeyId>\
                   <SecretAccessKey>SK</SecretAccessKey><SessionToken>T</SessionToken>\
                   <Expiration>2030-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResponse>";
        assert_eq!(xml_value(xml, "AccessKeyId").as_deref(), Some("AK"));
        assert_eq!(xml_value(xml, "SessionToken").as_deref(), Some("T"));
        assert_eq!(xml_value(xml, "Nope"), None);
        assert_eq!(form_encode("a b/c=d"), "a%20b%2Fc%3Dd");
        assert!(lifetime(xml_value(xml, "Expiration").as_deref()) > Duration::from_secs(3600));
        assert_eq!(lifetime(Some("not a date")), DEFAULT_LIFETIME);
    }

    #[test]
    fn container_answers_are_read() {
        let json = r#"{"AccessKeyId":"AK","SecretAccessKey":"SK","Token":"T","Expiration":"2000-01-01T00:00:00Z","RoleArn":"r"}"#;
        let (c, life) = parse_container_answer(json).unwrap();
        assert_eq!((c.key_id.as_str(), c.token.as_deref()), ("AK", Some("T")));
        // Already expired: renewed at the next request.
        assert_eq!(life, Duration::ZERO);
        assert!(parse_container_answer(r#"{"Code":"Denied"}"#).is_none());
        let hidden = format!("{:?}", ContainerToken::Value("secret-token".into()));
        assert!(!hidden.contains("secret-token"), "{hidden}");
    }
}
