"""End to end on Dovecot: a real mail client (neomutt) writes the staff reply that is relayed."""

from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.harness import PASSWORD, PROVIDER_ADDRESSES, Worker, mailbox_for
from tests.mailclient import mutt_available, mutt_reply
from worker.demo_mail import customer_mail
from worker.embedded import deliver_many

CLARANET = PROVIDER_ADDRESSES["claranet-soho"]
STAFF = "staff@claranetsoho.co.uk"
CUSTOMER = "sarah@example.org"
T0 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)


@pytest.fixture
def mutt() -> None:
    if reason := mutt_available():
        unavailable(reason)


@pytest.mark.parametrize(("typed", "relayed"), [
    (["Hello Sarah, an engineer will visit tomorrow.", "", "-- ", "Team Leader"],
     "Hello Sarah, an engineer will visit tomorrow.\n\n-- \nTeam Leader\n"),
    (["#stage 2", "", "Hello Sarah, I have passed this to our manager."],
     "Hello Sarah, I have passed this to our manager.\n"),
])
def test_neomutt_staff_reply_is_relayed(tmp_path: Path, mutt, dovecot, smtp, typed, relayed):
    worker = Worker.create(tmp_path, imap_port=dovecot.port, smtp_port=smtp.port,
                           mailboxes=[mailbox_for("claranet-soho", processed_folder="Processed",
                                                  extra={"notify": ["team@claranetsoho.co.uk"]})])
    complaint = customer_mail(sender=CUSTOMER, name="Sarah Jones", to=CLARANET,
                              subject="Broadband down", at=T0, text="It is down again.\n")
    deliver_many("127.0.0.1", dovecot.port, CLARANET, PASSWORD, [(complaint, T0)])
    worker.once(T0)
    [notification] = [m for m in smtp.received
                      if m.message["X-Complaints-Worker-Purpose"] == "staff-notification"]
    reference = notification.message["X-Complaints-Worker-Case"]

    # The team leader replies in neomutt; it sends through SMTP, and the mail system delivers
    # the reply to the complaints mailbox (here: the test appends what neomutt sent).
    sent_before = len(smtp.received)
    mutt_reply(notification.raw, from_address=f"Team Leader <{STAFF}>", body_lines=typed,
               smtp_host="127.0.0.1", smtp_port=smtp.port, workdir=tmp_path / "neomutt")
    staff_reply = smtp.received[sent_before]
    assert staff_reply.message["In-Reply-To"] == notification.message["Message-ID"]
    later = T0 + timedelta(minutes=20)
    deliver_many("127.0.0.1", dovecot.port, CLARANET, PASSWORD, [(staff_reply.raw, later)])
    worker.once(later)

    [relay] = [m for m in smtp.received if m.message["X-Complaints-Worker-Purpose"] == "relay"]
    assert relay.rcpt_tos == (CUSTOMER,)
    assert relay.message["Subject"] == f"[{reference}] Re: Broadband down"
    assert relay.message["In-Reply-To"] == email.message_from_bytes(complaint)["Message-ID"]
    assert relay.message.get_body(("plain",)).get_content() == relayed
    case = worker.case(reference)
    assert case["parties"][0]["address"] == CUSTOMER
    if typed[0] == "#stage 2":
        assert any(e["kind"] == "command_stage" for e in case["events"])
    worker.close()
