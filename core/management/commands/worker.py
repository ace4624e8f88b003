from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.queues import ensure_redis

# Latency-sensitive queues first: an RQ worker takes work from its queues in this order.
QUEUE_PRIORITY = ("events", "delivery", "default", "crm", "imports")


class Command(BaseCommand):
    help = "Run an RQ worker on every Leadflow queue (or the ones named), with RQ's scheduler for delayed jobs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("queues", nargs="*", help=f"queues to serve (default: {' '.join(QUEUE_PRIORITY)})")
        parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
        parser.add_argument("--name", default=None, help="worker name (default: host.pid)")
        parser.add_argument("--worker-class", default=None, help="RQ worker class, e.g. rq.worker.SimpleWorker")

    def handle(self, *args: Any, **options: Any) -> None:
        queues = options["queues"] or list(QUEUE_PRIORITY)
        unknown = set(queues) - set(settings.QUEUE_NAMES)
        if unknown:
            known = ", ".join(settings.QUEUE_NAMES)
            raise CommandError(f"unknown queue(s): {', '.join(sorted(unknown))}; known: {known}")
        ensure_redis()
        call_command(
            "rqworker",
            *queues,
            with_scheduler=True,
            burst=options["burst"],
            name=options["name"],
            worker_class=options["worker_class"],
            verbosity=options["verbosity"],
        )
