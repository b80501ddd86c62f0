pub mod bind;
pub mod cloudflare;
