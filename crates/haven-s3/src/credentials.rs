//! Where S3 credentials come from: the AWS SDKs' default chain, in their order.
//!
//! 1. Environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`).
//! 2. Shared files: profile `AWS_PROFILE` (default `default`) in `AWS_SHARED_CREDENTIALS_FILE`
//!    (`~/.aws/credentials`, sections `[name]`) and `AWS_CONFIG_FILE` (`~/.aws/config`,
//!    sections `[profile name]`, `[default]`): static keys, or `role_arn` +
//!    `web_identity_token_file`; the profile's `region` when the environment names none.
//!    A profile named in `AWS_PROFILE` that neither file holds is an error.
//! 3. Web identity: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (+ `AWS_ROLE_SESSION_NAME`),
//!    exchanged with STS `AssumeRoleWithWebIdentity` (as EKS pods get them) at
//!    `AWS_ENDPOINT_URL_STS` or `https://sts.<region>.amazonaws.com`; the temporary keys
//!    are renewed five minutes before they expire ([`WebIdentity`]).
//! 4. Container: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, or `..._FULL_URI` with
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (ECS tasks, EKS Pod Identity).
//! 5. Instance metadata (IMDSv2), unless `AWS_EC2_METADATA_DISABLED=true`, and only when
//!    169.254.169.254 answers a connection within 300 ms, so that a machine outside EC2
//!    gets the "no credentials" error at once instead of a timeout.
//!
//! 4 and 5 are object_store's providers; 1-3 are resolved here. Tested against a real
//! stand-in: 1, 2 and 3 (moto's STS); 4 and 5 have none on this machine.
//! Secrets never appear in `Debug` output or messages.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haven_store::{ErrorClass, StoreError};
use object_store::aws::AwsCredential;

use crate::Credentials;

/// What the chain found.
#[derive(Debug, Clone)]
pub enum Found {
    Static(Credentials),
    WebIdentity {
        role_arn: String,
        token_file: PathBuf,
        session_name: String,
    },
    /// Container or instance credentials: object_store's providers, configured from
    /// these `AmazonS3ConfigKey` settings.
    Provider(Vec<(object_store::aws::AmazonS3ConfigKey, String)>),
}

/// The credentials and where they came from (for messages: "credentials from ...").
#[derive(Debug, Clone)]
pub struct Resolved {
    pub found: Found,
    pub source: String,
    /// A region the source names (a profile's `region`), used when the environment has none.
    pub region: Option<String>,
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn home() -> Option<PathBuf> {
    env("HOME").map(PathBuf::from)
}

/// Resolve the chain for the repository at `url` (named in errors).
pub fn resolve(url: &str) -> Result<Resolved, StoreError> {
    let fail = |what: String| StoreError::new(ErrorClass::Permanent, url, "", what);
    if let (Some(access_key_id), Some(secret_access_key)) =
        (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    {
        return Ok(Resolved {
            found: Found::Static(Credentials {
                access_key_id,
                secret_access_key,
                session_token: env("AWS_SESSION_TOKEN"),
            }),
            source: "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".into(),
            region: None,
        });
    }
    if let Some(found) = from_profile(url)? {
        return Ok(found);
    }
    if let (Some(token_file), Some(role_arn)) =
        (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN"))
    {
        return Ok(Resolved {
            found: Found::WebIdentity {
                role_arn,
                token_file: token_file.into(),
                session_name: env("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "haven".to_string()),
            },
            source: "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)".into(),
            region: None,
        });
    }
    use object_store::aws::AmazonS3ConfigKey as K;
    if let Some(uri) = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        return Ok(Resolved {
            found: Found::Provider(vec![(K::ContainerCredentialsRelativeUri, uri)]),
            source: "container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)".into(),
            region: None,
        });
    }
    if let (Some(uri), Some(token)) = (
        env("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
    ) {
        return Ok(Resolved {
            found: Found::Provider(vec![
                (K::ContainerCredentialsFullUri, uri),
                (K::ContainerAuthorizationTokenFile, token),
            ]),
            source: "container credentials (AWS_CONTAINER_CREDENTIALS_FULL_URI)".into(),
            region: None,
        });
    }
    let imds_disabled =
        env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !imds_disabled && instance_metadata_answers() {
        return Ok(Resolved {
            found: Found::Provider(vec![]),
            source: "instance metadata (IMDSv2)".into(),
            region: None,
        });
    }
    Err(fail(
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials, or AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (none of these, no container credentials, no instance metadata)".into(),
    ))
}

fn instance_metadata_answers() -> bool {
    let addr = std::net::SocketAddr::from(([169, 254, 169, 254], 80));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// The profile's settings from the shared credentials and config files.
fn from_profile(url: &str) -> Result<Option<Resolved>, StoreError> {
    let named = env("AWS_PROFILE");
    let profile = named.clone().unwrap_or_else(|| "default".to_string());
    let credentials_file = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".aws/credentials")));
    let config_file = env("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".aws/config")));
    let from_credentials = credentials_file
        .as_deref()
        .and_then(|f| section(f, &profile).map(|s| (f.to_path_buf(), s)));
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    let from_config = config_file
        .as_deref()
        .and_then(|f| section(f, &config_section).map(|s| (f.to_path_buf(), s)));
    if from_credentials.is_none() && from_config.is_none() {
        if named.is_some() {
            return Err(StoreError::new(
                ErrorClass::Permanent,
                url,
                "",
                format!(
                    "AWS_PROFILE={profile}: no such profile in {} or {}; add it there or unset AWS_PROFILE",
                    shown(credentials_file.as_deref()),
                    shown(config_file.as_deref())
                ),
            ));
        }
        return Ok(None);
    }
    let get = |key: &str| -> Option<(PathBuf, String)> {
        [&from_credentials, &from_config]
            .into_iter()
            .flatten()
            .find_map(|(f, s)| lookup(s, key).map(|v| (f.clone(), v)))
    };
    let region = get("region").map(|(_, v)| v);
    if let (Some((file, access_key_id)), Some((_, secret_access_key))) =
        (get("aws_access_key_id"), get("aws_secret_access_key"))
    {
        return Ok(Some(Resolved {
            found: Found::Static(Credentials {
                access_key_id,
                secret_access_key,
                session_token: get("aws_session_token").map(|(_, v)| v),
            }),
            source: format!("profile {profile} in {}", file.display()),
            region,
        }));
    }
    if let (Some((file, role_arn)), Some((_, token_file))) =
        (get("role_arn"), get("web_identity_token_file"))
    {
        return Ok(Some(Resolved {
            found: Found::WebIdentity {
                role_arn,
                token_file: token_file.into(),
                session_name: get("role_session_name")
                    .map(|(_, v)| v)
                    .unwrap_or_else(|| "haven".to_string()),
            },
            source: format!("web identity of profile {profile} in {}", file.display()),
            region,
        }));
    }
    if named.is_some() {
        return Err(StoreError::new(
            ErrorClass::Permanent,
            url,
            "",
            format!("AWS_PROFILE={profile} has neither aws_access_key_id/aws_secret_access_key nor role_arn/web_identity_token_file; complete the profile"),
        ));
    }
    Ok(None)
}

fn shown(p: Option<&Path>) -> String {
    p.map(|p| p.display().to_string())
        .unwrap_or_else(|| "~/.aws (HOME is not set)".into())
}

/// The `key = value` lines of section `[name]` of an INI file, if the file has it.
fn section(file: &Path, name: &str) -> Option<Vec<(String, String)>> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut inside = false;
    let mut found = false;
    let mut out = vec![];
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(head) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = head.trim() == name;
            found |= inside;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }
    found.then_some(out)
}

fn lookup(section: &[(String, String)], key: &str) -> Option<String> {
    section
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
}

/// Temporary keys from STS `AssumeRoleWithWebIdentity`, renewed before they expire.
pub struct WebIdentity {
    pub role_arn: String,
    pub token_file: PathBuf,
    pub session_name: String,
    pub endpoint: String,
    client: reqwest::Client,
    cached: Mutex<Option<(Arc<AwsCredential>, Instant)>>,
}

impl std::fmt::Debug for WebIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebIdentity")
            .field("role_arn", &self.role_arn)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// Renew this long before the keys expire.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

impl WebIdentity {
    pub fn new(role_arn: String, token_file: PathBuf, session_name: String, region: &str) -> Self {
        let endpoint = env("AWS_ENDPOINT_URL_STS")
            .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
        WebIdentity {
            role_arn,
            token_file,
            session_name,
            endpoint,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client with default settings"),
            cached: Mutex::new(None),
        }
    }

    async fn fetch(&self) -> Result<(AwsCredential, Duration), String> {
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
            .map_err(|e| format!("reading the STS answer: {e}"))?;
        if !status.is_success() {
            let code = xml_value(&text, "Code").unwrap_or_else(|| status.to_string());
            return Err(format!(
                "STS refused AssumeRoleWithWebIdentity for {} ({code}); check AWS_ROLE_ARN and the token",
                self.role_arn
            ));
        }
        let get =
            |tag: &str| xml_value(&text, tag).ok_or_else(|| format!("the STS answer has no {tag}"));
        let credential = AwsCredential {
            key_id: get("AccessKeyId")?,
            secret_key: get("SecretAccessKey")?,
            token: Some(get("SessionToken")?),
        };
        let lifetime = xml_value(&text, "Expiration")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .and_then(|t| {
                (t.with_timezone(&chrono::Utc) - chrono::Utc::now())
                    .to_std()
                    .ok()
            })
            .unwrap_or(Duration::from_secs(900));
        Ok((credential, lifetime))
    }

    /// The current keys, fetched now if there are none or they expire within 5 minutes.
    pub async fn current(&self) -> Result<Arc<AwsCredential>, String> {
        if let Some((c, renew_at)) = self.cached.lock().expect("credential cache").as_ref() {
            if Instant::now() < *renew_at {
                return Ok(c.clone());
            }
        }
        let (credential, lifetime) = self.fetch().await?;
        let credential = Arc::new(credential);
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_BEFORE);
        *self.cached.lock().expect("credential cache") = Some((credential.clone(), renew_at));
        Ok(credential)
    }
}

#[async_trait::async_trait]
impl object_store::CredentialProvider for WebIdentity {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        self.current()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: e.into(),
            })
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

    #[test]
    fn ini_sections_and_keys_are_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("credentials");
        std::fs::write(
            &f,
            "# comment\n[default]\naws_access_key_id = A\n\n[profile other]\nregion=eu-west-1\n[prod]\nAWS_SECRET_ACCESS_KEY = s = x\n",
        )
        .unwrap();
        let d = section(&f, "default").unwrap();
        assert_eq!(lookup(&d, "aws_access_key_id").as_deref(), Some("A"));
        let p = section(&f, "prod").unwrap();
        assert_eq!(
            lookup(&p, "aws_secret_access_key").as_deref(),
            Some("s = x")
        );
        assert_eq!(
            lookup(&section(&f, "profile other").unwrap(), "region").as_deref(),
            Some("eu-west-1")
        );
        assert!(section(&f, "missing").is_none());
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
    }
}
