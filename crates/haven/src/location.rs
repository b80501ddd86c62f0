//! Which backend a repository location opens: see [`haven_ops::location`].

pub use haven_ops::location::{open_backend, open_mirror};
