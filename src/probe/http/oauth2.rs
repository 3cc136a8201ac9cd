//! `oauth2`: the client-credentials grant of Prometheus' HTTP client config, as blackbox's HTTP
//! prober uses it. The token is fetched from `token_url` (with the section's own `tls_config`
//! and `proxy_url`, through the probe's dial path and policy, timed apart from the probe's
//! phases), cached per module until 10 s before it expires, and sent as `Authorization` on
//! every request of the probe, redirects included.

use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use tokio::time::{Duration, Instant};
use url::Url;

use super::{OAuth2, Section, Spec};
use crate::probe::prober::{FailureKind, ProbeContext, ProbeFailure};
use crate::probe::report::Report;
use crate::secret::Secret;
use crate::values::{Choice, Conflict, FieldError, value_or_file};

/// Tokens are renewed this long before they expire (Go's `oauth2` expiry delta).
const EXPIRY_DELTA: Duration = Duration::from_secs(10);

/// How one module gets its tokens.
#[derive(Debug)]
pub struct TokenSource {
    /// The token request: POST of the form, client credentials as basic auth.
    spec: Spec,
    url: Url,
    cache: Mutex<Option<(HeaderValue, Option<Instant>)>>,
}

/// Go's `url.QueryEscape`, which `oauth2` applies to the client id and secret before basic auth.
fn query_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl TokenSource {
    /// Validates the section (paths relative to `oauth2`).
    pub fn build(o: &OAuth2, base: &Path) -> Result<TokenSource, FieldError> {
        let url = Url::parse(&o.token_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                FieldError::new(
                    "token_url",
                    format!("invalid token_url {:?}: an http or https URL", o.token_url),
                )
            })?;
        let secret: Option<Secret> = value_or_file(
            base,
            o.client_secret.clone(),
            o.client_secret_file.as_deref(),
            Choice {
                file_field: "client_secret_file",
                conflict: Some(Conflict {
                    field: "client_secret",
                    message: "at most one of oauth2 client_secret & client_secret_file must be configured",
                }),
            },
        )?;
        let secret = secret.as_ref().map_or("", Secret::expose);
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if !o.scopes.is_empty() {
            form.append_pair("scope", &o.scopes.join(" "));
        }
        for (k, v) in &o.endpoint_params {
            form.append_pair(k, v);
        }
        let section = Section {
            tls_config: o.tls_config.clone(),
            proxy_url: o.proxy_url.clone(),
            ..Section::default()
        };
        let mut spec = Spec::build(&section, base).map_err(|e| {
            // Only `tls_config` and `proxy_url` can fail here: they are the section's own.
            FieldError::new(e.path, e.message)
        })?;
        spec.method = Method::POST;
        spec.body = Some(Bytes::from(form.finish()));
        spec.headers.push((
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        ));
        spec.headers.push((
            HeaderName::from_static("accept"),
            HeaderValue::from_static("application/json"),
        ));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            query_escape(&o.client_id),
            query_escape(secret)
        ));
        let mut auth = HeaderValue::from_str(&format!("Basic {basic}"))
            .map_err(|e| FieldError::new("client_id", e.to_string()))?;
        auth.set_sensitive(true);
        spec.authorization = Some(auth);
        Ok(TokenSource {
            spec,
            url,
            cache: Mutex::new(None),
        })
    }

    /// The `Authorization` value for this probe: the cached token while it is fresh, else a new
    /// one from the token endpoint.
    pub async fn authorization(
        &self,
        cx: &mut ProbeContext<'_>,
    ) -> Result<HeaderValue, ProbeFailure> {
        if let Some((v, expiry)) = &*self.cache.lock().unwrap_or_else(|e| e.into_inner())
            && expiry.is_none_or(|e| Instant::now() < e)
        {
            return Ok(v.clone());
        }
        let fail = |m: String| ProbeFailure::new(FailureKind::Protocol, format!("oauth2: {m}"));
        // Its own report: the token request's resolve, connect and TLS are not the probe's.
        let mut scratch = Report::new();
        let mut tcx = ProbeContext {
            deadline: cx.deadline,
            resolver: cx.resolver,
            dial_policy: cx.dial_policy,
            report: &mut scratch,
            // The token endpoint is not the target: one address, whatever the module's mode.
            addressing: crate::probe::prober::Addressing::One,
        };
        let (status, body) = super::client::fetch(&self.spec, &self.url, &mut tcx)
            .await
            .map_err(|e| {
                ProbeFailure::new(
                    e.kind,
                    format!("oauth2 token request to {}: {}", self.url, e.message),
                )
            })?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            return Err(fail(format!(
                "token endpoint {} answered {status}: {text}",
                self.url
            )));
        }
        let token: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("token endpoint answered no JSON: {e}")))?;
        let access = token["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| fail("server response missing access_token".into()))?;
        // Go's `Token.Type`: "Bearer" unless the server names another type.
        let kind = match token["token_type"].as_str() {
            None | Some("") => "Bearer",
            Some(t) if t.eq_ignore_ascii_case("bearer") => "Bearer",
            Some(t) if t.eq_ignore_ascii_case("mac") => "MAC",
            Some(t) if t.eq_ignore_ascii_case("basic") => "Basic",
            Some(t) => t,
        };
        let expires_in = match &token["expires_in"] {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => s.parse::<f64>().ok(),
            _ => None,
        }
        .filter(|s| *s > 0.0);
        let mut value = HeaderValue::from_str(&format!("{kind} {access}"))
            .map_err(|_| fail("the access token cannot be sent in a header".into()))?;
        value.set_sensitive(true);
        let expiry = expires_in.map(|s| {
            Instant::now() + Duration::from_secs_f64(s.min(1e9)).saturating_sub(EXPIRY_DELTA)
        });
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((value.clone(), expiry));
        Ok(value)
    }
}
