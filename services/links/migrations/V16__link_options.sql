-- UTM fields and redirect rules (and, later, the other options a link may
-- carry), as compact JSON. NULL for a plain link: no bytes but its bit in
-- the row's null bitmap, which every link already has (updated_at is NULL
-- until a link changes), and no change to how the redirect reads it.
-- Adding a column without a default rewrites nothing.
ALTER TABLE links ADD COLUMN options text;
