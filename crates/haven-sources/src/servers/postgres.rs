//! A throwaway postgres server: to be written.
