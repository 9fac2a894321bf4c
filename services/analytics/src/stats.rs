//! `GetLinkStats`: the range and granularity a request asks for, checked,
//! and the statistics assembled from rollup rows.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{ClassFilter, Dimension, OTHER, RollupRow, RollupTable};
use crate::error::AnalyticsError;

/// Longest series answered, in buckets (a week of minutes fits).
pub const MAX_POINTS: i64 = 20_000;
/// Named entries of each top list; the rest are one "other" entry after
/// them.
pub const TOP: usize = 10;
/// The range when the request names none.
const DEFAULT_RANGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Up to this range, an unspecified granularity is hourly.
const HOURLY_UP_TO: i64 = 2 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Minute,
    Hour,
    Day,
}

impl Granularity {
    pub fn seconds(self) -> i64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 3600,
            Self::Day => 86_400,
        }
    }

    /// The protobuf enum number.
    pub fn number(self) -> i32 {
        match self {
            Self::Minute => 1,
            Self::Hour => 2,
            Self::Day => 3,
        }
    }
}

/// A checked range: `[from, to)` in seconds since the Unix epoch, both on
/// bucket boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsQuery {
    pub from: i64,
    pub to: i64,
    pub granularity: Granularity,
}

impl StatsQuery {
    /// `granularity` is the protobuf enum number (0 chooses by range);
    /// `minute_retention` is how far back minute rollups reach.
    pub fn parse(
        from: Option<SystemTime>,
        to: Option<SystemTime>,
        granularity: i32,
        now: SystemTime,
        minute_retention: Duration,
    ) -> Result<Self, AnalyticsError> {
        let requested = match granularity {
            0 => None,
            1 => Some(Granularity::Minute),
            2 => Some(Granularity::Hour),
            3 => Some(Granularity::Day),
            other => {
                return Err(AnalyticsError::invalid(
                    "granularity",
                    format!("granularity {other} is not one of MINUTE (1), HOUR (2), DAY (3)"),
                ));
            }
        };
        let to = to.unwrap_or(now);
        let from = match from {
            Some(from) => from,
            None => to.checked_sub(DEFAULT_RANGE).unwrap_or(UNIX_EPOCH),
        };
        if from > to {
            return Err(AnalyticsError::invalid("from", "from must not be after to"));
        }
        let (from, to) = (seconds(from, "from")?, seconds(to, "to")?);
        let granularity = requested.unwrap_or(if to - from <= HOURLY_UP_TO {
            Granularity::Hour
        } else {
            Granularity::Day
        });
        let step = granularity.seconds();
        let from = from.div_euclid(step) * step;
        let to = (to + step - 1).div_euclid(step) * step;
        let to = to.max(from + step);
        if (to - from) / step > MAX_POINTS {
            return Err(AnalyticsError::invalid(
                "from",
                format!(
                    "the range holds {} buckets; at most {MAX_POINTS}: narrow it or use a coarser granularity",
                    (to - from) / step
                ),
            ));
        }
        if granularity != Granularity::Day {
            let oldest = seconds(
                now.checked_sub(minute_retention).unwrap_or(UNIX_EPOCH),
                "from",
            )?;
            if from < oldest.div_euclid(60) * 60 {
                return Err(AnalyticsError::invalid(
                    "from",
                    format!(
                        "minute and hour statistics reach back {}; use DAY granularity for older ranges",
                        humantime::format_duration(minute_retention)
                    ),
                ));
            }
        }
        Ok(Self {
            from,
            to,
            granularity,
        })
    }

    /// The rollup table and bucket range `[first, end)` to read.
    pub fn buckets(&self) -> (RollupTable, i32, i32) {
        let (table, width) = match self.granularity {
            Granularity::Day => (RollupTable::Days, 86_400),
            Granularity::Minute | Granularity::Hour => (RollupTable::Minutes, 60),
        };
        let bucket = |at: i64| i32::try_from(at / width).unwrap_or(i32::MAX);
        (table, bucket(self.from), bucket(self.to))
    }

    /// The days `[first, end)` the range touches: unique visitors are
    /// counted per whole day.
    pub fn days(&self) -> (i32, i32) {
        let day = |at: i64| i32::try_from(at.div_euclid(86_400)).unwrap_or(i32::MAX);
        (day(self.from), day(self.to + 86_399))
    }
}

/// Seconds since the Unix epoch; before it is refused (no clicks are).
fn seconds(at: SystemTime, field: &'static str) -> Result<i64, AnalyticsError> {
    at.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|since| i64::try_from(since.as_secs()).ok())
        .ok_or_else(|| AnalyticsError::invalid(field, format!("{field} is before 1970")))
}

/// One bucket of the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Seconds since the Unix epoch.
    pub start: i64,
    pub clicks: u64,
    pub bot_clicks: u64,
}

/// Rows an export answers at most; a range that holds more is refused.
pub const MAX_EXPORT_ROWS: usize = 100_000;

/// One row of an export: a bucket's clicks of one value of one dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRow {
    /// The bucket's start, in seconds since the Unix epoch.
    pub start: i64,
    pub dimension: Dimension,
    /// Empty for [`Dimension::Total`].
    pub value: String,
    pub clicks: u64,
    pub bot_clicks: u64,
}

impl ExportRow {
    /// `rows` (as [`crate::ClickStore::export`] answers them, in order) of
    /// `query` as export rows of the `dimensions` asked for: humans and bots
    /// of a value on one row.
    pub fn of(query: &StatsQuery, rows: &[RollupRow], dimensions: &[Dimension]) -> Vec<Self> {
        let width = match query.granularity {
            Granularity::Day => 86_400,
            Granularity::Minute | Granularity::Hour => 60,
        };
        let mut out: Vec<Self> = Vec::new();
        for row in rows
            .iter()
            .filter(|row| dimensions.contains(&row.dimension))
        {
            let start = i64::from(row.bucket) * width;
            let count = u64::try_from(row.clicks).unwrap_or(0);
            let continues = out.last().is_some_and(|last| {
                last.start == start && last.dimension == row.dimension && last.value == row.value
            });
            if !continues {
                out.push(Self {
                    start,
                    dimension: row.dimension,
                    value: row.value.clone(),
                    clicks: 0,
                    bot_clicks: 0,
                });
            }
            let Some(target) = out.last_mut() else {
                continue;
            };
            if row.bot {
                target.bot_clicks += count;
            } else {
                target.clicks += count;
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStats {
    pub query: StatsQuery,
    pub lifetime_clicks: u64,
    pub lifetime_bot_clicks: u64,
    pub clicks: u64,
    pub bot_clicks: u64,
    pub series: Vec<Point>,
    pub referrers: Vec<(String, u64)>,
    pub countries: Vec<(String, u64)>,
    pub browsers: Vec<(String, u64)>,
    pub devices: Vec<(String, u64)>,
    pub bots: Vec<(String, u64)>,
    /// Clicks by who made them: `human`, then the kinds of bot (`crawler`,
    /// `previewer`, `monitor`), most first; only those with clicks.
    pub classes: Vec<(String, u64)>,
    /// For visits to codes that do not exist: the paths asked for, people's
    /// and bots' together, most first.
    pub paths: Vec<(String, u64)>,
    /// For a link with redirect rules: the human clicks each rule answered
    /// (`1`…) and the link's own target answered ([`crate::TARGET_RULE`]).
    pub rules: Vec<(String, u64)>,
    /// Unique visitors (people) of the days the range touches, summed: a
    /// person visiting on two days is two ([`tinyurl_domain::visitors`]).
    pub visitors: u64,
    /// Those days' unique visitors, each day with any: (day's start in
    /// seconds since the Unix epoch, visitors).
    pub daily_visitors: Vec<(i64, u64)>,
}

impl LinkStats {
    /// Assembles the answer from the rows [`StatsQuery::buckets`] named,
    /// read for `filter`: in the default view the breakdowns count people
    /// and bots are apart; with classes named, the rows are theirs alone and
    /// every breakdown counts them all.
    pub fn assemble(
        query: StatsQuery,
        lifetime: (i64, i64),
        rows: &[RollupRow],
        filter: &ClassFilter,
    ) -> Self {
        let step = query.granularity.seconds();
        let bucket_seconds = match query.granularity {
            Granularity::Day => 86_400,
            Granularity::Minute | Granularity::Hour => 60,
        };
        let points = usize::try_from((query.to - query.from) / step).unwrap_or(0);
        let mut series: Vec<Point> = (0..points)
            .map(|index| Point {
                start: query.from + index as i64 * step,
                clicks: 0,
                bot_clicks: 0,
            })
            .collect();
        let mut breakdowns: HashMap<(Dimension, bool), HashMap<&str, u64>> = HashMap::new();
        let (mut clicks, mut bot_clicks) = (0u64, 0u64);
        for row in rows {
            let count = u64::try_from(row.clicks).unwrap_or(0);
            if row.dimension == Dimension::Total {
                let at = i64::from(row.bucket) * bucket_seconds;
                let Some(point) = usize::try_from((at - query.from) / step)
                    .ok()
                    .and_then(|index| series.get_mut(index))
                else {
                    continue;
                };
                if row.bot {
                    point.bot_clicks += count;
                    bot_clicks += count;
                } else {
                    point.clicks += count;
                    clicks += count;
                }
            } else {
                *breakdowns
                    .entry((row.dimension, row.bot))
                    .or_default()
                    .entry(row.value.as_str())
                    .or_default() += count;
            }
        }
        // The named values by clicks, then everything else as one "other"
        // entry at the end (the store sends at most TOP named values and
        // one "other"; the tail is folded here too, so the answer is the
        // same whatever the store sent).
        let top = |dimension: Dimension, bots: &[bool]| -> Vec<(String, u64)> {
            let mut other = 0u64;
            let mut merged: HashMap<&str, u64> = HashMap::new();
            for bot in bots {
                for (value, count) in breakdowns.get(&(dimension, *bot)).into_iter().flatten() {
                    *merged.entry(value).or_default() += count;
                }
            }
            let mut counts: Vec<(String, u64)> = Vec::new();
            for (value, count) in merged {
                if value == OTHER {
                    other += count;
                } else {
                    counts.push((value.to_owned(), count));
                }
            }
            counts.sort_by(|left, right| right.1.cmp(&left.1).then_with(|| left.0.cmp(&right.0)));
            if counts.len() > TOP {
                other += counts.drain(TOP..).map(|(_, count)| count).sum::<u64>();
            }
            if other > 0 {
                counts.push((OTHER.to_owned(), other));
            }
            counts
        };
        // People's and bots' together ("other" last, as every list).
        let paths = top(Dimension::Path, &[false, true]);
        // Who the breakdowns count: people in the default view, everyone
        // read when classes are named.
        let counted: &[bool] = if filter.is_default() {
            &[false]
        } else {
            &[false, true]
        };
        let mut classes = top(Dimension::Class, &[true]);
        if clicks > 0 {
            classes.insert(0, (crate::TrafficClass::Human.as_str().to_owned(), clicks));
        }
        Self {
            query,
            classes,
            paths,
            lifetime_clicks: u64::try_from(lifetime.0).unwrap_or(0),
            lifetime_bot_clicks: u64::try_from(lifetime.1).unwrap_or(0),
            clicks,
            bot_clicks,
            series,
            referrers: top(Dimension::Referrer, counted),
            countries: top(Dimension::Country, counted),
            browsers: top(Dimension::Browser, counted),
            devices: top(Dimension::Device, counted),
            bots: top(Dimension::Browser, &[true]),
            rules: top(Dimension::Rule, counted),
            visitors: 0,
            daily_visitors: Vec::new(),
        }
    }

    /// With the unique visitors of the range's days
    /// ([`crate::ClickStore::visitors`]).
    pub fn with_visitors(mut self, days: &[(i32, i64)]) -> Self {
        self.daily_visitors = days
            .iter()
            .map(|(day, count)| (i64::from(*day) * 86_400, u64::try_from(*count).unwrap_or(0)))
            .collect();
        self.visitors = self.daily_visitors.iter().map(|(_, count)| count).sum();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn checks_ranges_and_granularities() {
        let now = at(1_800_000_000);
        let field = |result: Result<StatsQuery, AnalyticsError>| {
            result.err().and_then(|error| error.field())
        };
        assert_eq!(
            field(StatsQuery::parse(None, None, 7, now, WEEK)),
            Some("granularity")
        );
        assert_eq!(
            field(StatsQuery::parse(
                Some(at(1_800_000_100)),
                Some(at(1_800_000_000)),
                0,
                now,
                WEEK
            )),
            Some("from")
        );
        // Minutes and hours only as far back as minute rollups are kept.
        let old = Some(at(1_800_000_000 - 8 * 24 * 3600));
        assert_eq!(
            field(StatsQuery::parse(old, None, 2, now, WEEK)),
            Some("from")
        );
        assert!(StatsQuery::parse(old, None, 3, now, WEEK).is_ok());
        assert_eq!(
            field(StatsQuery::parse(Some(at(0)), None, 1, now, WEEK)),
            Some("from")
        );
        let before_1970 = UNIX_EPOCH.checked_sub(Duration::from_secs(1));
        assert_eq!(
            field(StatsQuery::parse(before_1970, None, 3, now, WEEK)),
            Some("from")
        );
    }

    #[test]
    fn rounds_to_buckets_and_chooses_a_granularity() {
        let now = at(1_800_000_000);
        let query = StatsQuery::parse(None, None, 0, now, WEEK).expect("defaults");
        assert_eq!(query.granularity, Granularity::Day);
        assert_eq!(query.from % 86_400, 0);
        assert!(query.to >= 1_800_000_000);
        let query = StatsQuery::parse(
            Some(at(1_799_999_000)),
            Some(at(1_800_000_001)),
            0,
            now,
            WEEK,
        )
        .expect("an hour's range");
        assert_eq!(query.granularity, Granularity::Hour);
        assert_eq!((query.from % 3600, query.to % 3600), (0, 0));
        assert_eq!(query.buckets().0, RollupTable::Minutes);
    }

    #[test]
    fn assembles_series_and_tops() {
        let query = StatsQuery {
            from: 3600,
            to: 3 * 3600,
            granularity: Granularity::Hour,
        };
        let row = |minute: i32, dimension, value: &str, bot, clicks| RollupRow {
            bucket: minute,
            dimension,
            value: value.to_owned(),
            bot,
            clicks,
        };
        let rows = [
            row(61, Dimension::Total, "", false, 3),
            row(62, Dimension::Total, "", true, 1),
            row(150, Dimension::Total, "", false, 2),
            row(61, Dimension::Referrer, "a.com", false, 3),
            row(150, Dimension::Referrer, "b.com", false, 2),
            row(150, Dimension::Referrer, "a.com", false, 1),
            row(62, Dimension::Browser, "googlebot", true, 1),
        ];
        let stats = LinkStats::assemble(query, (10, 4), &rows, &ClassFilter::default());
        assert_eq!(stats.series.len(), 2);
        assert_eq!((stats.series[0].clicks, stats.series[0].bot_clicks), (3, 1));
        assert_eq!(stats.series[1].clicks, 2);
        assert_eq!((stats.clicks, stats.bot_clicks), (5, 1));
        assert_eq!(
            stats.referrers,
            [("a.com".to_owned(), 4), ("b.com".to_owned(), 2)]
        );
        assert_eq!(stats.bots, [("googlebot".to_owned(), 1)]);
        assert_eq!(stats.lifetime_clicks, 10);
    }

    #[test]
    fn a_class_filter_counts_its_classes_in_every_breakdown() {
        let query = StatsQuery {
            from: 0,
            to: 3600,
            granularity: Granularity::Hour,
        };
        let row = |dimension, value: &str, bot, clicks| RollupRow {
            bucket: 1,
            dimension,
            value: value.to_owned(),
            bot,
            clicks,
        };
        // As a store answers for `previewer, human`.
        let rows = [
            row(Dimension::Total, "", false, 2),
            row(Dimension::Total, "", true, 5),
            row(Dimension::Country, "DE", false, 2),
            row(Dimension::Country, "US", true, 5),
            row(Dimension::Browser, "slack", true, 5),
            row(Dimension::Class, "previewer", true, 5),
        ];
        let filter = ClassFilter::parse(&["previewer", "human"]).expect("classes");
        let stats = LinkStats::assemble(query, (0, 0), &rows, &filter);
        assert_eq!((stats.clicks, stats.bot_clicks), (2, 5));
        assert_eq!(
            stats.countries,
            [("US".to_owned(), 5), ("DE".to_owned(), 2)]
        );
        assert_eq!(stats.bots, [("slack".to_owned(), 5)]);
        assert_eq!(
            stats.classes,
            [("human".to_owned(), 2), ("previewer".to_owned(), 5)]
        );
        // The default view: people only in the breakdowns.
        let stats = LinkStats::assemble(query, (0, 0), &rows, &ClassFilter::default());
        assert_eq!(stats.countries, [("DE".to_owned(), 2)]);
    }

    #[test]
    fn keeps_the_top_values_and_sums_the_rest_into_other_last() {
        let query = StatsQuery {
            from: 0,
            to: 86_400,
            granularity: Granularity::Day,
        };
        let mut rows: Vec<RollupRow> = (0..TOP as i64 + 3)
            .map(|index| RollupRow {
                bucket: 0,
                dimension: Dimension::Referrer,
                value: format!("site{index:02}.example"),
                bot: false,
                clicks: 100 - index,
            })
            .collect();
        rows.push(RollupRow {
            bucket: 0,
            dimension: Dimension::Referrer,
            value: OTHER.to_owned(),
            bot: false,
            clicks: 1_000,
        });
        let stats = LinkStats::assemble(query, (0, 0), &rows, &ClassFilter::default());
        assert_eq!(stats.referrers.len(), TOP + 1);
        assert_eq!(stats.referrers[0], ("site00.example".to_owned(), 100));
        // "other" comes last whatever its size: the stored one plus the
        // three values past the top.
        let tail: u64 = (TOP as u64..TOP as u64 + 3).map(|index| 100 - index).sum();
        assert_eq!(stats.referrers[TOP], (OTHER.to_owned(), 1_000 + tail));
    }
}
