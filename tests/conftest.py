"""Shared fixtures: embedded servers, Dovecot and PostgreSQL (required, not skipped, under CI=true)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.harness import CORPORA, PASSWORD, PROVIDER_ADDRESSES
from tests.servers import Dovecot, dovecot_available
from worker.embedded import EmbeddedImapServer, EmbeddedSmtpServer

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def unavailable(reason: str) -> None:
    """Skip locally; fail under CI, where these servers are part of the contract."""
    if IN_CI:
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture
def smtp() -> Iterator[EmbeddedSmtpServer]:
    with EmbeddedSmtpServer() as server:
        yield server


@pytest.fixture
def pymap() -> Iterator[EmbeddedImapServer]:
    with EmbeddedImapServer(dict.fromkeys(PROVIDER_ADDRESSES.values(), PASSWORD)) as server:
        yield server


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    reason = dovecot_available()
    if reason:
        unavailable(reason)
    with Dovecot(dict.fromkeys(PROVIDER_ADDRESSES.values(), PASSWORD)) as server:
        yield server


@pytest.fixture(params=["pymap", "dovecot"])
def imap_server(request: pytest.FixtureRequest) -> Iterator[object]:
    """Each IMAP test runs against both servers."""
    yield request.getfixturevalue(request.param)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    try:
        import psycopg
        from sqlalchemy import create_engine, text
    except ImportError:
        unavailable("psycopg is not installed")
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"cw_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        unavailable(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}")
    del psycopg
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    if request.param == "postgres":
        yield request.getfixturevalue("pg_url")
    else:
        yield f"sqlite:///{tmp_path}/worker.db"


def corpora_or_skip() -> None:
    if not CORPORA.is_dir():
        pytest.skip(f"corpora not found at {CORPORA} (a fresh clone has no ../shared)")
