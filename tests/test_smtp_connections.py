"""The outbox sends on `smtp.connections` SMTP connections at once (default 2), never two
messages to one recipient at a time, so each recipient's mail is accepted in decision order.

The outage tests (test_outage.py) and the SMTP fault tests (test_faults.py: a refusal while
the other connection's message is accepted, a crash after acceptance) run with two as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.harness import PASSWORD, PROVIDER_ADDRESSES, Worker, mailbox_for, per_recipient
from worker.adapters.db_models import Outbox
from worker.adapters.smtp import SmtpSender
from worker.demo_mail import customer_mail
from worker.embedded import EmbeddedSmtpServer, deliver_many

CLARANET = PROVIDER_ADDRESSES["claranet-soho"]
TEAM = "team@claranetsoho.co.uk"
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


class InFlight:
    """What the worker's senders have handed to the server and not yet had answered."""

    def __init__(self) -> None:
        self.recipients: list[frozenset[str]] = []
        self.peak = 0
        self.shared: list[frozenset[str]] = []  # Recipient sets sent while one was in flight.


class WatchedSender(SmtpSender):
    """A real SMTP sender that records how many of its kind are sending at once, and to whom."""

    def __init__(self, *args: object, watch: InFlight) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.watch = watch

    async def send(self, envelope_from: str, recipients: Sequence[str], raw: bytes) -> str:
        mine = frozenset(address.lower() for address in recipients)
        if any(mine & theirs for theirs in self.watch.recipients):
            self.watch.shared.append(mine)
        self.watch.recipients.append(mine)
        self.watch.peak = max(self.watch.peak, len(self.watch.recipients))
        try:
            return await super().send(envelope_from, recipients, raw)
        finally:
            self.watch.recipients.remove(mine)


def complaints(count: int) -> list[tuple[bytes, datetime]]:
    return [(customer_mail(sender=f"customer{n}@example.org", name=f"Customer {n}", to=CLARANET,
                           subject=f"Complaint {n}", at=T0,
                           text=f"Complaint {n}: my line has been dead for days.\n"), T0)
            for n in range(count)]


def watched_worker(tmp_path: Path, pymap, smtp: EmbeddedSmtpServer, connections: int
                   ) -> tuple[Worker, InFlight]:
    # Staff are told of every complaint: each one sends an acknowledgement to its customer
    # and a notification to the one team address.
    worker = Worker.create(tmp_path, imap_port=pymap.port, smtp_port=smtp.port,
                           mailboxes=[mailbox_for("claranet-soho", extra={"notify": [TEAM]})],
                           smtp={"connections": connections})
    watch = InFlight()
    config = worker.app.config
    worker.app.cycle.dispatch.sender_factory = lambda: WatchedSender(config.smtp, watch=watch)
    return worker, watch


@pytest.mark.parametrize("connections", [1, 2])
def test_messages_in_flight_at_once_never_two_to_one_recipient(
        tmp_path: Path, pymap, smtp: EmbeddedSmtpServer, connections: int):
    worker, watch = watched_worker(tmp_path, pymap, smtp, connections)
    mail = complaints(16)
    # Six complaints taken without acknowledgements: six notifications in a row to the team.
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, mail[:6])
    first = worker.once(T0 + timedelta(minutes=1), acknowledge=False)
    # Then ten more: acknowledgements to ten customers between the team's notifications.
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, mail[6:])
    second = worker.once(T0 + timedelta(minutes=2))

    assert (first.dispatch.sent, second.dispatch.sent, len(smtp.received)) == (6, 20, 26)
    assert watch.peak == connections
    assert watch.shared == [], "two messages to one recipient were in flight at once"
    # Each recipient received its mail in the order it was decided (outbox id order).
    with worker.app.sessions() as session:
        decided = per_recipient((row.message_id, row.recipients)
                                for row in session.scalars(select(Outbox).order_by(Outbox.id)))
    received = per_recipient((str(mail.message["Message-ID"]), mail.rcpt_tos)
                             for mail in smtp.received)
    assert received == decided
    assert len(received[TEAM]) == 16
    worker.close()


def test_refusals_with_no_acceptance_between_are_an_outage_across_connections(
        tmp_path: Path, pymap, smtp: EmbeddedSmtpServer):
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, complaints(3))
    worker, _ = watched_worker(tmp_path, pymap, smtp, 2)
    # The two messages started together are refused, and so is one started when the first
    # was refused (whether it starts depends on which answer comes first).
    smtp.fail_next(3, code=421)

    result = worker.once(T0 + timedelta(minutes=1))

    # Two refusals in a row with no acceptance between: the server counts as unavailable,
    # nothing more is started, and the whole queue waits for the same retry time.
    assert result.dispatch.sent == 0 and result.dispatch.outage
    state = worker.status()["smtp"]
    assert state["failures"] == 1
    with worker.app.sessions() as session:
        waiting = {row.next_attempt_at.replace(tzinfo=UTC) for row in session.scalars(
            select(Outbox).where(Outbox.status == "pending"))}
    assert waiting == {datetime.fromisoformat(state["retry_at"])}
    assert smtp.received == []

    smtp.clear()  # The third refusal, if no message reached it.
    after = worker.once(datetime.fromisoformat(state["retry_at"]))
    assert after.dispatch.sent == 6 and after.dispatch.outage is None
    worker.close()
