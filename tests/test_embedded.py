"""The test servers themselves: embedded pymap/aiosmtpd (worker.embedded) and real Dovecot."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage

import aiosmtplib
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.servers import Dovecot, dovecot_available
from worker.embedded import (
    EmbeddedImapServer,
    EmbeddedSmtpServer,
    ReceivedMail,
    deliver,
    deliver_many,
)

ALICE = ("alice@example.com", "alice-secret")
BOB = ("bob@example.com", "bob-secret")
USERS = dict([ALICE, BOB])
KEYWORD = "$ComplaintsWorkerDone"
# Whole seconds: Maildir keeps INTERNALDATE as a file mtime.
WHEN = datetime(2024, 3, 4, 9, 30, 15, tzinfo=timezone(timedelta(hours=1)))


def _raw(subject: str, body: str = "Hello.") -> bytes:
    return (
        f"From: Customer <customer@example.net>\r\n"
        f"To: complaints@example.com\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.net>\r\n"
        f"\r\n"
        f"{body}\r\n"
    ).encode()


def _client(port: int, user: tuple[str, str]) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10)
    client.normalise_times = False  # aware datetimes, as the server sent them
    try:
        client.login(*user)
    except BaseException:
        client.shutdown()
        raise
    return client


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def _no_new_threads(before: set[threading.Thread]) -> None:
    leaked = [t for t in threading.enumerate() if t not in before]
    assert not leaked, f"threads left running: {leaked}"


# --------------------------------------------------------------------------------------------
# Embedded IMAP (pymap)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def embedded_imap() -> Iterator[EmbeddedImapServer]:
    before = set(threading.enumerate())
    with EmbeddedImapServer(USERS) as server:
        yield server
    _no_new_threads(before)


def test_imap_users_have_separate_inboxes(embedded_imap: EmbeddedImapServer) -> None:
    deliver(embedded_imap.host, embedded_imap.port, *ALICE, _raw("for alice"))

    with _client(embedded_imap.port, ALICE) as alice, _client(embedded_imap.port, BOB) as bob:
        alice.select_folder("INBOX")
        bob.select_folder("INBOX")
        assert len(alice.search()) == 1
        assert bob.search() == []


def test_imap_refuses_wrong_password(embedded_imap: EmbeddedImapServer) -> None:
    with pytest.raises(LoginError):
        _client(embedded_imap.port, (ALICE[0], "wrong"))
    with pytest.raises(LoginError):
        _client(embedded_imap.port, ("nobody@example.com", "x"))


def test_imap_add_user_while_running(embedded_imap: EmbeddedImapServer) -> None:
    carol = ("carol@example.com", "carol-secret")
    embedded_imap.add_user(*carol)

    deliver(embedded_imap.host, embedded_imap.port, *carol, _raw("for carol"))
    with _client(embedded_imap.port, carol) as client:
        client.select_folder("INBOX")
        assert len(client.search()) == 1


def test_imap_append_keeps_internaldate(embedded_imap: EmbeddedImapServer) -> None:
    deliver(embedded_imap.host, embedded_imap.port, *ALICE, _raw("dated"), internaldate=WHEN)

    with _client(embedded_imap.port, ALICE) as client:
        client.select_folder("INBOX", readonly=True)
        (data,) = client.fetch(client.search(), ["INTERNALDATE"]).values()
    fetched = data[b"INTERNALDATE"]
    assert fetched == WHEN
    assert fetched.utcoffset() == WHEN.utcoffset()


def test_imap_move_to_created_folder(embedded_imap: EmbeddedImapServer) -> None:
    deliver_many(embedded_imap.host, embedded_imap.port, *ALICE, [(_raw("one"), WHEN), (_raw("two"), None)])

    with _client(embedded_imap.port, ALICE) as client:
        assert client.has_capability("MOVE")
        client.create_folder("Processed")
        client.select_folder("INBOX")
        first, second = client.search()
        client.move([first], "Processed")
        assert client.search() == [second]
        assert client.folder_status("Processed", ["MESSAGES"])[b"MESSAGES"] == 1


def test_deliver_many_creates_the_folder(embedded_imap: EmbeddedImapServer) -> None:
    deliver_many(
        embedded_imap.host,
        embedded_imap.port,
        *BOB,
        [(_raw(f"n{i}"), None) for i in range(3)],
        folder="Archive",
    )

    with _client(embedded_imap.port, BOB) as client:
        assert client.folder_status("Archive", ["MESSAGES"])[b"MESSAGES"] == 3


def test_imap_has_no_keyword_flags(embedded_imap: EmbeddedImapServer) -> None:
    """pymap's dict backend cannot store keywords; the worker has to cope (Dovecot can)."""
    with _client(embedded_imap.port, ALICE) as client:
        selected = client.select_folder("INBOX")
    assert b"\\*" not in selected[b"PERMANENTFLAGS"]


def test_imap_stop_closes_port_and_joins_thread() -> None:
    before = set(threading.enumerate())
    server = EmbeddedImapServer(USERS)
    with server:
        port = server.port
        idle = _client(port, ALICE)  # an open session must not block stopping
        idle.select_folder("INBOX")
    assert _refused(port)
    _no_new_threads(before)
    idle.shutdown()
    server.stop()  # idempotent


# --------------------------------------------------------------------------------------------
# Embedded SMTP (aiosmtpd)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def embedded_smtp() -> Iterator[EmbeddedSmtpServer]:
    before = set(threading.enumerate())
    with EmbeddedSmtpServer() as server:
        yield server
    _no_new_threads(before)


def _email(subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "complaints@example.com"
    message["To"] = "customer@example.net"
    message["Subject"] = subject
    message.set_content("We have received your complaint.\n")
    return message


def _send(port: int, message: EmailMessage) -> None:
    asyncio.run(
        aiosmtplib.send(
            message,
            hostname="127.0.0.1",
            port=port,
            sender="bounces@example.com",
            recipients=["customer@example.net", "copy@example.org"],
            start_tls=False,
            timeout=10,
        )
    )


def test_smtp_records_message(embedded_smtp: EmbeddedSmtpServer) -> None:
    _send(embedded_smtp.port, _email("Your complaint"))

    (mail,) = embedded_smtp.wait_for(1)
    assert isinstance(mail, ReceivedMail)
    assert mail.mail_from == "bounces@example.com"
    assert mail.rcpt_tos == ("customer@example.net", "copy@example.org")
    assert mail.message["Subject"] == "Your complaint"
    assert mail.message.get_content() == "We have received your complaint.\n"
    assert b"Subject: Your complaint" in mail.raw


@pytest.mark.parametrize("code", [451, 550])
def test_smtp_fail_next_refuses_then_accepts(embedded_smtp: EmbeddedSmtpServer, code: int) -> None:
    embedded_smtp.fail_next(1, code)

    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        _send(embedded_smtp.port, _email("first try"))
    assert refused.value.code == code
    assert embedded_smtp.received == []

    _send(embedded_smtp.port, _email("second try"))
    (mail,) = embedded_smtp.wait_for(1)
    assert mail.message["Subject"] == "second try"


def test_smtp_outage_keeps_port(embedded_smtp: EmbeddedSmtpServer) -> None:
    port = embedded_smtp.port
    embedded_smtp.set_down(True)
    assert embedded_smtp.is_down
    with pytest.raises(aiosmtplib.SMTPConnectError):
        _send(port, _email("during outage"))

    embedded_smtp.set_down(False)
    assert embedded_smtp.port == port
    _send(port, _email("after outage"))
    assert [m.message["Subject"] for m in embedded_smtp.wait_for(1)] == ["after outage"]


def test_smtp_wait_for_times_out(embedded_smtp: EmbeddedSmtpServer) -> None:
    with pytest.raises(TimeoutError, match="received 0"):
        embedded_smtp.wait_for(1, timeout=0.01)


def test_smtp_stop_closes_port() -> None:
    before = set(threading.enumerate())
    with EmbeddedSmtpServer() as server:
        port = server.port
    assert _refused(port)
    _no_new_threads(before)


# --------------------------------------------------------------------------------------------
# Dovecot (required under CI=true)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def dovecot_server() -> Iterator[Dovecot]:
    reason = dovecot_available()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true needs Dovecot: {reason}")
        pytest.skip(reason)
    with Dovecot(USERS) as server:
        yield server
    assert _refused(server.port)
    assert not server.root.exists()


@pytest.mark.dovecot
def test_dovecot_users_and_internaldate(dovecot_server: Dovecot) -> None:
    deliver(dovecot_server.host, dovecot_server.port, *ALICE, _raw("dated"), internaldate=WHEN)

    with _client(dovecot_server.port, ALICE) as alice, _client(dovecot_server.port, BOB) as bob:
        bob.select_folder("INBOX")
        assert bob.search() == []
        alice.select_folder("INBOX", readonly=True)
        (data,) = alice.fetch(alice.search(), ["INTERNALDATE"]).values()
    # Same instant; the offset is the server's local zone (Maildir keeps only an mtime).
    assert data[b"INTERNALDATE"] == WHEN


@pytest.mark.dovecot
def test_dovecot_keyword_flags(dovecot_server: Dovecot) -> None:
    deliver_many(dovecot_server.host, dovecot_server.port, *ALICE, [(_raw("a"), None), (_raw("b"), None)])

    with _client(dovecot_server.port, ALICE) as client:
        selected = client.select_folder("INBOX")
        assert b"\\*" in selected[b"PERMANENTFLAGS"]
        first, second = client.search()
        client.add_flags([first], [KEYWORD])
        assert client.search(["KEYWORD", KEYWORD]) == [first]
        assert client.search(["UNKEYWORD", KEYWORD]) == [second]


@pytest.mark.dovecot
def test_dovecot_restart_keeps_messages_uids_and_uidvalidity(dovecot_server: Dovecot) -> None:
    deliver_many(dovecot_server.host, dovecot_server.port, *ALICE, [(_raw("x"), WHEN), (_raw("y"), WHEN)])
    with _client(dovecot_server.port, ALICE) as client:
        client.create_folder("Processed")
        before = client.select_folder("INBOX")
        uids = client.search()
        client.add_flags([uids[0]], [KEYWORD])
        client.move([uids[1]], "Processed")

    dovecot_server.stop()
    assert _refused(dovecot_server.port)
    dovecot_server.start()

    with _client(dovecot_server.port, ALICE) as client:
        after = client.select_folder("INBOX")
        assert after[b"UIDVALIDITY"] == before[b"UIDVALIDITY"]
        assert client.search() == [uids[0]]
        assert client.search(["KEYWORD", KEYWORD]) == [uids[0]]
        assert client.folder_status("Processed", ["MESSAGES"])[b"MESSAGES"] == 1
