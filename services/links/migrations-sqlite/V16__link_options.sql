-- UTM fields and redirect rules as compact JSON; NULL for a plain link.
ALTER TABLE links ADD COLUMN options TEXT;
