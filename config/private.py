"""VAR_DIR and the files in it belong to the user running Leadflow alone (issue 14).

The SQLite database, the embedded Redis's socket and dump, uploaded CSVs and the demo passwords
live there; a world-readable directory let any local user read them. Settings call these before
anything is created, and an existing directory or database made under an older umask is
tightened; a path owned by someone else (a mounted volume) is left to its owner.
"""

from __future__ import annotations

import os
from pathlib import Path


def make_private_dir(path: Path) -> None:
    """Create `path` (and parents) with mode 0700, or tighten it to 0700 if it is ours."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _tighten(path, 0o700)


def make_private_file(path: Path) -> None:
    """Create an empty `path` with mode 0600 if its directory exists, or tighten it to 0600 if it is ours."""
    if str(path) in ("", ":memory:") or not path.parent.is_dir():
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError:
        return  # not ours to create (read-only or someone else's directory): SQLite reports that itself
    _tighten(path, 0o600)


def _tighten(path: Path, mode: int) -> None:
    st = path.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o777 != mode:
        path.chmod(mode)
