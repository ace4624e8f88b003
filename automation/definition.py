"""The workflow file format (YAML or JSON): parsing, validation, canonical output, the step graph.

The same structure is stored in WorkflowVersion.definition, edited in the admin and kept in git.
Pure Python, no queries: callers pass the template keys that exist. See docs/workflows.md.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import zoneinfo
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from django.conf import settings

from campaigns.utm import UtmInvalid, utm_clean

END = "end"  # a `next`/`then`/`else` target that finishes the enrollment
TRIGGER_TYPES = ("event", "segment_entered", "score_reached", "manual")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CONDITION_KEYS = ("segment", "field", "event", "email", "score_above")
FIELD_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "contains", "in", "exists", "empty")
WORKFLOW_KEYS = ("key", "name", "timezone", "test_segment", "trigger", "reentry", "goal", "steps")
TEMPLATE_KEYS = ("key", "name", "kind", "subject", "html", "text")
_COMMON = ("id", "type", "next")
STEP_KEYS: dict[str, tuple[str, ...]] = {
    "send_email": ("template", "utm"),  # utm: UTM parameters for its links (campaigns/utm.py)
    "wait": ("duration", "until", "window", "timezone"),
    "branch": ("if", "then", "else"),
    "update_contact": ("set", "add_tags", "remove_tags", "add_lists", "remove_lists"),
    "adjust_score": ("points", "reason"),
    "notify_sales": ("email", "webhook", "message"),
    "crm_sync": (),
    "webhook": ("url", "payload"),
    "exit": ("reason",),
}
STEP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class DefinitionError(ValueError):
    """The file cannot be read at all (not YAML/JSON, wrong top-level shape)."""


@dataclass(frozen=True)
class Issue:
    """One validation error; `step` is the step id it concerns ("" for the workflow itself)."""

    workflow: str
    step: str
    message: str

    def __str__(self) -> str:
        where = f"{self.workflow}" + (f" step {self.step!r}" if self.step else "")
        return f"{where}: {self.message}"


# --- Reading and writing files ------------------------------------------------------------------


def parse_text(text: str) -> dict[str, Any]:
    """A file's content (JSON or YAML) as {"templates": [...], "workflows": [...]}.

    Refused before anything is built: a file over WORKFLOW_FILE_MAX_BYTES, more than
    WORKFLOW_FILE_MAX_ALIASES YAML aliases, aliases that would expand the document by more than
    MAX_ALIAS_EXPANSION nodes (a 690-byte "billion laughs" file expanded to 10 million strings
    and ~150 MB in the database), nesting deeper than MAX_NESTING."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > settings.WORKFLOW_FILE_MAX_BYTES:
        raise DefinitionError(f"the file is {size:,} bytes; at most {settings.WORKFLOW_FILE_MAX_BYTES:,} "
                              "(WORKFLOW_FILE_MAX_BYTES)")
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else _yaml_load(text)
    except DefinitionError:
        raise
    except RecursionError:  # JSON: thousands of nested brackets
        raise DefinitionError("not valid YAML or JSON: nested too deeply") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise DefinitionError(f"not valid YAML or JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("workflows"), list):
        raise DefinitionError("the file needs a top-level `workflows:` list")
    unknown = set(data) - {"templates", "workflows"}
    if unknown:
        raise DefinitionError(f"unknown top-level key(s): {', '.join(sorted(map(str, unknown)))}")
    templates = data.get("templates") or []
    if not isinstance(templates, list) or not all(isinstance(t, dict) for t in templates):
        raise DefinitionError("`templates:` must be a list of mappings")
    if not all(isinstance(w, dict) for w in data["workflows"]):
        raise DefinitionError("each workflow must be a mapping")
    return {"templates": templates, "workflows": data["workflows"]}


MAX_NESTING = 50  # levels of mappings and lists; a workflow file needs about 8
MAX_ALIAS_EXPANSION = 10_000  # nodes that aliases may add to what is written


class _LimitedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting alias events and nesting while it composes (before any
    Python object exists). An alias is a reference, so parsing a bomb is quick; what explodes is
    everything that walks the result afterwards (validation, the JSON column), so the expanded size
    is checked on the composed node graph, each node's size computed once."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > settings.WORKFLOW_FILE_MAX_ALIASES:
                raise DefinitionError(f"more than {settings.WORKFLOW_FILE_MAX_ALIASES} YAML aliases (*name) "
                                      "(WORKFLOW_FILE_MAX_ALIASES)")
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise DefinitionError(f"YAML nested deeper than {MAX_NESTING} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _yaml_load(text: str) -> Any:
    loader = _LimitedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        written: set[int] = set()
        expanded = _expanded_size(node, {}, set(), written)
        if expanded - len(written) > MAX_ALIAS_EXPANSION:
            raise DefinitionError(f"YAML aliases would expand the file to {expanded:,} values; aliases may add "
                                  f"at most {MAX_ALIAS_EXPANSION:,}")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int], written: set[int]) -> int:
    """Nodes in the document once every alias is replaced by what it names (memoised by node, so
    a bomb costs one visit per distinct node); `written` collects the distinct nodes."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise DefinitionError("a YAML alias refers to a node that contains it (a recursive structure)")
    written.add(key)
    open_nodes.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, sizes, open_nodes, written) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes, open_nodes, written) + _expanded_size(v, sizes, open_nodes, written)
                    for k, v in node.value)
    open_nodes.discard(key)
    sizes[key] = size
    return size


def dump_text(data: dict[str, Any], *, fmt: str = "yaml") -> str:
    """Canonical output: keys in the order given (definitions keep the author's order), block
    style YAML or 2-space JSON. Importing this output and exporting again gives the same text."""
    payload = {k: v for k, v in data.items() if v or k == "workflows"}
    if fmt == "json":
        return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(payload, sort_keys=False, allow_unicode=True, default_flow_style=False, width=10_000)


# --- Durations and times ------------------------------------------------------------------------


def parse_duration(value: Any) -> dt.timedelta:
    """"30s", "15m", "2h", "7d", "1w" -> timedelta; ValueError otherwise."""
    match = _DURATION.match(str(value)) if isinstance(value, str | int) else None
    if not match:
        raise ValueError(f"bad duration {value!r}: use a number and s, m, h, d or w (e.g. 2d)")
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_until(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"bad date/time {value!r}: use ISO 8601, e.g. 2026-03-01T09:00:00+00:00") from exc
    else:
        raise ValueError(f"bad date/time {value!r}")
    if moment.tzinfo is None:
        raise ValueError(f"date/time {value!r} needs a time zone offset (e.g. +00:00)")
    return moment


def window_next(window: dict[str, Any], *, after: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """The first moment at or after `after` inside the weekday/hour window (in zone `tz`)."""
    days = {WEEKDAYS.index(d) for d in window.get("days") or WEEKDAYS}
    start, end = int(window.get("start", 0)), int(window.get("end", 24))
    local = after.astimezone(tz)
    for offset in range(8):
        day = (local + dt.timedelta(days=offset)).date()
        if day.weekday() not in days:
            continue
        opens = dt.datetime.combine(day, dt.time(start), tzinfo=tz)
        closes = dt.datetime.combine(day, dt.time(0), tzinfo=tz) + dt.timedelta(hours=end)
        if local < closes:
            return max(opens, local).astimezone(dt.UTC)
    raise ValueError("empty window")  # unreachable for a validated window


def zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


# --- The step graph -----------------------------------------------------------------------------


def step_map(steps: list[dict[str, Any]]) -> dict[str, int]:
    return {str(s.get("id")): i for i, s in enumerate(steps)}


def default_next(steps: list[dict[str, Any]], index: int) -> str:
    """Where a step goes when it names no `next`: the following step, or the end."""
    step = steps[index]
    if "next" in step:
        return str(step["next"])
    return str(steps[index + 1].get("id")) if index + 1 < len(steps) else END


def successors(steps: list[dict[str, Any]], index: int) -> list[str]:
    step = steps[index]
    kind = step.get("type")
    if kind == "exit":
        return []
    if kind == "branch":
        return [str(step.get("then", "")), str(step.get("else", ""))]
    return [default_next(steps, index)]


def edges(steps: list[dict[str, Any]]) -> Iterator[tuple[str, str, str]]:
    """(from, to, label) for every edge; label is "then"/"else" on branches."""
    for i, step in enumerate(steps):
        targets = successors(steps, i)
        labels = ["then", "else"] if step.get("type") == "branch" else [""]
        for target, label in zip(targets, labels, strict=False):
            yield str(step.get("id")), target, label


# --- Validation ---------------------------------------------------------------------------------


def validate_file(data: dict[str, Any], *, known_templates: Collection[str]) -> list[Issue]:
    """Every problem of a parsed file; templates defined in the file count as known."""
    issues: list[Issue] = []
    file_templates = set()
    for i, tpl in enumerate(data.get("templates") or []):
        key = str(tpl.get("key", ""))
        if not KEY.match(key):
            issues.append(Issue(f"templates[{i}]", "", f"bad template key {key!r}"))
        if not tpl.get("subject") or not (tpl.get("html") or tpl.get("text")):
            issues.append(Issue(f"template {key}", "", "a template needs a subject and html or text"))
        unknown = set(tpl) - set(TEMPLATE_KEYS)
        if unknown:
            issues.append(Issue(f"template {key}", "", f"unknown field(s): {', '.join(sorted(unknown))}"))
        file_templates.add(key)
    seen: set[str] = set()
    for definition in data["workflows"]:
        key = str(definition.get("key", ""))
        if key in seen:
            issues.append(Issue(key, "", "the file defines this workflow twice"))
        seen.add(key)
        issues += validate_workflow(definition, known_templates=set(known_templates) | file_templates)
    return issues


def validate_workflow(definition: dict[str, Any], *, known_templates: Collection[str]) -> list[Issue]:
    """Every problem of one workflow definition, each with its step id."""
    wf = str(definition.get("key") or "?")
    issues = [Issue(wf, "", m) for m in _workflow_level(definition)]
    steps = definition.get("steps")
    if not isinstance(steps, list) or not steps:
        return [*issues, Issue(wf, "", "a workflow needs a non-empty `steps:` list")]
    if not all(isinstance(s, dict) for s in steps):
        return [*issues, Issue(wf, "", "each step must be a mapping")]
    ids: set[str] = set()
    for i, step in enumerate(steps):
        sid = str(step.get("id", ""))
        label = sid or f"#{i + 1}"
        if not STEP_ID.match(sid):
            issues.append(Issue(wf, label, "a step needs an id (letters, digits, _ and -)"))
        elif sid == END:
            issues.append(Issue(wf, sid, f"{END!r} is reserved for 'finish the workflow'"))
        elif sid in ids:
            issues.append(Issue(wf, sid, "duplicate step id"))
        ids.add(sid)
        issues += [Issue(wf, label, m) for m in _step_problems(step, known_templates)]
    issues += _graph_problems(wf, steps, ids)
    return issues


def _workflow_level(d: dict[str, Any]) -> Iterator[str]:
    if not KEY.match(str(d.get("key", ""))):
        yield "a workflow needs a key (lower-case letters, digits, _ and -)"
    if not d.get("name"):
        yield "a workflow needs a name"
    unknown = set(d) - set(WORKFLOW_KEYS)
    if unknown:
        yield f"unknown field(s): {', '.join(sorted(map(str, unknown)))}"
    if "timezone" in d:
        yield from _try(lambda: zone(str(d["timezone"])))
    yield from _trigger_problems(d.get("trigger"))
    reentry = d.get("reentry", "once")
    if isinstance(reentry, dict) and set(reentry) == {"after"}:
        yield from _try(lambda: parse_duration(reentry["after"]), "reentry: ")
    elif reentry not in ("once", "always"):
        yield f"reentry must be once, always or {{after: 30d}}, not {reentry!r}"
    goal = d.get("goal")
    if goal is not None and not (isinstance(goal, dict) and isinstance(goal.get("event"), str) and goal["event"]
                                 and set(goal) <= {"event", "where"}):
        yield "goal must be {event: <event type>} (optionally with where: {property: value})"


def _trigger_problems(trigger: Any) -> Iterator[str]:
    if not isinstance(trigger, dict) or trigger.get("type") not in TRIGGER_TYPES:
        yield f"trigger must have a type: {', '.join(TRIGGER_TYPES)}"
        return
    kind = trigger["type"]
    allowed = {"event": {"event", "where"}, "segment_entered": {"segment"}, "score_reached": {"score"},
               "manual": set()}[kind] | {"type"}
    unknown = set(trigger) - allowed
    if unknown:
        yield f"trigger: unknown field(s) for {kind}: {', '.join(sorted(map(str, unknown)))}"
    if kind == "event" and not (isinstance(trigger.get("event"), str) and trigger["event"]):
        yield "trigger: an event trigger needs `event: <event type>`"
    if "where" in trigger and not isinstance(trigger["where"], dict):
        yield "trigger: where must be a mapping of property: value"
    if kind == "segment_entered" and not isinstance(trigger.get("segment"), str | int):
        yield "trigger: segment_entered needs `segment: <segment name or id>`"
    if kind == "score_reached" and not isinstance(trigger.get("score"), int):
        yield "trigger: score_reached needs `score: <points>`"


def _try(check: Any, prefix: str = "") -> Iterator[str]:
    try:
        check()
    except ValueError as exc:
        yield f"{prefix}{exc}"


def _step_problems(step: dict[str, Any], known_templates: Collection[str]) -> Iterator[str]:
    kind = step.get("type")
    if kind not in STEP_KEYS:
        yield f"unknown step type {kind!r} (known: {', '.join(STEP_KEYS)})"
        return
    unknown = set(step) - set(_COMMON) - set(STEP_KEYS[kind])
    if unknown:
        yield f"unknown field(s) for {kind}: {', '.join(sorted(map(str, unknown)))}"
    yield from _STEP_CHECKS.get(str(kind), _no_checks)(step, known_templates)


def _no_checks(step: dict[str, Any], known: Collection[str]) -> Iterator[str]:
    return iter(())


def _check_send_email(step: dict[str, Any], known: Collection[str]) -> Iterator[str]:
    template = step.get("template")
    if not template:
        yield "send_email needs a template"
    elif template not in known:
        yield f"unknown template {template!r}"
    if "utm" in step:
        try:
            utm_clean(step["utm"], where="utm")
        except UtmInvalid as exc:
            yield str(exc)


def _check_wait(step: dict[str, Any], known: Collection[str]) -> Iterator[str]:
    given = [k for k in ("duration", "until", "window") if k in step]
    if len(given) != 1:
        yield "a wait needs exactly one of duration, until or window"
        return
    if "duration" in step:
        yield from _try(lambda: parse_duration(step["duration"]))
    elif "until" in step:
        yield from _try(lambda: parse_until(step["until"]))
    else:
        yield from _window_problems(step["window"])
    tz = step.get("timezone")
    if tz is not None and tz not in ("contact", "workflow"):
        yield from _try(lambda: zone(str(tz)))


def _window_problems(window: Any) -> Iterator[str]:
    if not isinstance(window, dict) or set(window) - {"days", "start", "end"}:
        yield "window must be {days: [mon, ...], start: <hour>, end: <hour>}"
        return
    days = window.get("days", list(WEEKDAYS))
    if not isinstance(days, list) or not days or any(d not in WEEKDAYS for d in days):
        yield f"window days must be a list of {', '.join(WEEKDAYS)}"
    start, end = window.get("start", 0), window.get("end", 24)
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= 24):
        yield "window hours need 0 <= start < end <= 24"


def _check_branch(step: dict[str, Any], known: Collection[str]) -> Iterator[str]:
    for side in ("then", "else"):
        if not step.get(side):
            yield f"missing branch target `{side}`"
    yield from condition_problems(step.get("if"))


def condition_problems(cond: Any) -> Iterator[str]:
    if not isinstance(cond, dict):
        yield "a branch needs `if:` with one of " + ", ".join(CONDITION_KEYS)
        return
    kinds = [k for k in CONDITION_KEYS if k in cond]
    if len(kinds) != 1:
        yield "the branch condition needs exactly one of " + ", ".join(CONDITION_KEYS)
        return
    kind = kinds[0]
    allowed = {"segment": {"segment"}, "field": {"field", "op", "value"}, "event": {"event", "within", "where"},
               "email": {"email", "step", "within"}, "score_above": {"score_above"}}[kind]
    if set(cond) - allowed:
        yield f"condition: unknown field(s): {', '.join(sorted(map(str, set(cond) - allowed)))}"
    if "within" in cond:
        yield from _try(lambda: parse_duration(cond["within"]), "condition: ")
    if kind == "field" and cond.get("op", "eq") not in FIELD_OPS:
        yield f"condition: op must be one of {', '.join(FIELD_OPS)}"
    if kind == "email" and cond["email"] not in ("opened", "clicked"):
        yield "condition: email must be opened or clicked"
    if kind == "score_above" and not isinstance(cond["score_above"], int):
        yield "condition: score_above needs a number"


def _check_update(step: dict[str, Any], known: Collection[str]) -> Iterator[str]:
    from contacts.services import EDITABLE_FIELDS  # plain tuple; no queries

    if not any(step.get(k) for k in STEP_KEYS["update_contact"]):
        yield "update_contact needs set, add_tags, remove_tags, add_lists or remove_lists"
    fields = step.get("set") or {}
    if not isinstance(fields, dict):
        yield "set must be a mapping of field: value"
        return
    for name in fields:
        if not (str(name).startswith("attributes.") or name in EDITABLE_FIELDS) or name == "attributes":
            yield f"cannot set {name!r}: use a contact field or attributes.<key>"
    for key in ("add_tags", "remove_tags", "add_lists", "remove_lists"):
        if key in step and not (isinstance(step[key], list) and all(isinstance(v, str) for v in step[key])):
            yield f"{key} must be a list of names"


def _check_adjust(step: dict[str, Any], known: Collection[str]) -> Iterator[str]:
    points = step.get("points")
    if not isinstance(points, int) or isinstance(points, bool) or points == 0:
        yield "adjust_score needs non-zero whole `points`"


def _check_notify(step: dict[str, Any], known: Collection[str]) -> Iterator[str]:
    if not step.get("email") and not step.get("webhook"):
        yield "notify_sales needs email (an address or 'owner') and/or webhook (a URL)"
    if step.get("webhook"):
        yield from _url_problems(step["webhook"])


def _check_webhook(step: dict[str, Any], known: Collection[str]) -> Iterator[str]:
    yield from _url_problems(step.get("url"))
    if "payload" in step and not isinstance(step["payload"], dict):
        yield "payload must be a mapping"


def _url_problems(url: Any) -> Iterator[str]:
    from core.outbound import url_problem  # internal addresses; names are checked again at connect time

    if not (isinstance(url, str) and re.match(r"^https?://[^\s/]+", url)):
        yield f"bad URL {url!r}: use http(s)://..."
    elif problem := url_problem(url):
        yield f"bad URL {url!r}: {problem}"


_STEP_CHECKS = {
    "send_email": _check_send_email, "wait": _check_wait, "branch": _check_branch, "update_contact": _check_update,
    "adjust_score": _check_adjust, "notify_sales": _check_notify, "webhook": _check_webhook,
}


def _graph_problems(wf: str, steps: list[dict[str, Any]], ids: set[str]) -> list[Issue]:
    issues: list[Issue] = []
    for source, target, label in edges(steps):
        if target != END and target not in ids and target:
            what = f"branch target `{label}`" if label else "next"
            issues.append(Issue(wf, source, f"{what} {target!r} is not a step of this workflow"))
    reached = _reachable(steps)
    issues += [Issue(wf, str(s.get("id")), "unreachable step: no path from the first step leads here")
               for s in steps if str(s.get("id")) not in reached]
    issues += [Issue(wf, sid, "cycle without a wait: " + " -> ".join(cycle))
               for sid, cycle in _cycles_without_wait(steps)]
    return issues


def _reachable(steps: list[dict[str, Any]]) -> set[str]:
    index = step_map(steps)
    seen, todo = set(), [str(steps[0].get("id"))]
    while todo:
        sid = todo.pop()
        if sid in seen or sid not in index:
            continue
        seen.add(sid)
        todo += successors(steps, index[sid])
    return seen


def _cycles_without_wait(steps: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Cycles among non-wait steps (each would spin without ever sleeping); one report per cycle."""
    index = step_map(steps)
    graph = {str(s.get("id")): [t for t in successors(steps, i) if t in index and steps[index[t]].get("type") != "wait"]
             for i, s in enumerate(steps) if s.get("type") != "wait"}
    found: list[tuple[str, list[str]]] = []
    reported: set[frozenset[str]] = set()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    found.append((nxt, cycle))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    return found


def template_keys(definition: dict[str, Any]) -> set[str]:
    return {str(s["template"]) for s in iter_steps(definition) if s.get("type") == "send_email" and s.get("template")}


def iter_steps(definition: dict[str, Any]) -> Iterable[dict[str, Any]]:
    return [s for s in definition.get("steps") or [] if isinstance(s, dict)]
