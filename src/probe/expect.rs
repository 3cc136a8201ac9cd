//! Families shared by the probers that check expectations on what a target sent (http's header
//! and body expressions, tcp's `query_response`), so neither protocol imports the other.

use crate::probe::report::Family;

/// `probe_failed_due_to_regex` (http and tcp).
pub static PROBE_FAILED_DUE_TO_REGEX: Family = Family::gauge(
    "probe_failed_due_to_regex",
    "Indicates if probe failed due to regex",
);
