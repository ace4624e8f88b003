from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.utils import import_attribute
from rq.worker import BaseWorker, SimpleWorker

from core import ops, tracing
from core.queues import ensure_redis

# Latency-sensitive queues first: an idle worker looks at its queues in this order. Under load they
# take turns (FairQueues), so the order only breaks ties.
QUEUE_PRIORITY = ("events", "delivery", "default", "crm", "imports")
# Jobs run in the worker process, without RQ's fork per job: our jobs are many and short (an event
# batch, a delivery round, a workflow advance) and a fork plus a new database connection costs
# about as much as their work (measured: P99 event-to-email 16.7 s forking vs 0.37 s in-process,
# bench/workflows.py). Each job still has its timeout; a worker killed mid-job loses only what the
# sweepers re-queue, as with forking. `--worker-class rq.Worker` restores the fork per job.
IN_PROCESS_QUEUES = frozenset(QUEUE_PRIORITY)
IN_PROCESS_WORKER = "core.management.commands.worker.InProcessWorker"


if TYPE_CHECKING:
    _WorkerBase = BaseWorker
else:
    _WorkerBase = object


class JobCounters(_WorkerBase):
    """Mixed into every worker class `manage.py worker` runs: each job's outcome is counted per
    queue and minute in Redis (core.ops.job_outcome_record), for the operations page's throughput
    charts and /metrics. RQ calls these two methods for every job, whichever way it ran: in
    process, in a forked work horse (success and exceptions are handled there), or in the parent
    when the horse was killed or timed out (not rq's SpawnWorker, whose child rebuilds a plain
    Worker). A failed attempt that RQ will retry counts as failed.
    Counting never raises: a Redis error is logged and the job's own handling is unaffected."""

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry) -> None:
        super().handle_job_success(job, queue, started_job_registry)
        ops.job_outcome_record(redis=self.connection, queue=queue.name, outcome="finished")

    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry | None = None,
                           exc_string: str = "") -> None:
        try:
            super().handle_job_failure(job, queue, started_job_registry=started_job_registry, exc_string=exc_string)
        finally:
            ops.job_outcome_record(redis=self.connection, queue=queue.name, outcome="failed")


class FairQueues(_WorkerBase):
    """Mixed into every worker class `manage.py worker` runs: its queues take turns. After a job
    from one queue the next look starts at the queue after it (in the order given), so while one
    queue always has work (a stream of event jobs, a backlog of CRM batches) every other queue
    still gets a job in turn: each waits for at most one job of every other queue, never for a
    queue to run dry. RQ's default strictly prefers the first queue with work, which let a stream
    of event jobs hold delivery back until the stream stopped (issue 25). This is RQ's own
    `round_robin` dequeue strategy, made the default here because django-rq's `rqworker` cannot
    pass one."""

    def reorder_queues(self, reference_queue: Queue) -> None:
        names = [q.name for q in self.queues]
        if reference_queue.name not in names:
            return
        pos = names.index(reference_queue.name)
        self._ordered_queues = self.queues[pos + 1:] + self.queues[:pos + 1]


def counting_worker_class(worker_class: str | type[BaseWorker]) -> type[BaseWorker]:
    """`worker_class` (a class or its dotted path, e.g. "rq.Worker") with JobCounters,
    FairQueues and TracedJobs mixed in."""
    cls: Any = import_attribute(worker_class) if isinstance(worker_class, str) else worker_class
    if not (isinstance(cls, type) and issubclass(cls, BaseWorker)):
        raise CommandError(f"--worker-class {worker_class}: not an RQ worker class")
    if issubclass(cls, JobCounters) and issubclass(cls, FairQueues) and issubclass(cls, tracing.TracedJobs):
        return cls
    return type(f"Counting{cls.__name__}", (tracing.TracedJobs, FairQueues, JobCounters, cls), {"__module__": __name__})


class InProcessWorker(tracing.TracedJobs, FairQueues, JobCounters, SimpleWorker):
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
                                 "rq.Worker forks per job); jobs are counted per queue whichever it is")

    def handle(self, *args: Any, **options: Any) -> None:
        queues = options["queues"] or list(QUEUE_PRIORITY)
        unknown = set(queues) - set(settings.QUEUE_NAMES)
        if unknown:
            known = ", ".join(settings.QUEUE_NAMES)
            raise CommandError(f"unknown queue(s): {', '.join(sorted(unknown))}; known: {known}")
        ensure_redis()
        tracing.setup("worker")
        worker_class = options["worker_class"]
        if worker_class is None:
            worker_class = IN_PROCESS_WORKER if set(queues) <= IN_PROCESS_QUEUES else "rq.Worker"
        call_command(
            "rqworker",
            *queues,
            with_scheduler=True,
            burst=options["burst"],
            name=options["name"],
            worker_class=counting_worker_class(worker_class),
            verbosity=options["verbosity"],
        )
