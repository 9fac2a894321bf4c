//! The administration both command lines carry, `tinyurl` and
//! `tinyurl-writer`: API keys and the operator's blocklist, run on the store
//! directly. One set of commands, one way of printing their results, one
//! way of ending with a failure (the exit code of its kind and its reason).

use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::blocklist;
use crate::cache::{LinkCache, RedisLinkCache};
use crate::error::WriterError;
use crate::keys::{self, KeyCommand};
use crate::store::LinkStore;

pub use crate::keys::KeyReport as Report;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Manage API keys: create, list, revoke, rotate, set-rate (on the store
    /// directly).
    ApiKey(KeyArgs),
    /// Block a host (`bad.example`, or `*.bad.example` for everything under
    /// it; any spelling) for every writer, and block every link to it:
    /// redirects answer 410 within a second (every redirect of the split
    /// system with TINYURL_REDIS_URL set, and a running `tinyurl up` on the
    /// same store), and owners cannot undo it.
    BlockHost(HostArgs),
    /// Lift a block made by block-host: links to the host go back to what
    /// their owners chose.
    UnblockHost(HostArgs),
    /// Roll finished click minutes up into the day rollups now, as every
    /// writer does once a minute (after a backlog was folded, before reading
    /// days). `--all` takes the current minute too: clicks folded for it
    /// afterwards go to its day directly.
    RollUp(RollUpArgs),
}

/// Which store a command works on.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArg {
    /// The store: `sqlite:PATH` or a Postgres URL [default: `tinyurl`'s
    /// `sqlite:./tinyurl.db`; the writer's own database].
    #[arg(
        long,
        global = true,
        env = "TINYURL_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct KeyArgs {
    #[command(flatten)]
    pub store: StoreArg,
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Debug, Clone, clap::Args)]
pub struct HostArgs {
    /// `host` or `*.suffix` (any spelling).
    pub host: String,
    #[command(flatten)]
    pub store: StoreArg,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RollUpArgs {
    /// Up to the current minute, not only the finished ones.
    #[arg(long)]
    pub all: bool,
    /// Distinct values kept per link and day, as the writers keep them.
    #[arg(
        long,
        env = "TINYURL_CLICKS_VALUES_PER_BUCKET",
        default_value_t = NonZeroUsize::new(tinyurl_analytics::DEFAULT_VALUES_PER_BUCKET).unwrap_or(NonZeroUsize::MIN)
    )]
    pub values_per_bucket: NonZeroUsize,
    #[command(flatten)]
    pub store: StoreArg,
}

impl AdminCommand {
    pub fn name(&self) -> &'static str {
        match self {
            Self::ApiKey(_) => "api-key",
            Self::BlockHost(_) => "block-host",
            Self::UnblockHost(_) => "unblock-host",
            Self::RollUp(_) => "roll-up",
        }
    }

    /// The store the command names, if it names one.
    pub fn database_url(&self) -> Option<&str> {
        match self {
            Self::ApiKey(KeyArgs { store, .. })
            | Self::BlockHost(HostArgs { store, .. })
            | Self::UnblockHost(HostArgs { store, .. })
            | Self::RollUp(RollUpArgs { store, .. }) => store.database_url.as_deref(),
        }
    }

    /// Whether the command changes links, so their cached copies must be
    /// told (a cache to announce through is worth connecting).
    pub fn changes_links(&self) -> bool {
        !matches!(self, Self::ApiKey(_) | Self::RollUp(_))
    }

    /// The cache this command announces changed links through: `redis`
    /// (connected within five seconds) when there is one and the command
    /// changes links, else none.
    pub async fn announcer(
        &self,
        redis: Option<&secrecy::SecretString>,
        timeout: std::time::Duration,
        ttl: std::time::Duration,
    ) -> anyhow::Result<RedisLinkCache> {
        match redis {
            Some(url) if self.changes_links() => {
                let cache = RedisLinkCache::connect(url, timeout, ttl)?;
                cache
                    .wait_connected(std::time::Duration::from_secs(5))
                    .await?;
                Ok(cache)
            }
            _ => Ok(RedisLinkCache::disabled()),
        }
    }

    /// Runs the command on `store`, announcing changed links through
    /// `cache`; `json` prints results as JSON for scripts.
    pub async fn run(
        self,
        store: &dyn LinkStore,
        cache: &dyn LinkCache,
        json: bool,
    ) -> Result<Report, WriterError> {
        let (host, block) = match self {
            Self::ApiKey(KeyArgs { command, .. }) => return keys::run(store, command, json).await,
            Self::BlockHost(HostArgs { host, .. }) => (host, true),
            Self::UnblockHost(HostArgs { host, .. }) => (host, false),
            Self::RollUp(args) => return roll_up(store, &args, json).await,
        };
        let (entry, links) = blocklist::change(store, cache, &host, block).await?;
        let verb = blocklist::verb(block);
        let stdout = if json {
            let mut said = serde_json::Map::new();
            said.insert(verb.to_owned(), entry.into());
            said.insert(format!("links_{verb}"), links.into());
            serde_json::Value::Object(said).to_string()
        } else {
            format!("{verb} {entry}; {links} links to it {verb}")
        };
        Ok(Report {
            stdout,
            stderr: String::new(),
        })
    }
}

/// `roll-up`: the minutes up to now (`--all`) or the finished ones, in
/// slices as the writers take them.
async fn roll_up(
    store: &dyn LinkStore,
    args: &RollUpArgs,
    json: bool,
) -> Result<Report, WriterError> {
    let now = SystemTime::now();
    let through = if args.all {
        tinyurl_analytics::minute_of(now)
    } else {
        tinyurl_analytics::consumer::finished_minutes(now)
    };
    let mut rows = 0;
    tinyurl_analytics::consumer::roll_up(
        store.clicks().as_ref(),
        through,
        args.values_per_bucket.get(),
        || false,
        |slice| rows += slice,
    )
    .await?;
    // The minute's end: everything before it is in the day rollups.
    let until =
        UNIX_EPOCH + Duration::from_secs((i64::from(through) + 1).max(0).unsigned_abs() * 60);
    let until = humantime::format_rfc3339_seconds(until).to_string();
    let stdout = if json {
        serde_json::json!({ "rolled_up_until": until, "day_rows": rows }).to_string()
    } else {
        format!("clicks before {until} rolled up into days: {rows} day rows written")
    };
    Ok(Report {
        stdout,
        stderr: String::new(),
    })
}

/// A failed command as both command lines end it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The exit code of the error's kind ([`tinyurl_runtime::ErrorKind::exit_code`]).
    pub exit_code: u8,
    /// The reason, naming the field at fault when there is one.
    pub message: String,
}

impl From<WriterError> for Failure {
    fn from(error: WriterError) -> Self {
        let message = error.public_message();
        Self {
            exit_code: error.kind().exit_code(),
            message: match error.field() {
                Some(field) if !message.starts_with(field) => format!("{message} (field {field})"),
                _ => message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_carries_the_exit_code_of_its_kind_and_names_its_field() {
        let refused = Failure::from(WriterError::invalid("host", "not a host"));
        assert_eq!(refused.exit_code, 4);
        assert_eq!(refused.message, "not a host (field host)");
        let missing = Failure::from(WriterError::NotFound("x".to_owned()));
        assert_eq!(missing.exit_code, 3);
        let down = Failure::from(WriterError::Unavailable("down".to_owned()));
        assert_eq!((down.exit_code, down.message.as_str()), (5, "down"));
    }

    #[test]
    fn every_command_has_its_name() {
        use clap::Subcommand as _;
        let command = AdminCommand::augment_subcommands(clap::Command::new("admin"));
        let names: Vec<&str> = command
            .get_subcommands()
            .map(clap::Command::get_name)
            .collect();
        assert_eq!(names, ["api-key", "block-host", "unblock-host", "roll-up"]);
        let block = AdminCommand::BlockHost(HostArgs {
            host: "bad.example".to_owned(),
            store: StoreArg {
                database_url: Some("sqlite:x.db".to_owned()),
            },
        });
        assert_eq!(block.name(), "block-host");
        assert_eq!(block.database_url(), Some("sqlite:x.db"));
        assert!(block.changes_links());
        let roll_up = AdminCommand::RollUp(RollUpArgs {
            all: true,
            values_per_bucket: NonZeroUsize::MIN,
            store: StoreArg { database_url: None },
        });
        assert_eq!(roll_up.name(), "roll-up");
        assert_eq!(roll_up.database_url(), None);
        assert!(!roll_up.changes_links(), "nothing to announce");
    }
}
