//! The `tinyurl.v1.Links` gRPC service: validation, minting, storage and
//! cache coherence for every call.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tinyurl_domain::{Alias, CodeCodec, RedirectStatus, TargetPolicy, TargetUrl};
use tinyurl_proto::v1::links_server::Links;
use tinyurl_proto::v1::{
    BatchCreateLinksRequest, BatchCreateLinksResponse, BatchCreateLinksResult, BatchItemError,
    CreateLinkRequest, DeleteLinkRequest, DeleteLinkResponse, GetLinkRequest, GetLinkStatsRequest,
    Link, ListLinksRequest, ListLinksResponse, RedirectType, StatsCount, StatsPoint,
    UpdateLinkRequest, batch_create_links_result,
};

use crate::analytics::{ClickStore, LinkStats, StatsQuery};
use crate::auth::{KeyCache, KeyHash, OwnerId, Scope};
use crate::batcher::CreateBatcher;
use crate::cache::LinkCache;
use crate::error::WriterError;
use crate::leaser::IdLeaser;
use crate::store::{LinkChanges, LinkStore, NewLink, StoredLink};

/// Most links in one `BatchCreateLinks`.
pub const MAX_BATCH: usize = 1_000;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// Largest request decoded: a full batch of the longest legitimate items
/// (target, alias, idempotency key) with room for the protobuf framing and
/// the other fields. Anything bigger is refused before it is parsed.
pub const MAX_REQUEST_BYTES: usize =
    MAX_BATCH * (tinyurl_domain::target::MAX_TARGET_URL_LEN + 64 + MAX_IDEMPOTENCY_KEY_LEN + 64);
/// Furthest accepted expiry.
const MAX_EXPIRY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Attempts to mint a code that does not meet an existing alias.
const MINT_ROUNDS: usize = 5;

pub struct LinksService {
    state: Arc<State>,
    batcher: CreateBatcher,
}

pub struct State {
    pub store: Arc<dyn LinkStore>,
    /// The same store, as the analytics reads it.
    pub clicks_store: Arc<dyn ClickStore>,
    /// How far back minute and hour statistics reach.
    pub minute_retention: Duration,
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
    /// Whose `x-forwarded-for` names the client.
    pub proxies: tinyurl_runtime::proxies::TrustedProxies,
}

/// Group commits of single creates in flight at once: two, so one group's
/// cache write overlaps the next group's INSERT. More would split the queue
/// into smaller groups, and on a busy primary statements cost more than rows.
const COMMIT_SLOTS: usize = 2;
/// Most single creates committed together.
const GROUP_COMMIT_MAX: usize = 256;

impl LinksService {
    pub fn new(state: Arc<State>) -> Self {
        let batcher = CreateBatcher::start(Arc::clone(&state), COMMIT_SLOTS, GROUP_COMMIT_MAX);
        Self { state, batcher }
    }
}

/// A create request that passed validation.
#[derive(Debug, Clone)]
pub struct ValidCreate {
    target: TargetUrl,
    alias: Option<Alias>,
    expires_at: Option<SystemTime>,
    redirect_status: RedirectStatus,
    forward_query: bool,
    idempotency_key: Option<String>,
}

#[tracing::instrument(name = "validate", skip_all)]
fn validate_create(
    request: &CreateLinkRequest,
    policy: &TargetPolicy,
) -> Result<ValidCreate, WriterError> {
    let target = TargetUrl::parse(&request.target_url, policy)
        .map_err(|error| WriterError::invalid("target_url", error.to_string()))?;
    let alias = if request.alias.is_empty() {
        None
    } else {
        Some(
            Alias::parse(&request.alias)
                .map_err(|error| WriterError::invalid("alias", error.to_string()))?,
        )
    };
    let expires_at = request
        .expires_at
        .map(|at| parse_expiry(at, "expires_at"))
        .transpose()?;
    let idempotency_key = match request.idempotency_key.as_str() {
        "" => None,
        key if key.len() > MAX_IDEMPOTENCY_KEY_LEN => {
            return Err(WriterError::invalid(
                "idempotency_key",
                format!(
                    "idempotency_key is {} bytes; at most {MAX_IDEMPOTENCY_KEY_LEN} allowed",
                    key.len()
                ),
            ));
        }
        key if !key.bytes().all(|byte| byte.is_ascii_graphic()) => {
            return Err(WriterError::invalid(
                "idempotency_key",
                "idempotency_key must be printable ASCII without spaces",
            ));
        }
        key => Some(key.to_owned()),
    };
    Ok(ValidCreate {
        target,
        alias,
        expires_at,
        redirect_status: parse_redirect_type(request.redirect_type, "redirect_type")?
            .unwrap_or_default(),
        forward_query: request.forward_query,
        idempotency_key,
    })
}

/// `Ok(None)` for unspecified.
fn parse_redirect_type(
    raw: i32,
    field: &'static str,
) -> Result<Option<RedirectStatus>, WriterError> {
    match RedirectType::try_from(raw) {
        Ok(RedirectType::Unspecified) => Ok(None),
        Ok(RedirectType::RedirectType301) => Ok(Some(RedirectStatus::MovedPermanently)),
        Ok(RedirectType::RedirectType302) => Ok(Some(RedirectStatus::Found)),
        Ok(RedirectType::RedirectType307) => Ok(Some(RedirectStatus::TemporaryRedirect)),
        Ok(RedirectType::RedirectType308) => Ok(Some(RedirectStatus::PermanentRedirect)),
        Err(_) => Err(WriterError::invalid(
            field,
            format!("redirect type {raw} is not one of 301, 302, 307, 308"),
        )),
    }
}

fn parse_expiry(
    timestamp: prost_types::Timestamp,
    field: &'static str,
) -> Result<SystemTime, WriterError> {
    // The protobuf Timestamp contract: 0001-01-01 to 9999-12-31, nanos in [0, 1e9).
    let in_contract = (0..1_000_000_000).contains(&timestamp.nanos)
        && (-62_135_596_800..=253_402_300_799).contains(&timestamp.seconds);
    if !in_contract {
        return Err(WriterError::invalid(
            field,
            format!("{field} is not a valid timestamp"),
        ));
    }
    let at = SystemTime::try_from(timestamp)
        .map_err(|_| WriterError::invalid(field, format!("{field} is not a valid timestamp")))?;
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
    // Postgres stores microseconds; round here so what we return is what is stored.
    let micros = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros());
    Ok(UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX)))
}

impl State {
    /// The owner of the request's key, when its scope allows `needed` and
    /// its rate allows one more call.
    async fn owner<T>(
        &self,
        request: &tonic::Request<T>,
        needed: Scope,
    ) -> Result<OwnerId, WriterError> {
        self.owner_spending(request, needed, 1).await
    }

    /// [`Self::owner`] for a call that spends `cost` of the key's rate (a
    /// batch spends one per link).
    async fn owner_spending<T>(
        &self,
        request: &tonic::Request<T>,
        needed: Scope,
        cost: u32,
    ) -> Result<OwnerId, WriterError> {
        let hash = request
            .extensions()
            .get::<KeyHash>()
            .ok_or(WriterError::Unauthenticated("no API key"))?;
        // Only needed when the key is not cached, or is refused: a key in
        // use costs no header parsing.
        let address = || self.client_address(request);
        let resolved = self
            .keys
            .resolve(hash, || async {
                // Only keys this writer does not know cost a lookup, and an
                // address that keeps failing gets none.
                if let Some(address) = address() {
                    self.limits.refuse_if_blocked(address)?;
                }
                self.store.resolve_key(hash).await
            })
            .await;
        let caller = match resolved {
            Ok(caller) => caller,
            Err(error @ WriterError::Unauthenticated(_)) => {
                if let Some(address) = address()
                    && let Some(retry_after) = self.limits.charge_failure(address).await
                {
                    return Err(WriterError::TooManyFailures { retry_after });
                }
                return Err(error);
            }
            Err(other) => return Err(other),
        };
        let owner = caller.require(needed)?;
        self.limits.check(&caller, cost).await?;
        Ok(owner)
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

    /// The address the request came from: the peer, or what a trusted
    /// proxy says in `x-forwarded-for`.
    fn client_address<T>(&self, request: &tonic::Request<T>) -> Option<std::net::IpAddr> {
        let peer = request.remote_addr().or_else(|| {
            request
                .extensions()
                .get::<tinyurl_runtime::tls::TlsConnectInfo>()
                .and_then(|info| info.tcp.remote_addr())
        })?;
        let forwarded = request
            .metadata()
            .get("x-forwarded-for")
            .map(tonic::metadata::MetadataValue::as_bytes);
        Some(self.proxies.client(peer.ip(), forwarded))
    }

    fn to_proto(&self, link: &StoredLink) -> Link {
        Link {
            short_url: format!("{}/{}", self.public_base_url, link.code),
            code: link.code.clone(),
            target_url: link.target_url.clone(),
            redirect_type: i32::from(link.redirect_status.code()),
            forward_query: link.forward_query,
            expires_at: link.expires_at.map(prost_types::Timestamp::from),
            enabled: link.enabled,
            is_alias: link.is_alias,
            created_at: Some(prost_types::Timestamp::from(link.created_at)),
            updated_at: Some(prost_types::Timestamp::from(link.updated_at)),
        }
    }

    /// Creates every valid item in one insert (plus rare follow-ups for
    /// idempotent replays and codes that met an alias). One result per item.
    pub(crate) async fn create_many(
        &self,
        owner: OwnerId,
        items: Vec<Result<ValidCreate, WriterError>>,
    ) -> Vec<Result<StoredLink, WriterError>> {
        let mut results: Vec<Option<Result<StoredLink, WriterError>>> =
            Vec::with_capacity(items.len());
        let mut pending: Vec<(usize, ValidCreate)> = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            match item {
                Ok(valid) => {
                    results.push(None);
                    pending.push((index, valid));
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }

        for round in 0..MINT_ROUNDS {
            if pending.is_empty() {
                break;
            }
            let generated = pending
                .iter()
                .filter(|(_, item)| item.alias.is_none())
                .count();
            let ids = match self.leaser.take(generated).await {
                Ok(ids) => ids,
                Err(error) => {
                    let message = error.to_string();
                    for (index, _) in pending.drain(..) {
                        results[index] = Some(Err(WriterError::Unavailable(message.clone())));
                    }
                    break;
                }
            };
            let mut ids = ids.into_iter();
            let rows: Vec<NewLink> = pending
                .iter()
                .map(|(_, item)| {
                    let (code, id) = match &item.alias {
                        Some(alias) => (alias.as_str().to_owned(), None),
                        None => {
                            let id = ids.next().unwrap_or_default();
                            (self.codec.encode(id).into_string(), i64::try_from(id).ok())
                        }
                    };
                    NewLink {
                        code,
                        id,
                        target_url: item.target.as_str().to_owned(),
                        redirect_status: item.redirect_status,
                        forward_query: item.forward_query,
                        expires_at: item.expires_at,
                        is_alias: item.alias.is_some(),
                        idempotency_key: item.idempotency_key.clone(),
                    }
                })
                .collect();
            let inserted = match self.store.insert(owner, &rows).await {
                Ok(inserted) => inserted,
                Err(error) => {
                    let message = error.public_message();
                    let kind_unavailable = matches!(error, WriterError::Unavailable(_));
                    for (index, _) in pending.drain(..) {
                        results[index] = Some(Err(if kind_unavailable {
                            WriterError::Unavailable(message.clone())
                        } else {
                            WriterError::Unexpected(anyhow::anyhow!("insert failed: {message}"))
                        }));
                    }
                    break;
                }
            };

            let mut created = Vec::with_capacity(inserted.len());
            let mut claimed = std::collections::HashSet::with_capacity(inserted.len());
            let mut not_inserted = Vec::new();
            for ((index, item), row) in pending.drain(..).zip(rows) {
                match inserted.get_key_value(&row.code) {
                    // The returned code is ours only if no other item of this
                    // batch claimed it (a duplicate alias in one batch).
                    Some((code, (created_at, updated_at))) if claimed.insert(code.as_str()) => {
                        let link = StoredLink {
                            code: row.code,
                            target_url: row.target_url,
                            redirect_status: row.redirect_status,
                            forward_query: row.forward_query,
                            expires_at: row.expires_at,
                            enabled: true,
                            is_alias: row.is_alias,
                            created_at: *created_at,
                            updated_at: *updated_at,
                        };
                        created.push((index, link));
                    }
                    _ => not_inserted.push((index, item)),
                }
            }
            let links: Vec<StoredLink> = created.iter().map(|(_, link)| link.clone()).collect();
            self.cache.write_through(&links).await;
            for (index, link) in created {
                results[index] = Some(Ok(link));
            }
            if not_inserted.is_empty() {
                break;
            }

            // Idempotent replays first: the original link is the answer.
            let keys: Vec<&str> = not_inserted
                .iter()
                .filter_map(|(_, item)| item.idempotency_key.as_deref())
                .collect();
            let replays = match self.store.find_by_idempotency_keys(owner, &keys).await {
                Ok(replays) => replays,
                Err(error) => {
                    let message = error.public_message();
                    for (index, _) in not_inserted {
                        results[index] = Some(Err(WriterError::Unavailable(message.clone())));
                    }
                    break;
                }
            };
            for (index, item) in not_inserted {
                if let Some(original) = item
                    .idempotency_key
                    .as_ref()
                    .and_then(|key| replays.get(key))
                {
                    metrics::counter!("writer_idempotent_replays_total").increment(1);
                    results[index] = Some(Ok(original.clone()));
                } else if let Some(alias) = &item.alias {
                    results[index] = Some(Err(WriterError::AlreadyExists(format!(
                        "alias {:?} is taken (codes of deleted links are never reissued)",
                        alias.as_str()
                    ))));
                } else {
                    // The minted code met an existing alias: skip that ID and
                    // mint again.
                    metrics::counter!("writer_codes_skipped_total").increment(1);
                    tracing::info!(round, "generated code met an alias; minting another");
                    pending.push((index, item));
                }
            }
        }
        for (index, _) in pending {
            results[index] = Some(Err(WriterError::Unexpected(anyhow::anyhow!(
                "no free code after {MINT_ROUNDS} attempts"
            ))));
        }
        results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(WriterError::Unexpected(anyhow::anyhow!(
                        "item was not processed"
                    )))
                })
            })
            .collect()
    }
}

fn record_outcome(operation: &'static str, outcome: &'static str, started: Instant) {
    metrics::counter!("writer_requests_total", "op" => operation, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("writer_request_duration_seconds", "op" => operation)
        .record(started.elapsed().as_secs_f64());
}

fn outcome_of<T>(result: &Result<T, WriterError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(error) => error.kind().label(),
    }
}

fn code_argument(code: &str) -> Result<&str, WriterError> {
    if code.is_empty()
        || code.len() > 64
        || !code
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
    {
        return Err(WriterError::invalid(
            "code",
            "code must be 1 to 64 of A-Z, a-z, 0-9, '_' and '-'",
        ));
    }
    Ok(code)
}

#[tonic::async_trait]
impl Links for LinksService {
    #[tracing::instrument(skip_all)]
    async fn get_link_stats(
        &self,
        request: tonic::Request<GetLinkStatsRequest>,
    ) -> Result<tonic::Response<tinyurl_proto::v1::LinkStats>, tonic::Status> {
        let started = Instant::now();
        let result = async {
            let owner = self.state.owner(&request, Scope::Read).await?;
            self.state.link_stats(owner, request.get_ref()).await
        }
        .await;
        record_outcome("stats", outcome_of(&result), started);
        Ok(tonic::Response::new(
            result.map_err(WriterError::into_status)?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn create_link(
        &self,
        request: tonic::Request<CreateLinkRequest>,
    ) -> Result<tonic::Response<Link>, tonic::Status> {
        let started = Instant::now();
        let result = async {
            let owner = self.state.owner(&request, Scope::Create).await?;
            let valid = validate_create(request.get_ref(), &self.state.policy())?;
            self.state.limits.spend_daily_creates(owner, 1).await?;
            self.batcher.create(owner, valid).await
        }
        .await;
        record_outcome("create", outcome_of(&result), started);
        let link = result.map_err(WriterError::into_status)?;
        Ok(tonic::Response::new(self.state.to_proto(&link)))
    }

    #[tracing::instrument(skip_all, fields(count = request.get_ref().links.len()))]
    async fn batch_create_links(
        &self,
        request: tonic::Request<BatchCreateLinksRequest>,
    ) -> Result<tonic::Response<BatchCreateLinksResponse>, tonic::Status> {
        let started = Instant::now();
        let cost = u32::try_from(request.get_ref().links.len()).unwrap_or(u32::MAX);
        let owner = match self
            .state
            .owner_spending(&request, Scope::Create, cost)
            .await
        {
            Ok(owner) => owner,
            Err(error) => {
                record_outcome("batch_create", error.kind().label(), started);
                return Err(error.into_status());
            }
        };
        let items = &request.get_ref().links;
        if items.is_empty() || items.len() > MAX_BATCH {
            record_outcome("batch_create", "invalid_argument", started);
            return Err(WriterError::invalid(
                "links",
                format!("a batch holds 1 to {MAX_BATCH} links, got {}", items.len()),
            )
            .into_status());
        }
        if let Err(error) = self
            .state
            .limits
            .spend_daily_creates(owner, items.len() as u64)
            .await
        {
            record_outcome("batch_create", error.kind().label(), started);
            return Err(error.into_status());
        }
        metrics::histogram!("writer_batch_size").record(items.len() as f64);
        let validated = items
            .iter()
            .map(|item| validate_create(item, &self.state.policy()))
            .collect();
        let results = self.state.create_many(owner, validated).await;
        let results = results
            .into_iter()
            .map(|result| BatchCreateLinksResult {
                result: Some(match result {
                    Ok(link) => batch_create_links_result::Result::Link(self.state.to_proto(&link)),
                    Err(error) => batch_create_links_result::Result::Error(BatchItemError {
                        code: error.kind().grpc_code() as i32,
                        field: error.field().unwrap_or_default().to_owned(),
                        message: error.public_message(),
                    }),
                }),
            })
            .collect();
        record_outcome("batch_create", "ok", started);
        Ok(tonic::Response::new(BatchCreateLinksResponse { results }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_link(
        &self,
        request: tonic::Request<GetLinkRequest>,
    ) -> Result<tonic::Response<Link>, tonic::Status> {
        let started = Instant::now();
        let result = async {
            let owner = self.state.owner(&request, Scope::Read).await?;
            let code = code_argument(&request.get_ref().code)?;
            self.state
                .store
                .get(owner, code)
                .await?
                .ok_or_else(|| WriterError::NotFound(code.to_owned()))
        }
        .await;
        record_outcome("get", outcome_of(&result), started);
        Ok(tonic::Response::new(
            self.state
                .to_proto(&result.map_err(WriterError::into_status)?),
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn update_link(
        &self,
        request: tonic::Request<UpdateLinkRequest>,
    ) -> Result<tonic::Response<Link>, tonic::Status> {
        let started = Instant::now();
        let result = async {
            let owner = self.state.owner(&request, Scope::Manage).await?;
            let message = request.get_ref();
            let code = code_argument(&message.code)?;
            if message.clear_expiry && message.expires_at.is_some() {
                return Err(WriterError::invalid(
                    "clear_expiry",
                    "set either expires_at or clear_expiry, not both",
                ));
            }
            let changes = LinkChanges {
                target_url: message
                    .target_url
                    .as_deref()
                    .map(|raw| {
                        TargetUrl::parse(raw, &self.state.policy()).map(TargetUrl::into_string)
                    })
                    .transpose()
                    .map_err(|error| WriterError::invalid("target_url", error.to_string()))?,
                expires_at: message
                    .expires_at
                    .map(|at| parse_expiry(at, "expires_at"))
                    .transpose()?,
                clear_expiry: message.clear_expiry,
                redirect_status: parse_redirect_type(message.redirect_type, "redirect_type")?,
                enabled: message.enabled,
                forward_query: message.forward_query,
            };
            let link = self
                .state
                .store
                .update(owner, code, &changes)
                .await?
                .ok_or_else(|| WriterError::NotFound(code.to_owned()))?;
            self.state.cache.replace(&link).await;
            Ok(link)
        }
        .await;
        record_outcome("update", outcome_of(&result), started);
        Ok(tonic::Response::new(
            self.state
                .to_proto(&result.map_err(WriterError::into_status)?),
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_link(
        &self,
        request: tonic::Request<DeleteLinkRequest>,
    ) -> Result<tonic::Response<DeleteLinkResponse>, tonic::Status> {
        let started = Instant::now();
        let result = async {
            let owner = self.state.owner(&request, Scope::Manage).await?;
            let code = code_argument(&request.get_ref().code)?;
            if !self.state.store.delete(owner, code).await? {
                return Err(WriterError::NotFound(code.to_owned()));
            }
            self.state.cache.remove(code).await;
            Ok(())
        }
        .await;
        record_outcome("delete", outcome_of(&result), started);
        result.map_err(WriterError::into_status)?;
        Ok(tonic::Response::new(DeleteLinkResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list_links(
        &self,
        request: tonic::Request<ListLinksRequest>,
    ) -> Result<tonic::Response<ListLinksResponse>, tonic::Status> {
        let started = Instant::now();
        let result = async {
            let owner = self.state.owner(&request, Scope::Read).await?;
            let message = request.get_ref();
            let page_size = match message.page_size {
                0 => 100,
                size @ 1..=1000 => i64::from(size),
                size => {
                    return Err(WriterError::invalid(
                        "page_size",
                        format!("page_size {size} is above 1000"),
                    ));
                }
            };
            let after = match message.page_token.as_str() {
                "" => None,
                token => Some(parse_page_token(token)?),
            };
            let links = self.state.store.list(owner, page_size, after).await?;
            let next_page_token = match links.last() {
                Some(last) if links.len() as i64 == page_size => page_token(last),
                _ => String::new(),
            };
            Ok(ListLinksResponse {
                links: links.iter().map(|link| self.state.to_proto(link)).collect(),
                next_page_token,
            })
        }
        .await;
        record_outcome("list", outcome_of(&result), started);
        Ok(tonic::Response::new(
            result.map_err(WriterError::into_status)?,
        ))
    }
}

impl State {
    /// Statistics of one of `owner`'s links.
    async fn link_stats(
        &self,
        owner: OwnerId,
        request: &GetLinkStatsRequest,
    ) -> Result<tinyurl_proto::v1::LinkStats, WriterError> {
        let code = code_argument(&request.code)?;
        let timestamp = |value: Option<prost_types::Timestamp>, field: &'static str| {
            value
                .map(|value| {
                    SystemTime::try_from(value).map_err(|_| {
                        WriterError::invalid(field, format!("{field} is not a valid timestamp"))
                    })
                })
                .transpose()
        };
        let query = StatsQuery::parse(
            timestamp(request.from, "from")?,
            timestamp(request.to, "to")?,
            request.granularity,
            SystemTime::now(),
            self.minute_retention,
        )?;
        // Owner-scoped like GetLink: another key's link is not found.
        if self.store.get(owner, code).await?.is_none() {
            return Err(WriterError::NotFound(code.to_owned()));
        }
        let (table, first, end) = query.buckets();
        let rows = self.clicks_store.rollups(code, table, first, end).await?;
        let lifetime = self.clicks_store.totals(code).await?;
        let stats = LinkStats::assemble(query, lifetime, &rows);
        let at = |seconds: i64| prost_types::Timestamp { seconds, nanos: 0 };
        let counts = |counts: Vec<(String, u64)>| {
            counts
                .into_iter()
                .map(|(value, clicks)| StatsCount { value, clicks })
                .collect()
        };
        Ok(tinyurl_proto::v1::LinkStats {
            code: code.to_owned(),
            lifetime_clicks: stats.lifetime_clicks,
            lifetime_bot_clicks: stats.lifetime_bot_clicks,
            from: Some(at(stats.query.from)),
            to: Some(at(stats.query.to)),
            granularity: stats.query.granularity.number(),
            clicks: stats.clicks,
            bot_clicks: stats.bot_clicks,
            series: stats
                .series
                .iter()
                .map(|point| StatsPoint {
                    start: Some(at(point.start)),
                    clicks: point.clicks,
                    bot_clicks: point.bot_clicks,
                })
                .collect(),
            referrers: counts(stats.referrers),
            countries: counts(stats.countries),
            browsers: counts(stats.browsers),
            devices: counts(stats.devices),
            bots: counts(stats.bots),
        })
    }
}

/// `<created_at micros since epoch>.<code>`; codes never contain a '.'.
fn page_token(link: &StoredLink) -> String {
    let micros = link
        .created_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros());
    format!("{micros}.{}", link.code)
}

fn parse_page_token(token: &str) -> Result<(SystemTime, String), WriterError> {
    let invalid = || WriterError::invalid("page_token", "page_token is not one this server issued");
    let (micros, code) = token.split_once('.').ok_or_else(invalid)?;
    let micros: u64 = micros.parse().map_err(|_| invalid())?;
    code_argument(code).map_err(|_| invalid())?;
    Ok((UNIX_EPOCH + Duration::from_micros(micros), code.to_owned()))
}
