//! The `tinyurl` command line: its commands and their arguments.

use clap::{Parser, Subcommand};
use tinyurl_links::admin::AdminCommand;
use tinyurl_links::input::RuleInput;

use crate::bulk::{ExportArgs, ImportArgs};
use crate::client::Connection;
use crate::stats::{OrphanArgs, StatsArgs};
use crate::up::UpArgs;
use tinyurl_proto::v1::{RedirectRule, Utm};

/// tinyurl: run the whole URL shortener with `tinyurl up`, and manage links.
#[derive(Parser)]
#[command(name = "tinyurl", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,
    /// Print results as JSON (one object per command) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args)]
pub struct UpdateArgs {
    pub code: String,
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long, conflicts_with = "no_expiry")]
    pub expires: Option<String>,
    /// Remove the expiry.
    #[arg(long)]
    pub no_expiry: bool,
    #[arg(long)]
    pub status: Option<u16>,
    #[arg(long)]
    pub forward_query: Option<bool>,
    /// The link's tags from now on (repeat for more; replaces the old ones).
    #[arg(long = "tag", conflicts_with = "no_tags")]
    pub tags: Vec<String>,
    /// Remove every tag.
    #[arg(long)]
    pub no_tags: bool,
    /// UTM fields from now on (the ones not given are removed) and rules
    /// from now on (replacing the old ones).
    #[command(flatten)]
    pub options: OptionArgs,
    /// Remove every UTM field.
    #[arg(long, conflicts_with_all = ["utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"])]
    pub no_utm: bool,
    /// Remove every rule.
    #[arg(long, conflicts_with = "rules")]
    pub no_rules: bool,
    /// Remove the visit cap.
    #[arg(long, conflicts_with = "max_visits")]
    pub no_max_visits: bool,
    /// Remove the password.
    #[arg(long, conflicts_with = "password_stdin")]
    pub no_password: bool,
}

/// A link's UTM fields and redirect rules.
#[derive(clap::Args, Default)]
pub struct OptionArgs {
    /// utm_source, merged into the target's query on every redirect.
    #[arg(long)]
    pub utm_source: Option<String>,
    #[arg(long)]
    pub utm_medium: Option<String>,
    #[arg(long)]
    pub utm_campaign: Option<String>,
    #[arg(long)]
    pub utm_term: Option<String>,
    #[arg(long)]
    pub utm_content: Option<String>,
    /// A redirect rule, `device=ios,android country=DE,AT lang=de TARGET`:
    /// conditions (any of `device`, `country`, `lang`; values
    /// comma-separated) and the target last, space-separated. Repeat for
    /// more; the first a visit meets answers it.
    #[arg(long = "rule", value_parser = parse_rule)]
    pub rules: Vec<RedirectRule>,
    /// Visits by people the link redirects, then 410 (bots, previewers and
    /// HEAD requests use none).
    #[arg(long)]
    pub max_visits: Option<u64>,
    /// Read a password from the first line of standard input: visitors
    /// must give it before the link redirects (a password on the command
    /// line would show in `ps` and the shell's history).
    #[arg(long)]
    pub password_stdin: bool,
}

impl OptionArgs {
    /// The password on standard input, when `--password-stdin` asks for it.
    pub fn password(&self) -> Result<Option<String>, String> {
        if !self.password_stdin {
            return Ok(None);
        }
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|error| format!("cannot read the password from standard input: {error}"))?;
        let password = line.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            return Err("--password-stdin: standard input holds no password".to_owned());
        }
        Ok(Some(password.to_owned()))
    }

    /// The UTM fields given, `None` when none is.
    pub fn utm(&self) -> Option<Utm> {
        let utm = Utm {
            source: self.utm_source.clone().unwrap_or_default(),
            medium: self.utm_medium.clone().unwrap_or_default(),
            campaign: self.utm_campaign.clone().unwrap_or_default(),
            term: self.utm_term.clone().unwrap_or_default(),
            content: self.utm_content.clone().unwrap_or_default(),
        };
        (utm != Utm::default()).then_some(utm)
    }
}

/// `--rule`'s syntax ([`RuleInput::parse_line`]); the server checks the
/// values.
pub fn parse_rule(text: &str) -> Result<RedirectRule, String> {
    let rule = RuleInput::parse_line(text)?;
    Ok(RedirectRule {
        devices: rule.devices,
        countries: rule.countries,
        languages: rule.languages,
        target_url: rule.target_url,
    })
}

/// `tags`: the key's tags, or one of them, renamed or deleted.
#[derive(Subcommand)]
pub enum TagsCommand {
    /// Every tag with its links and their lifetime clicks (the default).
    List,
    /// One tag's links and their lifetime clicks.
    Show { tag: String },
    /// Rename a tag on every link that has it.
    Rename { tag: String, new_name: String },
    /// Take a tag off every link that has it.
    Delete { tag: String },
}

/// `domains`: the installation's short domains.
#[derive(Subcommand)]
pub enum DomainsCommand {
    /// Every registered domain (the default).
    List,
    /// Register a domain (a manage key): links can be made on it.
    Add {
        host: String,
        /// Where codes that do not exist on it are sent (default: a 404 page).
        #[arg(long)]
        not_found_url: Option<String>,
    },
    /// Remove a domain that has no links.
    Remove { host: String },
}

/// `webhooks`: endpoints told when the key's links change (a manage key;
/// the split deployment).
#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Every endpoint of the key (the default).
    List,
    /// Register an endpoint; prints its secret (shown only now and on a
    /// rotation).
    Add {
        url: String,
        /// The events, comma-separated, of link.created, link.updated,
        /// link.deleted, link.blocked, link.clicked [default: all].
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
    },
    /// Remove an endpoint with its waiting messages and delivery log.
    Remove { id: i64 },
    /// Enable an endpoint disabled after a day of failures.
    Enable { id: i64 },
    /// Give an endpoint a new secret; the old one signs too for 24 hours.
    Rotate { id: i64 },
    /// An endpoint's newest delivery attempts.
    Deliveries {
        id: i64,
        /// How many, 1 to 500.
        #[arg(long, default_value_t = 20)]
        limit: i32,
    },
}

/// The store the administration commands work on unless told: the one
/// `tinyurl up` makes by default.
pub const DEFAULT_STORE: &str = "sqlite:./tinyurl.db";

const EXIT_CODES: &str = "Exit codes: 0 success, 1 unexpected failure, 2 usage error, 3 not found, \
4 rejected by the server (invalid input, alias taken), 5 server unavailable, 6 missing or invalid API key.";

#[derive(Subcommand)]
pub enum Command {
    /// Run idalloc, writer and redirect in this process on an embedded store.
    Up(UpArgs),
    /// Create a short link.
    Shorten {
        url: String,
        /// A custom code instead of a generated one.
        #[arg(long)]
        alias: Option<String>,
        /// When the link stops redirecting: RFC 3339 time or a duration from now (30d).
        #[arg(long)]
        expires: Option<String>,
        /// Redirect status: 301, 302, 307 or 308.
        #[arg(long, default_value_t = 302)]
        status: u16,
        /// Append the short URL's query string to the target.
        #[arg(long)]
        forward_query: bool,
        /// Makes a retried command return the link the first attempt created.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// A tag (repeat for more).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// A registered domain to make the link on (other commands then
        /// name it `DOMAIN/CODE`).
        #[arg(long)]
        domain: Option<String>,
        #[command(flatten)]
        options: OptionArgs,
    },
    /// Show a link.
    Get { code: String },
    /// Change a link.
    Update(UpdateArgs),
    /// Stop a link from redirecting (410 Gone) without deleting it.
    Disable { code: String },
    /// Let a disabled link redirect again.
    Enable { code: String },
    /// Delete a link.
    Delete { code: String },
    /// List links, newest first.
    List {
        /// At most this many links.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only the links with this tag.
        #[arg(long)]
        tag: Option<String>,
    },
    /// The tags of the key's links (`tags list`, `show`, `rename`, `delete`).
    Tags {
        #[command(subcommand)]
        command: Option<TagsCommand>,
    },
    /// Short domains besides the default one (`domains list`, `add`, `remove`).
    Domains {
        #[command(subcommand)]
        command: Option<DomainsCommand>,
    },
    /// Webhook endpoints (`webhooks list`, `add`, `remove`, `enable`,
    /// `rotate`, `deliveries`).
    Webhooks {
        #[command(subcommand)]
        command: Option<WebhooksCommand>,
    },
    /// Click statistics of a link: a summary and a chart (`--json` for scripts).
    Stats(StatsArgs),
    /// Delete the click data of a link, or with --all of every link of the
    /// key (manage key).
    ForgetClicks {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        code: Option<String>,
        /// Every link of the key, deleted ones included.
        #[arg(long)]
        all: bool,
    },
    /// Visits to codes that do not exist on a domain (manage key): by who
    /// made them and the paths asked for; `--purge` deletes them.
    Orphans(OrphanArgs),
    /// Create links from a CSV file (docs/api.md has the columns).
    Import(ImportArgs),
    /// Write every link as CSV.
    Export(ExportArgs),
    #[command(flatten)]
    Admin(AdminCommand),
    /// Exit 0 if `tinyurl up` on this host is ready (container health check).
    Probe {
        /// The redirect service's admin listener.
        #[arg(long, default_value = "127.0.0.1:9093")]
        admin: std::net::SocketAddr,
    },
}

impl Command {
    /// The command as typed, for its trace span.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Up(_) => "up",
            Self::Shorten { .. } => "shorten",
            Self::Get { .. } => "get",
            Self::Update(_) => "update",
            Self::Disable { .. } => "disable",
            Self::Enable { .. } => "enable",
            Self::Delete { .. } => "delete",
            Self::List { .. } => "list",
            Self::Tags { .. } => "tags",
            Self::Domains { .. } => "domains",
            Self::Webhooks { .. } => "webhooks",
            Self::Stats(_) => "stats",
            Self::Orphans(_) => "orphans",
            Self::ForgetClicks { .. } => "forget-clicks",
            Self::Import(_) => "import",
            Self::Export(_) => "export",
            Self::Admin(command) => command.name(),
            Self::Probe { .. } => "probe",
        }
    }
}
