//! See lib.rs and docs/VOLUMES.md (being written).
