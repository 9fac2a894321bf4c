//! The `tinyurl.v1.Links` gRPC service: decodes protobuf into the link
//! service's inputs and encodes its answers. No rule about links lives here.

use std::sync::Arc;

use std::time::SystemTime;
use tinyurl_runtime::proxies::TrustedProxies;

use tinyurl_domain::RedirectStatus;
use tinyurl_proto::v1 as proto;
use tinyurl_proto::v1::links_server::Links;
use tinyurl_proto::v1::{
    BatchCreateLinksRequest, BatchCreateLinksResponse, BatchCreateLinksResult, BatchItemError,
    CreateLinkRequest, DeleteLinkRequest, DeleteLinkResponse, DeleteTagRequest, GetLinkRequest,
    GetLinkStatsRequest, GetTagRequest, Link, ListLinksRequest, ListLinksResponse, ListTagsRequest,
    ListTagsResponse, RedirectType, RenameTagRequest, StatsCount, StatsPoint, Tag,
    TagChangeResponse, UpdateLinkRequest, batch_create_links_result,
};

use tinyurl_links::auth::{KeyHash, bearer};
use tinyurl_links::error::WriterError;
use tinyurl_links::input::{
    CreateInput, ListInput, MAX_BATCH, MAX_IDEMPOTENCY_KEY_LEN, UpdateInput,
};
use tinyurl_links::store::{StoredLink, TagSummary};
use tinyurl_links::{Call, LinkService, StatsInput};

/// Largest request decoded: a full batch of the longest legitimate items
/// (target, alias, idempotency key) with room for the protobuf framing and
/// the other fields. Anything bigger is refused before it is parsed.
pub const MAX_REQUEST_BYTES: usize =
    MAX_BATCH * (tinyurl_domain::target::MAX_TARGET_URL_LEN + 64 + MAX_IDEMPOTENCY_KEY_LEN + 64);

/// The gRPC status of a link service error: its kind's code, a message safe
/// to show, `google.rpc.RetryInfo` on a limit and `google.rpc.BadRequest`
/// naming the field at fault.
pub fn status(error: WriterError) -> tonic::Status {
    let kind = error.kind();
    let message = error.public_message();
    if let WriterError::RateLimited { retry_after, .. }
    | WriterError::TooManyFailures { retry_after, .. }
    | WriterError::QuotaExhausted { retry_after, .. } = error
    {
        // google.rpc.RetryInfo: clients (and gRPC retry policies) read the
        // wait from it rather than from the message.
        return <tonic::Status as tonic_types::StatusExt>::with_error_details(
            kind.grpc_code(),
            message,
            tonic_types::ErrorDetails::with_retry_info(Some(retry_after)),
        );
    }
    match error.field() {
        Some(field) => kind.field_status(field, message),
        None => kind.status(message),
    }
}

/// Tonic interceptor: requires `authorization: Bearer tu_…` of the right shape
/// and attaches its hash. Unknown keys are caught by the handler's lookup.
#[allow(clippy::result_large_err)] // tonic's Interceptor signature is fixed
pub fn authenticate(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let header = request
        .metadata()
        .get("authorization")
        .map(tonic::metadata::MetadataValue::as_bytes);
    let hash = bearer(header).map_err(status)?;
    request.extensions_mut().insert(hash);
    Ok(request)
}

pub struct LinksService {
    links: Arc<LinkService>,
    /// Peers whose `x-forwarded-for` names the caller
    /// (`TINYURL_GRPC_TRUSTED_PROXIES`): gRPC callers are services inside
    /// the network, not the REST API's proxies, so they get a list of their
    /// own, empty unless a gRPC proxy stands in front.
    proxies: TrustedProxies,
}

impl LinksService {
    pub fn new(links: Arc<LinkService>, proxies: TrustedProxies) -> Self {
        Self { links, proxies }
    }

    /// Who is calling: the key hash the interceptor attached, and the
    /// client address.
    fn call<T>(&self, request: &tonic::Request<T>) -> Call {
        let peer = request.remote_addr().or_else(|| {
            request
                .extensions()
                .get::<tinyurl_runtime::tls::TlsConnectInfo>()
                .and_then(|info| info.tcp.remote_addr())
        });
        Call {
            key: request.extensions().get::<KeyHash>().copied(),
            client: peer.map(|peer| {
                self.proxies.client(
                    peer.ip(),
                    request
                        .metadata()
                        .get("x-forwarded-for")
                        .map(tonic::metadata::MetadataValue::as_bytes),
                )
            }),
        }
    }
}

fn create_input(request: CreateLinkRequest) -> Result<CreateInput, WriterError> {
    Ok(CreateInput {
        redirect_status: redirect_status(request.redirect_type)?,
        expires_at: request
            .expires_at
            .map(|at| timestamp(at, "expires_at"))
            .transpose()?,
        target_url: request.target_url,
        alias: Some(request.alias),
        forward_query: request.forward_query,
        idempotency_key: Some(request.idempotency_key),
        tags: request.tags,
        utm: request.utm.map(utm_input).unwrap_or_default(),
        rules: request.rules.into_iter().map(rule_input).collect(),
        max_visits: request.max_visits,
        password: request.password,
        domain: Some(request.domain),
    })
}

/// Empty strings are unset, as everywhere in the proto.
fn utm_input(utm: proto::Utm) -> tinyurl_domain::Utm {
    let set = |value: String| (!value.is_empty()).then_some(value);
    tinyurl_domain::Utm {
        source: set(utm.source),
        medium: set(utm.medium),
        campaign: set(utm.campaign),
        term: set(utm.term),
        content: set(utm.content),
    }
}

fn rule_input(rule: proto::RedirectRule) -> tinyurl_links::input::RuleInput {
    tinyurl_links::input::RuleInput {
        devices: rule.devices,
        countries: rule.countries,
        languages: rule.languages,
        target_url: rule.target_url,
    }
}

fn utm_to_proto(utm: &tinyurl_domain::Utm) -> Option<proto::Utm> {
    let value = |field: &Option<String>| field.clone().unwrap_or_default();
    (!utm.is_empty()).then(|| proto::Utm {
        source: value(&utm.source),
        medium: value(&utm.medium),
        campaign: value(&utm.campaign),
        term: value(&utm.term),
        content: value(&utm.content),
    })
}

fn rule_to_proto(rule: &tinyurl_domain::RedirectRule) -> proto::RedirectRule {
    let rule = tinyurl_links::input::RuleInput::from(rule);
    proto::RedirectRule {
        devices: rule.devices,
        countries: rule.countries,
        languages: rule.languages,
        target_url: rule.target_url,
    }
}

fn tag_to_proto(summary: TagSummary) -> Tag {
    Tag {
        name: summary.tag,
        links: summary.links.unsigned_abs(),
        lifetime_clicks: summary.clicks.0.unsigned_abs(),
        lifetime_bot_clicks: summary.clicks.1.unsigned_abs(),
    }
}

/// `Ok(None)` for unspecified.
fn redirect_status(raw: i32) -> Result<Option<RedirectStatus>, WriterError> {
    match RedirectType::try_from(raw) {
        Ok(RedirectType::Unspecified) => Ok(None),
        Ok(RedirectType::RedirectType301) => Ok(Some(RedirectStatus::MovedPermanently)),
        Ok(RedirectType::RedirectType302) => Ok(Some(RedirectStatus::Found)),
        Ok(RedirectType::RedirectType307) => Ok(Some(RedirectStatus::TemporaryRedirect)),
        Ok(RedirectType::RedirectType308) => Ok(Some(RedirectStatus::PermanentRedirect)),
        Err(_) => Err(WriterError::invalid(
            "redirect_type",
            format!("redirect type {raw} is not one of 301, 302, 307, 308"),
        )),
    }
}

fn timestamp(
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
    SystemTime::try_from(timestamp)
        .map_err(|_| WriterError::invalid(field, format!("{field} is not a valid timestamp")))
}

fn to_proto(links: &LinkService, link: &StoredLink) -> Link {
    let (domain, code) = tinyurl_domain::domains::split_key(&link.code);
    Link {
        short_url: links.short_url(&link.code),
        code: code.to_owned(),
        domain: domain.unwrap_or_default().to_owned(),
        target_url: link.target_url.clone(),
        redirect_type: i32::from(link.redirect_status.code()),
        forward_query: link.forward_query,
        expires_at: link.expires_at.map(prost_types::Timestamp::from),
        enabled: link.enabled,
        is_alias: link.is_alias,
        created_at: Some(prost_types::Timestamp::from(link.created_at)),
        updated_at: Some(prost_types::Timestamp::from(link.updated_at)),
        blocked: link.blocked,
        tags: link.tags.clone(),
        utm: utm_to_proto(&link.options.utm),
        rules: link.options.rules.iter().map(rule_to_proto).collect(),
        max_visits: link.options.max_visits,
        password_protected: link.options.is_protected(),
        visits_used: None,
    }
}

fn domain_to_proto(domain: &tinyurl_links::store::Domain) -> tinyurl_proto::v1::Domain {
    tinyurl_proto::v1::Domain {
        host: domain.host.clone(),
        not_found_url: domain.not_found_url.clone().unwrap_or_default(),
        created_at: Some(prost_types::Timestamp::from(domain.created_at)),
    }
}

type Answer<T> = Result<tonic::Response<T>, tonic::Status>;

#[tonic::async_trait]
impl Links for LinksService {
    #[tracing::instrument(skip_all)]
    async fn create_link(&self, request: tonic::Request<CreateLinkRequest>) -> Answer<Link> {
        let call = self.call(&request);
        let input = create_input(request.into_inner());
        let link = self.links.create(&call, input).await.map_err(status)?;
        Ok(tonic::Response::new(to_proto(&self.links, &link)))
    }

    #[tracing::instrument(skip_all, fields(count = request.get_ref().links.len()))]
    async fn batch_create_links(
        &self,
        request: tonic::Request<BatchCreateLinksRequest>,
    ) -> Answer<BatchCreateLinksResponse> {
        let call = self.call(&request);
        let items = request
            .into_inner()
            .links
            .into_iter()
            .map(create_input)
            .collect();
        let results = self
            .links
            .batch_create(&call, items)
            .await
            .map_err(status)?;
        let results = results
            .into_iter()
            .map(|result| BatchCreateLinksResult {
                result: Some(match result {
                    Ok(link) => {
                        batch_create_links_result::Result::Link(to_proto(&self.links, &link))
                    }
                    Err(error) => batch_create_links_result::Result::Error(BatchItemError {
                        code: error.kind().grpc_code() as i32,
                        field: error.field().unwrap_or_default().to_owned(),
                        message: error.public_message(),
                    }),
                }),
            })
            .collect();
        Ok(tonic::Response::new(BatchCreateLinksResponse { results }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_link(&self, request: tonic::Request<GetLinkRequest>) -> Answer<Link> {
        let link = self
            .links
            .get(&self.call(&request), &request.get_ref().code)
            .await
            .map_err(status)?;
        let mut answer = to_proto(&self.links, &link);
        answer.visits_used = self.links.visits_used(&link).await;
        Ok(tonic::Response::new(answer))
    }

    #[tracing::instrument(skip_all)]
    async fn update_link(&self, request: tonic::Request<UpdateLinkRequest>) -> Answer<Link> {
        let call = self.call(&request);
        let message = request.into_inner();
        let input = (|| {
            if message.clear_expiry && message.expires_at.is_some() {
                return Err(WriterError::invalid(
                    "clear_expiry",
                    "set either expires_at or clear_expiry, not both",
                ));
            }
            let expires_at = match message.expires_at {
                Some(at) => Some(Some(timestamp(at, "expires_at")?)),
                None if message.clear_expiry => Some(None),
                None => None,
            };
            Ok(UpdateInput {
                target_url: message.target_url,
                expires_at,
                redirect_status: redirect_status(message.redirect_type)?,
                enabled: message.enabled,
                forward_query: message.forward_query,
                tags: message.tags.map(|tags| tags.tags),
                utm: message.utm.map(utm_input),
                rules: message
                    .rules
                    .map(|rules| rules.rules.into_iter().map(rule_input).collect()),
                max_visits: match (message.max_visits, message.clear_max_visits) {
                    (Some(_), true) => {
                        return Err(WriterError::invalid(
                            "clear_max_visits",
                            "set either max_visits or clear_max_visits, not both",
                        ));
                    }
                    (Some(cap), false) => Some(Some(cap)),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
                password: match (message.password, message.clear_password) {
                    (Some(_), true) => {
                        return Err(WriterError::invalid(
                            "clear_password",
                            "set either password or clear_password, not both",
                        ));
                    }
                    (Some(password), false) => Some(Some(password)),
                    (None, true) => Some(None),
                    (None, false) => None,
                },
            })
        })();
        let link = self
            .links
            .update(&call, &message.code, input)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(to_proto(&self.links, &link)))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_link(
        &self,
        request: tonic::Request<DeleteLinkRequest>,
    ) -> Answer<DeleteLinkResponse> {
        self.links
            .delete(&self.call(&request), &request.get_ref().code)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(DeleteLinkResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list_links(
        &self,
        request: tonic::Request<ListLinksRequest>,
    ) -> Answer<ListLinksResponse> {
        let call = self.call(&request);
        let message = request.into_inner();
        let page = self
            .links
            .list(
                &call,
                ListInput {
                    page_size: Some(message.page_size),
                    page_token: Some(message.page_token),
                    tag: Some(message.tag),
                },
            )
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(ListLinksResponse {
            links: page
                .links
                .iter()
                .map(|link| to_proto(&self.links, link))
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_tags(
        &self,
        request: tonic::Request<ListTagsRequest>,
    ) -> Answer<ListTagsResponse> {
        let tags = self
            .links
            .tags(&self.call(&request))
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(ListTagsResponse {
            tags: tags.into_iter().map(tag_to_proto).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_tag(&self, request: tonic::Request<GetTagRequest>) -> Answer<Tag> {
        let summary = self
            .links
            .tag_stats(&self.call(&request), &request.get_ref().tag)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(tag_to_proto(summary)))
    }

    #[tracing::instrument(skip_all)]
    async fn rename_tag(
        &self,
        request: tonic::Request<RenameTagRequest>,
    ) -> Answer<TagChangeResponse> {
        let call = self.call(&request);
        let message = request.into_inner();
        let links = self
            .links
            .rename_tag(&call, &message.tag, &message.new_name)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(TagChangeResponse { links }))
    }

    #[tracing::instrument(skip_all)]
    async fn add_domain(
        &self,
        request: tonic::Request<tinyurl_proto::v1::AddDomainRequest>,
    ) -> Answer<tinyurl_proto::v1::Domain> {
        let message = request.get_ref();
        let domain = self
            .links
            .add_domain(
                &self.call(&request),
                &message.host,
                Some(message.not_found_url.as_str()),
            )
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(domain_to_proto(&domain)))
    }

    async fn list_domains(
        &self,
        request: tonic::Request<tinyurl_proto::v1::ListDomainsRequest>,
    ) -> Answer<tinyurl_proto::v1::ListDomainsResponse> {
        let domains = self
            .links
            .domains(&self.call(&request))
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(
            tinyurl_proto::v1::ListDomainsResponse {
                domains: domains.iter().map(domain_to_proto).collect(),
            },
        ))
    }

    async fn remove_domain(
        &self,
        request: tonic::Request<tinyurl_proto::v1::RemoveDomainRequest>,
    ) -> Answer<tinyurl_proto::v1::RemoveDomainResponse> {
        self.links
            .remove_domain(&self.call(&request), &request.get_ref().host)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(
            tinyurl_proto::v1::RemoveDomainResponse {},
        ))
    }

    async fn delete_tag(
        &self,
        request: tonic::Request<DeleteTagRequest>,
    ) -> Answer<TagChangeResponse> {
        let links = self
            .links
            .delete_tag(&self.call(&request), &request.get_ref().tag)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(TagChangeResponse { links }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_link_stats(
        &self,
        request: tonic::Request<GetLinkStatsRequest>,
    ) -> Answer<tinyurl_proto::v1::LinkStats> {
        let call = self.call(&request);
        let message = request.into_inner();
        let input = stats_input(
            message.from,
            message.to,
            message.granularity,
            message.classes,
        );
        let stats = self
            .links
            .stats(&call, &message.code, input)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(stats_message(message.code, stats)))
    }

    async fn export_link_stats(
        &self,
        request: tonic::Request<tinyurl_proto::v1::ExportLinkStatsRequest>,
    ) -> Answer<tinyurl_proto::v1::ExportLinkStatsResponse> {
        let call = self.call(&request);
        let message = request.into_inner();
        let input = stats_input(
            message.from,
            message.to,
            message.granularity,
            message.classes,
        );
        let rows = self
            .links
            .export_stats(&call, &message.code, input, &message.dimensions)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(
            tinyurl_proto::v1::ExportLinkStatsResponse {
                rows: rows
                    .into_iter()
                    .map(|row| tinyurl_proto::v1::StatsRow {
                        start: Some(prost_types::Timestamp {
                            seconds: row.start,
                            nanos: 0,
                        }),
                        dimension: row.dimension.name().to_owned(),
                        value: row.value,
                        clicks: row.clicks,
                        bot_clicks: row.bot_clicks,
                    })
                    .collect(),
            },
        ))
    }

    async fn forget_clicks(
        &self,
        request: tonic::Request<tinyurl_proto::v1::ForgetClicksRequest>,
    ) -> Answer<tinyurl_proto::v1::ForgetClicksResponse> {
        let call = self.call(&request);
        let code = request.get_ref().code.as_str();
        let code = (!code.is_empty()).then_some(code);
        let rows = self
            .links
            .forget_clicks(&call, code)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(
            tinyurl_proto::v1::ForgetClicksResponse { rows },
        ))
    }

    async fn get_orphan_visits(
        &self,
        request: tonic::Request<tinyurl_proto::v1::GetOrphanVisitsRequest>,
    ) -> Answer<tinyurl_proto::v1::LinkStats> {
        let call = self.call(&request);
        let message = request.into_inner();
        let input = stats_input(
            message.from,
            message.to,
            message.granularity,
            message.classes,
        );
        let stats = self
            .links
            .orphan_visits(&call, &message.domain, input)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(stats_message(String::new(), stats)))
    }

    async fn purge_orphan_visits(
        &self,
        request: tonic::Request<tinyurl_proto::v1::PurgeOrphanVisitsRequest>,
    ) -> Answer<tinyurl_proto::v1::PurgeOrphanVisitsResponse> {
        let call = self.call(&request);
        let rows = self
            .links
            .purge_orphan_visits(&call, &request.get_ref().domain)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(
            tinyurl_proto::v1::PurgeOrphanVisitsResponse { rows },
        ))
    }

    async fn create_webhook(
        &self,
        request: tonic::Request<proto::CreateWebhookRequest>,
    ) -> Answer<proto::Webhook> {
        let message = request.get_ref();
        let created = self
            .links
            .create_webhook(&self.call(&request), &message.url, &message.events)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(webhook_message(&created, true)))
    }

    async fn list_webhooks(
        &self,
        request: tonic::Request<proto::ListWebhooksRequest>,
    ) -> Answer<proto::ListWebhooksResponse> {
        let webhooks = self
            .links
            .webhooks(&self.call(&request))
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(proto::ListWebhooksResponse {
            webhooks: webhooks
                .iter()
                .map(|webhook| webhook_message(webhook, false))
                .collect(),
        }))
    }

    async fn delete_webhook(
        &self,
        request: tonic::Request<proto::DeleteWebhookRequest>,
    ) -> Answer<proto::DeleteWebhookResponse> {
        self.links
            .delete_webhook(&self.call(&request), request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(proto::DeleteWebhookResponse {}))
    }

    async fn enable_webhook(
        &self,
        request: tonic::Request<proto::EnableWebhookRequest>,
    ) -> Answer<proto::Webhook> {
        let enabled = self
            .links
            .enable_webhook(&self.call(&request), request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(webhook_message(&enabled, false)))
    }

    async fn rotate_webhook_secret(
        &self,
        request: tonic::Request<proto::RotateWebhookSecretRequest>,
    ) -> Answer<proto::Webhook> {
        let rotated = self
            .links
            .rotate_webhook_secret(&self.call(&request), request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(webhook_message(&rotated, true)))
    }

    async fn list_webhook_deliveries(
        &self,
        request: tonic::Request<proto::ListWebhookDeliveriesRequest>,
    ) -> Answer<proto::ListWebhookDeliveriesResponse> {
        let message = request.get_ref();
        let limit = (message.limit != 0).then_some(i64::from(message.limit));
        let deliveries = self
            .links
            .webhook_deliveries(&self.call(&request), message.id, limit)
            .await
            .map_err(status)?;
        Ok(tonic::Response::new(proto::ListWebhookDeliveriesResponse {
            deliveries: deliveries
                .iter()
                .map(|delivery| proto::WebhookDelivery {
                    message_id: delivery.message_id.clone(),
                    event_type: delivery.event_type.clone(),
                    attempt: delivery.attempt,
                    status: delivery.status.map_or(0, u32::from),
                    error: delivery.error.clone().unwrap_or_default(),
                    latency_ms: u32::try_from(delivery.latency.as_millis()).unwrap_or(u32::MAX),
                    delivered: delivery.delivered,
                    at: Some(prost_types::Timestamp::from(delivery.at)),
                })
                .collect(),
        }))
    }
}

/// An endpoint as the API answers it; the secret only when `with_secret`.
fn webhook_message(
    webhook: &tinyurl_links::webhooks::StoredWebhook,
    with_secret: bool,
) -> proto::Webhook {
    proto::Webhook {
        id: webhook.id,
        url: webhook.url.clone(),
        events: webhook.events.clone(),
        secret: if with_secret {
            webhook.secret.clone()
        } else {
            String::new()
        },
        enabled: webhook.disabled_at.is_none(),
        created_at: Some(prost_types::Timestamp::from(webhook.created_at)),
        disabled_at: webhook.disabled_at.map(prost_types::Timestamp::from),
        failing_since: webhook.failing_since.map(prost_types::Timestamp::from),
        pending: webhook.pending,
    }
}

/// A statistics request's range and granularity, or why they are refused.
fn stats_input(
    from: Option<prost_types::Timestamp>,
    to: Option<prost_types::Timestamp>,
    granularity: i32,
    classes: Vec<String>,
) -> Result<StatsInput, WriterError> {
    let time = |value: Option<prost_types::Timestamp>, field| {
        value.map(|value| timestamp(value, field)).transpose()
    };
    Ok(StatsInput {
        from: time(from, "from")?,
        to: time(to, "to")?,
        granularity,
        classes,
    })
}

/// Statistics as the API answers them.
fn stats_message(
    code: String,
    stats: tinyurl_analytics::LinkStats,
) -> tinyurl_proto::v1::LinkStats {
    let at = |seconds: i64| prost_types::Timestamp { seconds, nanos: 0 };
    let counts = |counts: Vec<(String, u64)>| {
        counts
            .into_iter()
            .map(|(value, clicks)| StatsCount { value, clicks })
            .collect()
    };
    tinyurl_proto::v1::LinkStats {
        code,
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
        rules: counts(stats.rules),
        classes: counts(stats.classes),
        paths: counts(stats.paths),
        visitors: stats.visitors,
        daily_visitors: stats
            .daily_visitors
            .iter()
            .map(|(day, visitors)| tinyurl_proto::v1::DayVisitors {
                day: Some(at(*day)),
                visitors: *visitors,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(value: Option<&str>) -> tonic::Request<()> {
        let mut request = tonic::Request::new(());
        if let Some(value) = value {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("ascii metadata"));
        }
        request
    }

    #[test]
    fn generated_keys_pass_and_carry_their_hash() {
        let (key, hash) = tinyurl_links::auth::generate_key();
        let request =
            authenticate(request_with(Some(&format!("Bearer {key}")))).expect("valid key");
        assert_eq!(request.extensions().get::<KeyHash>(), Some(&hash));
    }

    #[test]
    fn missing_or_malformed_keys_are_unauthenticated() {
        for value in [
            None,
            Some("tu_abc"),
            Some("Basic dXNlcjpwdw=="),
            Some("Bearer tu_short"),
            Some("Bearer xx_0123456789012345678901234567890123456789012"),
        ] {
            let status = authenticate(request_with(value)).expect_err("must be refused");
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{value:?}");
        }
    }
}
