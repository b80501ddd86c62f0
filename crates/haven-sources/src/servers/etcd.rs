//! A throwaway etcd server: to be written.
