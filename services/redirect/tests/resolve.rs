//! The resolver's rules, in process: the embedded store (written by the
//! link store, read by the redirect's SQLite source) and the in-memory
//! shared cache of `tinyurl up` standing in for Redis. L1 keeps answers,
//! an invalidation evicts them, the shared cache answers before the
//! database, and a miss is remembered as a miss — in L1 and in the shared
//! cache.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tinyurl_domain::RedirectStatus;
use tinyurl_links::auth::{OwnerId, Scope};
use tinyurl_links::cache::{LinkCache as _, MemoryLinkCache};
use tinyurl_links::store::{KeyStore as _, LinkChanges, LinkStore, NewLink, SqliteLinkStore};
use tinyurl_redirect::entry::{CachePolicy, Entry};
use tinyurl_redirect::l2::{Cached, MemorySharedCache, SharedCache};
use tinyurl_redirect::resolve::{Resolution, Resolver, Settings};
use tinyurl_redirect::store::SqliteLinkSource;
use tinyurl_runtime::memory::MemoryCache;

const TIMEOUT: Duration = Duration::from_secs(5);

struct Fixture {
    resolver: Resolver,
    /// What the writer writes with.
    store: SqliteLinkStore,
    owner: OwnerId,
    memory: Arc<MemoryCache>,
    shared: Arc<dyn SharedCache>,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    async fn start() -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("tinyurl-resolve-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("links.db");
        let store = SqliteLinkStore::open(&path, TIMEOUT).await?;
        let hash =
            tinyurl_links::auth::hash_key("tu_resolvetestkey0000000000000000000000000000000");
        let owner = OwnerId(
            store
                .create_api_key("resolve", &hash, Scope::Manage, None)
                .await?,
        );
        let source = Arc::new(SqliteLinkSource::open(&path, 2, TIMEOUT).await?);
        let resolver = Resolver::new(
            &Settings {
                l1_capacity: 1_000,
                l1_ttl: Duration::from_secs(60),
                l1_negative_ttl: Duration::from_secs(60),
                policy: CachePolicy {
                    permanent_max_age: Duration::from_secs(300),
                },
            },
            source,
        );
        let memory = MemoryCache::new(1_000);
        let shared: Arc<dyn SharedCache> = Arc::new(MemorySharedCache::new(
            Arc::clone(&memory),
            Duration::from_secs(3600),
            Duration::from_secs(30),
            Default::default(),
        ));
        Ok(Self {
            resolver,
            store,
            owner,
            memory,
            shared,
            dir,
        })
    }

    async fn insert(&self, code: &str, target: &str) -> anyhow::Result<()> {
        let inserted = self
            .store
            .insert(
                self.owner,
                &[NewLink {
                    code: code.to_owned(),
                    target_url: target.to_owned(),
                    redirect_status: RedirectStatus::Found,
                    forward_query: false,
                    expires_at: None,
                    is_alias: true,
                    idempotency_key: None,
                    fingerprint: None,
                    tags: Vec::new(),
                    options: Default::default(),
                }],
            )
            .await?;
        anyhow::ensure!(inserted.contains_key(code), "{code} not inserted");
        Ok(())
    }

    async fn resolve(&self, code: &str) -> anyhow::Result<Arc<Entry>> {
        match self.resolver.resolve_miss(code, Some(&self.shared)).await {
            Resolution::Entry(entry) => Ok(entry),
            other => anyhow::bail!("{code}: {other:?}"),
        }
    }
}

/// What the shared cache holds for `code` once the fill (made off the
/// request path) has landed: polled, for up to five seconds.
async fn filled(shared: &Arc<dyn SharedCache>, code: &str) -> anyhow::Result<Cached> {
    for _ in 0..500 {
        match shared.get(code).await? {
            Cached::Absent => tokio::time::sleep(Duration::from_millis(10)).await,
            held => return Ok(held),
        }
    }
    anyhow::bail!("the shared cache was never filled for {code}")
}

fn target(entry: &Entry) -> Option<&str> {
    match entry {
        Entry::Link(link) => Some(&link.target),
        _ => None,
    }
}

#[tokio::test]
async fn a_miss_is_read_from_the_database_kept_in_l1_and_filled_in_the_shared_cache()
-> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    fixture.insert("first", "https://example.com/first").await?;
    assert!(fixture.resolver.cached("first").is_none());
    let entry = fixture.resolve("first").await?;
    assert_eq!(target(&entry), Some("https://example.com/first"));
    let kept = fixture.resolver.cached("first").expect("kept in L1");
    assert_eq!(target(&kept), Some("https://example.com/first"));
    assert!(
        matches!(filled(&fixture.shared, "first").await?, Cached::Link(_)),
        "filled in the shared cache"
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_code_is_a_miss_remembered_in_both_caches() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    let entry = fixture.resolve("nothing").await?;
    assert!(matches!(*entry, Entry::Missing), "{entry:?}");
    assert!(matches!(
        fixture.resolver.cached("nothing").as_deref(),
        Some(Entry::Missing)
    ));
    assert!(matches!(
        filled(&fixture.shared, "nothing").await?,
        Cached::Missing
    ));
    Ok(())
}

#[tokio::test]
async fn an_invalidation_evicts_l1_and_the_next_lookup_sees_the_change() -> anyhow::Result<()> {
    let fixture = Fixture::start().await?;
    fixture.insert("moving", "https://example.com/old").await?;
    fixture.resolve("moving").await?;
    // The writer's path: the row changes, the shared cache is rewritten and
    // the code announced; each redirect evicts it from its L1.
    let changed = fixture
        .store
        .update(
            fixture.owner,
            "moving",
            &LinkChanges {
                target_url: Some("https://example.com/new".to_owned()),
                ..LinkChanges::default()
            },
        )
        .await?
        .expect("the link");
    MemoryLinkCache::new(Arc::clone(&fixture.memory), Duration::from_secs(3600))
        .replace(&changed)
        .await;
    assert_eq!(
        target(&fixture.resolver.cached("moving").expect("still in L1")),
        Some("https://example.com/old"),
        "L1 holds what it read until it is told"
    );
    fixture.resolver.invalidate("moving");
    assert!(fixture.resolver.cached("moving").is_none());
    let entry = fixture.resolve("moving").await?;
    assert_eq!(target(&entry), Some("https://example.com/new"));
    Ok(())
}

#[tokio::test]
async fn the_shared_cache_answers_before_the_database_and_a_flush_empties_l1() -> anyhow::Result<()>
{
    let fixture = Fixture::start().await?;
    fixture
        .insert("cached", "https://example.com/in-the-database")
        .await?;
    // What the writer wrote through, newer than this replica-less read.
    let now = SystemTime::now();
    MemoryLinkCache::new(Arc::clone(&fixture.memory), Duration::from_secs(3600))
        .write_through(&[tinyurl_links::store::StoredLink {
            code: "cached".to_owned(),
            target_url: "https://example.com/written-through".to_owned(),
            redirect_status: RedirectStatus::Found,
            forward_query: false,
            expires_at: None,
            enabled: true,
            is_alias: true,
            created_at: now,
            updated_at: now,
            blocked: false,
            tags: Vec::new(),
            options: Default::default(),
        }])
        .await;
    let entry = fixture.resolve("cached").await?;
    assert_eq!(target(&entry), Some("https://example.com/written-through"));
    assert!(fixture.resolver.l1_entries() > 0);
    fixture.resolver.flush();
    assert!(fixture.resolver.cached("cached").is_none());
    assert_eq!(fixture.resolver.l1_entries(), 0);
    Ok(())
}
