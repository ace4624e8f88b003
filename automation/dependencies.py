"""What a workflow version depends on outside itself, and who else depends on the same things.

A version's dependencies are read from its definition and the rows it resolves to at run time:
templates (the revision it pins), segments (trigger, branch conditions, test audience), the sender
its emails go out through (the default sender: automation.engine._send_email), topics (the
subscription topic each template names, consent.Topic; without one, the template's kind,
"marketing" or "transactional"), the CRM connection a `crm_sync` step writes to
(the first active one; a staging version: the sandbox) and the hosts its webhooks call.

Used by the versioning screen and the system page (a graph and JSON), and by the admins of
templates, senders, segments and CRM connections to warn before deleting or pausing something a
production version needs (registered in core.dependents by automation.apps).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.utils.html import escape

from automation import definition as d
from automation.models import VersionState, WorkflowVersion

KINDS = ("template", "segment", "sender", "topic", "crm_connection", "webhook_host")
LIVE_STATES = (VersionState.STAGING, VersionState.PRODUCTION)


@dataclass(frozen=True)
class Ref:
    """One thing depended on: (kind, ref) identifies it across versions."""

    kind: str
    ref: str  # template key, segment/sender/connection id (or the name a definition uses), host
    label: str


@dataclass
class Dependency:
    ref: Ref
    steps: list[str] = field(default_factory=list)  # the steps (or "trigger", "test audience") using it
    detail: str = ""  # e.g. "pins r3", "missing"
    shared_with: list[str] = field(default_factory=list)  # other workflows' live versions: "key v3 (production)"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.ref.kind, "ref": self.ref.ref, "label": self.ref.label, "steps": self.steps,
                "detail": self.detail, "shared_with": self.shared_with}


@dataclass
class _Context:
    """Rows looked up once for many versions."""

    segments_by_id: dict[str, Any]
    segments_by_name: dict[str, Any]
    default_sender: Any
    connections: dict[bool, Any]  # is_sandbox -> the connection a crm_sync step would use
    template_kinds: dict[str, str]
    template_topics: dict[str, tuple[int, str]]  # template key -> (topic id, topic name)
    topic_names: dict[int, str]


def _context() -> _Context:
    from automation.crm.models import CrmConnection
    from campaigns.models import EmailTemplate, SenderProfile
    from consent.models import Topic
    from contacts.models import Segment

    segments = list(Segment.objects.only("pk", "name"))
    connections: dict[bool, Any] = {}
    for conn in CrmConnection.objects.filter(is_active=True).order_by("name"):  # as crm_sync_request picks
        connections.setdefault(conn.is_sandbox, conn)
    return _Context(
        segments_by_id={str(s.pk): s for s in segments}, segments_by_name={s.name: s for s in segments},
        default_sender=SenderProfile.objects.filter(is_default=True).first()
        or SenderProfile.objects.order_by("id").first(),
        connections=connections, template_kinds=dict(EmailTemplate.objects.values_list("key", "kind")),
        template_topics={key: (pk, name) for key, pk, name in EmailTemplate.objects.filter(topic__isnull=False)
                         .values_list("key", "topic_id", "topic__name")},
        topic_names=dict(Topic.objects.values_list("pk", "name")))


def _segment_ref(value: Any, ctx: _Context) -> tuple[Ref, str]:
    seg = ctx.segments_by_id.get(str(value)) if str(value).isdigit() else ctx.segments_by_name.get(str(value))
    if seg is None:
        return Ref("segment", str(value), str(value)), "missing"
    return Ref("segment", str(seg.pk), seg.name), ""


def _conditions(cond: Any) -> Iterator[dict[str, Any]]:
    """Every condition mapping inside a branch's `if` (nested all/any/not included)."""
    if isinstance(cond, dict):
        yield cond
        for value in cond.values():
            yield from _conditions(value)
    elif isinstance(cond, list):
        for item in cond:
            yield from _conditions(item)


def _uses(version: WorkflowVersion, ctx: _Context, pins: dict[str, Any]) -> Iterator[tuple[Ref, str, str]]:
    """(what, where, detail) for each use in the version."""
    definition = version.definition
    trigger = definition.get("trigger") or {}
    if trigger.get("type") == "segment_entered" and trigger.get("segment") is not None:
        ref, detail = _segment_ref(trigger["segment"], ctx)
        yield ref, "trigger", detail
    test_segment = version.workflow.test_segment
    if test_segment is not None:
        yield Ref("segment", str(test_segment.pk), test_segment.name), "test audience", ""
    sandbox = version.state == VersionState.STAGING
    for step in d.iter_steps(definition):
        sid, kind = str(step.get("id")), step.get("type")
        emails = kind == "send_email" or (kind == "notify_sales" and step.get("email"))
        if kind == "send_email":
            key = str(step.get("template"))
            revision = pins.get(key)
            yield Ref("template", key, key), sid, f"pins r{revision.number}" if revision else "not pinned"
            # The pinned revision's topic is the one production sends under (issue 20: a template's
            # new topic reaches production only with a promotion); unpinned, the template's.
            if revision is not None and revision.topic_id is not None:
                yield Ref("topic", str(revision.topic_id), ctx.topic_names.get(revision.topic_id, "")), sid, ""
            elif revision is None and key in ctx.template_topics:
                topic_id, topic_name = ctx.template_topics[key]
                yield Ref("topic", str(topic_id), topic_name), sid, ""
            elif topic := (revision.kind if revision else ctx.template_kinds.get(key, "")):
                yield Ref("topic", topic, topic), sid, "the template names no topic"
        if emails:
            sender = ctx.default_sender
            yield (Ref("sender", str(sender.pk), sender.name), sid, "paused" if sender.is_paused else "") \
                if sender else (Ref("sender", "", "(no sender profile)"), sid, "missing")
        if kind == "branch":
            for cond in _conditions(step.get("if")):
                if "segment" in cond and not isinstance(cond["segment"], dict | list):
                    ref, detail = _segment_ref(cond["segment"], ctx)
                    yield ref, sid, detail
        if kind == "crm_sync":
            conn = ctx.connections.get(True) if sandbox else None
            conn = conn or ctx.connections.get(False)
            if conn is None:
                yield Ref("crm_connection", "", "(no active CRM connection)"), sid, "missing"
            else:
                yield Ref("crm_connection", str(conn.pk), conn.name), sid, "dry run" if sandbox and not \
                    conn.is_sandbox else ""
        for url in ([step.get("url")] if kind == "webhook" else []) + \
                ([step.get("webhook")] if kind == "notify_sales" and step.get("webhook") else []):
            host = webhook_host(url)
            yield Ref("webhook_host", host, host), sid, ""


def webhook_host(url: Any) -> str:
    try:
        return (urlsplit(str(url)).hostname or str(url))[:200]
    except ValueError:
        return str(url)[:200]


def _collect(version: WorkflowVersion, ctx: _Context, pins: dict[str, Any]) -> list[Dependency]:
    found: dict[Ref, Dependency] = {}
    for ref, where, detail in _uses(version, ctx, pins):
        dep = found.setdefault(ref, Dependency(ref, detail=detail))
        if where not in dep.steps:
            dep.steps.append(where)
    return sorted(found.values(), key=lambda x: (KINDS.index(x.ref.kind), x.ref.label))


def _pins_of(versions: Sequence[WorkflowVersion]) -> dict[int, dict[str, Any]]:
    from automation.models import TemplatePin

    pins: dict[int, dict[str, Any]] = defaultdict(dict)
    for pin in TemplatePin.objects.filter(version__in=versions).select_related("template", "revision"):
        pins[pin.version_id][pin.template.key] = pin.revision
    return pins


def _live_versions() -> list[WorkflowVersion]:
    return list(WorkflowVersion.objects.filter(state__in=LIVE_STATES)
                .select_related("workflow", "workflow__test_segment").order_by("workflow__key", "-number"))


def _label(version: WorkflowVersion) -> str:
    return f"{version.workflow.key} v{version.number} ({version.state})"


def version_dependencies(*, version: WorkflowVersion) -> list[Dependency]:
    """What `version` depends on, each with the steps using it and the other workflows' staging or
    production versions that depend on the same thing."""
    ctx = _context()
    others = [v for v in _live_versions() if v.workflow_id != version.workflow_id]
    pins = _pins_of([version, *others])
    deps = _collect(version, ctx, pins[version.pk])
    users: dict[Ref, list[str]] = defaultdict(list)
    for other in others:
        for dep in _collect(other, ctx, pins[other.pk]):
            users[dep.ref].append(_label(other))
    for dep in deps:
        dep.shared_with = users.get(dep.ref, [])
    return deps


def version_dependencies_json(*, version: WorkflowVersion) -> dict[str, Any]:
    return {"workflow": version.workflow.key, "version": version.number, "state": version.state,
            "dependencies": [dep.as_dict() for dep in version_dependencies(version=version)]}


def system_dependencies() -> dict[str, Any]:
    """Every staging and production version and what it depends on; each dependency once, with the
    versions using it (the system page, and its JSON export)."""
    ctx = _context()
    versions = _live_versions()
    pins = _pins_of(versions)
    nodes: dict[Ref, dict[str, Any]] = {}
    out_versions = []
    for version in versions:
        deps = _collect(version, ctx, pins[version.pk])
        out_versions.append({"workflow": version.workflow.key, "version": version.number, "state": version.state,
                             "label": _label(version), "depends_on": [f"{x.ref.kind}:{x.ref.ref}" for x in deps]})
        for dep in deps:
            node = nodes.setdefault(dep.ref, {"id": f"{dep.ref.kind}:{dep.ref.ref}", "kind": dep.ref.kind,
                                              "ref": dep.ref.ref, "label": dep.ref.label, "used_by": []})
            node["used_by"].append(_label(version))
    ordered = sorted(nodes.values(), key=lambda n: (KINDS.index(n["kind"]), n["label"]))
    return {"versions": out_versions, "dependencies": ordered}


def production_dependents(*, kind: str, refs: Iterable[str]) -> list[str]:
    """Labels of the production versions depending on any of `refs` of `kind` ("template" refs are
    keys; segments may be named by id or name, so pass both)."""
    wanted = {str(r) for r in refs}
    ctx = _context()
    versions = [v for v in _live_versions() if v.state == VersionState.PRODUCTION]
    pins = _pins_of(versions)
    found = []
    for version in versions:
        for ref, _, _ in _uses(version, ctx, pins[version.pk]):
            if ref.kind == kind and (ref.ref in wanted or ref.label in wanted):
                found.append(_label(version))
                break
    return found


def dependents_warning(obj: Any) -> str:
    """The core.dependents callback: a sentence naming the production versions that need `obj`
    (a template, sender, segment, topic or CRM connection), "" when none do."""
    from automation.crm.models import CrmConnection
    from campaigns.models import EmailTemplate, SenderProfile
    from consent.models import Topic
    from contacts.models import Segment

    if isinstance(obj, EmailTemplate):
        kind, refs, what = "template", [obj.key], f"template {obj.key!r}"
    elif isinstance(obj, SenderProfile):
        kind, refs, what = "sender", [str(obj.pk)], f"sender {obj.name!r}"
    elif isinstance(obj, Segment):
        kind, refs, what = "segment", [str(obj.pk), obj.name], f"segment {obj.name!r}"
    elif isinstance(obj, Topic):
        kind, refs, what = "topic", [str(obj.pk)], f"topic {obj.name!r}"
    elif isinstance(obj, CrmConnection):
        kind, refs, what = "crm_connection", [str(obj.pk)], f"CRM connection {obj.name!r}"
    else:
        return ""
    versions = production_dependents(kind=kind, refs=refs)
    if not versions:
        return ""
    return f"Production workflow versions depend on {what}: {', '.join(versions)}."


# --- Drawing ------------------------------------------------------------------------------------------

_COLOURS = {"version": "#bbdefb", "template": "#e3f2fd", "segment": "#f3e5f5", "sender": "#fff3e0",
            "topic": "#f1f8e9", "crm_connection": "#fce4ec", "webhook_host": "#ede7f6"}
_W, _H, _GAP, _COLGAP = 220, 30, 10, 120


def graph_svg(columns: Sequence[Sequence[tuple[str, str, str]]], edges: Iterable[tuple[str, str]], *,
              title: str) -> str:
    """Columns of nodes (id, label, kind) left to right, and lines between node ids. Server-drawn
    (no script, no CDN): the admin works offline. Labels are escaped."""
    pos: dict[str, tuple[float, float]] = {}
    parts = []
    for c, column in enumerate(columns):
        x = 10 + c * (_W + _COLGAP)
        for r, (node_id, label, kind) in enumerate(column):
            y = 10 + r * (_H + _GAP)
            pos[node_id] = (x, y)
            text = label if kind == "version" else f"{kind.replace('_', ' ')}: {label}"
            parts.append(f'<g class="dep-node" data-node="{escape(node_id)}" data-kind="{escape(kind)}">'
                         f'<rect x="{x}" y="{y}" width="{_W}" height="{_H}" rx="5" '
                         f'fill="{_COLOURS.get(kind, "#f5f5f5")}" stroke="#555"/>'
                         f'<text x="{x + 6}" y="{y + 19}" class="dl">{escape(text[:36])}</text>'
                         f'<title>{escape(text)}</title></g>')
    lines = []
    for a, b in edges:
        if a in pos and b in pos:
            (xa, ya), (xb, yb) = pos[a], pos[b]
            if xa > xb:
                (xa, ya), (xb, yb) = (xb, yb), (xa, ya)
            lines.append(f'<line x1="{xa + _W}" y1="{ya + _H / 2}" x2="{xb}" y2="{yb + _H / 2}" class="de"/>')
    rows = max((len(c) for c in columns), default=0)
    width, height = 20 + len(columns) * _W + max(0, len(columns) - 1) * _COLGAP, 20 + rows * (_H + _GAP)
    style = "<style>.de{stroke:#777;stroke-width:1.2}.dl{font:11px sans-serif;fill:#222}</style>"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="{escape(title)}">{style}{"".join(lines)}{"".join(parts)}</svg>')


def version_graph_svg(*, version: WorkflowVersion, deps: Sequence[Dependency]) -> str:
    """The version, what it depends on, and the other workflows that share each dependency."""
    me = f"v:{version.pk}"
    dep_nodes = [(f"{x.ref.kind}:{x.ref.ref}", x.ref.label, x.ref.kind) for x in deps]
    others = sorted({label for x in deps for label in x.shared_with})
    edges = [(me, n[0]) for n in dep_nodes]
    edges += [(f"{x.ref.kind}:{x.ref.ref}", f"o:{label}") for x in deps for label in x.shared_with]
    return graph_svg([[(me, _label(version), "version")], dep_nodes,
                      [(f"o:{label}", label, "version") for label in others]], edges,
                     title=f"dependencies of {version.workflow.key} v{version.number}")


def system_graph_svg(data: dict[str, Any]) -> str:
    versions = [(f"o:{v['label']}", v["label"], "version") for v in data["versions"]]
    deps = [(n["id"], n["label"], n["kind"]) for n in data["dependencies"]]
    edges = [(f"o:{v['label']}", dep) for v in data["versions"] for dep in v["depends_on"]]
    return graph_svg([versions, deps], edges, title="dependencies of every staging and production version")
