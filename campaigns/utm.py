"""UTM parameters on the tracked links of an email (issue 21 item 4), so the site's analytics can
tell which campaign and email a visit came from. Parameter names and meanings: Google Analytics,
"URL builders: Collect campaign data with custom URLs" (support.google.com/analytics/answer/10917952):
utm_id, utm_source, utm_medium, utm_campaign, utm_source_platform, utm_term, utm_content,
utm_creative_format, utm_marketing_tactic (e.g. utm_content to tell two links of one email apart).

Where they come from, per message (first found wins):
1. `context["utm"]` on the message: whoever queues sets it per campaign (broadcasts pass
   `utm=` to campaigns.services.messages_queue, which validates it with `utm_clean`);
2. a resolver registered by a higher app: a workflow's send_email step option `utm`
   (automation/utm.py, registered in automation/apps.py), looked up from the version that pins
   the message's revision.
No configuration: links are left exactly as written.

Applied to the links of the template's body when they are rewritten for click tracking
(campaigns/delivery.py message_render), so the click redirect leads to the tagged URL. The
unsubscribe and preference links are added by the layout after that and are never tagged;
a parameter the link already has (its own utm_campaign, say) is kept, not overwritten.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

UTM_KEYS = ("utm_id", "utm_source", "utm_medium", "utm_campaign", "utm_source_platform", "utm_term", "utm_content",
            "utm_creative_format", "utm_marketing_tactic")
MAX_VALUE = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UtmInvalid(ValueError):
    pass


def utm_clean(value: Any, *, where: str = "utm") -> dict[str, str]:
    """A UTM setting as {parameter: value}; UtmInvalid names `where` and what is wrong."""
    if value in (None, {}):
        return {}
    if not isinstance(value, Mapping):
        raise UtmInvalid(f"{where}: expected a mapping of UTM parameters, e.g. "
                         f"{{utm_campaign: spring-sale}}, got {type(value).__name__}")
    cleaned: dict[str, str] = {}
    for key, raw in value.items():
        if key not in UTM_KEYS:
            raise UtmInvalid(f"{where}: unknown parameter {key!r}; use {', '.join(UTM_KEYS)}")
        if not isinstance(raw, str | int) or isinstance(raw, bool):
            raise UtmInvalid(f"{where}.{key}: expected text, got {type(raw).__name__}")
        text = str(raw).strip()
        if not text or len(text) > MAX_VALUE or _CONTROL.search(text):
            raise UtmInvalid(f"{where}.{key}: expected 1 to {MAX_VALUE} characters of text without line breaks")
        cleaned[key] = text
    return cleaned


def utm_apply(url: str, utm: Mapping[str, str]) -> str:
    """`url` with the UTM parameters it does not have yet appended; its own query kept as written."""
    if not utm:
        return url
    parts = urlsplit(url)
    present = {key for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    # In UTM_KEYS order whatever the setting's (PostgreSQL's jsonb reorders keys): the same URL every time.
    missing = sorted(((key, value) for key, value in utm.items() if key not in present), key=_position)
    if not missing:
        return url
    query = f"{parts.query}&{urlencode(missing)}" if parts.query else urlencode(missing)
    return urlunsplit(parts._replace(query=query))


def _position(item: tuple[str, str]) -> int:
    return UTM_KEYS.index(item[0]) if item[0] in UTM_KEYS else len(UTM_KEYS)


# Higher apps (automation) register how to find a message's UTM setting when the message does not
# carry one; campaigns does not import them (STYLE 16).
_RESOLVERS: list[Callable[[Any], Mapping[str, str] | None]] = []


def utm_resolver_register(resolver: Callable[[Any], Mapping[str, str] | None]) -> None:
    if resolver not in _RESOLVERS:
        _RESOLVERS.append(resolver)


def utm_for_message(message: Any) -> dict[str, str]:
    """The UTM parameters for a message's links ({} for none)."""
    context = message.context if isinstance(message.context, dict) else {}
    if "utm" in context:
        try:
            return utm_clean(context["utm"], where=f"message {message.pk} context.utm")
        except UtmInvalid:
            return {}  # validated when queued; a row edited since sends its links untagged, not broken
    for resolver in _RESOLVERS:
        if found := resolver(message):
            return dict(found)
    return {}
