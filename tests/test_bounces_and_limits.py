"""Bounces of our own mail and rate limits on automatic mail."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.harness import PASSWORD, Worker, mailbox_for, write_config
from tests.test_intake_e2e import complaint
from tests.test_staff_e2e import CLARANET, CUSTOMER, T0, TEAM, Desk, body, desk, purpose
from worker.config import load_config
from worker.core.bounces import analyse_bounce
from worker.core.parse import parse_message
from worker.demo_mail import bounce, customer_mail
from worker.embedded import EmbeddedSmtpServer, deliver_many
from worker.errors import ConfigError

__all__ = ["desk"]  # The shared fixture.


def dsn(desk: Desk, status: str, diagnostic: str) -> bytes:
    [ack] = purpose(desk.smtp, "acknowledgement")
    raw = bounce(mta="mx.example.org", to=CLARANET, failed_recipient=CUSTOMER,
                 original=ack.raw, at=desk.now)
    return raw.replace(b"Status: 5.1.1", f"Status: {status}".encode()).replace(
        b"smtp; 550 5.1.1 User unknown", f"smtp; {diagnostic}".encode())


def test_hard_bounce_stops_mail_to_the_address_and_alerts_staff(desk: Desk):
    desk.deliver(dsn(desk, "5.1.1", "550 5.1.1 User unknown"))
    case = desk.case()
    [party] = [p for p in case["parties"] if p["address"] == CUSTOMER]
    assert "550 5.1.1 User unknown" in party["undeliverable"]
    assert "address_undeliverable" in desk.events()
    [alert] = purpose(desk.smtp, "alert")
    assert alert.rcpt_tos == (TEAM,)
    assert "ADR letter" in body(alert) and "phone or post" in body(alert)

    # The next automatic update is not sent, but kept on the case with the reason.
    desk.now = datetime(2026, 11, 17, 17, 0, tzinfo=desk.now.tzinfo)
    desk.worker.once(desk.now)
    assert purpose(desk.smtp, "update") == []
    [kept] = [m for m in desk.case()["messages"]
              if m["direction"] == "out" and m.get("purpose") == "update"]
    assert kept["status"] == "suppressed"
    assert "update not sent" in body(purpose(desk.smtp, "alert")[-1])


def test_bounce_without_our_headers_is_matched_by_the_failed_recipient(desk: Desk):
    # A qmail-style failure notice that returns nothing of our message: only who failed.
    desk.deliver((
        f"From: MAILER-DAEMON@mx.example.org\r\nTo: {CLARANET}\r\n"
        "Subject: failure notice\r\nMessage-ID: <qmail-1@mx.example.org>\r\n"
        f"Date: {desk.now.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n\r\n"
        "Hi. This is the qmail-send program at mx.example.org.\r\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
        f"<{CUSTOMER}>:\r\n550 5.1.1 mailbox unavailable\r\n").encode())
    assert "address_undeliverable" in desk.events()
    [party] = [p for p in desk.case()["parties"] if p["address"] == CUSTOMER]
    assert "5.1.1" in party["undeliverable"]
    assert desk.worker.status()["quarantine"]["total"] == 0


def test_soft_bounce_is_recorded_and_mail_continues(desk: Desk):
    desk.deliver(dsn(desk, "4.2.2", "452 4.2.2 Mailbox full"))
    assert "soft_bounce" in desk.events() and "address_undeliverable" not in desk.events()
    desk.now = datetime(2026, 11, 17, 17, 0, tzinfo=desk.now.tzinfo)
    desk.worker.once(desk.now)
    assert len(purpose(desk.smtp, "update")) == 1


def test_delay_warning_is_recorded_as_a_soft_bounce(desk: Desk):
    desk.deliver(dsn(desk, "4.4.7", "451 4.4.7 Delivery time expired, still retrying")
                 .replace(b"Action: failed", b"Action: delayed"))
    assert "soft_bounce" in desk.events() and "address_undeliverable" not in desk.events()
    assert purpose(desk.smtp, "alert") == []
    desk.now = datetime(2026, 11, 17, 17, 0, tzinfo=desk.now.tzinfo)
    desk.worker.once(desk.now)
    assert len(purpose(desk.smtp, "update")) == 1


def test_automatic_mail_to_one_address_is_rate_limited_and_staff_are_told(desk: Desk):
    # An auto-responder that escapes detection keeps writing new mail: five more complaints
    # within the hour make six acknowledgements in all; the sixth is suppressed.
    for n in range(5):
        desk.deliver(customer_mail(sender=CUSTOMER, name="Sarah Jones", to=CLARANET,
                                   subject=f"Message {n}", at=desk.now, text=f"Text {n}.\n"))
    acknowledged = purpose(desk.smtp, "acknowledgement")
    assert len(acknowledged) == 5
    last = purpose(desk.smtp, "staff-notification")[-1]
    assert "No acknowledgement was sent: rate limit: 5 automatic messages an hour" in body(last)
    # After the hour the limit lifts.
    desk.now += timedelta(hours=1)
    desk.deliver(customer_mail(sender=CUSTOMER, name="Sarah Jones", to=CLARANET,
                               subject="Later", at=desk.now, text="Later.\n"))
    assert len(purpose(desk.smtp, "acknowledgement")) == 6


def parsed(raw: bytes):  # type: ignore[no-untyped-def]
    return parse_message(raw)


def test_analyse_bounce_reads_dsn_status_and_non_standard_wording():
    at = datetime(2026, 1, 5, 10, 0).astimezone()
    hard = parsed(bounce(mta="mx", to="c@x.example", failed_recipient="a@b.example",
                         original=b"Message-ID: <m@x>\r\n\r\n", at=at))
    report = analyse_bounce(hard)
    assert report.recipients == ("a@b.example",) and report.permanent
    soft = analyse_bounce(parsed(bounce(
        mta="mx", to="c@x.example", failed_recipient="a@b.example",
        original=b"Message-ID: <m@x>\r\n\r\n", at=at).replace(b"Status: 5.1.1", b"Status: 4.4.7")))
    assert not soft.permanent
    qmail = parsed(b"From: MAILER-DAEMON@mx.example\r\nTo: c@x.example\r\n"
                   b"Subject: failure notice\r\nX-Failed-Recipients: gone@b.example\r\n\r\n"
                   b"Hi. This is the qmail-send program.\r\n<gone@b.example>:\r\n"
                   b"Sorry, no mailbox here by that name. (#5.1.1)\r\n")
    report = analyse_bounce(qmail)
    assert report.recipients == ("gone@b.example",) and report.permanent


def test_global_rate_limit_holds_automatic_mail_back_and_alerts_staff_once(
    tmp_path: Path, pymap, smtp: EmbeddedSmtpServer
):
    # A flood from many addresses: each is under its own limit, together they are over the
    # global one. Nothing is dropped: what is over waits for the rolling hour to free up.
    worker = Worker.create(tmp_path, imap_port=pymap.port, smtp_port=smtp.port,
                           worker={"global_rate_limit_per_hour": 3},
                           mailboxes=[mailbox_for("claranet-soho", extra={"notify": [TEAM]})])
    raws = [complaint(n) for n in range(5)]
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(raw, T0) for raw in raws])
    first = worker.once(T0)
    assert len(first.dispatch.deferred) == 2
    assert len(purpose(smtp, "acknowledgement")) == 3
    assert len(purpose(smtp, "staff-notification")) == 5, "staff mail is never held back"
    held = [c["reference"] for c in worker.cases()[3:]]
    for reference in held:
        [event] = [e for e in worker.case(reference)["events"] if e["kind"] == "email_deferred"]
        assert event["detail"]["until"] == (T0 + timedelta(hours=1)).isoformat()

    # The alert, queued after that dispatch, goes with the next one; once in the hour.
    for minutes in (1, 10, 30):
        worker.once(T0 + timedelta(minutes=minutes))
    assert len(purpose(smtp, "acknowledgement")) == 3, "still within the hour"
    [alert] = [m for m in purpose(smtp, "alert") if "global" in str(m.message["Subject"])]
    assert alert.rcpt_tos == (TEAM,)
    assert "2 are waiting" in body(alert) and "Nothing is dropped" in body(alert)

    worker.once(T0 + timedelta(hours=1))
    acknowledged = {m.message["X-Complaints-Worker-Case"] for m in purpose(smtp, "acknowledgement")}
    assert len(purpose(smtp, "acknowledgement")) == 5 and set(held) <= acknowledged
    assert worker.status()["outbox"]["pending"] == 0
    worker.close()


def test_bad_limits_are_reported_with_file_and_line(tmp_path: Path):
    path = write_config(tmp_path / "config.toml", db_url="sqlite:///x.db", imap_port=1, smtp_port=1,
                        mailboxes=[mailbox_for("claranet-soho")],
                        worker={"global_rate_limit_per_hour": 0, "poison_attempts": 0})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = [str(p) for p in caught.value.problems]
    assert any(p.startswith(f"{path}:2:") and "global_rate_limit_per_hour" in p for p in problems)
    assert any(p.startswith(f"{path}:3:") and "poison_attempts" in p for p in problems)
