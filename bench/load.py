"""Benchmark: the event API under sustained concurrent load, and that no accepted event is lost (issue #8).

    flock /tmp/leadflow-bench.lock .venv/bin/python bench/load.py [--seconds 60] [--runs 3] [--clients 8] [--batch 50]

Starts a throwaway PostgreSQL cluster (fsync on), an embedded Redis and gunicorn (3 workers), then
`--runs` times (default 3) runs `--clients` threads, each posting batches of `--batch` events (each
with an idempotency key, emails from a pool of 20,000 contacts) to POST /api/v1/events over a
kept-alive session, back to back, for `--seconds`. Some requests are retries: every 10th request of
a client re-sends its previous batch, and every 10th (offset 5) re-sends another client's latest
batch, possibly while that client's own request is still in flight. No worker runs: the API
(validation, idempotent insert, contact upsert, enqueue after commit) is measured alone. After each
run the events table is counted: every key a 202 answered must be one row (none lost, none twice),
accepted once, and every other item a duplicate.

Prints one JSON object: per run requests/s, events/s accepted, items/s answered (accepted +
duplicates), P50/P99/max request latency, errors by kind, keys answered vs stored; the median, min
and max of the runs.
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
RETRY_EVERY = 10  # every 10th request of a client re-sends its previous batch (a retry after a timeout)
SHARE_EVERY = 10  # ... and every 10th (offset 5) another client's last batch: the same keys at the same time


class Load:
    """The clients' shared tally (under a lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.accepted = 0
        self.duplicates = 0
        self.items_answered = 0  # items of 202 answers: each is accepted or a duplicate
        self.retries = 0
        self.keys_answered: set[str] = set()  # keys some 202 answer covered: each must be stored once
        self.errors: Counter[str] = Counter()
        self.last_batch: dict[int, str] = {}

    def record(self, latency: float, *, accepted: int = 0, duplicates: int = 0, keys: list[str] | None = None,
               error: str | None = None) -> None:
        with self.lock:
            self.latencies.append(latency)
            self.accepted += accepted
            self.duplicates += duplicates
            if keys is not None:
                self.items_answered += len(keys)
                self.keys_answered.update(keys)
            if error:
                self.errors[error] += 1


def next_body(n: int, run: int, seq: int, rng: random.Random, args: argparse.Namespace, load: Load) -> str:
    """A new batch, or (every RETRY_EVERY-th request) the client's previous one again, or (offset by
    half) another client's previous one: the repeats must come back as duplicates, never stored twice."""
    number = seq // args.batch
    with load.lock:
        if number % RETRY_EVERY == RETRY_EVERY - 1 and n in load.last_batch:
            load.retries += 1
            return load.last_batch[n]
        other = (n + 1) % args.clients
        if number % SHARE_EVERY == SHARE_EVERY // 2 and other in load.last_batch:
            load.retries += 1
            return load.last_batch[other]
    events = [{"email": f"lead{rng.randrange(args.contacts)}@load.example", "type": rng.choice(EVENT_TYPES),
               "properties": {"page": f"/p/{rng.randint(1, 50)}"}, "idempotency_key": f"r{run}-c{n}-{seq + i}"}
              for i in range(args.batch)]
    body = json.dumps({"events": events})
    with load.lock:
        load.last_batch[n] = body
    return body


def client(n: int, run: int, url: str, headers: dict[str, str], args: argparse.Namespace, until: float,
           load: Load) -> None:
    rng = random.Random(run * 1000 + n)  # noqa: S311  test data
    seq = 0
    with requests.Session() as http:
        while time.monotonic() < until:
            body = next_body(n, run, seq, rng, args, load)
            seq += args.batch
            keys = [event["idempotency_key"] for event in json.loads(body)["events"]]
            started = time.perf_counter()
            try:
                response = http.post(url, data=body, headers=headers, timeout=60)
            except requests.RequestException as exc:
                load.record(time.perf_counter() - started, error=type(exc).__name__)
                continue
            latency = time.perf_counter() - started
            if response.status_code != 202:
                load.record(latency, error=f"http_{response.status_code}")
                continue
            answer = response.json()
            load.record(latency, accepted=int(answer.get("accepted", 0)), duplicates=int(answer.get("duplicates", 0)),
                        keys=keys)


def stored(db_url: str, run: int) -> tuple[int, int]:
    """(event rows of this run, idempotency keys stored more than once)."""
    prefix = f"r{run}-%"
    rows = sql(db_url, "SELECT count(*) FROM contacts_event WHERE source = %s AND idempotency_key LIKE %s",
               SOURCE, prefix)[0][0]
    twice = sql(db_url, "SELECT count(*) FROM (SELECT idempotency_key FROM contacts_event WHERE source = %s "
                        "AND idempotency_key LIKE %s GROUP BY idempotency_key HAVING count(*) > 1) t",
                SOURCE, prefix)[0][0]
    return int(rows), int(twice)


def one_run(run: int, url: str, headers: dict[str, str], args: argparse.Namespace, db_url: str) -> dict[str, Any]:
    load = Load()
    until = time.monotonic() + args.seconds
    threads = [threading.Thread(target=client, args=(n, run, url, headers, args, until, load))
               for n in range(args.clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    rows, twice = stored(db_url, run)
    figures = {
        "run": run + 1,
        "requests": len(load.latencies),
        "retried_requests": load.retries,
        "requests_per_second": round(len(load.latencies) / elapsed, 1),
        "events_accepted": load.accepted,
        "events_per_second": round(load.accepted / elapsed),
        "items_per_second": round(load.items_answered / elapsed),  # accepted + duplicates
        "latency_seconds": {"p50": round(percentile(load.latencies, 0.50), 4),
                            "p99": round(percentile(load.latencies, 0.99), 4),
                            "max": round(max(load.latencies, default=0.0), 4),
                            "mean": round(statistics.fmean(load.latencies), 4) if load.latencies else 0.0},
        "errors": dict(load.errors),
        "duplicates_reported": load.duplicates,
        "distinct_keys_answered": len(load.keys_answered),
        "events_stored": rows,
        "events_stored_twice": twice,
        "lost": len(load.keys_answered) - rows,
    }
    # Every key a 202 covered is stored exactly once, accepted exactly once (the rest of the items
    # were duplicates), and nothing failed.
    figures["no_request_lost"] = (rows == len(load.keys_answered) == load.accepted and twice == 0
                                  and load.accepted + load.duplicates == load.items_answered and not load.errors)
    print(json.dumps(figures), file=sys.stderr, flush=True)
    return figures


def spread(values: list[float], digits: int = 4) -> dict[str, float]:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3, help="back to back on the same server; figures are medians")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--contacts", type=int, default=20_000, help="distinct emails the events come from")
    parser.add_argument("--gunicorn-workers", type=int, default=3)
    args = parser.parse_args()

    services = Services()
    tmp, env = services.tmp, services.env
    port = free_port()
    result: dict[str, Any] = {"benchmark": "load", "db": "postgresql (fsync on)", "seconds": args.seconds,
                              "runs": args.runs, "clients": args.clients, "batch": args.batch,
                              "gunicorn_workers": args.gunicorn_workers,
                              "retries": f"every {RETRY_EVERY}th request of a client repeats its previous batch, "
                                         f"every {SHARE_EVERY}th (offset {SHARE_EVERY // 2}) another client's"}
    runs: list[dict[str, Any]] = []
    try:
        manage(env, "migrate", "--noinput", "-v0")
        key = manage(env, "create_api_key", "load", "--rate-limit", "100000000").split()[-1]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        url = f"http://127.0.0.1:{port}/api/v1/events"
        gunicorn = [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application", "-b",
                    f"127.0.0.1:{port}", "-w", str(args.gunicorn_workers), "--log-level", "warning"]
        with process(gunicorn, env, tmp / "gunicorn.log"):
            wait_http(port, tmp / "gunicorn.log")
            for run in range(args.runs):
                runs.append(one_run(run, url, headers, args, services.db_url))
    finally:
        services.stop()

    result.update({
        "events_per_second": spread([r["events_per_second"] for r in runs], 0),
        "items_per_second": spread([r["items_per_second"] for r in runs], 0),
        "requests_per_second": spread([r["requests_per_second"] for r in runs], 1),
        "latency_p50_seconds": spread([r["latency_seconds"]["p50"] for r in runs]),
        "latency_p99_seconds": spread([r["latency_seconds"]["p99"] for r in runs]),
        "no_request_lost": all(r["no_request_lost"] for r in runs),
        "each_run": runs,
    })
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
