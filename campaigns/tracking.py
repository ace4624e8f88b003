"""Signed tokens for the public email endpoints: open pixel, click redirect, unsubscribe.

Each purpose has its own salt, so a token made for one cannot be used for another; a token names
only a message id (and a link index), so a click can only lead to a URL stored with that message.
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.core import signing
from django.urls import reverse

_OPEN = signing.Signer(salt="leadflow.campaigns.open")
_CLICK = signing.Signer(salt="leadflow.campaigns.click")
_UNSUBSCRIBE = signing.Signer(salt="leadflow.campaigns.unsubscribe")


class BadToken(ValueError):
    pass


_PLACEHOLDER = "TOKEN"


@functools.lru_cache(maxsize=8)
def _url_template(name: str, site_url: str) -> str:
    # reverse() once per URL name, not once per link of every email (it showed in profiles).
    return site_url.rstrip("/") + reverse(name, args=[_PLACEHOLDER])


def _url(name: str, token: str) -> str:
    return _url_template(name, settings.SITE_URL).replace(_PLACEHOLDER, token, 1)


def open_url(message_id: int) -> str:
    return _url("campaigns:open", _OPEN.sign(str(message_id)))


def click_url(message_id: int, index: int) -> str:
    return _url("campaigns:click", _CLICK.sign(f"{message_id}.{index}"))


def unsubscribe_url(message_id: int) -> str:
    return _url("campaigns:unsubscribe", _UNSUBSCRIBE.sign(str(message_id)))


def _unsign(signer: signing.Signer, token: str) -> str:
    try:
        return signer.unsign(token)
    except signing.BadSignature:
        raise BadToken("the link is not valid") from None


def open_token_read(token: str) -> int:
    value = _unsign(_OPEN, token)
    if not value.isdigit():
        raise BadToken("the link is not valid")
    return int(value)


def click_token_read(token: str) -> tuple[int, int]:
    message_id, _, index = _unsign(_CLICK, token).partition(".")
    if not (message_id.isdigit() and index.isdigit()):
        raise BadToken("the link is not valid")
    return int(message_id), int(index)


def unsubscribe_token_read(token: str) -> int:
    value = _unsign(_UNSUBSCRIBE, token)
    if not value.isdigit():
        raise BadToken("the link is not valid")
    return int(value)
