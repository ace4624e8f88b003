from django.db import models


class Heartbeat(models.Model):
    """Last time a named background loop proved it is alive (e.g. scheduler -> queue -> worker).

    Written by the periodic `core.tasks.heartbeat` job, so a fresh row means the scheduler
    enqueued, Redis carried and a worker ran a job. Ops reads it on the health endpoints.
    """

    name = models.CharField(max_length=100, unique=True)
    seen_at = models.DateTimeField()
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} @ {self.seen_at:%Y-%m-%d %H:%M:%S}"
