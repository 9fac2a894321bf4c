//! One handler per operation, each with its OpenAPI description.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, header};

use super::bodies::{
    AddDomainBody, BatchCreateBody, BatchCreateResponse, BatchResult, CreateLinkBody,
    CreateWebhookBody, DeliveryList, DeliveryQueryParams, DomainBody, DomainList,
    DomainQueryParams, ExportQueryParams, LinkBody, LinkPage, ListQuery, OrphanQueryParams,
    PurgedBody, RenameTagBody, RuleBody, StatsBody, StatsQueryParams, TagBody, TagChange, TagList,
    UpdateLinkBody, UtmBody, WebhookBody, WebhookList, delivery_body, domain_body, link_body,
    link_path, redirect_status, stats_body, tag_body, time, webhook_body,
};
use super::extract::{
    Caller, JsonBody, LinkCode, TagName, WebhookId, create_input, decoded, query,
};
use super::{ApiError, Problem};
use tinyurl_analytics::Granularity;
use tinyurl_links::error::WriterError;
use tinyurl_links::input::{CreateInput, ListInput, MAX_BATCH, UpdateInput};
use tinyurl_links::{LinkService, StatsInput};

pub(super) type Links = State<Arc<LinkService>>;

/// Create a link.
#[utoipa::path(
    post,
    path = "/api/v1/links",
    tag = "links",
    request_body = CreateLinkBody,
    params(
        ("Idempotency-Key" = Option<String>, Header,
         description = "Retries with the same key (printable ASCII, at most 128 bytes) and the same body get the first create's link instead of a second one; the key with another body is refused (422)"),
    ),
    responses((status = 201, description = "Created (or the link an earlier request with the same Idempotency-Key created)", body = LinkBody,
               headers(("Location" = String, description = "The link's URL in this API"))),
              (status = 422, description = "The Idempotency-Key was used with another body", body = Problem,
               content_type = "application/problem+json")),
    security(("api_key" = [])),
)]
pub(super) async fn create_link(
    State(links): Links,
    Caller(call): Caller,
    headers: HeaderMap,
    body: Result<JsonBody<CreateLinkBody>, ApiError>,
) -> Result<Response, ApiError> {
    let idempotency_key = headers
        .get("idempotency-key")
        .map(|value| {
            value.to_str().map(str::to_owned).map_err(|_| {
                WriterError::invalid(
                    "idempotency_key",
                    "Idempotency-Key must be printable ASCII without spaces",
                )
            })
        })
        .transpose();
    let input = decoded(body)?.and_then(|JsonBody(body)| {
        create_input(
            body.target_url,
            body.alias,
            body.expires_at.as_deref(),
            body.redirect_type,
            body.forward_query,
            idempotency_key?,
            body.tags,
        )
        .map(|input| CreateInput {
            max_visits: body.max_visits,
            password: body.password,
            domain: body.domain,
            ..with_options(input, body.utm, body.rules)
        })
    });
    let link = links.create(&call, input).await?;
    let location = link_path(&link.code);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(link_body(&links, &link)),
    )
        .into_response())
}

/// Create up to 1,000 links; each item succeeds or fails on its own.
#[utoipa::path(
    post,
    path = "/api/v1/links/batch",
    tag = "links",
    request_body = BatchCreateBody,
    responses((status = 200, description = "One result per item, in order", body = BatchCreateResponse)),
    security(("api_key" = [])),
)]
pub(super) async fn batch_create_links(
    State(links): Links,
    Caller(call): Caller,
    body: Result<JsonBody<BatchCreateBody>, ApiError>,
) -> Result<axum::Json<BatchCreateResponse>, ApiError> {
    let JsonBody(body) = body?;
    if body.links.len() > MAX_BATCH {
        // Refused before any item is looked at, whatever the key.
        return Err(ApiError::invalid(
            "links",
            format!(
                "a batch holds 1 to {MAX_BATCH} links, got {}",
                body.links.len()
            ),
        ));
    }
    let items = body
        .links
        .into_iter()
        .map(|item| {
            create_input(
                item.target_url,
                item.alias,
                item.expires_at.as_deref(),
                item.redirect_type,
                item.forward_query,
                item.idempotency_key,
                item.tags,
            )
            .map(|input| CreateInput {
                max_visits: item.max_visits,
                password: item.password,
                domain: item.domain,
                ..with_options(input, item.utm, item.rules)
            })
        })
        .collect();
    let results = links.batch_create(&call, items).await?;
    Ok(axum::Json(BatchCreateResponse {
        results: results
            .into_iter()
            .map(|result| match result {
                Ok(link) => BatchResult::Link(Box::new(link_body(&links, &link))),
                Err(error) => BatchResult::Error(ApiError::Service(error).problem()),
            })
            .collect(),
    }))
}

/// One of the key's links.
#[utoipa::path(
    get,
    path = "/api/v1/links/{code}",
    tag = "links",
    params(("code" = String, Path, description = "The short code or alias")),
    responses((status = 200, description = "The link", body = LinkBody)),
    security(("api_key" = [])),
)]
pub(super) async fn get_link(
    State(links): Links,
    Caller(call): Caller,
    LinkCode(code): LinkCode,
) -> Result<axum::Json<LinkBody>, ApiError> {
    let link = links.get(&call, &code).await?;
    let mut body = link_body(&links, &link);
    body.visits_used = links.visits_used(&link).await;
    Ok(axum::Json(body))
}

/// Change a link's target, expiry, redirect type, tags, UTM fields or rules,
/// or switch it off and on.
#[utoipa::path(
    patch,
    path = "/api/v1/links/{code}",
    tag = "links",
    params(("code" = String, Path, description = "The short code or alias")),
    request_body = UpdateLinkBody,
    responses((status = 200, description = "The link as changed", body = LinkBody)),
    security(("api_key" = [])),
)]
pub(super) async fn update_link(
    State(links): Links,
    Caller(call): Caller,
    LinkCode(code): LinkCode,
    body: Result<JsonBody<UpdateLinkBody>, ApiError>,
) -> Result<axum::Json<LinkBody>, ApiError> {
    let input = decoded(body)?.and_then(|JsonBody(body)| {
        Ok(UpdateInput {
            expires_at: match body.expires_at {
                Some(Some(raw)) => Some(time(Some(&raw), "expires_at")?),
                Some(None) => Some(None),
                None => None,
            },
            redirect_status: redirect_status(body.redirect_type)?,
            target_url: body.target_url,
            enabled: body.enabled,
            forward_query: body.forward_query,
            tags: body.tags,
            utm: body.utm.map(|utm| utm.unwrap_or_default().into_utm()),
            rules: body
                .rules
                .map(|rules| rules.into_iter().map(RuleBody::into_input).collect()),
            max_visits: body.max_visits,
            password: body.password,
        })
    });
    let link = links.update(&call, &code, input).await?;
    Ok(axum::Json(link_body(&links, &link)))
}

/// Delete a link. Its code stays taken: it is never issued again.
#[utoipa::path(
    delete,
    path = "/api/v1/links/{code}",
    tag = "links",
    params(("code" = String, Path, description = "The short code or alias")),
    responses((status = 204, description = "Deleted")),
    security(("api_key" = [])),
)]
pub(super) async fn delete_link(
    State(links): Links,
    Caller(call): Caller,
    LinkCode(code): LinkCode,
) -> Result<StatusCode, ApiError> {
    links.delete(&call, &code).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The key's links, newest first, a page at a time; all of them or those
/// with a tag.
#[utoipa::path(
    get,
    path = "/api/v1/links",
    tag = "links",
    params(ListQuery),
    responses((status = 200, description = "A page of links", body = LinkPage)),
    security(("api_key" = [])),
)]
pub(super) async fn list_links(
    State(links): Links,
    Caller(call): Caller,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Result<axum::Json<LinkPage>, ApiError> {
    let params = query(params)?;
    let page = links
        .list(
            &call,
            ListInput {
                page_size: params.page_size,
                page_token: params.page_token,
                tag: params.tag,
            },
        )
        .await?;
    Ok(axum::Json(LinkPage {
        links: page
            .links
            .iter()
            .map(|link| link_body(&links, link))
            .collect(),
        next_page_token: page.next_page_token,
    }))
}

/// Click statistics of one of the key's links.
#[utoipa::path(
    get,
    path = "/api/v1/links/{code}/stats",
    tag = "links",
    params(("code" = String, Path, description = "The short code or alias"), StatsQueryParams),
    responses((status = 200, description = "Clicks in the range, by time and by dimension", body = StatsBody)),
    security(("api_key" = [])),
)]
pub(super) async fn link_stats(
    State(links): Links,
    Caller(call): Caller,
    LinkCode(code): LinkCode,
    params: Result<Query<StatsQueryParams>, QueryRejection>,
) -> Result<axum::Json<StatsBody>, ApiError> {
    let input = query(params).and_then(|params| {
        stats_input(
            params.from.as_deref(),
            params.to.as_deref(),
            params.granularity.as_deref(),
            params.classes.as_deref(),
        )
    });
    let input = decoded(input)?;
    let stats = links.stats(&call, &code, input).await?;
    Ok(axum::Json(stats_body(code, stats)))
}

/// A link's rollups as CSV: `start,dimension,value,clicks,bot_clicks`, a row
/// per bucket, dimension and value (`total` with an empty value: the
/// bucket's clicks), by bucket, dimension and value.
#[utoipa::path(
    get,
    path = "/api/v1/links/{code}/stats/export",
    tag = "links",
    params(("code" = String, Path, description = "The short code or alias"), ExportQueryParams),
    responses((status = 200, description = "The rows, with a header row", body = String,
               content_type = "text/csv")),
    security(("api_key" = [])),
)]
pub(super) async fn export_link_stats(
    State(links): Links,
    Caller(call): Caller,
    LinkCode(code): LinkCode,
    params: Result<Query<ExportQueryParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params);
    let dimensions: Vec<String> = params
        .as_ref()
        .ok()
        .and_then(|params| params.dimensions.as_deref())
        .map(|names| names.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let input = params.and_then(|params| {
        stats_input(
            params.from.as_deref(),
            params.to.as_deref(),
            params.granularity.as_deref(),
            params.classes.as_deref(),
        )
    });
    let input = decoded(input)?;
    let rows = links.export_stats(&call, &code, input, &dimensions).await?;
    let mut writer = csv::Writer::from_writer(Vec::new());
    let written = (|| -> Result<Vec<u8>, csv::Error> {
        writer.write_record(["start", "dimension", "value", "clicks", "bot_clicks"])?;
        for row in &rows {
            let start = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(row.start.max(0) as u64),
            )
            .to_string();
            writer.write_record([
                start.as_str(),
                row.dimension.name(),
                row.value.as_str(),
                &row.clicks.to_string(),
                &row.bot_clicks.to_string(),
            ])?;
        }
        writer
            .into_inner()
            .map_err(|error| error.into_error().into())
    })();
    let body = written.map_err(|error| ApiError::from(WriterError::Unexpected(error.into())))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"stats.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

/// Delete the click data of one of the key's links (manage scope).
#[utoipa::path(
    delete,
    path = "/api/v1/links/{code}/stats",
    tag = "links",
    params(("code" = String, Path, description = "The short code or alias")),
    responses((status = 200, description = "Deleted", body = PurgedBody)),
    security(("api_key" = [])),
)]
pub(super) async fn forget_link_clicks(
    State(links): Links,
    Caller(call): Caller,
    LinkCode(code): LinkCode,
) -> Result<axum::Json<PurgedBody>, ApiError> {
    let rows = links.forget_clicks(&call, Some(&code)).await?;
    Ok(axum::Json(PurgedBody { rows }))
}

/// Delete the click data of every link of the key, deleted ones included
/// (manage scope).
#[utoipa::path(
    delete,
    path = "/api/v1/stats",
    tag = "links",
    responses((status = 200, description = "Deleted", body = PurgedBody)),
    security(("api_key" = [])),
)]
pub(super) async fn forget_key_clicks(
    State(links): Links,
    Caller(call): Caller,
) -> Result<axum::Json<PurgedBody>, ApiError> {
    let rows = links.forget_clicks(&call, None).await?;
    Ok(axum::Json(PurgedBody { rows }))
}

/// A statistics range and granularity as the query string gives them.
fn stats_input(
    from: Option<&str>,
    to: Option<&str>,
    granularity: Option<&str>,
    classes: Option<&str>,
) -> Result<StatsInput, ApiError> {
    Ok(StatsInput {
        classes: classes
            .map(|names| vec![names.to_owned()])
            .unwrap_or_default(),
        from: time(from, "from")?,
        to: time(to, "to")?,
        granularity: match granularity {
            None => 0,
            Some("minute") => Granularity::Minute.number(),
            Some("hour") => Granularity::Hour.number(),
            Some("day") => Granularity::Day.number(),
            Some(other) => {
                return Err(ApiError::invalid(
                    "granularity",
                    format!("granularity {other:?} is not one of minute, hour, day"),
                ));
            }
        },
    })
}

/// Visits to codes that do not exist (and paths that are no code) on a
/// domain (manage scope): by who made them and by the path asked for.
#[utoipa::path(
    get,
    path = "/api/v1/orphan-visits",
    tag = "domains",
    params(OrphanQueryParams),
    responses((status = 200, description = "Visits in the range, by time, class and path", body = StatsBody)),
    security(("api_key" = [])),
)]
pub(super) async fn orphan_visits(
    State(links): Links,
    Caller(call): Caller,
    params: Result<Query<OrphanQueryParams>, QueryRejection>,
) -> Result<axum::Json<StatsBody>, ApiError> {
    let params = query(params);
    let domain = params
        .as_ref()
        .ok()
        .and_then(|params| params.domain.clone())
        .unwrap_or_default();
    let input = params.and_then(|params| {
        stats_input(
            params.from.as_deref(),
            params.to.as_deref(),
            params.granularity.as_deref(),
            params.classes.as_deref(),
        )
    });
    let input = decoded(input)?;
    let stats = links.orphan_visits(&call, &domain, input).await?;
    Ok(axum::Json(stats_body(String::new(), stats)))
}

/// Delete a domain's counts of visits to codes that do not exist (manage
/// scope).
#[utoipa::path(
    delete,
    path = "/api/v1/orphan-visits",
    tag = "domains",
    params(DomainQueryParams),
    responses((status = 200, description = "Deleted", body = PurgedBody)),
    security(("api_key" = [])),
)]
pub(super) async fn purge_orphan_visits(
    State(links): Links,
    Caller(call): Caller,
    params: Result<Query<DomainQueryParams>, QueryRejection>,
) -> Result<axum::Json<PurgedBody>, ApiError> {
    let domain = query(params)?.domain.unwrap_or_default();
    let rows = links.purge_orphan_visits(&call, &domain).await?;
    Ok(axum::Json(PurgedBody { rows }))
}

/// The key's tags, by name, each with its links and their lifetime clicks.
#[utoipa::path(
    get,
    path = "/api/v1/tags",
    tag = "tags",
    responses((status = 200, description = "The tags", body = TagList)),
    security(("api_key" = [])),
)]
pub(super) async fn list_tags(
    State(links): Links,
    Caller(call): Caller,
) -> Result<axum::Json<TagList>, ApiError> {
    let tags = links.tags(&call).await?;
    Ok(axum::Json(TagList {
        tags: tags.into_iter().map(tag_body).collect(),
    }))
}

/// One tag: its links and their lifetime clicks, summed.
#[utoipa::path(
    get,
    path = "/api/v1/tags/{tag}",
    tag = "tags",
    params(("tag" = String, Path, description = "The tag, percent-encoded")),
    responses((status = 200, description = "The tag", body = TagBody)),
    security(("api_key" = [])),
)]
pub(super) async fn get_tag(
    State(links): Links,
    Caller(call): Caller,
    TagName(tag): TagName,
) -> Result<axum::Json<TagBody>, ApiError> {
    Ok(axum::Json(tag_body(links.tag_stats(&call, &tag).await?)))
}

/// Rename a tag on every link that has it; a link with both names keeps one.
#[utoipa::path(
    patch,
    path = "/api/v1/tags/{tag}",
    tag = "tags",
    params(("tag" = String, Path, description = "The tag, percent-encoded")),
    request_body = RenameTagBody,
    responses((status = 200, description = "Renamed", body = TagChange)),
    security(("api_key" = [])),
)]
pub(super) async fn rename_tag(
    State(links): Links,
    Caller(call): Caller,
    TagName(tag): TagName,
    body: Result<JsonBody<RenameTagBody>, ApiError>,
) -> Result<axum::Json<TagChange>, ApiError> {
    let JsonBody(body) = body?;
    let links = links.rename_tag(&call, &tag, &body.name).await?;
    Ok(axum::Json(TagChange { links }))
}

/// Take a tag off every link that has it.
#[utoipa::path(
    delete,
    path = "/api/v1/tags/{tag}",
    tag = "tags",
    params(("tag" = String, Path, description = "The tag, percent-encoded")),
    responses((status = 200, description = "Deleted", body = TagChange)),
    security(("api_key" = [])),
)]
pub(super) async fn delete_tag(
    State(links): Links,
    Caller(call): Caller,
    TagName(tag): TagName,
) -> Result<axum::Json<TagChange>, ApiError> {
    let links = links.delete_tag(&call, &tag).await?;
    Ok(axum::Json(TagChange { links }))
}

/// Register a short domain (manage scope): links can be made on it, and
/// every redirect answers its host within seconds.
#[utoipa::path(
    post,
    path = "/api/v1/domains",
    tag = "domains",
    request_body = AddDomainBody,
    responses((status = 201, description = "Registered", body = DomainBody)),
    security(("api_key" = [])),
)]
pub(super) async fn add_domain(
    State(links): Links,
    Caller(call): Caller,
    body: Result<JsonBody<AddDomainBody>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonBody(body) = body?;
    let domain = links
        .add_domain(&call, &body.host, body.not_found_url.as_deref())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(domain_body(domain))).into_response())
}

/// The registered domains.
#[utoipa::path(
    get,
    path = "/api/v1/domains",
    tag = "domains",
    responses((status = 200, description = "The domains", body = DomainList)),
    security(("api_key" = [])),
)]
pub(super) async fn list_domains(
    State(links): Links,
    Caller(call): Caller,
) -> Result<axum::Json<DomainList>, ApiError> {
    let domains = links.domains(&call).await?;
    Ok(axum::Json(DomainList {
        domains: domains.into_iter().map(domain_body).collect(),
    }))
}

/// Remove a domain (manage scope); refused while links are on it.
#[utoipa::path(
    delete,
    path = "/api/v1/domains/{host}",
    tag = "domains",
    params(("host" = String, Path, description = "The domain's host")),
    responses(
        (status = 204, description = "Removed"),
        (status = 422, description = "Links are on the domain: delete them first", body = Problem,
         content_type = "application/problem+json"),
    ),
    security(("api_key" = [])),
)]
pub(super) async fn remove_domain(
    State(links): Links,
    Caller(call): Caller,
    TagName(host): TagName,
) -> Result<StatusCode, ApiError> {
    links.remove_domain(&call, &host).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Register a webhook endpoint (manage scope): it is told when the key's
/// links are created, updated, deleted, blocked or clicked, at least once, signed
/// per the Standard Webhooks specification. The answer holds its secret,
/// shown only here and on a rotation.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    request_body = CreateWebhookBody,
    responses(
        (status = 201, description = "Registered", body = WebhookBody),
    ),
    security(("api_key" = [])),
)]
pub(super) async fn create_webhook(
    State(links): Links,
    Caller(call): Caller,
    body: Result<JsonBody<CreateWebhookBody>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonBody(body) = body?;
    let created = links.create_webhook(&call, &body.url, &body.events).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(webhook_body(&created, true)),
    )
        .into_response())
}

/// The key's webhook endpoints.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    responses(
        (status = 200, description = "The endpoints", body = WebhookList),
    ),
    security(("api_key" = [])),
)]
pub(super) async fn list_webhooks(
    State(links): Links,
    Caller(call): Caller,
) -> Result<axum::Json<WebhookList>, ApiError> {
    let webhooks = links.webhooks(&call).await?;
    Ok(axum::Json(WebhookList {
        webhooks: webhooks
            .iter()
            .map(|webhook| webhook_body(webhook, false))
            .collect(),
    }))
}

/// Remove a webhook endpoint with its waiting messages and delivery log.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = i64, Path, description = "The endpoint's id")),
    responses(
        (status = 204, description = "Removed"),
    ),
    security(("api_key" = [])),
)]
pub(super) async fn delete_webhook(
    State(links): Links,
    Caller(call): Caller,
    WebhookId(id): WebhookId,
) -> Result<StatusCode, ApiError> {
    links.delete_webhook(&call, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Enable an endpoint disabled after a day of failures; its waiting
/// messages are sent at once.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/enable",
    tag = "webhooks",
    params(("id" = i64, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "Enabled", body = WebhookBody),
    ),
    security(("api_key" = [])),
)]
pub(super) async fn enable_webhook(
    State(links): Links,
    Caller(call): Caller,
    WebhookId(id): WebhookId,
) -> Result<axum::Json<WebhookBody>, ApiError> {
    let enabled = links.enable_webhook(&call, id).await?;
    Ok(axum::Json(webhook_body(&enabled, false)))
}

/// Give an endpoint a new secret (in the answer); the old one keeps
/// signing beside it for 24 hours.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    params(("id" = i64, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "Rotated", body = WebhookBody),
    ),
    security(("api_key" = [])),
)]
pub(super) async fn rotate_webhook_secret(
    State(links): Links,
    Caller(call): Caller,
    WebhookId(id): WebhookId,
) -> Result<axum::Json<WebhookBody>, ApiError> {
    let rotated = links.rotate_webhook_secret(&call, id).await?;
    Ok(axum::Json(webhook_body(&rotated, true)))
}

/// An endpoint's newest delivery attempts: status, latency, attempt.
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(("id" = i64, Path, description = "The endpoint's id"), DeliveryQueryParams),
    responses(
        (status = 200, description = "Newest first", body = DeliveryList),
    ),
    security(("api_key" = [])),
)]
pub(super) async fn webhook_deliveries(
    State(links): Links,
    Caller(call): Caller,
    WebhookId(id): WebhookId,
    params: Result<Query<DeliveryQueryParams>, QueryRejection>,
) -> Result<axum::Json<DeliveryList>, ApiError> {
    let params = query(params)?;
    let deliveries = links.webhook_deliveries(&call, id, params.limit).await?;
    Ok(axum::Json(DeliveryList {
        deliveries: deliveries.iter().map(delivery_body).collect(),
    }))
}

/// A create's UTM fields and rules, as sent.
fn with_options(input: CreateInput, utm: Option<UtmBody>, rules: Vec<RuleBody>) -> CreateInput {
    CreateInput {
        utm: utm.map(UtmBody::into_utm).unwrap_or_default(),
        rules: rules.into_iter().map(RuleBody::into_input).collect(),
        ..input
    }
}
