"""Time and size limits for rendering an email template (issue 14, item 6).

An 868-byte template of nested {% for %} loops took ~18 s to save, and a few filters turn a short
template into gigabytes ({{ x|ljust:"999999999" }}, a chain of {% with %} doubling a string with
`add`). Rendering runs under a `budget()`: a deadline (EMAIL_RENDER_MAX_MS) checked on every loop
iteration and every piece of output, and a cap on the characters produced
(EMAIL_RENDER_MAX_CHARS). The checks run in the rendering thread itself, between steps of the
work, so they stop it (a signal or a watchdog thread could not stop CPU work in a worker).

This module is also a template library, loaded after Django's builtins by the sandbox engine
(campaigns.rendering): its filters and tags replace the builtins of the same name with versions
that refuse a result beyond the cap before building it.
"""

from __future__ import annotations

import contextvars
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.template import Library, Node, NodeList, Template, defaultfilters, defaulttags
from django.template.base import TextNode, VariableNode

register = Library()
FLOATFORMAT_MAX_DIGITS = 100

_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("email_render_budget", default=None)


class RenderLimitExceeded(Exception):  # noqa: N818  (the message names the limit)
    """Rendering took too long or produced too much; the message names the limit and its setting."""


class Budget:
    def __init__(self, *, seconds: float, max_chars: int) -> None:
        self.seconds, self.max_chars = seconds, max_chars
        self.deadline = time.monotonic() + seconds
        self.chars = 0

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise RenderLimitExceeded(
                f"rendering stopped after {self.seconds:g} s (EMAIL_RENDER_MAX_MS); loops nested too deep "
                "or over too many items?")

    def add_output(self, chars: int) -> None:
        self.chars += chars
        if self.chars > self.max_chars:
            raise RenderLimitExceeded(self.too_long())
        self.check_time()

    def too_long(self) -> str:
        return f"the rendered email would exceed {self.max_chars:,} characters (EMAIL_RENDER_MAX_CHARS)"


@contextmanager
def budget() -> Iterator[Budget]:
    """One budget for everything rendered inside (the parts of one email share it); nested calls
    share the outer one."""
    current = _BUDGET.get()
    if current is not None:
        yield current
        return
    new = Budget(seconds=settings.EMAIL_RENDER_MAX_MS / 1000, max_chars=settings.EMAIL_RENDER_MAX_CHARS)
    token = _BUDGET.set(new)
    try:
        yield new
    finally:
        _BUDGET.reset(token)


def _current() -> Budget:
    current = _BUDGET.get()
    if current is None:  # rendering outside budget() (a caller added later): still limited
        return Budget(seconds=settings.EMAIL_RENDER_MAX_MS / 1000, max_chars=settings.EMAIL_RENDER_MAX_CHARS)
    return current


def _max_chars() -> int:
    return _current().max_chars


# --- Guarding a compiled template --------------------------------------------------------------------------


class _GuardedLoopBody(NodeList):
    """A {% for %} body: ForNode iterates it once per item, so that is where the deadline is checked."""

    def __iter__(self) -> Iterator[Node]:
        _current().check_time()
        return super().__iter__()


class _CountedText(TextNode):
    def render_annotated(self, context: Any) -> Any:
        output: Any = super().render_annotated(context)
        _current().add_output(len(output))
        return output


class _CountedVariable(VariableNode):
    def render_annotated(self, context: Any) -> Any:
        output: Any = super().render_annotated(context)
        _current().add_output(len(output))
        return output


def guard(template: Template) -> Template:
    """Make a compiled template check the budget while it renders: loop bodies check the deadline
    on each iteration, text and variables count their output (the only nodes that make new text;
    loops and blocks join theirs)."""
    loop: Any
    for loop in template.nodelist.get_nodes_by_type(defaulttags.ForNode):
        loop.nodelist_loop = _GuardedLoopBody(loop.nodelist_loop)
    for node in template.nodelist.get_nodes_by_type(TextNode):
        node.__class__ = _CountedText
    for node in template.nodelist.get_nodes_by_type(VariableNode):
        node.__class__ = _CountedVariable
    return template


# --- Builtins that could build a huge value in one step ----------------------------------------------------


def _refuse_beyond(chars: int, what: str) -> None:
    if chars > _max_chars():
        raise RenderLimitExceeded(f"{what}: the result would exceed {_max_chars():,} characters "
                                  "(EMAIL_RENDER_MAX_CHARS)")


def _width(arg: Any, what: str) -> None:
    try:
        width = int(arg)
    except (TypeError, ValueError):
        return  # the builtin handles a bad argument its own way
    _refuse_beyond(width, what)


@register.filter(is_safe=True)
@defaultfilters.stringfilter
def ljust(value: str, arg: Any) -> str:
    _width(arg, "ljust")
    return str(defaultfilters.ljust(value, arg))


@register.filter(is_safe=True)
@defaultfilters.stringfilter
def rjust(value: str, arg: Any) -> str:
    _width(arg, "rjust")
    return str(defaultfilters.rjust(value, arg))


@register.filter(is_safe=True)
@defaultfilters.stringfilter
def center(value: str, arg: Any) -> str:
    _width(arg, "center")
    return str(defaultfilters.center(value, arg))


@register.filter(is_safe=True)
def stringformat(value: Any, arg: Any) -> Any:
    for number in re.findall(r"\d+", str(arg)):  # "%0999999999d": width and precision
        _width(number, "stringformat")
    return defaultfilters.stringformat(value, arg)


@register.filter(is_safe=True)
def floatformat(text: Any, arg: Any = -1) -> Any:
    digits = re.findall(r"\d+", str(arg))  # the precision: a million digits took half a second
    if digits and int(digits[0]) > FLOATFORMAT_MAX_DIGITS:
        raise RenderLimitExceeded(f"floatformat: at most {FLOATFORMAT_MAX_DIGITS} decimal places")
    return defaultfilters.floatformat(text, arg)


@register.filter(is_safe=False)
def add(value: Any, arg: Any) -> Any:
    if hasattr(value, "__len__") and hasattr(arg, "__len__"):  # text or lists: a chain of {% with %} doubles them
        _refuse_beyond(len(value) + len(arg), "add")
    return defaultfilters.add(value, arg)


@register.filter(is_safe=True, needs_autoescape=True)
def join(value: Any, arg: Any, autoescape: bool = True) -> Any:
    try:
        items = list(value)
        size = sum(len(str(v)) for v in items) + len(str(arg)) * max(len(items) - 1, 0)
    except TypeError:
        return value
    _refuse_beyond(size, "join")
    return defaultfilters.join(items, arg, autoescape=autoescape)


class _CappedLorem(defaulttags.LoremNode):
    def render(self, context: Any) -> str:
        try:
            count = int(self.count.resolve(context))
        except (TypeError, ValueError):
            count = 1
        _refuse_beyond(count * (1000 if self.method in ("p", "b") else 10), "lorem")
        return str(super().render(context))


@register.tag
def lorem(parser: Any, token: Any) -> Node:
    node = defaulttags.lorem(parser, token)
    node.__class__ = _CappedLorem
    return node
