//! Test fixtures shared by haven-ops' integration tests.

pub mod smtp;
