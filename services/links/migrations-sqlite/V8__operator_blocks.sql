-- An operator's block (`block-host`), apart from the owner's disable
-- (`enabled`): the owner cannot undo it, and `unblock-host` gives back what
-- the owner had chosen. Existing rows take the default from the schema, and
-- a 0 costs a new row one header byte.
ALTER TABLE links ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1));
