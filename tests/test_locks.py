"""Mailbox ownership between workers: PostgreSQL advisory locks, and SQLite's one-worker guard."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from worker.adapters.db import make_engine
from worker.adapters.locks import AdvisoryLock, SingleWorkerGuard
from worker.errors import WorkerError


def test_one_worker_at_a_time_holds_a_mailbox(pg_url: str):
    first_engine, second_engine = make_engine(pg_url), make_engine(pg_url)
    first = AdvisoryLock(first_engine, "mailbox:claranet")
    second = AdvisoryLock(second_engine, "mailbox:claranet")
    other = AdvisoryLock(second_engine, "mailbox:halo")
    try:
        assert first.try_hold() and first.try_hold(), "the holder keeps it"
        assert not second.try_hold(), "a second worker must not poll the same mailbox"
        assert other.try_hold(), "other mailboxes are free"
        first.release()
        assert second.try_hold()
    finally:
        for lock in (first, second, other):
            lock.release()
        first_engine.dispose()
        second_engine.dispose()


def test_a_worker_that_loses_its_connection_loses_the_mailbox(pg_url: str):
    first_engine, second_engine = make_engine(pg_url), make_engine(pg_url)
    first = AdvisoryLock(first_engine, "mailbox:claranet")
    second = AdvisoryLock(second_engine, "mailbox:claranet")
    try:
        assert first.try_hold()
        with second_engine.begin() as connection:  # As a crash or a network cut would.
            connection.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"))
        assert second.try_hold(), "the crashed worker's mailbox is taken over"
        assert not first.try_hold(), "the old holder notices it lost the mailbox"
    finally:
        first.release()
        second.release()
        first_engine.dispose()
        second_engine.dispose()


def test_sqlite_refuses_a_second_worker(tmp_path: Path):
    database = tmp_path / "worker.db"
    first, second = SingleWorkerGuard(database), SingleWorkerGuard(database)
    first.acquire()
    with pytest.raises(WorkerError, match="SQLite supports one worker; use PostgreSQL"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


def test_a_killed_worker_does_not_block_a_restart_on_sqlite(tmp_path: Path):
    database = tmp_path / "worker.db"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, pathlib; from worker.adapters.locks import SingleWorkerGuard; "
         f"guard = SingleWorkerGuard(pathlib.Path({str(database)!r})); guard.acquire(); "
         "print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkerError, match=f"pid {holder.pid}"):
            SingleWorkerGuard(database).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    guard = SingleWorkerGuard(database)
    guard.acquire()
    guard.release()
