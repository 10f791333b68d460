"""Bounces of our own mail and rate limits on automatic mail."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.test_staff_e2e import CLARANET, CUSTOMER, TEAM, Desk, body, desk, purpose
from worker.core.bounces import analyse_bounce
from worker.core.parse import parse_message
from worker.demo_mail import bounce, customer_mail

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


def test_soft_bounce_is_recorded_and_mail_continues(desk: Desk):
    desk.deliver(dsn(desk, "4.2.2", "452 4.2.2 Mailbox full"))
    assert "soft_bounce" in desk.events() and "address_undeliverable" not in desk.events()
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
