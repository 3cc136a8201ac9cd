//! The watches themselves (with the `kubernetes` cargo feature): kube-rs's watcher per kind
//! and namespace, the store of opted-in objects, settled changes offered to `Sources`, refusals
//! reported once (a WARN line, a counter, an Event through kube's `Recorder`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};

use super::annotations::{self, Form, Host, Kind, Object, Port, Refusal};
use super::{SOURCE, Spec, Stats, slot};
use crate::config::{Config, RawTarget};
use crate::sources::Sources;

/// How long discovery waits after a change for more before offering the new list, so a burst
/// of watch events re-plans once.
const SETTLE: Duration = Duration::from_millis(300);

/// A kept object: what its targets are derived from, and how to point an Event at it.
#[derive(Debug, Clone)]
struct Kept {
    object: Object,
    reference: ObjectReference,
}

/// One watch stream's event, tagged with its stream.
type Tagged = (usize, Kind, Result<Event<Kept>, watcher::Error>);

async fn client(spec: &Spec) -> Result<Client, kube::Error> {
    let config = match &spec.api_server {
        Some(url) => kube::Config::new(url.clone()),
        None => kube::Config::infer()
            .await
            .map_err(kube::Error::InferConfig)?,
    };
    Client::try_from(config)
}

/// Watches what `spec` says until an error that needs a new client (retried here with
/// back-off), offering every settled change.
pub(super) async fn watch(
    spec: Arc<Spec>,
    config: &tokio::sync::watch::Receiver<Arc<Config>>,
    sources: &Sources,
    stats: &Stats,
) {
    stats.running.store(true, Ordering::Relaxed);
    let mut delay = Duration::from_secs(1);
    let client = loop {
        match client(&spec).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::error!(err = %e, "Cannot reach the Kubernetes API server; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    };
    let streams = streams(&client, &spec);
    let scopes = streams.len();
    let mut events = futures_util::stream::select_all(streams);
    // Per stream: its objects by (namespace, name), and the list being received.
    let mut stores: Vec<BTreeMap<(String, String), Kept>> = vec![BTreeMap::new(); scopes];
    let mut listing: Vec<Option<BTreeMap<(String, String), Kept>>> = vec![None; scopes];
    let mut kinds_of: Vec<Option<Kind>> = vec![None; scopes];
    let recorder = spec.events.then(|| {
        Recorder::new(
            client.clone(),
            Reporter {
                controller: "lookout".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        )
    });
    // Refusals already reported, by object (kind/namespace/name) and reason.
    let mut reported: HashMap<String, String> = HashMap::new();
    let mut dirty = false;
    let mut reconfig = config.clone();
    loop {
        let settle = async {
            if dirty {
                tokio::time::sleep(SETTLE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            next = events.next() => {
                let Some((i, kind, ev)) = next else { return };
                kinds_of[i] = Some(kind);
                match ev {
                    Ok(Event::Init) => listing[i] = Some(BTreeMap::new()),
                    Ok(Event::InitApply(k)) => {
                        if let Some(l) = &mut listing[i]
                            && annotations::opted_in(&k.object.annotations)
                        {
                            l.insert(key(&k.object), k);
                        }
                    }
                    Ok(Event::InitDone) => {
                        if let Some(l) = listing[i].take() {
                            stores[i] = l;
                        }
                        stats.up[slot(kind)].store(true, Ordering::Relaxed);
                        dirty = true;
                    }
                    Ok(Event::Apply(k)) => {
                        // An object that no longer opts in leaves like a deleted one.
                        if annotations::opted_in(&k.object.annotations) {
                            stores[i].insert(key(&k.object), k);
                        } else {
                            stores[i].remove(&key(&k.object));
                        }
                        dirty = true;
                    }
                    Ok(Event::Delete(k)) => {
                        stores[i].remove(&key(&k.object));
                        dirty = true;
                    }
                    Err(e) => {
                        stats.errors[slot(kind)].fetch_add(1, Ordering::Relaxed);
                        if stats.up[slot(kind)].swap(false, Ordering::Relaxed) {
                            tracing::warn!(kind = kind.as_str(), err = %e, "Kubernetes watch failed; keeping the last known objects and retrying");
                        } else {
                            tracing::debug!(kind = kind.as_str(), err = %e, "Kubernetes watch still failing");
                        }
                    }
                }
            }
            () = settle => {
                dirty = false;
                for kind in Kind::ALL {
                    let n: usize = stores
                        .iter()
                        .zip(&kinds_of)
                        .filter(|(_, k)| **k == Some(kind))
                        .map(|(s, _)| s.len())
                        .sum();
                    stats.objects[slot(kind)].store(n as u64, Ordering::Relaxed);
                }
                let cfg = reconfig.borrow_and_update().clone();
                offer(&cfg, &spec, &stores, sources, stats, recorder.as_ref(), &mut reported).await;
            }
            Ok(()) = reconfig.changed() => {
                // A module may have changed: derive the targets again.
                dirty = true;
            }
        }
    }
}

fn key(o: &Object) -> (String, String) {
    (o.namespace.clone(), o.name.clone())
}

/// Derives every kept object's targets, offers them, and reports each object refused for a
/// reason not reported before.
async fn offer(
    config: &Config,
    spec: &Spec,
    stores: &[BTreeMap<(String, String), Kept>],
    sources: &Sources,
    stats: &Stats,
    recorder: Option<&Recorder>,
    reported: &mut HashMap<String, String>,
) {
    let form_of = |m: &str| {
        config
            .modules
            .get(m)
            .map(|m| Form::of(m.spec.prober_name()))
    };
    let mut candidates: Vec<RawTarget> = Vec::new();
    // Which object each candidate came from.
    let mut from: HashMap<String, usize> = HashMap::new();
    let mut kept: Vec<&Kept> = Vec::new();
    let mut refusals: Vec<(usize, Refusal)> = Vec::new();
    for k in stores.iter().flat_map(BTreeMap::values) {
        let at = kept.len();
        kept.push(k);
        match annotations::targets(&k.object, &spec.module, form_of) {
            Ok(ts) => {
                for t in ts {
                    from.insert(t.name.clone(), at);
                    candidates.push(t);
                }
            }
            Err(r) => refusals.push((at, r)),
        }
    }
    for r in sources.offer(SOURCE, candidates) {
        if let Some(&at) = from.get(&r.name) {
            refusals.push((
                at,
                Refusal {
                    annotation: annotations::annotation_of(&r.error.path),
                    message: format!("target {:?}: {}", r.name, r.error.message),
                },
            ));
        }
    }
    let mut now_refused: HashSet<String> = HashSet::new();
    for (at, refusal) in refusals {
        let o = &kept[at].object;
        let id = format!("{}/{}/{}", o.kind.as_str(), o.namespace, o.name);
        let reason = refusal.to_string();
        now_refused.insert(id.clone());
        if reported.get(&id) == Some(&reason) {
            continue;
        }
        stats.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(object = %id, err = %reason, "Kubernetes object refused");
        if let Some(rec) = recorder {
            let ev = KubeEvent {
                type_: EventType::Warning,
                reason: "ProbeRefused".into(),
                note: Some(format!("lookout does not probe this object: {reason}")),
                action: "Discover".into(),
                secondary: None,
            };
            match rec.publish(&ev, &kept[at].reference).await {
                Ok(()) => stats.events_sent.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    tracing::warn!(object = %id, err = %e, "Cannot post a Kubernetes Event");
                    stats.events_failed.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
        reported.insert(id, reason);
    }
    reported.retain(|id, _| now_refused.contains(id));
}

/// One watch stream per kind and namespace (one per kind for all namespaces).
fn streams(client: &Client, spec: &Spec) -> Vec<BoxStream<'static, Tagged>> {
    let mut config = watcher::Config::default();
    if let Some(sel) = &spec.label_selector {
        config = config.labels(sel);
    }
    let scopes: Vec<Option<&str>> = if spec.namespaces.is_empty() {
        vec![None]
    } else {
        spec.namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let mut out: Vec<BoxStream<'static, Tagged>> = Vec::new();
    for &kind in &spec.kinds {
        for ns in &scopes {
            let i = out.len();
            let c = client.clone();
            let cfg = config.clone();
            let tag = move |ev: Result<Event<Kept>, watcher::Error>| (i, kind, ev);
            let stream: BoxStream<'static, Tagged> = match kind {
                Kind::Ingress => {
                    let api: Api<Ingress> = scoped(c, *ns);
                    watcher::watcher(api, cfg)
                        .default_backoff()
                        .map(move |ev| tag(ev.map(|e| keep(e, from_ingress))))
                        .boxed()
                }
                Kind::Service => {
                    let api: Api<Service> = scoped(c, *ns);
                    watcher::watcher(api, cfg)
                        .default_backoff()
                        .map(move |ev| tag(ev.map(|e| keep(e, from_service))))
                        .boxed()
                }
                Kind::HttpRoute => {
                    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
                    let ar = ApiResource::from_gvk(&gvk);
                    let api: Api<DynamicObject> = match ns {
                        Some(ns) => Api::namespaced_with(c, ns, &ar),
                        None => Api::all_with(c, &ar),
                    };
                    watcher::watcher(api, cfg)
                        .default_backoff()
                        .map(move |ev| tag(ev.map(|e| keep(e, |o| from_httproute(o, &gvk)))))
                        .boxed()
                }
            };
            out.push(stream);
        }
    }
    out
}

fn scoped<K>(client: Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// The watcher's event with each object turned into what is kept of it.
fn keep<K>(ev: Event<K>, convert: impl Fn(&K) -> Kept) -> Event<Kept> {
    match ev {
        Event::Apply(o) => Event::Apply(convert(&o)),
        Event::InitApply(o) => Event::InitApply(convert(&o)),
        Event::Delete(o) => Event::Delete(convert(&o)),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

fn meta_of<K: Resource<DynamicType = ()> + ResourceExt>(
    o: &K,
    kind: Kind,
) -> (Object, ObjectReference) {
    let object = Object {
        kind,
        namespace: o.namespace().unwrap_or_default(),
        name: o.name_any(),
        annotations: o.annotations().clone().into_iter().collect(),
        hosts: Vec::new(),
        ports: Vec::new(),
    };
    (object, o.object_ref(&()))
}

/// What is kept of an Ingress: a host per rule (TLS when a `tls:` entry lists it, the rule's
/// first path when it is a plain one).
fn from_ingress(i: &Ingress) -> Kept {
    let (mut object, reference) = meta_of(i, Kind::Ingress);
    let spec = i.spec.clone().unwrap_or_default();
    let tls_hosts: HashSet<String> = spec
        .tls
        .iter()
        .flatten()
        .flat_map(|t| t.hosts.clone().unwrap_or_default())
        .collect();
    for rule in spec.rules.unwrap_or_default() {
        let Some(host) = rule.host.filter(|h| !h.is_empty() && !h.starts_with('*')) else {
            continue;
        };
        if object.hosts.iter().any(|h| h.name == host) {
            continue;
        }
        let path = rule
            .http
            .and_then(|h| h.paths.into_iter().next())
            .and_then(|p| p.path)
            .filter(|p| plain_path(p));
        object.hosts.push(Host {
            tls: tls_hosts.contains(&host),
            name: host,
            path,
        });
    }
    Kept { object, reference }
}

/// What is kept of a Service: its cluster DNS name (or its external name) and its ports.
fn from_service(s: &Service) -> Kept {
    let (mut object, reference) = meta_of(s, Kind::Service);
    let spec = s.spec.clone().unwrap_or_default();
    let name = match spec.type_.as_deref() {
        Some("ExternalName") => spec.external_name.clone().unwrap_or_default(),
        _ => format!("{}.{}.svc", object.name, object.namespace),
    };
    if !name.is_empty() {
        object.hosts.push(Host {
            name,
            tls: false,
            path: None,
        });
    }
    object.ports = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(Port {
                name: p.name,
                number: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    Kept { object, reference }
}

/// What is kept of an HTTPRoute: its hostnames, with the first rule's first plain path.
fn from_httproute(r: &DynamicObject, gvk: &GroupVersionKind) -> Kept {
    let mut object = Object {
        kind: Kind::HttpRoute,
        namespace: r.namespace().unwrap_or_default(),
        name: r.name_any(),
        annotations: r.annotations().clone().into_iter().collect(),
        hosts: Vec::new(),
        ports: Vec::new(),
    };
    let spec = &r.data["spec"];
    let path = spec["rules"][0]["matches"][0]["path"]
        .as_object()
        .filter(|p| {
            matches!(
                p.get("type")
                    .and_then(|t| t.as_str())
                    .unwrap_or("PathPrefix"),
                "PathPrefix" | "Exact"
            )
        })
        .and_then(|p| p.get("value")?.as_str())
        .filter(|p| plain_path(p))
        .map(str::to_owned);
    for h in spec["hostnames"].as_array().into_iter().flatten() {
        if let Some(h) = h.as_str().filter(|h| !h.starts_with('*'))
            && !object.hosts.iter().any(|x| x.name == h)
        {
            object.hosts.push(Host {
                name: h.to_owned(),
                tls: false,
                path: path.clone(),
            });
        }
    }
    let reference = ObjectReference {
        api_version: Some(format!("{}/{}", gvk.group, gvk.version)),
        kind: Some(gvk.kind.clone()),
        name: Some(object.name.clone()),
        namespace: Some(object.namespace.clone()),
        uid: r.uid(),
        resource_version: r.resource_version(),
        field_path: None,
    };
    Kept { object, reference }
}

/// A path that can be requested as it is (no regular expression).
fn plain_path(p: &str) -> bool {
    p.starts_with('/') && !p.contains(['(', '*', '$', '^', '[', '|'])
}
