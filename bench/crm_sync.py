"""Benchmark: CRM sync of 50,000 changed contacts to a rate-limited HubSpot (issue #7).

    flock /tmp/leadflow-bench.lock .venv/bin/python bench/crm_sync.py [--contacts 50000]

Starts a throwaway PostgreSQL cluster (fsync on), an embedded Redis, a loopback fake HubSpot in this
process (automation.crm.fakes: batch upsert shapes, 100 requests per sliding 10 s, 429 with
Retry-After beyond that) and two RQ workers on the `crm` queue (--workers). Creates the contacts and a HubSpot
connection (100/10s, 100 per batch), queues them through crm_contacts_changed, then measures until
every row is synced:
- sync_seconds: first to last request the fake admitted. 500 requests at 100 per 10 s cannot take
  less than ~50 s (the issue's bound); target within 10 %: <= 55 s
- zero 429s after the first, zero contacts lost, zero sent twice (the fake counts per email)
Prints one JSON object with the figures and whether each target is met.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automation.crm.fakes import FakeHubSpot, FakeHubSpotConfig  # noqa: E402
from bench.common import Services, manage, process, sql  # noqa: E402

BOUND_SECONDS_PER_REQUEST = 0.1  # 100 requests / 10 s
TARGET_RATIO = 1.10

SETUP = """
import time
from automation.crm.models import CrmConnection
from automation.crm.services import crm_contacts_changed
from automation.crm.vault import encrypt
from contacts.models import Contact, ContactScore
from core.utils import chunked
n = {contacts}
for chunk in chunked(range(n), 5000):
    made = Contact.objects.bulk_create([Contact(email=f"lead{{i}}@bench.example", first_name=f"First{{i}}",
                                                company=f"Company {{i % 500}}") for i in chunk])
    ContactScore.objects.bulk_create([ContactScore(contact=c, score=i % 90)  # no row: score 0
                                      for i, c in zip(chunk, made, strict=True) if i % 90])
conn = CrmConnection(name="bench hubspot", kind="hubspot", base_url="{url}", token_encrypted=encrypt("fake-token"),
                     field_mapping={{"first_name": "firstname", "company": "company", "score": "lead_score",
                                    "grade": "lead_grade", "lifecycle_stage": "lifecyclestage"}},
                     rate_limit="100/10s", batch_size=100)
conn.full_clean()
conn.save()
started = time.perf_counter()
ids = list(Contact.objects.order_by("id").values_list("id", flat=True))
queued = 0
for chunk in chunked(ids, 5000):
    queued += crm_contacts_changed(contact_ids=chunk, reason="bench")
print("QUEUED", queued, round(time.perf_counter() - started, 2))
"""


def not_synced(db_url: str) -> int:
    return int(sql(db_url, "SELECT count(*) FROM crm_crmsyncitem WHERE status <> 'synced'")[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2,
                        help="crm workers; one worker's per-batch work (~100 ms under load) nears the 102 ms "
                             "between requests the limit allows, so a second one keeps the limit the bottleneck")
    args = parser.parse_args()

    services = Services()
    tmp, env = services.tmp, services.env
    fake = FakeHubSpot(FakeHubSpotConfig(limit=100, window=10.0)).start()
    result: dict[str, Any] = {"benchmark": "crm_sync", "db": "postgresql", "contacts": args.contacts,
                              "workers": args.workers,
                              "crm_limit": "100 requests / 10 s (sliding)", "batch_size": 100}
    try:
        manage(env, "migrate", "--noinput", "-v0")
        out = manage(env, "shell", "-c", SETUP.format(contacts=args.contacts, url=fake.url))
        _, queued, queue_seconds = next(line for line in out.splitlines() if line.startswith("QUEUED")).split()
        result["queued"] = {"rows": int(queued), "seconds": float(queue_seconds)}
        worker = [sys.executable, str(ROOT / "manage.py"), "worker", "crm"]
        with contextlib.ExitStack() as workers:
            for n in range(args.workers):
                workers.enter_context(process(worker, env, tmp / f"worker-{n}.log"))
            started = time.perf_counter()
            while (left := not_synced(services.db_url)) > 0:
                if time.perf_counter() - started > 600:
                    raise SystemExit(f"{left} rows not synced after 600 s: "
                                     + (tmp / "worker-0.log").read_text()[-2000:])
                time.sleep(0.5)
            wall = time.perf_counter() - started
    finally:
        services.stop()
        fake.stop()

    stats = fake.stats
    admitted = stats.admitted_at
    requests = stats.statuses[200] + stats.statuses[207]
    sync_seconds = admitted[-1] - admitted[0] if admitted else 0.0
    bound = (requests - 1) * BOUND_SECONDS_PER_REQUEST if requests else 0.0
    bound = max(bound, (args.contacts / 100) * BOUND_SECONDS_PER_REQUEST)
    emails = {f"lead{i}@bench.example" for i in range(args.contacts)}
    lost = len(emails - set(stats.upserts))
    twice = sum(1 for count in stats.upserts.values() if count > 1)
    result.update({
        "requests": requests, "responses": dict(sorted(stats.statuses.items())),
        "sync_seconds": round(sync_seconds, 2), "wall_seconds_incl_worker_start": round(wall, 2),
        "contacts_per_second": round(args.contacts / sync_seconds) if sync_seconds else None,
        "lost": lost, "sent_twice": twice, "rate_limited_after_first": stats.rate_limited_after_first,
    })
    result["targets"] = {
        "sync_seconds": {"value": round(sync_seconds, 2), "bound": round(bound, 1),
                         "target": round(bound * TARGET_RATIO, 1), "met": sync_seconds <= bound * TARGET_RATIO},
        "rate_limited_after_first": {"value": stats.rate_limited_after_first, "target": 0,
                                     "met": stats.rate_limited_after_first == 0},
        "lost": {"value": lost, "target": 0, "met": lost == 0},
        "sent_twice": {"value": twice, "target": 0, "met": twice == 0},
    }
    result["all_met"] = all(t["met"] for t in result["targets"].values())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
