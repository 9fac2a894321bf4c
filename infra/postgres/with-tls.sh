#!/usr/bin/env bash
# Runs its arguments (the image's entrypoint) after copying the internal TLS
# key and certificate where Postgres accepts them: owned by postgres, the
# key 0600. Postgres reads them at start and on reload (SIGHUP), so a renewed
# certificate needs a container restart, or a copy and `pg_ctl reload`.
set -euo pipefail
install -o postgres -g postgres -m 0600 /tls/postgres.key /var/lib/postgresql/server.key
install -o postgres -g postgres -m 0644 /tls/postgres.pem /var/lib/postgresql/server.pem
exec "$@"
