//! The operators' host blocklist (`TINYURL_BLOCKLIST_FILE`): read at start
//! (a file that does not parse stops the writer, naming the line), then
//! read again whenever it changes, within a second. A change that does not
//! parse is logged and counted, and the list in force stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tinyurl_domain::HostBlocklist;

use crate::links::State;

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
/// every writer within about a second.
pub async fn follow_stored(state: Arc<State>, stopping: tinyurl_runtime::Stopping) {
    let known: Arc<std::sync::Mutex<Option<Vec<String>>>> = Arc::default();
    stopping
        .every(CHECK, || {
            let (state, known) = (Arc::clone(&state), Arc::clone(&known));
            async move {
                match state.store.blocked_host_entries().await {
                    Ok(entries)
                        if known
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .as_ref()
                            != Some(&entries) =>
                    {
                        match HostBlocklist::parse(&entries.join("\n")) {
                            Ok(list) => state.set_stored_blocklist(list),
                            Err(reason) => tracing::error!(%reason, "a stored blocklist entry does not parse"),
                        }
                        *known
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(entries);
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(error = %error.public_message(), "cannot read the stored blocklist"),
                }
            }
        })
        .await;
}

/// Blocks `entry` (`host` or `*.suffix`) for every writer and disables
/// every enabled link to it, announcing each so that redirects answer 410
/// at once; returns how many links were disabled.
pub async fn block_host(
    store: &dyn crate::store::LinkStore,
    cache: &dyn crate::cache::LinkCache,
    entry: &str,
) -> Result<usize, crate::error::WriterError> {
    let list = HostBlocklist::parse(entry).map_err(|reason| {
        crate::error::WriterError::invalid("host", reason.replace("line 1: ", ""))
    })?;
    if list.len() != 1 {
        return Err(crate::error::WriterError::invalid(
            "host",
            "give one host, or *. and a domain",
        ));
    }
    let disabled = store.block_host(entry.trim(), &list).await?;
    for link in &disabled {
        cache.replace(link).await;
    }
    Ok(disabled.len())
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
