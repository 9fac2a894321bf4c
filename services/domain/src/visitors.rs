//! Unique visitors without keeping an address.
//!
//! A visit is known by a *digest* of (client address, User-Agent, link),
//! taken on the request path and kept only in the redirect's memory until
//! the next flush. The flush turns each digest into the *visitor hash*: the
//! digest hashed again with the day's key (SipHash-1-3 under 128 random
//! bits), which every redirect of the deployment shares — it lives in Redis
//! (or in the embedded deployment's memory) with an expiry at the end of its
//! UTC day and is never written anywhere else, so once the day is over
//! nobody, the operator included, can tell whether an address was among a
//! link's visitors. The hashes go into a HyperLogLog per link and day
//! (`PFADD`), which every redirect adds to; the consumers read its count
//! (`PFCOUNT`) when they fold the batch that names the link's day, and keep
//! the largest count seen in the day rollups ([`VISITORS_FIELD`]).
//!
//! Because the key changes every day, a person who visits on two days is
//! two visitors of the two days together: a range's visitors are the sum of
//! its days' (as in the analytics tools that keep no identifier).

use std::fmt::Write as _;
use std::hash::Hasher as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use siphasher::sip::SipHasher13;

/// Stream field listing the link days whose sketches the redirect added to
/// before appending the batch: lines of `day link` (days since the Unix
/// epoch, UTC). A consumer counts each after reading the batch, so the
/// count it folds includes every visitor added before.
pub const VISITORS_FIELD: &str = "visitors";

/// A day's key: 16 random bytes, stored as 32 hex digits.
pub type DayKey = [u8; 16];

/// Seconds in a day.
const DAY_SECONDS: u64 = 86_400;

/// How long a link day's sketch is kept after the day ends: long enough
/// for batches held back through an outage, or still in the stream, to be
/// folded with it; its registers say nothing of any address.
pub const SKETCH_KEPT_AFTER_DAY: Duration = Duration::from_secs(DAY_SECONDS);

/// The Redis key holding day `day`'s key.
pub fn day_key_name(day: i32) -> String {
    format!("tinyurl:visitors:key:{day}")
}

/// The Redis key of the HyperLogLog of `link`'s visitors on `day`.
pub fn sketch_name(day: i32, link: &str) -> String {
    format!("tinyurl:visitors:{day}:{link}")
}

/// Days since the Unix epoch (UTC) of `at`.
pub fn day_of(at: SystemTime) -> i32 {
    let seconds = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    i32::try_from(seconds / DAY_SECONDS).unwrap_or(i32::MAX)
}

/// How long `day` lasts after `now`; `None` once it is over (its key may be
/// gone, and a new one would count the day's visitors again).
pub fn until_day_ends(day: i32, now: SystemTime) -> Option<Duration> {
    let end = UNIX_EPOCH + Duration::from_secs((u64::try_from(day).ok()? + 1) * DAY_SECONDS);
    end.duration_since(now).ok().filter(|left| !left.is_zero())
}

/// `key` as stored.
pub fn encode_day_key(key: &DayKey) -> String {
    let mut hex = String::with_capacity(32);
    for byte in key {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// A stored day key; `None` for anything that is not 32 hex digits.
pub fn decode_day_key(stored: &str) -> Option<DayKey> {
    if stored.len() != 32 || !stored.is_ascii() {
        return None;
    }
    let mut key = [0u8; 16];
    for (index, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&stored[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(key)
}

/// The visit's digest: the same in every redirect process (a fixed key), so
/// a visitor served by two replicas is one visitor. Held in memory only.
pub fn digest(address: IpAddr, user_agent: &[u8], link: &str) -> u64 {
    let mut hasher = SipHasher13::new();
    match address {
        IpAddr::V4(v4) => hasher.write(&v4.to_ipv6_mapped().octets()),
        IpAddr::V6(v6) => hasher.write(&v6.octets()),
    }
    // Lengths first: no two (agent, link) pairs write the same bytes.
    hasher.write_u64(user_agent.len() as u64);
    hasher.write(user_agent);
    hasher.write_u64(link.len() as u64);
    hasher.write(link.as_bytes());
    hasher.finish()
}

/// The visitor hash of `digest` under the day's key.
pub fn visitor_hash(key: &DayKey, digest: u64) -> u64 {
    let mut hasher = SipHasher13::new_with_key(key);
    hasher.write_u64(digest);
    hasher.finish()
}

/// Appends one link day to a [`VISITORS_FIELD`] being built.
pub fn push_link_day(field: &mut String, day: i32, link: &str) {
    let _ = writeln!(field, "{day} {link}");
}

/// The link days of a [`VISITORS_FIELD`]; `None` if any line is malformed
/// (the field is then ignored: the clicks still count).
pub fn parse_link_days(field: &str) -> Option<Vec<(i32, String)>> {
    field
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (day, link) = line.split_once(' ')?;
            let day: i32 = day.parse().ok()?;
            (day >= 0 && crate::domains::is_link_key(link)).then(|| (day, link.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_tell_visitors_apart_and_keys_hide_them() {
        let address: IpAddr = "203.0.113.7".parse().expect("an address");
        let other: IpAddr = "203.0.113.8".parse().expect("an address");
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().expect("an address");
        let one = digest(address, b"Firefox", "abc");
        assert_eq!(one, digest(address, b"Firefox", "abc"));
        assert_eq!(one, digest(mapped, b"Firefox", "abc"));
        assert_ne!(one, digest(other, b"Firefox", "abc"));
        assert_ne!(one, digest(address, b"Chrome", "abc"));
        assert_ne!(one, digest(address, b"Firefox", "abd"));
        assert_ne!(digest(address, b"ab", "c"), digest(address, b"a", "bc"));
        let (today, tomorrow) = ([7u8; 16], [8u8; 16]);
        assert_eq!(visitor_hash(&today, one), visitor_hash(&today, one));
        assert_ne!(visitor_hash(&today, one), visitor_hash(&tomorrow, one));
        assert_eq!(decode_day_key(&encode_day_key(&today)), Some(today));
        for bad in ["", "00", &"g".repeat(32), &"é".repeat(16)] {
            assert_eq!(decode_day_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn days_end_at_utc_midnight() {
        let noon = UNIX_EPOCH + Duration::from_secs(20_000 * DAY_SECONDS + 43_200);
        assert_eq!(day_of(noon), 20_000);
        assert_eq!(
            until_day_ends(20_000, noon),
            Some(Duration::from_secs(43_200))
        );
        assert_eq!(until_day_ends(19_999, noon), None);
        let midnight = UNIX_EPOCH + Duration::from_secs(20_001 * DAY_SECONDS);
        assert_eq!(until_day_ends(20_000, midnight), None);
        assert_eq!(
            until_day_ends(20_001, midnight),
            Some(Duration::from_secs(DAY_SECONDS))
        );
    }

    #[test]
    fn link_days_round_trip_and_refuse_anything_else() {
        let mut field = String::new();
        push_link_day(&mut field, 20_000, "abc");
        push_link_day(&mut field, 20_001, "go.example/sale");
        assert_eq!(
            parse_link_days(&field),
            Some(vec![
                (20_000, "abc".to_owned()),
                (20_001, "go.example/sale".to_owned())
            ])
        );
        assert_eq!(parse_link_days(""), Some(vec![]));
        for bad in ["x abc\n", "-1 abc\n", "20000\n", "20000 a b\n"] {
            assert_eq!(parse_link_days(bad), None, "{bad:?}");
        }
    }
}
