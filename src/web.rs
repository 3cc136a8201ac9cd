//! `--web.config.file`: exporter-toolkit's web config (TLS with client certificates, basic
//! auth, response headers, a rate limit) for every endpoint lookout serves.
//!
//! What exporter-toolkit fixes at start-up is fixed here too: whether TLS is on, HTTP/2, and
//! the rate limit. What it re-reads is re-read: the file on every request (users, headers; a
//! file that no longer parses answers 500), and the file with its certificate, key and client
//! CA on every TLS handshake, so a rotated certificate is served to the next connection without
//! a restart. Unchanged contents reuse what was built from them.

pub mod auth;
pub mod config;
pub mod limit;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

pub use config::WebConfig;

use crate::config::ConfigError;

/// A loaded web config file, re-read as exporter-toolkit re-reads it.
#[derive(Debug)]
pub struct Web {
    path: PathBuf,
    /// TLS on or off, decided at start-up.
    tls: bool,
    /// HTTP/2 over TLS, decided at start-up.
    http2: bool,
    limiter: Option<Mutex<limit::Bucket>>,
    auth: auth::Checker,
    /// The file's bytes and what they parsed into, last time it was read.
    parsed: Mutex<Option<(Vec<u8>, Arc<WebConfig>)>>,
    /// The server configuration built for the last handshake, and what it was built from.
    built: Mutex<Option<Built>>,
    /// The last problem logged, so a broken file is logged once, not per request.
    trouble: Mutex<Option<String>>,
}

/// A server configuration and the parse and material it was built from.
type Built = (Arc<WebConfig>, tls::Material, Arc<rustls::ServerConfig>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value behind these locks is whole at any point, so a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads and parses `path` without the checks that need other files.
fn read(path: &Path) -> Result<(Vec<u8>, WebConfig), ConfigError> {
    let bytes = std::fs::read(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        field: String::new(),
        message: format!("cannot read web config file: {e}"),
    })?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let parsed = config::parse(&text, path)?;
    Ok((bytes, parsed))
}

/// What `Web::load` checked: the file's bytes, its parse, and the TLS configuration built from
/// it with the material it was built from (when TLS is on).
type Checked = (Vec<u8>, WebConfig, Option<(tls::Material, tls::Built)>);

/// Everything `Web::load` checks: the file, every user's hash, and the TLS material.
fn check_all(path: &Path) -> Result<Checked, ConfigError> {
    let (bytes, c) = read(path)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let at = |e: crate::values::FieldError| ConfigError {
        file: path.to_path_buf(),
        line: config::locate(&text, &e.path),
        column: None,
        field: e.path,
        message: e.message,
    };
    for (user, hash) in &c.users {
        auth::check_hash(hash.expose()).map_err(|m| {
            at(crate::values::FieldError::new(
                format!("basic_auth_users.{user}"),
                m,
            ))
        })?;
    }
    let tls = match &c.tls {
        Some(t) => {
            let m = tls::read(t).map_err(at)?;
            let built = tls::build(t, &m, c.http2).map_err(at)?;
            Some((m, built))
        }
        None => None,
    };
    Ok((bytes, c, tls))
}

/// Checks a web config file as start-up does (for `--config.check`).
pub fn check(path: &Path) -> Result<WebConfig, ConfigError> {
    check_all(path).map(|(_, c, _)| c)
}

impl Web {
    /// Loads and checks `path` as exporter-toolkit does before serving: the YAML, every user's
    /// bcrypt hash, and (when TLS is on) the certificate, key and client CA.
    pub fn load(path: &Path) -> Result<Web, ConfigError> {
        let (bytes, c, tls) = check_all(path)?;
        for w in tls.iter().flat_map(|(_, b)| &b.warnings) {
            tracing::warn!(file = %path.display(), "{w}");
        }
        let c = Arc::new(c);
        if let Some(r) = c.rate_limit {
            tracing::info!(
                burst = r.burst,
                interval = ?r.interval,
                "Rate limiter is enabled"
            );
        }
        Ok(Web {
            path: path.to_path_buf(),
            tls: c.tls.is_some(),
            http2: c.http2,
            limiter: c.rate_limit.map(|r| {
                Mutex::new(limit::Bucket::new(
                    r.interval,
                    r.burst,
                    std::time::Instant::now(),
                ))
            }),
            auth: auth::Checker::default(),
            built: Mutex::new(tls.map(|(m, b)| (c.clone(), m, b.config))),
            parsed: Mutex::new(Some((bytes, c))),
            trouble: Mutex::new(None),
        })
    }

    /// Whether connections are served over TLS (decided at start-up, as exporter-toolkit does).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Whether HTTP/2 is offered over TLS (decided at start-up).
    pub fn http2(&self) -> bool {
        self.http2
    }

    /// The config as the file says now; unchanged bytes give the previous parse.
    pub fn current(&self) -> Result<Arc<WebConfig>, ConfigError> {
        let bytes = std::fs::read(&self.path).map_err(|e| ConfigError {
            file: self.path.clone(),
            line: None,
            column: None,
            field: String::new(),
            message: format!("cannot read web config file: {e}"),
        })?;
        if let Some((b, c)) = &*lock(&self.parsed)
            && *b == bytes
        {
            return Ok(c.clone());
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let c = Arc::new(config::parse(&text, &self.path)?);
        *lock(&self.parsed) = Some((bytes, c.clone()));
        Ok(c)
    }

    /// The server configuration for a new TLS handshake: the file and its certificate, key and
    /// client CA read now, built anew only when something changed.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
        let c = self.current()?;
        let at = |e: crate::values::FieldError| ConfigError {
            file: self.path.clone(),
            line: None,
            column: None,
            field: e.path,
            message: e.message,
        };
        let Some(t) = &c.tls else {
            return Err(ConfigError {
                file: self.path.clone(),
                line: None,
                column: None,
                field: "tls_server_config".into(),
                message: "TLS was on at start-up and the file no longer configures it; lookout \
                          keeps serving TLS only"
                    .into(),
            });
        };
        let m = tls::read(t).map_err(at)?;
        if let Some((bc, bm, config)) = &*lock(&self.built)
            && Arc::ptr_eq(bc, &c)
            && *bm == m
        {
            return Ok(config.clone());
        }
        let built = tls::build(t, &m, self.http2).map_err(at)?;
        for w in &built.warnings {
            tracing::warn!(file = %self.path.display(), "{w}");
        }
        tracing::info!(file = %self.path.display(), "TLS configuration reloaded");
        *lock(&self.built) = Some((c, m, built.config.clone()));
        Ok(built.config)
    }

    /// Logs `problem` once (until it changes), or that things are well again.
    pub fn report(&self, problem: Option<&ConfigError>) {
        let mut last = lock(&self.trouble);
        match problem {
            Some(e) => {
                let msg = e.to_string();
                if last.as_deref() != Some(msg.as_str()) {
                    tracing::error!(err = %msg, "Unable to use the web config file");
                    *last = Some(msg);
                }
            }
            None => {
                if last.take().is_some() {
                    tracing::info!(file = %self.path.display(), "Web config file usable again");
                }
            }
        }
    }

    fn allow_rate(&self) -> bool {
        match &self.limiter {
            None => true,
            Some(b) => lock(b).allow(std::time::Instant::now()),
        }
    }
}

/// Go's `http.Error`: a plain-text status line as the body.
fn plain_error(status: StatusCode) -> Response {
    let text = format!("{}\n", status.canonical_reason().unwrap_or(""));
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response()
}

/// The middleware in front of every endpoint, in exporter-toolkit's order: the file re-read
/// (500 when it no longer parses), the rate limit (429), the configured headers, then basic
/// auth (401 with `WWW-Authenticate: Basic`).
pub async fn guard(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    let c = match web.current() {
        Ok(c) => {
            web.report(None);
            c
        }
        Err(e) => {
            web.report(Some(&e));
            return plain_error(StatusCode::INTERNAL_SERVER_ERROR);
        }
    };
    if !web.allow_rate() {
        return plain_error(StatusCode::TOO_MANY_REQUESTS);
    }
    let allowed = c.users.is_empty()
        || web
            .auth
            .allows(
                &c.users,
                req.headers()
                    .get(header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
            )
            .await;
    let mut resp = if allowed {
        next.run(req).await
    } else {
        let mut r = plain_error(StatusCode::UNAUTHORIZED);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Basic"),
        );
        r
    };
    // Set before the handler runs in exporter-toolkit, so a header the handler sets wins.
    for (name, value) in &c.headers {
        if !resp.headers().contains_key(name) {
            resp.headers_mut().insert(name.clone(), value.clone());
        }
    }
    resp
}
