"""Benchmark: the event API under sustained concurrent load, and that no accepted event is lost (issue #8).

    flock /tmp/leadflow-bench.lock .venv/bin/python bench/load.py [--seconds 60] [--clients 8] [--batch 50]

Starts a throwaway PostgreSQL cluster (fsync on), an embedded Redis and gunicorn (3 workers), then
runs `--clients` threads, each posting batches of `--batch` events (unique idempotency keys, emails
from a pool of 20,000 contacts) to POST /api/v1/events over a kept-alive session, back to back, for
`--seconds`. No worker runs: the API (validation, idempotent insert, contact upsert, enqueue after
commit) is measured alone. Afterwards the events table is counted: every event a 202 accepted must
be a row (no request lost), and no event may be stored twice.

Prints one JSON object: requests/s, events/s, P50/P99/max request latency, errors by kind, accepted
vs stored.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Services, manage, percentile, process, sql, wait_http  # noqa: E402
from core.testing.pgcluster import free_port  # noqa: E402

EVENT_TYPES = ["page_view", "email_open", "form_submit", "webinar_registered", "pricing_view"]
SOURCE = "api:load"






class Load:
    """The clients' shared tally (under a lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.accepted = 0
        self.duplicates = 0
        self.sent_events = 0
        self.errors: Counter[str] = Counter()

    def record(self, latency: float, *, accepted: int = 0, duplicates: int = 0, sent: int = 0,
               error: str | None = None) -> None:
        with self.lock:
            self.latencies.append(latency)
            self.sent_events += sent
            self.accepted += accepted
            self.duplicates += duplicates
            if error:
                self.errors[error] += 1


def client(n: int, url: str, headers: dict[str, str], args: argparse.Namespace, until: float, load: Load) -> None:
    rng = random.Random(n)  # noqa: S311  test data
    seq = 0
    with requests.Session() as http:
        while time.monotonic() < until:
            events = []
            for _ in range(args.batch):
                seq += 1
                events.append({"email": f"lead{rng.randrange(args.contacts)}@load.example",
                               "type": rng.choice(EVENT_TYPES), "properties": {"page": f"/p/{rng.randint(1, 50)}"},
                               "idempotency_key": f"c{n}-{seq}"})
            body = json.dumps({"events": events})
            started = time.perf_counter()
            try:
                response = http.post(url, data=body, headers=headers, timeout=60)
            except requests.RequestException as exc:
                load.record(time.perf_counter() - started, sent=len(events), error=type(exc).__name__)
                continue
            latency = time.perf_counter() - started
            if response.status_code != 202:
                load.record(latency, sent=len(events), error=f"http_{response.status_code}")
                continue
            answer = response.json()
            load.record(latency, sent=len(events), accepted=int(answer.get("accepted", 0)),
                        duplicates=int(answer.get("duplicates", 0)))


def stored(db_url: str) -> tuple[int, int]:
    """(event rows from this run, idempotency keys stored more than once)."""
    rows = sql(db_url, "SELECT count(*) FROM contacts_event WHERE source = %s", SOURCE)[0][0]
    twice = sql(db_url, "SELECT count(*) FROM (SELECT idempotency_key FROM contacts_event WHERE source = %s "
                        "GROUP BY idempotency_key HAVING count(*) > 1) t", SOURCE)[0][0]
    return int(rows), int(twice)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--contacts", type=int, default=20_000, help="distinct emails the events come from")
    parser.add_argument("--gunicorn-workers", type=int, default=3)
    args = parser.parse_args()

    services = Services()
    tmp, env = services.tmp, services.env
    port = free_port()
    result: dict[str, Any] = {"benchmark": "load", "db": "postgresql (fsync on)", "seconds": args.seconds,
                              "clients": args.clients, "batch": args.batch,
                              "gunicorn_workers": args.gunicorn_workers}
    try:
        manage(env, "migrate", "--noinput", "-v0")
        key = manage(env, "create_api_key", "load", "--rate-limit", "100000000").split()[-1]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        url = f"http://127.0.0.1:{port}/api/v1/events"
        gunicorn = [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application", "-b",
                    f"127.0.0.1:{port}", "-w", str(args.gunicorn_workers), "--log-level", "warning"]
        with process(gunicorn, env, tmp / "gunicorn.log"):
            wait_http(port, tmp / "gunicorn.log")
            load = Load()
            until = time.monotonic() + args.seconds
            threads = [threading.Thread(target=client, args=(n, url, headers, args, until, load))
                       for n in range(args.clients)]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - started
        rows, twice = stored(services.db_url)
    finally:
        services.stop()

    requests_done = len(load.latencies)
    result.update({
        "requests": requests_done,
        "requests_per_second": round(requests_done / elapsed, 1),
        "events_sent": load.sent_events,
        "events_accepted": load.accepted,
        "events_per_second": round(load.accepted / elapsed),
        "latency_seconds": {"p50": round(percentile(load.latencies, 0.50), 4),
                            "p99": round(percentile(load.latencies, 0.99), 4),
                            "max": round(max(load.latencies, default=0.0), 4),
                            "mean": round(statistics.fmean(load.latencies), 4) if load.latencies else 0.0},
        "errors": dict(load.errors),
        "duplicates_reported": load.duplicates,
        "events_stored": rows,
        "events_stored_twice": twice,
        "lost": load.accepted - rows,
    })
    result["no_request_lost"] = rows == load.accepted and twice == 0 and not load.errors
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
