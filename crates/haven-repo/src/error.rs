//! Errors of the repository engine.
//!
//! Rules: every variant says which object or path it concerns; messages end with what
//! the user can do next where there is something to do; storage errors keep their
//! class (`haven_store::ErrorClass`) so callers can tell transient from permanent.
//! A variant that names its cause in its message still returns it from `source()`;
//! whoever prints a whole chain skips causes the line already holds (the CLI's
//! `output::error_line`), so an OS error is printed once.

use haven_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no Haven repository at {0}; create one with `haven init --repo {0}`")]
    NotARepository(String),
    /// Config or key slots without a marker: the marker was deleted, or an `init` was
    /// interrupted (it writes the marker last).
    #[error("the location {location} holds a Haven repository's config and key slots but no format marker `haven-repository`, so haven neither opens nor re-creates it. If the marker was deleted, write it back: a file `haven-repository` at the repository's root holding the two lines `haven repository` and `format-version {version}` (for a folder: printf 'haven repository\\nformat-version {version}\\n' > {location}/haven-repository). If an init there was interrupted instead, remove the location and create the repository again")]
    MarkerMissing { location: String, version: u32 },
    #[error("the repository at {location} uses format version {found}; this haven reads up to version {supported}: upgrade haven")]
    NewerFormat {
        location: String,
        found: u32,
        supported: u32,
    },
    #[error("wrong passphrase or key file for the repository at {0}: no key slot opens with it (list slots with `haven key list` using a working key)")]
    WrongPassword(String),
    /// No slot opened, and some could not even be tried: the secret may belong to one
    /// of those.
    #[error("{}", key_slots_damaged(location, damaged, *intact))]
    KeySlotsDamaged {
        location: String,
        damaged: Vec<crate::keys::DamagedSlot>,
        /// How many intact slots were tried and did not open with the secret.
        intact: usize,
    },
    #[error("{what} is damaged: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Locked(String),
    /// Only an unreadable lock file stands in the way (FORMAT.md 16.4): it blocks
    /// every lock, but `check` runs beside it and notes it.
    #[error("the repository at {location} is in use by an unreadable lock file {name} (damaged, or from a newer haven); wait for it to finish, or retry with --lock-wait 10m (if no other haven is running, `haven unlock` removes it; `haven check` runs beside it)")]
    UnreadableLock { location: String, name: String },
    /// The holder's lock went stale for others or its file was removed: it stops
    /// before committing anything, since another haven may have pruned meanwhile.
    #[error("the lock on the repository at {location} was lost: {reason}; stopping without committing. Check access to the repository and run the command again (then `haven check`)")]
    LockLost { location: String, reason: String },
    #[error("{path}: {action} failed: {source}")]
    Io {
        path: String,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("interrupted")]
    Interrupted,
}

fn key_slots_damaged(
    location: &str,
    damaged: &[crate::keys::DamagedSlot],
    intact: usize,
) -> String {
    let list = damaged
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let ids = damaged
        .iter()
        .map(|d| format!("keys/{}", d.id.to_hex()))
        .collect::<Vec<_>>()
        .join(", ");
    let tried = match intact {
        0 => "no intact key slot is left to try".to_string(),
        n => format!("the passphrase or key file opens none of the {n} intact slot(s)"),
    };
    format!(
        "the repository at {location} cannot be opened: damaged {list}; {tried}. If the secret belongs to a damaged slot, restore {ids} from a copy of the repository, or open it with another key"
    )
}

impl RepoError {
    pub fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        RepoError::Corrupt {
            what: what.into(),
            detail: detail.into(),
        }
    }

    pub fn io(
        path: impl AsRef<std::path::Path>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        RepoError::Io {
            path: path.as_ref().display().to_string(),
            action,
            source,
        }
    }

    /// True when the repository refused a write: a read-only mount, or no permission
    /// to write there.
    pub fn is_read_only(&self) -> bool {
        let os = match self {
            RepoError::Store(e) => e.source.as_ref().and_then(|s| s.raw_os_error()),
            RepoError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        };
        matches!(os, Some(libc::EROFS | libc::EACCES | libc::EPERM))
    }

    /// A second error of the same variant, class and message, for a second party (the
    /// write pipeline hands one to every caller of `save` and keeps the original).
    /// I/O sources are rebuilt from their OS error code or kind and text.
    pub fn duplicate(&self) -> RepoError {
        fn io_copy(e: &std::io::Error) -> std::io::Error {
            match e.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(e.kind(), e.to_string()),
            }
        }
        match self {
            RepoError::Store(e) => RepoError::Store(StoreError {
                class: e.class,
                location: e.location.clone(),
                file: e.file.clone(),
                message: e.message.clone(),
                source: e.source.as_ref().map(io_copy),
            }),
            RepoError::NotARepository(l) => RepoError::NotARepository(l.clone()),
            RepoError::MarkerMissing { location, version } => RepoError::MarkerMissing {
                location: location.clone(),
                version: *version,
            },
            RepoError::NewerFormat {
                location,
                found,
                supported,
            } => RepoError::NewerFormat {
                location: location.clone(),
                found: *found,
                supported: *supported,
            },
            RepoError::WrongPassword(l) => RepoError::WrongPassword(l.clone()),
            RepoError::KeySlotsDamaged {
                location,
                damaged,
                intact,
            } => RepoError::KeySlotsDamaged {
                location: location.clone(),
                damaged: damaged.clone(),
                intact: *intact,
            },
            RepoError::Corrupt { what, detail } => RepoError::corrupt(what.clone(), detail.clone()),
            RepoError::InvalidInput(m) => RepoError::InvalidInput(m.clone()),
            RepoError::Locked(m) => RepoError::Locked(m.clone()),
            RepoError::UnreadableLock { location, name } => RepoError::UnreadableLock {
                location: location.clone(),
                name: name.clone(),
            },
            RepoError::LockLost { location, reason } => RepoError::LockLost {
                location: location.clone(),
                reason: reason.clone(),
            },
            RepoError::Io {
                path,
                action,
                source,
            } => RepoError::Io {
                path: path.clone(),
                action,
                source: io_copy(source),
            },
            RepoError::Interrupted => RepoError::Interrupted,
        }
    }

    /// True when the underlying cause is a full disk.
    pub fn is_no_space(&self) -> bool {
        match self {
            RepoError::Store(e) => e.class == haven_store::ErrorClass::NoSpace,
            RepoError::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }
}

pub type Result<T, E = RepoError> = std::result::Result<T, E>;
