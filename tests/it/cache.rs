//! A module's `cache: <age>` (issue 17): `/probe` answers from a result younger than that age,
//! saying so in `probe_cached`; other modules answer as blackbox does.

use crate::support::http_target::{HttpTarget, Route};
use crate::support::lookout::{Lookout, request};
use crate::support::samples::Samples;

fn config(age: &str) -> String {
    format!(
        "modules:\n  cached: {{prober: http, timeout: 2s, cache: {age}}}\n  fresh: {{prober: http, timeout: 2s}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_young_result_answers_and_says_it_is_cached() {
    let web = HttpTarget::new()
        .route("/a", Route::ok("a"))
        .route("/b", Route::status(500, "b"))
        .start()
        .await;
    let lk = Lookout::start(&config("1h")).await;
    let (a, b) = (web.url("/a"), web.url("/b"));

    let first = lk.probe("cached", &a).await;
    assert_eq!(first.value("probe_cached"), 0.0, "{}", first.text);
    assert_eq!(first.value("probe_success"), 1.0);
    let second = lk.probe("cached", &a).await;
    assert_eq!(second.value("probe_cached"), 1.0, "{}", second.text);
    assert_eq!(web.hits("/a"), 1, "the second answer probed nothing");
    // The kept result's values, exactly.
    for family in [
        "probe_success",
        "probe_duration_seconds",
        "probe_http_status_code",
    ] {
        assert_eq!(first.value(family), second.value(family), "{family}");
    }
    // A failure is kept as well; another target is probed on its own.
    assert_eq!(lk.probe("cached", &b).await.value("probe_success"), 0.0);
    assert_eq!(lk.probe("cached", &b).await.value("probe_cached"), 1.0);
    assert_eq!(web.hits("/b"), 1);
    // debug=true always probes: it asks for a probe's log.
    let debug = lk.debug("cached", &a).await;
    assert!(debug.contains("Beginning probe"), "{debug}");
    assert_eq!(web.hits("/a"), 2);
    // A module without cache answers as blackbox: every request probes, no probe_cached.
    let fresh = lk.probe("fresh", &a).await;
    assert!(!fresh.types.contains_key("probe_cached"), "{}", fresh.text);
    lk.probe("fresh", &a).await;
    assert_eq!(web.hits("/a"), 4);
    let m = Samples::parse(&lk.get("/metrics").await.body);
    assert_eq!(
        m.get_with("lookout_probe_cache_answers_total", &[("result", "hit")]),
        Some(2.0)
    );
    assert_eq!(
        m.get_with("lookout_probe_cache_answers_total", &[("result", "miss")]),
        Some(2.0)
    );

    // A reload makes new modules: what was kept no longer answers.
    std::fs::write(&lk.config_path, config("30m")).unwrap();
    let r = request(lk.addr, "POST", "/-/reload", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let after = lk.probe("cached", &a).await;
    assert_eq!(after.value("probe_cached"), 0.0, "{}", after.text);
    assert_eq!(web.hits("/a"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_result_is_probed_again() {
    let web = HttpTarget::new().route("/", Route::ok("ok")).start().await;
    let lk = Lookout::start(&config("200ms")).await;
    let t = web.url("/");
    assert_eq!(lk.probe("cached", &t).await.value("probe_cached"), 0.0);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(lk.probe("cached", &t).await.value("probe_cached"), 0.0);
    assert_eq!(web.hits("/"), 2);
}
