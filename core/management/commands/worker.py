from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections
from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker

from core.queues import ensure_redis

# Latency-sensitive queues first: an RQ worker takes work from its queues in this order.
QUEUE_PRIORITY = ("events", "delivery", "default", "crm", "imports")
# Jobs run in the worker process, without RQ's fork per job: our jobs are many and short (an event
# batch, a delivery round, a workflow advance) and a fork plus a new database connection costs
# about as much as their work (measured: P99 event-to-email 16.7 s forking vs 0.37 s in-process,
# bench/workflows.py). Each job still has its timeout; a worker killed mid-job loses only what the
# sweepers re-queue, as with forking. `--worker-class rq.Worker` restores the fork per job.
IN_PROCESS_QUEUES = frozenset(QUEUE_PRIORITY)
IN_PROCESS_WORKER = "core.management.commands.worker.InProcessWorker"


class InProcessWorker(SimpleWorker):
    """RQ's SimpleWorker (jobs run in the worker process, timeouts still enforced) that keeps
    Django's database connection between jobs and checks it the way Django does between requests
    (CONN_MAX_AGE, CONN_HEALTH_CHECKS): a broken or expired connection is replaced."""

    def execute_job(self, job: Job, queue: Queue) -> None:
        close_old_connections()
        try:
            super().execute_job(job, queue)
        finally:
            close_old_connections()


class Command(BaseCommand):
    help = "Run an RQ worker on every Leadflow queue (or the ones named), with RQ's scheduler for delayed jobs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("queues", nargs="*", help=f"queues to serve (default: {' '.join(QUEUE_PRIORITY)})")
        parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
        parser.add_argument("--name", default=None, help="worker name (default: host.pid)")
        parser.add_argument("--worker-class", default=None,
                            help=f"RQ worker class (default: {IN_PROCESS_WORKER}, jobs in-process; "
                                 "rq.Worker forks per job)")

    def handle(self, *args: Any, **options: Any) -> None:
        queues = options["queues"] or list(QUEUE_PRIORITY)
        unknown = set(queues) - set(settings.QUEUE_NAMES)
        if unknown:
            known = ", ".join(settings.QUEUE_NAMES)
            raise CommandError(f"unknown queue(s): {', '.join(sorted(unknown))}; known: {known}")
        ensure_redis()
        worker_class = options["worker_class"]
        if worker_class is None and set(queues) <= IN_PROCESS_QUEUES:
            worker_class = IN_PROCESS_WORKER
        call_command(
            "rqworker",
            *queues,
            with_scheduler=True,
            burst=options["burst"],
            name=options["name"],
            worker_class=worker_class,
            verbosity=options["verbosity"],
        )
