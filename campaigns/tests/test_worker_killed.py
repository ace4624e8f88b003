"""A delivery worker killed with SIGKILL mid-batch: nothing lost, at most the in-flight one twice."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from campaigns.delivery import delivery_run, delivery_sweep
from campaigns.models import Message, MessageStatus
from campaigns.services import QueueItem, messages_queue
from campaigns.tests.conftest import make_contact

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    return f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"


def kill_tree(pid: int) -> None:
    """SIGKILL a worker and its work horse: RQ puts the horse in a process group of its own, so
    killing the worker's group alone would leave the horse sending (as a container stop would not)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        try:
            os.killpg(int(child), signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.killpg(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_loses_nothing_and_repeats_at_most_the_message_in_flight(sender, template, sink):
    # given 60 queued messages and a slow mailbox server (so the kill lands mid-batch)
    sink.state.delay = 0.05
    contacts = [make_contact(f"k{i}@example.com") for i in range(60)]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": database_url(),
           "DEBUG": "true", "ENV_FILE": ""}
    worker = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "worker", "delivery"], env=env,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        messages_queue(template=template, items=[QueueItem(c.pk, f"burst:{c.pk}") for c in contacts])
        deadline = time.monotonic() + 60
        while len(sink.received) < 10 and time.monotonic() < deadline:
            assert worker.poll() is None, "worker died on its own"
            time.sleep(0.02)
        assert 10 <= len(sink.received) < 60, "too late to kill mid-batch"
        # when the worker and its work horse are killed
        kill_tree(worker.pid)
        worker.wait()
    finally:
        if worker.poll() is None:
            kill_tree(worker.pid)
    sent_before_kill = len(sink.received)
    in_flight = Message.objects.filter(status=MessageStatus.SENDING).count()
    assert in_flight > 0  # the rest of the batch was still claimed
    # then the sweeper gives the abandoned claims back and a new worker finishes the job
    later = timezone.now() + dt.timedelta(hours=1)
    assert delivery_sweep(now=later)["requeued"] == in_flight
    sink.state.delay = 0
    delivery_run(sender_id=sender.pk, max_seconds=30)
    # every message was sent, and at most one (the one in flight at the kill) went twice
    assert set(Message.objects.values_list("status", flat=True)) == {MessageStatus.SENT}
    received = Counter(sink.ids())
    assert set(received) == {str(pk) for pk in Message.objects.values_list("id", flat=True)}
    repeated = [msg_id for msg_id, n in received.items() if n > 1]
    assert len(repeated) <= 1, repeated
    assert len(sink.received) - 60 == len(repeated)
    assert sent_before_kill >= 10
