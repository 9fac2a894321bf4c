//! Sends the outbox's messages: claims due ones for a lease, posts each to
//! its endpoint with the Standard Webhooks headers, records every attempt.
//! Every writer runs this; the lease keeps two from sending one message at
//! once, and a writer that dies mid-delivery leaves its messages to the
//! others when the lease ends — they are sent again with the same
//! `webhook-id`, so a receiver can tell a duplicate.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use tinyurl_domain::target::is_private_ip;
use tinyurl_runtime::Stopping;

use super::{AttemptOutcome, OutboundMessage, backoff};
use crate::store::LinkStore;

/// Messages claimed at once, all sent at once: the claim's lease then
/// covers one delivery's bound, not several in a row.
const CLAIM: usize = 32;
/// How long to wait for due messages when there were none.
const IDLE: Duration = Duration::from_millis(500);
/// The delivery log is kept this long.
const LOG_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How much of an answer's body is read (and kept in the log on failure).
const ERROR_BODY: usize = 200;

/// How deliveries go.
#[derive(Debug, Clone, Copy)]
pub struct DeliverySettings {
    /// The bound on one delivery: connect, send, and the answer.
    pub timeout: Duration,
    /// The wait after a first failure, doubled after each next one.
    pub retry_base: Duration,
    /// The longest wait between attempts.
    pub retry_max: Duration,
    /// An endpoint failing this long without a success is disabled.
    pub disable_after: Duration,
    /// Endpoints on private, loopback and link-local addresses are sent to
    /// (tests and internal use).
    pub allow_private: bool,
}

/// Resolves a host to its public addresses only (unless allowed), so a
/// name that points inside the network after it was registered reaches
/// nothing there.
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let kept: Vec<SocketAddr> = found
                .filter(|address| allow_private || !is_private_ip(address.ip()))
                .collect();
            if kept.is_empty() {
                return Err(format!("{} has no public address", name.as_str()).into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The client every delivery of this writer uses.
pub fn client(settings: &DeliverySettings) -> anyhow::Result<reqwest::Client> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(native_roots())
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        // A redirect would send the message where it was not registered.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tinyurl-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(PublicOnly {
            allow_private: settings.allow_private,
        }))
        .use_preconfigured_tls(tls)
        .build()?)
}

/// The operating system's certificate authorities (Debian's
/// ca-certificates in the images): endpoints are public HTTPS servers.
fn native_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "cannot read a system certificate");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(
        added,
        ignored,
        "system certificate authorities for webhooks"
    );
    roots
}

/// Delivers until `stopping`; a batch in flight when it fires is finished
/// and recorded.
pub async fn run(
    store: Arc<dyn LinkStore>,
    settings: DeliverySettings,
    stopping: Stopping,
) -> anyhow::Result<()> {
    let client = client(&settings)?;
    let delivered = metrics::counter!("writer_webhook_deliveries_total", "result" => "delivered");
    let failed = metrics::counter!("writer_webhook_deliveries_total", "result" => "failed");
    let errors = metrics::counter!("writer_webhook_errors_total");
    let latency = metrics::histogram!("writer_webhook_delivery_seconds");
    // Every claimed message is sent at once and each is bounded by the
    // timeout: the lease is that and a margin for recording them.
    let lease = settings.timeout + Duration::from_secs(5);
    let mut last_prune: Option<Instant> = None;
    while !stopping.is_stopping() {
        if last_prune.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
            last_prune = Some(Instant::now());
            while let Ok(pruned) = store.prune_webhook_deliveries(LOG_KEPT, 5_000).await {
                if pruned == 0 {
                    break;
                }
            }
        }
        let claimed = match store.claim_webhook_messages(CLAIM as i64, lease).await {
            Ok(claimed) => claimed,
            Err(error) => {
                errors.increment(1);
                tracing::warn!(
                    error = error.public_message(),
                    "cannot claim webhook messages"
                );
                pause(&stopping, Duration::from_secs(1)).await;
                continue;
            }
        };
        if claimed.is_empty() {
            pause(&stopping, IDLE).await;
            continue;
        }
        let outcomes: Vec<AttemptOutcome> = futures::stream::iter(claimed)
            .map(|message| attempt(&client, &settings, message))
            .buffer_unordered(CLAIM)
            .collect()
            .await;
        for outcome in &outcomes {
            latency.record(outcome.latency.as_secs_f64());
            if outcome.retry_in.is_none() {
                delivered.increment(1);
            } else {
                failed.increment(1);
            }
        }
        // Unrecorded, the messages are sent again when their lease ends:
        // duplicates (same webhook-id), never a loss.
        let mut recorded = store.finish_webhook_attempts(&outcomes, &settings).await;
        for _ in 0..3 {
            if recorded.is_ok() || stopping.is_stopping() {
                break;
            }
            errors.increment(1);
            tokio::time::sleep(Duration::from_millis(500)).await;
            recorded = store.finish_webhook_attempts(&outcomes, &settings).await;
        }
        if let Err(error) = recorded {
            tracing::warn!(
                error = error.public_message(),
                "cannot record webhook deliveries; they will be sent again"
            );
        }
    }
    Ok(())
}

async fn pause(stopping: &Stopping, wait: Duration) {
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        () = stopping.clone().wait() => {}
    }
}

/// One attempt at `message`.
async fn attempt(
    client: &reqwest::Client,
    settings: &DeliverySettings,
    message: OutboundMessage,
) -> AttemptOutcome {
    let started = Instant::now();
    let result = send(client, settings, &message).await;
    let latency = started.elapsed();
    let attempt = message.attempts.saturating_add(1);
    let (status, error) = match result {
        Ok(status) if (200..300).contains(&status) => (Some(status), None),
        Ok(status) => (Some(status), Some(format!("answered {status}"))),
        Err(error) => (None, Some(error)),
    };
    AttemptOutcome {
        message: message.id,
        endpoint_id: message.endpoint_id,
        message_id: message.message_id,
        event_type: message.event_type,
        attempt,
        status,
        retry_in: error
            .is_some()
            .then(|| backoff(attempt, settings.retry_base, settings.retry_max)),
        error,
        latency,
    }
}

/// Posts `message`; its answer's status, or why there was none.
async fn send(
    client: &reqwest::Client,
    settings: &DeliverySettings,
    message: &OutboundMessage,
) -> Result<u16, String> {
    let url = reqwest::Url::parse(&message.url).map_err(|error| error.to_string())?;
    // An address in the URL is never resolved: checked here.
    if let Some(address) = url
        .host_str()
        .and_then(|host| host.trim_matches(['[', ']']).parse::<IpAddr>().ok())
        && !settings.allow_private
        && is_private_ip(address)
    {
        return Err(format!("{address} is not a public address"));
    }
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
        .try_into()
        .unwrap_or(i64::MAX);
    let mut secrets = vec![message.secret.as_str()];
    secrets.extend(message.previous_secret.as_deref());
    let signature = super::signature(&secrets, &message.message_id, timestamp, &message.payload);
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &message.message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(message.payload.clone())
        .send()
        .await
        .map_err(|error| describe(&error))?;
    Ok(response.status().as_u16())
}

/// A failed request, in the words the delivery log keeps.
fn describe(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut text = format!("{what}: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text.chars().take(ERROR_BODY).collect()
}
