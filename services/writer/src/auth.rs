//! API keys. A key is `tu_` + 43 base62 characters (256 bits of entropy),
//! shown once at creation; only its SHA-256 is stored. The interceptor checks
//! the shape of the bearer token and hashes it; handlers resolve the hash to
//! the key's id through a small in-process cache in front of Postgres.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng as _;
use sha2::{Digest as _, Sha256};

use crate::error::WriterError;

const KEY_PREFIX: &str = "tu_";
const KEY_BODY_LEN: usize = 43;
/// How long a resolved key stays trusted without asking Postgres again; also
/// how long a revoked key keeps working at worst.
const KEY_CACHE_TTL: Duration = Duration::from_secs(60);

/// SHA-256 of a presented API key, put in request extensions by [`authenticate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

/// The id of the API key a request was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OwnerId(pub i64);

/// A new random key and its hash.
pub fn generate_key() -> (String, KeyHash) {
    let mut rng = rand::rng();
    let body: String = (0..KEY_BODY_LEN)
        .map(|_| char::from(tinyurl_domain::codec::ALPHABET[rng.random_range(0..62)]))
        .collect();
    let key = format!("{KEY_PREFIX}{body}");
    let hash = hash_key(&key);
    (key, hash)
}

/// Longest API key name, in bytes.
pub const MAX_KEY_NAME_LEN: usize = 200;

/// Who or what a key is for: trimmed, 1 to [`MAX_KEY_NAME_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyName(String);

impl KeyName {
    pub fn parse(raw: &str) -> Result<Self, WriterError> {
        let name = raw.trim();
        if name.is_empty() || name.len() > MAX_KEY_NAME_LEN {
            return Err(WriterError::invalid(
                "name",
                format!("an API key name must be 1 to {MAX_KEY_NAME_LEN} bytes"),
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key just created: shown to its owner once, never again.
#[derive(Debug)]
pub struct IssuedKey {
    pub id: i64,
    pub key: String,
}

impl IssuedKey {
    /// Shows a new key to the operator who created it: the key alone on
    /// stdout (for scripts), what it is on stderr. It is never shown again.
    pub fn print(&self, name: &KeyName) {
        eprintln!(
            "created API key {} ({}); it is shown only once:",
            self.id,
            name.as_str()
        );
        println!("{}", self.key);
    }
}

/// Creates an API key named `name` in `store`.
pub async fn issue_key(
    store: &dyn crate::store::LinkStore,
    name: &KeyName,
) -> Result<IssuedKey, WriterError> {
    let (key, hash) = generate_key();
    let id = store.create_api_key(name.as_str(), &hash).await?;
    Ok(IssuedKey { id, key })
}

pub fn hash_key(key: &str) -> KeyHash {
    KeyHash(Sha256::digest(key.as_bytes()).into())
}

/// Tonic interceptor: requires `authorization: Bearer tu_…` of the right shape
/// and attaches its hash. Unknown keys are caught by the handler's lookup.
#[allow(clippy::result_large_err)] // tonic's Interceptor signature is fixed
pub fn authenticate(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let header = request.metadata().get("authorization").ok_or_else(|| {
        WriterError::Unauthenticated(
            "no authorization metadata; send 'authorization: Bearer <API key>'",
        )
        .into_status()
    })?;
    let value = header.to_str().map_err(|_| {
        WriterError::Unauthenticated("authorization metadata is not ASCII").into_status()
    })?;
    let key = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| {
            WriterError::Unauthenticated("authorization must be 'Bearer <API key>'").into_status()
        })?
        .trim();
    let well_formed = key.len() == KEY_PREFIX.len() + KEY_BODY_LEN
        && key.starts_with(KEY_PREFIX)
        && key[KEY_PREFIX.len()..]
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric());
    if !well_formed {
        return Err(WriterError::Unauthenticated("the API key is malformed").into_status());
    }
    let hash = hash_key(key);
    request.extensions_mut().insert(hash);
    Ok(request)
}

/// Resolves key hashes to key ids, caching hits for [`KEY_CACHE_TTL`].
#[derive(Default)]
pub struct KeyCache {
    // A std mutex: held only for a map lookup or insert, never across await.
    resolved: Mutex<HashMap<KeyHash, (OwnerId, Instant)>>,
}

impl KeyCache {
    pub fn get(&self, hash: &KeyHash) -> Option<OwnerId> {
        let map = self
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(hash)
            .filter(|(_, resolved_at)| resolved_at.elapsed() < KEY_CACHE_TTL)
            .map(|(owner, _)| *owner)
    }

    pub fn insert(&self, hash: KeyHash, owner: OwnerId) {
        let mut map = self
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: a flood of distinct valid keys cannot grow it without limit.
        if map.len() >= 10_000 {
            map.retain(|_, (_, resolved_at)| resolved_at.elapsed() < KEY_CACHE_TTL);
            if map.len() >= 10_000 {
                map.clear();
            }
        }
        map.insert(hash, (owner, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(value: Option<&str>) -> tonic::Request<()> {
        let mut request = tonic::Request::new(());
        if let Some(value) = value {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("ascii metadata"));
        }
        request
    }

    #[test]
    fn generated_keys_pass_and_carry_their_hash() {
        let (key, hash) = generate_key();
        let request =
            authenticate(request_with(Some(&format!("Bearer {key}")))).expect("valid key");
        assert_eq!(request.extensions().get::<KeyHash>(), Some(&hash));
    }

    #[test]
    fn missing_or_malformed_keys_are_unauthenticated() {
        for value in [
            None,
            Some("tu_abc"),
            Some("Basic dXNlcjpwdw=="),
            Some("Bearer tu_short"),
            Some("Bearer xx_0123456789012345678901234567890123456789012"),
        ] {
            let status = authenticate(request_with(value)).expect_err("must be refused");
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{value:?}");
        }
    }
}
