//! Click analytics: folding click batches into rollups exactly once
//! ([`consumer`]), the rollup model both stores share, and the statistics
//! read back for `GetLinkStats`.

pub mod consumer;
pub mod error;
mod postgres;
mod sqlite;
pub mod stats;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

pub use tinyurl_domain::clicks::TrafficClass;
use tinyurl_domain::clicks::{ClickLine, NOT_RECORDED, is_orphan_key};
pub use tinyurl_domain::clicks::{OTHER, minute_of};

pub use self::error::AnalyticsError;
pub use self::postgres::PostgresRollups;
pub use self::sqlite::SqliteRollups;
pub use self::stats::{ExportRow, Granularity, LinkStats, StatsQuery};

/// A rollup dimension, as stored (`dimension` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i16)]
pub enum Dimension {
    Total = 0,
    Referrer = 1,
    Country = 2,
    Browser = 3,
    Device = 4,
    /// Which redirect rule answered (`1`…), or [`TARGET_RULE`]: rows only for
    /// links with rules.
    Rule = 5,
    /// The kind of bot (`crawler`, `previewer`, `monitor`): rows for bots
    /// only, a person's clicks being the totals' human ones.
    Class = 6,
    /// The path asked for: rows only under the orphan keys (visits to codes
    /// that do not exist, [`tinyurl_domain::clicks::orphan_key`]).
    Path = 7,
    /// A link's unique visitors of a day (day rows only, value empty, never
    /// bots): the largest count its sketch has given, set rather than
    /// added ([`tinyurl_domain::visitors`]).
    Visitors = 8,
}

/// The [`Dimension::Rule`] value of a visit no rule answered.
pub const TARGET_RULE: &str = "target";

impl Dimension {
    pub const ALL: [Self; 9] = [
        Self::Total,
        Self::Referrer,
        Self::Country,
        Self::Browser,
        Self::Device,
        Self::Rule,
        Self::Class,
        Self::Path,
        Self::Visitors,
    ];

    /// Its name in exports and their requests.
    pub fn name(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::Referrer => "referrer",
            Self::Country => "country",
            Self::Browser => "browser",
            Self::Device => "device",
            Self::Rule => "rule",
            Self::Class => "class",
            Self::Path => "path",
            Self::Visitors => "visitors",
        }
    }

    /// The dimension `name` names.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|dimension| dimension.name() == name)
    }

    /// The dimension a stored number stands for; another number means the
    /// schema and this code disagree.
    pub fn from_stored(raw: i16) -> Result<Self, AnalyticsError> {
        Self::ALL
            .into_iter()
            .find(|dimension| *dimension as i16 == raw)
            .ok_or_else(|| {
                AnalyticsError::Unexpected(anyhow::anyhow!("unknown rollup dimension {raw}"))
            })
    }
}

/// The key of one rollup row, less the table (minute or day).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RollupKey {
    pub code: String,
    /// Minutes or days since the Unix epoch.
    pub bucket: i32,
    pub dimension: Dimension,
    /// Empty for [`Dimension::Total`].
    pub value: String,
    /// Who clicked: a [`TrafficClass::code`], or [`UNRECORDED_BOT`].
    pub class: i16,
}

impl RollupKey {
    pub fn group(&self) -> ValueGroup {
        ValueGroup {
            code: self.code.clone(),
            bucket: self.bucket,
            dimension: self.dimension,
            class: self.class,
        }
    }
}

/// The rows whose values one bound counts: one dimension of one code in one
/// bucket, each class apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueGroup {
    pub code: String,
    pub bucket: i32,
    pub dimension: Dimension,
    pub class: i16,
}

/// The `class` of the bot rows folded before rollups kept the kind of bot
/// (migration V21): counted for bots at large, for no one kind.
pub const UNRECORDED_BOT: i16 = -1;

/// Which classes a statistics read counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassFilter {
    /// `None`: every class, the breakdowns counting people only and bots
    /// apart (the default view).
    only: Option<Vec<i16>>,
}

impl ClassFilter {
    /// Names a request may use: the classes, and `bot` for every kind of bot
    /// (those folded before the kind was kept included).
    pub const NAMES: [&'static str; 5] = ["human", "crawler", "previewer", "monitor", "bot"];

    /// `names` as a request gives them (each may also be a comma-separated
    /// list); none: the default view.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, AnalyticsError> {
        let mut codes: Vec<i16> = Vec::new();
        for name in names
            .iter()
            .flat_map(|names| names.as_ref().split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            if name == "bot" {
                codes.extend(
                    TrafficClass::ALL
                        .into_iter()
                        .filter(|class| *class != TrafficClass::Human)
                        .map(TrafficClass::code),
                );
                codes.push(UNRECORDED_BOT);
            } else if let Some(class) = TrafficClass::named(name) {
                codes.push(class.code());
            } else {
                return Err(AnalyticsError::invalid(
                    "classes",
                    format!("class {name:?} is not one of {}", Self::NAMES.join(", ")),
                ));
            }
        }
        codes.sort_unstable();
        codes.dedup();
        Ok(Self {
            only: (!codes.is_empty()).then_some(codes),
        })
    }

    /// Whether it is the default view (no class named).
    pub fn is_default(&self) -> bool {
        self.only.is_none()
    }

    /// Whether it counts `class`'s clicks.
    pub fn includes(&self, class: TrafficClass) -> bool {
        self.only
            .as_ref()
            .is_none_or(|codes| codes.contains(&class.code()))
    }

    /// The `class` values of the rows it counts.
    pub fn codes(&self) -> Vec<i16> {
        match &self.only {
            Some(codes) => codes.clone(),
            None => TrafficClass::ALL
                .into_iter()
                .map(TrafficClass::code)
                .chain([UNRECORDED_BOT])
                .collect(),
        }
    }

    /// The class names it was given, for an answer (empty: the default).
    pub fn names(&self) -> Vec<&'static str> {
        let Some(codes) = &self.only else {
            return Vec::new();
        };
        TrafficClass::ALL
            .into_iter()
            .filter(|class| codes.contains(&class.code()))
            .map(TrafficClass::as_str)
            .collect()
    }
}

/// Minutes in a day bucket.
pub const MINUTES_PER_DAY: i32 = 24 * 60;

/// Minutes one [`ClickStore::roll_up_days`] call rolls up at most. Its
/// transaction holds the roll-up mark, which keeps every fold waiting, and
/// under a steady 4,000 clicks a second one minute of rollups took seconds
/// to roll up: a day of them in one transaction never finished.
pub const ROLL_UP_SLICE_MINUTES: i32 = 10;

/// Distinct values kept per [`ValueGroup`] when nothing else is configured:
/// anonymous visitors choose referrers freely, so without a bound 100,000
/// made-up ones would be 100,000 rows a minute and a `/stats` that scans
/// them all.
pub const DEFAULT_VALUES_PER_BUCKET: usize = 100;

/// What a store already holds of the groups a write adds to, read in the
/// write's transaction (with the groups locked against other writers).
#[derive(Debug, Clone, Default)]
pub struct StoredValues {
    /// Named values (every value but [`OTHER`]) stored per group.
    pub counts: HashMap<ValueGroup, usize>,
    /// The keys among those being written that are stored already.
    pub present: HashSet<RollupKey>,
}

/// `rows` (sorted, as a fold or roll-up makes them) with each group's new
/// values limited to the room `bound` leaves beside the stored ones: the
/// heaviest new values (then the first by name, so every store picks the
/// same) take the room, the rest are added to [`OTHER`]. Values already
/// stored and the totals are unchanged, so no click is lost and every
/// group holds at most `bound` named values and one [`OTHER`]. Sorted by
/// key.
pub fn bound_values(
    rows: &[(RollupKey, i64)],
    stored: &StoredValues,
    bound: usize,
) -> Vec<(RollupKey, i64)> {
    let mut kept: BTreeMap<RollupKey, i64> = BTreeMap::new();
    let mut add = |key: RollupKey, clicks: i64| {
        let sum = kept.entry(key).or_default();
        *sum = sum.saturating_add(clicks);
    };
    let mut new: BTreeMap<ValueGroup, Vec<(&RollupKey, i64)>> = BTreeMap::new();
    for (key, clicks) in rows {
        if key.dimension == Dimension::Total || key.value == OTHER || stored.present.contains(key) {
            add(key.clone(), *clicks);
        } else {
            new.entry(key.group()).or_default().push((key, *clicks));
        }
    }
    for (group, mut values) in new {
        values.sort_by(|left, right| {
            right
                .1
                .cmp(&left.1)
                .then_with(|| left.0.value.cmp(&right.0.value))
        });
        let room = bound.saturating_sub(stored.counts.get(&group).copied().unwrap_or(0));
        for (index, (key, clicks)) in values.into_iter().enumerate() {
            if index < room {
                add(key.clone(), clicks);
            } else {
                add(
                    RollupKey {
                        value: OTHER.to_owned(),
                        ..key.clone()
                    },
                    clicks,
                );
            }
        }
    }
    kept.into_iter().collect()
}

/// A batch's lines summed into minute rollup rows, sorted by key: every
/// consumer locks rows in the same order, so two folding at once cannot
/// deadlock. Day rollups are made from minute rollups in bulk
/// ([`ClickStore::roll_up_days`]); a fold writes day rows only for minutes
/// already rolled up ([`Fold::late_days`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fold {
    pub minutes: Vec<(RollupKey, i64)>,
    /// Per code: (human clicks, bot clicks).
    pub totals: Vec<(String, i64, i64)>,
    pub clicks: u64,
    /// Link days' unique visitors as their sketches count them now, sorted
    /// by (code, day): each stored count becomes the larger of the two.
    pub visitors: Vec<(String, i32, i64)>,
}

impl Fold {
    pub fn of(lines: &[ClickLine]) -> Self {
        let mut minutes: BTreeMap<RollupKey, i64> = BTreeMap::new();
        let mut totals: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        let mut clicks = 0u64;
        for line in lines {
            let count = i64::try_from(line.count).unwrap_or(i64::MAX);
            clicks = clicks.saturating_add(line.count);
            let minute = i32::try_from(line.minute).unwrap_or(i32::MAX);
            let rule = line.rule.map(|rule| match rule {
                0 => TARGET_RULE.to_owned(),
                number => number.to_string(),
            });
            // A visit to a code that does not exist carries its path where
            // a click carries its referrer.
            let third = if is_orphan_key(&line.code) {
                Dimension::Path
            } else {
                Dimension::Referrer
            };
            let dimensions = [
                (Dimension::Total, ""),
                (third, line.referrer.as_str()),
                (Dimension::Country, line.country.as_str()),
                (Dimension::Browser, line.browser.as_str()),
                (Dimension::Device, line.device.as_str()),
            ]
            .into_iter()
            .chain(rule.as_deref().map(|rule| (Dimension::Rule, rule)))
            .chain(line.bot().then(|| (Dimension::Class, line.class.as_str())))
            .filter(|(_, value)| *value != NOT_RECORDED);
            for (dimension, value) in dimensions {
                let key = RollupKey {
                    code: line.code.clone(),
                    bucket: minute,
                    dimension,
                    value: value.to_owned(),
                    class: line.class.code(),
                };
                let sum = minutes.entry(key).or_default();
                *sum = sum.saturating_add(count);
            }
            let total = totals.entry(line.code.as_str()).or_default();
            if line.bot() {
                total.1 = total.1.saturating_add(count);
            } else {
                total.0 = total.0.saturating_add(count);
            }
        }
        Self {
            minutes: minutes.into_iter().collect(),
            totals: totals
                .into_iter()
                .map(|(code, (humans, bots))| (code.to_owned(), humans, bots))
                .collect(),
            clicks,
            visitors: Vec::new(),
        }
    }

    /// With the visitor counts `counted` (any order, a link day more than
    /// once: the largest is kept).
    pub fn with_visitors(mut self, counted: Vec<(String, i32, i64)>) -> Self {
        let mut visitors: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for (code, day, count) in counted {
            let kept = visitors.entry((code, day)).or_default();
            *kept = (*kept).max(count);
        }
        self.visitors = visitors
            .into_iter()
            .map(|((code, day), count)| (code, day, count))
            .collect();
        self
    }

    /// Each link's (not an orphan key's) human and bot clicks per minute, by
    /// (code, minute): what `link.clicked` webhook messages tell.
    pub fn clicked(&self) -> Vec<(&str, i32, i64, i64)> {
        let mut minutes: BTreeMap<(&str, i32), (i64, i64)> = BTreeMap::new();
        for (key, clicks) in self
            .minutes
            .iter()
            .filter(|(key, _)| key.dimension == Dimension::Total && !is_orphan_key(&key.code))
        {
            let counts = minutes.entry((key.code.as_str(), key.bucket)).or_default();
            if key.class == TrafficClass::Human.code() {
                counts.0 = counts.0.saturating_add(*clicks);
            } else {
                counts.1 = counts.1.saturating_add(*clicks);
            }
        }
        minutes
            .into_iter()
            .map(|((code, minute), (humans, bots))| (code, minute, humans, bots))
            .collect()
    }

    /// Day rows for the minutes at or before `rolled_through`: clicks that
    /// arrive after their minute was rolled up into days (a batch held back
    /// while Redis was down) go to the day rollups directly. Sorted by key.
    pub fn late_days(&self, rolled_through: i32) -> Vec<(RollupKey, i64)> {
        let mut days: BTreeMap<RollupKey, i64> = BTreeMap::new();
        for (key, clicks) in self
            .minutes
            .iter()
            .filter(|(key, _)| key.bucket <= rolled_through)
        {
            let day = RollupKey {
                bucket: key.bucket.div_euclid(MINUTES_PER_DAY),
                ..key.clone()
            };
            let sum = days.entry(day).or_default();
            *sum = sum.saturating_add(*clicks);
        }
        days.into_iter().collect()
    }
}

/// What one [`ClickStore::roll_up_days`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolledUp {
    /// Day rows written.
    pub rows: u64,
    /// Whether every minute up to the requested one is rolled up now (one
    /// call rolls at most [`ROLL_UP_SLICE_MINUTES`], to keep its
    /// transaction short).
    pub caught_up: bool,
}

/// What happened to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folded {
    /// Its rollups and its id were committed together.
    Now,
    /// Its id was folded before (a redelivery): nothing changed.
    Before,
}

/// A stored rollup row read back for statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    pub bucket: i32,
    pub dimension: Dimension,
    pub value: String,
    pub bot: bool,
    pub clicks: i64,
}

/// Which rollup table a read uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollupTable {
    Minutes,
    Days,
}

/// The analytics storage of the writer, in the database that holds its links.
#[async_trait::async_trait]
pub trait ClickStore: Send + Sync + 'static {
    /// Adds `fold` and records `batch_id` in one transaction, unless the id
    /// was recorded before. Excludes a concurrent [`Self::roll_up_days`], so
    /// every minute row reaches the day rollups exactly once. Each group
    /// (minute or day) keeps at most `values` named values
    /// ([`bound_values`]), however many writers fold at once.
    async fn fold(
        &self,
        batch_id: &str,
        fold: &Fold,
        values: usize,
    ) -> Result<Folded, AnalyticsError>;

    /// [`Self::fold`] for several batches at once: `fold` (their clicks
    /// together) added and every id recorded in one transaction, when none
    /// of the ids was recorded before; `Ok(false)`, with nothing written,
    /// when one was (or a store folds one batch at a time): the caller then
    /// folds them one by one, so each is still counted exactly once.
    async fn fold_together(
        &self,
        batch_ids: &[&str],
        fold: &Fold,
        values: usize,
    ) -> Result<bool, AnalyticsError> {
        let _ = (batch_ids, fold, values);
        Ok(false)
    }

    /// Adds the minute rows after the roll-up mark and up to `through` (at
    /// most [`ROLL_UP_SLICE_MINUTES`] of them) to the day rollups and moves
    /// the mark, in one
    /// transaction; each day group keeps at most `values` named values.
    async fn roll_up_days(&self, through: i32, values: usize) -> Result<RolledUp, AnalyticsError>;

    /// Rollup rows of `code` with `first <= bucket < end`, summed: the
    /// series rows ([`Dimension::Total`]) by bucket, the breakdowns over the
    /// whole range, the `top` values of each (dimension, bot) by clicks and
    /// the rest summed into one [`OTHER`] row; only rows of the classes
    /// `classes` ([`ClassFilter::codes`]). Day rows include the minutes not
    /// rolled up yet.
    async fn rollups(
        &self,
        code: &str,
        table: RollupTable,
        (first, end): (i32, i32),
        top: usize,
        classes: &[i16],
    ) -> Result<Vec<RollupRow>, AnalyticsError>;

    /// Every rollup row of `code` with `first <= bucket < end`, summed per
    /// `step` buckets (each row's bucket the first of its step), dimension,
    /// value and bot, in that order; at most `limit`; only rows of the
    /// classes `classes`. Day rows include the minutes not rolled up yet.
    async fn export(
        &self,
        code: &str,
        table: RollupTable,
        range: (i32, i32),
        step: i32,
        limit: i64,
        classes: &[i16],
    ) -> Result<Vec<RollupRow>, AnalyticsError>;

    /// Lifetime (human, bot) clicks of `code`.
    async fn totals(&self, code: &str) -> Result<(i64, i64), AnalyticsError>;

    /// The unique visitors of `code` on each day with `first <= day < end`
    /// that had any, in day order.
    async fn visitors(
        &self,
        code: &str,
        first: i32,
        end: i32,
    ) -> Result<Vec<(i32, i64)>, AnalyticsError>;

    /// Deletes every rollup row and the totals of `code`, in one
    /// transaction; how many rows went. For keys no link owns (the orphan
    /// keys): a key's day totals and ranks are not touched.
    async fn purge(&self, code: &str) -> Result<u64, AnalyticsError>;

    /// Deletes the click data of `owner`'s links `codes` (every one of its
    /// links, deleted ones included, when `None`): rollup rows, totals,
    /// ranks, and their share of the owner's day totals, in one transaction
    /// that no fold or roll-up runs beside; how many rows went. Clicks still
    /// on their way (in a redirect's memory or the stream) are counted when
    /// they arrive.
    async fn forget(&self, owner: i64, codes: Option<&[String]>) -> Result<u64, AnalyticsError>;

    /// Deletes up to `limit` minute rows older than `minute` (never one not
    /// rolled up into days yet), day rows older than `day`, and batch ids
    /// folded before `batches_before`; how many rows went. Called
    /// repeatedly until it deletes nothing, so no call holds locks for long.
    async fn prune(
        &self,
        minute: i32,
        day: i32,
        batches_before: SystemTime,
        limit: i64,
    ) -> Result<u64, AnalyticsError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(code: &str, minute: i64, referrer: &str, bot: bool, count: u64) -> ClickLine {
        ClickLine {
            code: code.to_owned(),
            minute,
            referrer: referrer.to_owned(),
            browser: if bot { "googlebot" } else { "chrome" }.to_owned(),
            device: if bot { "bot" } else { "desktop" }.to_owned(),
            country: "DE".to_owned(),
            class: if bot {
                TrafficClass::Crawler
            } else {
                TrafficClass::Human
            },
            count,
            rule: None,
        }
    }

    #[test]
    fn rule_rows_only_for_links_with_rules() {
        let ruled = |rule| ClickLine {
            rule: Some(rule),
            ..line("r", 10, "-", false, 2)
        };
        let fold = Fold::of(&[ruled(2), ruled(0), ruled(2), line("p", 10, "-", false, 1)]);
        let rules: Vec<(&str, &str, i64)> = fold
            .minutes
            .iter()
            .filter(|(key, _)| key.dimension == Dimension::Rule)
            .map(|(key, clicks)| (key.code.as_str(), key.value.as_str(), *clicks))
            .collect();
        assert_eq!(rules, [("r", "2", 4), ("r", TARGET_RULE, 2)]);
        assert_eq!(Dimension::from_stored(5).ok(), Some(Dimension::Rule));
    }

    #[test]
    fn values_not_recorded_have_no_rows_and_count_in_the_totals() {
        let private = ClickLine {
            referrer: NOT_RECORDED.to_owned(),
            browser: NOT_RECORDED.to_owned(),
            device: NOT_RECORDED.to_owned(),
            country: NOT_RECORDED.to_owned(),
            ..line("p", 10, "-", false, 3)
        };
        let no_country = ClickLine {
            country: NOT_RECORDED.to_owned(),
            ..line("p", 10, "-", true, 1)
        };
        let fold = Fold::of(&[private, no_country, line("p", 10, "-", false, 2)]);
        let rows = |dimension| -> Vec<(String, bool, i64)> {
            fold.minutes
                .iter()
                .filter(|(key, _)| key.dimension == dimension)
                .map(|(key, clicks)| (key.value.clone(), key.class != 0, *clicks))
                .collect()
        };
        assert_eq!(
            rows(Dimension::Total),
            [(String::new(), false, 5), (String::new(), true, 1)]
        );
        assert_eq!(
            rows(Dimension::Referrer),
            [("-".to_owned(), false, 2), ("-".to_owned(), true, 1)]
        );
        assert_eq!(rows(Dimension::Country), [("DE".to_owned(), false, 2)]);
        assert_eq!(
            rows(Dimension::Browser),
            [
                ("chrome".to_owned(), false, 2),
                ("googlebot".to_owned(), true, 1)
            ]
        );
        assert_eq!(fold.totals, [("p".to_owned(), 5, 1)]);
        assert_eq!(rows(Dimension::Class), [("crawler".to_owned(), true, 1)]);
    }

    #[test]
    fn visits_to_codes_that_do_not_exist_are_counted_by_path() {
        let orphan = |path: &str, bot| ClickLine {
            code: "go.example/~".to_owned(),
            referrer: path.to_owned(),
            browser: NOT_RECORDED.to_owned(),
            device: NOT_RECORDED.to_owned(),
            country: NOT_RECORDED.to_owned(),
            ..line("x", 10, "-", bot, 2)
        };
        let fold = Fold::of(&[orphan("/nope", false), orphan("/.env", true)]);
        let rows: Vec<(Dimension, &str, bool, i64)> = fold
            .minutes
            .iter()
            .map(|(key, clicks)| (key.dimension, key.value.as_str(), key.class != 0, *clicks))
            .collect();
        assert_eq!(
            rows,
            [
                (Dimension::Total, "", false, 2),
                (Dimension::Total, "", true, 2),
                (Dimension::Class, "crawler", true, 2),
                (Dimension::Path, "/.env", true, 2),
                (Dimension::Path, "/nope", false, 2),
            ]
        );
    }

    #[test]
    fn bots_are_counted_by_class() {
        let previewer = ClickLine {
            class: TrafficClass::Previewer,
            ..line("p", 10, "-", true, 2)
        };
        let monitor = ClickLine {
            class: TrafficClass::Monitor,
            ..line("p", 10, "-", true, 1)
        };
        let fold = Fold::of(&[previewer, monitor, line("p", 10, "-", false, 4)]);
        let classes: Vec<(&str, i64)> = fold
            .minutes
            .iter()
            .filter(|(key, _)| key.dimension == Dimension::Class)
            .map(|(key, clicks)| (key.value.as_str(), *clicks))
            .collect();
        assert_eq!(classes, [("monitor", 1), ("previewer", 2)]);
        // Every row carries its class, so each can be read alone.
        let totals: Vec<(i16, i64)> = fold
            .minutes
            .iter()
            .filter(|(key, _)| key.dimension == Dimension::Total)
            .map(|(key, clicks)| (key.class, *clicks))
            .collect();
        assert_eq!(totals, [(0, 4), (2, 2), (3, 1)]);
        assert_eq!(fold.totals, [("p".to_owned(), 4, 3)]);
        assert_eq!(Dimension::from_stored(6).ok(), Some(Dimension::Class));
    }

    #[test]
    fn class_filters_name_classes_or_every_bot() {
        let codes = |names: &[&str]| ClassFilter::parse(names).map(|filter| filter.codes());
        assert_eq!(codes(&["previewer"]).ok(), Some(vec![2]));
        assert_eq!(codes(&["monitor,human", "human"]).ok(), Some(vec![0, 3]));
        assert_eq!(
            codes(&["bot"]).ok(),
            Some(vec![UNRECORDED_BOT, 1, 2, 3]),
            "bots folded before their kind was kept are bots too"
        );
        let default = ClassFilter::parse::<&str>(&[""]).expect("an empty name");
        assert!(default.is_default() && default.includes(TrafficClass::Monitor));
        let previewers = ClassFilter::parse(&["previewer"]).expect("a class");
        assert!(
            previewers.includes(TrafficClass::Previewer)
                && !previewers.includes(TrafficClass::Human)
        );
        assert_eq!(default.codes(), [0, 1, 2, 3, UNRECORDED_BOT]);
        assert_eq!(
            ClassFilter::parse(&["robot"])
                .err()
                .and_then(|error| error.field()),
            Some("classes")
        );
        assert_eq!(
            ClassFilter::parse(&["crawler", "human"])
                .map(|filter| filter.names())
                .ok(),
            Some(vec!["human", "crawler"])
        );
    }

    #[test]
    fn bounds_new_values_beside_the_stored_ones() {
        let minute = 20_000 * 24 * 60;
        let fold = Fold::of(&[
            line("a", minute, "old.example", false, 1),
            line("a", minute, "heavy.example", false, 5),
            line("a", minute, "light.example", false, 2),
            line("a", minute, "b.example", false, 2),
            line("a", minute, OTHER, false, 3),
        ]);
        let old = RollupKey {
            code: "a".to_owned(),
            bucket: minute as i32,
            dimension: Dimension::Referrer,
            value: "old.example".to_owned(),
            class: 0,
        };
        let stored = StoredValues {
            counts: HashMap::from([(old.group(), 2)]),
            present: HashSet::from([old]),
        };
        let bounded = bound_values(&fold.minutes, &stored, 4);
        let referrers: Vec<(&str, i64)> = bounded
            .iter()
            .filter(|(key, _)| key.dimension == Dimension::Referrer)
            .map(|(key, clicks)| (key.value.as_str(), *clicks))
            .collect();
        // Room for two new values: the heaviest, then the first by name of
        // the two that tie; the stored one stays; the rest join "other".
        assert_eq!(
            referrers,
            [
                ("b.example", 2),
                ("heavy.example", 5),
                ("old.example", 1),
                (OTHER, 5)
            ]
        );
        // Other dimensions had nothing stored and one value each.
        assert_eq!(
            bounded.iter().map(|(_, clicks)| clicks).sum::<i64>(),
            fold.minutes.iter().map(|(_, clicks)| clicks).sum::<i64>()
        );
        assert!(bounded.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }

    #[test]
    fn folds_lines_into_sorted_rollups() {
        let day_start = 20_000 * 24 * 60;
        let fold = Fold::of(&[
            line("b", day_start + 5, "x.com", false, 2),
            line("a", day_start + 5, "x.com", false, 3),
            line("a", day_start + 6, "-", false, 1),
            line("a", day_start + 6, "-", true, 4),
        ]);
        assert_eq!(fold.clicks, 10);
        assert_eq!(
            fold.totals,
            [("a".to_owned(), 4, 4), ("b".to_owned(), 2, 0)]
        );
        let minute_total = |bot: bool| -> i64 {
            fold.minutes
                .iter()
                .filter(|(key, _)| {
                    key.code == "a" && key.dimension == Dimension::Total && (key.class != 0) == bot
                })
                .map(|(_, clicks)| *clicks)
                .sum()
        };
        assert_eq!(minute_total(false), 4);
        assert_eq!(minute_total(true), 4);
        // Only minutes already rolled up come back as day rows, summed.
        assert!(fold.late_days(day_start as i32 + 4).is_empty());
        let late = fold.late_days(day_start as i32 + 6);
        let late_total: i64 = late
            .iter()
            .filter(|(key, _)| key.code == "a" && key.dimension == Dimension::Total)
            .map(|(key, clicks)| {
                assert_eq!(key.bucket, 20_000);
                *clicks
            })
            .sum();
        assert_eq!(late_total, 8);
        assert!(fold.minutes.windows(2).all(|pair| pair[0].0 < pair[1].0));
        // Every dimension sums to the total.
        for dimension in [
            Dimension::Referrer,
            Dimension::Country,
            Dimension::Browser,
            Dimension::Device,
        ] {
            let sum: i64 = fold
                .minutes
                .iter()
                .filter(|(key, _)| key.dimension == dimension)
                .map(|(_, clicks)| clicks)
                .sum();
            assert_eq!(sum, 10, "{dimension:?}");
        }
    }
}
