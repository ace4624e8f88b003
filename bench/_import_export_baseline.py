"""Baseline for bench/import_contacts.py: the same CSV through django-import-export's bulk mode.

Run as a subprocess (own peak RSS): python bench/_import_export_baseline.py FILE
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
django.setup()

import tablib  # noqa: E402
from import_export import resources  # noqa: E402

from contacts.models import Contact  # noqa: E402

HEADERS = {"Email": "email", "First Name": "first_name", "Last Name": "last_name", "Company": "company",
           "Job Title": "job_title", "Country": "country"}


class BulkContactResource(resources.ModelResource):
    """Configured as django-import-export's "Performance tuning" section recommends
    (docs/bulk_import.rst, https://django-import-export.readthedocs.io/en/latest/bulk_import.html):
    bulk mode; `force_init_instance` because this import only creates (the benchmark runs it on an
    empty table, so no per-row lookup of an existing instance); no diff; the default batch_size of
    1000 (the docs found `None` worse in time and memory). The benchmark runs it with DEBUG off."""

    class Meta:
        model = Contact
        fields = tuple(HEADERS.values())
        import_id_fields = ("email",)
        use_bulk = True
        force_init_instance = True
        batch_size = 1000
        skip_diff = True
        use_transactions = True


def main(path: str) -> None:
    text = Path(path).read_text(encoding="utf-8")
    dataset = tablib.Dataset().load(text, format="csv")
    # Keep the mapped columns only, under the resource's names (the engine maps them itself).
    data = tablib.Dataset(headers=list(HEADERS.values()))
    for row in dataset.dict:
        data.append([row[h].lower() if h == "Email" else row[h] for h in HEADERS])
    started = time.perf_counter()
    result = BulkContactResource().import_data(data, dry_run=False, raise_errors=True)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "rows": len(data), "seconds": round(seconds, 3), "rows_per_second": round(len(data) / seconds),
        "errors": result.has_errors(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main(sys.argv[1])
