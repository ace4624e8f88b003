"""Showing a campaigns.reports.Report: the reusable page part, its chart and its CSV export.

Any page with a report (a workflow email's: automation/email_reports.py; a broadcast's) does:

    context.update(report_context(report_for(messages, bucket=bucket), csv_url=..., title=...))
    {% include "campaigns/_report.html" %}    (and "campaigns/_ab.html" with `ab` for A/B results)

The chart is inline SVG drawn here (no script, no CDN, no build step); the CSV goes through
campaigns.reports.report_csv_rows, i.e. core.utils.spreadsheet_safe like every export.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Sequence
from typing import Any

from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from campaigns.reports import BUCKETS, AbComparison, Bucket, Report, report_csv_rows

CHART_SERIES = (("sent", "Sent", "#417690"), ("opened_unique", "Opened (unique)", "#2e7d32"),
                ("clicked_unique", "Clicked (unique)", "#ef6c00"), ("hard_bounced", "Hard bounced", "#b71c1c"),
                ("unsubscribed", "Unsubscribed", "#6a1b9a"), ("complained", "Complained", "#4e342e"))
MAX_FILLED_BUCKETS = 24 * 93  # a quarter of hours; past that the chart shows only the buckets with data


class BadReportParameter(ValueError):
    pass


def bucket_param(request: HttpRequest, default: str = "day") -> str:
    """The `bucket` query parameter; BadReportParameter names it and the choices."""
    bucket = request.GET.get("bucket", default)
    if bucket not in BUCKETS:
        raise BadReportParameter(f"bucket: expected one of {', '.join(BUCKETS)}, got {bucket[:20]!r}")
    return bucket


def report_context(report: Report, *, csv_url: str, title: str = "") -> dict[str, Any]:
    """What campaigns/_report.html needs."""
    totals = [(label, getattr(report, name), _rate(report, name)) for name, label in (
        ("sent", "Sent"), ("delivered", "Delivered"), ("hard_bounced", "Hard bounced"),
        ("soft_bounced", "Soft bounced"), ("opened_unique", "Opened (unique)"), ("opened_total", "Opens (total)"),
        ("clicked_unique", "Clicked (unique)"), ("clicked_total", "Clicks (total)"),
        ("unsubscribed", "Unsubscribed"), ("complained", "Complained"))]
    return {"report": report, "report_totals": totals, "report_title": title, "report_csv_url": csv_url,
            "report_chart": report_chart_svg(report), "report_buckets": list(BUCKETS)}


def _rate(report: Report, name: str) -> str:
    rate = report.rate(name) if name not in ("sent", "delivered", "opened_total", "clicked_total") else None
    return "" if rate is None else f"{rate:.1%}"


def report_csv_response(report: Report, *, filename: str, title: str = "") -> StreamingHttpResponse:
    writer = csv.writer(_Echo())
    rows = (writer.writerow(row) for row in report_csv_rows(report, title=title))
    response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
    safe_name = "".join(c if c.isalnum() or c in "-_." else "-" for c in filename)[:100]
    response["Content-Disposition"] = f'attachment; filename="{safe_name}-{timezone.now():%Y%m%d-%H%M}.csv"'
    return response


class _Echo:
    def write(self, value: str) -> str:
        return value


# --- The chart ----------------------------------------------------------------------------------

WIDTH, HEIGHT, LEFT, BOTTOM, TOP, RIGHT = 760, 240, 48, 28, 12, 12


def filled_series(report: Report) -> list[Bucket]:
    """The report's buckets with the empty ones between them, so time runs evenly along the x axis."""
    if len(report.series) < 2:
        return list(report.series)
    first, last = report.series[0].start, report.series[-1].start
    have = {b.start: b for b in report.series}
    out: list[Bucket] = []
    at = first
    while at <= last and len(out) <= MAX_FILLED_BUCKETS:
        out.append(have.get(at) or Bucket(at))
        at = _next_bucket(at, report.bucket)
    return out if len(out) <= MAX_FILLED_BUCKETS else list(report.series)


def _next_bucket(at: dt.datetime, bucket: str) -> dt.datetime:
    if bucket == "day":  # wall-clock midnight to midnight (a DST day is 23 or 25 hours)
        return (at + dt.timedelta(days=1)).replace(tzinfo=at.tzinfo)
    return (at.astimezone(dt.UTC) + dt.timedelta(hours=1)).astimezone(at.tzinfo)


def report_chart_svg(report: Report, series: Sequence[tuple[str, str, str]] = CHART_SERIES) -> SafeString:
    buckets = filled_series(report)
    if not buckets:
        return mark_safe('<p class="report-chart-empty">Nothing sent yet.</p>')  # noqa: S308  a constant
    top = max([1, *(b[name] for b in buckets for name, _, _ in series)])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(1, len(buckets) - 1)

    def x(i: int) -> float:
        return LEFT + (i * step if len(buckets) > 1 else plot_w / 2)

    def y(value: int) -> float:
        return TOP + plot_h - value / top * plot_h

    lines = []
    for name, label, colour in series:
        if not any(b[name] for b in buckets):
            continue
        points = " ".join(f"{x(i):.1f},{y(b[name]):.1f}" for i, b in enumerate(buckets))
        dots = format_html_join("", '<circle cx="{}" cy="{}" r="2.5"><title>{} {}: {}</title></circle>',
                                ((f"{x(i):.1f}", f"{y(b[name]):.1f}", _label(b.start, report.bucket), label, b[name])
                                 for i, b in enumerate(buckets) if b[name]))
        lines.append(format_html('<g class="series series-{}" stroke="{}" fill="{}"><polyline points="{}" fill="none" '
                                 'stroke-width="2"/>{}</g>', name, colour, colour, points, dots))
    legend = format_html_join("", '<span class="legend-{}"><i style="background:{}"></i>{}</span>',
                              ((name, colour, label) for name, label, colour in series
                               if any(b[name] for b in buckets)))
    axes = format_html(
        '<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/>'
        '<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="#999"/>'
        '<text x="{lt}" y="{tt}" text-anchor="end">{top}</text><text x="{lt}" y="{b}" text-anchor="end">0</text>'
        '<text x="{l}" y="{xb}">{first}</text><text x="{r}" y="{xb}" text-anchor="end">{last}</text>',
        l=LEFT, r=WIDTH - RIGHT, t=TOP, b=TOP + plot_h, lt=LEFT - 6, tt=TOP + 8, xb=HEIGHT - 8, top=top,
        first=_label(buckets[0].start, report.bucket), last=_label(buckets[-1].start, report.bucket))
    return format_html(
        '<svg class="report-chart" role="img" aria-label="Sent, opens and clicks per {}" viewBox="0 0 {} {}" '
        'width="100%" style="max-width:{}px;font-size:11px">{}{}</svg><p class="report-legend">{}</p>',
        report.bucket, WIDTH, HEIGHT, WIDTH, axes, mark_safe("".join(lines)), legend)  # noqa: S308  parts escaped


def _label(at: dt.datetime, bucket: str) -> str:
    local = timezone.localtime(at)
    return local.strftime("%Y-%m-%d %H:00" if bucket == "hour" else "%Y-%m-%d")



def ab_context(ab: AbComparison, *, metric: str = "Unique opens") -> dict[str, Any]:
    """What campaigns/_ab.html needs: the comparison's rows as percentages."""
    rows = [{"name": r.name, "leader": r.name == ab.leader, "successes": r.successes, "trials": r.trials,
             "rate": _pct(r.rate), "difference": "" if r.name == ab.leader else _pct(r.difference, points=True),
             "confidence": _pct(r.confidence)} for r in ab.results]
    return {"ab": ab, "ab_rows": rows, "ab_metric": metric}


def _pct(value: float | None, *, points: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.1f} pp" if points else f"{value:.1%}"
