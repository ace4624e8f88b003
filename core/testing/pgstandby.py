"""A throwaway streaming standby of a running PostgreSQL cluster, for the read replica tests.

`pg_basebackup -R` copies the primary (the test suite's own cluster, core/testing/pgcluster.py)
into a temp dir and writes the standby's `primary_conninfo` and `standby.signal`; the copy then
starts as a hot standby on its own loopback port, streaming the primary's WAL. The primary needs
nothing special: `wal_level=replica` and `max_wal_senders` are PostgreSQL's defaults, and initdb's
pg_hba.conf lets loopback replication connections in with the cluster's auth method (trust).
PostgreSQL's documentation: "Setting Up a Standby Server" and "pg_basebackup" (-R, -X stream).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from core.testing.pgcluster import _user_exists, find_bindir, free_port

WAIT_SECONDS = 60  # a standby that has not replayed by then is broken, not slow


class PostgresStandby:
    def __init__(self, *, primary_host: str, primary_port: int, user: str, dbname: str) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (install Debian's postgresql package)")
        self.bindir = bindir
        self.primary_host, self.primary_port, self.user, self.dbname = primary_host, primary_port, user, dbname
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="leadflow-pg-standby-"))
        self.data = self.root / "data"
        self._run_as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root (as in pgcluster.py)
            owner = "postgres" if _user_exists("postgres") else "nobody"
            entry = pwd.getpwnam(owner)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._run_as = ["runuser", "-u", owner, "--"]

    def _pg(self, tool: str, *args: str) -> None:
        result = subprocess.run([*self._run_as, str(self.bindir / tool), *args], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr or result.stdout}")

    def start(self) -> PostgresStandby:
        self._pg("pg_basebackup", "-h", self.primary_host, "-p", str(self.primary_port), "-U", self.user,
                 "-D", str(self.data), "-R", "-X", "stream", "-c", "fast")
        self.resume()
        return self

    def resume(self) -> None:
        """Start the standby (again, after `stop`): same port, same data; it catches up by itself."""
        # max_connections as the primary's (a hot standby refuses to start with fewer); fsync off like
        # the test primary's. hot_standby (on by default) is what lets it answer queries.
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=100 "
                   "-c hot_standby=on -c fsync=off")
        self._pg("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "start")

    def stop(self, *, mode: str = "immediate") -> None:
        """`immediate`: the standby dies as in a crash; every session on it is cut."""
        if (self.data / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def _connect(self, *, primary: bool = False) -> psycopg.Connection:
        return psycopg.connect(host=self.primary_host, port=self.primary_port if primary else self.port,
                               user=self.user, dbname=self.dbname, autocommit=True)

    def sql(self, query: str) -> object:
        """One value from a query on the standby."""
        with self._connect() as conn:
            row = conn.execute(query).fetchone()
        return row[0] if row else None

    def wait_for_primary(self) -> None:
        """Return once the standby has replayed everything the primary had logged when called (its
        WAL insert position: asynchronous commits included; past a page header, see db_router)."""
        with self._connect(primary=True) as conn:
            row = conn.execute("SELECT lsn::text, (pg_wal_lsn_diff(lsn, '0/0') % 8192)::int"
                               " FROM pg_current_wal_insert_lsn() AS lsn").fetchone()
        assert row is not None
        lsn, page_offset = row
        slack = page_offset if page_offset <= 40 else 0
        self._wait(f"SELECT pg_wal_lsn_diff('{lsn}'::pg_lsn, pg_last_wal_replay_lsn()) <= {slack}",
                   f"replay up to {lsn}")

    def pause_replay(self) -> None:
        """Stop applying WAL (it is still received): the standby falls behind as the primary writes."""
        self.sql("SELECT pg_wal_replay_pause()")
        self._wait("SELECT pg_get_wal_replay_pause_state() = 'paused'", "pause its replay")

    def resume_replay(self) -> None:
        self.sql("SELECT pg_wal_replay_resume()")

    def _wait(self, condition: str, what: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while not self.sql(condition):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standby did not {what} within {WAIT_SECONDS} s; see {self.root}/server.log")
            time.sleep(0.02)
