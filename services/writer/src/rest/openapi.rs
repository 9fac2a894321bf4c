//! The OpenAPI 3.1 document: the operations, and what they all share (the
//! API-key scheme, the problem answers).

use utoipa::OpenApi;

use super::Problem;
use super::handlers::{
    __path_add_domain, __path_batch_create_links, __path_create_link, __path_create_webhook,
    __path_delete_link, __path_delete_tag, __path_delete_webhook, __path_enable_webhook,
    __path_export_link_stats, __path_forget_key_clicks, __path_forget_link_clicks, __path_get_link,
    __path_get_tag, __path_link_stats, __path_list_domains, __path_list_links, __path_list_tags,
    __path_list_webhooks, __path_orphan_visits, __path_purge_orphan_visits, __path_remove_domain,
    __path_rename_tag, __path_rotate_webhook_secret, __path_update_link, __path_webhook_deliveries,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tinyurl",
        description = "Create and manage short links. Every call takes an API key as `Authorization: Bearer tu_…`. Errors are RFC 9457 problem documents (`application/problem+json`) naming the field at fault; 429 answers carry `Retry-After` and the IETF `RateLimit-Policy` and `RateLimit` fields.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(create_link, batch_create_links, get_link, update_link, delete_link, list_links, link_stats,
          export_link_stats, forget_link_clicks, forget_key_clicks,
          list_tags, get_tag, rename_tag, delete_tag, add_domain, list_domains, remove_domain,
          orphan_visits, purge_orphan_visits, create_webhook, list_webhooks, delete_webhook,
          enable_webhook, rotate_webhook_secret, webhook_deliveries),
    components(schemas(Problem)),
    modifiers(&Conventions),
    tags((name = "links", description = "Short links"),
         (name = "tags", description = "The tags of a key's links"),
         (name = "domains", description = "Short domains besides the default one"),
         (name = "webhooks", description = "Endpoints told when the key's links change")),
)]
pub struct ApiDoc;

/// What every operation shares, added once rather than on each: the API-key
/// scheme and the problem answers.
pub(super) struct Conventions;

/// Problem answers every authenticated operation may give.
pub(super) const PROBLEMS: [(&str, &str); 9] = [
    ("400", "The request is invalid; `field` names what is wrong"),
    ("401", "No API key, or not a valid one"),
    ("403", "The key's scope does not allow this"),
    ("404", "No such link (or tag) for this key"),
    ("409", "The alias is taken"),
    ("413", "The body is too large"),
    ("415", "The body is not application/json"),
    (
        "429",
        "A rate limit or quota; see Retry-After and RateLimit",
    ),
    ("503", "A dependency is unavailable; retry"),
];

impl utoipa::Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};

        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        for (status, description) in PROBLEMS {
            components.responses.insert(
                format!("Problem{status}"),
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/problem+json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    )
                    .build()
                    .into(),
            );
        }
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for (status, _) in PROBLEMS {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            Ref::from_response_name(format!("Problem{status}")).into()
                        });
                }
            }
        }
    }
}
