-- Hosts blocked from the command line (`block-host`), shared by every
-- writer (each polls it), beside the operators' blocklist file. Entries
-- use the file's syntax: `host` or `*.suffix`.
CREATE TABLE blocked_hosts (
    entry    text        COLLATE "C" PRIMARY KEY,
    added_at timestamptz NOT NULL DEFAULT now()
);
