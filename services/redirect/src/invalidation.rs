//! Follows the writer's invalidation channel: each announced code is evicted
//! from L1. Whenever the subscription may have missed messages (connection
//! error, reconnect, a lagging receiver) L1 is flushed; the L1 TTL bounds
//! staleness if a message is lost some other way.

use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use secrecy::SecretString;
use tinyurl_domain::cached::{INVALIDATION_CHANNEL, announced_codes};
use tokio::sync::broadcast::error::RecvError;

use crate::resolve::Resolver;

pub fn subscriber(url: &SecretString, timeout: Duration) -> anyhow::Result<SubscriberClient> {
    // The subscription's own commands (SUBSCRIBE) may wait for a connection:
    // only the reconnect policy and timeouts are shared with data clients.
    let client = tinyurl_runtime::redis::builder(url, timeout)?
        .with_connection_config(|connection| connection.max_command_attempts = 3)
        .with_performance_config(|performance| {
            performance.default_command_timeout = timeout.max(Duration::from_secs(1));
        })
        .build_subscriber_client()?;
    Ok(client)
}

/// Subscribes `client` to the invalidation channel: sharded (`SSUBSCRIBE`)
/// on a Redis Cluster, where the writers announce with `SPUBLISH` so an
/// announcement goes to the channel's shard rather than to every node.
pub async fn subscribe(client: &SubscriberClient) -> Result<(), Error> {
    if client.is_clustered() {
        client.ssubscribe(INVALIDATION_CHANNEL).await
    } else {
        client.subscribe(INVALIDATION_CHANNEL).await
    }
}

/// Follows the in-process announcements of the embedded deployment's writer
/// until `stopped` resolves.
pub async fn follow_memory(
    mut messages: tokio::sync::broadcast::Receiver<Arc<str>>,
    resolver: Arc<Resolver>,
    stopped: impl std::future::Future<Output = ()>,
) {
    let received = metrics::counter!("redirect_invalidations_total");
    let flushes = metrics::counter!("redirect_l1_flushes_total");
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(codes) => evict(&resolver, &codes, &received).await,
                Err(RecvError::Lagged(missed)) => lagged(&resolver, missed, &flushes),
                Err(RecvError::Closed) => return,
            },
            () = &mut stopped => return,
        }
    }
}

/// Runs until `stopped` resolves.
pub async fn follow(
    client: SubscriberClient,
    resolver: Arc<Resolver>,
    stopped: impl std::future::Future<Output = ()>,
) {
    let mut messages = client.message_rx();
    let mut reconnects = client.reconnect_rx();
    let mut errors = client.error_rx();
    let _resubscriber = client.manage_subscriptions();
    let connection = client.connect();
    // 1 once Redis confirmed the subscription (announcements from then on
    // arrive), 0 while the connection is lost: an operator (or a test) can
    // tell "no announcements were made" from "none could arrive".
    let subscribed = metrics::gauge!("redirect_invalidations_subscribed");
    subscribed.set(0.0);
    let subscribing = {
        let client = client.clone();
        let subscribed = subscribed.clone();
        tokio::spawn(async move {
            // Queued until the first connection is up; resubscribed on every
            // reconnect by manage_subscriptions.
            while let Err(error) = subscribe(&client).await {
                tracing::warn!(%error, "cannot subscribe to invalidations; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            subscribed.set(1.0);
        })
    };
    let received = metrics::counter!("redirect_invalidations_total");
    let flushes = metrics::counter!("redirect_l1_flushes_total");
    // Flush on the way down and on the way back up, not on every failed
    // reconnect attempt: while Redis is down nothing can be announced, and
    // the L1 TTL bounds what is served meanwhile.
    let mut connected = false;
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(message) => {
                    let Some(codes) = message.value.as_str() else { continue };
                    evict(&resolver, &codes, &received).await;
                }
                Err(RecvError::Lagged(missed)) => lagged(&resolver, missed, &flushes),
                Err(RecvError::Closed) => return,
            },
            reconnect = reconnects.recv() => {
                if !matches!(reconnect, Err(RecvError::Closed)) {
                    connected = true;
                    // manage_subscriptions subscribes again on this
                    // connection.
                    if subscribing.is_finished() {
                        subscribed.set(1.0);
                    }
                    // Messages published while disconnected are gone.
                    tracing::info!("invalidation subscription (re)connected; flushing L1");
                    resolver.flush();
                    flushes.increment(1);
                }
            }
            error = errors.recv() => {
                if let Ok((error, _)) = error
                    && std::mem::replace(&mut connected, false)
                {
                    subscribed.set(0.0);
                    tracing::warn!(%error, "invalidation connection lost; flushing L1");
                    resolver.flush();
                    flushes.increment(1);
                }
            }
            () = &mut stopped => break,
        }
    }
    subscribing.abort();
    let _ = client.quit().await;
    connection.abort();
}

/// Evicts every code of one announcement (space-separated codes).
async fn evict(resolver: &Resolver, codes: &str, received: &metrics::Counter) {
    for code in announced_codes(codes) {
        resolver.invalidate(code);
        received.increment(1);
    }
}

/// The receiver fell behind and announcements were lost: nothing in L1 can
/// be trusted to be current.
fn lagged(resolver: &Resolver, missed: u64, flushes: &metrics::Counter) {
    tracing::warn!(missed, "invalidations lagged; flushing L1");
    resolver.flush();
    flushes.increment(1);
}
