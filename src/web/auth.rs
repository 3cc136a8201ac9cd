//! `basic_auth_users`: HTTP basic authentication against bcrypt hashes, as exporter-toolkit
//! does it: the header parsed as Go's `Request.BasicAuth`, an unknown user checked against a
//! fixed hash (so timing does not tell which users exist), one bcrypt at a time, and recent
//! outcomes remembered so a scraper's every request does not cost a bcrypt.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// How many outcomes are remembered (exporter-toolkit keeps 100 too).
const CACHE_SIZE: usize = 100;

/// Checks credentials; one per server, shared by every connection.
#[derive(Debug, Default)]
pub struct Checker {
    /// Outcomes by a digest of (user, hash, password): no password is kept in memory as is.
    cache: Mutex<HashMap<[u8; 32], bool>>,
    /// bcrypt is CPU-heavy: one runs at a time.
    running: tokio::sync::Mutex<()>,
}

/// Whether `hash` is a bcrypt hash Go's `bcrypt.Cost` accepts: `$2`, an optional minor letter,
/// `$`, a two-digit cost from 4 to 31, `$`, then 53 characters of salt and hash.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let b = hash.as_bytes();
    if b.len() < 59 {
        return Err(
            "too short to be a bcrypt hash (expected e.g. $2y$10$ and 53 more characters; \
             htpasswd -nBC 10 \"\" | tr -d ':\\n' makes one)"
                .into(),
        );
    }
    if &b[..2] != b"$2" {
        return Err("not a bcrypt hash: it must start with $2".into());
    }
    // `$2$` or `$2` plus a minor version letter and `$`.
    let rest = if b[2] == b'$' { &b[3..] } else { &b[4..] };
    let cost = std::str::from_utf8(rest.get(..2).unwrap_or_default())
        .ok()
        .and_then(|c| c.parse::<u32>().ok())
        .ok_or("not a bcrypt hash: no cost after the version")?;
    if !(4..=31).contains(&cost) {
        return Err(format!("bcrypt cost {cost} is outside 4..31"));
    }
    if rest.get(2) != Some(&b'$') || rest.len() < 3 + 53 {
        return Err(
            "not a bcrypt hash: expected 53 characters of salt and hash after the cost".into(),
        );
    }
    Ok(())
}

/// The user and password of an `Authorization: Basic …` header, as Go parses it: the scheme in
/// any case, standard base64 with padding, split at the first colon.
pub fn parse_basic(header: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    const PREFIX: &[u8] = b"Basic ";
    if header.len() < PREFIX.len() || !header[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&header[PREFIX.len()..])
        .ok()?;
    let colon = decoded.iter().position(|&c| c == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// A hash no password matches in practice, for unknown users, made once (cost 10, as common).
fn unknown_user_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        bcrypt::hash("lookout: a user that does not exist", 10)
            .unwrap_or_else(|_| "$2y$10$".to_owned() + &".".repeat(53))
    })
}

/// bcrypt's verdict, with the version letter the bcrypt crate does not know (Go accepts any,
/// and it does not change the computation) read as `2b`.
fn bcrypt_matches(password: &[u8], hash: &str) -> bool {
    let normalised;
    let hash = if let Some(rest) = hash.strip_prefix("$2$") {
        normalised = format!("$2b${rest}");
        &normalised
    } else if hash.len() > 3
        && hash.as_bytes()[3] == b'$'
        && !matches!(&hash[..4], "$2a$" | "$2b$" | "$2x$" | "$2y$")
    {
        normalised = format!("$2b${}", &hash[4..]);
        &normalised
    } else {
        hash
    };
    bcrypt::verify(password, hash).unwrap_or(false)
}

impl Checker {
    /// Whether `authorization` (the request's header, if any) names one of `users` with the
    /// right password.
    pub async fn allows(
        &self,
        users: &BTreeMap<String, Secret>,
        authorization: Option<&[u8]>,
    ) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        let known = std::str::from_utf8(&user)
            .ok()
            .and_then(|u| users.get(u))
            .map(|h| h.expose().to_owned());
        let valid_user = known.is_some();
        let hash = known.unwrap_or_else(|| unknown_user_hash().to_owned());
        let key: [u8; 32] = {
            let mut h = Sha256::new();
            for part in [&user[..], hash.as_bytes(), &password[..]] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part);
            }
            h.finalize().into()
        };
        let cached = self.lock_cache().get(&key).copied();
        let matched = match cached {
            Some(m) => m,
            None => {
                let _one_at_a_time = self.running.lock().await;
                let m = tokio::task::spawn_blocking(move || bcrypt_matches(&password, &hash))
                    .await
                    .unwrap_or(false);
                let mut cache = self.lock_cache();
                if cache.len() >= CACHE_SIZE
                    && let Some(k) = cache.keys().next().copied()
                {
                    cache.remove(&k);
                }
                cache.insert(key, m);
                m
            }
        };
        matched && valid_user
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], bool>> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_headers_parse_as_go_does() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let h = format!("Basic {}", b64("alice:s3cr:et"));
        assert_eq!(
            parse_basic(h.as_bytes()),
            Some((b"alice".to_vec(), b"s3cr:et".to_vec()))
        );
        let h = format!("bAsIc {}", b64(":"));
        assert_eq!(parse_basic(h.as_bytes()), Some((vec![], vec![])));
        for bad in [
            "Bearer abc".to_owned(),
            format!("Basic {}", b64("nocolon")),
            "Basic !!!".to_owned(),
            "Basic".to_owned(),
            format!("Basic  {}", b64("a:b")),
        ] {
            assert_eq!(parse_basic(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn hashes_are_checked_as_gos_bcrypt_cost() {
        let salt_and_hash = "C".repeat(53);
        for ok in ["$2y$10$", "$2a$04$", "$2b$31$", "$2$10$"] {
            assert_eq!(check_hash(&format!("{ok}{salt_and_hash}")), Ok(()), "{ok}");
        }
        assert!(check_hash("plaintext").unwrap_err().contains("too short"));
        assert!(
            check_hash(&format!("$2y$03${salt_and_hash}"))
                .unwrap_err()
                .contains("cost 3")
        );
        assert!(check_hash(&format!("$1y$10${salt_and_hash}")).is_err());
    }

    #[tokio::test]
    async fn right_password_only_and_never_for_unknown_users() {
        let hash = bcrypt::hash_with_result("hunter2", 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let users = BTreeMap::from([("alice".to_owned(), Secret::new(hash))]);
        let c = Checker::default();
        let h = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        assert!(
            c.allows(&users, Some(h("alice", "hunter2").as_bytes()))
                .await
        );
        assert!(
            c.allows(&users, Some(h("alice", "hunter2").as_bytes()))
                .await,
            "cached"
        );
        assert!(
            !c.allows(&users, Some(h("alice", "hunter3").as_bytes()))
                .await
        );
        assert!(!c.allows(&users, Some(h("bob", "hunter2").as_bytes())).await);
        assert!(!c.allows(&users, None).await);
        // A password changed in the file takes effect at once: the hash is part of the key.
        let users = BTreeMap::from([(
            "alice".to_owned(),
            Secret::new(bcrypt::hash("other", 4).unwrap()),
        )]);
        assert!(
            !c.allows(&users, Some(h("alice", "hunter2").as_bytes()))
                .await
        );
        assert!(bcrypt_matches(
            b"other",
            &users["alice"].expose().replacen("$2b$", "$2$", 1)
        ));
    }
}
