"""Redis going away is when ops needs the operations page most: it still answers, with a
"Redis unreachable" banner in place of the queues and everything read from the database as usual;
/readyz says Redis is what failed, quickly; /metrics still exports the database series with
leadflow_redis_up 0. Redis is made unreachable for real: django-rq's settings point at a socket
nobody listens on (django-rq builds its client from RQ_QUEUES on every call, nothing is cached)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.utils import timezone

from campaigns.models import Message, MessageStatus
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact, make_template
from contacts.models import Segment
from core import ops

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def closed_port() -> int:
    """A local TCP port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(params=["missing unix socket", "closed TCP port"])
def redis_down(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every queue's Redis URL points where nothing answers, for the whole test."""
    if request.param == "missing unix socket":
        url = f"unix://{tmp_path / 'no-redis.sock'}?db=0"
    else:
        url = f"redis://127.0.0.1:{closed_port()}/0"
    queues = {name: {**config, "URL": url} for name, config in settings.RQ_QUEUES.items()}
    with override_settings(RQ_QUEUES=queues, METRICS_TOKEN=TOKEN):
        yield url


@pytest.fixture
def failed_message(sender) -> Message:  # noqa: ANN001
    """Given one outbox message that failed (made before Redis goes: queueing needs no Redis here)."""
    messages_queue(template=make_template(), items=[QueueItem(make_contact("down@example.com").pk, "k-down")])
    Message.objects.update(status=MessageStatus.FAILED)
    return Message.objects.get()


def test_the_operations_page_answers_without_redis_and_says_why(
        client: Client, role_users, failed_message: Message, redis_down: str,  # noqa: ANN001
        caplog: pytest.LogCaptureFixture):
    Segment.objects.create(name="Webinar leads", definition={"all": []}, refresh_failed_at=timezone.now(),
                           refresh_error="OperationalError: canceling statement due to statement timeout")
    client.force_login(role_users["ops"])

    with caplog.at_level(logging.WARNING, logger="core.ops"):
        response = client.get("/admin/operations/")

    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="redis-down"' in page
    assert "Redis unreachable: ConnectionError" in page
    assert 'id="queues"' not in page  # left out, not shown as zeros
    assert 'id="throughput"' not in page
    # ...while the database-backed figures are all there
    assert '/admin/campaigns/message/?status__exact=failed">1</a>' in page
    assert "Webinar leads" in page
    assert "statement timeout" in page
    assert 'id="switches"' in page
    assert 'id="heartbeats"' in page
    warnings = [r for r in caplog.records if r.name == "core.ops" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Redis unreachable" in warnings[0].getMessage()


def test_readyz_names_redis_as_the_failing_check_and_answers_fast(client: Client, redis_down: str):
    started = time.monotonic()
    response = client.get("/readyz")
    assert time.monotonic() - started < 2
    assert response.status_code == 503
    assert response.json() == {"ready": False, "database": "ok", "redis": "error: ConnectionError",
                               "workers": "unknown: Redis unavailable"}


def test_metrics_keep_the_database_series_and_report_redis_down(
        client: Client, failed_message: Message, redis_down: str):
    response = client.get("/metrics", headers=BEARER)
    assert response.status_code == 200
    body = response.content.decode()
    assert "leadflow_redis_up 0.0" in body
    assert 'leadflow_messages{status="failed"} 1.0' in body
    assert 'leadflow_switch_paused{name="sending"} 0.0' in body
    assert "leadflow_queue_depth{" not in body  # absent, not a false 0
    assert "\nleadflow_workers " not in body


@override_settings(METRICS_TOKEN=TOKEN)
def test_metrics_report_redis_up_with_its_queue_series(client: Client):
    body = client.get("/metrics", headers=BEARER).content.decode()
    assert "leadflow_redis_up 1.0" in body
    assert 'leadflow_queue_depth{queue="default"}' in body
    assert "\nleadflow_workers " in body


def test_a_programming_error_is_not_taken_for_redis_down(monkeypatch: pytest.MonkeyPatch):
    def broken(**kwargs: object) -> list[ops.QueueStats]:
        raise TypeError("a bug, not an outage")

    monkeypatch.setattr(ops, "queue_stats", broken)
    with pytest.raises(TypeError):
        ops.redis_snapshot()
