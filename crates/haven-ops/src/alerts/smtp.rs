//! SMTP delivery: a small submission client of our own (RFC 5321): greeting, `EHLO`,
//! `STARTTLS` (per [`SmtpTls`]), `AUTH PLAIN` or `AUTH LOGIN`, `MAIL FROM`, `RCPT TO`
//! for every recipient, `DATA` with dot-stuffing, `QUIT`. The message is RFC 5322 plain
//! text: 7bit when it can be, quoted-printable otherwise, so any server takes it.
//!
//! Limits: no pipelining, no 8BITMIME/SMTPUTF8 (addresses are ASCII), one message per
//! connection. A recipient the server refuses aborts the whole message (`RSET`), so a
//! retry never sends twice to the others. Errors name the server and quote its reply;
//! the password is read from its file at each delivery and never appears in them.

use base64::Engine as _;
use chrono::Utc;

use super::config::{SmtpConfig, SmtpTls};
use super::net::{self, Conn};
use super::webhook::truncate;
use super::{one_line, AlertError, AlertState, Notification};

struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, truncate(&self.lines.join(" "), 300))
    }
}

struct Session<'a> {
    sink: &'a str,
    server: String,
    conn: Conn,
}

fn fail(sink: &str, server: &str, message: String) -> AlertError {
    AlertError::Smtp {
        sink: sink.to_string(),
        server: server.to_string(),
        message,
    }
}

impl Session<'_> {
    fn fail(&self, message: String) -> AlertError {
        fail(self.sink, &self.server, message)
    }

    fn io(&self, what: &str, e: std::io::Error) -> AlertError {
        self.fail(format!("{what}: {}", net::describe_io(&e)))
    }

    fn reply(&mut self, after: &str) -> Result<Reply, AlertError> {
        let mut lines = Vec::new();
        loop {
            let line = self
                .conn
                .read_line()
                .map_err(|e| self.io(&format!("reading the reply to {after}"), e))?;
            let code = line
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| {
                    self.fail(format!(
                        "not an SMTP reply to {after}: {:?}",
                        truncate(&line, 80)
                    ))
                })?;
            lines.push(line.get(4..).unwrap_or("").trim().to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply { code, lines });
            }
            if lines.len() > 200 {
                return Err(self.fail(format!("endless reply to {after}")));
            }
        }
    }

    /// Send `line`, expect one of `ok`. `shown` is what errors call the command (never
    /// the credentials of an AUTH line).
    fn command(&mut self, line: &str, shown: &str, ok: &[u16]) -> Result<Reply, AlertError> {
        self.conn
            .write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| self.io(&format!("sending {shown}"), e))?;
        let reply = self.reply(shown)?;
        if !ok.contains(&reply.code) {
            return Err(self.fail(format!("{shown} refused: {reply}")));
        }
        Ok(reply)
    }

    /// EHLO (HELO when refused): the extension keywords offered, upper-cased.
    fn hello(&mut self) -> Result<Vec<String>, AlertError> {
        let name = match self.conn.local_addr() {
            Ok(std::net::SocketAddr::V4(a)) => format!("[{}]", a.ip()),
            Ok(std::net::SocketAddr::V6(a)) => format!("[IPv6:{}]", a.ip()),
            Err(_) => "localhost".to_string(),
        };
        match self.command(&format!("EHLO {name}"), "EHLO", &[250]) {
            Ok(r) => Ok(r
                .lines
                .iter()
                .skip(1)
                .map(|l| l.to_ascii_uppercase())
                .collect()),
            Err(_) => {
                self.command(&format!("HELO {name}"), "HELO", &[250])?;
                Ok(Vec::new())
            }
        }
    }

    fn auth(&mut self, user: &str, password: &str, ext: &[String]) -> Result<(), AlertError> {
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let mechs: Vec<&str> = ext
            .iter()
            .filter_map(|l| l.strip_prefix("AUTH").filter(|r| r.starts_with([' ', '='])))
            .flat_map(|r| r[1..].split_whitespace())
            .collect();
        if mechs.contains(&"PLAIN") {
            let token = b64(format!("\0{user}\0{password}").as_bytes());
            self.command(&format!("AUTH PLAIN {token}"), "AUTH PLAIN", &[235])
                .map_err(|e| self.auth_error(e, user))?;
        } else if mechs.contains(&"LOGIN") {
            self.command("AUTH LOGIN", "AUTH LOGIN", &[334])?;
            self.command(&b64(user.as_bytes()), "AUTH LOGIN (user name)", &[334])
                .map_err(|e| self.auth_error(e, user))?;
            self.command(&b64(password.as_bytes()), "AUTH LOGIN (password)", &[235])
                .map_err(|e| self.auth_error(e, user))?;
        } else {
            return Err(self.fail(format!(
                "username is set but the server offers no AUTH PLAIN or LOGIN (offers: {})",
                if mechs.is_empty() {
                    "no AUTH".to_string()
                } else {
                    mechs.join(" ")
                }
            )));
        }
        Ok(())
    }

    fn auth_error(&self, e: AlertError, user: &str) -> AlertError {
        match e {
            AlertError::Smtp { message, .. } => self.fail(format!(
                "login as {user:?} failed ({message}); check username and password-file"
            )),
            other => other,
        }
    }
}

pub(crate) fn send(sink: &str, c: &SmtpConfig, n: &Notification) -> Result<(), AlertError> {
    let (host, port) = c
        .server_addr()
        .map_err(|m| fail(sink, &c.server, format!("bad server: {m}")))?;
    let server = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let deadline = net::deadline(c.timeout());
    let conn = Conn::connect(&host, port, deadline).map_err(|e| {
        fail(
            sink,
            &server,
            format!("cannot connect: {}", net::describe_io(&e)),
        )
    })?;
    let mut s = Session { sink, server, conn };
    let mode = c.effective_tls();
    let tls_config =
        |s: &Session| net::tls_config(c.ca_file.as_deref()).map_err(|e| s.fail(e.to_string()));
    if mode == SmtpTls::Tls {
        let config = tls_config(&s)?;
        s.conn
            .start_tls(&host, config)
            .map_err(|e| s.io("TLS handshake failed", e))?;
    }
    let greeting = s.reply("the connection")?;
    if greeting.code != 220 {
        return Err(s.fail(format!("the server refuses sessions: {greeting}")));
    }
    let mut ext = s.hello()?;
    let offers_starttls = ext.iter().any(|l| l == "STARTTLS");
    if mode == SmtpTls::Starttls && !offers_starttls {
        return Err(s.fail(
            "tls = \"starttls\" but the server does not offer STARTTLS; use tls = \"tls\" for port 465, or \"none\" on a trusted link".into(),
        ));
    }
    if offers_starttls && matches!(mode, SmtpTls::Starttls | SmtpTls::Auto) {
        s.command("STARTTLS", "STARTTLS", &[220])?;
        let config = tls_config(&s)?;
        s.conn
            .start_tls(&host, config)
            .map_err(|e| s.io("STARTTLS handshake failed", e))?;
        ext = s.hello()?;
    }
    if let Some(user) = &c.username {
        if !s.conn.is_tls() && mode != SmtpTls::None {
            return Err(s.fail(
                "the server offers no STARTTLS and the password is not sent in plain text; enable TLS on the server, use tls = \"tls\", or set tls = \"none\" on a trusted link".into(),
            ));
        }
        let path = c
            .password_file
            .as_deref()
            .ok_or_else(|| s.fail("username is set but password-file is not".into()))?;
        let password = std::fs::read_to_string(path)
            .map_err(|e| s.fail(format!("cannot read password-file {}: {e}", path.display())))?;
        s.auth(user, password.trim_end_matches(['\r', '\n']), &ext)?;
    }

    let from = format!("MAIL FROM:<{}>", c.from);
    s.command(&from, &from, &[250])?;
    for to in &c.to {
        if let Err(e) = s.command(
            &format!("RCPT TO:<{to}>"),
            &format!("RCPT TO:<{to}>"),
            &[250, 251],
        ) {
            // Nothing is sent to anyone: a retry must not duplicate the others' copy.
            let _ = s.command("RSET", "RSET", &[250]);
            let _ = s.command("QUIT", "QUIT", &[221]);
            return Err(match e {
                AlertError::Smtp { message, .. } => s.fail(format!(
                    "{message}; nothing was sent; check `to` and the server's relay rules"
                )),
                other => other,
            });
        }
    }
    s.command("DATA", "DATA", &[354])?;
    let mut data = dot_stuff(&message(c, n));
    data.push_str(".\r\n");
    s.conn
        .write_all(data.as_bytes())
        .map_err(|e| s.io("sending the message", e))?;
    let done = s.reply("the message")?;
    if done.code != 250 {
        return Err(s.fail(format!("the message was refused: {done}")));
    }
    // Delivered; a failing QUIT changes nothing.
    let _ = s.command("QUIT", "QUIT", &[221]);
    Ok(())
}

/// CR LF line ends, a leading dot doubled (RFC 5321 4.5.2), ending with CR LF.
fn dot_stuff(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 64);
    for line in message.lines() {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

/// The RFC 5322 message (LF line ends; [`dot_stuff`] makes them CR LF).
pub fn message(c: &SmtpConfig, n: &Notification) -> String {
    let a = &n.alert;
    let now = Utc::now();
    let subject = one_line(&format!("{} {}", c.subject_prefix(), n.headline()));
    let domain = c.from.rsplit_once('@').map_or("haven.invalid", |(_, d)| d);
    let id = blake3::hash(format!("{}|{:?}|{}|{}", a.key, a.state, n.reminder, a.time).as_bytes());
    let message_id = format!(
        "<{}.{}@{domain}>",
        now.timestamp_nanos_opt().unwrap_or_default(),
        &id.to_hex()[..16]
    );
    let ascii = |s: &str| -> String {
        one_line(s)
            .chars()
            .map(|ch| if ch.is_ascii() { ch } else { '?' })
            .collect()
    };

    let mut body = String::new();
    body.push_str(&n.headline());
    body.push_str("\n\n");
    body.push_str(&format!("Tenant:     {}\n", a.tenant));
    if let Some(comp) = &a.component {
        body.push_str(&format!("Component:  {comp}\n"));
    }
    body.push_str(&format!(
        "Condition:  {} (key {})\n",
        a.kind.as_str(),
        a.key
    ));
    body.push_str(&format!(
        "Firing since: {}\n",
        n.first_fired.format("%Y-%m-%d %H:%M:%S UTC")
    ));
    if a.state == AlertState::Resolved {
        body.push_str(&format!(
            "Resolved:   {}\n",
            a.time.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    if !a.details.trim().is_empty() {
        body.push('\n');
        body.push_str(a.details.trim_end());
        body.push('\n');
    }
    body.push_str(
        "\n-- \nSent by haven: one message when a condition starts, reminders while it lasts,\none when it is resolved.\n",
    );

    let needs_qp = !body.is_ascii() || body.lines().any(|l| l.len() > 998);
    let mut m = String::new();
    m.push_str(&format!("Date: {}\n", now.to_rfc2822()));
    m.push_str(&format!("From: {}\n", c.from));
    let to = c.to.join(", ");
    // Fold a long list: header lines stay well under the 998-byte limit.
    let to = if to.len() > 70 { c.to.join(",\n ") } else { to };
    m.push_str(&format!("To: {to}\n"));
    m.push_str(&format!("Subject: {}\n", encode_header(&subject)));
    m.push_str(&format!("Message-ID: {message_id}\n"));
    m.push_str("MIME-Version: 1.0\n");
    m.push_str("Content-Type: text/plain; charset=utf-8\n");
    m.push_str(&format!(
        "Content-Transfer-Encoding: {}\n",
        if needs_qp { "quoted-printable" } else { "7bit" }
    ));
    // RFC 3834: no vacation auto-replies to a machine.
    m.push_str("Auto-Submitted: auto-generated\n");
    m.push_str(&format!("X-Haven-Alert-Key: {}\n", ascii(&a.key)));
    m.push_str(&format!("X-Haven-Alert-State: {}\n", a.state.as_str()));
    m.push('\n');
    if needs_qp {
        m.push_str(&quoted_printable(&body));
    } else {
        m.push_str(&body);
    }
    m
}

/// ASCII as is; otherwise RFC 2047 encoded words, folded.
fn encode_header(text: &str) -> String {
    if text.is_ascii() {
        return text.to_string();
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for ch in text.chars() {
        if chunk.len() + ch.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(ch);
    }
    words.push(chunk);
    words
        .iter()
        .map(|w| {
            format!(
                "=?utf-8?b?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join("\n ")
}

/// Quoted-printable (RFC 2045 6.7) of LF-separated text, soft-wrapped at 76.
fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 11 / 10);
    for line in text.lines() {
        let bytes = line.as_bytes();
        let mut width = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let token = match b {
                b'=' => "=3D".to_string(),
                b' ' | b'\t' if last => format!("={b:02X}"),
                33..=126 | b' ' | b'\t' => (b as char).to_string(),
                _ => format!("={b:02X}"),
            };
            if width + token.len() > 75 {
                out.push_str("=\n");
                width = 0;
            }
            width += token.len();
            out.push_str(&token);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_are_stuffed_and_lines_end_in_crlf() {
        assert_eq!(dot_stuff("a\n.b\n\n..c\n"), "a\r\n..b\r\n\r\n...c\r\n");
    }

    #[test]
    fn quoted_printable_keeps_lines_short_and_escapes() {
        let long = "é".repeat(100);
        let qp = quoted_printable(&format!("x = 1 \n{long}\n"));
        assert!(qp.starts_with("x =3D 1=20\n"));
        assert!(qp.lines().all(|l| l.len() <= 76));
        assert!(qp.contains("=C3=A9"));
    }

    #[test]
    fn non_ascii_subjects_are_encoded_words() {
        let s = encode_header("Sicherung fehlgeschlagen: Müller");
        assert!(s.starts_with("=?utf-8?b?"));
        assert!(encode_header("plain").eq("plain"));
    }
}
