"""django-rq's dashboard views, made to answer 404 for a queue or worker that does not exist.

django-rq 4.2 looks queues up with `get_queues_list()[queue_index]` (an IndexError for
/admin/rq/queues/99/) and workers with `Worker.find_by_key` (a ValueError for a key that is not
a worker's): both were 500s. The views are wrapped where they are mounted, at /admin/rq/
(config/urls.py) and under django-rq's admin entry /admin/django_rq/dashboard/ (core/admin.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver
from django_rq.admin import QueueAdmin
from django_rq.queues import get_queue_by_index
from django_rq.settings import get_queues_list
from rq.worker import Worker

from core.views import patterns_wrapped

INDEX_KWARGS = ("queue_index", "scheduler_index")  # both index get_queues_list() in django-rq


def existing_queue_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """404 for a queue index past the configured queues or a worker key that is not one."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_staff:
            return view(request, *args, **kwargs)  # the view's own login check answers first
        count = len(get_queues_list())
        for name in INDEX_KWARGS:
            if name in kwargs and not 0 <= int(kwargs[name]) < count:
                raise Http404(f"no queue number {kwargs[name]} (there are {count})")
        if "key" in kwargs and "queue_index" in kwargs and not _worker_exists(kwargs["queue_index"], kwargs["key"]):
            raise Http404("no such worker")
        return view(request, *args, **kwargs)

    return wrapped


def _worker_exists(queue_index: int, key: str) -> bool:
    """django-rq's worker page asserts the worker exists (a 500 when it does not)."""
    try:
        return Worker.find_by_key(key, connection=get_queue_by_index(queue_index).connection) is not None
    except ValueError:  # not a worker key at all
        return False


def missing_queues_404(patterns: Sequence[URLPattern | URLResolver]) -> list[URLPattern | URLResolver]:
    return patterns_wrapped(patterns, existing_queue_only)


class DashboardAdmin(QueueAdmin):
    """django-rq's admin entry (a link to the dashboard, no rows): its views guarded as above, and
    no change, history or delete page for a Dashboard row, since there is no table behind it (a
    numeric id queried a table that does not exist: 500)."""

    def get_urls(self) -> list[URLPattern]:
        return missing_queues_404(super().get_urls())  # type: ignore[return-value]  # URLPatterns only

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        raise Http404("the queue dashboard has no rows")

    def history_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None) \
            -> HttpResponse:
        raise Http404("the queue dashboard has no rows")

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None) \
            -> HttpResponse:
        raise Http404("the queue dashboard has no rows")
