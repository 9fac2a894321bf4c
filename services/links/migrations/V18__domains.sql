-- Short domains besides the default one. A link on a registered domain is
-- keyed `{host}/{code}` in `links` and everything keyed by a link's code
-- (see tinyurl_domain::domains), so this table holds only the domains
-- themselves: the redirect reads it to know which hosts are registered and
-- where each sends the codes it does not have.
CREATE TABLE domains (
    host          text COLLATE "C" PRIMARY KEY,
    -- Where a code that does not exist on this domain is sent; NULL: the
    -- built-in 404.
    not_found_url text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
