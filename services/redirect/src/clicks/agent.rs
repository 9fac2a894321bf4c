//! The client class of a click from its User-Agent: bot or not, browser
//! family, device type. Parsing a User-Agent costs tens to hundreds of
//! microseconds (woothee's and isbot's regular expressions), so the request
//! path never parses: it hashes the header and looks the hash up in a cache
//! of classes; an unknown hash is remembered with its header, and the
//! flusher classifies it off the hot path. The header itself never leaves
//! the process.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::{Mutex, RwLock};

use foldhash::fast::FixedState;
use quick_cache::sync::Cache;

/// Bytes of a User-Agent that are hashed and classified; real ones are far
/// shorter, and a longer one is no more informative.
const MAX_AGENT_LEN: usize = 512;
/// Distinct User-Agents remembered for classification between flushes; past
/// it, an unknown one is counted as [`OTHER`].
const MAX_PENDING: usize = 4096;
/// Classes remembered per process, by User-Agent hash.
const CACHED_AGENTS: usize = 65_536;

/// The class id of anything that could not be classified.
pub const OTHER: u32 = 0;

/// What is kept of a User-Agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientClass {
    pub bot: bool,
    /// Browser family (`chrome`, `safari`…) or, for a bot, the bot's name
    /// (`googlebot`, `curl`…); from the parsers' fixed datasets, so bounded.
    pub browser: String,
    /// `desktop`, `mobile`, `tablet`, `bot` or `other`.
    pub device: &'static str,
}

/// How a request's User-Agent is counted until it is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentKey {
    Class(u32),
    /// Not classified yet: the hash of the header, resolved at flush time.
    Pending(u64),
}

pub struct Agents {
    hasher: FixedState,
    by_hash: Cache<u64, u32>,
    pending: Mutex<HashMap<u64, Box<str>>>,
    /// Class ids index this; ids are never reused, so a cached id stays valid.
    classes: RwLock<Classes>,
    parser: woothee::parser::Parser,
    bots: isbot::Bots,
}

struct Classes {
    list: Vec<ClientClass>,
    ids: HashMap<ClientClass, u32>,
}

impl Agents {
    pub fn new() -> Self {
        let other = ClientClass {
            bot: false,
            browser: "other".to_owned(),
            device: "other",
        };
        Self {
            hasher: FixedState::default(),
            by_hash: Cache::new(CACHED_AGENTS),
            pending: Mutex::new(HashMap::new()),
            classes: RwLock::new(Classes {
                ids: HashMap::from([(other.clone(), OTHER)]),
                list: vec![other],
            }),
            parser: woothee::parser::Parser::new(),
            bots: isbot::Bots::default(),
        }
    }

    /// The request path's part: a hash and a cache lookup.
    pub fn key(&self, header: Option<&[u8]>) -> AgentKey {
        let header = header.unwrap_or_default();
        let header = &header[..header.len().min(MAX_AGENT_LEN)];
        let hash = self.hasher.hash_one(header);
        if let Some(class) = self.by_hash.get(&hash) {
            return AgentKey::Class(class);
        }
        let Ok(mut pending) = self.pending.lock() else {
            return AgentKey::Class(OTHER);
        };
        if pending.contains_key(&hash) {
            return AgentKey::Pending(hash);
        }
        if pending.len() >= MAX_PENDING {
            return AgentKey::Class(OTHER);
        }
        pending.insert(hash, String::from_utf8_lossy(header).into());
        AgentKey::Pending(hash)
    }

    /// Classifies every User-Agent seen since the last call (the flusher's
    /// part, off the request path).
    pub fn classify_pending(&self) {
        let pending = match self.pending.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return,
        };
        for (hash, header) in pending {
            let class = self.classify(&header);
            let id = self.intern(class);
            self.by_hash.insert(hash, id);
        }
    }

    /// The class a key stands for; [`OTHER`]'s for a hash that was never
    /// classified (the pending set was full).
    pub fn class(&self, key: AgentKey) -> ClientClass {
        let id = match key {
            AgentKey::Class(id) => id,
            AgentKey::Pending(hash) => self.by_hash.get(&hash).unwrap_or(OTHER),
        };
        let classes = match self.classes.read() {
            Ok(classes) => classes,
            Err(poisoned) => poisoned.into_inner(),
        };
        classes
            .list
            .get(id as usize)
            .unwrap_or(&classes.list[OTHER as usize])
            .clone()
    }

    fn intern(&self, class: ClientClass) -> u32 {
        let mut classes = match self.classes.write() {
            Ok(classes) => classes,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(id) = classes.ids.get(&class) {
            return *id;
        }
        let Ok(id) = u32::try_from(classes.list.len()) else {
            return OTHER;
        };
        classes.list.push(class.clone());
        classes.ids.insert(class, id);
        id
    }

    /// woothee names the browser and device and knows the major crawlers;
    /// isbot knows far more bots and tools (curl, python-requests…).
    pub fn classify(&self, header: &str) -> ClientClass {
        let parsed = self.parser.parse(header);
        let category = parsed.as_ref().map_or("UNKNOWN", |parsed| parsed.category);
        let is_bot = category == "crawler" || self.bots.is_bot(header);
        if is_bot {
            let name = match &parsed {
                Some(parsed) if category == "crawler" => parsed.name,
                // woothee's "HTTP Library" names the tool in `version`.
                Some(parsed) if parsed.name == "HTTP Library" => parsed.version,
                _ => "other",
            };
            return ClientClass {
                bot: true,
                browser: token(name),
                device: "bot",
            };
        }
        let Some(parsed) = parsed else {
            return ClientClass {
                bot: false,
                browser: "other".to_owned(),
                device: "other",
            };
        };
        let device = match (category, parsed.os) {
            ("smartphone", "iPad") => "tablet",
            ("smartphone" | "mobilephone", _) => "mobile",
            ("pc", _) => "desktop",
            _ => "other",
        };
        let browser = match parsed.name {
            "UNKNOWN" => "other",
            name => name,
        };
        ClientClass {
            bot: false,
            browser: token(browser),
            device,
        }
    }
}

impl Default for Agents {
    fn default() -> Self {
        Self::new()
    }
}

/// A dataset name as a dimension token: lowercase, spaces as `-`, only the
/// characters click batches allow.
fn token(name: &str) -> String {
    let token: String = name
        .chars()
        .map(|character| match character {
            ' ' => '-',
            other => other.to_ascii_lowercase(),
        })
        .filter(|character| character.is_ascii_alphanumeric() || "-_.".contains(*character))
        .take(tinyurl_domain::clicks::MAX_VALUE_LEN)
        .collect();
    if token.is_empty() {
        "other".to_owned()
    } else {
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_bots_browsers_and_devices() {
        let agents = Agents::new();
        let cases = [
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                (true, "googlebot", "bot"),
            ),
            ("curl/8.5.0", (true, "curl", "bot")),
            ("python-requests/2.31", (true, "other", "bot")),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                (false, "chrome", "desktop"),
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
                (false, "safari", "mobile"),
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
                (false, "safari", "tablet"),
            ),
            ("", (false, "other", "other")),
        ];
        for (header, (bot, browser, device)) in cases {
            let class = agents.classify(header);
            assert_eq!(
                (class.bot, class.browser.as_str(), class.device),
                (bot, browser, device),
                "{header:?}"
            );
        }
    }

    #[test]
    fn the_request_path_defers_and_then_hits() {
        let agents = Agents::new();
        let header = Some(&b"curl/8.5.0"[..]);
        let first = agents.key(header);
        assert!(matches!(first, AgentKey::Pending(_)));
        assert_eq!(agents.key(header), first, "one pending entry per agent");
        agents.classify_pending();
        assert_eq!(agents.class(first).browser, "curl");
        let AgentKey::Class(id) = agents.key(header) else {
            panic!("classified agents are cached");
        };
        assert_eq!(agents.class(AgentKey::Class(id)).browser, "curl");
    }
}
