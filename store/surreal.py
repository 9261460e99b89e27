"""SurrealDB-backed persistence for alerts, reports, responses, dead letters and runs.

:class:`SurrealStore` is a thin async wrapper around the official ``surrealdb``
SDK. It works with the embedded engine (``mem://``, ``surrealkv://PATH``) and with
a server (``ws://``, ``wss://``, ``http://``, ``https://``).

Rules this module keeps:

* every statement is a constant string; values, table names and record ids are
  bound variables (record ids as :class:`surrealdb.RecordID`), so nothing a
  producer puts in a document can change the meaning of a query;
* writes are idempotent ``UPSERT ... CONTENT`` on a caller-chosen id, so a retry
  or a replay leaves exactly one record;
* what comes back is plain JSON-able data (``id`` is the id string, datetimes are
  ISO-8601 strings), so callers never need the SDK's types;
* every SDK/engine failure surfaces as :class:`StoreError` whose message names the
  database, the table and what to do about it.
"""

from __future__ import annotations

import builtins
import datetime as _dt
import decimal
import logging
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Final, Protocol

from surrealdb import AsyncSurreal, RecordID, ServerError

from convergence.clock import external_work
from convergence.settings import (
    DB_EMBEDDED_SCHEMES,
    DB_FILE_SCHEMES,
    DB_REMOTE_SCHEMES,
    DB_SCHEMES,
    check_db_url,
    db_scheme,
    redact_url,
)

if TYPE_CHECKING:
    from convergence.settings import Settings

try:  # POSIX advisory locks; absent on Windows, where we fall back to the in-process guard.
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - not exercised on Linux CI
    _fcntl = None  # type: ignore[assignment]

__all__ = ["EDGE_TABLES", "TABLES", "DatabaseMissing", "StoreError", "SurrealStore"]

log = logging.getLogger(__name__)

#: Graph relations, written with RELATE so SurrealDB's traversals (``->involves->station``)
#: see them: report->involves->station, report->cites->event, report->triggered->response,
#: revision->of->report (see :mod:`convergence.store.graph`).
EDGE_TABLES: Final[frozenset[str]] = frozenset({"involves", "cites", "triggered", "of"})

#: The only tables this component writes. Anything else is a caller bug.
TABLES: Final[frozenset[str]] = frozenset(
    {"alert", "report", "response", "dead_letter", "run", "campaign",
     # the report graph and its integrity chain (convergence.store.graph / .integrity)
     "station", "revision", "event", "label", "chain"} | EDGE_TABLES
)

# One list with settings validation (convergence.settings), so a URL passes both or neither.
_EMBEDDED_SCHEMES: Final = DB_EMBEDDED_SCHEMES
_REMOTE_SCHEMES: Final = DB_REMOTE_SCHEMES
_FILE_SCHEMES: Final = DB_FILE_SCHEMES
_HTTP_SCHEMES: Final = frozenset({"http", "https"})

# Largest number of records sent in one statement. One FOR statement is one
# transaction; keeping it bounded keeps request size and lock time predictable.
_CHUNK: Final = 500

# Name for the computed sort key in `list`; unlikely to clash with a real field.
_SORT_KEY: Final = "__convergence_sort"

# All SurrealQL lives here, as constants. Only bound variables vary.
_Q_UPSERT_MANY: Final = "FOR $it IN $items { UPSERT $it.rid CONTENT $it.doc RETURN NONE; };"
# RELATE takes no expression for its endpoints, hence the LETs; an edge's id is in its
# content, so writing it again replaces it (idempotent like UPSERT).
_Q_RELATE_MANY: Final[dict[str, str]] = {
    "involves": "FOR $e IN $items { LET $f = $e.in; LET $t = $e.out; "
                "RELATE $f -> involves -> $t CONTENT $e RETURN NONE; };",
    "cites": "FOR $e IN $items { LET $f = $e.in; LET $t = $e.out; "
             "RELATE $f -> cites -> $t CONTENT $e RETURN NONE; };",
    "triggered": "FOR $e IN $items { LET $f = $e.in; LET $t = $e.out; "
                 "RELATE $f -> triggered -> $t CONTENT $e RETURN NONE; };",
    "of": "FOR $e IN $items { LET $f = $e.in; LET $t = $e.out; "
          "RELATE $f -> of -> $t CONTENT $e RETURN NONE; };",
}
_Q_GET: Final = "SELECT * FROM ONLY $rid"
_Q_COUNT: Final = "SELECT count() AS n FROM type::table($tb) GROUP ALL"
_Q_LIST_DESC: Final = (
    f"SELECT *, type::field($field) AS {_SORT_KEY} FROM type::table($tb) "
    f"ORDER BY {_SORT_KEY} DESC, id DESC LIMIT $limit"
)
_Q_LIST_ASC: Final = (
    f"SELECT *, type::field($field) AS {_SORT_KEY} FROM type::table($tb) "
    f"ORDER BY {_SORT_KEY} ASC, id ASC LIMIT $limit"
)

_FIELD_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

# surrealkv paths open in this process. Two embedded engines on one path do NOT
# share state (each sees only its own writes) and would race on the files, so a
# second open is refused with a clear message instead.
_OPEN_PATHS: set[str] = set()


class StoreError(RuntimeError):
    """The database could not do what was asked; the message says where and what to do."""


class DatabaseMissing(StoreError):
    """A reader asked for a ``surrealkv://`` database that was never written."""


class _Connection(Protocol):
    """The part of the SDK connection classes this module uses."""

    async def use(self, namespace: str, database: str) -> None: ...

    async def query(self, query: str, vars: dict[str, Any] | None = None) -> Any: ...


_scheme = db_scheme


def _reason(exc: BaseException) -> str:
    """First line of an exception, with its type when the text alone is unclear."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _io_failure(exc: BaseException) -> bool:
    """The embedded engine failed to write its files (its message names an OS error)."""
    text = str(exc)
    return "IO error" in text or "os error" in text or "fsync" in text


_IO_MESSAGE: Final = re.compile(r"message=([^\n]*)$")
_IO_OS_ERROR: Final = re.compile(r"(\w[^:=\n]*\(os error \d+\))")


def _io_detail(exc: BaseException) -> str:
    """The operating system's words in an engine I/O error, e.g. 'No space left on
    device (os error 28)' (the engine wraps them in several layers of its own)."""
    text = str(exc).strip()
    m = _IO_MESSAGE.search(text) or _IO_OS_ERROR.search(text)
    return m.group(1).strip() if m else _reason(exc)


_DISK_HINT: Final = ("the disk is full or a file size limit was reached: free space and the "
                     "database heals itself (its torn last record is cut off when it reopens)")


def _check_table(table: str) -> None:
    if table not in TABLES:
        raise ValueError(
            f"unknown store table {table!r}; the store only holds {sorted(TABLES)}. "
            "This is a bug in the caller: pick one of those tables."
        )


def validate_record(table: str, record_id: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    """Check one record and return the content to store (``doc`` without ``id``).

    Raises :class:`ValueError` for an unknown table, an empty id, a non-mapping
    document or a document whose own ``id`` disagrees with ``record_id``.
    The record id is authoritative; a matching ``id`` key in the document is
    dropped because SurrealDB refuses ``CONTENT`` that carries an ``id``.
    """
    _check_table(table)
    if not isinstance(record_id, str) or not record_id:
        raise ValueError(
            f"record id for table {table!r} must be a non-empty string, got {record_id!r}; "
            "ids must be deterministic (e.g. derived from the event key) so retries are idempotent"
        )
    if not isinstance(doc, Mapping):
        raise ValueError(
            f"document {table}:{record_id} must be a mapping, got {type(doc).__name__}"
        )
    content = {_storable_text(str(k)): _storable(v) for k, v in doc.items()}
    if "id" in content:
        own = content.pop("id")
        own_str = own.id if isinstance(own, RecordID) else own
        if str(own_str) != record_id:
            raise ValueError(
                f"document {table}:{record_id} carries a different id {own!r}; "
                "drop the 'id' key or make it equal to the record id"
            )
    if table in EDGE_TABLES:
        for end in ("in", "out"):
            _endpoint(table, record_id, end, content.get(end))
    return content


def _endpoint(table: str, record_id: str, end: str, value: Any) -> RecordID:
    """An edge's ``in``/``out`` (``"table:id"`` text) as a record id; ValueError if malformed."""
    if isinstance(value, str):
        tb, sep, rid = value.partition(":")
        if sep and rid and tb in TABLES and tb not in EDGE_TABLES:
            return RecordID(tb, rid)
    raise ValueError(
        f"edge {table}:{record_id} needs {end!r} as 'TABLE:ID' naming a record of one of "
        f"{sorted(TABLES - EDGE_TABLES)}, got {value!r:.80}"
    )


def _edge_row(table: str, record_id: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    content = validate_record(table, record_id, doc)
    content["id"] = RecordID(table, record_id)
    content["in"] = _endpoint(table, record_id, "in", content["in"])
    content["out"] = _endpoint(table, record_id, "out", content["out"])
    return content


def _storable_text(text: str) -> str:
    """Text the engine can hand back: it stores a NUL byte but then cannot read the
    record again ("string contained a null byte"), and cannot encode lone surrogates at
    all; both are written as visible escapes (``\\x00``, ``\\udc80``)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _storable(value: Any) -> Any:
    """``value`` with every string made storable (see :func:`_storable_text`)."""
    if isinstance(value, str):
        return _storable_text(value)
    if isinstance(value, Mapping):
        return {_storable_text(str(k)): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """SDK values -> JSON-able Python (nested record ids become ``table:id`` strings)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    # RecordID, Table, Duration, Geometry...: their str() is the SurrealQL literal.
    return str(value)


def _row(record: Any) -> dict[str, Any]:
    """One stored record as a plain dict whose ``id`` is the caller's id string."""
    if not isinstance(record, Mapping):
        raise StoreError(f"unexpected record shape from SurrealDB: {type(record).__name__}")
    out = {str(k): _plain(v) for k, v in record.items() if k not in ("id", _SORT_KEY)}
    rid = record.get("id")
    if isinstance(rid, RecordID):
        out["id"] = rid.id if isinstance(rid.id, str) else _plain(rid.id)
    elif rid is not None:
        out["id"] = _plain(rid)
    return out


class SurrealStore:
    """Async access to the Convergence tables in one SurrealDB namespace/database.

    Build it from a URL or from settings, then use it as an async context manager
    (or call :meth:`open` / :meth:`close`). Records are addressed by
    ``(table, record_id)`` with deterministic ids, so writing twice is harmless.

    Example::

        async with SurrealStore("mem://", "convergence", "main") as store:
            await store.upsert("alert", "a-1", {"score": 0.9, "created_at": "2024-05-01T00:00:00Z"})
            await store.get("alert", "a-1")
            # {'score': 0.9, 'created_at': '2024-05-01T00:00:00Z', 'id': 'a-1'}

    One process should hold one open store per ``surrealkv://`` path; a second
    open of the same path (in this or another process) raises :class:`StoreError`.
    """

    def __init__(
        self,
        url: str,
        namespace: str,
        database: str,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        scheme = _scheme(url)
        if scheme not in DB_SCHEMES:
            raise StoreError(
                f"unsupported SurrealDB URL {redact_url(url)!r}: the scheme must be one of "
                f"{sorted(DB_SCHEMES)}; use surrealkv://PATH for a "
                "local file, mem:// for a throwaway database or ws://HOST:PORT for a server"
            )
        problem = check_db_url(url)
        if problem is not None:
            raise StoreError(f"unusable SurrealDB URL {redact_url(url)!r}: {problem}")
        if not namespace or not database:
            raise StoreError(
                f"SurrealDB namespace and database must be non-empty (got {namespace!r}/"
                f"{database!r}); set CONVERGENCE_DB_NAMESPACE / CONVERGENCE_DB_DATABASE"
            )
        self._url = url
        self._scheme = scheme
        self.namespace = namespace
        self.database = database
        self._user = user or None
        self._password = password or None
        self._conn: _Connection | None = None
        self._lock_key: str | None = None
        # surrealkv: the resolved absolute path the engine opens (~ and symlinks followed)
        self._engine_url: str | None = None
        self._lock_file: IO[str] | None = None
        # Set when a server connection failed at the transport level; the next
        # call reconnects, so a restarted server heals without restarting us.
        self._broken = False

    @classmethod
    def from_settings(cls, settings: Settings) -> SurrealStore:
        """A store for ``settings.db_url`` with the configured namespace, database and login."""
        return cls(
            settings.db_url,
            settings.db_namespace,
            settings.db_database,
            user=settings.db_user or None,
            password=settings.db_password or None,
        )

    # -- lifecycle ----------------------------------------------------------
    @property
    def url(self) -> str:
        """The database URL with any credentials removed (safe to log)."""
        return redact_url(self._url)

    @property
    def is_open(self) -> bool:
        """True between a successful :meth:`open` and :meth:`close`."""
        return self._conn is not None

    def _kv_path(self) -> Path:
        return Path(self._url.split("://", 1)[1]).expanduser()

    async def open(self, *, create: bool = True) -> None:
        """Connect (creating the surrealkv directory if needed), sign in and select ns/db.

        ``create=False`` is for readers: a ``surrealkv://`` path where no database was
        ever written is a :class:`StoreError` naming it, and nothing is created there.
        Calling it on an open store does nothing.
        """
        if self._conn is not None:
            return
        if self._scheme in _FILE_SCHEMES:
            self._acquire_path(create=create)
        try:
            with external_work():
                self._conn = await self._connect()
        except BaseException:
            self._release_path()
            raise
        log.info("store opened %s (ns=%s db=%s)", self.url, self.namespace, self.database)

    async def _connect(self) -> _Connection:
        try:
            conn: Any = AsyncSurreal(self._engine_url or self._url)
            if self._scheme not in _HTTP_SCHEMES:  # HTTP sends one request per call: no session
                await conn.connect()
            if self._scheme in _REMOTE_SCHEMES and self._user is not None:
                await conn.signin({"username": self._user, "password": self._password or ""})
            await conn.use(self.namespace, self.database)
            if self._scheme in _HTTP_SCHEMES:
                await conn.version()  # nothing was sent yet: make sure a server answers
        except Exception as exc:
            if self._scheme in _FILE_SCHEMES and _io_failure(exc):
                raise StoreError(f"cannot open SurrealDB at {self.url}: {_io_detail(exc)}; "
                                 f"{_DISK_HINT}") from exc
            raise StoreError(
                f"cannot open SurrealDB at {self.url} (ns={self.namespace} db={self.database}): "
                f"{_reason(exc)}; {self._open_hint()}"
            ) from exc
        connection: _Connection = conn
        return connection

    def _open_hint(self) -> str:
        if self._scheme in _FILE_SCHEMES:
            return "check the path is writable and the disk is not full, or use --db mem://"
        if self._scheme in _REMOTE_SCHEMES:
            login = (
                "check CONVERGENCE_DB_USER / CONVERGENCE_DB_PASSWORD"
                if self._user
                else "set CONVERGENCE_DB_USER / CONVERGENCE_DB_PASSWORD if the server needs a login"
            )
            return f"check the server is running and reachable; {login}"
        return "this is an in-memory database; report it as a bug"

    def _acquire_path(self, *, create: bool = True) -> None:
        path = self._kv_path()
        if not create and not path.is_dir():
            what = "is a file, not a database directory" if path.exists() else "does not exist"
            raise DatabaseMissing(
                f"no database at {self.url}: {path} {what}. Check --db / CONVERGENCE_DB "
                "(`convergence config show` prints the one in force); `convergence run` "
                "creates one"
            )
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            # One lock per database, however it is named: through a symlink (to the
            # directory or one of its parents) two processes must still meet here.
            path = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise StoreError(
                f"cannot open SurrealDB at {self.url}: cannot create directory {path.parent} "
                f"({_reason(exc)}); check the path is writable or use --db mem://"
            ) from exc
        key = str(path)
        self._engine_url = f"{self._scheme}://{path}"
        if key in _OPEN_PATHS:
            raise StoreError(
                f"cannot open SurrealDB at {self.url}: it is already open in this process; "
                "share the one SurrealStore (two embedded engines on one path do not see "
                "each other's writes)"
            )
        lock_path = path.with_name(path.name + ".lock")
        lock_file: IO[str] | None = None
        if _fcntl is not None:
            try:
                lock_file = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held open
            except OSError as exc:
                raise StoreError(
                    f"cannot open SurrealDB at {self.url}: cannot create its lock file "
                    f"{lock_path} ({_reason(exc)}); the directory {path.parent} must be "
                    "writable - pick another path or use --db mem://"
                ) from exc
            try:
                _fcntl.flock(lock_file.fileno(), _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            except OSError as exc:
                lock_file.seek(0)
                holder = lock_file.read().strip()[:20]
                lock_file.close()
                raise StoreError(
                    f"cannot open SurrealDB at {self.url}: another process "
                    f"{'(pid ' + holder + ') ' if holder else ''}has it open ({lock_path}); "
                    "stop that process, or point --db at a different path / a server URL"
                ) from exc
            # Record who holds it, for the message above in the next contender.
            lock_file.seek(0)
            lock_file.truncate()
            lock_file.write(str(os.getpid()))
            lock_file.flush()
        _OPEN_PATHS.add(key)
        self._lock_key = key
        self._lock_file = lock_file

    def _release_path(self) -> None:
        if self._lock_key is not None:
            _OPEN_PATHS.discard(self._lock_key)
            self._lock_key = None
        if self._lock_file is not None:
            # Closing the descriptor releases the flock.
            self._lock_file.close()
            self._lock_file = None

    async def close(self) -> None:
        """Close the connection and release the surrealkv lock. Safe to call twice."""
        conn, self._conn = self._conn, None
        try:
            if conn is not None and self._scheme not in _HTTP_SCHEMES:  # no session to close
                close = getattr(conn, "close", None)
                if close is not None:
                    try:
                        await close()
                    except Exception as exc:  # closing is best effort; data is already committed
                        log.warning("closing SurrealDB at %s failed: %s", self.url, _reason(exc))
        finally:
            self._release_path()
        if conn is not None:
            log.info("store closed %s", self.url)

    async def __aenter__(self) -> SurrealStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- queries ------------------------------------------------------------
    async def _query(self, what: str, sql: str, params: dict[str, Any]) -> Any:
        if self._conn is None:
            raise StoreError(
                f"store {self.url} is not open while trying to {what}; "
                "call `await store.open()` or use `async with store:` first"
            )
        if self._broken:
            await self._reconnect(what)
        assert self._conn is not None
        try:
            with external_work():
                return await self._conn.query(sql, params)
        except Exception as exc:
            # A ServerError is the database answering "no"; anything else from a
            # server connection means the transport is gone and must be rebuilt.
            if self._scheme in _REMOTE_SCHEMES and not isinstance(exc, ServerError):
                self._broken = True
            # An embedded file engine that hit an I/O error (disk full, file too large)
            # refuses every later commit ("fsync failed") even once space is back, and
            # its log ends in a torn record. Reopening it truncates the torn tail (the
            # engine repairs on open) and writing works again once there is space.
            if self._scheme in _FILE_SCHEMES and _io_failure(exc):
                self._broken = True
                raise StoreError(
                    f"SurrealDB at {self.url} could not write its files to {what}: "
                    f"{_io_detail(exc)}; {_DISK_HINT}; the call is safe to retry"
                ) from exc
            raise StoreError(
                f"SurrealDB at {self.url} failed to {what}: {_reason(exc)}; {self._query_hint()}"
            ) from exc

    def _query_hint(self) -> str:
        if self._scheme in _REMOTE_SCHEMES:
            return "check the server is up and its logs; the call is safe to retry"
        if self._scheme in _FILE_SCHEMES:
            return "check the disk is not full and the path is writable; the call is safe to retry"
        return "the call is safe to retry"

    async def _reconnect(self, what: str) -> None:
        old, self._conn = self._conn, None
        if old is not None and self._scheme not in _HTTP_SCHEMES:
            close = getattr(old, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception as exc:  # the old socket is dead anyway
                    log.debug("closing broken connection to %s: %s", self.url, _reason(exc))
        try:
            with external_work():
                self._conn = await self._connect()
        except StoreError as exc:
            # Keep the store "open" with a dead connection so the next call retries.
            self._conn = old
            raise StoreError(f"{exc} (while trying to {what})") from exc.__cause__
        self._broken = False
        log.info("store reconnected to %s", self.url)

    @staticmethod
    def validate(table: str, record_id: str, doc: Mapping[str, Any]) -> None:
        """Raise :class:`ValueError` now if ``upsert`` would reject this record.

        :class:`~convergence.store.writer.BatchedWriter` calls this at submit time
        so a bad record fails its producer instead of wedging the write queue.
        """
        validate_record(table, record_id, doc)

    async def upsert(self, table: str, record_id: str, doc: Mapping[str, Any]) -> None:
        """Create or replace ``table:record_id`` with ``doc`` (idempotent)."""
        await self.upsert_many(table, [(record_id, doc)])

    async def upsert_many(self, table: str, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Create or replace many records of one table (idempotent).

        Every record is validated before anything is written. Large inputs go in
        chunks of 500 records; each chunk is one transaction, and a failed call is
        safe to retry as a whole.
        """
        _check_table(table)
        if table in EDGE_TABLES:
            rows = [_edge_row(table, rid, doc) for rid, doc in items]
            sql = _Q_RELATE_MANY[table]
        else:
            rows = [
                {"rid": RecordID(table, rid), "doc": validate_record(table, rid, doc)}
                for rid, doc in items
            ]
            sql = _Q_UPSERT_MANY
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            await self._query(
                f"upsert {len(chunk)} record(s) into table {table!r}", sql, {"items": chunk}
            )

    async def get(self, table: str, record_id: str) -> dict[str, Any] | None:
        """The record ``table:record_id`` as a plain dict, or ``None`` if absent."""
        _check_table(table)
        if not isinstance(record_id, str) or not record_id:
            raise ValueError(
                f"get({table!r}): record id must be a non-empty string, got {record_id!r}"
            )
        result = await self._query(
            f"read {table}:{record_id}", _Q_GET, {"rid": RecordID(table, record_id)}
        )
        if result is None or result == []:
            return None
        if isinstance(result, list):  # some engine versions wrap ONLY results anyway
            result = result[0]
        return _row(result)

    async def list(
        self,
        table: str,
        limit: int = 50,
        order_by: str = "created_at",
        descending: bool = True,
    ) -> builtins.list[dict[str, Any]]:
        """Up to ``limit`` records of ``table`` ordered by the field ``order_by``.

        Records without that field sort as if it were NONE (last when descending).
        """
        _check_table(table)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"list({table!r}): limit must be an int >= 0, got {limit!r}")
        if not _FIELD_RE.match(order_by):
            raise ValueError(
                f"list({table!r}): order_by must be a field name like 'created_at' or "
                f"'meta.ts', got {order_by!r}"
            )
        if limit == 0:
            return []
        result = await self._query(
            f"list table {table!r} by {order_by}",
            _Q_LIST_DESC if descending else _Q_LIST_ASC,
            {"tb": table, "field": order_by, "limit": limit},
        )
        return [_row(r) for r in result or []]

    async def select(
        self, what: str, sql: str, params: Mapping[str, Any] | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Rows of one read-only query, as plain dicts (``id`` is the id string).

        ``sql`` must be a constant statement (the graph and integrity queries of
        :mod:`convergence.store.graph` / :mod:`convergence.store.integrity`); every value
        goes in ``params``. ``what`` says what is being read, for the error message.
        """
        result = await self._query(what, sql, dict(params or {}))
        if result is None:
            return []
        if not isinstance(result, list):
            result = [result]
        return [_row(r) if isinstance(r, Mapping) else {"value": _plain(r)} for r in result]

    async def count(self, table: str) -> int:
        """Number of records in ``table``."""
        _check_table(table)
        result = await self._query(f"count table {table!r}", _Q_COUNT, {"tb": table})
        if not result:
            return 0
        return int(result[0]["n"])

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"SurrealStore({self.url!r}, ns={self.namespace!r}, db={self.database!r}, {state})"
