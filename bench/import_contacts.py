"""Benchmark: CSV contact import measured beside the database's own bulk load, in the same run (issue 23).

    flock /tmp/leadflow-bench.lock .venv/bin/python bench/import_contacts.py --rows 1000000 [--db postgres|sqlite]

Generates its own CSVs (bench/csvgen.py: a fresh file, and the same contacts with every row's title
changed), then, three times (`--runs`), interleaved so both sides see the same machine:

- PostgreSQL (a throwaway cluster with the docker-compose settings, fsync on): `COPY` of the fresh
  file into an equivalent table (the file's columns, a unique index on lower(email)), then
  `manage.py import_contacts` of it into an empty contacts table; `COPY` of the changed file into the
  emptied equivalent table, then its import on top of the first (every row an update).
- SQLite (a temp file, the app's pragmas): Python's `csv` module reading the file plus one
  `executemany` INSERT of it in one transaction into an equivalent table, then the import into an
  empty database; then the changed file the same way.

Each import runs in its own process; its peak RSS is the largest sum, sampled every 50 ms, of its
own RSS and its parallel readers' (PSS beside it); its time is the command's own (reading the file
to commit, no interpreter start-up). Every timed step starts
after a CHECKPOINT, and the CHECKPOINT that writes each step's dirty pages is timed too and reported
beside it. Prints one JSON object: each run, medians with min and max, the ratios, targets met or
not; and django-import-export's bulk mode configured as its docs recommend, for reference.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import manage  # noqa: E402
from bench.csvgen import HEADER, write_contacts_csv  # noqa: E402
from core.testing.pgcluster import PostgresCluster  # noqa: E402

# Issue 23's targets: import time over the bulk load's time on the same machine in the same run.
TARGETS = {
    "postgresql": {"fresh_over_copy": 2.5, "reimport_over_copy": 4.0, "peak_rss_mb": 300},
    "sqlite": {"fresh_over_csv_executemany": 3.0, "peak_rss_mb": 300},
}
FIELDS = ("from contacts.models import CustomField as F; "
          "F.objects.get_or_create(key='plan', defaults=dict(label='Plan', field_type='choice', "
          "choices=['free', 'team', 'enterprise'])); "
          "F.objects.get_or_create(key='employees', defaults=dict(label='Employees', field_type='number'))")
COLUMNS = [h.lower().replace(" ", "_") for h in HEADER]
EQUIVALENT = "bench_bulk_load"  # the file's columns and a unique index on lower(email), like contacts


def _tree(pid: int) -> list[int]:
    """pid and its descendants (the import's parallel readers)."""
    pids, index = [pid], 0
    while index < len(pids):
        try:
            children = Path(f"/proc/{pids[index]}/task/{pids[index]}/children").read_text().split()
        except OSError:
            children = []
        pids += [int(c) for c in children]
        index += 1
    return pids


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB; PSS splits pages shared after fork between the processes sharing them."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    pss = next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0)
    return rss, pss


def timed_import(env: dict[str, str], path: Path) -> dict[str, Any]:
    """The import in its own process; its memory is sampled every 50 ms with its workers': the sum
    of their RSS at one instant (pages shared after fork counted in each: an upper bound) and of PSS."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "import_contacts", str(path), "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        samples = [_memory_kb(pid) for pid in _tree(proc.pid)]
        peak_rss = max(peak_rss, sum(rss for rss, _ in samples))
        peak_pss = max(peak_pss, sum(pss for _, pss in samples))
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"import_contacts failed:\n{err[-3000:]}")
    data = json.loads(out.strip().splitlines()[-1])
    figures = {k: data[k] for k in ("rows_read", "created", "updated", "rejected", "duplicates", "seconds",
                                    "phase_seconds", "workers", "followup_seconds")}
    figures.update(peak_rss_mb=round(peak_rss / 1024, 1), peak_pss_mb=round(peak_pss / 1024, 1),
                   own_peak_rss_mb=data["peak_rss_mb"])
    return figures


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


class Postgres:
    def __init__(self, url: str) -> None:
        self.url = url.replace("postgres://", "postgresql://")

    def sql(self, query: str) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(query)

    def checkpoint(self) -> float:
        started = time.perf_counter()
        self.sql("CHECKPOINT")
        return round(time.perf_counter() - started, 3)

    def prepare_equivalent(self) -> None:
        self.sql(f"DROP TABLE IF EXISTS {EQUIVALENT}")
        self.sql(f"CREATE TABLE {EQUIVALENT} ({', '.join(f'{c} text' for c in COLUMNS)})")
        self.sql(f"CREATE UNIQUE INDEX {EQUIVALENT}_email ON {EQUIVALENT} (lower(email))")

    def bulk_load(self, path: Path) -> float:
        """psql's \\copy: the file's bytes through COPY FROM STDIN, timed from connect to commit."""
        self.sql(f"TRUNCATE {EQUIVALENT}")
        self.checkpoint()
        started = time.perf_counter()
        with psycopg.connect(self.url) as conn, conn.cursor() as cursor, open(path, "rb") as fh:
            with cursor.copy(f"COPY {EQUIVALENT} FROM STDIN (FORMAT csv, HEADER true)") as copy:
                while data := fh.read(1024 * 1024):
                    copy.write(data)
            conn.commit()
        return round(time.perf_counter() - started, 3)


def sqlite_bulk_load(db: Path, path: Path) -> float:
    """Python's own csv module and one executemany in one transaction, with the app's pragmas."""
    db.unlink(missing_ok=True)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
    conn.execute(f"CREATE TABLE {EQUIVALENT} ({', '.join(f'{c} TEXT' for c in COLUMNS)})")
    conn.execute(f"CREATE UNIQUE INDEX {EQUIVALENT}_email ON {EQUIVALENT} (lower(email))")
    started = time.perf_counter()
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader)
        conn.execute("BEGIN")
        marks = ", ".join("?" * len(COLUMNS))
        conn.executemany(f"INSERT INTO {EQUIVALENT} VALUES ({marks})", reader)  # noqa: S608  constants
        conn.execute("COMMIT")
    seconds = round(time.perf_counter() - started, 3)
    conn.close()
    return seconds


def import_export_baseline(env: dict[str, str], rows: int, tmp: Path, reset: Callable[[], None],
                           runs: int) -> dict[str, Any]:
    """django-import-export's bulk mode (bench/_import_export_baseline.py), into an empty database."""
    path = write_contacts_csv(tmp / "baseline.csv", rows, seed=7)
    results = []
    for _ in range(runs):
        reset()
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "_import_export_baseline.py"), str(path)],
                             env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"baseline failed:\n{out.stderr[-3000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"rows": rows, "runs": results,
            "rows_per_second": summary([r["rows_per_second"] for r in results])}


def bench_env(tmp: Path, database_url: str) -> dict[str, str]:
    """Production settings (DEBUG off: no query log), nothing from a developer's .env."""
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL"}}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DEBUG="false", ENV_FILE="", VAR_DIR=str(tmp / "var"),
               SECRET_KEY="bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",  # noqa: S106
               ALLOWED_HOSTS="127.0.0.1", SECURE_SSL_REDIRECT="false", DATABASE_URL=database_url,
               LOG_LEVEL="WARNING")
    return env


def phase_figures(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Where each import's time went (engine.py's phases), medians with min and max, and peak PSS."""
    figures = {f"{kind}_{phase}_seconds": summary([r[kind]["phase_seconds"][phase] for r in runs])
               for kind in ("fresh", "reimport") for phase in ("read_and_stage", "merge")}
    figures["peak_pss_mb"] = summary([max(r["fresh"]["peak_pss_mb"], r["reimport"]["peak_pss_mb"]) for r in runs])
    return figures


def run_postgres(args: argparse.Namespace, tmp: Path, fresh_csv: Path, update_csv: Path) -> dict[str, Any]:
    cluster = PostgresCluster(durable=True).start()
    try:
        env = bench_env(tmp, cluster.url)
        db = Postgres(cluster.url)
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "shell", "-c", FIELDS)
        db.prepare_equivalent()
        runs = []
        for _ in range(args.runs):
            db.sql("TRUNCATE contacts_contact, contacts_importjob CASCADE")
            run: dict[str, Any] = {"copy_fresh_seconds": db.bulk_load(fresh_csv),
                                   "copy_fresh_checkpoint": db.checkpoint()}
            run["fresh"] = timed_import(env, fresh_csv)
            run["fresh_checkpoint"] = db.checkpoint()
            run["copy_reimport_seconds"] = db.bulk_load(update_csv)
            run["copy_reimport_checkpoint"] = db.checkpoint()
            run["reimport"] = timed_import(env, update_csv)
            run["reimport_checkpoint"] = db.checkpoint()
            run["fresh_over_copy"] = round(run["fresh"]["seconds"] / run["copy_fresh_seconds"], 2)
            run["reimport_over_copy"] = round(run["reimport"]["seconds"] / run["copy_reimport_seconds"], 2)
            run["fresh_over_copy_with_checkpoints"] = round(
                (run["fresh"]["seconds"] + run["fresh_checkpoint"])
                / (run["copy_fresh_seconds"] + run["copy_fresh_checkpoint"]), 2)
            runs.append(run)
            print(json.dumps(run), file=sys.stderr)
        base_env = {**env, "DATABASE_URL": cluster.create_database("baseline")}
        manage(base_env, "migrate", "--noinput", "-v0")
        base_db = Postgres(base_env["DATABASE_URL"])
        baseline = import_export_baseline(
            base_env, min(args.baseline_rows, args.rows), tmp,
            lambda: base_db.sql("TRUNCATE contacts_contact CASCADE"), args.runs)
    finally:
        cluster.stop()
    figures = {"fresh_over_copy": summary([r["fresh_over_copy"] for r in runs]),
               "reimport_over_copy": summary([r["reimport_over_copy"] for r in runs]),
               "fresh_over_copy_with_checkpoints": summary([r["fresh_over_copy_with_checkpoints"] for r in runs]),
               "fresh_seconds": summary([r["fresh"]["seconds"] for r in runs]),
               "reimport_seconds": summary([r["reimport"]["seconds"] for r in runs]),
               "copy_fresh_seconds": summary([r["copy_fresh_seconds"] for r in runs]),
               "copy_reimport_seconds": summary([r["copy_reimport_seconds"] for r in runs]),
               "peak_rss_mb": summary([max(r["fresh"]["peak_rss_mb"], r["reimport"]["peak_rss_mb"]) for r in runs]),
               **phase_figures(runs)}
    return {"runs": runs, "figures": figures, "baseline_django_import_export_bulk": baseline}


def run_sqlite(args: argparse.Namespace, tmp: Path, fresh_csv: Path, update_csv: Path) -> dict[str, Any]:
    template = tmp / "template.sqlite3"
    env = bench_env(tmp, f"sqlite:///{template}")
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "shell", "-c", FIELDS)
    runs = []
    for i in range(args.runs):
        target = tmp / f"run{i}.sqlite3"
        shutil.copy(template, target)
        run_env = {**env, "DATABASE_URL": f"sqlite:///{target}"}
        run: dict[str, Any] = {"csv_executemany_fresh_seconds": sqlite_bulk_load(tmp / "bulk.sqlite3", fresh_csv)}
        run["fresh"] = timed_import(run_env, fresh_csv)
        run["csv_executemany_reimport_seconds"] = sqlite_bulk_load(tmp / "bulk.sqlite3", update_csv)
        run["reimport"] = timed_import(run_env, update_csv)
        run["fresh_over_csv_executemany"] = round(run["fresh"]["seconds"] / run["csv_executemany_fresh_seconds"], 2)
        run["reimport_over_csv_executemany"] = round(
            run["reimport"]["seconds"] / run["csv_executemany_reimport_seconds"], 2)
        runs.append(run)
        print(json.dumps(run), file=sys.stderr)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)
    base = tmp / "baseline.sqlite3"
    base_env = {**env, "DATABASE_URL": f"sqlite:///{base}"}

    def reset() -> None:
        shutil.copy(template, base)

    baseline = import_export_baseline(base_env, min(args.baseline_rows, args.rows), tmp, reset, args.runs)
    figures = {"fresh_over_csv_executemany": summary([r["fresh_over_csv_executemany"] for r in runs]),
               "reimport_over_csv_executemany": summary([r["reimport_over_csv_executemany"] for r in runs]),
               "fresh_seconds": summary([r["fresh"]["seconds"] for r in runs]),
               "reimport_seconds": summary([r["reimport"]["seconds"] for r in runs]),
               "csv_executemany_seconds": summary([r["csv_executemany_fresh_seconds"] for r in runs]),
               "peak_rss_mb": summary([max(r["fresh"]["peak_rss_mb"], r["reimport"]["peak_rss_mb"]) for r in runs]),
               **phase_figures(runs)}
    return {"runs": runs, "figures": figures, "baseline_django_import_export_bulk": baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-rows", type=int, default=20_000,
                        help="rows for django-import-export (rates are compared)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
    load_before = os.getloadavg()
    try:
        started = time.perf_counter()
        fresh_csv = write_contacts_csv(tmp / "fresh.csv", args.rows)
        update_csv = write_contacts_csv(tmp / "update.csv", args.rows, variant=" (updated)")
        generate_seconds = time.perf_counter() - started
        csv_mb = round(fresh_csv.stat().st_size / 1e6, 1)
        vendor = "postgresql" if args.db == "postgres" else "sqlite"
        outcome = (run_postgres if vendor == "postgresql" else run_sqlite)(args, tmp, fresh_csv, update_csv)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures = outcome["figures"]
    checks = {name: {"median": figures[name]["median"], "max": figures[name]["max"], "target": target,
                     "met": figures[name]["median"] <= target}
              for name, target in TARGETS[vendor].items()}
    baseline = outcome["baseline_django_import_export_bulk"]
    fresh_rate = args.rows / figures["fresh_seconds"]["median"]
    print(json.dumps({
        "benchmark": "import_contacts", "db": vendor, "rows": args.rows, "runs": args.runs,
        "csv_mb": csv_mb,
        "generate_seconds": round(generate_seconds, 1),
        "load_average_before_after": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        "figures": figures, "targets": checks, "all_met": all(c["met"] for c in checks.values()),
        "fresh_rows_per_second_median": round(fresh_rate),
        "speedup_vs_django_import_export": round(fresh_rate / baseline["rows_per_second"]["median"], 1),
        "baseline_django_import_export_bulk": baseline, "each_run": outcome["runs"],
    }, indent=2))


if __name__ == "__main__":
    main()
