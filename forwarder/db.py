"""One small database interface over SQLite (``sqlite3`` on a thread per connection, WAL) and
PostgreSQL (asyncpg).

SQL is written once with PostgreSQL's ``$1`` placeholders; the SQLite backend rewrites them to
``?1``. Rows come back as tuples. Driver errors are translated to :mod:`errors` types here.
Migrations are plain SQL files under ``forwarder/migrations/<dialect>/NNNN_name.sql``, applied
in order once each and recorded in ``schema_migrations``.
"""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from functools import lru_cache, partial
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from errors import StoreConflict, StoreError, StoreUnavailable

Row = tuple[Any, ...]
T = TypeVar("T")
#: A transaction body for :meth:`Database.run_transaction`.
Body = Callable[["Executor"], Awaitable[T]]
_PLACEHOLDER = re.compile(r"\$(\d+)")
MIGRATION_LOCK_ID = 0x4C41504F52  # "LAPOR": the advisory lock that serialises migrations


class Executor(ABC):
    """Runs statements: a whole database, or one open transaction."""

    @abstractmethod
    async def execute(self, sql: str, *args: Any) -> None:
        """Run one statement."""

    @abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """Run one statement and return every row."""

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        """Run one statement and return the first row, or None."""
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None


class Database(Executor):
    """A database that runs statements and transactions."""

    dialect: str

    @abstractmethod
    def transaction(self) -> Any:
        """``async with db.transaction() as tx:``: statements on ``tx`` commit together."""

    async def run_transaction(self, body: Body[T]) -> T:
        """Run ``body(tx)`` in one transaction and return what it returns (rolled back if it
        raises). ``body`` may await nothing but statements on ``tx``: SQLite runs it whole on
        the connection's thread, one trip from the event loop, so the write lock is held only
        for as long as the statements take, not for the event loop's turns between them."""
        async with self.transaction() as tx:
            return await body(tx)

    @abstractmethod
    async def close(self) -> None:
        """Close every connection."""

    async def sibling(self, name: str, *, searched: bool = False) -> Database:
        """A store for a writer that must never wait on this one's transactions. SQLite: the
        file ``<stem>-<name>.db`` beside this one, migrated the same way (a file has one write
        lock; a second connection to the same file would wait on it, in SQLite's busy handler,
        for as long as a transaction here lasts), with a reader connection of its own when
        ``searched``. PostgreSQL: this pool (rows lock, not the database). Close it with
        :meth:`close` when it is not ``self``."""
        return self

    async def migrate(self) -> list[str]:
        """Apply the migrations not yet applied; return their names."""
        await self.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
        )
        done = {row[0] for row in await self.fetch("SELECT name FROM schema_migrations")}
        applied = []
        folder = resources.files("forwarder").joinpath("migrations", self.dialect)
        for item in sorted(folder.iterdir(), key=lambda t: t.name):
            if not item.name.endswith(".sql") or item.name in done:
                continue
            async with self.transaction() as tx:
                await tx.execute_script(item.read_text("utf-8"))
                await tx.execute(
                    "INSERT INTO schema_migrations (name, applied_at) VALUES ($1, $2)"
                    " ON CONFLICT DO NOTHING",
                    item.name,
                    _now_text(),
                )
            applied.append(item.name)
        return applied


def _now_text() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()


# --------------------------------------------------------------------------- SQLite


def _sqlite_error(exc: Exception) -> Exception:
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and (
        "locked" in text or "full" in text or "disk i/o" in text or "unable to open" in text
    ):
        return StoreUnavailable(f"sqlite: {exc}")
    return StoreError(f"sqlite: {exc}")


#: SQLite page cache of the reader connection, KiB: the near-duplicate index's fingerprints,
#: and the status lookups ...
SQLITE_CACHE_KIB = 32 * 1024
#: ... and of a searched sibling's reader (the near-duplicate index's band rows, hot keys).
SQLITE_SEARCHED_CACHE_KIB = 32 * 1024
#: ... of the writer connection: appends and the outbox's claims touch few pages again (the
#: rest of a page's life is in the OS page cache), so every page it ever touched need not stay
#: in the process.
SQLITE_WRITER_CACHE_KIB = 16 * 1024
#: ... of a sibling store (the webhook inbox: a queue, appended and deleted, never searched).
SQLITE_SIBLING_CACHE_KIB = 2 * 1024


def placeholders(count: int, start: int = 1) -> str:
    """``$start, ..., $(start + count - 1)``: an IN list, or one row of a VALUES clause."""
    return ", ".join(f"${i}" for i in range(start, start + count))


def row_placeholders(rows: int, width: int, start: int = 1) -> str:
    """``($1, $2), ($3, $4)``: ``rows`` rows of ``width`` parameters for a multi-row VALUES."""
    return ", ".join(f"({placeholders(width, start + i * width)})" for i in range(rows))


@lru_cache(maxsize=512)
def _sqlite_sql(sql: str) -> str:
    """``$1`` placeholders as SQLite's ``?1`` (cached: the same statements come back, and a
    multi-row INSERT has thousands of placeholders)."""
    return _PLACEHOLDER.sub(r"?\1", sql)


def _sqlite_fetch(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[Row]:
    """Run one statement on ``conn`` (on its thread); every row, as tuples."""
    try:
        return conn.execute(_sqlite_sql(sql), args).fetchall()
    except sqlite3.Error as exc:
        raise _sqlite_error(exc) from exc


class _SqliteThread:
    """One ``sqlite3`` connection and the one thread that uses it. Calls run there one at a
    time, in the order they were made; the event loop awaits each (one trip: a hand-off to
    the thread and a wake-up back)."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{name}")
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path, *, cache_kib: int, query_only: bool = False
                   ) -> _SqliteThread:
        thread = cls(f"{path.stem}{'-reader' if query_only else ''}")
        try:
            await thread.call(thread._open, path, cache_kib, query_only)
        except sqlite3.Error as exc:
            await thread.close()
            raise StoreUnavailable(f"cannot open {path}: {exc}") from exc
        return thread

    def _open(self, path: Path, cache_kib: int, query_only: bool) -> None:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA foreign_keys=ON")
            # A page cache of cache_kib (SQLITE_*_CACHE_KIB; the default is 2 MiB). No memory
            # map: a read fault on a mapped page (I/O error, a full tmpfs) would kill the
            # process with SIGBUS instead of raising an error.
            conn.execute(f"PRAGMA cache_size=-{cache_kib}")
            if query_only:
                conn.execute("PRAGMA query_only=1")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection: to be used only by functions running in :meth:`call`."""
        if self._conn is None:
            raise StoreError("sqlite: the connection is closed")
        return self._conn

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the connection's thread. A call once made runs even if the caller
        is cancelled meanwhile (a queued ROLLBACK or COMMIT must not be dropped)."""
        try:
            job = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        except RuntimeError as exc:  # the thread was shut down
            raise StoreError(f"sqlite: {exc}") from exc
        return await asyncio.shield(job)

    async def fetch(self, sql: str, args: Sequence[Any]) -> list[Row]:
        return await self.call(_sqlite_fetch, self.conn, sql, args)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.call(conn.close)
        self._pool.shutdown(wait=False)


class _SqliteTx(Executor):
    """Statements of a transaction (or lone statements) sent from the event loop: one trip
    to the connection's thread each."""

    def __init__(self, thread: _SqliteThread) -> None:
        self._thread = thread

    async def execute(self, sql: str, *args: Any) -> None:
        await self._thread.fetch(sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._thread.fetch(sql, args)

    async def execute_script(self, script: str) -> None:
        for statement in _split_sql(script):
            await self.execute(statement)


class _InThreadTx(Executor):
    """The statements of a :meth:`Database.run_transaction` body, run where the body runs (on
    the connection's thread): each await completes at once."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        _sqlite_fetch(self._conn, sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return _sqlite_fetch(self._conn, sql, args)


def _begin(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE on the writer. A transaction still open here was abandoned (which
    :meth:`SqliteDatabase.transaction` and :meth:`_SqliteThread.call` should prevent): the
    lock and the thread's order mean nobody else is in one, so it is rolled back, not
    joined."""
    if conn.in_transaction:
        _sqlite_fetch(conn, "ROLLBACK", ())
    _sqlite_fetch(conn, "BEGIN IMMEDIATE", ())


def _run_body(conn: sqlite3.Connection, body: Body[T]) -> T:
    """One whole transaction on the connection's thread: BEGIN, ``body``, COMMIT."""
    _begin(conn)
    try:
        result = _complete(body(_InThreadTx(conn)))
        _sqlite_fetch(conn, "COMMIT", ())
    except BaseException:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return result


def _complete(step: Awaitable[T]) -> T:
    """The result of a coroutine whose awaits all complete at once (an :class:`_InThreadTx`
    body), without an event loop."""
    assert isinstance(step, Coroutine)
    coroutine: Coroutine[Any, Any, T] = step
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return finished.value  # type: ignore[no-any-return]
    coroutine.close()
    raise StoreError("a transaction body awaited something other than its statements")


class SqliteDatabase(Database):
    """SQLite in WAL mode with ``synchronous=FULL``: a commit survives a crash of the process
    and of the machine. One writer connection, whose transactions an asyncio lock orders, and
    one reader connection for plain ``SELECT``s outside a transaction: WAL lets it read the
    last committed state while a write is in progress, so a lookup never waits for the
    writer's queue. Each connection has a thread of its own (``sqlite3`` blocks)."""

    dialect = "sqlite"

    def __init__(self, writer: _SqliteThread, reader: _SqliteThread | None,
                 path: Path) -> None:
        self._writer = writer
        self._reader_thread = reader
        self._reader = _SqliteTx(reader) if reader is not None else None
        self._tx = _SqliteTx(writer)
        self._lock = asyncio.Lock()
        self._path = path

    @classmethod
    async def open(cls, path: Path, *, reader: bool = True,
                   cache_kib: int = SQLITE_CACHE_KIB) -> SqliteDatabase:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _SqliteThread.open(path,
                                          cache_kib=min(cache_kib, SQLITE_WRITER_CACHE_KIB))
        try:
            return cls(writer, await _SqliteThread.open(path, cache_kib=cache_kib,
                                                        query_only=True)
                       if reader else None,
                       path)
        except BaseException:
            await writer.close()
            raise

    async def sibling(self, name: str, *, searched: bool = False) -> Database:
        return await _migrated(await SqliteDatabase.open(
            self._path.with_name(f"{self._path.stem}-{name}.db"), reader=searched,
            cache_kib=SQLITE_SEARCHED_CACHE_KIB if searched else SQLITE_SIBLING_CACHE_KIB))

    async def execute(self, sql: str, *args: Any) -> None:
        async with self._lock:
            await self._tx.execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        if self._reader is not None and _is_query(sql):
            return await self._reader.fetch(sql, *args)
        async with self._lock:
            return await self._tx.fetch(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteTx]:
        async with self._lock:
            try:  # BEGIN inside: a task cancelled while it waits still rolls back
                await self._writer.call(_begin, self._writer.conn)
                yield self._tx
            except BaseException:
                with suppress(StoreError):
                    await self._tx.execute("ROLLBACK")
                raise
            try:
                await self._tx.execute("COMMIT")
            except StoreError:
                with suppress(StoreError):  # never leave the connection inside a transaction
                    await self._tx.execute("ROLLBACK")
                raise

    async def run_transaction(self, body: Body[T]) -> T:
        async with self._lock:
            return await self._writer.call(_run_body, self._writer.conn, body)

    async def close(self) -> None:
        if self._reader_thread is not None:
            await self._reader_thread.close()
        await self._writer.close()


def _is_query(sql: str) -> bool:
    """A statement that only reads (``UPDATE ... RETURNING`` is fetched too, and writes)."""
    return sql.lstrip()[:6].upper() == "SELECT"


# --------------------------------------------------------------------------- PostgreSQL

_PG_TRANSIENT = (
    OSError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.DiskFullError,
)


#: How often a statement or transaction body PostgreSQL aborted for a conflict with another
#: transaction is run in all, with a short random pause between (the other one has finished).
CONFLICT_ATTEMPTS = 4


_PG_CONFLICTS = (asyncpg.exceptions.SerializationError, asyncpg.exceptions.DeadlockDetectedError)


def _pg_error(exc: Exception) -> Exception:
    if isinstance(exc, _PG_CONFLICTS):
        return StoreConflict(f"postgresql: {exc}")
    if isinstance(exc, _PG_TRANSIENT):
        return StoreUnavailable(f"postgresql: {exc}")
    return StoreError(f"postgresql: {exc}")


class _PgTx(Executor):
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        try:
            await self._conn.execute(sql, *args)
        except (asyncpg.PostgresError, *_PG_TRANSIENT) as exc:
            raise _pg_error(exc) from exc

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            return [tuple(r) for r in await self._conn.fetch(sql, *args)]
        except (asyncpg.PostgresError, *_PG_TRANSIENT) as exc:
            raise _pg_error(exc) from exc

    async def execute_script(self, script: str) -> None:
        await self.execute(script)


class PostgresDatabase(Database):
    """PostgreSQL through an asyncpg pool; every statement or transaction takes a connection."""

    dialect = "postgresql"

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, pool_size: int) -> PostgresDatabase:
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=pool_size)
        except (asyncpg.PostgresError, *_PG_TRANSIENT) as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        return cls(pool)

    async def execute(self, sql: str, *args: Any) -> None:
        await _again_on_conflict(partial(self._on_connection, lambda tx: tx.execute(sql, *args)))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await _again_on_conflict(
            partial(self._on_connection, lambda tx: tx.fetch(sql, *args)))

    async def _on_connection(self, statement: Body[T]) -> T:
        """One statement on a pooled connection, outside any explicit transaction."""
        try:
            async with self._pool.acquire() as conn:
                return await statement(_PgTx(conn))
        except _PG_TRANSIENT as exc:
            raise _pg_error(exc) from exc

    async def run_transaction(self, body: Body[T]) -> T:
        """As :meth:`Database.run_transaction`; a body PostgreSQL aborts for colliding with
        another transaction (a deadlock, a serialization failure) is run again, up to
        ``CONFLICT_ATTEMPTS`` times in all, so it must not depend on state its earlier run
        left behind outside ``tx``."""
        return await _again_on_conflict(partial(Database.run_transaction, self, body))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgTx]:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                yield _PgTx(conn)
        except (asyncpg.PostgresError, *_PG_TRANSIENT) as exc:
            raise _pg_error(exc) from exc

    async def migrate(self) -> list[str]:
        """Migrate under an advisory lock, so instances starting together take turns."""
        async with self._pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
            try:
                return await super().migrate()
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)

    async def close(self) -> None:
        await self._pool.close()


async def _again_on_conflict(call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, again after a short random pause when it raises :class:`StoreConflict`."""
    for attempt in range(1, CONFLICT_ATTEMPTS):
        try:
            return await call()
        except StoreConflict:
            await asyncio.sleep(random.uniform(0.001, 0.01 * 2 ** attempt))
    return await call()


def _split_sql(script: str) -> Sequence[str]:
    """Split a migration script into statements (no semicolons inside our literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


async def open_database(url: str, *, pool_size: int = 10, migrate: bool = True) -> Database:
    """Open the database at ``url`` and bring its schema up to date."""
    db: Database
    if url.startswith("sqlite:///"):
        db = await SqliteDatabase.open(Path(url.removeprefix("sqlite:///")))
    else:
        db = await PostgresDatabase.open(url, pool_size)
    return await _migrated(db) if migrate else db


async def _migrated(db: Database) -> Database:
    """``db`` with its schema brought up to date (closed if that fails)."""
    try:
        await db.migrate()
    except BaseException:
        await db.close()
        raise
    return db
