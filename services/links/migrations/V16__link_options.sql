-- A link's options (UTM fields, redirect rules, a visit cap) as compact
-- JSON, in a table of their own keyed by code: a link without options has
-- no row here and no new column in `links` (a ninth column would widen every
-- row's null bitmap past one byte and cost each plain link 8 bytes of tuple
-- header). Bit 16 of `links.flags` says a row exists, so the reads of
-- `links` (the redirect's included) look here only for the links that have
-- one.
CREATE TABLE link_options (
    code    text COLLATE "C" PRIMARY KEY,
    options text NOT NULL
);

ALTER TABLE links
    DROP CONSTRAINT links_flags_check,
    ADD CONSTRAINT links_flags_check CHECK (flags BETWEEN 0 AND 31) NOT VALID;
