//! The public REST API (`/api/v1/…`): JSON over HTTP on the writer's own
//! listener, a thin adapter over the link service like the gRPC one. Errors
//! are RFC 9457 problem documents whose status comes from the one
//! `ErrorKind` table; the OpenAPI 3.1 document is generated from the
//! handlers and types below and served at `/api/v1/openapi.json`.

mod bodies;
mod extract;
mod handlers;
mod openapi;
mod problem;

pub(crate) use self::problem::retry_seconds;
pub use self::problem::{ApiError, Problem};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderName, HeaderValue, header};
use utoipa::OpenApi as _;

use self::handlers::{
    add_domain, batch_create_links, create_link, create_webhook, delete_link, delete_tag,
    delete_webhook, enable_webhook, export_link_stats, forget_key_clicks, forget_link_clicks,
    get_link, get_tag, link_stats, list_domains, list_links, list_tags, list_webhooks,
    orphan_visits, purge_orphan_visits, remove_domain, rename_tag, rotate_webhook_secret,
    update_link, webhook_deliveries,
};
use self::openapi::ApiDoc;
use self::problem::{method_not_allowed, not_found};
use tinyurl_links::LinkService;

/// Largest request body: a full batch of the longest legitimate items, with
/// room for JSON's quoting. Anything bigger is refused unread (413).
pub const MAX_BODY_BYTES: usize = crate::grpc::MAX_REQUEST_BYTES * 2;

/// The router of `/api/v1`, with CORS for `cors_origins` (none: no CORS
/// headers at all, so browsers on other origins cannot call the API).
pub fn router(links: Arc<LinkService>, cors_origins: &[HeaderValue]) -> Router {
    let api = Router::new()
        .route("/api/v1/links", post(create_link).get(list_links))
        .route("/api/v1/links/batch", post(batch_create_links))
        .route(
            "/api/v1/links/{code}",
            get(get_link).patch(update_link).delete(delete_link),
        )
        .route(
            "/api/v1/links/{code}/stats",
            get(link_stats).delete(forget_link_clicks),
        )
        .route("/api/v1/stats", axum::routing::delete(forget_key_clicks))
        .route("/api/v1/links/{code}/stats/export", get(export_link_stats))
        .route("/api/v1/tags", get(list_tags))
        .route(
            "/api/v1/tags/{tag}",
            get(get_tag).patch(rename_tag).delete(delete_tag),
        )
        .route("/api/v1/domains", post(add_domain).get(list_domains))
        .route(
            "/api/v1/domains/{host}",
            axum::routing::delete(remove_domain),
        )
        .route("/api/v1/webhooks", post(create_webhook).get(list_webhooks))
        .route(
            "/api/v1/webhooks/{id}",
            axum::routing::delete(delete_webhook),
        )
        .route("/api/v1/webhooks/{id}/enable", post(enable_webhook))
        .route(
            "/api/v1/webhooks/{id}/rotate-secret",
            post(rotate_webhook_secret),
        )
        .route("/api/v1/webhooks/{id}/deliveries", get(webhook_deliveries))
        .route(
            "/api/v1/orphan-visits",
            get(orphan_visits).delete(purge_orphan_visits),
        )
        .route("/api/v1/openapi.json", get(serve_openapi))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(links);
    if cors_origins.is_empty() {
        return api;
    }
    let origins = if cors_origins.iter().any(|origin| origin == "*") {
        tower_http::cors::AllowOrigin::any()
    } else {
        tower_http::cors::AllowOrigin::list(cors_origins.iter().cloned())
    };
    api.layer(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                http::Method::GET,
                http::Method::POST,
                http::Method::PATCH,
                http::Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                header::RETRY_AFTER,
                header::LOCATION,
                HeaderName::from_static("ratelimit"),
                HeaderName::from_static("ratelimit-policy"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The OpenAPI document, as served and as checked in (`api/openapi.json`).
pub fn openapi_json() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"));
    json.push('\n');
    json
}

async fn serve_openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// The connecting peer, on plaintext and TLS listeners alike.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// TLS connections of [`tinyurl_runtime::tls::accept`], as axum serves them.
pub struct TlsListener {
    incoming:
        futures::stream::BoxStream<'static, std::io::Result<tinyurl_runtime::tls::TlsConnection>>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(
        listener: tokio::net::TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            incoming: Box::pin(tinyurl_runtime::tls::accept(listener, config)),
            local,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tinyurl_runtime::tls::TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match futures::StreamExt::next(&mut self.incoming).await {
                Some(Ok(connection)) => {
                    if let Ok(peer) = connection.peer_addr() {
                        return (connection, peer);
                    }
                }
                Some(Err(_)) => {}
                // The accept loop ended: nothing more will come.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::problem::retry_seconds;
    use super::*;
    use tinyurl_links::error::WriterError;

    /// The checked-in document is the generated one. After an API change,
    /// `TINYURL_WRITE_OPENAPI=1 cargo test -p tinyurl-writer openapi`
    /// rewrites it.
    #[test]
    fn openapi_document_is_checked_in() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../api/openapi.json");
        let generated = openapi_json();
        if std::env::var_os("TINYURL_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("api/openapi.json is writable");
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "api/openapi.json differs from the generated document; rerun with TINYURL_WRITE_OPENAPI=1"
        );
        assert!(generated.contains("\"openapi\": \"3.1.0\""));
    }

    #[test]
    fn retry_hints_round_up() {
        assert_eq!(retry_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_seconds(Duration::from_millis(2_001)), 3);
    }

    #[test]
    fn problems_carry_the_kind_status_and_field() {
        let problem = ApiError::invalid("target_url", "bad").problem();
        assert_eq!(
            (
                problem.status,
                problem.code.as_str(),
                problem.field.as_deref()
            ),
            (400, "invalid_argument", Some("target_url"))
        );
        let problem = ApiError::Service(WriterError::NotFound("x".to_owned())).problem();
        assert_eq!((problem.status, problem.field), (404, None));
    }
}
