//! From a Kubernetes object to the targets it asks for: which objects opt in, what their
//! `lookout.dev/*` annotations mean, and the target string each host becomes. Pure functions
//! over plain data, so every rule is table-tested without an API server.

use std::collections::BTreeMap;

use crate::config::RawTarget;
use crate::values::{ConfigDuration, parse_duration};

/// The annotations' prefix.
pub const PREFIX: &str = "lookout.dev/";

/// The kinds of object discovery watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `networking.k8s.io/v1` Ingress.
    Ingress,
    /// Core `v1` Service.
    Service,
    /// `gateway.networking.k8s.io/v1` HTTPRoute.
    HttpRoute,
}

impl Kind {
    /// Every kind, in the order they are watched.
    pub const ALL: [Kind; 3] = [Kind::Ingress, Kind::Service, Kind::HttpRoute];

    /// The name in config (`kinds:`) and in target names.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ingress => "ingress",
            Kind::Service => "service",
            Kind::HttpRoute => "httproute",
        }
    }

    /// The kind by its config name.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A host an object serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Its name (an Ingress rule's or HTTPRoute's hostname, a Service's cluster DNS name).
    pub name: String,
    /// Whether the object terminates TLS for it (an Ingress `tls:` entry names it).
    pub tls: bool,
    /// The first path routed for it, when it is a plain one.
    pub path: Option<String>,
}

/// A port a Service exposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Its name, if any.
    pub name: Option<String>,
    /// Its number.
    pub number: u16,
}

/// What discovery keeps of an object: enough to derive its targets again when the config
/// changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// The hosts it serves, in its own order.
    pub hosts: Vec<Host>,
    /// Its ports (Services only).
    pub ports: Vec<Port>,
}

/// Why an object's annotations were refused: the annotation at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The annotation (`lookout.dev/interval`), or the object's field at fault.
    pub annotation: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.annotation, self.message)
    }
}

fn refuse(annotation: &str, message: impl Into<String>) -> Refusal {
    Refusal {
        annotation: annotation.to_owned(),
        message: message.into(),
    }
}

/// The annotations lookout reads (each `lookout.dev/<name>`); any other one under the prefix is
/// refused, so a typo does not silently do nothing.
const KNOWN: [&str; 14] = [
    "probe",
    "name",
    "module",
    "interval",
    "timeout",
    "labels",
    "depends_on",
    "scheme",
    "host",
    "port",
    "path",
    "retries",
    "severity",
    "runbook_url",
];

/// Whether the object asks to be probed: `lookout.dev/probe: "true"`, or Prometheus'
/// `prometheus.io/probe: "true"` unless `lookout.dev/probe` says otherwise.
pub fn opted_in(annotations: &BTreeMap<String, String>) -> bool {
    match annotations.get("lookout.dev/probe") {
        Some(v) => v == "true",
        None => annotations
            .get("prometheus.io/probe")
            .is_some_and(|v| v == "true"),
    }
}

/// The annotation `name` under our prefix, else Prometheus' `prometheus.io/<name>` for the
/// ones that convention has (scheme, path, port).
fn get<'a>(o: &'a Object, name: &str) -> Option<(String, &'a str)> {
    let ours = format!("{PREFIX}{name}");
    if let Some(v) = o.annotations.get(&ours) {
        return Some((ours, v.as_str()));
    }
    if matches!(name, "scheme" | "path" | "port") {
        let theirs = format!("prometheus.io/{name}");
        if let Some(v) = o.annotations.get(&theirs) {
            return Some((theirs, v.as_str()));
        }
    }
    None
}

/// How a prober takes its target string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A URL (`http`, and `websocket` with ws/wss).
    Url {
        /// Whether the scheme is ws/wss rather than http/https.
        websocket: bool,
    },
    /// A host name alone (`icmp`).
    Host,
    /// `host:port` (every other prober).
    HostPort,
}

impl Form {
    /// The form of the prober named `prober`.
    pub fn of(prober: &str) -> Form {
        match prober {
            "http" => Form::Url { websocket: false },
            "websocket" => Form::Url { websocket: true },
            "icmp" => Form::Host,
            _ => Form::HostPort,
        }
    }
}

/// The targets `o` asks for (it has opted in), as the file would write them, with the module
/// `default_module` unless it names one; `form_of` gives how a module takes its target (`None`
/// for an unknown module, which the target's validation then reports).
pub fn targets(
    o: &Object,
    default_module: &str,
    form_of: impl Fn(&str) -> Option<Form>,
) -> Result<Vec<RawTarget>, Refusal> {
    for key in o.annotations.keys() {
        if let Some(name) = key.strip_prefix(PREFIX)
            && !KNOWN.contains(&name)
        {
            return Err(refuse(
                key,
                format!(
                    "unknown annotation (lookout reads {PREFIX}{{{}}})",
                    KNOWN.join(",")
                ),
            ));
        }
    }
    let module = get(o, "module")
        .map_or(default_module, |(_, v)| v)
        .to_owned();
    let form = form_of(&module).unwrap_or(Form::HostPort);
    let mut raw = RawTarget {
        module,
        ..RawTarget::default()
    };
    if let Some((key, v)) = get(o, "interval") {
        raw.interval = Some(duration(&key, v)?);
    }
    if let Some((key, v)) = get(o, "timeout") {
        raw.timeout = Some(duration(&key, v)?);
    }
    if let Some((key, v)) = get(o, "retries") {
        raw.retries = Some(
            v.trim()
                .parse()
                .map_err(|_| refuse(&key, format!("{v:?} is not a whole number")))?,
        );
    }
    if let Some((_, v)) = get(o, "severity") {
        raw.severity = Some(v.to_owned());
    }
    if let Some((_, v)) = get(o, "runbook_url") {
        raw.runbook_url = Some(v.to_owned());
    }
    raw.labels.insert("namespace".into(), o.namespace.clone());
    if let Some((key, v)) = get(o, "labels") {
        for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, val) = pair
                .split_once('=')
                .ok_or_else(|| refuse(&key, format!("{pair:?} is not name=value")))?;
            raw.labels
                .insert(k.trim().to_owned(), val.trim().to_owned());
        }
    }
    if let Some((_, v)) = get(o, "depends_on") {
        raw.depends_on = v
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect();
    }
    let hosts: Vec<Host> = match get(o, "host") {
        Some((_, h)) => vec![Host {
            name: h.to_owned(),
            tls: o.hosts.first().is_some_and(|x| x.tls),
            path: o.hosts.first().and_then(|x| x.path.clone()),
        }],
        None => o.hosts.clone(),
    };
    if hosts.is_empty() {
        return Err(refuse(
            &format!("{PREFIX}host"),
            format!(
                "the {} names no host to probe; set {PREFIX}host",
                o.kind.as_str()
            ),
        ));
    }
    let port = port(o)?;
    let scheme = match get(o, "scheme") {
        None => None,
        Some((key, v)) => match v {
            "http" | "https" => Some(v == "https"),
            _ => return Err(refuse(&key, format!("{v:?} is neither http nor https"))),
        },
    };
    let path = match get(o, "path") {
        Some((key, v)) if !v.starts_with('/') => {
            return Err(refuse(&key, format!("{v:?} does not start with /")));
        }
        Some((_, v)) => Some(v.to_owned()),
        None => None,
    };
    let base = format!("{}/{}/{}", o.kind.as_str(), o.namespace, o.name);
    let named = get(o, "name").map(|(k, v)| (k, v.to_owned()));
    if let Some((key, _)) = &named
        && hosts.len() > 1
    {
        return Err(refuse(
            key,
            format!(
                "the {} has {} hosts; a name fits one (or set {PREFIX}host)",
                o.kind.as_str(),
                hosts.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(hosts.len());
    for h in &hosts {
        let tls = scheme.unwrap_or(h.tls || port.is_some_and(|p| p.tls));
        let number = port.map(|p| p.number);
        let host = bracketed(&h.name);
        let target = match form {
            Form::Url { websocket } => {
                let scheme = match (websocket, tls) {
                    (false, false) => "http",
                    (false, true) => "https",
                    (true, false) => "ws",
                    (true, true) => "wss",
                };
                let port = number.map(|n| format!(":{n}")).unwrap_or_default();
                let path = path
                    .clone()
                    .or(h.path.clone())
                    .unwrap_or_else(|| "/".into());
                format!("{scheme}://{host}{port}{path}")
            }
            Form::Host => h.name.clone(),
            Form::HostPort => {
                let n = number.unwrap_or(if tls { 443 } else { 80 });
                format!("{host}:{n}")
            }
        };
        let name = match &named {
            Some((_, n)) => n.clone(),
            None if hosts.len() > 1 => format!("{base}/{}", h.name),
            None => base.clone(),
        };
        out.push(RawTarget {
            name,
            target,
            ..raw.clone()
        });
    }
    Ok(out)
}

fn duration(key: &str, v: &str) -> Result<ConfigDuration, Refusal> {
    parse_duration(v)
        .map(ConfigDuration)
        .map_err(|e| refuse(key, e))
}

/// An IPv6 literal in brackets, for `host:port` and URLs.
fn bracketed(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[derive(Debug, Clone, Copy)]
struct ChosenPort {
    number: u16,
    /// Whether the port suggests TLS (named `https`, or 443).
    tls: bool,
}

/// The port to probe: the annotation's (a number, or a Service port's name), else a Service's
/// first port, else none (the scheme's default).
fn port(o: &Object) -> Result<Option<ChosenPort>, Refusal> {
    let chosen = |p: &Port| ChosenPort {
        number: p.number,
        tls: p.number == 443 || p.name.as_deref() == Some("https"),
    };
    match get(o, "port") {
        Some((key, v)) => {
            if let Ok(n) = v.trim().parse::<u16>() {
                if n == 0 {
                    return Err(refuse(&key, "port 0"));
                }
                return Ok(Some(
                    o.ports
                        .iter()
                        .find(|p| p.number == n)
                        .map(chosen)
                        .unwrap_or(ChosenPort {
                            number: n,
                            tls: n == 443,
                        }),
                ));
            }
            o.ports
                .iter()
                .find(|p| p.name.as_deref() == Some(v))
                .map(|p| Some(chosen(p)))
                .ok_or_else(|| {
                    refuse(
                        &key,
                        format!(
                            "{v:?} is neither a port number nor a port of the {}",
                            o.kind.as_str()
                        ),
                    )
                })
        }
        None => Ok(o.ports.first().map(chosen)),
    }
}

/// The annotation a target's validation error is about, from the error's path (relative to the
/// target: `interval`, `labels.team`, `depends_on[0]`).
pub fn annotation_of(path: &str) -> String {
    let field = path.split(['.', '[']).next().unwrap_or(path);
    match field {
        "module" | "interval" | "timeout" | "labels" | "depends_on" | "retries" | "severity"
        | "runbook_url" | "name" => format!("{PREFIX}{field}"),
        "target" => format!("{PREFIX}host"),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: Kind, annotations: &[(&str, &str)], hosts: &[(&str, bool)]) -> Object {
        Object {
            kind,
            namespace: "home".into(),
            name: "wiki".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            hosts: hosts
                .iter()
                .map(|(h, tls)| Host {
                    name: (*h).into(),
                    tls: *tls,
                    path: None,
                })
                .collect(),
            ports: Vec::new(),
        }
    }

    fn forms(m: &str) -> Option<Form> {
        match m {
            "http_2xx" => Some(Form::of("http")),
            "tcp_connect" => Some(Form::of("tcp")),
            "icmp" => Some(Form::of("icmp")),
            "ws" => Some(Form::of("websocket")),
            _ => None,
        }
    }

    fn one(o: &Object) -> (String, String) {
        let t = targets(o, "http_2xx", forms).expect("accepted");
        assert_eq!(t.len(), 1, "{t:?}");
        (t[0].name.clone(), t[0].target.clone())
    }

    #[test]
    fn opting_in() {
        let a = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(opted_in(&a(&[("lookout.dev/probe", "true")])));
        assert!(opted_in(&a(&[("prometheus.io/probe", "true")])));
        assert!(!opted_in(&a(&[
            ("prometheus.io/probe", "true"),
            ("lookout.dev/probe", "false")
        ])));
        assert!(!opted_in(&a(&[("lookout.dev/probe", "yes")])));
        assert!(!opted_in(&a(&[])));
    }

    #[test]
    fn hosts_become_urls_with_the_scheme_of_their_tls() {
        let o = object(Kind::Ingress, &[], &[("wiki.home", true)]);
        assert_eq!(
            one(&o),
            ("ingress/home/wiki".into(), "https://wiki.home/".into())
        );
        let o = object(Kind::Ingress, &[], &[("a.home", false), ("b.home", true)]);
        let t = targets(&o, "http_2xx", forms).unwrap();
        let got: Vec<(&str, &str)> = t
            .iter()
            .map(|t| (t.name.as_str(), t.target.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("ingress/home/wiki/a.home", "http://a.home/"),
                ("ingress/home/wiki/b.home", "https://b.home/")
            ]
        );
        let mut o = object(
            Kind::HttpRoute,
            &[("lookout.dev/scheme", "https")],
            &[("w", false)],
        );
        o.hosts[0].path = Some("/login".into());
        assert_eq!(one(&o).1, "https://w/login");
        let o = object(
            Kind::HttpRoute,
            &[
                ("prometheus.io/path", "/healthz"),
                ("prometheus.io/port", "8443"),
            ],
            &[("w", false)],
        );
        assert_eq!(one(&o).1, "http://w:8443/healthz");
    }

    #[test]
    fn annotations_set_the_module_schedule_labels_and_edges() {
        let o = object(
            Kind::Ingress,
            &[
                ("lookout.dev/module", "tcp_connect"),
                ("lookout.dev/interval", "15s"),
                ("lookout.dev/timeout", "2s"),
                ("lookout.dev/labels", "team=wiki, env = home"),
                ("lookout.dev/depends_on", "postgres, service/home/redis"),
                ("lookout.dev/retries", "1"),
                ("lookout.dev/severity", "warning"),
                ("lookout.dev/name", "wiki"),
            ],
            &[("wiki.home", true)],
        );
        let t = &targets(&o, "http_2xx", forms).unwrap()[0];
        assert_eq!(
            (t.name.as_str(), t.target.as_str()),
            ("wiki", "wiki.home:443")
        );
        assert_eq!(t.module, "tcp_connect");
        assert_eq!(t.interval.unwrap().0, std::time::Duration::from_secs(15));
        assert_eq!(t.timeout.unwrap().0, std::time::Duration::from_secs(2));
        assert_eq!(
            t.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            ["env=home", "namespace=home", "team=wiki"]
        );
        assert_eq!(t.depends_on, ["postgres", "service/home/redis"]);
        assert_eq!(
            (t.retries, t.severity.as_deref()),
            (Some(1), Some("warning"))
        );
    }

    #[test]
    fn services_probe_their_cluster_name_and_chosen_port() {
        let mut o = object(
            Kind::Service,
            &[("lookout.dev/module", "tcp_connect")],
            &[("db.home.svc", false)],
        );
        o.ports = vec![
            Port {
                name: Some("pg".into()),
                number: 5432,
            },
            Port {
                name: Some("https".into()),
                number: 8443,
            },
        ];
        assert_eq!(one(&o).1, "db.home.svc:5432");
        o.annotations
            .insert("lookout.dev/port".into(), "https".into());
        o.annotations
            .insert("lookout.dev/module".into(), "http_2xx".into());
        assert_eq!(one(&o).1, "https://db.home.svc:8443/");
        o.annotations
            .insert("lookout.dev/module".into(), "icmp".into());
        assert_eq!(one(&o).1, "db.home.svc");
        o.annotations
            .insert("lookout.dev/module".into(), "ws".into());
        assert_eq!(one(&o).1, "wss://db.home.svc:8443/");
        o.annotations
            .insert("lookout.dev/host".into(), "::1".into());
        o.annotations
            .insert("lookout.dev/module".into(), "tcp_connect".into());
        assert_eq!(one(&o).1, "[::1]:8443");
    }

    #[test]
    fn bad_annotations_are_refused_by_name() {
        for (pairs, hosts, annotation, says) in [
            (
                vec![("lookout.dev/interval", "soon")],
                vec![("w", false)],
                "lookout.dev/interval",
                "",
            ),
            (
                vec![("lookout.dev/intervall", "1m")],
                vec![("w", false)],
                "lookout.dev/intervall",
                "unknown annotation",
            ),
            (
                vec![("lookout.dev/labels", "team")],
                vec![("w", false)],
                "lookout.dev/labels",
                "not name=value",
            ),
            (
                vec![("lookout.dev/scheme", "ftp")],
                vec![("w", false)],
                "lookout.dev/scheme",
                "neither http nor https",
            ),
            (
                vec![("lookout.dev/port", "web")],
                vec![("w", false)],
                "lookout.dev/port",
                "neither a port number",
            ),
            (
                vec![("lookout.dev/path", "healthz")],
                vec![("w", false)],
                "lookout.dev/path",
                "does not start with /",
            ),
            (
                vec![("lookout.dev/retries", "-1")],
                vec![("w", false)],
                "lookout.dev/retries",
                "whole number",
            ),
            (vec![], vec![], "lookout.dev/host", "names no host"),
            (
                vec![("lookout.dev/name", "x")],
                vec![("a", false), ("b", false)],
                "lookout.dev/name",
                "2 hosts",
            ),
        ] {
            let o = object(Kind::Ingress, &pairs, &hosts);
            let e = targets(&o, "http_2xx", forms).unwrap_err();
            assert_eq!(e.annotation, annotation, "{e}");
            assert!(e.message.contains(says), "{e}");
        }
    }

    #[test]
    fn validation_paths_name_their_annotation() {
        assert_eq!(annotation_of("interval"), "lookout.dev/interval");
        assert_eq!(annotation_of("labels.team"), "lookout.dev/labels");
        assert_eq!(annotation_of("depends_on[1]"), "lookout.dev/depends_on");
        assert_eq!(annotation_of("target"), "lookout.dev/host");
    }
}
