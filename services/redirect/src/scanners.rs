//! Code scanners: a client that asks for many codes that do not exist (random
//! or enumerated) makes every one a Redis read and a database query. Each
//! client address (the peer, or what a trusted proxy says in
//! `X-Forwarded-For`) may cause `TINYURL_SCANNER_404_PER_MINUTE` such misses a
//! minute; past that, its requests for codes not already in this process's
//! cache are answered 429 until the minute ends, with no I/O at all. Codes in
//! the cache are still served, so a real link keeps working even from an
//! address that also scans. The count is per process: a scanner spread over
//! N replicas gets N allowances, still a bound. An IPv6 client counts per
//! /64, the allocation it can pick addresses from.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tinyurl_runtime::proxies::TrustedProxies;

/// Addresses tracked before the map is swept of past minutes; when more
/// than half of them are of this minute, it is cleared instead (their
/// allowances start over), so a sweep is paid for by that many inserts and
/// the map never holds more.
const MAX_TRACKED: usize = 200_000;

pub struct Scanners {
    per_minute: u32,
    proxies: TrustedProxies,
    /// Misses this minute, per client address: (minute, count).
    misses: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

fn minute_now() -> (u64, Duration) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let minute = now.as_secs() / 60;
    let left = Duration::from_secs((minute + 1) * 60).saturating_sub(now);
    (minute, left)
}

impl Scanners {
    pub fn new(per_minute: u32, proxies: TrustedProxies) -> Self {
        Self {
            per_minute,
            proxies,
            misses: Mutex::default(),
        }
    }

    /// The client of a request from `peer` with this `X-Forwarded-For`.
    pub fn client(&self, peer: Option<IpAddr>, forwarded_for: Option<&[u8]>) -> Option<IpAddr> {
        peer.map(|peer| self.proxies.client(peer, forwarded_for))
    }

    /// How long `client` must wait, when it spent this minute's misses.
    pub fn throttled(&self, client: IpAddr) -> Option<Duration> {
        let (minute, left) = minute_now();
        let misses = self
            .misses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match misses.get(&tinyurl_runtime::proxies::limited(client)) {
            Some(&(counted, count)) if counted == minute && count >= self.per_minute => Some(left),
            _ => None,
        }
    }

    /// Counts a code `client` asked for that does not exist.
    pub fn missed(&self, client: IpAddr) {
        let (minute, _) = minute_now();
        let mut misses = self
            .misses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if misses.len() >= MAX_TRACKED {
            misses.retain(|_, (counted, _)| *counted == minute);
            if misses.len() > MAX_TRACKED / 2 {
                misses.clear();
            }
        }
        let entry = misses
            .entry(tinyurl_runtime::proxies::limited(client))
            .or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_past_its_misses_waits_for_the_minute() {
        let scanners = Scanners::new(3, TrustedProxies::default());
        let scanner: IpAddr = "203.0.113.9".parse().expect("address");
        let neighbour: IpAddr = "203.0.113.10".parse().expect("address");
        // A minute boundary between the calls would reset the count; then
        // the last assertion is what a new minute means.
        for _ in 0..3 {
            assert!(scanners.throttled(scanner).is_none());
            scanners.missed(scanner);
        }
        let wait = scanners.throttled(scanner);
        assert!(
            wait.is_none_or(|wait| wait <= Duration::from_secs(60)),
            "{wait:?}"
        );
        assert!(scanners.throttled(neighbour).is_none(), "per address");
    }

    #[test]
    fn ipv6_clients_share_their_64_and_the_map_stays_bounded() {
        let scanners = Scanners::new(2, TrustedProxies::default());
        let first: IpAddr = "2001:db8:7:7::1".parse().expect("address");
        let second: IpAddr = "2001:db8:7:7:ffff::2".parse().expect("address");
        let elsewhere: IpAddr = "2001:db8:7:8::1".parse().expect("address");
        scanners.missed(first);
        scanners.missed(second);
        let (_, left) = minute_now();
        // Unless the minute turned between the misses and here.
        if left > Duration::from_secs(1) {
            assert!(scanners.throttled(first).is_some(), "one allowance per /64");
            assert!(scanners.throttled(second).is_some());
        }
        assert!(scanners.throttled(elsewhere).is_none());

        for n in 0..(MAX_TRACKED as u32 + 50_000) {
            scanners.missed(IpAddr::V4(std::net::Ipv4Addr::from(n)));
        }
        let tracked = scanners
            .misses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len();
        assert!(tracked <= MAX_TRACKED, "{tracked}");
    }
}
