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
use tinyurl_domain::clicks::TrafficClass;

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
    pub class: TrafficClass,
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
            class: TrafficClass::Human,
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

    /// Link previewers and monitors by [`KNOWN_AGENTS`] first (they look
    /// like browsers or crawlers to the datasets); then woothee names the
    /// browser and device and knows the major crawlers, and isbot knows far
    /// more bots and tools (curl, python-requests…), all crawlers here.
    pub fn classify(&self, header: &str) -> ClientClass {
        if let Some((class, name)) = known_agent(header) {
            return ClientClass {
                class,
                browser: name.to_owned(),
                device: "bot",
            };
        }
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
                class: TrafficClass::Crawler,
                browser: token(name),
                device: "bot",
            };
        }
        let Some(parsed) = parsed else {
            return ClientClass {
                class: TrafficClass::Human,
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
            class: TrafficClass::Human,
            browser: token(browser),
            device,
        }
    }
}

/// The version of [`KNOWN_AGENTS`]: the day it was last checked against
/// the previewers' and monitors' published User-Agents.
pub const KNOWN_AGENTS_VERSION: &str = "2026-12-07";

/// Link previewers and monitors, by a piece of their User-Agent (compared
/// without case; `^` : at its start) and the name they are counted under,
/// in the order they are tried: the first match wins, so a User-Agent that
/// names several (Apple's iMessage sends "facebookexternalhit/1.1 Facebot
/// Twitterbot/1.0") is listed before its parts. Apps whose in-app browsers
/// carry the app's name (Snapchat, Line, Slack's and Mattermost's desktop
/// apps) are matched only by their fetcher's own token, so their people stay
/// people. No maintained crate or list tells previewers and monitors from
/// crawlers (isbot and crawler-user-agents call them all bots), so the list
/// is kept here, from the agents' own documentation.
const KNOWN_AGENTS: &[(&str, TrafficClass, &str)] = &[
    // Previewers: a person shared the link in an app, and the app (or the
    // sender's phone) fetched it to draw a card.
    ("facebot twitterbot", TrafficClass::Previewer, "imessage"),
    ("slackbot-linkexpanding", TrafficClass::Previewer, "slack"),
    ("slack-imgproxy", TrafficClass::Previewer, "slack"),
    ("slackbot", TrafficClass::Previewer, "slack"),
    // Telegram says it is "like TwitterBot".
    ("telegrambot", TrafficClass::Previewer, "telegram"),
    ("twitterbot", TrafficClass::Previewer, "x"),
    ("kakaotalk-scrap", TrafficClass::Previewer, "kakaotalk"),
    ("line-poker", TrafficClass::Previewer, "line"),
    ("facebookexternalhit", TrafficClass::Previewer, "facebook"),
    ("facebookcatalog", TrafficClass::Previewer, "facebook"),
    ("linkedinbot", TrafficClass::Previewer, "linkedin"),
    ("discordbot", TrafficClass::Previewer, "discord"),
    ("^whatsapp/", TrafficClass::Previewer, "whatsapp"),
    ("(mastodon/", TrafficClass::Previewer, "mastodon"),
    ("pleroma", TrafficClass::Previewer, "pleroma"),
    ("misskey", TrafficClass::Previewer, "misskey"),
    ("bluesky cardyb", TrafficClass::Previewer, "bluesky"),
    ("skypeuripreview", TrafficClass::Previewer, "teams-skype"),
    ("microsoftpreview", TrafficClass::Previewer, "microsoft"),
    ("pinterestbot", TrafficClass::Previewer, "pinterest"),
    ("^pinterest/", TrafficClass::Previewer, "pinterest"),
    ("redditbot", TrafficClass::Previewer, "reddit"),
    ("vkshare", TrafficClass::Previewer, "vk"),
    ("^tumblr/", TrafficClass::Previewer, "tumblr"),
    ("embedly", TrafficClass::Previewer, "embedly"),
    ("iframely", TrafficClass::Previewer, "iframely"),
    (
        "google-pagerenderer",
        TrafficClass::Previewer,
        "google-chat",
    ),
    ("googledocs", TrafficClass::Previewer, "google-docs"),
    ("yahoo link preview", TrafficClass::Previewer, "yahoo"),
    ("bingpreview", TrafficClass::Previewer, "bing"),
    ("mattermost-bot", TrafficClass::Previewer, "mattermost"),
    (
        "the lounge irc client",
        TrafficClass::Previewer,
        "thelounge",
    ),
    // Monitors and scanners: nobody clicked.
    ("uptimerobot", TrafficClass::Monitor, "uptimerobot"),
    ("pingdom", TrafficClass::Monitor, "pingdom"),
    ("statuscake", TrafficClass::Monitor, "statuscake"),
    ("site24x7", TrafficClass::Monitor, "site24x7"),
    ("better uptime", TrafficClass::Monitor, "better-uptime"),
    ("betterstack", TrafficClass::Monitor, "better-uptime"),
    ("datadog/synthetics", TrafficClass::Monitor, "datadog"),
    ("newrelicpinger", TrafficClass::Monitor, "new-relic"),
    ("checkly", TrafficClass::Monitor, "checkly"),
    (
        "stackdrivermonitoring",
        TrafficClass::Monitor,
        "google-cloud",
    ),
    ("uptime-kuma", TrafficClass::Monitor, "uptime-kuma"),
    ("hetrixtools", TrafficClass::Monitor, "hetrixtools"),
    ("freshping", TrafficClass::Monitor, "freshping"),
    ("catchpoint", TrafficClass::Monitor, "catchpoint"),
    ("zabbix", TrafficClass::Monitor, "zabbix"),
    ("check_http", TrafficClass::Monitor, "nagios"),
    ("blackbox exporter", TrafficClass::Monitor, "prometheus"),
    ("nuclei", TrafficClass::Monitor, "nuclei"),
    ("zgrab", TrafficClass::Monitor, "zgrab"),
    ("masscan", TrafficClass::Monitor, "masscan"),
    ("nmap scripting engine", TrafficClass::Monitor, "nmap"),
    ("sqlmap", TrafficClass::Monitor, "sqlmap"),
    ("wpscan", TrafficClass::Monitor, "wpscan"),
    ("nikto", TrafficClass::Monitor, "nikto"),
    ("censysinspect", TrafficClass::Monitor, "censys"),
    ("expanse", TrafficClass::Monitor, "expanse"),
    (
        "internetmeasurement",
        TrafficClass::Monitor,
        "internetmeasurement",
    ),
    ("l9explore", TrafficClass::Monitor, "leakix"),
];

/// The first of [`KNOWN_AGENTS`] `header` names.
fn known_agent(header: &str) -> Option<(TrafficClass, &'static str)> {
    let lowered = header.to_ascii_lowercase();
    KNOWN_AGENTS
        .iter()
        .find(|(piece, _, _)| match piece.strip_prefix('^') {
            Some(start) => lowered.starts_with(start),
            None => lowered.contains(piece),
        })
        .map(|(_, class, name)| (*class, *name))
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
                (
                    class.class != TrafficClass::Human,
                    class.browser.as_str(),
                    class.device
                ),
                (bot, browser, device),
                "{header:?}"
            );
        }
    }

    /// Real User-Agents (from the agents' documentation and from logs) and
    /// the class each is counted in.
    #[test]
    fn tells_people_previewers_crawlers_and_monitors_apart() {
        use TrafficClass::{Crawler, Human, Monitor, Previewer};
        let agents = Agents::new();
        let cases: &[(&str, TrafficClass, &str)] = &[
            // People, in browsers and in apps' own browsers.
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                Human,
                "chrome",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
                Human,
                "safari",
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
                Human,
                "firefox",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
                Human,
                "edge",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Snapchat/13.16.0.36 (like Safari/8618.3.11.10.5, panda)",
                Human,
                "",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 Line/14.19.1",
                Human,
                "",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Slack/4.41.105 Chrome/130.0.6723.152 Electron/33.2.1 Safari/537.36 AtomShell/33.2.1 Sonic Slack_SSB/4.41.105",
                Human,
                "",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/489.0.0.43.107;FBBV/650000000;FBDV/iPhone14,5;FBMD/iPhone;FBSN/iOS;FBSV/17.6;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5]",
                Human,
                "",
            ),
            // Link previewers.
            (
                "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
                Previewer,
                "slack",
            ),
            (
                "Slack-ImgProxy (+https://api.slack.com/robots)",
                Previewer,
                "slack",
            ),
            ("Twitterbot/1.0", Previewer, "x"),
            (
                "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
                Previewer,
                "facebook",
            ),
            (
                "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
                Previewer,
                "linkedin",
            ),
            (
                "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
                Previewer,
                "discord",
            ),
            ("TelegramBot (like TwitterBot)", Previewer, "telegram"),
            ("WhatsApp/2.23.20.0 A", Previewer, "whatsapp"),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 (KHTML, like Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 Facebot Twitterbot/1.0",
                Previewer,
                "imessage",
            ),
            (
                "http.rb/5.1.1 (Mastodon/4.2.1; +https://mastodon.social/)",
                Previewer,
                "mastodon",
            ),
            (
                "Mozilla/5.0 (compatible; Bluesky Cardyb/1.1; +mailto:support@bsky.app)",
                Previewer,
                "bluesky",
            ),
            (
                "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5 skype-url-preview@microsoft.com",
                Previewer,
                "teams-skype",
            ),
            (
                "Mozilla/5.0 (compatible; redditbot/1.0; +http://www.reddit.com/feedback)",
                Previewer,
                "reddit",
            ),
            (
                "Pinterest/0.2 (+https://www.pinterest.com/bot.html)",
                Previewer,
                "pinterest",
            ),
            (
                "facebookexternalhit/1.1;kakaotalk-scrap/1.0; +https://devtalk.kakao.com/t/scrap/33984",
                Previewer,
                "kakaotalk",
            ),
            ("facebookexternalhit/1.1;line-poker/1.0", Previewer, "line"),
            (
                "Mozilla/5.0 (compatible; Embedly/0.2; +http://support.embed.ly/)",
                Previewer,
                "embedly",
            ),
            (
                "Iframely/1.3.1 (+https://iframely.com/docs/about)",
                Previewer,
                "iframely",
            ),
            ("Mattermost-Bot/1.1", Previewer, "mattermost"),
            // Crawlers and tools.
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                Crawler,
                "googlebot",
            ),
            (
                "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
                Crawler,
                "",
            ),
            (
                "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
                Crawler,
                "",
            ),
            (
                "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
                Crawler,
                "",
            ),
            ("curl/8.5.0", Crawler, "curl"),
            ("python-requests/2.32.3", Crawler, ""),
            ("Go-http-client/1.1", Crawler, ""),
            // Monitors and scanners.
            (
                "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
                Monitor,
                "uptimerobot",
            ),
            (
                "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
                Monitor,
                "pingdom",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 StatusCake",
                Monitor,
                "statuscake",
            ),
            (
                "Better Uptime Bot Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                Monitor,
                "better-uptime",
            ),
            ("Datadog/Synthetics", Monitor, "datadog"),
            (
                "GoogleStackdriverMonitoring-UptimeChecks(https://cloud.google.com/monitoring)",
                Monitor,
                "google-cloud",
            ),
            ("Uptime-Kuma/1.23.16", Monitor, "uptime-kuma"),
            (
                "check_http/v2.3.3 (monitoring-plugins 2.3.3)",
                Monitor,
                "nagios",
            ),
            (
                "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
                Monitor,
                "nmap",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.0.0 Safari/537.36 Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
                Monitor,
                "nuclei",
            ),
            ("Mozilla/5.0 zgrab/0.x", Monitor, "zgrab"),
            (
                "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
                Monitor,
                "censys",
            ),
        ];
        assert!(cases.len() >= 30);
        for (header, class, name) in cases {
            let classified = agents.classify(header);
            assert_eq!(classified.class, *class, "{header:?}");
            if !name.is_empty() {
                assert_eq!(classified.browser, *name, "{header:?}");
            }
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
