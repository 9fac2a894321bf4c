//! Where links and API keys live: the [`LinkStore`] trait (with [`KeyStore`],
//! [`HostStore`] and [`SessionStore`], the keys, the operator's blocklist and
//! the console's sessions) and its two
//! implementations, Postgres (the split deployment) and SQLite (the embedded
//! one), chosen by the scheme of `TINYURL_DATABASE_URL`. Both pass the same
//! conformance suite (`tests/system/conformance.rs`).

mod postgres;
mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret as _, SecretString};
use tinyurl_domain::RedirectStatus;

pub use self::postgres::{OnlineMigration, OnlineReport, PostgresLinkStore};
pub use self::sqlite::SqliteLinkStore;
use crate::auth::{Caller, KeyHash, OwnerId, Rate, Scope};
use crate::error::WriterError;
use crate::sessions::{SessionHash, StoredSession};
use tinyurl_analytics::ClickStore;

/// How long an idempotency key answers retries unless configured: a day, as
/// the large payment APIs keep theirs.
pub const DEFAULT_IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Hash partitions of the links table unless configured.
pub const DEFAULT_LINK_PARTITIONS: u16 = 16;

/// A link as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLink {
    pub code: String,
    pub target_url: String,
    pub redirect_status: RedirectStatus,
    pub forward_query: bool,
    pub expires_at: Option<SystemTime>,
    pub enabled: bool,
    pub is_alias: bool,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    /// Blocked by an operator (`block-host`): it answers 410 whatever
    /// `enabled` (its owner's choice) says, and its owner may only delete it.
    pub blocked: bool,
    /// Sorted. The stores' link reads leave it empty (tags live apart, see
    /// [`TagStore`]); the link service fills it where it answers with links.
    pub tags: Vec<String>,
    /// UTM fields and redirect rules; empty (stored as NULL) for most links.
    pub options: tinyurl_domain::LinkOptions,
}

impl StoredLink {
    /// Whether the link redirects (before its expiry): its owner enabled it
    /// and no operator blocked it.
    pub fn redirects(&self) -> bool {
        self.enabled && !self.blocked
    }
}

/// A key as listed: never the key itself (only its hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    /// The key's own rate; `None`: the writer's default.
    pub rate: Option<Rate>,
    pub created_at: SystemTime,
    /// When a writer last looked the key up: within a minute of its last use.
    pub last_used_at: Option<SystemTime>,
    pub revoked_at: Option<SystemTime>,
    /// Until when the value the key had before its last rotation works.
    pub previous_valid_until: Option<SystemTime>,
}

/// A link to insert; its code is final (minted or an alias).
#[derive(Debug, Clone)]
pub struct NewLink {
    /// A generated code is its leased ID, encoded; the ID is not stored.
    pub code: String,
    pub target_url: String,
    pub redirect_status: RedirectStatus,
    pub forward_query: bool,
    pub expires_at: Option<SystemTime>,
    pub is_alias: bool,
    pub idempotency_key: Option<String>,
    /// What the request that carries the idempotency key asked for, kept
    /// with the key: a retry must ask for the same.
    pub fingerprint: Option<Fingerprint>,
    /// Its tags, valid ([`crate::input::tags`]) and without repeats;
    /// written with the link, in the same transaction.
    pub tags: Vec<String>,
    /// Valid ([`crate::input::options`]).
    pub options: tinyurl_domain::LinkOptions,
}

pub use crate::input::Fingerprint;

/// The link an idempotency key created, and the fingerprint of the request
/// that created it (`None` for keys stored before fingerprints were).
#[derive(Debug, Clone)]
pub struct Replay {
    pub link: StoredLink,
    pub fingerprint: Option<Fingerprint>,
}

/// A stored fingerprint; any other length (none is written) reads as none.
pub(crate) fn fingerprint_from(bytes: Option<Vec<u8>>) -> Option<Fingerprint> {
    bytes.and_then(|bytes| Fingerprint::try_from(bytes.as_slice()).ok())
}

/// What changes in an update; `None` leaves a column alone.
#[derive(Debug, Clone, Default)]
pub struct LinkChanges {
    pub target_url: Option<String>,
    pub expires_at: Option<SystemTime>,
    pub clear_expiry: bool,
    pub redirect_status: Option<RedirectStatus>,
    pub enabled: Option<bool>,
    pub forward_query: Option<bool>,
    /// The link's tags from now on (valid, sorted, without repeats);
    /// `None` keeps them.
    pub tags: Option<Vec<String>>,
    /// The link's UTM fields from now on (valid; empty removes them);
    /// `None` keeps them.
    pub utm: Option<tinyurl_domain::Utm>,
    /// The link's redirect rules from now on (valid); `None` keeps them.
    pub rules: Option<Vec<tinyurl_domain::RedirectRule>>,
    /// The visit cap from now on (`Some(None)` removes it); `None` keeps it.
    pub max_visits: Option<Option<u64>>,
    /// The password from now on, its key wrapped (`Some(None)` removes it);
    /// `None` keeps it.
    pub password: Option<Option<tinyurl_domain::protect::Password>>,
    /// The deployment's link secret, to seal a protected link again when
    /// its target, UTM fields or rules change.
    pub link_secret: Option<tinyurl_domain::protect::Key>,
}

impl LinkChanges {
    /// Whether the update changes any option.
    pub fn changes_options(&self) -> bool {
        self.utm.is_some()
            || self.rules.is_some()
            || self.max_visits.is_some()
            || self.password.is_some()
    }

    /// Whether the stores must read the link's options under its lock and
    /// write them again: an option changes, or the target, which a
    /// protected link keeps sealed with its options.
    pub fn rewrites_options(&self) -> bool {
        self.changes_options() || self.target_url.is_some()
    }

    /// The options of link `code` after this update, from its `current`
    /// ones and target, sealed again when it is protected; `None` when they
    /// stay as stored (only the target of an unprotected link changes).
    pub fn next_options(
        &self,
        code: &str,
        current_target: &str,
        current: tinyurl_domain::LinkOptions,
    ) -> Result<Option<tinyurl_domain::LinkOptions>, WriterError> {
        if !self.changes_options() && !current.is_protected() {
            return Ok(None);
        }
        let mut next = self.merged_options(current);
        if next.is_protected() {
            let secret = self.link_secret.as_ref().ok_or_else(|| {
                WriterError::Unexpected(anyhow::anyhow!(
                    "an update of a protected link without the link secret"
                ))
            })?;
            next.seal(
                code,
                self.target_url.as_deref().unwrap_or(current_target),
                secret,
                rand::random(),
            )
            .map_err(|error| WriterError::Unexpected(anyhow::anyhow!("{error}")))?;
        }
        Ok(Some(next))
    }

    /// `current` with this update's options in place of its own.
    pub fn merged_options(
        &self,
        mut current: tinyurl_domain::LinkOptions,
    ) -> tinyurl_domain::LinkOptions {
        if let Some(utm) = &self.utm {
            current.utm = utm.clone();
        }
        if let Some(rules) = &self.rules {
            current.rules = rules.clone();
        }
        if let Some(cap) = self.max_visits {
            current.max_visits = cap;
        }
        if let Some(password) = &self.password {
            current.password = password.clone();
        }
        current
    }
}

/// The stored forms of a link's options: what the redirect reads (`None`
/// for a plain link), and for a protected link the owner's, which keeps the
/// UTM fields and rules in clear and the link's key wrapped.
pub fn stored_options_forms(
    options: &tinyurl_domain::LinkOptions,
) -> (Option<String>, Option<String>) {
    match options.redirect_view() {
        Some(view) => (view.to_stored(), options.to_stored()),
        None => (options.to_stored(), None),
    }
}

/// The storage operations of the writer. Every method is bounded by the
/// store's timeout; a store that cannot be reached answers
/// [`WriterError::Unavailable`]. Writes are durable when they return.
///
/// The same database holds the click rollups: [`Self::clicks`] reads and
/// folds them.
#[async_trait::async_trait]
pub trait LinkStore:
    KeyStore + HostStore + SessionStore + TagStore + DomainStore + crate::webhooks::WebhookStore
{
    /// The click rollups in this store's database.
    fn clicks(&self) -> Arc<dyn ClickStore>;

    /// Inserts `links` atomically, skipping (not failing on) rows whose code
    /// is taken (by a link or a deleted link's tombstone) or whose
    /// idempotency key the owner used before; returns the
    /// codes inserted with their `(created_at, updated_at)`.
    async fn insert(
        &self,
        owner: OwnerId,
        links: &[NewLink],
    ) -> Result<HashMap<String, (SystemTime, SystemTime)>, WriterError>;

    /// Links of `owner` created with any of `keys`, by idempotency key.
    async fn find_by_idempotency_keys(
        &self,
        owner: OwnerId,
        keys: &[&str],
    ) -> Result<HashMap<String, Replay>, WriterError>;

    async fn get(&self, owner: OwnerId, code: &str) -> Result<Option<StoredLink>, WriterError>;

    /// Applies `changes` and bumps `updated_at`; `None` when `owner` has no
    /// such link.
    async fn update(
        &self,
        owner: OwnerId,
        code: &str,
        changes: &LinkChanges,
    ) -> Result<Option<StoredLink>, WriterError>;

    /// Whether a link was deleted. A deleted link leaves a tombstone: its
    /// code is never accepted again, from any owner (the owner included: a
    /// code that once pointed somewhere is retired, not recycled; changing
    /// where a code points is what `update` is for). Every other method
    /// treats a tombstone as absent.
    async fn delete(&self, owner: OwnerId, code: &str) -> Result<bool, WriterError>;

    /// Deletes up to `limit` idempotency keys older than the retention; how
    /// many went. Called repeatedly until it deletes nothing.
    async fn prune_idempotency_keys(&self, limit: i64) -> Result<u64, WriterError>;

    /// The owner's links that `search` selects, with each one's lifetime
    /// human clicks, in its order; `after` is where the previous page ended
    /// (in the same order).
    async fn search(
        &self,
        owner: OwnerId,
        search: &LinkSearch,
        limit: i64,
        after: Option<&SearchCursor>,
    ) -> Result<Vec<(StoredLink, i64)>, WriterError>;

    /// How many links the owner has, and the human and bot clicks of its
    /// links (those deleted since included) on and after each of `since`
    /// (days since the Unix epoch, UTC, as the day rollups number them): the
    /// day rollups and the minutes not yet rolled into them, each click once.
    async fn owner_overview(
        &self,
        owner: OwnerId,
        since: [i32; 2],
    ) -> Result<OwnerOverview, WriterError>;

    /// Newest first (`created_at`, then `code`, both descending); `after` is
    /// the `(created_at, code)` of the last link of the previous page.
    async fn list(
        &self,
        owner: OwnerId,
        limit: i64,
        after: Option<(SystemTime, String)>,
    ) -> Result<Vec<StoredLink>, WriterError>;
}

/// The API keys of the writer's database: who may call, with what scope and
/// rate. Bounded and durable as [`LinkStore`] says.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + 'static {
    async fn create_api_key(
        &self,
        name: &str,
        hash: &KeyHash,
        scope: Scope,
        rate: Option<Rate>,
    ) -> Result<i64, WriterError>;

    /// Sets (or with `None` clears) key `id`'s own rate; `false` when there
    /// is no such unrevoked key.
    async fn set_api_key_rate(&self, id: i64, rate: Option<Rate>) -> Result<bool, WriterError>;

    /// How many API keys exist (revoked ones included).
    async fn count_api_keys(&self) -> Result<i64, WriterError>;

    /// The caller behind an unrevoked key: its current value, or its value
    /// before a rotation during the grace period. Records the use.
    async fn resolve_key(&self, hash: &KeyHash) -> Result<Option<Caller>, WriterError>;

    /// Every key, oldest first.
    async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, WriterError>;

    /// Revokes key `id`; `false` when there is no such unrevoked key.
    async fn revoke_api_key(&self, id: i64) -> Result<bool, WriterError>;

    /// Gives key `id` the value `hash`; the current value keeps working for
    /// `grace` (a value left from an earlier rotation stops at once).
    /// `false` when there is no such unrevoked key.
    async fn rotate_api_key(
        &self,
        id: i64,
        hash: &KeyHash,
        grace: Duration,
    ) -> Result<bool, WriterError>;

    /// The hashes that work now (a key's value, and its value before a
    /// rotation during the grace period) of unrevoked keys whose id is past
    /// `after_id` or that were rotated within the last `rotated_within`,
    /// each with its key's id. `after_id` 0 gives every working hash.
    async fn live_key_hashes(
        &self,
        after_id: i64,
        rotated_within: Duration,
    ) -> Result<Vec<(i64, KeyHash)>, WriterError>;

    /// Hashes that stopped working within the last `within`: revoked keys
    /// (both values) and values whose rotation grace ended.
    async fn retired_key_hashes(&self, within: Duration) -> Result<Vec<KeyHash>, WriterError>;
}

/// An owner's links at a glance: how many, and their clicks since each of
/// two minutes, as `(human, bot)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnerOverview {
    pub links: i64,
    pub clicks: [(i64, i64); 2],
}

/// Which of an owner's links a search selects, and their order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkSearch {
    /// A code or alias that starts with it (case kept: codes are
    /// case-sensitive), or a target that starts with it once both are in
    /// [`tinyurl_domain::target::target_search_form`]: a host or the start of
    /// one (`example`, `www.Example.com`), or a URL's start
    /// (`example.com/articles/`). A prefix, not a substring, so that an
    /// index finds it among any number of links.
    pub text: Option<String>,
    pub state: Option<LinkState>,
    /// Only the links with this tag.
    pub tag: Option<String>,
    pub order: LinkOrder,
    /// What `Active` and `Expired` are judged against.
    pub now: Option<SystemTime>,
}

/// A link's state as the console filters by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Redirects: enabled, not blocked, not expired.
    Active,
    /// Switched off by its owner.
    Disabled,
    /// Past its expiry.
    Expired,
    /// Blocked by an operator.
    Blocked,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LinkOrder {
    /// `created_at`, then `code`, both descending.
    #[default]
    Newest,
    /// Lifetime human clicks, then `created_at`, then `code`, all
    /// descending.
    MostClicked,
}

/// Where a page of a search ended: the last link's sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchCursor {
    Newest(SystemTime, String),
    MostClicked(i64, SystemTime, String),
}

/// The least string greater than every string that starts with `prefix`
/// (compared bytewise, as `COLLATE "C"` and SQLite do): with the prefix, the
/// bounds of a range an index finds. `None` when there is none.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut end: Vec<char> = prefix.chars().collect();
    while let Some(last) = end.pop() {
        // Past a surrogate gap or the last code point, carry to the one before.
        if let Some(next) = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32) {
            end.push(next);
            return Some(end.into_iter().collect());
        }
    }
    None
}

/// `text` as a LIKE pattern that matches it literally (with `\\` as the
/// escape), and as a prefix.
fn like_literal(text: &str) -> String {
    text.chars()
        .flat_map(|character| match character {
            '%' | '_' | '\\' => vec!['\\', character],
            other => vec![other],
        })
        .collect()
}

/// A key's tag, with how many of its live links carry it and their
/// lifetime `(human, bot)` clicks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSummary {
    pub tag: String,
    pub links: i64,
    pub clicks: (i64, i64),
}

/// A short domain besides the default one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Normalized ([`tinyurl_domain::domains::normalize_host`]).
    pub host: String,
    /// Where codes that do not exist on it are sent; `None`: the built-in 404.
    pub not_found_url: Option<String>,
    pub created_at: SystemTime,
}

/// What removing a domain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainRemoval {
    Removed,
    NotFound,
    /// Live links are on it: they must be deleted first.
    HasLinks,
}

/// The installation's short domains (one table, read by every redirect).
#[async_trait::async_trait]
pub trait DomainStore: Send + Sync + 'static {
    /// Registers `domain`; false when its host is registered already.
    async fn add_domain(&self, domain: &Domain) -> Result<bool, WriterError>;

    /// Every registered domain, by host.
    async fn domains(&self) -> Result<Vec<Domain>, WriterError>;

    /// Removes the domain `host` unless live links are on it.
    async fn remove_domain(&self, host: &str) -> Result<DomainRemoval, WriterError>;
}

/// Tags of links: rows only for tagged links (a plain link pays nothing),
/// each owner's apart. Bounded and durable as [`LinkStore`] says.
#[async_trait::async_trait]
pub trait TagStore: Send + Sync + 'static {
    /// Replaces the tags of the owner's live link `code` with `tags`;
    /// false when the owner has no such link.
    async fn set_tags(
        &self,
        owner: OwnerId,
        code: &str,
        tags: &[String],
    ) -> Result<bool, WriterError>;

    /// The tags of those of the owner's links in `codes` that have any,
    /// each link's sorted.
    async fn tags_of(
        &self,
        owner: OwnerId,
        codes: &[&str],
    ) -> Result<HashMap<String, Vec<String>>, WriterError>;

    /// The owner's tags, sorted, with their links and clicks.
    async fn list_tags(&self, owner: OwnerId) -> Result<Vec<TagSummary>, WriterError>;

    /// The owner's tag `tag` alone, as [`Self::list_tags`] gives it; `None`
    /// when no link carries it.
    async fn tag_summary(
        &self,
        owner: OwnerId,
        tag: &str,
    ) -> Result<Option<TagSummary>, WriterError>;

    /// Renames `from` to `to` on every link of the owner that carries it (a
    /// link with both keeps one); how many links carried `from`.
    async fn rename_tag(&self, owner: OwnerId, from: &str, to: &str) -> Result<u64, WriterError>;

    /// Takes `tag` off every link of the owner; how many carried it.
    async fn delete_tag(&self, owner: OwnerId, tag: &str) -> Result<u64, WriterError>;
}

/// Console sessions (see [`crate::sessions`]): rows keyed by the hash of
/// the cookie's token. Bounded and durable as [`LinkStore`] says.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Records a new session of the key `key`, opened at `now`.
    async fn create_session(
        &self,
        id: &SessionHash,
        key: &KeyHash,
        now: SystemTime,
    ) -> Result<(), WriterError>;

    /// The session, if it exists (ended or not: the caller judges expiry).
    async fn session(&self, id: &SessionHash) -> Result<Option<StoredSession>, WriterError>;

    /// Records that the session was used at `now`.
    async fn touch_session(&self, id: &SessionHash, now: SystemTime) -> Result<(), WriterError>;

    /// Ends the session; `false` when there was none.
    async fn end_session(&self, id: &SessionHash) -> Result<bool, WriterError>;

    /// Deletes sessions last used before `idle_before` or opened before
    /// `opened_before`; how many.
    async fn prune_sessions(
        &self,
        idle_before: SystemTime,
        opened_before: SystemTime,
    ) -> Result<u64, WriterError>;
}

/// The operator's stored blocklist (`block-host`) and the blocks it puts on
/// links. Bounded and durable as [`LinkStore`] says.
#[async_trait::async_trait]
pub trait HostStore: Send + Sync + 'static {
    /// Adds `entry` (`host` or `*.suffix`, as in the blocklist file, in its
    /// normalised spelling; `list` is it parsed) to the stored blocklist and
    /// blocks every live link whose target host it matches, in one
    /// transaction; returns the links newly blocked.
    async fn block_host(
        &self,
        entry: &str,
        list: &tinyurl_domain::HostBlocklist,
    ) -> Result<Vec<StoredLink>, WriterError>;

    /// Removes `entry` from the stored blocklist and lifts the block of
    /// every link whose target host no remaining stored entry matches, in
    /// one transaction; returns the links unblocked, or `None` when `entry`
    /// was not stored.
    async fn unblock_host(&self, entry: &str) -> Result<Option<Vec<StoredLink>>, WriterError>;

    /// Every live link whose target host `list` (`entry` parsed) matches.
    async fn links_to_host(
        &self,
        entry: &str,
        list: &tinyurl_domain::HostBlocklist,
    ) -> Result<Vec<StoredLink>, WriterError>;

    /// Every stored blocklist entry.
    async fn blocked_host_entries(&self) -> Result<Vec<String>, WriterError>;
}

/// A stored scope; the schema allows no other values, so anything else is a
/// broken invariant, not bad input.
fn parse_scope(stored: &str) -> Result<Scope, WriterError> {
    Scope::parse(stored)
        .ok_or_else(|| WriterError::Unexpected(anyhow::anyhow!("unknown stored scope {stored:?}")))
}

/// A stored rate; the schema keeps it positive.
fn stored_rate(stored: Option<i32>) -> Result<Option<Rate>, WriterError> {
    stored
        .map(|rate| {
            u32::try_from(rate)
                .ok()
                .and_then(Rate::per_second)
                .ok_or_else(|| {
                    WriterError::Unexpected(anyhow::anyhow!("a stored rate of {rate} per second"))
                })
        })
        .transpose()
}

/// A rate as stored (the schema's integer).
fn rate_column(rate: Option<Rate>) -> Option<i32> {
    rate.map(|rate| i32::try_from(rate.get()).unwrap_or(i32::MAX))
}

/// A stored key hash, which the schema keeps at 32 bytes.
fn key_hash(stored: &[u8]) -> Result<KeyHash, WriterError> {
    stored.try_into().map(KeyHash).map_err(|_| {
        WriterError::Unexpected(anyhow::anyhow!(
            "a stored key hash is {} bytes, not 32",
            stored.len()
        ))
    })
}

/// Stored options (NULL: none); what the writer wrote, so anything else
/// is a broken invariant.
fn stored_options(stored: Option<&str>) -> Result<tinyurl_domain::LinkOptions, WriterError> {
    tinyurl_domain::LinkOptions::from_stored(stored).map_err(|reason| {
        WriterError::Unexpected(anyhow::anyhow!(
            "stored link options do not parse: {reason}"
        ))
    })
}

/// A stored status; the schema's CHECK allows only the four.
fn stored_status(column: i64) -> Result<RedirectStatus, WriterError> {
    RedirectStatus::from_code(column).ok_or_else(|| {
        WriterError::Unexpected(anyhow::anyhow!("a stored redirect status of {column}"))
    })
}

/// The LIKE pattern that finds every target `entry` may match (a superset,
/// filtered exactly by [`tinyurl_domain::target::stored_host`]).
/// The entry being lifted and the stored entries that stay, parsed.
fn lifted_and_remaining(
    entry: &str,
    remaining: &[String],
) -> Result<(tinyurl_domain::HostBlocklist, tinyurl_domain::HostBlocklist), WriterError> {
    let parse = |text: &str| {
        tinyurl_domain::HostBlocklist::parse(text).map_err(|reason| {
            WriterError::Unexpected(anyhow::anyhow!(
                "a stored blocklist entry does not parse: {reason}"
            ))
        })
    };
    Ok((parse(entry)?, parse(&remaining.join("\n"))?))
}

fn like_pattern(entry: &str) -> String {
    format!("%{}%", like_literal(entry.trim_start_matches("*.")))
}

/// Storage settings beyond where the store is.
#[derive(Debug, Clone)]
pub struct Layout {
    pub idempotency_retention: Duration,
    pub link_partitions: u16,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            idempotency_retention: DEFAULT_IDEMPOTENCY_RETENTION,
            link_partitions: DEFAULT_LINK_PARTITIONS,
        }
    }
}

/// Opens the store `database_url` names (`sqlite:PATH` for the embedded
/// store, a Postgres URL otherwise) and migrates it, or with `migrate`
/// false (a role that may not change the schema) checks that it is migrated.
/// The embedded store always migrates: its file is the process's own.
pub async fn open(
    database_url: &SecretString,
    pool_size: usize,
    timeout: Duration,
    layout: &Layout,
    migrate: bool,
) -> anyhow::Result<Arc<dyn LinkStore>> {
    if let Some(path) = tinyurl_runtime::sqlite::path_from_url(database_url.expose_secret()) {
        let store = SqliteLinkStore::open(&path, timeout)
            .await?
            .with_idempotency_retention(layout.idempotency_retention);
        return Ok(Arc::new(store));
    }
    let store = PostgresLinkStore::connect(database_url, pool_size, timeout)?
        .with_idempotency_retention(layout.idempotency_retention)
        .with_link_partitions(layout.link_partitions);
    if migrate {
        store.migrate().await?;
    } else {
        store.check_migrated().await?;
    }
    Ok(Arc::new(store))
}

/// Moves a Postgres database of the schema before partitioning to the
/// partitioned links table while writes continue
/// ([`PostgresLinkStore::migrate_links_online`]). The embedded store has no
/// such path: its file is rewritten when `tinyurl up` starts.
pub async fn migrate_online(
    database_url: &SecretString,
    timeout: Duration,
    layout: &Layout,
    options: &OnlineMigration,
) -> anyhow::Result<OnlineReport> {
    if tinyurl_runtime::sqlite::path_from_url(database_url.expose_secret()).is_some() {
        anyhow::bail!("the online migration is for Postgres; the embedded store migrates at start");
    }
    PostgresLinkStore::connect(database_url, 1, timeout)?
        .with_idempotency_retention(layout.idempotency_retention)
        .with_link_partitions(layout.link_partitions)
        .migrate_links_online(options)
        .await
}
