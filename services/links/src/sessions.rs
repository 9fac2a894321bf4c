//! Console sessions: a signed-in browser holds a random token in a cookie;
//! the store keeps only the token's SHA-256 and the hash of the API key it
//! was opened with, so every request of the session is the key's own call
//! (its scope, its rate, its revocation). Sessions live in the shared store,
//! so signing out on one writer ends the session on all of them, and a
//! revoked key ends its sessions as soon as the writers forget the key.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::auth::KeyHash;

/// Random bytes in a session token.
const TOKEN_BYTES: usize = 32;

/// What a session cookie holds: 32 random bytes, base64url without padding.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("SessionToken(..)")
    }
}

/// The SHA-256 of a session token: what the store keys sessions by, so the
/// store's rows cannot be replayed as cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionHash(pub [u8; 32]);

impl SessionToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A token as a cookie carried it, when it has the shape of one.
    pub fn parse(raw: &str) -> Option<Self> {
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .ok()?;
        (decoded.len() == TOKEN_BYTES).then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SessionHash {
        SessionHash(Sha256::digest(self.0.as_bytes()).into())
    }

    /// The session's anti-forgery token: derived from the secret token, so
    /// a page of another origin, which cannot read the cookie, cannot know
    /// it, and nothing more needs storing.
    pub fn csrf(&self) -> String {
        let mut digest = Sha256::new();
        digest.update(b"tinyurl console csrf\0");
        digest.update(self.0.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.finalize())
    }

    /// Whether `presented` is this session's anti-forgery token (compared
    /// in constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        self.csrf().as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// The hash of the API key the session was opened with.
    pub key: KeyHash,
    pub created_at: SystemTime,
    pub last_seen_at: SystemTime,
}

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimeouts {
    /// A session unused this long has ended.
    pub idle: Duration,
    /// A session this old has ended, however busy.
    pub absolute: Duration,
}

impl SessionTimeouts {
    pub const DEFAULT: Self = Self {
        idle: Duration::from_secs(30 * 60),
        absolute: Duration::from_secs(12 * 60 * 60),
    };

    /// Whether `session` is still open at `now`.
    pub fn open_at(&self, session: &StoredSession, now: SystemTime) -> bool {
        let within = |since: SystemTime, limit: Duration| {
            now.duration_since(since)
                .map(|elapsed| elapsed < limit)
                // A clock that stepped back: the session is not older.
                .unwrap_or(true)
        };
        within(session.created_at, self.absolute) && within(session.last_seen_at, self.idle)
    }

    /// How stale `last_seen_at` may get before a request records its use:
    /// a tenth of the idle timeout, so a busy session writes once a few
    /// minutes and the idle timeout errs by at most that.
    pub fn touch_after(&self) -> Duration {
        self.idle / 10
    }
}

impl Default for SessionTimeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_odd_cookies_are_not_tokens() {
        let token = SessionToken::generate();
        assert_eq!(SessionToken::parse(token.as_str()), Some(token.clone()));
        assert_ne!(token, SessionToken::generate());
        assert_eq!(SessionToken::parse(""), None);
        assert_eq!(SessionToken::parse("short"), None);
        assert_eq!(SessionToken::parse(&"A".repeat(44)), None, "33 bytes");
        assert_eq!(SessionToken::parse("!!!"), None);
    }

    #[test]
    fn the_csrf_token_belongs_to_its_session() {
        let token = SessionToken::generate();
        let other = SessionToken::generate();
        assert!(token.csrf_matches(&token.csrf()));
        assert!(!token.csrf_matches(&other.csrf()));
        assert!(!token.csrf_matches(""));
        assert_ne!(token.csrf(), token.as_str(), "never the cookie itself");
    }

    #[test]
    fn sessions_end_when_idle_or_old() {
        let timeouts = SessionTimeouts {
            idle: Duration::from_secs(60),
            absolute: Duration::from_secs(600),
        };
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let session = StoredSession {
            key: KeyHash([0; 32]),
            created_at: start,
            last_seen_at: start,
        };
        assert!(timeouts.open_at(&session, start + Duration::from_secs(59)));
        assert!(!timeouts.open_at(&session, start + Duration::from_secs(60)));
        let busy = StoredSession {
            last_seen_at: start + Duration::from_secs(590),
            ..session.clone()
        };
        assert!(timeouts.open_at(&busy, start + Duration::from_secs(599)));
        assert!(!timeouts.open_at(&busy, start + Duration::from_secs(600)));
        assert!(timeouts.open_at(&session, start - Duration::from_secs(5)));
    }
}
