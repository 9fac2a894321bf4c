//! Any string: URL validation never panics, and an accepted URL is within the
//! limits, free of whitespace and control characters, http(s), and accepted
//! again unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinyurl_domain::target::MAX_TARGET_URL_LEN;
use tinyurl_domain::{TargetPolicy, TargetUrl};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let policy = TargetPolicy {
        own_host: Some("sho.rt".to_owned()),
        blocked_hosts: vec!["evil.example".to_owned()],
        allow_private_addresses: false,
    };
    if let Ok(url) = TargetUrl::parse(text, &policy) {
        let stored = url.as_str();
        assert!(stored.len() <= MAX_TARGET_URL_LEN);
        assert!(stored.starts_with("http://") || stored.starts_with("https://"));
        assert!(!stored.chars().any(|c| c.is_whitespace() || c.is_control()));
        let again = TargetUrl::parse(stored, &policy).expect("a normalised URL is accepted again");
        assert_eq!(again.as_str(), stored);
    }
});
