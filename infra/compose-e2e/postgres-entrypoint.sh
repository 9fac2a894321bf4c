#!/usr/bin/env bash
# The official postgres image's entrypoint, as far as the compose file uses
# it: as root, own the data directory and drop to postgres; on an empty data
# directory, initdb with POSTGRES_USER / POSTGRES_PASSWORD, create
# POSTGRES_DB, run /docker-entrypoint-initdb.d/*.sh against a server on the
# local socket only; then run postgres listening on every address.
set -euo pipefail
: "${PGDATA:=/var/lib/postgresql/data}"
if [[ "${1:-}" == postgres && "$(id -u)" == 0 ]]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec gosu postgres "$0" "$@"
fi
if [[ "${1:-}" == postgres && ! -s "$PGDATA/PG_VERSION" ]]; then
    : "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host=scram-sha-256 -D "$PGDATA" >/dev/null
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    if [[ "$POSTGRES_DB" != postgres ]]; then
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
            -c "CREATE DATABASE \"$POSTGRES_DB\"" >/dev/null
    fi
    export POSTGRES_USER POSTGRES_DB PGDATA
    for script in /docker-entrypoint-initdb.d/*.sh; do
        [[ -e "$script" ]] || continue
        echo "running $script"
        bash "$script"
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
if [[ "${1:-}" == postgres ]]; then
    shift
    exec postgres -c listen_addresses='*' "$@"
fi
exec "$@"
