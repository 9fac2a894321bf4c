//! Creating links: every valid item gets a minted code (or its alias), all
//! are inserted in one statement, and the items whose code was taken are
//! settled — an idempotent replay answers with its original link, a taken
//! alias is refused, and a minted code that met an alias is minted again.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use crate::auth::OwnerId;
use crate::batcher::GroupCommit;
use crate::error::WriterError;
use crate::input::ValidCreate;
use crate::service::State;
use crate::store::{NewLink, StoredLink};

/// Attempts to mint a code that does not meet an existing alias.
const MINT_ROUNDS: usize = 5;

/// Each item's answer, by its index; `None` until it has one.
type Results = Vec<Option<Result<StoredLink, WriterError>>>;

/// Items still to be created, with their index.
type Pending = Vec<(usize, ValidCreate)>;

impl GroupCommit for State {
    async fn create_many(
        &self,
        owner: OwnerId,
        items: Vec<Result<ValidCreate, WriterError>>,
    ) -> Vec<Result<StoredLink, WriterError>> {
        State::create_many(self, owner, items).await
    }
}

impl State {
    /// Creates every valid item in one insert (plus rare follow-ups for
    /// idempotent replays and codes that met an alias). One result per item.
    pub(crate) async fn create_many(
        &self,
        owner: OwnerId,
        items: Vec<Result<ValidCreate, WriterError>>,
    ) -> Vec<Result<StoredLink, WriterError>> {
        let mut results: Results = Vec::with_capacity(items.len());
        let mut pending: Pending = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            match item {
                Ok(valid) => {
                    results.push(None);
                    pending.push((index, valid));
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        for round in 0..MINT_ROUNDS {
            if pending.is_empty() {
                break;
            }
            self.create_round(owner, &mut pending, &mut results, round)
                .await;
        }
        for (index, _) in pending {
            results[index] = Some(Err(WriterError::Unexpected(anyhow::anyhow!(
                "no free code after {MINT_ROUNDS} attempts"
            ))));
        }
        results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(WriterError::Unexpected(anyhow::anyhow!(
                        "item was not processed"
                    )))
                })
            })
            .collect()
    }

    /// One round: codes for `pending`, one insert, the inserted links
    /// written through the cache and the rest settled. Leaves in `pending`
    /// only the items to mint again.
    async fn create_round(
        &self,
        owner: OwnerId,
        pending: &mut Pending,
        results: &mut Results,
        round: usize,
    ) {
        let generated = pending
            .iter()
            .filter(|(_, item)| item.alias.is_none())
            .count();
        let ids = match self.leaser.take(generated).await {
            Ok(ids) => ids,
            Err(error) => {
                let message = error.to_string();
                for (index, _) in pending.drain(..) {
                    results[index] = Some(Err(WriterError::Unavailable(message.clone())));
                }
                return;
            }
        };
        let rows = self.new_rows(pending, ids);
        let inserted = match self.store.insert(owner, &rows).await {
            Ok(inserted) => inserted,
            Err(error) => {
                // Every item shares the one failure: logged once here, with
                // its cause kept, not once per item.
                let shared = error.shared("insert failed");
                for (index, _) in pending.drain(..) {
                    results[index] = Some(Err(shared.clone_shared()));
                }
                return;
            }
        };
        let (created, not_inserted) = claim_inserted(pending.drain(..).zip(rows), &inserted);
        let links: Vec<StoredLink> = created.iter().map(|(_, link)| link.clone()).collect();
        self.cache.write_through(&links).await;
        for (index, link) in created {
            results[index] = Some(Ok(link));
        }
        if !not_inserted.is_empty() {
            self.settle(owner, not_inserted, results, pending, round)
                .await;
        }
    }

    /// The rows to insert for `pending`: a minted code from `ids` for each
    /// item without an alias.
    fn new_rows(&self, pending: &Pending, ids: Vec<u64>) -> Vec<NewLink> {
        let mut ids = ids.into_iter();
        pending
            .iter()
            .map(|(_, item)| {
                let code = match &item.alias {
                    Some(alias) => alias.as_str().to_owned(),
                    None => self
                        .codec
                        .encode(ids.next().unwrap_or_default())
                        .into_string(),
                };
                // On a domain of its own, keyed `{host}/{code}`.
                let code = tinyurl_domain::domains::link_key(item.domain.as_deref(), &code);
                let mut options = item.options.clone();
                if let Some(password) = &item.password {
                    // Derived by the service before the item was queued.
                    options.password = password.stored(&code, &self.link_secret);
                    if let crate::input::NewPassword::Derived { key, .. } = password {
                        options.seal_with_key(&code, item.target.as_str(), key, rand::random());
                    }
                }
                NewLink {
                    code,
                    target_url: item.target.as_str().to_owned(),
                    redirect_status: item.redirect_status,
                    forward_query: item.forward_query,
                    expires_at: item.expires_at,
                    is_alias: item.alias.is_some(),
                    idempotency_key: item.idempotency_key.clone(),
                    fingerprint: item.idempotency_key.as_ref().map(|_| item.fingerprint()),
                    tags: item.tags.clone(),
                    options,
                }
            })
            .collect()
    }

    /// The items whose code was taken: idempotent replays answer with the
    /// original link (or are refused when the key came with other
    /// parameters), taken aliases are refused, and minted codes that met an
    /// alias go back to `pending`.
    async fn settle(
        &self,
        owner: OwnerId,
        not_inserted: Pending,
        results: &mut Results,
        pending: &mut Pending,
        round: usize,
    ) {
        let keys: Vec<&str> = not_inserted
            .iter()
            .filter_map(|(_, item)| item.idempotency_key.as_deref())
            .collect();
        let replays = match self.store.find_by_idempotency_keys(owner, &keys).await {
            Ok(replays) => replays,
            Err(error) => {
                let message = error.public_message();
                for (index, _) in not_inserted {
                    results[index] = Some(Err(WriterError::Unavailable(message.clone())));
                }
                return;
            }
        };
        for (index, item) in not_inserted {
            if let Some((key, replay)) = item
                .idempotency_key
                .as_ref()
                .and_then(|key| Some((key, replays.get(key)?)))
            {
                if replay
                    .fingerprint
                    .is_some_and(|fingerprint| fingerprint != item.fingerprint())
                {
                    metrics::counter!("writer_idempotency_key_conflicts_total").increment(1);
                    results[index] = Some(Err(WriterError::IdempotencyKeyReused(format!(
                        "idempotency key {key:?} created link {} with other parameters; \
                         a retry must repeat the original request, a new request needs a new key",
                        replay.link.code
                    ))));
                } else {
                    metrics::counter!("writer_idempotent_replays_total").increment(1);
                    results[index] = Some(Ok(replay.link.clone()));
                }
            } else if let Some(alias) = &item.alias {
                results[index] = Some(Err(WriterError::AlreadyExists(format!(
                    "alias {:?} is taken (codes of deleted links are never reissued)",
                    alias.as_str()
                ))));
            } else {
                // The minted code met an existing alias: skip that ID and
                // mint again.
                metrics::counter!("writer_codes_skipped_total").increment(1);
                tracing::info!(round, "generated code met an alias; minting another");
                pending.push((index, item));
            }
        }
    }
}

/// The links the insert created, by index, and the items it did not. A
/// returned code is an item's only if no other item of the batch claimed
/// it first (a duplicate alias in one batch).
fn claim_inserted(
    attempted: impl Iterator<Item = ((usize, ValidCreate), NewLink)>,
    inserted: &HashMap<String, (SystemTime, SystemTime)>,
) -> (Vec<(usize, StoredLink)>, Pending) {
    let mut created = Vec::with_capacity(inserted.len());
    let mut claimed = HashSet::with_capacity(inserted.len());
    let mut not_inserted = Vec::new();
    for ((index, item), row) in attempted {
        match inserted.get_key_value(&row.code) {
            Some((code, (created_at, updated_at))) if claimed.insert(code.as_str()) => {
                let link = StoredLink {
                    code: row.code,
                    target_url: row.target_url,
                    redirect_status: row.redirect_status,
                    forward_query: row.forward_query,
                    expires_at: row.expires_at,
                    enabled: true,
                    is_alias: row.is_alias,
                    created_at: *created_at,
                    updated_at: *updated_at,
                    blocked: false,
                    tags: row.tags,
                    options: row.options,
                };
                created.push((index, link));
            }
            _ => not_inserted.push((index, item)),
        }
    }
    (created, not_inserted)
}
