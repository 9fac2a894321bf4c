//! Bulk import and export as CSV.
//!
//! Import columns, by position: `url`, then optional `alias` and `expires`
//! (RFC 3339 or a duration from now); a first row starting with `url` is a
//! header. Rows go to the writer in `BatchCreateLinks` calls. Every row
//! carries an idempotency key derived from its line number and content, so a
//! re-run after an interruption returns the links the first run created
//! instead of creating them again. Rejected rows, with the server's reason,
//! go to an error report (CSV).
//!
//! Export writes every link of the API key, newest first, with `url`,
//! `alias` and `expires` first so that an export can be imported again.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use tinyurl_proto::v1::batch_create_links_result::Result as ItemResult;
use tinyurl_proto::v1::{BatchCreateLinksRequest, CreateLinkRequest, ListLinksRequest};

use tinyurl_links::import::ImportRow as Row;

use crate::client::{self, Connection, Failure, LinkView};

/// Rows per `BatchCreateLinks` call (the server accepts up to 1,000).
pub const DEFAULT_BATCH: u16 = 500;

#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// The CSV file to import.
    pub file: PathBuf,
    /// Where rejected rows and their reasons go [default: FILE.errors.csv].
    #[arg(long)]
    pub errors: Option<PathBuf>,
    /// Rows per call, 1 to 1000.
    #[arg(long, default_value_t = DEFAULT_BATCH, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch: u16,
    /// Redirect status of every imported link.
    #[arg(long, default_value_t = 302)]
    pub status: u16,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct ImportSummary {
    pub rows: u64,
    /// Created by this run.
    pub created: u64,
    /// Created by an earlier run of the same import (idempotent replay).
    pub already_imported: u64,
    pub rejected: u64,
    pub error_report: Option<String>,
}

/// Counts the data lines of `path`, for the progress bar.
fn count_lines(path: &Path) -> anyhow::Result<u64> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut count = 0;
    for line in std::io::BufReader::new(file).lines() {
        if !line?.trim().is_empty() {
            count += 1;
        }
    }
    Ok(count)
}

struct ErrorReport {
    path: PathBuf,
    writer: Option<csv::Writer<std::fs::File>>,
}

impl ErrorReport {
    fn record(&mut self, row: &Row, field: &str, reason: &str) -> anyhow::Result<()> {
        if self.writer.is_none() {
            let mut writer = csv::Writer::from_path(&self.path)
                .with_context(|| format!("cannot create {}", self.path.display()))?;
            writer.write_record(["line", "url", "alias", "expires", "field", "reason"])?;
            self.writer = Some(writer);
        }
        if let Some(writer) = &mut self.writer {
            writer.write_record([
                row.line.to_string().as_str(),
                &row.url,
                &row.alias,
                &row.expires,
                field,
                reason,
            ])?;
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<Option<PathBuf>> {
        match self.writer {
            Some(mut writer) => {
                writer.flush()?;
                Ok(Some(self.path))
            }
            None => Ok(None),
        }
    }
}

pub async fn import(
    connection: &Connection,
    args: &ImportArgs,
    show_progress: bool,
) -> Result<ImportSummary, Failure> {
    let redirect_type = client::redirect_type(args.status).map_err(Failure::usage)?;
    let progress = progress_bar(&args.file, show_progress)?;
    let error_path = args.errors.clone().unwrap_or_else(|| {
        let mut name = args.file.clone().into_os_string();
        name.push(".errors.csv");
        PathBuf::from(name)
    });
    // A previous run's report is about rows this run retries.
    let _ = std::fs::remove_file(&error_path);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_path(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;

    let mut import = Import {
        connection,
        links: connection.links()?,
        report: ErrorReport {
            path: error_path,
            writer: None,
        },
        summary: ImportSummary::default(),
        progress,
        started: SystemTime::now(),
        rows: Vec::new(),
        requests: Vec::new(),
    };
    for (index, record) in reader.records().enumerate() {
        let line = index as u64 + 1;
        let row = match record {
            Ok(record) => Row::of(line, &record),
            Err(error) => {
                import.reject(
                    &Row::of(line, []),
                    "",
                    &format!("unreadable CSV row: {error}"),
                )?;
                continue;
            }
        };
        if row.is_header() || row.is_blank() {
            import.progress.inc(1);
            continue;
        }
        let expires_at = match row.expires.as_str() {
            "" => None,
            text => match client::parse_expiry(text) {
                Ok(time) => Some(client::timestamp(time)),
                Err(reason) => {
                    import.reject(&row, "expires", &reason)?;
                    continue;
                }
            },
        };
        import.requests.push(CreateLinkRequest {
            target_url: row.url.clone(),
            alias: row.alias.clone(),
            expires_at,
            redirect_type: redirect_type.into(),
            forward_query: false,
            idempotency_key: row.idempotency_key(),
            ..CreateLinkRequest::default()
        });
        import.rows.push(row);
        if import.rows.len() >= usize::from(args.batch) {
            import.send().await?;
        }
    }
    import.send().await?;
    import.progress.finish_and_clear();
    let mut summary = import.summary;
    summary.error_report = import
        .report
        .finish()?
        .map(|path| path.display().to_string());
    Ok(summary)
}

/// The progress bar of an import of `file`, or a hidden one.
fn progress_bar(file: &std::path::Path, show: bool) -> Result<indicatif::ProgressBar, Failure> {
    if !show {
        return Ok(indicatif::ProgressBar::hidden());
    }
    let bar = indicatif::ProgressBar::new(count_lines(file)?);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {per_sec}  eta {eta}")
            .map_err(|error| anyhow::anyhow!("{error}"))?,
    );
    Ok(bar)
}

/// An import in progress: the batch being gathered and what happened so far.
struct Import<'a> {
    connection: &'a Connection,
    links: client::Links,
    report: ErrorReport,
    summary: ImportSummary,
    progress: indicatif::ProgressBar,
    /// Links created before this are an earlier run's.
    started: SystemTime,
    rows: Vec<Row>,
    requests: Vec<CreateLinkRequest>,
}

impl Import<'_> {
    /// A row refused before it was sent.
    fn reject(&mut self, row: &Row, field: &str, reason: &str) -> anyhow::Result<()> {
        self.report.record(row, field, reason)?;
        self.summary.rows += 1;
        self.summary.rejected += 1;
        self.progress.inc(1);
        Ok(())
    }

    /// Sends the gathered rows in one `BatchCreateLinks` and records each
    /// result.
    async fn send(&mut self) -> Result<(), Failure> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        let links = std::mem::take(&mut self.requests);
        let response = client::call(
            self.connection,
            self.links
                .batch_create_links(BatchCreateLinksRequest { links }),
        )
        .await
        .map_err(|failure| {
            Failure::new(
                failure.exit_code,
                format!(
                    "{} (stopped at line {}; re-run the same import to resume: rows already created are not created again)",
                    failure.message.unwrap_or_default(),
                    rows[0].line
                ),
            )
        })?;
        let mut results = response.results.into_iter();
        for row in &rows {
            self.summary.rows += 1;
            match results.next().and_then(|result| result.result) {
                Some(ItemResult::Link(link)) => {
                    let created_before = link
                        .created_at
                        .and_then(|at| SystemTime::try_from(at).ok())
                        .is_some_and(|at| at < self.started);
                    if created_before {
                        self.summary.already_imported += 1;
                    } else {
                        self.summary.created += 1;
                    }
                }
                // The row's key names a link an earlier run made from this
                // same row (the key covers its line and content); only an
                // expiry counted from now differs between runs, so the
                // writer sees other parameters. The row is in.
                Some(ItemResult::Error(error))
                    if error.code == tonic::Code::FailedPrecondition as i32
                        && row.expires_relative() =>
                {
                    self.summary.already_imported += 1;
                }
                Some(ItemResult::Error(error)) => {
                    self.report.record(row, &error.field, &error.message)?;
                    self.summary.rejected += 1;
                }
                None => {
                    self.report
                        .record(row, "", "the server returned no result for this row")?;
                    self.summary.rejected += 1;
                }
            }
        }
        self.progress.inc(rows.len() as u64);
        Ok(())
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Where to write the CSV [default: standard output].
    pub file: Option<PathBuf>,
}

/// Writes every link of the API key; returns how many.
pub async fn export(connection: &Connection, args: &ExportArgs) -> Result<u64, Failure> {
    let mut links = connection.links()?;
    let output: Box<dyn std::io::Write> = match &args.file {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut writer = csv::Writer::from_writer(output);
    writer
        .write_record(tinyurl_links::import::EXPORT_COLUMNS)
        .context("cannot write the export")?;
    let mut page_token = String::new();
    let mut exported = 0;
    loop {
        let page = client::call(
            connection,
            links.list_links(ListLinksRequest {
                page_size: 1000,
                page_token,
                tag: String::new(),
            }),
        )
        .await?;
        for link in &page.links {
            let view = LinkView::from(link);
            let alias = if view.is_alias {
                view.code.as_str()
            } else {
                ""
            };
            writer
                .write_record([
                    view.target_url.as_str(),
                    alias,
                    view.expires_at.as_deref().unwrap_or_default(),
                    &view.code,
                    &view.short_url,
                    &view.status.to_string(),
                    &view.forward_query.to_string(),
                    &view.enabled.to_string(),
                    view.created_at.as_deref().unwrap_or_default(),
                    view.updated_at.as_deref().unwrap_or_default(),
                    &link.domain,
                    &view.tags.join("|"),
                    &view
                        .max_visits
                        .map(|cap| cap.to_string())
                        .unwrap_or_default(),
                    &view.password_protected.to_string(),
                ])
                .context("cannot write the export")?;
            exported += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    writer.flush().context("cannot write the export")?;
    Ok(exported)
}
