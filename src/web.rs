//! `--web.config.file`: exporter-toolkit's web config (TLS with client certificates, basic
//! auth, response headers, a rate limit) for every endpoint lookout serves.

pub mod auth;
pub mod config;
pub mod limit;

pub use config::WebConfig;
