//! What a caller asks of the link service, independent of the transport
//! (gRPC or REST) it arrived on, and the checks every transport shares. The
//! transports only decode their wire types into these; every rule about what
//! a link may be lives here or in the domain crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tinyurl_domain::options::{MAX_CONDITION_VALUES, MAX_RULES, MAX_UTM_LEN, MAX_VISITS};
use tinyurl_domain::{
    Alias, Device, LinkOptions, RedirectRule, RedirectStatus, TargetPolicy, TargetUrl, Utm,
};

use crate::error::WriterError;

/// Most links in one batch create.
pub const MAX_BATCH: usize = 1_000;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// Most links in one page of a listing.
pub const MAX_PAGE_SIZE: u32 = 1_000;
/// Links in a page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Most tags on one link.
pub const MAX_TAGS: usize = 20;
/// Longest tag, in characters.
pub const MAX_TAG_LEN: usize = 50;
/// Furthest accepted expiry.
const MAX_EXPIRY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A create as the caller asked for it, before validation.
#[derive(Debug, Clone, Default)]
pub struct CreateInput {
    pub target_url: String,
    pub alias: Option<String>,
    pub expires_at: Option<SystemTime>,
    /// `None`: the default (302).
    pub redirect_status: Option<RedirectStatus>,
    pub forward_query: bool,
    pub idempotency_key: Option<String>,
    /// As typed; [`tags`] makes them what is stored.
    pub tags: Vec<String>,
    /// As typed; [`utm`] makes them what is stored.
    pub utm: Utm,
    /// As typed; [`rules`] makes them what is stored.
    pub rules: Vec<RuleInput>,
    /// Human visits the link redirects before it answers 410.
    pub max_visits: Option<u64>,
    /// The password that must be given before the link redirects.
    pub password: Option<String>,
    /// The registered domain the link is made on; `None`: the default one.
    pub domain: Option<String>,
}

/// A redirect rule as the caller typed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleInput {
    /// `ios`, `android`, `desktop`.
    pub devices: Vec<String>,
    /// ISO 3166-1 alpha-2 codes, any case.
    pub countries: Vec<String>,
    /// Language ranges (`en`, `pt-BR`).
    pub languages: Vec<String>,
    pub target_url: String,
}

impl RuleInput {
    /// A rule as one line of text, the command line's and the console's
    /// form: `device=ios,android country=DE,AT lang=de TARGET`, conditions
    /// space-separated (values comma-separated), the target last. Only the
    /// shape is checked here; [`rules`] checks the values.
    pub fn parse_line(text: &str) -> Result<Self, String> {
        let mut rule = Self::default();
        let mut words: Vec<&str> = text.split_whitespace().collect();
        let target = words
            .pop()
            .ok_or("a rule is its conditions and then its target")?;
        if target.contains('=') && !target.contains("://") {
            return Err(format!("a rule ends with its target URL, not {target:?}"));
        }
        rule.target_url = target.to_owned();
        for word in words {
            let (name, values) = word
                .split_once('=')
                .ok_or_else(|| format!("{word:?} is not a condition (device=, country=, lang=)"))?;
            let values = values
                .split(',')
                .filter(|value| !value.is_empty())
                .map(str::to_owned);
            match name {
                "device" | "devices" => rule.devices.extend(values),
                "country" | "countries" => rule.countries.extend(values),
                "lang" | "language" | "languages" => rule.languages.extend(values),
                other => {
                    return Err(format!(
                        "{other:?} is not a condition (device, country, lang)"
                    ));
                }
            }
        }
        if rule.devices.is_empty() && rule.countries.is_empty() && rule.languages.is_empty() {
            return Err("a rule needs a condition: device=, country= or lang=".to_owned());
        }
        Ok(rule)
    }

    /// The rule as [`Self::parse_line`] reads it.
    pub fn to_line(&self) -> String {
        let mut words = Vec::new();
        for (name, values) in [
            ("device", &self.devices),
            ("country", &self.countries),
            ("lang", &self.languages),
        ] {
            if !values.is_empty() {
                words.push(format!("{name}={}", values.join(",")));
            }
        }
        words.push(self.target_url.clone());
        words.join(" ")
    }
}

impl From<&RedirectRule> for RuleInput {
    fn from(rule: &RedirectRule) -> Self {
        Self {
            devices: rule
                .devices
                .iter()
                .map(|device| device.name().to_owned())
                .collect(),
            countries: rule.countries.clone(),
            languages: rule.languages.clone(),
            target_url: rule.target_url.clone(),
        }
    }
}

/// A digest of a create request's parameters ([`ValidCreate::fingerprint`]),
/// stored with its idempotency key.
pub type Fingerprint = [u8; 16];

/// A create that passed validation.
#[derive(Debug, Clone)]
pub struct ValidCreate {
    pub target: TargetUrl,
    pub alias: Option<Alias>,
    pub expires_at: Option<SystemTime>,
    pub redirect_status: RedirectStatus,
    pub forward_query: bool,
    pub idempotency_key: Option<String>,
    /// Valid, sorted, without repeats.
    pub tags: Vec<String>,
    /// Valid UTM fields and rules.
    pub options: LinkOptions,
    /// A valid password; [`NewPassword::derive`] turns it into its key
    /// before the link is stored.
    pub password: Option<NewPassword>,
    /// The domain's normalized host (the service checks it is registered);
    /// `None`: the default domain.
    pub domain: Option<String>,
}

/// A link's new password: as typed until its key is derived (off the
/// request threads), then only the key and its salt.
#[derive(Clone)]
pub enum NewPassword {
    Typed(String),
    Derived {
        key: tinyurl_domain::protect::Key,
        salt: [u8; tinyurl_domain::protect::SALT_LEN],
    },
}

impl std::fmt::Debug for NewPassword {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("NewPassword(…)")
    }
}

impl NewPassword {
    /// Derives the key of a typed password with a new random salt: one
    /// Argon2id, on the blocking pool.
    pub async fn derive(self) -> Result<Self, WriterError> {
        let Self::Typed(password) = self else {
            return Ok(self);
        };
        let salt: [u8; tinyurl_domain::protect::SALT_LEN] = rand::random();
        let key = tokio::task::spawn_blocking(move || {
            tinyurl_domain::protect::Key::derive(
                &password,
                tinyurl_domain::protect::DEFAULT_COST,
                &salt,
            )
        })
        .await
        .map_err(|error| WriterError::Unexpected(anyhow::anyhow!("password hashing: {error}")))?
        .map_err(|error| WriterError::Unexpected(anyhow::anyhow!("{error}")))?;
        Ok(Self::Derived { key, salt })
    }

    /// The stored password of link `code` (not yet sealed): `None` before
    /// [`Self::derive`].
    pub fn stored(
        &self,
        code: &str,
        link_secret: &tinyurl_domain::protect::Key,
    ) -> Option<tinyurl_domain::protect::Password> {
        let Self::Derived { key, salt } = self else {
            return None;
        };
        Some(tinyurl_domain::protect::Password::new(
            key,
            *salt,
            code,
            link_secret,
            rand::random(),
        ))
    }
}

/// Changes to a link; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UpdateInput {
    pub target_url: Option<String>,
    /// `Some(None)` removes the expiry.
    pub expires_at: Option<Option<SystemTime>>,
    pub redirect_status: Option<RedirectStatus>,
    pub enabled: Option<bool>,
    pub forward_query: Option<bool>,
    /// The tags from now on, as typed (`Some(vec![])` removes them all).
    pub tags: Option<Vec<String>>,
    /// The UTM fields from now on (all empty removes them).
    pub utm: Option<Utm>,
    /// The redirect rules from now on (`Some(vec![])` removes them).
    pub rules: Option<Vec<RuleInput>>,
    /// `Some(None)` removes the cap.
    pub max_visits: Option<Option<u64>>,
    /// A new password (`Some(None)` removes the password).
    pub password: Option<Option<String>>,
}

/// A listing page request.
#[derive(Debug, Clone, Default)]
pub struct ListInput {
    pub page_size: Option<u32>,
    pub page_token: Option<String>,
    /// Only the links with this tag.
    pub tag: Option<String>,
}

#[tracing::instrument(name = "validate", skip_all)]
pub fn validate_create(
    input: CreateInput,
    policy: &TargetPolicy,
) -> Result<ValidCreate, WriterError> {
    let target = TargetUrl::parse(&input.target_url, policy)
        .map_err(|error| WriterError::invalid("target_url", error.to_string()))?;
    let alias = input
        .alias
        .filter(|alias| !alias.is_empty())
        .map(|alias| {
            Alias::parse(&alias).map_err(|error| WriterError::invalid("alias", error.to_string()))
        })
        .transpose()?;
    let expires_at = input
        .expires_at
        .map(|at| check_expiry(at, "expires_at"))
        .transpose()?;
    let idempotency_key = input
        .idempotency_key
        .filter(|key| !key.is_empty())
        .map(idempotency_key)
        .transpose()?;
    Ok(ValidCreate {
        target,
        alias,
        expires_at,
        redirect_status: input.redirect_status.unwrap_or_default(),
        forward_query: input.forward_query,
        idempotency_key,
        tags: tags(&input.tags)?,
        options: LinkOptions {
            utm: utm(input.utm)?,
            rules: rules(&input.rules, policy)?,
            max_visits: input.max_visits.map(max_visits).transpose()?,
            password: None,
        },
        password: input
            .password
            .map(|typed| password(typed).map(NewPassword::Typed))
            .transpose()?,
        domain: input
            .domain
            .filter(|raw| !raw.trim().is_empty())
            .map(|raw| domain(&raw))
            .transpose()?,
    })
}

impl ValidCreate {
    /// A digest of everything the create asks for, stored with its
    /// idempotency key: a retry with the key must ask for the same link, or
    /// it is refused rather than answered with a link it did not ask for.
    pub fn fingerprint(&self) -> Fingerprint {
        use sha2::Digest as _;
        let expires = self.expires_at.map_or(-1, |at| {
            at.duration_since(UNIX_EPOCH).map_or(0, |since| {
                i128::try_from(since.as_micros()).unwrap_or(i128::MAX)
            })
        });
        let mut digest = sha2::Sha256::new();
        // Length-prefixed, so no two requests run together alike.
        for part in [
            self.target.as_str().as_bytes(),
            self.alias
                .as_ref()
                .map_or(&b""[..], |alias| alias.as_str().as_bytes()),
        ] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part);
        }
        digest.update([u8::from(self.alias.is_some()), u8::from(self.forward_query)]);
        digest.update(self.redirect_status.column().to_le_bytes());
        digest.update(expires.to_le_bytes());
        // Only when there are tags, so the keys stored before tags were
        // keep their fingerprints.
        for tag in &self.tags {
            digest.update((tag.len() as u64).to_le_bytes());
            digest.update(tag.as_bytes());
        }
        // Likewise only when there are options; tagged so they cannot be
        // confused with a tag.
        if let Some(options) = self.options.to_stored() {
            digest.update(b"\0options");
            digest.update((options.len() as u64).to_le_bytes());
            digest.update(options.as_bytes());
        }
        // That there is a password, not a digest of it: a fast hash of a
        // password stored beside its link would undo Argon2id's cost.
        if self.password.is_some() {
            digest.update(b"\0password");
        }
        if let Some(domain) = &self.domain {
            digest.update(b"\0domain");
            digest.update((domain.len() as u64).to_le_bytes());
            digest.update(domain.as_bytes());
        }
        let mut fingerprint = [0; 16];
        fingerprint.copy_from_slice(&digest.finalize()[..16]);
        fingerprint
    }
}

fn idempotency_key(key: String) -> Result<String, WriterError> {
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(WriterError::invalid(
            "idempotency_key",
            format!(
                "idempotency_key is {} bytes; at most {MAX_IDEMPOTENCY_KEY_LEN} allowed",
                key.len()
            ),
        ));
    }
    if !key.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(WriterError::invalid(
            "idempotency_key",
            "idempotency_key must be printable ASCII without spaces",
        ));
    }
    Ok(key)
}

/// One tag as stored: trimmed, runs of whitespace made one space,
/// lowercase (so `Spring Sale` and `spring  sale` are one tag), 1 to
/// [`MAX_TAG_LEN`] characters of letters, digits, spaces and `-_.:/+#@`
/// (no commas: the CLI and CSV files separate tags with them). `field` names
/// where it came from in the error.
pub fn tag(raw: &str, field: &'static str) -> Result<String, WriterError> {
    let tag = raw
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    if tag.is_empty() {
        return Err(WriterError::invalid(field, "a tag must not be empty"));
    }
    let length = tag.chars().count();
    if length > MAX_TAG_LEN {
        return Err(WriterError::invalid(
            field,
            format!("tag {tag:?} is {length} characters; at most {MAX_TAG_LEN} allowed"),
        ));
    }
    if let Some(refused) = tag
        .chars()
        .find(|&character| !(character.is_alphanumeric() || " -_.:/+#@".contains(character)))
    {
        return Err(WriterError::invalid(
            field,
            format!(
                "tag {tag:?} contains {refused:?}; tags hold letters, digits, spaces and -_.:/+#@"
            ),
        ));
    }
    Ok(tag)
}

/// A link's tags as stored: each as [`tag`] makes it, repeats dropped,
/// sorted, at most [`MAX_TAGS`].
pub fn tags(raw: &[String]) -> Result<Vec<String>, WriterError> {
    let mut tags = raw
        .iter()
        .map(|raw| tag(raw, "tags"))
        .collect::<Result<Vec<_>, _>>()?;
    tags.sort();
    tags.dedup();
    if tags.len() > MAX_TAGS {
        return Err(WriterError::invalid(
            "tags",
            format!("{} tags; at most {MAX_TAGS} on a link", tags.len()),
        ));
    }
    Ok(tags)
}

/// A link password: [`MIN_PASSWORD_CHARS`] to [`MAX_PASSWORD_CHARS`]
/// characters, no control characters (a form could not send them back).
pub fn password(typed: String) -> Result<String, WriterError> {
    use tinyurl_domain::protect::{MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
    let refuse = |reason: String| Err(WriterError::invalid("password", reason));
    let chars = typed.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        return refuse(format!(
            "a link password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters, got {chars}"
        ));
    }
    if typed.chars().any(char::is_control) {
        return refuse("a link password cannot contain control characters".to_owned());
    }
    Ok(typed)
}

/// A visit cap: 1 to [`MAX_VISITS`].
pub fn max_visits(cap: u64) -> Result<u64, WriterError> {
    if !(1..=MAX_VISITS).contains(&cap) {
        return Err(WriterError::invalid(
            "max_visits",
            format!("max_visits must be 1 to {MAX_VISITS}, got {cap}"),
        ));
    }
    Ok(cap)
}

/// UTM fields as stored: trimmed, an empty one unset, each at most
/// [`MAX_UTM_LEN`] characters without control characters.
pub fn utm(raw: Utm) -> Result<Utm, WriterError> {
    let field = |value: Option<String>, name: &str| -> Result<Option<String>, WriterError> {
        let Some(value) = value.map(|value| value.trim().to_owned()) else {
            return Ok(None);
        };
        if value.is_empty() {
            return Ok(None);
        }
        let length = value.chars().count();
        if length > MAX_UTM_LEN {
            return Err(WriterError::invalid(
                "utm",
                format!("utm {name} is {length} characters; at most {MAX_UTM_LEN} allowed"),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(WriterError::invalid(
                "utm",
                format!("utm {name} contains a control character"),
            ));
        }
        Ok(Some(value))
    };
    Ok(Utm {
        source: field(raw.source, "source")?,
        medium: field(raw.medium, "medium")?,
        campaign: field(raw.campaign, "campaign")?,
        term: field(raw.term, "term")?,
        content: field(raw.content, "content")?,
    })
}

/// Redirect rules as stored, in the order given: at most [`MAX_RULES`],
/// each with at least one condition and a target that passes the same
/// checks as a link's. Devices are `ios`, `android` or `desktop`;
/// countries ISO 3166-1 alpha-2 (kept upper case); languages BCP 47 ranges
/// (`en`, `pt-BR`; kept lower case); repeats dropped, at most
/// [`MAX_CONDITION_VALUES`] of each.
pub fn rules(raw: &[RuleInput], policy: &TargetPolicy) -> Result<Vec<RedirectRule>, WriterError> {
    if raw.len() > MAX_RULES {
        return Err(WriterError::invalid(
            "rules",
            format!("{} rules; at most {MAX_RULES} on a link", raw.len()),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(index, rule)| {
            let number = index + 1;
            let refuse = |message: String| {
                WriterError::invalid("rules", format!("rule {number}: {message}"))
            };
            let bounded = |kind: &str, count: usize| {
                if count > MAX_CONDITION_VALUES {
                    Err(refuse(format!(
                        "{count} {kind}; at most {MAX_CONDITION_VALUES}"
                    )))
                } else {
                    Ok(())
                }
            };
            bounded("devices", rule.devices.len())?;
            bounded("countries", rule.countries.len())?;
            bounded("languages", rule.languages.len())?;
            let mut devices = Vec::new();
            for name in &rule.devices {
                let device = Device::parse(name).ok_or_else(|| {
                    refuse(format!(
                        "device {name:?} is not one of ios, android, desktop"
                    ))
                })?;
                if !devices.contains(&device) {
                    devices.push(device);
                }
            }
            let mut countries = Vec::new();
            for name in &rule.countries {
                let country = name.trim().to_ascii_uppercase();
                if country.len() != 2 || !country.bytes().all(|byte| byte.is_ascii_uppercase()) {
                    return Err(refuse(format!(
                        "country {name:?} is not an ISO 3166-1 alpha-2 code (two letters, like DE)"
                    )));
                }
                if !countries.contains(&country) {
                    countries.push(country);
                }
            }
            let mut languages = Vec::new();
            for name in &rule.languages {
                let language = name.trim().to_ascii_lowercase();
                if !is_language_range(&language) {
                    return Err(refuse(format!(
                        "language {name:?} is not a language tag (like en or pt-BR)"
                    )));
                }
                if !languages.contains(&language) {
                    languages.push(language);
                }
            }
            let target = TargetUrl::parse(&rule.target_url, policy)
                .map_err(|error| refuse(format!("target_url: {error}")))?;
            let rule = RedirectRule {
                devices,
                countries,
                languages,
                target_url: target.as_str().to_owned(),
            };
            if !rule.has_condition() {
                return Err(refuse(
                    "a rule needs a condition (devices, countries or languages); \
                     the link's own target answers everyone else"
                        .to_owned(),
                ));
            }
            Ok(rule)
        })
        .collect()
}

/// A lower-case BCP 47 tag's shape: a 2–3 letter language, then subtags of
/// 1–8 letters or digits.
fn is_language_range(range: &str) -> bool {
    let mut subtags = range.split('-');
    let primary = subtags.next().unwrap_or_default();
    (2..=3).contains(&primary.len())
        && primary.bytes().all(|byte| byte.is_ascii_lowercase())
        && subtags.all(|subtag| {
            (1..=8).contains(&subtag.len())
                && subtag
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit())
        })
}

/// An expiry in the future and within 100 years, rounded to the
/// microseconds the stores keep, so what is returned is what is stored.
pub fn check_expiry(at: SystemTime, field: &'static str) -> Result<SystemTime, WriterError> {
    let now = SystemTime::now();
    if at <= now {
        return Err(WriterError::invalid(
            field,
            format!("{field} must be in the future"),
        ));
    }
    if at > now + MAX_EXPIRY {
        return Err(WriterError::invalid(
            field,
            format!("{field} must be within 100 years"),
        ));
    }
    let micros = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros());
    Ok(UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX)))
}

/// A code or alias as a caller names it: anything a link could have, by
/// the one definition the redirect service screens paths with too.
pub fn code_argument(code: &str) -> Result<&str, WriterError> {
    // A link on another domain than the default is named `{host}/{code}`.
    let (host, bare) = tinyurl_domain::domains::split_key(code);
    if !tinyurl_domain::is_link_shaped(bare) {
        return Err(WriterError::invalid(
            "code",
            "code must be 3 to 64 of A-Z, a-z, 0-9, '_' and '-', starting with a letter or digit \
             (a link on another domain: host/code)",
        ));
    }
    if let Some(host) = host
        && tinyurl_domain::domains::normalize_host(host).as_deref() != Ok(host)
    {
        return Err(WriterError::invalid(
            "code",
            format!("{host:?} is not a domain's host name (lower case, without a port)"),
        ));
    }
    Ok(code)
}

/// A domain a link is made on: a normalized host name.
pub fn domain(raw: &str) -> Result<String, WriterError> {
    tinyurl_domain::domains::normalize_host(raw)
        .map_err(|reason| WriterError::invalid("domain", reason))
}

/// The page size asked for, within bounds.
pub fn page_size(requested: Option<u32>) -> Result<i64, WriterError> {
    match requested {
        None | Some(0) => Ok(i64::from(DEFAULT_PAGE_SIZE)),
        Some(size @ 1..=MAX_PAGE_SIZE) => Ok(i64::from(size)),
        Some(size) => Err(WriterError::invalid(
            "page_size",
            format!("page_size {size} is above {MAX_PAGE_SIZE}"),
        )),
    }
}

/// 9999-12-31T23:59:59.999999Z, in microseconds since the epoch.
const LAST_MICROS: u64 = 253_402_300_799_999_999;

/// `<created_at micros since epoch>.<code>`; codes never contain a '.'.
pub fn page_token(created_at: SystemTime, code: &str) -> String {
    let micros = created_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros());
    format!("{micros}.{code}")
}

pub fn parse_page_token(token: &str) -> Result<(SystemTime, String), WriterError> {
    let invalid = || WriterError::invalid("page_token", "page_token is not one this server issued");
    let (micros, code) = token.split_once('.').ok_or_else(invalid)?;
    let micros: u64 = micros.parse().map_err(|_| invalid())?;
    // Past what a store can hold (Postgres ends in year 294276; no link is
    // created after 9999): only a forged token says so.
    if micros > LAST_MICROS {
        return Err(invalid());
    }
    code_argument(code).map_err(|_| invalid())?;
    Ok((UNIX_EPOCH + Duration::from_micros(micros), code.to_owned()))
}

/// `c<clicks>.<created_at micros>.<code>`: where a most-clicked-first page
/// ended.
pub fn clicks_page_token(clicks: i64, created_at: SystemTime, code: &str) -> String {
    format!("c{clicks}.{}", page_token(created_at, code))
}

pub fn parse_clicks_page_token(token: &str) -> Result<(i64, SystemTime, String), WriterError> {
    let invalid = || WriterError::invalid("page_token", "page_token is not one this server issued");
    let (clicks, rest) = token
        .strip_prefix('c')
        .and_then(|rest| rest.split_once('.'))
        .ok_or_else(invalid)?;
    let clicks: i64 = clicks.parse().map_err(|_| invalid())?;
    if clicks < 0 {
        return Err(invalid());
    }
    let (created_at, code) = parse_page_token(rest)?;
    Ok((clicks, created_at, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_lines_round_trip_and_malformed_ones_are_refused() {
        let line = "device=ios,android country=DE lang=de,fr-ca https://example.com/a?b=c";
        let rule = RuleInput::parse_line(&format!("  {line} ")).unwrap_or_default();
        assert_eq!(rule.devices, ["ios", "android"]);
        assert_eq!(rule.countries, ["DE"]);
        assert_eq!(rule.languages, ["de", "fr-ca"]);
        assert_eq!(rule.target_url, "https://example.com/a?b=c");
        assert_eq!(rule.to_line(), line);
        for bad in [
            "",
            "https://example.com/",
            "device=ios",
            "colour=red https://example.com/",
            "ios https://example.com/",
        ] {
            assert!(RuleInput::parse_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn clicks_page_tokens_round_trip_and_foreign_ones_are_refused() {
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        for code in ["abc_D-9", "go.example/sale"] {
            let token = clicks_page_token(42, at, code);
            assert_eq!(
                parse_clicks_page_token(&token).ok(),
                Some((42, at, code.to_owned()))
            );
        }
        for bad in [
            "",
            "42.1.abc",
            "c.1.abc",
            "c-1.1.abc",
            "cx.1.abc",
            "c1.1.a b",
            "c1.1.",
            "c1.abc",
            "c1.x.abc",
        ] {
            assert!(parse_clicks_page_token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn page_tokens_round_trip_and_foreign_ones_are_refused() {
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let token = page_token(at, "abc_D-9");
        assert_eq!(
            parse_page_token(&token).ok(),
            Some((at, "abc_D-9".to_owned()))
        );
        for bad in [
            "",
            "abc",
            "12.",
            ".abc",
            "x.abc",
            "12.a.b",
            "12.a b",
            "253402300800000000.abc",
            "18446744073709551615.abc",
        ] {
            assert!(parse_page_token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size(None).ok(), Some(100));
        assert_eq!(page_size(Some(0)).ok(), Some(100));
        assert_eq!(page_size(Some(1000)).ok(), Some(1000));
        assert!(page_size(Some(1001)).is_err());
    }

    #[test]
    fn expiry_must_be_future_and_is_rounded_to_micros() {
        let soon = SystemTime::now() + Duration::from_secs(60) + Duration::from_nanos(789);
        let kept = check_expiry(soon, "expires_at").ok();
        assert!(kept.is_some_and(|kept| kept <= soon && soon - Duration::from_micros(1) < kept));
        assert!(check_expiry(SystemTime::now() - Duration::from_secs(1), "expires_at").is_err());
        assert!(check_expiry(SystemTime::now() + MAX_EXPIRY * 2, "expires_at").is_err());
    }
}
