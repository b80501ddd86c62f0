//! Where S3 credentials come from: the AWS SDKs' default chain, in their order. The first
//! source that is configured wins; [`resolve`] says which ([`Resolved::source`], named in
//! "access denied" messages).
//!
//! 1. Environment: `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`).
//! 2. Shared files ([`SharedFiles`]): profile `AWS_PROFILE` (default `default`) in
//!    `AWS_SHARED_CREDENTIALS_FILE` (`~/.aws/credentials`, sections `[name]`) and
//!    `AWS_CONFIG_FILE` (`~/.aws/config`, sections `[profile name]`, `[default]`); static
//!    keys, or `role_arn` + `web_identity_token_file` (+ `role_session_name`). A profile
//!    that `AWS_PROFILE` names and neither file holds is an error, not a fall-through.
//! 3. Web identity: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (+ `AWS_ROLE_SESSION_NAME`),
//!    exchanged with STS `AssumeRoleWithWebIdentity` as EKS pods do
//!    ([`crate::providers::WebIdentity`], endpoint [`crate::providers::sts_endpoint`]).
//! 4. Container: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (ECS task roles, object_store's
//!    provider), or `AWS_CONTAINER_CREDENTIALS_FULL_URI` with the token from
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` or `AWS_CONTAINER_AUTHORIZATION_TOKEN`
//!    (EKS Pod Identity and others; [`crate::providers::ContainerCredentials`]).
//! 5. EC2 instance metadata (IMDSv2, object_store's provider), unless
//!    `AWS_EC2_METADATA_DISABLED=true`, and only when the service hands out a session
//!    token within a second ([`instance_metadata`]): off EC2 the "no credentials" error
//!    comes at once and lists what was tried, instead of a metadata timeout or failure.
//!
//! The region follows the SDKs too ([`region`]): `AWS_REGION`, `AWS_DEFAULT_REGION`, then
//! the profile's `region`, whatever source the keys came from.
//!
//! Tested against a real stand-in (moto, whose STS issues keys without checking the token):
//! 1, 2 and 3. Sources 4 and 5 have no stand-in on a test machine.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use haven_store::{ErrorClass, StoreError};

pub use crate::providers::{ContainerCredentials, ContainerToken, WebIdentity};
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
    /// An ECS task role: object_store's provider at `http://169.254.170.2` + this path.
    ContainerRelative(String),
    /// A full container credentials URL ([`ContainerCredentials`]).
    ContainerFull {
        url: String,
        token: Option<ContainerToken>,
    },
    /// EC2 instance metadata (IMDSv2): object_store's provider.
    InstanceMetadata,
}

/// The credentials and where they came from, for messages ("credentials from ...").
#[derive(Debug, Clone)]
pub struct Resolved {
    pub found: Found,
    pub source: String,
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// The region: `AWS_REGION`, `AWS_DEFAULT_REGION`, then the profile's `region`.
pub fn region() -> Option<String> {
    env("AWS_REGION")
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| SharedFiles::from_env().region())
}

/// Resolve the chain for the repository at `url` (named in errors).
pub fn resolve(url: &str) -> Result<Resolved, StoreError> {
    let fail = |what: String| StoreError::new(ErrorClass::Permanent, url, "", what);
    let mut tried = vec![];
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(access_key_id), Some(secret_access_key)) => {
            return Ok(Resolved {
                found: Found::Static(Credentials {
                    access_key_id,
                    secret_access_key,
                    session_token: env("AWS_SESSION_TOKEN"),
                }),
                source: "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY".into(),
            })
        }
        (Some(_), None) => tried.push("AWS_ACCESS_KEY_ID without AWS_SECRET_ACCESS_KEY".into()),
        (None, Some(_)) => tried.push("AWS_SECRET_ACCESS_KEY without AWS_ACCESS_KEY_ID".into()),
        (None, None) => tried.push("no AWS_ACCESS_KEY_ID".into()),
    }

    let files = SharedFiles::from_env();
    match files.credentials().map_err(fail)? {
        Some(found) => return Ok(found),
        None => tried.push(format!(
            "no profile {} in {} or {}",
            files.profile,
            shown(files.credentials_file.as_deref()),
            shown(files.config_file.as_deref())
        )),
    }

    match (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN")) {
        (Some(token_file), Some(role_arn)) => {
            return Ok(Resolved {
                found: Found::WebIdentity {
                    role_arn,
                    token_file: token_file.into(),
                    session_name: env("AWS_ROLE_SESSION_NAME")
                        .unwrap_or_else(|| "haven".to_string()),
                },
                source: "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)".into(),
            })
        }
        (Some(_), None) => tried.push("AWS_WEB_IDENTITY_TOKEN_FILE without AWS_ROLE_ARN".into()),
        (None, Some(_)) => tried.push("AWS_ROLE_ARN without AWS_WEB_IDENTITY_TOKEN_FILE".into()),
        (None, None) => tried.push("no web identity".into()),
    }

    if let Some(path) = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        return Ok(Resolved {
            found: Found::ContainerRelative(path),
            source: "container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)".into(),
        });
    }
    if let Some(full) = env("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        check_container_url(&full).map_err(fail)?;
        let token = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
            .map(|f| ContainerToken::File(f.into()))
            .or_else(|| env("AWS_CONTAINER_AUTHORIZATION_TOKEN").map(ContainerToken::Value));
        return Ok(Resolved {
            found: Found::ContainerFull { url: full, token },
            source: "container credentials (AWS_CONTAINER_CREDENTIALS_FULL_URI)".into(),
        });
    }
    tried.push("no container credentials".into());

    let imds_disabled =
        env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if imds_disabled {
        tried.push("instance metadata disabled (AWS_EC2_METADATA_DISABLED)".into());
    } else {
        match instance_metadata() {
            Ok(()) => {
                return Ok(Resolved {
                    found: Found::InstanceMetadata,
                    source: "instance metadata (IMDSv2)".into(),
                })
            }
            Err(why) => tried.push(format!("no instance metadata ({why})")),
        }
    }
    Err(fail(format!(
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a profile in ~/.aws/credentials, or AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (tried: {})",
        tried.join("; ")
    )))
}

/// The SDKs' rule for `AWS_CONTAINER_CREDENTIALS_FULL_URI`: https anywhere; plain http
/// only to this machine or the ECS/EKS agents' link-local addresses, so the
/// authorization token is never sent in clear text across a network.
fn check_container_url(full: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(full).map_err(|e| {
        format!("AWS_CONTAINER_CREDENTIALS_FULL_URI={full} is not a URL ({e}); fix or unset it")
    })?;
    let host = parsed.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let allowed_http = host == "localhost"
        || match host.parse::<std::net::IpAddr>() {
            Ok(ip) => {
                ip.is_loopback()
                    || ["169.254.170.2", "169.254.170.23", "fd00:ec2::23"]
                        .iter()
                        .any(|a| a.parse() == Ok(ip))
            }
            Err(_) => false,
        };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if allowed_http => Ok(()),
        _ => Err(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI={full}: use https, or http only to a loopback address or the ECS/EKS agent (169.254.170.2, 169.254.170.23)"
        )),
    }
}

/// Whether EC2 instance metadata answers: an IMDSv2 session token request, given 300 ms
/// to connect and a second to answer. The reason when it does not.
pub fn instance_metadata() -> Result<(), String> {
    let addr = std::net::SocketAddr::from(([169, 254, 169, 254], 80));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300))
        .map_err(|e| format!("169.254.169.254: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    s.write_all(
        b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .map_err(|e| format!("169.254.169.254: {e}"))?;
    let mut head = [0u8; 64];
    let n = s
        .read(&mut head)
        .map_err(|e| format!("169.254.169.254: {e}"))?;
    let status = String::from_utf8_lossy(&head[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(format!(
            "169.254.169.254 answered {:?}",
            status
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ")
        ))
    }
}

/// The `key = value` lines of one section of a shared file.
type Section = Vec<(String, String)>;

/// The profile's sections in the shared credentials and config files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFiles {
    /// `AWS_PROFILE`, or `default`.
    pub profile: String,
    /// Whether `AWS_PROFILE` named it: then a missing or incomplete profile is an error.
    pub named: bool,
    pub credentials_file: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
}

/// One `key = value` of a profile and the file it came from.
type Setting = (PathBuf, String);

impl SharedFiles {
    /// From `AWS_PROFILE`, `AWS_SHARED_CREDENTIALS_FILE`, `AWS_CONFIG_FILE` and `HOME`.
    pub fn from_env() -> Self {
        let home = env("HOME").map(PathBuf::from);
        let named = env("AWS_PROFILE");
        SharedFiles {
            profile: named.clone().unwrap_or_else(|| "default".to_string()),
            named: named.is_some(),
            credentials_file: env("AWS_SHARED_CREDENTIALS_FILE")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials"))),
            config_file: env("AWS_CONFIG_FILE")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws/config"))),
        }
    }

    /// The profile's sections: from the credentials file, then the config file (the
    /// credentials file wins for a key both set); `None` when neither has the profile.
    fn sections(&self) -> Option<Vec<(PathBuf, Section)>> {
        let in_credentials = self
            .credentials_file
            .as_deref()
            .and_then(|f| section(f, &self.profile).map(|s| (f.to_path_buf(), s)));
        // The config file spells the default profile `[default]` (or `[profile default]`).
        let mut names = vec![format!("profile {}", self.profile)];
        if self.profile == "default" {
            names.insert(0, "default".to_string());
        }
        let in_config = self.config_file.as_deref().and_then(|f| {
            names
                .iter()
                .find_map(|n| section(f, n))
                .map(|s| (f.to_path_buf(), s))
        });
        let found: Vec<_> = in_credentials.into_iter().chain(in_config).collect();
        (!found.is_empty()).then_some(found)
    }

    fn get(sections: &[(PathBuf, Vec<(String, String)>)], key: &str) -> Option<Setting> {
        sections
            .iter()
            .find_map(|(f, s)| lookup(s, key).map(|v| (f.clone(), v)))
    }

    /// The profile's `region`, if the files have one.
    pub fn region(&self) -> Option<String> {
        Self::get(&self.sections()?, "region").map(|(_, v)| v)
    }

    /// The profile's credentials: `Ok(None)` when the default profile is absent or has
    /// none (the chain goes on); an error when `AWS_PROFILE` names a missing or
    /// incomplete profile.
    pub fn credentials(&self) -> Result<Option<Resolved>, String> {
        let profile = &self.profile;
        let Some(sections) = self.sections() else {
            if self.named {
                return Err(format!(
                    "AWS_PROFILE={profile}: no such profile in {} or {}; add it there or unset AWS_PROFILE",
                    shown(self.credentials_file.as_deref()),
                    shown(self.config_file.as_deref())
                ));
            }
            return Ok(None);
        };
        let get = |key: &str| Self::get(&sections, key);
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
            }));
        }
        if self.named {
            return Err(format!(
                "AWS_PROFILE={profile} has neither aws_access_key_id and aws_secret_access_key nor role_arn and web_identity_token_file; complete the profile or unset AWS_PROFILE"
            ));
        }
        Ok(None)
    }
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
            inside = head.split_whitespace().collect::<Vec<_>>().join(" ") == name;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_sections_and_keys_are_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("credentials");
        std::fs::write(
            &f,
            "# comment\n[default]\naws_access_key_id = A\n\n[profile  other]\nregion=eu-west-1\n[prod]\nAWS_SECRET_ACCESS_KEY = s = x\n",
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

    fn files(dir: &Path, profile: Option<&str>) -> SharedFiles {
        SharedFiles {
            profile: profile.unwrap_or("default").to_string(),
            named: profile.is_some(),
            credentials_file: Some(dir.join("credentials")),
            config_file: Some(dir.join("config")),
        }
    }

    #[test]
    fn profiles_take_keys_from_credentials_and_region_from_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("credentials"),
            "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n[backup]\naws_access_key_id = B\naws_secret_access_key = BS\naws_session_token = BT\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config"),
            "[default]\nregion = eu-west-1\n[profile backup]\nregion = eu-central-1\naws_access_key_id = ignored\n[profile pod]\nrole_arn = arn:aws:iam::1:role/r\nweb_identity_token_file = /var/run/token\n[profile empty]\noutput = json\n",
        )
        .unwrap();

        let backup = files(dir.path(), Some("backup"));
        let r = backup.credentials().unwrap().unwrap();
        let Found::Static(c) = r.found else {
            panic!("{r:?}")
        };
        assert_eq!(
            (c.access_key_id.as_str(), c.session_token.as_deref()),
            ("B", Some("BT"))
        );
        assert!(r.source.starts_with("profile backup in ") && r.source.ends_with("credentials"));
        assert_eq!(backup.region().as_deref(), Some("eu-central-1"));
        assert_eq!(
            files(dir.path(), None).region().as_deref(),
            Some("eu-west-1")
        );

        let pod = files(dir.path(), Some("pod"))
            .credentials()
            .unwrap()
            .unwrap();
        assert!(
            matches!(&pod.found, Found::WebIdentity { role_arn, session_name, .. }
                if role_arn == "arn:aws:iam::1:role/r" && session_name == "haven"),
            "{pod:?}"
        );

        // Named and missing or incomplete: errors that say what to do; the default
        // profile missing: the chain goes on.
        let e = files(dir.path(), Some("nope")).credentials().unwrap_err();
        assert!(e.contains("AWS_PROFILE=nope: no such profile"), "{e}");
        let e = files(dir.path(), Some("empty")).credentials().unwrap_err();
        assert!(e.contains("complete the profile"), "{e}");
        std::fs::remove_file(dir.path().join("credentials")).unwrap();
        assert!(files(dir.path(), None).credentials().unwrap().is_none());
        assert!(format!("{:?}", files(dir.path(), None)).contains("config"));
    }

    #[test]
    fn container_urls_over_http_stay_on_this_machine_or_the_agent() {
        for ok in [
            "https://creds.example/v1",
            "http://127.0.0.1:51679/creds",
            "http://localhost/creds",
            "http://[::1]:8080/creds",
            "http://169.254.170.23/v1/credentials",
            "http://169.254.170.2/creds",
        ] {
            assert!(check_container_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://creds.example/v1",
            "http://10.0.0.1/creds",
            "ftp://127.0.0.1/x",
            "nope",
        ] {
            let e = check_container_url(bad).unwrap_err();
            assert!(e.contains("AWS_CONTAINER_CREDENTIALS_FULL_URI"), "{e}");
        }
    }
}
