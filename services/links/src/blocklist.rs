//! The operators' host blocklist (`TINYURL_BLOCKLIST_FILE`): read at start
//! (a file that does not parse stops the writer, naming the line), then
//! read again whenever it changes, within a second. A change that does not
//! parse is logged and counted, and the list in force stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tinyurl_domain::HostBlocklist;

use crate::service::State;

/// How often the file is checked.
const CHECK: Duration = Duration::from_secs(1);

/// The list in `path`, and the bytes it was read from.
pub fn load(path: &Path) -> anyhow::Result<(HostBlocklist, Vec<u8>)> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read TINYURL_BLOCKLIST_FILE {}", path.display()))?;
    let text = std::str::from_utf8(&bytes).context("TINYURL_BLOCKLIST_FILE is not UTF-8")?;
    let list = HostBlocklist::parse(text)
        .map_err(|reason| anyhow::anyhow!("TINYURL_BLOCKLIST_FILE {}: {reason}", path.display()))?;
    Ok((list, bytes))
}

/// Keeps the stored blocklist (`block-host`, shared by every writer) in
/// force: polled every [`CHECK`], so a host blocked anywhere is refused by
/// every writer within about a second. A writer whose cache lives in its
/// own process (`tinyurl up`) also rewrites the entries of the links to
/// each host blocked or unblocked elsewhere: the command that changed them
/// could not reach that cache.
pub async fn follow_stored(state: Arc<State>, stopping: tinyurl_runtime::Stopping) {
    let known: Arc<std::sync::Mutex<Option<Vec<String>>>> = Arc::default();
    stopping
        .every(CHECK, || {
            let (state, known) = (Arc::clone(&state), Arc::clone(&known));
            async move {
                let entries = match state.store.blocked_host_entries().await {
                    Ok(entries) => entries,
                    Err(error) => {
                        tracing::warn!(error = %error.public_message(), "cannot read the stored blocklist");
                        return;
                    }
                };
                let before = known
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                if before.as_ref() == Some(&entries) {
                    return;
                }
                match HostBlocklist::parse(&entries.join("\n")) {
                    Ok(list) => state.set_stored_blocklist(list),
                    Err(reason) => tracing::error!(%reason, "a stored blocklist entry does not parse"),
                }
                if let Some(before) = before
                    && state.cache.in_process()
                {
                    let changed = entries
                        .iter()
                        .filter(|entry| !before.contains(entry))
                        .chain(before.iter().filter(|entry| !entries.contains(entry)));
                    for entry in changed {
                        refresh_links_to(&state, entry).await;
                    }
                }
                *known
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(entries);
            }
        })
        .await;
}

/// Rewrites the cache entries of the links to `entry`'s hosts as stored.
async fn refresh_links_to(state: &State, entry: &str) {
    let Ok(list) = HostBlocklist::parse(entry) else {
        return;
    };
    match state.store.links_to_host(entry, &list).await {
        Ok(links) => {
            for link in &links {
                state.cache.replace(link).await;
            }
            tracing::info!(
                entry,
                links = links.len(),
                "cache entries rewritten after a blocklist change"
            );
        }
        Err(error) => tracing::warn!(
            entry,
            error = %error.public_message(),
            "cannot read the links to a host whose block changed"
        ),
    }
}

/// `entry` parsed, and its one normalised spelling (lowercase, punycode,
/// no trailing dot): `EVIL.example`, `evil.example.` and a Unicode name
/// are one entry.
fn one_entry(entry: &str) -> Result<(HostBlocklist, String), crate::error::WriterError> {
    let list = HostBlocklist::parse(entry).map_err(|reason| {
        crate::error::WriterError::invalid("host", reason.replace("line 1: ", ""))
    })?;
    let [normalized] = list.entries().try_into().map_err(|_| {
        crate::error::WriterError::invalid("host", "give one host, or *. and a domain")
    })?;
    Ok((list, normalized))
}

/// Blocks `entry` (`host` or `*.suffix`) for every writer and blocks every
/// live link to it, announcing each so that redirects answer 410 at once;
/// returns the entry as stored and how many links were blocked. Owners
/// cannot undo the block; [`unblock_host`] does.
pub async fn block_host(
    store: &dyn crate::store::LinkStore,
    cache: &dyn crate::cache::LinkCache,
    entry: &str,
) -> Result<(String, usize), crate::error::WriterError> {
    let (list, normalized) = one_entry(entry)?;
    let blocked = store.block_host(&normalized, &list).await?;
    for link in &blocked {
        cache.replace(link).await;
    }
    Ok((normalized, blocked.len()))
}

/// Lifts a block made by [`block_host`] (`entry` in any spelling): links to
/// the host that no other entry blocks go back to what their owners chose;
/// returns the entry and how many links were unblocked; an entry that is
/// not on the stored list is an invalid `host`.
pub async fn unblock_host(
    store: &dyn crate::store::LinkStore,
    cache: &dyn crate::cache::LinkCache,
    entry: &str,
) -> Result<(String, usize), crate::error::WriterError> {
    let (_, normalized) = one_entry(entry)?;
    let unblocked = store.unblock_host(&normalized).await?.ok_or_else(|| {
        crate::error::WriterError::invalid(
            "host",
            format!("{normalized} is not on the stored blocklist"),
        )
    })?;
    for link in &unblocked {
        cache.replace(link).await;
    }
    Ok((normalized, unblocked.len()))
}

/// [`block_host`] (`block`) or [`unblock_host`]: the one path of both
/// command lines. The entry as stored and how many links changed.
pub async fn change(
    store: &dyn crate::store::LinkStore,
    cache: &dyn crate::cache::LinkCache,
    entry: &str,
    block: bool,
) -> Result<(String, usize), crate::error::WriterError> {
    if block {
        block_host(store, cache, entry).await
    } else {
        unblock_host(store, cache, entry).await
    }
}

/// What [`change`] did, as the command lines say it.
pub fn verb(block: bool) -> &'static str {
    if block { "blocked" } else { "unblocked" }
}

/// Applies the file's changes until stopping begins.
pub async fn follow(
    state: Arc<State>,
    path: PathBuf,
    loaded: Vec<u8>,
    stopping: tinyurl_runtime::Stopping,
) {
    // The last contents tried, loaded or refused: each change is tried once.
    let mut seen = loaded;
    stopping
        .every(CHECK, || {
            let current = std::fs::read(&path).ok();
            let changed = current.as_ref().is_some_and(|bytes| *bytes != seen);
            if changed {
                seen = current.unwrap_or_default();
                match load(&path) {
                    Ok((list, _)) => {
                        tracing::info!(entries = list.len(), "blocklist reloaded");
                        metrics::counter!("writer_blocklist_reloads_total", "outcome" => "loaded")
                            .increment(1);
                        metrics::gauge!("writer_blocklist_entries").set(list.len() as f64);
                        state.set_blocklist(list);
                    }
                    Err(error) => {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "blocklist change refused; the previous list stays"
                        );
                        metrics::counter!("writer_blocklist_reloads_total", "outcome" => "failed")
                            .increment(1);
                    }
                }
            }
            std::future::ready(())
        })
        .await;
}
