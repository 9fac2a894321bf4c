//! The link service: every rule of creating, reading, changing and listing
//! links (authentication, limits, validation, minting, storage, cache
//! coherence), independent of the transport. The gRPC service and the REST
//! API are thin adapters over it: they decode their wire types into
//! [`crate::input`] and encode what comes back.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tinyurl_domain::{CodeCodec, TargetPolicy, TargetUrl};
use tinyurl_runtime::proxies::TrustedProxies;

use crate::auth::{KeyCache, KeyHash, OwnerId, Scope};
use crate::batcher::CreateBatcher;
use crate::cache::LinkCache;
use crate::error::WriterError;
use crate::input::{
    CreateInput, ListInput, MAX_BATCH, UpdateInput, check_expiry, clicks_page_token, code_argument,
    page_size, page_token, parse_clicks_page_token, parse_page_token, validate_create,
};
use crate::leaser::IdLeaser;
use crate::sessions::{SessionTimeouts, SessionToken};
use crate::store::{
    LinkChanges, LinkOrder, LinkSearch, LinkStore, SearchCursor, StoredLink, TagSummary,
};
use tinyurl_analytics::stats::MAX_EXPORT_ROWS;
use tinyurl_analytics::{
    ClassFilter, ClickStore, Dimension, ExportRow, Granularity, LinkStats, StatsQuery, TrafficClass,
};

/// Group commits of single creates in flight at once: two, so one group's
/// cache write overlaps the next group's INSERT. More would split the queue
/// into smaller groups, and on a busy primary statements cost more than rows.
const COMMIT_SLOTS: usize = 2;
/// Most single creates committed together.
const GROUP_COMMIT_MAX: usize = 256;

/// Who is calling, as the transport saw it.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// The hash of the presented API key, if one of the right shape was.
    pub key: Option<KeyHash>,
    /// The address the request came from: the peer, or what a proxy the
    /// transport trusts says in `x-forwarded-for` (each transport has its
    /// own list: the REST API's proxies are not the gRPC callers).
    pub client: Option<IpAddr>,
}

/// A time range and granularity of statistics, as asked.
#[derive(Debug, Clone, Default)]
pub struct StatsInput {
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    /// The protobuf enum number; 0 chooses by range.
    pub granularity: i32,
    /// Class names to read alone ([`ClassFilter::parse`]); none: the
    /// default view.
    pub classes: Vec<String>,
}

/// A search of the caller's links (see [`LinkSearch`]), a page at a time.
#[derive(Debug, Clone, Default)]
pub struct SearchInput {
    pub search: LinkSearch,
    pub page_size: Option<u32>,
    pub page_token: Option<String>,
}

/// Links the overview lists of each kind.
const OVERVIEW_LINKS: i64 = 5;

/// What [`LinkService::overview`] answers.
#[derive(Debug, Clone)]
pub struct Overview {
    pub links: i64,
    /// `(human, bot)` clicks today (UTC).
    pub today: (i64, i64),
    /// `(human, bot)` clicks in the last seven days (UTC), today included.
    pub last_week: (i64, i64),
    pub most_clicked: Vec<(StoredLink, i64)>,
    pub newest: Vec<(StoredLink, i64)>,
}

/// One page of a search: links with their lifetime human clicks.
pub struct SearchPage {
    pub links: Vec<(StoredLink, i64)>,
    pub next_page_token: Option<String>,
}

/// One page of a listing, and the token of the next if there may be one.
pub struct Page {
    pub links: Vec<StoredLink>,
    pub next_page_token: Option<String>,
}

/// A console session's call, and what its key's scope allows.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub call: Call,
    pub scope: Scope,
}

mod webhooks;

pub struct LinkService {
    state: Arc<State>,
    batcher: CreateBatcher<State>,
}

pub struct State {
    pub store: Arc<dyn LinkStore>,
    /// The same store, as the analytics reads it.
    pub clicks_store: Arc<dyn ClickStore>,
    /// How far back minute and hour statistics reach.
    pub minute_retention: std::time::Duration,
    pub cache: Arc<dyn LinkCache>,
    pub leaser: IdLeaser,
    pub codec: CodeCodec,
    /// What targets are accepted; swapped whole when the blocklist changes.
    pub policy: std::sync::RwLock<Arc<TargetPolicy>>,
    /// The blocklist file's entries and the stored (`block-host`) ones.
    pub blocklists:
        std::sync::Mutex<(tinyurl_domain::HostBlocklist, tinyurl_domain::HostBlocklist)>,
    pub public_base_url: String,
    pub keys: KeyCache,
    pub limits: crate::limits::RateLimits,
    /// The proxies in front of the REST API, whose `x-forwarded-for` names
    /// the client.
    pub proxies: TrustedProxies,
    /// Wraps the keys of password-protected links, so that the writer can
    /// seal them again when their owner changes them (derived from the code
    /// secret: one secret per deployment, the same on every writer).
    pub link_secret: tinyurl_domain::protect::Key,
    /// The registered short domains' hosts and when they were read: links
    /// must not lead to them, and links are made only on them.
    pub short_hosts: std::sync::RwLock<(Option<Instant>, Arc<std::collections::HashSet<String>>)>,
    /// Webhook endpoints may be on private, loopback and link-local
    /// addresses (internal deployments and tests).
    pub webhooks_allow_private: bool,
}

/// How long the writer trusts the short domains it read.
const SHORT_HOSTS_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// The link secret of a deployment whose code secret is `code_secret`.
pub fn link_secret(code_secret: &[u8]) -> tinyurl_domain::protect::Key {
    tinyurl_domain::protect::Key::from_secret("tinyurl link secret v1", code_secret)
}

impl LinkService {
    pub fn new(state: Arc<State>) -> Self {
        let batcher = CreateBatcher::start(Arc::clone(&state), COMMIT_SLOTS, GROUP_COMMIT_MAX);
        Self { state, batcher }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The public short URL of `code`.
    /// A link on another domain (keyed `{host}/{code}`) has its short URL
    /// there, with the default domain's scheme.
    pub fn short_url(&self, code: &str) -> String {
        match tinyurl_domain::domains::split_key(code) {
            (Some(host), bare) => {
                let scheme = self
                    .state
                    .public_base_url
                    .split_once("://")
                    .map_or("https", |(scheme, _)| scheme);
                format!("{scheme}://{host}/{bare}")
            }
            (None, _) => format!("{}/{code}", self.state.public_base_url),
        }
    }

    /// The visits a capped link has used, as the redirects count them;
    /// `None` for a link without a cap, or when the count cannot be read.
    pub async fn visits_used(&self, link: &StoredLink) -> Option<u64> {
        link.options.max_visits?;
        self.state.cache.visits_used(&link.code).await
    }

    /// Registers a short domain (manage scope): links can be made on it,
    /// and the redirects answer its host.
    pub async fn add_domain(
        &self,
        call: &Call,
        host: &str,
        not_found_url: Option<&str>,
    ) -> Result<crate::store::Domain, WriterError> {
        measured("add_domain", async {
            self.state.owner(call, Scope::Manage, 1).await?;
            let host = crate::input::domain(host)?;
            if self.state.public_host() == Some(host.as_str()) {
                return Err(WriterError::invalid(
                    "host",
                    format!("{host} is the default domain (TINYURL_PUBLIC_BASE_URL)"),
                ));
            }
            let not_found_url = not_found_url
                .filter(|url| !url.is_empty())
                .map(|raw| {
                    TargetUrl::parse(raw, &self.state.policy())
                        .map(TargetUrl::into_string)
                        .map_err(|error| WriterError::invalid("not_found_url", error.to_string()))
                })
                .transpose()?;
            let domain = crate::store::Domain {
                host,
                not_found_url,
                created_at: SystemTime::now(),
            };
            if !self.state.store.add_domain(&domain).await? {
                return Err(WriterError::AlreadyExists(format!(
                    "domain {} is registered already",
                    domain.host
                )));
            }
            // This writer reads them again now; the redirects (and other
            // writers) within seconds.
            self.state.short_hosts(true).await?;
            Ok(domain)
        })
        .await
    }

    /// The registered domains (any key may see them: they are public).
    pub async fn domains(&self, call: &Call) -> Result<Vec<crate::store::Domain>, WriterError> {
        measured("list_domains", async {
            self.state.owner(call, Scope::Read, 1).await?;
            self.state.store.domains().await
        })
        .await
    }

    /// Removes a domain that has no live links (manage scope).
    pub async fn remove_domain(&self, call: &Call, host: &str) -> Result<(), WriterError> {
        measured("remove_domain", async {
            self.state.owner(call, Scope::Manage, 1).await?;
            let host = crate::input::domain(host)?;
            match self.state.store.remove_domain(&host).await? {
                crate::store::DomainRemoval::Removed => {
                    self.state.short_hosts(true).await?;
                    Ok(())
                }
                crate::store::DomainRemoval::NotFound => Err(WriterError::DomainNotFound(host)),
                crate::store::DomainRemoval::HasLinks => Err(WriterError::DomainInUse(host)),
            }
        })
        .await
    }

    /// `input` is what the transport decoded, or why it could not: callers
    /// are authenticated before their input is judged, on every transport.
    pub async fn create(
        &self,
        call: &Call,
        input: Result<CreateInput, WriterError>,
    ) -> Result<StoredLink, WriterError> {
        // Boxed: with a link's options its state outgrew what a future
        // should carry on the stack (one allocation beside a commit).
        measured(
            "create",
            Box::pin(async {
                let owner = self.state.owner(call, Scope::Create, 1).await?;
                let mut valid = validate_create(input?, &self.state.policy())?;
                self.state.check_create(&valid).await?;
                self.state.limits.spend_daily_creates(owner, 1).await?;
                if let Some(password) = valid.password.take() {
                    valid.password = Some(password.derive().await?);
                }
                self.batcher.create(owner, valid).await
            }),
        )
        .await
    }

    /// `Err` refuses the whole batch; otherwise one result per item, in
    /// order. Items the transport could not decode arrive as their error.
    pub async fn batch_create(
        &self,
        call: &Call,
        items: Vec<Result<CreateInput, WriterError>>,
    ) -> Result<Vec<Result<StoredLink, WriterError>>, WriterError> {
        // Boxed: with each item's password and domain checks its state
        // outgrew what a future should carry on the stack.
        measured(
            "batch_create",
            Box::pin(async {
                let cost = u32::try_from(items.len()).unwrap_or(u32::MAX);
                let owner = self.state.owner(call, Scope::Create, cost).await?;
                if items.is_empty() || items.len() > MAX_BATCH {
                    return Err(WriterError::invalid(
                        "links",
                        format!("a batch holds 1 to {MAX_BATCH} links, got {}", items.len()),
                    ));
                }
                self.state
                    .limits
                    .spend_daily_creates(owner, items.len() as u64)
                    .await?;
                metrics::histogram!("writer_batch_size").record(items.len() as f64);
                let policy = self.state.policy();
                let mut validated = Vec::with_capacity(items.len());
                for item in items {
                    let mut item = item.and_then(|input| validate_create(input, &policy));
                    if let Ok(valid) = &item
                        && let Err(error) = self.state.check_create(valid).await
                    {
                        item = Err(error);
                    }
                    if let Ok(valid) = &mut item
                        && let Some(password) = valid.password.take()
                    {
                        valid.password = Some(password.derive().await?);
                    }
                    validated.push(item);
                }
                Ok(self.state.create_many(owner, validated).await)
            }),
        )
        .await
    }

    pub async fn get(&self, call: &Call, code: &str) -> Result<StoredLink, WriterError> {
        measured("get", async {
            let owner = self.state.owner(call, Scope::Read, 1).await?;
            let code = code_argument(code)?;
            let mut link = self
                .state
                .store
                .get(owner, code)
                .await?
                .ok_or_else(|| WriterError::NotFound(code.to_owned()))?;
            self.fill_tags(owner, std::slice::from_mut(&mut link))
                .await?;
            Ok(link)
        })
        .await
    }

    /// Sets each link's tags, read in one query for all of them.
    async fn fill_tags<'a>(
        &self,
        owner: OwnerId,
        links: impl IntoIterator<Item = &'a mut StoredLink>,
    ) -> Result<(), WriterError> {
        let mut links: Vec<&mut StoredLink> = links.into_iter().collect();
        let codes: Vec<&str> = links.iter().map(|link| link.code.as_str()).collect();
        let mut tags = self.state.store.tags_of(owner, &codes).await?;
        for link in &mut links {
            link.tags = tags.remove(&link.code).unwrap_or_default();
        }
        Ok(())
    }

    /// The caller's tags, each with its links and their lifetime clicks.
    pub async fn tags(&self, call: &Call) -> Result<Vec<TagSummary>, WriterError> {
        measured("list_tags", async {
            let owner = self.state.owner(call, Scope::Read, 1).await?;
            self.state.store.list_tags(owner).await
        })
        .await
    }

    /// One of the caller's tags: its links and their lifetime clicks (the
    /// sum of its links' statistics).
    pub async fn tag_stats(&self, call: &Call, tag: &str) -> Result<TagSummary, WriterError> {
        measured("tag_stats", async {
            let owner = self.state.owner(call, Scope::Read, 1).await?;
            let tag = crate::input::tag(tag, "tag")?;
            self.state
                .store
                .tag_summary(owner, &tag)
                .await?
                .ok_or_else(|| WriterError::TagNotFound(tag))
        })
        .await
    }

    /// Renames the caller's tag `from` to `to` on every link that carries
    /// it (links with both keep one); how many links carried `from`.
    pub async fn rename_tag(&self, call: &Call, from: &str, to: &str) -> Result<u64, WriterError> {
        measured("rename_tag", async {
            let owner = self.state.owner(call, Scope::Manage, 1).await?;
            let from = crate::input::tag(from, "tag")?;
            let to = crate::input::tag(to, "name")?;
            let renamed = if from == to {
                self.state
                    .store
                    .tag_summary(owner, &from)
                    .await?
                    .map_or(0, |summary| summary.links.unsigned_abs())
            } else {
                self.state.store.rename_tag(owner, &from, &to).await?
            };
            if renamed == 0 {
                return Err(WriterError::TagNotFound(from));
            }
            Ok(renamed)
        })
        .await
    }

    /// Takes the caller's tag off every link; how many carried it.
    pub async fn delete_tag(&self, call: &Call, tag: &str) -> Result<u64, WriterError> {
        measured("delete_tag", async {
            let owner = self.state.owner(call, Scope::Manage, 1).await?;
            let tag = crate::input::tag(tag, "tag")?;
            match self.state.store.delete_tag(owner, &tag).await? {
                0 => Err(WriterError::TagNotFound(tag)),
                deleted => Ok(deleted),
            }
        })
        .await
    }

    pub async fn update(
        &self,
        call: &Call,
        code: &str,
        input: Result<UpdateInput, WriterError>,
    ) -> Result<StoredLink, WriterError> {
        // Boxed: with the tags its state outgrew what a future should carry
        // on the stack.
        measured(
            "update",
            Box::pin(async {
                let owner = self.state.owner(call, Scope::Manage, 1).await?;
                let code = code_argument(code)?;
                let input = input?;
                let changes = LinkChanges {
                    target_url: input
                        .target_url
                        .as_deref()
                        .map(|raw| TargetUrl::parse(raw, &self.state.policy()))
                        .transpose()
                        .map_err(|error| WriterError::invalid("target_url", error.to_string()))?
                        .map(TargetUrl::into_string),
                    expires_at: input
                        .expires_at
                        .flatten()
                        .map(|at| check_expiry(at, "expires_at"))
                        .transpose()?,
                    clear_expiry: matches!(input.expires_at, Some(None)),
                    redirect_status: input.redirect_status,
                    enabled: input.enabled,
                    forward_query: input.forward_query,
                    tags: input.tags.as_deref().map(crate::input::tags).transpose()?,
                    utm: input.utm.map(crate::input::utm).transpose()?,
                    rules: input
                        .rules
                        .as_deref()
                        .map(|rules| crate::input::rules(rules, &self.state.policy()))
                        .transpose()?,
                    max_visits: input
                        .max_visits
                        .map(|cap| cap.map(crate::input::max_visits).transpose())
                        .transpose()?,
                    password: None,
                    link_secret: Some(self.state.link_secret.clone()),
                };
                let mut changes = changes;
                self.state
                    .check_targets(changes.target_url.as_deref(), changes.rules.as_deref())
                    .await?;
                if let Some(password) = input.password {
                    changes.password = Some(match password {
                        None => None,
                        Some(typed) => {
                            crate::input::NewPassword::Typed(crate::input::password(typed)?)
                                .derive()
                                .await?
                                .stored(code, &self.state.link_secret)
                        }
                    });
                }
                // A link an operator blocked, or whose target's host is on the
                // blocklist now (blocked before blocks had a flag of their own,
                // or listed in the file), is its owner's only to delete.
                let current = self
                    .state
                    .store
                    .get(owner, code)
                    .await?
                    .ok_or_else(|| WriterError::NotFound(code.to_owned()))?;
                self.state.refuse_if_blocked(&current)?;
                let Some(mut link) = self.state.store.update(owner, code, &changes).await? else {
                    // Deleted, or blocked, since it was read.
                    return Err(match self.state.store.get(owner, code).await? {
                        Some(link) => self
                            .state
                            .refuse_if_blocked(&link)
                            .err()
                            .unwrap_or_else(|| WriterError::NotFound(code.to_owned())),
                        None => WriterError::NotFound(code.to_owned()),
                    });
                };
                self.state.cache.replace(&link).await;
                match changes.tags {
                    Some(tags) => link.tags = tags,
                    None => {
                        self.fill_tags(owner, std::slice::from_mut(&mut link))
                            .await?;
                    }
                }
                Ok(link)
            }),
        )
        .await
    }

    /// The client of a REST request from `peer`: what a proxy in
    /// `TINYURL_TRUSTED_PROXIES` says in `x-forwarded-for`, or the peer.
    pub fn rest_client(&self, peer: IpAddr, forwarded_for: Option<&[u8]>) -> IpAddr {
        self.state.proxies.client(peer, forwarded_for)
    }

    /// Resolves the call's key, and nothing else: adapters that read a body
    /// ask first, so a stranger's body is never read (a key in use is
    /// cached; the call's own check then costs a map lookup).
    pub async fn authenticate(&self, call: &Call) -> Result<(), WriterError> {
        self.state.caller(call).await.map(drop)
    }

    /// The scope of the call's key (authenticating it, as every call does).
    pub async fn scope(&self, call: &Call) -> Result<Scope, WriterError> {
        Ok(self.state.caller(call).await?.scope)
    }

    /// Opens a console session for the call's key: the key is checked as
    /// any call's is (a failure is charged to the caller's address), and
    /// only the hash of the returned token is stored.
    pub async fn sign_in(&self, call: &Call) -> Result<SessionToken, WriterError> {
        measured("sign_in", async {
            // A sign-in form always sends something: a malformed key is a
            // failed attempt like a wrong one, charged to the address.
            let Some(key) = call.key else {
                return Err(self.state.refuse_malformed(call).await);
            };
            self.state.caller(call).await?;
            let token = SessionToken::generate();
            self.state
                .store
                .create_session(&token.hash(), &key, SystemTime::now())
                .await?;
            Ok(token)
        })
        .await
    }

    /// The call a console session makes from `client`: `None` when there
    /// is no such session, it timed out, or its key no longer works (then
    /// the session is ended, on every writer, since they share the store).
    pub async fn session(
        &self,
        token: &SessionToken,
        client: Option<IpAddr>,
        timeouts: SessionTimeouts,
    ) -> Result<Option<SignedIn>, WriterError> {
        let id = token.hash();
        let Some(session) = self.state.store.session(&id).await? else {
            return Ok(None);
        };
        let now = SystemTime::now();
        if !timeouts.open_at(&session, now) {
            self.state.store.end_session(&id).await?;
            return Ok(None);
        }
        let call = Call {
            key: Some(session.key),
            client,
        };
        let scope = match self.state.caller(&call).await {
            Ok(caller) => caller.scope,
            Err(WriterError::Unauthenticated(_)) => {
                self.state.store.end_session(&id).await?;
                return Ok(None);
            }
            Err(other) => return Err(other),
        };
        let stale = now
            .duration_since(session.last_seen_at)
            .is_ok_and(|since| since >= timeouts.touch_after());
        if stale {
            self.state.store.touch_session(&id, now).await?;
        }
        Ok(Some(SignedIn { call, scope }))
    }

    /// Ends a console session; signing out twice is not an error.
    pub async fn sign_out(&self, token: &SessionToken) -> Result<(), WriterError> {
        self.state.store.end_session(&token.hash()).await.map(drop)
    }

    /// Deletes the sessions that timed out; how many.
    pub async fn prune_sessions(&self, timeouts: SessionTimeouts) -> Result<u64, WriterError> {
        let now = SystemTime::now();
        self.state
            .store
            .prune_sessions(
                now.checked_sub(timeouts.idle)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
                now.checked_sub(timeouts.absolute)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            )
            .await
    }

    /// Every API key, oldest first (never their values): for an admin key.
    pub async fn api_keys(&self, call: &Call) -> Result<Vec<crate::keys::ApiKeyInfo>, WriterError> {
        measured("list_api_keys", async {
            self.state.owner(call, Scope::Admin, 1).await?;
            self.state.store.list_api_keys().await
        })
        .await
    }

    /// Creates an API key (shown once, in the answer): for an admin key.
    pub async fn create_api_key(
        &self,
        call: &Call,
        name: &str,
        scope: Scope,
        rate: Option<crate::rate::Rate>,
    ) -> Result<crate::keys::IssuedKey, WriterError> {
        measured("create_api_key", async {
            self.state.owner(call, Scope::Admin, 1).await?;
            let name = crate::auth::KeyName::parse(name)?;
            crate::keys::issue_key(self.state.store.as_ref(), &name, scope, rate).await
        })
        .await
    }

    /// Gives key `id` a new value (returned, shown once); the old one
    /// works for `grace`: for an admin key.
    pub async fn rotate_api_key(
        &self,
        call: &Call,
        id: i64,
        grace: std::time::Duration,
    ) -> Result<String, WriterError> {
        measured("rotate_api_key", async {
            self.state.owner(call, Scope::Admin, 1).await?;
            crate::keys::rotate(self.state.store.as_ref(), id, grace).await
        })
        .await
    }

    /// Revokes key `id` (every writer refuses it within a second): for an
    /// admin key.
    pub async fn revoke_api_key(&self, call: &Call, id: i64) -> Result<(), WriterError> {
        measured("revoke_api_key", async {
            self.state.owner(call, Scope::Admin, 1).await?;
            crate::keys::revoke(self.state.store.as_ref(), id).await
        })
        .await
    }

    /// Sets key `id`'s own rate (`None`: the writer's default): for an
    /// admin key.
    pub async fn set_api_key_rate(
        &self,
        call: &Call,
        id: i64,
        rate: Option<crate::rate::Rate>,
    ) -> Result<(), WriterError> {
        measured("set_api_key_rate", async {
            self.state.owner(call, Scope::Admin, 1).await?;
            crate::keys::set_rate(self.state.store.as_ref(), id, rate).await
        })
        .await
    }

    /// The stored host blocklist (`block-host`'s entries): for an admin key.
    pub async fn blocked_hosts(&self, call: &Call) -> Result<Vec<String>, WriterError> {
        measured("blocked_hosts", async {
            self.state.owner(call, Scope::Admin, 1).await?;
            self.state.store.blocked_host_entries().await
        })
        .await
    }

    /// Blocks (or unblocks) `entry` for every writer and its links, as
    /// `block-host` does; the entry as stored and how many links changed:
    /// for an admin key.
    pub async fn change_blocked_host(
        &self,
        call: &Call,
        entry: &str,
        block: bool,
    ) -> Result<(String, usize), WriterError> {
        measured("change_blocked_host", async {
            self.state.owner(call, Scope::Admin, 1).await?;
            crate::blocklist::change(
                self.state.store.as_ref(),
                self.state.cache.as_ref(),
                entry,
                block,
            )
            .await
        })
        .await
    }

    /// Deletes the link and keeps its code as a tombstone: never reissued.
    pub async fn delete(&self, call: &Call, code: &str) -> Result<(), WriterError> {
        measured("delete", async {
            let owner = self.state.owner(call, Scope::Manage, 1).await?;
            let code = code_argument(code)?;
            if !self.state.store.delete(owner, code).await? {
                return Err(WriterError::NotFound(code.to_owned()));
            }
            self.state.cache.remove(code).await;
            Ok(())
        })
        .await
    }

    /// The caller's links, newest first, a keyset page at a time.
    pub async fn list(&self, call: &Call, input: ListInput) -> Result<Page, WriterError> {
        measured("list", async {
            let owner = self.state.owner(call, Scope::Read, 1).await?;
            let size = page_size(input.page_size)?;
            let after = input
                .page_token
                .as_deref()
                .filter(|token| !token.is_empty())
                .map(parse_page_token)
                .transpose()?;
            let mut links = match input.tag.as_deref().filter(|tag| !tag.is_empty()) {
                None => self.state.store.list(owner, size, after).await?,
                // The search's newest-first pages are the listing's.
                Some(tag) => {
                    let search = LinkSearch {
                        tag: Some(crate::input::tag(tag, "tag")?),
                        ..LinkSearch::default()
                    };
                    let after = after.map(|(at, code)| SearchCursor::Newest(at, code));
                    self.state
                        .store
                        .search(owner, &search, size, after.as_ref())
                        .await?
                        .into_iter()
                        .map(|(link, _)| link)
                        .collect()
                }
            };
            self.fill_tags(owner, &mut links).await?;
            let next_page_token = match links.last() {
                Some(last) if links.len() as i64 == size => {
                    Some(page_token(last.created_at, &last.code))
                }
                _ => None,
            };
            Ok(Page {
                links,
                next_page_token,
            })
        })
        .await
    }

    /// The caller's links that `input` selects (the console's listing),
    /// each with its lifetime human clicks, a keyset page at a time.
    pub async fn search(&self, call: &Call, input: SearchInput) -> Result<SearchPage, WriterError> {
        measured("search", async {
            let owner = self.state.owner(call, Scope::Read, 1).await?;
            let size = page_size(input.page_size)?;
            let token = input
                .page_token
                .as_deref()
                .filter(|token| !token.is_empty());
            let after = match (token, input.search.order) {
                (None, _) => None,
                (Some(token), LinkOrder::Newest) => {
                    let (at, code) = parse_page_token(token)?;
                    Some(SearchCursor::Newest(at, code))
                }
                (Some(token), LinkOrder::MostClicked) => {
                    let (clicks, at, code) = parse_clicks_page_token(token)?;
                    Some(SearchCursor::MostClicked(clicks, at, code))
                }
            };
            let mut search = input.search;
            search.tag = search
                .tag
                .as_deref()
                .map(|tag| crate::input::tag(tag, "tag"))
                .transpose()?;
            let mut links = self
                .state
                .store
                .search(owner, &search, size, after.as_ref())
                .await?;
            self.fill_tags(owner, links.iter_mut().map(|(link, _)| link))
                .await?;
            let next_page_token = match links.last() {
                Some((last, clicks)) if links.len() as i64 == size => Some(match search.order {
                    LinkOrder::Newest => page_token(last.created_at, &last.code),
                    LinkOrder::MostClicked => {
                        clicks_page_token(*clicks, last.created_at, &last.code)
                    }
                }),
                _ => None,
            };
            Ok(SearchPage {
                links,
                next_page_token,
            })
        })
        .await
    }

    /// The caller's links at a glance (the console's first page): how many,
    /// human and bot clicks today and in the last seven days (whole UTC
    /// days, so that they are read from the day rollups: a week of minute
    /// rollups is ten thousand rows a link), the most clicked and the newest.
    pub async fn overview(&self, call: &Call) -> Result<Overview, WriterError> {
        measured("overview", async {
            let owner = self.state.owner(call, Scope::Read, 1).await?;
            let today = tinyurl_analytics::minute_of(SystemTime::now()) / 1440;
            let top = |order| LinkSearch {
                order,
                ..LinkSearch::default()
            };
            let (most, new) = (top(LinkOrder::MostClicked), top(LinkOrder::Newest));
            // Three reads on their own connections at once: the page waits
            // for the slowest, not the sum.
            let (counts, most_clicked, newest) = tokio::try_join!(
                self.state.store.owner_overview(owner, [today, today - 6]),
                self.state.store.search(owner, &most, OVERVIEW_LINKS, None),
                self.state.store.search(owner, &new, OVERVIEW_LINKS, None),
            )?;
            Ok(Overview {
                links: counts.links,
                today: counts.clicks[0],
                last_week: counts.clicks[1],
                most_clicked: most_clicked
                    .into_iter()
                    .filter(|(_, clicks)| *clicks > 0)
                    .collect(),
                newest,
            })
        })
        .await
    }

    /// Statistics of one of the caller's links.
    pub async fn stats(
        &self,
        call: &Call,
        code: &str,
        input: Result<StatsInput, WriterError>,
    ) -> Result<LinkStats, WriterError> {
        measured("stats", async {
            let owner = self.state.owner(call, Scope::Read, 1).await?;
            self.state.link_stats(owner, code, input?).await
        })
        .await
    }

    /// Every bucket's clicks of one of the caller's links, by dimension and
    /// value (`dimensions` by name; none: all), over the range `input`
    /// names: the rollups as rows, for a spreadsheet. At most
    /// [`tinyurl_analytics::stats::MAX_EXPORT_ROWS`]; a range that holds
    /// more is refused.
    pub async fn export_stats(
        &self,
        call: &Call,
        code: &str,
        input: Result<StatsInput, WriterError>,
        dimensions: &[String],
    ) -> Result<Vec<ExportRow>, WriterError> {
        measured("export_stats", async {
            let owner = self.state.owner(call, Scope::Read, 1).await?;
            let code = code_argument(code)?;
            let (query, classes) = self.state.stats_query(input?)?;
            let dimensions = export_dimensions(dimensions)?;
            self.state.owned(owner, code).await?;
            let (table, first, end) = query.buckets();
            let step = match query.granularity {
                Granularity::Hour => 60,
                Granularity::Minute | Granularity::Day => 1,
            };
            let limit = MAX_EXPORT_ROWS + 1;
            let rows = self
                .state
                .clicks_store
                .export(
                    code,
                    table,
                    (first, end),
                    step,
                    limit as i64,
                    &classes.codes(),
                )
                .await?;
            if rows.len() >= limit {
                return Err(WriterError::invalid(
                    "from",
                    format!(
                        "the range holds more than {MAX_EXPORT_ROWS} rows: narrow it, use a coarser granularity or fewer dimensions"
                    ),
                ));
            }
            Ok(ExportRow::of(&query, &rows, &dimensions))
        })
        .await
    }

    /// Deletes the click data of one of the caller's links (`Some`), or of
    /// every link of the caller's key, deleted ones included (`None`):
    /// rollups, totals, ranks and their share of the key's day totals
    /// (manage scope); how many rows went.
    pub async fn forget_clicks(&self, call: &Call, code: Option<&str>) -> Result<u64, WriterError> {
        measured("forget_clicks", async {
            let owner = self.state.owner(call, Scope::Manage, 1).await?;
            let codes = match code {
                Some(code) => {
                    let code = code_argument(code)?;
                    self.state.owned(owner, code).await?;
                    Some(vec![code.to_owned()])
                }
                None => None,
            };
            Ok(self
                .state
                .clicks_store
                .forget(owner.0, codes.as_deref())
                .await?)
        })
        .await
    }

    /// Visits to codes that do not exist (and to paths that are no code) on
    /// `domain` (`""`: the default one) over the range `input` names, manage
    /// scope (they are every key's): counted by who made them (`classes`)
    /// and by the path asked for (`paths`), nothing else of the visitor.
    pub async fn orphan_visits(
        &self,
        call: &Call,
        domain: &str,
        input: Result<StatsInput, WriterError>,
    ) -> Result<LinkStats, WriterError> {
        measured("orphan_visits", async {
            self.state.owner(call, Scope::Manage, 1).await?;
            let key = self.state.orphan_key(domain).await?;
            let (query, classes) = self.state.stats_query(input?)?;
            self.state.key_stats(&key, query, &classes).await
        })
        .await
    }

    /// Deletes the counts of visits to codes that do not exist on `domain`
    /// (manage scope); how many rollup rows went.
    pub async fn purge_orphan_visits(&self, call: &Call, domain: &str) -> Result<u64, WriterError> {
        measured("purge_orphan_visits", async {
            self.state.owner(call, Scope::Manage, 1).await?;
            let key = self.state.orphan_key(domain).await?;
            Ok(self.state.clicks_store.purge(&key).await?)
        })
        .await
    }
}

/// The dimensions an export asks for by name; none: every one.
fn export_dimensions(names: &[String]) -> Result<Vec<Dimension>, WriterError> {
    if names.iter().all(|name| name.trim().is_empty()) {
        return Ok(Dimension::ALL.to_vec());
    }
    names
        .iter()
        .map(|name| name.trim())
        .filter(|name| !name.is_empty())
        .map(|name| {
            Dimension::named(name).ok_or_else(|| {
                WriterError::invalid(
                    "dimensions",
                    format!(
                        "{name:?} is not one of {}",
                        Dimension::ALL.map(Dimension::name).join(", ")
                    ),
                )
            })
        })
        .collect()
}

/// Runs one operation, counting its outcome and timing it.
async fn measured<T>(
    operation: &'static str,
    work: impl Future<Output = Result<T, WriterError>>,
) -> Result<T, WriterError> {
    let started = Instant::now();
    let result = work.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(error) => error.kind().label(),
    };
    metrics::counter!("writer_requests_total", "op" => operation, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("writer_request_duration_seconds", "op" => operation)
        .record(started.elapsed().as_secs_f64());
    result
}

impl State {
    /// The default domain's host (of the public base URL).
    fn public_host(&self) -> Option<&str> {
        let rest = self.public_base_url.split_once("://")?.1;
        let host = rest.split(['/', ':']).next()?;
        (!host.is_empty()).then_some(host)
    }

    /// The registered short domains' hosts, read again when older than
    /// [`SHORT_HOSTS_TTL`] or when `fresh` asks.
    async fn short_hosts(
        &self,
        fresh: bool,
    ) -> Result<Arc<std::collections::HashSet<String>>, WriterError> {
        {
            let cached = self
                .short_hosts
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !fresh && cached.0.is_some_and(|at| at.elapsed() < SHORT_HOSTS_TTL) {
                return Ok(Arc::clone(&cached.1));
            }
        }
        let hosts: Arc<std::collections::HashSet<String>> = Arc::new(
            self.store
                .domains()
                .await?
                .into_iter()
                .map(|domain| domain.host)
                .collect(),
        );
        *self
            .short_hosts
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            (Some(Instant::now()), Arc::clone(&hosts));
        Ok(hosts)
    }

    /// Refuses a link on a domain that is not registered (read again before
    /// refusing: another writer may have registered it a moment ago).
    /// The key visits to codes that do not exist on `domain` are counted
    /// under: `""` the default domain, else a registered one.
    async fn orphan_key(&self, domain: &str) -> Result<String, WriterError> {
        if domain.trim().is_empty() {
            return Ok(tinyurl_domain::clicks::ORPHANS.to_owned());
        }
        let host = crate::input::domain(domain)?;
        self.check_domain(Some(&host)).await?;
        Ok(tinyurl_domain::clicks::orphan_key(Some(&host)))
    }

    async fn check_domain(&self, domain: Option<&str>) -> Result<(), WriterError> {
        let Some(host) = domain else {
            return Ok(());
        };
        if self.short_hosts(false).await?.contains(host)
            || self.short_hosts(true).await?.contains(host)
        {
            return Ok(());
        }
        Err(WriterError::invalid(
            "domain",
            format!("no domain {host} is registered (a manage key registers domains)"),
        ))
    }

    /// Refuses targets on one of this service's short domains (`hosts`),
    /// as on its default one: such a link would only lead to another short
    /// link.
    fn refuse_short_targets<'a>(
        hosts: &std::collections::HashSet<String>,
        field: &'static str,
        targets: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), WriterError> {
        if hosts.is_empty() {
            return Ok(());
        }
        for target in targets {
            if let Some(host) = tinyurl_domain::target::stored_host(target)
                && hosts.contains(&host)
            {
                return Err(WriterError::invalid(
                    field,
                    format!("{host} is a short domain of this service; a link cannot lead to it"),
                ));
            }
        }
        Ok(())
    }

    /// The targets of a new link and its rules, against the short domains.
    async fn check_targets(
        &self,
        target: Option<&str>,
        rules: Option<&[tinyurl_domain::RedirectRule]>,
    ) -> Result<(), WriterError> {
        let hosts = self.short_hosts(false).await?;
        Self::refuse_short_targets(&hosts, "target_url", target)?;
        Self::refuse_short_targets(
            &hosts,
            "rules",
            rules
                .unwrap_or_default()
                .iter()
                .map(|rule| rule.target_url.as_str()),
        )
    }

    /// [`Self::check_domain`] and [`Self::check_targets`] for a create.
    async fn check_create(&self, valid: &crate::input::ValidCreate) -> Result<(), WriterError> {
        self.check_domain(valid.domain.as_deref()).await?;
        self.check_targets(Some(valid.target.as_str()), Some(&valid.options.rules))
            .await
    }

    /// The caller behind the call's key; a refused key is charged to the
    /// caller's address.
    async fn caller(&self, call: &Call) -> Result<crate::auth::Caller, WriterError> {
        let hash = call
            .key
            .as_ref()
            .ok_or(WriterError::Unauthenticated("no API key"))?;
        // Counted per address, an IPv6 client per /64.
        let address = || call.client.map(tinyurl_runtime::proxies::limited);
        let resolved = self
            .keys
            .resolve(
                hash,
                // An address that keeps failing spends none of the budget.
                || match address() {
                    Some(address) => self.limits.refuse_if_blocked(address),
                    None => Ok(()),
                },
                || self.store.resolve_key(hash),
            )
            .await;
        match resolved {
            // A key that could not be authenticated, refused or over the
            // budget, counts against the address: a flood from it is then
            // refused before it spends the budget real keys new here need.
            Err(error @ (WriterError::Unauthenticated(_) | WriterError::KeyBudgetSpent)) => {
                if let Some(address) = address()
                    && let Some(retry_after) = self.limits.charge_failure(address).await
                {
                    return Err(self.limits.too_many_failures(retry_after));
                }
                Err(error)
            }
            other => other,
        }
    }

    /// The refusal of a malformed key, charged to the caller's address as
    /// a wrong key is.
    async fn refuse_malformed(&self, call: &Call) -> WriterError {
        if let Some(address) = call.client.map(tinyurl_runtime::proxies::limited) {
            if let Err(refused) = self.limits.refuse_if_blocked(address) {
                return refused;
            }
            if let Some(retry_after) = self.limits.charge_failure(address).await {
                return self.limits.too_many_failures(retry_after);
            }
        }
        WriterError::Unauthenticated("the API key is malformed")
    }

    /// The owner of the call's key, when its scope allows `needed` and its
    /// rate allows `cost` more (a batch spends one per link).
    async fn owner(&self, call: &Call, needed: Scope, cost: u32) -> Result<OwnerId, WriterError> {
        let caller = self.caller(call).await?;
        let owner = caller.require(needed)?;
        self.limits.check(&caller, cost).await?;
        Ok(owner)
    }

    /// Refuses changes to `link` when an operator blocked it or its
    /// target's host is on the blocklist in force, naming the entry.
    fn refuse_if_blocked(&self, link: &StoredLink) -> Result<(), WriterError> {
        let entry = match TargetUrl::parse(&link.target_url, &self.policy()) {
            Err(tinyurl_domain::TargetUrlError::BlockedHost { host }) => Some(host),
            _ => None,
        };
        if !link.blocked && entry.is_none() {
            return Ok(());
        }
        let host = tinyurl_domain::target::stored_host(&link.target_url).unwrap_or_default();
        // The entry, once this writer polled it (within a second of the block).
        let listed = entry
            .map(|entry| format!(" as {entry}"))
            .unwrap_or_default();
        Err(WriterError::PermissionDenied(format!(
            "link {} is blocked by an operator: its target's host {host} is on the blocklist{listed}; it can only be deleted",
            link.code
        )))
    }

    /// The target policy in force.
    pub fn policy(&self) -> Arc<TargetPolicy> {
        Arc::clone(
            &self
                .policy
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Puts the file's `list` in force for every later create and update.
    pub fn set_blocklist(&self, list: tinyurl_domain::HostBlocklist) {
        self.replace_blocklist(|lists| lists.0 = list);
    }

    /// Puts the stored (`block-host`) `list` in force.
    pub fn set_stored_blocklist(&self, list: tinyurl_domain::HostBlocklist) {
        self.replace_blocklist(|lists| lists.1 = list);
    }

    fn replace_blocklist(
        &self,
        change: impl FnOnce(&mut (tinyurl_domain::HostBlocklist, tinyurl_domain::HostBlocklist)),
    ) {
        let mut lists = self
            .blocklists
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut lists);
        let union = lists.0.clone().union(&lists.1);
        metrics::gauge!("writer_blocklist_entries").set(union.len() as f64);
        let mut policy = self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *policy = Arc::new(TargetPolicy {
            blocklist: Arc::new(union),
            ..TargetPolicy::clone(&policy)
        });
    }
}

impl State {
    /// Statistics of one of `owner`'s links.
    async fn link_stats(
        &self,
        owner: OwnerId,
        code: &str,
        input: StatsInput,
    ) -> Result<LinkStats, WriterError> {
        let code = code_argument(code)?;
        let (query, classes) = self.stats_query(input)?;
        self.owned(owner, code).await?;
        self.key_stats(code, query, &classes).await
    }

    /// Refuses `code` unless it is one of `owner`'s links: owner-scoped like
    /// GetLink, another key's link is not found.
    async fn owned(&self, owner: OwnerId, code: &str) -> Result<(), WriterError> {
        if self.store.get(owner, code).await?.is_none() {
            return Err(WriterError::NotFound(code.to_owned()));
        }
        Ok(())
    }

    /// The range and granularity `input` asks for, within the rollups kept,
    /// and the classes it reads.
    fn stats_query(&self, input: StatsInput) -> Result<(StatsQuery, ClassFilter), WriterError> {
        let classes = ClassFilter::parse(&input.classes)?;
        let query = StatsQuery::parse(
            input.from,
            input.to,
            input.granularity,
            SystemTime::now(),
            self.minute_retention,
        )?;
        Ok((query, classes))
    }

    /// The statistics of whatever is counted under `key` (a link's key or an
    /// orphan key) over `query`, of the classes `classes`.
    async fn key_stats(
        &self,
        code: &str,
        query: StatsQuery,
        classes: &ClassFilter,
    ) -> Result<LinkStats, WriterError> {
        let (table, first, end) = query.buckets();
        let rows = self
            .clicks_store
            .rollups(
                code,
                table,
                (first, end),
                tinyurl_analytics::stats::TOP,
                &classes.codes(),
            )
            .await?;
        let lifetime = self.clicks_store.totals(code).await?;
        let (first_day, end_day) = query.days();
        // Unique visitors are people: none when people are not read.
        let visitors = if classes.includes(TrafficClass::Human) {
            self.clicks_store.visitors(code, first_day, end_day).await?
        } else {
            Vec::new()
        };
        Ok(LinkStats::assemble(query, lifetime, &rows, classes).with_visitors(&visitors))
    }
}
