"""Database engine and sessions; Alembic owns the schema."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from worker.adapters.repository import drop_events, write_events


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets `status` and `cases` read while the worker writes; foreign keys are off by default.
    # FULL syncs the log at every commit. NORMAL would survive a killed process but not a power
    # cut or kernel crash, which could undo commits after their message was moved off the server
    # (a lost complaint) or their mail sent (sent again, or an acknowledgement for no case).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    factory = sessionmaker(engine, expire_on_commit=False)
    event.listen(factory, "before_commit", write_events)
    event.listen(factory, "after_soft_rollback", drop_events)
    return factory


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    with factory() as session, session.begin():
        yield session


def migrations_dir() -> Path:
    """The Alembic scripts: the checkout's alembic/ folder, or its copy in an installed wheel."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "alembic", package / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("Alembic migrations not found next to the worker package")


def alembic_config(url: str) -> Any:
    from alembic.config import Config as AlembicConfig

    # Alembic's default stdout is bound when alembic is imported; use the current one.
    config = AlembicConfig(stdout=sys.stdout)
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)
