"""Email rendering in a sandbox: Django's template language on plain data only.

The engine has no template loaders (no {% include %}/{% extends %} of files), no tag libraries
to {% load %}, autoescape on, and the context is built from dicts of strings and numbers, never
model instances, so a template cannot call methods or walk relations. `{% debug %}` (which dumps
the context and sys.modules) is refused at validation and at render.

Every email is wrapped in one base layout (templates/email/base.html) that adds the unsubscribe
link and the postal address; links are rewritten to signed click-tracking URLs and an open pixel
is appended (campaigns/tracking.py).
"""

from __future__ import annotations

import functools
import html as html_lib
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

from django.template import Context, Engine, Template, TemplateSyntaxError
from django.template.defaulttags import DebugNode
from django.template.loader import render_to_string

from campaigns import template_limits

_ENGINE = Engine(
    dirs=[], app_dirs=False, loaders=[("django.template.loaders.locmem.Loader", {})],
    libraries={}, autoescape=True, debug=False, string_if_invalid="",
    # Last, so its capped filters and tags replace the builtins of the same name.
    builtins=[*Engine.default_builtins, "campaigns.template_limits"],
)

CONTACT_FIELDS = ("email", "first_name", "last_name", "company", "job_title", "phone", "country",
                  "lifecycle_stage", "score", "grade")

SAMPLE_CONTACT: dict[str, Any] = {
    "email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace", "company": "Analytical Engines",
    "job_title": "Engineer", "phone": "", "country": "GB", "lifecycle_stage": "lead", "score": 42, "grade": "B",
}


class TemplateInvalid(ValueError):
    """A template part that does not compile or render; `part` is subject, html or text."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(message)
        self.part = part


@functools.lru_cache(maxsize=256)  # a batch renders one template for hundreds of contacts
def _compile(part: str, source: str) -> Template:
    try:
        template = _ENGINE.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateInvalid(part, f"{part}: {exc}") from None
    except Exception as exc:  # noqa: BLE001  the template language raises a few kinds; all are the user's input
        raise TemplateInvalid(part, f"{part}: {type(exc).__name__}: {exc}") from None
    if template.nodelist.get_nodes_by_type(DebugNode):
        raise TemplateInvalid(part, f"{part}: the {{% debug %}} tag is not allowed in emails")
    return template_limits.guard(template)


def _render(part: str, source: str, context: dict[str, Any]) -> str:
    """Render one part within the current budget (template_limits: a deadline and an output cap)."""
    template = _compile(part, source)
    try:
        with template_limits.budget():
            return template.render(Context(context, autoescape=part != "subject" and part != "text"))
    except template_limits.RenderLimitExceeded as exc:
        raise TemplateInvalid(part, f"{part}: {exc}") from None
    except Exception as exc:  # noqa: BLE001  any failure inside a user template is a render error
        raise TemplateInvalid(part, f"{part}: {type(exc).__name__}: {exc}") from None


def template_validate(*, subject: str, html: str, text: str = "") -> None:
    """Compile each part and render it against a sample contact; TemplateInvalid names the part.
    The parts share one render budget, as they do when the email is sent."""
    context = render_context(contact=SAMPLE_CONTACT, attributes={}, extra={})
    with template_limits.budget():
        for part, source in (("subject", subject), ("html", html), ("text", text)):
            _render(part, source or "", context)


def contact_data(contact: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Plain dicts of the contact's fields and custom attributes (no model instance leaves here)."""
    fields = {name: getattr(contact, name) for name in CONTACT_FIELDS}
    attributes = {str(k): v for k, v in (contact.attributes or {}).items() if _plain(v)}
    return fields, attributes


def _plain(value: Any) -> bool:
    if isinstance(value, str | int | float | bool) or value is None:
        return True
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def render_context(*, contact: dict[str, Any], attributes: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    return {"contact": dict(contact), "attributes": dict(attributes),
            "data": {k: v for k, v in extra.items() if isinstance(k, str) and _plain(v)}}


@dataclass
class Rendered:
    subject: str
    html: str
    text: str


def render_parts(*, subject: str, html: str, text: str, context: dict[str, Any]) -> Rendered:
    """The template's own parts, rendered (no layout, no tracking), within one render budget."""
    with template_limits.budget():
        subject_out = " ".join(_render("subject", subject, context).split())  # no header injection via newlines
        html_out = _render("html", html, context)
        text_out = _render("text", text, context) if text.strip() else html_to_text(html_out)
    return Rendered(subject_out, html_out, text_out)


def wrap_layout(*, body_html: str, body_text: str, subject: str, unsubscribe_url: str, postal_address: str,
                test_banner: str = "") -> tuple[str, str]:
    """Put a rendered body into the shared layout: footer with unsubscribe link and address."""
    html_out = render_to_string("email/base.html", {
        "body": body_html, "subject": subject, "unsubscribe_url": unsubscribe_url,
        "postal_address": postal_address, "test_banner": test_banner,
    })
    footer = [f"Unsubscribe: {unsubscribe_url}"]
    if postal_address:
        footer.append(postal_address)
    banner = f"[{test_banner}]\n\n" if test_banner else ""
    text_out = banner + body_text.rstrip() + "\n\n--\n" + "\n".join(footer) + "\n"
    return html_out, text_out


# --- HTML -> text and link rewriting ------------------------------------------------------------

_HREF_RE = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)


def rewrite_links(html_in: str, make_url: Any, tag: Any = None) -> tuple[str, list[str]]:
    """Replace each http(s) link with make_url(index); returns the new HTML and the URLs clicks
    lead to: the original ones, passed through `tag` when given (UTM parameters, campaigns/utm.py).

    Only absolute http(s) links are tracked; mailto:, tel: and anchors are left alone."""
    links: list[str] = []

    def replace(match: re.Match[str]) -> str:
        url = html_lib.unescape(match[3]).strip()
        if not re.match(r"^https?://", url, re.IGNORECASE):
            return match[0]
        if tag is not None:
            url = tag(url)
        if url not in links:
            links.append(url)
        return f"{match[1]}{match[2]}{html_lib.escape(make_url(links.index(url)))}{match[2]}"

    return _HREF_RE.sub(replace, html_in), links


class _TextExtractor(HTMLParser):
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._href: str | None = None
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip += 1
        elif tag == "a":
            self._href = dict(attrs).get("href")
        elif tag in self._BLOCK:
            self.out.append("\n")
        if tag == "li":
            self.out.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._href:
            if self._href.startswith(("http://", "https://")):
                self.out.append(f" ({self._href})")
            self._href = None
        elif tag in self._BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(html_in: str) -> str:
    parser = _TextExtractor()
    parser.feed(html_in)
    parser.close()
    lines = [line.strip() for line in "".join(parser.out).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
