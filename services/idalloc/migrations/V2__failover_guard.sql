-- Failover guard. With asynchronous replication a promoted replica can miss
-- the last leases committed on the old primary; handing those IDs out again
-- would duplicate codes. Every new connection idalloc makes calls
-- idalloc_guard_timeline() before it serves a lease: when the server runs on a
-- newer WAL timeline than the one recorded (a promotion happened), every
-- namespace skips ahead by `skip` IDs, far more than can be outstanding in the
-- replication lag window, and the new timeline is recorded.

CREATE TABLE idalloc_timeline (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    timeline_id bigint      NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

-- The timeline of the WAL being written now: the first 8 hex digits of the
-- current WAL file name. Needs no privileges; fails on a standby, which is
-- what we want (idalloc must only ever lease from the primary).
CREATE FUNCTION idalloc_current_timeline() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint
$$;

CREATE FUNCTION idalloc_guard_timeline(skip bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    current_timeline bigint := idalloc_current_timeline();
    recorded_timeline bigint;
BEGIN
    SELECT timeline_id INTO recorded_timeline FROM idalloc_timeline WHERE singleton FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO idalloc_timeline (timeline_id) VALUES (current_timeline)
        ON CONFLICT (singleton) DO NOTHING;
        RETURN false;
    END IF;
    IF current_timeline <= recorded_timeline THEN
        RETURN false;
    END IF;
    UPDATE idalloc_namespaces SET next_id = next_id + skip, updated_at = now();
    UPDATE idalloc_timeline SET timeline_id = current_timeline, changed_at = now();
    RETURN true;
END
$$;
