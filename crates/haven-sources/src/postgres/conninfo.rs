//! libpq connection strings (URL and `key=value` forms): parsed to change the database
//! name and to keep the password off command lines; SQL identifier and literal quoting.

use crate::{Result, SourceError};

/// A PostgreSQL identifier in double quotes.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A PostgreSQL string literal (standard_conforming_strings, the default since 9.1).
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Percent-encode everything but RFC 3986's unreserved characters (user, password and
/// database name in a URL).
pub(crate) fn encode_userinfo(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_percent(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(digits, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A libpq connection string split into the parts we change (the database name) and the
/// one that must not appear on a command line (the password).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ConnInfo {
    form: Form,
    pub(super) password: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Form {
    /// `postgresql://[user[:password]@][hosts][/dbname][?params]`; user, hosts and params
    /// kept as written (still percent-encoded), the database name decoded.
    Url {
        scheme: String,
        user: Option<String>,
        hosts: String,
        dbname: Option<String>,
        params: Vec<(String, String)>,
    },
    /// `key=value key='quoted value'`, values unquoted.
    Pairs(Vec<(String, String)>),
}

impl ConnInfo {
    pub(super) fn parse(url: &str) -> Result<ConnInfo> {
        let url = url.trim();
        let invalid = |why: &str| {
            SourceError::Unsupported(format!(
                "the postgres url is not valid ({why}); write postgresql://user@host:port/dbname or host=... dbname=..."
            ))
        };
        for scheme in ["postgresql://", "postgres://"] {
            let Some(rest) = url.strip_prefix(scheme) else {
                continue;
            };
            let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (authority, path) = main.split_once('/').unwrap_or((main, ""));
            let (userinfo, hosts) = match authority.rsplit_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, authority),
            };
            let (user, mut password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, "")))
            {
                Some((u, p)) => (
                    (!u.is_empty()).then(|| u.to_string()),
                    (!p.is_empty()).then(|| decode_percent(p)),
                ),
                None => (None, None),
            };
            let mut dbname = (!path.is_empty()).then(|| decode_percent(path));
            let mut params = vec![];
            for param in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = param
                    .split_once('=')
                    .ok_or_else(|| invalid(&format!("parameter {param:?} has no value")))?;
                match k {
                    "password" => password = Some(decode_percent(v)),
                    "dbname" => dbname = Some(decode_percent(v)),
                    _ => params.push((k.to_string(), v.to_string())),
                }
            }
            return Ok(ConnInfo {
                form: Form::Url {
                    scheme: scheme.to_string(),
                    user,
                    hosts: hosts.to_string(),
                    dbname,
                    params,
                },
                password,
            });
        }
        let pairs = parse_pairs(url).map_err(|why| invalid(&why))?;
        let password = pairs
            .iter()
            .find(|(k, _)| k == "password")
            .map(|(_, v)| v.clone());
        Ok(ConnInfo {
            form: Form::Pairs(pairs.into_iter().filter(|(k, _)| k != "password").collect()),
            password,
        })
    }

    pub(super) fn dbname(&self) -> Option<String> {
        match &self.form {
            Form::Url { dbname, .. } => dbname.clone(),
            Form::Pairs(pairs) => pairs
                .iter()
                .find(|(k, _)| k == "dbname")
                .map(|(_, v)| v.clone()),
        }
    }

    /// The one host named in the connection string (not a unix socket folder); `None`
    /// when there is none or several.
    pub(super) fn host(&self) -> Option<String> {
        let host = match &self.form {
            Form::Url { hosts, params, .. } => match params.iter().find(|(k, _)| k == "host") {
                Some((_, h)) => h.clone(),
                None if hosts.contains(',') => return None,
                None => match hosts.rsplit_once(':') {
                    Some((h, p)) if p.parse::<u16>().is_ok() => h.to_string(),
                    _ => hosts.clone(),
                },
            },
            Form::Pairs(pairs) => pairs.iter().find(|(k, _)| k == "host")?.1.clone(),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        (!host.is_empty() && !host.starts_with('/') && !host.contains(',')).then_some(host)
    }

    /// The same connection on another host and port (a URL keeps user and database).
    pub(super) fn with_host_port(&self, host: &str, port: u16) -> ConnInfo {
        let mut out = self.clone();
        match &mut out.form {
            Form::Url { hosts, params, .. } => {
                *hosts = format!("{host}:{port}");
                params.retain(|(k, _)| k != "host" && k != "port");
            }
            Form::Pairs(pairs) => {
                pairs.retain(|(k, _)| k != "host" && k != "port" && k != "hostaddr");
                pairs.push(("host".into(), host.to_string()));
                pairs.push(("port".into(), port.to_string()));
            }
        }
        out
    }

    /// The port named in the connection string (URL `host:port`, or `port=`); `None`
    /// when it names none (libpq's default 5432 then applies) or several hosts.
    pub(super) fn port(&self) -> Option<u16> {
        match &self.form {
            Form::Url { hosts, params, .. } => {
                let from_params = params.iter().find(|(k, _)| k == "port").map(|(_, v)| v);
                match from_params {
                    Some(p) => p.parse().ok(),
                    None if hosts.contains(',') => None,
                    // `[::1]` has colons but no port: its tail `1]` is no number.
                    None => hosts.rsplit_once(':').and_then(|(_, p)| p.parse().ok()),
                }
            }
            Form::Pairs(pairs) => pairs
                .iter()
                .find(|(k, _)| k == "port")
                .and_then(|(_, v)| v.parse().ok()),
        }
    }

    pub(super) fn with_dbname(&self, db: &str) -> ConnInfo {
        let mut out = self.clone();
        match &mut out.form {
            Form::Url { dbname, .. } => *dbname = Some(db.to_string()),
            Form::Pairs(pairs) => {
                pairs.retain(|(k, _)| k != "dbname");
                pairs.push(("dbname".into(), db.to_string()));
            }
        }
        out
    }

    /// The connection string, with the password only when asked for.
    pub(super) fn render(&self, with_password: bool) -> String {
        let password = self.password.as_deref().filter(|_| with_password);
        match &self.form {
            Form::Url {
                scheme,
                user,
                hosts,
                dbname,
                params,
            } => {
                let mut s = scheme.clone();
                match (user, password) {
                    (Some(u), Some(p)) => s.push_str(&format!("{u}:{}@", encode_userinfo(p))),
                    (Some(u), None) => s.push_str(&format!("{u}@")),
                    (None, Some(p)) => s.push_str(&format!(":{}@", encode_userinfo(p))),
                    (None, None) => {}
                }
                s.push_str(hosts);
                if let Some(db) = dbname {
                    s.push('/');
                    s.push_str(&encode_userinfo(db));
                }
                let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                if !params.is_empty() {
                    s.push('?');
                    s.push_str(&params.join("&"));
                }
                s
            }
            Form::Pairs(pairs) => {
                let mut all: Vec<(&str, &str)> = pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                if let Some(p) = password {
                    all.push(("password", p));
                }
                all.iter()
                    .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        }
    }
}

/// Parse libpq's `key=value` conninfo (values optionally single-quoted, `\` escapes).
fn parse_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = vec![];
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return if out.is_empty() {
                Err("it is empty".into())
            } else {
                Ok(out)
            };
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("{key:?} is not followed by ="));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("the value of {key} lacks its closing quote")),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_keeps_its_password_off_the_rendered_string_and_changes_database() {
        let c =
            ConnInfo::parse("postgresql://app:s%40cret%2F@db.example:6432/my%20db?sslmode=require")
                .unwrap();
        assert_eq!(c.password.as_deref(), Some("s@cret/"));
        assert_eq!(c.dbname().as_deref(), Some("my db"));
        assert_eq!(
            c.render(false),
            "postgresql://app@db.example:6432/my%20db?sslmode=require"
        );
        assert_eq!(
            c.with_dbname("postgres").render(true),
            "postgresql://app:s%40cret%2F@db.example:6432/postgres?sslmode=require"
        );
        let q = ConnInfo::parse("postgres://u@h/x?password=pw&dbname=y").unwrap();
        assert_eq!(
            (q.password.as_deref(), q.dbname().as_deref()),
            (Some("pw"), Some("y"))
        );
        assert_eq!(q.render(false), "postgres://u@h/y");
        let bare = ConnInfo::parse("postgresql://").unwrap();
        assert_eq!(bare.dbname(), None);
        assert_eq!(bare.with_dbname("a").render(false), "postgresql:///a");
    }

    #[test]
    fn key_value_conninfo_is_parsed_and_rendered_without_the_password() {
        let c = ConnInfo::parse("host=/run/pg port = 5433 dbname='a b' password='p w\\'x' user=me")
            .unwrap();
        assert_eq!(c.password.as_deref(), Some("p w'x"));
        assert_eq!(c.dbname().as_deref(), Some("a b"));
        assert_eq!(
            c.render(false),
            "host='/run/pg' port='5433' dbname='a b' user='me'"
        );
        assert_eq!(
            ConnInfo::parse(&c.with_dbname("z").render(true)).unwrap(),
            c.with_dbname("z")
        );
        assert!(ConnInfo::parse("mydb").is_err());
        assert!(ConnInfo::parse("dbname='open").is_err());
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(decode_percent("%41b%zz%é%"), "Ab%zz%é%");
    }
}
