//! CSV import in the console: a file of `url[,alias[,expires]]` rows (as
//! `tinyurl import` reads them), created in batches through the link
//! service with each row's idempotency key, so uploading the same file
//! again resumes where an interrupted import stopped. The answer is one
//! HTML page streamed as the batches finish (progress without a script),
//! ending with the rows refused and why.

use std::convert::Infallible;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::State;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use maud::html;
use tinyurl_links::Call;
use tinyurl_links::auth::Scope;
use tinyurl_links::import::ImportRow;
use tinyurl_links::input::CreateInput;
use tinyurl_runtime::ErrorKind;

use super::pages;
use super::{Refused, Shared, Signed, error_page, html as page};

/// Largest import file: about 100,000 rows of long URLs.
pub(super) const MAX_IMPORT_BYTES: usize = 10 * 1024 * 1024;
/// Rows per batch create (the service takes up to 1,000).
const BATCH: usize = 500;

pub(super) async fn import_page(signed: Signed) -> Response {
    if !signed.may(Scope::Create) {
        return super::handlers::scope_page(Scope::Create, signed.scope);
    }
    page(StatusCode::OK, pages::import_form(&signed.nav(), None))
}

/// What the upload form sent.
struct Upload {
    csrf: String,
    status: String,
    file: Vec<u8>,
}

async fn read_upload(mut multipart: Multipart) -> Result<Upload, String> {
    let mut upload = Upload {
        csrf: String::new(),
        status: String::new(),
        file: Vec::new(),
    };
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|error| error.body_text())?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(|error| error.body_text())?;
        match name.as_str() {
            "csrf" => upload.csrf = String::from_utf8_lossy(&bytes).into_owned(),
            "status" => upload.status = String::from_utf8_lossy(&bytes).into_owned(),
            "file" => upload.file = bytes.to_vec(),
            _ => {}
        }
    }
    Ok(upload)
}

pub(super) async fn import(
    State(console): State<Shared>,
    signed: Signed,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, Refused> {
    let multipart = multipart.map_err(|rejection| {
        Refused::from(error_page(rejection.status(), &rejection.body_text()))
    })?;
    let upload = read_upload(multipart)
        .await
        .map_err(|reason| Refused::from(error_page(StatusCode::BAD_REQUEST, &reason)))?;
    signed.check_csrf(&upload.csrf)?;
    if !signed.may(Scope::Create) {
        return Ok(super::handlers::scope_page(Scope::Create, signed.scope));
    }
    let form_error = |message: &str| {
        page(
            StatusCode::BAD_REQUEST,
            pages::import_form(&signed.nav(), Some(message)),
        )
    };
    let status = match super::handlers::redirect_status(&upload.status) {
        Ok(status) => status,
        Err(error) => return Ok(form_error(&error.public_message())),
    };
    if upload.file.is_empty() {
        return Ok(form_error("Choose a CSV file to import."));
    }
    let Ok(text) = String::from_utf8(upload.file) else {
        return Ok(form_error("The file is not UTF-8 text."));
    };
    let shell = pages::import_progress(&signed.nav()).into_string();
    let (head, tail) = shell
        .split_once(pages::STREAM_MARK)
        .map(|(head, tail)| (head.to_owned(), tail.to_owned()))
        .unwrap_or_default();
    let (sender, receiver) = tokio::sync::mpsc::channel::<String>(8);
    let call = signed.call.clone();
    tokio::spawn(async move {
        if sender.send(head).await.is_err() {
            return;
        }
        let summary = run(&console, &call, &text, status, &sender).await;
        let _ = sender.send(summary).await;
        let _ = sender.send(tail).await;
    });
    let body = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), receiver))
    });
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            // Proxies pass each batch's line on at once.
            (
                http::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[derive(Default)]
struct Tally {
    rows: u64,
    created: u64,
    already: u64,
    refused: Vec<(u64, String, String, String)>,
}

/// Imports every row of `text`, sending a progress line per batch; the
/// summary page part when done (or stopped). A dropped connection stops it
/// after the batch in flight.
async fn run(
    console: &Shared,
    call: &Call,
    text: &str,
    status: Option<tinyurl_domain::RedirectStatus>,
    progress: &tokio::sync::mpsc::Sender<String>,
) -> String {
    let started = SystemTime::now();
    let mut tally = Tally::default();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut batch: Vec<(ImportRow, CreateInput)> = Vec::new();
    let mut stopped = None;
    let mut records = reader.records().enumerate();
    loop {
        for (index, record) in records.by_ref() {
            let line = index as u64 + 1;
            let row = match record {
                Ok(record) => ImportRow::of(line, &record),
                Err(error) => {
                    tally.rows += 1;
                    tally.refused.push((
                        line,
                        String::new(),
                        String::new(),
                        format!("unreadable CSV row: {error}"),
                    ));
                    continue;
                }
            };
            if row.is_header() || row.is_blank() {
                continue;
            }
            tally.rows += 1;
            let expires_at = match row.expires_at(started) {
                Ok(at) => at,
                Err(reason) => {
                    tally
                        .refused
                        .push((line, row.url.clone(), "expires".to_owned(), reason));
                    continue;
                }
            };
            let input = CreateInput {
                target_url: row.url.clone(),
                alias: Some(row.alias.clone()).filter(|alias| !alias.is_empty()),
                expires_at,
                redirect_status: status,
                forward_query: false,
                idempotency_key: Some(row.idempotency_key()),
                ..CreateInput::default()
            };
            batch.push((row, input));
            if batch.len() == BATCH {
                break;
            }
        }
        if batch.is_empty() {
            break;
        }
        let rows = std::mem::take(&mut batch);
        let first_line = rows[0].0.line;
        let last_line = rows[rows.len() - 1].0.line;
        let (rows, inputs): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
        let results = match console
            .links
            .batch_create(call, inputs.into_iter().map(Ok).collect())
            .await
        {
            Ok(results) => results,
            Err(error) => {
                stopped = Some((first_line, error.public_message()));
                break;
            }
        };
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(link) if link.created_at < started => tally.already += 1,
                Ok(_) => tally.created += 1,
                // The row's key names the link an earlier run made from
                // it; only its expiry, counted from now, differs.
                Err(error)
                    if error.kind() == ErrorKind::FailedPrecondition && row.expires_relative() =>
                {
                    tally.already += 1;
                }
                Err(error) => tally.refused.push((
                    row.line,
                    row.url.clone(),
                    error.field().unwrap_or_default().to_owned(),
                    error.public_message(),
                )),
            }
        }
        let line = html! {
            p.muted { "Rows " (first_line) "–" (last_line) ": " (tally.created) " created, "
                 (tally.already) " already imported, " (tally.refused.len()) " refused so far" }
        }
        .into_string();
        if progress.send(line).await.is_err() {
            stopped = Some((last_line + 1, "the page was closed".to_owned()));
            break;
        }
    }
    tally.refused.sort_by_key(|(line, ..)| *line);
    summary(&tally, stopped.as_ref())
}

fn summary(tally: &Tally, stopped: Option<&(u64, String)>) -> String {
    html! {
        @if let Some((line, reason)) = stopped {
            p.alert role="alert" #import-stopped {
                "Stopped at row " (line) ": " (reason) ". Upload the same file again to resume: "
                "rows already imported are not created twice."
            }
        }
        p.notice role="status" #import-summary {
            (tally.rows) " rows: " (tally.created) " created, " (tally.already)
            " already imported, " (tally.refused.len()) " refused."
        }
        @if !tally.refused.is_empty() {
            h2 { "Refused rows" }
            table #import-refused {
                thead { tr { th { "Row" } th { "URL" } th { "Field" } th { "Why" } } }
                tbody {
                    @for (line, url, field, reason) in &tally.refused {
                        tr { td { (line) } td.target { (url) } td { (field) } td { (reason) } }
                    }
                }
            }
        }
        p { a href="/console/links" { "See the links" } " · " a href="/console/import" { "Import another file" } }
    }
    .into_string()
}
