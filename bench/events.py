"""Benchmark: the event API and the event pipeline, end to end (issue #4).

    flock /tmp/leadflow-bench.lock .venv/bin/python bench/events.py \\
        [--events 50000] [--rate 200] [--seconds 20] [--runs 3]

Starts a throwaway PostgreSQL cluster (fsync on), an embedded Redis, gunicorn (3 workers) and,
for the processing phases, one RQ worker on the `events` queue, with 10 scoring rules and 20
segments live. Measures, `--runs` times (default 3) on the same server:
- accepted: events/s the API accepts in batches of 500 (4 concurrent clients), every event with
  an idempotency key                                                             target >= 5,000/s
- processed: events/s one worker scores, segments and marks processed           target >= 2,000/s
- latency: at --rate events/s (batches of 20 every 100 ms), P50/P99 from the client sending an
  event to its processing (scoring included) being committed                     target P99 <= 1 s
Prints one JSON object: per target the median, min and max of the runs and whether the median
meets it, then every run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Services, manage, process, sql, wait_http  # noqa: E402
from core.testing.pgcluster import free_port  # noqa: E402

TARGETS = {"accepted_per_second": 5000, "processed_per_second": 2000, "latency_p99_seconds": 1.0}
EVENT_TYPES = ["page_view", "email_open", "email_click", "form_submit", "webinar_registered",
               "webinar_attended", "demo_booked", "trial_started", "pricing_view", "doc_view"]
SETUP = f"""
from contacts.models import Segment
from scoring.models import GradeBand, ScoringRule
types = {EVENT_TYPES!r}
for i, t in enumerate(types):
    ScoringRule.objects.create(name="rule " + t, kind="behaviour", event_type=t, points=(i % 5) + 1,
                               repeatable=i % 2 == 0, cap_points=30 if i % 3 == 0 else None,
                               cap_window_days=30 if i % 3 == 0 else None)
GradeBand.objects.create(grade="A", min_score=40, is_mql=True)
GradeBand.objects.create(grade="B", min_score=15)
for i in range(20):
    t = types[i % 10]
    Segment.objects.create(name=f"segment {{i}}", definition={{"all": [
        {{"event": t, "did": True, "within_days": 30}},
        {{"field": "score", "op": "gte", "value": i}},
    ]}})
"""



def batch(size: int, rng: random.Random, contacts: int, *, stamp: bool = False, keys: str = "") -> dict[str, Any]:
    """`size` random events; with `keys`, each carries the idempotency key `<keys>-<i>` (as an
    integration that may retry sends them)."""
    events = []
    for i in range(size):
        props: dict[str, Any] = {"page": f"/p/{rng.randint(1, 50)}"}
        if stamp:
            props["sent_at"] = time.time()
        event = {"email": f"lead{rng.randrange(contacts)}@bench.example", "type": rng.choice(EVENT_TYPES),
                 "properties": props}
        if keys:
            event["idempotency_key"] = f"{keys}-{i}"
        events.append(event)
    return {"events": events}


def unprocessed(db_url: str) -> int:
    """Polled twice a second: a plain connection, not `manage.py shell` (whose Django start-up
    would take a core away from the worker being measured)."""
    return int(sql(db_url, "SELECT count(*) FROM contacts_event WHERE processed_at IS NULL")[0][0])


def accept_phase(run: int, url: str, headers: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """4 clients post `--events` events in batches of 500, every event with its own idempotency key."""
    batches = [json.dumps(batch(500, random.Random(run * 100_000 + i), args.contacts, keys=f"r{run}-b{i}"))
               for i in range(args.events // 500)]
    accepted = 0
    lock = threading.Lock()

    def client(chunk: list[str]) -> None:
        nonlocal accepted
        with requests.Session() as http:
            for body in chunk:
                response = http.post(url, data=body, headers=headers, timeout=60)
                response.raise_for_status()
                with lock:
                    accepted += response.json()["accepted"]

    threads = [threading.Thread(target=client, args=(batches[i::4],)) for i in range(4)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    return {"events": accepted, "sent": len(batches) * 500, "seconds": round(seconds, 2),
            "per_second": round(accepted / seconds)}


def process_phase(accepted: int, db_url: str) -> dict[str, Any]:
    """Until the worker has processed everything the accept phase stored."""
    started = time.perf_counter()
    while (left := unprocessed(db_url)) > 0:
        if time.perf_counter() - started > 600:
            raise SystemExit(f"{left} events still unprocessed after 600 s")
        time.sleep(0.5)
    seconds = time.perf_counter() - started
    return {"events": accepted, "seconds": round(seconds, 2), "per_second": round(accepted / seconds)}


def latency_phase(run: int, url: str, headers: dict[str, str], args: argparse.Namespace, env: dict[str, str],
                  db_url: str) -> dict[str, Any]:
    """--rate events/s (batches every 100 ms) for --seconds; P50/P99 from sending to processed."""
    rng = random.Random(99 + run)
    per_tick = max(1, args.rate // 10)
    sent = 0
    with requests.Session() as http:
        start = time.monotonic()
        for tick in range(args.seconds * 10):
            due = start + tick / 10
            time.sleep(max(0.0, due - time.monotonic()))
            body = batch(per_tick, rng, args.contacts, stamp=True, keys=f"lat{run}-{tick}")
            http.post(url, json=body, headers=headers, timeout=30).raise_for_status()
            sent += per_tick
    deadline = time.monotonic() + 60
    while unprocessed(db_url) > 0 and time.monotonic() < deadline:
        time.sleep(0.5)
    code = (  # run is an int
        "from django.db import connection; c = connection.cursor(); c.execute(\"SELECT "  # noqa: S608
        "percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM processed_at) - "
        "(properties->>'sent_at')::float), count(*) FROM contacts_event WHERE properties ? 'sent_at' "
        f"AND idempotency_key LIKE 'lat{run}-%'\"); "
        "import json; (p50, p99), n = c.fetchone(); print(json.dumps([p50, p99, n]))"
    )
    p50, p99, count = json.loads(manage(env, "shell", "-c", code).strip().splitlines()[-1])
    return {"rate_per_second": args.rate, "events": count, "sent": sent, "p50_seconds": round(p50, 3),
            "p99_seconds": round(p99, 3)}


def spread(values: list[float], digits: int = 3) -> dict[str, float]:
    """Median, min and max of the runs."""
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--contacts", type=int, default=20_000, help="distinct emails the events come from")
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="rounds of the three phases; figures are medians")
    args = parser.parse_args()

    services = Services()
    tmp, env = services.tmp, services.env
    port = free_port()
    result: dict[str, Any] = {"benchmark": "events", "db": "postgresql", "events": args.events, "runs": args.runs}
    runs: list[dict[str, Any]] = []
    try:
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "shell", "-c", SETUP)
        key = manage(env, "create_api_key", "bench", "--rate-limit", "1000000").split()[-1]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        url = f"http://127.0.0.1:{port}/api/v1/events"
        gunicorn = [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application", "-b",
                    f"127.0.0.1:{port}", "-w", "3", "--log-level", "warning"]
        with process(gunicorn, env, tmp / "gunicorn.log"):
            wait_http(port, tmp / "gunicorn.log")
            for run in range(args.runs):
                figures: dict[str, Any] = {"run": run + 1}
                # Phase 1: accept (no worker running, so the API is measured alone)
                figures["accepted"] = accept_phase(run, url, headers, args)
                # Phases 2 and 3: one worker drains what phase 1 queued, then keeps up with a steady rate
                worker = [sys.executable, str(ROOT / "manage.py"), "worker", "events"]
                with process(worker, env, tmp / f"worker-{run}.log"):
                    figures["processed"] = process_phase(figures["accepted"]["events"], services.db_url)
                    figures["latency"] = latency_phase(run, url, headers, args, env, services.db_url)
                print(json.dumps(figures), file=sys.stderr, flush=True)
                runs.append(figures)
    finally:
        services.stop()

    values = {"accepted_per_second": [r["accepted"]["per_second"] for r in runs],
              "processed_per_second": [r["processed"]["per_second"] for r in runs],
              "latency_p99_seconds": [r["latency"]["p99_seconds"] for r in runs]}
    result["targets"] = {}
    for name, series in values.items():
        figure = spread(series)
        met = figure["median"] <= TARGETS[name] if name.startswith("latency") else figure["median"] >= TARGETS[name]
        result["targets"][name] = {**figure, "target": TARGETS[name], "met": met}
    result["all_met"] = all(c["met"] for c in result["targets"].values())
    result["each_run"] = runs
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
