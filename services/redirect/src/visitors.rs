//! What a redirect rule asks of a request: the visitor's device, country and
//! preferred language. Only a link with rules asks, so a plain link's
//! redirect never looks its address up.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use axum::http::header::{ACCEPT_LANGUAGE, USER_AGENT};
use tinyurl_domain::Device;
use tinyurl_domain::options::Visit;

use crate::clicks::{Countries, TrustedProxies};

/// The country database and the proxies whose `X-Forwarded-For` is believed,
/// shared by the serving threads (and with the click counter), and the bot
/// patterns a capped link's visits are judged by.
#[derive(Default)]
pub struct Visitors {
    pub countries: Option<Arc<Countries>>,
    pub trusted_proxies: TrustedProxies,
    pub bots: isbot::Bots,
}

impl Visitors {
    /// Whether the request comes from a bot, a link previewer or a tool, by
    /// its `User-Agent` (isbot's patterns; none at all counts as a tool):
    /// asked on the request path only for a capped link.
    pub fn is_bot(&self, headers: &HeaderMap) -> bool {
        match headers.get(USER_AGENT).map(|value| value.to_str()) {
            Some(Ok(agent)) if !agent.trim().is_empty() => self.bots.is_bot(agent),
            _ => true,
        }
    }

    /// The visit `headers` from `peer` (the direct peer) describe.
    pub fn visit<'a>(&self, headers: &'a HeaderMap, peer: Option<IpAddr>) -> Visit<'a> {
        let country = match (&self.countries, peer) {
            (Some(countries), Some(peer)) => {
                let forwarded = headers.get("x-forwarded-for").map(|value| value.as_bytes());
                countries.country(self.trusted_proxies.client(peer, forwarded))
            }
            _ => None,
        };
        Visit {
            device: Device::of(headers.get(USER_AGENT).map(|value| value.as_bytes())),
            country,
            accept_language: headers.get(ACCEPT_LANGUAGE).map(|value| value.as_bytes()),
        }
    }
}
