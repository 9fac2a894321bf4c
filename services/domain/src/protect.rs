//! Password-protected links: the target, UTM fields and redirect rules of a
//! protected link are sealed under a key derived from its password, so the
//! record the redirect reads (Redis and its database rows) holds them only
//! in ciphertext, and only someone who knows the password can open them.
//!
//! - The link key `K` is Argon2id(password, a random salt), 32 bytes; the
//!   password itself is never stored, and neither is `K` in clear.
//! - The redirect's view seals `{target, utm, rules}` under `K`
//!   (XChaCha20-Poly1305, the code as associated data, so a sealed part
//!   cannot be moved to another link). A right password opens it; a wrong
//!   one fails the tag: checking a password is deriving `K`.
//! - The owner's view keeps `K` wrapped under the deployment's link secret
//!   (derived from `TINYURL_CODE_SECRET`), so the writer can seal again when
//!   the owner changes the target without asking for the password.
//! - A visitor who gave the right password gets a cookie that holds `K`
//!   sealed under the redirects' cookie secret with the code and an expiry
//!   as associated data: it opens that link, until then, and nothing else.
//!
//! Randomness (salts, nonces) is the caller's: everything here is a pure
//! function of its inputs.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// Bytes of a salt.
pub const SALT_LEN: usize = 16;
/// Bytes of an XChaCha20 nonce.
pub const NONCE_LEN: usize = 24;
/// Fewest characters of a link password.
pub const MIN_PASSWORD_CHARS: usize = 4;
/// Most characters of a link password.
pub const MAX_PASSWORD_CHARS: usize = 128;
/// Most bytes of a link password (Argon2 hashes any length; this bounds
/// what a form can make a redirect hash).
pub const MAX_PASSWORD_BYTES: usize = 4 * MAX_PASSWORD_CHARS;

/// Argon2id's cost for new passwords: OWASP's first recommended set
/// (19 MiB, 2 passes, 1 lane), about 20-40 ms on one core.
pub const DEFAULT_COST: Cost = Cost {
    memory_kib: 19_456,
    passes: 2,
    lanes: 1,
};

/// Argon2id parameters, kept with each password so that they can be raised
/// for new passwords without breaking old ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    #[serde(rename = "m")]
    pub memory_kib: u32,
    #[serde(rename = "t")]
    pub passes: u32,
    #[serde(rename = "p")]
    pub lanes: u32,
}

/// A 32-byte key: a link key, the link secret or the cookie secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Key(…)")
    }
}

impl Key {
    /// A key for `purpose` from a configured secret text: SHA-256 of both,
    /// so one configured secret gives unrelated keys for unrelated uses.
    pub fn from_secret(purpose: &str, secret: &[u8]) -> Self {
        let mut hasher = sha2::Sha256::new();
        hasher.update(purpose.as_bytes());
        hasher.update([0]);
        hasher.update(secret);
        Self(hasher.finalize().into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The link key of `password` at `cost` with `salt`.
    pub fn derive(password: &str, cost: Cost, salt: &[u8]) -> Result<Self, ProtectError> {
        let params = argon2::Params::new(cost.memory_kib, cost.passes, cost.lanes, Some(32))
            .map_err(|_| ProtectError::Corrupt("Argon2 parameters"))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = [0; 32];
        argon
            .hash_password_into(password.as_bytes(), salt, &mut key)
            .map_err(|_| ProtectError::Corrupt("Argon2 input"))?;
        Ok(Self(key))
    }

    /// `plaintext` sealed for `context`: base64url of nonce and ciphertext.
    pub fn seal(&self, context: &str, plaintext: &[u8], nonce: [u8; NONCE_LEN]) -> String {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            // Only a plaintext of gigabytes fails.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        BASE64.encode(out)
    }

    /// What [`Self::seal`] sealed for `context`; `None` for the wrong key,
    /// context or anything tampered with.
    pub fn open(&self, context: &str, sealed: &str) -> Option<Vec<u8>> {
        let bytes = BASE64.decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        XChaCha20Poly1305::new((&self.0).into())
            .decrypt(
                &XNonce::try_from(nonce).ok()?,
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtectError {
    /// Stored data that does not open with the deployment's secret: the
    /// secret changed, or the data is damaged.
    #[error("a protected link's stored {0} cannot be used")]
    Corrupt(&'static str),
}

/// A link's password as stored: never the password, never its key in clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Password {
    #[serde(flatten)]
    pub cost: Cost,
    /// base64url.
    pub salt: String,
    /// The owner's view: the link key wrapped under the link secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped: Option<String>,
    /// The redirect's view: the target, UTM fields and rules sealed under
    /// the link key ([`Locked`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<String>,
}

/// What a protected link hides until its password is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locked {
    #[serde(rename = "t")]
    pub target_url: String,
    #[serde(rename = "u", default, skip_serializing_if = "crate::Utm::is_empty")]
    pub utm: crate::Utm,
    #[serde(rename = "r", default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<crate::RedirectRule>,
}

fn wrap_context(code: &str) -> String {
    format!("tinyurl wrap {code}")
}

fn seal_context(code: &str) -> String {
    format!("tinyurl seal {code}")
}

fn cookie_context(code: &str, expires: u64) -> String {
    format!("tinyurl cookie {code} {expires}")
}

impl Password {
    /// A new password for link `code`, from the key [`Key::derive`] gave
    /// for it with `salt` at [`DEFAULT_COST`]: the owner's view, not yet
    /// sealed ([`crate::LinkOptions::seal`]).
    pub fn new(
        key: &Key,
        salt: [u8; SALT_LEN],
        code: &str,
        link_secret: &Key,
        nonce: [u8; NONCE_LEN],
    ) -> Self {
        Self {
            cost: DEFAULT_COST,
            salt: BASE64.encode(salt),
            wrapped: Some(link_secret.seal(&wrap_context(code), &key.0, nonce)),
            sealed: None,
        }
    }

    /// The link key, unwrapped by the writer.
    pub fn unwrap_key(&self, code: &str, link_secret: &Key) -> Result<Key, ProtectError> {
        let wrapped = self
            .wrapped
            .as_deref()
            .ok_or(ProtectError::Corrupt("key"))?;
        let bytes = link_secret
            .open(&wrap_context(code), wrapped)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or(ProtectError::Corrupt("key"))?;
        Ok(Key(bytes))
    }

    /// The link key `password` gives, when it is the right one, with what
    /// it opens. Costs one Argon2id: run it off the request threads.
    pub fn unlock(&self, code: &str, password: &str) -> Option<(Key, Locked)> {
        if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
            return None;
        }
        let salt = BASE64.decode(&self.salt).ok()?;
        let key = Key::derive(password, self.cost, &salt).ok()?;
        let locked = self.open_with(code, &key)?;
        Some((key, locked))
    }

    /// What the link key opens; `None` for a wrong key.
    pub fn open_with(&self, code: &str, key: &Key) -> Option<Locked> {
        let plaintext = key.open(&seal_context(code), self.sealed.as_deref()?)?;
        serde_json::from_slice(&plaintext).ok()
    }
}

impl crate::LinkOptions {
    /// Whether the link asks for a password.
    pub fn is_protected(&self) -> bool {
        self.password.is_some()
    }

    /// Seals the target, UTM fields and rules of a protected link under
    /// its key (unwrapped with the link secret) into its password; nothing
    /// for a link without one.
    pub fn seal(
        &mut self,
        code: &str,
        target_url: &str,
        link_secret: &Key,
        nonce: [u8; NONCE_LEN],
    ) -> Result<(), ProtectError> {
        let Some(password) = &self.password else {
            return Ok(());
        };
        let key = password.unwrap_key(code, link_secret)?;
        self.seal_with_key(code, target_url, &key, nonce);
        Ok(())
    }

    /// [`Self::seal`] with the link key at hand (a password just given).
    pub fn seal_with_key(
        &mut self,
        code: &str,
        target_url: &str,
        key: &Key,
        nonce: [u8; NONCE_LEN],
    ) {
        let locked = Locked {
            target_url: target_url.to_owned(),
            utm: self.utm.clone(),
            rules: self.rules.clone(),
        };
        let plaintext = serde_json::to_vec(&locked).unwrap_or_default();
        if let Some(password) = &mut self.password {
            password.sealed = Some(key.seal(&seal_context(code), &plaintext, nonce));
        }
    }

    /// The redirect's view of a sealed protected link's options (the
    /// owner's view is `self`): no key, no UTM fields or rules in clear,
    /// only the cap and the sealed part. `None` for a link without a
    /// password, whose views are the same.
    pub fn redirect_view(&self) -> Option<Self> {
        let password = self.password.as_ref()?;
        Some(Self {
            utm: crate::Utm::default(),
            rules: Vec::new(),
            max_visits: self.max_visits,
            password: Some(Password {
                cost: password.cost,
                salt: password.salt.clone(),
                wrapped: None,
                sealed: password.sealed.clone(),
            }),
        })
    }
}

/// The value of the cookie that opens link `code` until `expires` (Unix
/// seconds) for whoever holds it.
pub fn cookie_value(
    cookie_secret: &Key,
    code: &str,
    key: &Key,
    expires: u64,
    nonce: [u8; NONCE_LEN],
) -> String {
    format!(
        "{expires}.{}",
        cookie_secret.seal(&cookie_context(code, expires), &key.0, nonce)
    )
}

/// The link key a cookie holds for link `code`, while it has not expired
/// at `now` (Unix seconds); `None` for another link's cookie, an expired or
/// forged one.
pub fn open_cookie(cookie_secret: &Key, code: &str, value: &str, now: u64) -> Option<Key> {
    let (expires, sealed) = value.split_once('.')?;
    let expires: u64 = expires.parse().ok()?;
    if expires <= now {
        return None;
    }
    let bytes = cookie_secret.open(&cookie_context(code, expires), sealed)?;
    Some(Key(<[u8; 32]>::try_from(bytes).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LinkOptions, RedirectRule, Utm};

    fn protected(code: &str, secret: &Key) -> LinkOptions {
        let key = Key::derive("correct horse", DEFAULT_COST, &[7; SALT_LEN]).expect("a key");
        let password = Password::new(&key, [7; SALT_LEN], code, secret, [1; NONCE_LEN]);
        LinkOptions {
            utm: Utm {
                campaign: Some("launch".to_owned()),
                ..Utm::default()
            },
            rules: vec![RedirectRule {
                languages: vec!["de".to_owned()],
                target_url: "https://example.de/secret".to_owned(),
                ..RedirectRule::default()
            }],
            max_visits: Some(5),
            password: Some(password),
        }
    }

    #[test]
    fn the_redirects_view_hides_everything_but_the_cap() {
        let secret = Key::from_secret("link", b"0123456789abcdef");
        let mut owner = protected("Abc1234", &secret);
        owner
            .seal(
                "Abc1234",
                "https://example.com/secret",
                &secret,
                [2; NONCE_LEN],
            )
            .expect("sealed");
        let view = owner.redirect_view().expect("protected");
        let stored = view.to_stored().unwrap_or_default();
        assert!(!stored.contains("secret"), "{stored}");
        assert!(!stored.contains("launch"), "{stored}");
        assert!(!stored.contains("wrapped"), "{stored}");
        assert_eq!(view.max_visits, Some(5));
        let password = view.password.as_ref().expect("password");
        assert!(password.unlock("Abc1234", "wrong horse").is_none());
        // The sealed part belongs to its code.
        assert!(password.unlock("Abc1235", "correct horse").is_none());
        let (key, locked) = password
            .unlock("Abc1234", "correct horse")
            .expect("the right password opens it");
        assert_eq!(locked.target_url, "https://example.com/secret");
        assert_eq!(locked.utm, owner.utm);
        assert_eq!(locked.rules, owner.rules);
        // The writer seals again with the wrapped key, to the same key.
        let owner_password = owner.password.as_ref().expect("password");
        assert_eq!(
            owner_password.unwrap_key("Abc1234", &secret).ok(),
            Some(key.clone())
        );
        let other_secret = Key::from_secret("link", b"another secret!!");
        assert!(owner_password.unwrap_key("Abc1234", &other_secret).is_err());
        assert!(
            owner
                .clone()
                .seal("Abc1234", "https://x", &other_secret, [2; NONCE_LEN])
                .is_err()
        );
        assert_eq!(LinkOptions::default().redirect_view(), None);
        // Stored form round trip.
        assert_eq!(LinkOptions::from_stored(Some(&stored)), Ok(view));
    }

    #[test]
    fn a_cookie_opens_its_link_until_it_expires() {
        let cookies = Key::from_secret("cookie", b"s3cret");
        let key = Key::from_bytes([9; 32]);
        let value = cookie_value(&cookies, "Abc1234", &key, 1_000, [3; NONCE_LEN]);
        assert_eq!(open_cookie(&cookies, "Abc1234", &value, 999), Some(key));
        assert_eq!(open_cookie(&cookies, "Abc1234", &value, 1_000), None);
        assert_eq!(open_cookie(&cookies, "Abc1235", &value, 999), None);
        let stretched = value.replacen("1000.", "9000.", 1);
        assert_eq!(open_cookie(&cookies, "Abc1234", &stretched, 999), None);
        let other = Key::from_secret("cookie", b"other");
        assert_eq!(open_cookie(&other, "Abc1234", &value, 999), None);
        assert_eq!(open_cookie(&cookies, "Abc1234", "garbage", 999), None);
    }
}
