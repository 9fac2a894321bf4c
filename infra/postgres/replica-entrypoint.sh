#!/usr/bin/env bash
# A streaming replica of postgres-primary: on first start, clone the primary
# with pg_basebackup (-R writes standby.signal and the connection settings,
# -C/-S a replication slot so the primary keeps the WAL the replica needs),
# then run the image's normal entrypoint.
set -euo pipefail
: "${PGDATA:=/var/lib/postgresql/data}"
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    until gosu postgres pg_isready -h "$PRIMARY_HOST" -U replicator -d postgres; do sleep 1; done
    PGPASSWORD="$REPLICATION_PASSWORD" gosu postgres pg_basebackup \
        -h "$PRIMARY_HOST" -U replicator -D "$PGDATA" -R -X stream -C -S replica_1 --no-password
fi
# Extra arguments (the TLS overlay's ssl settings) go to postgres.
exec docker-entrypoint.sh postgres -c hot_standby=on "$@"
