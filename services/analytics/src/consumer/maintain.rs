//! The rollups' upkeep: finished minutes rolled up into days, and rows past
//! their retention deleted in slices.

use super::*;

/// Minutes this old are rolled up into days: by then their clicks have
/// almost always been folded (a later batch for them writes its day rows
/// itself).
const ROLL_UP_GRACE_MINUTES: i32 = 2;

/// The last minute the periodic roll-up takes at `now`: the finished
/// minutes, less the grace.
pub fn finished_minutes(now: SystemTime) -> i32 {
    minute_of(now) - ROLL_UP_GRACE_MINUTES
}

/// Rolls every minute up to `through` into days, a slice per transaction,
/// until caught up or `stop()` says so; `rolled` is told each slice's day
/// rows as it commits (a later failure does not take them back).
pub async fn roll_up(
    store: &dyn ClickStore,
    through: i32,
    values: usize,
    stop: impl Fn() -> bool,
    mut rolled: impl FnMut(u64),
) -> Result<(), AnalyticsError> {
    while !stop() {
        let done = store.roll_up_days(through, values).await?;
        rolled(done.rows);
        if done.caught_up {
            break;
        }
    }
    Ok(())
}

/// The periodic upkeep of the rollups, on every writer (the stores make
/// concurrent runs safe): every `maintain_every`, roll finished minutes up
/// into days; every `prune_every`, delete minute rollups past their
/// retention and forgotten batch ids, in slices.
pub async fn maintain_rollups(
    store: Arc<dyn ClickStore>,
    settings: ConsumerSettings,
    stopping: Stopping,
) {
    let rolled = metrics::counter!("writer_click_day_rows_rolled_total");
    let pruned = metrics::counter!("writer_click_rollups_pruned_total");
    let errors = metrics::counter!("writer_clicks_consumer_errors_total");
    let rolling_up = metrics::histogram!("writer_click_maintenance_seconds", "task" => "roll_up");
    let pruning = metrics::histogram!("writer_click_maintenance_seconds", "task" => "prune");
    let last_prune = std::sync::Mutex::new(None::<Instant>);
    stopping
        .clone()
        .every(settings.maintain_every, || async {
            let now = SystemTime::now();
            let started = Instant::now();
            let done = roll_up(
                store.as_ref(),
                finished_minutes(now),
                settings.values_per_bucket,
                || stopping.is_stopping(),
                |rows| rolled.increment(rows),
            )
            .await;
            if let Err(error) = done {
                errors.increment(1);
                tracing::warn!(error = error.public_message(), "click roll-up failed");
            }
            rolling_up.record(started.elapsed().as_secs_f64());
            let prune_due = match last_prune.lock() {
                Ok(mut last) if last.is_none_or(|at| at.elapsed() >= settings.prune_every) => {
                    *last = Some(Instant::now());
                    true
                }
                _ => false,
            };
            if !prune_due {
                return;
            }
            let minute = minute_of(now.checked_sub(settings.minute_retention).unwrap_or(now));
            let day = settings.day_retention.map_or(i32::MIN, |retention| {
                minute_of(now.checked_sub(retention).unwrap_or(now)).div_euclid(MINUTES_PER_DAY)
            });
            let batches_before = now.checked_sub(settings.batch_retention).unwrap_or(now);
            let started = Instant::now();
            while !stopping.is_stopping() {
                match store.prune(minute, day, batches_before, PRUNE_SLICE).await {
                    Ok(0) => break,
                    Ok(rows) => pruned.increment(rows),
                    Err(error) => {
                        errors.increment(1);
                        tracing::warn!(error = error.public_message(), "click retention failed");
                        break;
                    }
                }
            }
            pruning.record(started.elapsed().as_secs_f64());
        })
        .await;
}
