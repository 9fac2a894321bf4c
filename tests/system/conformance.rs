//! One conformance suite for the two implementations of every storage and
//! cache trait: Postgres and SQLite for the writer's `LinkStore`, idalloc's
//! `LeaseStore` and redirect's `LinkSource`; Redis and the in-process cache
//! for the writer's `LinkCache` with redirect's `SharedCache` and the
//! invalidation feed; Postgres and SQLite for the writer's `ClickStore`.
//! Each contract is one function; each implementation runs
//! it through the same code, so the two cannot drift.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, ensure};
use fred::prelude::*;
use tinyurl_analytics::{
    ClickStore, DEFAULT_VALUES_PER_BUCKET, Dimension, Fold, Folded, MINUTES_PER_DAY, OTHER,
    ROLL_UP_SLICE_MINUTES, RolledUp, RollupRow, RollupTable, minute_of,
};
use tinyurl_domain::clicks::{ClickLine, TrafficClass};
use tinyurl_domain::{CachedLink, Device, LinkOptions, RedirectRule, RedirectStatus, Utm};
use tinyurl_harness::process::ScratchDir;
use tinyurl_harness::{PgCluster, RedisServer, wait_until};
use tinyurl_idalloc::lease::LeaseRequest;
use tinyurl_idalloc::store::{LeaseStore, PostgresLeaseStore, SqliteLeaseStore};
use tinyurl_links::auth::{Caller, OwnerId, Rate, Scope, generate_key, hash_key};
use tinyurl_links::cache::{LinkCache, MemoryLinkCache, RedisLinkCache};
use tinyurl_links::store::{
    LinkChanges, LinkStore, NewLink, OnlineMigration, PostgresLinkStore, SqliteLinkStore,
    StoredLink,
};
use tinyurl_redirect::l2::{Cached, MemorySharedCache, RedisSharedCache, SharedCache};
use tinyurl_redirect::store::{LinkSource, PostgresLinkSource, Source, SqliteLinkSource};
use tinyurl_runtime::memory::MemoryCache;
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A time both stores keep exactly (microsecond precision).
fn micros_ago(seconds: u64) -> SystemTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64;
    UNIX_EPOCH + Duration::from_micros(now) - Duration::from_secs(seconds)
}

fn in_future(seconds: u64) -> SystemTime {
    micros_ago(0) + Duration::from_secs(seconds)
}

fn new_link(code: &str, id: Option<i64>, key: Option<&str>) -> NewLink {
    NewLink {
        code: code.to_owned(),
        target_url: format!("https://example.com/{code}"),
        redirect_status: RedirectStatus::Found,
        forward_query: false,
        expires_at: None,
        is_alias: id.is_none(),
        idempotency_key: key.map(str::to_owned),
        fingerprint: key.map(|_| fingerprint_of(code)),
        tags: Vec::new(),
        options: LinkOptions::default(),
    }
}

/// A fingerprint the stores keep and give back as it was.
fn fingerprint_of(code: &str) -> [u8; 16] {
    let mut fingerprint = [0xA5; 16];
    for (slot, byte) in fingerprint.iter_mut().zip(code.bytes()) {
        *slot = byte;
    }
    fingerprint
}

async fn api_key(store: &dyn LinkStore, name: &str) -> anyhow::Result<OwnerId> {
    let (key, hash) = generate_key();
    store
        .create_api_key(name, &hash, Scope::Manage, None)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let caller = store
        .resolve_key(&hash_key(&key))
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?
        .context("a created key must resolve")?;
    ensure!(caller.scope == Scope::Manage);
    Ok(caller.owner)
}

/// A key made as a writer of schema V6 made them: today's store writes
/// columns V6 does not have yet.
async fn v6_key(primary_url: &str, name: &str) -> anyhow::Result<OwnerId> {
    let db = tinyurl_harness::postgres::connect(primary_url).await?;
    let (_, hash) = generate_key();
    let row = db
        .query_one(
            "INSERT INTO api_keys (name, key_hash) VALUES ($1, $2) RETURNING id",
            &[&name, &hash.0.as_slice()],
        )
        .await?;
    Ok(OwnerId(row.get(0)))
}

macro_rules! ok {
    ($call:expr) => {
        $call.await.map_err(|error| anyhow::anyhow!("{error:#}"))?
    };
}

async fn link_store_contract(store: Arc<dyn LinkStore>) -> anyhow::Result<()> {
    let store = store.as_ref();
    ensure!(ok!(store.count_api_keys()) == 0, "a new store has no keys");
    let owner = api_key(store, "first").await?;
    let other = api_key(store, "second").await?;
    ensure!(owner != other);
    ensure!(ok!(store.count_api_keys()) == 2);
    ensure!(ok!(store.resolve_key(&hash_key("tu_not-a-key"))).is_none());

    // A batch commits together, with one timestamp, and reports every code.
    let expiring = NewLink {
        expires_at: Some(in_future(3600)),
        redirect_status: RedirectStatus::PermanentRedirect,
        forward_query: true,
        ..new_link("Exp1ring", Some(7), None)
    };
    let batch = vec![
        new_link("AbCdEf1", Some(1), None),
        new_link("abcdef1", Some(2), Some("key-1")),
        new_link("my-alias", None, None),
        expiring.clone(),
    ];
    let inserted = ok!(store.insert(owner, &batch));
    ensure!(
        inserted.len() == 4,
        "every new code is inserted: {inserted:?}"
    );
    let stamps: HashSet<_> = inserted.values().collect();
    ensure!(stamps.len() == 1, "one timestamp per batch");

    // Codes are case-sensitive; taken codes and reused idempotency keys are
    // skipped, not errors.
    let again = ok!(store.insert(
        owner,
        &[
            new_link("AbCdEf1", Some(3), None),
            new_link("Zzzzzz9", Some(4), Some("key-1")),
        ]
    ));
    ensure!(again.is_empty(), "conflicts are skipped: {again:?}");
    let replays = ok!(store.find_by_idempotency_keys(owner, &["key-1", "key-unknown"]));
    ensure!(replays.len() == 1 && replays["key-1"].link.code == "abcdef1");
    ensure!(replays["key-1"].fingerprint == Some(fingerprint_of("abcdef1")));
    ensure!(ok!(store.find_by_idempotency_keys(other, &["key-1"])).is_empty());
    // The same idempotency key is free for another owner.
    ensure!(ok!(store.insert(other, &[new_link("Other01", Some(5), Some("key-1"))])).len() == 1);

    let stored = ok!(store.get(owner, "Exp1ring")).context("inserted link")?;
    let (created_at, updated_at) = inserted["Exp1ring"];
    ensure!(
        stored
            == StoredLink {
                code: "Exp1ring".to_owned(),
                target_url: expiring.target_url.clone(),
                redirect_status: RedirectStatus::PermanentRedirect,
                forward_query: true,
                expires_at: expiring.expires_at,
                enabled: true,
                is_alias: false,
                created_at,
                updated_at,
                blocked: false,
                tags: Vec::new(),
                options: LinkOptions::default(),
            },
        "stored exactly: {stored:?}"
    );
    ensure!(ok!(store.get(owner, "my-alias")).is_some_and(|link| link.is_alias));
    ensure!(
        ok!(store.get(other, "Exp1ring")).is_none(),
        "owners are isolated"
    );
    ensure!(ok!(store.get(owner, "Missing")).is_none());

    // Updates change only what they name.
    let changed = ok!(store.update(
        owner,
        "AbCdEf1",
        &LinkChanges {
            target_url: Some("https://example.org/new".to_owned()),
            redirect_status: Some(RedirectStatus::MovedPermanently),
            enabled: Some(false),
            expires_at: Some(in_future(60)),
            ..LinkChanges::default()
        }
    ))
    .context("update of an existing link")?;
    ensure!(
        changed.target_url == "https://example.org/new"
            && changed.redirect_status == RedirectStatus::MovedPermanently
    );
    ensure!(!changed.enabled && changed.expires_at.is_some() && !changed.forward_query);
    ensure!(changed.updated_at >= changed.created_at);
    let cleared = ok!(store.update(
        owner,
        "AbCdEf1",
        &LinkChanges {
            clear_expiry: true,
            forward_query: Some(true),
            ..LinkChanges::default()
        }
    ))
    .context("second update")?;
    ensure!(cleared.expires_at.is_none() && cleared.forward_query && !cleared.enabled);
    ensure!(cleared.target_url == "https://example.org/new");
    ensure!(ok!(store.update(other, "AbCdEf1", &LinkChanges::default())).is_none());
    ensure!(ok!(store.update(owner, "Missing", &LinkChanges::default())).is_none());

    // Keyset pages: newest first, every link once, only the owner's.
    for index in 0..5 {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let code = format!("Page00{index}");
        ensure!(ok!(store.insert(owner, &[new_link(&code, Some(100 + index), None)])).len() == 1);
    }
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = ok!(store.list(owner, 2, after.clone()));
        ensure!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = Some((last.created_at, last.code.clone()));
        listed.extend(page);
    }
    let codes: Vec<&str> = listed.iter().map(|link| link.code.as_str()).collect();
    ensure!(listed.len() == 9, "9 links of the owner: {codes:?}");
    ensure!(
        codes[..5] == ["Page004", "Page003", "Page002", "Page001", "Page000"],
        "newest first: {codes:?}"
    );
    ensure!(
        listed.windows(2).all(|pair| {
            (pair[0].created_at, &pair[0].code) > (pair[1].created_at, &pair[1].code)
        })
    );
    ensure!(ok!(store.list(other, 100, None)).len() == 1);

    ensure!(
        !ok!(store.delete(other, "Page000")),
        "no deleting another's link"
    );
    ensure!(ok!(store.delete(owner, "Page000")));
    ensure!(!ok!(store.delete(owner, "Page000")));
    ensure!(ok!(store.get(owner, "Page000")).is_none());

    // A deleted code is retired: no owner can insert it again, and the
    // tombstone is invisible to every read and write.
    ensure!(ok!(store.insert(other, &[new_link("Page000", None, None)])).is_empty());
    ensure!(ok!(store.insert(owner, &[new_link("Page000", None, None)])).is_empty());
    ensure!(
        ok!(store.update(
            owner,
            "Page000",
            &LinkChanges {
                target_url: Some("https://example.org/back".to_owned()),
                ..LinkChanges::default()
            }
        ))
        .is_none()
    );
    ensure!(
        !ok!(store.list(owner, 100, None))
            .iter()
            .any(|link| link.code == "Page000")
    );
    // Its idempotency key is freed with it: a retry makes a new link.
    ensure!(ok!(store.insert(owner, &[new_link("Tomb001", Some(900), Some("tomb"))])).len() == 1);
    ensure!(ok!(store.delete(owner, "Tomb001")));
    ensure!(ok!(store.find_by_idempotency_keys(owner, &["tomb"])).is_empty());
    ensure!(ok!(store.insert(owner, &[new_link("Tomb002", Some(901), Some("tomb"))])).len() == 1);
    ensure!(
        ok!(store.find_by_idempotency_keys(owner, &["tomb"]))["tomb"]
            .link
            .code
            == "Tomb002"
    );
    key_lifecycle_contract(store).await
}

/// Scopes, last use, revocation and rotation of API keys.
async fn key_lifecycle_contract(store: &dyn LinkStore) -> anyhow::Result<()> {
    let window = Duration::from_secs(120);
    let (reader_key, reader_hash) = generate_key();
    let reader =
        ok!(store.create_api_key("reader", &reader_hash, Scope::Read, Rate::per_second(5)));
    let listed = ok!(store.list_api_keys());
    let entry = listed
        .iter()
        .find(|key| key.id == reader)
        .context("a new key is listed")?;
    ensure!(entry.name == "reader" && entry.scope == Scope::Read);
    ensure!(entry.rate == Rate::per_second(5));
    ensure!(entry.last_used_at.is_none() && entry.revoked_at.is_none());
    ensure!(
        listed.windows(2).all(|pair| pair[0].id < pair[1].id),
        "oldest first"
    );

    // A lookup resolves the scope and records the use.
    ensure!(
        ok!(store.resolve_key(&hash_key(&reader_key)))
            == Some(Caller {
                owner: OwnerId(reader),
                scope: Scope::Read,
                rate: Rate::per_second(5),
            })
    );
    let used = ok!(store.list_api_keys());
    ensure!(
        used.iter()
            .any(|key| key.id == reader && key.last_used_at.is_some()),
        "last use recorded"
    );

    // A key's own rate: changed, then back to the writer's default.
    ensure!(ok!(store.set_api_key_rate(reader, Rate::per_second(7))));
    ensure!(
        ok!(store.resolve_key(&hash_key(&reader_key))).and_then(|caller| caller.rate)
            == Rate::per_second(7)
    );
    ensure!(ok!(store.set_api_key_rate(reader, None)));
    ensure!(
        ok!(store.resolve_key(&hash_key(&reader_key))).is_some_and(|caller| caller.rate.is_none())
    );
    ensure!(!ok!(store.set_api_key_rate(999_999, None)), "no such key");

    // Rotation: the new value and, during the grace period, the old one.
    let (rotated_key, rotated_hash) = generate_key();
    ensure!(ok!(store.rotate_api_key(
        reader,
        &rotated_hash,
        Duration::from_secs(3600)
    )));
    for key in [&reader_key, &rotated_key] {
        ensure!(
            ok!(store.resolve_key(&hash_key(key))).map(|caller| caller.owner)
                == Some(OwnerId(reader)),
            "both values work during the grace period"
        );
    }
    ensure!(ok!(store.retired_key_hashes(window)).is_empty());
    // A rotation without grace retires the old value at once.
    let (third_key, third_hash) = generate_key();
    ensure!(ok!(store.rotate_api_key(
        reader,
        &third_hash,
        Duration::ZERO
    )));
    tokio::time::sleep(Duration::from_millis(5)).await;
    ensure!(ok!(store.resolve_key(&hash_key(&rotated_key))).is_none());
    ensure!(ok!(store.resolve_key(&hash_key(&reader_key))).is_none());
    ensure!(ok!(store.resolve_key(&hash_key(&third_key))).is_some());
    // Both values it stopped are found by the poll: the one it moved aside
    // and the one it overwrote (the first, still in its grace period).
    let retired: HashSet<_> = ok!(store.retired_key_hashes(window)).into_iter().collect();
    ensure!(
        retired == HashSet::from([hash_key(&rotated_key), hash_key(&reader_key)]),
        "{retired:?}"
    );

    // Revocation: refused at once, and found by the poll, both values.
    ensure!(ok!(store.revoke_api_key(reader)));
    ensure!(!ok!(store.revoke_api_key(reader)), "revoked once");
    ensure!(!ok!(store.revoke_api_key(999_999)), "no such key");
    ensure!(!ok!(store.rotate_api_key(
        reader,
        &generate_key().1,
        Duration::ZERO
    )));
    ensure!(ok!(store.resolve_key(&hash_key(&third_key))).is_none());
    let retired: HashSet<_> = ok!(store.retired_key_hashes(window)).into_iter().collect();
    ensure!(retired.contains(&hash_key(&third_key)) && retired.contains(&hash_key(&rotated_key)));
    ensure!(
        ok!(store.list_api_keys())
            .iter()
            .any(|key| key.id == reader && key.revoked_at.is_some())
    );
    Ok(())
}

fn lease_request(namespace: &str, count: u64, request_id: &str) -> anyhow::Result<LeaseRequest> {
    LeaseRequest::parse(namespace, count, request_id, 1_000_000)
        .map_err(|error| anyhow::anyhow!("{error}"))
}

async fn lease_store_contract(store: Arc<dyn LeaseStore>) -> anyhow::Result<()> {
    let first = ok!(store.lease(&lease_request("links", 10, "")?));
    ensure!(first.end - first.start == 10 && !first.replayed);
    let second = ok!(store.lease(&lease_request("links", 5, "")?));
    ensure!(
        second.start == first.end,
        "ranges follow each other: {first:?} {second:?}"
    );
    let elsewhere = ok!(store.lease(&lease_request("other", 3, "")?));
    ensure!(
        elsewhere.start == 0 && elsewhere.end == 3,
        "namespaces are independent"
    );

    let keyed = ok!(store.lease(&lease_request("links", 7, "req-1")?));
    let replay = ok!(store.lease(&lease_request("links", 7, "req-1")?));
    ensure!(replay.replayed && (replay.start, replay.end) == (keyed.start, keyed.end));
    let mismatch = store.lease(&lease_request("links", 8, "req-1")?).await;
    ensure!(
        mismatch
            .as_ref()
            .is_err_and(|error| error.to_string().contains("request_id")),
        "a reused request id with another count is refused: {mismatch:?}"
    );

    // Concurrent leases never overlap.
    let leases = futures::future::join_all((0..20).map(|_| {
        let store = Arc::clone(&store);
        async move {
            store
                .lease(&lease_request("links", 100, "")?)
                .await
                .map_err(anyhow::Error::from)
        }
    }))
    .await
    .into_iter()
    .collect::<anyhow::Result<Vec<_>>>()?;
    let mut ranges: Vec<(i64, i64)> = leases
        .iter()
        .map(|lease| (lease.start, lease.end))
        .collect();
    ranges.sort_unstable();
    ensure!(
        ranges.windows(2).all(|pair| pair[0].1 <= pair[1].0),
        "disjoint: {ranges:?}"
    );
    ensure!(ranges[0].0 >= keyed.end);

    ensure!(ok!(store.purge_leases_older_than(Duration::from_secs(3600))) == 0);
    tokio::time::sleep(Duration::from_millis(5)).await;
    ensure!(ok!(store.purge_leases_older_than(Duration::ZERO)) == 1);
    let fresh = ok!(store.lease(&lease_request("links", 7, "req-1")?));
    ensure!(!fresh.replayed && fresh.start >= ranges[ranges.len() - 1].1);
    ok!(store.ping());
    Ok(())
}

/// `writer` stores what `source` must read.
async fn link_source_contract(
    writer: Arc<dyn LinkStore>,
    source: Arc<dyn LinkSource>,
) -> anyhow::Result<()> {
    let owner = api_key(writer.as_ref(), "source").await?;
    let expires_at = in_future(600);
    let link = NewLink {
        redirect_status: RedirectStatus::TemporaryRedirect,
        forward_query: true,
        expires_at: Some(expires_at),
        ..new_link("Src0001", Some(1), None)
    };
    ok!(writer.insert(owner, std::slice::from_ref(&link)));
    ok!(writer.update(
        owner,
        "Src0001",
        &LinkChanges {
            enabled: Some(false),
            ..LinkChanges::default()
        }
    ));
    let (found, answered_by) = ok!(source.find("Src0001"));
    ensure!(answered_by == Source::Primary, "no replicas configured");
    ensure!(
        found
            == Some(CachedLink {
                target_url: link.target_url.clone(),
                redirect_status: RedirectStatus::TemporaryRedirect,
                forward_query: true,
                expires_at: Some(expires_at),
                enabled: false,
                options: LinkOptions::default(),
            }),
        "read as written: {found:?}"
    );
    // Options, where a link has them, come with it.
    let options = sample_options();
    ok!(writer.insert(
        owner,
        &[NewLink {
            options: options.clone(),
            ..new_link("Src0002", Some(2), None)
        }]
    ));
    ensure!(
        ok!(source.find("Src0002")).0.map(|found| found.options) == Some(options),
        "options read as written"
    );
    ensure!(
        ok!(source.find("src0001")).0.is_none(),
        "codes are case-sensitive"
    );
    ensure!(ok!(source.find_on_primary("Nothing")).is_none());
    ensure!(ok!(writer.delete(owner, "Src0001")));
    ensure!(
        ok!(source.find("Src0001")).0.is_none() && ok!(source.find_on_primary("Src0001")).is_none(),
        "a tombstone reads as missing"
    );
    ensure!(source.has_primary() && source.any_healthy());
    Ok(())
}

fn stored(code: &str, expires_at: Option<SystemTime>) -> StoredLink {
    StoredLink {
        code: code.to_owned(),
        target_url: format!("https://example.com/{code}"),
        redirect_status: RedirectStatus::MovedPermanently,
        forward_query: false,
        expires_at,
        enabled: true,
        is_alias: false,
        created_at: micros_ago(1),
        updated_at: micros_ago(1),
        blocked: false,
        tags: Vec::new(),
        options: LinkOptions::default(),
    }
}

async fn next_announcement(
    announcements: &mut mpsc::UnboundedReceiver<String>,
) -> anyhow::Result<String> {
    tokio::time::timeout(TIMEOUT, announcements.recv())
        .await
        .context("no announcement within the timeout")?
        .context("announcements closed")
}

/// The writer's side (`cache`) and redirect's side (`shared`) of one cache;
/// `announcements` yields each invalidation message.
async fn cache_contract(
    cache: Arc<dyn LinkCache>,
    shared: Arc<dyn SharedCache>,
    mut announcements: mpsc::UnboundedReceiver<String>,
) -> anyhow::Result<()> {
    // Write-through: readable at once, announced in one message per batch.
    cache
        .write_through(&[
            stored("Cch0001", None),
            stored("Cch0002", Some(in_future(600))),
        ])
        .await;
    ensure!(next_announcement(&mut announcements).await? == "Cch0001 Cch0002");
    let Cached::Link(link) = shared.get("Cch0001").await? else {
        anyhow::bail!("a written-through link is cached");
    };
    ensure!(
        link.target_url == "https://example.com/Cch0001"
            && link.redirect_status == RedirectStatus::MovedPermanently
    );

    // Fills never replace what the writer wrote.
    let stale = CachedLink {
        target_url: "https://stale.example/".to_owned(),
        redirect_status: RedirectStatus::Found,
        forward_query: false,
        expires_at: None,
        enabled: true,
        options: LinkOptions::default(),
    };
    shared.fill("Cch0001", Some(&stale)).await?;
    shared.fill("Cch0002", None).await?;
    ensure!(
        matches!(shared.get("Cch0001").await?, Cached::Link(link) if link.target_url.ends_with("Cch0001"))
    );
    ensure!(matches!(shared.get("Cch0002").await?, Cached::Link(_)));

    // An update overwrites and is announced; an expired one is dropped.
    let mut updated = stored("Cch0001", None);
    updated.enabled = false;
    cache.replace(&updated).await;
    ensure!(next_announcement(&mut announcements).await? == "Cch0001");
    ensure!(matches!(shared.get("Cch0001").await?, Cached::Link(link) if !link.enabled));
    cache.replace(&stored("Cch0002", Some(micros_ago(1)))).await;
    ensure!(next_announcement(&mut announcements).await? == "Cch0002");
    ensure!(matches!(shared.get("Cch0002").await?, Cached::Absent));

    // A delete leaves a tombstone that a fill cannot overwrite.
    cache.remove("Cch0001").await;
    ensure!(next_announcement(&mut announcements).await? == "Cch0001");
    ensure!(matches!(shared.get("Cch0001").await?, Cached::Missing));
    shared.fill("Cch0001", Some(&stale)).await?;
    ensure!(matches!(shared.get("Cch0001").await?, Cached::Missing));

    // Fills land where nothing is, negative ones included.
    ensure!(matches!(shared.get("Cch0003").await?, Cached::Absent));
    shared.fill("Cch0003", None).await?;
    ensure!(matches!(shared.get("Cch0003").await?, Cached::Missing));
    shared.fill("Cch0004", Some(&stale)).await?;
    ensure!(matches!(shared.get("Cch0004").await?, Cached::Link(link) if *link == stale));
    Ok(())
}

/// The values bound the click store contract folds with: the default, which
/// none of its groups reaches.
const VALUES: usize = DEFAULT_VALUES_PER_BUCKET;
/// A top list long enough for every value.
const ALL: usize = usize::MAX;

/// The `class` values of every row (the default view's).
fn every_class() -> Vec<i16> {
    tinyurl_analytics::ClassFilter::default().codes()
}

fn click(code: &str, minute: i64, referrer: &str, bot: bool, count: u64) -> ClickLine {
    ClickLine {
        code: code.to_owned(),
        minute,
        referrer: referrer.to_owned(),
        browser: if bot { "googlebot" } else { "firefox" }.to_owned(),
        device: if bot { "bot" } else { "desktop" }.to_owned(),
        country: "NL".to_owned(),
        class: if bot {
            TrafficClass::Crawler
        } else {
            TrafficClass::Human
        },
        count,
        rule: None,
    }
}

/// Folding exactly once per batch id, day rollups made from minutes exactly
/// once (before, during and after a roll-up, late minutes included),
/// reading by range, the lifetime totals, and retention that drops old
/// minutes but keeps days and anything not rolled up yet.
async fn click_store_contract(store: Arc<dyn ClickStore>) -> anyhow::Result<()> {
    let now = minute_of(SystemTime::now());
    // The roll-up mark starts at the migration's minute: `soon` is after it,
    // `old` long before it (a late batch).
    let soon = now + 5;
    let old = now - 10 * 24 * 60;
    let total = |rows: &[RollupRow], bot: bool| -> i64 {
        rows.iter()
            .filter(|row| row.dimension == Dimension::Total && row.bot == bot)
            .map(|row| row.clicks)
            .sum()
    };
    let days_total = |store: Arc<dyn ClickStore>, code: &'static str| async move {
        let rows = store
            .rollups(code, RollupTable::Days, (0, i32::MAX), ALL, &every_class())
            .await?;
        anyhow::Ok(total(&rows, false))
    };

    let first = Fold::of(&[
        click("aaa", i64::from(soon), "a.example", false, 3),
        click("aaa", i64::from(soon), "-", true, 2),
        click("aaa", i64::from(old), "b.example", false, 5),
        click("bbb", i64::from(soon), "-", false, 1),
    ]);
    ensure!(store.fold("batch-1", &first, VALUES).await? == Folded::Now);
    // A redelivery of the same batch changes nothing.
    ensure!(store.fold("batch-1", &first, VALUES).await? == Folded::Before);
    ensure!(store.totals("aaa").await? == (8, 2));
    ensure!(store.totals("bbb").await? == (1, 0));
    ensure!(store.totals("nothing").await? == (0, 0));
    let second = Fold::of(&[click("aaa", i64::from(soon), "a.example", false, 4)]);
    ensure!(store.fold("batch-2", &second, VALUES).await? == Folded::Now);
    ensure!(store.totals("aaa").await? == (12, 2));

    let recent = store
        .rollups(
            "aaa",
            RollupTable::Minutes,
            (soon - 5, soon + 1),
            ALL,
            &every_class(),
        )
        .await?;
    ensure!(
        total(&recent, false) == 7 && total(&recent, true) == 2,
        "{recent:?}"
    );
    let referrers: Vec<(&str, i64)> = recent
        .iter()
        .filter(|row| row.dimension == Dimension::Referrer && !row.bot)
        .map(|row| (row.value.as_str(), row.clicks))
        .collect();
    ensure!(referrers == [("a.example", 7)], "{referrers:?}");
    // One class alone: the crawler's rows only; previewers have none.
    for (classes, expected) in [
        (&["crawler"][..], (0, 2)),
        (&["previewer", "human"][..], (7, 0)),
    ] {
        let codes = tinyurl_analytics::ClassFilter::parse(classes)?.codes();
        let rows = store
            .rollups(
                "aaa",
                RollupTable::Minutes,
                (soon - 5, soon + 1),
                ALL,
                &codes,
            )
            .await?;
        ensure!(
            (total(&rows, false), total(&rows, true)) == expected,
            "{classes:?}: {rows:?}"
        );
        let exported = store
            .export(
                "aaa",
                RollupTable::Minutes,
                (soon - 5, soon + 1),
                1,
                1_000,
                &codes,
            )
            .await?;
        ensure!(
            (total(&exported, false), total(&exported, true)) == expected,
            "export of {classes:?}: {exported:?}"
        );
    }
    // Days before the roll-up: the late minute's day rows plus the minutes
    // not rolled up yet.
    ensure!(days_total(Arc::clone(&store), "aaa").await? == 12);

    // Rolling up changes no answer and counts nothing twice.
    // (The mark starts where the migration put it: maybe more than a
    // slice back.)
    let mut rolled = store.roll_up_days(soon + 1, VALUES).await?;
    let mut rows = rolled.rows;
    while !rolled.caught_up {
        rolled = store.roll_up_days(soon + 1, VALUES).await?;
        rows += rolled.rows;
    }
    ensure!(rows > 0, "{rolled:?}");
    ensure!(
        store.roll_up_days(soon + 1, VALUES).await?
            == RolledUp {
                rows: 0,
                caught_up: true
            }
    );
    ensure!(days_total(Arc::clone(&store), "aaa").await? == 12);
    let day = (soon / MINUTES_PER_DAY, soon / MINUTES_PER_DAY + 1);
    let today = store
        .rollups(
            "aaa",
            RollupTable::Days,
            (day.0, day.1),
            ALL,
            &every_class(),
        )
        .await?;
    ensure!(
        total(&today, false) == 7 && total(&today, true) == 2,
        "{today:?}"
    );
    // A batch for a minute already rolled up goes to the days itself.
    let late = Fold::of(&[click("aaa", i64::from(soon), "c.example", false, 6)]);
    ensure!(store.fold("batch-3", &late, VALUES).await? == Folded::Now);
    ensure!(days_total(Arc::clone(&store), "aaa").await? == 18);
    let minutes = store
        .rollups(
            "aaa",
            RollupTable::Minutes,
            (soon, soon + 1),
            ALL,
            &every_class(),
        )
        .await?;
    ensure!(total(&minutes, false) == 13, "{minutes:?}");
    // One roll-up call takes at most a slice of minutes.
    let far = soon + 3 * ROLL_UP_SLICE_MINUTES;
    let step = store.roll_up_days(far, VALUES).await?;
    ensure!(!step.caught_up, "{step:?}");
    while !store.roll_up_days(far, VALUES).await?.caught_up {}
    ensure!(days_total(Arc::clone(&store), "aaa").await? == 18);

    // Retention: minutes older than 7 days go (in slices), days stay, batch
    // ids older than their retention are forgotten, and a minute not rolled
    // up yet is never deleted, however old the cutoff says it is.
    let unrolled = far + 10;
    let pending = Fold::of(&[click("ccc", i64::from(unrolled), "-", false, 1)]);
    ensure!(store.fold("batch-4", &pending, VALUES).await? == Folded::Now);
    let mut pruned = 0;
    loop {
        let deleted = store
            .prune(
                unrolled + 100,
                i32::MIN,
                SystemTime::now() + Duration::from_secs(1),
                1,
            )
            .await?;
        if deleted == 0 {
            break;
        }
        pruned += deleted;
    }
    // Four (link, minute, class) groups were folded before the mark, a row
    // each at least (Postgres keeps one per group, SQLite one per value),
    // and four batch ids.
    ensure!(pruned >= 4 + 4, "minute rows and batch ids: {pruned}");
    let kept = store
        .rollups(
            "ccc",
            RollupTable::Minutes,
            (unrolled, unrolled + 1),
            ALL,
            &every_class(),
        )
        .await?;
    ensure!(total(&kept, false) == 1, "not rolled up, so kept: {kept:?}");
    let gone = store
        .rollups("aaa", RollupTable::Minutes, (0, far), ALL, &every_class())
        .await?;
    ensure!(gone.is_empty(), "{gone:?}");
    ensure!(
        days_total(Arc::clone(&store), "aaa").await? == 18,
        "days are kept"
    );
    ensure!(days_total(Arc::clone(&store), "ccc").await? == 1);
    Ok(())
}

#[tokio::test]
async fn click_store_postgres() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let store = PostgresLinkStore::connect(&database.primary_url.clone().into(), 4, TIMEOUT)?;
    store.migrate().await?;
    click_store_contract(store.clicks()).await?;
    fold_together_contract(store.clicks()).await
}

/// Several batches folded in one transaction (the Postgres store's fast
/// path): all recorded and counted, or, when one of them was folded before,
/// nothing written at all, so folding them one by one afterwards counts each
/// exactly once.
async fn fold_together_contract(store: Arc<dyn ClickStore>) -> anyhow::Result<()> {
    let now = minute_of(SystemTime::now());
    let minute = i64::from(now);
    let first = Fold::of(&[click("tog", minute, "a.example", false, 2)]);
    let second = Fold::of(&[click("tog", minute, "b.example", false, 3)]);
    let both = Fold::of(&[
        click("tog", minute, "a.example", false, 2),
        click("tog", minute, "b.example", false, 3),
    ]);
    ensure!(store.fold("together-1", &first, VALUES).await? == Folded::Now);
    // together-1 was folded: nothing of the pair is written.
    ensure!(
        !store
            .fold_together(&["together-1", "together-2"], &both, VALUES)
            .await?
    );
    ensure!(store.totals("tog").await? == (2, 0));
    ensure!(store.fold("together-2", &second, VALUES).await? == Folded::Now);
    ensure!(store.totals("tog").await? == (5, 0));
    // Two new ones: both counted once, in one transaction, and recorded.
    ensure!(
        store
            .fold_together(&["together-3", "together-4"], &both, VALUES)
            .await?
    );
    ensure!(store.totals("tog").await? == (10, 0));
    ensure!(store.fold("together-4", &second, VALUES).await? == Folded::Before);
    ensure!(
        !store
            .fold_together(&["together-3", "together-5"], &both, VALUES)
            .await?
    );
    ensure!(store.totals("tog").await? == (10, 0));
    let minutes = store
        .rollups(
            "tog",
            RollupTable::Minutes,
            (now - 1, now + 1),
            ALL,
            &every_class(),
        )
        .await?;
    let referrers: std::collections::BTreeMap<&str, i64> = minutes
        .iter()
        .filter(|row| row.dimension == Dimension::Referrer)
        .map(|row| (row.value.as_str(), row.clicks))
        .collect();
    ensure!(
        referrers == std::collections::BTreeMap::from([("a.example", 4), ("b.example", 6)]),
        "{referrers:?}"
    );
    Ok(())
}

#[tokio::test]
async fn click_store_sqlite() -> anyhow::Result<()> {
    let dir = ScratchDir::new("conformance", None)?;
    let store = SqliteLinkStore::open(&sqlite_file(&dir), TIMEOUT).await?;
    click_store_contract(store.clicks()).await
}

/// A roll-up window larger than what the Postgres store fetches and adds at
/// a time (50,000 rows): every link's day rows come out as its minutes went
/// in, none lost or counted twice where one share ends and the next begins,
/// and the mark moves past them.
async fn roll_up_in_shares_contract(store: Arc<dyn ClickStore>) -> anyhow::Result<()> {
    const LINKS: usize = 5_000;
    // After the mark (the minute the database was migrated).
    let minute = minute_of(SystemTime::now()) + 2;
    let code = |index: usize| format!("share{index:05}");
    let referrer = |index: usize| {
        if index.is_multiple_of(3) {
            "a.example"
        } else {
            "b.example"
        }
    };
    let human = |index: usize| 1 + (index % 7) as u64;
    let lines: Vec<ClickLine> = (0..LINKS)
        .flat_map(|index| {
            [
                click(
                    &code(index),
                    i64::from(minute),
                    referrer(index),
                    false,
                    human(index),
                ),
                click(&code(index), i64::from(minute), "-", true, 2),
            ]
        })
        .collect();
    // Eleven rows a link in the days' shape (a total and four values for
    // people, and the bots' class besides): 55,000 in the window.
    for (batch, chunk) in lines.chunks(2_000).enumerate() {
        let folded = store
            .fold(&format!("shares-{batch}"), &Fold::of(chunk), VALUES)
            .await?;
        ensure!(folded == Folded::Now);
    }
    while !store.roll_up_days(minute + 1, VALUES).await?.caught_up {}
    let day = minute / MINUTES_PER_DAY;
    for index in 0..LINKS {
        let rows = store
            .rollups(
                &code(index),
                RollupTable::Days,
                (day, day + 1),
                ALL,
                &every_class(),
            )
            .await?;
        let mut seen: Vec<(Dimension, &str, bool, i64)> = rows
            .iter()
            .map(|row| (row.dimension, row.value.as_str(), row.bot, row.clicks))
            .collect();
        seen.sort();
        let people = i64::try_from(human(index))?;
        let mut expected = vec![
            (Dimension::Total, "", false, people),
            (Dimension::Total, "", true, 2),
            (Dimension::Referrer, referrer(index), false, people),
            (Dimension::Referrer, "-", true, 2),
            (Dimension::Country, "NL", false, people),
            (Dimension::Country, "NL", true, 2),
            (Dimension::Browser, "firefox", false, people),
            (Dimension::Browser, "googlebot", true, 2),
            (Dimension::Device, "bot", true, 2),
            (Dimension::Device, "desktop", false, people),
            (Dimension::Class, "crawler", true, 2),
        ];
        expected.sort();
        ensure!(seen == expected, "{}: {seen:?}", code(index));
    }
    // Rolled up, not read from the minutes beside the days: nothing is left
    // after the mark.
    ensure!(
        store.roll_up_days(minute + 1, VALUES).await?
            == RolledUp {
                rows: 0,
                caught_up: true
            }
    );
    Ok(())
}

#[tokio::test]
async fn roll_up_in_shares_postgres() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let store = PostgresLinkStore::connect(&database.primary_url.clone().into(), 4, TIMEOUT)?;
    store.migrate().await?;
    roll_up_in_shares_contract(store.clicks()).await
}

#[tokio::test]
async fn roll_up_in_shares_sqlite() -> anyhow::Result<()> {
    let dir = ScratchDir::new("conformance", None)?;
    let store = SqliteLinkStore::open(&sqlite_file(&dir), TIMEOUT).await?;
    roll_up_in_shares_contract(store.clicks()).await
}

/// Distinct values bounded per group: a fold keeps the heaviest new values
/// that fit beside the stored ones and adds the rest to "other" (so no click
/// is lost), in minutes, in late day rows and in the roll-up; writers
/// folding one minute at once share the room; a stats read answers the top
/// values and one "other"; day retention deletes old days.
async fn click_values_contract(store: Arc<dyn ClickStore>) -> anyhow::Result<()> {
    const BOUND: usize = 5;
    let now = minute_of(SystemTime::now());
    // After the roll-up mark (the migration's minute), and three minutes in
    // one day.
    let mut base = now + 5;
    if base.rem_euclid(MINUTES_PER_DAY) > MINUTES_PER_DAY - 4 {
        base = (base.div_euclid(MINUTES_PER_DAY) + 1) * MINUTES_PER_DAY;
    }
    let day = base.div_euclid(MINUTES_PER_DAY);
    let referrers = |rows: &[RollupRow]| -> HashMap<String, i64> {
        let mut found = HashMap::new();
        for row in rows
            .iter()
            .filter(|row| row.dimension == Dimension::Referrer && !row.bot)
        {
            *found.entry(row.value.clone()).or_default() += row.clicks;
        }
        found
    };
    let named = |found: &HashMap<String, i64>| found.keys().filter(|value| *value != OTHER).count();
    let sum = |found: &HashMap<String, i64>| found.values().sum::<i64>();

    // Eight new values in one batch: the five heaviest are kept.
    let lines: Vec<ClickLine> = (0..8u64)
        .map(|index| {
            click(
                "vvv",
                i64::from(base),
                &format!("r{index}.example"),
                false,
                8 - index,
            )
        })
        .collect();
    ensure!(store.fold("values-1", &Fold::of(&lines), BOUND).await? == Folded::Now);
    let minute = referrers(
        &store
            .rollups(
                "vvv",
                RollupTable::Minutes,
                (base, base + 1),
                ALL,
                &every_class(),
            )
            .await?,
    );
    ensure!(named(&minute) == BOUND && sum(&minute) == 36, "{minute:?}");
    ensure!(minute.get("r0.example") == Some(&8) && minute.get("r4.example") == Some(&4));
    ensure!(
        minute.get(OTHER) == Some(&6),
        "r5..r7 are other: {minute:?}"
    );
    // A stored value still counts; a new one finds no room.
    let more = Fold::of(&[
        click("vvv", i64::from(base), "r0.example", false, 1),
        click("vvv", i64::from(base), "new.example", false, 50),
    ]);
    ensure!(store.fold("values-2", &more, BOUND).await? == Folded::Now);
    let minute = referrers(
        &store
            .rollups(
                "vvv",
                RollupTable::Minutes,
                (base, base + 1),
                ALL,
                &every_class(),
            )
            .await?,
    );
    ensure!(named(&minute) == BOUND && sum(&minute) == 87, "{minute:?}");
    ensure!(minute.get("r0.example") == Some(&9) && minute.get(OTHER) == Some(&56));

    // Writers folding one new minute at once: the room is shared, never
    // exceeded.
    let busy = base + 1;
    let mut folds = Vec::new();
    for writer in 0..8u64 {
        let store = Arc::clone(&store);
        folds.push(tokio::spawn(async move {
            let lines: Vec<ClickLine> = (0..4u64)
                .map(|index| {
                    click(
                        "vvv",
                        i64::from(busy),
                        &format!("w{writer}-{index}.example"),
                        false,
                        1,
                    )
                })
                .collect();
            store
                .fold(&format!("values-busy-{writer}"), &Fold::of(&lines), BOUND)
                .await
        }));
    }
    for fold in folds {
        ensure!(fold.await?? == Folded::Now);
    }
    let minute = referrers(
        &store
            .rollups(
                "vvv",
                RollupTable::Minutes,
                (busy, busy + 1),
                ALL,
                &every_class(),
            )
            .await?,
    );
    ensure!(named(&minute) == BOUND && sum(&minute) == 32, "{minute:?}");

    // The roll-up bounds the day: ten named values across two minutes, five
    // kept, the heaviest.
    while !store.roll_up_days(busy + 1, BOUND).await?.caught_up {}
    let days = referrers(
        &store
            .rollups(
                "vvv",
                RollupTable::Days,
                (day, day + 1),
                ALL,
                &every_class(),
            )
            .await?,
    );
    ensure!(named(&days) == BOUND && sum(&days) == 87 + 32, "{days:?}");
    ensure!(
        days.get("r0.example") == Some(&9) && days.get("r3.example") == Some(&5),
        "{days:?}"
    );
    // A late minute goes to its day directly, bounded there too.
    let late = Fold::of(&[click(
        "vvv",
        i64::from(base + 2),
        "late.example",
        false,
        100,
    )]);
    ensure!(store.fold("values-late", &late, BOUND).await? == Folded::Now);
    let days = referrers(
        &store
            .rollups(
                "vvv",
                RollupTable::Days,
                (day, day + 1),
                ALL,
                &every_class(),
            )
            .await?,
    );
    ensure!(named(&days) == BOUND && sum(&days) == 219, "{days:?}");
    ensure!(!days.contains_key("late.example"));
    let minute = referrers(
        &store
            .rollups(
                "vvv",
                RollupTable::Minutes,
                (base + 2, base + 3),
                ALL,
                &every_class(),
            )
            .await?,
    );
    ensure!(
        minute.get("late.example") == Some(&100),
        "its minute had room: {minute:?}"
    );

    // A stats read: the top two and everything else as one "other" row.
    let top = referrers(
        &store
            .rollups("vvv", RollupTable::Days, (day, day + 1), 2, &every_class())
            .await?,
    );
    ensure!(named(&top) == 2 && sum(&top) == 219, "{top:?}");
    ensure!(
        top.get("r0.example") == Some(&9) && top.get("r1.example") == Some(&7),
        "{top:?}"
    );

    // Day retention: days before the cutoff go, the rest stay.
    while store
        .prune(i32::MIN, day, SystemTime::UNIX_EPOCH, 2)
        .await?
        > 0
    {}
    ensure!(
        sum(&referrers(
            &store
                .rollups(
                    "vvv",
                    RollupTable::Days,
                    (day, day + 1),
                    ALL,
                    &every_class()
                )
                .await?
        )) == 219
    );
    while store
        .prune(i32::MIN, day + 1, SystemTime::UNIX_EPOCH, 2)
        .await?
        > 0
    {}
    let gone = store
        .rollups(
            "vvv",
            RollupTable::Days,
            (day, day + 1),
            ALL,
            &every_class(),
        )
        .await?;
    // Only the minutes not rolled up yet remain in the day's answer.
    ensure!(sum(&referrers(&gone)) == 0, "{gone:?}");
    Ok(())
}

#[tokio::test]
async fn click_values_postgres() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let store = PostgresLinkStore::connect(&database.primary_url.clone().into(), 8, TIMEOUT)?;
    store.migrate().await?;
    click_values_contract(store.clicks()).await
}

#[tokio::test]
async fn click_values_sqlite() -> anyhow::Result<()> {
    let dir = ScratchDir::new("conformance", None)?;
    let store = SqliteLinkStore::open(&sqlite_file(&dir), TIMEOUT).await?;
    click_values_contract(store.clicks()).await
}

fn sqlite_file(dir: &ScratchDir) -> std::path::PathBuf {
    dir.path().join("tinyurl.db")
}

/// Idempotency keys: a key names the link it created, for the retention
/// only; a deleted link's key, an expired key and a key whose code was taken
/// are free again; pruning forgets expired keys. `store` keeps keys for
/// [`KEY_RETENTION`].
async fn idempotency_contract(store: Arc<dyn LinkStore>) -> anyhow::Result<()> {
    let store = store.as_ref();
    let owner = api_key(store, "keys").await?;
    let codes = |inserted: &HashMap<String, (SystemTime, SystemTime)>| {
        let mut codes: Vec<String> = inserted.keys().cloned().collect();
        codes.sort();
        codes
    };
    let replay = |key: &'static str| async move {
        store
            .find_by_idempotency_keys(owner, &[key])
            .await
            .map(|found| found.get(key).map(|replay| replay.link.code.clone()))
            .map_err(|error| anyhow::anyhow!("{error}"))
    };

    // Two items with one key in one batch: the first creates, the second
    // is the first's replay.
    let first = ok!(store.insert(
        owner,
        &[
            new_link("Keyed01", Some(1), Some("k")),
            new_link("Keyed02", Some(2), Some("k")),
        ]
    ));
    ensure!(codes(&first) == ["Keyed01"], "one link per key");
    ensure!(replay("k").await?.as_deref() == Some("Keyed01"));

    // A deleted link's key creates anew.
    ensure!(ok!(store.delete(owner, "Keyed01")));
    ensure!(
        replay("k").await?.is_none(),
        "a deleted link is not replayed"
    );
    let again = ok!(store.insert(owner, &[new_link("Keyed03", Some(3), Some("k"))]));
    ensure!(
        codes(&again) == ["Keyed03"],
        "the key is free after a delete"
    );
    ensure!(replay("k").await?.as_deref() == Some("Keyed03"));

    // A key whose alias was taken does not stay behind naming that alias.
    ensure!(ok!(store.insert(owner, &[new_link("taken", None, None)])).len() == 1);
    ensure!(ok!(store.insert(owner, &[new_link("taken", None, Some("a"))])).is_empty());
    ensure!(
        replay("a").await?.is_none(),
        "a failed create has no replay"
    );
    let retried = ok!(store.insert(owner, &[new_link("Keyed04", Some(4), Some("a"))]));
    ensure!(
        codes(&retried) == ["Keyed04"],
        "the key was not kept: {retried:?}"
    );

    // Past the retention a key is forgotten: no replay, a retry creates.
    tokio::time::sleep(KEY_RETENTION + Duration::from_millis(200)).await;
    ensure!(
        replay("k").await?.is_none(),
        "an expired key is not replayed"
    );
    let late = ok!(store.insert(owner, &[new_link("Keyed05", Some(5), Some("k"))]));
    ensure!(
        codes(&late) == ["Keyed05"],
        "an expired key is claimed anew"
    );
    ensure!(replay("k").await?.as_deref() == Some("Keyed05"));

    // Pruning deletes the expired key ("a"), not the renewed one ("k").
    ensure!(ok!(store.prune_idempotency_keys(1)) == 1);
    ensure!(ok!(store.prune_idempotency_keys(100)) == 0);
    ensure!(replay("k").await?.as_deref() == Some("Keyed05"));
    // The links themselves stay.
    ensure!(ok!(store.get(owner, "Keyed04")).is_some());
    Ok(())
}

const KEY_RETENTION: Duration = Duration::from_secs(2);

#[tokio::test]
async fn idempotency_keys_postgres() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let store = PostgresLinkStore::connect(&database.primary_url.clone().into(), 4, TIMEOUT)?
        .with_idempotency_retention(KEY_RETENTION);
    store.migrate().await?;
    idempotency_contract(Arc::new(store)).await
}

#[tokio::test]
async fn idempotency_keys_sqlite() -> anyhow::Result<()> {
    let dir = ScratchDir::new("conformance", None)?;
    let store = SqliteLinkStore::open(&sqlite_file(&dir), TIMEOUT)
        .await?
        .with_idempotency_retention(KEY_RETENTION);
    idempotency_contract(Arc::new(store)).await
}

/// A database made by the schema before partitioning (V6), with links of
/// every kind, migrated to the current schema: every link, tombstone, code
/// and idempotency answer survives, in the configured number of partitions.
#[tokio::test]
async fn migration_to_partitioned_links_keeps_everything() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let url: secrecy::SecretString = database.primary_url.clone().into();
    let store = PostgresLinkStore::connect(&url, 2, TIMEOUT)?.with_link_partitions(4);
    store.migrate_to(Some(6)).await?;
    let owner = v6_key(&database.primary_url, "before").await?;
    let db = tinyurl_harness::postgres::connect(&database.primary_url).await?;
    db.batch_execute(&format!(
        "INSERT INTO links (code, id, owner_key_id, target_url, redirect_status, forward_query,
                            expires_at, enabled, is_alias, idempotency_key, created_at, updated_at)
         VALUES
           ('Gen0001', 1, {o}, 'https://example.com/1', 302, false, NULL, true, false, 'key-1',
            now() - interval '1 hour', now() - interval '1 hour'),
           ('alias-1', NULL, {o}, 'https://example.com/a', 308, true,
            '2999-01-01T00:00:00Z', true, true, 'key-a', now() - interval '2 hours', now()),
           ('Off0001', 2, {o}, 'https://example.com/off', 301, false, NULL, false, false, NULL,
            now() - interval '3 hours', now() - interval '1 hour'),
           ('Gone001', 3, {o}, NULL, 302, false, NULL, false, false, NULL,
            now() - interval '4 hours', now()),
           ('Old0001', 4, {o}, 'https://example.com/old', 307, false, NULL, true, false, 'key-old',
            now() - interval '2 days', now() - interval '2 days')",
        o = owner.0
    ))
    .await?;
    let before: HashMap<String, StoredLink> = {
        let mut links = HashMap::new();
        for code in ["Gen0001", "alias-1", "Off0001", "Old0001"] {
            let row = db
                .query_one(
                    "SELECT code, target_url, redirect_status, forward_query, expires_at, enabled,
                            is_alias, created_at, updated_at FROM links WHERE code = $1",
                    &[&code],
                )
                .await?;
            let status: i16 = row.get(2);
            links.insert(
                code.to_owned(),
                StoredLink {
                    code: row.get(0),
                    target_url: row.get(1),
                    redirect_status: RedirectStatus::from_code(i64::from(status))
                        .context("status")?,
                    forward_query: row.get(3),
                    expires_at: row.get(4),
                    enabled: row.get(5),
                    is_alias: row.get(6),
                    created_at: row.get(7),
                    updated_at: row.get(8),
                    blocked: false,
                    tags: Vec::new(),
                    options: LinkOptions::default(),
                },
            );
        }
        links
    };

    store.migrate().await?;

    let partitions = link_partitions(&db).await?;
    ensure!(partitions == 4, "{partitions} partitions");
    for (code, link) in &before {
        let after = ok!(store.get(owner, code)).with_context(|| format!("{code} lost"))?;
        ensure!(&after == link, "{code}: {link:?} became {after:?}");
    }
    ensure!(
        ok!(store.get(owner, "Gone001")).is_none(),
        "a tombstone stays one"
    );
    let taken = ok!(store.insert(owner, &[new_link("Gone001", None, None)]));
    ensure!(taken.is_empty(), "a tombstone's code stays taken");
    let replays = ok!(store.find_by_idempotency_keys(owner, &["key-1", "key-a", "key-old"]));
    ensure!(replays.get("key-1").map(|replay| replay.link.code.as_str()) == Some("Gen0001"));
    ensure!(replays.get("key-a").map(|replay| replay.link.code.as_str()) == Some("alias-1"));
    ensure!(
        !replays.contains_key("key-old"),
        "a key older than the retention is not carried over"
    );
    let again = ok!(store.insert(owner, &[new_link("Gen0009", Some(9), Some("key-1"))]));
    ensure!(again.is_empty(), "a carried key still answers retries");
    let listed = ok!(store.list(owner, 10, None));
    let order: Vec<&str> = listed.iter().map(|link| link.code.as_str()).collect();
    ensure!(
        order == ["Gen0001", "alias-1", "Off0001", "Old0001"],
        "newest first: {order:?}"
    );
    Ok(())
}

/// Rollups folded under V20 (a bot flag) read after V21 (a class per row):
/// every click is still counted; a bot total is split by the class rows of
/// its bucket, what they do not cover (bots folded before classes existed)
/// stays a bot of no recorded kind, as do the other dimensions' bot rows;
/// and the default view answers what it answered before.
#[tokio::test]
async fn migration_to_click_classes_keeps_every_click() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let url: secrecy::SecretString = database.primary_url.clone().into();
    let store = PostgresLinkStore::connect(&url, 2, TIMEOUT)?;
    store.migrate_to(Some(20)).await?;
    let db = tinyurl_harness::postgres::connect(&database.primary_url).await?;
    let minute = minute_of(SystemTime::now()) - 30;
    let day = minute.div_euclid(MINUTES_PER_DAY) - 3;
    // Minute `minute`: 4 people, 6 bots (3 previewer, 2 crawler, 1 of no
    // recorded kind). Day `day`: 5 people, 7 bots, 2 of them monitors.
    db.batch_execute(&format!(
        "INSERT INTO click_minutes (code, minute, dimension, value, bot, clicks) VALUES
           ('mig', {minute}, 0, '', false, 4), ('mig', {minute}, 0, '', true, 6),
           ('mig', {minute}, 6, 'previewer', true, 3), ('mig', {minute}, 6, 'crawler', true, 2),
           ('mig', {minute}, 2, 'DE', false, 4), ('mig', {minute}, 2, 'US', true, 6),
           ('mig', {minute}, 3, 'slack', true, 3);
         INSERT INTO click_days (code, day, dimension, value, bot, clicks) VALUES
           ('mig', {day}, 0, '', false, 5), ('mig', {day}, 0, '', true, 7),
           ('mig', {day}, 6, 'monitor', true, 2), ('mig', {day}, 1, 'a.example', false, 5),
           ('mig', {day}, 8, '', false, 5);
         UPDATE click_rollup_mark SET rolled_through = {minute} - 60;"
    ))
    .await?;
    store.migrate().await?;

    let rows = |table: &'static str, bucket: &'static str| {
        let db = &db;
        async move {
            let rows = db
                .query(
                    &format!(
                        "SELECT dimension, value, class, clicks FROM {table}
                          WHERE code = 'mig' ORDER BY {bucket}, dimension, value, class"
                    ),
                    &[],
                )
                .await?;
            anyhow::Ok(
                rows.iter()
                    .map(|row| {
                        (
                            row.get::<_, i16>(0),
                            row.get::<_, String>(1),
                            row.get::<_, i16>(2),
                            row.get::<_, i64>(3),
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        }
    };
    let row = |dimension: i16, value: &str, class: i16, clicks: i64| {
        (dimension, value.to_owned(), class, clicks)
    };
    // Read through the view of later migrations (V23: a row per minute
    // with its breakdowns), in the shape V21 made.
    let minutes = rows("click_minute_rows", "minute").await?;
    ensure!(
        minutes
            == [
                row(0, "", -1, 1),
                row(0, "", 0, 4),
                row(0, "", 1, 2),
                row(0, "", 2, 3),
                row(2, "DE", 0, 4),
                row(2, "US", -1, 6),
                row(3, "slack", -1, 3),
                row(6, "crawler", 1, 2),
                row(6, "previewer", 2, 3),
            ],
        "minutes: {minutes:?}"
    );
    let days = rows("click_days", "day").await?;
    ensure!(
        days == [
            row(0, "", -1, 5),
            row(0, "", 0, 5),
            row(0, "", 3, 2),
            row(1, "a.example", 0, 5),
            row(6, "monitor", 3, 2),
            row(8, "", 0, 5),
        ],
        "days: {days:?}"
    );

    // Read back through the store as statistics are.
    let clicks = store.clicks();
    let total = |rows: &[RollupRow], bot: bool| -> i64 {
        rows.iter()
            .filter(|row| row.dimension == Dimension::Total && row.bot == bot)
            .map(|row| row.clicks)
            .sum()
    };
    let every = ok!(clicks.rollups(
        "mig",
        RollupTable::Minutes,
        (minute, minute + 1),
        ALL,
        &every_class()
    ));
    ensure!((total(&every, false), total(&every, true)) == (4, 6));
    let previewers = tinyurl_analytics::ClassFilter::parse(&["previewer"])?.codes();
    let only = ok!(clicks.rollups(
        "mig",
        RollupTable::Minutes,
        (minute, minute + 1),
        ALL,
        &previewers
    ));
    ensure!((total(&only, false), total(&only, true)) == (0, 3));
    let bots = tinyurl_analytics::ClassFilter::parse(&["bot"])?.codes();
    let days_read = ok!(clicks.rollups("mig", RollupTable::Days, (day, day + 1), ALL, &bots));
    ensure!(total(&days_read, true) == 7, "{days_read:?}");
    Ok(())
}

/// The online path to partitioned links (mirror, backfill in slices, swap)
/// on a V6 database while a writer of the old version keeps inserting,
/// changing, tombstoning and deleting links: afterwards the database is what
/// V7's offline copy makes of the same writes, row for row and in its
/// catalog, and V7 counts as applied.
#[tokio::test]
async fn online_migration_keeps_every_write_made_during_it() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let online = cluster.create_database().await?;
    let offline = cluster.create_database().await?;
    let store = |url: &str| -> anyhow::Result<PostgresLinkStore> {
        Ok(PostgresLinkStore::connect(&url.to_owned().into(), 2, TIMEOUT)?.with_link_partitions(4))
    };
    let (online_store, offline_store) = (store(&online.primary_url)?, store(&offline.primary_url)?);
    // Literal times, so replaying the same statements gives the same rows.
    let recent = timestamp_literal(SystemTime::now() - Duration::from_secs(3_600));
    let later = timestamp_literal(SystemTime::now() - Duration::from_secs(60));
    let old = timestamp_literal(SystemTime::now() - Duration::from_secs(2 * 86_400));
    let seed = format!(
        "INSERT INTO links (code, id, owner_key_id, target_url, redirect_status, forward_query,
                            expires_at, enabled, is_alias, idempotency_key, created_at, updated_at)
         SELECT 'S' || lpad(n::text, 5, '0'), n, 1, 'https://example.com/s/' || n,
                (ARRAY[301, 302, 307, 308])[1 + n % 4], n % 3 = 0, NULL, n % 7 <> 0, n % 11 = 0,
                CASE WHEN n % 2 = 0 THEN 'seed-' || n END,
                CASE WHEN n % 5 = 0 THEN '{old}'::timestamptz ELSE '{recent}'::timestamptz END,
                CASE WHEN n % 4 = 0 THEN '{later}'::timestamptz
                     WHEN n % 5 = 0 THEN '{old}'::timestamptz ELSE '{recent}'::timestamptz END
         FROM generate_series(0, 1999) AS n"
    );
    for (store, url) in [
        (&online_store, &online.primary_url),
        (&offline_store, &offline.primary_url),
    ] {
        store.migrate_to(Some(6)).await?;
        let owner = v6_key(url, "v6").await?;
        ensure!(owner.0 == 1, "the first key of a fresh database is 1");
    }
    let online_db = tinyurl_harness::postgres::connect(&online.primary_url).await?;
    let offline_db = tinyurl_harness::postgres::connect(&offline.primary_url).await?;
    online_db.batch_execute(&seed).await?;
    offline_db.batch_execute(&seed).await?;

    // The old writer: statements in a fixed order until the swap makes them
    // fail (their table is gone); each one that succeeded is kept.
    let writes = tokio::spawn({
        let url = online.primary_url.clone();
        let (recent, later) = (recent.clone(), later.clone());
        async move {
            let db = tinyurl_harness::postgres::connect(&url).await?;
            let mut applied = Vec::new();
            for step in 0..100_000_u32 {
                let seeded = format!("S{:05}", (step * 7_919) % 2_000);
                let statement = match step % 5 {
                    0 | 1 => format!(
                        "INSERT INTO links (code, id, owner_key_id, target_url, redirect_status,
                                            forward_query, expires_at, enabled, is_alias,
                                            idempotency_key, created_at, updated_at)
                         VALUES ('W{step:06}', {id}, 1, 'https://example.com/w/{step}', 302, false,
                                 NULL, true, false, 'write-{step}', '{recent}', '{recent}')",
                        id = 10_000 + step
                    ),
                    2 => format!(
                        "UPDATE links SET target_url = 'https://example.com/u/{step}',
                                          updated_at = '{later}', enabled = NOT enabled
                         WHERE code = '{seeded}' AND target_url IS NOT NULL"
                    ),
                    3 => format!(
                        "UPDATE links SET target_url = NULL, enabled = false, expires_at = NULL,
                                          updated_at = '{later}'
                         WHERE code = '{seeded}' AND target_url IS NOT NULL"
                    ),
                    // `id` is a V6 column: after the swap this fails too.
                    _ => format!(
                        "DELETE FROM links WHERE code = 'W{:06}' AND id IS NOT NULL",
                        step - 4
                    ),
                };
                if db.batch_execute(&statement).await.is_err() {
                    break;
                }
                applied.push((std::time::Instant::now(), statement));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            anyhow::Ok(applied)
        }
    });
    // Small slices with a rest between them, so the writes fall on slices
    // already copied and on slices not yet reached.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let report = online_store
        .migrate_links_online(&OnlineMigration {
            slice_rows: 50,
            pause: Duration::from_millis(20),
            ..OnlineMigration::default()
        })
        .await?;
    let finished = std::time::Instant::now();
    let applied = writes.await??;
    let during = applied
        .iter()
        .filter(|(at, _)| (started..finished).contains(at))
        .count();
    eprintln!(
        "{report:?}; {} writes applied, {during} during the migration",
        applied.len()
    );
    ensure!(!report.already_applied && report.slices >= 40, "{report:?}");
    ensure!(report.rows_copied > 0 && report.links > 2_000, "{report:?}");
    ensure!(
        during >= 20,
        "only {during} writes ran during the migration"
    );

    for (_, statement) in &applied {
        offline_db.batch_execute(statement).await?;
    }
    offline_store.migrate().await?;
    // Both at V7 now; migrating the online one again must find nothing to do
    // (V7's copy would fail on the new table).
    online_store.migrate().await?;
    let again = online_store
        .migrate_links_online(&OnlineMigration::default())
        .await?;
    ensure!(again.already_applied, "{again:?}");

    for (what, query) in [
        ("links", LINK_ROWS),
        ("idempotency keys", KEY_ROWS),
        ("catalog", CATALOG),
        ("migration history", HISTORY),
    ] {
        let online_text: String = online_db.query_one(query, &[]).await?.try_get(0)?;
        let offline_text: String = offline_db.query_one(query, &[]).await?.try_get(0)?;
        ensure!(
            online_text == offline_text,
            "{what} differ\n--- online ---\n{online_text}\n--- offline ---\n{offline_text}"
        );
        ensure!(!online_text.is_empty(), "no {what}");
    }
    let owner = OwnerId(1);
    // (The link of "write-0" was deleted by step 4.)
    let replays = ok!(online_store.find_by_idempotency_keys(owner, &["write-1", "seed-2"]));
    ensure!(
        replays
            .get("write-1")
            .map(|replay| replay.link.code.as_str())
            == Some("W000001")
    );
    Ok(())
}

fn timestamp_literal(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

const LINK_ROWS: &str = "SELECT coalesce(string_agg(row(code, created_at, owner_key_id, updated_at, expires_at,
                                       redirect_status, flags, target_url)::text, E'\\n' ORDER BY code), '')
                         FROM links";
const KEY_ROWS: &str =
    "SELECT coalesce(string_agg(row(owner_key_id, key, code, created_at)::text, E'\\n'
                                       ORDER BY owner_key_id, key), '')
                        FROM link_idempotency";
/// Columns, constraints, indexes, partitions and triggers of the link tables.
const CATALOG: &str = "
SELECT string_agg(item, E'\\n' ORDER BY item) FROM (
    SELECT 'column ' || c.relname || ' ' || a.attnum || ' ' || a.attname || ' '
           || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull || ' '
           || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' ' || coalesce(co.collname, '') AS item
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 0
    WHERE c.relname LIKE 'link%' AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE conrelid::regclass::text LIKE 'link%'
    UNION ALL
    SELECT 'index ' || indexdef FROM pg_indexes WHERE tablename LIKE 'link%'
    UNION ALL
    SELECT 'partition ' || c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid)
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'links'::regclass
    UNION ALL
    SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL
    SELECT 'function ' || proname FROM pg_proc WHERE proname LIKE 'links%'
) AS catalog";
const HISTORY: &str =
    "SELECT string_agg(version || ' ' || name || ' ' || checksum, E'\\n' ORDER BY version)
                       FROM writer_schema_history";

async fn link_partitions(db: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(db
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'links'::regclass",
            &[],
        )
        .await?
        .get(0))
}

/// A lookup by code reads one partition: planned for a literal code, and
/// pruned at execution for a prepared statement's generic plan.
#[tokio::test]
async fn a_lookup_by_code_touches_one_partition() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let store = PostgresLinkStore::connect(&database.primary_url.clone().into(), 2, TIMEOUT)?;
    store.migrate().await?;
    let db = tinyurl_harness::postgres::connect(&database.primary_url).await?;
    let partitions = link_partitions(&db).await?;
    ensure!(
        partitions == 16,
        "16 partitions by default, not {partitions}"
    );
    let plan = |rows: Vec<tokio_postgres::Row>| {
        rows.iter()
            .map(|row| row.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let lookup = "SELECT target_url, redirect_status, flags, expires_at FROM links \
                  WHERE code = $1 AND target_url IS NOT NULL";

    let custom = plan(
        db.query(
            &format!("EXPLAIN (COSTS OFF) {}", lookup.replace("$1", "'Abc1234'")),
            &[],
        )
        .await?,
    );
    eprintln!("{custom}");
    let scanned = custom.matches(" on links_p").count();
    ensure!(scanned == 1, "{scanned} partitions scanned:\n{custom}");
    ensure!(custom.contains("Index Scan using links_p"), "{custom}");

    db.batch_execute(&format!(
        "SET plan_cache_mode = force_generic_plan; PREPARE lookup(text) AS {lookup}"
    ))
    .await?;
    let generic = plan(
        db.query(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE lookup('Abc1234')",
            &[],
        )
        .await?,
    );
    eprintln!("{generic}");
    ensure!(
        generic.contains("Subplans Removed: 15"),
        "the generic plan prunes 15 of 16 partitions at execution:\n{generic}"
    );
    Ok(())
}

#[tokio::test]
async fn link_store_postgres() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let store = PostgresLinkStore::connect(&database.primary_url.clone().into(), 4, TIMEOUT)?;
    store.migrate().await?;
    link_store_contract(Arc::new(store)).await
}

#[tokio::test]
async fn link_store_sqlite() -> anyhow::Result<()> {
    let dir = ScratchDir::new("conformance", None)?;
    let store = SqliteLinkStore::open(&sqlite_file(&dir), TIMEOUT).await?;
    link_store_contract(Arc::new(store)).await
}

#[tokio::test]
async fn lease_store_postgres() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let store =
        PostgresLeaseStore::connect(&database.primary_url.clone().into(), 8, TIMEOUT, 1 << 40)?;
    store.migrate().await?;
    lease_store_contract(Arc::new(store)).await
}

#[tokio::test]
async fn lease_store_sqlite() -> anyhow::Result<()> {
    let dir = ScratchDir::new("conformance", None)?;
    let store = SqliteLeaseStore::open(&sqlite_file(&dir), TIMEOUT).await?;
    lease_store_contract(Arc::new(store)).await
}

#[tokio::test]
async fn link_source_postgres() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let url: secrecy::SecretString = database.primary_url.clone().into();
    let writer = PostgresLinkStore::connect(&url, 2, TIMEOUT)?;
    writer.migrate().await?;
    let source = PostgresLinkSource::connect(&[], Some(&url), 2, TIMEOUT)?;
    link_source_contract(Arc::new(writer), Arc::new(source)).await
}

#[tokio::test]
async fn link_source_sqlite() -> anyhow::Result<()> {
    let dir = ScratchDir::new("conformance", None)?;
    let path = sqlite_file(&dir);
    let writer = SqliteLinkStore::open(&path, TIMEOUT).await?;
    let source = SqliteLinkSource::open(&path, 2, TIMEOUT).await?;
    link_source_contract(Arc::new(writer), Arc::new(source)).await
}

#[tokio::test]
async fn cache_redis() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    redis_cache_contract(&redis.url()).await
}

/// The same contract on a Redis Cluster of three masters: the write-through
/// spans hash slots (a pipeline split across the masters) and announcements
/// travel over sharded pub/sub.
#[tokio::test]
async fn cache_redis_cluster() -> anyhow::Result<()> {
    let cluster = RedisServer::start_cluster(3).await?;
    redis_cache_contract(&cluster.url()).await
}

async fn redis_cache_contract(url: &str) -> anyhow::Result<()> {
    let url: secrecy::SecretString = url.to_owned().into();
    let cache = Arc::new(RedisLinkCache::connect(
        &url,
        TIMEOUT,
        Duration::from_secs(600),
    )?);
    let shared = Arc::new(RedisSharedCache::connect(
        &url,
        TIMEOUT,
        Duration::from_secs(600),
        Duration::from_secs(30),
    )?);
    let subscriber = tinyurl_redirect::invalidation::subscriber(&url, TIMEOUT)?;
    let mut messages = subscriber.message_rx();
    let _connection = subscriber.connect();
    subscriber.wait_for_connect().await?;
    tinyurl_redirect::invalidation::subscribe(&subscriber).await?;
    let (sender, announcements) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(message) = messages.recv().await {
            if let Some(codes) = message.value.as_str() {
                let _ = sender.send(codes.into_owned());
            }
        }
    });
    // The writer's client connects in the background and never blocks a
    // write on it: wait until a write-through lands before the contract.
    wait_until("the writer's redis client to connect", TIMEOUT, || {
        let cache = Arc::clone(&cache);
        let shared = Arc::clone(&shared);
        async move {
            cache.write_through(&[stored("Warmup0", None)]).await;
            Ok(matches!(shared.get("Warmup0").await?, Cached::Link(_)))
        }
    })
    .await?;
    let mut announcements = announcements;
    while let Ok(message) =
        tokio::time::timeout(Duration::from_millis(200), announcements.recv()).await
    {
        ensure!(message.as_deref() == Some("Warmup0"));
    }
    cache_contract(cache, shared, announcements).await
}

#[tokio::test]
async fn cache_in_process() -> anyhow::Result<()> {
    let memory = MemoryCache::new(1000);
    let cache = Arc::new(MemoryLinkCache::new(
        Arc::clone(&memory),
        Duration::from_secs(600),
    ));
    let shared = Arc::new(MemorySharedCache::new(
        Arc::clone(&memory),
        Duration::from_secs(600),
        Duration::from_secs(30),
        Default::default(),
    ));
    let mut messages = memory.subscribe();
    let (sender, announcements) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(codes) = messages.recv().await {
            let _ = sender.send(codes.to_string());
        }
    });
    cache_contract(cache, shared, announcements).await
}

/// Console sessions: stored by the token's hash, read back as stored,
/// touched forward only, ended once, pruned by idle time and by age.
async fn session_contract(store: Arc<dyn LinkStore>) -> anyhow::Result<()> {
    use tinyurl_links::sessions::SessionToken;
    let (_, key) = generate_key();
    let opened = micros_ago(600);
    let first = SessionToken::generate();
    store.create_session(&first.hash(), &key, opened).await?;
    let read = store.session(&first.hash()).await?.context("the session")?;
    ensure!(
        read.key == key && read.created_at == opened && read.last_seen_at == opened,
        "read back as stored: {read:?}"
    );
    ensure!(
        store
            .session(&SessionToken::generate().hash())
            .await?
            .is_none(),
        "an unknown token has no session"
    );

    let used = micros_ago(60);
    store.touch_session(&first.hash(), used).await?;
    store.touch_session(&first.hash(), opened).await?;
    let read = store.session(&first.hash()).await?.context("the session")?;
    ensure!(
        read.last_seen_at == used && read.created_at == opened,
        "a touch moves last use forward only: {read:?}"
    );

    ensure!(store.end_session(&first.hash()).await?, "ended");
    ensure!(store.session(&first.hash()).await?.is_none(), "gone");
    ensure!(!store.end_session(&first.hash()).await?, "ended once");

    // Pruning: one idle, one too old, one live.
    let idle = SessionToken::generate();
    let old = SessionToken::generate();
    let live = SessionToken::generate();
    store
        .create_session(&idle.hash(), &key, micros_ago(3_600))
        .await?;
    store
        .create_session(&old.hash(), &key, micros_ago(86_400))
        .await?;
    store.touch_session(&old.hash(), micros_ago(10)).await?;
    store
        .create_session(&live.hash(), &key, micros_ago(120))
        .await?;
    let pruned = store
        .prune_sessions(micros_ago(1_800), micros_ago(43_200))
        .await?;
    ensure!(
        pruned == 2,
        "the idle and the old session pruned, not {pruned}"
    );
    ensure!(store.session(&idle.hash()).await?.is_none());
    ensure!(store.session(&old.hash()).await?.is_none());
    ensure!(
        store.session(&live.hash()).await?.is_some(),
        "the live one kept"
    );
    Ok(())
}

#[tokio::test]
async fn console_sessions_postgres() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let store = PostgresLinkStore::connect(&database.primary_url.clone().into(), 4, TIMEOUT)?;
    store.migrate().await?;
    session_contract(Arc::new(store)).await
}

#[tokio::test]
async fn console_sessions_sqlite() -> anyhow::Result<()> {
    let dir = ScratchDir::new("conformance", None)?;
    let store = SqliteLinkStore::open(&sqlite_file(&dir), TIMEOUT).await?;
    session_contract(Arc::new(store)).await
}

/// The console's search: newest or most clicked first with keyset pages,
/// text in the code or the target (case and LIKE's wildcards taken
/// literally), states, one owner's links only; and the owner's overview.
async fn search_contract(store: Arc<dyn LinkStore>) -> anyhow::Result<()> {
    use tinyurl_links::store::{LinkOrder, LinkSearch, LinkState, SearchCursor};
    let owner = api_key(store.as_ref(), "searcher").await?;
    let other = api_key(store.as_ref(), "neighbour").await?;
    let link = |code: &str, target: &str, expires_at: Option<SystemTime>| NewLink {
        target_url: target.to_owned(),
        expires_at,
        ..new_link(code, None, None)
    };
    // One at a time, so each is newer than the one before.
    for new in [
        link("alpha-one", "https://alpha.example/a", None),
        link("alpha-two", "https://beta.example/b", None),
        link("gamma00", "https://alpha.example/Case", None),
        link("old0001", "http://old.example/", Some(micros_ago(60))),
        link("off0001", "https://www.off.example/", None),
    ] {
        ok!(store.insert(owner, std::slice::from_ref(&new)));
    }
    ok!(store.insert(
        other,
        &[link("alpha-else", "https://alpha.example/else", None)]
    ));
    ok!(store.update(
        owner,
        "off0001",
        &LinkChanges {
            enabled: Some(false),
            ..LinkChanges::default()
        }
    ));
    let now = i64::from(minute_of(SystemTime::now()));
    let clicks = Fold::of(&[
        click("alpha-two", now, "-", false, 5),
        click("gamma00", now, "-", false, 9),
        click("alpha-one", now, "-", true, 3),
        click("alpha-else", now, "-", false, 50),
    ]);
    ensure!(store.clicks().fold("search-1", &clicks, VALUES).await? == Folded::Now);

    let codes = |found: &[(StoredLink, i64)]| -> Vec<String> {
        found.iter().map(|(link, _)| link.code.clone()).collect()
    };
    let search = |order, text: Option<&str>, state| LinkSearch {
        text: text.map(str::to_owned),
        state,
        order,
        tag: None,
        now: None,
    };
    let all = |order| search(order, None, None);
    let newest = ok!(store.search(owner, &all(LinkOrder::Newest), 10, None));
    ensure!(
        codes(&newest) == ["off0001", "old0001", "gamma00", "alpha-two", "alpha-one"],
        "newest first, one owner's: {:?}",
        codes(&newest)
    );
    let clicked = ok!(store.search(owner, &all(LinkOrder::MostClicked), 10, None));
    ensure!(
        clicked
            .iter()
            .map(|(link, clicks)| (link.code.as_str(), *clicks))
            .collect::<Vec<_>>()
            == [
                ("gamma00", 9),
                ("alpha-two", 5),
                ("off0001", 0),
                ("old0001", 0),
                ("alpha-one", 0)
            ],
        "most human clicks first, then newest: {clicked:?}"
    );
    // Keyset pages of one, two and three give the same order, each link once.
    let paged = |order, size| {
        let store = Arc::clone(&store);
        let all = all(order);
        async move {
            let mut paged = Vec::new();
            let mut after = None;
            loop {
                let page = ok!(store.search(owner, &all, size, after.as_ref()));
                let Some((last, clicks)) = page.last() else {
                    break;
                };
                after = Some(match order {
                    LinkOrder::Newest => SearchCursor::Newest(last.created_at, last.code.clone()),
                    LinkOrder::MostClicked => {
                        SearchCursor::MostClicked(*clicks, last.created_at, last.code.clone())
                    }
                });
                paged.extend(page);
            }
            anyhow::Ok(paged)
        }
    };
    for order in [LinkOrder::Newest, LinkOrder::MostClicked] {
        let whole = ok!(store.search(owner, &all(order), 10, None));
        for size in 1..=3 {
            let pages = paged(order, size).await?;
            ensure!(
                codes(&pages) == codes(&whole),
                "{order:?} pages of {size}: {:?}",
                codes(&pages)
            );
        }
    }

    // Codes by prefix with their case; targets by the start of their host
    // or URL, scheme, "www." and the host's case ignored, the path's kept.
    let texts: [(&str, &[&str]); 17] = [
        ("alpha", &["gamma00", "alpha-two", "alpha-one"]),
        ("beta", &["alpha-two"]),
        ("gamma", &["gamma00"]),
        ("GAMMA", &[]),
        ("amma", &[]),
        ("alpha.example/C", &["gamma00"]),
        ("alpha.example/c", &[]),
        ("https://www.ALPHA.example/Ca", &["gamma00"]),
        ("HTTP://Alpha.Example/a", &["alpha-one"]),
        ("off.example", &["off0001"]),
        ("www.off", &["off0001"]),
        ("o", &["off0001", "old0001"]),
        ("example", &[]),
        ("alpha.example/else", &[]),
        ("www.", &[]),
        ("%", &[]),
        ("_", &[]),
    ];
    for (text, expected) in texts {
        let found = ok!(store.search(
            owner,
            &search(LinkOrder::Newest, Some(text), None),
            10,
            None
        ));
        ensure!(codes(&found) == expected, "{text:?}: {:?}", codes(&found));
        // A page at a time: the page is found among the newest links
        // looked through first, or (when they hold too few) through the
        // indexes; the same links either way.
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = ok!(store.search(
                owner,
                &search(LinkOrder::Newest, Some(text), None),
                1,
                after.as_ref()
            ));
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(SearchCursor::Newest(last.created_at, last.code.clone()));
            paged.extend(codes(&page));
        }
        ensure!(paged == expected, "{text:?} a page at a time: {paged:?}");
    }
    let states: [(LinkState, &[&str]); 4] = [
        (LinkState::Active, &["gamma00", "alpha-two", "alpha-one"]),
        (LinkState::Disabled, &["off0001"]),
        (LinkState::Expired, &["old0001"]),
        (LinkState::Blocked, &[]),
    ];
    for (state, expected) in states {
        let found = ok!(store.search(
            owner,
            &search(LinkOrder::Newest, None, Some(state)),
            10,
            None
        ));
        ensure!(codes(&found) == expected, "{state:?}: {:?}", codes(&found));
    }
    let both = ok!(store.search(
        owner,
        &search(
            LinkOrder::MostClicked,
            Some("alpha"),
            Some(LinkState::Active)
        ),
        10,
        None
    ));
    ensure!(codes(&both) == ["gamma00", "alpha-two", "alpha-one"]);

    let today = minute_of(SystemTime::now()) / 1440;
    let overview = ok!(store.owner_overview(owner, [today, today - 6]));
    ensure!(
        overview.links == 5 && overview.clicks == [(14, 3), (14, 3)],
        "{overview:?}"
    );
    // Rolled into the day rollups, each click still counts once.
    store
        .clicks()
        .roll_up_days(minute_of(SystemTime::now()) + 1, VALUES)
        .await?;
    let rolled = ok!(store.owner_overview(owner, [today, today - 6]));
    ensure!(rolled.clicks == [(14, 3), (14, 3)], "{rolled:?}");
    let later = ok!(store.owner_overview(owner, [today + 1, today]));
    ensure!(later.clicks == [(0, 0), (14, 3)], "{later:?}");

    // Clicks after the roll-up's mark (minutes it has not reached) and a
    // late batch of minutes it has (written to the day rollups by the fold
    // itself) reorder the links: the order and the totals are exact
    // whichever way the clicks arrived, page by page.
    let rolled_through = minute_of(SystemTime::now()) + 1;
    let after_mark = Fold::of(&[
        click("alpha-one", i64::from(rolled_through) + 5, "-", false, 20),
        click("alpha-two", i64::from(rolled_through) + 5, "-", false, 1),
        click("alpha-else", i64::from(rolled_through) + 5, "-", false, 7),
    ]);
    ensure!(store.clicks().fold("search-2", &after_mark, VALUES).await? == Folded::Now);
    let late = Fold::of(&[
        click("old0001", now, "-", false, 7),
        click("old0001", now, "-", true, 2),
    ]);
    ensure!(store.clicks().fold("search-3", &late, VALUES).await? == Folded::Now);
    let expected = [
        ("alpha-one", 20),
        ("gamma00", 9),
        ("old0001", 7),
        ("alpha-two", 6),
        ("off0001", 0),
    ];
    let found = |links: &[(StoredLink, i64)]| -> Vec<(String, i64)> {
        links
            .iter()
            .map(|(link, clicks)| (link.code.clone(), *clicks))
            .collect()
    };
    let owned = |expected: &[(&str, i64)]| -> Vec<(String, i64)> {
        expected
            .iter()
            .map(|(code, clicks)| ((*code).to_owned(), *clicks))
            .collect()
    };
    for size in 1..=3 {
        let pages = paged(LinkOrder::MostClicked, size).await?;
        ensure!(
            found(&pages) == owned(&expected),
            "after the mark and late, pages of {size}: {:?}",
            found(&pages)
        );
    }
    for (code, clicks) in expected {
        let (humans, _) = store.clicks().totals(code).await?;
        ensure!(
            humans == clicks,
            "{code}: {humans} in its totals, {clicks} in the order"
        );
    }
    let overview = ok!(store.owner_overview(owner, [today, today - 6]));
    ensure!(overview.clicks[1] == (42, 5), "{overview:?}");
    // Rolled up again, the same.
    store
        .clicks()
        .roll_up_days(rolled_through + 10, VALUES)
        .await?;
    let clicked = ok!(store.search(owner, &all(LinkOrder::MostClicked), 10, None));
    ensure!(
        found(&clicked) == owned(&expected),
        "rolled up: {:?}",
        found(&clicked)
    );
    ensure!(ok!(store.owner_overview(owner, [today, today - 6])).clicks[1] == (42, 5));
    // A deleted link leaves the order; its clicks stay the key's.
    ensure!(ok!(store.delete(owner, "alpha-two")));
    let clicked = ok!(store.search(owner, &all(LinkOrder::MostClicked), 10, None));
    ensure!(
        codes(&clicked) == ["alpha-one", "gamma00", "old0001", "off0001"],
        "{:?}",
        codes(&clicked)
    );
    let overview = ok!(store.owner_overview(owner, [today, today - 6]));
    ensure!(
        overview.links == 4 && overview.clicks[1] == (42, 5),
        "{overview:?}"
    );
    Ok(())
}

#[tokio::test]
async fn console_search_postgres() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let store = PostgresLinkStore::connect(&database.primary_url.clone().into(), 4, TIMEOUT)?;
    store.migrate().await?;
    search_contract(Arc::new(store)).await
}

#[tokio::test]
async fn console_search_sqlite() -> anyhow::Result<()> {
    let dir = ScratchDir::new("conformance", None)?;
    let store = SqliteLinkStore::open(&sqlite_file(&dir), TIMEOUT).await?;
    search_contract(Arc::new(store)).await
}

/// Forgetting a link's clicks, then a key's: the rollups, the totals and the
/// key's figures lose exactly them (clicks rolled up and after the mark
/// alike), another key's stay.
async fn forget_contract(store: Arc<dyn LinkStore>) -> anyhow::Result<()> {
    use tinyurl_links::store::{LinkOrder, LinkSearch};
    let owner = api_key(store.as_ref(), "forgetful").await?;
    let other = api_key(store.as_ref(), "mindful").await?;
    for (key, code) in [(owner, "forget1"), (owner, "forget2"), (other, "keep001")] {
        ok!(store.insert(key, &[new_link(code, None, None)]));
    }
    let now = i64::from(minute_of(SystemTime::now()));
    let rolled = Fold::of(&[
        click("forget1", now, "-", false, 5),
        click("forget1", now, "-", true, 1),
        click("forget2", now, "-", false, 3),
        click("keep001", now, "-", false, 7),
    ]);
    ensure!(store.clicks().fold("forget-1", &rolled, VALUES).await? == Folded::Now);
    let through = minute_of(SystemTime::now()) + 1;
    store.clicks().roll_up_days(through, VALUES).await?;
    let after_mark = Fold::of(&[
        click("forget1", i64::from(through) + 5, "-", false, 2),
        click("forget2", i64::from(through) + 5, "-", false, 1),
    ]);
    ensure!(store.clicks().fold("forget-2", &after_mark, VALUES).await? == Folded::Now);
    let today = minute_of(SystemTime::now()) / 1440;
    let week = |store: Arc<dyn LinkStore>, key| async move {
        anyhow::Ok(ok!(store.owner_overview(key, [today, today - 6])).clicks[1])
    };
    ensure!(week(Arc::clone(&store), owner).await? == (11, 1));

    let forgotten = store
        .clicks()
        .forget(owner.0, Some(&["forget1".to_owned()]))
        .await?;
    ensure!(forgotten > 0);
    ensure!(store.clicks().totals("forget1").await? == (0, 0));
    ensure!(store.clicks().totals("forget2").await? == (4, 0));
    let (table, first, end) = (tinyurl_analytics::RollupTable::Days, today - 6, today + 2);
    ensure!(
        store
            .clicks()
            .export("forget1", table, (first, end), 1, 100, &every_class())
            .await?
            .is_empty(),
        "no rollup row left"
    );
    ensure!(week(Arc::clone(&store), owner).await? == (4, 0));
    let clicked = ok!(store.search(
        owner,
        &LinkSearch {
            order: LinkOrder::MostClicked,
            ..LinkSearch::default()
        },
        10,
        None
    ));
    let order: Vec<(String, i64)> = clicked
        .iter()
        .map(|(link, clicks)| (link.code.clone(), *clicks))
        .collect();
    ensure!(
        order == [("forget2".to_owned(), 4), ("forget1".to_owned(), 0)],
        "{order:?}"
    );

    ensure!(store.clicks().forget(owner.0, None).await? > 0);
    ensure!(store.clicks().totals("forget2").await? == (0, 0));
    ensure!(week(Arc::clone(&store), owner).await? == (0, 0));
    ensure!(store.clicks().totals("keep001").await? == (7, 0));
    ensure!(week(Arc::clone(&store), other).await? == (7, 0));
    Ok(())
}

#[tokio::test]
async fn forget_clicks_postgres() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let store = PostgresLinkStore::connect(&database.primary_url.clone().into(), 4, TIMEOUT)?;
    store.migrate().await?;
    forget_contract(Arc::new(store)).await
}

#[tokio::test]
async fn forget_clicks_sqlite() -> anyhow::Result<()> {
    let dir = ScratchDir::new("conformance", None)?;
    let store = SqliteLinkStore::open(&sqlite_file(&dir), TIMEOUT).await?;
    forget_contract(Arc::new(store)).await
}

/// Tags: written with the link (keyed or not, one or a batch), replaced,
/// read back sorted, filtered by, summed, renamed (merging), deleted, gone
/// with their link, and each owner's apart.
async fn tag_contract(store: Arc<dyn LinkStore>) -> anyhow::Result<()> {
    use tinyurl_links::store::{LinkOrder, LinkSearch, TagSummary};
    let owner = api_key(store.as_ref(), "tagger").await?;
    let other = api_key(store.as_ref(), "neighbour").await?;
    let tagged = |code: &str, key: Option<&str>, tags: &[&str]| NewLink {
        tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
        ..new_link(code, None, key)
    };
    ok!(store.insert(owner, &[tagged("one", None, &["news", "spring sale"])]));
    ok!(store.insert(
        owner,
        &[
            tagged("two", Some("key-two"), &["news"]),
            tagged("three", None, &[]),
            tagged("four", None, &["spring sale"]),
        ]
    ));
    ok!(store.insert(other, &[tagged("else", None, &["news"])]));
    // A taken code inserts nothing, tags included.
    ok!(store.insert(owner, &[tagged("one", None, &["stray"])]));

    let codes = ["one", "two", "three", "four", "else"];
    let tags = ok!(store.tags_of(owner, &codes));
    ensure!(
        tags.len() == 3
            && tags["one"] == ["news", "spring sale"]
            && tags["two"] == ["news"]
            && tags["four"] == ["spring sale"],
        "each link's tags, sorted, this owner's only: {tags:?}"
    );
    let with = |tag: &str| LinkSearch {
        tag: Some(tag.to_owned()),
        order: LinkOrder::Newest,
        ..LinkSearch::default()
    };
    let found = ok!(store.search(owner, &with("news"), 10, None));
    let mut found: Vec<_> = found.iter().map(|(link, _)| link.code.clone()).collect();
    found.sort();
    ensure!(found == ["one", "two"], "links with a tag: {found:?}");
    let text_and_tag = LinkSearch {
        text: Some("fo".to_owned()),
        ..with("spring sale")
    };
    let found = ok!(store.search(owner, &text_and_tag, 10, None));
    ensure!(found.len() == 1 && found[0].0.code == "four", "{found:?}");

    let now = i64::from(minute_of(SystemTime::now()));
    let clicks = Fold::of(&[
        click("one", now, "-", false, 4),
        click("two", now, "-", false, 6),
        click("two", now, "-", true, 1),
        click("else", now, "-", false, 50),
    ]);
    ensure!(store.clicks().fold("tags-1", &clicks, VALUES).await? == Folded::Now);
    let summary = |tag: &str, links, clicks| TagSummary {
        tag: tag.to_owned(),
        links,
        clicks,
    };
    let listed = ok!(store.list_tags(owner));
    ensure!(
        listed
            == [
                summary("news", 2, (10, 1)),
                summary("spring sale", 2, (4, 0))
            ],
        "{listed:?}"
    );
    ensure!(ok!(store.tag_summary(owner, "news")) == Some(summary("news", 2, (10, 1))));
    ensure!(ok!(store.tag_summary(owner, "nothing")).is_none());

    // Replacing: "one" keeps news, drops spring sale, gains later.
    ensure!(ok!(store.set_tags(
        owner,
        "one",
        &["later".to_owned(), "news".to_owned()]
    )));
    ensure!(ok!(store.tags_of(owner, &["one"]))["one"] == ["later", "news"]);
    ensure!(
        !ok!(store.set_tags(other, "one", &["mine".to_owned()])),
        "another owner's link cannot be tagged"
    );
    ensure!(!ok!(store.set_tags(owner, "missing", &["x".to_owned()])));

    // Renaming merges: "one" has both later and news.
    ensure!(ok!(store.rename_tag(owner, "later", "news")) == 1);
    ensure!(ok!(store.tags_of(owner, &["one"]))["one"] == ["news"]);
    ensure!(ok!(store.rename_tag(owner, "news", "updates")) == 2);
    ensure!(
        ok!(store.tag_summary(other, "news")).is_some(),
        "the neighbour's tag stays"
    );
    ensure!(ok!(store.delete_tag(owner, "spring sale")) == 1);
    let listed = ok!(store.list_tags(owner));
    ensure!(listed == [summary("updates", 2, (10, 1))], "{listed:?}");

    // A deleted link takes its tags with it.
    ensure!(ok!(store.delete(owner, "two")));
    ensure!(ok!(store.tags_of(owner, &["two"])).is_empty());
    let listed = ok!(store.list_tags(owner));
    ensure!(listed == [summary("updates", 1, (4, 0))], "{listed:?}");
    ensure!(
        !ok!(store.set_tags(owner, "two", &["back".to_owned()])),
        "not on a tombstone"
    );
    Ok(())
}

#[tokio::test]
async fn link_tags_postgres() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let store = PostgresLinkStore::connect(&database.primary_url.clone().into(), 4, TIMEOUT)?;
    store.migrate().await?;
    tag_contract(Arc::new(store)).await
}

#[tokio::test]
async fn link_tags_sqlite() -> anyhow::Result<()> {
    let dir = ScratchDir::new("conformance", None)?;
    let store = SqliteLinkStore::open(&sqlite_file(&dir), TIMEOUT).await?;
    tag_contract(Arc::new(store)).await
}

fn sample_options() -> LinkOptions {
    LinkOptions {
        max_visits: Some(100),
        password: None,
        utm: Utm {
            source: Some("news letter".to_owned()),
            campaign: Some("spring".to_owned()),
            ..Utm::default()
        },
        rules: vec![
            RedirectRule {
                devices: vec![Device::Ios],
                countries: vec!["DE".to_owned()],
                languages: Vec::new(),
                target_url: "https://example.com/ios".to_owned(),
            },
            RedirectRule {
                languages: vec!["pt-br".to_owned()],
                target_url: "https://example.com/pt".to_owned(),
                ..RedirectRule::default()
            },
        ],
    }
}

/// Options are written with their link on every insert path, read back by
/// every read, replaced one at a time by updates that merge in the
/// database, and gone with the link.
async fn options_contract(store: Arc<dyn LinkStore>) -> anyhow::Result<()> {
    use tinyurl_links::store::{LinkOrder, LinkSearch};
    let owner = api_key(store.as_ref(), "optioned").await?;
    let options = sample_options();
    let with = |code: &str, key: Option<&str>| NewLink {
        options: options.clone(),
        ..new_link(code, None, key)
    };
    // One row, a batch, and a batch with idempotency keys.
    ok!(store.insert(owner, &[with("opt-one", None)]));
    ok!(store.insert(
        owner,
        &[with("opt-two", None), new_link("opt-plain", None, None)]
    ));
    ok!(store.insert(owner, &[with("opt-keyed", Some("opt-key"))]));
    for code in ["opt-one", "opt-two", "opt-keyed"] {
        let link = ok!(store.get(owner, code)).context("inserted")?;
        ensure!(link.options == options, "{code}: {:?}", link.options);
    }
    let plain = ok!(store.get(owner, "opt-plain")).context("inserted")?;
    ensure!(plain.options.is_empty());
    let replays = ok!(store.find_by_idempotency_keys(owner, &["opt-key"]));
    ensure!(replays.get("opt-key").map(|replay| &replay.link.options) == Some(&options));
    let listed = ok!(store.list(owner, 10, None));
    ensure!(listed.iter().filter(|link| link.options == options).count() == 3);
    for order in [LinkOrder::Newest, LinkOrder::MostClicked] {
        let search = LinkSearch {
            text: Some("opt-".to_owned()),
            order,
            ..LinkSearch::default()
        };
        let found = ok!(store.search(owner, &search, 10, None));
        ensure!(
            found
                .iter()
                .filter(|(link, _)| link.options == options)
                .count()
                == 3,
            "{order:?}"
        );
    }

    // One option at a time; the other stays.
    let medium = Utm {
        medium: Some("email".to_owned()),
        ..Utm::default()
    };
    let changed = ok!(store.update(
        owner,
        "opt-one",
        &LinkChanges {
            utm: Some(medium.clone()),
            ..LinkChanges::default()
        }
    ))
    .context("updated")?;
    ensure!(
        changed.options.utm == medium
            && changed.options.rules == options.rules
            && changed.options.max_visits == Some(100)
    );
    let changed = ok!(store.update(
        owner,
        "opt-one",
        &LinkChanges {
            max_visits: Some(None),
            ..LinkChanges::default()
        }
    ))
    .context("updated")?;
    ensure!(changed.options.max_visits.is_none() && changed.options.rules == options.rules);
    let changed = ok!(store.update(
        owner,
        "opt-one",
        &LinkChanges {
            rules: Some(Vec::new()),
            ..LinkChanges::default()
        }
    ))
    .context("updated")?;
    ensure!(changed.options.utm == medium && changed.options.rules.is_empty());
    let changed = ok!(store.update(
        owner,
        "opt-one",
        &LinkChanges {
            enabled: Some(false),
            ..LinkChanges::default()
        }
    ))
    .context("updated")?;
    ensure!(changed.options.utm == medium, "other changes keep them");
    let changed = ok!(store.update(
        owner,
        "opt-one",
        &LinkChanges {
            utm: Some(Utm::default()),
            rules: Some(options.rules.clone()),
            ..LinkChanges::default()
        }
    ))
    .context("updated")?;
    ensure!(changed.options.utm.is_empty() && changed.options.rules == options.rules);
    let emptied = ok!(store.update(
        owner,
        "opt-one",
        &LinkChanges {
            rules: Some(Vec::new()),
            ..LinkChanges::default()
        }
    ))
    .context("updated")?;
    ensure!(emptied.options.is_empty());
    // Options on a link that had none.
    let given = ok!(store.update(
        owner,
        "opt-plain",
        &LinkChanges {
            utm: Some(options.utm.clone()),
            ..LinkChanges::default()
        }
    ))
    .context("updated")?;
    ensure!(given.options.utm == options.utm && given.options.rules.is_empty());
    ensure!(ok!(store.delete(owner, "opt-two")));
    ensure!(ok!(store.get(owner, "opt-two")).is_none());
    // An operator's block and its lifting leave the options as they were.
    let list = tinyurl_domain::HostBlocklist::parse("example.com")
        .map_err(|reason| anyhow::anyhow!(reason))?;
    ok!(store.block_host("example.com", &list));
    let blocked = ok!(store.get(owner, "opt-keyed")).context("still there")?;
    ensure!(blocked.blocked && blocked.options == options, "{blocked:?}");
    ok!(store.unblock_host("example.com"));
    let lifted = ok!(store.get(owner, "opt-keyed")).context("still there")?;
    ensure!(!lifted.blocked && lifted.options == options, "{lifted:?}");
    Ok(())
}

#[tokio::test]
async fn link_options_postgres() -> anyhow::Result<()> {
    let mut cluster = PgCluster::start().await?;
    let database = cluster.create_database().await?;
    let store = PostgresLinkStore::connect(&database.primary_url.clone().into(), 4, TIMEOUT)?;
    store.migrate().await?;
    options_contract(Arc::new(store)).await?;
    // Options live apart: a row of link_options only for a live link that
    // has them, and the flag bit says so; plain links and tombstones have
    // neither.
    let db = tinyurl_harness::postgres::connect(&database.primary_url).await?;
    let rows = db
        .query(
            "SELECT l.code, l.flags & 16 <> 0, o.code IS NOT NULL
             FROM links l LEFT JOIN link_options o ON o.code = l.code
             WHERE l.code LIKE 'opt-%' ORDER BY l.code",
            &[],
        )
        .await?;
    let found: Vec<(String, bool, bool)> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    ensure!(
        found
            == [
                ("opt-keyed".to_owned(), true, true),
                ("opt-one".to_owned(), false, false),
                ("opt-plain".to_owned(), true, true),
                ("opt-two".to_owned(), false, false),
            ],
        "{found:?}"
    );
    ensure!(
        db.query_one("SELECT count(*) FROM link_options", &[])
            .await?
            .get::<_, i64>(0)
            == 2,
        "no row is left behind"
    );
    Ok(())
}

#[tokio::test]
async fn link_options_sqlite() -> anyhow::Result<()> {
    let dir = ScratchDir::new("conformance", None)?;
    let store = SqliteLinkStore::open(&sqlite_file(&dir), TIMEOUT).await?;
    options_contract(Arc::new(store)).await
}
