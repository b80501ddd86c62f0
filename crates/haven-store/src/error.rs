//! Errors of the storage layer, classified so callers know whether a retry can help.

use std::fmt;

/// How an error should be handled by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The file does not exist.
    NotFound,
    /// Retrying later may succeed (timeouts, interrupted calls, throttling).
    Transient,
    /// Retrying will not help without a change by the user (permissions, corrupt data).
    Permanent,
    /// The device is full. Permanent until the user frees space.
    NoSpace,
}

/// An error from a backend: which location, which file, what happened, what class.
#[derive(Debug, thiserror::Error)]
pub struct StoreError {
    pub class: ErrorClass,
    pub location: String,
    pub file: String,
    pub message: String,
    #[source]
    pub source: Option<std::io::Error>,
}

impl StoreError {
    pub fn new(class: ErrorClass, location: &str, file: &str, message: impl Into<String>) -> Self {
        StoreError {
            class,
            location: location.to_string(),
            file: file.to_string(),
            message: message.into(),
            source: None,
        }
    }

    /// Classify an I/O error on `file` of the repository at `location`.
    pub fn io(location: &str, file: &str, action: &str, err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let class = match err.kind() {
            K::NotFound => ErrorClass::NotFound,
            K::Interrupted | K::TimedOut | K::WouldBlock => ErrorClass::Transient,
            _ if err.raw_os_error() == Some(libc::ENOSPC)
                || err.raw_os_error() == Some(libc::EDQUOT) =>
            {
                ErrorClass::NoSpace
            }
            _ => ErrorClass::Permanent,
        };
        let message = match class {
            ErrorClass::NoSpace => format!(
                "{action} failed: no space left on the device; free space and run the command again (files already in the repository are unchanged)"
            ),
            _ => format!("{action} failed: {err}"),
        };
        StoreError {
            class,
            location: location.to_string(),
            file: file.to_string(),
            message,
            source: Some(err),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.class == ErrorClass::NotFound
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.is_empty() {
            write!(f, "repository {}: {}", self.location, self.message)
        } else {
            write!(
                f,
                "repository {}, file {}: {}",
                self.location, self.file, self.message
            )
        }
    }
}
