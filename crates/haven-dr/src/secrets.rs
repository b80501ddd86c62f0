//! Redaction of the audit log and step messages: every value a run learns is secret
//! (`${env.*}` values, TSIG key and API token files' contents) is replaced by
//! `[redacted]` before it is written or printed.

use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Redactor {
    secrets: Mutex<Vec<String>>,
}

impl Redactor {
    /// Remember a secret value (short ones are ignored: they would blank common text).
    pub fn add(&self, value: &str) {
        let v = value.trim();
        if v.len() >= 4 {
            let mut s = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
            if !s.iter().any(|x| x == v) {
                s.push(v.to_string());
                // Longest first, so a secret containing another is blanked whole.
                s.sort_by_key(|x| std::cmp::Reverse(x.len()));
            }
        }
    }

    /// Remember every secret line of a key or token file.
    pub fn add_file_contents(&self, text: &str) {
        self.add(text);
        for line in text.lines() {
            self.add(line);
            // A BIND key file's secret is the quoted base64 value.
            if let Some(q) = line.split('"').nth(1).filter(|_| line.contains("secret")) {
                self.add(q);
            }
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let s = self.secrets.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_string();
        for secret in s.iter() {
            out = out.replace(secret.as_str(), "[redacted]");
        }
        out
    }
}
