//! `prober: redis`: connect to a Redis (or Valkey) server, optionally over TLS, authenticate and
//! select a database as configured, PING, and with `expect_role` check the server's ROLE.
//!
//! Phases (`probe_redis_duration_seconds{phase}`): `resolve`, `connect` (TCP), `tls`, `auth`
//! (AUTH, then SELECT when `db` is set) and `ping`. ROLE, read only with `expect_role`, is not a
//! phase of its own; it counts in `probe_duration_seconds`.
//!
//! The probe makes its own connection (`net::dial`, with TLS through `tls::Spec`, so TLS facts are
//! recorded as in every other prober) and hands it to the `redis` crate's
//! `aio::MultiplexedConnection`, which speaks RESP on it. The connection is created with no
//! set-up commands at all (no credentials, database 0, no `CLIENT SETINFO`), so each command the
//! probe sends afterwards is one timed step. Replies are bounded: the stream refuses to read more
//! than `MAX_READ` bytes in total.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tracing::debug;

use crate::probe::net::{self, Stream};
use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober};
use crate::probe::report::Family;
use crate::probe::resolve::{IpPreference, IpProtocol};
use crate::probe::tls;
use crate::secret::Secret;
use crate::values::{Choice, Conflict, FieldError, value_or_file};

/// `probe_redis_duration_seconds{phase}`.
pub static PROBE_REDIS_DURATION_SECONDS: Family = Family::gauge(
    "probe_redis_duration_seconds",
    "Duration of Redis probe by phase",
);
/// `probe_redis_role_info{role}`.
pub static PROBE_REDIS_ROLE_INFO: Family = Family::gauge(
    "probe_redis_role_info",
    "The replication role the server reported (ROLE): master, replica or sentinel",
);

/// The port used when the target has none.
const DEFAULT_PORT: u16 = 6379;
/// The most bytes read from the server in one probe; the replies to AUTH, SELECT, PING and ROLE
/// are far smaller (ROLE lists replicas: a few dozen bytes each).
const MAX_READ: u64 = 1024 * 1024;

/// A replication role, as `expect_role` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A primary.
    Master,
    /// A replica (ROLE says `slave`).
    Replica,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Replica => "replica",
        }
    }
}

/// The `redis:` section of a module, as written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// The ACL user (Redis 6+); sent with the password as `AUTH username password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password (`requirepass` or the ACL user's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding the password (read at load, trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The database to SELECT (default 0: no SELECT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<u32>,
    /// Use TLS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<tls::Section>,
    /// Fail unless ROLE reports this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_role: Option<Role>,
    /// Whether the other protocol may be used (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol_fallback: Option<bool>,
    /// ip4 or ip6 (default ip6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_ip_protocol: Option<IpProtocol>,
}

/// The validated Redis module.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The ACL user, if any (only with a password).
    pub username: Option<String>,
    /// The password, if any (from `password` or `password_file`).
    pub password: Option<Secret>,
    /// The database to SELECT; 0 sends no SELECT.
    pub db: u32,
    /// Use TLS.
    pub tls: bool,
    /// TLS settings.
    pub tls_config: tls::Spec,
    /// The role ROLE must report, if checked.
    pub expect_role: Option<Role>,
    /// Address preference.
    pub ip: IpPreference,
}

impl Spec {
    /// Validates `section`; relative file names are read relative to `base`.
    pub fn build(section: &Section, base: &Path) -> Result<Spec, FieldError> {
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
        if section.username.is_some() && password.is_none() {
            return Err(FieldError::new(
                "username",
                "username needs a password (AUTH takes both)",
            ));
        }
        Ok(Spec {
            username: section.username.clone(),
            password,
            db: section.db.unwrap_or(0),
            tls: section.tls,
            tls_config: tls::Spec::build(&section.tls_config.clone().unwrap_or_default(), base)
                .map_err(|e| e.within("tls_config"))?,
            expect_role: section.expect_role,
            ip: IpPreference::from_config(
                section.preferred_ip_protocol,
                section.ip_protocol_fallback,
            ),
        })
    }
}

/// A stream that fails reads once `left` bytes have been read: bounds what a server can make
/// the probe buffer.
#[derive(Debug)]
struct Capped {
    inner: Stream,
    left: u64,
}

impl AsyncRead for Capped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(Err(io::Error::other(format!(
                "the server sent more than {MAX_READ} bytes"
            ))));
        }
        let room = usize::try_from(this.left)
            .unwrap_or(usize::MAX)
            .min(buf.remaining());
        // Read through a window of at most `room` bytes (zeroed first, so no unsafe is needed).
        let (res, n) = {
            let mut window = ReadBuf::new(buf.initialize_unfilled_to(room));
            let res = Pin::new(&mut this.inner).poll_read(cx, &mut window);
            (res, window.filled().len())
        };
        buf.advance(n);
        this.left -= n as u64;
        res
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A failure for an error `redis` reported while `doing`: a reply from the server is `kind`,
/// a broken connection is a protocol failure.
fn failure(doing: &str, kind: FailureKind, e: &redis::RedisError) -> ProbeFailure {
    if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
        ProbeFailure::new(FailureKind::Protocol, format!("{doing}: {e}"))
    } else {
        ProbeFailure::new(kind, format!("{doing}: {e}"))
    }
}

/// The role named by ROLE's first element, with `slave` called `replica`.
fn role_of(reply: &redis::Value) -> Option<String> {
    let first = match reply {
        redis::Value::Array(items) => items.first()?,
        _ => return None,
    };
    let name = match first {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        _ => return None,
    };
    Some(match name.as_str() {
        "slave" => "replica".to_owned(),
        _ => name,
    })
}

impl Prober for Spec {
    async fn probe(
        &self,
        req: &ProbeRequest,
        cx: &mut ProbeContext<'_>,
    ) -> Result<(), ProbeFailure> {
        for phase in ["resolve", "connect", "tls", "auth", "ping"] {
            cx.report
                .declare_labeled(&PROBE_REDIS_DURATION_SECONDS, &[("phase", phase)]);
        }
        let (host, port) = net::split_host_default_port(&req.target, DEFAULT_PORT)?;
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
        let target = net::Target::new(net::Address::Target(&host), port, self.ip);
        let dialed = net::dial(cx, &target, self.tls.then_some(&tls), |report, step| {
            let (phase, elapsed) = match step {
                net::Step::Resolved { lookup, .. } => ("resolve", lookup),
                net::Step::Connected { elapsed, .. } => ("connect", elapsed),
                net::Step::Handshaken { elapsed, .. } => ("tls", elapsed),
            };
            report.set_labeled(
                &PROBE_REDIS_DURATION_SECONDS,
                &[("phase", phase)],
                elapsed.as_secs_f64(),
            );
        })
        .await?;
        if let Some(hs) = &dialed.handshake {
            tls::record(cx.report, hs);
        }
        let stream = dialed.stream;
        let stream = Capped {
            inner: stream,
            left: MAX_READ,
        };

        // No set-up commands: every command below is sent, and timed, by the probe.
        let info = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(None);
        let (mut con, driver) =
            redis::aio::MultiplexedConnection::new_with_config(&info, stream, config)
                .await
                .map_err(|e| failure("setting up the connection", FailureKind::Protocol, &e))?;
        // The driver moves bytes between the socket and `con`; it runs only while the probe's
        // commands do, in this task.
        let commands = self.commands(&mut con, cx);
        tokio::pin!(driver, commands);
        tokio::select! {
            biased;
            result = &mut commands => result,
            () = &mut driver => commands.await,
        }
    }
}

impl Spec {
    /// AUTH and SELECT as configured, PING, and ROLE with `expect_role`.
    async fn commands(
        &self,
        con: &mut redis::aio::MultiplexedConnection,
        cx: &mut ProbeContext<'_>,
    ) -> Result<(), ProbeFailure> {
        let start = Instant::now();
        let auth = self.authenticate(con).await;
        cx.report.set_labeled(
            &PROBE_REDIS_DURATION_SECONDS,
            &[("phase", "auth")],
            start.elapsed().as_secs_f64(),
        );
        auth?;

        let start = Instant::now();
        let pong = redis::cmd("PING").query_async::<String>(con).await;
        cx.report.set_labeled(
            &PROBE_REDIS_DURATION_SECONDS,
            &[("phase", "ping")],
            start.elapsed().as_secs_f64(),
        );
        let pong = pong.map_err(|e| failure("PING", FailureKind::Assertion, &e))?;
        if pong != "PONG" {
            return Err(ProbeFailure::new(
                FailureKind::Protocol,
                format!("PING answered {pong:?}, not PONG"),
            ));
        }
        debug!("PING answered");

        let Some(want) = self.expect_role else {
            return Ok(());
        };
        let reply = redis::cmd("ROLE")
            .query_async::<redis::Value>(con)
            .await
            .map_err(|e| failure("ROLE", FailureKind::Assertion, &e))?;
        let role = role_of(&reply).ok_or_else(|| {
            ProbeFailure::new(
                FailureKind::Protocol,
                format!("ROLE answered {reply:?}, not a role"),
            )
        })?;
        cx.report
            .set_labeled(&PROBE_REDIS_ROLE_INFO, &[("role", &role)], 1.0);
        if role != want.label() {
            return Err(ProbeFailure::new(
                FailureKind::Assertion,
                format!("the server's role is {role}, expected {}", want.label()),
            ));
        }
        Ok(())
    }

    async fn authenticate(
        &self,
        con: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), ProbeFailure> {
        if let Some(password) = &self.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = &self.username {
                auth.arg(user);
            }
            auth.arg(password.expose());
            auth.query_async::<()>(con)
                .await
                .map_err(|e| failure("AUTH", FailureKind::Assertion, &e))?;
            debug!("Authenticated");
        }
        if self.db != 0 {
            redis::cmd("SELECT")
                .arg(self.db)
                .query_async::<()>(con)
                .await
                .map_err(|e| failure(&format!("SELECT {}", self.db), FailureKind::Assertion, &e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(yaml: &str) -> Result<Spec, FieldError> {
        let section: Section = serde_norway::from_str(yaml).unwrap();
        Spec::build(&section, Path::new("."))
    }

    #[test]
    fn sections() {
        let s = build("{}").unwrap();
        assert_eq!((s.db, s.expect_role, s.password.is_none()), (0, None, true));
        let s = build("{password: pw, db: 3, expect_role: replica}").unwrap();
        assert_eq!((s.db, s.expect_role), (3, Some(Role::Replica)));
        assert!(!format!("{s:?}").contains("pw,"));
        assert_eq!(build("username: u").unwrap_err().path, "username");
        assert_eq!(
            build("{password: a, password_file: b}").unwrap_err().path,
            "password"
        );
        assert!(serde_norway::from_str::<Section>("expect_role: primary").is_err());
    }

    #[test]
    fn roles() {
        use redis::Value;
        let role = |v: Value| role_of(&v);
        assert_eq!(
            role(Value::Array(vec![
                Value::BulkString(b"master".to_vec()),
                Value::Int(0),
                Value::Array(vec![]),
            ])),
            Some("master".into())
        );
        assert_eq!(
            role(Value::Array(vec![Value::BulkString(b"slave".to_vec())])),
            Some("replica".into())
        );
        assert_eq!(role(Value::Nil), None);
    }

    #[tokio::test]
    // The test is the client of its own loopback server, not a probe.
    #[allow(clippy::disallowed_methods)]
    async fn reads_are_capped() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            while s.write_all(&chunk).await.is_ok() {}
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut capped = Capped {
            inner: Stream::Plain(tcp),
            left: 100_000,
        };
        let mut sink = Vec::new();
        let err = capped.read_to_end(&mut sink).await.unwrap_err();
        assert_eq!(sink.len(), 100_000);
        assert!(err.to_string().contains("more than"), "{err}");
        server.abort();
    }
}
