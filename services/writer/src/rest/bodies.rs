//! The JSON bodies of the REST API and their conversions to and from the
//! link service's types.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize};
use tinyurl_domain::RedirectStatus;
use utoipa::{IntoParams, ToSchema};

use super::Problem;
use tinyurl_analytics::{Granularity, LinkStats};
use tinyurl_links::LinkService;
use tinyurl_links::error::WriterError;
use tinyurl_links::store::StoredLink;

/// A link.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkBody {
    /// The short code: minted, or the alias; the link's path on its domain.
    #[schema(example = "4kPq9xZ")]
    pub code: String,
    /// The registered domain the link is on; null: the default domain. The
    /// link's path in this API is then `{domain}%2F{code}`.
    #[schema(example = json!(null))]
    pub domain: Option<String>,
    #[schema(example = "https://sho.rt/4kPq9xZ")]
    pub short_url: String,
    #[schema(example = "https://example.com/some/long/path")]
    pub target_url: String,
    /// The status the redirect answers with: 301, 302, 307 or 308.
    #[schema(example = 302)]
    pub redirect_type: u16,
    /// Whether the short URL's query string is appended to the target.
    pub forward_query: bool,
    /// When the link stops redirecting (RFC 3339, UTC); null: never.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    pub enabled: bool,
    pub is_alias: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Blocked by an operator because of its target's host: it answers 410
    /// whatever `enabled` says, and may only be deleted.
    pub blocked: bool,
    /// Sorted, lowercase.
    #[schema(example = json!(["newsletter", "spring sale"]))]
    pub tags: Vec<String>,
    /// Null when the link sets no UTM field.
    pub utm: Option<UtmBody>,
    /// In order: the first a visit meets answers it.
    pub rules: Vec<RuleBody>,
    /// Null when the link has no visit cap.
    pub max_visits: Option<u64>,
    /// Visitors must give a password before the link redirects (the
    /// password itself is never returned).
    pub password_protected: bool,
    /// For a capped link read on its own (`GET /api/v1/links/{code}`), the
    /// visits it has used so far, as the redirects count them; absent
    /// elsewhere, or when the count cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visits_used: Option<u64>,
}

/// UTM parameters merged into the query of whichever target a visit goes
/// to (the link's or a rule's): a parameter of the same name already in
/// that target is replaced, and when the link forwards query strings the
/// visitor's own `utm_*` parameters of the names set here are not
/// forwarded. Each at most 200 characters, trimmed; empty or null is unset.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UtmBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "newsletter", max_length = 200)]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "email", max_length = 200)]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "spring-sale", max_length = 200)]
    pub campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub term: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub content: Option<String>,
}

/// Sends the visits that meet its condition to its own target. Within each
/// list the values are alternatives; the lists given must all hold; at
/// least one must be given. A visit that meets no rule of its link goes to
/// the link's target.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    /// `ios` (iPhone, iPad before iPadOS 13, iPod), `android`, `desktop`
    /// (anything else), from the User-Agent.
    #[serde(default)]
    #[schema(max_items = 20, example = json!(["ios"]))]
    pub devices: Vec<String>,
    /// ISO 3166-1 alpha-2 codes of the visitor's country (from its address
    /// and the country database; an unknown country meets no list).
    #[serde(default)]
    #[schema(max_items = 20, example = json!(["DE", "AT"]))]
    pub countries: Vec<String>,
    /// BCP 47 ranges matched against the visitor's preferred language (the
    /// first of the highest weight in `Accept-Language`): `en` meets
    /// `en-GB`, `pt-BR` only `pt-BR`.
    #[serde(default)]
    #[schema(max_items = 20, example = json!(["de"]))]
    pub languages: Vec<String>,
    /// Checked like a link's target.
    #[schema(
        example = "https://apps.apple.com/app/id1",
        format = "uri",
        max_length = 2048
    )]
    pub target_url: String,
}

impl UtmBody {
    pub(super) fn into_utm(self) -> tinyurl_domain::Utm {
        tinyurl_domain::Utm {
            source: self.source,
            medium: self.medium,
            campaign: self.campaign,
            term: self.term,
            content: self.content,
        }
    }

    fn of(utm: &tinyurl_domain::Utm) -> Option<Self> {
        (!utm.is_empty()).then(|| Self {
            source: utm.source.clone(),
            medium: utm.medium.clone(),
            campaign: utm.campaign.clone(),
            term: utm.term.clone(),
            content: utm.content.clone(),
        })
    }
}

impl RuleBody {
    pub(super) fn into_input(self) -> tinyurl_links::input::RuleInput {
        tinyurl_links::input::RuleInput {
            devices: self.devices,
            countries: self.countries,
            languages: self.languages,
            target_url: self.target_url,
        }
    }

    fn of(rule: &tinyurl_domain::RedirectRule) -> Self {
        let input = tinyurl_links::input::RuleInput::from(rule);
        Self {
            devices: input.devices,
            countries: input.countries,
            languages: input.languages,
            target_url: input.target_url,
        }
    }
}

/// A new link. A retried create sends the same `Idempotency-Key` header.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLinkBody {
    /// An absolute http(s) URL.
    #[schema(
        example = "https://example.com/some/long/path",
        format = "uri",
        max_length = 2048
    )]
    pub target_url: String,
    /// A custom code instead of a minted one.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")]
    pub alias: Option<String>,
    /// When the link stops redirecting (RFC 3339).
    #[serde(default)]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// 301, 302 (the default), 307 or 308.
    #[serde(default)]
    #[schema(example = 302, minimum = 301, maximum = 308)]
    pub redirect_type: Option<i64>,
    #[serde(default)]
    pub forward_query: bool,
    /// At most 20, each 1 to 50 characters of letters, digits, spaces and
    /// `-_.:/+#@`; stored trimmed and lowercase, without repeats.
    #[serde(default)]
    #[schema(max_items = 20, example = json!(["newsletter"]))]
    pub tags: Vec<String>,
    #[serde(default)]
    pub utm: Option<UtmBody>,
    /// At most 10, in order.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub rules: Vec<RuleBody>,
    /// The link redirects this many visits by people, counted exactly
    /// across every redirect process, then answers 410. Bots, link
    /// previewers and HEAD requests use none and are answered 410, never
    /// redirected.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub max_visits: Option<u64>,
    /// Visitors must give this password before the link redirects (its
    /// target, UTM fields and rules are sealed under it); never returned.
    #[serde(default)]
    #[schema(min_length = 4, max_length = 128, write_only)]
    pub password: Option<String>,
    /// A registered domain to make the link on (its code or alias is its
    /// own there); absent: the default domain.
    #[serde(default)]
    #[schema(example = "go.example", max_length = 253)]
    pub domain: Option<String>,
}

/// One link of a batch; `idempotency_key` plays the header's part per item.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItemBody {
    #[schema(format = "uri", max_length = 2048)]
    pub target_url: String,
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$")]
    pub alias: Option<String>,
    #[serde(default)]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[serde(default)]
    #[schema(minimum = 301, maximum = 308)]
    pub redirect_type: Option<i64>,
    #[serde(default)]
    pub forward_query: bool,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    #[schema(max_items = 20)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub utm: Option<UtmBody>,
    #[serde(default)]
    #[schema(max_items = 10)]
    pub rules: Vec<RuleBody>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    pub max_visits: Option<u64>,
    #[serde(default)]
    #[schema(min_length = 4, max_length = 128, write_only)]
    pub password: Option<String>,
    #[serde(default)]
    #[schema(max_length = 253)]
    pub domain: Option<String>,
}

/// Up to 1,000 links created together.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCreateBody {
    pub links: Vec<BatchItemBody>,
}

/// One item's result: the link, or why it was not created.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchResult {
    // Boxed: a link is far larger than a problem.
    Link(Box<LinkBody>),
    Error(Problem),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchCreateResponse {
    /// One per requested link, in order.
    pub results: Vec<BatchResult>,
}

/// Changes to a link; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateLinkBody {
    #[schema(format = "uri", max_length = 2048)]
    pub target_url: Option<String>,
    /// A new expiry (RFC 3339), or null to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<String>>,
    #[schema(minimum = 301, maximum = 308)]
    pub redirect_type: Option<i64>,
    pub enabled: Option<bool>,
    pub forward_query: Option<bool>,
    /// The link's tags from now on (`[]` removes them all).
    #[schema(max_items = 20)]
    pub tags: Option<Vec<String>>,
    /// The link's UTM fields from now on (`{}` or null removes them).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<UtmBody>)]
    pub utm: Option<Option<UtmBody>>,
    /// The link's rules from now on (`[]` removes them all).
    #[schema(max_items = 10)]
    pub rules: Option<Vec<RuleBody>>,
    /// A new visit cap (the visits used so far stay used), or null to
    /// remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1_000_000_000)]
    pub max_visits: Option<Option<u64>>,
    /// A new password (visitors' cookies for the old one stop working), or
    /// null to remove it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 4, max_length = 128, write_only)]
    pub password: Option<Option<String>>,
}

/// A field that is present, even as null (`Some(None)`), unlike one that is
/// absent (`None`, through `#[serde(default)]`).
pub(super) fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Links per page, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub page_size: Option<u32>,
    /// `next_page_token` of the previous page.
    pub page_token: Option<String>,
    /// Only the links with this tag.
    pub tag: Option<String>,
}

/// A tag of the key's links.
#[derive(Debug, Serialize, ToSchema)]
pub struct TagBody {
    #[schema(example = "newsletter")]
    pub name: String,
    /// The key's links that have it.
    pub links: u64,
    /// Their lifetime human clicks, summed.
    pub lifetime_clicks: u64,
    pub lifetime_bot_clicks: u64,
}

/// The key's tags, by name.
#[derive(Debug, Serialize, ToSchema)]
pub struct TagList {
    pub tags: Vec<TagBody>,
}

/// A tag's new name; a link that has both keeps one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameTagBody {
    #[schema(example = "spring sale")]
    pub name: String,
}

/// A short domain besides the default one.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainBody {
    #[schema(example = "go.example")]
    pub host: String,
    /// Where a code that does not exist on it is sent; null: the built-in 404.
    pub not_found_url: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A domain to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDomainBody {
    /// A DNS name (lower-cased; an internationalised one is kept in its
    /// punycode form), not the default domain's.
    #[schema(example = "go.example", max_length = 253)]
    pub host: String,
    /// Where codes that do not exist on it are sent; absent: the built-in 404.
    #[serde(default)]
    #[schema(format = "uri", max_length = 2048)]
    pub not_found_url: Option<String>,
}

/// A webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookBody {
    pub id: i64,
    #[schema(example = "https://hooks.example/tinyurl")]
    pub url: String,
    /// Of `link.created`, `link.updated`, `link.deleted`, `link.blocked`,
    /// `link.clicked`.
    pub events: Vec<String>,
    /// `whsec_` and the base64 of the signing key (Standard Webhooks): only
    /// in the answers of a registration and a rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// False once it failed for a day without a success
    /// (`TINYURL_WEBHOOK_DISABLE_AFTER`); `POST …/enable` turns it on.
    pub enabled: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub disabled_at: Option<String>,
    /// When its current run of failures began; null after a success.
    #[schema(format = DateTime)]
    pub failing_since: Option<String>,
    /// Messages waiting to be delivered to it.
    pub pending: i64,
}

/// An endpoint to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookBody {
    /// An http(s) URL, checked as a link's target is: no private or
    /// loopback address unless the operator allows them.
    #[schema(format = "uri", max_length = 2048)]
    pub url: String,
    /// The events it is told of; absent or empty: all of them.
    #[serde(default)]
    pub events: Vec<String>,
}

/// The key's webhook endpoints.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookBody>,
}

/// One attempt at delivering a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryBody {
    /// The message's `webhook-id`: the same on every attempt at it.
    pub message_id: String,
    pub event_type: String,
    /// From 1.
    pub attempt: i32,
    /// The endpoint's HTTP status; null when it did not answer.
    pub status: Option<u16>,
    /// Why the attempt failed; null when it was delivered.
    pub error: Option<String>,
    pub latency_ms: u64,
    pub delivered: bool,
    #[schema(format = DateTime)]
    pub at: String,
}

/// An endpoint's newest delivery attempts, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryBody>,
}

/// How many delivery attempts to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQueryParams {
    /// 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

pub(super) fn webhook_body(
    webhook: &tinyurl_links::webhooks::StoredWebhook,
    with_secret: bool,
) -> WebhookBody {
    WebhookBody {
        id: webhook.id,
        url: webhook.url.clone(),
        events: webhook.events.clone(),
        secret: with_secret.then(|| webhook.secret.clone()),
        enabled: webhook.disabled_at.is_none(),
        created_at: rfc3339(webhook.created_at),
        disabled_at: webhook.disabled_at.map(rfc3339),
        failing_since: webhook.failing_since.map(rfc3339),
        pending: webhook.pending,
    }
}

pub(super) fn delivery_body(delivery: &tinyurl_links::webhooks::WebhookDelivery) -> DeliveryBody {
    DeliveryBody {
        message_id: delivery.message_id.clone(),
        event_type: delivery.event_type.clone(),
        attempt: delivery.attempt,
        status: delivery.status,
        error: delivery.error.clone(),
        latency_ms: u64::try_from(delivery.latency.as_millis()).unwrap_or(u64::MAX),
        delivered: delivery.delivered,
        at: rfc3339(delivery.at),
    }
}

/// The registered domains.
#[derive(Debug, Serialize, ToSchema)]
pub struct DomainList {
    pub domains: Vec<DomainBody>,
}

pub(super) fn domain_body(domain: tinyurl_links::store::Domain) -> DomainBody {
    DomainBody {
        host: domain.host,
        not_found_url: domain.not_found_url,
        created_at: rfc3339(domain.created_at),
    }
}

/// What a rename or delete changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct TagChange {
    /// The links that had the tag.
    pub links: u64,
}

pub(super) fn tag_body(summary: tinyurl_links::store::TagSummary) -> TagBody {
    TagBody {
        name: summary.tag,
        links: summary.links.unsigned_abs(),
        lifetime_clicks: summary.clicks.0.unsigned_abs(),
        lifetime_bot_clicks: summary.clicks.1.unsigned_abs(),
    }
}

/// A page of links, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkPage {
    pub links: Vec<LinkBody>,
    /// Pass as `page_token` for the next page; null on the last one.
    pub next_page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQueryParams {
    /// Start of the range (RFC 3339); default: 7 days before `to`.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// End of the range (RFC 3339); default: now.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// `minute`, `hour` or `day`; default: by the range's length.
    #[param(pattern = "^(minute|hour|day)$")]
    pub granularity: Option<String>,
    /// Comma-separated traffic classes to read alone: `human`, `crawler`,
    /// `previewer`, `monitor`, or `bot` (every kind of bot, and bot clicks
    /// folded before the kind was kept). Then every figure counts them alone
    /// (`clicks` their people, `bot_clicks` their bots) and every breakdown
    /// counts them all, bots included. Default: everything, the breakdowns
    /// counting people only.
    #[param(
        pattern = "^(human|crawler|previewer|monitor|bot)(,(human|crawler|previewer|monitor|bot))*$"
    )]
    pub classes: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQueryParams {
    /// Start of the range (RFC 3339); default: 7 days before `to`.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// End of the range (RFC 3339); default: now.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// `minute`, `hour` or `day`; default: by the range's length.
    #[param(pattern = "^(minute|hour|day)$")]
    pub granularity: Option<String>,
    /// Comma-separated, of `total`, `referrer`, `country`, `browser`,
    /// `device`, `rule`, `class`, `path`, `visitors` (day rows: the day's
    /// unique visitors as `clicks`); default: all.
    pub dimensions: Option<String>,
    /// Comma-separated traffic classes to read alone: `human`, `crawler`,
    /// `previewer`, `monitor`, or `bot` (every kind of bot, and bot clicks
    /// folded before the kind was kept). Then every figure counts them alone
    /// (`clicks` their people, `bot_clicks` their bots) and every breakdown
    /// counts them all, bots included. Default: everything, the breakdowns
    /// counting people only.
    #[param(
        pattern = "^(human|crawler|previewer|monitor|bot)(,(human|crawler|previewer|monitor|bot))*$"
    )]
    pub classes: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrphanQueryParams {
    /// A registered domain's host; default: the default domain.
    pub domain: Option<String>,
    /// Start of the range (RFC 3339); default: 7 days before `to`.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// End of the range (RFC 3339); default: now.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// `minute`, `hour` or `day`; default: by the range's length.
    #[param(pattern = "^(minute|hour|day)$")]
    pub granularity: Option<String>,
    /// Comma-separated traffic classes to read alone: `human`, `crawler`,
    /// `previewer`, `monitor`, or `bot` (every kind of bot, and bot clicks
    /// folded before the kind was kept). Then every figure counts them alone
    /// (`clicks` their people, `bot_clicks` their bots) and every breakdown
    /// counts them all, bots included. Default: everything, the breakdowns
    /// counting people only.
    #[param(
        pattern = "^(human|crawler|previewer|monitor|bot)(,(human|crawler|previewer|monitor|bot))*$"
    )]
    pub classes: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DomainQueryParams {
    /// A registered domain's host; default: the default domain.
    pub domain: Option<String>,
}

/// What a purge deleted.
#[derive(Debug, Serialize, ToSchema)]
pub struct PurgedBody {
    /// Rollup rows deleted.
    pub rows: u64,
}

/// A value and its clicks.
#[derive(Debug, Serialize, ToSchema)]
pub struct CountBody {
    pub value: String,
    pub clicks: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PointBody {
    #[schema(format = DateTime)]
    pub start: String,
    pub clicks: u64,
    pub bot_clicks: u64,
}

/// Click statistics of one link.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsBody {
    pub code: String,
    pub lifetime_clicks: u64,
    pub lifetime_bot_clicks: u64,
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: String,
    /// `minute`, `hour` or `day`.
    pub granularity: String,
    pub clicks: u64,
    pub bot_clicks: u64,
    pub series: Vec<PointBody>,
    pub referrers: Vec<CountBody>,
    pub countries: Vec<CountBody>,
    pub browsers: Vec<CountBody>,
    pub devices: Vec<CountBody>,
    pub bots: Vec<CountBody>,
    /// For a link with redirect rules: the human clicks each rule answered
    /// (`1` for the first) and the link's own target answered (`target`);
    /// empty for a link without rules.
    pub rules: Vec<CountBody>,
    /// Clicks by who made them: `human`, then the kinds of bot (`crawler`:
    /// search engines and tools; `previewer`: chat and social apps showing
    /// a preview; `monitor`: uptime monitors and scanners), most first;
    /// only those with clicks.
    pub classes: Vec<CountBody>,
    /// For visits to codes that do not exist (`/api/v1/orphan-visits`): the
    /// paths asked for, most first (`other` past the bound, last); empty for
    /// a link.
    pub paths: Vec<CountBody>,
    /// Unique visitors (people, not those asking not to be tracked) of
    /// every day the range touches, summed: a visitor is known only within
    /// a day, so a person visiting on two days is two. Estimated
    /// (HyperLogLog, about 1% standard error).
    pub visitors: u64,
    /// The days with visitors, in order.
    pub daily_visitors: Vec<DayVisitorsBody>,
}

/// One day's unique visitors.
#[derive(Debug, Serialize, ToSchema)]
pub struct DayVisitorsBody {
    /// The day's start (UTC).
    #[schema(format = DateTime)]
    pub day: String,
    pub visitors: u64,
}

pub(super) fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

pub(super) fn time(
    raw: Option<&str>,
    field: &'static str,
) -> Result<Option<SystemTime>, WriterError> {
    raw.map(|raw| {
        humantime::parse_rfc3339_weak(raw).map_err(|_| {
            WriterError::invalid(
                field,
                format!(
                    "{field} is not a valid timestamp; use RFC 3339 in UTC, like 2030-01-31T12:00:00Z"
                ),
            )
        })
    })
    .transpose()
}

pub(super) fn redirect_status(raw: Option<i64>) -> Result<Option<RedirectStatus>, WriterError> {
    raw.map(|code| {
        RedirectStatus::from_code(code).ok_or_else(|| {
            WriterError::invalid(
                "redirect_type",
                format!("redirect type {code} is not one of 301, 302, 307, 308"),
            )
        })
    })
    .transpose()
}

/// The path of link `code` (its key) in this API: a link on another
/// domain is `{domain}%2F{code}`.
pub(super) fn link_path(code: &str) -> String {
    format!("/api/v1/links/{}", code.replace('/', "%2F"))
}

pub(super) fn link_body(links: &LinkService, link: &StoredLink) -> LinkBody {
    let (domain, code) = tinyurl_domain::domains::split_key(&link.code);
    LinkBody {
        short_url: links.short_url(&link.code),
        code: code.to_owned(),
        domain: domain.map(str::to_owned),
        target_url: link.target_url.clone(),
        redirect_type: link.redirect_status.code(),
        forward_query: link.forward_query,
        expires_at: link.expires_at.map(rfc3339),
        enabled: link.enabled,
        is_alias: link.is_alias,
        created_at: rfc3339(link.created_at),
        updated_at: rfc3339(link.updated_at),
        blocked: link.blocked,
        tags: link.tags.clone(),
        utm: UtmBody::of(&link.options.utm),
        rules: link.options.rules.iter().map(RuleBody::of).collect(),
        max_visits: link.options.max_visits,
        password_protected: link.options.is_protected(),
        visits_used: None,
    }
}

pub(super) fn granularity_name(granularity: Granularity) -> &'static str {
    match granularity {
        Granularity::Minute => "minute",
        Granularity::Hour => "hour",
        Granularity::Day => "day",
    }
}

pub(super) fn stats_body(code: String, stats: LinkStats) -> StatsBody {
    let at = |seconds: i64| {
        rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
    };
    let counts = |counts: Vec<(String, u64)>| {
        counts
            .into_iter()
            .map(|(value, clicks)| CountBody { value, clicks })
            .collect()
    };
    StatsBody {
        code,
        lifetime_clicks: stats.lifetime_clicks,
        lifetime_bot_clicks: stats.lifetime_bot_clicks,
        from: at(stats.query.from),
        to: at(stats.query.to),
        granularity: granularity_name(stats.query.granularity).to_owned(),
        clicks: stats.clicks,
        bot_clicks: stats.bot_clicks,
        series: stats
            .series
            .iter()
            .map(|point| PointBody {
                start: at(point.start),
                clicks: point.clicks,
                bot_clicks: point.bot_clicks,
            })
            .collect(),
        referrers: counts(stats.referrers),
        countries: counts(stats.countries),
        browsers: counts(stats.browsers),
        devices: counts(stats.devices),
        bots: counts(stats.bots),
        rules: counts(stats.rules),
        classes: counts(stats.classes),
        paths: counts(stats.paths),
        visitors: stats.visitors,
        daily_visitors: stats
            .daily_visitors
            .iter()
            .map(|(day, visitors)| DayVisitorsBody {
                day: at(*day),
                visitors: *visitors,
            })
            .collect(),
    }
}
