"""Reading and validating a big file on every core (issue 23): the parent splits the file's bytes
into chunks of whole records, worker processes decode, parse and validate them (the per-row Python
work that made one core the bottleneck), and the parent only streams their results into staging.

Splitting is safe only where a chunk boundary cannot fall inside a quoted cell: a boundary is a
newline preceded by an even number of quote characters, which is exactly "outside quotes" when
every quote in the chunk belongs to a well-formed quoted cell (opened at the start of a cell, `""`
inside, closed at its end). Each worker checks that of its chunk; a file with stray quotes (`ab"c`)
raises Unsplittable and is read again by the one-process reader, whose csv module decides as always.
Same reader settings, same validator, same line numbers: the results are those of the serial path.
"""

from __future__ import annotations

import codecs
import csv
import ctypes
import gc
import io
import multiprocessing
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contacts.imports.block import Block, BlockValidator, block_rows, copy_text, email_hashes
from contacts.imports.reader import CsvFormat, ImportFileError
from contacts.imports.rows import RowError, RowValidator

CHUNK_BYTES = 1024 * 1024  # about 14,000 rows: small enough that workers stay small
# More than this waiting for a cut: a stray quote or \r-only line ends, not a record. The csv
# module's field limit (128 KiB a cell) allows longer records, but never sensibly: read in one process.
MAX_CARRY_BYTES = 2 * CHUNK_BYTES
MIN_FILE_BYTES = 8 * 1024 * 1024  # below this, starting processes costs more than it saves
# Encodings in which b"\n", b"\r" and b'"' are never part of another character.
SPLITTABLE_ENCODINGS = {"utf-8", "utf-8-sig", "cp1252", "latin-1", "iso8859-1", "iso8859-15", "ascii"}
LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Unsplittable(Exception):
    """A chunk has quotes the boundary rule cannot vouch for: read the file in one process."""


@dataclass
class ChunkResult:
    rows_read: int = 0
    staged: int = 0
    errors: list[tuple[int, RowError]] = field(default_factory=list)  # (line, error), in file order
    copy_data: bytes = b""  # PostgreSQL: COPY text format of the staged rows
    rows: list[tuple[Any, ...]] = field(default_factory=list)  # SQLite: the staged rows
    email_hashes: bytes = b""  # array("q") of hash(email), for the duplicate check


def workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def usable(path: Path, fmt: CsvFormat, size: int) -> bool:
    if size < MIN_FILE_BYTES or workers() < 2 or codecs.lookup(fmt.encoding).name not in SPLITTABLE_ENCODINGS:
        return False
    with open(path, "rb") as fh:
        return b"\n" in fh.read(64 * 1024)  # chunks end at \n: not for files with \r line ends only


def _count_lines(data: bytes) -> int:
    """Line breaks as the csv reader counts them (io's newline='': \\r\\n, \\r or \\n)."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def body_offset(path: Path, header_lines: int) -> int:
    """Byte offset of the first data line: after the `header_lines` lines the header took."""
    if header_lines == 0:
        return 0
    with open(path, "rb") as fh:
        data = b""
        while True:
            more = fh.read(1024 * 1024)
            data += more
            # A \r at the end of what was read may be the first half of \r\n: decide after more.
            scan = data[:-1] if more and data.endswith(b"\r") else data
            ends = [match.end() for match in LINE_BREAK.finditer(scan)]
            if len(ends) >= header_lines:
                return ends[header_lines - 1]
            if not more:
                return len(data)


def chunks(path: Path, offset: int, first_line: int) -> Iterator[tuple[bytes, int, int]]:
    """(bytes of whole records, line number before them, file offset after them).

    Raises Unsplittable as soon as more than MAX_CARRY_BYTES wait for a cut: a stray quote makes
    every later line break look quoted, and CR-only line ends have no LF to cut at; carrying on would
    hold the rest of the file in memory (the one-process reader then reads it with the same result)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        carry = b""
        carry_odd = 0  # parity of the quotes in carry, kept as it grows: the carry is never rescanned
        line = first_line
        while True:
            more = fh.read(CHUNK_BYTES)
            data = carry + more
            offset += len(more)
            if not more:
                if data:
                    yield data, line, offset
                return
            carry_odd ^= more.count(b'"') & 1  # now of all of data: the carry's next time
            odd, end = carry_odd, len(more)  # parity of the quotes before `end`, walking back
            cut = more.rfind(b"\n")
            while cut >= 0:
                odd ^= more.count(b'"', cut, end) & 1
                end = cut
                if not odd:
                    break
                cut = more.rfind(b"\n", 0, cut)  # inside a quoted cell: try the line before
            if cut < 0:
                if len(data) > MAX_CARRY_BYTES:
                    raise Unsplittable
                carry = data  # a record longer than a chunk: read on
                continue
            cut += len(carry)
            chunk, carry = data[: cut + 1], data[cut + 1:]
            yield chunk, line, offset - len(carry)
            line += _count_lines(chunk)


def _quoted_cells(delimiter: str) -> re.Pattern[str]:
    d = re.escape(delimiter)
    return re.compile(rf'(?:^|(?<=[{d}\r\n]))"[^"]*(?:""[^"]*)*"(?=[{d}\r\n]|\Z)')


# Set in the parent before the pool forks; inherited by the workers (validators hold closures,
# which do not pickle).
_STATE: dict[str, Any] = {}


def _work(chunk: bytes, line_before: int) -> ChunkResult:
    validator: BlockValidator = _STATE["validator"]
    fmt: CsvFormat = _STATE["format"]
    encoding = "utf-8" if codecs.lookup(fmt.encoding).name == "utf-8-sig" else fmt.encoding
    try:
        text = chunk.decode(encoding)
    except UnicodeDecodeError as exc:
        bad_line = line_before + _count_lines(chunk[: exc.start]) + 1
        raise ImportFileError(
            f"Line {bad_line}: bytes that are not {fmt.encoding} ({exc.reason}); choose the file's encoding."
        ) from None
    if '"' in text and '"' in _STATE["quoted"].sub("", text):
        raise Unsplittable
    lines, records = _records(text, fmt.delimiter, line_before)
    block = validator.validate(lines, records)
    return _chunk_result(block, validator.copy_columns)


def _records(text: str, delimiter: str, line_before: int) -> tuple[list[int] | range, list[list[str]]]:
    """The chunk's records and the line each starts on (blank ones included: the validator skips them)."""
    if '"' not in text:
        # Without quotes a record is exactly one physical line: no per-record bookkeeping.
        try:
            records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
            return range(line_before + 1, line_before + 1 + len(records)), records
        except csv.Error:
            pass  # read again record by record below, to name the line
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    lines: list[int] = []
    records = []
    while True:
        start = line_before + reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return lines, records
        except csv.Error as exc:
            raise ImportFileError(f"Line {start}: the file is not valid CSV ({exc}).") from None
        lines.append(start)
        records.append(cells)


def _chunk_result(block: Block, copy_columns: list[str]) -> ChunkResult:
    out = ChunkResult(rows_read=block.rows_read, staged=block.staged, errors=block.errors,
                      email_hashes=email_hashes(block).tobytes())
    if _STATE["pg"]:
        out.copy_data = copy_text(block, copy_columns)
    else:
        out.rows = block_rows(block)
    return out


def _worker_start() -> None:
    # A forked worker inherits the parent's Python signal handlers (an RQ worker's, a test
    # runner's); on shutdown it must just exit, not run them (one hung on a lock they took).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which shuts the pool
    # A chunk makes ~100,000 lists and strings and no reference cycles: the cyclic collector's passes
    # over them (and over every object inherited from the parent) were 60% of csv parsing's time.
    # Freezing also keeps the collector from writing to, and so copying, the parent's shared pages.
    gc.freeze()
    gc.disable()
    _exit_with_parent(_STATE["parent"])


def _exit_with_parent(parent: int) -> None:
    """If the parent is SIGKILLed (OOM killer, a deploy), an idle worker would wait on its task queue
    for ever (it holds the queue's write end too, so no EOF comes) and keep the parent's inherited
    PostgreSQL and Redis sockets open: the server would keep the dead import's session, its
    transaction and locks. Workers never use those connections (the validator does not query), and
    closing them here could send a Terminate on the parent's live session; instead a worker dies with
    its parent, and the kernel closes its copies of the sockets, touching nothing of the parent's."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        # Linux: SIGKILL when the thread that forked this worker (the one iterating results()) ends.
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # it died before prctl took effect
                os._exit(1)
            return
    except (AttributeError, OSError):  # no prctl: not Linux
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def results(path: Path, fmt: CsvFormat, header_lines: int, validator: RowValidator | BlockValidator, *,
            pg: bool) -> Iterator[tuple[ChunkResult, int]]:
    """(result, file offset reached) per chunk, in file order, computed by a pool of processes.
    At most two chunks per worker are in flight: memory stays flat however big the file.
    A worker that dies (killed, out of memory) fails the import (BrokenProcessPool), not hangs it.
    Staged rows come as `validator.copy_columns` (a RowValidator is read with BlockValidator's defaults)."""
    if isinstance(validator, RowValidator):
        validator = BlockValidator(validator)
    _STATE.update(validator=validator, format=fmt, pg=pg, quoted=_quoted_cells(fmt.delimiter), parent=os.getpid())
    # fork: the workers inherit the validator and the parent's hash() seed (email hashes compare).
    pool = ProcessPoolExecutor(workers(), mp_context=multiprocessing.get_context("fork"),
                               initializer=_worker_start)
    try:
        pending: deque[tuple[Future[ChunkResult], int]] = deque()
        for chunk, line_before, reached in chunks(path, body_offset(path, header_lines), header_lines):
            pending.append((pool.submit(_work, chunk, line_before), reached))
            if len(pending) >= 2 * workers():
                done, at = pending.popleft()
                yield done.result(), at
        while pending:
            done, at = pending.popleft()
            yield done.result(), at
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _STATE.clear()
