//! `etcd`: to be written.
