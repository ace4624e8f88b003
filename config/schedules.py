"""Every periodic job of Leadflow, in one place (run by `manage.py scheduler`).

RQ's cron scheduler enqueues these into their queues; workers run them. Each entry says
why it exists. Jobs must be safe to run late, twice, or concurrently with themselves,
because a restarted scheduler runs interval jobs at once. Run exactly one scheduler.
"""

from rq import cron

from contacts.tasks import import_sweeper
from core.tasks import heartbeat

# Liveness of the whole background path (scheduler -> Redis -> worker -> database):
# ops and the readiness probe read core.Heartbeat; a stale row means work is stalled.
cron.register(heartbeat, "default", interval=60, kwargs={"name": "scheduler"}, result_ttl=300)

# Imports whose worker died (SIGKILL, OOM) or whose RQ job Redis lost are re-queued; after
# three interrupted attempts they fail visibly. Nothing is half-imported either way.
cron.register(import_sweeper, "imports", interval=60, result_ttl=300)
