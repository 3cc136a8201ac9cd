//! One test per fixed bug, named `r<issue>_<what>`, with the issue it came from.
//! (Bugs that only a unit test can reach are named the same way beside the code:
//! `results::tests::a_panicking_probe_is_counted_and_lookout_keeps_serving` for issue 11's
//! `lookout_probe_panics_total` that nothing incremented.)

use crate::support::lookout::{Lookout, PROMETHEUS_ACCEPT, request};

const CONFIG: &str = "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n";

/// Issue 14: Prometheus asks for OpenMetrics first and lookout answered it, where blackbox
/// answers text 0.0.4 whatever `Accept` says; every scrape got another format than before.
#[tokio::test]
async fn r14_text_format_whatever_prometheus_accepts() {
    let lk = Lookout::start(CONFIG).await;
    for path in ["/metrics", "/probe?module=http_2xx&target=127.0.0.1:1"] {
        let a = request(lk.addr, "GET", path, &[("Accept", PROMETHEUS_ACCEPT)]).await;
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        assert_eq!(
            a.content_type, "text/plain; version=0.0.4; charset=utf-8",
            "{path}"
        );
        assert!(!a.body.contains("# EOF"), "{path}: {}", a.body);
    }
}
