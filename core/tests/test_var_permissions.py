"""VAR_DIR (the SQLite database, the embedded Redis, uploads, demo passwords) is the user's alone:
the directory 0700 and its files 0600, even when the process's umask would share them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import embedded_redis

ROOT = Path(__file__).resolve().parents[2]
# Opens the database, writes, and prints the WAL journal's mode while it exists (closing removes it).
OPEN_DB = ("import os, django; django.setup(); from django.db import connection; "
           "connection.cursor().execute('CREATE TABLE probe (x int)'); "
           "print(oct(os.stat(connection.settings_dict['NAME'] + '-wal').st_mode & 0o777))")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The common default umask (022): files world-readable unless made private on purpose."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def open_database(var: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "true", "ENV_FILE": "", "VAR_DIR": str(var)})
    result = subprocess.run([sys.executable, "-c", OPEN_DB], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_a_new_var_dir_and_database_are_private(tmp_path: Path, loose_umask: None) -> None:
    var = tmp_path / "var"
    wal_mode = open_database(var)

    assert mode(var) == 0o700
    assert mode(var / "leadflow.sqlite3") == 0o600
    assert wal_mode == "0o600"  # WAL mode: the journal holds row data too


def test_an_existing_world_readable_var_dir_is_tightened(tmp_path: Path, loose_umask: None) -> None:
    var = tmp_path / "var"
    var.mkdir(mode=0o755)
    (var / "leadflow.sqlite3").touch(mode=0o644)

    open_database(var)

    assert mode(var) == 0o700
    assert mode(var / "leadflow.sqlite3") == 0o600


def test_the_embedded_redis_files_are_private(tmp_path: Path, loose_umask: None) -> None:
    socket = tmp_path / "var" / "redis.sock"
    assert embedded_redis.ensure_running(socket)
    try:
        assert mode(socket.parent) == 0o700
        assert mode(socket) == 0o700  # --unixsocketperm: only the user connects
        for name in ("redis.lock", "redis.pid", "redis.log"):
            assert mode(socket.parent / name) == 0o600, name
    finally:
        embedded_redis.stop(socket)
    assert mode(socket.parent / "redis.rdb") == 0o600  # the dump of queued jobs


def test_uploads_are_private(settings: object) -> None:
    from django.core.files.base import ContentFile
    from django.core.files.storage import FileSystemStorage

    storage = FileSystemStorage()
    name = storage.save("imports/probe/leads.csv", ContentFile(b"email\na@example.com\n"))
    try:
        assert mode(Path(storage.path(name))) == 0o600
        assert mode(Path(storage.path(name)).parent) == 0o700
    finally:
        storage.delete(name)
