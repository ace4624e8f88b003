"""Benchmark: segments and scoring at scale (issue #4).

    .venv/bin/python bench/segments.py [--contacts 1000000] [--events 5000000]
    .venv/bin/python bench/segments.py --save-snapshot /tmp/leadflow-segments-snap   # keep the filled database
    .venv/bin/python bench/segments.py --from-snapshot /tmp/leadflow-segments-snap   # iterate without the fill

A snapshot is a copy of the cluster's data directory right after the fill (contacts and events,
before any rule or segment); --from-snapshot starts a throwaway cluster on a copy of it and runs
the migrations the snapshot does not have yet. The figure of record is a run from scratch.

Starts a throwaway PostgreSQL cluster (production-like settings, fsync on), fills it with
generated contacts and events in SQL (generate_series), then, `--runs` times (default 3) on that
fill:
- a full score recompute with 10 behaviour rules into an empty ledger          target <= 30 s
- a second full recompute, rules and events unchanged                          target <= 30 s
- the count of a 3-condition segment (field + score + event within 30 days)   target <= 1 s
- a full membership refresh of a new segment with that definition             target <= 15 s
(recompute first: the segment filters on score). Each recompute and the refresh is timed together
with the CHECKPOINT that writes out its dirty pages (the checkpoint's share is printed too). Before
each run the ledger and scores are emptied (TRUNCATE, CHECKPOINT); before the second recompute the
ledger is vacuumed as autovacuum would have done by then (untimed, printed). Prints one JSON object:
per target the median, min and max of the runs and whether the median meets it, then every run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.testing.pgcluster import PRODUCTION_SETTINGS, PostgresCluster  # noqa: E402

TARGETS = {"score_recompute_first_seconds": 30.0, "score_recompute_second_seconds": 30.0,
           "segment_count_seconds": 1.0, "segment_refresh_seconds": 15.0}
EVENT_TYPES = ["page_view", "email_open", "email_click", "form_submit", "webinar_registered",
               "webinar_attended", "demo_booked", "trial_started", "pricing_view", "doc_view"]


def fill(cursor: object, contacts: int, events: int) -> dict[str, float]:
    timings = {}
    started = time.perf_counter()
    cursor.execute(  # type: ignore[attr-defined]
        """
        INSERT INTO contacts_contact (email, first_name, last_name, company, job_title, phone, country,
            lifecycle_stage, attributes, consent_status, consent_source, is_test, created_at, updated_at)
        SELECT 'c' || i || '@x' || (i %% 997) || '.example', 'First' || (i %% 300), 'Last' || (i %% 500),
               'Company ' || (i %% 5000), 'Title', '', (ARRAY['US','GB','DE','FR','NL'])[1 + i %% 5],
               (ARRAY['subscriber','lead','lead','mql','customer'])[1 + i %% 5],
               jsonb_build_object('plan', (ARRAY['free','team','enterprise'])[1 + i %% 3], 'employees', i %% 5000),
               'granted', 'bench', false, now() - (i %% 365) * interval '1 day', now()
        FROM generate_series(1, %s) AS i
        """,
        [contacts],
    )
    timings["insert_contacts"] = time.perf_counter() - started
    started = time.perf_counter()
    cursor.execute(  # type: ignore[attr-defined]
        """
        INSERT INTO contacts_event (contact_id, event_type, properties, occurred_at, received_at, source,
            processed_at)
        SELECT c.min_id + (hashint4(i) & 2147483647) %% %s,
               (%s::text[])[1 + (hashint4(i + 7) & 2147483647) %% 10],
               jsonb_build_object('page', '/p/' || (i %% 50)),
               now() - ((hashint4(i + 13) & 2147483647) %% (90 * 86400)) * interval '1 second',
               now(), 'bench', now()
        FROM generate_series(1, %s) AS i, (SELECT min(id) AS min_id FROM contacts_contact) AS c
        """,
        [contacts, EVENT_TYPES, events],
    )
    timings["insert_events"] = time.perf_counter() - started
    started = time.perf_counter()
    # What autovacuum does to a table soon after a bulk load (and keeps doing in steady state):
    # statistics, hint bits and the visibility map, so index-only scans need no heap visits.
    cursor.execute("VACUUM ANALYZE")  # type: ignore[attr-defined]
    timings["vacuum_analyze"] = time.perf_counter() - started
    return {k: round(v, 1) for k, v in timings.items()}


def snapshot_save(cluster: PostgresCluster, target: Path) -> None:
    """Stop the cluster cleanly, copy its data directory to `target`, start it again."""
    cluster._pg("pg_ctl", "-D", str(cluster.data), "-m", "fast", "-w", "stop")
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["cp", "-a", str(cluster.data), str(target)], check=True)
    _cluster_start(cluster)


def snapshot_start(source: Path) -> PostgresCluster:
    """A throwaway cluster on a copy of a saved data directory (same settings as a fresh one)."""
    cluster = PostgresCluster(durable=True)
    subprocess.run(["cp", "-a", str(source), str(cluster.data)], check=True)
    _cluster_start(cluster)
    return cluster


def _cluster_start(cluster: PostgresCluster) -> None:
    options = (f"-p {cluster.port} -k {cluster.root} -c listen_addresses=127.0.0.1 -c max_connections=100 "
               f"{PRODUCTION_SETTINGS}")
    cluster._pg("pg_ctl", "-D", str(cluster.data), "-o", options, "-l", str(cluster.root / "server.log"), "-w",
                "start")


def timed(step: Callable[[], object], cursor_factory: Callable[[], Any]) -> tuple[float, float, object]:
    """Seconds of `step` plus the CHECKPOINT that writes out the dirty pages it left (the user waits
    for both: written back later they slow whatever runs next), the CHECKPOINT's share, and the result."""
    started = time.perf_counter()
    result = step()
    flushed = time.perf_counter()
    with cursor_factory() as cursor:
        cursor.execute("CHECKPOINT")
    ended = time.perf_counter()
    return ended - started, ended - flushed, result


def spread(values: list[float], digits: int = 2) -> dict[str, float]:
    """Median, min and max of the runs."""
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=3, help="rounds on the same fill; figures are medians")
    parser.add_argument("--save-snapshot", type=Path, help="after the fill, keep a copy of the database here")
    parser.add_argument("--from-snapshot", type=Path, help="start from a saved fill instead of filling")
    args = parser.parse_args()
    cluster = snapshot_start(args.from_snapshot) if args.from_snapshot else PostgresCluster(durable=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
    os.environ.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="true", ENV_FILE="", VAR_DIR=str(tmp),
                      DATABASE_URL=cluster.url, LOG_LEVEL="WARNING")
    runs: list[dict[str, Any]] = []
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        from scoring.models import ScoringRule

        setup: dict[str, float | str] = {"from_snapshot": str(args.from_snapshot)}
        if not args.from_snapshot:
            call_command("migrate", verbosity=0)
            with connection.cursor() as cursor:
                setup = dict(fill(cursor, args.contacts, args.events))
            if args.save_snapshot:
                connection.close()
                snapshot_save(cluster, args.save_snapshot)
        started = time.perf_counter()
        call_command("migrate", verbosity=0)  # a snapshot may predate the newest migrations
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
        setup["migrate_analyze"] = round(time.perf_counter() - started, 1)
        for i, event_type in enumerate(EVENT_TYPES):
            ScoringRule.objects.create(name=f"rule {event_type}", kind="behaviour", event_type=event_type,
                                       points=(i % 5) + 1, repeatable=i % 2 == 0,
                                       cap_points=30 if i % 3 == 0 else None,
                                       cap_window_days=30 if i % 3 == 0 else None,
                                       half_life_days=60 if i % 4 == 0 else None)
        definition = {"all": [
            {"field": "lifecycle_stage", "op": "eq", "value": "lead"},
            {"field": "score", "op": "gte", "value": 10},
            {"event": "pricing_view", "did": True, "within_days": 30},
        ]}
        for run in range(args.runs):
            runs.append(one_run(run, definition))
    finally:
        cluster.stop()

    figures = {
        "score_recompute_first_seconds": spread([r["recompute_first"]["seconds"] for r in runs]),
        "score_recompute_second_seconds": spread([r["recompute_second"]["seconds"] for r in runs]),
        "segment_count_seconds": spread([r["segment_count_seconds"] for r in runs], 3),
        "segment_refresh_seconds": spread([r["segment_refresh"]["seconds"] for r in runs]),
    }
    checks = {k: {"median": v["median"], "min": v["min"], "max": v["max"], "target": TARGETS[k],
                  "met": v["median"] <= TARGETS[k]} for k, v in figures.items()}
    print(json.dumps({
        "benchmark": "segments", "db": "postgresql", "contacts": args.contacts, "events": args.events,
        "runs": args.runs, "setup_seconds": setup, "targets": checks,
        "all_met": all(c["met"] for c in checks.values()), "each_run": runs,
    }, indent=2))


def one_run(run: int, definition: dict[str, Any]) -> dict[str, Any]:
    """One round on the filled database: a first recompute into an empty ledger, a second with the
    rules unchanged, then the segment count and a refresh of a new segment; each timed with the
    CHECKPOINT of what it wrote."""
    from django.db import connection  # after django.setup()

    from contacts.models import Contact, ContactScore, Segment
    from contacts.segments.compiler import compile_filter
    from contacts.segments.services import segment_refresh
    from scoring.models import ScoreEntry
    from scoring.services import scores_recompute_all

    figures: dict[str, Any] = {"run": run + 1}
    started = time.perf_counter()
    with connection.cursor() as cursor:  # setup, untimed: an empty ledger and no scores, written out
        cursor.execute(f"TRUNCATE {ScoreEntry._meta.db_table}, {ContactScore._meta.db_table}")
        cursor.execute("CHECKPOINT")
    figures["reset_seconds"] = round(time.perf_counter() - started, 1)
    for name in ("first", "second"):
        if name == "second":
            # What autovacuum does to a freshly written table long before anyone edits a rule again:
            # hint bits and the visibility map; without it the second recompute's read of the ledger
            # would be the one to dirty every page. Untimed, reported.
            started = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM ANALYZE {ScoreEntry._meta.db_table}")
                cursor.execute(f"VACUUM ANALYZE {ContactScore._meta.db_table}")
                cursor.execute("CHECKPOINT")
            figures["vacuum_before_second_seconds"] = round(time.perf_counter() - started, 1)
        phases: dict[str, float] = {}
        ledger: dict[str, int] = {}
        seconds, checkpoint, changed = timed(
            functools.partial(scores_recompute_all, timings=phases, ledger=ledger), connection.cursor)
        figures[f"recompute_{name}"] = {"seconds": round(seconds, 2), "checkpoint_seconds": round(checkpoint, 2),
                                        "phases_seconds": phases, "ledger_rows": ledger, "scores_changed": changed}
    segment = Segment.objects.create(name=f"Hot leads {run + 1}", definition=definition)
    started = time.perf_counter()
    figures["segment_members"] = Contact.objects.filter(compile_filter(definition)).count()
    figures["segment_count_seconds"] = round(time.perf_counter() - started, 3)
    seconds, checkpoint, refreshed = timed(functools.partial(segment_refresh, segment=segment), connection.cursor)
    entered, left = cast(tuple[int, int], refreshed)
    figures["segment_refresh"] = {"seconds": round(seconds, 2), "checkpoint_seconds": round(checkpoint, 2),
                                  "entered": entered, "left": left}
    print(json.dumps(figures), file=sys.stderr, flush=True)  # progress: a full run takes minutes
    return figures


if __name__ == "__main__":
    main()
