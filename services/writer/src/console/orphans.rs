//! Visits to codes that do not exist, per domain (manage scope): the
//! series, who made them, the paths asked for, and a purge of the counts.

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use http::StatusCode;
use serde::Deserialize;
use tinyurl_links::auth::Scope;

use super::handlers::{form, preset_stats};
use super::pages::{self, OrphanView};
use super::{Refused, Shared, Signed, html, see_other};

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct OrphanParams {
    /// A registered domain's host; empty: the default domain.
    domain: String,
    range: Option<String>,
    /// A traffic class to show alone; empty: everyone.
    class: String,
    done: String,
    rows: u64,
}

pub(super) async fn orphans_page(
    State(console): State<Shared>,
    signed: Signed,
    Query(params): Query<OrphanParams>,
) -> Result<Response, Refused> {
    // Orphan visits are every key's.
    signed.require(Scope::Manage)?;
    let domains: Vec<String> = console
        .links
        .domains(&signed.call)
        .await?
        .into_iter()
        .map(|domain| domain.host)
        .collect();
    // An empty name is no class: the default view.
    let classes = vec![params.class.clone()];
    let (range_name, stats) = preset_stats(params.range.as_deref(), &classes, |input| {
        console
            .links
            .orphan_visits(&signed.call, &params.domain, Ok(input))
    })
    .await;
    let (status, stats) = match stats {
        Ok(stats) => (StatusCode::OK, Ok(stats)),
        Err(error) => (error.kind().http_status(), Err(error.public_message())),
    };
    let notice = (params.done == "purged").then(|| {
        format!(
            "Purged: {} rollup row{} deleted.",
            params.rows,
            if params.rows == 1 { "" } else { "s" }
        )
    });
    let view = OrphanView {
        domain: &params.domain,
        domains: &domains,
        range: range_name,
        class: &params.class,
        stats: stats.as_ref().map_err(Clone::clone),
        notice: notice.as_deref(),
    };
    Ok(html(status, pages::orphans(&signed.nav(), &view)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct PurgeForm {
    csrf: String,
    domain: String,
    confirm: Option<String>,
}

pub(super) async fn purge(
    State(console): State<Shared>,
    signed: Signed,
    body: Result<Form<PurgeForm>, FormRejection>,
) -> Result<Response, Refused> {
    let body = form(body)?;
    signed.check_csrf(&body.csrf)?;
    signed.require(Scope::Manage)?;
    if body.confirm.is_none() {
        return Err(Refused::from(super::error_page(
            StatusCode::BAD_REQUEST,
            "Tick the box to confirm the purge.",
        )));
    }
    let rows = console
        .links
        .purge_orphan_visits(&signed.call, &body.domain)
        .await?;
    // The host was accepted by the service, so it is a plain DNS name.
    Ok(see_other(&format!(
        "/console/orphan-visits?domain={}&done=purged&rows={rows}",
        body.domain
    )))
}
