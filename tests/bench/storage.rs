//! Benchmark: bytes per link. Creates links through `BatchCreateLinks`
//! (batches of 500, each link with an idempotency key, as `tinyurl import`
//! sends them) in the split system's Postgres and in the embedded store's
//! SQLite file, then reports heap, each index and the total per link beside
//! two tables built from the same rows, in the same order, in the same run:
//! the minimal table that could hold a short link (`id bigserial primary key,
//! long_url text, short_code varchar(16) unique, created_at timestamptz`) and
//! the layout before partitioning (schema V6). Last, the idempotency keys:
//! their bytes within the retention, and after it (the writer restarted with
//! a 1 s retention prunes them).
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench-storage`

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tinyurl_harness::embedded::Embedded;
use tinyurl_harness::process::ScratchDir;
use tinyurl_harness::{Stack, wait_until};
use tinyurl_proto::v1::links_client::LinksClient;
use tinyurl_proto::v1::{BatchCreateLinksRequest, CreateLinkRequest, batch_create_links_result};
use tinyurl_runtime::sqlite::rusqlite;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(
    name = "bench-storage",
    about = "bytes per link against the minimal table"
)]
struct Args {
    /// Links created in each store.
    #[arg(long, default_value_t = 100_000)]
    links: usize,
    /// Links per BatchCreateLinks call (`tinyurl import`'s default).
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Hash partitions of the Postgres links table.
    #[arg(long, default_value_t = 16)]
    partitions: u16,
}

/// One link to create: a target of 62–122 bytes (92 on average) and a key
/// shaped like `tinyurl import`'s (32 hex digits).
struct Row {
    target: String,
    key: String,
}

fn rows(count: usize) -> Vec<Row> {
    let mut rng = StdRng::seed_from_u64(17);
    (0..count)
        .map(|n| {
            let prefix = format!("https://www.example.com/articles/{n}/");
            let length = rng.random_range(62..=122usize);
            let slug: String = (prefix.len()..length)
                .map(|_| char::from(rng.random_range(b'a'..=b'z')))
                .collect();
            Row {
                target: format!("{prefix}{slug}"),
                key: format!("{:032x}", rng.random::<u128>()),
            }
        })
        .collect()
}

/// Creates every row in batches, four calls in flight; returns the codes
/// of each batch in the order the batches were acknowledged.
async fn create(
    endpoint: &str,
    api_key: &str,
    rows: &Arc<Vec<Row>>,
    batch: usize,
) -> anyhow::Result<Vec<Vec<(String, usize)>>> {
    let channel = Channel::from_shared(endpoint.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .connect()
        .await?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {api_key}").parse()?;
    let starts: Vec<usize> = (0..rows.len()).step_by(batch).collect();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (channel, bearer, rows, starts, next, done) = (
            channel.clone(),
            bearer.clone(),
            Arc::clone(rows),
            starts.clone(),
            Arc::clone(&next),
            Arc::clone(&done),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = LinksClient::new(channel);
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&start) = starts.get(index) else {
                    return anyhow::Ok(());
                };
                let end = (start + batch).min(rows.len());
                let mut request = tonic::Request::new(BatchCreateLinksRequest {
                    links: rows[start..end]
                        .iter()
                        .map(|row| CreateLinkRequest {
                            target_url: row.target.clone(),
                            idempotency_key: row.key.clone(),
                            ..CreateLinkRequest::default()
                        })
                        .collect(),
                });
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
                let results = client.batch_create_links(request).await?.into_inner();
                let mut codes = Vec::with_capacity(end - start);
                for (offset, result) in results.results.into_iter().enumerate() {
                    match result.result {
                        Some(batch_create_links_result::Result::Link(link)) => {
                            codes.push((link.code, start + offset));
                        }
                        other => anyhow::bail!("item {} failed: {other:?}", start + offset),
                    }
                }
                done.lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .push(codes);
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let batches = std::mem::take(&mut *done.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    ensure!(
        batches.iter().map(Vec::len).sum::<usize>() == rows.len(),
        "not every link was created"
    );
    Ok(batches)
}

/// Bytes of one table (a partitioned one summed over its partitions).
struct Size {
    name: String,
    heap: i64,
    indexes: Vec<(String, i64)>,
    /// Free-space and visibility maps, TOAST.
    other: i64,
    total: i64,
}

/// The relations holding a table's or an index's bytes: its partitions, or
/// itself when it has none.
const LEAVES: &str = "
CREATE FUNCTION leaves(relation regclass) RETURNS SETOF regclass LANGUAGE sql AS $$
    SELECT relid FROM pg_partition_tree(relation) WHERE isleaf
    UNION ALL
    SELECT relation WHERE NOT EXISTS (SELECT 1 FROM pg_partition_tree(relation))
$$";

async fn pg_size(db: &tokio_postgres::Client, table: &str) -> anyhow::Result<Size> {
    let row = db
        .query_one(
            "SELECT sum(pg_relation_size(relid, 'main'))::int8,
                    sum(pg_total_relation_size(relid))::int8,
                    sum(pg_indexes_size(relid))::int8
             FROM leaves($1::text::regclass) AS relid",
            &[&table],
        )
        .await?;
    let (heap, total, all_indexes): (Option<i64>, Option<i64>, Option<i64>) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    let (heap, total, all_indexes) = (
        heap.with_context(|| format!("no table {table}"))?,
        total.unwrap_or_default(),
        all_indexes.unwrap_or_default(),
    );
    let indexes = db
        .query(
            "SELECT i.indexrelid::regclass::text,
                    (SELECT sum(pg_relation_size(relid))::int8
                     FROM leaves(i.indexrelid) AS relid)
             FROM pg_index i WHERE i.indrelid = $1::text::regclass ORDER BY 1",
            &[&table],
        )
        .await?
        .iter()
        .map(|row| (row.get::<_, String>(0), row.get::<_, i64>(1)))
        .collect();
    Ok(Size {
        name: table.to_owned(),
        heap,
        indexes,
        other: total - heap - all_indexes,
        total,
    })
}

fn print_sizes(sizes: &[Size], links: usize, reference: &str) {
    #[allow(clippy::cast_precision_loss)]
    let per = |bytes: i64| bytes as f64 / links as f64;
    let reference_total = sizes
        .iter()
        .find(|size| size.name == reference)
        .map_or(f64::NAN, |size| per(size.total));
    println!(
        "| table | heap B/link | indexes B/link | maps, TOAST B/link | total B/link | ratio to {reference} |"
    );
    println!("|---|---:|---|---:|---:|---:|");
    for size in sizes {
        let indexes: Vec<String> = size
            .indexes
            .iter()
            .map(|(name, bytes)| format!("{name} {:.1}", per(*bytes)))
            .collect();
        let ratio = per(size.total) / reference_total;
        println!(
            "| {} | {:.1} | {} | {:.1} | {:.1} | {} |",
            size.name,
            per(size.heap),
            indexes.join(", "),
            per(size.other),
            per(size.total),
            if ratio.is_finite() {
                format!("{ratio:.2}")
            } else {
                "-".to_owned()
            }
        );
    }
}

/// Minimal and V6 reference tables in the same database, filled with the
/// same rows in the order the batches were acknowledged.
const PG_REFERENCES: &str = "
CREATE TABLE minimal (
    id         bigserial PRIMARY KEY,
    long_url   text,
    short_code varchar(16) UNIQUE,
    created_at timestamptz
);
CREATE TABLE links_v6 (
    code            text        COLLATE \"C\" PRIMARY KEY,
    id              bigint,
    owner_key_id    bigint      NOT NULL,
    target_url      text,
    redirect_status smallint    NOT NULL,
    forward_query   boolean     NOT NULL DEFAULT false,
    expires_at      timestamptz,
    enabled         boolean     NOT NULL DEFAULT true,
    is_alias        boolean     NOT NULL,
    idempotency_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX links_v6_idempotency ON links_v6 (owner_key_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX links_v6_owner_newest ON links_v6 (owner_key_id, created_at DESC, code DESC);";

async fn postgres(args: &Args, rows: &Arc<Vec<Row>>) -> anyhow::Result<()> {
    let stack = Stack::builder()
        .replicas(0)
        .without_redis()
        .idalloc_env(&[("RUST_LOG", "warn")])
        .start()
        .await?;
    let (database, setup) = (&stack.database, &stack.setup);
    let partitions = args.partitions.to_string();
    let writer = setup
        .start(&[
            ("RUST_LOG", "warn"),
            ("TINYURL_LINK_PARTITIONS", &partitions),
        ])
        .await?;
    let key = setup.create_api_key("bench")?;
    let batches = create(&writer.endpoint(), &key, rows, args.batch).await?;
    drop(writer);

    let db = tinyurl_harness::postgres::connect(&database.primary_url).await?;
    db.batch_execute(PG_REFERENCES).await?;
    db.batch_execute(LEAVES).await?;
    for batch in &batches {
        let codes: Vec<&str> = batch.iter().map(|(code, _)| code.as_str()).collect();
        let keys: Vec<&str> = batch
            .iter()
            .map(|(_, row)| rows[*row].key.as_str())
            .collect();
        let ids: Vec<i64> = batch
            .iter()
            .map(|(_, row)| i64::try_from(*row).unwrap_or(i64::MAX))
            .collect();
        db.execute(
            "INSERT INTO minimal (long_url, short_code, created_at)
             SELECT l.target_url, l.code, l.created_at
             FROM unnest($1::text[]) WITH ORDINALITY AS b (code, n) JOIN links l USING (code)
             ORDER BY b.n",
            &[&codes],
        )
        .await?;
        db.execute(
            "INSERT INTO links_v6 (code, id, owner_key_id, target_url, redirect_status, is_alias,
                                   idempotency_key, created_at, updated_at)
             SELECT l.code, b.id, l.owner_key_id, l.target_url, l.redirect_status, false, b.key,
                    l.created_at, l.created_at
             FROM unnest($1::text[], $2::text[], $3::int8[]) WITH ORDINALITY AS b (code, key, id, n)
             JOIN links l USING (code)
             ORDER BY b.n",
            &[&codes, &keys, &ids],
        )
        .await?;
    }
    db.batch_execute("VACUUM (ANALYZE) links, minimal, links_v6, link_idempotency")
        .await?;
    let links = args.links;
    println!(
        "## Postgres: {links} links, {} partitions, {} per batch, targets {:.0} bytes on average",
        args.partitions,
        args.batch,
        average_target(rows)
    );
    println!();
    let sizes = vec![
        pg_size(&db, "links").await?,
        pg_size(&db, "minimal").await?,
        pg_size(&db, "links_v6").await?,
    ];
    print_sizes(&sizes, links, "minimal");
    println!();
    println!("Idempotency keys within their retention:");
    println!();
    let keys = pg_size(&db, "link_idempotency").await?;
    print_sizes(std::slice::from_ref(&keys), links, "minimal");

    // Past the retention: a writer started with a 1 s retention prunes the
    // keys when it starts.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let pruner = setup
        .start(&[
            ("RUST_LOG", "warn"),
            ("TINYURL_IDEMPOTENCY_RETENTION", "1s"),
        ])
        .await?;
    wait_until(
        "the expired keys pruned",
        Duration::from_secs(120),
        || async {
            let row = db
                .query_one("SELECT count(*) FROM link_idempotency", &[])
                .await?;
            Ok(row.get::<_, i64>(0) == 0)
        },
    )
    .await
    .context("the writer did not prune the expired keys")?;
    drop(pruner);
    db.batch_execute("VACUUM link_idempotency").await?;
    let pruned = pg_size(&db, "link_idempotency").await?;
    println!();
    println!(
        "idempotency keys past their retention: 0 rows; heap {} B; index pages kept for reuse {} B ({:.1} B/link)",
        pruned.heap,
        pruned.indexes.iter().map(|(_, bytes)| bytes).sum::<i64>(),
        {
            #[allow(clippy::cast_precision_loss)]
            let per = pruned.total as f64 / links as f64;
            per
        }
    );
    println!();
    Ok(())
}

#[allow(clippy::cast_precision_loss)]
fn average_target(rows: &[Row]) -> f64 {
    rows.iter().map(|row| row.target.len()).sum::<usize>() as f64 / rows.len() as f64
}

/// Bytes of a SQLite file: per table and index (from its `dbstat` table),
/// the whole file, and its free pages.
struct FileSize {
    objects: Vec<(String, i64)>,
    file: i64,
    free: i64,
}

fn sqlite_sizes(path: &Path) -> anyhow::Result<FileSize> {
    let connection = rusqlite::Connection::open(path)?;
    let mut statement =
        connection.prepare("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")?;
    let objects = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<Vec<(String, i64)>, _>>()?;
    let page_size: i64 = connection.query_row("PRAGMA page_size", [], |row| row.get(0))?;
    let pages: i64 = connection.query_row("PRAGMA page_count", [], |row| row.get(0))?;
    let free: i64 = connection.query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
    Ok(FileSize {
        objects,
        file: pages * page_size,
        free: free * page_size,
    })
}

/// The links table of schema V6 in a file of its own, filled with the same
/// rows in the same order.
fn sqlite_v6(
    path: &Path,
    source: &Path,
    batches: &[Vec<(String, usize)>],
    rows: &[Row],
) -> anyhow::Result<()> {
    let mut connection = rusqlite::Connection::open(path)?;
    connection.pragma_update(None, "journal_mode", "wal")?;
    connection.execute_batch(
        "CREATE TABLE links (
             code            TEXT    NOT NULL PRIMARY KEY,
             id              INTEGER,
             owner_key_id    INTEGER NOT NULL,
             target_url      TEXT,
             redirect_status INTEGER NOT NULL,
             forward_query   INTEGER NOT NULL DEFAULT 0,
             expires_at      INTEGER,
             enabled         INTEGER NOT NULL DEFAULT 1,
             is_alias        INTEGER NOT NULL,
             idempotency_key TEXT,
             created_at      INTEGER NOT NULL,
             updated_at      INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE UNIQUE INDEX links_idempotency ON links (owner_key_id, idempotency_key)
             WHERE idempotency_key IS NOT NULL;
         CREATE INDEX links_owner_newest ON links (owner_key_id, created_at DESC, code DESC);",
    )?;
    connection.execute("ATTACH DATABASE ?1 AS current", [source.to_string_lossy()])?;
    for batch in batches {
        let transaction = connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO main.links (code, id, owner_key_id, target_url, redirect_status,
                                         is_alias, idempotency_key, created_at, updated_at)
                 SELECT code, ?2, owner_key_id, target_url, redirect_status, 0, ?3,
                        created_at, created_at
                 FROM current.links WHERE code = ?1",
            )?;
            for (code, row) in batch {
                let id = i64::try_from(*row).unwrap_or(i64::MAX);
                insert.execute(rusqlite::params![code, id, rows[*row].key])?;
            }
        }
        transaction.commit()?;
    }
    Ok(())
}

fn print_sqlite(label: &str, path: &Path, links: usize) -> anyhow::Result<f64> {
    let FileSize {
        objects,
        file,
        free,
    } = sqlite_sizes(path)?;
    #[allow(clippy::cast_precision_loss)]
    let per = |bytes: i64| bytes as f64 / links as f64;
    let shown: Vec<String> = objects
        .iter()
        .filter(|(_, bytes)| per(*bytes) >= 0.5)
        .map(|(name, bytes)| format!("{name} {:.1}", per(*bytes)))
        .collect();
    println!(
        "| {label} | {} | {:.1} | {:.1} |",
        shown.join(", "),
        per(free),
        per(file)
    );
    Ok(per(file))
}

async fn sqlite(args: &Args, rows: &Arc<Vec<Row>>) -> anyhow::Result<()> {
    let dir = ScratchDir::new("bench-storage", None)?;
    let mut embedded = Embedded::start(dir.path()).await?;
    let key = embedded
        .printed_key
        .clone()
        .context("tinyurl up printed no API key")?;
    let batches = create(&format!("http://{}", embedded.grpc), &key, rows, args.batch).await?;
    embedded.stop()?;
    let data = embedded.data_path();
    // The write-ahead log is folded into the file when the last connection
    // closes; measure the file alone.
    rusqlite::Connection::open(&data)?.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
    let v6 = dir.path().join("v6.db");
    sqlite_v6(&v6, &data, &batches, rows)?;
    rusqlite::Connection::open(&v6)?.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;

    println!("## SQLite (embedded store): {} links", args.links);
    println!();
    println!("| file | tables and indexes B/link | free pages B/link | file B/link |");
    println!("|---|---|---:|---:|");
    let current = print_sqlite("current schema", &data, args.links)?;
    let before = print_sqlite("V6 layout (links table only)", &v6, args.links)?;

    // Past the retention the keys are pruned and their pages leave the
    // file (incremental auto-vacuum).
    embedded.set_env("TINYURL_IDEMPOTENCY_RETENTION", "1s");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    embedded.start_again().await?;
    let count = || -> anyhow::Result<i64> {
        Ok(rusqlite::Connection::open(&data)?.query_row(
            "SELECT count(*) FROM link_idempotency",
            [],
            |row| row.get(0),
        )?)
    };
    wait_until(
        "the expired keys pruned",
        Duration::from_secs(120),
        || async { Ok(count()? == 0) },
    )
    .await
    .context("tinyurl up did not prune the expired keys")?;
    embedded.stop()?;
    rusqlite::Connection::open(&data)?.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
    let pruned = print_sqlite("current schema, keys past retention", &data, args.links)?;
    println!();
    println!(
        "file per link: {pruned:.1} B once the keys are past their retention, {current:.1} B within it; the V6 layout's links table alone: {before:.1} B ({:.2}× and {:.2}× of it)",
        pruned / before,
        current / before
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rows = Arc::new(rows(args.links));
    postgres(&args, &rows).await?;
    sqlite(&args, &rows).await
}
