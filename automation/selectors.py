"""Reads for the versioning screen: step diff, the SVG graph, simulation, dashboard counts."""

from __future__ import annotations

import datetime as dt
import difflib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count
from django.utils import timezone
from django.utils.html import escape

from automation import definition as d
from automation.engine import condition_holds
from automation.models import Enrollment, StepRun, Workflow, WorkflowVersion
from contacts.models import Contact

# --- Step diff ------------------------------------------------------------------------------------


@dataclass
class StepChange:
    step_id: str
    change: str  # added | removed | changed | same
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    fields: list[str] = field(default_factory=list)


def _pins(version: WorkflowVersion | None) -> dict[str, Any]:
    from automation.models import TemplatePin

    if version is None:
        return {}
    return {p.template.key: p.revision for p in TemplatePin.objects.filter(version=version)
            .select_related("template", "revision__created_by", "revision__topic")}


def step_diff(old: WorkflowVersion | None, new: WorkflowVersion | None) -> list[StepChange]:
    """Steps of both versions matched by id, in the new version's order, removed ones after. A
    send_email step whose template content (the pinned revision) differs is changed, field
    "content", even when its fields are the same."""
    old_steps = {str(s["id"]): s for s in (old.steps if old else [])}
    new_steps = {str(s["id"]): s for s in (new.steps if new else [])}
    old_pins, new_pins = _pins(old), _pins(new)
    changes = []
    for sid, step in new_steps.items():
        before = old_steps.get(sid)
        if before is None:
            changes.append(StepChange(sid, "added", None, step))
            continue
        fields = sorted(k for k in set(before) | set(step) if before.get(k) != step.get(k))
        if step.get("type") == "send_email" and "template" not in fields:
            was, now = old_pins.get(str(before.get("template"))), new_pins.get(str(step.get("template")))
            if (was.pk if was else None) != (now.pk if now else None):
                fields.append("content")
        changes.append(StepChange(sid, "changed" if fields else "same", before, step, fields))
    changes += [StepChange(sid, "removed", step, None) for sid, step in old_steps.items() if sid not in new_steps]
    return changes


@dataclass
class TemplateChange:
    """One template of two versions: the revisions each pins and, when they differ, what differs."""

    key: str
    change: str  # added | removed | changed | same
    old: Any  # EmailTemplateRevision | None
    new: Any
    fields: list[str] = field(default_factory=list)  # kind, topic, subject, html, text
    text_diff: str = ""  # unified diff (difflib) of subject, HTML and text
    old_render: Any = None  # rendering.Rendered for the sample contact, or an error string
    new_render: Any = None


# What a revision pins; its topic decides who may receive it (issue 20), so a change shows like content.
PARTS = ("kind", "topic", "subject", "html", "text")


def _part(revision: Any, part: str) -> str:
    if revision is None:
        return ""
    if part == "topic":
        return f"{revision.topic.key} ({revision.topic.name})" if revision.topic_id else ""
    return str(getattr(revision, part, "") or "")


def template_diff(old: WorkflowVersion | None, new: WorkflowVersion | None) -> list[TemplateChange]:
    """The content each version sends, template by template: the pinned revisions, a text diff of
    their parts and both rendered for the sample contact (shown side by side)."""
    old_pins, new_pins = _pins(old), _pins(new)
    changes = []
    for key in sorted(set(old_pins) | set(new_pins)):
        a, b = old_pins.get(key), new_pins.get(key)
        change = "added" if a is None else "removed" if b is None else "same" if a.pk == b.pk else "changed"
        fields = [f for f in PARTS if a and b and _part(a, f) != _part(b, f)]
        item = TemplateChange(key, change, a, b, fields)
        if change != "same":
            item.text_diff = _text_diff(a, b, old, new)
            item.old_render, item.new_render = _sample_render(a), _sample_render(b)
        changes.append(item)
    return changes


def _text_diff(a: Any, b: Any, old: WorkflowVersion | None, new: WorkflowVersion | None) -> str:
    lines: list[str] = []
    for part in PARTS:
        before = _part(a, part).splitlines()
        after = _part(b, part).splitlines()
        lines += difflib.unified_diff(
            before, after, lineterm="",
            fromfile=f"{part} ({a} in v{old.number})" if a and old else f"{part} (none)",
            tofile=f"{part} ({b} in v{new.number})" if b and new else f"{part} (none)")
    return "\n".join(lines)


def _sample_render(revision: Any) -> Any:
    from campaigns import rendering

    if revision is None:
        return None
    context = rendering.render_context(contact=rendering.SAMPLE_CONTACT, attributes={}, extra={})
    try:
        return rendering.render_parts(subject=revision.subject, html=revision.html, text=revision.text,
                                      context=context)
    except rendering.TemplateInvalid as exc:
        return str(exc)


def workflow_level_diff(old: WorkflowVersion | None, new: WorkflowVersion | None) -> list[str]:
    keys = ("name", "timezone", "test_segment", "trigger", "reentry", "goal")
    a, b = (old.definition if old else {}), (new.definition if new else {})
    return [k for k in keys if a.get(k) != b.get(k)]


# --- Graph (server-rendered SVG, no JS) ----------------------------------------------------------

_W, _H, _GAP, _X = 220, 44, 26, 40
_COLOURS = {"send_email": "#e3f2fd", "wait": "#fff8e1", "branch": "#f3e5f5", "exit": "#ffebee"}


def graph_svg(version: WorkflowVersion | None, *, highlight: Sequence[str] = ()) -> str:
    """The steps top to bottom; default edges straight down, other edges as arcs on the right."""
    if version is None:
        return ""
    steps = version.steps
    index = d.step_map(steps)
    end_y = len(steps) * (_H + _GAP) + 10
    parts = []
    arcs = 0
    for source, target, label in d.edges(steps):
        i = index[source]
        j = index.get(target, len(steps)) if target != d.END else len(steps)
        y1 = 10 + i * (_H + _GAP) + _H
        y2 = 10 + j * (_H + _GAP) if j < len(steps) else end_y
        x = _X + _W / 2
        if j == i + 1 and label != "then":
            parts.append(f'<line x1="{x}" y1="{y1}" x2="{x}" y2="{y2}" class="edge"/>')
            if label:
                parts.append(f'<text x="{x + 4}" y="{y1 + 14}" class="lbl">{label}</text>')
            continue
        arcs += 1
        bend = _X + _W + 16 + 14 * arcs
        ya, yb = y1 - _H / 2, y2 + (_H / 2 if j < len(steps) else 0)
        parts.append(f'<path d="M{_X + _W} {ya} C{bend} {ya} {bend} {yb} {_X + _W} {yb}" class="edge"/>')
        parts.append(f'<text x="{bend - 10}" y="{(ya + yb) / 2}" class="lbl">{escape(label or "next")}</text>')
    for i, step in enumerate(steps):
        y = 10 + i * (_H + _GAP)
        kind = str(step.get("type"))
        fill = "#c8e6c9" if str(step.get("id")) in highlight else _COLOURS.get(kind, "#f5f5f5")
        parts.append(f'<g class="step" data-step="{escape(step.get("id"))}">'
                     f'<rect x="{_X}" y="{y}" width="{_W}" height="{_H}" rx="6" fill="{fill}" stroke="#555"/>'
                     f'<text x="{_X + 8}" y="{y + 18}" class="sid">{escape(step.get("id"))}</text>'
                     f'<text x="{_X + 8}" y="{y + 34}" class="kind">{escape(_summary(step))}</text></g>')
    parts.append(f'<circle cx="{_X + _W / 2}" cy="{end_y + 8}" r="8" fill="#333"/>'
                 f'<text x="{_X + _W / 2 + 14}" y="{end_y + 12}" class="lbl">end</text>')
    width, height = _X + _W + 40 + 14 * arcs + 20, end_y + 30
    style = ("<style>.edge{stroke:#555;fill:none;stroke-width:1.5}.lbl{font:11px sans-serif;fill:#555}"
             ".sid{font:bold 12px sans-serif}.kind{font:11px sans-serif;fill:#333}</style>")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="steps of v{version.number}">{style}{"".join(parts)}</svg>')


def _summary(step: dict[str, Any]) -> str:
    kind = str(step.get("type"))
    detail = {"send_email": step.get("template"), "wait": step.get("duration") or step.get("until")
              or ("window" if "window" in step else ""), "adjust_score": step.get("points"),
              "webhook": "POST"}.get(kind)
    text = f"{kind}: {detail}" if detail not in (None, "") else kind
    return text[:34]


# --- Simulation --------------------------------------------------------------------------------


@dataclass
class SimStep:
    step_id: str
    kind: str
    note: str


@dataclass
class Simulation:
    contact: Contact
    path: list[SimStep]
    outcome: str


def simulate(*, version: WorkflowVersion, contacts: Sequence[Contact], now: dt.datetime | None = None,
             max_steps: int = 100) -> list[Simulation]:
    """Walk each contact through the version with today's data and no side effects: effects are
    described, waits assumed over, branches evaluated as they would be now."""
    now = now or timezone.now()
    steps = version.steps
    index = d.step_map(steps)
    pins = _pins(version)
    results = []
    for contact in contacts:
        path: list[SimStep] = []
        current = str(steps[0]["id"]) if steps else d.END
        outcome = "completed"
        for _ in range(max_steps):
            if current not in index:
                break
            step = steps[index[current]]
            kind = str(step.get("type"))
            nxt = d.default_next(steps, index[current])
            note = _describe(step, version, pins)
            if kind == "branch":
                held = condition_holds(step["if"], contact=contact, now=now)
                nxt, note = str(step["then" if held else "else"]), f"condition {'true' if held else 'false'}"
            path.append(SimStep(current, kind, note))
            if kind == "exit":
                outcome = "exited"
                break
            current = nxt
        else:
            outcome = "stopped after {max_steps} steps"
        results.append(Simulation(contact, path, outcome))
    return results


def _describe(step: dict[str, Any], version: WorkflowVersion, pins: dict[str, Any]) -> str:
    kind = step.get("type")
    staging = version.state == "staging"
    if kind == "send_email":
        revision = pins.get(str(step.get("template")))
        content = f" r{revision.number} “{revision.subject}”" if revision else " (no pinned revision)"
        return f"would send {step.get('template')}{content}" + (" to the staging recipient" if staging else "")
    if kind == "wait":
        return f"would wait {step.get('duration') or step.get('until') or step.get('window')}"
    if kind == "crm_sync":
        return "would sync to the CRM" + (" sandbox (or dry run)" if staging else "")
    if kind in ("webhook", "notify_sales"):
        return "would call " + str(step.get("url") or step.get("webhook") or step.get("email")) + \
            (" (dry run in staging)" if staging else "")
    return f"would {kind}"


def simulation_contacts(*, emails: Sequence[str] = (), random_count: int = 0) -> list[Contact]:
    """The contacts to simulate, with their score and grade (branch conditions) read in the same query."""
    contacts = Contact.objects.with_scores()
    chosen = list(contacts.filter(email__in=[e.strip().lower() for e in emails if e.strip()]))
    if random_count:
        chosen += list(contacts.exclude(pk__in=[c.pk for c in chosen]).order_by("?")[:random_count])
    return chosen


# --- In flight ------------------------------------------------------------------------------------


def in_flight(*, workflow: Workflow) -> dict[str, int]:
    """Live enrollments (active or waiting) now: production (real contacts) and staging."""
    from automation.models import LIVE_STATUSES

    rows = Enrollment.objects.filter(workflow=workflow, status__in=LIVE_STATUSES).values_list("is_staging") \
        .annotate(n=Count("id"))
    counts = {"production": 0, "staging": 0}
    for is_staging, n in rows:
        counts["staging" if is_staging else "production"] += n
    return counts


# --- Dashboard ------------------------------------------------------------------------------------


@dataclass
class Dashboard:
    statuses: dict[str, int]  # all enrollments by status, and "enrolled" in all
    steps: dict[str, dict[str, int]]  # step id -> passed / waiting / failed / sent / suppressed / opened / clicked
    # "production" (real contacts) and "staging" (the test audience): enrollments by status
    audiences: dict[str, dict[str, int]] = field(default_factory=dict)
    # (step id, reason, messages): why a send step's emails were suppressed (issue 20)
    suppressed_reasons: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def audience_rows(self) -> list[tuple[str, list[int]]]:
        """Each audience's counts in the order of `statuses` (the table's columns)."""
        return [(side, [counts.get(k, 0) for k in self.statuses]) for side, counts in self.audiences.items()]


def workflow_dashboard(*, workflow: Workflow) -> Dashboard:
    """Enrollment counts by status, for production and staging apart; per step (all versions) how
    many passed, wait there, failed, and for send steps how many emails were sent, how many were
    suppressed (not sent on purpose: unsubscribed, bounced, a rule), opened and clicked."""
    from campaigns.models import Message, MessageStatus

    audiences: dict[str, dict[str, int]] = {"production": {"enrolled": 0}, "staging": {"enrolled": 0}}
    statuses: dict[str, int] = defaultdict(int)
    for is_staging, status, n in Enrollment.objects.filter(workflow=workflow).values_list("is_staging", "status") \
            .annotate(n=Count("id")).order_by():
        side = audiences["staging" if is_staging else "production"]
        side[status] = side.get(status, 0) + n
        side["enrolled"] += n
        statuses[status] += n
    statuses = dict(statuses)
    statuses["enrolled"] = sum(statuses.values())
    steps: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    runs = StepRun.objects.filter(version__workflow=workflow).values_list("step_id", "status").annotate(n=Count("id"))
    names = {"succeeded": "passed", "failed": "failed", "waiting": "waiting", "retrying": "retrying"}
    for step_id, status, n in runs:
        steps[step_id][names.get(status, status)] += n
    sends = Message.objects.filter(source=f"workflow:{workflow.key}"[:100])
    reasons: dict[tuple[str, str], int] = defaultdict(int)
    for key, status, opened, clicked, reason in sends.values_list("idempotency_key", "status", "opened_at",
                                                                  "clicked_at", "reason"):
        parts = key.split(":")  # wf:<enrollment>:<step>:<seq>
        if len(parts) >= 4:
            steps[parts[2]]["sent"] += status == MessageStatus.SENT
            steps[parts[2]]["suppressed"] += status == MessageStatus.SUPPRESSED
            if status == MessageStatus.SUPPRESSED:
                reasons[parts[2], reason or "?"] += 1
            steps[parts[2]]["opened"] += opened is not None
            steps[parts[2]]["clicked"] += clicked is not None
    return Dashboard(statuses, {k: dict(v) for k, v in steps.items()}, audiences,
                     sorted((step, reason, n) for (step, reason), n in reasons.items()))
