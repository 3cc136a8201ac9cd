//! Requests `/probe` refuses: status code, content type and body must match blackbox's.

use crate::runner::{MODULE, Scenario, http_module};

#[tokio::test]
async fn probe_without_target_is_400() {
    Scenario::new("probe_without_target_is_400", http_module(""))
        .request(&format!("/probe?module={MODULE}"), &[])
        .await;
}

#[tokio::test]
async fn probe_with_unknown_module_is_400() {
    Scenario::new("probe_with_unknown_module_is_400", http_module(""))
        .request("/probe?module=no_such_module&target=127.0.0.1", &[])
        .await;
}

/// blackbox looks the module up before the target: a missing module and no target both name
/// the default module `http_2xx`, which this config lacks.
#[tokio::test]
async fn probe_without_module_or_target_is_400() {
    Scenario::new("probe_without_module_or_target_is_400", http_module(""))
        .request("/probe", &[])
        .await;
}

#[tokio::test]
async fn non_numeric_scrape_timeout_is_500() {
    Scenario::new("non_numeric_scrape_timeout_is_500", http_module(""))
        .request(
            &format!("/probe?module={MODULE}&target=127.0.0.1"),
            &[("X-Prometheus-Scrape-Timeout-Seconds", "soon")],
        )
        .await;
}

#[tokio::test]
async fn probe_with_empty_target_is_400() {
    Scenario::new("probe_with_empty_target_is_400", http_module(""))
        .request(&format!("/probe?module={MODULE}&target="), &[])
        .await;
}

/// `hostname=` may not contradict a Host header the module sets.
#[tokio::test]
async fn hostname_conflicting_with_host_header_is_400() {
    Scenario::new(
        "hostname_conflicting_with_host_header_is_400",
        http_module("headers:\n  Host: configured.example"),
    )
    .request(
        &format!("/probe?module={MODULE}&target=127.0.0.1&hostname=asked.example"),
        &[],
    )
    .await;
}
