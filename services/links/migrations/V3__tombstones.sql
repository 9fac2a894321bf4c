-- A deleted link stays behind as a tombstone: its row keeps the code (and
-- its owner, for the record) with the target cleared, so the primary key
-- refuses the code to every later insert. A code printed on a poster can
-- then never be claimed by someone else once its owner deletes it. A
-- tombstone costs the code and a few fixed-width columns, no target.
-- Dropping NOT NULL only changes the catalog; no row is rewritten.
ALTER TABLE links ALTER COLUMN target_url DROP NOT NULL;
