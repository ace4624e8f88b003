"""The event API's fast path for plain items (issue 18, item 4) gives exactly what the full checks
give: the same cleaned event, or (by falling back to them) the same error, for any item."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from contacts import ingest
from contacts.ingest import ItemInvalid

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)

# Text near the edges the checks care about: NUL, lone surrogates, invisible characters, case,
# whitespace, "--", non-ASCII, very long values.
tricky_text = st.one_of(
    st.sampled_from(["ann@example.com", "Ann@Example.COM", " ann@example.com ", "a--b@example.com",
                     "ann@xn--bcher-kva.de", "ann@bücher.de", "ann@example.local", "ann\x00@example.com",
                     "ann\u00ad@example.com", "\ud800@example.com", "", "   ", "page.viewed", "Page", "x" * 201,
                     "k-1", "k\x07", "k\ud800", "é", "a\x00b", "2026-01-01T00:00:00Z"]),
    st.text(max_size=12),
    st.text(alphabet=st.characters(max_codepoint=127), max_size=300),
)
plain_value = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                        st.floats(allow_nan=True, allow_infinity=True), tricky_text)
value = st.recursive(plain_value, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(tricky_text, inner, max_size=3)),
                     max_leaves=8)
properties = st.one_of(st.none(), st.dictionaries(tricky_text, plain_value, max_size=6),
                       st.dictionaries(tricky_text, value, max_size=3), value)
item = st.one_of(
    st.fixed_dictionaries({}, optional={"email": tricky_text, "type": tricky_text, "properties": properties,
                                        "idempotency_key": st.one_of(st.none(), tricky_text, st.integers()),
                                        "occurred_at": st.one_of(st.none(), tricky_text),
                                        "extra": st.integers()}),
    value,
)


def outcome(clean: Any, raw: Any) -> Any:
    try:
        return clean(3, raw, now=NOW)
    except ItemInvalid as exc:
        return f"error: {exc}"


BASE = {"email": "ann@example.com", "type": "page_view", "idempotency_key": "k-1"}


@settings(max_examples=600, deadline=None)
@given(item)
@example({**BASE, "properties": {"big": "\x01" * 2800}})  # 16,808 bytes once escaped: over the limit
@example({**BASE, "properties": {"big": "x" * 16_372}})  # 16,381 bytes: within
@example({**BASE, "properties": {"big": "x" * 16_380}})  # 16,389 bytes: over
@example({**BASE, "properties": {"n": 2**64, "m": -(2**63), "f": 1e308, "i": float("inf")}})
@example({**BASE, "email": "ann\x00@example.com"})
@example({**BASE, "idempotency_key": "k\ud800"})
@example({**BASE, "properties": {"\ud800": 1}})
@example({**BASE, "properties": {"a": "\x00"}})
@example({**BASE, "occurred_at": "2026-01-01T00:00:00Z"})
def test_the_fast_path_gives_what_the_full_checks_give(raw: Any) -> None:
    assert outcome(ingest.clean_item, raw) == outcome(ingest._clean_item_full, raw)


def test_a_plain_item_takes_the_fast_path() -> None:
    raw = {"email": "Lead7@Load.example", "type": "page_view", "properties": {"page": "/p/1", "n": 2, "ok": True},
           "idempotency_key": "r0-c1-7"}
    cleaned = ingest._clean_plain(0, raw, NOW)
    assert cleaned is not None
    assert (cleaned.email, cleaned.occurred_at, cleaned.idempotency_key) == ("lead7@load.example", NOW, "r0-c1-7")
