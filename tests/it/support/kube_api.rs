//! An in-process stand-in for kube-apiserver's list and watch endpoints, for discovery tests
//! (no Kubernetes API server can run on these machines).
//!
//! What it serves is shaped as kube-apiserver's responses are, per the API concepts
//! documentation (https://kubernetes.io/docs/reference/using-api/api-concepts/): a list is a
//! `<Kind>List` with `metadata.resourceVersion`; `?watch=true&resourceVersion=N` streams one JSON
//! object per line, `{"type":"ADDED"|"MODIFIED"|"DELETED","object":…}` for every change after
//! N, `BOOKMARK` events carrying only a resource version (when the client sends
//! `allowWatchBookmarks=true`), and for a version older than the server keeps an `ERROR` event
//! with a `Status` of code 410, reason `Expired`, after which a client must list again. Events
//! POSTed to `events.k8s.io/v1` are kept for tests to read. It checks no credentials.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};

/// The kinds served: (resource, group/version path prefix, kind, apiVersion).
const RESOURCES: [(&str, &str, &str, &str); 3] = [
    (
        "ingresses",
        "/apis/networking.k8s.io/v1",
        "Ingress",
        "networking.k8s.io/v1",
    ),
    ("services", "/api/v1", "Service", "v1"),
    (
        "httproutes",
        "/apis/gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "gateway.networking.k8s.io/v1",
    ),
];

#[derive(Default)]
struct Store {
    rv: u64,
    /// resource → (namespace, name) → object.
    objects: BTreeMap<&'static str, BTreeMap<(String, String), Value>>,
    /// Every change: (resource version, resource, namespace, event line).
    history: Vec<(u64, &'static str, String, String)>,
    /// Watches from a version below this one get 410 Gone.
    oldest: u64,
    /// Requests as `METHOD path?query`.
    requests: Vec<String>,
    /// Bodies of POSTed Events.
    events: Vec<Value>,
}

/// The stand-in API server.
pub struct KubeApi {
    pub addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    /// (resource, namespace, line) of each change and bookmark, to open watches.
    changes: broadcast::Sender<(&'static str, String, String)>,
    /// Bumped to end every open watch (as a watch's timeout would).
    close: watch::Sender<u64>,
    /// Set to stop answering altogether.
    down: watch::Sender<bool>,
}

impl KubeApi {
    /// Starts serving on a free loopback port.
    pub async fn start() -> KubeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(Mutex::new(Store {
            rv: 100,
            ..Store::default()
        }));
        let (changes, _) = broadcast::channel(1024);
        let (close, _) = watch::channel(0);
        let (down, _) = watch::channel(false);
        let api = KubeApi {
            addr,
            store,
            changes,
            close,
            down,
        };
        let (store, changes, close, mut down_rx) = (
            api.store.clone(),
            api.changes.clone(),
            api.close.clone(),
            api.down.subscribe(),
        );
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = down_rx.wait_for(|d| *d) => return,
                };
                let (store, changes, close, down) = (
                    store.clone(),
                    changes.clone(),
                    close.clone(),
                    down_rx.clone(),
                );
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (store, changes, close) =
                            (store.clone(), changes.clone(), close.clone());
                        async move { Ok::<_, Infallible>(handle(req, &store, &changes, &close).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    let mut down = down;
                    tokio::select! {
                        _ = conn => {}
                        _ = down.wait_for(|d| *d) => {}
                    }
                });
            }
        });
        api
    }

    /// The URL to put in `kubernetes.api_server`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates or replaces `object` (its `metadata.namespace` and `name` say which) of
    /// `resource`, as `kubectl apply` would: ADDED or MODIFIED on open watches.
    pub fn apply(&self, resource: &'static str, mut object: Value) {
        let (kind, api_version) = kind_of(resource);
        let (ns, name) = names(&object);
        let mut s = self.store.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        object["kind"] = json!(kind);
        object["apiVersion"] = json!(api_version);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        object["metadata"]["uid"] = json!(format!("uid-{resource}-{ns}-{name}"));
        let objects = s.objects.entry(resource).or_default();
        let kind = if objects.contains_key(&(ns.clone(), name.clone())) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        objects.insert((ns.clone(), name), object.clone());
        let line = json!({"type": kind, "object": object}).to_string();
        s.history.push((rv, resource, ns.clone(), line.clone()));
        let _ = self.changes.send((resource, ns, line));
    }

    /// Deletes an object: DELETED on open watches.
    pub fn delete(&self, resource: &'static str, ns: &str, name: &str) {
        let mut s = self.store.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        let Some(mut object) = s
            .objects
            .entry(resource)
            .or_default()
            .remove(&(ns.to_owned(), name.to_owned()))
        else {
            return;
        };
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let line = json!({"type": "DELETED", "object": object}).to_string();
        s.history.push((rv, resource, ns.to_owned(), line.clone()));
        let _ = self.changes.send((resource, ns.to_owned(), line));
    }

    /// Deletes an object without telling open watches, and forgets every version up to now: a
    /// watch resumed from before answers 410 Gone, and only a new list shows the deletion.
    pub fn delete_unseen_and_expire(&self, resource: &'static str, ns: &str, name: &str) {
        let mut s = self.store.lock().unwrap();
        s.objects
            .entry(resource)
            .or_default()
            .remove(&(ns.to_owned(), name.to_owned()));
        s.rv += 1;
        s.oldest = s.rv;
        s.history.clear();
        drop(s);
        self.close_watches();
    }

    /// Sends a BOOKMARK with a newer resource version to `resource`'s open watches (as the
    /// server does when other objects changed).
    pub fn bookmark(&self, resource: &'static str) -> u64 {
        let (kind, api_version) = kind_of(resource);
        let mut s = self.store.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        let line = json!({
            "type": "BOOKMARK",
            "object": {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv.to_string()}}
        })
        .to_string();
        let _ = self.changes.send((resource, String::new(), line));
        rv
    }

    /// Ends every open watch, as its `timeoutSeconds` would; clients resume from their version.
    pub fn close_watches(&self) {
        self.close.send_modify(|n| *n += 1);
    }

    /// Stops answering: the listener closes and open connections drop.
    pub fn stop(&self) {
        let _ = self.down.send(true);
    }

    /// Requests so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.store.lock().unwrap().requests.clone()
    }

    /// How many lists (not watches) of `resource` were asked for.
    pub fn lists(&self, resource: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| {
                r.starts_with("GET ")
                    && r.contains(&format!("/{resource}"))
                    && !r.contains("watch=true")
            })
            .count()
    }

    /// The Events POSTed so far.
    pub fn events(&self) -> Vec<Value> {
        self.store.lock().unwrap().events.clone()
    }
}

fn kind_of(resource: &str) -> (&'static str, &'static str) {
    RESOURCES
        .iter()
        .find(|r| r.0 == resource)
        .map(|r| (r.2, r.3))
        .unwrap_or_else(|| panic!("unknown resource {resource}"))
}

fn names(object: &Value) -> (String, String) {
    let m = &object["metadata"];
    (
        m["namespace"].as_str().unwrap_or("default").to_owned(),
        m["name"].as_str().expect("metadata.name").to_owned(),
    )
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: u16, v: Value) -> hyper::Response<Body> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

/// Which resource and namespace a path names: `/apis/g/v/[namespaces/ns/]resource`.
fn route(path: &str) -> Option<(&'static str, Option<String>)> {
    for (resource, prefix, _, _) in RESOURCES {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        if rest == format!("/{resource}") {
            return Some((resource, None));
        }
        if let Some(ns_rest) = rest.strip_prefix("/namespaces/")
            && let Some((ns, tail)) = ns_rest.split_once('/')
            && tail == resource
        {
            return Some((resource, Some(ns.to_owned())));
        }
    }
    None
}

fn query(q: &str, key: &str) -> Option<String> {
    q.split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
}

async fn handle(
    req: hyper::Request<Incoming>,
    store: &Arc<Mutex<Store>>,
    changes: &broadcast::Sender<(&'static str, String, String)>,
    close: &watch::Sender<u64>,
) -> hyper::Response<Body> {
    let path = req.uri().path().to_owned();
    let q = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    store
        .lock()
        .unwrap()
        .requests
        .push(format!("{method} {path}?{q}"));
    if method == hyper::Method::POST || method == hyper::Method::PATCH {
        if path.starts_with("/apis/events.k8s.io/v1/namespaces/") && path.ends_with("/events")
            || path.contains("/events/")
        {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            store.lock().unwrap().events.push(v.clone());
            if v["metadata"]["name"].is_null() {
                v["metadata"]["name"] = json!("lookout.1");
            }
            return full(201, v);
        }
        return full(404, status(404, "NotFound", "not served here"));
    }
    let Some((resource, ns)) = route(&path) else {
        return full(
            404,
            status(404, "NotFound", &format!("{path} is not served here")),
        );
    };
    let (kind, api_version) = kind_of(resource);
    let in_scope = |object_ns: &str| ns.as_deref().is_none_or(|n| n == object_ns);
    if query(&q, "watch").as_deref() != Some("true") && query(&q, "watch").as_deref() != Some("1") {
        let s = store.lock().unwrap();
        let items: Vec<Value> = s
            .objects
            .get(resource)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|((o_ns, _), _)| in_scope(o_ns))
            .map(|(_, v)| v.clone())
            .collect();
        return full(
            200,
            json!({"kind": format!("{kind}List"), "apiVersion": api_version,
                   "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
        );
    }
    let from: u64 = query(&q, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let bookmarks = query(&q, "allowWatchBookmarks").as_deref() == Some("true");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    let mut sub = changes.subscribe();
    let backlog: Result<Vec<String>, ()> = {
        let s = store.lock().unwrap();
        if from < s.oldest {
            Err(())
        } else {
            Ok(s.history
                .iter()
                .filter(|(rv, r, o_ns, _)| *rv > from && *r == resource && in_scope(o_ns))
                .map(|(_, _, _, l)| l.clone())
                .collect())
        }
    };
    let mut closed = close.subscribe();
    closed.borrow_and_update();
    let ns_filter = ns.clone();
    tokio::spawn(async move {
        let send = |line: String| {
            let tx = tx.clone();
            async move {
                tx.send(Ok(Frame::data(Bytes::from(line + "\n"))))
                    .await
                    .is_ok()
            }
        };
        match backlog {
            Err(()) => {
                let e = status(410, "Expired", &format!("too old resource version: {from}"));
                send(json!({"type": "ERROR", "object": e}).to_string()).await;
                return;
            }
            Ok(lines) => {
                for l in lines {
                    if !send(l).await {
                        return;
                    }
                }
            }
        }
        loop {
            tokio::select! {
                c = sub.recv() => match c {
                    Ok((r, o_ns, line)) => {
                        let bookmark = o_ns.is_empty();
                        if r != resource
                            || (bookmark && !bookmarks)
                            || (!bookmark && ns_filter.as_deref().is_some_and(|n| n != o_ns))
                        {
                            continue;
                        }
                        if !send(line).await {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                _ = closed.changed() => return,
            }
        }
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    hyper::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(StreamBody::new(stream).boxed())
        .unwrap()
}

/// An Ingress in `ns` with `annotations`, a rule per host, and TLS for `tls_hosts`.
pub fn ingress(
    ns: &str,
    name: &str,
    annotations: &[(&str, &str)],
    hosts: &[&str],
    tls_hosts: &[&str],
) -> Value {
    json!({
        "metadata": {"namespace": ns, "name": name, "annotations": annotation_map(annotations)},
        "spec": {
            "rules": hosts.iter().map(|h| json!({"host": h, "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": name, "port": {"number": 80}}}}
            ]}})).collect::<Vec<_>>(),
            "tls": [{"hosts": tls_hosts, "secretName": format!("{name}-tls")}],
        }
    })
}

/// A ClusterIP Service in `ns` with `annotations` and `ports` (name, number).
pub fn service(ns: &str, name: &str, annotations: &[(&str, &str)], ports: &[(&str, u16)]) -> Value {
    json!({
        "metadata": {"namespace": ns, "name": name, "annotations": annotation_map(annotations)},
        "spec": {
            "type": "ClusterIP",
            "ports": ports.iter().map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"})).collect::<Vec<_>>(),
        }
    })
}

/// An HTTPRoute in `ns` with `annotations`, `hostnames` and one rule matching `path`.
pub fn httproute(
    ns: &str,
    name: &str,
    annotations: &[(&str, &str)],
    hostnames: &[&str],
    path: &str,
) -> Value {
    json!({
        "metadata": {"namespace": ns, "name": name, "annotations": annotation_map(annotations)},
        "spec": {
            "parentRefs": [{"name": "gateway"}],
            "hostnames": hostnames,
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                       "backendRefs": [{"name": name, "port": 80}]}],
        }
    })
}

fn annotation_map(a: &[(&str, &str)]) -> Value {
    Value::Object(a.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect())
}
