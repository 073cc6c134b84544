#!/bin/sh
# One database per service, each owned by a login role of its own (no superuser, no CREATEDB, no
# CREATEROLE) and closed to every other role: run by the postgres image on its first start (an
# empty postgres-data volume), as POSTGRES_USER. The role creates and migrates its tables itself
# (it owns the database, and with it the public schema) and cannot connect to another service's
# database. Each service's DATABASE_URL in docker-compose.yml names its database and role.
set -eu

create() {  # database role password
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v db="$1" -v role="$2" -v password="$3" <<'SQL'
CREATE ROLE :"role" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role" ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
}

# The server's own databases are the operator's: no service role connects to them either.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -v owner="$POSTGRES_USER" <<'SQL'
REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT ON DATABASE :"owner" FROM PUBLIC;
SQL

create orders order_service "$ORDER_SERVICE_POSTGRES_PASSWORD"
create inventory inventory_service "$INVENTORY_SERVICE_POSTGRES_PASSWORD"
create notifications notification_service "$NOTIFICATION_SERVICE_POSTGRES_PASSWORD"
