//! The REST API (`/api/v1/…`) of real writer processes against real Postgres
//! and idalloc: the hostile-input table refused alike over gRPC and REST,
//! every operation end to end, problem documents, rate-limit headers, client
//! addresses behind proxies, CORS, and the OpenAPI document it serves.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use serde_json::{Value, json};
use tinyurl_harness::Stack;
use tinyurl_harness::hostile::{Expiry, hostile_creates};
use tinyurl_harness::services::{
    HttpResponse, authed, http_send, links_client, unissued_api_key as random_key,
};
use tinyurl_proto::v1::{
    CreateLinkRequest, DeleteTagRequest, GetLinkRequest, GetTagRequest, ListLinksRequest,
    ListTagsRequest, RenameTagRequest, Tags, UpdateLinkRequest,
};
use tonic_types::StatusExt as _;

/// The REST tests' parts: no replica and no Redis (the limits and caches
/// in process), one idalloc.
async fn stack() -> anyhow::Result<Stack> {
    Stack::builder().replicas(0).without_redis().start().await
}

/// One REST call: JSON body (when given) and the key as a bearer token.
async fn call(
    rest: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
    extra: &[(&str, &str)],
) -> anyhow::Result<HttpResponse> {
    let bearer = key.map(|key| format!("Bearer {key}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer));
    }
    let body = body.map(serde_json::to_vec).transpose()?;
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    http_send(rest, method, path, &headers, body.as_deref()).await
}

fn json_of(response: &HttpResponse) -> anyhow::Result<Value> {
    serde_json::from_slice(&response.body)
        .with_context(|| format!("not JSON: {} {}", response.status, response.text()))
}

/// A GET with the key.
async fn get(rest: SocketAddr, path: &str, key: &str) -> anyhow::Result<HttpResponse> {
    call(rest, "GET", path, Some(key), None, &[]).await
}

/// A JSON POST with the key.
async fn post(
    rest: SocketAddr,
    path: &str,
    key: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpResponse> {
    call(rest, "POST", path, Some(key), Some(body), headers).await
}

/// A problem document with `status`; returns it.
fn problem(response: &HttpResponse, status: u16) -> anyhow::Result<Value> {
    anyhow::ensure!(
        response.status == status,
        "expected {status}, got {} {}",
        response.status,
        response.text()
    );
    anyhow::ensure!(
        response.header("content-type") == Some("application/problem+json"),
        "content type {:?}",
        response.header("content-type")
    );
    let body = json_of(response)?;
    anyhow::ensure!(body["status"] == status, "{body}");
    anyhow::ensure!(
        body["type"] == "about:blank" && body["title"].is_string(),
        "{body}"
    );
    Ok(body)
}

#[tokio::test]
async fn the_hostile_input_table_is_refused_alike_over_grpc_and_rest() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (writer, rest) = stack
        .setup
        .start_with_rest(&[("TINYURL_BLOCKED_HOSTS", "evil.example")])
        .await?;
    let key = stack.setup.create_api_key("hostile")?;
    let mut grpc = links_client(&writer)?;
    let cases = hostile_creates();
    assert!(cases.len() >= 35, "the table holds {} cases", cases.len());

    for case in &cases {
        let label = format!("{:?} {:?}", case.field, case.target_url);
        // gRPC.
        let request = CreateLinkRequest {
            target_url: case.target_url.clone(),
            alias: case.alias.clone().unwrap_or_default(),
            expires_at: case.expires_at.map(|expiry| match expiry {
                Expiry::Past => {
                    prost_types::Timestamp::from(SystemTime::now() - Duration::from_secs(60))
                }
                Expiry::Far => prost_types::Timestamp {
                    seconds: 253_402_300_799,
                    nanos: 0,
                },
                Expiry::Malformed => prost_types::Timestamp {
                    seconds: 1,
                    nanos: -5,
                },
            }),
            redirect_type: case.redirect_type.unwrap_or_default(),
            forward_query: false,
            idempotency_key: case.idempotency_key.clone().unwrap_or_default(),
            tags: case.tags.clone(),
            utm: case.utm.as_ref().map(|(name, value)| {
                let mut utm = tinyurl_proto::v1::Utm::default();
                let slot = match *name {
                    "source" => &mut utm.source,
                    "medium" => &mut utm.medium,
                    "campaign" => &mut utm.campaign,
                    "term" => &mut utm.term,
                    _ => &mut utm.content,
                };
                slot.clone_from(value);
                utm
            }),
            rules: case
                .rules
                .iter()
                .map(|rule| tinyurl_proto::v1::RedirectRule {
                    devices: rule.devices.clone(),
                    countries: rule.countries.clone(),
                    languages: rule.languages.clone(),
                    target_url: rule.target_url.clone(),
                })
                .collect(),
            max_visits: case.max_visits,
            password: case.password.clone(),
            domain: case.domain.clone().unwrap_or_default(),
        };
        let status = grpc
            .create_link(authed(request, &key))
            .await
            .expect_err("must be refused over gRPC");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{label}: {status:?}"
        );
        let field = status
            .get_error_details()
            .bad_request()
            .and_then(|bad| bad.field_violations.first().map(|v| v.field.clone()))
            .unwrap_or_default();
        assert_eq!(field, case.field, "{label}");
        assert!(
            status.message().contains(case.reason),
            "{label}: {status:?}"
        );

        // REST.
        let mut body = json!({ "target_url": case.target_url });
        if let Some(alias) = &case.alias {
            body["alias"] = json!(alias);
        }
        if let Some(expiry) = case.expires_at {
            body["expires_at"] = json!(match expiry {
                Expiry::Past => "2020-01-01T00:00:00Z",
                Expiry::Far => "9999-12-31T23:59:59Z",
                Expiry::Malformed => "next tuesday",
            });
        }
        if let Some(redirect_type) = case.redirect_type {
            body["redirect_type"] = json!(redirect_type);
        }
        if !case.tags.is_empty() {
            body["tags"] = json!(case.tags);
        }
        if let Some((name, value)) = &case.utm {
            body["utm"] = json!({ *name: value });
        }
        if let Some(password) = &case.password {
            body["password"] = json!(password);
        }
        if let Some(domain) = &case.domain {
            body["domain"] = json!(domain);
        }
        if let Some(cap) = case.max_visits {
            body["max_visits"] = json!(cap);
        }
        if !case.rules.is_empty() {
            body["rules"] = json!(
                case.rules
                    .iter()
                    .map(|rule| json!({
                        "devices": rule.devices,
                        "countries": rule.countries,
                        "languages": rule.languages,
                        "target_url": rule.target_url,
                    }))
                    .collect::<Vec<_>>()
            );
        }
        let mut headers = Vec::new();
        if let Some(idempotency_key) = &case.idempotency_key {
            headers.push(("Idempotency-Key", idempotency_key.as_str()));
        }
        let response = post(rest, "/api/v1/links", &key, &body, &headers).await?;
        let refused = problem(&response, 400).with_context(|| label.clone())?;
        assert_eq!(refused["code"], "invalid_argument", "{label}");
        assert_eq!(refused["field"], case.field, "{label}: {refused}");
        assert!(
            refused["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains(case.reason)),
            "{label}: {refused}"
        );
    }
    assert_eq!(
        stack.count_links().await?,
        0,
        "bad input never reaches storage"
    );
    Ok(())
}

/// A writer with its REST API on a stack without Redis, a manage key and a
/// read key.
struct Rest {
    stack: Stack,
    _writer: tinyurl_harness::ServiceProcess,
    rest: SocketAddr,
    key: String,
    reader: String,
}

impl Rest {
    async fn start() -> anyhow::Result<Self> {
        let stack = stack().await?;
        let (writer, rest) = stack.setup.start_with_rest(&[]).await?;
        let key = stack.setup.create_api_key("rest")?;
        let reader = stack
            .setup
            .create_api_key_with(&["--name", "reader", "--scope", "read"])?;
        Ok(Self {
            stack,
            _writer: writer,
            rest,
            key,
            reader,
        })
    }

    /// A new link of the manage key, and its path.
    async fn link(&self, target: &str) -> anyhow::Result<(String, String)> {
        let created = post(
            self.rest,
            "/api/v1/links",
            &self.key,
            &json!({ "target_url": target }),
            &[],
        )
        .await?;
        let code = json_of(&created)?["code"]
            .as_str()
            .context("code")?
            .to_owned();
        let path = format!("/api/v1/links/{code}");
        Ok((code, path))
    }
}

#[tokio::test]
async fn the_openapi_document_served_is_the_checked_in_one() -> anyhow::Result<()> {
    // The fixture is kept whole: dropping it stops the writer.
    let fixture = Rest::start().await?;
    let rest = fixture.rest;
    let served = call(rest, "GET", "/api/v1/openapi.json", None, None, &[]).await?;
    assert_eq!(served.status, 200);
    assert_eq!(served.header("content-type"), Some("application/json"));
    assert_eq!(served.text(), include_str!("../../api/openapi.json"));
    Ok(())
}

#[tokio::test]
async fn a_create_answers_201_with_location_and_its_idempotency_key_replays_it()
-> anyhow::Result<()> {
    let fixture = Rest::start().await?;
    let (stack, rest, key) = (&fixture.stack, fixture.rest, fixture.key.as_str());
    // Create, with Location; a retry with the same Idempotency-Key gets the
    // same link, not a second one.
    let body = json!({ "target_url": "https://example.com/a", "redirect_type": 301 });
    let headers = [("Idempotency-Key", "order-42")];
    let created = post(rest, "/api/v1/links", key, &body, &headers).await?;
    assert_eq!(created.status, 201, "{}", created.text());
    let link = json_of(&created)?;
    let code = link["code"].as_str().context("code")?.to_owned();
    assert_eq!(
        created.header("location"),
        Some(format!("/api/v1/links/{code}").as_str())
    );
    assert_eq!(link["short_url"], format!("https://sho.rt/{code}"));
    assert_eq!(link["target_url"], "https://example.com/a");
    assert_eq!(link["redirect_type"], 301);
    assert_eq!(link["expires_at"], Value::Null);
    assert_eq!(
        (link["enabled"].clone(), link["is_alias"].clone()),
        (json!(true), json!(false))
    );
    let replay = post(rest, "/api/v1/links", key, &body, &headers).await?;
    assert_eq!(json_of(&replay)?["code"], code.as_str());
    assert_eq!(stack.count_links().await?, 1);
    // The same key with another body is refused, naming the key's link;
    // the first body still replays.
    for other in [
        json!({ "target_url": "https://example.com/b", "redirect_type": 301 }),
        json!({ "target_url": "https://example.com/a" }),
        json!({ "target_url": "https://example.com/a", "redirect_type": 301, "forward_query": true }),
    ] {
        let reused = post(rest, "/api/v1/links", key, &other, &headers).await?;
        let refused = problem(&reused, 422)?;
        assert_eq!(refused["code"], "failed_precondition", "{refused}");
        assert!(
            refused["detail"]
                .as_str()
                .is_some_and(|detail| detail.contains("order-42") && detail.contains(&code)),
            "{refused}"
        );
    }
    let replay = post(rest, "/api/v1/links", key, &body, &headers).await?;
    assert_eq!(
        (replay.status, json_of(&replay)?["code"].clone()),
        (201, json!(code))
    );
    assert_eq!(stack.count_links().await?, 1);
    tinyurl_harness::attacker::row(
        "L1 an Idempotency-Key reused with another body answers the first link",
        "REST: the key of a create again with another target, another status, query forwarding on",
        "422 `failed_precondition` naming the key and its link ×3",
        "the same body still replays the link (201); one link in all",
    );

    Ok(())
}

#[tokio::test]
async fn get_and_patch_a_link_within_the_keys_scope_and_owner() -> anyhow::Result<()> {
    let fixture = Rest::start().await?;
    let (rest, key, reader) = (fixture.rest, fixture.key.as_str(), fixture.reader.as_str());
    let (code, path) = fixture.link("https://example.com/a").await?;
    let body = json!({ "target_url": "https://example.com/a" });
    // Get; another key's view of it is 404; a read key cannot create.
    let got = get(rest, &format!("/api/v1/links/{code}"), key).await?;
    assert_eq!(
        (got.status, json_of(&got)?["code"].clone()),
        (200, json!(code))
    );
    let other = call(
        rest,
        "GET",
        &format!("/api/v1/links/{code}"),
        Some(reader),
        None,
        &[],
    )
    .await?;
    problem(&other, 404)?;
    let denied = call(
        rest,
        "POST",
        "/api/v1/links",
        Some(reader),
        Some(&body),
        &[],
    )
    .await?;
    assert_eq!(problem(&denied, 403)?["code"], "permission_denied");

    // Patch: a new target and an expiry, then the expiry removed with null.
    let patch =
        json!({ "target_url": "https://example.com/b", "expires_at": "2099-01-01T00:00:00Z" });
    let patched = call(rest, "PATCH", &path, Some(key), Some(&patch), &[]).await?;
    let patched = json_of(&patched)?;
    assert_eq!(patched["target_url"], "https://example.com/b");
    assert_eq!(patched["expires_at"], "2099-01-01T00:00:00.000000Z");
    let cleared = call(
        rest,
        "PATCH",
        &path,
        Some(key),
        Some(&json!({ "expires_at": null })),
        &[],
    )
    .await?;
    let cleared = json_of(&cleared)?;
    assert_eq!(
        (cleared["expires_at"].clone(), cleared["target_url"].clone()),
        (Value::Null, json!("https://example.com/b"))
    );

    Ok(())
}

#[tokio::test]
async fn a_batch_answers_per_item_and_keyset_pages_list_every_link_once() -> anyhow::Result<()> {
    let fixture = Rest::start().await?;
    let (rest, key) = (fixture.rest, fixture.key.as_str());
    fixture.link("https://example.com/a").await?;
    // A batch: per-item results, the bad item a problem naming its field.
    let batch = json!({ "links": [
        { "target_url": "https://example.com/1" },
        { "target_url": "ftp://example.com/2" },
        { "target_url": "https://example.com/3", "alias": "rest-alias" },
        { "target_url": "https://example.com/4", "idempotency_key": "item-4" },
    ]});
    let answered = post(rest, "/api/v1/links/batch", key, &batch, &[]).await?;
    assert_eq!(answered.status, 200, "{}", answered.text());
    let results = json_of(&answered)?["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(results.len(), 4);
    assert!(results[0]["link"]["code"].is_string());
    assert_eq!(results[1]["error"]["field"], "target_url");
    assert_eq!(results[1]["error"]["status"], 400);
    assert_eq!(results[2]["link"]["code"], "rest-alias");
    assert!(results[3]["link"]["code"].is_string());
    let too_many = json!({ "links": vec![json!({ "target_url": "https://example.com/" }); 1001] });
    let refused = post(rest, "/api/v1/links/batch", key, &too_many, &[]).await?;
    assert_eq!(problem(&refused, 400)?["field"], "links");

    // Keyset pages: 4 links, 3 pages of at most 2... or fewer, all distinct.
    let mut seen = HashSet::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/api/v1/links?page_size=2".to_owned();
        if let Some(token) = &token {
            path.push_str(&format!("&page_token={token}"));
        }
        let page = json_of(&get(rest, &path, key).await?)?;
        pages += 1;
        for link in page["links"].as_array().cloned().unwrap_or_default() {
            assert!(seen.insert(link["code"].to_string()), "a link on two pages");
        }
        match page["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pages never end");
    }
    assert_eq!(seen.len(), 4, "every link once");
    let huge_page = get(rest, "/api/v1/links?page_size=5000", key).await?;
    assert_eq!(problem(&huge_page, 400)?["field"], "page_size");
    let foreign_token = get(rest, "/api/v1/links?page_token=forged", key).await?;
    assert_eq!(problem(&foreign_token, 400)?["field"], "page_token");

    Ok(())
}

#[tokio::test]
async fn stats_of_an_unclicked_link_then_delete_for_good() -> anyhow::Result<()> {
    let fixture = Rest::start().await?;
    let (rest, key) = (fixture.rest, fixture.key.as_str());
    let (code, path) = fixture.link("https://example.com/a").await?;
    // Stats of a link nobody clicked.
    let stats = get(rest, &format!("/api/v1/links/{code}/stats"), key).await?;
    let stats = json_of(&stats)?;
    assert_eq!(
        (
            stats["lifetime_clicks"].clone(),
            stats["granularity"].clone()
        ),
        (json!(0), json!("day"))
    );
    let bad_granularity = get(
        rest,
        &format!("/api/v1/links/{code}/stats?granularity=week"),
        key,
    )
    .await?;
    assert_eq!(problem(&bad_granularity, 400)?["field"], "granularity");
    // As CSV: the header row alone; a dimension that does not exist named.
    let csv = get(rest, &format!("/api/v1/links/{code}/stats/export"), key).await?;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(csv.text(), "start,dimension,value,clicks,bot_clicks\n");
    let bad_dimension = get(
        rest,
        &format!("/api/v1/links/{code}/stats/export?dimensions=referrer,ip"),
        key,
    )
    .await?;
    assert_eq!(problem(&bad_dimension, 400)?["field"], "dimensions");
    // Its click data forgotten, and the key's (nothing to forget yet).
    let forgotten = call(
        rest,
        "DELETE",
        &format!("/api/v1/links/{code}/stats"),
        Some(key),
        None,
        &[],
    )
    .await?;
    assert_eq!(json_of(&forgotten)?["rows"], json!(0));
    let forgotten = call(rest, "DELETE", "/api/v1/stats", Some(key), None, &[]).await?;
    assert_eq!(json_of(&forgotten)?["rows"], json!(0));
    // Visits to codes that do not exist: none yet, and a domain that is not
    // registered is named.
    let orphans = json_of(&get(rest, "/api/v1/orphan-visits", key).await?)?;
    assert_eq!(orphans["paths"], json!([]));
    let unregistered = get(rest, "/api/v1/orphan-visits?domain=no.example", key).await?;
    assert_eq!(problem(&unregistered, 400)?["field"], "domain");
    let purged = call(
        rest,
        "DELETE",
        "/api/v1/orphan-visits",
        Some(key),
        None,
        &[],
    )
    .await?;
    assert_eq!(json_of(&purged)?["rows"], json!(0));

    // Delete: 204, then 404, and the code is never handed out again.
    let deleted = call(rest, "DELETE", &path, Some(key), None, &[]).await?;
    assert_eq!(deleted.status, 204);
    problem(&get(rest, &path, key).await?, 404)?;

    Ok(())
}

#[tokio::test]
async fn requests_the_api_cannot_read_each_get_their_own_problem() -> anyhow::Result<()> {
    let fixture = Rest::start().await?;
    let (rest, key) = (fixture.rest, fixture.key.clone());
    let path = "/api/v1/links/some-link".to_owned();
    let body = json!({ "target_url": "https://example.com/a" });
    // Requests the API cannot read, each with its own problem.
    let unauthenticated = call(rest, "POST", "/api/v1/links", None, Some(&body), &[]).await?;
    assert_eq!(problem(&unauthenticated, 401)?["code"], "unauthenticated");
    assert!(
        unauthenticated
            .header("www-authenticate")
            .is_some_and(|value| value.starts_with("Bearer"))
    );
    let malformed_key = call(rest, "GET", "/api/v1/links", Some("tu_short"), None, &[]).await?;
    assert!(
        problem(&malformed_key, 401)?["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("malformed"))
    );
    let unknown_field = json!({ "target_url": "https://example.com/", "surprise": 1 });
    let unknown = post(rest, "/api/v1/links", &key, &unknown_field, &[]).await?;
    let unknown = problem(&unknown, 400)?;
    assert!(
        unknown["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("unknown field `surprise`")),
        "{unknown}"
    );
    // Bodies the API cannot read, each refused with its own problem.
    let bearer = format!("Bearer {key}");
    let unreadable = [
        (
            "/api/v1/links",
            "text/plain",
            None,
            &b"https://example.com/"[..],
            415,
            "code",
            "unsupported_media_type",
        ),
        (
            "/api/v1/links",
            "application/json",
            None,
            &b"{\"target_url\": "[..],
            400,
            "field",
            "body",
        ),
        // Announced larger than the largest legitimate body: refused unread.
        (
            "/api/v1/links/batch",
            "application/json",
            Some("100000000"),
            &[][..],
            413,
            "code",
            "payload_too_large",
        ),
    ];
    for (path, content_type, length, body, status, member, value) in unreadable {
        let mut headers = vec![
            ("Authorization", bearer.as_str()),
            ("Content-Type", content_type),
        ];
        headers.extend(length.map(|length| ("Content-Length", length)));
        let body = Some(body).filter(|body| !body.is_empty());
        let response = http_send(rest, "POST", path, &headers, body).await?;
        assert_eq!(
            problem(&response, status)?[member],
            value,
            "{path} {content_type}"
        );
    }
    problem(&get(rest, "/api/v1/nothing-here", &key).await?, 404)?;
    problem(
        &call(rest, "PUT", &path, Some(&key), Some(&body), &[]).await?,
        405,
    )?;

    // CORS is off unless configured: no Access-Control-* answer.
    let cross = call(
        rest,
        "GET",
        "/api/v1/links",
        Some(&key),
        None,
        &[("Origin", "https://app.example")],
    )
    .await?;
    assert_eq!(cross.status, 200);
    assert_eq!(cross.header("access-control-allow-origin"), None);
    assert_eq!(
        fixture.stack.count_links().await?,
        0,
        "nothing that could not be read reached storage"
    );
    Ok(())
}

#[tokio::test]
async fn rest_limits_answer_429_with_ratelimit_fields_and_see_clients_through_trusted_proxies()
-> anyhow::Result<()> {
    let stack = stack().await?;
    // Behind a trusted proxy (loopback): X-Forwarded-For names the client.
    let (_behind_proxy, trusting) = stack
        .setup
        .start_with_rest(&[
            ("TINYURL_RATE_LIMIT_PER_KEY", "2/s"),
            ("TINYURL_AUTH_FAILURE_RATE_PER_IP", "2/s"),
            ("TINYURL_TRUSTED_PROXIES", "127.0.0.1/32"),
            ("TINYURL_REST_CORS_ORIGINS", "https://app.example"),
        ])
        .await?;
    // Facing clients directly: X-Forwarded-For is whatever a client says.
    let (_direct, direct) = stack
        .setup
        .start_with_rest(&[("TINYURL_AUTH_FAILURE_RATE_PER_IP", "2/s")])
        .await?;
    let key = stack.setup.create_api_key("limited")?;

    // The per-key rate: past it, 429 with Retry-After and the RateLimit fields.
    let body = json!({ "target_url": "https://example.com/limited" });
    let mut limited = None;
    for _ in 0..20 {
        let response = post(trusting, "/api/v1/links", &key, &body, &[]).await?;
        if response.status == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status, 201, "{}", response.text());
    }
    let limited = limited.context("20 creates at once never met a 2/s limit")?;
    let refusal = problem(&limited, 429)?;
    assert_eq!(refusal["code"], "resource_exhausted");
    let retry_after: u64 = limited
        .header("retry-after")
        .context("Retry-After")?
        .parse()?;
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.header("ratelimit-policy"), Some("\"key\";q=2;w=1"));
    assert_eq!(
        limited.header("ratelimit"),
        Some(format!("\"key\";r=0;t={retry_after}").as_str())
    );
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let again = post(trusting, "/api/v1/links", &key, &body, &[]).await?;
    assert_eq!(again.status, 201, "the hint was usable: {}", again.text());

    // Failed authentications per client: behind the trusted proxy, one
    // client's failures do not lock out another.
    let failures_until_429 = |rest: SocketAddr, forwarded: &'static str| async move {
        for attempt in 1..=20 {
            let response = call(
                rest,
                "GET",
                "/api/v1/links",
                Some(&random_key()),
                None,
                &[("X-Forwarded-For", forwarded)],
            )
            .await?;
            match response.status {
                401 => continue,
                429 => {
                    assert_eq!(
                        response.header("ratelimit-policy"),
                        Some("\"failed-auth\";q=2;w=1")
                    );
                    return anyhow::Ok(Some(attempt));
                }
                other => anyhow::bail!("unexpected {other}: {}", response.text()),
            }
        }
        Ok(None)
    };
    assert!(failures_until_429(trusting, "203.0.113.7").await?.is_some());
    let bystander = call(
        trusting,
        "GET",
        "/api/v1/links",
        Some(&random_key()),
        None,
        &[("X-Forwarded-For", "203.0.113.8")],
    )
    .await?;
    assert_eq!(
        bystander.status, 401,
        "another client behind the proxy is not limited"
    );
    // Facing clients directly, a forged X-Forwarded-For buys nothing: every
    // "client" is the one peer, limited together.
    let mut forged_limited = None;
    for client in 0..20 {
        let forged = format!("198.51.100.{client}");
        let response = call(
            direct,
            "GET",
            "/api/v1/links",
            Some(&random_key()),
            None,
            &[("X-Forwarded-For", forged.as_str())],
        )
        .await?;
        if response.status == 429 {
            forged_limited = Some(client + 1);
            break;
        }
        assert_eq!(response.status, 401);
    }
    let forged_limited =
        forged_limited.context("X-Forwarded-For from an untrusted peer must be ignored")?;
    tinyurl_harness::attacker::row(
        "M2 trusted-proxy ranges cover ordinary clients",
        "a client that is no trusted proxy sends made-up keys, each with X-Forwarded-For naming another address",
        &format!(
            "429 (failed-auth) at request {forged_limited}: the header is ignored, every request counted as its one address"
        ),
        "behind the one trusted proxy, another client's request is not limited (401, not 429); compose trusts only nginx's fixed address",
    );

    // CORS, where configured: the preflight answers for the allowed origin only.
    let preflight = |origin: &'static str| async move {
        let headers = [
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type, idempotency-key",
            ),
        ];
        call(trusting, "OPTIONS", "/api/v1/links", None, None, &headers).await
    };
    let allowed = preflight("https://app.example").await?;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let foreign = preflight("https://evil.example").await?;
    assert_eq!(foreign.header("access-control-allow-origin"), None);
    Ok(())
}

/// An operator's `block-host` is not the owner's to undo: every way back
/// (re-enable, repoint, delete and re-create the alias, the host in another
/// spelling) is refused with a problem naming the block, over REST and
/// gRPC; `unblock-host` gives back what the owner had chosen.
#[tokio::test]
async fn an_operators_block_is_not_the_owners_to_undo() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (writer, rest) = stack.setup.start_with_rest(&[]).await?;
    let key = stack.setup.create_api_key("owner")?;
    let body = json!({ "target_url": "https://bad.example/login", "alias": "bad-alias" });
    let created = post(rest, "/api/v1/links", &key, &body, &[]).await?;
    assert_eq!(created.status, 201, "{}", created.text());
    // The owner's own disable, on a link under a wildcard block.
    let body = json!({ "target_url": "https://deep.evil.example/x", "alias": "off-alias" });
    assert_eq!(
        post(rest, "/api/v1/links", &key, &body, &[]).await?.status,
        201
    );
    let off = json!({ "enabled": false });
    let patched = call(
        rest,
        "PATCH",
        "/api/v1/links/off-alias",
        Some(&key),
        Some(&off),
        &[],
    )
    .await?;
    assert_eq!(patched.status, 200, "{}", patched.text());

    let command = |args: &[&str]| -> anyhow::Result<String> {
        let output = stack.setup.command(args)?;
        anyhow::ensure!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let said = command(&["block-host", "BAD.Example."])?;
    assert!(said.contains("blocked bad.example; 1 links"), "{said}");
    let said = command(&["block-host", "*.EVIL.example"])?;
    assert!(said.contains("blocked *.evil.example; 1 links"), "{said}");

    let path = "/api/v1/links/bad-alias";
    let link = json_of(&get(rest, path, &key).await?)?;
    assert_eq!(
        (link["blocked"].clone(), link["enabled"].clone()),
        (json!(true), json!(true))
    );
    for change in [
        json!({ "enabled": true }),
        json!({ "target_url": "https://fine.example/" }),
        json!({ "redirect_type": 301 }),
    ] {
        let refused = call(rest, "PATCH", path, Some(&key), Some(&change), &[]).await?;
        let problem = problem(&refused, 403)?;
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("blocked") && detail.contains("bad.example"),
            "{change}: {problem}"
        );
    }
    let mut links = links_client(&writer)?;
    let refused = links
        .update_link(authed(
            tinyurl_proto::v1::UpdateLinkRequest {
                code: "bad-alias".to_owned(),
                enabled: Some(true),
                ..Default::default()
            },
            &key,
        ))
        .await
        .expect_err("gRPC refuses it too");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(refused.message().contains("bad.example"), "{refused:?}");

    // The writer refuses the host in any spelling once it polled the list.
    tinyurl_harness::wait_until(
        "the writer to refuse the host",
        Duration::from_secs(10),
        || async {
            let attempt = json!({ "target_url": "https://BAD.EXAMPLE./again" });
            Ok(post(rest, "/api/v1/links", &key, &attempt, &[])
                .await?
                .status
                == 400)
        },
    )
    .await?;
    for target in [
        "https://bad.example./other",
        "https://sub.evil.example/",
        "https://BAD.example/",
    ] {
        let refused = post(
            rest,
            "/api/v1/links",
            &key,
            &json!({ "target_url": target }),
            &[],
        )
        .await?;
        let problem = problem(&refused, 400)?;
        assert_eq!(problem["field"], "target_url", "{target}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("blocked"),
            "{problem}"
        );
    }
    // Delete is allowed; the alias stays retired either way.
    assert_eq!(
        call(rest, "DELETE", path, Some(&key), None, &[])
            .await?
            .status,
        204
    );
    let again = json!({ "target_url": "https://bad.example/login", "alias": "bad-alias" });
    let refused = post(rest, "/api/v1/links", &key, &again, &[]).await?;
    assert!(
        problem(&refused, 400)?["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("blocked")
    );

    // Unblocking gives back the owner's choice: still disabled.
    let said = command(&["unblock-host", "*.evil.EXAMPLE"])?;
    assert!(said.contains("unblocked *.evil.example; 1 links"), "{said}");
    let link = json_of(&get(rest, "/api/v1/links/off-alias", &key).await?)?;
    assert_eq!(
        (link["blocked"].clone(), link["enabled"].clone()),
        (json!(false), json!(false))
    );
    // The owner may change it again once the writer polled the list.
    let on = json!({ "enabled": true });
    tinyurl_harness::wait_until(
        "the owner to enable it again",
        Duration::from_secs(10),
        || async {
            let patched = call(
                rest,
                "PATCH",
                "/api/v1/links/off-alias",
                Some(&key),
                Some(&on),
                &[],
            )
            .await?;
            Ok(patched.status == 200)
        },
    )
    .await?;
    let missing = stack.setup.command(&["unblock-host", "never.example"])?;
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not on the stored blocklist"));
    tinyurl_harness::attacker::row(
        "H2 an owner undoes an operator's block",
        "after `block-host BAD.Example.`, the owner's PATCH of enabled, target and status (REST), UpdateLink enabled (gRPC), delete and re-create of the alias",
        "403 naming the blocked host ×3 (REST), PERMISSION_DENIED naming it (gRPC); the re-created alias 400 `target_url` blocked",
        "`unblock-host` gives back the owner's own choice (still disabled), which the owner may change again",
    );
    tinyurl_harness::attacker::row(
        "M1 block-host misses the host spelled another way",
        "`block-host BAD.Example.` and `*.EVIL.example`, then creates to `bad.example.`, `sub.evil.example`, `BAD.example`",
        "400 `target_url` blocked ×3; the existing links to `bad.example` and `deep.evil.example` blocked (1 + 1)",
        "other hosts unaffected; unblocking lifts exactly the entry's links",
    );
    Ok(())
}

/// Resident memory of process `pid`, in bytes.
fn resident_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kib * 1024)
}

/// Waits until the server closes `stream` (EOF or reset); anything it sends
/// first is read and dropped.
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt as _;
    let mut buffer = [0_u8; 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

/// The REST listener holds nothing for a stranger: 2,000 connections that
/// send half a header are closed by the header timeout while an honest
/// client is served; an address past its share of connections is closed at
/// once; and 200 parallel 4 MB bodies with made-up keys are refused from
/// their headers (401) without the writer's resident memory growing by
/// 64 MB (reading them would take 800 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_listener_holds_nothing_for_strangers() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const HALF_HEADER: &[u8] = b"POST /api/v1/links HTTP/1.1\r\nHost: sho.rt\r\nAuthoriz";
    let stack = stack().await?;
    let key = stack.setup.create_api_key("honest")?;
    let (writer, rest) = stack
        .setup
        .start_with_rest(&[
            ("TINYURL_REST_HEADER_TIMEOUT_MS", "1000"),
            ("TINYURL_REST_MAX_CONNECTIONS_PER_ADDRESS", "4000"),
            // Every made-up key gets its lookup and its 401.
            ("TINYURL_AUTH_FAILURE_RATE_PER_IP", "off"),
            ("TINYURL_KEY_LOOKUPS_PER_SECOND", "100000"),
        ])
        .await?;

    let mut slow = Vec::new();
    for _ in 0..2_000 {
        let mut stream = tokio::net::TcpStream::connect(rest).await?;
        stream.write_all(HALF_HEADER).await?;
        slow.push(stream);
    }
    let honest = get(rest, "/api/v1/links", &key).await?;
    assert_eq!(honest.status, 200, "{}", honest.text());
    let started = std::time::Instant::now();
    let closed = futures::future::join_all(
        slow.iter_mut()
            .map(|stream| tokio::time::timeout(Duration::from_secs(30), closed_by_server(stream))),
    )
    .await;
    let still_open = closed.iter().filter(|closed| closed.is_err()).count();
    assert_eq!(still_open, 0, "connections with half a header left open");
    println!(
        "2,000 half-header connections closed within {:?}",
        started.elapsed()
    );
    drop(slow);

    let pid = writer.pid().context("the writer runs")?;
    let before = resident_bytes(pid)?;
    let body_start = vec![b'['; 64 * 1024];
    let answers = futures::future::join_all((0..200).map(|_| {
        let body_start = &body_start;
        async move {
            let mut stream = tokio::net::TcpStream::connect(rest).await?;
            let head = format!(
                "POST /api/v1/links HTTP/1.1\r\nHost: sho.rt\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 4000000\r\n\r\n",
                random_key()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(body_start).await?;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
                .await;
            anyhow::Ok(String::from_utf8_lossy(&answer).into_owned())
        }
    }))
    .await;
    let after = resident_bytes(pid)?;
    for answer in answers {
        let answer = answer?;
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "a made-up key's 4 MB body: {:?}",
            answer.lines().next()
        );
    }
    println!(
        "200 parallel 4 MB bodies with made-up keys: resident {} MB before, {} MB after",
        before / 1_000_000,
        after / 1_000_000
    );
    assert!(
        after < before + 64 * 1024 * 1024,
        "resident memory grew from {before} to {after} bytes"
    );

    let half_headers_closed = started.elapsed();

    // An address past its share: the ninth connection is closed at once.
    let (_capped, capped) = stack
        .setup
        .start_with_rest(&[("TINYURL_REST_MAX_CONNECTIONS_PER_ADDRESS", "8")])
        .await?;
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut stream = tokio::net::TcpStream::connect(capped).await?;
        stream.write_all(HALF_HEADER).await?;
        held.push(stream);
    }
    // Accepted in order: once the ninth is closed, the eight are counted.
    let mut ninth = tokio::net::TcpStream::connect(capped).await?;
    tokio::time::timeout(Duration::from_secs(10), closed_by_server(&mut ninth))
        .await
        .context("the ninth connection of one address stays open")??;
    drop(held);
    // Their slots come back when they close.
    tinyurl_harness::wait_until(
        "a new connection to be served",
        Duration::from_secs(10),
        || async { Ok(get(capped, "/api/v1/links", &key).await?.status == 200) },
    )
    .await?;
    tinyurl_harness::attacker::row(
        "M4 the REST listener has no timeouts and reads bodies before the key",
        "2,000 connections sending half a header; 200 parallel 4 MB bodies with made-up keys; a ninth connection from an address allowed eight",
        &format!(
            "all 2,000 closed within {:.1} s (header timeout 1 s); 401 ×200 from the headers, resident memory {} MB → {} MB (bound +64 MB); the ninth closed at once",
            half_headers_closed.as_secs_f64(),
            before / 1_000_000,
            after / 1_000_000
        ),
        "200 during the half-header flood; served again once the address's connections close",
    );
    Ok(())
}

/// Tags end to end, each step on one transport and checked on the other:
/// created with links (normalised), read back, listed by, replaced, summed,
/// renamed (merging), deleted; a read key may look but not change; a bad
/// tag names its field.
#[tokio::test]
async fn tags_work_alike_over_rest_and_grpc() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (writer, rest) = stack.setup.start_with_rest(&[]).await?;
    let key = stack.setup.create_api_key("tagger")?;
    let reader = stack
        .setup
        .create_api_key_with(&["--name", "tag-reader", "--scope", "read"])?;
    let mut grpc = links_client(&writer)?;

    let created = post(
        rest,
        "/api/v1/links",
        &key,
        &json!({ "target_url": "https://example.com/a", "alias": "tagged-a",
                 "tags": ["Spring  Sale", "news", "NEWS"] }),
        &[],
    )
    .await?;
    anyhow::ensure!(created.status == 201, "{}", created.text());
    anyhow::ensure!(json_of(&created)?["tags"] == json!(["news", "spring sale"]));
    let over_grpc = grpc
        .get_link(authed(
            GetLinkRequest {
                code: "tagged-a".to_owned(),
            },
            &key,
        ))
        .await?
        .into_inner();
    anyhow::ensure!(over_grpc.tags == ["news", "spring sale"], "{over_grpc:?}");
    let b = grpc
        .create_link(authed(
            CreateLinkRequest {
                target_url: "https://example.com/b".to_owned(),
                alias: "tagged-b".to_owned(),
                tags: vec!["news".to_owned()],
                ..CreateLinkRequest::default()
            },
            &key,
        ))
        .await?
        .into_inner();
    anyhow::ensure!(b.tags == ["news"]);
    post(
        rest,
        "/api/v1/links",
        &key,
        &json!({ "target_url": "https://example.com/plain", "alias": "untagged" }),
        &[],
    )
    .await?;

    let listed = get(rest, "/api/v1/links?tag=news", &key).await?;
    let codes: HashSet<String> = json_of(&listed)?["links"]
        .as_array()
        .context("links")?
        .iter()
        .filter_map(|link| link["code"].as_str().map(str::to_owned))
        .collect();
    anyhow::ensure!(codes == HashSet::from(["tagged-a".to_owned(), "tagged-b".to_owned()]));
    let page = grpc
        .list_links(authed(
            ListLinksRequest {
                tag: "Spring Sale".to_owned(),
                ..ListLinksRequest::default()
            },
            &key,
        ))
        .await?
        .into_inner();
    anyhow::ensure!(
        page.links.len() == 1 && page.links[0].code == "tagged-a",
        "{page:?}"
    );

    // Replaced over REST, seen over gRPC; cleared over gRPC, seen over REST.
    let patched = call(
        rest,
        "PATCH",
        "/api/v1/links/tagged-a",
        Some(&key),
        Some(&json!({ "tags": ["later", "news"] })),
        &[],
    )
    .await?;
    anyhow::ensure!(
        json_of(&patched)?["tags"] == json!(["later", "news"]),
        "{}",
        patched.text()
    );
    let cleared = grpc
        .update_link(authed(
            UpdateLinkRequest {
                code: "tagged-b".to_owned(),
                tags: Some(Tags { tags: Vec::new() }),
                ..UpdateLinkRequest::default()
            },
            &key,
        ))
        .await?
        .into_inner();
    anyhow::ensure!(cleared.tags.is_empty());
    let unchanged = grpc
        .update_link(authed(
            UpdateLinkRequest {
                code: "tagged-a".to_owned(),
                enabled: Some(true),
                ..UpdateLinkRequest::default()
            },
            &key,
        ))
        .await?
        .into_inner();
    anyhow::ensure!(unchanged.tags == ["later", "news"], "absent tags are kept");

    let tags = json_of(&get(rest, "/api/v1/tags", &key).await?)?;
    anyhow::ensure!(
        tags == json!({ "tags": [
            { "name": "later", "links": 1, "lifetime_clicks": 0, "lifetime_bot_clicks": 0 },
            { "name": "news", "links": 1, "lifetime_clicks": 0, "lifetime_bot_clicks": 0 },
        ]}),
        "{tags}"
    );
    let listed = grpc.list_tags(authed(ListTagsRequest {}, &reader)).await;
    anyhow::ensure!(
        listed.is_ok_and(|listed| listed.into_inner().tags.is_empty()),
        "a key sees only its own links' tags"
    );

    // A read key may not rename; the manage key renames, merging.
    let refused = call(
        rest,
        "PATCH",
        "/api/v1/tags/later",
        Some(&reader),
        Some(&json!({ "name": "news" })),
        &[],
    )
    .await?;
    problem(&refused, 403)?;
    let renamed = grpc
        .rename_tag(authed(
            RenameTagRequest {
                tag: "later".to_owned(),
                new_name: "news".to_owned(),
            },
            &key,
        ))
        .await?
        .into_inner();
    anyhow::ensure!(renamed.links == 1);
    let news = json_of(&get(rest, "/api/v1/tags/news", &key).await?)?;
    anyhow::ensure!(news["links"] == 1, "{news}");
    let renamed = call(
        rest,
        "PATCH",
        "/api/v1/tags/news",
        Some(&key),
        Some(&json!({ "name": "Spring Sale" })),
        &[],
    )
    .await?;
    anyhow::ensure!(json_of(&renamed)?["links"] == 1, "{}", renamed.text());
    let spring = grpc
        .get_tag(authed(
            GetTagRequest {
                tag: "SPRING SALE".to_owned(),
            },
            &key,
        ))
        .await?
        .into_inner();
    anyhow::ensure!(
        spring.name == "spring sale" && spring.links == 1,
        "{spring:?}"
    );
    let deleted = call(
        rest,
        "DELETE",
        "/api/v1/tags/spring%20sale",
        Some(&key),
        None,
        &[],
    )
    .await?;
    anyhow::ensure!(json_of(&deleted)?["links"] == 1, "{}", deleted.text());
    let gone = grpc
        .delete_tag(authed(
            DeleteTagRequest {
                tag: "spring sale".to_owned(),
            },
            &key,
        ))
        .await
        .expect_err("nothing has it any more");
    anyhow::ensure!(gone.code() == tonic::Code::NotFound, "{gone:?}");
    let gone = get(rest, "/api/v1/tags/spring%20sale", &key).await?;
    anyhow::ensure!(
        problem(&gone, 404)?["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("spring sale"))
    );

    let bad = get(rest, "/api/v1/links?tag=a%2Cb", &key).await?;
    anyhow::ensure!(problem(&bad, 400)?["field"] == "tag");
    let bad = grpc
        .list_links(authed(
            ListLinksRequest {
                tag: "<b>".to_owned(),
                ..ListLinksRequest::default()
            },
            &key,
        ))
        .await
        .expect_err("a tag with '<' is refused");
    anyhow::ensure!(bad.code() == tonic::Code::InvalidArgument, "{bad:?}");
    Ok(())
}

/// UTM fields and redirect rules end to end, each step on one transport
/// and checked on the other: normalised on create, replaced one option at a
/// time (an update of one leaves the other), removed; a plain link shows
/// none; an idempotency key's retry must ask for the same options.
#[tokio::test]
async fn options_work_alike_over_rest_and_grpc() -> anyhow::Result<()> {
    let stack = stack().await?;
    let (writer, rest) = stack.setup.start_with_rest(&[]).await?;
    let key = stack.setup.create_api_key("options")?;
    let mut grpc = links_client(&writer)?;

    let body = json!({
        "target_url": "https://example.com/app",
        "alias": "with-options",
        "utm": { "source": " news ", "campaign": "" },
        "rules": [{ "devices": ["iOS", "ios"], "countries": ["de"], "languages": ["PT-br"],
                    "target_url": "https://Example.com/ios" }],
    });
    let created = post(
        rest,
        "/api/v1/links",
        &key,
        &body,
        &[("Idempotency-Key", "opt-1")],
    )
    .await?;
    anyhow::ensure!(created.status == 201, "{}", created.text());
    let created = json_of(&created)?;
    let rule = json!({ "devices": ["ios"], "countries": ["DE"], "languages": ["pt-br"],
                       "target_url": "https://example.com/ios" });
    anyhow::ensure!(created["utm"] == json!({ "source": "news" }), "{created}");
    anyhow::ensure!(created["rules"] == json!([rule]), "{created}");
    let over_grpc = grpc
        .get_link(authed(
            GetLinkRequest {
                code: "with-options".to_owned(),
            },
            &key,
        ))
        .await?
        .into_inner();
    anyhow::ensure!(
        over_grpc.utm.as_ref().map(|utm| utm.source.as_str()) == Some("news")
            && over_grpc.rules.len() == 1
            && over_grpc.rules[0].languages == ["pt-br"]
            && over_grpc.rules[0].target_url == "https://example.com/ios",
        "{over_grpc:?}"
    );

    // The same key and request: the same link; other options: refused.
    let again = post(
        rest,
        "/api/v1/links",
        &key,
        &body,
        &[("Idempotency-Key", "opt-1")],
    )
    .await?;
    anyhow::ensure!(
        again.status < 300 && json_of(&again)?["code"] == "with-options",
        "{}",
        again.text()
    );
    let mut other = body.clone();
    other["rules"][0]["countries"] = json!(["AT"]);
    let reused = post(
        rest,
        "/api/v1/links",
        &key,
        &other,
        &[("Idempotency-Key", "opt-1")],
    )
    .await?;
    anyhow::ensure!(reused.status == 422, "{} {}", reused.status, reused.text());

    // UTM over gRPC: the rules stay.
    let changed = grpc
        .update_link(authed(
            UpdateLinkRequest {
                code: "with-options".to_owned(),
                utm: Some(tinyurl_proto::v1::Utm {
                    medium: "email".to_owned(),
                    ..tinyurl_proto::v1::Utm::default()
                }),
                ..UpdateLinkRequest::default()
            },
            &key,
        ))
        .await?
        .into_inner();
    anyhow::ensure!(
        changed
            .utm
            .as_ref()
            .map(|utm| (utm.source.as_str(), utm.medium.as_str()))
            == Some(("", "email"))
            && changed.rules.len() == 1,
        "{changed:?}"
    );
    // Rules over REST: the UTM fields stay.
    let patched = call(
        rest,
        "PATCH",
        "/api/v1/links/with-options",
        Some(&key),
        Some(&json!({ "rules": [] })),
        &[],
    )
    .await?;
    let patched = json_of(&patched)?;
    anyhow::ensure!(
        patched["rules"] == json!([]) && patched["utm"] == json!({ "medium": "email" }),
        "{patched}"
    );
    let patched = call(
        rest,
        "PATCH",
        "/api/v1/links/with-options",
        Some(&key),
        Some(&json!({ "utm": null, "rules": [rule] })),
        &[],
    )
    .await?;
    let patched = json_of(&patched)?;
    anyhow::ensure!(
        patched["utm"].is_null() && patched["rules"] == json!([rule]),
        "{patched}"
    );
    // A change of something else keeps both.
    let retargeted = call(
        rest,
        "PATCH",
        "/api/v1/links/with-options",
        Some(&key),
        Some(&json!({ "target_url": "https://example.com/app2" })),
        &[],
    )
    .await?;
    anyhow::ensure!(json_of(&retargeted)?["rules"] == json!([rule]));

    let plain = post(
        rest,
        "/api/v1/links",
        &key,
        &json!({ "target_url": "https://example.com/plain" }),
        &[],
    )
    .await?;
    let plain = json_of(&plain)?;
    anyhow::ensure!(
        plain["utm"].is_null() && plain["rules"] == json!([]) && plain["max_visits"].is_null(),
        "{plain}"
    );

    // A visit cap: set over REST, seen and cleared over gRPC (not both at
    // once), set again and removed with null over REST.
    let capped = post(
        rest,
        "/api/v1/links",
        &key,
        &json!({ "target_url": "https://example.com/capped", "alias": "capped-rest",
                 "max_visits": 5 }),
        &[],
    )
    .await?;
    anyhow::ensure!(json_of(&capped)?["max_visits"] == 5, "{}", capped.text());
    let both = grpc
        .update_link(authed(
            UpdateLinkRequest {
                code: "capped-rest".to_owned(),
                clear_max_visits: true,
                max_visits: Some(3),
                ..UpdateLinkRequest::default()
            },
            &key,
        ))
        .await;
    anyhow::ensure!(
        both.as_ref()
            .is_err_and(|status| status.code() == tonic::Code::InvalidArgument),
        "{both:?}"
    );
    let cleared = grpc
        .update_link(authed(
            UpdateLinkRequest {
                code: "capped-rest".to_owned(),
                clear_max_visits: true,
                ..UpdateLinkRequest::default()
            },
            &key,
        ))
        .await?
        .into_inner();
    anyhow::ensure!(cleared.max_visits.is_none(), "{cleared:?}");
    for (patch, expected) in [
        (json!({ "max_visits": 7 }), json!(7)),
        (json!({ "max_visits": null }), json!(null)),
    ] {
        let patched = call(
            rest,
            "PATCH",
            "/api/v1/links/capped-rest",
            Some(&key),
            Some(&patch),
            &[],
        )
        .await?;
        anyhow::ensure!(
            json_of(&patched)?["max_visits"] == expected,
            "{}",
            patched.text()
        );
    }

    // A password: set over REST (never returned), seen over gRPC, changed
    // over gRPC (not set and cleared at once), removed with null over REST.
    let protected = post(
        rest,
        "/api/v1/links",
        &key,
        &json!({ "target_url": "https://example.com/locked", "alias": "locked-rest",
                 "password": "open sesame" }),
        &[],
    )
    .await?;
    let protected_body = json_of(&protected)?;
    anyhow::ensure!(
        protected_body["password_protected"] == true
            && protected_body["target_url"] == "https://example.com/locked"
            && !protected.text().contains("sesame")
            && protected_body.get("password").is_none(),
        "{}",
        protected.text()
    );
    let seen = grpc
        .get_link(authed(
            tinyurl_proto::v1::GetLinkRequest {
                code: "locked-rest".to_owned(),
            },
            &key,
        ))
        .await?
        .into_inner();
    anyhow::ensure!(seen.password_protected, "{seen:?}");
    let both = grpc
        .update_link(authed(
            UpdateLinkRequest {
                code: "locked-rest".to_owned(),
                password: Some("another one".to_owned()),
                clear_password: true,
                ..UpdateLinkRequest::default()
            },
            &key,
        ))
        .await;
    anyhow::ensure!(
        both.as_ref().is_err_and(|status| {
            status.code() == tonic::Code::InvalidArgument
                && status.message().contains("clear_password")
        }),
        "{both:?}"
    );
    let changed = grpc
        .update_link(authed(
            UpdateLinkRequest {
                code: "locked-rest".to_owned(),
                password: Some("another one".to_owned()),
                target_url: Some("https://example.com/locked/2".to_owned()),
                ..UpdateLinkRequest::default()
            },
            &key,
        ))
        .await?
        .into_inner();
    anyhow::ensure!(
        changed.password_protected && changed.target_url == "https://example.com/locked/2",
        "{changed:?}"
    );
    let short = call(
        rest,
        "PATCH",
        "/api/v1/links/locked-rest",
        Some(&key),
        Some(&json!({ "password": "abc" })),
        &[],
    )
    .await?;
    anyhow::ensure!(
        short.status == 400 && short.text().contains("4 to 128 characters"),
        "{}",
        short.text()
    );
    let removed = call(
        rest,
        "PATCH",
        "/api/v1/links/locked-rest",
        Some(&key),
        Some(&json!({ "password": null })),
        &[],
    )
    .await?;
    anyhow::ensure!(
        json_of(&removed)?["password_protected"] == false,
        "{}",
        removed.text()
    );

    // Domains: registered over REST (a create on an unknown one refused),
    // a link made on one and named `{domain}%2F{code}`, the domain listed
    // over gRPC, not removable while the link lives.
    let unknown = post(
        rest,
        "/api/v1/links",
        &key,
        &json!({ "target_url": "https://example.com/d", "domain": "go.example" }),
        &[],
    )
    .await?;
    anyhow::ensure!(
        problem(&unknown, 400)?["field"] == "domain",
        "{}",
        unknown.text()
    );
    let added = post(
        rest,
        "/api/v1/domains",
        &key,
        &json!({ "host": "Go.Example", "not_found_url": "https://example.com/lost" }),
        &[],
    )
    .await?;
    anyhow::ensure!(
        added.status == 201 && json_of(&added)?["host"] == "go.example",
        "{}",
        added.text()
    );
    // A link may not lead to a short domain, as to the default one.
    for (body, field) in [
        (
            json!({ "target_url": "https://Go.Example/x" }),
            "target_url",
        ),
        (
            json!({ "target_url": "https://example.com/r",
                    "rules": [{ "devices": ["ios"], "target_url": "https://go.example/y" }] }),
            "rules",
        ),
    ] {
        let looping = post(rest, "/api/v1/links", &key, &body, &[]).await?;
        let problem = problem(&looping, 400)?;
        anyhow::ensure!(
            problem["field"] == field
                && problem["detail"]
                    .as_str()
                    .is_some_and(|detail| detail.contains("go.example is a short domain")),
            "{problem}"
        );
    }
    let on_domain = post(
        rest,
        "/api/v1/links",
        &key,
        &json!({ "target_url": "https://example.com/d", "alias": "locked-rest",
                 "domain": "go.example" }),
        &[],
    )
    .await?;
    let body = json_of(&on_domain)?;
    anyhow::ensure!(
        on_domain.status == 201
            && body["code"] == "locked-rest"
            && body["domain"] == "go.example"
            && body["short_url"] == "https://go.example/locked-rest"
            && on_domain.header("location") == Some("/api/v1/links/go.example%2Flocked-rest"),
        "{} {:?}",
        on_domain.text(),
        on_domain.headers
    );
    let fetched = call(
        rest,
        "GET",
        "/api/v1/links/go.example%2Flocked-rest",
        Some(&key),
        None,
        &[],
    )
    .await?;
    anyhow::ensure!(
        json_of(&fetched)?["target_url"] == "https://example.com/d",
        "{}",
        fetched.text()
    );
    let listed = grpc
        .list_domains(authed(tinyurl_proto::v1::ListDomainsRequest {}, &key))
        .await?
        .into_inner();
    anyhow::ensure!(
        listed.domains.len() == 1 && listed.domains[0].not_found_url == "https://example.com/lost",
        "{listed:?}"
    );
    let busy = call(
        rest,
        "DELETE",
        "/api/v1/domains/go.example",
        Some(&key),
        None,
        &[],
    )
    .await?;
    problem(&busy, 422)?;
    call(
        rest,
        "DELETE",
        "/api/v1/links/go.example%2Flocked-rest",
        Some(&key),
        None,
        &[],
    )
    .await?;
    let removed = call(
        rest,
        "DELETE",
        "/api/v1/domains/go.example",
        Some(&key),
        None,
        &[],
    )
    .await?;
    anyhow::ensure!(removed.status == 204, "{}", removed.text());
    Ok(())
}
