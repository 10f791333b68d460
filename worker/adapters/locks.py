"""Who may poll what when several workers share one database.

On PostgreSQL each mailbox is owned through a session-level advisory lock held on a connection
of its own: a worker that crashes, or loses its connection, loses the lock at once and another
worker takes the mailbox over on its next try. SQLite has one writer, so it supports one worker:
a second `run` on the same database file is refused with a clear message (a file lock, which
the kernel releases when the process dies, so a crashed worker never blocks a restart).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from worker.errors import WorkerError


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for a lock name (Python's hash() changes per process)."""
    return int.from_bytes(hashlib.sha256(f"complaints-worker:{name}".encode()).digest()[:8], "big",
                          signed=True)


class AdvisoryLock:
    """One PostgreSQL session-level advisory lock, taken without waiting."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self.key = advisory_key(name)
        self._connection: Connection | None = None

    def try_hold(self) -> bool:
        """True while this worker holds the lock: keeps it if held, else tries to take it."""
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
                return True
            except DBAPIError:
                self._drop()  # The connection died, and the lock with it: try afresh.
        try:
            connection = self.engine.connect()
        except DBAPIError:
            return False
        try:
            taken = bool(connection.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                            {"key": self.key}).scalar())
            connection.commit()  # End the implicit transaction; the session lock stays.
        except DBAPIError:
            connection.close()
            return False
        if not taken:
            connection.close()
            return False
        self._connection = connection
        return True

    def release(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(DBAPIError):
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
                self._connection.commit()
        self._drop()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(DBAPIError):
                connection.close()


class SingleWorkerGuard:
    """Refuses a second worker on the same SQLite database file."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + ".worker-lock")
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise WorkerError(
                f"another worker ({holder}) is already running on {self.database}: SQLite "
                "supports one worker; use PostgreSQL (database.url = \"postgresql+psycopg://...\") "
                "to run several") from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

