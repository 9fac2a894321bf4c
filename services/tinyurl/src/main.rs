//! `tinyurl`: `tinyurl up` runs the whole system in one process on an
//! embedded store; every other command is a client of a writer's gRPC API.

use std::process::ExitCode;

use clap::Parser as _;
use tinyurl::bulk::{self, ImportArgs};
use tinyurl::cli::{Cli, Command, DEFAULT_STORE, TagsCommand, UpdateArgs};
use tinyurl::client::{self, Connection, Failure, LinkView, exit};
use tinyurl_links::admin::AdminCommand;
use tinyurl_proto::v1::{
    CreateLinkRequest, DeleteLinkRequest, DeleteTagRequest, GetLinkRequest, GetTagRequest,
    ListLinksRequest, ListTagsRequest, RenameTagRequest, Tag, Tags, UpdateLinkRequest,
};

// The redirect hot path of `tinyurl up` allocates across threads on every
// cache miss; mimalloc, as in `tinyurl-redirect`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Writes a result line to standard output. A reader that went away
/// (`tinyurl list | head -n 1`) ends the command quietly, as it ends any
/// Unix filter; `println!` would panic instead.
macro_rules! out {
    ($($arg:tt)*) => {
        emit(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// [`out!`] without the newline.
macro_rules! out_raw {
    ($($arg:tt)*) => {
        emit(format_args!($($arg)*))
    };
}

fn emit(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {error}");
        std::process::exit(i32::from(exit::FAILURE));
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let json = cli.json;
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // Errors go to standard error in both modes: standard output
            // holds only results.
            match failure.message {
                None => {}
                Some(message) if json => {
                    let error =
                        serde_json::json!({ "error": message, "exit_code": failure.exit_code });
                    eprintln!("{error}");
                }
                Some(message) => eprintln!("error: {message}"),
            }
            ExitCode::from(failure.exit_code)
        }
    }
}

fn print_link(link: &tinyurl_proto::v1::Link, json: bool) -> Result<(), Failure> {
    let view = LinkView::from(link);
    if json {
        out!(
            "{}",
            serde_json::to_string(&view).map_err(anyhow::Error::from)?
        );
    } else {
        out!("{}", view.render());
    }
    Ok(())
}

fn optional_expiry(expires: Option<&str>) -> Result<Option<prost_types::Timestamp>, Failure> {
    expires
        .map(|text| client::parse_expiry(text).map(client::timestamp))
        .transpose()
        .map_err(|reason| Failure::usage(format!("--expires: {reason}")))
}

/// A client command exports its trace when `OTEL_EXPORTER_OTLP_ENDPOINT` is
/// set, as the services do: one `tinyurl shorten` is then one trace from
/// this process through the writer and idalloc. Log lines (warnings by
/// default) go to standard error.
fn client_telemetry() -> Result<Option<tinyurl_runtime::TelemetryGuard>, Failure> {
    let env = tinyurl_runtime::Env::from_process();
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() {
        return Ok(None);
    }
    let unused = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut common = tinyurl_runtime::CommonConfig::from_env(
        &env,
        "tinyurl-cli",
        &tinyurl_runtime::config::listen(unused),
        &tinyurl_runtime::config::admin_listen(unused),
    )
    .map_err(|error| Failure::usage(error.to_string()))?;
    // The command line is quieter than a service unless told otherwise.
    common.log_filter = env
        .get(tinyurl_runtime::config::LOG_FILTER.name)
        .unwrap_or("warn")
        .to_owned();
    let guard = tinyurl_runtime::telemetry::init_with(
        &common,
        tinyurl_runtime::telemetry::LogOutput::Stderr,
    )?;
    Ok(Some(guard))
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if matches!(cli.command, Command::Up(_)) {
        return command(cli).await;
    }
    let _telemetry = client_telemetry()?;
    let span = tracing::info_span!(
        "tinyurl",
        otel.kind = "client",
        command = cli.command.name(),
        trace_id = tracing::field::Empty,
    );
    tinyurl_runtime::telemetry::record_trace_id(&span);
    tracing::Instrument::instrument(command(cli), span).await
}

async fn command(cli: Cli) -> Result<(), Failure> {
    let connection = &cli.connection;
    let json = cli.json;
    match cli.command {
        // Boxed: the whole system's start is a large future.
        Command::Up(args) => Box::pin(tinyurl::up::run(args))
            .await
            .map_err(Failure::from),
        Command::Probe { admin } => {
            tinyurl_runtime::admin::probe_ready(admin, std::time::Duration::from_secs(2))
                .map_err(|error| Failure::new(exit::UNAVAILABLE, format!("{error:#}")))
        }
        Command::Shorten {
            url,
            alias,
            expires,
            status,
            forward_query,
            idempotency_key,
            tags,
            domain,
            options,
        } => {
            let request = CreateLinkRequest {
                target_url: url,
                alias: alias.unwrap_or_default(),
                expires_at: optional_expiry(expires.as_deref())?,
                redirect_type: client::redirect_type(status)
                    .map_err(Failure::usage)?
                    .into(),
                forward_query,
                idempotency_key: idempotency_key.unwrap_or_default(),
                tags,
                utm: options.utm(),
                password: options.password().map_err(Failure::usage)?,
                domain: domain.unwrap_or_default(),
                rules: options.rules,
                max_visits: options.max_visits,
            };
            let link = client::call(connection, connection.links()?.create_link(request)).await?;
            print_link(&link, json)
        }
        Command::Get { code } => {
            let link = client::call(
                connection,
                connection.links()?.get_link(GetLinkRequest { code }),
            )
            .await?;
            print_link(&link, json)
        }
        Command::Update(args) => update(connection, args, json).await,
        Command::Disable { code } => set_enabled(connection, code, false, json).await,
        Command::Enable { code } => set_enabled(connection, code, true, json).await,
        Command::Delete { code } => delete(connection, code, json).await,
        Command::List { limit, tag } => list(connection, limit, tag, json).await,
        Command::Tags { command } => tags(connection, command, json).await,
        Command::Domains { command } => domains(connection, command, json).await,
        Command::Webhooks { command } => webhooks(connection, command, json).await,
        Command::Stats(args) if args.csv => {
            out_raw!("{}", tinyurl::stats::export_csv(connection, &args).await?);
            Ok(())
        }
        Command::Stats(args) => {
            let stats = tinyurl::stats::fetch(connection, &args).await?;
            if json {
                out!("{}", tinyurl::stats::to_json(&stats)?);
            } else {
                out_raw!("{}", tinyurl::stats::render(&stats));
            }
            Ok(())
        }
        Command::ForgetClicks { code, .. } => {
            let request = tinyurl_proto::v1::ForgetClicksRequest {
                code: code.unwrap_or_default(),
            };
            let forgotten =
                client::call(connection, connection.links()?.forget_clicks(request)).await?;
            if json {
                out!("{}", serde_json::json!({ "rows": forgotten.rows }));
            } else {
                out!("deleted {} rows of click data", forgotten.rows);
            }
            Ok(())
        }
        Command::Orphans(args) if args.purge => {
            let rows = tinyurl::stats::purge_orphans(connection, &args).await?;
            if json {
                out!("{}", serde_json::json!({ "rows": rows }));
            } else {
                out!("deleted {rows} rollup rows");
            }
            Ok(())
        }
        Command::Orphans(args) => {
            let stats = tinyurl::stats::fetch_orphans(connection, &args).await?;
            if json {
                out!("{}", tinyurl::stats::to_json(&stats)?);
            } else {
                out_raw!("{}", tinyurl::stats::render(&stats));
            }
            Ok(())
        }
        Command::Import(args) => import(connection, &args, json).await,
        Command::Export(args) => {
            let exported = bulk::export(connection, &args).await?;
            if args.file.is_some() {
                eprintln!("exported {exported} links");
            }
            Ok(())
        }
        Command::Admin(command) => administer(command, json).await,
    }
}

/// `update`: the changes asked for, nothing else.
async fn update(connection: &Connection, args: UpdateArgs, json: bool) -> Result<(), Failure> {
    let UpdateArgs {
        code,
        url,
        expires,
        no_expiry,
        status,
        forward_query,
        tags,
        no_tags,
        options,
        no_utm,
        no_rules,
        no_max_visits,
        no_password,
    } = args;
    let password = options.password().map_err(Failure::usage)?;
    let redirect_type = status
        .map(client::redirect_type)
        .transpose()
        .map_err(Failure::usage)?;
    let request = UpdateLinkRequest {
        code,
        target_url: url,
        expires_at: optional_expiry(expires.as_deref())?,
        clear_expiry: no_expiry,
        redirect_type: redirect_type.map_or(0, Into::into),
        enabled: None,
        forward_query,
        tags: (no_tags || !tags.is_empty()).then_some(Tags { tags }),
        utm: if no_utm {
            Some(tinyurl_proto::v1::Utm::default())
        } else {
            options.utm()
        },
        rules: (no_rules || !options.rules.is_empty()).then_some(
            tinyurl_proto::v1::RedirectRules {
                rules: options.rules,
            },
        ),
        max_visits: options.max_visits,
        clear_max_visits: no_max_visits,
        password,
        clear_password: no_password,
    };
    let link = client::call(connection, connection.links()?.update_link(request)).await?;
    print_link(&link, json)
}

/// `delete`: the link is gone, its code never reissued.
async fn delete(connection: &Connection, code: String, json: bool) -> Result<(), Failure> {
    client::call(
        connection,
        connection
            .links()?
            .delete_link(DeleteLinkRequest { code: code.clone() }),
    )
    .await?;
    if json {
        out!("{}", serde_json::json!({ "deleted": code }));
    } else {
        out!("deleted {code}");
    }
    Ok(())
}

/// `list`: up to `limit` links, newest first, a page of at most 1,000 at a
/// time.
async fn list(
    connection: &Connection,
    limit: u32,
    tag: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let mut links = connection.links()?;
    let mut page_token = String::new();
    let mut listed = Vec::new();
    while listed.len() < limit as usize {
        let page_size = (limit as usize - listed.len()).min(1000) as u32;
        let page = client::call(
            connection,
            links.list_links(ListLinksRequest {
                page_size,
                page_token,
                tag: tag.clone().unwrap_or_default(),
            }),
        )
        .await?;
        listed.extend(page.links.iter().map(LinkView::from));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if json {
        out!(
            "{}",
            serde_json::to_string(&listed).map_err(anyhow::Error::from)?
        );
    } else {
        for view in &listed {
            out!("{}", view.render());
        }
    }
    Ok(())
}

/// `tags`: the key's tags with their links and clicks, one tag's, or a
/// rename or delete across the key's links.
/// `domains`: list, add or remove the installation's short domains.
async fn webhooks(
    connection: &Connection,
    command: Option<tinyurl::cli::WebhooksCommand>,
    json: bool,
) -> Result<(), Failure> {
    use tinyurl::cli::WebhooksCommand;
    use tinyurl_proto::v1 as proto;
    let mut links = connection.links()?;
    let seconds = |at: &Option<prost_types::Timestamp>| at.as_ref().map(|at| at.seconds);
    let as_json = |webhook: &proto::Webhook| {
        serde_json::json!({
            "id": webhook.id,
            "url": webhook.url,
            "events": webhook.events,
            "secret": (!webhook.secret.is_empty()).then_some(&webhook.secret),
            "enabled": webhook.enabled,
            "failing_since": seconds(&webhook.failing_since),
            "pending": webhook.pending,
        })
    };
    let render = |webhook: &proto::Webhook| {
        let mut line = format!(
            "{}\t{}\t{}\t{}\t{} pending",
            webhook.id,
            webhook.url,
            webhook.events.join(","),
            if webhook.enabled {
                "enabled"
            } else {
                "disabled"
            },
            webhook.pending
        );
        if !webhook.secret.is_empty() {
            line.push_str(&format!("\nsecret {}", webhook.secret));
        }
        line
    };
    let shown = |webhook: proto::Webhook| {
        if json {
            out!("{}", as_json(&webhook));
        } else {
            out!("{}", render(&webhook));
        }
    };
    match command.unwrap_or(WebhooksCommand::List) {
        WebhooksCommand::List => {
            let listed = client::call(
                connection,
                links.list_webhooks(proto::ListWebhooksRequest {}),
            )
            .await?;
            if json {
                out!(
                    "{}",
                    serde_json::Value::Array(listed.webhooks.iter().map(as_json).collect())
                );
            } else {
                for webhook in &listed.webhooks {
                    out!("{}", render(webhook));
                }
            }
        }
        WebhooksCommand::Add { url, events } => {
            let request = proto::CreateWebhookRequest { url, events };
            shown(client::call(connection, links.create_webhook(request)).await?);
        }
        WebhooksCommand::Remove { id } => {
            let request = proto::DeleteWebhookRequest { id };
            client::call(connection, links.delete_webhook(request)).await?;
            if json {
                out!("{}", serde_json::json!({ "removed": id }));
            } else {
                out!("removed {id}");
            }
        }
        WebhooksCommand::Enable { id } => {
            let request = proto::EnableWebhookRequest { id };
            shown(client::call(connection, links.enable_webhook(request)).await?);
        }
        WebhooksCommand::Rotate { id } => {
            let request = proto::RotateWebhookSecretRequest { id };
            shown(client::call(connection, links.rotate_webhook_secret(request)).await?);
        }
        WebhooksCommand::Deliveries { id, limit } => {
            let request = proto::ListWebhookDeliveriesRequest { id, limit };
            let listed = client::call(connection, links.list_webhook_deliveries(request)).await?;
            if json {
                let rows: Vec<serde_json::Value> = listed
                    .deliveries
                    .iter()
                    .map(|delivery| {
                        serde_json::json!({
                            "message_id": delivery.message_id,
                            "event_type": delivery.event_type,
                            "attempt": delivery.attempt,
                            "status": (delivery.status != 0).then_some(delivery.status),
                            "error": (!delivery.error.is_empty()).then_some(&delivery.error),
                            "latency_ms": delivery.latency_ms,
                            "delivered": delivery.delivered,
                            "at": seconds(&delivery.at),
                        })
                    })
                    .collect();
                out!("{}", serde_json::Value::Array(rows));
                return Ok(());
            }
            for delivery in &listed.deliveries {
                let status = if delivery.status == 0 {
                    "-".to_owned()
                } else {
                    delivery.status.to_string()
                };
                out!(
                    "{}\t{}\tattempt {}\t{}\t{} ms\t{}",
                    delivery.message_id,
                    delivery.event_type,
                    delivery.attempt,
                    status,
                    delivery.latency_ms,
                    if delivery.delivered {
                        "delivered"
                    } else {
                        delivery.error.as_str()
                    }
                );
            }
        }
    }
    Ok(())
}

async fn domains(
    connection: &Connection,
    command: Option<tinyurl::cli::DomainsCommand>,
    json: bool,
) -> Result<(), Failure> {
    use tinyurl::cli::DomainsCommand;
    use tinyurl_proto::v1::{AddDomainRequest, Domain, ListDomainsRequest, RemoveDomainRequest};
    let mut links = connection.links()?;
    let as_json = |domain: &Domain| {
        serde_json::json!({
            "host": domain.host,
            "not_found_url": (!domain.not_found_url.is_empty()).then_some(&domain.not_found_url),
        })
    };
    let render = |domain: &Domain| {
        if domain.not_found_url.is_empty() {
            domain.host.clone()
        } else {
            format!("{}\tunknown codes → {}", domain.host, domain.not_found_url)
        }
    };
    match command.unwrap_or(DomainsCommand::List) {
        DomainsCommand::List => {
            let listed =
                client::call(connection, links.list_domains(ListDomainsRequest {})).await?;
            if json {
                out!(
                    "{}",
                    serde_json::Value::Array(listed.domains.iter().map(as_json).collect())
                );
            } else {
                for domain in &listed.domains {
                    out!("{}", render(domain));
                }
            }
        }
        DomainsCommand::Add {
            host,
            not_found_url,
        } => {
            let domain = client::call(
                connection,
                links.add_domain(AddDomainRequest {
                    host,
                    not_found_url: not_found_url.unwrap_or_default(),
                }),
            )
            .await?;
            if json {
                out!("{}", as_json(&domain));
            } else {
                out!("added {}", render(&domain));
            }
        }
        DomainsCommand::Remove { host } => {
            client::call(
                connection,
                links.remove_domain(RemoveDomainRequest { host: host.clone() }),
            )
            .await?;
            if json {
                out!("{}", serde_json::json!({ "removed": host }));
            } else {
                out!("removed {host}");
            }
        }
    }
    Ok(())
}

async fn tags(
    connection: &Connection,
    command: Option<TagsCommand>,
    json: bool,
) -> Result<(), Failure> {
    let mut links = connection.links()?;
    let render = |tag: &Tag| {
        format!(
            "{}\t{} links\t{} clicks ({} by bots)",
            tag.name, tag.links, tag.lifetime_clicks, tag.lifetime_bot_clicks
        )
    };
    let as_json = |tag: &Tag| {
        serde_json::json!({
            "name": tag.name,
            "links": tag.links,
            "lifetime_clicks": tag.lifetime_clicks,
            "lifetime_bot_clicks": tag.lifetime_bot_clicks,
        })
    };
    match command.unwrap_or(TagsCommand::List) {
        TagsCommand::List => {
            let listed = client::call(connection, links.list_tags(ListTagsRequest {})).await?;
            if json {
                out!(
                    "{}",
                    serde_json::Value::Array(listed.tags.iter().map(as_json).collect())
                );
            } else {
                for tag in &listed.tags {
                    out!("{}", render(tag));
                }
            }
        }
        TagsCommand::Show { tag } => {
            let tag = client::call(connection, links.get_tag(GetTagRequest { tag })).await?;
            if json {
                out!("{}", as_json(&tag));
            } else {
                out!("{}", render(&tag));
            }
        }
        TagsCommand::Rename { tag, new_name } => {
            let changed = client::call(
                connection,
                links.rename_tag(RenameTagRequest {
                    tag: tag.clone(),
                    new_name: new_name.clone(),
                }),
            )
            .await?;
            if json {
                out!(
                    "{}",
                    serde_json::json!({ "renamed": tag, "to": new_name, "links": changed.links })
                );
            } else {
                out!("renamed {tag:?} to {new_name:?} on {} links", changed.links);
            }
        }
        TagsCommand::Delete { tag } => {
            let changed = client::call(
                connection,
                links.delete_tag(DeleteTagRequest { tag: tag.clone() }),
            )
            .await?;
            if json {
                out!(
                    "{}",
                    serde_json::json!({ "deleted": tag, "links": changed.links })
                );
            } else {
                out!("took {tag:?} off {} links", changed.links);
            }
        }
    }
    Ok(())
}

/// `import`: the CSV's rows created, and a summary (its rejected rows make
/// the exit code 4).
async fn import(connection: &Connection, args: &ImportArgs, json: bool) -> Result<(), Failure> {
    let summary = bulk::import(
        connection,
        args,
        !json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    )
    .await?;
    if json {
        out!(
            "{}",
            serde_json::to_string(&summary).map_err(anyhow::Error::from)?
        );
    } else {
        out!(
            "{} rows: {} created, {} already imported by an earlier run, {} rejected",
            summary.rows,
            summary.created,
            summary.already_imported,
            summary.rejected
        );
        if let Some(report) = &summary.error_report {
            out!("rejected rows and their reasons: {report}");
        }
    }
    if summary.rejected > 0 {
        return Err(Failure::reported(exit::REJECTED));
    }
    Ok(())
}

/// `api-key`, `block-host`, `unblock-host` or `roll-up` on the store directly
/// (`--database-url`, else the `tinyurl up` default), announcing changed
/// links through Redis when TINYURL_REDIS_URL is set (a running `tinyurl
/// up` sees the stored list change by itself).
async fn administer(command: AdminCommand, json: bool) -> Result<(), Failure> {
    let (store, cache) = admin_tools(&command).await?;
    let report = command
        .run(store.as_ref(), &cache, json)
        .await
        .map_err(|error| {
            let failure = tinyurl_links::admin::Failure::from(error);
            Failure::new(failure.exit_code, failure.message)
        })?;
    if !report.stderr.is_empty() {
        eprintln!("{}", report.stderr);
    }
    if !report.stdout.is_empty() {
        out!("{}", report.stdout);
    }
    Ok(())
}

/// The store an administration command works on, and the cache it
/// announces changed links through (Redis's when TINYURL_REDIS_URL is set
/// and the command changes links; its entries live as the writer's do).
async fn admin_tools(
    command: &AdminCommand,
) -> anyhow::Result<(
    std::sync::Arc<dyn tinyurl_links::store::LinkStore>,
    tinyurl_links::cache::RedisLinkCache,
)> {
    let process_env = tinyurl_runtime::Env::from_process();
    let database_url = command.database_url().unwrap_or(DEFAULT_STORE);
    let store = tinyurl_links::store::open(
        &secrecy::SecretString::from(database_url.to_owned()),
        1,
        std::time::Duration::from_secs(5),
        &tinyurl_writer::config::layout_from_env(&process_env)?,
        migrate_from_env()?,
    )
    .await?;
    let cache = command
        .announcer(
            process_env
                .read(&tinyurl_writer::settings::REDIS_URL)?
                .as_ref(),
            std::time::Duration::from_secs(2),
            process_env.read(&tinyurl_writer::settings::CACHE_TTL)?,
        )
        .await?;
    Ok((store, cache))
}

async fn set_enabled(
    connection: &Connection,
    code: String,
    enabled: bool,
    json: bool,
) -> Result<(), Failure> {
    let request = UpdateLinkRequest {
        code,
        enabled: Some(enabled),
        ..UpdateLinkRequest::default()
    };
    let link = client::call(connection, connection.links()?.update_link(request)).await?;
    print_link(&link, json)
}

/// `TINYURL_MIGRATE` (default true), as the writer reads it: whether the
/// store commands may migrate the database they are pointed at.
fn migrate_from_env() -> anyhow::Result<bool> {
    Ok(tinyurl_runtime::Env::from_process().read(&tinyurl_writer::settings::MIGRATE)?)
}
