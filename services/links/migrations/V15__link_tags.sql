-- Tags: any number (bounded by the service) per link. Rows only for tagged
-- links, so a plain link's row and the redirect's read are as they were.
-- Keyed by owner first: every question asked of tags is one key's (its
-- links with a tag, its tags with their counts, a rename across its links).
CREATE TABLE link_tags (
    owner_key_id bigint NOT NULL,
    tag          text   COLLATE "C" NOT NULL,
    code         text   COLLATE "C" NOT NULL,
    PRIMARY KEY (owner_key_id, tag, code)
);
-- A link's tags, and their removal with the link.
CREATE INDEX link_tags_code ON link_tags (code);
