//! `probe_limits:`: how many `/probe` requests run at once, overall and per client, and how
//! fast one client may send them. Past a limit a request gets `429 Too Many Requests` with
//! `Retry-After` before anything is resolved or dialled, and counts in
//! `lookout_probe_limited_total{reason}`.
//!
//! A client is the connection's peer address (an IPv6 client by its /64, since one host
//! commonly holds a whole /64); a proxy in front of lookout is one client. Scheduled targets
//! are not limited: the config sets their pace.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::values::FieldError;
use crate::web::limit::Bucket;

/// `probe_limits:` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// `/probe` probes running at once, all clients together (default `MAX_IN_FLIGHT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// Limits per client (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_client: Option<ClientSection>,
}

/// `probe_limits.per_client:` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// Probes one client may have running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// Requests per second one client may send, sustained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Requests one client may send at once above `rate` (default: `rate`, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

/// The global cap without a `probe_limits:` section: far above what a Prometheus server asks of
/// one exporter, and a bound on the connections and memory a flood can make lookout take.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Clients tracked at once; past it, idle ones are forgotten, and while every one is busy a
/// new client is refused as the global cap refuses.
pub const MAX_CLIENTS: usize = 65_536;

/// The validated limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// All `/probe` probes at once.
    pub max_in_flight: usize,
    /// Per client at once.
    pub client_in_flight: Option<usize>,
    /// Per client: one request per `interval`, `burst` at once.
    pub client_rate: Option<(Duration, u64)>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            max_in_flight: MAX_IN_FLIGHT,
            client_in_flight: None,
            client_rate: None,
        }
    }
}

impl Spec {
    /// Validates the section; the error's path is relative to `probe_limits`.
    pub fn build(section: Option<&Section>) -> Result<Spec, FieldError> {
        let Some(s) = section else {
            return Ok(Spec::default());
        };
        let positive = |v: usize, path: &str| {
            if v == 0 {
                Err(FieldError::new(path, format!("{path} must be at least 1")))
            } else {
                Ok(v)
            }
        };
        let max_in_flight = positive(s.max_in_flight.unwrap_or(MAX_IN_FLIGHT), "max_in_flight")?;
        let (mut client_in_flight, mut client_rate) = (None, None);
        if let Some(c) = &s.per_client {
            if let Some(n) = c.max_in_flight {
                client_in_flight = Some(positive(n, "per_client.max_in_flight")?);
            }
            match (c.rate, c.burst) {
                (None, Some(_)) => {
                    return Err(FieldError::new("per_client.burst", "burst needs a rate"));
                }
                (None, None) => {}
                (Some(r), burst) => {
                    if !(1e-6..=1e6).contains(&r) {
                        return Err(FieldError::new(
                            "per_client.rate",
                            format!(
                                "rate must be between 0.000001 and 1000000 requests per second (got {r})"
                            ),
                        ));
                    }
                    let burst = burst.unwrap_or(r.ceil() as u64).max(1);
                    client_rate = Some((Duration::from_secs_f64(1.0 / r), burst));
                }
            }
        }
        Ok(Spec {
            max_in_flight,
            client_in_flight,
            client_rate,
        })
    }
}

/// Why a request was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// The client sent requests faster than `per_client.rate`.
    Rate,
    /// The client has `per_client.max_in_flight` probes running.
    ClientInFlight,
    /// `max_in_flight` probes run already (or every tracked client is busy).
    InFlight,
}

impl Limited {
    /// Every reason, in the order of the metric's series.
    pub const ALL: [Limited; 3] = [Limited::Rate, Limited::ClientInFlight, Limited::InFlight];

    /// The metric's `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Limited::Rate => "rate",
            Limited::ClientInFlight => "client_in_flight",
            Limited::InFlight => "in_flight",
        }
    }
}

/// A refusal with how long to wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Which limit.
    pub reason: Limited,
    /// `Retry-After`, whole seconds, at least 1.
    pub retry_after: u64,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.reason {
            Limited::Rate => write!(f, "too many requests from this client (per_client.rate)"),
            Limited::ClientInFlight => write!(
                f,
                "too many probes of this client running at once (per_client.max_in_flight)"
            ),
            Limited::InFlight => write!(f, "too many probes running at once (max_in_flight)"),
        }
    }
}

#[derive(Debug)]
struct Client {
    in_flight: usize,
    bucket: Option<Bucket>,
    /// The bucket's settings when it was made: a reload with other ones starts a new bucket.
    rate: Option<(Duration, u64)>,
    last: Instant,
}

#[derive(Debug, Default)]
struct Counts {
    in_flight: usize,
    clients: HashMap<IpAddr, Client>,
    /// When the client table was last swept for idle clients (at most once a second, so a full
    /// table cannot make every request pay for a sweep).
    swept: Option<Instant>,
}

/// The counters behind the limits, shared by every request.
#[derive(Debug, Default)]
pub struct Limiter {
    counts: Mutex<Counts>,
}

/// A running probe's place; dropping it frees the place.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    client: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.limiter.lock();
        c.in_flight = c.in_flight.saturating_sub(1);
        if let Some(ip) = self.client
            && let Some(cl) = c.clients.get_mut(&ip)
        {
            cl.in_flight = cl.in_flight.saturating_sub(1);
        }
    }
}

/// The key of a client: its IPv4 address, or its IPv6 /64 (an IPv4-mapped address as IPv4).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Limiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Probes running now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// Takes a place for one probe of `client` (`None`: a peer lookout does not know) under
    /// `spec`, or says which limit refuses it.
    pub fn acquire(
        self: &Arc<Self>,
        spec: &Spec,
        client: Option<IpAddr>,
        now: Instant,
    ) -> Result<Permit, Refusal> {
        let mut c = self.lock();
        let busy = Refusal {
            reason: Limited::InFlight,
            retry_after: 1,
        };
        if c.in_flight >= spec.max_in_flight {
            return Err(busy);
        }
        let per_client = spec.client_in_flight.is_some() || spec.client_rate.is_some();
        let key = client.filter(|_| per_client).map(client_key);
        if let Some(ip) = key {
            if !c.clients.contains_key(&ip) && c.clients.len() >= MAX_CLIENTS {
                if c.swept
                    .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
                {
                    return Err(busy);
                }
                c.swept = Some(now);
                // Forget the idle clients whose bucket has refilled (or has none).
                c.clients.retain(|_, cl| {
                    cl.in_flight > 0
                        || cl.rate.is_some_and(|(interval, burst)| {
                            let full =
                                interval.saturating_mul(u32::try_from(burst).unwrap_or(u32::MAX));
                            now.saturating_duration_since(cl.last) < full
                        })
                });
                if c.clients.len() >= MAX_CLIENTS {
                    return Err(busy);
                }
            }
            let cl = c.clients.entry(ip).or_insert_with(|| Client {
                in_flight: 0,
                bucket: None,
                rate: None,
                last: now,
            });
            if let Some(max) = spec.client_in_flight
                && cl.in_flight >= max
            {
                return Err(Refusal {
                    reason: Limited::ClientInFlight,
                    retry_after: 1,
                });
            }
            if cl.rate != spec.client_rate {
                cl.rate = spec.client_rate;
                cl.bucket = spec
                    .client_rate
                    .map(|(interval, burst)| Bucket::new(interval, burst, now));
            }
            cl.last = now;
            if let Some(b) = &mut cl.bucket
                && !b.allow(now)
            {
                return Err(Refusal {
                    reason: Limited::Rate,
                    retry_after: b.wait(now).as_secs_f64().ceil().max(1.0) as u64,
                });
            }
            cl.in_flight += 1;
        }
        c.in_flight += 1;
        Ok(Permit {
            limiter: self.clone(),
            client: key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Spec {
        let s: Section = serde_norway::from_str(yaml).unwrap();
        Spec::build(Some(&s)).unwrap()
    }

    #[test]
    fn the_global_cap_refuses_past_it_and_frees_on_drop() {
        let l = Arc::new(Limiter::default());
        let s = spec("{max_in_flight: 2}");
        let now = Instant::now();
        let a = l.acquire(&s, None, now).unwrap();
        let _b = l.acquire(&s, None, now).unwrap();
        let e = l.acquire(&s, None, now).unwrap_err();
        assert_eq!((e.reason, e.retry_after), (Limited::InFlight, 1));
        assert_eq!(l.in_flight(), 2);
        drop(a);
        assert_eq!(l.in_flight(), 1);
        assert!(l.acquire(&s, None, now).is_ok());
        // Without a section: the documented default cap, no per-client limits.
        assert_eq!(Spec::build(None).unwrap().max_in_flight, MAX_IN_FLIGHT);
    }

    #[test]
    fn a_client_is_held_to_its_own_places_and_rate() {
        let l = Arc::new(Limiter::default());
        let s = spec("{per_client: {max_in_flight: 1, rate: 2, burst: 3}}");
        let now = Instant::now();
        let (one, two): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let p = l.acquire(&s, Some(one), now).unwrap();
        let e = l.acquire(&s, Some(one), now).unwrap_err();
        assert_eq!(e.reason, Limited::ClientInFlight);
        // Another client is not affected.
        drop(l.acquire(&s, Some(two), now).unwrap());
        drop(p);
        // Burst 3: the first took one, two more, then the rate (one per 0.5 s) refuses.
        drop(l.acquire(&s, Some(one), now).unwrap());
        drop(l.acquire(&s, Some(one), now).unwrap());
        let e = l.acquire(&s, Some(one), now).unwrap_err();
        assert_eq!((e.reason, e.retry_after), (Limited::Rate, 1));
        assert!(
            l.acquire(&s, Some(one), now + Duration::from_millis(500))
                .is_ok()
        );
        assert_eq!(l.in_flight(), 0);
    }

    #[test]
    fn retry_after_is_the_wait_for_the_next_token() {
        let l = Arc::new(Limiter::default());
        let s = spec("{per_client: {rate: 0.1}}");
        let now = Instant::now();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        drop(l.acquire(&s, Some(ip), now).unwrap());
        let e = l
            .acquire(&s, Some(ip), now + Duration::from_secs(3))
            .unwrap_err();
        assert_eq!((e.reason, e.retry_after), (Limited::Rate, 7));
    }

    #[test]
    fn ipv6_clients_are_their_64_and_mapped_ipv4_is_ipv4() {
        let k = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(k("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
        assert_eq!(k("::ffff:10.0.0.1"), "10.0.0.1");
        assert_eq!(k("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn bad_sections_name_their_field() {
        for (yaml, path) in [
            ("{max_in_flight: 0}", "max_in_flight"),
            (
                "{per_client: {max_in_flight: 0}}",
                "per_client.max_in_flight",
            ),
            ("{per_client: {rate: 0}}", "per_client.rate"),
            ("{per_client: {rate: -1}}", "per_client.rate"),
            ("{per_client: {rate: 1e-20}}", "per_client.rate"),
            ("{per_client: {rate: .nan}}", "per_client.rate"),
            ("{per_client: {burst: 5}}", "per_client.burst"),
        ] {
            let s: Section = serde_norway::from_str(yaml).unwrap();
            assert_eq!(Spec::build(Some(&s)).unwrap_err().path, path, "{yaml}");
        }
    }

    #[test]
    fn a_full_client_table_forgets_idle_clients_first() {
        let l = Arc::new(Limiter::default());
        let s = spec("{per_client: {max_in_flight: 4}}");
        let now = Instant::now();
        let mut held = Vec::new();
        for i in 0..MAX_CLIENTS as u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let p = l.acquire(&s, Some(ip), now).unwrap();
            if i < 10 {
                held.push(p);
            }
        }
        // Full, but all but ten are idle: a new client gets in and the idle ones are gone.
        let new = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
        drop(l.acquire(&s, Some(new), now).unwrap());
        assert_eq!(l.lock().clients.len(), 11);
    }
}
