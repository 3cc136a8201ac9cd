//! Kubernetes discovery against `support::kube_api`, an in-process stand-in for kube-apiserver's
//! list and watch endpoints (no API server can run here): annotated objects become scheduled
//! targets probed against loopback servers; watch changes re-plan like a reload; a bad
//! annotation refuses its object alone and posts an Event; 410 Gone makes a new list; bookmarks
//! move the resume version; a lost API server keeps the last known targets.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::http_target::{HttpTarget, Route};
use crate::support::kube_api::{KubeApi, httproute, ingress, service};
use crate::support::lookout::Lookout;
use crate::support::samples::Samples;

fn config(api: &KubeApi) -> String {
    format!(
        "modules:\n  http_2xx: {{prober: http, timeout: 2s}}\n  tcp_connect: {{prober: tcp, timeout: 2s}}\n\
         targets:\n  - {{name: db, module: tcp_connect, target: '127.0.0.1:9', interval: 1h}}\n\
         kubernetes:\n  api_server: {}\n",
        api.url()
    )
}

async fn targets(lk: &Lookout) -> Vec<Value> {
    let body = lk.get("/api/v1/targets").await.body;
    let v: Value = serde_json::from_str(&body).unwrap();
    v["targets"].as_array().cloned().unwrap_or_default()
}

/// Polls `check` until it gives a value (at most 20 s: a generous bound, not a measurement).
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn names(ts: &[Value]) -> Vec<String> {
    let mut n: Vec<String> = ts
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    n.sort();
    n
}

fn find<'a>(ts: &'a [Value], name: &str) -> Option<&'a Value> {
    ts.iter().find(|t| t["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_objects_become_probed_targets_and_follow_the_watch() {
    let wiki = HttpTarget::new()
        .route("/", Route::ok("wiki"))
        .start()
        .await;
    let port = wiki.addr.port().to_string();
    let api = KubeApi::start().await;
    // Listed before lookout starts: an Ingress opted in, one not, a Service the Prometheus way.
    api.apply(
        "ingresses",
        ingress(
            "home",
            "wiki",
            &[
                ("lookout.dev/probe", "true"),
                ("lookout.dev/host", "127.0.0.1"),
                ("lookout.dev/port", &port),
                ("lookout.dev/interval", "1s"),
                ("lookout.dev/labels", "team=docs"),
                ("lookout.dev/depends_on", "db"),
            ],
            &["wiki.home.example"],
            &[],
        ),
    );
    api.apply(
        "ingresses",
        ingress("home", "quiet", &[], &["quiet.example"], &[]),
    );
    api.apply(
        "services",
        service(
            "home",
            "cache",
            &[
                ("prometheus.io/probe", "true"),
                ("lookout.dev/module", "tcp_connect"),
                ("lookout.dev/host", "127.0.0.1"),
                ("lookout.dev/interval", "1s"),
            ],
            &[("redis", wiki.addr.port())],
        ),
    );
    let lk = Lookout::start(&config(&api)).await;
    let ts = eventually("the listed objects' targets", async || {
        let ts = targets(&lk).await;
        (ts.len() == 3).then_some(ts)
    })
    .await;
    assert_eq!(
        names(&ts),
        ["db", "ingress/home/wiki", "service/home/cache"]
    );
    let w = find(&ts, "ingress/home/wiki").unwrap();
    assert_eq!(w["target"], format!("http://127.0.0.1:{port}/"));
    assert_eq!(w["labels"]["team"], "docs");
    assert_eq!(w["labels"]["namespace"], "home");
    assert_eq!(w["dependencies"][0], "db");
    assert_eq!(
        find(&ts, "service/home/cache").unwrap()["target"],
        format!("127.0.0.1:{port}")
    );
    // Probed for real, on /metrics with its labels.
    eventually("a successful probe of the wiki", async || {
        let m = Samples::parse(&lk.get("/metrics").await.body);
        (of_target(&m, "probe_success", "ingress/home/wiki", &[]) == Some(1.0)).then_some(())
    })
    .await;
    let m = Samples::parse(&lk.get("/metrics").await.body);
    assert_eq!(
        m.get_with("lookout_kubernetes_objects", &[("kind", "ingress")]),
        Some(1.0)
    );
    assert_eq!(
        m.get_with("lookout_kubernetes_watch_up", &[("kind", "service")]),
        Some(1.0)
    );
    assert_eq!(
        m.get_with("lookout_source_targets", &[("source", "kubernetes")]),
        Some(2.0)
    );
    // The list came first, then a watch from its version, with bookmarks.
    let reqs = api.requests();
    assert!(
        reqs.iter().any(
            |r| r.starts_with("GET /apis/networking.k8s.io/v1/ingresses?")
                && r.contains("watch=true")
                && r.contains("allowWatchBookmarks=true")
                && r.contains("resourceVersion=")
        ),
        "{reqs:#?}"
    );

    // A watched change re-plans like a reload: the wiki keeps its counters.
    let before = probes_of(&lk, "ingress/home/wiki").await;
    api.apply(
        "httproutes",
        httproute(
            "home",
            "blog",
            &[
                ("lookout.dev/probe", "true"),
                ("lookout.dev/host", "127.0.0.1"),
                ("lookout.dev/port", &port),
                ("lookout.dev/interval", "1s"),
            ],
            &["blog.example"],
            "/",
        ),
    );
    eventually("the HTTPRoute's target", async || {
        find(&targets(&lk).await, "httproute/home/blog").map(|_| ())
    })
    .await;
    assert!(
        probes_of(&lk, "ingress/home/wiki").await >= before,
        "counters kept"
    );
    // Opting out and deleting both remove.
    let mut quiet_svc = service("home", "cache", &[], &[("redis", 6379)]);
    quiet_svc["metadata"]["annotations"] = serde_json::json!({});
    api.apply("services", quiet_svc);
    api.delete("httproutes", "home", "blog");
    eventually("the opted-out and deleted objects gone", async || {
        let ts = targets(&lk).await;
        (names(&ts) == ["db", "ingress/home/wiki"]).then_some(())
    })
    .await;
}

/// The value of `name` for scheduled target `target` (whatever its other labels), with `extra`.
fn of_target(m: &Samples, name: &str, target: &str, extra: &[(&str, &str)]) -> Option<f64> {
    m.series(name)
        .into_iter()
        .find(|s| {
            s.labels.get("target").map(String::as_str) == Some(target)
                && extra
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn probes_of(lk: &Lookout, target: &str) -> f64 {
    let m = Samples::parse(&lk.get("/metrics").await.body);
    of_target(&m, "lookout_probes_total", target, &[("result", "success")]).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_annotation_refuses_its_object_alone_and_posts_an_event() {
    let api = KubeApi::start().await;
    api.apply(
        "ingresses",
        ingress(
            "home",
            "good",
            &[
                ("lookout.dev/probe", "true"),
                ("lookout.dev/host", "127.0.0.1"),
            ],
            &["good.example"],
            &[],
        ),
    );
    api.apply(
        "ingresses",
        ingress(
            "home",
            "bad",
            &[
                ("lookout.dev/probe", "true"),
                ("lookout.dev/interval", "soon"),
            ],
            &["bad.example"],
            &[],
        ),
    );
    api.apply(
        "ingresses",
        ingress(
            "home",
            "ghost",
            &[
                ("lookout.dev/probe", "true"),
                ("lookout.dev/depends_on", "nothing-of-that-name"),
            ],
            &["ghost.example"],
            &[],
        ),
    );
    let lk = Lookout::start(&config(&api)).await;
    let ts = eventually("the good object's target", async || {
        let ts = targets(&lk).await;
        find(&ts, "ingress/home/good").is_some().then_some(ts)
    })
    .await;
    assert_eq!(names(&ts), ["db", "ingress/home/good"]);
    let events = eventually("two Events", async || {
        let e = api.events();
        (e.len() >= 2).then_some(e)
    })
    .await;
    let about = |name: &str| {
        events
            .iter()
            .find(|e| e["regarding"]["name"] == name)
            .unwrap_or_else(|| panic!("no Event about {name}: {events:#?}"))
            .clone()
    };
    let bad = about("bad");
    assert_eq!(bad["type"], "Warning");
    assert_eq!(bad["reason"], "ProbeRefused");
    assert_eq!(bad["regarding"]["kind"], "Ingress");
    assert_eq!(bad["regarding"]["namespace"], "home");
    let note = bad["note"].as_str().unwrap();
    assert!(note.contains("lookout.dev/interval"), "{note}");
    let note = about("ghost")["note"].as_str().unwrap().to_owned();
    assert!(
        note.contains("lookout.dev/depends_on") && note.contains("nothing-of-that-name"),
        "{note}"
    );
    let m = Samples::parse(&lk.get("/metrics").await.body);
    assert_eq!(
        m.get_with(
            "lookout_source_rejected_targets",
            &[("source", "kubernetes")]
        ),
        Some(1.0),
        "the unknown edge is the set's rejection; the bad interval is refused before it"
    );
    assert_eq!(m.get("lookout_kubernetes_refused_objects_total"), Some(2.0));
    assert_eq!(
        m.get_with("lookout_kubernetes_events_total", &[("result", "sent")]),
        Some(2.0)
    );
    // Fixed, the object joins; nothing is posted again for what was already reported.
    api.apply(
        "ingresses",
        ingress(
            "home",
            "bad",
            &[
                ("lookout.dev/probe", "true"),
                ("lookout.dev/interval", "30s"),
                ("lookout.dev/host", "127.0.0.1"),
            ],
            &["bad.example"],
            &[],
        ),
    );
    eventually("the fixed object's target", async || {
        find(&targets(&lk).await, "ingress/home/bad").map(|_| ())
    })
    .await;
    assert_eq!(api.events().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_relists_bookmarks_resume_and_a_lost_api_keeps_the_targets() {
    let api = KubeApi::start().await;
    let opted = |name: &str| {
        ingress(
            "home",
            name,
            &[
                ("lookout.dev/probe", "true"),
                ("lookout.dev/host", "127.0.0.1"),
            ],
            &["x.example"],
            &[],
        )
    };
    api.apply("ingresses", opted("a"));
    api.apply("ingresses", opted("b"));
    let lk = Lookout::start(&config(&api)).await;
    eventually("both targets", async || {
        (names(&targets(&lk).await) == ["db", "ingress/home/a", "ingress/home/b"]).then_some(())
    })
    .await;
    assert_eq!(api.lists("ingresses"), 1);

    // A bookmark: the next watch resumes from its version, with no new list.
    eventually("an open watch", async || {
        api.requests()
            .iter()
            .any(|r| r.contains("/ingresses?") && r.contains("watch=true"))
            .then_some(())
    })
    .await;
    let rv = api.bookmark("ingresses");
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.close_watches();
    eventually("a watch resumed from the bookmark", async || {
        api.requests()
            .iter()
            .any(|r| {
                r.contains("/ingresses?")
                    && r.contains("watch=true")
                    && r.contains(&format!("resourceVersion={rv}"))
            })
            .then_some(())
    })
    .await;
    assert_eq!(api.lists("ingresses"), 1, "a bookmark needs no new list");

    // 410 Gone: b was deleted while no watch saw it; the new list drops it.
    api.delete_unseen_and_expire("ingresses", "home", "b");
    eventually("a new list without b", async || {
        (names(&targets(&lk).await) == ["db", "ingress/home/a"]).then_some(())
    })
    .await;
    assert_eq!(api.lists("ingresses"), 2, "one new list after 410");

    // The API server goes away: the targets stay, and the watch reports itself down.
    api.stop();
    eventually("the watch seen down", async || {
        let m = Samples::parse(&lk.get("/metrics").await.body);
        (m.get_with("lookout_kubernetes_watch_up", &[("kind", "ingress")]) == Some(0.0))
            .then_some(())
    })
    .await;
    assert_eq!(names(&targets(&lk).await), ["db", "ingress/home/a"]);
}
