//! Test harness shared by the integration tests: real in-process servers on
//! loopback addresses and freshly generated certificates.
//!
//! Not every test uses every helper, hence the crate-wide `dead_code` allowance.
#![allow(dead_code)]

pub mod certs;
pub mod daemon;
pub mod dns_target;
pub mod http_target;
pub mod kube_api;
pub mod lookout;
pub mod pg;
pub mod samples;
pub mod tcp_target;
