"""An empty Redis per test, so per-IP and per-token throttles start fresh."""

from __future__ import annotations

import pytest

from core.queues import get_connection


@pytest.fixture(autouse=True)
def empty_redis() -> None:
    get_connection().flushdb()
