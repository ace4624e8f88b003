"""The filter tree (docs/segments.md) compiled to one query over Contact.

One walker both validates and builds: `validate_filter` returns every problem with its path
("all[2].op: unknown op 'bigger'"), `compile_filter` returns a `Q` or raises ValueError with all
of them. Segments and fit scoring rules use the same tree.

Every leaf compiles to a predicate that is TRUE or FALSE, never NULL (missing values are guarded
with IS NOT NULL), so `not` is plain SQL NOT and `neq`/`not_in` match contacts with no value.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any

from django.db.models import (
    BooleanField,
    Count,
    Exists,
    F,
    Field,
    FloatField,
    Func,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    TextField,
)
from django.db.models.functions import Coalesce, Lower
from django.db.models.lookups import (
    Contains,
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    IsNull,
    LessThan,
    LessThanOrEqual,
    StartsWith,
)
from django.utils import timezone

from contacts.fields import FieldSpec, load_specs
from contacts.models import Contact, ContactScore, CustomField, Event, Segment

# Built-in fields and their kind. "text" compares case-insensitively; the normalised ones are
# stored in one case (email and choices lower, country upper), so the column is compared as is
# (its indexes stay usable) with the value put in the same case.
FIELD_KINDS: dict[str, str] = {
    "email": "text", "first_name": "text", "last_name": "text", "company": "text", "job_title": "text",
    "phone": "text", "country": "text", "lifecycle_stage": "text", "consent_status": "text", "grade": "text",
    "owner": "text", "is_test": "bool", "score": "number", "created_at": "datetime", "mql_at": "datetime",
}
NORMALISED_FIELDS = {"email": str.lower, "lifecycle_stage": str.lower, "consent_status": str.lower,
                     "country": str.upper}
FIELD_COLUMNS = {"owner": "owner__username"}  # the owner is named by username
NULLABLE_FIELDS = {"owner", "mql_at"}
SCORE_FIELDS: dict[str, Any] = {"score": 0, "grade": ""}  # in ContactScore, with their value when it has no row

ALL_OPS = ("eq", "neq", "in", "not_in", "contains", "startswith", "gt", "gte", "lt", "lte", "is_set", "is_empty",
           "within_days")
_COMPARE = ("gt", "gte", "lt", "lte")
OPS_BY_KIND: dict[str, tuple[str, ...]] = {
    "text": ("eq", "neq", "in", "not_in", "contains", "startswith", "is_set", "is_empty"),
    "choice": ("eq", "neq", "in", "not_in", "is_set", "is_empty"),
    "number": ("eq", "neq", "in", "not_in", *_COMPARE, "is_set", "is_empty"),
    "bool": ("eq", "neq", "is_set", "is_empty"),
    "datetime": (*_COMPARE, "is_set", "is_empty", "within_days"),
    "date": ("eq", "neq", "in", "not_in", *_COMPARE, "is_set", "is_empty", "within_days"),
}
NODE_KEYS = ("all", "any", "not", "field", "attribute", "tag", "list", "event", "segment")
ALLOWED_KEYS = {
    "field": {"field", "op", "value"}, "attribute": {"attribute", "op", "value"}, "tag": {"tag"}, "list": {"list"},
    "event": {"event", "did", "min_count", "within_days", "properties"}, "segment": {"segment"},
    "all": {"all"}, "any": {"any"}, "not": {"not"},
}
MAX_DEPTH = 20
MAX_NODES = 500
MAX_LIST = 1000
MAX_DAYS = 36_500
# Values the database can bind: SQLite integers and PostgreSQL bigint are signed 64-bit, and
# Python's float() (FloatField lookups on attributes and event properties) overflows past ~1e308.
MIN_INT, MAX_INT = -(2**63), 2**63 - 1
MAX_TEXT = 1000  # characters of one text value, tag, list or event name
PROPERTY_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")

TRUE = Q(pk__isnull=False)
FALSE = Q(pk__isnull=True)


# --- Values ------------------------------------------------------------------------------------------------


def attribute_kind(spec: FieldSpec) -> str:
    return {CustomField.Type.NUMBER: "number", CustomField.Type.BOOL: "bool", CustomField.Type.DATE: "date",
            CustomField.Type.CHOICE: "choice"}.get(spec.field_type, "text")  # type: ignore[call-overload]


def parse_moment(value: Any) -> dt.datetime:
    """A filter value for a datetime field: "YYYY-MM-DD" (start of that day) or an ISO datetime;
    both in settings.TIME_ZONE unless they carry an offset."""
    if not isinstance(value, str):
        raise ValueError("expected a date (YYYY-MM-DD) or an ISO datetime")
    try:
        moment = dt.datetime.fromisoformat(valid_text(value).strip())
    except ValueError:
        raise ValueError(f"{value[:100]!r} is not a date (YYYY-MM-DD) or an ISO datetime") from None
    moment = timezone.make_aware(moment) if timezone.is_naive(moment) else moment
    try:
        moment.astimezone(dt.UTC)  # how the database receives it: 0001-01-01 east of UTC is year 0
    except OverflowError:
        raise ValueError(f"{value!r} is out of range (years 1 to 9999 in UTC)") from None
    return moment


def valid_text(value: str) -> str:
    """Text the database can bind: PostgreSQL refuses NUL, neither encodes a lone surrogate."""
    if len(value) > MAX_TEXT:
        raise ValueError(f"text longer than {MAX_TEXT} characters")
    if "\x00" in value:
        raise ValueError("text contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (a lone surrogate)") from None
    return value


def valid_number(value: Any) -> int | float:
    """A number the database can bind; ValueError naming the range otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("expected a finite number")
    if isinstance(value, int) and not MIN_INT <= value <= MAX_INT:
        raise ValueError(f"whole numbers must fit in 64 bits ({MIN_INT} to {MAX_INT})")
    return value


def normalise_value(kind: str, value: Any, spec: FieldSpec | None = None) -> Any:
    """The comparable form of one filter value of a field or attribute kind; ValueError if it does not fit."""
    if kind in ("text", "choice"):
        if not isinstance(value, str):
            raise ValueError("expected text")
        valid_text(value)
        if kind == "choice" and spec is not None:
            return spec.coerce(value)
        return value
    if kind == "number":
        return valid_number(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if kind == "datetime":
        return parse_moment(value)
    if kind == "date":
        if not isinstance(value, str):
            raise ValueError("expected a date (YYYY-MM-DD)")
        try:
            return dt.date.fromisoformat(valid_text(value).strip()).isoformat()
        except ValueError:
            raise ValueError(f"{value[:100]!r} is not a date (use YYYY-MM-DD)") from None
    raise ValueError(f"unknown kind {kind!r}")


def valid_days(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
        raise ValueError(f"expected a whole number of days from 0 to {MAX_DAYS}")
    return value


# --- SQL for JSON keys -------------------------------------------------------------------------------------


_PG_FLOAT_MIN, _PG_FLOAT_MAX = "1e-307", "1e308"  # double precision's normal range, written as numeric


class JsonKey(Func):
    """The value under `key` in a JSON column, typed; NULL when the key is missing or holds another
    JSON type (a "number" custom field holding text is no number). SQLite and PostgreSQL."""

    arity = 1

    def __init__(self, column: str, key: str, kind: str) -> None:
        output: Field[Any, Any] = {"number": FloatField(), "bool": BooleanField()}.get(kind, TextField())
        super().__init__(F(column), output_field=output)
        self.key, self.kind = key, kind

    def as_sql(self, compiler: Any, connection: Any, *args: Any, **extra: Any) -> Any:
        raise NotImplementedError(f"segment filters support SQLite and PostgreSQL, not {connection.vendor}")

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        column, params = compiler.compile(self.source_expressions[0])
        if self.kind == "number":
            # jsonb numbers are arbitrary-precision: one beyond double precision's range (a contact's
            # 1e400, kept as written) failed the cast and with it every query over this key. Clamp
            # it as SQLite and Python read such JSON: +-infinity, or 0 below the smallest double.
            # Nested CASE: PostgreSQL evaluates its branches in order (an AND may run a cast first).
            number = f"({column} -> %s)::numeric"
            sql = (f"(CASE WHEN jsonb_typeof({column} -> %s) = 'number' THEN CASE "
                   f"WHEN abs({number}) > {_PG_FLOAT_MAX} THEN sign({number})::double precision * 'Infinity' "
                   f"WHEN abs({number}) < {_PG_FLOAT_MIN} THEN 0 "
                   f"ELSE ({column} ->> %s)::double precision END END)")
            return sql, [*params, self.key] * 5
        json_type, cast = {"bool": ("boolean", "::boolean")}.get(self.kind, ("string", ""))
        sql = f"(CASE WHEN jsonb_typeof({column} -> %s) = '{json_type}' THEN ({column} ->> %s){cast} END)"
        return sql, [*params, self.key, *params, self.key]

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        column, params = compiler.compile(self.source_expressions[0])
        path = '$."' + self.key + '"'
        if self.kind == "bool":
            sql = f"(CASE json_type({column}, %s) WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"
            return sql, [*params, path]
        if self.kind == "number":
            sql = (f"(CASE WHEN json_type({column}, %s) IN ('integer', 'real') "
                   f"THEN CAST(json_extract({column}, %s) AS REAL) END)")
        else:
            sql = f"(CASE WHEN json_type({column}, %s) = 'text' THEN json_extract({column}, %s) END)"
        return sql, [*params, path, *params, path]


# --- The walker --------------------------------------------------------------------------------------------


@dataclass
class FilterContext:
    """What compiling needs from the database, loaded once and shared by many compiles
    (segments_update_contacts compiles every active segment with one context)."""

    now: dt.datetime = field(default_factory=timezone.now)
    _specs: dict[str, FieldSpec] | None = None
    _segments: dict[int, Any] | None = None

    @property
    def specs(self) -> dict[str, FieldSpec]:
        if self._specs is None:
            self._specs = load_specs()
        return self._specs

    def segment_definition(self, segment_id: int) -> tuple[bool, Any]:
        if self._segments is None:
            self._segments = dict(Segment.objects.values_list("id", "definition"))
        if segment_id in self._segments:
            return True, self._segments[segment_id]
        return False, None

    def set_definition(self, segment_id: int, definition: Any) -> None:
        """Use an unsaved definition for this segment (the admin editor's live preview)."""
        self.segment_definition(segment_id)
        assert self._segments is not None
        self._segments[segment_id] = definition


class _Walker:
    def __init__(self, context: FilterContext, segment_id: int | None) -> None:
        self.context = context
        self.errors: list[str] = []
        self.stack: list[int] = [segment_id] if segment_id is not None else []
        self.nodes = 0
        self.depth = 0

    def error(self, path: str, message: str) -> Q:
        self.errors.append(f"{path}: {message}" if path else message)
        return FALSE

    def node(self, tree: Any, path: str, depth: int = 0) -> Q:
        self.nodes += 1
        self.depth = depth
        if self.nodes > MAX_NODES:
            return self.error(path, f"too many conditions (at most {MAX_NODES})") if self.nodes == MAX_NODES + 1 \
                else FALSE
        if depth > MAX_DEPTH:
            return self.error(path, f"nested too deeply (at most {MAX_DEPTH} levels)")
        if not isinstance(tree, dict):
            return self.error(path, "expected an object")
        kinds = [key for key in NODE_KEYS if key in tree]
        if len(kinds) != 1:
            found = " and ".join(repr(k) for k in kinds)
            return self.error(path, f"expected exactly one of {', '.join(NODE_KEYS)}"
                              + (f"; found {found}" if kinds else ""))
        kind = kinds[0]
        unknown = sorted(set(tree) - ALLOWED_KEYS[kind])
        if unknown:
            self.error(path, f"unexpected key{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(repr(k) for k in unknown)} in a {kind!r} node")
        prefix = f"{path}." if path else ""
        if kind in ("all", "any"):
            return self.group(kind, tree[kind], f"{prefix}{kind}", depth)
        if kind == "not":
            return ~self.node(tree["not"], f"{prefix}not", depth + 1)
        return getattr(self, f"condition_{kind}")(tree, prefix)

    def group(self, kind: str, children: Any, path: str, depth: int) -> Q:
        if not isinstance(children, list):
            return self.error(path, "expected a list of conditions")
        parts = [self.node(child, f"{path}[{i}]", depth + 1) for i, child in enumerate(children)]
        if not parts:
            return TRUE if kind == "all" else FALSE
        combined = parts[0]
        for part in parts[1:]:
            combined = combined & part if kind == "all" else combined | part
        return combined

    # Conditions ---------------------------------------------------------------------------------------------

    def condition_field(self, tree: dict[str, Any], prefix: str) -> Q:
        name = tree["field"]
        if not isinstance(name, str) or name not in FIELD_KINDS:
            return self.error(f"{prefix}field", f"unknown field {name!r}; known: {', '.join(FIELD_KINDS)}")
        kind = FIELD_KINDS[name]
        op, value = self.op_and_value(tree, prefix, kind, name, None)
        if op is None:
            return FALSE
        if name in SCORE_FIELDS:
            return self.condition_score(name, op, value, kind)
        column: Any = F(FIELD_COLUMNS.get(name, name))
        if kind == "text":
            normalise = NORMALISED_FIELDS.get(name)
            if normalise is None:
                column = Lower(column)
                normalise = str.lower
            value = [normalise(v) for v in value] if isinstance(value, list) else \
                normalise(value) if isinstance(value, str) else value
        return self.compare(column, op, value, kind, nullable=name in NULLABLE_FIELDS)

    def condition_score(self, name: str, op: str, value: Any, kind: str) -> Q:
        """score and grade live in ContactScore, where a contact without a row has 0 and ''. Whether
        that default matches is known here, so the condition is one EXISTS on the contact's row (a
        semi-join, or an anti-join for the rows that fail it), never an OR the planner cannot pull up."""
        column: Any = F(name)
        if kind == "text":
            column = Lower(column)
            value = [v.lower() for v in value] if isinstance(value, list) else \
                value.lower() if isinstance(value, str) else value
        condition = self.compare(column, op, value, kind, nullable=False)
        row = ContactScore.objects.filter(contact=OuterRef("pk"))
        if _default_matches(op, value, SCORE_FIELDS[name]):
            return ~Q(Exists(row.exclude(condition)))  # no row, or a row that matches
        return Q(Exists(row.filter(condition)))

    def condition_attribute(self, tree: dict[str, Any], prefix: str) -> Q:
        key = tree["attribute"]
        spec = self.context.specs.get(key) if isinstance(key, str) else None
        if spec is None:
            return self.error(f"{prefix}attribute", f"unknown custom field {key!r}")
        kind = attribute_kind(spec)
        op, value = self.op_and_value(tree, prefix, kind, key, spec)
        if op is None:
            return FALSE
        column: Any = JsonKey("attributes", key, kind)
        if kind in ("text", "choice"):
            column = Lower(column)
            value = [v.lower() for v in value] if isinstance(value, list) else \
                value.lower() if isinstance(value, str) else value
        return self.compare(column, op, value, kind, nullable=True)

    def condition_tag(self, tree: dict[str, Any], prefix: str) -> Q:
        name = tree["tag"]
        if not isinstance(name, str) or not name:
            return self.error(f"{prefix}tag", "expected a tag name")
        if problem := _text_problem(name):
            return self.error(f"{prefix}tag", problem)
        through = Contact.tags.through.objects.filter(contact_id=OuterRef("pk"), tag__name=name)
        return Q(Exists(through))

    def condition_list(self, tree: dict[str, Any], prefix: str) -> Q:
        name = tree["list"]
        if not isinstance(name, str) or not name:
            return self.error(f"{prefix}list", "expected a list name")
        if problem := _text_problem(name):
            return self.error(f"{prefix}list", problem)
        through = Contact.lists.through.objects.filter(contact_id=OuterRef("pk"), contactlist__name=name)
        return Q(Exists(through))

    def condition_event(self, tree: dict[str, Any], prefix: str) -> Q:
        event_type, did = tree["event"], tree.get("did", True)
        min_count, days, properties = tree.get("min_count", 1), tree.get("within_days"), tree.get("properties", {})
        count = len(self.errors)
        if not isinstance(event_type, str) or not event_type:
            self.error(f"{prefix}event", "expected an event type")
        elif problem := _text_problem(event_type):
            self.error(f"{prefix}event", problem)
        if not isinstance(did, bool):
            self.error(f"{prefix}did", "expected true or false")
        if isinstance(min_count, bool) or not isinstance(min_count, int) or not 1 <= min_count <= 10_000:
            self.error(f"{prefix}min_count", "expected a whole number from 1 to 10000")
        if days is not None:
            try:
                valid_days(days)
            except ValueError as exc:
                self.error(f"{prefix}within_days", str(exc))
        if not isinstance(properties, dict):
            self.error(f"{prefix}properties", "expected an object of property values")
            properties = {}
        for key, value in properties.items():
            if not PROPERTY_KEY.match(key):
                self.error(f"{prefix}properties.{key}", "property names use letters, digits, _ . - (up to 100)")
            elif not isinstance(value, str | int | float):
                self.error(f"{prefix}properties.{key}", "expected text, a number or true/false")
            elif problem := _text_problem(value) if isinstance(value, str) else \
                    None if isinstance(value, bool) else _number_problem(value):
                self.error(f"{prefix}properties.{key}", problem)
        if len(self.errors) > count:
            return FALSE
        events = Event.objects.filter(contact_id=OuterRef("pk"), event_type=event_type)
        if days is not None:
            events = events.filter(occurred_at__gte=self.context.now - dt.timedelta(days=days),
                                   occurred_at__lte=self.context.now)
        for key, value in properties.items():
            kind = "bool" if isinstance(value, bool) else "number" if isinstance(value, int | float) else "text"
            events = events.filter(Exact(JsonKey("properties", key, kind), value))
        if min_count == 1:
            happened = Q(Exists(events))
        else:
            counted = events.order_by().values("contact_id").annotate(n=Count("pk")).values("n")
            happened = Q(GreaterThanOrEqual(Coalesce(Subquery(counted), 0), min_count))
        return happened if did else ~happened

    def condition_segment(self, tree: dict[str, Any], prefix: str) -> Q:
        segment_id, path = tree["segment"], f"{prefix}segment"
        if isinstance(segment_id, bool) or not isinstance(segment_id, int):
            return self.error(path, "expected a segment id")
        if segment_id in self.stack:
            chain = " -> ".join(str(s) for s in [*self.stack[self.stack.index(segment_id):], segment_id])
            return self.error(path, f"segment {segment_id} refers back to itself ({chain})")
        found, definition = self.context.segment_definition(segment_id)
        if not found:
            return self.error(path, f"segment {segment_id} does not exist")
        self.stack.append(segment_id)
        try:
            return self.node(definition, f"{path}({segment_id})", self.depth + 1)
        finally:
            self.stack.pop()

    # Operators ----------------------------------------------------------------------------------------------

    def op_and_value(self, tree: dict[str, Any], prefix: str, kind: str, name: str,
                     spec: FieldSpec | None) -> tuple[str | None, Any]:
        op = tree.get("op")
        if op not in ALL_OPS:
            self.error(f"{prefix}op", f"unknown op {op!r}" if op is not None else "missing op")
            return None, None
        if op not in OPS_BY_KIND[kind]:
            self.error(f"{prefix}op", f"op {op!r} does not apply to {name} ({kind}); "
                                      f"use one of {', '.join(OPS_BY_KIND[kind])}")
            return None, None
        if op in ("is_set", "is_empty"):
            return op, None
        if "value" not in tree:
            self.error(f"{prefix}value", "missing value")
            return None, None
        value = tree["value"]
        try:
            if op == "within_days":
                return op, valid_days(value)
            if op in ("in", "not_in"):
                if not isinstance(value, list) or not value or len(value) > MAX_LIST:
                    raise ValueError(f"expected a list of 1 to {MAX_LIST} values")
                return op, [normalise_value(kind, v, spec) for v in value]
            return op, normalise_value(kind, value, spec)
        except ValueError as exc:
            self.error(f"{prefix}value", str(exc))
            return None, None

    def compare(self, column: Any, op: str, value: Any, kind: str, *, nullable: bool) -> Q:
        if op in ("neq", "not_in", "is_empty"):
            return ~self.compare(column, {"neq": "eq", "not_in": "in", "is_empty": "is_set"}[op], value, kind,
                                 nullable=nullable)
        guard = Q(IsNull(column, False))
        if op == "is_set":
            filled = ~Q(Exact(column, "")) if kind in ("text", "choice") else TRUE
            return (guard & filled if kind in ("text", "choice") else guard) if nullable else filled
        if op == "within_days":
            now = self.context.now
            low: Any
            high: Any
            if kind == "date":
                today = timezone.localdate(now)
                low, high = (today - dt.timedelta(days=value)).isoformat(), today.isoformat()
            else:
                low, high = now - dt.timedelta(days=value), now
            window = Q(GreaterThanOrEqual(column, low)) & Q(LessThanOrEqual(column, high))
            return guard & window if nullable else window
        lookup = {"eq": Exact, "in": In, "contains": Contains, "startswith": StartsWith, "gt": GreaterThan,
                  "gte": GreaterThanOrEqual, "lt": LessThan, "lte": LessThanOrEqual}[op]
        condition = Q(lookup(column, value))
        return guard & condition if nullable else condition


def _text_problem(value: str) -> str | None:
    try:
        valid_text(value)
    except ValueError as exc:
        return str(exc)
    return None


def _number_problem(value: int | float) -> str | None:
    try:
        valid_number(value)
    except ValueError as exc:
        return str(exc)
    return None


def _default_matches(op: str, value: Any, default: Any) -> bool:
    """Whether a field's value when it has no row (score 0, grade '') meets a condition, the way
    _Walker.compare reads it for a non-nullable column (text already lower-cased)."""
    if op in ("neq", "not_in", "is_empty"):
        return not _default_matches({"neq": "eq", "not_in": "in", "is_empty": "is_set"}[op], value, default)
    if op == "is_set":
        return default != "" if isinstance(default, str) else True
    if op == "eq":
        return bool(default == value)
    if op == "in":
        return default in value
    if op == "contains":
        return str(value) in default
    if op == "startswith":
        return str(default).startswith(str(value))
    compare = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}[op]
    return bool(compare(default, value))


# --- Public API --------------------------------------------------------------------------------------------


def _walk(tree: Any, *, context: FilterContext, segment_id: int | None) -> tuple[Q, list[str]]:
    walker = _Walker(context, segment_id)
    condition = walker.node(tree, "")
    return condition, walker.errors


def validate_filter(tree: Any, *, segment_id: int | None = None) -> list[str]:
    """Every problem in `tree`, each naming its path; [] when it compiles.

    `segment_id`: the segment being edited, so a reference back to it is reported as a cycle.
    """
    context = FilterContext()
    if segment_id is not None:
        context.set_definition(segment_id, tree)
    return _walk(tree, context=context, segment_id=segment_id)[1]


def compile_filter(tree: Any, *, now: dt.datetime | None = None) -> Q:
    """One Q over Contact for the filter tree; ValueError listing every problem if it is invalid."""
    return compile_with(tree, context=FilterContext(now=now or timezone.now()))


def compile_with(tree: Any, *, context: FilterContext, segment_id: int | None = None) -> Q:
    """compile_filter with a shared context (many compiles, one load of custom fields and segments)."""
    condition, errors = _walk(tree, context=context, segment_id=segment_id)
    if errors:
        raise ValueError("invalid filter: " + "; ".join(errors))
    return condition


def segment_queryset(segment: Segment, *, context: FilterContext | None = None) -> QuerySet[Contact]:
    """The contacts the segment's definition matches now (its definition, not its stored membership)."""
    context = context or FilterContext()
    return Contact.objects.filter(compile_with(segment.definition, context=context, segment_id=segment.pk))
