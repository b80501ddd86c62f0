//! `haven serve`: the daemon. To be written; [`view`] is the interface the HTTP API uses.

pub mod view;
