"""Where browser tests keep what a person reviews afterwards (issue 19: screenshots of each main
screen as test artifacts). Not the test run's VAR_DIR: that is a temp dir removed when the run ends.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def screenshot_path(name: str) -> str:
    """A path for `name`.png under TEST_ARTIFACTS_DIR (default: var/test-artifacts in the checkout,
    git-ignored), in screenshots/<database>/ so the SQLite and PostgreSQL passes keep theirs apart."""
    base = Path(os.environ.get("TEST_ARTIFACTS_DIR") or ROOT / "var" / "test-artifacts")
    folder = base / "screenshots" / os.environ.get("TEST_DATABASE", "sqlite")
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"{name}.png")
