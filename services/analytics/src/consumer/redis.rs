//! The split deployment's consumer: one member of the writers' Redis
//! consumer group, with redelivery, claims of a dead member's batches, the
//! dead-letter stream and the lag it reports.

use super::*;

/// One consumer of the Redis consumer group.
pub struct RedisConsumer {
    /// A connection of its own: `XREADGROUP … BLOCK` holds it while waiting.
    client: Client,
    timeout: Duration,
    name: String,
    store: Arc<dyn ClickStore>,
    sketches: Sketches,
    settings: ConsumerSettings,
    metrics: Metrics,
    /// Failed folds per entry, for those that failed; an entry leaves when
    /// it is folded or dead-lettered.
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

/// A stream entry: its id and its fields.
type Entry = (String, Vec<(String, Value)>);

impl RedisConsumer {
    pub fn new(
        client: Client,
        timeout: Duration,
        store: Arc<dyn ClickStore>,
        settings: ConsumerSettings,
    ) -> Self {
        Self {
            sketches: Sketches::Redis(client.clone(), timeout),
            client,
            timeout,
            // The host (the pod's name in Kubernetes) for operators reading
            // XINFO CONSUMERS; the suffix keeps a restarted process apart from
            // its predecessor, whose pending batches are then claimed.
            name: format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "writer".to_owned()),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            store,
            settings,
            metrics: Metrics::new(),
            failures: std::sync::Mutex::default(),
        }
    }

    /// Counts a failed fold of `entry`; returns how many it has had.
    fn failed_again(&self, entry: &str) -> u32 {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: only entries failing right now are here.
        if failures.len() >= 1_000 {
            failures.clear();
        }
        let count = failures.entry(entry.to_owned()).or_default();
        *count += 1;
        *count
    }

    fn forget_failures(&self, entry: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(entry);
    }

    /// Appends `entry` with its fields and the error to the dead-letter
    /// stream.
    async fn dead_letter(
        &self,
        entry: &str,
        fields: &[(String, Value)],
        error: &AnalyticsError,
    ) -> Result<(), Error> {
        let mut values: Vec<(String, String)> = vec![
            ("entry".to_owned(), entry.to_owned()),
            ("error".to_owned(), error.public_message()),
        ];
        values.extend(
            fields
                .iter()
                .filter_map(|(name, value)| Some((name.clone(), value.as_str()?.into_owned()))),
        );
        self.client
            .with_options(&self.options(Duration::ZERO))
            .xadd::<Value, _, _, _, _>(
                DEAD_LETTER_STREAM,
                false,
                ("MAXLEN", "~", DEAD_LETTER_MAX_ENTRIES),
                "*",
                values,
            )
            .await
            .map(drop)
    }

    fn options(&self, extra: Duration) -> Options {
        tinyurl_runtime::redis::command_options(self.timeout + extra)
    }

    /// Consumes until `stopping`; a batch being folded when it fires is
    /// finished (committed and acknowledged) first.
    pub async fn run(self, stopping: Stopping) {
        let mut group_ready = false;
        // Own pending entries first: after a failure, those are the batches
        // that were read but not acknowledged.
        let mut own_pending = true;
        let mut last_claim: Option<Instant> = None;
        while !stopping.is_stopping() {
            if !group_ready {
                match self.create_group().await {
                    Ok(()) => group_ready = true,
                    Err(error) => {
                        self.failed("cannot create the click consumer group", &error)
                            .await;
                        continue;
                    }
                }
            }
            if last_claim.is_none_or(|at| at.elapsed() >= self.settings.claim_idle / 2) {
                last_claim = Some(Instant::now());
                if let Err(error) = self.forget_departed().await {
                    tracing::debug!(%error, "cannot list the click consumers");
                }
                match self.claim().await {
                    Ok(entries) => {
                        self.metrics.redelivered.increment(entries.len() as u64);
                        if !self.process(entries).await {
                            own_pending = true;
                        }
                    }
                    Err(error) => {
                        group_ready = !is_missing_group(&error);
                        self.failed("cannot claim idle click batches", &error).await;
                        continue;
                    }
                }
            }
            let read = if own_pending {
                self.read("0", None).await
            } else {
                self.read(">", Some(READ_BLOCK)).await
            };
            match read {
                Ok(entries) if own_pending && entries.is_empty() => own_pending = false,
                Ok(entries) => {
                    if own_pending {
                        self.metrics.redelivered.increment(entries.len() as u64);
                    }
                    own_pending = !self.process(entries).await;
                    if own_pending {
                        tokio::time::sleep(BACKOFF).await;
                    }
                }
                Err(error) => {
                    group_ready = !is_missing_group(&error);
                    self.failed("cannot read click batches", &error).await;
                }
            }
        }
    }

    async fn failed(&self, what: &'static str, error: &(dyn std::fmt::Display + Sync)) {
        self.metrics.errors.increment(1);
        tracing::warn!(%error, "{what}");
        tokio::time::sleep(BACKOFF).await;
    }

    /// Creates the group (and the stream) unless it exists. A new group
    /// starts at the beginning of the stream: nothing appended before the
    /// first writer started is skipped.
    async fn create_group(&self) -> Result<(), Error> {
        let created: Result<Value, Error> = self
            .client
            .with_options(&self.options(Duration::ZERO))
            .xgroup_create(CLICKS_STREAM, CLICKS_GROUP, "0", true)
            .await;
        match created {
            Err(error) if error.details().starts_with("BUSYGROUP") => Ok(()),
            other => other.map(drop),
        }
    }

    async fn read(&self, from: &str, block: Option<Duration>) -> Result<Vec<Entry>, Error> {
        let value: Value = self
            .client
            .with_options(&self.options(block.unwrap_or_default()))
            .xreadgroup(
                CLICKS_GROUP,
                self.name.as_str(),
                Some(READ_COUNT),
                block.map(|block| block.as_millis() as u64),
                false,
                CLICKS_STREAM,
                from,
            )
            .await?;
        // [[stream, [entry, …]]], or nil when the block timed out.
        let mut streams = value.into_array().into_iter();
        let entries = streams
            .next()
            .map(|stream| {
                stream
                    .into_array()
                    .into_iter()
                    .nth(1)
                    .unwrap_or(Value::Null)
            })
            .unwrap_or(Value::Null);
        Ok(parse_entries(entries))
    }

    /// Removes consumers that hold nothing and have not been seen for an hour
    /// (processes that stopped; each start joins under a new name), so the
    /// group does not grow with every restart. One holding batches is kept
    /// until they are claimed: deleting it would drop them.
    async fn forget_departed(&self) -> Result<(), Error> {
        const DEPARTED_AFTER_MS: u64 = 3_600_000;
        let client = self.client.with_options(&self.options(Duration::ZERO));
        let consumers: Value = client.xinfo_consumers(CLICKS_STREAM, CLICKS_GROUP).await?;
        for consumer in consumers.into_array() {
            let fields = pairs(consumer);
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(key, _)| key == name)
                    .map(|(_, value)| value)
            };
            let (Some(name), Some(pending), Some(idle)) = (
                field("name").and_then(|value| value.as_str().map(std::borrow::Cow::into_owned)),
                field("pending").and_then(Value::as_u64),
                field("idle").and_then(Value::as_u64),
            ) else {
                continue;
            };
            if pending == 0 && idle >= DEPARTED_AFTER_MS && name != self.name {
                let _: Value = client
                    .xgroup_delconsumer(CLICKS_STREAM, CLICKS_GROUP, name.as_str())
                    .await?;
                tracing::info!(consumer = name, "removed a departed click consumer");
            }
        }
        Ok(())
    }

    /// Takes over entries idle for the claim interval (their consumer died
    /// or hung); acknowledges the ids of entries trimmed while pending.
    async fn claim(&self) -> Result<Vec<Entry>, Error> {
        let value: Value = self
            .client
            .with_options(&self.options(Duration::ZERO))
            .xautoclaim(
                CLICKS_STREAM,
                CLICKS_GROUP,
                self.name.as_str(),
                self.settings.claim_idle.as_millis() as u64,
                "0-0",
                Some(READ_COUNT * 4),
                false,
            )
            .await?;
        // [next, [entry, …], [deleted id, …]] (Redis 7).
        let mut parts = value.into_array().into_iter();
        let entries = parse_entries(parts.nth(1).unwrap_or(Value::Null));
        let deleted: Vec<String> = parts
            .next()
            .map(|deleted| {
                deleted
                    .into_array()
                    .into_iter()
                    .filter_map(Value::into_string)
                    .collect()
            })
            .unwrap_or_default();
        if !deleted.is_empty() {
            // Trimmed by the stream's bounds before anyone folded them: the
            // clicks are gone; count it so it is seen.
            self.metrics.trimmed.increment(deleted.len() as u64);
            tracing::warn!(
                count = deleted.len(),
                "click batches were trimmed before they were folded"
            );
            self.ack(&deleted).await?;
        }
        Ok(entries)
    }

    /// Folds and acknowledges `entries`: all in one transaction when they
    /// are all well-formed batches none of which was folded before (the
    /// common case, and the cheap one: one commit, and a code clicked in
    /// several of them is one row write instead of several), otherwise in
    /// order, one by one. False when one failed (it stays pending, and the
    /// rest with it, for the next attempt). An entry of a newer format is
    /// skipped and left pending.
    async fn process(&self, entries: Vec<Entry>) -> bool {
        if entries.len() > 1 {
            match self.fold_together(&entries).await {
                Some(Ok(())) => return true,
                Some(Err(error)) => {
                    self.metrics.errors.increment(1);
                    tracing::warn!(%error, "cannot acknowledge click batches");
                    return false;
                }
                None => {}
            }
        }
        for (id, fields) in entries {
            let batch_id = match batch_id_of(&id, &fields) {
                Ok(batch_id) => batch_id,
                Err(newer) => {
                    self.metrics.deferred.increment(1);
                    tracing::warn!(
                        entry = id,
                        format = newer,
                        "a click batch of a newer format; left pending for a consumer that folds it"
                    );
                    continue;
                }
            };
            let folded = fold_batch(
                self.store.as_ref(),
                &self.sketches,
                self.settings.values_per_bucket,
                &self.metrics,
                &id,
                batch_id.as_deref(),
                text_field(&fields, CLICKS_FIELD).as_deref(),
                text_field(&fields, VISITORS_FIELD).as_deref(),
            )
            .await;
            if let Err(error) = folded {
                self.metrics.errors.increment(1);
                // An unreachable store fails every batch alike: retried for
                // as long as it takes. Anything else is this batch's.
                let poison = !matches!(error, AnalyticsError::Unavailable(_))
                    && self.failed_again(&id) >= POISON_ATTEMPTS;
                if !poison {
                    tracing::warn!(
                        entry = id,
                        error = error.public_message(),
                        "cannot fold a click batch; will retry"
                    );
                    return false;
                }
                if let Err(dead) = self.dead_letter(&id, &fields, &error).await {
                    tracing::warn!(entry = id, error = %dead, "cannot dead-letter a click batch");
                    return false;
                }
                self.metrics.dead_lettered.increment(1);
                tracing::error!(
                    entry = id,
                    error = error.public_message(),
                    attempts = POISON_ATTEMPTS,
                    "a click batch that cannot be folded went to {DEAD_LETTER_STREAM}"
                );
            }
            if let Err(error) = self.ack(std::slice::from_ref(&id)).await {
                // Folded but not acknowledged: it will come back, and its id
                // will be found.
                self.metrics.errors.increment(1);
                tracing::warn!(entry = id, %error, "cannot acknowledge a click batch");
                return false;
            }
            self.forget_failures(&id);
        }
        true
    }

    /// Folds `entries` in one transaction and acknowledges them: `None`
    /// (nothing written) when one is not a well-formed batch of this format,
    /// one was folded before, or the fold failed; `Some(Err)` when they were
    /// folded but the acknowledgement failed (they come back, and their ids
    /// are found).
    async fn fold_together(&self, entries: &[Entry]) -> Option<Result<(), Error>> {
        let mut ids = Vec::with_capacity(entries.len());
        let mut batch_ids = Vec::with_capacity(entries.len());
        let mut lines = Vec::new();
        let mut link_days = String::new();
        for (id, fields) in entries {
            let Ok(Some(batch_id)) = batch_id_of(id, fields) else {
                return None;
            };
            if !valid_batch_id(&batch_id) {
                return None;
            }
            lines.extend(parse_batch(&text_field(fields, CLICKS_FIELD)?).ok()?);
            if let Some(visitors) = text_field(fields, VISITORS_FIELD) {
                link_days.push_str(&visitors);
            }
            ids.push(id.clone());
            batch_ids.push(batch_id);
        }
        let visitors = match self.sketches.count(Some(&link_days)).await {
            Ok(visitors) => visitors,
            Err(error) => {
                tracing::debug!(
                    error = error.public_message(),
                    "cannot count visitors; folding the batches one by one"
                );
                return None;
            }
        };
        let fold = Fold::of(&lines).with_visitors(visitors);
        let batch_ids: Vec<&str> = batch_ids.iter().map(String::as_str).collect();
        let started = Instant::now();
        let folded = self
            .store
            .fold_together(&batch_ids, &fold, self.settings.values_per_bucket)
            .await;
        match folded {
            Ok(true) => {}
            Ok(false) => return None,
            Err(error) => {
                tracing::debug!(
                    error = error.public_message(),
                    "cannot fold click batches together; folding them one by one"
                );
                return None;
            }
        }
        self.metrics
            .fold_seconds
            .record(started.elapsed().as_secs_f64());
        self.metrics.folded.increment(ids.len() as u64);
        self.metrics.clicks.increment(fold.clicks);
        for id in &ids {
            self.forget_failures(id);
        }
        Some(self.ack(&ids).await)
    }

    async fn ack(&self, ids: &[String]) -> Result<(), Error> {
        self.client
            .with_options(&self.options(Duration::ZERO))
            .xack::<Value, _, _, _>(CLICKS_STREAM, CLICKS_GROUP, ids.to_vec())
            .await
            .map(drop)
    }
}

/// A stream entry's field as text.
fn text_field(fields: &[(String, Value)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(field, _)| field == name)
        .and_then(|(_, value)| value.as_str())
        .map(std::borrow::Cow::into_owned)
}

/// The batch id of entry `id`: `Ok(None)` for a batch of this format
/// without one (corrupt, as `fold_batch` says), `Err` with the format of a
/// newer one.
fn batch_id_of(id: &str, fields: &[(String, Value)]) -> Result<Option<String>, String> {
    match (
        text_field(fields, FORMAT_FIELD).as_deref(),
        text_field(fields, BATCH_FIELD),
    ) {
        (None | Some(BATCH_FORMAT | PREVIOUS_BATCH_FORMAT), batch @ Some(_)) => Ok(batch),
        // Format 1: the entry is the batch.
        (None, None) => Ok(Some(format!("v1-{id}"))),
        (Some(BATCH_FORMAT | PREVIOUS_BATCH_FORMAT), None) => Ok(None),
        (Some(newer), _) => Err(newer.to_owned()),
    }
}

fn is_missing_group(error: &Error) -> bool {
    error.details().starts_with("NOGROUP")
}

/// `[[id, [field, value, …]], …]`; an entry deleted while pending comes as
/// `[id, nil]` on older servers and is skipped.
fn parse_entries(value: Value) -> Vec<Entry> {
    value
        .into_array()
        .into_iter()
        .filter_map(|entry| {
            let mut parts = entry.into_array().into_iter();
            let id = parts.next()?.into_string()?;
            let mut fields = Vec::new();
            let mut flat = parts.next()?.into_array().into_iter();
            while let (Some(field), Some(value)) = (flat.next(), flat.next()) {
                fields.push((field.into_string()?, value));
            }
            Some((id, fields))
        })
        .collect()
}

/// Reports the group's lag every `period`: entries not yet acknowledged
/// (undelivered plus pending) and the age of the oldest of them.
pub async fn report_lag(client: Client, timeout: Duration, period: Duration, stopping: Stopping) {
    let options = tinyurl_runtime::redis::command_options(timeout);
    stopping
        .every(period, || async {
            match lag(&client, &options).await {
                Ok((entries, seconds)) => {
                    metrics::gauge!("writer_clicks_stream_lag_entries").set(entries as f64);
                    metrics::gauge!("writer_clicks_stream_lag_seconds").set(seconds);
                }
                Err(error) => tracing::debug!(%error, "cannot read the click stream lag"),
            }
        })
        .await;
}

async fn lag(client: &Client, options: &Options) -> Result<(u64, f64), Error> {
    let client = client.with_options(options);
    let groups: Value = client.xinfo_groups(CLICKS_STREAM).await?;
    let Some(group) = groups.into_array().into_iter().find_map(|group| {
        let pairs = pairs(group);
        (pairs.iter().find(|(key, _)| key == "name")?.1.as_str()? == CLICKS_GROUP).then_some(pairs)
    }) else {
        return Ok((0, 0.0));
    };
    let number = |name: &str| {
        group
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_u64())
    };
    let text = |name: &str| {
        group
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_str().map(std::borrow::Cow::into_owned))
    };
    let pending = number("pending").unwrap_or(0);
    let undelivered = number("lag").unwrap_or(0);
    // The oldest unacknowledged entry: the first pending one, else the first
    // after the last delivered.
    let oldest = if pending > 0 {
        let summary: Value = client.xpending(CLICKS_STREAM, CLICKS_GROUP, ()).await?;
        summary
            .into_array()
            .into_iter()
            .nth(1)
            .and_then(Value::into_string)
    } else if undelivered > 0 {
        match text("last-delivered-id") {
            Some(last) => {
                let next: Value = client
                    .xrange(CLICKS_STREAM, format!("({last}"), "+", Some(1))
                    .await?;
                parse_entries(next).into_iter().next().map(|(id, _)| id)
            }
            None => None,
        }
    } else {
        None
    };
    let seconds = oldest
        .and_then(|id| id.split('-').next()?.parse::<u64>().ok())
        .map_or(0.0, |millis| {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64);
            now.saturating_sub(millis) as f64 / 1000.0
        });
    Ok((pending + undelivered, seconds))
}

/// `[key, value, …]` as pairs.
fn pairs(value: Value) -> Vec<(String, Value)> {
    let mut flat = value.into_array().into_iter();
    let mut pairs = Vec::new();
    while let (Some(key), Some(value)) = (flat.next(), flat.next()) {
        if let Some(key) = key.into_string() {
            pairs.push((key, value));
        }
    }
    pairs
}
