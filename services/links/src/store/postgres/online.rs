//! The online path from the schema before partitioning (V6) to V7, for a
//! links table too large to copy while writes wait: V7's own migration holds
//! writes for about 1 s per 100,000 links, this path for milliseconds.
//!
//! 1. **Prepare** (one short transaction): V7's tables beside the old one,
//!    and a trigger on the old `links` that mirrors every insert, update and
//!    delete into them from then on.
//! 2. **Backfill** in slices of `slice_rows` codes, each its own
//!    transaction: the slice's rows are read `FOR SHARE`, so a concurrent
//!    change either lands before the slice reads the row (and the slice
//!    copies its new state) or waits for the slice and is then mirrored over
//!    it; `ON CONFLICT DO NOTHING` keeps a mirrored row that got there first.
//! 3. **List index**, built per partition with `CREATE INDEX CONCURRENTLY`
//!    and attached to the partitioned index: writes go on.
//! 4. **Swap** (one transaction, under a lock held for milliseconds plus a
//!    count of both tables): the old table goes, the new one takes its name,
//!    and V7 is recorded in the migration history as applied, so writers of
//!    the new version start on it without running V7's copy.
//!
//! Every step can be run again after a failure: prepare and the index skip
//! what exists, the backfill copies over what is there.
//!
//! The migration lock is held throughout, so a writer of the new version
//! starting meanwhile waits for the swap instead of running V7's copy.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::{HISTORY_TABLE, MIGRATION_LOCK_KEY, PostgresLinkStore, embedded};

/// The migration this path stands in for.
const PARTITIONED_LINKS_VERSION: i32 = 7;

/// How the backfill paces itself.
#[derive(Debug, Clone)]
pub struct OnlineMigration {
    /// Codes copied per transaction.
    pub slice_rows: i64,
    /// Rest between slices, to leave the primary room for live traffic.
    pub pause: Duration,
    /// Bound on the swap's wait for its lock: in-flight writes finish
    /// first, and new ones queue behind it only this long.
    pub lock_timeout: Duration,
    /// Bound on every other statement (a slice, one partition's index).
    pub statement_timeout: Duration,
}

impl Default for OnlineMigration {
    fn default() -> Self {
        Self {
            slice_rows: 10_000,
            pause: Duration::ZERO,
            lock_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(600),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnlineReport {
    /// V7 was applied before this run: nothing done.
    pub already_applied: bool,
    pub rows_copied: u64,
    pub slices: u64,
    pub keys_copied: u64,
    pub links: i64,
    /// How long the swap held its lock.
    pub swap: Duration,
}

/// The partitioned table as V7 creates it (`tinyurl.link_partitions` of
/// them), with its foreign key, and the idempotency table. Kept identical to
/// V7 by `conformance::online_migration_matches_the_offline_one`.
const PREPARE_TABLES: &str = r#"
CREATE TABLE links_partitioned (
    created_at      timestamptz NOT NULL DEFAULT now(),
    owner_key_id    bigint      NOT NULL,
    updated_at      timestamptz,
    expires_at      timestamptz,
    redirect_status smallint    NOT NULL
        CONSTRAINT links_redirect_status_check CHECK (redirect_status IN (301, 302, 307, 308)),
    flags           smallint    NOT NULL DEFAULT 0
        CONSTRAINT links_flags_check CHECK (flags BETWEEN 0 AND 7),
    code            text        COLLATE "C" NOT NULL,
    target_url      text,
    PRIMARY KEY (code)
) PARTITION BY HASH (code);

DO $$
DECLARE
    partitions integer := coalesce(nullif(current_setting('tinyurl.link_partitions', true), ''), '16')::integer;
BEGIN
    IF partitions < 1 OR partitions > 1024 THEN
        RAISE EXCEPTION 'tinyurl.link_partitions must be between 1 and 1024, not %', partitions;
    END IF;
    FOR remainder IN 0 .. partitions - 1 LOOP
        EXECUTE format(
            'CREATE TABLE links_p%s PARTITION OF links_partitioned
                 FOR VALUES WITH (MODULUS %s, REMAINDER %s)',
            lpad(remainder::text, 3, '0'), partitions, remainder);
    END LOOP;
END
$$;

ALTER TABLE links_partitioned
    ADD CONSTRAINT links_owner_key_id_fkey FOREIGN KEY (owner_key_id) REFERENCES api_keys (id);

CREATE TABLE link_idempotency (
    owner_key_id bigint      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    key          text        COLLATE "C" NOT NULL,
    code         text        COLLATE "C" NOT NULL,
    PRIMARY KEY (owner_key_id, key)
);
CREATE INDEX link_idempotency_age ON link_idempotency USING brin (created_at);
"#;

/// The mirror: a V6 row as V7 stores it (flags 1 forward the query, 2
/// disabled, 4 alias; `updated_at` NULL while it equals `created_at`), and
/// its idempotency key while the link lives and the key is within the
/// retention (written into the body by the prepare step), as V7's copy
/// would carry it over.
const PREPARE_TRIGGER: &str = r"
CREATE FUNCTION links_mirror_v7() RETURNS trigger LANGUAGE plpgsql AS $mirror$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF OLD.idempotency_key IS NOT NULL THEN
            DELETE FROM link_idempotency
            WHERE owner_key_id = OLD.owner_key_id AND key = OLD.idempotency_key
              AND code = OLD.code;
        END IF;
        IF TG_OP = 'DELETE' OR OLD.code <> NEW.code THEN
            DELETE FROM links_partitioned WHERE code = OLD.code;
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN NULL;
    END IF;
    INSERT INTO links_partitioned (created_at, owner_key_id, updated_at, expires_at,
                                   redirect_status, flags, code, target_url)
    VALUES (NEW.created_at, NEW.owner_key_id, NULLIF(NEW.updated_at, NEW.created_at),
            NEW.expires_at, NEW.redirect_status,
            (CASE WHEN NEW.forward_query THEN 1 ELSE 0 END)
          + (CASE WHEN NEW.enabled THEN 0 ELSE 2 END)
          + (CASE WHEN NEW.is_alias THEN 4 ELSE 0 END),
            NEW.code, NEW.target_url)
    ON CONFLICT (code) DO UPDATE SET
        created_at = EXCLUDED.created_at, owner_key_id = EXCLUDED.owner_key_id,
        updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at,
        redirect_status = EXCLUDED.redirect_status, flags = EXCLUDED.flags,
        target_url = EXCLUDED.target_url;
    IF NEW.idempotency_key IS NOT NULL AND NEW.target_url IS NOT NULL
       AND NEW.created_at > now() - make_interval(secs => %RETENTION%) THEN
        INSERT INTO link_idempotency (owner_key_id, created_at, key, code)
        VALUES (NEW.owner_key_id, NEW.created_at, NEW.idempotency_key, NEW.code)
        ON CONFLICT (owner_key_id, key) DO UPDATE SET
            created_at = EXCLUDED.created_at, code = EXCLUDED.code;
    END IF;
    RETURN NULL;
END
$mirror$;
CREATE TRIGGER links_mirror_v7 AFTER INSERT OR UPDATE OR DELETE ON links
    FOR EACH ROW EXECUTE FUNCTION links_mirror_v7();
";

/// One slice: the next `$2` codes after `$1` up to `$4`, locked against
/// change while they are copied. Returns the slice's last code, its rows and
/// the keys it copied.
const BACKFILL_SLICE: &str = r#"
WITH slice AS (
    SELECT * FROM links WHERE code > $1 AND code <= $4 ORDER BY code LIMIT $2 FOR SHARE
), copied AS (
    INSERT INTO links_partitioned (created_at, owner_key_id, updated_at, expires_at,
                                   redirect_status, flags, code, target_url)
    SELECT created_at, owner_key_id, NULLIF(updated_at, created_at), expires_at, redirect_status,
           (CASE WHEN forward_query THEN 1 ELSE 0 END)
         + (CASE WHEN enabled THEN 0 ELSE 2 END)
         + (CASE WHEN is_alias THEN 4 ELSE 0 END),
           code, target_url
    FROM slice
    ON CONFLICT (code) DO NOTHING
), keys AS (
    INSERT INTO link_idempotency (owner_key_id, created_at, key, code)
    SELECT owner_key_id, created_at, idempotency_key, code FROM slice
    WHERE idempotency_key IS NOT NULL AND target_url IS NOT NULL
      AND created_at > now() - make_interval(secs => $3)
    ON CONFLICT (owner_key_id, key) DO NOTHING
    RETURNING 1
)
SELECT max(code COLLATE "C"), count(*), (SELECT count(*) FROM keys) FROM slice
"#;

impl PostgresLinkStore {
    /// Migrates a database of the schema before partitioning (V6, applied
    /// first when older) to V7 while writes continue; see the module
    /// documentation. A database already at V7 is left as it is.
    pub async fn migrate_links_online(
        &self,
        options: &OnlineMigration,
    ) -> anyhow::Result<OnlineReport> {
        self.migrate_to(Some(PARTITIONED_LINKS_VERSION - 1)).await?;
        let config = self.migration_config();
        let (client, connection) =
            tokio::time::timeout(self.timeout, tinyurl_runtime::postgres::connect(&config))
                .await
                .map_err(|_| anyhow::anyhow!("connecting to Postgres timed out"))?
                .context("cannot connect to Postgres to migrate")?;
        client
            .batch_execute(&format!(
                "SET statement_timeout = {}",
                options.statement_timeout.as_millis()
            ))
            .await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
            .await
            .context("cannot take the migration lock")?;
        let report = self.run_online(&client, options).await;
        let unlock = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
            .await;
        let report = report?;
        unlock.context("cannot release the migration lock")?;
        drop(client);
        let _ = connection.await;
        Ok(report)
    }

    async fn run_online(
        &self,
        db: &tokio_postgres::Client,
        options: &OnlineMigration,
    ) -> anyhow::Result<OnlineReport> {
        let applied: Option<i32> = db
            .query_one(&format!("SELECT max(version) FROM {HISTORY_TABLE}"), &[])
            .await?
            .try_get(0)?;
        if applied.unwrap_or(0) >= PARTITIONED_LINKS_VERSION {
            tracing::info!("links are partitioned already");
            return Ok(OnlineReport {
                already_applied: true,
                ..OnlineReport::default()
            });
        }
        let retention = self.idempotency_retention.as_secs_f64();
        let prepared: bool = db
            .query_one("SELECT to_regclass('links_partitioned') IS NOT NULL", &[])
            .await?
            .try_get(0)?;
        if prepared {
            tracing::info!("resuming: the partitioned table and its mirror exist");
        } else {
            let trigger = PREPARE_TRIGGER.replace("%RETENTION%", &format!("{retention}"));
            db.batch_execute(&format!("BEGIN; {PREPARE_TABLES} {trigger} COMMIT;"))
                .await
                .context("cannot prepare the partitioned table")?;
            tracing::info!("partitioned table prepared; changes to links are mirrored");
        }

        // Rows written since the trigger exists are mirrored: the backfill
        // stops at the highest code there was by then, rather than chasing
        // codes inserted meanwhile (sequential aliases would keep it going).
        // The trigger's creation waited for the writes in flight, so every
        // row it did not see is at or below this.
        let last_code: Option<String> = db
            .query_one(r#"SELECT max(code COLLATE "C") FROM links"#, &[])
            .await?
            .try_get(0)?;
        let mut report = OnlineReport::default();
        let mut after = String::new();
        let started = Instant::now();
        loop {
            let row = db
                .query_one(
                    BACKFILL_SLICE,
                    &[&after, &options.slice_rows, &retention, &last_code],
                )
                .await
                .context("a backfill slice failed")?;
            let (last, rows, keys): (Option<String>, i64, i64) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            let Some(last) = last else { break };
            report.slices += 1;
            report.rows_copied += u64::try_from(rows).unwrap_or(0);
            report.keys_copied += u64::try_from(keys).unwrap_or(0);
            if report.slices % 100 == 0 {
                tracing::info!(
                    rows = report.rows_copied,
                    seconds = started.elapsed().as_secs(),
                    "backfilling"
                );
            }
            after = last;
            if !options.pause.is_zero() {
                tokio::time::sleep(options.pause).await;
            }
        }
        tracing::info!(rows = report.rows_copied, "backfill done");

        build_list_index(db).await?;
        (report.links, report.swap) = swap(db, options).await?;
        Ok(report)
    }
}

/// `(owner_key_id, created_at)` on every partition without blocking writes,
/// then the partitioned index over them.
async fn build_list_index(db: &tokio_postgres::Client) -> anyhow::Result<()> {
    // An index a failed earlier run left half-built is invalid: rebuilt.
    for row in db
        .query(
            "SELECT i.indexrelid::regclass::text FROM pg_index i
             JOIN pg_inherits p ON p.inhrelid = i.indrelid
             WHERE p.inhparent = 'links_partitioned'::regclass AND NOT i.indisvalid",
            &[],
        )
        .await?
    {
        let index: String = row.try_get(0)?;
        db.batch_execute(&format!("DROP INDEX CONCURRENTLY {index}"))
            .await?;
    }
    let partitions: Vec<String> = db
        .query(
            "SELECT inhrelid::regclass::text FROM pg_inherits
             WHERE inhparent = 'links_partitioned'::regclass ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    db.batch_execute(
        "CREATE INDEX IF NOT EXISTS links_partitioned_owner_newest
             ON ONLY links_partitioned (owner_key_id, created_at)",
    )
    .await?;
    for partition in &partitions {
        // The name V7's CREATE INDEX on the parent gives each partition's.
        let index = format!("{partition}_owner_key_id_created_at_idx");
        db.batch_execute(&format!(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {partition} (owner_key_id, created_at)"
        ))
        .await
        .with_context(|| format!("cannot build {index}"))?;
        let attached: bool = db
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_inherits
                                WHERE inhparent = 'links_partitioned_owner_newest'::regclass
                                  AND inhrelid = $1::text::regclass)",
                &[&index],
            )
            .await?
            .try_get(0)?;
        if !attached {
            db.batch_execute(&format!(
                "ALTER INDEX links_partitioned_owner_newest ATTACH PARTITION {index}"
            ))
            .await?;
        }
    }
    tracing::info!(partitions = partitions.len(), "list index built");
    Ok(())
}

/// Replaces the old table under a brief exclusive lock, after checking that
/// the mirror holds every row, and records V7 as applied in the same
/// transaction. Returns the number of links and how long writes waited
/// (from the lock request to the commit).
async fn swap(
    db: &tokio_postgres::Client,
    options: &OnlineMigration,
) -> anyhow::Result<(i64, Duration)> {
    let v7 = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .find(|migration| migration.version() == PARTITIONED_LINKS_VERSION)
        .map(|migration| {
            (
                migration.name().to_owned(),
                migration.checksum().to_string(),
            )
        })
        .context("the writer embeds no migration V7")?;
    db.batch_execute(&format!(
        "BEGIN; SET LOCAL lock_timeout = {}",
        options.lock_timeout.as_millis()
    ))
    .await?;
    let locked = Instant::now();
    let swapped = async {
        db.batch_execute("LOCK TABLE links IN ACCESS EXCLUSIVE MODE")
            .await
            .context("cannot lock links for the swap (long transactions on it?); run again")?;
        let row = db
            .query_one(
                "SELECT (SELECT count(*) FROM links), (SELECT count(*) FROM links_partitioned)",
                &[],
            )
            .await?;
        let (old, new): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        if old != new {
            bail!("the partitioned table holds {new} links, the old one {old}: not swapped");
        }
        db.batch_execute(
            "DROP TRIGGER links_mirror_v7 ON links;
             DROP FUNCTION links_mirror_v7();
             DROP TABLE links;
             ALTER TABLE links_partitioned RENAME TO links;
             ALTER INDEX links_partitioned_pkey RENAME TO links_pkey;
             ALTER INDEX links_partitioned_owner_newest RENAME TO links_owner_newest;",
        )
        .await?;
        // As refinery records an applied migration (RFC 3339 in UTC).
        db.execute(
            &format!(
                "INSERT INTO {HISTORY_TABLE} (version, name, applied_on, checksum)
                 VALUES ($1, $2, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), $3)"
            ),
            &[&PARTITIONED_LINKS_VERSION, &v7.0, &v7.1],
        )
        .await?;
        Ok(new)
    }
    .await;
    match swapped {
        Ok(links) => {
            db.batch_execute("COMMIT").await?;
            let waited = locked.elapsed();
            tracing::info!(
                links,
                lock_ms = waited.as_millis(),
                "links swapped for the partitioned table; V7 recorded"
            );
            Ok((links, waited))
        }
        Err(error) => {
            let _ = db.batch_execute("ROLLBACK").await;
            Err(error)
        }
    }
}
