//! API key management: the operations behind `api-key create | list |
//! revoke | rotate` of both command-line tools (`tinyurl-writer` and
//! `tinyurl`), on either store.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use crate::auth::{KeyName, Rate, Scope, generate_key};
use crate::error::WriterError;
use crate::store::LinkStore;

/// Longest rotation grace period.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

pub use crate::store::ApiKeyInfo;

/// A key just issued: shown to its owner once, never again.
#[derive(Debug)]
pub struct IssuedKey {
    pub id: i64,
    pub key: String,
}

/// Creates an API key named `name` with `scope` in `store`.
pub async fn issue_key(
    store: &dyn LinkStore,
    name: &KeyName,
    scope: Scope,
    rate: Option<Rate>,
) -> Result<IssuedKey, WriterError> {
    let (key, hash) = generate_key();
    let id = store
        .create_api_key(name.as_str(), &hash, scope, rate)
        .await?;
    Ok(IssuedKey { id, key })
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeyCommand {
    /// Create a key and print it once; only its hash is stored.
    Create {
        /// Who or what the key is for.
        #[arg(long)]
        name: String,
        /// What the key may do: read (get, list, stats), create (and create
        /// links), manage (and update and delete them).
        #[arg(long, value_enum, default_value_t = Scope::Manage)]
        scope: Scope,
        /// The key's own request rate (`100/s`), instead of the writer's
        /// default (TINYURL_RATE_LIMIT_PER_KEY).
        #[arg(long)]
        rate: Option<Rate>,
    },
    /// Set a key's own request rate (`100/s`), or `default` to follow the
    /// writer's again; writers apply it within a minute.
    SetRate {
        /// The key's id (from `list` or `create`).
        id: i64,
        /// `N/s`, or `default`.
        rate: String,
    },
    /// List the keys (never their values): scope, creation, last use, state.
    List,
    /// Revoke a key: every writer refuses it within a second.
    Revoke {
        /// The key's id (from `list` or `create`).
        id: i64,
    },
    /// Give a key a new value (same id, links and scope) and print it once;
    /// the old value keeps working for the grace period.
    Rotate {
        /// The key's id (from `list` or `create`).
        id: i64,
        /// How long the old value keeps working (at most 30 days).
        #[arg(long, default_value = "24h")]
        grace: humantime::Duration,
    },
}

/// What a command prints: `stdout` is the result (a new key alone, for
/// scripts, or JSON), `stderr` what happened.
#[derive(Debug, Default)]
pub struct KeyReport {
    pub stdout: String,
    pub stderr: String,
}

pub async fn run(
    store: &dyn LinkStore,
    command: KeyCommand,
    json: bool,
) -> Result<KeyReport, WriterError> {
    let mut report = KeyReport::default();
    match command {
        KeyCommand::Create { name, scope, rate } => {
            let name = KeyName::parse(&name)?;
            let issued = issue_key(store, &name, scope, rate).await?;
            report.stderr = format!(
                "created API key {} ({}, scope {}); it is shown only once:",
                issued.id,
                name.as_str(),
                scope.as_str()
            );
            report.stdout = if json {
                serde_json::json!({
                    "id": issued.id, "name": name.as_str(), "scope": scope.as_str(), "key": issued.key,
                })
                .to_string()
            } else {
                issued.key
            };
        }
        KeyCommand::List => {
            let keys = store.list_api_keys().await?;
            report.stdout = if json {
                serde_json::Value::Array(keys.iter().map(key_json).collect()).to_string()
            } else {
                key_table(&keys)
            };
        }
        KeyCommand::SetRate { id, rate } => {
            let rate = parse_rate(&rate)?;
            set_rate(store, id, rate).await?;
            let shown = rate.map_or_else(|| "the default".to_owned(), |rate| rate.to_string());
            report.stderr =
                format!("API key {id} now has {shown}; writers apply it within a minute");
            if json {
                report.stdout =
                    serde_json::json!({ "id": id, "rate": rate.map(|rate| rate.to_string()) })
                        .to_string();
            }
        }
        KeyCommand::Revoke { id } => {
            revoke(store, id).await?;
            report.stderr = format!("revoked API key {id}; writers refuse it within a second");
            if json {
                report.stdout = serde_json::json!({ "id": id, "revoked": true }).to_string();
            }
        }
        KeyCommand::Rotate { id, grace } => {
            let grace = Duration::from(grace);
            let key = rotate(store, id, grace).await?;
            report.stderr = format!(
                "API key {id} has a new value, shown only once; the old one works for {}:",
                humantime::format_duration(grace)
            );
            report.stdout = if json {
                serde_json::json!({ "id": id, "key": key, "previous_valid_for_secs": grace.as_secs() })
                    .to_string()
            } else {
                key
            };
        }
    }
    Ok(report)
}

/// `N/s`, or `default` (none of its own: the writer's default applies).
pub fn parse_rate(raw: &str) -> Result<Option<Rate>, WriterError> {
    match raw.trim() {
        "default" | "" => Ok(None),
        other => other
            .parse::<Rate>()
            .map(Some)
            .map_err(|reason| WriterError::invalid("rate", reason)),
    }
}

/// Sets key `id`'s own rate (`None`: the writer's default).
pub async fn set_rate(
    store: &dyn LinkStore,
    id: i64,
    rate: Option<Rate>,
) -> Result<(), WriterError> {
    if store.set_api_key_rate(id, rate).await? {
        Ok(())
    } else {
        Err(no_such_key(id))
    }
}

/// Revokes key `id`: every writer refuses it within a second.
pub async fn revoke(store: &dyn LinkStore, id: i64) -> Result<(), WriterError> {
    if store.revoke_api_key(id).await? {
        Ok(())
    } else {
        Err(no_such_key(id))
    }
}

/// Gives key `id` a new value, returned (shown once); the old one works
/// for `grace` (at most 30 days).
pub async fn rotate(
    store: &dyn LinkStore,
    id: i64,
    grace: Duration,
) -> Result<String, WriterError> {
    if grace > MAX_GRACE {
        return Err(WriterError::invalid(
            "grace",
            "the grace period is at most 30 days",
        ));
    }
    let (key, hash) = generate_key();
    if store.rotate_api_key(id, &hash, grace).await? {
        Ok(key)
    } else {
        Err(no_such_key(id))
    }
}

fn no_such_key(id: i64) -> WriterError {
    WriterError::invalid("id", format!("there is no unrevoked API key {id}"))
}

fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn key_json(key: &ApiKeyInfo) -> serde_json::Value {
    serde_json::json!({
        "id": key.id,
        "name": key.name,
        "scope": key.scope.as_str(),
        "rate": key.rate.map(|rate| rate.to_string()),
        "created_at": timestamp(key.created_at),
        "last_used_at": key.last_used_at.map(timestamp),
        "revoked_at": key.revoked_at.map(timestamp),
        "previous_valid_until": key.previous_valid_until.map(timestamp),
    })
}

fn key_table(keys: &[ApiKeyInfo]) -> String {
    let mut table = format!(
        "{:>6}  {:<6}  {:<10}  {:<20}  {:<20}  {:<28}  NAME",
        "ID", "SCOPE", "RATE", "CREATED", "LAST USED", "STATE"
    );
    let now = SystemTime::now();
    for key in keys {
        let state = match (key.revoked_at, key.previous_valid_until) {
            (Some(at), _) => format!("revoked {}", timestamp(at)),
            (None, Some(until)) if until > now => format!("rotating until {}", timestamp(until)),
            _ => "active".to_owned(),
        };
        let _ = write!(
            table,
            "\n{:>6}  {:<6}  {:<10}  {:<20}  {:<20}  {:<28}  {}",
            key.id,
            key.scope.as_str(),
            key.rate
                .map_or_else(|| "default".to_owned(), |rate| rate.to_string()),
            timestamp(key.created_at),
            key.last_used_at
                .map_or_else(|| "never".to_owned(), timestamp),
            state,
            key.name
        );
    }
    table
}

/// Keeps this writer's key cache in step with keys created, rotated,
/// revoked or retired anywhere (another writer's command line, the embedded
/// store's CLI): every [`crate::auth::REVOCATION_POLL`] it asks the store
/// for keys retired in the last [`crate::auth::REVOCATION_WINDOW`] and
/// forgets them, and for working keys it has not learnt (new ids, recent
/// rotations); every [`crate::auth::KEY_SET_RELOAD`] it learns the whole
/// set again. Polling the store rather than listening on Redis works
/// without Redis (the embedded deployment) and cannot miss a message.
pub async fn follow_keys(
    state: std::sync::Arc<crate::service::State>,
    stopping: tinyurl_runtime::Stopping,
) {
    let last_reload = std::sync::Mutex::new(None::<std::time::Instant>);
    stopping
        .every(crate::auth::REVOCATION_POLL, || async {
            let reload = last_reload
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_none_or(|at| at.elapsed() >= crate::auth::KEY_SET_RELOAD);
            // Ids are taken before their transaction commits, so a key can
            // become visible after a higher id did: look a little behind.
            let after_id = if reload {
                0
            } else {
                state.keys.max_known_id().saturating_sub(64)
            };
            match state
                .store
                .live_key_hashes(after_id, crate::auth::REVOCATION_WINDOW)
                .await
            {
                Ok(live) => {
                    state.keys.learn(&live, reload);
                    if reload {
                        *last_reload
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(std::time::Instant::now());
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error.public_message(), "cannot poll for new API keys");
                }
            }
            match state
                .store
                .retired_key_hashes(crate::auth::REVOCATION_WINDOW)
                .await
            {
                Ok(hashes) => {
                    let forgotten = state.keys.forget(&hashes);
                    if forgotten > 0 {
                        metrics::counter!("writer_keys_forgotten_total").increment(forgotten as u64);
                        tracing::info!(forgotten, "dropped revoked API keys from the cache");
                    }
                }
                Err(error) => {
                    tracing::warn!(error = %error.public_message(), "cannot poll for revoked API keys");
                }
            }
        })
        .await;
}
