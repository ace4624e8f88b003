"""Read replica routing (issue 22): read-only work goes to the `replica` database when
DATABASE_REPLICA_URL is set; everything else stays on the primary (`default`).

A read goes to the replica only when all of these hold, otherwise to the primary:
1. the code running is marked read-only, with the decorator `replica_reads` or the context manager
   `replica_ok()` (the lead view and its export, segment previews, the operations page's history,
   the contacts' CSV export, workflow email and broadcast reports and their CSV);
2. no transaction is open on the primary: a read inside `atomic()` belongs with its writes;
3. this request or job has not written to the primary: never read your own writes from a replica
   that may not have replayed them yet. Writes are noticed by the router (`db_for_write`) and by
   an execute wrapper on the primary connection (raw SQL), per request (`ReplicaScopeMiddleware`)
   or, outside a request, from the start of the marked function. Across requests: a signed-in
   client whose request wrote gets a signed cookie saying when (`WROTE_COOKIE`), and its marked
   reads stay on the primary for `read_own_writes_seconds()` after (the redirect after a POST shows
   the change, not a replica's older copy). Anonymous public endpoints (tracking, the event API)
   get no cookie: nobody reads their writes back;
4. the replica answers, is a standby, and has replayed what the primary had written when it was
   last checked, or lags by at most DATABASE_REPLICA_MAX_LAG seconds (checked at most once a
   second per process; a replica found down is tried again after DOWN_RETRY_SECONDS).

A replica that fails in the middle of marked work (stopped, restarted, a recovery conflict) makes
the marked function run again on the primary: it is read-only, so running it twice is safe. A
streamed response (CSV export) that already sent rows cannot start again; it ends short.
Changes of state (down, lagging, back in use) are logged once each; `/metrics` shows the current
one (`replica_health`).
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, InterfaceError, OperationalError, connections
from django.db.models import Model
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse
from django.template.response import SimpleTemplateResponse

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

REPLICA = "replica"
HEALTH_TTL_SECONDS = 1.0  # a replica check is trusted this long (one query on each side per process)
DOWN_RETRY_SECONDS = 5.0  # a replica that did not answer is tried again after this long
# Always read on the primary: a session row written by a login a moment ago may not be on the replica yet.
PRIMARY_ONLY_APPS = frozenset({"sessions"})
# Statements that change nothing; anything else on the primary counts as a write (conservative).
READ_PREFIXES = ("select", "show", "set ", "savepoint", "release savepoint", "rollback to savepoint", "explain")

# Lag. On the primary: its WAL insert position (not pg_current_wal_lsn(), the write position: with
# asynchronous commit, DELIVERY_ASYNC_COMMIT, a committed row can still sit in WAL buffers), and how
# far into its WAL page that is. On the replica: is it a standby, how many bytes of that it has not
# replayed, and how old the last transaction it replayed is. Caught up (lag 0) when nothing is left;
# else the lag is that age. Neither side alone would do: an idle primary commits nothing, so replay
# age alone calls a current replica late; a replica cut off from its primary receives nothing more,
# so its own receive and replay positions would call a stale one current.
PRIMARY_LSN_SQL = """
SELECT lsn::text, (pg_wal_lsn_diff(lsn, '0/0') % current_setting('wal_block_size')::numeric)::int
FROM pg_current_wal_insert_lsn() AS lsn
"""
LAG_SQL = """
SELECT pg_is_in_recovery(),
       pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())::float8,
       EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
"""
# Read your writes across requests: when this browser's last writing request ended (wall clock, as
# text), signed with SECRET_KEY so a client cannot forge one that keeps it on the primary for good.
WROTE_COOKIE = "leadflow_wrote_at"
WROTE_SALT = "config.db_router.wrote_at"
# When the last record ended exactly at a page end, the insert position is past the next page's
# header (24 bytes, 40 at a segment's start) while replay stands at the boundary: nothing is missing.
WAL_PAGE_HEADER_MAX = 40


@dataclass
class _Scope:
    """One request or job: did it write to the primary? Did its client write a moment ago?"""

    wrote: bool = False
    wrote_recently: bool = False  # an earlier request of this client, read_own_writes_seconds() ago at most


_scope: ContextVar[_Scope | None] = ContextVar("leadflow_db_scope", default=None)
_replica_ok: ContextVar[bool] = ContextVar("leadflow_replica_ok", default=False)


@dataclass(frozen=True)
class ReplicaHealth:
    state: str  # "ok" (answered as a standby), "down" (did not answer) or "not_standby" (promoted?)
    lag: float | None  # seconds behind the primary when it answered; inf: never replayed anything yet
    reason: str
    checked_at: float  # time.monotonic()

    @property
    def usable(self) -> bool:
        return self.state == "ok" and self.lag is not None and self.lag <= settings.DATABASE_REPLICA_MAX_LAG

    @property
    def label(self) -> str:
        """For the log: what changed."""
        if self.state == "ok":
            return "in use" if self.usable else "lagging"
        return self.state


_health: ReplicaHealth | None = None
_health_lock = threading.Lock()


def _now() -> float:
    """Wall clock: a write marker is set by one process and read by another, on any host."""
    return time.time()


def read_own_writes_seconds() -> float:
    """How long after a client's write its marked reads stay on the primary. A replica in use lagged
    at most DATABASE_REPLICA_MAX_LAG when last checked, and is trusted HEALTH_TTL_SECONDS after that
    check: past both, it has replayed the write."""
    return settings.DATABASE_REPLICA_MAX_LAG + HEALTH_TTL_SECONDS


def replica_configured() -> bool:
    return REPLICA in connections.settings


def replica_health() -> ReplicaHealth | None:
    """The replica's state as this process last saw it, checked again when older than
    HEALTH_TTL_SECONDS (DOWN_RETRY_SECONDS when it was down). None: no replica configured."""
    if not replica_configured():
        return None
    health = _health
    if health is None or _stale(health):
        with _health_lock:
            health = _health
            if health is None or _stale(health):
                health = _measure()
                _remember(health)
    return health


def forget_health() -> None:
    """Check the replica again on the next read (tests, and after its connection failed)."""
    global _health
    _health = None


def _stale(health: ReplicaHealth) -> bool:
    ttl = DOWN_RETRY_SECONDS if health.state == "down" else HEALTH_TTL_SECONDS
    return time.monotonic() - health.checked_at >= ttl


def _measure() -> ReplicaHealth:
    now = time.monotonic()
    try:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute(PRIMARY_LSN_SQL)
            primary_lsn, page_offset = cursor.fetchone()
    except DatabaseError as exc:  # the primary's own failure surfaces in the query that needed it
        return ReplicaHealth("down", None, f"the primary did not answer the check: {exc}", now)
    try:
        with connections[REPLICA].cursor() as cursor:
            cursor.execute(LAG_SQL, [primary_lsn])
            in_recovery, behind, replay_age = cursor.fetchone()
    except DatabaseError as exc:
        _close_replica()
        return ReplicaHealth("down", None, f"the replica did not answer: {exc}".strip(), now)
    if not in_recovery:
        return ReplicaHealth("not_standby", None, "the replica is not in recovery (promoted, or not a standby)", now)
    caught_up = behind is not None and (behind <= 0 or behind == page_offset <= WAL_PAGE_HEADER_MAX)
    lag = 0.0 if caught_up else (math.inf if replay_age is None else max(0.0, float(replay_age)))
    return ReplicaHealth("ok", lag, "" if caught_up else f"{lag:.1f} s behind the primary", now)


def _remember(health: ReplicaHealth) -> None:
    global _health
    before, _health = _health, health
    if before is not None and before.label == health.label:
        return
    if health.usable:
        if before is not None:
            log.info("read replica back in use (%.1f s behind)", health.lag)
    else:
        log.warning("read replica %s: reads go to the primary (%s)", health.label, health.reason,
                    extra={"replica_state": health.label})


def _close_replica() -> None:
    replica = connections[REPLICA]
    try:
        replica.close()
    except DatabaseError:  # a connection the server already dropped
        pass
    replica.errors_occurred = False  # the next connection starts clean: a later error is a new one


def _replica_failed() -> bool:
    """Did the replica connection raise a connection-level error (Django flags it on the wrapper)?"""
    return replica_configured() and connections[REPLICA].errors_occurred


# --- Marking read-only work --------------------------------------------------------------------------------


@contextmanager
def tracking_writes() -> Iterator[_Scope]:
    """The scope of one request or job: notes any write to the primary, so that later reads in it
    stay there. Nested uses share the outer scope."""
    current = _scope.get()
    if current is not None:
        yield current
        return
    scope = _Scope()
    token = _scope.set(scope)
    try:
        with connections[DEFAULT_DB_ALIAS].execute_wrapper(functools.partial(_spy_writes, scope)):
            yield scope
    finally:
        _scope.reset(token)


def _spy_writes(scope: _Scope, execute: Callable[..., Any], sql: Any, params: Any, many: bool,
                context: dict[str, Any]) -> Any:
    if not scope.wrote and not is_read_statement(sql):
        scope.wrote = True
    return execute(sql, params, many, context)


def is_read_statement(sql: Any) -> bool:
    if not isinstance(sql, str):
        return False
    text = sql.lstrip()
    while text.startswith("/*") and "*/" in text:  # a leading comment (tracing's sqlcommenter)
        text = text[text.index("*/") + 2:].lstrip()
    return text[:24].lower().startswith(READ_PREFIXES)


@contextmanager
def replica_ok() -> Iterator[None]:
    """Mark a block read-only: its reads may go to the replica (the module's rules). Only what runs
    inside, and with no second try on the primary if the replica fails: prefer `replica_reads` on a
    function, which has both."""
    with tracking_writes():
        token = _replica_ok.set(True)
        try:
            yield
        finally:
            _replica_ok.reset(token)


def replica_reads(func: F) -> F:
    """Mark a read-only view or job: `replica_ok` around it, plus rendering a TemplateResponse and
    streaming a StreamingHttpResponse inside the mark (both run after the view returned), and running
    it again on the primary when the replica fails. Put it under the access checks, so the session
    and user are read before."""

    @functools.wraps(func)
    def marked(*args: Any, **kwargs: Any) -> Any:
        try:
            with replica_ok():
                return _finish(func(*args, **kwargs))
        except (OperationalError, InterfaceError) as exc:
            if not _replica_failed():
                raise
            replica_failed(exc)
        return func(*args, **kwargs)  # on the primary now: the replica counts as down

    return cast(F, marked)


def replica_failed(exc: BaseException) -> None:
    """The replica connection broke in the middle of marked work: it counts as down (logged once)
    until it answers a check again, DOWN_RETRY_SECONDS later."""
    _close_replica()
    _remember(ReplicaHealth("down", None, f"failed during a read: {exc}".strip(), time.monotonic()))


def replica_broke(exc: BaseException) -> bool:
    """For marked code that turns database errors into messages (segment previews): True when `exc`
    came from a broken replica connection; re-raise it and `replica_reads` retries on the primary."""
    return isinstance(exc, (OperationalError, InterfaceError)) and _replica_ok.get() and _replica_failed()


def _finish(response: Any) -> Any:
    if isinstance(response, StreamingHttpResponse) and not response.is_async:
        chunks = cast(Iterator[bytes], response.streaming_content)
        response.streaming_content = _StreamInScope(chunks, _scope.get())
    elif isinstance(response, SimpleTemplateResponse) and not response.is_rendered:
        response.render()  # a TemplateResponse's queries run while rendering: inside the mark
    return response


class _StreamInScope:
    """Each chunk of a streamed response is produced inside the mark and the request's write scope
    (the view has returned by then, and the WSGI server iterates in its own context)."""

    def __init__(self, chunks: Iterator[Any], scope: _Scope | None) -> None:
        self.chunks = chunks
        self.scope = scope

    def __iter__(self) -> _StreamInScope:
        return self

    def __next__(self) -> Any:
        scope_token = _scope.set(self.scope)
        ok_token = _replica_ok.set(True)
        try:
            return next(self.chunks)
        finally:
            _replica_ok.reset(ok_token)
            _scope.reset(scope_token)


def replica_allowed() -> bool:
    """Would a read here go to the replica (all four rules)?"""
    if not _replica_ok.get() or not replica_configured():
        return False
    scope = _scope.get()
    if scope is not None and (scope.wrote or scope.wrote_recently):
        return False
    if connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return False
    health = replica_health()
    return health is not None and health.usable


class ReplicaRouter:
    """DATABASE_ROUTERS entry. Without a replica configured every answer is the primary."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str:
        if model._meta.app_label in PRIMARY_ONLY_APPS:
            return DEFAULT_DB_ALIAS
        return REPLICA if replica_allowed() else DEFAULT_DB_ALIAS

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        scope = _scope.get()
        if scope is not None:
            scope.wrote = True
        return DEFAULT_DB_ALIAS  # also for objects read from the replica

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool:
        return True  # one database, two copies

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        return False if db == REPLICA else None  # a standby replays the primary's migrations


class ReplicaScopeMiddleware:
    """Tracks writes for the whole request (a middleware or an earlier part of the view may write
    before the marked reads), and across a signed-in client's requests with WROTE_COOKIE. Nothing to
    do without a replica."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not replica_configured():
            return self.get_response(request)
        with tracking_writes() as scope:
            scope.wrote_recently = _wrote_recently(request)
            response = self.get_response(request)
            if scope.wrote and _signed_in(request):
                _mark_wrote(response)
            return response


def _wrote_recently(request: HttpRequest) -> bool:
    value = request.get_signed_cookie(WROTE_COOKIE, default=None, salt=WROTE_SALT)  # forged or garbled: None
    try:
        age = _now() - float(value) if value is not None else math.inf
    except ValueError:
        return False
    window = read_own_writes_seconds()
    return -window < age < window  # a little ahead: another web host's clock


def _signed_in(request: HttpRequest) -> bool:
    """A staff user's browser (AuthenticationMiddleware ran): the only clients that read back what
    they wrote. Asked after the view, when the session is loaded anyway."""
    user = getattr(request, "user", None)
    return user is not None and user.is_authenticated


def _mark_wrote(response: HttpResponseBase) -> None:
    response.set_signed_cookie(
        WROTE_COOKIE, f"{_now():.3f}", salt=WROTE_SALT, max_age=math.ceil(read_own_writes_seconds()),
        secure=settings.SESSION_COOKIE_SECURE, httponly=True, samesite="Lax")
