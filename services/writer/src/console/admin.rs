//! The operator's console pages, for an `admin` key: every API key (list
//! with last use, create with scope and rate, rotate with a grace period,
//! revoke, set a rate) and the stored host blocklist (list, block,
//! unblock). They act on every key's data through the link service, which
//! refuses any other key.

use std::time::Duration;

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use http::StatusCode;
use serde::Deserialize;
use tinyurl_links::auth::Scope;
use tinyurl_links::keys::parse_rate;

use super::handlers::form;
use super::pages;
use super::{Refused, Shared, Signed, html, see_other};

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct DoneParams {
    done: String,
    links: usize,
}

/// The notice after a change, from the page's query (only words of our
/// own).
fn notice(params: &DoneParams) -> Option<String> {
    let plural = if params.links == 1 { "" } else { "s" };
    Some(match params.done.as_str() {
        "revoked" => "Revoked; every writer refuses the key within a second.".to_owned(),
        "rate" => "Rate set; writers apply it within a minute.".to_owned(),
        "blocked" => format!(
            "Blocked; {} link{plural} now answer 410 Gone.",
            params.links
        ),
        "unblocked" => format!(
            "Unblocked; {} link{plural} back as their owners set them.",
            params.links
        ),
        _ => return None,
    })
}

pub(super) async fn keys_page(
    State(console): State<Shared>,
    signed: Signed,
    Query(params): Query<DoneParams>,
) -> Result<Response, Refused> {
    signed.require(Scope::Admin)?;
    let keys = console.links.api_keys(&signed.call).await?;
    Ok(html(
        StatusCode::OK,
        pages::keys(&signed.nav(), &keys, notice(&params).as_deref(), None),
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct CreateKeyForm {
    csrf: String,
    name: String,
    scope: String,
    rate: String,
}

pub(super) async fn create_key(
    State(console): State<Shared>,
    signed: Signed,
    body: Result<Form<CreateKeyForm>, FormRejection>,
) -> Result<Response, Refused> {
    let body = form(body)?;
    signed.check_csrf(&body.csrf)?;
    signed.require(Scope::Admin)?;
    let refused = async |error: tinyurl_links::error::WriterError| {
        let keys = console
            .links
            .api_keys(&signed.call)
            .await
            .unwrap_or_default();
        html(
            error.kind().http_status(),
            pages::keys(&signed.nav(), &keys, None, Some(&error.public_message())),
        )
    };
    let Some(scope) = Scope::parse(body.scope.trim()) else {
        return Ok(refused(tinyurl_links::error::WriterError::invalid(
            "scope",
            "the scope is read, create, manage or admin",
        ))
        .await);
    };
    let rate = match parse_rate(&body.rate) {
        Ok(rate) => rate,
        Err(error) => return Ok(refused(error).await),
    };
    match console
        .links
        .create_api_key(&signed.call, &body.name, scope, rate)
        .await
    {
        Ok(issued) => Ok(html(
            StatusCode::OK,
            pages::new_key(
                &signed.nav(),
                &format!("Created API key {} ({}).", issued.id, scope.as_str()),
                &issued.key,
            ),
        )),
        Err(error) => Ok(refused(error).await),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct KeyActionForm {
    csrf: String,
    grace: String,
    rate: String,
    confirm: Option<String>,
}

/// The grace periods a rotation offers.
fn grace(raw: &str) -> Duration {
    match raw {
        "0" => Duration::ZERO,
        "1h" => Duration::from_secs(3600),
        "7d" => Duration::from_secs(7 * 86_400),
        "30d" => Duration::from_secs(30 * 86_400),
        _ => Duration::from_secs(86_400),
    }
}

pub(super) async fn rotate_key(
    State(console): State<Shared>,
    signed: Signed,
    Path(id): Path<i64>,
    body: Result<Form<KeyActionForm>, FormRejection>,
) -> Result<Response, Refused> {
    let body = form(body)?;
    signed.check_csrf(&body.csrf)?;
    signed.require(Scope::Admin)?;
    let grace = grace(&body.grace);
    let key = console
        .links
        .rotate_api_key(&signed.call, id, grace)
        .await?;
    Ok(html(
        StatusCode::OK,
        pages::new_key(
            &signed.nav(),
            &format!(
                "API key {id} has a new value; the old one works for {}.",
                humantime::format_duration(grace)
            ),
            &key,
        ),
    ))
}

pub(super) async fn revoke_key(
    State(console): State<Shared>,
    signed: Signed,
    Path(id): Path<i64>,
    body: Result<Form<KeyActionForm>, FormRejection>,
) -> Result<Response, Refused> {
    let body = form(body)?;
    signed.check_csrf(&body.csrf)?;
    signed.require(Scope::Admin)?;
    if body.confirm.is_none() {
        return Err(Refused::from(super::error_page(
            StatusCode::BAD_REQUEST,
            "Tick the box to confirm the revocation.",
        )));
    }
    console.links.revoke_api_key(&signed.call, id).await?;
    Ok(see_other("/console/keys?done=revoked"))
}

pub(super) async fn set_key_rate(
    State(console): State<Shared>,
    signed: Signed,
    Path(id): Path<i64>,
    body: Result<Form<KeyActionForm>, FormRejection>,
) -> Result<Response, Refused> {
    let body = form(body)?;
    signed.check_csrf(&body.csrf)?;
    signed.require(Scope::Admin)?;
    let rate = parse_rate(&body.rate)?;
    console
        .links
        .set_api_key_rate(&signed.call, id, rate)
        .await?;
    Ok(see_other("/console/keys?done=rate"))
}

pub(super) async fn blocklist_page(
    State(console): State<Shared>,
    signed: Signed,
    Query(params): Query<DoneParams>,
) -> Result<Response, Refused> {
    signed.require(Scope::Admin)?;
    let entries = console.links.blocked_hosts(&signed.call).await?;
    Ok(html(
        StatusCode::OK,
        pages::blocklist(&signed.nav(), &entries, notice(&params).as_deref(), None),
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct HostForm {
    csrf: String,
    host: String,
    action: String,
}

pub(super) async fn change_host(
    State(console): State<Shared>,
    signed: Signed,
    body: Result<Form<HostForm>, FormRejection>,
) -> Result<Response, Refused> {
    let body = form(body)?;
    signed.check_csrf(&body.csrf)?;
    signed.require(Scope::Admin)?;
    let block = body.action != "unblock";
    match console
        .links
        .change_blocked_host(&signed.call, &body.host, block)
        .await
    {
        Ok((_, links)) => Ok(see_other(&format!(
            "/console/blocklist?done={}&links={links}",
            if block { "blocked" } else { "unblocked" }
        ))),
        Err(error) if error.field().is_some() => {
            let entries = console
                .links
                .blocked_hosts(&signed.call)
                .await
                .unwrap_or_default();
            Ok(html(
                error.kind().http_status(),
                pages::blocklist(&signed.nav(), &entries, None, Some(&error.public_message())),
            ))
        }
        Err(error) => Err(Refused::from(error)),
    }
}
