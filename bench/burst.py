"""Benchmark: a 2,000-registration webinar burst, from API acceptance to the SMTP sink (issue 18, item 1).

    flock /tmp/leadflow-bench.lock .venv/bin/python bench/burst.py [--db postgresql sqlite]
        [--workers 1 2] [--runs 3] [--events 2000]

What a new user does: a webinar platform posts --events `webinar_registered` events in four API
calls (through gunicorn, an API key from `manage.py create_api_key`), the production webinar
workflow of docs/workflows.md (its first step sends the welcome email, then waits 2 days, then
branches) sends through a sender allowed 1,000/s to an aiosmtpd sink in its own process, worked
off by the project's own `manage.py worker` (all queues, its defaults; one process, then two) with
`manage.py scheduler`. The stack is bench/workflows.py's (PostgreSQL: a throwaway cluster, fsync
on; the embedded default: SQLite and the embedded Redis).
In the same run, right after each pipeline run: the raw baseline, Django's SMTP backend sending
the same number of rendered welcome emails over one connection to the same sink.
Per run: accepted, delivered, duplicates; P50/P99 from API acceptance (the 202 of the call that
carried the event) to the sink (a message that never arrives counts as infinitely late);
pipeline rate = delivered / (last email at the sink - first call sent); ratio = pipeline rate /
raw rate. Per configuration: medians of --runs runs with min and max.
Targets (one worker): ratio >= 0.6 on PostgreSQL, >= 0.4 on SQLite; P99 <= 8 s on PostgreSQL;
two workers faster (pipeline rate) than one. Prints one JSON object; per-run lines on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import manage, percentile  # noqa: E402
from bench.workflows import Sent, Stack, arrivals, load, post_burst, seconds, spread, wait_for_emails  # noqa: E402

TARGETS: dict[str, dict[str, Any]] = {"postgresql": {"ratio": 0.6, "p99_seconds": 8.0},
                                      "sqlite": {"ratio": 0.4, "p99_seconds": None}}
# Issue 18, before: one worker, 2,000 events in four calls.
BASELINE = {"source": "issue 18 (before; one worker)",
            "sqlite": {"pipeline_per_second": 87, "raw_per_second": 362, "ratio": 0.24, "p99_seconds": 26.7},
            "postgresql": {"pipeline_per_second": 55, "raw_per_second": 374, "ratio": 0.15, "p99_seconds": 42.6}}

# Django's SMTP backend, one connection, the same welcome email rendered for the run's contacts.
RAW = """
import time
from django.core.mail import EmailMultiAlternatives, get_connection
from automation.engine import pinned_revision
from automation.models import WorkflowVersion
from campaigns.delivery import message_render
from campaigns.models import Message, SenderProfile
from contacts.models import Contact
sender = SenderProfile.objects.get(name="bench")
version = WorkflowVersion.objects.get(workflow__key="webinar-welcome", state="production")
revision = pinned_revision(version.pk, "webinar-welcome")
emails = []
for i, contact in enumerate(Contact.objects.with_scores().filter(email__startswith={prefix!r}).order_by("id")):
    m = Message(pk=10**9 + i, contact=contact, template=revision.template, revision=revision, sender=sender)
    message_render(m, sender)
    e = EmailMultiAlternatives(m.subject, m.text, sender.from_email, [m.to_email],
                               headers={{"X-Leadflow-Message": "raw"}})
    e.attach_alternative(m.html, "text/html")
    emails.append(e)
conn = get_connection("django.core.mail.backends.smtp.EmailBackend", host="127.0.0.1", port={port})
start = time.perf_counter()
conn.open()
sent = conn.send_messages(emails)
conn.close()
print("raw", sent, time.perf_counter() - start)
"""


def burst_run(stack: Stack, events: int, workers: int, run: str) -> dict[str, Any]:
    emails = [f"{run}-b{i}@bench.example" for i in range(events)]
    stack.contacts(emails)
    sent: list[Sent] = []
    with stack.run_processes(workers, run):
        post_burst(stack, emails, run, sent)  # four calls of 500 (bench/workflows.py BURST_CALL)
        wait_for_emails(stack, f"{run}-", sum(1 for s in sent if s.status == 202))
    got = arrivals(stack, f"{run}-")
    accepted = [s for s in sent if s.status == 202]
    # From acceptance: the 202 of the call that carried the event.
    latencies = [min(got[s.email]) - s.answered if got.get(s.email) else math.inf for s in accepted]
    first_sent = min((s.at for s in sent), default=0.0)
    last_arrival = max((min(t) for t in got.values() if t), default=None)
    delivered = sum(1 for s in accepted if got.get(s.email))
    pipeline = delivered / (last_arrival - first_sent) if last_arrival and delivered else 0.0
    out = manage(stack.env, "shell", "-c", RAW.format(prefix=f"{run}-", port=stack.smtp_port))
    raw_sent, raw_seconds = out.split()[-2:]  # the script's last line
    raw = int(raw_sent) / float(raw_seconds)
    return {"events": len(sent), "accepted": len(accepted), "delivered": delivered,
            "duplicates": sum(max(0, len(got.get(s.email, [])) - 1) for s in accepted),
            "p50_seconds": seconds(percentile(latencies, 0.5)) if latencies else None,
            "p99_seconds": seconds(percentile(latencies, 0.99)) if latencies else None,
            "last_email_after_seconds": round(last_arrival - first_sent, 2) if last_arrival else None,
            "pipeline_per_second": round(pipeline, 1), "raw_per_second": round(raw, 1),
            "ratio": round(pipeline / raw, 3) if raw else 0.0}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(runs)}
    for key in ("accepted", "delivered", "duplicates"):
        out[key] = [r[key] for r in runs]
    for key in ("p50_seconds", "p99_seconds", "last_email_after_seconds"):
        out[key] = spread([r[key] for r in runs])
    for key in ("pipeline_per_second", "raw_per_second", "ratio"):
        values = [r[key] for r in runs]
        out[key] = {"median": round(statistics.median(values), 3), "min": min(values), "max": max(values)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", nargs="+", choices=["postgresql", "sqlite"], default=["postgresql", "sqlite"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--log-level", default="WARNING", help="of the workers (INFO: every job and batch, to profile)")
    args = parser.parse_args()

    result: dict[str, Any] = {"benchmark": "burst", "events": args.events, "baseline": BASELINE,
                              "configurations": []}
    targets: dict[str, dict[str, Any]] = {}
    for db in args.db:
        stack = Stack(db)
        stack.env["LOG_LEVEL"] = args.log_level
        rates: dict[int, float] = {}
        try:
            stack.start()
            for workers in args.workers:
                runs, loads = [], []
                for n in range(args.runs):
                    before = load()
                    runs.append(burst_run(stack, args.events, workers, f"bu{workers}r{n}"))
                    loads.append([before, load()])
                    print(json.dumps({"db": db, "workers": workers, "run": n, "load_1min": loads[-1], **runs[-1]}),
                          file=sys.stderr, flush=True)
                config = {"db": db, "workers": workers, "worker": f"{workers} x manage.py worker",
                          "load_1min": loads, **summarise(runs), "per_run": runs}
                result["configurations"].append(config)
                rates[workers] = config["pipeline_per_second"]["median"]
                if workers == 1:
                    goal = TARGETS[db]
                    p99 = config["p99_seconds"]["median"] if config["p99_seconds"] else "inf"
                    exact = (all(r["delivered"] == r["accepted"] == args.events for r in runs)
                             and not any(r["duplicates"] for r in runs))
                    met = config["ratio"]["median"] >= goal["ratio"] and exact and (
                        goal["p99_seconds"] is None or (p99 != "inf" and p99 <= goal["p99_seconds"]))
                    targets[f"{db}/1 worker"] = {
                        "ratio_median": config["ratio"]["median"], "ratio_target": goal["ratio"], "p99_median": p99,
                        "p99_target": goal["p99_seconds"], "none_lost_none_twice": exact, "met": met}
            if 1 in rates and 2 in rates:
                targets[f"{db}/2 workers faster"] = {"one": rates[1], "two": rates[2], "met": rates[2] > rates[1]}
        finally:
            stack.stop()
        result.setdefault("logs", []).append(str(stack.tmp))
    result["targets"] = targets
    result["all_met"] = all(t["met"] for t in targets.values())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
