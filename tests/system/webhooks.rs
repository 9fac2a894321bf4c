//! Webhooks against the real split system: two writers deliver from one
//! Postgres outbox to a receiver on loopback that is down, then failing,
//! then slow, while one writer is SIGKILLed; every event arrives, duplicates
//! only under the same `webhook-id`, and every request's signature is
//! verified by the Standard Webhooks reference library (PyPI
//! `standardwebhooks`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::BodyExt as _;
use tinyurl_harness::process::{ScratchDir, free_port};
use tinyurl_harness::system::System;
use tinyurl_harness::wait_until;
use tinyurl_proto::v1::{
    CreateLinkRequest, CreateWebhookRequest, DeleteLinkRequest, ListWebhookDeliveriesRequest,
    ListWebhooksRequest, UpdateLinkRequest,
};

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// 500 to everything.
    Failing,
    /// 200, but every `slow_every`th request only after 5 s.
    Answering { slow_every: u64 },
}

/// One request the receiver got and what it answered.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    status: u16,
}

#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<Received>>,
    count: AtomicU64,
}

/// A webhook receiver on a fixed loopback port that can be down (nothing
/// listening, every connection refused), failing or answering.
struct Receiver {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Seen>,
    /// The accept loop; its connections die with it (a JoinSet it owns).
    serving: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            addr: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            mode: Arc::new(Mutex::new(Mode::Failing)),
            seen: Arc::default(),
            serving: None,
        })
    }

    fn set(&self, mode: Mode) {
        *self
            .mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = mode;
    }

    async fn up(&mut self, mode: Mode) -> anyhow::Result<()> {
        self.set(mode);
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        let (mode, seen) = (Arc::clone(&self.mode), Arc::clone(&self.seen));
        self.serving = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (mode, seen) = (Arc::clone(&mode), Arc::clone(&seen));
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        answer(request, Arc::clone(&mode), Arc::clone(&seen))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
        Ok(())
    }

    /// Stops listening and drops every open connection.
    fn down(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }

    fn received(&self) -> Vec<Received> {
        self.seen
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Seen>,
) -> Result<hyper::Response<String>, std::convert::Infallible> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let body = match request.into_body().collect().await {
        Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let mode = *mode
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let number = seen.count.fetch_add(1, Ordering::Relaxed) + 1;
    let status = match mode {
        Mode::Failing => 500,
        Mode::Answering { slow_every } => {
            if number.is_multiple_of(slow_every) {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            200
        }
    };
    seen.requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Received {
            id,
            timestamp,
            signature,
            body,
            status,
        });
    let mut response = hyper::Response::new(String::new());
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    Ok(response)
}

/// The Python with `standardwebhooks` installed that `scripts/test` makes.
fn python() -> anyhow::Result<String> {
    std::env::var("TINYURL_TEST_PYTHON").context(
        "TINYURL_TEST_PYTHON is not set: run the suite with scripts/test, which installs the \
         standardwebhooks package into a virtualenv and points it there",
    )
}

/// The requests as a file the reference library reads (one JSON object a
/// line), and a check of them under one secret: what `verify.py` printed
/// (how many it verified) and whether it verified every one.
struct Recorded {
    _scratch: ScratchDir,
    path: std::path::PathBuf,
}

impl Recorded {
    fn write(requests: &[Received]) -> anyhow::Result<Self> {
        let scratch = ScratchDir::new("webhooks", None)?;
        let path = scratch.path().join("received.jsonl");
        let mut lines = String::new();
        for request in requests {
            lines.push_str(&serde_json::to_string(&serde_json::json!({
                "id": request.id,
                "timestamp": request.timestamp,
                "signature": request.signature,
                "body": request.body,
            }))?);
            lines.push('\n');
        }
        std::fs::write(&path, lines)?;
        Ok(Self {
            _scratch: scratch,
            path,
        })
    }

    fn verify(&self, python: &str, secret: &str) -> anyhow::Result<std::process::Output> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/webhooks/verify.py");
        Ok(std::process::Command::new(python)
            .arg(script)
            .arg(secret)
            .arg(&self.path)
            .output()?)
    }
}

/// (event type, link code) of a message body.
fn event_of(body: &str) -> anyhow::Result<(String, String)> {
    let message: serde_json::Value = serde_json::from_str(body)?;
    Ok((
        message["type"].as_str().context("a type")?.to_owned(),
        message["data"]["code"]
            .as_str()
            .context("a code")?
            .to_owned(),
    ))
}

/// Events made while the receiver is down for 60 s, then answers 500 for
/// 30 s, then answers with one request in seven taking 5 s, with one of
/// the two writers SIGKILLed while deliveries are in flight: every event is
/// delivered, each under one `webhook-id` (a repeat is a duplicate of the
/// same id), and every request verifies with the reference library.
#[tokio::test]
async fn every_event_arrives_signed_through_an_outage_errors_and_a_killed_writer()
-> anyhow::Result<()> {
    let python = python()?;
    let fast_retries = [
        ("TINYURL_WEBHOOKS_ALLOW_PRIVATE", "true"),
        ("TINYURL_WEBHOOK_RETRY_BASE_MS", "500"),
        ("TINYURL_WEBHOOK_RETRY_MAX_MS", "3000"),
    ];
    let system = System::start(&fast_retries).await?;
    let mut second = system.setup.start(&fast_retries).await?;
    let mut receiver = Receiver::new()?;
    let mut links = system.links()?;
    let endpoint = links
        .create_webhook(system.authed(CreateWebhookRequest {
            url: format!("http://{}/hooks/tinyurl", receiver.addr),
            events: Vec::new(),
        }))
        .await?
        .into_inner();
    anyhow::ensure!(
        endpoint.secret.starts_with("whsec_") && endpoint.enabled,
        "{endpoint:?}"
    );
    anyhow::ensure!(
        endpoint.events.len() == 5,
        "all events by default: {endpoint:?}"
    );

    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    let creating = links.clone();
    let create = |target: String| {
        let mut links = creating.clone();
        let request = system.authed(CreateLinkRequest {
            target_url: target,
            ..CreateLinkRequest::default()
        });
        async move { anyhow::Ok(links.create_link(request).await?.into_inner().code) }
    };
    // Down: 60 s of changes no one receives.
    let started = Instant::now();
    let mut codes = Vec::new();
    for index in 0..40 {
        let code = create(format!("https://example.com/down/{index}")).await?;
        expected.insert(("link.created".to_owned(), code.clone()));
        codes.push(code);
    }
    for code in &codes[..10] {
        links
            .update_link(system.authed(UpdateLinkRequest {
                code: code.clone(),
                target_url: Some(format!("https://example.com/moved/{code}")),
                ..UpdateLinkRequest::default()
            }))
            .await?;
        expected.insert(("link.updated".to_owned(), code.clone()));
    }
    for code in &codes[10..15] {
        links
            .delete_link(system.authed(DeleteLinkRequest { code: code.clone() }))
            .await?;
        expected.insert(("link.deleted".to_owned(), code.clone()));
    }
    let blocked = create("https://blocked.example/login".to_owned()).await?;
    expected.insert(("link.created".to_owned(), blocked.clone()));
    let output = system.setup.command(&["block-host", "blocked.example"])?;
    anyhow::ensure!(output.status.success(), "{output:?}");
    expected.insert(("link.blocked".to_owned(), blocked));
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(started.elapsed())).await;

    // Failing: 30 s of 500s, and more changes.
    receiver.up(Mode::Failing).await?;
    for index in 0..20 {
        let code = create(format!("https://example.com/failing/{index}")).await?;
        expected.insert(("link.created".to_owned(), code));
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let failing = receiver.received().len();
    anyhow::ensure!(
        failing > 0,
        "attempts went on while it failed: {:?}\n{}",
        links
            .list_webhooks(system.authed(ListWebhooksRequest {}))
            .await?
            .into_inner(),
        system.writer.log()
    );

    // Answering, one request in seven slow; a writer dies mid-delivery.
    receiver.set(Mode::Answering { slow_every: 7 });
    for index in 0..20 {
        let code = create(format!("https://example.com/answering/{index}")).await?;
        expected.insert(("link.created".to_owned(), code));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    second.kill()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    second.start_again().await?;

    let receiver_ref = &receiver;
    let expected_ref = &expected;
    wait_until(
        "every event delivered",
        Duration::from_secs(120),
        || async move {
            let delivered: BTreeSet<(String, String)> = receiver_ref
                .received()
                .iter()
                .filter(|request| request.status == 200)
                .filter_map(|request| event_of(&request.body).ok())
                .collect();
            Ok(expected_ref.is_subset(&delivered))
        },
    )
    .await?;

    let received = receiver.received();
    let mut ids: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for request in &received {
        ids.entry(event_of(&request.body)?)
            .or_default()
            .insert(request.id.clone());
    }
    let events: BTreeSet<(String, String)> = ids.keys().cloned().collect();
    anyhow::ensure!(events == expected, "only the events made: {events:?}");
    for (event, ids) in &ids {
        anyhow::ensure!(ids.len() == 1, "{event:?} came under {ids:?}");
    }
    let delivered = received
        .iter()
        .filter(|request| request.status == 200)
        .count();
    println!(
        "{} events; {} requests: {failing} answered 500, {delivered} answered 200 ({} more than the events: duplicates of the same id)",
        expected.len(),
        received.len(),
        delivered - expected.len()
    );

    // The reference library verifies every request (signature and time).
    let recorded = Recorded::write(&received)?;
    let verified = recorded.verify(&python, &endpoint.secret)?;
    anyhow::ensure!(
        verified.status.success(),
        "standardwebhooks refused a request: {}",
        String::from_utf8_lossy(&verified.stderr)
    );
    anyhow::ensure!(
        String::from_utf8_lossy(&verified.stdout).trim() == received.len().to_string(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    // A wrong secret is refused by the same check.
    let refused = recorded.verify(&python, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
    anyhow::ensure!(!refused.status.success(), "another secret must not verify");

    // The delivery log tells the story; nothing is left waiting.
    let log = links
        .list_webhook_deliveries(system.authed(ListWebhookDeliveriesRequest {
            id: endpoint.id,
            limit: 500,
        }))
        .await?
        .into_inner()
        .deliveries;
    anyhow::ensure!(log.iter().any(|row| row.delivered && row.status == 200));
    anyhow::ensure!(log.iter().any(|row| !row.delivered && row.status == 500));
    wait_until("the outbox to empty", Duration::from_secs(30), || {
        let mut links = links.clone();
        let request = system.authed(ListWebhooksRequest {});
        async move {
            let listed = links.list_webhooks(request).await?.into_inner();
            Ok(listed.webhooks.first().is_some_and(|webhook| {
                webhook.pending == 0 && webhook.enabled && webhook.secret.is_empty()
            }))
        }
    })
    .await?;
    receiver.down();
    Ok(())
}

/// Clicks are told as `link.clicked`, one message per link and minute of a
/// folded batch, their counts adding up to the clicks; an endpoint failing
/// past `TINYURL_WEBHOOK_DISABLE_AFTER` is disabled and its messages wait;
/// enabled again, they arrive; after a rotation a message verifies under
/// the new secret and, for a day, the old.
#[tokio::test]
async fn clicks_are_told_and_a_failing_endpoint_is_disabled_until_enabled() -> anyhow::Result<()> {
    let python = python()?;
    let system = System::start(&[
        ("TINYURL_WEBHOOKS_ALLOW_PRIVATE", "true"),
        ("TINYURL_WEBHOOK_RETRY_BASE_MS", "200"),
        ("TINYURL_WEBHOOK_RETRY_MAX_MS", "500"),
        ("TINYURL_WEBHOOK_DISABLE_AFTER", "3s"),
    ])
    .await?;
    let redirect = system
        .start_redirect(&[("TINYURL_CLICKS_FLUSH_MS", "200")])
        .await?;
    let mut receiver = Receiver::new()?;
    receiver
        .up(Mode::Answering {
            slow_every: u64::MAX,
        })
        .await?;
    let mut links = system.links()?;
    let endpoint = links
        .create_webhook(system.authed(CreateWebhookRequest {
            url: format!("http://{}/clicks", receiver.addr),
            events: vec!["link.clicked".to_owned()],
        }))
        .await?
        .into_inner();
    let refused = links
        .create_webhook(system.authed(CreateWebhookRequest {
            url: format!("http://{}/clicks", receiver.addr),
            events: vec!["link.visited".to_owned()],
        }))
        .await;
    anyhow::ensure!(
        refused
            .as_ref()
            .is_err_and(|status| status.code() == tonic::Code::InvalidArgument),
        "{refused:?}"
    );
    let code = links
        .create_link(system.authed(CreateLinkRequest {
            target_url: "https://example.com/clicked".to_owned(),
            ..CreateLinkRequest::default()
        }))
        .await?
        .into_inner()
        .code;
    system.wait_replicated(&code).await?;
    let click = |times: usize| {
        let code = code.clone();
        let addr = redirect.listen_addr();
        async move {
            for _ in 0..times {
                let response = tinyurl_harness::services::http_request_with(
                    addr,
                    "GET",
                    &format!("/{code}"),
                    &[(
                        "User-Agent",
                        "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0",
                    )],
                )
                .await?;
                anyhow::ensure!(response.status == 302);
            }
            anyhow::Ok(())
        }
    };
    // Clicks told, and nothing but clicks (this endpoint asked for those).
    let clicked = |receiver: &Receiver| -> anyhow::Result<(u64, BTreeSet<String>)> {
        let mut clicks = 0;
        let mut ids = BTreeSet::new();
        for request in receiver.received() {
            let message: serde_json::Value = serde_json::from_str(&request.body)?;
            anyhow::ensure!(message["type"] == "link.clicked", "{message}");
            anyhow::ensure!(message["data"]["code"] == code.as_str(), "{message}");
            if request.status == 200 && ids.insert(request.id.clone()) {
                clicks += message["data"]["clicks"].as_u64().context("clicks")?;
            }
        }
        Ok((clicks, ids))
    };
    click(5).await?;
    wait_until("five clicks told", Duration::from_secs(30), || async {
        Ok(clicked(&receiver)?.0 == 5)
    })
    .await?;

    // Dead past the allowance: disabled, its messages waiting.
    receiver.down();
    click(3).await?;
    let listed = || {
        let mut links = links.clone();
        let request = system.authed(ListWebhooksRequest {});
        async move {
            anyhow::Ok(
                links
                    .list_webhooks(request)
                    .await?
                    .into_inner()
                    .webhooks
                    .into_iter()
                    .next()
                    .context("the endpoint")?,
            )
        }
    };
    wait_until("the endpoint disabled", Duration::from_secs(30), || async {
        let webhook = listed().await?;
        Ok(!webhook.enabled && webhook.disabled_at.is_some() && webhook.pending > 0)
    })
    .await?;
    let waiting = listed().await?.pending;
    receiver
        .up(Mode::Answering {
            slow_every: u64::MAX,
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    anyhow::ensure!(clicked(&receiver)?.0 == 5, "nothing sent while disabled");
    let log = links
        .list_webhook_deliveries(system.authed(ListWebhookDeliveriesRequest {
            id: endpoint.id,
            limit: 0,
        }))
        .await?
        .into_inner()
        .deliveries;
    anyhow::ensure!(
        log.iter()
            .any(|row| !row.delivered && row.status == 0 && row.error.contains("connect")),
        "refused connections logged: {log:?}"
    );

    // A rotation, then enabled: the waiting messages arrive, signed twice.
    let rotated = links
        .rotate_webhook_secret(
            system.authed(tinyurl_proto::v1::RotateWebhookSecretRequest { id: endpoint.id }),
        )
        .await?
        .into_inner();
    anyhow::ensure!(rotated.secret.starts_with("whsec_") && rotated.secret != endpoint.secret);
    let enabled = links
        .enable_webhook(system.authed(tinyurl_proto::v1::EnableWebhookRequest { id: endpoint.id }))
        .await?
        .into_inner();
    anyhow::ensure!(
        enabled.enabled && enabled.failing_since.is_none(),
        "{enabled:?}"
    );
    wait_until("all eight clicks told", Duration::from_secs(30), || async {
        Ok(clicked(&receiver)?.0 == 8)
    })
    .await?;
    println!("{waiting} messages waited while the endpoint was disabled");
    let after: Vec<Received> = receiver
        .received()
        .into_iter()
        .filter(|request| request.signature.contains(' '))
        .collect();
    anyhow::ensure!(!after.is_empty(), "two signatures after the rotation");
    let recorded = Recorded::write(&after)?;
    for secret in [&rotated.secret, &endpoint.secret] {
        let verified = recorded.verify(&python, secret)?;
        anyhow::ensure!(
            verified.status.success(),
            "{}",
            String::from_utf8_lossy(&verified.stderr)
        );
    }
    receiver.down();
    Ok(())
}

/// `tinyurl up` on its embedded store delivers from the same outbox: events
/// made while the receiver fails survive a SIGKILL of the process and
/// arrive after the restart, each under one `webhook-id`, clicks as
/// `link.clicked`, every request verified by the reference library, the
/// failures in the log.
#[tokio::test]
async fn the_embedded_store_delivers_every_event_through_failures_and_a_kill() -> anyhow::Result<()>
{
    let python = python()?;
    let dir = ScratchDir::new("webhooks-embedded", None)?;
    let mut up = tinyurl_harness::embedded::Embedded::start(dir.path()).await?;
    let key = up.printed_key.clone().context("the first key")?;
    up.stop()?;
    for (name, value) in [
        ("TINYURL_WEBHOOKS_ALLOW_PRIVATE", "true"),
        ("TINYURL_WEBHOOK_RETRY_BASE_MS", "200"),
        ("TINYURL_WEBHOOK_RETRY_MAX_MS", "1000"),
    ] {
        up.set_env(name, value);
    }
    up.start_again().await?;
    let grpc = format!("http://{}", up.grpc);
    let client = || -> anyhow::Result<_> {
        let channel = tonic::transport::Channel::from_shared(grpc.clone())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(20))
            .connect_lazy();
        Ok(tinyurl_proto::v1::links_client::LinksClient::new(channel))
    };
    let mut receiver = Receiver::new()?;
    receiver.up(Mode::Failing).await?;
    let endpoint = client()?
        .create_webhook(tinyurl_harness::services::authed(
            CreateWebhookRequest {
                // By name: `up` serves on 127.0.0.1 itself, and a target that
                // names its own host is refused as a loop.
                url: format!("http://localhost:{}/embedded", receiver.addr.port()),
                events: Vec::new(),
            },
            &key,
        ))
        .await?
        .into_inner();

    let mut codes = Vec::new();
    for index in 0..3 {
        codes.push(
            client()?
                .create_link(tinyurl_harness::services::authed(
                    CreateLinkRequest {
                        target_url: format!("https://example.com/embedded/{index}"),
                        ..CreateLinkRequest::default()
                    },
                    &key,
                ))
                .await?
                .into_inner()
                .code,
        );
    }
    client()?
        .update_link(tinyurl_harness::services::authed(
            UpdateLinkRequest {
                code: codes[1].clone(),
                target_url: Some("https://example.com/embedded/changed".to_owned()),
                ..UpdateLinkRequest::default()
            },
            &key,
        ))
        .await?;
    client()?
        .delete_link(tinyurl_harness::services::authed(
            DeleteLinkRequest {
                code: codes[2].clone(),
            },
            &key,
        ))
        .await?;
    for _ in 0..2 {
        let response = tinyurl_harness::services::http_request_with(
            up.http,
            "GET",
            &format!("/{}", codes[0]),
            &[(
                "User-Agent",
                "Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0",
            )],
        )
        .await?;
        anyhow::ensure!(response.status == 302, "{}", response.status);
    }
    wait_until("failed attempts", Duration::from_secs(30), || async {
        Ok(receiver.received().len() >= 3)
    })
    .await?;
    // The clicks folded (a kill loses those still in the redirect's memory),
    // their message written beside them.
    wait_until("the clicks folded", Duration::from_secs(30), || async {
        let stats = client()?
            .get_link_stats(tinyurl_harness::services::authed(
                tinyurl_proto::v1::GetLinkStatsRequest {
                    code: codes[0].clone(),
                    ..Default::default()
                },
                &key,
            ))
            .await?
            .into_inner();
        Ok(stats.lifetime_clicks == 2)
    })
    .await?;
    // Killed with messages waiting (and maybe some in flight): the outbox is
    // in the data file.
    up.kill()?;
    receiver.set(Mode::Answering {
        slow_every: u64::MAX,
    });
    up.start_again().await?;

    let expected: BTreeSet<(String, String)> = [
        ("link.created", &codes[0]),
        ("link.created", &codes[1]),
        ("link.created", &codes[2]),
        ("link.updated", &codes[1]),
        ("link.deleted", &codes[2]),
    ]
    .into_iter()
    .map(|(kind, code)| (kind.to_owned(), code.clone()))
    .collect();
    let delivered = |receiver: &Receiver| -> anyhow::Result<(BTreeSet<(String, String)>, u64)> {
        let mut events = BTreeSet::new();
        let mut clicks = 0;
        let mut ids = BTreeSet::new();
        for request in receiver.received() {
            if request.status != 200 || !ids.insert(request.id.clone()) {
                continue;
            }
            let event = event_of(&request.body)?;
            if event.0 == "link.clicked" {
                let message: serde_json::Value = serde_json::from_str(&request.body)?;
                clicks += message["data"]["clicks"].as_u64().context("clicks")?;
            } else {
                anyhow::ensure!(events.insert(event.clone()), "{event:?} twice");
            }
        }
        Ok((events, clicks))
    };
    let arrived = wait_until("every event delivered", Duration::from_secs(60), || async {
        let (events, clicks) = delivered(&receiver)?;
        Ok(events == expected && clicks == 2)
    })
    .await;
    if let Err(error) = arrived {
        let statuses: Vec<u16> = receiver
            .received()
            .iter()
            .map(|request| request.status)
            .collect();
        anyhow::bail!(
            "{error}: delivered {:?}, expected {expected:?}; answered {statuses:?}; log of up: {}",
            delivered(&receiver)?,
            std::fs::read_to_string(up.log_path()).unwrap_or_default()
        );
    }
    // Each id carries one event, however often it was sent.
    let mut bodies: BTreeMap<String, String> = BTreeMap::new();
    for request in receiver.received() {
        let body = bodies
            .entry(request.id.clone())
            .or_insert_with(|| request.body.clone());
        anyhow::ensure!(*body == request.body, "{} sent with two bodies", request.id);
    }
    let recorded = Recorded::write(&receiver.received())?;
    let checked = recorded.verify(&python, &endpoint.secret)?;
    anyhow::ensure!(
        checked.status.success(),
        "verify.py: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let log = client()?
        .list_webhook_deliveries(tinyurl_harness::services::authed(
            ListWebhookDeliveriesRequest {
                id: endpoint.id,
                limit: 500,
            },
            &key,
        ))
        .await?
        .into_inner()
        .deliveries;
    anyhow::ensure!(
        log.iter().any(|row| row.status == 500 && !row.delivered)
            && log.iter().any(|row| row.status == 200 && row.delivered),
        "the log holds the failures and the deliveries: {log:?}"
    );
    let listed = client()?
        .list_webhooks(tinyurl_harness::services::authed(
            ListWebhooksRequest {},
            &key,
        ))
        .await?
        .into_inner()
        .webhooks;
    anyhow::ensure!(
        listed.len() == 1 && listed[0].pending == 0 && listed[0].enabled,
        "{listed:?}"
    );
    Ok(())
}
