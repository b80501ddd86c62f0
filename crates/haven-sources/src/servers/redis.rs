//! A throwaway redis server: to be written.
