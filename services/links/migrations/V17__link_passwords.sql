-- Password-protected links. Their `link_options.options` is what the
-- redirect reads: the cap and the password's salt with the target, UTM
-- fields and rules sealed under the key the password derives. The owner's
-- form (the same in clear, the key wrapped under the link secret) goes in
-- `owner_options`, a column the redirect's role is not granted; NULL for
-- every link without a password. Bit 32 of `links.flags` says the link is
-- protected, so the redirect's read of `links` leaves its target out.
ALTER TABLE link_options ADD COLUMN owner_options text;

ALTER TABLE links
    DROP CONSTRAINT links_flags_check,
    ADD CONSTRAINT links_flags_check CHECK (flags BETWEEN 0 AND 63) NOT VALID;
