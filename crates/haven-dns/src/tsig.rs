//! TSIG keys as BIND writes them (`tsig-keygen`, `rndc-confgen`, `ddns-confgen`):
//! `key "name" { algorithm hmac-sha256; secret "base64"; };`. The secret never leaves this
//! module except into the signer; `Debug` prints the name and algorithm only.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::rr::Name;

use crate::DnsError;

/// A shared secret for signing UPDATEs (RFC 8945). hmac-sha256 is the default and what the
/// docs recommend; hmac-sha384/512 work too.
#[derive(Clone)]
pub struct TsigKey {
    name: String,
    algorithm: String,
    secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TsigKey {
    /// A key from its parts; `secret_b64` as in the key file.
    pub fn new(name: &str, algorithm: &str, secret_b64: &str) -> Result<TsigKey, String> {
        let algorithm = algorithm.trim().trim_end_matches('.').to_ascii_lowercase();
        if !matches!(
            algorithm.as_str(),
            "hmac-sha256" | "hmac-sha384" | "hmac-sha512"
        ) {
            return Err(format!("algorithm {algorithm:?} is not supported: use hmac-sha256 (tsig-keygen -a hmac-sha256)"));
        }
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret_b64.trim())
            .map_err(|_| "the secret is not valid base64".to_string())?;
        if secret.is_empty() {
            return Err("the secret is empty".into());
        }
        let name = crate::fqdn(name);
        Name::from_ascii(&name).map_err(|_| format!("key name {name:?} is not a domain name"))?;
        Ok(TsigKey {
            name,
            algorithm,
            secret,
        })
    }

    /// Reads the first `key` statement of a BIND key file.
    pub fn from_file(path: &Path) -> Result<TsigKey, DnsError> {
        let err = |detail: String| DnsError::KeyFile {
            path: path.to_path_buf(),
            detail,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read it ({e}): check tsig-key-file")))?;
        Self::parse(&text).map_err(|d| {
            err(format!(
                "{d}; expected key \"name\" {{ algorithm hmac-sha256; secret \"base64\"; }};"
            ))
        })
    }

    /// Parses BIND's key syntax (comments `#`, `//` allowed).
    pub fn parse(text: &str) -> Result<TsigKey, String> {
        let text = strip_comments(text);
        let rest = text.trim_start();
        let rest = rest
            .strip_prefix("key")
            .ok_or("no key statement")?
            .trim_start();
        let (name, rest) = if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').ok_or("unterminated key name")?;
            (&r[..end], &r[end + 1..])
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '{')
                .ok_or("no key name")?;
            (&rest[..end], &rest[end..])
        };
        let open = rest.find('{').ok_or("no { after the key name")?;
        let close = rest.find('}').ok_or("no } closing the key")?;
        let body = &rest[open + 1..close];
        let (mut algorithm, mut secret) = (None, None);
        for stmt in body.split(';') {
            let stmt = stmt.trim();
            if let Some(v) = stmt.strip_prefix("algorithm") {
                algorithm = Some(v.trim().trim_matches('"').to_string());
            } else if let Some(v) = stmt.strip_prefix("secret") {
                secret = Some(v.trim().trim_matches('"').to_string());
            }
        }
        TsigKey::new(
            name,
            &algorithm.ok_or("no algorithm in the key")?,
            &secret.ok_or("no secret in the key")?,
        )
    }

    /// The key's name as the server knows it (with the final dot).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    pub(crate) fn signer(&self) -> TSigner {
        let alg = match self.algorithm.as_str() {
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            _ => TsigAlgorithm::HmacSha256,
        };
        // Name and algorithm were checked in new(); 300 s fudge is BIND's and RFC 8945's default.
        TSigner::new(
            self.secret.clone(),
            alg,
            Name::from_ascii(&self.name).expect("checked in new"),
            300,
        )
        .expect("hmac-sha2 is supported with dnssec-ring")
    }
}

/// The text without `#` and `//` comments outside double quotes: a base64 secret may hold
/// `//` (and a line cut there made a valid key unreadable about once in 30 keys).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let comment = !quoted && (c == '#' || (c == '/' && chars.peek() == Some(&'/')));
        if comment {
            for skipped in chars.by_ref() {
                if skipped == '\n' {
                    out.push('\n');
                    break;
                }
            }
            continue;
        }
        if c == '"' {
            quoted = !quoted;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tsig_keygen_output() {
        let k = TsigKey::parse(
            "# made by tsig-keygen\nkey \"haven-dr\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\";\n};\n",
        )
        .unwrap();
        assert_eq!(k.name(), "haven-dr.");
        assert_eq!(k.algorithm(), "hmac-sha256");
        assert!(
            !format!("{k:?}").contains("c2Vj"),
            "Debug must not print the secret"
        );
    }

    #[test]
    fn a_secret_holding_slashes_is_not_cut_as_a_comment() {
        let k = TsigKey::parse(
            "key \"k\" { // the test key\n algorithm hmac-sha256; # sha-2\n secret \"ab//cd+/ef12345678gh\"; };",
        )
        .unwrap();
        assert_eq!(
            k.secret,
            base64::engine::general_purpose::STANDARD
                .decode("ab//cd+/ef12345678gh")
                .unwrap()
        );
    }

    #[test]
    fn refuses_bad_keys() {
        assert!(
            TsigKey::parse("key k { algorithm hmac-md5; secret \"YQ==\"; };")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            TsigKey::parse("key k { algorithm hmac-sha256; secret \"!!\"; };")
                .unwrap_err()
                .contains("base64")
        );
        assert!(TsigKey::parse("key k { algorithm hmac-sha256; };")
            .unwrap_err()
            .contains("no secret"));
        assert!(TsigKey::parse("").unwrap_err().contains("no key"));
    }
}
