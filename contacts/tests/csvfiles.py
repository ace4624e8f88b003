"""Helpers to write test CSV files byte for byte (encodings, BOMs and line endings matter)."""

from __future__ import annotations

from pathlib import Path


def write_csv(tmp_path: Path, text: str, *, encoding: str = "utf-8", bom: bool = False, name: str = "in.csv") -> Path:
    path = tmp_path / name
    data = text.encode(encoding)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path
