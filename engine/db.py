"""One store interface over two backends: SQLite (the embedded default) and PostgreSQL (several nodes).

Engine code writes one SQL dialect: SQLite's, with `?` parameters, kept to what PostgreSQL also
understands (`INSERT ... ON CONFLICT DO NOTHING`, `RETURNING id`, `count(*) FILTER (WHERE ...)`,
savepoints). What the two spell differently goes through the few helpers here (`any_of`,
`days_between`, `columns`) instead of being written twice at every call site.

`connect(location)` takes a SQLite file (a Path or `sqlite:///PATH`) or a `postgresql://` URL and
returns a connection with the sqlite3 surface the engine uses (`execute`, `executemany`, cursors
with `fetchone`/`fetchall`/`rowcount`), in autocommit mode with explicit `BEGIN`/`COMMIT`. Rows
read by index on both; by column name on PostgreSQL always, on SQLite once the caller sets
`conn.row_factory = sqlite3.Row` (which the PostgreSQL connection accepts and ignores). On PostgreSQL:

- `?` becomes `%s` and `LIKE` becomes `ILIKE` (SQLite's LIKE ignores ASCII case); the translation is
  cached per statement text.
- `BEGIN IMMEDIATE` (SQLite: take the write lock now) becomes `BEGIN` plus a transaction-scoped
  advisory lock, WRITE_LOCK: writes that read-then-write (match a referral, then create it) stay
  serialized across every process and node exactly as they are on SQLite. Work that scales across
  nodes (journal appends, claims with `FOR UPDATE SKIP LOCKED`) begins with a plain `BEGIN`.
- Parameters are sent untyped, so PostgreSQL casts them by context the way SQLite's loose typing
  does (an int compared with a TEXT column, True stored in an integer column); `numeric` results
  (sum, avg) come back as int or float, never Decimal.
- Text columns use the "C" collation: ISO timestamps stored as text order byte-wise, as in SQLite.
- Foreign keys are not enforced, as in SQLite without `PRAGMA foreign_keys` (the engine's own).
"""
from __future__ import annotations

import json
import re
import sqlite3
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Union

Location = Union[Path, str]

# pg_advisory_xact_lock keys ("REFW", "REFM"): the single-writer lock, and schema migrations
WRITE_LOCK = 0x52454657
MIGRATION_LOCK = 0x5245464D
CLAIM_LOCK = 0x52454643          # "REFC": claims of journal messages by nodes
IDLE_IN_TRANSACTION_SECONDS = 60.0   # a session idle this long inside a transaction is ended (see _adapt)


class StoreError(RuntimeError):
    """The store cannot be opened or used (named file or server, and reason)."""


def is_postgres(location: Location) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def sqlite_file(location: Location) -> Path:
    return Path(str(location).removeprefix("sqlite:///"))


def sqlalchemy_url(location: Location) -> tuple[str, dict]:
    """(URL, engine options) for SQLAlchemy (the scheduler's job store) on the same store."""
    if is_postgres(location):
        return "postgresql+psycopg://" + str(location).split("://", 1)[1], {"pool_pre_ping": True}
    return f"sqlite:///{sqlite_file(location)}", {"connect_args": {"timeout": 30}}


def describe(location: Location) -> str:
    """The location for messages and logs: a PostgreSQL URL without its user and password (also a
    `?password=` / `?user=` parameter: libpq takes those in the query string too)."""
    if is_postgres(location):
        scheme, _, rest = str(location).partition("://")
        rest, _, query = rest.rsplit("@", 1)[-1].partition("?")
        kept = [p for p in query.split("&") if p and p.split("=", 1)[0].lower() not in ("password", "user")]
        return f"{scheme}://{rest}" + ("?" + "&".join(kept) if kept else "")
    return str(sqlite_file(location))


def _redact(text: str, url: str) -> str:
    """`text` (libpq's error, which may quote a piece of the URL it could not parse) without the URL's
    password, as written or percent-decoded."""
    from urllib.parse import unquote
    rest = url.partition("://")[2]
    userinfo, at, _ = rest.rpartition("@")
    secrets = {userinfo.partition(":")[2]} if at else set()
    secrets |= {p.split("=", 1)[1] for p in rest.partition("?")[2].split("&")
                if p.split("=", 1)[0].lower() == "password" and "=" in p}
    for secret in sorted(secrets | {unquote(x) for x in secrets}, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def error_text(exc: BaseException) -> str:
    """An exception for logs and API answers. A database error is named by class and SQLSTATE only:
    PostgreSQL's message and DETAIL quote the values involved (`Key (patient_id)=(...)`: patient data)."""
    if type(exc).__module__.startswith("psycopg"):
        sqlstate = getattr(exc, "sqlstate", None)
        return f"{type(exc).__name__} (SQLSTATE {sqlstate})" if sqlstate else type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def dialect(conn) -> str:
    return getattr(conn, "dialect", "sqlite")


# ---- SQLite ---------------------------------------------------------------------------------


class SQLiteConnection(sqlite3.Connection):
    dialect = "sqlite"


def connect_sqlite(path: Path, synchronous: str = "FULL", readonly: bool = False) -> sqlite3.Connection:
    if readonly and not path.exists():
        raise StoreError(f"{path}: no store here (has the engine run with this config?)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False,
                               factory=SQLiteConnection)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        if readonly:
            conn.execute("PRAGMA query_only=1")
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{path}: cannot open the store: {exc}") from None
    return conn


# ---- PostgreSQL -----------------------------------------------------------------------------


class Row(tuple):
    """A result row readable like sqlite3.Row: row[0], row["status"], dict(row), row.keys()."""
    __slots__ = ()
    _names: tuple[str, ...] = ()

    def __getitem__(self, key):
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._names.index(key))
            except ValueError:
                raise IndexError(f"no such column: {key}") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


@lru_cache(maxsize=256)
def _row_class(names: tuple[str, ...]) -> type:
    return type("Row", (Row,), {"__slots__": (), "_names": names})


def _row_factory(cursor):
    if cursor.description is None:
        return tuple
    cls = _row_class(tuple(c.name for c in cursor.description))
    return lambda values: tuple.__new__(cls, values)


# Text that is left as it is (only % doubled when parameters follow): comments, where a `?` or an
# apostrophe (`-- the sender's id?`) is neither a parameter nor a quote; dollar-quoted bodies;
# E'' strings with backslash escapes; quoted strings and names.
_TEXT = r"--[^\n]*|/\*.*?\*/|\$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$|\b[Ee]'(?:[^'\\]|\\.|'')*'" \
        r"|'(?:[^']|'')*'|\"[^\"]*\""
_TOKENS = re.compile(rf"(?P<text>{_TEXT})|\?|%|\bNOT\s+LIKE\b|\bLIKE\b|\bCOLLATE\s+NOCASE\b"
                     r"|\bINDEXED\s+BY\s+\w+", re.I | re.S)


@lru_cache(maxsize=2048)
def translate(sql: str, with_params: bool = True) -> str:
    """SQLite-dialect statement text -> psycopg's: `?` -> %s (and % -> %% when parameters follow),
    LIKE -> ILIKE, COLLATE NOCASE and INDEXED BY (SQLite's index hint) dropped. Quoted strings and names,
    comments and dollar-quoted text are left as they are."""
    def swap(m: re.Match) -> str:
        token = m.group(0)
        if m.group("text") is not None:
            return token.replace("%", "%%") if with_params else token
        if token == "?":
            return "%s"
        if token == "%":
            return "%%" if with_params else "%"
        upper = token.upper()
        if upper.startswith(("COLLATE", "INDEXED")):
            return ""
        return "NOT ILIKE" if upper.startswith("NOT") else "ILIKE"
    return _TOKENS.sub(swap, sql)


class PgCursor:
    """The part of sqlite3.Cursor the engine uses, over a psycopg cursor."""
    __slots__ = ("_cur",)

    def __init__(self, cur):
        self._cur = cur

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def description(self):
        return self._cur.description

    def fetchone(self):
        return self._cur.fetchone() if self._cur.description is not None else None

    def fetchall(self) -> list:
        return self._cur.fetchall() if self._cur.description is not None else []

    def fetchmany(self, size: int = 100) -> list:
        return self._cur.fetchmany(size) if self._cur.description is not None else []

    def __iter__(self):
        return iter(self._cur) if self._cur.description is not None else iter(())


class PgConnection:
    """A psycopg connection with the sqlite3.Connection surface the engine uses (see the module doc).

    A lost server connection (PostgreSQL restarted, fail-over) is opened again, when `url` is known,
    only where nothing can be lost: at the next `BEGIN` or `SELECT` outside a transaction (tried once
    more on a fresh connection: a `BEGIN` has nothing before it to lose, a read can run twice), a
    `ROLLBACK`, or any statement outside a transaction once the loss is known. Inside a
    transaction the loss is raised (StoreError), and so is a `COMMIT` that did not commit (the loss, or
    a transaction PostgreSQL had aborted: it answers such a COMMIT with ROLLBACK, not an error), so a
    caller never takes a rolled-back transaction for a committed one (an AA for a lost message)."""
    dialect = "postgresql"

    def __init__(self, raw, readonly: bool = False, url: str | None = None):
        self.raw = raw
        self.readonly = readonly
        self.url = url                 # to open again after a lost connection (None: a pool's, the pool does)
        self._idle = True              # outside a transaction when last seen alive
        self.row_factory = None        # accepted and ignored: rows are always readable by index and name

    @property
    def lost(self) -> bool:
        return self.raw.closed or self.raw.broken

    def _reopen(self) -> None:
        try:
            self.raw.close()
        except Exception:          # already gone
            pass
        self.raw = _open_raw(self.url, self.readonly)
        self._idle = True

    def execute(self, sql: str, params: Iterable[Any] | None = None) -> PgCursor:
        import psycopg
        statement = sql.strip().upper()
        begins = statement in ("BEGIN", "BEGIN IMMEDIATE")
        retry = begins or statement.startswith("SELECT")
        if self.lost:
            if self.url is None or not (begins or statement == "ROLLBACK" or self._idle):
                raise StoreError(f"{describe(self.url or '')}: connection to the store lost inside a transaction; "
                                 "it was rolled back")
            self._reopen()
            if statement == "ROLLBACK":    # the server rolled it back when the connection went
                return PgCursor(self.raw.cursor())
        try:
            cur = self._execute(statement, sql, params)
        except psycopg.OperationalError:
            if not (retry and self._idle and self.url is not None and self.lost):
                self._idle = self.raw.info.transaction_status == _idle_status()
                raise
            self._reopen()         # the server went away while this connection was idle: once more
            cur = self._execute(statement, sql, params)
        self._idle = self.raw.info.transaction_status == _idle_status()
        if statement in ("COMMIT", "END") and cur.statusmessage != "COMMIT":
            raise StoreError("the transaction was rolled back, not committed (a statement in it had failed)")
        return PgCursor(cur)

    def _execute(self, statement: str, sql: str, params):
        if statement == "BEGIN IMMEDIATE":
            cur = self.raw.execute("BEGIN")
            self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            return cur
        params = tuple(params) if params is not None else ()
        return self.raw.execute(translate(sql, bool(params)), params or None)

    def executemany(self, sql: str, seq: Iterable[Iterable[Any]]) -> PgCursor:
        cur = self.raw.cursor()
        cur.executemany(translate(sql), [tuple(p) for p in seq])
        return PgCursor(cur)

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def commit(self) -> None:        # sqlite3 compatibility: a no-op outside a transaction
        if self.in_transaction:
            self.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        (self.rollback if kind else self.commit)()
        return False


def _adapt(raw) -> None:
    from psycopg.adapt import Dumper, Loader
    from psycopg.pq import Format

    class Untyped(Dumper):        # int/bool sent as untyped text: PostgreSQL casts by context
        oid = 0
        format = Format.TEXT

        def dump(self, obj):
            return str(int(obj)).encode()

    class Number(Loader):         # numeric (sum, avg) -> int when whole, else float
        def load(self, data):
            value = Decimal(bytes(data).decode())
            return int(value) if value == value.to_integral_value() else float(value)

    for kind in (int, bool):
        raw.adapters.register_dumper(kind, Untyped)
    raw.adapters.register_loader("numeric", Number)
    # A node frozen (VM paused, SIGSTOP, cut off) inside a BEGIN IMMEDIATE would hold the cluster-wide
    # write lock until the server noticed the dead socket (hours): every node's referral updates,
    # outbound claims and user actions would wait on it. The server ends such a session after this long idle inside a transaction
    # (the engine never idles that long inside one); the frozen node's transaction rolls back, unACKed.
    raw.execute(f"SET idle_in_transaction_session_timeout = {int(IDLE_IN_TRANSACTION_SECONDS * 1000)}")


def _idle_status():
    from psycopg.pq import TransactionStatus
    return TransactionStatus.IDLE


# A database host that vanishes without closing its connections (power, a network partition) is noticed
# in about a minute instead of the kernel's ~15: the writer then answers AE and reconnects. Settings in
# the URL win over these.
KEEPALIVES = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "3",
              "tcp_user_timeout": "60000", "connect_timeout": "10"}


def _connect_options(url: str) -> dict:
    from psycopg.conninfo import conninfo_to_dict
    given = conninfo_to_dict(url)
    return {key: value for key, value in KEEPALIVES.items() if key not in given}


def _open_raw(url: str, readonly: bool):
    import psycopg
    try:
        raw = psycopg.connect(url, autocommit=True, row_factory=_row_factory, **_connect_options(url))
        _adapt(raw)
        if readonly:
            raw.execute("SET default_transaction_read_only = on")
    except psycopg.Error as exc:
        raise StoreError(f"{describe(url)}: cannot open the store: {_redact(str(exc).strip(), url)}") from None
    return raw


def connect_postgres(url: str, readonly: bool = False) -> PgConnection:
    return PgConnection(_open_raw(url, readonly), readonly, url)


class PgPool:
    """A pool of connections to one PostgreSQL store for a process with many threads (the dashboard):
    `take()` lends a connection (checked alive first: a restarted server costs one reconnect, not an
    error), `give(conn)` returns it. At most `max_size` connections, however many threads ask;
    a thread that finds none free waits up to 30 s, then gets psycopg_pool.PoolTimeout."""

    def __init__(self, url: str, max_size: int = 8):
        from psycopg_pool import ConnectionPool
        self.url = url
        self._pool = ConnectionPool(url, min_size=1, max_size=max_size, name="engine-store", open=True,
                                    kwargs={"autocommit": True, "row_factory": _row_factory,
                                            **_connect_options(url)},
                                    configure=_adapt, check=ConnectionPool.check_connection)

    def take(self) -> PgConnection:
        return PgConnection(self._pool.getconn())

    def give(self, conn: PgConnection) -> None:
        self._pool.putconn(conn.raw)     # a connection left inside a transaction is rolled back first

    def stats(self) -> dict:
        return self._pool.get_stats()

    def close(self) -> None:
        self._pool.close()


def connect(location: Location, synchronous: str = "FULL", readonly: bool = False):
    """A connection to the store at `location` (see the module doc). Readers pass readonly=True."""
    if is_postgres(location):
        return connect_postgres(str(location), readonly)
    return connect_sqlite(sqlite_file(location), synchronous, readonly)


# ---- what the two dialects spell differently --------------------------------------------------


def store_errors() -> tuple[type[Exception], ...]:
    """The exception classes a store call may raise, either backend (for `except`)."""
    import psycopg
    return (sqlite3.Error, psycopg.Error, StoreError)


def integrity_errors() -> tuple[type[Exception], ...]:
    import psycopg
    return (sqlite3.IntegrityError, psycopg.errors.IntegrityError)


def any_of(conn, values: Iterable[Any]) -> tuple[str, Any]:
    """`column <fragment>` matches any of `values`: (fragment, parameter) for one `?`."""
    values = list(values)
    if dialect(conn) == "postgresql":
        if all(isinstance(v, int) for v in values):
            return "= ANY(CAST(? AS BIGINT[]))", "{" + ",".join(str(int(v)) for v in values) + "}"
        return "= ANY(?)", [str(v) for v in values]
    return "IN (SELECT value FROM json_each(?))", json.dumps(values)


def days_between(conn, start: str, end: str) -> str:
    """SQL for the days (fractional) from ISO timestamp text `start` to `end` (column expressions)."""
    if dialect(conn) == "postgresql":
        return f"(EXTRACT(EPOCH FROM (({end})::timestamptz - ({start})::timestamptz)) / 86400.0)"
    return f"(julianday({end}) - julianday({start}))"


def columns(conn, table: str) -> list[str]:
    if dialect(conn) == "postgresql":
        return [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema=current_schema() "
            "AND table_name=? ORDER BY ordinal_position", (table,))]
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


# ---- schema (migrations) ----------------------------------------------------------------------


_PG_TYPES = {int: "BIGINT", str: 'TEXT COLLATE "C"', bytes: "BYTEA", float: "DOUBLE PRECISION"}


class PgTable:
    """The part of sqlite_utils' Table API the migrations use, emitting PostgreSQL DDL (same names)."""

    def __init__(self, conn: PgConnection, name: str):
        self.conn, self.name = conn, name

    def create(self, columns: dict[str, type], pk: str | None = None, not_null: Iterable[str] = (),
               defaults: dict[str, Any] | None = None, foreign_keys: Any = None) -> None:
        # foreign keys are not enforced (see the module doc); a table without a key gets a `rowid`
        defaults, not_null = defaults or {}, set(not_null)
        parts = []
        for column, kind in columns.items():
            if column == pk and kind is int:     # as SQLite's INTEGER PRIMARY KEY: numbered when not given
                parts.append(f'"{column}" BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY')
                continue
            spec = f'"{column}" {_PG_TYPES[kind]}'
            if column == pk:
                spec += " PRIMARY KEY"
            if column in not_null:
                spec += " NOT NULL"
            if column in defaults:
                spec += f" DEFAULT {defaults[column]!r}" if isinstance(defaults[column], str) \
                    else f" DEFAULT {defaults[column]}"
            parts.append(spec)
        if pk is None:
            parts.append("rowid BIGINT GENERATED BY DEFAULT AS IDENTITY")
        self.conn.execute(f'CREATE TABLE "{self.name}" ({", ".join(parts)})')

    def create_index(self, columns: list[str], unique: bool = False, index_name: str | None = None) -> None:
        name = index_name or f"idx_{self.name}_{'_'.join(columns)}"
        cols = ", ".join(f'"{c}"' for c in columns)
        self.conn.execute(f'CREATE {"UNIQUE " if unique else ""}INDEX "{name}" ON "{self.name}" ({cols})')

    def add_column(self, name: str, kind: type) -> None:
        self.conn.execute(f'ALTER TABLE "{self.name}" ADD COLUMN "{name}" {_PG_TYPES[kind]}')


class PgSchema:
    """What a migration step receives on PostgreSQL, in place of sqlite_utils.Database."""

    def __init__(self, conn: PgConnection):
        self.conn = conn

    def __getitem__(self, table: str) -> PgTable:
        return PgTable(self.conn, table)

    def execute(self, sql: str, params: Iterable[Any] | None = None):
        return self.conn.execute(sql, params)


def schema_version(conn) -> int:
    if dialect(conn) == "postgresql":
        if conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
            return 0
        return conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn, location: Location, migrations: list, newest: int) -> None:
    """Run the numbered migration steps newer than the store's version, each in its own transaction.
    A store newer than this engine is refused by name. On PostgreSQL a session advisory lock makes a
    second node wait while the first one migrates."""
    postgres = dialect(conn) == "postgresql"
    if postgres:
        conn.execute("SELECT pg_advisory_lock(?)", (MIGRATION_LOCK,))
    try:
        if postgres:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        current = schema_version(conn)
        if current > newest:
            raise StoreError(f"{describe(location)}: store schema version {current} is newer than this engine's "
                             f"({newest}); run the newer engine or restore a backup")
        if postgres:
            db = PgSchema(conn)
        else:
            import sqlite_utils
            db = sqlite_utils.Database(conn)
        for version, step in migrations:
            if version <= current:
                continue
            conn.execute("BEGIN" if postgres else "BEGIN IMMEDIATE")
            try:
                step(db)
                if postgres:
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                else:
                    conn.execute(f"PRAGMA user_version={version}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    finally:
        if postgres:
            conn.execute("SELECT pg_advisory_unlock(?)", (MIGRATION_LOCK,))
