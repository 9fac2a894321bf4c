#!/usr/bin/env bash
# Runs once, when the primary's data directory is initialised: one login role
# per service, each with its own password, and the database handed to the
# migrator. What each role may do is granted by the migrations themselves
# (services/*/src/store/**/grants.sql), so it follows the schema:
#   tinyurl_migrator  owns the database and its schema; runs `migrate`
#   tinyurl_writer    rows of the link tables, keys and rollups
#   tinyurl_redirect  reads the columns of links a redirect needs
#   tinyurl_idalloc   idalloc's tables
#   tinyurl_monitor   the statistics views (pg_monitor), for the Postgres
#                     exporter; no table of ours
# The bootstrap superuser (POSTGRES_USER) is for the operator only.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v db="$POSTGRES_DB" \
    -v migrator="$MIGRATOR_DB_PASSWORD" -v writer="$WRITER_DB_PASSWORD" \
    -v redirect="$REDIRECT_DB_PASSWORD" -v idalloc="$IDALLOC_DB_PASSWORD" \
    -v monitor="$MONITOR_DB_PASSWORD" <<'SQL'
CREATE ROLE tinyurl_migrator LOGIN PASSWORD :'migrator';
CREATE ROLE tinyurl_writer LOGIN PASSWORD :'writer';
CREATE ROLE tinyurl_redirect LOGIN PASSWORD :'redirect';
CREATE ROLE tinyurl_idalloc LOGIN PASSWORD :'idalloc';
CREATE ROLE tinyurl_monitor LOGIN PASSWORD :'monitor' CONNECTION LIMIT 3;
GRANT pg_monitor TO tinyurl_monitor;
ALTER DATABASE :"db" OWNER TO tinyurl_migrator;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO tinyurl_writer, tinyurl_redirect, tinyurl_idalloc, tinyurl_monitor;
SQL
