#!/bin/sh
# Lets the optional `replica` service (docker compose --profile replica, docs/scaling.md) stream
# from this server: replication connections from the compose network, with the password method the
# image uses for every other connection. Runs once, when the data directory is first created
# (/docker-entrypoint-initdb.d); the entrypoint restarts the server afterwards, which reads it.
set -e
echo "host replication ${POSTGRES_USER} all scram-sha-256" >> "$PGDATA/pg_hba.conf"
