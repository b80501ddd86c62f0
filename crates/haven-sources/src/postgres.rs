//! `postgres`: to be written.
