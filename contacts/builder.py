"""The point-and-click builders, rendered on the server and driven by htmx (issue 19).

Three JSON fields are built by clicking: a segment's `definition` and a fit rule's `conditions`
(filter trees, docs/segments.md) and a behaviour rule's `property_filters` ({"name": value}). The
JSON field stays the truth and stays editable (the folded "Advanced" view). Every builder control
posts one edit with htmx (`fb_action`, `fb_path` of the node it edits, `fb_key`, and its own value
as `fb_value`), together with the admin form around it, so the server reads the JSON as it is now,
applies the edit, and answers with the builder redrawn and the JSON textarea replaced out of band
(templates/contacts/builder/). What the builder writes is judged by the same validators as a hand
typed definition: the live count and the form's clean() name every problem with its path.

Controls are tied to no form (`form="fb-detached"`): only the one that changed is posted, and the
admin's Save posts the JSON field, not hundreds of builder inputs.
"""

from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from contacts.builder_options import builder_options
from contacts.segments.compiler import FIELD_KINDS, OPS_BY_KIND

OP_LABELS = {
    "eq": "is", "neq": "is not", "in": "is one of", "not_in": "is none of", "contains": "contains",
    "startswith": "starts with", "gt": "is more than", "gte": "is at least", "lt": "is less than",
    "lte": "is at most", "is_set": "has a value", "is_empty": "has no value", "within_days": "in the last (days)",
}
CONDITIONS = ("field", "attribute", "tag", "list", "event", "segment")
GROUPS = ("all", "any")
KINDS = (*CONDITIONS, *GROUPS, "not")
KIND_LABELS = {
    "field": "Contact field", "attribute": "Custom field", "tag": "Has tag", "list": "On list",
    "event": "Did an event", "segment": "In segment", "all": "All of (group)", "any": "Any of (group)",
    "not": "Not (group)",
}
NO_VALUE_OPS = ("is_set", "is_empty")
LIST_OPS = ("in", "not_in")
# Keys a "set" may change, per condition kind; anything else is refused by name.
SETTABLE = {
    "field": {"field", "op", "value"}, "attribute": {"attribute", "op", "value"}, "tag": {"tag"},
    "list": {"list"}, "segment": {"segment"}, "event": {"event", "did", "min_count", "within_days"},
}
# What a screen reader announces for each control (they sit in a row with no <label>).
ARIA_LABELS = {
    "fb-mode": "Group matches", "fb-add": "Add a condition", "fb-kind": "Condition kind", "fb-field": "Field",
    "fb-op": "Operator", "fb-value": "Value", "fb-name": "Name", "fb-did": "Did or did not",
    "fb-event": "Event type", "fb-count": "At least this many times", "fb-days": "In the last days",
    "fb-property-value": "Property value", "fb-add-property": "Add a property filter",
    "fb-other-property": "Another property name", "fb-remove": "Remove",
    "fb-remove-property": "Remove the property filter",
}
ACTIONS = ("render", "add", "remove", "mode", "kind", "set", "add_property", "set_property", "remove_property",
           "pick_event")
MAX_DRAWN_DEPTH = 22  # deeper hand-written nesting is shown as its JSON (the validator allows 20)
MAX_VALUE = 1000  # characters of one posted control value (the validator's MAX_TEXT)
JSON_ATTRS = {"rows": 14, "cols": 90, "spellcheck": "false", "style": "font-family: monospace; width: 60em;"}
INT = re.compile(r"-?\d{1,18}")
DECIMAL = re.compile(r"-?\d{1,18}\.\d{1,18}")


class BuilderError(ValueError):
    """A request the builder cannot apply; the message names the parameter and the value."""


@dataclass(frozen=True)
class Target:
    """One JSON field a builder edits: a filter tree or a behaviour rule's property filters."""

    name: str  # the form field, posted as the JSON text
    kind: str  # "tree" or "properties"
    summary: str = "Advanced: JSON"


SEGMENT_TARGETS = {"definition": Target("definition", "tree", "Advanced: the definition as JSON")}
RULE_TARGETS = {"conditions": Target("conditions", "tree"),
                "property_filters": Target("property_filters", "properties")}


# --- Reading and normalising the JSON ----------------------------------------------------------------------


def node_kind(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    return next((kind for kind in KINDS if kind in node), None)


def parse(text: str) -> Any:
    """The JSON text of the field; BuilderError when it does not parse (the builder is then off)."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: thousands of nested brackets
        raise BuilderError("The JSON below does not parse; fix it there, or clear it to start here.") from None


def normalise_tree(tree: Any) -> dict[str, Any]:
    """The tree as the builder shows it: an all/any group at the root and a group under every not
    (the same meaning: {"not": X} is {"not": {"all": [X]}})."""
    if tree is None or tree == {}:
        tree = {"all": []}
    elif node_kind(tree) not in GROUPS:
        tree = {"all": [tree]}
    _wrap_nots(tree, 0)
    return tree


def _wrap_nots(node: Any, depth: int) -> None:
    kind = node_kind(node)
    if depth > MAX_DRAWN_DEPTH or kind is None:
        return
    if kind == "not":
        if node_kind(node["not"]) not in GROUPS:
            node["not"] = {"all": [node["not"]]}
        _wrap_nots(node["not"], depth + 1)
    elif kind in GROUPS and isinstance(node[kind], list):
        for child in node[kind]:
            _wrap_nots(child, depth + 1)


def resolve(tree: Any, path: str) -> Any:
    """The node at a dotted path of group keys and indices ("all.1.not.any.0")."""
    node = tree
    for token in path.split(".") if path else []:
        if isinstance(node, dict) and token in ("all", "any", "not") and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isascii() and token.isdigit() and len(token) < 6 \
                and int(token) < len(node):
            node = node[int(token)]
        else:
            raise BuilderError(f"fb_path: {path[:200]!r} is not a condition of this definition "
                               f"(no {token[:50]!r} there); the builder shows the definition as it is now.")
    return node


def _parent(tree: Any, path: str) -> tuple[list[Any], int]:
    head, _, last = path.rpartition(".")
    container = resolve(tree, head)
    if not path or not isinstance(container, list):
        raise BuilderError(f"fb_path: {path[:200]!r} is not a condition that can be removed or replaced.")
    return container, int(resolve_index(last, container, path))


def resolve_index(token: str, container: list[Any], path: str) -> int:
    if token.isascii() and token.isdigit() and len(token) < 6 and int(token) < len(container):
        return int(token)
    raise BuilderError(f"fb_path: {path[:200]!r} is not a condition of this definition.")


# --- Values as typed -------------------------------------------------------------------------------------


def number_or_text(text: str) -> Any:
    text = text.strip()
    if INT.fullmatch(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text  # "nan" stays text: the validator names it


def typed_value(kind: str, op: str, text: str) -> Any:
    """A condition's value from what was typed: numbers for number fields, booleans for bool,
    a list for in/not_in; anything that does not fit stays text for the validator to name."""
    if op == "within_days":
        return number_or_text(text)

    def one(part: str) -> Any:
        part = part.strip()
        if kind == "number":
            return number_or_text(part)
        if kind == "bool":
            return part.lower() in ("true", "yes")
        return part

    if op in LIST_OPS:
        return [one(part) for part in text.split(",") if part.strip()]
    return one(text)


def property_value(text: str) -> Any:
    """An event property's value: a number when it looks like one (properties keep JSON types)."""
    text = text.strip()
    if INT.fullmatch(text):
        return int(text)
    if DECIMAL.fullmatch(text):
        return float(text)
    return text


def shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(shown(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


# --- Edits -----------------------------------------------------------------------------------------------


def field_kind(node: dict[str, Any], options: dict[str, Any]) -> str:
    if "field" in node:
        return FIELD_KINDS.get(node["field"], "text") if isinstance(node["field"], str) else "text"
    attribute = next((a for a in options["attributes"] if a["name"] == node.get("attribute")), None)
    return attribute["kind"] if attribute else "text"


def fresh(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    if kind == "field":
        return {"field": "email", "op": "contains", "value": ""}
    if kind == "attribute":
        first = options["attributes"][:1]
        return {"attribute": first[0]["name"], "op": "is_set"} if first else {"field": "company", "op": "is_set"}
    if kind in ("tag", "list"):
        names = options["tags" if kind == "tag" else "lists"]
        return {kind: names[0] if names else ""}
    if kind == "event":
        return {"event": options["events"][0]["name"] if options["events"] else "page_view", "did": True,
                "min_count": 1}
    if kind == "segment":
        return {"segment": options["segments"][0]["id"] if options["segments"] else 0}
    if kind == "not":
        return {"not": {"all": []}}
    return {kind: []}


def apply_tree_edit(tree: dict[str, Any], *, action: str, path: str, key: str, value: str, prop: str,
                    options: dict[str, Any]) -> None:
    """One builder edit on a normalised tree, in place."""
    if action == "add":
        group = resolve(tree, path)
        mode = node_kind(group)
        if mode not in GROUPS or not isinstance(group[mode], list):
            raise BuilderError(f"fb_path: {path[:200]!r} is not a group.")
        if value not in KINDS:
            raise BuilderError(f"fb_value: unknown condition kind {value[:50]!r}; use one of {', '.join(KINDS)}.")
        group[mode].append(fresh(value, options))
    elif action == "remove":
        container, index = _parent(tree, path)
        del container[index]
    elif action == "mode":
        group = resolve(tree, path)
        mode = node_kind(group)
        if mode not in GROUPS or value not in GROUPS:
            raise BuilderError(f"fb_value: a group is 'all' or 'any', not {value[:50]!r}.")
        if value != mode:
            group[value] = group.pop(mode)
    elif action == "kind":
        container, index = _parent(tree, path)
        if value not in CONDITIONS:
            raise BuilderError(f"fb_value: unknown condition kind {value[:50]!r}; use one of {', '.join(CONDITIONS)}.")
        container[index] = fresh(value, options)
    elif action == "set":
        _set(resolve(tree, path), key=key, value=value, path=path, options=options)
    elif action in ("add_property", "set_property", "remove_property"):
        event = resolve(tree, path)
        if node_kind(event) != "event":
            raise BuilderError(f"fb_path: {path[:200]!r} is not an event condition.")
        properties = event.get("properties")
        if not isinstance(properties, dict):
            properties = event["properties"] = {}
        apply_property_edit(properties, action=action, value=value, prop=prop)
        if not properties:
            event.pop("properties")
    elif action != "render":
        raise BuilderError(f"fb_action: {action[:50]!r} does not apply to a filter tree.")


def _set(node: Any, *, key: str, value: str, path: str, options: dict[str, Any]) -> None:
    kind = node_kind(node)
    if kind not in SETTABLE or key not in SETTABLE[kind]:
        raise BuilderError(f"fb_key: {key[:50]!r} cannot be set on the condition at {path[:200]!r}.")
    if key in ("field", "attribute"):
        before = field_kind(node, options)
        node[key] = value
        kind = field_kind(node, options)
        ops = OPS_BY_KIND.get(kind, OPS_BY_KIND["text"])
        if node.get("op") not in ops:
            node["op"] = ops[0]
        if kind != before and "value" in node:  # a value of the old kind would not fit
            node["value"] = kind == "bool" or ""
        _fit_value(node)
    elif key == "op":
        node["op"] = value
        _fit_value(node)
    elif key == "value":
        node["value"] = typed_value(field_kind(node, options), str(node.get("op", "")), value)
    elif key == "segment":
        if not (value.isascii() and value.isdigit() and len(value) < 19):
            raise BuilderError(f"fb_value: expected a segment id, not {value[:50]!r}.")
        node["segment"] = int(value)
    elif key == "event":
        node["event"] = value
        node.pop("properties", None)  # another event type has other properties
    elif key == "did":
        node["did"] = value == "true"
    elif key == "min_count":
        count = number_or_text(value)
        node["min_count"] = count if isinstance(count, int) and count >= 1 else 1
    elif key == "within_days":
        days = number_or_text(value)
        if isinstance(days, int) and days > 0:
            node["within_days"] = days
        elif value.strip():
            node["within_days"] = days  # "abc" or 0: kept, so the validator names it
        else:
            node.pop("within_days", None)
    else:  # tag, list
        node[key] = value


def _fit_value(node: dict[str, Any]) -> None:
    """The value's shape after the op changed: none, a list, or one value."""
    op = node.get("op")
    if op in NO_VALUE_OPS:
        node.pop("value", None)
    elif op in LIST_OPS:
        current = node.get("value", "")
        node["value"] = current if isinstance(current, list) else ([current] if current not in ("", None) else [])
    else:
        current = node.get("value", "")
        node["value"] = (current[0] if current else "") if isinstance(current, list) else current


def apply_property_edit(properties: dict[str, Any], *, action: str, value: str, prop: str) -> None:
    if action == "add_property":
        name = value.strip()
        if not name:
            return  # the "+ property…" placeholder chosen again
        properties.setdefault(name, "")
    elif action == "set_property":
        if prop not in properties:
            raise BuilderError(f"fb_prop: {prop[:100]!r} is not one of the property filters.")
        properties[prop] = property_value(value)
    elif action == "remove_property":
        properties.pop(prop, None)
    elif action not in ("render", "pick_event"):
        raise BuilderError(f"fb_action: {action[:50]!r} does not apply to property filters.")


# --- Drawing ---------------------------------------------------------------------------------------------


class Draw:
    """Builds the view model the templates render: controls carry their edit as hx-vals."""

    def __init__(self, *, options: dict[str, Any]) -> None:
        self.options = options

    @staticmethod
    def control(tag: str, *, action: str, path: str = "", key: str = "", prop: str = "", cls: str = "",
                value: Any = "", label: str = "", options: list[tuple[Any, str]] | None = None,
                **attrs: Any) -> dict[str, Any]:
        vals = json.dumps({"fb_action": action, "fb_path": path, "fb_key": key, "fb_prop": prop})
        attrs.setdefault("aria_label", ARIA_LABELS.get(cls, label or cls))
        choices = [{"value": str(v), "label": text, "selected": str(v) == str(value)} for v, text in options or []]
        return {"tag": tag, "vals": vals, "cls": cls, "value": shown(value), "label": label, "options": choices,
                "attrs": attrs}

    @staticmethod
    def text(label: str) -> dict[str, Any]:
        return {"tag": "text", "label": label}

    def tree(self, node: Any, path: str, depth: int = 0, removable: bool = True) -> dict[str, Any]:
        kind = node_kind(node)
        remove = self.control("button", action="remove", path=path, cls="fb-remove", label="Remove") \
            if removable and path else None
        if depth > MAX_DRAWN_DEPTH or kind is None or (kind in GROUPS and not isinstance(node[kind], list)):
            return {"type": "unknown", "json": json.dumps(node, ensure_ascii=False)[:2000], "remove": remove}
        if kind in GROUPS:
            prefix = f"{path}." if path else ""
            mode = self.control("select", action="mode", path=path, cls="fb-mode", value=kind,
                                options=[("all", "all of"), ("any", "any of")])
            adder = self.control("select", action="add", path=path, cls="fb-add", value="",
                                 options=[("", "+ Add a condition…"), *((k, KIND_LABELS[k]) for k in KINDS)])
            children = [self.tree(child, f"{prefix}{kind}.{i}", depth + 1) for i, child in enumerate(node[kind])]
            if remove is not None:
                remove["label"] = "Remove group"
            return {"type": "group", "mode": mode, "add": adder, "children": children, "remove": remove}
        if kind == "not":
            prefix = f"{path}." if path else ""
            inner = self.tree(node["not"], f"{prefix}not", depth + 1, removable=False)
            return {"type": "not", "group": inner, "remove": remove}
        return {"type": "condition", "kind": kind, "controls": self.condition(node, kind, path),
                "properties": self.properties(node.get("properties"), node.get("event"), path)
                if kind == "event" else None, "remove": remove}

    def condition(self, node: dict[str, Any], kind: str, path: str) -> list[dict[str, Any]]:
        controls = [self.control("select", action="kind", path=path, cls="fb-kind", value=kind,
                                 options=[(k, KIND_LABELS[k]) for k in CONDITIONS])]
        if kind in ("field", "attribute"):
            controls += self.field(node, kind, path)
        elif kind in ("tag", "list"):
            names = self.options["tags" if kind == "tag" else "lists"]
            current = node[kind]
            if names:
                extra = [] if current in names else [(current, str(current))]
                controls.append(self.control("select", action="set", path=path, key=kind, cls="fb-name",
                                             value=current, options=[*extra, *((n, n) for n in names)]))
            else:
                controls.append(self.control("input", action="set", path=path, key=kind, cls="fb-name",
                                             value=current, placeholder=f"{kind} name"))
        elif kind == "segment":
            segments = [(s["id"], s["name"]) for s in self.options["segments"]]
            if node["segment"] not in [s for s, _ in segments]:
                segments.insert(0, (node["segment"], f"segment {node['segment']}"))
            controls.append(self.control("select", action="set", path=path, key="segment", cls="fb-name",
                                         value=node["segment"], options=segments))
        else:
            controls += self.event(node, path)
        return controls

    def field(self, node: dict[str, Any], kind: str, path: str) -> list[dict[str, Any]]:
        if kind == "field":
            names = [(f["name"], f["name"].replace("_", " ")) for f in self.options["fields"]]
        else:
            names = [(a["name"], a["label"] or a["name"]) for a in self.options["attributes"]]
        if node[kind] not in [n for n, _ in names]:
            names.insert(0, (node[kind], str(node[kind])))
        value_kind = field_kind(node, self.options)
        ops = OPS_BY_KIND.get(value_kind, OPS_BY_KIND["text"])
        op = node.get("op")
        op_options: list[tuple[Any, str]] = [(o, OP_LABELS[o]) for o in ops]
        if op not in ops:  # missing, or not one for this kind: shown as is, the validator names it
            op_options.insert(0, (op, "choose…" if op is None else str(op)))
        controls = [
            self.control("select", action="set", path=path, key=kind, cls="fb-field", value=node[kind], options=names),
            self.control("select", action="set", path=path, key="op", cls="fb-op", value=op, options=op_options),
        ]
        if op in NO_VALUE_OPS:
            return controls
        value = node.get("value", "")
        attribute = next((a for a in self.options["attributes"] if a["name"] == node.get("attribute")), None)
        if value_kind == "choice" and attribute and attribute["choices"] and op in ("eq", "neq"):
            choices = [(c, c) for c in attribute["choices"]]
            if value not in attribute["choices"]:
                choices.insert(0, (shown(value), shown(value) or "choose…"))
            controls.append(self.control("select", action="set", path=path, key="value", cls="fb-value",
                                         value=shown(value), options=choices))
        elif value_kind == "bool" and op in ("eq", "neq"):
            controls.append(self.control("select", action="set", path=path, key="value", cls="fb-value",
                                         value=shown(value), options=[("true", "true"), ("false", "false")]))
        else:
            placeholder = "a, b, c" if op in LIST_OPS else "days" if op == "within_days" else \
                "YYYY-MM-DD" if value_kind in ("date", "datetime") else ""
            controls.append(self.control("input", action="set", path=path, key="value", cls="fb-value",
                                         value=value, placeholder=placeholder))
        return controls

    def event(self, node: dict[str, Any], path: str) -> list[dict[str, Any]]:
        names = [e["name"] for e in self.options["events"]]
        if node["event"] not in names:
            names.append(node["event"])
        days = node.get("within_days", "")
        return [
            self.control("select", action="set", path=path, key="did", cls="fb-did",
                         value="false" if node.get("did") is False else "true",
                         options=[("true", "did"), ("false", "did not do")]),
            self.control("select", action="set", path=path, key="event", cls="fb-event", value=node["event"],
                         options=[(n, str(n)) for n in names]),
            self.text("at least"),
            self.control("input", action="set", path=path, key="min_count", cls="fb-count",
                         value=node.get("min_count", 1), type="number", min="1", size="3"),
            self.text("time(s), in the last"),
            self.control("input", action="set", path=path, key="within_days", cls="fb-days", value=days,
                         type="number", min="1", size="4", placeholder="any"),
            self.text("days"),
        ]

    def properties(self, properties: Any, event_type: Any, path: str) -> dict[str, Any]:
        """Rows of "where name = value", a list of the names seen for that event type, and a box
        for a name not seen yet."""
        props = properties if isinstance(properties, dict) else {}
        seen: list[str] = next((e["properties"] for e in self.options["events"] if e["name"] == event_type), [])
        rows = [{"name": name,
                 "value": self.control("input", action="set_property", path=path, prop=name,
                                       cls="fb-property-value", value=value, size="14"),
                 "remove": self.control("button", action="remove_property", path=path, prop=name,
                                        cls="fb-remove-property", label="×")}
                for name, value in props.items()]
        unused = [name for name in seen if name not in props]
        adder = self.control("select", action="add_property", path=path, cls="fb-add-property", value="",
                             options=[("", "+ where the property…"), *((n, n) for n in unused)])
        other = self.control("input", action="add_property", path=path, cls="fb-other-property",
                             placeholder="or another property name", size="18")
        return {"rows": rows, "add": adder, "other": other}


def draw(target: Target, text: str, *, options: dict[str, Any], event_type: str = "") -> dict[str, Any]:
    """The builder's view model for the field's JSON text: the drawn tree or property rows, or
    `off` with the reason when the text is not something the builder can show."""
    try:
        data = parse(text)
    except BuilderError as exc:
        return {"off": str(exc)}
    drawer = Draw(options=options)
    if target.kind == "properties":
        if data is None:
            data = {}
        if not isinstance(data, dict):
            return {"off": "The JSON below is not an object of property = value; edit it there."}
        return {"properties": drawer.properties(data, event_type, "")}
    return {"tree": drawer.tree(normalise_tree(data), "", removable=False)}


# --- The widgets (the builder above the folded JSON) ------------------------------------------------------


class LazyOptions:
    """builder_options() read once per form, and only if a builder is drawn (a POST is not)."""

    def __init__(self, *, exclude_segment: int | None = None) -> None:
        self.exclude_segment = exclude_segment
        self._options: dict[str, Any] | None = None

    def get(self) -> dict[str, Any]:
        if self._options is None:
            self._options = builder_options(exclude_segment=self.exclude_segment)
        return self._options


class BuilderWidget(forms.Textarea):
    """A JSON textarea with its builder drawn above it; the textarea folds into "Advanced"."""

    def __init__(self, *, target: Target, endpoint: str, options: LazyOptions, segment_id: int | None = None,
                 event_type: str = "") -> None:
        super().__init__(attrs=dict(JSON_ATTRS))
        self.target, self.endpoint, self.options = target, endpoint, options
        self.segment_id, self.event_type = segment_id, event_type

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> Any:
        textarea = super().render(name, value, attrs, renderer)
        text = self.format_value(value) or ""
        view = draw(self.target, text, options=self.options.get(), event_type=self.event_type)
        context = {**root_context(self.target, self.endpoint, segment_id=self.segment_id, view=view),
                   "textarea": textarea}
        return render_to_string("contacts/builder/widget.html", context)


class EventTypeWidget(forms.TextInput):
    """The event type of a behaviour rule: typed (the known and seen types are suggested), or
    picked from them; either redraws the property filters with that type's seen properties."""

    def __init__(self, *, endpoint: str, options: LazyOptions | None = None) -> None:
        vals = json.dumps({"fb_target": "property_filters", "fb_action": "render", "fb_path": "", "fb_key": "",
                           "fb_prop": ""})
        super().__init__(attrs={"list": "known-event-types", "autocomplete": "off", "hx-post": endpoint,
                                "hx-trigger": "change", "hx-target": "#fb-property_filters", "hx-swap": "innerHTML",
                                "hx-vals": vals})
        self.endpoint, self.options = endpoint, options or LazyOptions()

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> Any:
        return render_to_string("contacts/builder/event_type.html", {
            "input": super().render(name, value, attrs, renderer), "events": self.options.get()["events"],
            "endpoint": self.endpoint})


def root_context(target: Target, endpoint: str, *, segment_id: int | None, view: dict[str, Any]) -> dict[str, Any]:
    vals = {"fb_target": target.name, "fb_action": "render", "fb_path": "", "fb_key": "", "fb_prop": "",
            "fb_segment": "" if segment_id is None else str(segment_id)}
    return {"target": target, "endpoint": endpoint, "vals": json.dumps(vals), "view": view}


# --- The partial endpoint ----------------------------------------------------------------------------------


@require_POST
def builder_view(request: HttpRequest, *, targets: dict[str, Target], endpoint: str) -> HttpResponse:
    """POST one builder edit (see the module docstring); answers the builder redrawn, the JSON
    out of band when it changed, and `fb-changed` for the live count. A request the builder cannot
    apply is a 400 naming the parameter, with the builder redrawn from the JSON as it is."""
    post = request.POST
    name = post.get("fb_target", "")
    if name not in targets:
        return HttpResponse(format_html('<p class="errornote">fb_target: {} is not a builder here (use {}).</p>',
                                        name[:50], " or ".join(targets)), status=400)
    target = targets[name]
    raw_segment = post.get("fb_segment", "")
    segment_id = int(raw_segment) if raw_segment.isascii() and raw_segment.isdigit() and len(raw_segment) < 19 \
        else None
    options = builder_options(exclude_segment=segment_id)
    text, action = post.get(target.name, ""), post.get("fb_action", "")
    event_type = post.get("fb_value", "") if action == "pick_event" else post.get("event_type", "")
    context = root_context(target, endpoint, segment_id=segment_id, view={})
    try:
        written = edit(target, text, action=action, path=post.get("fb_path", ""), key=post.get("fb_key", ""),
                       value=post.get("fb_value", ""), prop=post.get("fb_prop", ""), options=options)
    except BuilderError as exc:
        context["view"] = {**draw(target, text, options=options, event_type=event_type), "error": str(exc)}
        return _render(request, context, status=400)
    if written is not None:
        text = written
        context["json"] = forms.Textarea(attrs=JSON_ATTRS).render(target.name, text, {"id": f"id_{target.name}"})
    if action == "pick_event":  # the picked type goes into the event type field too
        context["event_input"] = forms.TextInput(attrs=EventTypeWidget(endpoint=endpoint).attrs).render(
            "event_type", event_type[:MAX_VALUE], {"id": "id_event_type", "maxlength": "100"})
    context["view"] = draw(target, text, options=options, event_type=event_type)
    response = _render(request, context, status=200)
    if written is not None:  # after the swap, when the textarea holds the new JSON
        response["HX-Trigger-After-Swap"] = json.dumps({"fb-changed": {"target": "body"}})
    return response


def edit(target: Target, text: str, *, action: str, path: str, key: str, value: str, prop: str,
         options: dict[str, Any]) -> str | None:
    """The field's new JSON text after one edit; None when nothing is to be written (a redraw)."""
    if action not in ACTIONS:
        raise BuilderError(f"fb_action: unknown action {action[:50]!r}; use one of {', '.join(ACTIONS)}.")
    if len(value) > MAX_VALUE:
        raise BuilderError(f"fb_value: longer than {MAX_VALUE} characters.")
    if action in ("render", "pick_event"):
        return None
    data = parse(text)
    if target.kind == "properties":
        properties = {} if data is None else data
        if not isinstance(properties, dict):
            raise BuilderError(f"{target.name}: the JSON is not an object of property = value; edit it there.")
        if path:
            raise BuilderError(f"fb_path: property filters have no path ({path[:200]!r}).")
        apply_property_edit(properties, action=action, value=value, prop=prop)
        return json.dumps(properties, indent=2, ensure_ascii=False)
    tree = normalise_tree(copy.deepcopy(data))
    apply_tree_edit(tree, action=action, path=path, key=key, value=value, prop=prop, options=options)
    return json.dumps(tree, indent=2, ensure_ascii=False)


def _render(request: HttpRequest, context: dict[str, Any], *, status: int) -> HttpResponse:
    response = HttpResponse(render_to_string("contacts/builder/response.html", context, request=request),
                            status=status)
    response["Cache-Control"] = "no-store"
    return response
