//! Differential compatibility tests: lookout against Debian's blackbox_exporter 0.23.
//!
//! Each scenario writes one module into one config file, starts both exporters on it (real
//! processes on loopback), probes the same in-process target through both and compares the
//! answers through one parser (`diff.rs` says exactly what must match and lists the intended
//! differences). Without the blackbox binary the scenarios skip loudly, or fail with `CI=true`.
//!
//! Run: `cargo test --test compat`.

// The tests are clients and servers of their own, not probes: they open sockets directly.
#![allow(clippy::disallowed_methods)]

#[path = "../it/support/mod.rs"]
mod support;

mod config_check;
mod diff;
mod dns_probe;
mod endpoints;
mod exporter;
mod hosts_file;
mod http_more;
mod http_probe;
mod runner;
mod tcp_probe;
mod web_config;
