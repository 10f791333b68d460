"""SMTP down for over an hour: the outbox keeps everything, backs off, sends it all in order when
the server is back, and records a breach for each deadline that passed meanwhile (and no other)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from tests.harness import PASSWORD, PROVIDER_ADDRESSES, Worker, mailbox_for, per_recipient
from worker.adapters.db_models import Outbox
from worker.demo_mail import customer_mail
from worker.embedded import EmbeddedSmtpServer, deliver_many
from worker.services import queries

CLARANET = PROVIDER_ADDRESSES["claranet-soho"]
TEAM = "team@claranetsoho.co.uk"
LEADER = "leader@claranetsoho.co.uk"
MANAGER = "manager@claranetsoho.co.uk"
LONDON = ZoneInfo("Europe/London")

# Claranet's ADR threshold is 6 weeks for complaints first raised from 8 April 2026, counted
# in local wall-clock time. OLD1's falls at 23:40 on Monday 16 November (GMT, so UTC), and an
# ADR letter is on time on the threshold's own day: it is late from midnight. OLD2's falls at
# 00:20 on the Tuesday, during the outage too, but it has until the end of that day.
OLD1_RAISED = datetime(2026, 10, 5, 23, 40, tzinfo=LONDON)
OLD2_RAISED = datetime(2026, 10, 6, 0, 20, tzinfo=LONDON)
DOWN = datetime(2026, 11, 16, 23, 30, tzinfo=UTC)
# NEW1's acknowledgement (Claranet: "at once", plus 15 minutes' grace) is due 23:50, during
# the outage; NEW2's is due 01:00, after the server is back (it is retried from 00:55).
NEW1_AT = datetime(2026, 11, 16, 23, 35, tzinfo=UTC)
NEW2_AT = datetime(2026, 11, 17, 0, 45, tzinfo=UTC)
UP = datetime(2026, 11, 17, 0, 50, tzinfo=UTC)


def complaint(name: str, at: datetime) -> bytes:
    return customer_mail(sender=f"{name.lower()}@example.org", name=name, to=CLARANET,
                         subject=f"Complaint from {name}", at=at,
                         text=f"{name}: my line has been dead for days.\n")


def purpose_of(mail: Any) -> str:
    return str(mail.message["X-Complaints-Worker-Purpose"])


def delivery_breaches(worker: Worker) -> list[tuple[str, str, str]]:
    """(case, rule, when recorded) of every breach of mail stuck in the outbox."""
    found = []
    for case in worker.cases():
        for event in worker.case(case["reference"])["events"]:
            if event["kind"] == "breach" and event["detail"]["kind"] == "delivery":
                found.append((case["reference"], event["detail"]["rule"], event["at"]))
    return found


def pending_rows(worker: Worker) -> list[Outbox]:
    with worker.app.sessions() as session:
        return list(session.scalars(select(Outbox).where(Outbox.status == "pending")
                                    .order_by(Outbox.id)))


def test_an_hour_without_smtp(tmp_path: Path, pymap, smtp: EmbeddedSmtpServer, db_url: str):
    worker = Worker.create(
        tmp_path, db_url=db_url, imap_port=pymap.port, smtp_port=smtp.port,
        mailboxes=[mailbox_for("claranet-soho", extra={
            "notify": [TEAM], "roles": {"team-leader": [LEADER], "manager": [MANAGER]}})])

    def arrive(raw: bytes, at: datetime) -> None:
        deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(raw, at)])

    # Two cases opened six weeks ago, then a pass just before the outage that catches up
    # everything due since (updates, escalations), with the mail server up.
    arrive(complaint("Olive", OLD1_RAISED), OLD1_RAISED)
    arrive(complaint("Oscar", OLD2_RAISED), OLD2_RAISED)
    worker.once(OLD2_RAISED + timedelta(minutes=1))
    worker.once(DOWN - timedelta(minutes=30))
    old1, old2 = (c["reference"] for c in worker.cases())
    before = len(smtp.received)
    assert worker.status()["outbox"]["pending"] == 0

    smtp.set_down(True)
    now = DOWN
    delays: list[timedelta] = []
    failures = 0
    while now < UP:
        if now == NEW1_AT:
            arrive(complaint("Nina", NEW1_AT), NEW1_AT)
        if now == NEW2_AT:
            arrive(complaint("Ned", NEW2_AT), NEW2_AT)
        result = worker.once(now)
        assert result.dispatch.sent == 0
        if not pending_rows(worker):
            assert result.dispatch.outage is None, "nothing to send: the server is not tried"
            now += timedelta(minutes=5)
            continue
        assert result.dispatch.outage
        smtp_state = worker.status()["smtp"]
        retry_at = datetime.fromisoformat(smtp_state["retry_at"])
        if smtp_state["failures"] > failures:  # This pass tried the server (not in backoff).
            failures = smtp_state["failures"]
            delays.append(retry_at - now)
        # The whole queue shares the server's retry time, so it goes together and in order
        # (an alert queued after this pass's dispatch joins it on the next pass).
        assert {row.next_attempt_at for row in pending_rows(worker)} - {now} == {retry_at}
        if now == NEW1_AT + timedelta(minutes=20):
            # The acknowledgement was due 23:50: the breach shows at once.
            overdue = worker.status()["overdue"]["latest"]
            new1 = worker.cases()[2]["reference"]
            assert {"reference": new1, "rule": "acknowledgement", "kind": "delivery",
                    "due_at": "2026-11-16T23:50:00+00:00"} in overdue
        now += timedelta(minutes=5)

    assert len(smtp.received) == before, "nothing is sent while the server is down"
    # Backoff: 30 s doubling at each failed attempt, capped at 30 minutes.
    assert delays[:3] == [timedelta(seconds=30), timedelta(minutes=1), timedelta(minutes=2)]
    assert delays == sorted(delays) and delays[-1] == timedelta(minutes=30)
    new1, new2 = (c["reference"] for c in worker.cases()[2:])
    purposes = [row.purpose for row in pending_rows(worker)]
    assert purposes.count("acknowledgement") == 2 and purposes.count("adr-letter") == 2

    breaches = delivery_breaches(worker)
    assert sorted((case, rule) for case, rule, _ in breaches) == sorted(
        [(new1, "acknowledgement"), (old1, "adr_letter")])
    with worker.app.sessions() as session:
        overdue_cases = {c["reference"] for c in queries.list_cases(session, overdue=True)}
    assert new1 in overdue_cases and new2 not in overdue_cases
    # OLD2's letter and NEW2's acknowledgement are pending too, but not late.
    assert old2 not in {b[0] for b in breaches} and new2 not in {b[0] for b in breaches}

    queued = [(row.message_id, row.purpose, tuple(row.recipients)) for row in pending_rows(worker)]
    smtp.set_down(False)
    now = UP
    while worker.status()["outbox"]["pending"] and now < UP + timedelta(hours=1):
        worker.once(now)
        now += timedelta(minutes=5)
    delivered = [(m.message["Message-ID"], purpose_of(m), m.rcpt_tos)
                 for m in smtp.received[before:]]
    # Everything queued during the outage, each exactly once, and each recipient's in the
    # order it was queued (two SMTP connections: mail to different recipients may swap).
    assert sorted(delivered[:len(queued)]) == sorted(queued)
    assert per_recipient((mid, to) for mid, _, to in delivered[:len(queued)]) == per_recipient(
        (mid, to) for mid, _, to in queued)
    assert len({mid for mid, _, _ in delivered}) == len(delivered)
    assert worker.status()["smtp"] is None

    # The breach alerts reached the stage owner (Team Leader) once the server was back.
    alerts = [m for m in smtp.received[before:] if purpose_of(m) == "alert"]
    titles = {(m.message["X-Complaints-Worker-Case"], str(m.message["Subject"])) for m in alerts
              if "not delivered by its deadline" in str(m.message["Subject"])}
    assert {case for case, _ in titles} == {new1, old1}
    assert all(m.rcpt_tos == (LEADER,) for m in alerts
               if "not delivered" in str(m.message["Subject"]))

    # When the late mail went, the case records how late it was.
    sent = {e["detail"]["purpose"]: e["detail"] for e in worker.case(new1)["events"]
            if e["kind"] == "email_sent"}
    assert sent["acknowledgement"]["late_by_seconds"] == int(
        (now - timedelta(minutes=5) - datetime(2026, 11, 16, 23, 50, tzinfo=UTC)).total_seconds())
    assert "late_by_seconds" not in {
        e["detail"].get("purpose"): e["detail"] for e in worker.case(new2)["events"]
        if e["kind"] == "email_sent"}["acknowledgement"]

    # More passes record nothing twice, and a breach that was delivered is no longer overdue.
    worker.once(now + timedelta(minutes=30))
    assert sorted(delivery_breaches(worker)) == sorted(breaches)
    assert "delivery" not in {row["kind"] for row in worker.status()["overdue"]["latest"]}
    worker.close()


def test_a_staff_reply_stuck_in_an_outage_is_a_breach(tmp_path: Path, pymap,
                                                       smtp: EmbeddedSmtpServer):
    from tests.test_staff_e2e import Desk

    desk = Desk(tmp_path, pymap, smtp)
    smtp.set_down(True)
    desk.staff_reply("We have booked an engineer for tomorrow morning.")
    assert desk.timers()["initial_response"] == "met", "the reply meets the deadline..."
    [relay] = [m for m in desk.case()["messages"] if m.get("purpose") == "relay"]
    assert relay["status"] == "pending"
    # ...but a reply still unsent when that deadline passes (Tuesday 09:10) is a breach.
    desk.now = datetime(2026, 11, 17, 9, 0, tzinfo=UTC)
    desk.worker.once(desk.now)
    assert delivery_breaches(desk.worker) == []
    desk.now = datetime(2026, 11, 17, 9, 30, tzinfo=UTC)
    desk.worker.once(desk.now)
    assert [rule for _, rule, _ in delivery_breaches(desk.worker)] == ["initial_response"]
    smtp.set_down(False)
    desk.now += timedelta(hours=1)
    desk.worker.once(desk.now)
    assert [purpose_of(m) for m in smtp.received].count("relay") == 1


def test_a_deadlock_letter_stuck_in_an_outage_is_a_breach(tmp_path: Path, pymap,
                                                           smtp: EmbeddedSmtpServer):
    from tests.test_lifecycle import ask_for_deadlock, run_until
    from tests.test_staff_e2e import Desk

    desk = Desk(tmp_path, pymap, smtp)
    ask_for_deadlock(desk)  # Undecided, the letter goes at Monday 23 November, 17:30 GMT.
    run_until(desk, datetime(2026, 11, 23, 17, 0, tzinfo=UTC))
    smtp.set_down(True)
    desk.now = datetime(2026, 11, 23, 17, 30, tzinfo=UTC)
    desk.worker.once(desk.now)
    assert delivery_breaches(desk.worker) == [], "the letter has its 15 minutes' grace"
    desk.now = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
    desk.worker.once(desk.now)
    assert [rule for _, rule, _ in delivery_breaches(desk.worker)] == ["deadlock_decision"]
    smtp.set_down(False)
    desk.now += timedelta(hours=1)
    desk.worker.once(desk.now)
    assert [purpose_of(m) for m in smtp.received].count("deadlock-letter") == 1
