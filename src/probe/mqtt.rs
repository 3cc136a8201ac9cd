//! `prober: mqtt`: connect to an MQTT broker (3.1.1 or 5, optionally over TLS) and prove that it
//! routes messages, not only that it accepts connections.
//!
//! - `mode: round_trip` (default) subscribes to a topic unique to the probe under `topic`,
//!   publishes a unique payload there and succeeds when that payload comes back. This catches a
//!   broker that accepts connections but routes nothing, and an ACL that denies the probe's user.
//! - `mode: subscribe` subscribes to `topic` (wildcards allowed) and succeeds when any message
//!   arrives before the deadline (retained ones count unless `ignore_retained`): data freshness
//!   for applications that publish continuously.
//!
//! Phases (`probe_mqtt_duration_seconds{phase}`): `resolve`; `connect` is the TCP connect plus the
//! MQTT CONNECT/CONNACK exchange (the TLS handshake between them is `tls`); `subscribe` is
//! SUBSCRIBE to SUBACK; `round_trip` is PUBLISH until the payload is back, or `first_message`
//! in subscribe mode, SUBACK until the first counted message.
//!
//! **Why rumqttc's codec and not its client.** rumqttc's `EventLoop` dials by itself (its
//! `Network` cannot be built around a stream we provide), so with it lookout could neither time
//! TCP, TLS and CONNECT separately nor see the TLS handshake (version, cipher, chain) that every
//! other prober records. Instead the probe makes its own connection (`net::dial`, TLS included)
//! and frames it with rumqttc's public `mqttbytes` codecs (v4 for 3.1.1, v5): rumqttc encodes
//! and decodes every packet; this module only decides which packets to send, a fixed script of
//! CONNECT, SUBSCRIBE, PUBLISH, PUBACK and DISCONNECT.
//!
//! Every path that got a CONNACK ends with DISCONNECT, and every path closes the stream (TLS
//! close_notify included): the waits run under a deadline slightly earlier than the probe's, so
//! a broker that never answers still gets a clean goodbye before `probe::run` gives up.

mod session;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::time::Instant;
use tracing::debug;

use self::session::{Incoming, Message, Session, connack_text};

use crate::probe::net;
use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober};
use crate::probe::report::Family;
use crate::probe::resolve::{IpPreference, IpProtocol};
use crate::probe::tls;
use crate::secret::Secret;
use crate::values::{Choice, Conflict, FieldError, value_or_file};

/// `probe_mqtt_duration_seconds{phase}`.
pub static PROBE_MQTT_DURATION_SECONDS: Family = Family::gauge(
    "probe_mqtt_duration_seconds",
    "Duration of MQTT probe by phase",
);
/// `probe_mqtt_connack_code`.
pub static PROBE_MQTT_CONNACK_CODE: Family = Family::gauge(
    "probe_mqtt_connack_code",
    "Return code of the broker's CONNACK (reason code for MQTT 5); -1 when none was received",
);

/// The port used when the target has none.
const DEFAULT_PORT: u16 = 1883;
/// The port used with TLS when the target has none.
const DEFAULT_TLS_PORT: u16 = 8883;
/// The default topic: the round trip happens on a probe-unique topic below it.
const DEFAULT_TOPIC: &str = "lookout/probe";
/// The packet identifier of the probe's SUBSCRIBE.
const SUBSCRIBE_PKID: u16 = 1;
/// The packet identifier of the probe's QoS 1 PUBLISH.
const PUBLISH_PKID: u16 = 2;
/// The most time kept back from the probe's deadline for DISCONNECT and closing the stream.
const GOODBYE_RESERVE: Duration = Duration::from_millis(250);

/// An MQTT protocol version, as `protocol_version` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1 (protocol level 4).
    #[default]
    V311,
    /// MQTT 5.
    V5,
}

impl<'de> Deserialize<'de> for ProtocolVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(s) => s,
        };
        match text.trim() {
            "3.1.1" | "4" => Ok(ProtocolVersion::V311),
            "5" | "5.0" => Ok(ProtocolVersion::V5),
            other => Err(serde::de::Error::custom(format!(
                "unknown MQTT protocol_version {other:?} (expected \"3.1.1\" or 5)"
            ))),
        }
    }
}

impl Serialize for ProtocolVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            ProtocolVersion::V311 => "3.1.1",
            ProtocolVersion::V5 => "5",
        })
    }
}

/// What the probe proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Publish a unique payload on a probe-unique topic and wait for it to come back.
    #[default]
    RoundTrip,
    /// Wait for any message on `topic`.
    Subscribe,
}

/// The `mqtt:` section of a module, as written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// The user name sent in CONNECT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password sent in CONNECT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding the password (read at load, trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The client identifier; `lookout-<random>` (new for every probe) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `3.1.1` (default) or `5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<ProtocolVersion>,
    /// Use TLS (default port 8883).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<tls::Section>,
    /// The QoS of the subscription and of the probe's message: 0 or 1 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<u8>,
    /// `round_trip`: the parent of the probe-unique topic (default `lookout/probe`);
    /// `subscribe`: the topic filter to watch (required, wildcards allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// `round_trip` (default) or `subscribe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// `subscribe` mode: retained messages do not count.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_retained: bool,
    /// Whether the other protocol may be used (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol_fallback: Option<bool>,
    /// ip4 or ip6 (default ip6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_ip_protocol: Option<IpProtocol>,
}

/// The validated MQTT module.
#[derive(Debug, Clone)]
pub struct Spec {
    /// User name, if any.
    pub username: Option<String>,
    /// Password, if any (from `password` or `password_file`).
    pub password: Option<Secret>,
    /// A fixed client identifier; a fresh random one per probe when `None`.
    pub client_id: Option<String>,
    /// The protocol version spoken.
    pub version: ProtocolVersion,
    /// Use TLS.
    pub tls: bool,
    /// TLS settings.
    pub tls_config: tls::Spec,
    /// QoS 0 or 1.
    pub qos: QoS,
    /// The topic (round trip: parent of the probe topic; subscribe: the filter).
    pub topic: String,
    /// What the probe proves.
    pub mode: Mode,
    /// Subscribe mode: skip retained messages.
    pub ignore_retained: bool,
    /// Address preference.
    pub ip: IpPreference,
}

impl Spec {
    /// Validates `section`; relative file names are read relative to `base`.
    pub fn build(section: &Section, base: &Path) -> Result<Spec, FieldError> {
        let err = |field: &str, msg: String| Err(FieldError::new(field, msg));
        let password = value_or_file(
            base,
            section.password.clone(),
            section.password_file.as_deref(),
            Choice {
                file_field: "password_file",
                conflict: Some(Conflict {
                    field: "password",
                    message: "at most one of password & password_file must be configured",
                }),
            },
        )?;
        let version = section.protocol_version.unwrap_or_default();
        if password.is_some() && section.username.is_none() && version == ProtocolVersion::V311 {
            return err(
                "password",
                "MQTT 3.1.1 sends a password only with a username: set username too".into(),
            );
        }
        let qos = match section.qos.unwrap_or(1) {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            other => return err("qos", format!("qos {other} is not supported (use 0 or 1)")),
        };
        let mode = section.mode.unwrap_or_default();
        let topic = match (mode, &section.topic) {
            (Mode::RoundTrip, None) => DEFAULT_TOPIC.to_owned(),
            (Mode::RoundTrip, Some(t)) => {
                let t = t.trim_end_matches('/');
                if t.is_empty() || rumqttc::mqttbytes::has_wildcards(t) {
                    return err(
                        "topic",
                        format!(
                            "topic {t:?}: round_trip needs a plain topic (no + or #) under which the probe publishes"
                        ),
                    );
                }
                t.to_owned()
            }
            (Mode::Subscribe, None) => {
                return err("topic", "mode subscribe needs a topic to watch".into());
            }
            (Mode::Subscribe, Some(t)) => {
                if !rumqttc::mqttbytes::valid_filter(t) {
                    return err("topic", format!("topic {t:?} is not a valid topic filter"));
                }
                t.clone()
            }
        };
        if section.ignore_retained && mode != Mode::Subscribe {
            return err(
                "ignore_retained",
                "ignore_retained applies to mode subscribe only".into(),
            );
        }
        if let Some(id) = &section.client_id
            && id.is_empty()
        {
            return err(
                "client_id",
                "client_id must not be empty (leave it out for a random one)".into(),
            );
        }
        Ok(Spec {
            username: section.username.clone(),
            password,
            client_id: section.client_id.clone(),
            version,
            tls: section.tls,
            tls_config: tls::Spec::build(&section.tls_config.clone().unwrap_or_default(), base)
                .map_err(|e| e.within("tls_config"))?,
            qos,
            topic,
            mode,
            ignore_retained: section.ignore_retained,
            ip: IpPreference::from_config(
                section.preferred_ip_protocol,
                section.ip_protocol_fallback,
            ),
        })
    }

    /// The user name and password for CONNECT, if any.
    fn login(&self) -> Option<(&str, &str)> {
        if self.username.is_none() && self.password.is_none() {
            return None;
        }
        Some((
            self.username.as_deref().unwrap_or_default(),
            self.password
                .as_ref()
                .map(Secret::expose)
                .unwrap_or_default(),
        ))
    }

    /// The label of the last phase.
    fn last_phase(&self) -> &'static str {
        match self.mode {
            Mode::RoundTrip => "round_trip",
            Mode::Subscribe => "first_message",
        }
    }
}

/// 64 unpredictable bits: std's per-process random hash keys over the clock and a counter.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// The deadline for the probe's own waits: a little before the probe's, so that DISCONNECT and
/// closing the stream still fit.
fn wait_deadline(deadline: Instant) -> Instant {
    let left = deadline.saturating_duration_since(Instant::now());
    deadline - (left / 10).min(GOODBYE_RESERVE)
}

/// Awaits `fut` until `deadline`; `what` names the wait in the failure.
async fn within<T>(
    deadline: Instant,
    what: &str,
    fut: impl Future<Output = Result<T, ProbeFailure>>,
) -> Result<T, ProbeFailure> {
    tokio::time::timeout_at(deadline, fut)
        .await
        .unwrap_or_else(|_| {
            Err(ProbeFailure::new(
                FailureKind::Timeout,
                format!("{what} before the deadline"),
            ))
        })
}

impl Prober for Spec {
    async fn probe(
        &self,
        req: &ProbeRequest,
        cx: &mut ProbeContext<'_>,
    ) -> Result<(), ProbeFailure> {
        for phase in ["resolve", "connect", "tls", "subscribe", self.last_phase()] {
            cx.report
                .declare_labeled(&PROBE_MQTT_DURATION_SECONDS, &[("phase", phase)]);
        }
        cx.report.set(&PROBE_MQTT_CONNACK_CODE, -1.0);
        let default_port = if self.tls {
            DEFAULT_TLS_PORT
        } else {
            DEFAULT_PORT
        };
        let (host, port) = net::split_host_default_port(&req.target, default_port)?;
        let (ip, lookup) = net::resolve(cx, net::Address::Target(&host), self.ip).await?;
        cx.report.set_labeled(
            &PROBE_MQTT_DURATION_SECONDS,
            &[("phase", "resolve")],
            lookup.as_secs_f64(),
        );
        let deadline = wait_deadline(cx.deadline);

        let name = self
            .tls_config
            .server_name
            .clone()
            .unwrap_or_else(|| host.clone());
        let tls = net::Tls {
            spec: &self.tls_config,
            server_name: &name,
            alpn: &[],
        };
        let target = net::Target {
            bound: Some(deadline),
            ..net::Target::new(net::Address::Resolved(ip), port, self.ip)
        };
        let dialed = net::dial(
            cx,
            &target,
            self.tls.then_some(&tls),
            |report, step| match step {
                net::Step::Resolved { .. } => {}
                net::Step::Connected { elapsed, .. } => report.add(
                    &PROBE_MQTT_DURATION_SECONDS,
                    &[("phase", "connect")],
                    elapsed.as_secs_f64(),
                ),
                net::Step::Handshaken { elapsed, .. } => report.set_labeled(
                    &PROBE_MQTT_DURATION_SECONDS,
                    &[("phase", "tls")],
                    elapsed.as_secs_f64(),
                ),
            },
        )
        .await?;
        if let Some(hs) = &dialed.handshake {
            tls::record(cx.report, hs);
        }
        let stream = dialed.stream;

        let mut session = Session::new(stream, self.version);
        let mut connected = false;
        let result = self
            .converse(&mut session, &mut connected, cx, deadline)
            .await;
        // The goodbye may use the time kept back from the probe's deadline.
        let goodbye = async {
            if connected {
                let _ = session.disconnect().await;
            }
            session.close().await;
        };
        if tokio::time::timeout_at(cx.deadline, goodbye).await.is_err() {
            debug!("no time left to disconnect cleanly");
        }
        result
    }
}

impl Spec {
    /// CONNECT, SUBSCRIBE and the mode's wait; sets `connected` once the broker accepted us.
    async fn converse(
        &self,
        session: &mut Session,
        connected: &mut bool,
        cx: &mut ProbeContext<'_>,
        deadline: Instant,
    ) -> Result<(), ProbeFailure> {
        let token = format!("{:016x}", random_u64());
        let client_id = self
            .client_id
            .clone()
            .unwrap_or_else(|| format!("lookout-{}", &token[..12]));
        // No PINGREQ is ever sent: the keep-alive only has to outlast the probe.
        let left = cx.deadline.saturating_duration_since(Instant::now());
        let keep_alive = u16::try_from(left.as_secs() + 10).unwrap_or(u16::MAX);

        let start = Instant::now();
        let connack = within(deadline, "no CONNACK from the broker", async {
            let login = self.login();
            session.connect(&client_id, keep_alive, login).await?;
            loop {
                match session.next("waiting for CONNACK").await? {
                    Incoming::ConnAck(code) => return Ok(code),
                    Incoming::Other => continue,
                    other => {
                        return Err(ProbeFailure::new(
                            FailureKind::Protocol,
                            format!("expected CONNACK from the broker, got {other:?}"),
                        ));
                    }
                }
            }
        })
        .await;
        cx.report.add(
            &PROBE_MQTT_DURATION_SECONDS,
            &[("phase", "connect")],
            start.elapsed().as_secs_f64(),
        );
        let code = connack?;
        cx.report.set(&PROBE_MQTT_CONNACK_CODE, f64::from(code));
        if code != 0 {
            return Err(ProbeFailure::new(
                FailureKind::Assertion,
                format!(
                    "the broker refused the connection: {}",
                    connack_text(self.version, code)
                ),
            ));
        }
        *connected = true;
        debug!(client_id = %client_id, "Connected to the broker");

        let filter = match self.mode {
            Mode::RoundTrip => format!("{}/{token}", self.topic),
            Mode::Subscribe => self.topic.clone(),
        };
        let start = Instant::now();
        // A broker may deliver (retained) messages before its SUBACK; the first one that counts
        // is kept.
        let mut early: Option<Message> = None;
        let suback = within(deadline, "no SUBACK from the broker", async {
            session.subscribe(&filter, self.qos).await?;
            loop {
                match session.next("waiting for SUBACK").await? {
                    Incoming::SubAck(SUBSCRIBE_PKID, granted) => return Ok(granted),
                    Incoming::Publish(m) => {
                        if let Some(pkid) = m.ack {
                            session.puback(pkid).await?;
                        }
                        if early.is_none() && self.counts(&m) {
                            early = Some(m);
                        }
                    }
                    Incoming::Disconnect(why) => return Err(disconnected(&why)),
                    _ => continue,
                }
            }
        })
        .await;
        cx.report.set_labeled(
            &PROBE_MQTT_DURATION_SECONDS,
            &[("phase", "subscribe")],
            start.elapsed().as_secs_f64(),
        );
        if let Err(why) = suback? {
            return Err(ProbeFailure::new(
                FailureKind::Assertion,
                format!("the broker refused the subscription to {filter:?}: {why}"),
            ));
        }
        debug!(topic = %filter, "Subscribed");

        match self.mode {
            Mode::RoundTrip => {
                self.round_trip(session, cx, deadline, &filter, &token)
                    .await
            }
            Mode::Subscribe => {
                let start = Instant::now();
                let first = match early {
                    Some(m) => Ok(m),
                    None => {
                        within(
                            deadline,
                            &format!("no message on {filter:?}"),
                            self.first_message(session),
                        )
                        .await
                    }
                };
                cx.report.set_labeled(
                    &PROBE_MQTT_DURATION_SECONDS,
                    &[("phase", "first_message")],
                    start.elapsed().as_secs_f64(),
                );
                let m = first?;
                debug!(
                    topic = %String::from_utf8_lossy(&m.topic),
                    retained = m.retain,
                    "Message received"
                );
                Ok(())
            }
        }
    }

    /// Whether a message counts in subscribe mode.
    fn counts(&self, m: &Message) -> bool {
        self.mode == Mode::Subscribe && !(self.ignore_retained && m.retain)
    }

    /// Subscribe mode: waits for the first message that counts.
    async fn first_message(&self, session: &mut Session) -> Result<Message, ProbeFailure> {
        loop {
            match session.next("waiting for a message").await? {
                Incoming::Publish(m) => {
                    if let Some(pkid) = m.ack {
                        session.puback(pkid).await?;
                    }
                    if self.counts(&m) {
                        return Ok(m);
                    }
                    debug!("Retained message ignored");
                }
                Incoming::Disconnect(why) => return Err(disconnected(&why)),
                _ => continue,
            }
        }
    }

    /// Round-trip mode: publishes a unique payload on `topic` and waits for it.
    async fn round_trip(
        &self,
        session: &mut Session,
        cx: &mut ProbeContext<'_>,
        deadline: Instant,
        topic: &str,
        token: &str,
    ) -> Result<(), ProbeFailure> {
        let payload = Bytes::from(format!("lookout round trip {token}"));
        let start = Instant::now();
        let result = within(
            deadline,
            &format!(
                "the message published on {topic:?} did not come back (routing broken, or an ACL denies this user)"
            ),
            async {
                session.publish(topic, payload.clone(), self.qos).await?;
                loop {
                    match session.next("waiting for the published message").await? {
                        Incoming::Publish(m) => {
                            if let Some(pkid) = m.ack {
                                session.puback(pkid).await?;
                            }
                            if m.topic.as_ref() == topic.as_bytes() && m.payload == payload {
                                return Ok(());
                            }
                        }
                        Incoming::PubAck(PUBLISH_PKID, Err(why)) => {
                            return Err(ProbeFailure::new(
                                FailureKind::Assertion,
                                format!("the broker refused the message on {topic:?}: {why}"),
                            ));
                        }
                        Incoming::Disconnect(why) => return Err(disconnected(&why)),
                        _ => continue,
                    }
                }
            },
        )
        .await;
        cx.report.set_labeled(
            &PROBE_MQTT_DURATION_SECONDS,
            &[("phase", "round_trip")],
            start.elapsed().as_secs_f64(),
        );
        result
    }
}

fn disconnected(why: &str) -> ProbeFailure {
    ProbeFailure::new(
        FailureKind::Protocol,
        format!("the broker disconnected the probe: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(yaml: &str) -> Result<Spec, FieldError> {
        let section: Section = serde_norway::from_str(yaml).unwrap();
        Spec::build(&section, Path::new("."))
    }

    #[test]
    fn defaults() {
        let s = build("{}").unwrap();
        assert_eq!(s.mode, Mode::RoundTrip);
        assert_eq!(s.topic, DEFAULT_TOPIC);
        assert_eq!(s.qos, QoS::AtLeastOnce);
        assert_eq!(s.version, ProtocolVersion::V311);
        assert!(s.client_id.is_none());
    }

    #[test]
    fn protocol_versions() {
        for (yaml, want) in [
            ("protocol_version: 3.1.1", ProtocolVersion::V311),
            ("protocol_version: \"3.1.1\"", ProtocolVersion::V311),
            ("protocol_version: 5", ProtocolVersion::V5),
            ("protocol_version: \"5\"", ProtocolVersion::V5),
        ] {
            assert_eq!(build(yaml).unwrap().version, want, "{yaml}");
        }
        assert!(serde_norway::from_str::<Section>("protocol_version: 3").is_err());
    }

    #[test]
    fn invalid_sections() {
        for (yaml, field) in [
            ("qos: 2", "qos"),
            ("mode: subscribe", "topic"),
            ("{mode: subscribe, topic: 'a/#/b'}", "topic"),
            ("topic: 'a/+'", "topic"),
            ("ignore_retained: true", "ignore_retained"),
            ("password: x", "password"),
            ("{password: x, password_file: y, username: u}", "password"),
            ("client_id: ''", "client_id"),
        ] {
            assert_eq!(build(yaml).unwrap_err().path, field, "{yaml}");
        }
        assert!(build("{mode: subscribe, topic: 'sensors/+/temp', ignore_retained: true}").is_ok());
        assert!(build("{password: x, protocol_version: 5}").is_ok());
    }

    #[test]
    fn the_password_never_prints() {
        let s = build("{username: u, password: hunter2}").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn wait_deadline_keeps_some_time_back() {
        let now = Instant::now();
        let d = now + Duration::from_secs(10);
        let w = wait_deadline(d);
        assert!(w < d && w >= d - GOODBYE_RESERVE);
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(random_u64(), random_u64());
    }
}
