//! `tinyurl stats`: a link's click statistics as a readable summary with a
//! chart in the terminal, or as JSON for scripts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use textplots::{Chart, Plot, Shape};
use tinyurl_proto::v1::{GetLinkStatsRequest, LinkStats, StatsCount, StatsGranularity};

use crate::client::{self, Connection, Failure};

/// Chart width in braille dots (two per terminal column).
const CHART_WIDTH: u32 = 140;
const CHART_HEIGHT: u32 = 32;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum By {
    Minute,
    Hour,
    Day,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StatsArgs {
    pub code: String,
    /// How far back: a duration (90m, 36h, 7d).
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// Bucket size [default: hour up to 2 days, day beyond].
    #[arg(long, value_enum)]
    pub by: Option<By>,
    /// The rollups as CSV rows (`start,dimension,value,clicks,bot_clicks`)
    /// instead of a summary.
    #[arg(long)]
    pub csv: bool,
    /// With --csv: the dimensions, comma-separated, of total, referrer,
    /// country, browser, device, rule, class, path, visitors [default: all].
    #[arg(long, value_delimiter = ',', requires = "csv")]
    pub dimensions: Vec<String>,
    /// Read only these traffic classes, comma-separated: human, crawler,
    /// previewer, monitor, bot (every kind of bot); every figure and
    /// breakdown then counts them alone [default: all, the breakdowns
    /// people's].
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct OrphanArgs {
    /// A registered domain's host [default: the default domain].
    #[arg(long, default_value = "")]
    pub domain: String,
    /// How far back: a duration (90m, 36h, 7d).
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// Bucket size [default: hour up to 2 days, day beyond].
    #[arg(long, value_enum)]
    pub by: Option<By>,
    /// Delete the domain's counts instead of showing them.
    #[arg(long)]
    pub purge: bool,
    /// Read only these traffic classes, comma-separated: human, crawler,
    /// previewer, monitor, bot (every kind of bot); every figure and
    /// breakdown then counts them alone [default: all, the breakdowns
    /// people's].
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
}

/// The JSON form: the statistics with times as RFC 3339 text.
#[derive(Debug, serde::Serialize)]
struct StatsView {
    code: String,
    lifetime_clicks: u64,
    lifetime_bot_clicks: u64,
    from: String,
    to: String,
    granularity: &'static str,
    clicks: u64,
    bot_clicks: u64,
    series: Vec<PointView>,
    referrers: Vec<CountView>,
    countries: Vec<CountView>,
    browsers: Vec<CountView>,
    devices: Vec<CountView>,
    bots: Vec<CountView>,
    rules: Vec<CountView>,
    classes: Vec<CountView>,
    paths: Vec<CountView>,
    visitors: u64,
    daily_visitors: Vec<DayVisitorsView>,
}

#[derive(Debug, serde::Serialize)]
struct DayVisitorsView {
    day: String,
    visitors: u64,
}

#[derive(Debug, serde::Serialize)]
struct PointView {
    start: String,
    clicks: u64,
    bot_clicks: u64,
}

#[derive(Debug, serde::Serialize)]
struct CountView {
    value: String,
    clicks: u64,
}

fn rfc3339(timestamp: Option<&prost_types::Timestamp>) -> String {
    let seconds = timestamp.map_or(0, |timestamp| timestamp.seconds.max(0));
    let at = UNIX_EPOCH + Duration::from_secs(seconds.unsigned_abs());
    humantime::format_rfc3339_seconds(at).to_string()
}

fn granularity_name(raw: i32) -> &'static str {
    match StatsGranularity::try_from(raw) {
        Ok(StatsGranularity::Minute) => "minute",
        Ok(StatsGranularity::Hour) => "hour",
        Ok(StatsGranularity::Day) => "day",
        _ => "unspecified",
    }
}

fn counts(counts: &[StatsCount]) -> Vec<CountView> {
    counts
        .iter()
        .map(|count| CountView {
            value: count.value.clone(),
            clicks: count.clicks,
        })
        .collect()
}

impl From<&LinkStats> for StatsView {
    fn from(stats: &LinkStats) -> Self {
        Self {
            code: stats.code.clone(),
            lifetime_clicks: stats.lifetime_clicks,
            lifetime_bot_clicks: stats.lifetime_bot_clicks,
            from: rfc3339(stats.from.as_ref()),
            to: rfc3339(stats.to.as_ref()),
            granularity: granularity_name(stats.granularity),
            clicks: stats.clicks,
            bot_clicks: stats.bot_clicks,
            series: stats
                .series
                .iter()
                .map(|point| PointView {
                    start: rfc3339(point.start.as_ref()),
                    clicks: point.clicks,
                    bot_clicks: point.bot_clicks,
                })
                .collect(),
            referrers: counts(&stats.referrers),
            countries: counts(&stats.countries),
            browsers: counts(&stats.browsers),
            devices: counts(&stats.devices),
            bots: counts(&stats.bots),
            rules: counts(&stats.rules),
            classes: counts(&stats.classes),
            paths: counts(&stats.paths),
            visitors: stats.visitors,
            daily_visitors: stats
                .daily_visitors
                .iter()
                .map(|day| DayVisitorsView {
                    day: rfc3339(day.day.as_ref()),
                    visitors: day.visitors,
                })
                .collect(),
        }
    }
}

/// Asks the writer for the statistics `args` describe.
pub async fn fetch(connection: &Connection, args: &StatsArgs) -> Result<LinkStats, Failure> {
    let (from, to, granularity) = range(&args.since, args.by)?;
    let request = GetLinkStatsRequest {
        code: args.code.clone(),
        from: Some(from),
        to: Some(to),
        granularity,
        classes: args.classes.clone(),
    };
    client::call(connection, connection.links()?.get_link_stats(request)).await
}

/// The link's rollups as CSV, with a header row.
pub async fn export_csv(connection: &Connection, args: &StatsArgs) -> Result<String, Failure> {
    let (from, to, granularity) = range(&args.since, args.by)?;
    let request = tinyurl_proto::v1::ExportLinkStatsRequest {
        code: args.code.clone(),
        from: Some(from),
        to: Some(to),
        granularity,
        dimensions: args.dimensions.clone(),
        classes: args.classes.clone(),
    };
    let exported = client::call(connection, connection.links()?.export_link_stats(request)).await?;
    let mut writer = csv::Writer::from_writer(Vec::new());
    let written = (|| -> Result<Vec<u8>, csv::Error> {
        writer.write_record(["start", "dimension", "value", "clicks", "bot_clicks"])?;
        for row in &exported.rows {
            writer.write_record([
                rfc3339(row.start.as_ref()).as_str(),
                row.dimension.as_str(),
                row.value.as_str(),
                &row.clicks.to_string(),
                &row.bot_clicks.to_string(),
            ])?;
        }
        writer
            .into_inner()
            .map_err(|error| error.into_error().into())
    })();
    let bytes = written.map_err(|error| Failure::from(anyhow::Error::from(error)))?;
    String::from_utf8(bytes).map_err(|error| Failure::from(anyhow::Error::from(error)))
}

/// Visits to codes that do not exist on the domain `args` names, labelled
/// for [`render`].
pub async fn fetch_orphans(
    connection: &Connection,
    args: &OrphanArgs,
) -> Result<LinkStats, Failure> {
    let (from, to, granularity) = range(&args.since, args.by)?;
    let request = tinyurl_proto::v1::GetOrphanVisitsRequest {
        domain: args.domain.clone(),
        from: Some(from),
        to: Some(to),
        granularity,
        classes: args.classes.clone(),
    };
    let mut stats =
        client::call(connection, connection.links()?.get_orphan_visits(request)).await?;
    stats.code = if args.domain.is_empty() {
        "unknown codes".to_owned()
    } else {
        format!("unknown codes on {}", args.domain)
    };
    Ok(stats)
}

/// Deletes the counts of visits to codes that do not exist on the domain
/// `args` names; how many rollup rows went.
pub async fn purge_orphans(connection: &Connection, args: &OrphanArgs) -> Result<u64, Failure> {
    let request = tinyurl_proto::v1::PurgeOrphanVisitsRequest {
        domain: args.domain.clone(),
    };
    let purged = client::call(connection, connection.links()?.purge_orphan_visits(request)).await?;
    Ok(purged.rows)
}

/// The range `--since` reaches back to now, and the bucket `--by` asks for.
fn range(
    since: &str,
    by: Option<By>,
) -> Result<(prost_types::Timestamp, prost_types::Timestamp, i32), Failure> {
    let back = humantime::parse_duration(since.trim())
        .map_err(|_| Failure::usage(format!("--since {since:?}: not a duration (90m, 36h, 7d)")))?;
    let now = SystemTime::now();
    let from = now.checked_sub(back).unwrap_or(UNIX_EPOCH);
    let granularity = match by {
        None => StatsGranularity::Unspecified,
        Some(By::Minute) => StatsGranularity::Minute,
        Some(By::Hour) => StatsGranularity::Hour,
        Some(By::Day) => StatsGranularity::Day,
    };
    Ok((
        client::timestamp(from),
        client::timestamp(now),
        granularity.into(),
    ))
}

pub fn to_json(stats: &LinkStats) -> Result<String, Failure> {
    serde_json::to_string(&StatsView::from(stats))
        .map_err(|error| Failure::from(anyhow::Error::from(error)))
}

/// The summary: totals, a chart of the series, the top lists.
pub fn render(stats: &LinkStats) -> String {
    let view = StatsView::from(stats);
    let mut out = format!(
        "{}: {} clicks from {} to {} ({} from bots); {} since created ({} from bots)\n",
        view.code,
        view.clicks,
        view.from,
        view.to,
        view.bot_clicks,
        view.lifetime_clicks,
        view.lifetime_bot_clicks
    );
    if view.visitors > 0 {
        let days = view
            .daily_visitors
            .iter()
            .map(|day| format!("{} {}", day.day.get(..10).unwrap_or(&day.day), day.visitors))
            .collect::<Vec<_>>()
            .join(" · ");
        out.push_str(&format!(
            "{} unique visitors (each day's summed): {days}\n",
            view.visitors
        ));
    }
    if !view.series.is_empty() {
        // A bar spans from its point to the next: a closing point at zero
        // lets the last bucket show.
        let points: Vec<(f32, f32)> = view
            .series
            .iter()
            .enumerate()
            .map(|(index, point)| (index as f32, point.clicks as f32))
            .chain(std::iter::once((view.series.len() as f32, 0.0)))
            .collect();
        let highest = points.iter().map(|(_, clicks)| *clicks).fold(1.0, f32::max);
        let shape = Shape::Bars(&points);
        let mut chart = Chart::new_with_y_range(
            CHART_WIDTH,
            CHART_HEIGHT,
            0.0,
            view.series.len() as f32,
            0.0,
            highest,
        );
        // Display alone prints an empty frame: the figures are drawn here.
        let plotted = chart.lineplot(&shape);
        plotted.axis();
        plotted.figures();
        let drawn = plotted.to_string();
        out.push_str(&format!(
            "\nclicks per {} (humans), {} to {}\n{drawn}\n",
            view.granularity,
            view.series.first().map_or("", |point| point.start.as_str()),
            view.series.last().map_or("", |point| point.start.as_str()),
        ));
    }
    for (title, counts) in [
        ("referrers", &view.referrers),
        ("countries", &view.countries),
        ("browsers", &view.browsers),
        ("devices", &view.devices),
        ("bots", &view.bots),
        ("who", &view.classes),
    ]
    .into_iter()
    .chain((!view.rules.is_empty()).then_some(("rules", &view.rules)))
    .chain((!view.paths.is_empty()).then_some(("paths", &view.paths)))
    {
        let listed = if counts.is_empty() {
            "(none)".to_owned()
        } else {
            counts
                .iter()
                .map(|count| format!("{} {}", count.value, count.clicks))
                .collect::<Vec<_>>()
                .join(" · ")
        };
        out.push_str(&format!("{title:<10} {listed}\n"));
    }
    out
}
