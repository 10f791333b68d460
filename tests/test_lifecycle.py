"""Case lifecycle on the real worker: deadlock requests, crash-safe sweeps, overdue, catch-up."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.harness import PASSWORD, Worker, mailbox_for
from tests.test_faults import SimulatedCrash
from tests.test_staff_e2e import CLARANET, CUSTOMER, TEAM, Desk, body, desk, purpose
from worker.cli import main
from worker.demo_mail import customer_mail
from worker.embedded import deliver_many
from worker.services.sweep import TimerSweep

UTC_HOUR = timedelta(hours=1)
__all__ = ["desk"]  # The shared fixture.


def ask_for_deadlock(desk: Desk) -> None:
    [ack] = purpose(desk.smtp, "acknowledgement")
    desk.deliver(customer_mail(
        sender=CUSTOMER, name="Sarah Jones", to=CLARANET, subject=f"Re: {ack.message['Subject']}",
        at=desk.now, in_reply_to=ack.message["Message-ID"],
        text="This is going nowhere. Please send me a deadlock letter so I can go to the "
             "ombudsman.\n"))


def run_until(desk: Desk, until: datetime, step: timedelta = timedelta(hours=6)) -> None:
    while desk.now < until:
        desk.now = min(desk.now + step, until)
        desk.worker.once(desk.now)


def test_unanswered_deadlock_request_gets_the_letter_at_the_decision_deadline(desk: Desk):
    ask_for_deadlock(desk)  # Monday 16 November 2026, 09:20 UTC
    flagged = purpose(desk.smtp, "staff-notification")[-1]
    # Claranet: 5 working days at close: Monday 23 November, 17:30 (GMT).
    assert "Decide by Monday 23 November 2026 at 17:30" in body(flagged)
    run_until(desk, datetime(2026, 11, 23, 17, 29, 59, tzinfo=desk.now.tzinfo))
    assert purpose(desk.smtp, "deadlock-letter") == []
    desk.now = datetime(2026, 11, 23, 17, 30, tzinfo=desk.now.tzinfo)
    desk.worker.once(desk.now)
    [letter] = purpose(desk.smtp, "deadlock-letter")
    assert letter.message["Date"] == "Mon, 23 Nov 2026 17:30:00 +0000"
    assert letter.rcpt_tos == (CUSTOMER,)
    assert desk.timers()["adr_letter"] == "cancelled", "the deadlock letter is the ADR letter"
    run_until(desk, datetime(2027, 1, 10, tzinfo=desk.now.tzinfo), step=timedelta(days=1))
    assert purpose(desk.smtp, "adr-letter") == []


def test_declined_deadlock_request_with_a_permitted_ground_sends_no_letter(desk: Desk):
    ask_for_deadlock(desk)
    desk.staff_reply("#decline-deadlock resolution-imminent engineer booked for Wednesday\n\n"
                     "Hello Sarah, the engineer is booked; we will resolve this this week.\n")
    assert "deadlock letter declined" in body(purpose(desk.smtp, "confirmation")[-1])
    run_until(desk, datetime(2026, 11, 25, tzinfo=desk.now.tzinfo))
    assert purpose(desk.smtp, "deadlock-letter") == []
    assert desk.timers()["adr_letter"] == "pending", "the ADR clock still runs"


def test_a_second_request_while_one_is_pending_is_not_flagged_twice(desk: Desk):
    ask_for_deadlock(desk)
    ask_for_deadlock(desk)
    assert [e for e in desk.events() if e == "deadlock_requested"] == ["deadlock_requested"]


class CrashWhenSending(TimerSweep):
    """Dies inside the timer's transaction, after the letter was queued."""

    def _fire(self, session, timer, case, now):  # type: ignore[no-untyped-def]
        super()._fire(session, timer, case, now)
        if timer.obligation_id == "adr_letter":
            raise SimulatedCrash("killed mid-sweep")


def test_repeated_or_interrupted_sweeps_never_send_the_adr_letter_twice(desk: Desk):
    threshold = datetime(2026, 12, 28, 9, 10, tzinfo=desk.now.tzinfo)  # six weeks after receipt
    run_until(desk, threshold - timedelta(seconds=1), step=timedelta(days=1))
    assert purpose(desk.smtp, "adr-letter") == [], "not one second early"
    sweep = desk.worker.app.cycle.sweep
    desk.worker.app.cycle.sweep = CrashWhenSending(
        sessions=sweep.sessions, desk=sweep.desk, config=sweep.config, providers=sweep.providers)
    with pytest.raises(SimulatedCrash):
        desk.worker.once(threshold)
    desk.worker = desk.worker.restart()
    for _ in range(5):
        desk.worker.once(threshold)
    [letter] = purpose(desk.smtp, "adr-letter")
    assert letter.message["Date"] == "Mon, 28 Dec 2026 09:10:00 +0000"
    assert "Communications Ombudsman" in body(letter)


def test_missed_staff_deadline_is_a_breach_shown_as_overdue_until_met(
        desk: Desk, capsys: pytest.CaptureFixture[str]):
    # Received Monday 09:10: 8h20 of business time that day, 10 minutes on Tuesday.
    due = datetime(2026, 11, 17, 9, 10, tzinfo=desk.now.tzinfo)
    run_until(desk, due - timedelta(seconds=1), step=UTC_HOUR)
    assert purpose(desk.smtp, "escalation") == []
    [reminder] = purpose(desk.smtp, "reminder")
    # Two business hours before Tuesday 09:10 is Monday 15:40; passes run hourly from 09:10.
    assert reminder.message["Date"] == "Mon, 16 Nov 2026 16:10:00 +0000"
    desk.now = due
    desk.worker.once(due)
    [escalation] = purpose(desk.smtp, "escalation")
    assert escalation.message["Date"] == "Tue, 17 Nov 2026 09:10:00 +0000"
    assert "initial_response" in body(escalation) and escalation.rcpt_tos == (TEAM,)
    config = str(desk.worker.config_path)
    assert main(["--config", config, "cases", "list", "--overdue", "--json"]) == 0
    assert [c["reference"] for c in json.loads(capsys.readouterr().out)] == [desk.reference]
    assert main(["--config", config, "status", "--json"]) == 0
    overdue = json.loads(capsys.readouterr().out)["overdue"]
    assert overdue["total"] == 1 and overdue["latest"][0]["rule"] == "initial_response"
    [breach] = [e for e in desk.case()["events"] if e["kind"] == "breach"]
    assert breach["detail"]["rule"] == "initial_response"

    desk.staff_reply("Hello Sarah, sorry for the delay: an engineer is on the way.\n")
    assert main(["--config", config, "cases", "list", "--overdue", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_customer_still_unhappy_after_resolution_reopens_the_case(desk: Desk):
    desk.staff_reply("#resolved\n\nThe line is fixed.\n")
    [resolution] = purpose(desk.smtp, "resolution")
    desk.deliver(customer_mail(
        sender=CUSTOMER, name="Sarah Jones", to=CLARANET,
        subject=f"Re: {resolution.message['Subject']}", at=desk.now,
        in_reply_to=resolution.message["Message-ID"], text="It is still not working!\n"))
    assert desk.case()["status"] == "open"
    assert "reopened" in body(purpose(desk.smtp, "staff-notification")[-1])
    assert desk.timers()["adr_letter"] == "pending"


def test_thanks_after_resolution_does_not_reopen(desk: Desk):
    desk.staff_reply("#resolved\n\nThe line is fixed.\n")
    [resolution] = purpose(desk.smtp, "resolution")
    desk.deliver(customer_mail(
        sender=CUSTOMER, name="Sarah Jones", to=CLARANET,
        subject=f"Re: {resolution.message['Subject']}", at=desk.now,
        in_reply_to=resolution.message["Message-ID"], text="Thank you, all good now.\n"))
    assert desk.case()["status"] == "resolved"


def test_after_downtime_updates_are_caught_up_once(desk: Desk):
    # The worker is down from Monday's receipt until Thursday 19 November, 10:00.
    desk.now = datetime(2026, 11, 19, 10, 0, tzinfo=desk.now.tzinfo)
    desk.worker.once(desk.now)
    updates = purpose(desk.smtp, "update")
    assert [u.message["Date"] for u in updates] == ["Thu, 19 Nov 2026 10:00:00 +0000"]
    missed = [e["detail"]["due_at"] for e in desk.case()["events"]
              if e["kind"] == "breach" and e["detail"]["rule"] == "daily_update"]
    assert missed == ["2026-11-17T17:30:00+00:00", "2026-11-18T17:30:00+00:00"]
    # Thursday's own update was this one; the next goes out on Friday before 17:30.
    run_until(desk, datetime(2026, 11, 20, 18, 0, tzinfo=desk.now.tzinfo), step=UTC_HOUR)
    assert [u.message["Date"] for u in purpose(desk.smtp, "update")] == [
        "Thu, 19 Nov 2026 10:00:00 +0000", "Fri, 20 Nov 2026 17:00:00 +0000"]


def test_staff_update_that_day_replaces_the_automatic_one(desk: Desk):
    desk.now = datetime(2026, 11, 17, 11, 0, tzinfo=desk.now.tzinfo)
    desk.staff_reply("Hello Sarah, still working on it.\n")
    for day in (17, 18):
        for hour, minute in ((16, 59), (17, 0), (17, 30), (18, 0)):
            desk.now = datetime(2026, 11, day, hour, minute, tzinfo=desk.now.tzinfo)
            desk.worker.once(desk.now)
    # Tuesday was covered by the staff reply; Wednesday's goes out automatically, half an
    # hour before the 17:30 close.
    assert [u.message["Date"] for u in purpose(desk.smtp, "update")] == [
        "Wed, 18 Nov 2026 17:00:00 +0000"]


def test_agreed_weekly_cadence_replaces_daily_updates(desk: Desk, tmp_path: Path):
    desk.staff_reply("#updates weekly\n\nHello Sarah, as agreed we will update you weekly.\n")
    run_until(desk, datetime(2026, 12, 1, tzinfo=desk.now.tzinfo), step=timedelta(hours=4))
    # Agreed Monday 16 November at 09:20: a week later, sent half an hour before the deadline,
    # at the first pass after 08:50 (passes run every four hours from 09:20).
    dates = [u.message["Date"] for u in purpose(desk.smtp, "update")]
    assert dates == ["Mon, 23 Nov 2026 09:20:00 +0000", "Mon, 30 Nov 2026 09:20:00 +0000"]


def test_a_reply_on_the_acknowledgement_day_is_not_the_next_days_update(desk: Desk):
    # Claranet: "one update on each working day after the day of the acknowledgement".
    desk.now = datetime(2026, 11, 16, 12, 0, tzinfo=desk.now.tzinfo)
    desk.staff_reply("Hello Sarah, an engineer will call tomorrow.\n")
    for hour, minute in ((16, 59), (17, 0), (18, 0)):
        desk.now = datetime(2026, 11, 17, hour, minute, tzinfo=desk.now.tzinfo)
        desk.worker.once(desk.now)
    assert [u.message["Date"] for u in purpose(desk.smtp, "update")] == [
        "Tue, 17 Nov 2026 17:00:00 +0000"]


def test_letters_give_the_time_the_complaint_reached_the_mailbox(tmp_path, pymap, smtp):
    # It reached the mailbox (INTERNALDATE) at 08:30; the worker only ran at 09:00.
    arrived = datetime(2026, 11, 16, 8, 30, tzinfo=UTC)
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(customer_mail(
        sender=CUSTOMER, name="Sarah Jones", to=CLARANET, subject="Broadband down", at=arrived,
        text="Down again.\n"), arrived)])
    worker = Worker.create(tmp_path, imap_port=pymap.port, smtp_port=smtp.port,
                           mailboxes=[mailbox_for("claranet-soho")])
    worker.once(arrived + timedelta(minutes=30))
    worker.once(datetime(2026, 11, 17, 17, 0, tzinfo=UTC))
    [update] = purpose(smtp, "update")
    assert "Monday 16 November 2026 at 08:30" in " ".join(body(update).split())
    worker.close()
