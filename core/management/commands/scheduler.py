from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand

from core import tracing
from core.queues import ensure_redis


class Command(BaseCommand):
    help = "Run the periodic-job scheduler (schedules are declared in config/schedules.py). Run exactly one."

    def handle(self, *args: Any, **options: Any) -> None:
        ensure_redis()
        tracing.setup("scheduler")
        call_command("rqcron", "config.schedules")
