//! Codes: `base62(permute_L(id - S_L))`, left-padded to length `L`.
//!
//! IDs are split into tiers. Tier `L` (from the configured minimum length up)
//! covers IDs `[S_L, S_L + 62^L)`, with `S_min = 0` and `S_{L+1} = S_L + 62^L`,
//! so every ID has exactly one code and every code of a tier exactly one ID.
//! Within a tier, `permute_L` is a keyed bijection on `[0, 62^L)`: a balanced
//! Feistel network on `[0, m²)` with `m = ⌈√(62^L)⌉`, walked along its cycle
//! until the value falls back inside `[0, 62^L)`. Minting therefore needs no
//! lookup and never collides, and consecutive IDs give unrelated codes.
//!
//! The round function is SipHash-1-3 keyed from the deployment secret. This
//! makes codes unpredictable to anyone without the key; it is not meant to
//! hide the ID from someone who has it.

use std::hash::Hasher as _;

use siphasher::sip128::{Hasher128 as _, SipHasher13};

/// The code alphabet, in digit order.
pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const RADIX: u128 = 62;
/// Feistel rounds; 8 rounds of a keyed PRF mix every output digit.
const ROUNDS: u8 = 8;
/// Default shortest code.
pub const DEFAULT_MIN_LENGTH: usize = 7;

/// Why a codec cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("minimum code length must be between 1 and {max}, got {got}")]
    MinLength { got: usize, max: usize },
    #[error("the code secret must be at least 16 bytes")]
    ShortSecret,
}

/// One tier of the code space.
#[derive(Debug, Clone, Copy)]
struct Tier {
    length: usize,
    /// First ID of the tier.
    start: u128,
    /// `62^length`: number of codes (and IDs) in the tier.
    size: u128,
    /// Side of the Feistel square, `⌈√size⌉`.
    side: u64,
}

/// Encodes IDs to codes and back, for one deployment secret and minimum length.
#[derive(Clone)]
pub struct CodeCodec {
    key: [u8; 16],
    tiers: Vec<Tier>,
}

impl std::fmt::Debug for CodeCodec {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never prints.
        formatter
            .debug_struct("CodeCodec")
            .field("min_length", &self.min_length())
            .field("max_length", &self.max_length())
            .finish_non_exhaustive()
    }
}

impl CodeCodec {
    /// `secret` must be at least 16 bytes; `min_length` between 1 and the
    /// longest tier needed for `u64` IDs.
    pub fn new(secret: &[u8], min_length: usize) -> Result<Self, CodecError> {
        if secret.len() < 16 {
            return Err(CodecError::ShortSecret);
        }
        let mut tiers = Vec::new();
        let mut start: u128 = 0;
        let mut length = min_length;
        // Add tiers until every u64 ID is covered.
        while start <= u128::from(u64::MAX) {
            let Some(size) = u32::try_from(length)
                .ok()
                .and_then(|exp| RADIX.checked_pow(exp))
            else {
                break;
            };
            tiers.push(Tier {
                length,
                start,
                size,
                side: ceil_sqrt(size),
            });
            start += size;
            length += 1;
        }
        let max = 10;
        if min_length == 0 || min_length > max || tiers.is_empty() {
            return Err(CodecError::MinLength {
                got: min_length,
                max,
            });
        }
        Ok(Self {
            key: derive_key(secret),
            tiers,
        })
    }

    pub fn min_length(&self) -> usize {
        self.tiers.first().map_or(0, |tier| tier.length)
    }

    pub fn max_length(&self) -> usize {
        self.tiers.last().map_or(0, |tier| tier.length)
    }

    /// The code of `id`.
    pub fn encode(&self, id: u64) -> Code {
        let id = u128::from(id);
        let tier = self
            .tiers
            .iter()
            .find(|tier| id < tier.start + tier.size)
            .copied()
            // Tiers are built until they cover u64::MAX.
            .unwrap_or_else(|| self.tiers[self.tiers.len() - 1]);
        let permuted = self.permute(&tier, id - tier.start);
        let mut bytes = vec![b'0'; tier.length];
        let mut value = permuted;
        for slot in bytes.iter_mut().rev() {
            *slot = ALPHABET[(value % RADIX) as usize];
            value /= RADIX;
        }
        Code(String::from_utf8(bytes).unwrap_or_default())
    }

    /// The ID of `code`, or `None` when it is not a code of this codec (wrong
    /// length or alphabet, or beyond the `u64` range in the last tier).
    pub fn decode(&self, code: &str) -> Option<u64> {
        let tier = *self.tiers.iter().find(|tier| tier.length == code.len())?;
        let mut value: u128 = 0;
        for byte in code.bytes() {
            value = value * RADIX + u128::from(digit_of(byte)?);
        }
        let id = tier.start + self.unpermute(&tier, value);
        u64::try_from(id).ok()
    }

    /// Whether `candidate` has the shape of a generated code (length and
    /// alphabet), without decoding it.
    pub fn is_code_shaped(&self, candidate: &str) -> bool {
        (self.min_length()..=self.max_length()).contains(&candidate.len())
            && candidate.bytes().all(|byte| byte.is_ascii_alphanumeric())
    }

    fn permute(&self, tier: &Tier, value: u128) -> u128 {
        let mut current = self.feistel(tier, value, true);
        while current >= tier.size {
            current = self.feistel(tier, current, true);
        }
        current
    }

    fn unpermute(&self, tier: &Tier, value: u128) -> u128 {
        let mut current = self.feistel(tier, value, false);
        while current >= tier.size {
            current = self.feistel(tier, current, false);
        }
        current
    }

    /// A balanced Feistel network on `[0, side²)`: each round maps
    /// `(left, right)` to `(right, left + F(round, right) mod side)`.
    fn feistel(&self, tier: &Tier, value: u128, forward: bool) -> u128 {
        let side = u128::from(tier.side);
        // value < side², so both halves are < side ≤ u64::MAX.
        let mut left = (value / side) as u64;
        let mut right = (value % side) as u64;
        if forward {
            for round in 0..ROUNDS {
                let mixed = add_mod(left, self.round_function(tier, round, right), tier.side);
                left = right;
                right = mixed;
            }
        } else {
            for round in (0..ROUNDS).rev() {
                let previous_right = left;
                let previous_left = sub_mod(
                    right,
                    self.round_function(tier, round, previous_right),
                    tier.side,
                );
                left = previous_left;
                right = previous_right;
            }
        }
        u128::from(left) * side + u128::from(right)
    }

    fn round_function(&self, tier: &Tier, round: u8, half: u64) -> u64 {
        let mut hasher = SipHasher13::new_with_key(&self.key);
        hasher.write_u8(tier.length as u8);
        hasher.write_u8(round);
        hasher.write_u64(half);
        let hash = hasher.finish128();
        (u128::from(hash.h1) << 64 | u128::from(hash.h2)).rem_euclid(u128::from(tier.side)) as u64
    }
}

/// A short code or alias as it appears in a URL path. Generated codes and
/// aliases share this one keyspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(String);

impl Code {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

fn digit_of(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'Z' => Some(byte - b'A' + 10),
        b'a'..=b'z' => Some(byte - b'a' + 36),
        _ => None,
    }
}

/// 128-bit SipHash key from an arbitrary-length secret, so operators can use
/// any string; a keyed SipHash of a fixed label spreads every secret byte.
fn derive_key(secret: &[u8]) -> [u8; 16] {
    let mut key = [0_u8; 16];
    for (index, chunk) in secret.chunks(16).enumerate() {
        let mut hasher = SipHasher13::new_with_key(&key);
        hasher.write(b"tinyurl-code-key");
        hasher.write_usize(index);
        hasher.write(chunk);
        let hash = hasher.finish128();
        key[..8].copy_from_slice(&hash.h1.to_le_bytes());
        key[8..].copy_from_slice(&hash.h2.to_le_bytes());
    }
    key
}

fn ceil_sqrt(value: u128) -> u64 {
    // Newton's method on integers; the float guess only speeds it up.
    let mut root = (value as f64).sqrt() as u128;
    while root * root > value {
        root -= 1;
    }
    while root * root < value {
        root += 1;
    }
    u64::try_from(root).unwrap_or(u64::MAX)
}

fn add_mod(a: u64, b: u64, modulus: u64) -> u64 {
    ((u128::from(a) + u128::from(b)) % u128::from(modulus)) as u64
}

fn sub_mod(a: u64, b: u64, modulus: u64) -> u64 {
    ((u128::from(a) + u128::from(modulus) - u128::from(b) % u128::from(modulus))
        % u128::from(modulus)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const SECRET: &[u8] = b"test secret, 32 bytes long......";

    fn codec(min_length: usize) -> CodeCodec {
        CodeCodec::new(SECRET, min_length).expect("valid codec")
    }

    #[test]
    fn tiers_cover_every_u64_from_the_minimum_length() {
        let codec = codec(7);
        assert_eq!(codec.min_length(), 7);
        assert_eq!(codec.encode(0).as_str().len(), 7);
        let last_of_tier_7 = 62_u64.pow(7) - 1;
        assert_eq!(codec.encode(last_of_tier_7).as_str().len(), 7);
        assert_eq!(codec.encode(last_of_tier_7 + 1).as_str().len(), 8);
        let top = codec.encode(u64::MAX);
        assert_eq!(codec.decode(top.as_str()), Some(u64::MAX));
        assert_eq!(codec.max_length(), top.as_str().len());
    }

    #[test]
    fn exhaustive_round_trip_and_bijection_on_small_tiers() {
        // Tier 2 (odd-free square: 62² = 3,844) and tier 3 (not a square:
        // cycle-walking is exercised) in full.
        let codec = codec(2);
        let tier_2_and_3 = 62_u64.pow(2) + 62_u64.pow(3);
        let mut seen = HashSet::with_capacity(tier_2_and_3 as usize);
        for id in 0..tier_2_and_3 {
            let code = codec.encode(id);
            assert_eq!(codec.decode(code.as_str()), Some(id), "id {id} code {code}");
            assert!(seen.insert(code), "duplicate code for id {id}");
        }
    }

    #[test]
    fn every_string_of_a_tier_decodes_to_exactly_one_id() {
        // All 62³ strings of length 3 decode to distinct IDs inside tier 3,
        // and each encodes back to itself.
        let codec = codec(3);
        let mut ids = HashSet::new();
        for a in ALPHABET {
            for b in ALPHABET {
                for c in ALPHABET {
                    let code = String::from_utf8(vec![*a, *b, *c]).expect("ascii");
                    let id = codec.decode(&code).expect("every tier string decodes");
                    assert!(id < 62_u64.pow(3));
                    assert!(ids.insert(id), "two strings decode to id {id}");
                    assert_eq!(codec.encode(id).as_str(), code);
                }
            }
        }
        assert_eq!(ids.len(), 62_usize.pow(3));
    }

    #[test]
    fn a_million_random_round_trips() {
        let codec = codec(7);
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..1_000_000 {
            // xorshift64*: a fast, fixed-seed generator so failures reproduce.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let id = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            let code = codec.encode(id);
            assert_eq!(codec.decode(code.as_str()), Some(id), "id {id}");
        }
    }

    #[test]
    fn codes_depend_on_the_secret_and_are_not_sequential() {
        let first = codec(7);
        let other = CodeCodec::new(b"another secret of 32 bytes......", 7).expect("valid");
        assert_ne!(first.encode(1), other.encode(1));
        let consecutive: Vec<Code> = (1000..1010).map(|id| first.encode(id)).collect();
        for pair in consecutive.windows(2) {
            let shared_prefix = pair[0]
                .as_str()
                .bytes()
                .zip(pair[1].as_str().bytes())
                .take_while(|(a, b)| a == b)
                .count();
            assert!(
                shared_prefix < 5,
                "{} and {} look sequential",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn malformed_codes_do_not_decode() {
        let codec = codec(7);
        for bad in [
            "",
            "abc",
            "abcdef",
            "abcdef!",
            "abc-def",
            "ábcdefg",
            "abcdefghijklmnop",
        ] {
            assert_eq!(codec.decode(bad), None, "{bad:?}");
        }
        assert!(codec.is_code_shaped("abcDEF1"));
        assert!(!codec.is_code_shaped("abc_DEF"));
        assert!(!codec.is_code_shaped("abcDEF"));
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert_eq!(
            CodeCodec::new(b"short", 7).err(),
            Some(CodecError::ShortSecret)
        );
        assert!(matches!(
            CodeCodec::new(SECRET, 0),
            Err(CodecError::MinLength { .. })
        ));
        assert!(matches!(
            CodeCodec::new(SECRET, 11),
            Err(CodecError::MinLength { .. })
        ));
        assert!(format!("{:?}", codec(7)).contains("min_length"));
        assert!(!format!("{:?}", codec(7)).contains("key"));
    }

    proptest! {
        #[test]
        fn round_trips_for_any_id_and_min_length(id in any::<u64>(), min_length in 1_usize..=10) {
            let codec = codec(min_length);
            let code = codec.encode(id);
            prop_assert!(code.as_str().len() >= min_length);
            prop_assert!(codec.is_code_shaped(code.as_str()));
            prop_assert_eq!(codec.decode(code.as_str()), Some(id));
        }

        #[test]
        fn decode_never_panics_and_is_inverse_when_defined(raw in "[0-9A-Za-z]{0,12}|\\PC{0,12}") {
            let codec = codec(7);
            if let Some(id) = codec.decode(&raw) {
                let encoded = codec.encode(id);
                prop_assert_eq!(encoded.as_str(), raw.as_str());
            }
        }
    }
}
