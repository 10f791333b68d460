"""One contract, three implementations: ImapMailbox on pymap and on Dovecot, and the in-memory twin."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.harness import PASSWORD, PROVIDER_ADDRESSES, mailbox_for, write_config
from worker.adapters.imap import ImapMailbox, MailboxSource
from worker.adapters.memory_mailbox import InMemoryMailbox
from worker.config import load_config
from worker.embedded import deliver_many
from worker.errors import MailboxError

ADDRESS = PROVIDER_ADDRESSES["claranet-soho"]
T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # The night the UK clocks go forward.


def message(n: int, body: bytes = b"hello") -> bytes:
    return (f"From: c{n}@example.org\r\nTo: {ADDRESS}\r\nSubject: m{n}\r\n"
            f"Message-ID: <m{n}@example.org>\r\n\r\n").encode() + body + b"\r\n"


Deliver = Callable[[list[tuple[bytes, datetime]]], None]


@pytest.fixture(params=["memory", "pymap", "dovecot"])
def mailbox(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[MailboxSource, Deliver]]:
    if request.param == "memory":
        box = InMemoryMailbox()

        def deliver_memory(messages: list[tuple[bytes, datetime]]) -> None:
            for raw, at in messages:
                box.deliver(raw, at)

        yield box, deliver_memory
        return
    server = request.getfixturevalue(request.param)
    path = write_config(tmp_path / "c.toml", db_url="sqlite:///x.db", imap_port=server.port,
                        smtp_port=25, mailboxes=[mailbox_for("claranet-soho")])
    config = load_config(path).mailboxes[0]

    def deliver_imap(messages: list[tuple[bytes, datetime]]) -> None:
        deliver_many("127.0.0.1", server.port, ADDRESS, PASSWORD, messages)

    source = ImapMailbox(config)
    yield source, deliver_imap
    source.close()


def test_lists_fetches_and_marks(mailbox: tuple[MailboxSource, Deliver]):
    source, deliver = mailbox
    sent = [(message(n), T0 + timedelta(hours=n)) for n in range(3)]
    deliver(sent)
    status = source.open()
    uids = source.new_uids(0)
    assert len(uids) == 3 and uids == sorted(uids)
    fetched = list(source.fetch(uids, max_bytes=10_000))
    assert [f.raw.replace(b"\r\n", b"\n") for f in fetched] == [
        raw.replace(b"\r\n", b"\n") for raw, _ in sent]
    assert [f.internaldate for f in fetched] == [at for _, at in sent]
    assert all(f.internaldate.tzinfo is not None for f in fetched)
    assert source.new_uids(uids[-1]) == []
    assert source.new_uids(uids[0]) == uids[1:]

    source.mark_processed(uids[:1])
    if status.keywords_allowed:
        assert source.unmarked_uids(uids[-1]) == uids[1:]
    else:
        assert source.unmarked_uids(uids[-1]) == []
    assert source.new_uids(0) == uids, "marking never deletes"
    source.close()


def test_oversized_message_yields_only_its_header(mailbox: tuple[MailboxSource, Deliver]):
    source, deliver = mailbox
    deliver([(message(1, b"x" * 5000), T0)])
    source.open()
    [fetched] = list(source.fetch(source.new_uids(0), max_bytes=1000))
    assert fetched.truncated and fetched.size > 5000
    assert b"Subject: m1" in fetched.raw and b"xxxx" not in fetched.raw
    source.close()


def test_closed_mailbox_refuses_work(mailbox: tuple[MailboxSource, Deliver]):
    source, _ = mailbox
    with pytest.raises(MailboxError):
        source.new_uids(0)
