//! Redirects as Go's `http.Client` follows them for blackbox: which responses redirect, when to
//! stop, and how the next request differs from the last (method, body, Referer, headers dropped
//! on a change of host, Host header and TLS name, the address resolved for the first hop).

use std::net::IpAddr;

use http::Method;
use http::header::{self, HeaderValue};
use tracing::debug;
use url::Url;

use super::client::{Hop, authority, bare_host};
use super::{MAX_REDIRECTS, Spec};
use crate::probe::prober::{FailureKind, ProbeFailure};

/// What the first request was sent with: redirects back to the same host keep it.
pub(super) struct Origin {
    /// The first request's Host header (kept for relative redirects).
    pub host_header: String,
    /// The first request's TLS server name.
    pub sni: String,
    /// The authority of the first URL (with the resolved IP, as blackbox substitutes it).
    pub authority: String,
    /// The address resolved for the first URL, reused while redirects stay on its authority.
    pub ip: Option<IpAddr>,
}

/// What the client does after a response.
pub(super) enum Next {
    /// Not a redirect: this is the final response.
    Final,
    /// A redirect the client does not follow (limit reached, not allowed, bad location); the
    /// failure, if any, is why. Its body is never read.
    Unfollowed(Option<ProbeFailure>),
    /// The request to send next.
    Follow(Box<Hop>),
}

/// Decides what follows a response with `status` and `location` to `hop`; `redirects` counts
/// this response if it redirects.
pub(super) fn next(
    spec: &Spec,
    origin: &Origin,
    hop: &Hop,
    status: u16,
    location: Option<String>,
    redirects: usize,
) -> Next {
    let keep_method = match status {
        301..=303 => false,
        307 | 308 => true,
        _ => return Next::Final,
    };
    let Some(loc) = location else {
        return Next::Final;
    };
    debug!(location = %loc, "Received redirect");
    if redirects > MAX_REDIRECTS || !spec.follow_redirects {
        debug!("Not following redirect");
        return Next::Unfollowed(None);
    }
    let next = match hop.url.join(&loc) {
        Ok(u) => u,
        Err(e) => {
            return Next::Unfollowed(Some(ProbeFailure::new(
                FailureKind::Protocol,
                format!("invalid redirect location {loc:?}: {e}"),
            )));
        }
    };
    if next.scheme() != "http" && next.scheme() != "https" {
        return Next::Unfollowed(Some(ProbeFailure::new(
            FailureKind::Protocol,
            format!("unsupported redirect location {loc:?}"),
        )));
    }
    let relative = Url::parse(&loc).is_err();
    let next_authority = authority(&next);
    let same_first_host = next_authority == origin.authority;
    let (method, body) = if keep_method {
        (hop.method.clone(), hop.body.clone())
    } else if hop.method == Method::GET || hop.method == Method::HEAD {
        (hop.method.clone(), None)
    } else {
        (Method::GET, None)
    };
    Next::Follow(Box::new(Hop {
        host_header: if relative {
            origin.host_header.clone()
        } else {
            next_authority
        },
        sni: if same_first_host {
            origin.sni.clone()
        } else {
            bare_host(&next)
        },
        ip: if same_first_host { origin.ip } else { None },
        headers: next_headers(hop, &next),
        url: next,
        method,
        body,
    }))
}

/// The headers of the request to `next`: Go's client sends the previous URL (without user info)
/// as Referer, except from https to http, and drops credentials when the host changes.
fn next_headers(hop: &Hop, next: &Url) -> http::HeaderMap {
    let host_changed = bare_host(next) != bare_host(&hop.url);
    let mut headers = hop.headers.clone();
    headers.remove(header::REFERER);
    if !(hop.url.scheme() == "https" && next.scheme() == "http") {
        let mut referer = hop.url.clone();
        let _ = referer.set_username("");
        let _ = referer.set_password(None);
        referer.set_fragment(None);
        if let Ok(v) = HeaderValue::from_str(referer.as_str()) {
            headers.insert(header::REFERER, v);
        }
    }
    if host_changed {
        for h in [
            header::AUTHORIZATION,
            header::WWW_AUTHENTICATE,
            header::COOKIE,
        ] {
            headers.remove(h);
        }
    }
    headers
}
