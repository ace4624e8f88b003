"""How emails did: totals, over time and per link for any set of messages (one workflow email, a
broadcast, one A/B variant), and the comparison of A/B variants (issue 21 item 4).

Set-based: `report_for` runs six queries whatever the number of messages (two aggregates, two
GROUP BYs over time, the per-link GROUP BY and the links' URLs), on SQLite and PostgreSQL.

Where each figure comes from:
- sent: messages with `sent_at` or `bounced_at` (a hard bounce at RCPT was attempted but has no
  `sent_at`); over time by the first of the two.
- hard bounced: `bounced_at` (a provider's hard bounce or a 55x at RCPT); soft bounced: messages
  with a provider's transient report (MessageEngagement SOFT_BOUNCE). A 4xx during the SMTP
  conversation is a deferral that delivery retries, not a bounce.
- delivered: sent minus hard bounced (what listmonk and Mailchimp show); `delivery_confirmed`:
  messages a provider reported handed over (`delivered_at`, e.g. Amazon SES Delivery).
- opened / clicked unique: `opened_at` / `clicked_at` (a click counts as an open: images are often
  blocked); totals: MessageEngagement rows, one per recorded pixel load or click, at most
  ENGAGEMENT_CAP (100) per message and kind (docs/delivery.md, "Reports and UTM"). A message
  with `opened_at` but no open row (opened by a click only, or sent before engagement rows
  existed) counts one open in the total, at its `opened_at`: total opens are, per message, the
  larger of its open rows and its unique open, so "Opens (total)" is never below "Opened (unique)".
  Clicks always write their row, so their total needs no such floor.
- A/B successes (`opened_delivered` / `clicked_delivered`): unique opens / clicks among delivered
  messages only (sent, not hard bounced), so they never exceed the variant's trials (delivered):
  a message opened and then reported as a hard bounce is neither.
- unsubscribed: messages through whose link the contact withdrew consent or left a topic
  (consent/services.py); complained: `complained_at` (the first complaint matched to it).
- per link: by the link's index in the message (Message.links); the URL shown is that index's in
  the first message clicked there, so personalised URLs show one example.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Exists, F, Min, OuterRef, Q, QuerySet, Value
from django.db.models.functions import Coalesce, TruncDay, TruncHour

from campaigns.models import EngagementKind, Message, MessageEngagement, MessageStatus
from core.utils import spreadsheet_safe

BUCKETS = {"hour": TruncHour, "day": TruncDay}

# Message timestamps charted over time: series name -> the column (or expression) it counts by.
_MESSAGE_SERIES: dict[str, Any] = {
    "sent": Coalesce("sent_at", "bounced_at"),
    "hard_bounced": "bounced_at",
    "opened_unique": "opened_at",
    "clicked_unique": "clicked_at",
    "complained": "complained_at",
}
_ENGAGEMENT_SERIES = {EngagementKind.OPEN: "opened_total", EngagementKind.CLICK: "clicked_total",
                      EngagementKind.UNSUBSCRIBE: "unsubscribed", EngagementKind.SOFT_BOUNCE: "soft_bounced"}
_HITS = (EngagementKind.OPEN, EngagementKind.CLICK)
SERIES = ("sent", "hard_bounced", "soft_bounced", "opened_unique", "opened_total", "clicked_unique",
          "clicked_total", "unsubscribed", "complained")


@dataclass
class LinkRow:
    index: int
    url: str
    clicks: int
    unique_clicks: int


@dataclass
class Bucket:
    start: dt.datetime
    counts: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)


@dataclass
class Report:
    bucket: str
    messages: int = 0
    pending: int = 0  # queued, deferred or being sent
    failed: int = 0
    suppressed: int = 0
    sent: int = 0
    hard_bounced: int = 0
    soft_bounced: int = 0
    delivery_confirmed: int = 0
    opened_unique: int = 0
    opened_total: int = 0
    clicked_unique: int = 0
    clicked_total: int = 0
    opened_delivered: int = 0  # unique opens among delivered messages (A/B successes)
    clicked_delivered: int = 0
    unsubscribed: int = 0
    complained: int = 0
    links: list[LinkRow] = field(default_factory=list)
    series: list[Bucket] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return max(0, self.sent - self.hard_bounced)

    @property
    def bounced(self) -> int:
        return self.hard_bounced + self.soft_bounced

    def rate(self, name: str) -> float | None:
        """A figure as a share of delivered (bounces: of sent); None when there is nothing to divide by."""
        base = self.sent if name in ("hard_bounced", "soft_bounced", "bounced") else self.delivered
        return getattr(self, name) / base if base else None

    @property
    def click_to_open(self) -> float | None:
        return self.clicked_unique / self.opened_unique if self.opened_unique else None


def report_for(messages_qs: QuerySet[Message], *, bucket: str = "day") -> Report:
    """The report of the messages `messages_qs` selects (a filter of Message.objects, not a slice
    or union): totals, a series per `bucket` ("hour" or "day", in TIME_ZONE) and the per-link table."""
    if bucket not in BUCKETS:
        raise ValueError(f"bucket must be one of {', '.join(BUCKETS)}, not {bucket!r}")
    messages = messages_qs.order_by()
    engagement = MessageEngagement.objects.filter(message__in=messages.values("pk")).order_by()
    report = Report(bucket=bucket, links=_links(engagement), series=_series(messages, engagement, BUCKETS[bucket]))
    totals = {**_message_totals(messages), **_engagement_totals(engagement)}
    implied = totals.pop("opened_implied")
    for name, value in totals.items():
        setattr(report, name, value)
    report.opened_total += implied
    return report


def _opened_without_row() -> Any:
    """Messages opened (`opened_at`) with no open row: a click implied the open, or the open came
    before engagement rows existed. Each counts one open in "Opens (total)"."""
    rows = MessageEngagement.objects.filter(message=OuterRef("pk"), kind=EngagementKind.OPEN)
    return Q(opened_at__isnull=False) & ~Exists(rows)


# Delivered: sent and not hard bounced (the same messages as Report.delivered counts).
_delivered = Q(sent_at__isnull=False, bounced_at__isnull=True)


def _message_totals(messages: QuerySet[Message]) -> dict[str, int]:
    pending = (MessageStatus.QUEUED, MessageStatus.DEFERRED, MessageStatus.SENDING)
    totals = messages.aggregate(
        messages=Count("pk"),
        pending=Count("pk", filter=Q(status__in=pending)),
        failed=Count("pk", filter=Q(status=MessageStatus.FAILED, bounced_at__isnull=True)),
        suppressed=Count("pk", filter=Q(status=MessageStatus.SUPPRESSED)),
        sent=Count("pk", filter=Q(sent_at__isnull=False) | Q(bounced_at__isnull=False)),
        hard_bounced=Count("pk", filter=Q(bounced_at__isnull=False)),
        delivery_confirmed=Count("pk", filter=Q(delivered_at__isnull=False)),
        opened_unique=Count("pk", filter=Q(opened_at__isnull=False)),
        clicked_unique=Count("pk", filter=Q(clicked_at__isnull=False)),
        opened_delivered=Count("pk", filter=_delivered & Q(opened_at__isnull=False)),
        clicked_delivered=Count("pk", filter=_delivered & Q(clicked_at__isnull=False)),
        opened_implied=Count("pk", filter=_opened_without_row()),
        complained=Count("pk", filter=Q(complained_at__isnull=False)),
    )
    return {name: int(value or 0) for name, value in totals.items()}


def _engagement_totals(engagement: QuerySet[MessageEngagement]) -> dict[str, int]:
    totals = engagement.aggregate(
        opened_total=Count("pk", filter=Q(kind=EngagementKind.OPEN)),
        clicked_total=Count("pk", filter=Q(kind=EngagementKind.CLICK)),
        # Per message: one contact unsubscribing twice (or leaving three topics) is one unsubscribe.
        unsubscribed=Count("message", distinct=True, filter=Q(kind=EngagementKind.UNSUBSCRIBE)),
        soft_bounced=Count("message", distinct=True, filter=Q(kind=EngagementKind.SOFT_BOUNCE)),
    )
    return {name: int(value or 0) for name, value in totals.items()}


def _links(engagement: QuerySet[MessageEngagement]) -> list[LinkRow]:
    rows = list(engagement.filter(kind=EngagementKind.CLICK).values("link_index")
                .annotate(clicks=Count("pk"), unique_clicks=Count("message", distinct=True), sample=Min("message"))
                .order_by("link_index"))
    links = dict(Message.objects.filter(pk__in={r["sample"] for r in rows}).values_list("pk", "links"))
    return [LinkRow(index=r["link_index"], url=_link_url(links.get(r["sample"]), r["link_index"]),
                    clicks=r["clicks"], unique_clicks=r["unique_clicks"]) for r in rows]


def _link_url(links: Any, index: int) -> str:
    return str(links[index]) if isinstance(links, list) and 0 <= index < len(links) else ""


def _series(messages: QuerySet[Message], engagement: QuerySet[MessageEngagement], trunc: Any) -> list[Bucket]:
    parts: list[Any] = [messages.annotate(at=_as_datetime(column)).filter(at__isnull=False)
             .annotate(series=Value(name), bucket=trunc("at")).values("series", "bucket")
             .annotate(n=Count("pk")).values_list("series", "bucket", "n").order_by()
             for name, column in _MESSAGE_SERIES.items()]
    # An open without a row counts in opened_total at its opened_at (see the module docstring).
    parts.append(messages.filter(_opened_without_row()).annotate(series=Value("opened_total"),
                                                                  bucket=trunc("opened_at"))
                 .values("series", "bucket").annotate(n=Count("pk")).values_list("series", "bucket", "n").order_by())
    rows: list[tuple[str, dt.datetime, int]] = list(parts[0].union(*parts[1:], all=True))
    # Opens and clicks per bucket are hits; unsubscribes and soft bounces are messages, as in the totals.
    rows += [(_ENGAGEMENT_SERIES[EngagementKind(kind)], at, n if kind in _HITS else messages_n)
             for kind, at, n, messages_n in
             engagement.annotate(bucket=trunc("occurred_at")).values("kind", "bucket")
             .annotate(n=Count("pk"), messages_n=Count("message", distinct=True))
             .values_list("kind", "bucket", "n", "messages_n").order_by()]
    buckets: dict[dt.datetime, Bucket] = {}
    for name, at, n in rows:  # opened_total may come twice per bucket: rows and implied opens
        counts = buckets.setdefault(at, Bucket(at)).counts
        counts[name] = counts.get(name, 0) + n
    return [buckets[at] for at in sorted(buckets)]


def _as_datetime(column: Any) -> Any:
    return F(column) if isinstance(column, str) else column


# --- CSV ----------------------------------------------------------------------------------------

TOTAL_ROWS = (("messages", "Messages"), ("pending", "Pending"), ("suppressed", "Suppressed"), ("failed", "Failed"),
              ("sent", "Sent"), ("delivered", "Delivered"), ("delivery_confirmed", "Delivery confirmed"),
              ("hard_bounced", "Hard bounced"), ("soft_bounced", "Soft bounced"),
              ("opened_unique", "Opened (unique)"), ("opened_total", "Opens (total)"),
              ("clicked_unique", "Clicked (unique)"), ("clicked_total", "Clicks (total)"),
              ("unsubscribed", "Unsubscribed"), ("complained", "Complained"))


def report_csv_rows(report: Report, *, title: str = "") -> Iterable[list[str]]:
    """The report as CSV rows: totals, then the per-link table, then the series. Every cell goes
    through core.utils.spreadsheet_safe (a link or title starting with = is text, not a formula)."""
    rows: list[list[Any]] = [["report", title], [], ["figure", "count", "rate"]]
    for name, label in TOTAL_ROWS:
        rate = report.rate(name) if name not in ("messages", "pending", "suppressed", "failed", "sent") else None
        rows.append([label, getattr(report, name), "" if rate is None else f"{rate:.4f}"])
    rows += [[], ["link", "url", "clicks", "unique clicks"]]
    rows += [[link.index, link.url, link.clicks, link.unique_clicks] for link in report.links]
    rows += [[], [report.bucket, *SERIES]]
    rows += [[b.start.isoformat(), *(b[name] for name in SERIES)] for b in report.series]
    return ([spreadsheet_safe(cell) for cell in row] for row in rows)


def report_csv(report: Report, *, title: str = "") -> str:
    out = io.StringIO()
    csv.writer(out).writerows(report_csv_rows(report, title=title))
    return out.getvalue()


# --- A/B comparison -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    successes: int  # e.g. unique opens or unique clicks
    trials: int  # e.g. delivered

    @property
    def rate(self) -> float | None:
        return self.successes / self.trials if self.trials else None


@dataclass(frozen=True)
class VariantResult:
    name: str
    successes: int
    trials: int
    rate: float | None
    difference: float | None  # the leader's rate minus this one's (0 for the leader)
    z: float | None
    p_value: float | None  # two-sided, Bonferroni-adjusted for the comparisons made
    confidence: float | None  # 1 - p_value: how sure we are the leader's rate is not this one's


@dataclass(frozen=True)
class AbComparison:
    leader: str | None
    results: list[VariantResult]
    method: str = "two-proportion z-test (pooled), two-sided, Bonferroni-adjusted against the leader"


def variant_from_report(name: str, report: Report, *, metric: str = "opened_unique") -> Variant:
    """A variant's successes (`opened_unique` or `clicked_unique`) out of its delivered messages,
    counted among those delivered messages only: one opened and then hard-bounced is in neither,
    so successes never exceed trials (ab_compare refuses that)."""
    if metric not in ("opened_unique", "clicked_unique"):
        raise ValueError(f"metric must be opened_unique or clicked_unique, not {metric!r}")
    successes = report.opened_delivered if metric == "opened_unique" else report.clicked_delivered
    return Variant(name=name, successes=successes, trials=report.delivered)


def ab_compare(variants: Sequence[Variant]) -> AbComparison:
    """The leader (highest rate) and, for every other variant, the difference and a confidence
    that the two rates really differ.

    A two-proportion z-test, not a Bayesian probability: it is closed-form (math.erfc, no SciPy),
    deterministic, and the "confidence" marketers know from Mautic and classic A/B tools; the
    broadcasts' winner rule compares it with a threshold. With 3 or 4 variants the leader is
    compared with each of the others, so each p-value is multiplied by the number of comparisons
    (Bonferroni): picking the best of four must not look surer than it is. Variants with no trials
    get no rate and take no part."""
    if len(variants) < 2:
        raise ValueError("an A/B comparison needs at least two variants")
    for v in variants:
        if v.trials < 0 or v.successes < 0 or v.successes > v.trials:
            raise ValueError(f"variant {v.name!r}: successes must be between 0 and trials "
                             f"(got {v.successes} of {v.trials})")
    rated = [v for v in variants if v.trials]
    if not rated:
        return AbComparison(None, [VariantResult(v.name, v.successes, v.trials, None, None, None, None, None)
                                   for v in variants])
    leader = max(rated, key=lambda v: (v.successes / v.trials, v.trials))
    comparisons = max(1, len(rated) - 1)
    results = []
    for v in variants:
        if v is leader or not v.trials:
            results.append(VariantResult(v.name, v.successes, v.trials, v.rate, 0.0 if v is leader else None,
                                         None, None, None))
            continue
        z = _z(leader, v)
        p = min(1.0, math.erfc(abs(z) / math.sqrt(2)) * comparisons)
        results.append(VariantResult(v.name, v.successes, v.trials, v.rate,
                                     leader.successes / leader.trials - v.successes / v.trials, z, p, 1.0 - p))
    return AbComparison(leader.name, results)


def _z(a: Variant, b: Variant) -> float:
    pooled = (a.successes + b.successes) / (a.trials + b.trials)
    se = math.sqrt(pooled * (1 - pooled) * (1 / a.trials + 1 / b.trials))
    if se == 0:
        return 0.0  # both 0% or both 100%: no evidence of a difference
    return (a.successes / a.trials - b.successes / b.trials) / se
