//! The MQTT conversation as the probe needs it, the same for 3.1.1 and 5: rumqttc's packet
//! codecs framed over the probe's own stream, and the few packets the probe sends or reads.

use std::fmt;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;

use super::{PUBLISH_PKID, ProtocolVersion, SUBSCRIBE_PKID};
use crate::probe::net::Stream;
use crate::probe::prober::{FailureKind, ProbeFailure};

/// The largest packet accepted from the broker; a bigger one fails the probe.
const MAX_INCOMING_PACKET: usize = 1024 * 1024;
/// The largest packet the probe sends (its own packets are small).
const MAX_OUTGOING_PACKET: usize = 64 * 1024;

/// A packet from the broker, as far as the probe cares, the same for both protocol versions.
#[derive(Debug)]
pub(super) enum Incoming {
    /// CONNACK with its return (reason) code.
    ConnAck(u8),
    /// SUBACK: `Err` with the refusal reason when the subscription was not granted.
    SubAck(u16, Result<(), String>),
    /// PUBACK: `Err` with the refusal reason (MQTT 5 only).
    PubAck(u16, Result<(), String>),
    /// An application message.
    Publish(Message),
    /// The broker is closing the connection (MQTT 5 DISCONNECT).
    Disconnect(String),
    /// Anything else (PINGRESP, QoS 2 flow…), ignored.
    Other,
}

/// An application message received.
#[derive(Debug)]
pub(super) struct Message {
    pub(super) topic: Bytes,
    pub(super) payload: Bytes,
    pub(super) retain: bool,
    /// The packet identifier to acknowledge (QoS 1).
    pub(super) ack: Option<u16>,
}

/// The framed connection, in the protocol version of the module.
pub(super) enum Session {
    V311(Framed<Stream, v4::Codec>),
    V5(Framed<Stream, v5::Codec>),
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Session::V311(_) => "Session(3.1.1)",
            Session::V5(_) => "Session(5)",
        })
    }
}

/// rumqttc's v5 types have their own QoS.
fn qos5(q: QoS) -> QoS5 {
    match q {
        QoS::AtMostOnce => QoS5::AtMostOnce,
        QoS::AtLeastOnce => QoS5::AtLeastOnce,
        QoS::ExactlyOnce => QoS5::ExactlyOnce,
    }
}

/// MQTT 5's CONNACK reason code, numbered as on the wire (rumqttc keeps its encoder private).
fn v5_connack_code(c: v5::ConnectReturnCode) -> u8 {
    use v5::ConnectReturnCode as C;
    match c {
        C::Success => 0,
        C::RefusedProtocolVersion => 1,
        C::BadClientId => 2,
        C::ServiceUnavailable => 3,
        C::UnspecifiedError => 128,
        C::MalformedPacket => 129,
        C::ProtocolError => 130,
        C::ImplementationSpecificError => 131,
        C::UnsupportedProtocolVersion => 132,
        C::ClientIdentifierNotValid => 133,
        C::BadUserNamePassword => 134,
        C::NotAuthorized => 135,
        C::ServerUnavailable => 136,
        C::ServerBusy => 137,
        C::Banned => 138,
        C::BadAuthenticationMethod => 140,
        C::TopicNameInvalid => 144,
        C::PacketTooLarge => 149,
        C::QuotaExceeded => 151,
        C::PayloadFormatInvalid => 153,
        C::RetainNotSupported => 154,
        C::QoSNotSupported => 155,
        C::UseAnotherServer => 156,
        C::ServerMoved => 157,
        C::ConnectionRateExceeded => 159,
    }
}

/// A human name for a CONNACK code of `version`.
pub(super) fn connack_text(version: ProtocolVersion, code: u8) -> String {
    let name = match (version, code) {
        (_, 0) => "accepted",
        (ProtocolVersion::V311, 1) => "unacceptable protocol version",
        (ProtocolVersion::V311, 2) => "identifier rejected",
        (ProtocolVersion::V311, 3) => "server unavailable",
        (ProtocolVersion::V311, 4) => "bad user name or password",
        (ProtocolVersion::V311, 5) => "not authorized",
        (ProtocolVersion::V5, 128) => "unspecified error",
        (ProtocolVersion::V5, 132) => "unsupported protocol version",
        (ProtocolVersion::V5, 133) => "client identifier not valid",
        (ProtocolVersion::V5, 134) => "bad user name or password",
        (ProtocolVersion::V5, 135) => "not authorized",
        (ProtocolVersion::V5, 136) => "server unavailable",
        (ProtocolVersion::V5, 137) => "server busy",
        (ProtocolVersion::V5, 138) => "banned",
        _ => "refused",
    };
    format!("{name} (code {code})")
}

fn io_failure(during: &str, e: impl fmt::Display) -> ProbeFailure {
    ProbeFailure::new(FailureKind::Protocol, format!("{during}: {e}"))
}

impl Session {
    pub(super) fn new(stream: Stream, version: ProtocolVersion) -> Session {
        match version {
            ProtocolVersion::V311 => Session::V311(Framed::new(
                stream,
                v4::Codec {
                    max_incoming_size: MAX_INCOMING_PACKET,
                    max_outgoing_size: MAX_OUTGOING_PACKET,
                },
            )),
            ProtocolVersion::V5 => Session::V5(Framed::new(
                stream,
                v5::Codec {
                    max_incoming_size: Some(MAX_INCOMING_PACKET as u32),
                    max_outgoing_size: Some(MAX_OUTGOING_PACKET as u32),
                },
            )),
        }
    }

    async fn send_v4(&mut self, packet: v4::Packet) -> Result<(), ProbeFailure> {
        if let Session::V311(f) = self {
            f.send(packet)
                .await
                .map_err(|e| io_failure("sending to the broker", e))?;
        }
        Ok(())
    }

    async fn send_v5(&mut self, packet: v5::Packet) -> Result<(), ProbeFailure> {
        if let Session::V5(f) = self {
            f.send(packet)
                .await
                .map_err(|e| io_failure("sending to the broker", e))?;
        }
        Ok(())
    }

    pub(super) async fn connect(
        &mut self,
        client_id: &str,
        keep_alive: u16,
        login: Option<(&str, &str)>,
    ) -> Result<(), ProbeFailure> {
        match self {
            Session::V311(_) => {
                let mut c = v4::Connect::new(client_id);
                c.keep_alive = keep_alive;
                c.clean_session = true;
                c.login = login.map(|(user, password)| v4::Login::new(user, password));
                self.send_v4(v4::Packet::Connect(c)).await
            }
            Session::V5(_) => {
                let c = v5::Connect {
                    keep_alive,
                    client_id: client_id.to_owned(),
                    clean_start: true,
                    properties: None,
                };
                let login = login.map(|(user, password)| v5::Login::new(user, password));
                self.send_v5(v5::Packet::Connect(c, None, login)).await
            }
        }
    }

    pub(super) async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<(), ProbeFailure> {
        match self {
            Session::V311(_) => {
                let mut s = v4::Subscribe::new(filter, qos);
                s.pkid = SUBSCRIBE_PKID;
                self.send_v4(v4::Packet::Subscribe(s)).await
            }
            Session::V5(_) => {
                let mut s = v5::Subscribe::new(v5::Filter::new(filter, qos5(qos)), None);
                s.pkid = SUBSCRIBE_PKID;
                self.send_v5(v5::Packet::Subscribe(s)).await
            }
        }
    }

    pub(super) async fn publish(
        &mut self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
    ) -> Result<(), ProbeFailure> {
        let pkid = if qos == QoS::AtMostOnce {
            0
        } else {
            PUBLISH_PKID
        };
        match self {
            Session::V311(_) => {
                let mut p = v4::Publish::from_bytes(topic, qos, payload);
                p.pkid = pkid;
                self.send_v4(v4::Packet::Publish(p)).await
            }
            Session::V5(_) => {
                let mut p = v5::Publish::new(topic, qos5(qos), payload, None);
                p.pkid = pkid;
                self.send_v5(v5::Packet::Publish(p)).await
            }
        }
    }

    pub(super) async fn puback(&mut self, pkid: u16) -> Result<(), ProbeFailure> {
        match self {
            Session::V311(_) => {
                self.send_v4(v4::Packet::PubAck(v4::PubAck::new(pkid)))
                    .await
            }
            Session::V5(_) => {
                self.send_v5(v5::Packet::PubAck(v5::PubAck::new(pkid, None)))
                    .await
            }
        }
    }

    /// DISCONNECT (normal disconnection).
    pub(super) async fn disconnect(&mut self) -> Result<(), ProbeFailure> {
        match self {
            Session::V311(_) => self.send_v4(v4::Packet::Disconnect).await,
            Session::V5(_) => {
                self.send_v5(v5::Packet::Disconnect(v5::Disconnect {
                    reason_code: v5::DisconnectReasonCode::NormalDisconnection,
                    properties: None,
                }))
                .await
            }
        }
    }

    /// Closes the stream (TLS close_notify, then FIN).
    pub(super) async fn close(&mut self) {
        let stream = match self {
            Session::V311(f) => f.get_mut(),
            Session::V5(f) => f.get_mut(),
        };
        let _ = stream.shutdown().await;
    }

    /// The next packet; `during` names the wait for failures.
    pub(super) async fn next(&mut self, during: &str) -> Result<Incoming, ProbeFailure> {
        let closed = || {
            ProbeFailure::new(
                FailureKind::Protocol,
                format!("the broker closed the connection while {during}"),
            )
        };
        match self {
            Session::V311(f) => match f.next().await {
                None => Err(closed()),
                // A return code rumqttc does not know is still a CONNACK to report.
                Some(Err(rumqttc::mqttbytes::Error::InvalidConnectReturnCode(code))) => {
                    Ok(Incoming::ConnAck(code))
                }
                Some(Err(e)) => Err(decode_failure_v4(during, e)),
                Some(Ok(p)) => Ok(from_v4(p)),
            },
            Session::V5(f) => match f.next().await {
                None => Err(closed()),
                Some(Err(rumqttc::v5::mqttbytes::Error::InvalidConnectReturnCode(code))) => {
                    Ok(Incoming::ConnAck(code))
                }
                Some(Err(e)) => Err(decode_failure_v5(during, e)),
                Some(Ok(p)) => Ok(from_v5(p)),
            },
        }
    }
}

fn decode_failure_v4(during: &str, e: rumqttc::mqttbytes::Error) -> ProbeFailure {
    match e {
        rumqttc::mqttbytes::Error::Io(io) => io_failure(during, io),
        other => io_failure(during, format!("bad packet from the broker: {other}")),
    }
}

fn decode_failure_v5(during: &str, e: rumqttc::v5::mqttbytes::Error) -> ProbeFailure {
    match e {
        rumqttc::v5::mqttbytes::Error::Io(io) => io_failure(during, io),
        other => io_failure(during, format!("bad packet from the broker: {other}")),
    }
}

fn from_v4(p: v4::Packet) -> Incoming {
    match p {
        v4::Packet::ConnAck(c) => Incoming::ConnAck(c.code as u8),
        v4::Packet::SubAck(s) => {
            let granted = if s
                .return_codes
                .iter()
                .all(|c| matches!(c, v4::SubscribeReasonCode::Success(_)))
            {
                Ok(())
            } else {
                Err("failure (0x80)".to_owned())
            };
            Incoming::SubAck(s.pkid, granted)
        }
        v4::Packet::PubAck(a) => Incoming::PubAck(a.pkid, Ok(())),
        v4::Packet::Publish(p) => Incoming::Publish(Message {
            topic: Bytes::from(p.topic.into_bytes()),
            payload: p.payload,
            retain: p.retain,
            ack: (p.qos == QoS::AtLeastOnce).then_some(p.pkid),
        }),
        v4::Packet::Disconnect => Incoming::Disconnect("DISCONNECT".to_owned()),
        _ => Incoming::Other,
    }
}

fn from_v5(p: v5::Packet) -> Incoming {
    match p {
        v5::Packet::ConnAck(c) => Incoming::ConnAck(v5_connack_code(c.code)),
        v5::Packet::SubAck(s) => {
            let refused = s
                .return_codes
                .iter()
                .find(|c| !matches!(c, v5::SubscribeReasonCode::Success(_)));
            let granted = match refused {
                None => Ok(()),
                Some(c) => Err(format!("{c:?}")),
            };
            Incoming::SubAck(s.pkid, granted)
        }
        v5::Packet::PubAck(a) => {
            let ok = matches!(
                a.reason,
                v5::PubAckReason::Success | v5::PubAckReason::NoMatchingSubscribers
            );
            Incoming::PubAck(
                a.pkid,
                if ok {
                    Ok(())
                } else {
                    Err(format!("{:?}", a.reason))
                },
            )
        }
        v5::Packet::Publish(p) => Incoming::Publish(Message {
            topic: p.topic,
            payload: p.payload,
            retain: p.retain,
            ack: (p.qos == QoS5::AtLeastOnce).then_some(p.pkid),
        }),
        v5::Packet::Disconnect(d) => {
            Incoming::Disconnect(format!("DISCONNECT {:?}", d.reason_code))
        }
        _ => Incoming::Other,
    }
}
