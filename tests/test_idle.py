"""IMAP IDLE on a kept-open connection, against pymap and Dovecot."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.harness import PASSWORD, PROVIDER_ADDRESSES, ROOT, mailbox_for, write_config
from worker.adapters.db import upgrade
from worker.adapters.imap import ImapMailbox
from worker.config import load_config
from worker.embedded import deliver_many

ADDRESS = PROVIDER_ADDRESSES["claranet-soho"]
AT = datetime(2026, 4, 1, 9, tzinfo=UTC)


def message(n: int) -> bytes:
    return (f"From: c{n}@example.org\r\nTo: {ADDRESS}\r\nSubject: m{n}\r\n"
            f"Message-ID: <idle{n}@example.org>\r\n\r\nhello\r\n").encode()


@pytest.fixture
def kept_open(imap_server, tmp_path: Path) -> Iterator[tuple[ImapMailbox, int]]:
    path = write_config(tmp_path / "c.toml", db_url="sqlite:///x.db", imap_port=imap_server.port,
                        smtp_port=25, mailboxes=[mailbox_for("claranet-soho")])
    source = ImapMailbox(load_config(path).mailboxes[0], keep_open=True)
    yield source, imap_server.port
    source.disconnect()


def test_idle_wakes_when_mail_arrives(kept_open: tuple[ImapMailbox, int]):
    source, port = kept_open
    source.open()
    assert source.can_idle
    assert source.wait_for_mail(0.3) is False, "nothing arrived: the wait runs out"

    appender = threading.Timer(0.2, deliver_many, args=("127.0.0.1", port, ADDRESS, PASSWORD,
                                                        [(message(1), AT)]))
    appender.start()
    started = time.monotonic()
    assert source.wait_for_mail(20) is True
    assert time.monotonic() - started < 10, "woken by the server, not by the timeout"
    appender.join()

    # The same connection goes on serving the poll that follows.
    source.close()
    source.open()
    assert len(source.new_uids(0)) == 1


class SplitLineServer:
    """A scripted IMAP server whose IDLE sends one FETCH line in two TCP segments, 0.3 s apart.

    pymap does this now and then under load; imapclient's `idle_check` aborted on it with
    "unterminated line", which dropped the connection.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 IDLE] ready\r\n")
            for line in lines:
                tag, command = [*line.split(), b"", b""][:2]
                command = command.upper()
                if command == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1 IDLE\r\n" + tag + b" OK done\r\n")
                elif command == b"SELECT":
                    conn.sendall(b"* 0 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n"
                                 b"* OK [PERMANENTFLAGS (\\*)] ok\r\n" + tag + b" OK [READ-WRITE] done\r\n")
                elif command == b"IDLE":
                    conn.sendall(b"+ idling\r\n")
                    time.sleep(0.2)
                    conn.sendall(b"* 1 FETCH (FL")
                    time.sleep(0.3)
                    conn.sendall(b"AGS (\\Seen))\r\n* 2 EXISTS\r\n")
                    lines.readline()  # DONE
                    conn.sendall(tag + b" OK idle done\r\n")
                elif command == b"LOGOUT":
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:
                    conn.sendall(tag + b" OK done\r\n")


def test_a_line_split_across_packets_is_read_whole(tmp_path: Path):
    server = SplitLineServer()
    path = write_config(tmp_path / "c.toml", db_url="sqlite:///x.db", imap_port=server.port,
                        smtp_port=25, mailboxes=[mailbox_for("claranet-soho")])
    source = ImapMailbox(load_config(path).mailboxes[0], keep_open=True)
    source.open()
    try:
        assert source.wait_for_mail(10, check_every=0.1) is True
        assert source.is_open, "the connection survives the split line"
    finally:
        source.disconnect()


def test_a_stop_request_ends_the_wait(kept_open: tuple[ImapMailbox, int]):
    source, _ = kept_open
    source.open()
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert source.wait_for_mail(60, should_stop=stop.is_set, check_every=0.1) is False
    assert time.monotonic() - started < 10
    source.open()  # IDLE was ended cleanly: the connection takes commands again.


def test_a_dropped_connection_is_replaced_on_the_next_open(kept_open: tuple[ImapMailbox, int]):
    source, port = kept_open
    source.open()
    source.client.socket().close()  # The server or the network dropped us while we waited.
    deliver_many("127.0.0.1", port, ADDRESS, PASSWORD, [(message(2), AT)])
    source.open()
    assert len(source.new_uids(0)) == 1


def test_run_acknowledges_new_mail_at_once_while_idling(imap_server, smtp, tmp_path: Path):
    """With a five-minute poll interval, only IDLE can bring the acknowledgement in seconds."""
    url = f"sqlite:///{tmp_path / 'worker.db'}"
    config = write_config(tmp_path / "config.toml", db_url=url, imap_port=imap_server.port,
                          smtp_port=smtp.port, mailboxes=[mailbox_for("claranet-soho")],
                          worker={"poll_interval_seconds": 300, "sweep_interval_seconds": 300})
    upgrade(url)
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "worker", "--config", str(config), "run"],
                                  cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "waiting for new mail with IMAP IDLE" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline and worker.poll() is None, log.read_text()
            time.sleep(0.1)
        deliver_many("127.0.0.1", imap_server.port, ADDRESS, PASSWORD,
                     [(message(3), datetime.now(UTC))])
        [ack] = smtp.wait_for(1, timeout=20)
        assert ack.message["X-Complaints-Worker-Purpose"] == "acknowledgement"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert worker.returncode == 0
