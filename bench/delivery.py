"""Benchmark: email delivery against a local SMTP sink (issue #5).

    .venv/bin/python bench/delivery.py [--messages 3000] [--per-job 600] [--throttle-seconds 30]

Starts a throwaway PostgreSQL cluster (fsync on), an embedded Redis and an aiosmtpd sink in its
own process. Measures in one run:
- raw: Django's SMTP backend sending the same (pre-rendered) messages over one connection: the
  baseline, what the wire and the sink allow;
- batched: one `manage.py worker delivery` delivering queued messages (claim, rules, render,
  send over one connection, record each result), from COMMIT of the queue to the last result;
- per_job: one RQ job per email (the `message_deliver_job` path, RQ's forking worker);
- throttle: a sender limited to 100/s (burst 10), three workers, for --throttle-seconds: the
  busiest 1-second window (sliding, at every send) and the average rate.
Targets: batched >= 75 % of raw and >= 8x per_job; throttle: no 1-s window over limit + burst and
the average within 5 % of the limit. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Services, manage, process, sql  # noqa: E402
from core.testing.pgcluster import free_port  # noqa: E402

LIMIT, BURST = 100, 10

SETUP = """
from campaigns.models import EmailTemplate, SenderProfile
from contacts.models import Contact
n = {contacts}
Contact.objects.bulk_create([Contact(email=f"lead{{i}}@bench.example", first_name=f"Lead{{i}}",
                             consent_status="granted") for i in range(n)], batch_size=2000)
EmailTemplate.objects.create(key="welcome", subject="Welcome, {{{{ contact.first_name|default:'there' }}}}",
    html="<h1>Hi {{{{ contact.first_name }}}}</h1><p>Thanks for registering for the webinar.</p>"
         "<p><a href='https://example.com/agenda'>Agenda</a> and <a href='https://example.com/faq'>FAQ</a></p>")
for name, rate, burst in (("fast", "100000/s", 1000), ("jobs", "100000/s", 1000), ("limited", "{limit}/s", {burst})):
    SenderProfile.objects.create(name=name, from_email="news@bench.example", email_url="smtp://127.0.0.1:{port}",
                                 rate=rate, burst=burst, postal_address="1 Bench Street")
"""

# Queue messages without kicking a worker (the phase decides who delivers them).
QUEUE = """
from campaigns.models import EmailTemplate, Message, SenderProfile
from contacts.models import Contact
sender = SenderProfile.objects.get(name="{sender}")
template = EmailTemplate.objects.get(key="welcome")
ids = list(Contact.objects.order_by("id").values_list("id", flat=True)[{start}:{stop}])
Message.objects.bulk_create([Message(contact_id=c, template=template, sender=sender, kind="marketing",
                             idempotency_key=f"{sender_name}:{{c}}") for c in ids], batch_size=2000)
print(len(ids))
"""

RAW = """
import time
from django.core.mail import EmailMultiAlternatives, get_connection
from campaigns.delivery import message_render
from campaigns.models import EmailTemplate, Message, SenderProfile
from contacts.models import Contact
sender = SenderProfile.objects.get(name="fast")
template = EmailTemplate.objects.get(key="welcome")
emails = []
for i, contact in enumerate(Contact.objects.with_scores().order_by("id")[:{n}]):  # the context has score, grade
    m = Message(pk=10**9 + i, contact=contact, template=template, sender=sender)
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
print(sent, time.perf_counter() - start)
"""




def wait_sent(db_url: str, sender: str, expected: int, timeout: float) -> float:
    """Seconds until `expected` messages of the sender are in a final state (polled every 50 ms)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        done = sql(db_url, "SELECT count(*) FROM campaigns_message m JOIN campaigns_senderprofile s "
                           "ON s.id = m.sender_id WHERE s.name = %s AND m.status IN ('sent', 'failed', "
                           "'suppressed')", sender)[0][0]
        if done >= expected:
            return time.perf_counter() - start
        time.sleep(0.05)
    raise SystemExit(f"{sender}: not all {expected} messages delivered within {timeout} s")


def sink_times(path: Path, ids: set[str]) -> list[float]:
    times = []
    for line in path.read_text().splitlines():
        at, _, message_id = line.partition(" ")
        if message_id in ids:
            times.append(float(at))
    return sorted(times)


def busiest_window(times: list[float]) -> int:
    """Most sends in any 1-second window [t, t+1) starting at a send."""
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--per-job", type=int, default=600, help="messages for the job-per-email baseline")
    parser.add_argument("--throttle-seconds", type=int, default=30)
    args = parser.parse_args()
    throttle_messages = LIMIT * (args.throttle_seconds + 10)

    services = Services(DELIVERY_PARALLEL="3", DELIVERY_BATCH_SIZE="500")
    tmp, env = services.tmp, services.env
    smtp_port = free_port()
    sink_log = tmp / "sink.log"
    result: dict[str, Any] = {"benchmark": "delivery", "db": "postgresql", "messages": args.messages}
    worker = [sys.executable, str(ROOT / "manage.py"), "worker", "delivery"]
    total_contacts = max(args.messages, throttle_messages)
    try:
        with process([sys.executable, str(ROOT / "bench" / "_smtp_sink.py"), str(smtp_port), str(sink_log)], env,
                     tmp / "sink.out"):
            manage(env, "migrate", "--noinput", "-v0")
            manage(env, "shell", "-c", SETUP.format(contacts=total_contacts, port=smtp_port, limit=LIMIT, burst=BURST))

            # Baseline: the raw backend, one connection, the same rendered messages.
            sent, raw_seconds = manage(env, "shell", "-c", RAW.format(n=args.messages, port=smtp_port)).split()[-2:]
            raw_rate = int(sent) / float(raw_seconds)

            # Ours: one worker, started idle; the clock runs from the kick to the last result.
            with process(worker, env, tmp / "worker-batched.log"):
                time.sleep(3)  # the worker is up and waiting
                manage(env, "shell", "-c", QUEUE.format(sender="fast", sender_name="fast", start=0,
                                                        stop=args.messages))
                kicked = time.perf_counter()
                manage(env, "shell", "-c", "from campaigns.delivery import delivery_kick; "
                       "from campaigns.models import SenderProfile; "
                       "delivery_kick(SenderProfile.objects.get(name='fast').pk)")
                kick_overhead = time.perf_counter() - kicked  # the shell's start-up, not delivery
                seconds = wait_sent(services.db_url, "fast", args.messages, timeout=600) + kick_overhead
                # Rate from the database's own clock: first claim to last result.
                first, last = sql(services.db_url, "SELECT min(claimed_at), max(sent_at) FROM campaigns_message m "
                                                      "JOIN campaigns_senderprofile s ON s.id = m.sender_id "
                                                      "WHERE s.name = 'fast'")[0]
            batched_rate = args.messages / (last - first).total_seconds()

            # One RQ job per email (forking worker: a fresh process per job, as RQ runs by default).
            manage(env, "shell", "-c", QUEUE.format(sender="jobs", sender_name="jobs", start=0, stop=args.per_job))
            manage(env, "shell", "-c", "from campaigns.models import Message; from core.queues import get_queue\n"
                   "q = get_queue('delivery')\n"
                   "for pk in Message.objects.filter(sender__name='jobs').values_list('id', flat=True):\n"
                   "    q.enqueue('campaigns.tasks.message_deliver_job', pk)")
            # RQ's forking worker, as the baseline says (ours runs jobs in-process by default).
            with process([*worker, "--worker-class", "rq.worker.Worker"], env, tmp / "worker-jobs.log"):
                wait_sent(services.db_url, "jobs", args.per_job, timeout=900)
                first, last = sql(services.db_url, "SELECT min(claimed_at), max(sent_at) FROM campaigns_message m "
                                                      "JOIN campaigns_senderprofile s ON s.id = m.sender_id "
                                                      "WHERE s.name = 'jobs'")[0]
            per_job_rate = args.per_job / (last - first).total_seconds()

            # Throttle accuracy: 100/s shared by three workers.
            manage(env, "shell", "-c", QUEUE.format(sender="limited", sender_name="limited", start=0,
                                                    stop=throttle_messages))
            workers = [process(worker, env, tmp / f"worker-limited-{i}.log") for i in range(3)]
            for w in workers:
                w.__enter__()
            try:
                time.sleep(3)
                manage(env, "shell", "-c", "from campaigns.delivery import delivery_kick; "
                       "from campaigns.models import SenderProfile; "
                       "delivery_kick(SenderProfile.objects.get(name='limited').pk)")
                time.sleep(args.throttle_seconds + 5)
            finally:
                for w in workers:
                    w.__exit__(None, None, None)
            limited_ids = {str(r[0]) for r in sql(services.db_url, "SELECT m.id FROM campaigns_message m JOIN "
                                                                     "campaigns_senderprofile s ON s.id = m.sender_id "
                                                                     "WHERE s.name = 'limited'")}
            times = sink_times(sink_log, limited_ids)
            window = [t for t in times if times[0] + 2 <= t < times[0] + 2 + args.throttle_seconds]
            busiest = busiest_window(times)
            average = len(window) / args.throttle_seconds

        result.update({
            "raw_backend_per_second": round(raw_rate, 1),
            "batched_worker_per_second": round(batched_rate, 1),
            "batched_wall_seconds": round(seconds, 2),
            "job_per_email_per_second": round(per_job_rate, 1),
            "batched_vs_raw": round(batched_rate / raw_rate, 3),
            "batched_vs_job_per_email": round(batched_rate / per_job_rate, 1),
            "throttle": {"limit_per_second": LIMIT, "burst": BURST, "workers": 3, "seconds": args.throttle_seconds,
                         "sent": len(times), "busiest_1s_window": busiest, "average_per_second": round(average, 2)},
            "targets": {"batched_vs_raw": 0.75, "batched_vs_job_per_email": 8,
                        "busiest_1s_window_max": LIMIT + BURST, "average_within": 0.05},
        })
        result["met"] = {
            "batched_vs_raw": result["batched_vs_raw"] >= 0.75,
            "batched_vs_job_per_email": result["batched_vs_job_per_email"] >= 8,
            "throttle_window": busiest <= LIMIT + BURST,
            "throttle_average": abs(average - LIMIT) <= 0.05 * LIMIT,
        }
    finally:
        services.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
