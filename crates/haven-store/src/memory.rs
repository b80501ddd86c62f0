//! An in-memory backend for tests: same contract as the others, no durability.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{ErrorClass, FileInfo, FileKind, ReadBackend, StoreError, WriteBackend};

/// Files by kind and name.
type Files = BTreeMap<(FileKind, String), Vec<u8>>;

#[derive(Debug, Default)]
pub struct MemoryBackend {
    /// `None` until `create`.
    files: Mutex<Option<Files>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Files) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.files.lock().expect("memory backend lock poisoned");
        match guard.as_mut() {
            Some(map) => f(map),
            None => Err(StoreError::new(
                ErrorClass::NotFound,
                "memory",
                "",
                "no repository has been created here",
            )),
        }
    }

    /// Overwrite a file's bytes in place, bypassing the contract (to test corruption).
    pub fn tamper(&self, kind: FileKind, name: &str, data: Vec<u8>) {
        let _ = self.with(|m| {
            m.insert((kind, name.to_string()), data);
            Ok(())
        });
    }
}

fn single_name(kind: FileKind, name: &str) -> String {
    match kind {
        FileKind::Marker | FileKind::Config => kind.path(""),
        _ => name.to_string(),
    }
}

impl ReadBackend for MemoryBackend {
    fn location(&self) -> String {
        "memory".to_string()
    }

    fn list(&self, kind: FileKind) -> Result<Vec<FileInfo>, StoreError> {
        // Listing where nothing was created yet finds nothing, as on a folder.
        let guard = self.files.lock().expect("memory backend lock poisoned");
        Ok(guard
            .iter()
            .flatten()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, n), d)| FileInfo {
                name: n.clone(),
                size: d.len() as u64,
            })
            .collect())
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>, StoreError> {
        let name = single_name(kind, name);
        self.with(|m| {
            m.get(&(kind, name.clone())).cloned().ok_or_else(|| {
                StoreError::new(
                    ErrorClass::NotFound,
                    "memory",
                    &kind.path(&name),
                    "no such file",
                )
            })
        })
    }

    fn read_range(
        &self,
        kind: FileKind,
        name: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let data = self.read(kind, name)?;
        let end = offset
            .checked_add(length)
            .filter(|&e| e <= data.len() as u64)
            .ok_or_else(|| {
                StoreError::new(
                    ErrorClass::Permanent,
                    "memory",
                    &kind.path(name),
                    "file is shorter than expected: truncated",
                )
            })?;
        Ok(data[offset as usize..end as usize].to_vec())
    }
}

impl WriteBackend for MemoryBackend {
    fn create(&self) -> Result<(), StoreError> {
        let mut guard = self.files.lock().expect("memory backend lock poisoned");
        if guard.is_some() {
            return Err(StoreError::new(
                ErrorClass::Permanent,
                "memory",
                "",
                "a repository exists here already",
            ));
        }
        *guard = Some(BTreeMap::new());
        Ok(())
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<(), StoreError> {
        let name = single_name(kind, name);
        self.with(|m| {
            m.insert((kind, name), data.to_vec());
            Ok(())
        })
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<(), StoreError> {
        let name = single_name(kind, name);
        self.with(|m| {
            m.remove(&(kind, name));
            Ok(())
        })
    }
}
