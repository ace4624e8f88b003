from __future__ import annotations

from pathlib import Path

import redis

from core import embedded_redis


def test_embedded_redis_starts_once_is_shared_and_stops(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    assert not embedded_redis.is_running(sock)
    try:
        # the first caller starts it, later callers find it running
        assert embedded_redis.ensure_running(sock) is True
        assert embedded_redis.ensure_running(sock) is False
        # two clients share one server
        redis.Redis(unix_socket_path=str(sock)).set("k", "v")
        assert redis.Redis(unix_socket_path=str(sock)).get("k") == b"v"
    finally:
        embedded_redis.stop(sock)
    assert not embedded_redis.is_running(sock)


def test_a_stale_socket_file_does_not_block_start(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    sock.write_text("left behind by a killed server")
    try:
        assert embedded_redis.ensure_running(sock) is True
        assert embedded_redis.is_running(sock)
    finally:
        embedded_redis.stop(sock)
