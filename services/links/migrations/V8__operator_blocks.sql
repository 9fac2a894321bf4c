-- An operator's block (`block-host`) is a bit of its own in `flags` (8),
-- apart from the owner's disable (2): the owner cannot undo it, and
-- `unblock-host` gives back what the owner had chosen. A plain link's row
-- does not grow.
--
-- Every row satisfies the narrower check already, so the wider one is added
-- NOT VALID: no scan of the table under the lock.
ALTER TABLE links
    DROP CONSTRAINT links_flags_check,
    ADD CONSTRAINT links_flags_check CHECK (flags BETWEEN 0 AND 15) NOT VALID;
