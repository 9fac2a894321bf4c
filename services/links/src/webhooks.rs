//! Webhooks: what an API key's endpoints are told when its links change.
//!
//! The messages are written by the store in the transaction that changes a
//! link (triggers: the migrations V20 of Postgres and of SQLite), so none is lost and none is
//! sent for a change that was rolled back. [`deliver`] sends them from the
//! outbox: at least once, signed per the Standard Webhooks specification,
//! retried with exponential backoff and jitter, and an endpoint that has
//! failed for a day is disabled until its owner enables it again. Delivery
//! runs beside the request paths and touches none of them: a slow or dead
//! endpoint costs a create nothing but the message row.

pub mod deliver;

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hmac::{KeyInit as _, Mac as _};

use crate::error::WriterError;

/// The events an endpoint may ask for.
pub const EVENTS: [&str; 5] = [
    "link.created",
    "link.updated",
    "link.deleted",
    "link.blocked",
    // A link's clicks of one minute (one message per link per minute of a
    // folded batch), written by the click fold.
    "link.clicked",
];

/// Endpoints per API key.
pub const MAX_ENDPOINTS_PER_KEY: usize = 10;

/// How long a rotated-out secret still signs (beside the new one), so a
/// receiver can switch without missing a message.
pub const PREVIOUS_SECRET_KEPT: Duration = Duration::from_secs(24 * 3600);

/// An endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWebhook {
    pub id: i64,
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
    pub created_at: SystemTime,
    /// Set when it was disabled after failing for too long.
    pub disabled_at: Option<SystemTime>,
    /// When its current run of failures began.
    pub failing_since: Option<SystemTime>,
    /// Messages waiting for it.
    pub pending: i64,
}

/// One attempt at delivering a message, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub message_id: String,
    pub event_type: String,
    pub attempt: i32,
    /// The receiver's HTTP status; `None` when it did not answer.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency: Duration,
    pub delivered: bool,
    pub at: SystemTime,
}

/// A message claimed for delivery, with what signing and sending it needs.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    pub id: i64,
    pub message_id: String,
    pub endpoint_id: i64,
    pub url: String,
    pub secret: String,
    /// Signs too, until it expires ([`PREVIOUS_SECRET_KEPT`]).
    pub previous_secret: Option<String>,
    pub event_type: String,
    pub payload: String,
    /// Attempts before this one.
    pub attempts: i32,
}

/// What one attempt came to, for the store to record.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub message: i64,
    pub endpoint_id: i64,
    pub message_id: String,
    pub event_type: String,
    /// This attempt's number, from 1.
    pub attempt: i32,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency: Duration,
    /// `None`: delivered. Else when to try again.
    pub retry_in: Option<Duration>,
}

/// The endpoints' store: both link stores, whose triggers fill the outbox.
#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    async fn create_webhook(
        &self,
        owner: i64,
        url: &str,
        events: &[String],
        secret: &str,
    ) -> Result<StoredWebhook, WriterError>;

    /// The owner's endpoints, oldest first.
    async fn webhooks(&self, owner: i64) -> Result<Vec<StoredWebhook>, WriterError>;

    /// Deletes an endpoint with its pending messages and log; false when the
    /// owner has no such endpoint.
    async fn delete_webhook(&self, owner: i64, id: i64) -> Result<bool, WriterError>;

    /// Enables an endpoint and makes its pending messages due now.
    async fn enable_webhook(
        &self,
        owner: i64,
        id: i64,
    ) -> Result<Option<StoredWebhook>, WriterError>;

    /// Replaces the secret; the old one keeps signing for `keep_previous`.
    async fn rotate_webhook_secret(
        &self,
        owner: i64,
        id: i64,
        secret: &str,
        keep_previous: Duration,
    ) -> Result<Option<StoredWebhook>, WriterError>;

    /// The newest `limit` attempts at the endpoint's messages, newest
    /// first; `None` when the owner has no such endpoint.
    async fn webhook_deliveries(
        &self,
        owner: i64,
        id: i64,
        limit: i64,
    ) -> Result<Option<Vec<WebhookDelivery>>, WriterError>;

    /// Takes up to `limit` due messages of enabled endpoints for `lease`
    /// (another writer takes them after it, if this one died).
    async fn claim_webhook_messages(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<OutboundMessage>, WriterError>;

    /// Records attempts: logged; a delivered message leaves the outbox and
    /// its endpoint's failures end; a failed one waits its retry, its
    /// endpoint is not tried again before its own backoff (so a dead one is
    /// probed once per interval, not once per new message), and an endpoint
    /// failing for the settings' `disable_after` is disabled.
    async fn finish_webhook_attempts(
        &self,
        outcomes: &[AttemptOutcome],
        settings: &deliver::DeliverySettings,
    ) -> Result<(), WriterError>;

    /// Deletes up to `limit` log rows older than `age`; how many went.
    async fn prune_webhook_deliveries(&self, age: Duration, limit: i64)
    -> Result<u64, WriterError>;
}

/// A new endpoint secret: `whsec_` and the base64 of 24 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 24];
    rand::fill(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// The `webhook-signature` header of a message: `v1,` and the base64 of
/// HMAC-SHA256 over `{id}.{timestamp}.{body}` under each secret's key,
/// space-separated.
pub fn signature(secrets: &[&str], message_id: &str, timestamp: i64, body: &str) -> String {
    secrets
        .iter()
        .filter_map(|secret| {
            let key = base64::engine::general_purpose::STANDARD
                .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
                .ok()?;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).ok()?;
            mac.update(message_id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body.as_bytes());
            Some(format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            ))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The wait before attempt `attempts + 1`: `base` doubled per attempt made,
/// at most `max`, and a random part of up to a fifth either way so that
/// the messages of an endpoint that came back do not all retry at once.
pub fn backoff(attempts: i32, base: Duration, max: Duration) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let wait = base.saturating_mul(1 << doublings).min(max);
    let jitter: f64 = rand::random_range(0.8..1.2);
    wait.mul_f64(jitter)
}

/// The events `requested` names, checked: at least one, each known, no
/// repeats; empty asks for all.
pub fn events(requested: &[String]) -> Result<Vec<String>, WriterError> {
    if requested.is_empty() {
        return Ok(EVENTS.iter().map(|event| (*event).to_owned()).collect());
    }
    let mut events = Vec::new();
    for event in requested {
        let event = event.trim();
        if !EVENTS.contains(&event) {
            return Err(WriterError::invalid(
                "events",
                format!("{event:?} is not one of {}", EVENTS.join(", ")),
            ));
        }
        if !events.iter().any(|known: &String| known == event) {
            events.push(event.to_owned());
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification's reference
        // libraries: this secret, id, timestamp and body give this value.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let signed = signature(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let both = signature(&[secret, &new_secret()], "msg_1", 1, "{}");
        assert_eq!(both.split(' ').count(), 2);
        assert!(new_secret().starts_with("whsec_"));
        assert_ne!(new_secret(), new_secret());
    }

    #[test]
    fn backs_off_exponentially_with_jitter_up_to_the_cap() {
        let base = Duration::from_secs(5);
        let max = Duration::from_secs(3600);
        for (attempts, expected) in [(1, 5), (2, 10), (3, 20), (10, 2560), (11, 3600), (40, 3600)] {
            let wait = backoff(attempts, base, max);
            let expected = Duration::from_secs(expected);
            assert!(
                wait >= expected.mul_f64(0.8) && wait <= expected.mul_f64(1.2),
                "{attempts}: {wait:?}"
            );
        }
    }

    #[test]
    fn events_are_checked() {
        assert_eq!(events(&[]).expect("all").len(), 5);
        assert_eq!(
            events(&["link.created".to_owned(), "link.created".to_owned()]).expect("one"),
            ["link.created"]
        );
        assert!(events(&["link.visited".to_owned()]).is_err());
    }
}
