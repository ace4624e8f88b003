"""`make test` runs pytest with pyproject's testpaths: an app missing from that list has tests that
never run in CI (consent's and broadcasts' did not, for a while). Every top-level folder holding
test files must be listed."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_OURS = {".venv", "var", "node_modules", "static", "templates", "docs", "bench"}


def test_every_folder_with_tests_is_in_testpaths() -> None:
    testpaths = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["testpaths"])
    with_tests = {
        folder.name for folder in ROOT.iterdir()
        if folder.is_dir() and not folder.name.startswith(".") and folder.name not in NOT_OURS
        and any(folder.rglob("test_*.py"))
    }
    assert with_tests - testpaths == set(), "add these to [tool.pytest.ini_options] testpaths in pyproject.toml"
