-- One database per service, created by the postgres image on its first start (an empty
-- postgres-data volume), as POSTGRES_USER, which owns them. Each service's DATABASE_URL in
-- docker-compose.yml names its own; the services create their tables themselves.
CREATE DATABASE orders;
CREATE DATABASE inventory;
CREATE DATABASE notifications;
