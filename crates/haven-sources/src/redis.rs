//! `redis`: to be written.
