"""A send_email step's `utm` option (campaigns/utm.py) for the messages the step queued.

The step runner queues a workflow email with context {"workflow": key, "step": step id} and the
revision its version pins; the option is read back from the newest version of that workflow that
pins the revision and has the step. Versions are immutable, so the answer is cached per
(workflow, step, revision) for a short while: a delivery batch renders hundreds of messages of
one step with one query.
"""

from __future__ import annotations

import time
from typing import Any

from automation.definition import iter_steps
from campaigns.utm import UtmInvalid, utm_clean

CACHE_SECONDS = 60.0  # a version promoted meanwhile that pins the same revision is seen within this
_cache: dict[tuple[str, str, int], tuple[float, dict[str, str]]] = {}


def workflow_step_utm(message: Any) -> dict[str, str] | None:
    context = message.context if isinstance(message.context, dict) else {}
    workflow, step = context.get("workflow"), context.get("step")
    if not (isinstance(workflow, str) and isinstance(step, str) and message.revision_id):
        return None
    key = (workflow, step, message.revision_id)
    hit = _cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
        return hit[1]
    found = _lookup(*key)
    if len(_cache) > 1000:
        _cache.clear()
    _cache[key] = (time.monotonic(), found)
    return found


def step_utm_cache_clear() -> None:
    _cache.clear()


def _lookup(workflow: str, step_id: str, revision_id: int) -> dict[str, str]:
    from automation.models import WorkflowVersion

    definitions = (WorkflowVersion.objects.filter(workflow__key=workflow, pins__revision_id=revision_id)
                   .order_by("-number").values_list("definition", flat=True)[:10])
    for definition in definitions:
        for step in iter_steps(definition or {}):
            if step.get("id") == step_id and step.get("type") == "send_email":
                try:
                    return utm_clean(step.get("utm"), where=f"{workflow} step {step_id!r} utm")
                except UtmInvalid:
                    return {}  # validated on import; links go untagged rather than unsent
    return {}
