#!/bin/bash
# Runs once, when the postgres-data volume is first initialised (docker-entrypoint-initdb.d): the application role,
# without CREATEDB or CREATEROLE, owns the database; analysts' logins join dancemoe_analyst later (dancemoe db analyst).
set -euo pipefail
app_password=$(cut -d: -f5- /run/secrets/postgres_app_pgpass)
[ -n "$app_password" ] || { echo "postgres_app_pgpass holds no password (a line *:*:*:dancemoe:PASSWORD)" >&2; exit 1; }
psql -v ON_ERROR_STOP=1 -v app_password="$app_password" --username postgres --dbname postgres <<'SQL'
SET password_encryption = 'scram-sha-256';
CREATE ROLE dancemoe LOGIN PASSWORD :'app_password';
CREATE ROLE dancemoe_analyst NOLOGIN;
ALTER DATABASE dancemoe OWNER TO dancemoe;
SQL
