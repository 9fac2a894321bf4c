//! The link service's rules, in process: the SQLite store, the in-memory
//! cache and an idalloc on its own SQLite file, as `tinyurl up` runs them —
//! no transport between the test and the rules. Each test is one rule:
//! creating, idempotency, aliases, tombstones, scopes, owners, limits and
//! the blocklist.

use std::sync::Arc;
use std::time::Duration;

use tinyurl_domain::{CodeCodec, TargetPolicy};
use tinyurl_links::auth::{KeyCache, KeyCacheSettings, KeyName, Rate, Scope, hash_key};
use tinyurl_links::cache::MemoryLinkCache;
use tinyurl_links::input::{CreateInput, UpdateInput};
use tinyurl_links::keys::issue_key;
use tinyurl_links::leaser::IdLeaser;
use tinyurl_links::limits::RateLimits;
use tinyurl_links::store::{LinkStore, SqliteLinkStore};
use tinyurl_links::{Call, LinkService, State, WriterError};
use tinyurl_runtime::memory::MemoryCache;

mod common;
use common::{Scratch, idalloc, token};

const TIMEOUT: Duration = Duration::from_secs(5);

/// One link service with everything it needs in this process.
struct Rules {
    links: LinkService,
    store: Arc<dyn LinkStore>,
    memory: Arc<MemoryCache>,
    /// idalloc stops when this is dropped, before the files go.
    _idalloc: common::Idalloc,
    _dir: Scratch,
}

/// How a fixture limits its callers.
#[derive(Default)]
struct Limits {
    per_key: Option<Rate>,
    daily_creates: Option<u64>,
}

impl Rules {
    async fn start(limits: Limits) -> anyhow::Result<Self> {
        let dir = Scratch::new("rules")?;
        let (idalloc, stop) = idalloc(&dir.0).await?;
        let store: Arc<dyn LinkStore> =
            Arc::new(SqliteLinkStore::open(&dir.0.join("links.db"), TIMEOUT).await?);
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{idalloc}"))?.connect_lazy();
        let leaser = IdLeaser::new(channel, &token(), TIMEOUT, Duration::from_secs(30))?;
        leaser
            .prime()
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))?;
        let memory = MemoryCache::new(10_000);
        let cache = Arc::new(MemoryLinkCache::new(
            Arc::clone(&memory),
            Duration::from_secs(3600),
        ));
        let state = Arc::new(State {
            clicks_store: store.clicks(),
            minute_retention: Duration::from_secs(7 * 86_400),
            store: Arc::clone(&store),
            cache,
            leaser,
            codec: CodeCodec::new(b"a code secret for the rules tests", 7)?,
            policy: std::sync::RwLock::new(Arc::new(TargetPolicy {
                own_host: Some("sho.rt".to_owned()),
                ..TargetPolicy::default()
            })),
            blocklists: std::sync::Mutex::default(),
            public_base_url: "https://sho.rt".to_owned(),
            keys: KeyCache::new(KeyCacheSettings::default()),
            limits: RateLimits::new(limits.per_key, limits.daily_creates, None, None)?,
            proxies: tinyurl_runtime::proxies::TrustedProxies::NONE,
            link_secret: tinyurl_links::link_secret(b"a code secret for the rules tests"),
            short_hosts: Default::default(),
            webhooks_allow_private: false,
        });
        Ok(Self {
            links: LinkService::new(state),
            store,
            memory,
            _idalloc: stop,
            _dir: dir,
        })
    }

    /// A caller holding a new key of `scope`.
    async fn caller(&self, scope: Scope) -> anyhow::Result<Call> {
        let issued = issue_key(self.store.as_ref(), &KeyName::parse("rules")?, scope, None).await?;
        Ok(Call {
            key: Some(hash_key(&issued.key)),
            client: None,
        })
    }
}

fn to(target: &str) -> CreateInput {
    CreateInput {
        target_url: target.to_owned(),
        ..CreateInput::default()
    }
}

fn aliased(target: &str, alias: &str) -> CreateInput {
    CreateInput {
        alias: Some(alias.to_owned()),
        ..to(target)
    }
}

#[tokio::test]
async fn a_create_mints_a_code_stores_the_link_and_writes_it_through() -> anyhow::Result<()> {
    let rules = Rules::start(Limits::default()).await?;
    let owner = rules.caller(Scope::Manage).await?;
    let link = rules
        .links
        .create(&owner, Ok(to("https://example.com/a")))
        .await?;
    assert_eq!(link.code.len(), 7, "{}", link.code);
    assert!(link.redirects() && !link.is_alias);
    assert_eq!(link.redirect_status.code(), 302);
    assert_eq!(rules.links.get(&owner, &link.code).await?, link);
    assert!(
        rules.memory.get(&link.code).is_some(),
        "the new link is in the cache the redirects read"
    );
    assert_eq!(
        rules.links.short_url(&link.code),
        format!("https://sho.rt/{}", link.code)
    );
    let other = rules
        .links
        .create(&owner, Ok(to("https://example.com/a")))
        .await?;
    assert_ne!(other.code, link.code, "the same target twice is two links");
    Ok(())
}

#[tokio::test]
async fn a_create_is_refused_before_anything_is_stored_when_its_input_is_bad() -> anyhow::Result<()>
{
    let rules = Rules::start(Limits::default()).await?;
    let owner = rules.caller(Scope::Manage).await?;
    for (input, field) in [
        (to("not a url"), "target_url"),
        (to("https://sho.rt/loop"), "target_url"),
        (to("http://127.0.0.1/private"), "target_url"),
        (aliased("https://example.com", "a"), "alias"),
        (aliased("https://example.com", "api"), "alias"),
    ] {
        let refused = rules
            .links
            .create(&owner, Ok(input.clone()))
            .await
            .expect_err(&input.target_url);
        assert_eq!(refused.field(), Some(field), "{input:?}: {refused}");
    }
    let page = rules.links.list(&owner, Default::default()).await?;
    assert!(page.links.is_empty(), "nothing half-written");
    Ok(())
}

#[tokio::test]
async fn an_idempotency_key_replays_its_link_and_refuses_another_request() -> anyhow::Result<()> {
    let rules = Rules::start(Limits::default()).await?;
    let owner = rules.caller(Scope::Manage).await?;
    let keyed = |target: &str| CreateInput {
        idempotency_key: Some("order-42".to_owned()),
        ..to(target)
    };
    let first = rules
        .links
        .create(&owner, Ok(keyed("https://example.com/once")))
        .await?;
    let again = rules
        .links
        .create(&owner, Ok(keyed("https://example.com/once")))
        .await?;
    assert_eq!(again, first, "a retry answers the first link");
    let other = rules
        .links
        .create(&owner, Ok(keyed("https://example.com/other")))
        .await
        .expect_err("the key with another request");
    assert!(
        matches!(other, WriterError::IdempotencyKeyReused(_)),
        "{other}"
    );
    // Keys belong to their owner: another owner's same key is a new link.
    let stranger = rules.caller(Scope::Manage).await?;
    let theirs = rules
        .links
        .create(&stranger, Ok(keyed("https://example.com/once")))
        .await?;
    assert_ne!(theirs.code, first.code);
    Ok(())
}

#[tokio::test]
async fn an_alias_is_taken_once_and_a_deleted_code_is_never_reissued() -> anyhow::Result<()> {
    let rules = Rules::start(Limits::default()).await?;
    let owner = rules.caller(Scope::Manage).await?;
    let link = rules
        .links
        .create(&owner, Ok(aliased("https://example.com/x", "launch")))
        .await?;
    assert!(link.is_alias);
    let taken = rules
        .links
        .create(&owner, Ok(aliased("https://example.com/y", "launch")))
        .await
        .expect_err("taken");
    assert!(matches!(taken, WriterError::AlreadyExists(_)), "{taken}");

    rules.links.delete(&owner, "launch").await?;
    let gone = rules
        .links
        .get(&owner, "launch")
        .await
        .expect_err("deleted");
    assert!(matches!(gone, WriterError::NotFound(_)), "{gone}");
    let tombstone = rules
        .links
        .create(&owner, Ok(aliased("https://example.com/z", "launch")))
        .await
        .expect_err("a tombstone");
    assert!(
        matches!(tombstone, WriterError::AlreadyExists(_)),
        "{tombstone}"
    );
    // Two items of one batch asking for one alias: the first gets it.
    let results = rules
        .links
        .batch_create(
            &owner,
            vec![
                Ok(aliased("https://example.com/1", "twice")),
                Ok(aliased("https://example.com/2", "twice")),
            ],
        )
        .await?;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(results[1], Err(WriterError::AlreadyExists(_))),
        "{:?}",
        results[1]
    );
    Ok(())
}

#[tokio::test]
async fn scopes_and_owners_bound_what_a_key_may_do() -> anyhow::Result<()> {
    let rules = Rules::start(Limits::default()).await?;
    let manager = rules.caller(Scope::Manage).await?;
    let creator = rules.caller(Scope::Create).await?;
    let reader = rules.caller(Scope::Read).await?;
    let link = rules
        .links
        .create(&creator, Ok(to("https://example.com/mine")))
        .await?;

    let refused = rules
        .links
        .create(&reader, Ok(to("https://example.com/r")))
        .await
        .expect_err("a read key creates");
    assert!(
        matches!(refused, WriterError::PermissionDenied(_)),
        "{refused}"
    );
    let refused = rules
        .links
        .delete(&creator, &link.code)
        .await
        .expect_err("a create key deletes");
    assert!(
        matches!(refused, WriterError::PermissionDenied(_)),
        "{refused}"
    );
    // Another key's link does not exist for it, whatever its scope.
    let hidden = rules
        .links
        .get(&manager, &link.code)
        .await
        .expect_err("another owner's link");
    assert!(matches!(hidden, WriterError::NotFound(_)), "{hidden}");
    let hidden = rules
        .links
        .update(
            &manager,
            &link.code,
            Ok(UpdateInput {
                enabled: Some(false),
                ..UpdateInput::default()
            }),
        )
        .await
        .expect_err("another owner's link");
    assert!(matches!(hidden, WriterError::NotFound(_)), "{hidden}");

    let unknown = Call {
        key: Some(hash_key("tu_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG")),
        client: None,
    };
    let refused = rules
        .links
        .get(&unknown, &link.code)
        .await
        .expect_err("an unknown key");
    assert!(
        matches!(refused, WriterError::Unauthenticated(_)),
        "{refused}"
    );
    Ok(())
}

#[tokio::test]
async fn a_key_spends_its_rate_and_its_daily_quota() -> anyhow::Result<()> {
    let rules = Rules::start(Limits {
        per_key: "2/s".parse().ok(),
        daily_creates: Some(3),
    })
    .await?;
    let owner = rules.caller(Scope::Manage).await?;
    // A burst well past the rate: only a machine that took half a second
    // per create could stay under it.
    let mut limited = None;
    for _ in 0..10 {
        if let Err(error) = rules
            .links
            .create(&owner, Ok(to("https://example.com/rate")))
            .await
        {
            limited = Some(error);
            break;
        }
    }
    let limited = limited.expect("a burst past 2/s is limited");
    assert!(
        matches!(limited, WriterError::RateLimited { .. }),
        "{limited}"
    );

    let quota = Rules::start(Limits {
        per_key: None,
        daily_creates: Some(2),
    })
    .await?;
    let owner = quota.caller(Scope::Manage).await?;
    for _ in 0..2 {
        quota
            .links
            .create(&owner, Ok(to("https://example.com/q")))
            .await?;
    }
    let spent = quota
        .links
        .create(&owner, Ok(to("https://example.com/q")))
        .await
        .expect_err("the third create of the day");
    assert!(
        matches!(spent, WriterError::QuotaExhausted { quota: 2, .. }),
        "{spent}"
    );
    Ok(())
}

#[tokio::test]
async fn a_blocked_host_is_refused_and_its_links_blocked_until_unblocked() -> anyhow::Result<()> {
    let rules = Rules::start(Limits::default()).await?;
    let owner = rules.caller(Scope::Manage).await?;
    let link = rules
        .links
        .create(&owner, Ok(to("https://www.evil.example/page")))
        .await?;
    let fine = rules
        .links
        .create(&owner, Ok(to("https://example.com/fine")))
        .await?;
    let cache = MemoryLinkCache::new(Arc::clone(&rules.memory), Duration::from_secs(3600));

    let (entry, blocked) =
        tinyurl_links::blocklist::change(rules.store.as_ref(), &cache, "*.EVIL.example.", true)
            .await?;
    assert_eq!((entry.as_str(), blocked), ("*.evil.example", 1));
    let stored = rules.links.get(&owner, &link.code).await?;
    assert!(stored.blocked && !stored.redirects());
    assert!(!rules.links.get(&owner, &fine.code).await?.blocked);
    // The owner cannot undo an operator's block.
    let refused = rules
        .links
        .update(
            &owner,
            &link.code,
            Ok(UpdateInput {
                target_url: Some("https://example.com/elsewhere".to_owned()),
                ..UpdateInput::default()
            }),
        )
        .await
        .expect_err("undoing a block");
    assert!(
        matches!(refused, WriterError::PermissionDenied(_)),
        "{refused}"
    );
    // Creates to the host are refused once the stored list is applied.
    let entries = rules.store.blocked_host_entries().await?;
    let list =
        tinyurl_domain::HostBlocklist::parse(&entries.join("\n")).map_err(anyhow::Error::msg)?;
    rules.links.state().set_stored_blocklist(list);
    let refused = rules
        .links
        .create(&owner, Ok(to("https://deep.evil.example/again")))
        .await
        .expect_err("a blocked host");
    assert_eq!(refused.field(), Some("target_url"), "{refused}");
    // `*.suffix` is what is under the suffix, not the suffix itself.
    rules
        .links
        .create(&owner, Ok(to("https://evil.example/itself")))
        .await?;

    let (_, unblocked) =
        tinyurl_links::blocklist::change(rules.store.as_ref(), &cache, "*.evil.example", false)
            .await?;
    assert_eq!(unblocked, 1);
    assert!(rules.links.get(&owner, &link.code).await?.redirects());
    let never =
        tinyurl_links::blocklist::change(rules.store.as_ref(), &cache, "nowhere.example", false)
            .await
            .expect_err("not on the list");
    assert_eq!(never.field(), Some("host"));
    // The cache the redirects read holds the link as it is now.
    assert!(rules.memory.get(&link.code).is_some());
    Ok(())
}
