"""Deterministic contact CSVs for benchmarks and large tests."""

from __future__ import annotations

import csv
import random
from pathlib import Path

HEADER = ["Email", "First Name", "Last Name", "Company", "Job Title", "Country", "Plan", "Employees"]
FIRST = ["Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Radia", "Guido", "Zoë", "José"]
LAST = ["Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Müller"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell", "Cyberdyne"]
TITLES = ["CTO", "Developer", "Marketing Manager", "VP Sales", "Founder", "Analyst"]
COUNTRIES = ["US", "GB", "DE", "FR", "NL", "SE", "CA", "AU"]
PLANS = ["free", "team", "enterprise"]
ASCII = {"Zoë": "Zoe", "José": "Jose"}


def write_contacts_csv(path: Path, rows: int, *, seed: int = 1, variant: str = "") -> Path:
    """`rows` unique contacts; a different `variant` changes every row's title (a full update)."""
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for i in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            writer.writerow([
                f"{ASCII.get(first, first).lower()}.{i}@{rng.choice(COMPANIES).lower()}.example", first, last,
                rng.choice(COMPANIES), rng.choice(TITLES) + variant, rng.choice(COUNTRIES), rng.choice(PLANS),
                rng.randint(1, 5000),
            ])
    return path
