//! Throwaway local servers, each with its own data directory and loopback port, stopped
//! and removed on drop: the scratch targets of `tenant verify`, the test fixtures, and
//! the servers of the README's demo.

pub mod etcd;
pub mod postgres;
pub mod redis;
