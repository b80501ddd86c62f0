//! The dashboard: one self-contained page (`dashboard.html`: inline CSS and script, no
//! external assets) served without data. Its script takes the API token once (a password
//! field, or `/#token=…` moved into `sessionStorage` and out of the address bar), reads
//! `/api/v1/tenants` and `/api/v1/jobs` with it every 5 s, and draws: per tenant the last
//! backup, the effective RPO against its target (red and `BREACHED` when breached, green
//! otherwise), the next run, the last verify with its measured restore time, recent
//! failures, and the running job's progress; then the disaster-recovery section from
//! `/api/v1/readiness` (per tenant: ready or not, newest and proven points with the
//! verified RPO, predicted RTO, last drill with its measured RTO, runbooks with a "Drill
//! now" button, problems); below, recent jobs and a job's log.
//!
//! The page is served with a Content-Security-Policy that allows exactly its own inline
//! script and style (by SHA-256 hash) and requests to this origin: data from the daemon
//! (tenant names, error messages) is only ever inserted as text, and even if it were not,
//! no injected script could run.

use std::sync::OnceLock;

use axum::http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY};
use axum::response::{IntoResponse, Response};
use base64::Engine;

pub(crate) const PAGE: &str = include_str!("dashboard.html");

pub(crate) async fn page() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CONTENT_SECURITY_POLICY, policy()),
            (REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
        .into_response()
}

fn policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        format!(
            "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; \
             img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash_of(inline(PAGE, "script")),
            hash_of(inline(PAGE, "style")),
        )
    })
}

/// The text of the page's single inline `<tag>` element.
fn inline<'a>(page: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = page.find(&open).expect("the page has its inline element") + open.len();
    let end = start
        + page[start..]
            .find(&close)
            .expect("the inline element is closed");
    &page[start..end]
}

fn hash_of(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_pages_script_and_style() {
        let p = policy();
        assert!(p.contains("script-src 'sha256-"), "{p}");
        assert!(p.contains("style-src 'sha256-"), "{p}");
        assert_eq!(PAGE.matches("<script>").count(), 1);
        assert_eq!(PAGE.matches("<style>").count(), 1);
        assert!(inline(PAGE, "script").contains("sessionStorage"));
    }
}
