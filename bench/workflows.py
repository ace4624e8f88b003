"""Benchmark: nurture workflows end to end (issue #6, "Performance").

    flock /tmp/leadflow-bench.lock .venv/bin/python bench/workflows.py [--rate 50] [--seconds 30] [--wake 100000]

Starts a throwaway PostgreSQL cluster (fsync on), an embedded Redis, gunicorn (3 workers), the
RQ workers and an aiosmtpd sink in its own process. Measures in one run:
- latency: an event-triggered workflow (trigger event -> send_email). At --rate events/s for
  --seconds (batches every 100 ms, one new contact per event, each event stamped with its send
  time), ONE `manage.py worker events delivery default`; P50/P99 from the client sending the
  event to the sink accepting its email (Message id -> contact -> the event's stamp).
                                                                                target P99 <= 2 s
- wake: --wake enrollments (created set-based) wait on a wait step that ends at the same moment
  T; the scheduler (`manage.py scheduler`, the 5 s wake tick) and TWO `manage.py worker default`
  advance them through the wait's end and a send_email step to completion. Seconds from T to the
  last enrollment completed (its Message queued in the same transaction).     target <= 60 s
Prints one JSON object with the figures and whether each target is met.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Services, manage, percentile, process, sql, wait_http  # noqa: E402
from core.testing.pgcluster import free_port  # noqa: E402

TARGETS = {"latency_p99_seconds": 2.0, "wake_seconds": 60.0}
# The latency phase's one worker serves events, delivery and default: RQ's default worker forks per
# job (~0.3 s each here), and each event makes three jobs (event, first steps, delivery).
IN_PROCESS = "core.management.commands.worker.InProcessWorker"
WAKE_GIVE_UP = 300  # seconds after T: report how far it got instead of waiting for ever

WORKFLOWS = """
templates:
  - key: bench-welcome
    subject: "Welcome, {{ contact.first_name|default:'there' }}"
    html: "<h1>Hi {{ contact.first_name }}</h1><p>Thanks for signing up.</p><p><a href='https://example.com/a'>Agenda</a></p>"
workflows:
  - key: bench-signup
    name: Bench signup
    trigger: {type: event, event: bench_signup}
    reentry: always
    steps:
      - {id: welcome, type: send_email, template: bench-welcome}
  - key: bench-wake
    name: Bench wake
    trigger: {type: manual}
    reentry: always
    steps:
      - {id: pause, type: wait, duration: 1d}
      - {id: followup, type: send_email, template: bench-welcome}
"""

SETUP = """
from campaigns.models import SenderProfile
from contacts.models import Contact
from automation.models import Workflow
from automation.services import workflow_import, workflow_promote
SenderProfile.objects.create(name="bench", from_email="news@bench.example", email_url="smtp://127.0.0.1:{port}",
                             rate="1000/s", burst=1000, postal_address="1 Bench Street", is_default=True)
Contact.objects.bulk_create([Contact(email=f"lat{{i}}@bench.example", first_name=f"Lat{{i}}",
                             consent_status="granted") for i in range({latency_contacts})], batch_size=2000)
workflow_import(text={workflows!r}, actor="bench", to="staging")
for wf in Workflow.objects.all():
    workflow_promote(workflow=wf, actor="bench")
"""

# 100,000 enrollments asleep on the wait step `pause` (its StepRun waiting until T), set-based.
WAKE_SETUP = """
INSERT INTO contacts_contact (email, first_name, last_name, company, job_title, phone, country, lifecycle_stage,
    attributes, consent_status, consent_source, is_test, created_at, updated_at)
SELECT 'wake' || g || '@bench.example', 'Wake' || g, '', '', '', '', '', 'lead', '{{}}'::jsonb, 'granted', 'bench',
       false, now(), now()
FROM generate_series(1, {n}) g;

INSERT INTO automation_enrollment (contact_id, workflow_id, version_id, is_staging, step_id, seq, status, next_run_at,
    entered_at, updated_at)
SELECT c.id, v.workflow_id, v.id, false, 'pause', 0, 'waiting', to_timestamp({t}), now(), now()
FROM contacts_contact c, automation_workflowversion v JOIN automation_workflow w ON w.id = v.workflow_id
WHERE c.email LIKE 'wake%@bench.example' AND w.key = 'bench-wake' AND v.state = 'production';

INSERT INTO automation_steprun (enrollment_id, version_id, step_id, step_type, attempt, status, idempotency_key,
    result, error, started_at)
SELECT e.id, e.version_id, 'pause', 'wait', 1, 'waiting', e.id || ':pause:0',
       jsonb_build_object('until', to_char(to_timestamp({t}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US+00:00'),
                          'next', 'followup'), '', now()
FROM automation_enrollment e WHERE e.step_id = 'pause';
ANALYZE;
"""










def latency_phase(args: argparse.Namespace, env: dict[str, str], db_url: str, tmp: Path, sink_log: Path,
                  url: str, headers: dict[str, str]) -> dict[str, Any]:
    worker = [sys.executable, str(ROOT / "manage.py"), "worker", "events", "delivery", "default"]
    if args.worker_class:
        worker += ["--worker-class", args.worker_class]
    per_tick = max(1, args.rate // 10)
    sent = 0
    # One worker: one delivery slot per sender (the default 2 would make two jobs per kick, and
    # the second finds nothing a single worker could not have sent in the first).
    with process(worker, {**env, "DELIVERY_PARALLEL": "1"}, tmp / "worker-latency.log"):
        time.sleep(4)  # the worker is up and waiting
        rng = random.Random(6)
        with requests.Session() as http:
            start = time.monotonic()
            for tick in range(args.seconds * 10):
                time.sleep(max(0.0, start + tick / 10 - time.monotonic()))
                events: list[dict[str, Any]] = [{"email": f"lat{sent + i}@bench.example", "type": "bench_signup",
                           "idempotency_key": f"lat-{sent + i}-{rng.random()}",
                           "properties": {"sent_at": time.time()}} for i in range(per_tick)]
                http.post(url, json={"events": events}, headers=headers, timeout=30).raise_for_status()
                sent += per_tick
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(sink_log.read_text().splitlines()) >= sent:
                break
            time.sleep(0.5)
    stamps = {str(mid): float(at) for mid, at in sql(
        db_url, "SELECT m.id, (e.properties->>'sent_at')::float FROM campaigns_message m "
                "JOIN contacts_event e ON e.contact_id = m.contact_id AND e.event_type = 'bench_signup' "
                "WHERE m.source = 'workflow:bench-signup'")}
    latencies = []
    for line in sink_log.read_text().splitlines():
        at, _, message_id = line.partition(" ")
        if message_id in stamps:
            latencies.append(float(at) - stamps[message_id])
    return {"rate_per_second": args.rate, "seconds": args.seconds, "events_sent": sent,
            "emails_received": len(latencies), "worker": "1 x manage.py worker events delivery default"
            + (f" --worker-class {args.worker_class}" if args.worker_class else ""),
            "p50_seconds": round(percentile(latencies, 0.5), 3) if latencies else None,
            "p99_seconds": round(percentile(latencies, 0.99), 3) if latencies else None,
            "max_seconds": round(max(latencies), 3) if latencies else None}


def wake_phase(args: argparse.Namespace, env: dict[str, str], db_url: str, tmp: Path) -> dict[str, Any]:
    t = time.time() + 25 + args.wake / 10_000  # the setup below must finish before T
    setup_started = time.perf_counter()
    with psycopg.connect(db_url.replace("postgres://", "postgresql://"), autocommit=True) as conn:
        conn.execute(WAKE_SETUP.format(n=args.wake, t=t))
    setup_seconds = time.perf_counter() - setup_started
    if time.time() > t - 8:
        raise SystemExit(f"wake setup took {setup_seconds:.1f} s: T passed before the workers started")
    worker = [sys.executable, str(ROOT / "manage.py"), "worker", "default"]
    scheduler = [sys.executable, str(ROOT / "manage.py"), "scheduler"]
    with process(worker, env, tmp / "worker-wake-1.log"), process(worker, env, tmp / "worker-wake-2.log"), \
            process(scheduler, env, tmp / "scheduler.log"):
        time.sleep(max(0.0, t - time.time()))
        done = 0
        while time.time() - t < WAKE_GIVE_UP:
            done = sql(db_url, "SELECT count(*) FROM automation_enrollment e JOIN automation_workflow w "
                               "ON w.id = e.workflow_id WHERE w.key = 'bench-wake' AND e.status = 'completed'")[0][0]
            if done >= args.wake:
                break
            time.sleep(0.5)
    first, last, messages, in_60 = sql(
        db_url, "SELECT min(e.finished_at), max(e.finished_at), (SELECT count(*) FROM campaigns_message "
                "WHERE source = 'workflow:bench-wake'), count(*) FILTER (WHERE e.finished_at <= to_timestamp(%s)) "
                "FROM automation_enrollment e JOIN automation_workflow w ON w.id = e.workflow_id "
                "WHERE w.key = 'bench-wake' AND e.status = 'completed'", t + 60)[0]
    return {"enrollments": args.wake, "completed": done, "messages_queued": messages,
            "completed_within_60s": in_60, "workers": "2 x manage.py worker default + manage.py scheduler",
            "setup_seconds": round(setup_seconds, 1),
            "first_done_after_seconds": round(first.timestamp() - t, 2) if first else None,
            "seconds": round(last.timestamp() - t, 2) if last and done >= args.wake else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--wake", type=int, default=100_000)
    parser.add_argument("--worker-class", default=IN_PROCESS,
                        help="of the latency phase's worker ('' for RQ's default, which forks per job)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-wake", action="store_true")
    args = parser.parse_args()

    services = Services()
    tmp, env = services.tmp, services.env
    port, smtp_port = free_port(), free_port()
    sink_log = tmp / "sink.log"
    sink_log.touch()
    result: dict[str, Any] = {"benchmark": "workflows", "db": "postgresql", "load_before": os.getloadavg()[0]}
    try:
        with process([sys.executable, str(ROOT / "bench" / "_smtp_sink.py"), str(smtp_port), str(sink_log)], env,
                     tmp / "sink.out"):
            manage(env, "migrate", "--noinput", "-v0")
            manage(env, "shell", "-c", SETUP.format(port=smtp_port, workflows=WORKFLOWS,
                                                    latency_contacts=args.rate * args.seconds + 100))
            if not args.skip_latency:
                key = manage(env, "create_api_key", "bench", "--rate-limit", "1000000").split()[-1]
                headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
                gunicorn = [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi:application", "-b",
                            f"127.0.0.1:{port}", "-w", "3", "--log-level", "warning"]
                with process(gunicorn, env, tmp / "gunicorn.log"):
                    wait_http(port, tmp / "gunicorn.log")
                    result["latency"] = latency_phase(args, env, services.db_url, tmp, sink_log,
                                                      f"http://127.0.0.1:{port}/api/v1/events", headers)
            if not args.skip_wake:
                result["wake"] = wake_phase(args, env, services.db_url, tmp)
    finally:
        services.stop()

    result["load_after"] = os.getloadavg()[0]
    result["logs"] = str(tmp)
    figures: dict[str, Any] = {}
    if "latency" in result:
        figures["latency_p99_seconds"] = result["latency"]["p99_seconds"]
    if "wake" in result:
        figures["wake_seconds"] = result["wake"]["seconds"]
    result["targets"] = {k: {"value": v, "target": TARGETS[k], "met": v is not None and v <= TARGETS[k]}
                         for k, v in figures.items()}
    result["all_met"] = all(c["met"] for c in result["targets"].values())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
