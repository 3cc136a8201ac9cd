//! `prober: postgres` (lookout's own): connect, authenticate, read the server's version and
//! recovery state, and optionally run a query in a read-only transaction and check the age of
//! the timestamp it returns.
//!
//! The TCP connection and TLS are ours (`net::dial_plain`, then `net::upgrade`), so every phase
//! is timed and the certificate facts are recorded as in the other probers; tokio-postgres
//! speaks the protocol from the startup message on, over the stream we hand it
//! (`Config::connect_raw`).
//! We send the SSLRequest ourselves, so tokio-postgres always sees an already-negotiated stream.
//!
//! `sslmode` follows libpq: `disable` (plain), `prefer` (TLS when the server accepts the
//! SSLRequest, plain when it declines), `require` (TLS or fail), `verify-ca` (TLS, chain
//! verified, name not), `verify-full` (TLS, chain and name verified). As libpq does when a root
//! certificate is present, `prefer` and `require` verify the chain (not the name) when
//! `tls_config` names a CA (`ca_file` or `ca`), and verify nothing otherwise. Unlike libpq,
//! `prefer` does not retry in plain text after a failed handshake: the server offered TLS and
//! it broke, which a probe should report.
//!
//! The connection never outlives the probe: it is driven inside the probe's own future (no
//! spawned task), so the deadline in `probe::run` dropping that future closes the socket, and the
//! query's `statement_timeout` is the time left, so the server gives up on it too.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, NoTls, Row, SimpleQueryMessage};
use tracing::debug;

use crate::probe::net::{self, Stream};
use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure, ProbeRequest, Prober};
use crate::probe::report::{Family, Report};
use crate::probe::resolve::{IpPreference, IpProtocol};
use crate::probe::tls;
use crate::secret::Secret;
use crate::values::{Choice, ConfigDuration, Conflict, FieldError, format_duration, value_or_file};

/// `probe_postgres_duration_seconds{phase}`.
pub static PROBE_POSTGRES_DURATION_SECONDS: Family = Family::gauge(
    "probe_postgres_duration_seconds",
    "Duration of the PostgreSQL probe by phase",
);
/// `probe_postgres_in_recovery`.
pub static PROBE_POSTGRES_IN_RECOVERY: Family = Family::gauge(
    "probe_postgres_in_recovery",
    "Whether the server is in recovery (1 on a standby)",
);
/// `probe_postgres_server_version_num`.
pub static PROBE_POSTGRES_SERVER_VERSION_NUM: Family = Family::gauge(
    "probe_postgres_server_version_num",
    "The server's version as its server_version_num setting",
);
/// `probe_postgres_query_rows` (only when a query ran).
pub static PROBE_POSTGRES_QUERY_ROWS: Family = Family::gauge(
    "probe_postgres_query_rows",
    "Number of rows the query returned",
);
/// `probe_data_age_seconds` (only with `max_age`).
pub static PROBE_DATA_AGE_SECONDS: Family = Family::gauge(
    "probe_data_age_seconds",
    "Seconds between now and the timestamp the query returned",
);

/// The phases of `probe_postgres_duration_seconds`, declared (0) up front.
const PHASES: [&str; 5] = ["resolve", "connect", "tls", "auth", "query"];

/// The port when the target has none.
const DEFAULT_PORT: u16 = 5432;

/// The SSLRequest message: length 8, then the request code 1234.5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The server facts, read in one round trip.
const FACTS_QUERY: &str = "SHOW server_version_num; SELECT pg_is_in_recovery()";

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_OFFSET: f64 = 946_684_800.0;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server accepts it, plain text when it declines.
    #[default]
    Prefer,
    /// TLS or fail; the chain is verified only when `tls_config` names a CA.
    Require,
    /// TLS with the chain verified, not the host name.
    VerifyCa,
    /// TLS with the chain and the host name verified.
    VerifyFull,
}

/// The `postgres:` section of a module, as written.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// The role to log in as (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Its password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding the password (surrounding white space trimmed), read when the config is
    /// loaded, as the http prober's `password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The database (default: the server's default, a database named after the user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// libpq's sslmode (default prefer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<SslMode>,
    /// TLS settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_config: Option<tls::Section>,
    /// The session's application_name (default `lookout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    /// SQL to run in a read-only transaction (one statement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Fail when the first column of the query's first row (a timestamp, a date or seconds
    /// since the Unix epoch) is older than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<ConfigDuration>,
    /// Fail when the server is a standby (in recovery).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_if_in_recovery: bool,
    /// ip4 or ip6 (default ip6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_ip_protocol: Option<IpProtocol>,
    /// Whether the other protocol may be used (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_protocol_fallback: Option<bool>,
}

/// How TLS is used, with the `tls::Spec` for the verification `sslmode` asks for.
#[derive(Debug, Clone)]
pub enum TlsUse {
    /// `disable`.
    Off,
    /// `prefer`: TLS when the server accepts the SSLRequest.
    Prefer(tls::Spec),
    /// `require`, `verify-ca`, `verify-full`.
    Require(tls::Spec),
}

/// The validated postgres module.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Role name.
    pub user: String,
    /// The password, if any.
    pub password: Option<Secret>,
    /// Database; `None` lets the server choose (the user's name).
    pub database: Option<String>,
    /// TLS use and verification.
    pub tls: TlsUse,
    /// application_name.
    pub application_name: String,
    /// The user's query.
    pub query: Option<String>,
    /// The oldest acceptable timestamp, as an age.
    pub max_age: Option<Duration>,
    /// Fail on a standby.
    pub fail_if_in_recovery: bool,
    /// Address preference.
    pub ip: IpPreference,
}

impl Spec {
    /// Validates `section`; relative file names are relative to `base`.
    pub fn build(section: &Section, base: &Path) -> Result<Spec, FieldError> {
        let user = match section.user.as_deref() {
            Some(u) if !u.is_empty() => u.to_owned(),
            _ => return Err(FieldError::new("user", "user must be set")),
        };
        let password = value_or_file(
            base,
            section.password.clone(),
            section.password_file.as_deref(),
            Choice {
                file_field: "password_file",
                conflict: Some(Conflict {
                    field: "password_file",
                    message: "at most one of password and password_file must be configured",
                }),
            },
        )?;
        let mode = section.sslmode.unwrap_or_default();
        let tls_section = section.tls_config.clone().unwrap_or_default();
        let tls = build_tls(mode, section.tls_config.is_some(), &tls_section, base)?;
        if section.max_age.is_some() && section.query.is_none() {
            return Err(FieldError::new("max_age", "max_age needs a query"));
        }
        if let Some(q) = &section.query
            && q.trim().is_empty()
        {
            return Err(FieldError::new("query", "query must not be empty"));
        }
        Ok(Spec {
            user,
            password,
            database: section.database.clone().filter(|d| !d.is_empty()),
            tls,
            application_name: section
                .application_name
                .clone()
                .unwrap_or_else(|| "lookout".to_owned()),
            query: section.query.clone(),
            max_age: section.max_age.map(|d| d.0),
            fail_if_in_recovery: section.fail_if_in_recovery,
            ip: IpPreference::from_config(
                section.preferred_ip_protocol,
                section.ip_protocol_fallback,
            ),
        })
    }
}

/// The TLS configuration `sslmode` asks for.
fn build_tls(
    mode: SslMode,
    configured: bool,
    section: &tls::Section,
    base: &Path,
) -> Result<TlsUse, FieldError> {
    let field = |e: FieldError| e.within("tls_config");
    let has_ca = section.ca_file.is_some() || section.ca.is_some();
    let verifying = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
    if verifying && section.insecure_skip_verify {
        return Err(FieldError::new(
            "tls_config.insecure_skip_verify",
            format!(
                "insecure_skip_verify contradicts sslmode {}",
                mode_name(mode)
            ),
        ));
    }
    // prefer and require: the chain is verified against a configured CA, else nothing is.
    let lenient = || -> Result<tls::Spec, FieldError> {
        if has_ca && !section.insecure_skip_verify {
            Ok(tls::Spec::build(section, base)
                .map_err(field)?
                .without_name_check())
        } else {
            let mut s = section.clone();
            s.insecure_skip_verify = true;
            tls::Spec::build(&s, base).map_err(field)
        }
    };
    Ok(match mode {
        SslMode::Disable => {
            if configured {
                return Err(FieldError::new(
                    "tls_config",
                    "tls_config is unused with sslmode disable",
                ));
            }
            TlsUse::Off
        }
        SslMode::Prefer => TlsUse::Prefer(lenient()?),
        SslMode::Require => TlsUse::Require(lenient()?),
        SslMode::VerifyCa => TlsUse::Require(
            tls::Spec::build(section, base)
                .map_err(field)?
                .without_name_check(),
        ),
        SslMode::VerifyFull => TlsUse::Require(tls::Spec::build(section, base).map_err(field)?),
    })
}

fn mode_name(mode: SslMode) -> &'static str {
    match mode {
        SslMode::Disable => "disable",
        SslMode::Prefer => "prefer",
        SslMode::Require => "require",
        SslMode::VerifyCa => "verify-ca",
        SslMode::VerifyFull => "verify-full",
    }
}

impl Prober for Spec {
    async fn probe(
        &self,
        req: &ProbeRequest,
        cx: &mut ProbeContext<'_>,
    ) -> Result<(), ProbeFailure> {
        for phase in PHASES {
            cx.report
                .declare_labeled(&PROBE_POSTGRES_DURATION_SECONDS, &[("phase", phase)]);
        }
        let (host, port) = net::split_host_default_port(&req.target, DEFAULT_PORT)?;
        let target = net::Target::new(net::Address::Target(&host), port, self.ip);
        let tcp = net::dial_plain(cx, &target, |report, step| match step {
            net::Step::Resolved { lookup, .. } => record(report, "resolve", lookup),
            net::Step::Connected { elapsed, .. } => record(report, "connect", elapsed),
            net::Step::Handshaken { .. } => {}
        })
        .await?;

        let start = Instant::now();
        let stream = self.negotiate_tls(tcp, &host, cx).await;
        record(cx.report, "tls", start.elapsed());
        let stream = stream?;

        let mut config = tokio_postgres::Config::new();
        config
            .user(&self.user)
            .application_name(&self.application_name)
            // TLS, if any, is already in place: tokio-postgres must not send an SSLRequest.
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        if let Some(db) = &self.database {
            config.dbname(db);
        }
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        let start = Instant::now();
        let connected = config.connect_raw(stream, NoTls).await;
        record(cx.report, "auth", start.elapsed());
        let (client, connection) = connected.map_err(|e| self.startup_failure(&e))?;
        debug!("authenticated");

        // The connection is driven here, beside the queries, so dropping this future (the
        // deadline) drops the socket with it.
        let mut connection = std::pin::pin!(connection);
        let mut connection_ended = false;
        let start = Instant::now();
        let result = {
            let session = self.session(&client, cx);
            tokio::select! {
                r = session => r,
                r = &mut connection => {
                    connection_ended = true;
                    Err(match r {
                        Ok(()) => ProbeFailure::new(
                            FailureKind::Protocol,
                            "the server closed the connection",
                        ),
                        Err(e) => ProbeFailure::new(
                            FailureKind::Protocol,
                            format!("connection: {}", error_text(&e)),
                        ),
                    })
                }
            }
        };
        record(cx.report, "query", start.elapsed());
        // Without a client the connection sends Terminate and closes the socket.
        drop(client);
        if !connection_ended && let Err(e) = connection.await {
            debug!(err = %error_text(&e), "while closing the connection");
        }
        result
    }
}

fn record(report: &mut Report, phase: &'static str, d: Duration) {
    report.add(
        &PROBE_POSTGRES_DURATION_SECONDS,
        &[("phase", phase)],
        d.as_secs_f64(),
    );
}

impl Spec {
    /// The SSLRequest and the TLS handshake, as `sslmode` asks; records the TLS facts.
    async fn negotiate_tls(
        &self,
        mut tcp: TcpStream,
        host: &str,
        cx: &mut ProbeContext<'_>,
    ) -> Result<Stream, ProbeFailure> {
        let (spec, required) = match &self.tls {
            TlsUse::Off => return Ok(Stream::Plain(tcp)),
            TlsUse::Prefer(s) => (s, false),
            TlsUse::Require(s) => (s, true),
        };
        let io = |e: std::io::Error| {
            ProbeFailure::new(FailureKind::Protocol, format!("SSLRequest: {e}"))
        };
        tcp.write_all(&SSL_REQUEST).await.map_err(io)?;
        // Exactly one byte: anything the server sent after it belongs to the TLS handshake.
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.map_err(io)?;
        match answer[0] {
            b'S' => {}
            b'N' if !required => {
                debug!("the server declined TLS; going on in plain text (sslmode prefer)");
                return Ok(Stream::Plain(tcp));
            }
            b'N' => {
                return Err(ProbeFailure::new(
                    FailureKind::Tls,
                    "the server does not support TLS",
                ));
            }
            other => {
                return Err(ProbeFailure::new(
                    FailureKind::Protocol,
                    format!("unexpected answer to the SSLRequest: byte {other:#04x}"),
                ));
            }
        }
        let name = spec.server_name.clone().unwrap_or_else(|| host.to_owned());
        let tls = net::Tls {
            spec,
            server_name: &name,
            alpn: &[b"postgresql"],
        };
        let (stream, hs) = net::upgrade(tcp, &tls).await?;
        tls::record(cx.report, &hs);
        Ok(stream)
    }

    /// Why startup (authentication, database selection) failed, with the server's message.
    fn startup_failure(&self, e: &tokio_postgres::Error) -> ProbeFailure {
        if let Some(db) = e.as_db_error() {
            let code = db.code();
            let text = error_text(e);
            if *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            {
                return ProbeFailure::new(
                    FailureKind::Assertion,
                    format!("authentication failed: {text}"),
                );
            }
            return ProbeFailure::new(
                FailureKind::Assertion,
                format!("the server refused the session: {text}"),
            );
        }
        let text = error_text(e);
        if text.contains("password missing") {
            return ProbeFailure::new(
                FailureKind::Assertion,
                format!(
                    "authentication failed: the server asks user {:?} for a password and none is configured",
                    self.user
                ),
            );
        }
        ProbeFailure::new(FailureKind::Protocol, format!("startup: {text}"))
    }

    /// The server facts, then the user's query and its checks.
    async fn session(
        &self,
        client: &Client,
        cx: &mut ProbeContext<'_>,
    ) -> Result<(), ProbeFailure> {
        let messages = client.simple_query(FACTS_QUERY).await.map_err(|e| {
            ProbeFailure::new(
                FailureKind::Protocol,
                format!(
                    "reading the server version and recovery state: {}",
                    error_text(&e)
                ),
            )
        })?;
        let values: Vec<Option<&str>> = messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r.get(0)),
                _ => None,
            })
            .collect();
        let version = values.first().copied().flatten().unwrap_or_default();
        let version_num: f64 = version.trim().parse().map_err(|_| {
            ProbeFailure::new(
                FailureKind::Protocol,
                format!("unexpected server_version_num {version:?}"),
            )
        })?;
        cx.report
            .set(&PROBE_POSTGRES_SERVER_VERSION_NUM, version_num);
        let in_recovery = match values.get(1).copied().flatten() {
            Some("t") => true,
            Some("f") => false,
            other => {
                return Err(ProbeFailure::new(
                    FailureKind::Protocol,
                    format!("unexpected pg_is_in_recovery() answer {other:?}"),
                ));
            }
        };
        cx.report.set(
            &PROBE_POSTGRES_IN_RECOVERY,
            if in_recovery { 1.0 } else { 0.0 },
        );
        if in_recovery && self.fail_if_in_recovery {
            return Err(ProbeFailure::new(
                FailureKind::Assertion,
                "the server is in recovery (a standby)",
            ));
        }
        let Some(sql) = &self.query else {
            return Ok(());
        };

        // The server abandons the query when the probe would: the time left, at least 1 ms.
        let left = cx.deadline.saturating_duration_since(Instant::now());
        let timeout_ms = left.as_millis().max(1);
        client
            .batch_execute(&format!(
                "BEGIN READ ONLY; SET LOCAL statement_timeout = {timeout_ms}; SET LOCAL TimeZone = 'UTC'"
            ))
            .await
            .map_err(|e| {
                ProbeFailure::new(
                    FailureKind::Protocol,
                    format!("starting the read-only transaction: {}", error_text(&e)),
                )
            })?;
        let query_failed = |e: tokio_postgres::Error| match e.as_db_error().map(|db| db.code()) {
            // Our statement_timeout: the probe's deadline, seen first by the server.
            Some(code) if *code == SqlState::QUERY_CANCELED => ProbeFailure::new(
                FailureKind::Timeout,
                format!("query timed out: {}", error_text(&e)),
            ),
            Some(_) => ProbeFailure::new(
                FailureKind::Assertion,
                format!("query failed: {}", error_text(&e)),
            ),
            None => ProbeFailure::new(
                FailureKind::Protocol,
                format!("query failed: {}", error_text(&e)),
            ),
        };
        // One round trip (parse, bind, describe, execute), and one statement only: the
        // extended protocol refuses `ROLLBACK; …` smuggled past the read-only transaction.
        let no_params = std::iter::empty::<(&(dyn tokio_postgres::types::ToSql + Sync), Type)>();
        let rows = client
            .query_typed_raw(sql, no_params)
            .await
            .map_err(query_failed)?;
        let mut rows = std::pin::pin!(rows);
        let mut count: u64 = 0;
        let mut first: Option<Row> = None;
        // Rows are counted as they stream in; only the first is kept.
        while let Some(row) = rows.try_next().await.map_err(query_failed)? {
            count += 1;
            if first.is_none() {
                first = Some(row);
            }
        }
        cx.report.set(&PROBE_POSTGRES_QUERY_ROWS, count as f64);
        client.batch_execute("ROLLBACK").await.map_err(|e| {
            ProbeFailure::new(
                FailureKind::Protocol,
                format!("ending the read-only transaction: {}", error_text(&e)),
            )
        })?;

        let Some(max_age) = self.max_age else {
            return Ok(());
        };
        let at = first_timestamp(first.as_ref())?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let age = now - at;
        cx.report.set(&PROBE_DATA_AGE_SECONDS, age);
        if age > max_age.as_secs_f64() {
            return Err(ProbeFailure::new(
                FailureKind::Assertion,
                format!(
                    "the data is {age:.3}s old, older than max_age {}",
                    format_duration(max_age)
                ),
            ));
        }
        Ok(())
    }
}

/// The first column of the first row as seconds since the Unix epoch (`max_age`).
fn first_timestamp(row: Option<&Row>) -> Result<f64, ProbeFailure> {
    let fail = |m: String| ProbeFailure::new(FailureKind::Assertion, format!("max_age: {m}"));
    let row = row.ok_or_else(|| fail("the query returned no rows".into()))?;
    let column = row
        .columns()
        .first()
        .ok_or_else(|| fail("the query returned no columns".into()))?;
    if !Epoch::accepts(column.type_()) {
        return Err(fail(format!(
            "column {:?} is of type {}; expected a timestamp, timestamptz, date or a number of seconds since the Unix epoch",
            column.name(),
            column.type_()
        )));
    }
    let value: Option<Epoch> = row
        .try_get(0)
        .map_err(|e| fail(format!("column {:?}: {}", column.name(), error_text(&e))))?;
    match value {
        Some(Epoch(at)) => Ok(at),
        None => Err(fail(format!("column {:?} is NULL", column.name()))),
    }
}

/// A tokio-postgres error as one line: the server's message and SQLSTATE for server errors,
/// the error and its causes otherwise.
fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        text.push_str(&format!(" (SQLSTATE {})", db.code().code()));
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// A point in time as seconds since the Unix epoch, decoded from the binary form of a
/// timestamp, timestamptz, date (all UTC) or a number of seconds (integer, float, numeric).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Epoch(f64);

impl<'a> FromSql<'a> for Epoch {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Epoch, Box<dyn std::error::Error + Sync + Send>> {
        decode_epoch(ty, raw).map(Epoch).map_err(Into::into)
    }

    fn accepts(ty: &Type) -> bool {
        [
            Type::TIMESTAMP,
            Type::TIMESTAMPTZ,
            Type::DATE,
            Type::INT2,
            Type::INT4,
            Type::INT8,
            Type::FLOAT4,
            Type::FLOAT8,
            Type::NUMERIC,
        ]
        .contains(ty)
    }
}

fn be<const N: usize>(raw: &[u8]) -> Result<[u8; N], String> {
    raw.try_into()
        .map_err(|_| format!("malformed value: {} bytes, expected {N}", raw.len()))
}

fn decode_epoch(ty: &Type, raw: &[u8]) -> Result<f64, String> {
    let finite = |v: f64| {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("{v} is not a point in time"))
        }
    };
    if *ty == Type::TIMESTAMP || *ty == Type::TIMESTAMPTZ {
        let micros = i64::from_be_bytes(be(raw)?);
        if micros == i64::MAX || micros == i64::MIN {
            return Err("the timestamp is infinite".into());
        }
        Ok(PG_EPOCH_OFFSET + micros as f64 / 1e6)
    } else if *ty == Type::DATE {
        let days = i32::from_be_bytes(be(raw)?);
        if days == i32::MAX || days == i32::MIN {
            return Err("the date is infinite".into());
        }
        Ok(PG_EPOCH_OFFSET + f64::from(days) * 86_400.0)
    } else if *ty == Type::INT2 {
        Ok(f64::from(i16::from_be_bytes(be(raw)?)))
    } else if *ty == Type::INT4 {
        Ok(f64::from(i32::from_be_bytes(be(raw)?)))
    } else if *ty == Type::INT8 {
        Ok(i64::from_be_bytes(be(raw)?) as f64)
    } else if *ty == Type::FLOAT4 {
        finite(f64::from(f32::from_be_bytes(be(raw)?)))
    } else if *ty == Type::FLOAT8 {
        finite(f64::from_be_bytes(be(raw)?))
    } else if *ty == Type::NUMERIC {
        finite(decode_numeric(raw)?)
    } else {
        Err(format!("type {ty} is not a point in time"))
    }
}

/// NUMERIC's binary form: digit count, weight, sign, display scale, then base-10000 digits, the
/// first worth 10000^weight.
fn decode_numeric(raw: &[u8]) -> Result<f64, String> {
    let word = |i: usize| -> Result<u16, String> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "malformed numeric".to_owned())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(1)? as i16);
    let sign = word(2)?;
    if raw.len() != 8 + 2 * ndigits {
        return Err("malformed numeric".into());
    }
    let magnitude = match sign {
        0x0000 | 0x4000 => {
            let mut v = 0.0;
            for i in 0..ndigits {
                let digit = f64::from(word(4 + i)?);
                v += digit * 10_000f64.powi(weight - i as i32);
            }
            v
        }
        0xc000 => f64::NAN,
        0xd000 => f64::INFINITY,
        0xf000 => f64::NEG_INFINITY,
        other => return Err(format!("malformed numeric sign {other:#06x}")),
    };
    Ok(if sign == 0x4000 {
        -magnitude
    } else {
        magnitude
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(yaml: &str) -> Result<Spec, FieldError> {
        let section: Section = serde_norway::from_str(yaml).unwrap();
        Spec::build(&section, Path::new("/"))
    }

    fn check_err(yaml: &str, field: &str, message: &str) {
        let e = build(yaml).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            (field, message),
            "{yaml}"
        );
    }

    #[test]
    fn defaults() {
        let s = build("user: probe").unwrap();
        assert_eq!(s.application_name, "lookout");
        assert!(matches!(s.tls, TlsUse::Prefer(_)));
        assert!(s.password.is_none());
        assert_eq!(s.database, None);
        assert!(!s.fail_if_in_recovery);
        assert_eq!(s.ip, IpPreference::default());
    }

    #[test]
    fn invalid_sections() {
        check_err("{}", "user", "user must be set");
        check_err(
            "{user: u, password: p, password_file: /etc/hostname}",
            "password_file",
            "at most one of password and password_file must be configured",
        );
        check_err("{user: u, max_age: 5m}", "max_age", "max_age needs a query");
        check_err("{user: u, query: ' '}", "query", "query must not be empty");
        check_err(
            "{user: u, sslmode: verify-full, tls_config: {insecure_skip_verify: true}}",
            "tls_config.insecure_skip_verify",
            "insecure_skip_verify contradicts sslmode verify-full",
        );
        check_err(
            "{user: u, sslmode: disable, tls_config: {server_name: db}}",
            "tls_config",
            "tls_config is unused with sslmode disable",
        );
        let e = serde_norway::from_str::<Section>("{user: u, sslmode: allow}").unwrap_err();
        assert!(e.to_string().contains("unknown variant `allow`"), "{e}");
    }

    #[test]
    fn sslmodes() {
        let mode = |m: &str| build(&format!("{{user: u, sslmode: {m}}}")).unwrap().tls;
        assert!(matches!(mode("disable"), TlsUse::Off));
        assert!(matches!(mode("prefer"), TlsUse::Prefer(_)));
        assert!(matches!(mode("require"), TlsUse::Require(_)));
        assert!(matches!(mode("verify-ca"), TlsUse::Require(_)));
        assert!(matches!(mode("verify-full"), TlsUse::Require(_)));
    }

    fn epoch(ty: Type, raw: &[u8]) -> Result<f64, String> {
        decode_epoch(&ty, raw)
    }

    #[test]
    fn timestamps_decode_to_unix_seconds() {
        // 2000-01-01 00:00:01.5 UTC.
        let raw = 1_500_000i64.to_be_bytes();
        assert_eq!(epoch(Type::TIMESTAMPTZ, &raw), Ok(946_684_801.5));
        assert_eq!(epoch(Type::TIMESTAMP, &raw), Ok(946_684_801.5));
        assert_eq!(
            epoch(Type::DATE, &1i32.to_be_bytes()),
            Ok(946_684_800.0 + 86_400.0)
        );
        assert!(epoch(Type::TIMESTAMPTZ, &i64::MAX.to_be_bytes()).is_err());
        assert!(epoch(Type::TIMESTAMPTZ, &[0, 1]).is_err());
        assert_eq!(
            epoch(Type::INT8, &1_700_000_000i64.to_be_bytes()),
            Ok(1.7e9)
        );
        assert_eq!(epoch(Type::INT4, &17i32.to_be_bytes()), Ok(17.0));
        assert_eq!(epoch(Type::FLOAT8, &2.5f64.to_be_bytes()), Ok(2.5));
        assert!(epoch(Type::FLOAT8, &f64::NAN.to_be_bytes()).is_err());
        assert!(!Epoch::accepts(&Type::TEXT));
    }

    #[test]
    fn numerics_decode() {
        // 1700000000.25 = 17|0000|0000 . 2500: ndigits 4, weight 2, positive, dscale 2.
        let mut raw = Vec::new();
        for w in [4u16, 2, 0, 2, 17, 0, 0, 2500] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(decode_numeric(&raw), Ok(1_700_000_000.25));
        raw[4] = 0x40;
        assert_eq!(decode_numeric(&raw), Ok(-1_700_000_000.25));
        // Zero has no digits.
        assert_eq!(decode_numeric(&[0, 0, 0, 0, 0, 0, 0, 0]), Ok(0.0));
        // NaN is rejected as a point in time.
        assert!(epoch(Type::NUMERIC, &[0, 0, 0, 0, 0xc0, 0, 0, 0]).is_err());
        assert!(decode_numeric(&[0, 1, 0, 0]).is_err());
    }
}
