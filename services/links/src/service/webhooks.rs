//! The owner's side of webhooks: endpoints registered, listed, removed,
//! enabled again and given a new secret, and their delivery log (a manage
//! key, as for domains and click data).

use super::*;
use crate::webhooks::{
    MAX_ENDPOINTS_PER_KEY, PREVIOUS_SECRET_KEPT, StoredWebhook, WebhookDelivery, events, new_secret,
};

/// Delivery log rows one call answers at most.
pub const MAX_DELIVERIES: i64 = 500;

impl LinkService {
    /// Registers `url` for `requested` events (all when empty); answers the
    /// endpoint with its secret, which only this answer and a rotation
    /// show.
    pub async fn create_webhook(
        &self,
        call: &Call,
        url: &str,
        requested: &[String],
    ) -> Result<StoredWebhook, WriterError> {
        measured("create_webhook", async {
            let owner = self.state.owner(call, Scope::Manage, 1).await?;
            let events = events(requested)?;
            // As a link's target, except that private and loopback
            // addresses are for internal deployments and tests only.
            let policy = TargetPolicy {
                allow_private_addresses: self.state.webhooks_allow_private,
                ..(*self.state.policy()).clone()
            };
            let url = TargetUrl::parse(url, &policy)
                .map_err(|error| WriterError::invalid("url", error.to_string()))?
                .into_string();
            let store = &self.state.store;
            if store.webhooks(owner.0).await?.len() >= MAX_ENDPOINTS_PER_KEY {
                return Err(WriterError::invalid(
                    "url",
                    format!("a key has at most {MAX_ENDPOINTS_PER_KEY} webhook endpoints"),
                ));
            }
            store
                .create_webhook(owner.0, &url, &events, &new_secret())
                .await
        })
        .await
    }

    /// The key's endpoints, oldest first.
    pub async fn webhooks(&self, call: &Call) -> Result<Vec<StoredWebhook>, WriterError> {
        measured("list_webhooks", async {
            let owner = self.state.owner(call, Scope::Manage, 1).await?;
            self.state.store.webhooks(owner.0).await
        })
        .await
    }

    pub async fn delete_webhook(&self, call: &Call, id: i64) -> Result<(), WriterError> {
        measured("delete_webhook", async {
            let owner = self.state.owner(call, Scope::Manage, 1).await?;
            if self.state.store.delete_webhook(owner.0, id).await? {
                Ok(())
            } else {
                Err(no_webhook(id))
            }
        })
        .await
    }

    /// Enables an endpoint (disabled after a day of failures); its waiting
    /// messages are due at once.
    pub async fn enable_webhook(&self, call: &Call, id: i64) -> Result<StoredWebhook, WriterError> {
        measured("enable_webhook", async {
            let owner = self.state.owner(call, Scope::Manage, 1).await?;
            self.state
                .store
                .enable_webhook(owner.0, id)
                .await?
                .ok_or_else(|| no_webhook(id))
        })
        .await
    }

    /// A new secret; the old one signs beside it for a day.
    pub async fn rotate_webhook_secret(
        &self,
        call: &Call,
        id: i64,
    ) -> Result<StoredWebhook, WriterError> {
        measured("rotate_webhook_secret", async {
            let owner = self.state.owner(call, Scope::Manage, 1).await?;
            self.state
                .store
                .rotate_webhook_secret(owner.0, id, &new_secret(), PREVIOUS_SECRET_KEPT)
                .await?
                .ok_or_else(|| no_webhook(id))
        })
        .await
    }

    /// The newest `limit` (1–[`MAX_DELIVERIES`], default 100) attempts at
    /// the endpoint's messages, newest first.
    pub async fn webhook_deliveries(
        &self,
        call: &Call,
        id: i64,
        limit: Option<i64>,
    ) -> Result<Vec<WebhookDelivery>, WriterError> {
        measured("webhook_deliveries", async {
            let owner = self.state.owner(call, Scope::Manage, 1).await?;
            let limit = limit.unwrap_or(100);
            if !(1..=MAX_DELIVERIES).contains(&limit) {
                return Err(WriterError::invalid(
                    "limit",
                    format!("limit must be 1 to {MAX_DELIVERIES}"),
                ));
            }
            self.state
                .store
                .webhook_deliveries(owner.0, id, limit)
                .await?
                .ok_or_else(|| no_webhook(id))
        })
        .await
    }
}

fn no_webhook(id: i64) -> WriterError {
    WriterError::WebhookNotFound(id)
}
