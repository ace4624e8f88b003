"""The admin's draft editor: a definition as plain form fields and back, built from the schema in
automation.definition (STEP_KEYS). Each field holds one value as inline YAML ("2d", "vip",
{"segment": "vip"}, [a, b], 10), so every step type is editable without a form class per type and
the file format stays the source of truth (docs/workflows.md). Pure Python, no queries."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from automation import definition as d

WORKFLOW_FIELDS = ("name", "timezone", "test_segment", "trigger", "reentry", "goal")
MAX_STEPS = 200  # a posted form cannot make a draft bigger than any workflow needs


@dataclass
class StepForm:
    index: int
    id: str
    type: str
    next: str
    fields: list[tuple[str, str]]  # (name, inline value) for each field of the type
    errors: list[str] = field(default_factory=list)


def inline(value: Any) -> str:
    """A value as one line of YAML that reads back as the same value."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value and "\n" not in value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value, ensure_ascii=False)  # JSON is YAML too: lists and mappings in flow style


def read_inline(text: str, where: str) -> Any:
    """The inverse of inline(); an error names the field."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = str(getattr(exc, "problem", "") or exc).splitlines()[0]
        raise ValueError(f"{where}: not a value ({problem}); write text, a number, [a, b] or {{key: value}}") \
            from None


def step_forms(definition: Mapping[str, Any]) -> list[StepForm]:
    forms = []
    for i, step in enumerate(d.iter_steps(dict(definition))):
        kind = str(step.get("type", ""))
        names = list(d.STEP_KEYS.get(kind, ()))
        names += [k for k in step if k not in names and k not in ("id", "type", "next")]  # unknown: shown, fixable
        forms.append(StepForm(i, str(step.get("id", "")), kind, inline(step.get("next")),
                              [(n, inline(step.get(n))) for n in names]))
    return forms


def workflow_fields(definition: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(n, inline(definition.get(n))) for n in WORKFLOW_FIELDS]


def definition_from_post(post: Mapping[str, Any], *, key: str) -> tuple[dict[str, Any], list[str]]:
    """The definition the form describes (key order as in files) and the fields that could not be
    read. Steps come as step-<n>-id, step-<n>-type, step-<n>-next and step-<n>-f-<field>."""
    problems: list[str] = []
    out: dict[str, Any] = {"key": key}
    for name in WORKFLOW_FIELDS:
        raw = str(post.get(f"wf-{name}", "")).strip()
        if raw:
            try:
                out[name] = read_inline(raw, name)
            except ValueError as exc:
                problems.append(str(exc))
    count = min(_int(post.get("step-count")), MAX_STEPS)
    steps = []
    for i in range(count):
        sid = str(post.get(f"step-{i}-id", "")).strip()
        kind = str(post.get(f"step-{i}-type", "")).strip()
        step: dict[str, Any] = {"id": sid, "type": kind}
        prefix = f"step-{i}-f-"
        for name in [k[len(prefix):] for k in post if str(k).startswith(prefix)]:
            if kind in d.STEP_KEYS and name not in d.STEP_KEYS[kind]:
                continue  # a field of the type the step had before it was changed
            raw = str(post.get(prefix + name, "")).strip()
            if raw:
                try:
                    step[name] = read_inline(raw, f"step {sid or i + 1} {name}")
                except ValueError as exc:
                    problems.append(str(exc))
        nxt = str(post.get(f"step-{i}-next", "")).strip()
        if nxt:
            step["next"] = nxt
        steps.append(step)
    out["steps"] = steps
    return out, problems


def apply_op(definition: dict[str, Any], op: str) -> dict[str, Any]:
    """add:<type>, remove:<n>, up:<n>, down:<n> on the steps; anything else leaves them."""
    steps = list(definition["steps"])
    name, _, arg = op.partition(":")
    if name == "add" and arg in d.STEP_KEYS and len(steps) < MAX_STEPS:
        taken = {str(s.get("id")) for s in steps}
        n = len(steps) + 1
        while f"step-{n}" in taken:
            n += 1
        steps.append({"id": f"step-{n}", "type": arg})
    elif name in ("remove", "up", "down") and arg.isdigit() and int(arg) < len(steps):
        i = int(arg)
        if name == "remove":
            steps.pop(i)
        elif name == "up" and i > 0:
            steps[i - 1], steps[i] = steps[i], steps[i - 1]
        elif name == "down" and i + 1 < len(steps):
            steps[i + 1], steps[i] = steps[i], steps[i + 1]
    return {**definition, "steps": steps}


def errors_by_step(issues: list[d.Issue], forms: list[StepForm]) -> list[str]:
    """Attach each issue to its step's form (by id, or #n for a step without one); the rest
    (workflow-level) are returned."""
    by_label = {f.id or f"#{f.index + 1}": f for f in forms}
    general = []
    for issue in issues:
        target = by_label.get(issue.step)
        if target is not None:
            target.errors.append(issue.message)
        else:
            general.append(str(issue))
    return general


def _int(value: Any) -> int:
    text = str(value or "0")
    return int(text) if text.isdigit() and len(text) < 6 else 0
