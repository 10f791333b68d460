"""SQLite commits reach the disk before the worker acts on them outside the database."""

from __future__ import annotations

from sqlalchemy import text

from worker.adapters.db import make_engine


def test_every_sqlite_connection_syncs_its_log_at_commit(tmp_path):
    # A commit that only reached the page cache could be undone by a power cut after its
    # message was moved off the server or its acknowledgement sent. FULL (2) syncs the WAL
    # at each commit; NORMAL (1) only at checkpoints.
    engine = make_engine(f"sqlite:///{tmp_path}/durable.db")
    try:
        with engine.connect() as first, engine.connect() as second:
            for connection in (first, second):
                assert connection.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
                assert connection.execute(text("PRAGMA synchronous")).scalar_one() == 2
    finally:
        engine.dispose()
