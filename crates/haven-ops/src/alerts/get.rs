//! A plain HTTP GET over the alert senders' connection ([`net::Conn`]: deadline, TLS with
//! the system's CAs): what a runbook's `http` and `wait` steps poll. One request, no
//! redirects followed, the body kept up to [`BODY_KEEP`] bytes.

use std::time::Duration;

use super::net::{self, Conn};

/// How much of a body is kept (enough for a health answer).
pub const BODY_KEEP: usize = 64 << 10;

/// GET `url`; the status and the (start of the) body. Errors say what failed, with the
/// URL's scheme, host and port only.
pub fn http_get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let tls = match parsed.scheme() {
        "http" => false,
        "https" => true,
        s => return Err(format!("{s}:// is not http:// or https://")),
    };
    let host = parsed
        .host_str()
        .ok_or_else(|| format!("{url:?} has no host"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let target = format!("{}://{host}:{port}", parsed.scheme());
    let mut path = parsed.path().to_string();
    if let Some(q) = parsed.query() {
        path.push('?');
        path.push_str(q);
    }
    let host_header = match parsed.port() {
        Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or_default()),
        None => parsed.host_str().unwrap_or_default().to_string(),
    };
    let io = |what: &str, e: std::io::Error| format!("{target}: {what}: {}", net::describe_io(&e));
    let deadline = net::deadline(timeout);
    let mut conn = Conn::connect(&host, port, deadline).map_err(|e| io("cannot connect", e))?;
    if tls {
        let config = net::tls_config(None).map_err(|e| format!("{target}: {e}"))?;
        conn.start_tls(&host, config)
            .map_err(|e| io("TLS handshake failed", e))?;
    }
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: haven/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    conn.write_all(head.as_bytes())
        .map_err(|e| io("sending the request", e))?;
    let status_line = conn.read_line().map_err(|e| io("reading the answer", e))?;
    let mut parts = status_line.splitn(3, ' ');
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code.parse::<u16>().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        format!(
            "{target}: not an HTTP answer: {:?}",
            super::webhook::truncate(&status_line, 80)
        )
    })?;
    let (mut length, mut chunked) = (None, false);
    loop {
        let line = conn.read_line().map_err(|e| io("reading the headers", e))?;
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        while body.len() < BODY_KEEP {
            let size = conn
                .read_line()
                .ok()
                .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
                .unwrap_or(0);
            if size == 0 {
                break;
            }
            body.extend(
                conn.read_up_to(size)
                    .map_err(|e| io("reading the body", e))?,
            );
            let _ = conn.read_line();
        }
    } else {
        body = conn
            .read_up_to(length.unwrap_or(BODY_KEEP).min(BODY_KEEP))
            .unwrap_or_default();
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
