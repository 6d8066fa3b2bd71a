"""The database: a SQLAlchemy engine made on first use, sessions, and Alembic migrations."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy import event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from .datadir import data_dir
from .errors import JobsDisabled
from .state import once

log = logging.getLogger(__name__)

VERSION_TABLE = "nazzil_alembic_version"
# A fixed key for PostgreSQL's advisory lock, so two processes never migrate at once.
_MIGRATION_LOCK_KEY = 7_461_726_512
_migrate_lock = threading.Lock()


class Base(DeclarativeBase):
    """Base class of nazzil's tables."""


class UTCDateTime(sa.TypeDecorator):
    """A timestamp stored as naive UTC and always read back as an aware UTC datetime."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc)


def utcnow() -> dt.datetime:
    """Return the current time, aware, in UTC."""
    return dt.datetime.now(dt.timezone.utc)


def database_url(app: Flask) -> str:
    """Return the configured database URL, or SQLite in the data dir."""
    url = str(app.config.get("NAZZIL_DATABASE_URL") or "")
    if url:
        # psycopg 3 is the driver nazzil ships with; plain postgres:// URLs mean it.
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url
    root = data_dir(app)
    if root is None:
        raise JobsDisabled("Jobs need a writable data directory or NAZZIL_DATABASE_URL.")
    return f"sqlite:///{Path(root, 'nazzil.db')}"


_READ_ONLY = "nazzil_read_only"  # an execution option: this transaction only reads


def _sqlite_events(engine: sa.Engine) -> None:
    """Make SQLite wait for locks, use WAL, and take the write lock when a transaction begins."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (below); the driver must not start its own.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA busy_timeout = 30000")
            deadline = time.monotonic() + 30
            while True:
                try:
                    cursor.execute("PRAGMA journal_mode = WAL")
                    break
                except Exception as exc:  # noqa: BLE001 - switching a new file to WAL may race
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        # IMMEDIATE takes the one write lock up front, so a transaction that reads and then
        # writes never fails with SQLITE_BUSY halfway; the busy timeout queues writers.
        # A read-only session (session(app, write=False)) reads a WAL snapshot without it.
        read_only = conn.get_execution_options().get(_READ_ONLY)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def engine(app: Flask) -> sa.Engine:
    """Return the app's engine, created on first use."""
    return once(app, "db_engine", lambda: _make_engine(app))


def _make_engine(app: Flask) -> sa.Engine:
    url = database_url(app)
    if url.startswith("sqlite"):
        made = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _sqlite_events(made)
    else:
        made = sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=20)
    log.info("database: %s", made.url.render_as_string(hide_password=True))
    return made


@contextmanager
def session(app: Flask, *, write: bool = True) -> Iterator[Session]:
    """Open a session that commits when the block ends normally and rolls back otherwise.

    write=False is for blocks that only read: on SQLite they then do not queue behind
    writers for the database's one write lock (job pages and event streams poll often).
    """
    maker = once(app, "db_sessionmaker", lambda: sessionmaker(engine(app), expire_on_commit=False))
    with maker() as sess, sess.begin():
        if not write:
            sess.connection(execution_options={_READ_ONLY: True})
        yield sess


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    return cfg


def upgrade(app: Flask, revision: str = "head") -> None:
    """Bring the database schema up to date (safe to run from several processes at once)."""
    from alembic import command

    eng = engine(app)
    cfg = _alembic_config()
    with eng.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    app.extensions["nazzil"]["db_ready"] = True


def ensure_schema(app: Flask) -> None:
    """Run the migrations once per process, on first need."""
    cache = app.extensions.setdefault("nazzil", {})
    if cache.get("db_ready"):
        return
    with _migrate_lock:
        if not cache.get("db_ready"):
            upgrade(app)


def check(app: Flask) -> None:
    """Raise when the database does not answer (readiness check)."""
    with engine(app).connect() as conn:
        conn.exec_driver_sql("SELECT 1")


def dispose(app: Flask) -> None:
    """Close the app's pooled connections (tests, shutdown)."""
    found = app.extensions.get("nazzil", {}).pop("db_engine", None)
    app.extensions.get("nazzil", {}).pop("db_ready", None)
    if found is not None:
        found.dispose()
