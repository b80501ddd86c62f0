//! Webhook delivery: one HTTP/1.1 POST of a JSON document (`Connection: close`), over TLS
//! for `https://`. Any 2xx answer is success; anything else, including a redirect, is an
//! error that quotes the status and the start of the body.

use serde_json::json;

use super::config::{redact_url, WebhookConfig};
use super::net::{self, Conn};
use super::{AlertError, Notification};

/// The JSON sent: Slack-compatible `text` plus the structured fields.
pub fn payload(sink: &str, n: &Notification) -> serde_json::Value {
    let a = &n.alert;
    json!({
        "version": 1,
        "text": slack_escape(&format!("[haven] {}", n.headline())),
        "state": a.state,
        "reminder": n.reminder,
        "key": a.key,
        "tenant": a.tenant,
        "component": a.component,
        "kind": a.kind,
        "summary": a.summary,
        "details": a.details,
        "time": a.time,
        "first_fired": n.first_fired,
        "sink": sink,
    })
}

/// Slack's `text` treats `&`, `<` and `>` as markup.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(crate) fn send(sink: &str, c: &WebhookConfig, n: &Notification) -> Result<(), AlertError> {
    let target = redact_url(&c.url);
    let fail = |message: String| AlertError::Webhook {
        sink: sink.to_string(),
        target: target.clone(),
        message,
    };
    let url = url::Url::parse(&c.url).map_err(|e| fail(format!("invalid URL: {e}")))?;
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        s => return Err(fail(format!("scheme {s} is not supported"))),
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(fail("the URL has no host".into())),
    };
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let mut target_path = url.path().to_string();
    if let Some(q) = url.query() {
        target_path.push('?');
        target_path.push_str(q);
    }
    let host_header = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => unreachable!("checked above"),
    };

    let body = serde_json::to_vec(&payload(sink, n)).expect("JSON of plain values");
    let mut head = format!(
        "POST {target_path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: haven/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    for (name, value) in &c.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");

    let deadline = net::deadline(c.timeout());
    let io = |what: &str, e: std::io::Error| fail(format!("{what}: {}", net::describe_io(&e)));
    let mut conn = Conn::connect(&host, port, deadline).map_err(|e| io("cannot connect", e))?;
    if tls {
        let config = net::tls_config(c.ca_file.as_deref()).map_err(|e| fail(e.to_string()))?;
        conn.start_tls(&host, config)
            .map_err(|e| io("TLS handshake failed", e))?;
    }
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);
    conn.write_all(&request)
        .map_err(|e| io("sending the request", e))?;

    let status_line = conn.read_line().map_err(|e| io("reading the answer", e))?;
    let mut parts = status_line.splitn(3, ' ');
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code.parse::<u16>().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        fail(format!(
            "not an HTTP answer: {:?}",
            truncate(&status_line, 80)
        ))
    })?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    // An error: say which, with the start of the body (receivers explain there).
    let mut content_length = None;
    let mut chunked = false;
    let mut location = None;
    while let Ok(line) = conn.read_line() {
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "location" => location = Some(redact_url(value)),
                _ => {}
            }
        }
    }
    if chunked {
        // The first chunk is enough for a message.
        content_length = conn
            .read_line()
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok());
    }
    let body = conn
        .read_up_to(content_length.unwrap_or(512).min(512))
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body);
    let reason = parts.next().unwrap_or("").trim();
    let mut message = format!("HTTP {status} {reason}").trim_end().to_string();
    if (300..400).contains(&status) {
        message.push_str(&format!(
            " (redirects are not followed; use the final URL{})",
            location.map(|l| format!(" at {l}")).unwrap_or_default()
        ));
    }
    let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if !body.is_empty() {
        message.push_str(&format!(": {}", truncate(&body, 200)));
    }
    Err(fail(message))
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max).collect();
    t.push('…');
    t
}
