-- Password-protected links: `options` holds what the redirect reads (the
-- target, UTM fields and rules sealed under the password's key), the owner's
-- form goes here; NULL for every link without a password.
ALTER TABLE links ADD COLUMN owner_options TEXT;
