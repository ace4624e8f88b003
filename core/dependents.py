"""Who depends on a row: lower apps' admins ask, upper apps answer (STYLE.md 16: arrows point down).

automation registers a callback (automation.dependencies.dependents_warning) in its AppConfig; the
admins of templates, senders, segments and CRM connections mix in DependentsWarningMixin, which
warns, naming the production workflow versions, before a delete is confirmed (the delete page and
the "delete selected" action), on the change form, and when a save pauses the row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import messages
from django.http import HttpRequest

_CALLBACKS: list[Callable[[Any], str]] = []

# A save that sets one of these fields to this value pauses the row (a sender, a segment, a connection).
PAUSE_FIELDS = {"is_paused": True, "is_active": False}


def dependents_register(callback: Callable[[Any], str]) -> None:
    """`callback(obj)` returns a sentence naming what depends on `obj`, or ""."""
    if callback not in _CALLBACKS:
        _CALLBACKS.append(callback)


def dependents_warnings(obj: Any) -> list[str]:
    return [text for callback in _CALLBACKS if (text := callback(obj))]


class DependentsWarningMixin:
    """For a ModelAdmin: warnings that name what depends on the rows being deleted or paused."""

    def _warn_dependents(self, request: HttpRequest, objs: Iterable[Any], suffix: str) -> None:
        for obj in objs:
            for text in dependents_warnings(obj):
                messages.warning(request, f"{text} {suffix}")

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        # Called by the delete page and the "delete selected" action, before and on confirming.
        if request.POST.get("post") != "yes":
            self._warn_dependents(request, objs, "Deleting it stops them from working as promoted.")
        return super().get_deleted_objects(objs, request)  # type: ignore[misc]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> Any:
        if request.method == "GET" and object_id.isdigit():
            obj = self.get_object(request, object_id)  # type: ignore[attr-defined]
            if obj is not None:
                self._warn_dependents(request, [obj], "Pausing or deleting it affects them.")
        return super().change_view(request, object_id, form_url, extra_context)  # type: ignore[misc]

    def save_form(self, request: HttpRequest, form: Any, change: bool) -> Any:
        # Before the row is saved (save_model comes next): what depends on it is read while it is
        # still active (a paused CRM connection is no longer the one a crm_sync step would pick).
        obj = super().save_form(request, form, change)  # type: ignore[misc]
        paused = [name for name, value in PAUSE_FIELDS.items()
                  if name in getattr(form, "changed_data", ()) and getattr(obj, name, None) is value]
        if change and paused:
            self._warn_dependents(request, [obj], "It is now paused: they hold or fail at the steps using it.")
        return obj
