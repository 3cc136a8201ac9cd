//! lookout's integration tests: one binary, real servers on loopback (see support/).

// The tests are clients and servers of their own, not probes: they open sockets directly.
#![allow(clippy::disallowed_methods)]

mod support;

/// `probe_access:`: allowed and refused addresses, spellings, redirects, names, every prober.
mod access;
/// Alerts end to end (issue 12): Debian's Prometheus and Alertmanager, one per root cause.
mod alerting;
/// A module's `cache:`: /probe answered from a young result, with probe_cached.
mod cache;
/// Config loading: every documented field, and one golden error per bad file.
mod config;
/// The shipped dependency examples, and dependency checks run by the scheduler.
mod dependencies;
/// The DNS prober against an in-process hickory-server: UDP, TCP, DoT, rcodes, RR validators.
mod dns;
/// The binary end to end: endpoints, bad requests, reload, --config.check.
mod endpoints;
/// Failures kept per target on `/` and `/logs?target=&failures=true`.
mod failure_history;
/// `probe_failure_info{reason}`: each failure's reason, on /probe with the flag and for scheduled targets.
mod failure_info;
/// blackbox 0.24–0.28's flags (external URL, probe log level, auto-reload).
mod flags;
/// The dependency graph: states, root causes and the recovery grace on loopback servers.
mod graph;
/// The gRPC prober against an in-process tonic health server.
mod grpc;
/// The history store with the real binary: SIGKILL mid-write, a foreign file refused.
mod history;
/// Hostile targets: stalls, huge and broken bodies, gzip bombs.
mod hostile;
/// The HTTP prober against in-process hyper servers.
mod http;
/// `enable_http3`: probes over QUIC against an in-process quinn/h3 server.
mod http3;
/// The ICMP prober on loopback and in network namespaces the tests create.
mod icmp;
/// Kubernetes discovery against an in-process stand-in for kube-apiserver's list and watch.
mod kubernetes;
/// probe_limits: 429 and Retry-After past the per-client and global limits.
mod limits;
/// The MQTT prober against a mosquitto the tests start: round trip, ACLs, subscribe mode, TLS.
mod mqtt;
/// The postgres prober against real PostgreSQL clusters made per run (Debian's server), TLS
/// sslmodes, freshness checks, and silent listeners.
mod postgres;
/// The Redis prober against redis-servers the tests start: AUTH, SELECT, ROLE, TLS.
mod redis;
/// One test per fixed bug, named after its issue.
mod regression;
/// Name resolution per module: `dns_server` over UDP/TCP/DoT/DoH, `every_address`.
mod resolution;
/// The scheduler: planned times, concurrency, overruns, reloads, shutdown.
mod schedule;
/// `--shard.index` / `--shard.count`: replicas splitting the scheduled targets.
mod shard;
/// The status page in Debian's headless Chromium: screenshots, DOM and accessibility checks.
mod status_page;
/// The TCP prober: banners, dialogues with capture substitution, STARTTLS, TLS.
mod tcp;
/// TLS: certificates made by rcgen, expiry values, verification failures.
mod tls;
/// `prober: unix` (blackbox 0.28): dialogues over a unix socket, TLS, probe_access by path.
mod unix;
/// `--web.config.file`: TLS, client certificates, basic auth, headers, rate limit; curl and
/// Debian's Prometheus as clients; certificate rotation; bad files.
mod web;
/// `prober: websocket` against an in-process tokio-tungstenite server.
mod websocket;
