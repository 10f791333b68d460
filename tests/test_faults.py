"""Crashes and outages: nothing lost, nothing acknowledged twice with a new identity."""

from __future__ import annotations

import email
import logging
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from imapclient import IMAPClient
from sqlalchemy import create_engine, event, text

from tests.harness import PASSWORD, PROVIDER_ADDRESSES, Worker, mailbox_for
from tests.test_intake_e2e import acks, complaint, folder_uids
from worker.adapters.imap import ImapMailbox
from worker.adapters.smtp import SmtpSender
from worker.embedded import EmbeddedSmtpServer, deliver_many
from worker.services import ingest

CLARANET = PROVIDER_ADDRESSES["claranet-soho"]
HALO = PROVIDER_ADDRESSES["halo-tech-group"]
T0 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)


class SimulatedCrash(BaseException):
    """Stands for kill -9: not an Exception, so no handler in the worker can swallow it."""


class CrashBeforeMarking(ImapMailbox):
    def mark_processed(self, uids: Sequence[int]) -> None:
        raise SimulatedCrash("killed after commit, before flagging on the server")


class CrashAfterAcceptance(SmtpSender):
    """Really sends, then dies before the worker can record that it did."""

    async def send(self, envelope_from: str, recipients: Sequence[str], raw: bytes) -> str:
        reply = await super().send(envelope_from, recipients, raw)
        raise SimulatedCrash(f"killed after SMTP accepted: {reply}")


def ack_ids_by_case(smtp: EmbeddedSmtpServer) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for mail in acks(smtp):
        found[mail.message["X-Complaints-Worker-Case"]].add(mail.message["Message-ID"])
    return found


@pytest.mark.parametrize("processed_folder", ["Processed", None])
def test_crash_between_commit_and_imap_flag(tmp_path: Path, imap_server, smtp, processed_folder):
    deliver_many("127.0.0.1", imap_server.port, CLARANET, PASSWORD, [(complaint(n), T0) for n in range(5)])
    worker = Worker.create(
        tmp_path,
        imap_port=imap_server.port,
        smtp_port=smtp.port,
        mailboxes=[mailbox_for("claranet-soho", processed_folder=processed_folder)],
    )
    worker.app.cycle.mailbox_factory = CrashBeforeMarking
    with pytest.raises(SimulatedCrash):
        worker.once(T0)
    assert smtp.received == [], "the crash came before the outbox was dispatched"

    restarted = worker.restart()
    restarted.once(T0 + timedelta(minutes=1))
    restarted.once(T0 + timedelta(minutes=2))

    assert len(restarted.cases()) == 5
    by_case = ack_ids_by_case(smtp)
    assert len(by_case) == 5 and all(len(ids) == 1 for ids in by_case.values())
    assert len(acks(smtp)) == 5
    if processed_folder:
        assert folder_uids(imap_server.port, "INBOX") == [], "left-behind messages get moved"
    restarted.close()


@pytest.mark.parametrize("connections", [1, 2])
def test_crash_between_smtp_acceptance_and_marking_sent(tmp_path: Path, pymap, smtp,
                                                        connections: int):
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(complaint(n), T0) for n in range(3)])
    worker = Worker.create(
        tmp_path, imap_port=pymap.port, smtp_port=smtp.port, mailboxes=[mailbox_for("claranet-soho")],
        smtp={"connections": connections},
    )
    config = worker.app.config
    worker.app.cycle.dispatch.sender_factory = lambda: CrashAfterAcceptance(config.smtp)
    with pytest.raises(SimulatedCrash):
        worker.once(T0)
    # The first acknowledgement was accepted, then we died; with two connections the message
    # on the other one may have been accepted too.
    in_flight = len(smtp.received)
    assert 1 <= in_flight <= connections

    restarted = worker.restart()
    restarted.once(T0 + timedelta(minutes=1))
    restarted.once(T0 + timedelta(minutes=2))

    by_case = ack_ids_by_case(smtp)
    assert len(by_case) == 3
    # What was in flight may arrive twice, but as the same message (same Message-ID), never
    # as a second acknowledgement with a new identity.
    assert all(len(ids) == 1 for ids in by_case.values())
    assert len(acks(smtp)) == 3 + in_flight
    assert restarted.status()["outbox"] == {"pending": 0, "sent": 3, "failed": 0, "failed_rows": []}
    restarted.close()


def test_failing_mailbox_is_logged_once_and_does_not_stop_others(
    tmp_path: Path, pymap, smtp, caplog: pytest.LogCaptureFixture
):
    deliver_many("127.0.0.1", pymap.port, HALO, PASSWORD, [(complaint(1), T0)])
    worker = Worker.create(
        tmp_path,
        imap_port=pymap.port,
        smtp_port=smtp.port,
        mailboxes=[
            mailbox_for("claranet-soho", extra={"username": "nobody@example.org"}),
            mailbox_for("halo-tech-group"),
        ],
    )
    with caplog.at_level(logging.ERROR):
        first = worker.once(T0)
        second = worker.once(T0 + timedelta(minutes=1))
    assert "claranet-soho" in first.mailbox_errors and "claranet-soho" in second.mailbox_errors
    assert len(worker.cases()) == 1 and len(smtp.received) == 1, "the other mailbox still works"
    errors = [r for r in caplog.records if "claranet-soho" in r.getMessage()]
    assert len(errors) == 1, "an outage is logged once, not once per pass"
    assert "nobody@example.org" not in caplog.text and PASSWORD not in caplog.text
    mailboxes = {m["name"]: m for m in worker.status()["mailboxes"]}
    assert mailboxes["claranet-soho"]["last_error"]
    assert mailboxes["halo-tech-group"]["last_error"] is None
    assert mailboxes["halo-tech-group"]["last_success_at"] is not None
    worker.close()


def test_transient_smtp_failure_is_retried_with_backoff(tmp_path: Path, pymap, smtp):
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(complaint(1), T0)])
    worker = Worker.create(
        tmp_path,
        imap_port=pymap.port,
        smtp_port=smtp.port,
        mailboxes=[mailbox_for("claranet-soho")],
        worker={"outbox_retry_base_seconds": 60},
    )
    smtp.fail_next(1, code=451, text="4.3.0 try again later")
    first = worker.once(T0)
    assert first.dispatch.retrying == 1 and smtp.received == []
    worker.once(T0 + timedelta(seconds=30))
    assert smtp.received == [], "not retried before its backoff"
    worker.once(T0 + timedelta(seconds=61))
    assert len(acks(smtp)) == 1
    kinds = [e["kind"] for e in worker.case(worker.cases()[0]["reference"])["events"]]
    assert kinds.count("email_retry_scheduled") == 1 and "email_sent" in kinds
    worker.close()


def test_one_refused_message_does_not_hold_up_the_queue(tmp_path: Path, pymap, smtp):
    """A 4xx for one message while the server takes the next is that message's problem, not an
    outage: the rest goes now and the refused one retries on its own backoff."""
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(complaint(n), T0) for n in range(3)])
    worker = Worker.create(
        tmp_path, imap_port=pymap.port, smtp_port=smtp.port, mailboxes=[mailbox_for("claranet-soho")]
    )
    smtp.fail_next(1, code=452, text="4.2.2 mailbox full")
    result = worker.once(T0)
    assert result.dispatch.sent == 2 and result.dispatch.retrying == 1
    assert result.dispatch.outage is None and worker.status()["smtp"] is None
    worker.once(T0 + timedelta(seconds=31))
    assert len(acks(smtp)) == 3
    worker.close()


def test_permanent_smtp_failure_is_recorded(tmp_path: Path, pymap, smtp):
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(complaint(1), T0)])
    worker = Worker.create(
        tmp_path, imap_port=pymap.port, smtp_port=smtp.port, mailboxes=[mailbox_for("claranet-soho")]
    )
    smtp.fail_next(1, code=550, text="5.1.1 no such user")
    result = worker.once(T0)
    assert result.dispatch.failed == 1
    worker.once(T0 + timedelta(hours=1))
    assert smtp.received == [], "a permanent failure is not retried"
    outbox = worker.status()["outbox"]
    assert outbox["failed"] == 1 and "550" in outbox["failed_rows"][0]["error"]
    worker.close()


def test_smtp_outage_keeps_everything_queued(tmp_path: Path, pymap, smtp):
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(complaint(n), T0) for n in range(3)])
    worker = Worker.create(
        tmp_path, imap_port=pymap.port, smtp_port=smtp.port, mailboxes=[mailbox_for("claranet-soho")]
    )
    smtp.set_down(True)
    result = worker.once(T0)
    assert result.dispatch.outage and len(worker.cases()) == 3
    smtp.set_down(False)
    worker.once(T0 + timedelta(hours=1))
    assert len(acks(smtp)) == 3
    # One each. (Mail to different customers may be accepted in either order on two SMTP
    # connections; test_smtp_connections.py checks each recipient's order.)
    assert sorted(m.message["X-Complaints-Worker-Case"] for m in acks(smtp)) == sorted(
        c["reference"] for c in worker.cases())
    worker.close()


def test_uidvalidity_change_rescans_without_duplicates(tmp_path: Path, imap_server, smtp):
    """A folder restored from backup gets a new UIDVALIDITY and renumbered, re-delivered mail."""
    raws = [(complaint(n), T0) for n in range(4)]
    deliver_many("127.0.0.1", imap_server.port, CLARANET, PASSWORD, raws, folder="Complaints")
    worker = Worker.create(
        tmp_path,
        imap_port=imap_server.port,
        smtp_port=smtp.port,
        mailboxes=[mailbox_for("claranet-soho", extra={"folder": "Complaints"})],
    )
    worker.once(T0)
    assert len(smtp.received) == 4

    with IMAPClient("127.0.0.1", port=imap_server.port, ssl=False) as client:
        client.login(CLARANET, PASSWORD)
        before = client.folder_status("Complaints", ["UIDVALIDITY"])[b"UIDVALIDITY"]
        client.delete_folder("Complaints")
    later = T0 + timedelta(minutes=5)
    new_complaint = (complaint(99), later)
    deliver_many(
        "127.0.0.1", imap_server.port, CLARANET, PASSWORD, [*raws, new_complaint], folder="Complaints"
    )
    with IMAPClient("127.0.0.1", port=imap_server.port, ssl=False) as client:
        client.login(CLARANET, PASSWORD)
        assert client.folder_status("Complaints", ["UIDVALIDITY"])[b"UIDVALIDITY"] != before

    result = worker.once(later)
    assert result.polls[0].duplicates == 4
    assert result.polls[0].cases_opened == 1
    assert len(worker.cases()) == 5 and len(smtp.received) == 5
    worker.close()


# ---------------------------------------------------------------- poison messages


def message_id(raw: bytes) -> str:
    return str(email.message_from_bytes(raw)["Message-ID"])


def fail_on(monkeypatch: pytest.MonkeyPatch, raws: dict[bytes, BaseException]) -> None:
    """Make processing raise for these messages (a bug in parsing them, or the process dying)."""
    real = ingest.parse_message
    poison = {message_id(raw): exc for raw, exc in raws.items()}

    def parse(raw: bytes):  # type: ignore[no-untyped-def]
        parsed = real(raw)
        if parsed.message_id in poison:
            raise poison[parsed.message_id]
        return parsed

    monkeypatch.setattr(ingest, "parse_message", parse)


def quarantine(worker: Worker) -> dict[int, str]:
    return {row["uid"]: row["reason"] for row in worker.status()["quarantine"]["latest"]}


@pytest.mark.parametrize("processed_folder", ["Processed", None])
def test_poison_message_is_retried_then_quarantined_while_mail_flows(
    tmp_path: Path, imap_server, smtp, monkeypatch: pytest.MonkeyPatch, processed_folder
):
    raws = [complaint(n) for n in range(4)]
    deliver_many("127.0.0.1", imap_server.port, CLARANET, PASSWORD, [(raw, T0) for raw in raws])
    worker = Worker.create(tmp_path, imap_port=imap_server.port, smtp_port=smtp.port,
                           mailboxes=[mailbox_for("claranet-soho",
                                                  processed_folder=processed_folder)])
    fail_on(monkeypatch, {raws[1]: ValueError("cannot make sense of this one")})
    poison = folder_uids(imap_server.port, "INBOX")[1]

    first = worker.once(T0)
    assert first.polls[0].cases_opened == 3 and first.polls[0].retrying == 1
    assert quarantine(worker) == {}, "one failure is not enough to quarantine"
    retrying = worker.status()["quarantine"]["retrying"]
    assert [(r["uid"], r["attempts"]) for r in retrying] == [(poison, 1)]

    # The loop goes on: a complaint arriving after the poison message is processed.
    deliver_many("127.0.0.1", imap_server.port, CLARANET, PASSWORD, [(complaint(9), T0)])
    second = worker.once(T0 + timedelta(minutes=1))
    assert second.polls[0].cases_opened == 1 and second.polls[0].retrying == 1
    assert quarantine(worker) == {}

    third = worker.once(T0 + timedelta(minutes=2))
    assert third.polls[0].quarantined == 1
    reason = quarantine(worker)[poison]
    assert "failed 3 times" in reason and "ValueError: cannot make sense of this one" in reason
    assert worker.status()["quarantine"]["retrying"] == []
    if processed_folder:
        assert folder_uids(imap_server.port, "INBOX") == [], "quarantined mail is moved too"

    fourth = worker.once(T0 + timedelta(minutes=3))
    assert fourth.polls[0].fetched == 0, "a quarantined message is not fetched again"
    assert len(worker.cases()) == 4 and len(acks(smtp)) == 4
    worker.close()


def test_message_that_kills_the_worker_is_counted_and_quarantined(
    tmp_path: Path, pymap, smtp, monkeypatch: pytest.MonkeyPatch
):
    """The 2nd message raises (handled), the 4th kills the process; only the 4th is blamed."""
    raws = [complaint(n) for n in range(5)]
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(raw, T0) for raw in raws])
    worker = Worker.create(tmp_path, imap_port=pymap.port, smtp_port=smtp.port,
                           mailboxes=[mailbox_for("claranet-soho")])
    fail_on(monkeypatch, {raws[1]: ValueError("bad"), raws[3]: SimulatedCrash("out of memory")})
    uid = folder_uids(pymap.port, "INBOX")

    attempts = []
    for minute in range(3):
        with pytest.raises(SimulatedCrash):
            worker.once(T0 + timedelta(minutes=minute))
        worker = worker.restart()
        attempts.append({r["uid"]: r["attempts"] for r in worker.status()["quarantine"]["retrying"]})
    # The crash is counted when the next process starts (here: the status after the restart
    # shows the count before the next pass adds the one found at its start).
    assert attempts == [{uid[1]: 1}, {uid[1]: 2, uid[3]: 1}, {uid[3]: 2}]
    assert set(quarantine(worker)) == {uid[1]}

    result = worker.once(T0 + timedelta(minutes=3))
    reasons = quarantine(worker)
    assert set(reasons) == {uid[1], uid[3]}, "messages after the crash are never blamed for it"
    assert "failed 3 times" in reasons[uid[3]]
    assert "the worker stopped while processing" in reasons[uid[3]]
    assert result.polls[0].cases_opened == 1, "the 5th, behind the poison message, goes through"
    assert len(worker.cases()) == 3 and len(acks(smtp)) == 3
    worker.close()


def test_sqlite_batch_commits_together_and_a_death_inside_it_costs_one_more_pass(
    tmp_path: Path, pymap, smtp, monkeypatch: pytest.MonkeyPatch
):
    """On SQLite a batch is one transaction: a worker that dies inside it has stored nothing
    and cannot say which message it was on, so it blames none and processes that batch one
    message at a time; there the message that kills it is found as on PostgreSQL, one death
    later."""
    raws = [complaint(n) for n in range(4)]
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(raw, T0) for raw in raws])
    worker = Worker.create(tmp_path, imap_port=pymap.port, smtp_port=smtp.port,
                           mailboxes=[mailbox_for("claranet-soho")])
    fail_on(monkeypatch, {raws[2]: SimulatedCrash("out of memory")})
    uid = folder_uids(pymap.port, "INBOX")

    with pytest.raises(SimulatedCrash):
        worker.once(T0)
    worker = worker.restart()
    assert worker.cases() == [], "the batch's first two complaints were not committed alone"
    with pytest.raises(SimulatedCrash):
        worker.once(T0 + timedelta(minutes=1))
    worker = worker.restart()
    assert len(worker.cases()) == 2, "one message a transaction: those before the death stay"
    assert worker.status()["quarantine"]["retrying"] == [], "the death inside the batch is on nobody"
    for minute in (2, 3):
        with pytest.raises(SimulatedCrash):
            worker.once(T0 + timedelta(minutes=minute))
        worker = worker.restart()
    assert [(r["uid"], r["attempts"]) for r in worker.status()["quarantine"]["retrying"]] == [
        (uid[2], 2)]

    result = worker.once(T0 + timedelta(minutes=4))
    reasons = quarantine(worker)
    assert set(reasons) == {uid[2]} and "the worker stopped while processing" in reasons[uid[2]]
    assert result.polls[0].cases_opened == 1
    assert len(worker.cases()) == 3 and len(acks(smtp)) == 3
    worker.close()


# ---------------------------------------------------------------- the database failing briefly


def blip_on(monkeypatch: pytest.MonkeyPatch, raw: bytes, blip) -> None:  # type: ignore[no-untyped-def]
    """Run `blip` once, while the worker is in the middle of processing `raw` (inside its
    transaction)."""
    real = ingest.parse_message
    target = message_id(raw)
    pending = [blip]

    def parse(data: bytes):  # type: ignore[no-untyped-def]
        parsed = real(data)
        if parsed.message_id == target and pending:
            pending.pop()()
        return parsed

    monkeypatch.setattr(ingest, "parse_message", parse)


def check_blip_then_recovery(worker: Worker, smtp: EmbeddedSmtpServer, expected: str) -> None:
    """The pass stops and says why, status shows it, and the next pass loses and repeats nothing."""
    result = worker.once(T0)
    assert not result.ok and expected in result.mailbox_errors["claranet-soho"]
    [mailbox] = worker.status()["mailboxes"]
    assert expected in mailbox["last_error"]
    assert len(worker.cases()) == 1, "the message before the failure was committed"
    assert worker.status()["quarantine"]["retrying"] == [], "the database's fault, not the mail's"

    again = worker.once(T0 + timedelta(minutes=1))
    assert again.ok and again.polls[0].cases_opened == 2
    by_case = ack_ids_by_case(smtp)
    assert len(worker.cases()) == 3 and len(by_case) == 3
    assert all(len(ids) == 1 for ids in by_case.values()) and len(acks(smtp)) == 3
    assert worker.status()["mailboxes"][0]["last_error"] is None


def test_sqlite_locked_by_another_process_mid_pass(tmp_path: Path, pymap, smtp,
                                                   monkeypatch: pytest.MonkeyPatch):
    raws = [complaint(n) for n in range(3)]
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(raw, T0) for raw in raws])
    # One message a batch: on SQLite a batch commits together, and the lock is to fall
    # between two commits.
    worker = Worker.create(tmp_path, imap_port=pymap.port, smtp_port=smtp.port,
                           mailboxes=[mailbox_for("claranet-soho", extra={"fetch_batch": 1})])
    engine = worker.app.engine
    # The worker waits 30 s for a lock; here a lock outlasts a 0.1 s wait, so the test is quick.
    event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA busy_timeout = 100"))
    engine.dispose()
    other = sqlite3.connect(tmp_path / "worker.db", isolation_level=None)

    def unlock_after_the_worker_gives_up(context) -> None:  # type: ignore[no-untyped-def]
        if other.in_transaction:
            other.execute("ROLLBACK")

    event.listen(engine, "handle_error", unlock_after_the_worker_gives_up)
    # Another process takes the write lock as soon as the worker has committed the first
    # message, so the worker cannot write the second.
    committed = []
    blip_on(monkeypatch, raws[0], lambda: committed.append(False))

    def lock_after_first_message(_session) -> None:  # type: ignore[no-untyped-def]
        if committed == [False]:
            committed[0] = True
            other.execute("BEGIN IMMEDIATE")

    event.listen(worker.app.sessions, "after_commit", lock_after_first_message)
    check_blip_then_recovery(worker, smtp, "database is locked")
    other.close()
    worker.close()


def test_postgres_connections_killed_mid_pass(tmp_path: Path, pymap, smtp, pg_url: str,
                                              monkeypatch: pytest.MonkeyPatch):
    raws = [complaint(n) for n in range(3)]
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(raw, T0) for raw in raws])
    worker = Worker.create(tmp_path, db_url=pg_url, imap_port=pymap.port, smtp_port=smtp.port,
                           mailboxes=[mailbox_for("claranet-soho")])
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")

    def terminate_every_other_connection() -> None:
        with admin.connect() as connection:
            connection.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"))

    blip_on(monkeypatch, raws[1], terminate_every_other_connection)
    check_blip_then_recovery(worker, smtp, "terminating connection")
    admin.dispose()
    worker.close()
