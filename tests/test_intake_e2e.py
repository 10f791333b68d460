"""Intake to acknowledgement on real IMAP servers (pymap and Dovecot) and a real SMTP server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from imapclient import IMAPClient
from sqlalchemy import select

from tests.harness import PASSWORD, PROVIDER_ADDRESSES, Worker, mailbox_for
from worker.adapters.db_models import CaseEvent, Outbox
from worker.demo_mail import bounce, customer_mail
from worker.embedded import EmbeddedSmtpServer, deliver_many

CLARANET = PROVIDER_ADDRESSES["claranet-soho"]
T0 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)


def complaint(n: int, *, at: datetime = T0, sender: str | None = None) -> bytes:
    return customer_mail(
        sender=sender or f"customer{n}@example.org",
        name=f"Customer {n}",
        to=CLARANET,
        subject=f"Complaint number {n}",
        at=at,
        text=f"My service has failed ({n}).\n",
    )


def acks(smtp: EmbeddedSmtpServer) -> list:
    return [m for m in smtp.received if m.message["X-Complaints-Worker-Purpose"] == "acknowledgement"]


def folder_uids(port: int, folder: str) -> list[int]:
    with IMAPClient("127.0.0.1", port=port, ssl=False) as client:
        client.login(CLARANET, PASSWORD)
        client.select_folder(folder, readonly=True)
        return list(client.search("ALL"))


@pytest.mark.parametrize("processed_folder", ["Processed", None])
def test_fifty_complaints_become_fifty_threaded_acknowledged_cases(
    tmp_path: Path, imap_server, smtp: EmbeddedSmtpServer, processed_folder: str | None, db_url: str
):
    raws = [complaint(n, at=T0 - timedelta(minutes=60 - n)) for n in range(50)]
    deliver_many(
        "127.0.0.1",
        imap_server.port,
        CLARANET,
        PASSWORD,
        [(raw, T0 - timedelta(minutes=60 - n)) for n, raw in enumerate(raws)],
    )
    worker = Worker.create(
        tmp_path,
        db_url=db_url,
        imap_port=imap_server.port,
        smtp_port=smtp.port,
        mailboxes=[mailbox_for("claranet-soho", processed_folder=processed_folder)],
    )

    result = worker.once(T0)

    assert result.ok, result
    cases = worker.cases()
    assert len(cases) == 50
    assert len(acks(smtp)) == 50
    complaint_ids = {customer_mail_id(raw) for raw in raws}
    references = set()
    for mail in acks(smtp):
        msg = mail.message
        ref = msg["X-Complaints-Worker-Case"]
        references.add(ref)
        assert msg["In-Reply-To"] in complaint_ids
        assert msg["Subject"].startswith(f"[{ref}] ")
        assert msg["From"].addresses[0].addr_spec == CLARANET
        assert msg["Auto-Submitted"] == "auto-replied"
        assert msg["X-Auto-Response-Suppress"] == "All"
        assert msg["Message-ID"].endswith("@claranetsoho.co.uk>")
        assert msg.get_body(("plain",)) is not None and msg.get_body(("html",)) is not None
        assert ref in msg.get_body(("plain",)).get_content()
    assert references == {c["reference"] for c in cases}
    assert all(ref.startswith("CLR-2026-") for ref in references)
    # Each acknowledgement answers the complaint of the customer it went to.
    for mail in acks(smtp):
        case = worker.case(mail.message["X-Complaints-Worker-Case"])
        assert mail.rcpt_tos == (case["customer"],)

    # The audit trail links each email queued and sent to its outbox row.
    with worker.app.sessions() as session:
        rows = {row.id: row for row in session.scalars(select(Outbox))}
        events = session.scalars(select(CaseEvent).where(
            CaseEvent.kind.in_(("email_queued", "email_sent")))).all()
    assert len(rows) == 50 and len(events) == 100
    for event in events:
        row = rows[event.outbox_id]
        assert (row.message_id, row.case_id) == (event.detail["message_id"], event.case_id)

    if processed_folder:
        assert folder_uids(imap_server.port, "INBOX") == []
        assert len(folder_uids(imap_server.port, processed_folder)) == 50

    second = worker.restart()
    second.once(T0 + timedelta(minutes=5))
    assert len(smtp.received) == 50, "a second pass must send nothing new"
    assert len(second.cases()) == 50
    second.close()


def customer_mail_id(raw: bytes) -> str:
    for line in raw.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError("no Message-ID")


def test_reply_to_acknowledgement_joins_case_and_stranger_quoting_ref_opens_new_case(
    tmp_path: Path, pymap, smtp: EmbeddedSmtpServer
):
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(complaint(1, sender="ann@example.org"), T0)])
    worker = Worker.create(
        tmp_path, imap_port=pymap.port, smtp_port=smtp.port, mailboxes=[mailbox_for("claranet-soho")]
    )
    worker.once(T0)
    [ack] = acks(smtp)
    ref = ack.message["X-Complaints-Worker-Case"]

    later = T0 + timedelta(hours=1)
    reply = customer_mail(
        sender="ann@example.org",
        name="Ann",
        to=CLARANET,
        subject=f"Re: {ack.message['Subject']}",
        at=later,
        in_reply_to=ack.message["Message-ID"],
        text="Still broken.\n",
    )
    chaser = customer_mail(
        sender="ann@example.org",
        name="Ann",
        to=CLARANET,
        subject=f"[{ref}] any news?",
        at=later,
        text="Any news?\n",
    )
    stranger = customer_mail(
        sender="mallory@example.net",
        name="Mallory",
        to=CLARANET,
        subject=f"Re: [{ref}] me too",
        at=later,
        text="Mine too.\n",
    )
    deliver_many(
        "127.0.0.1", pymap.port, CLARANET, PASSWORD, [(reply, later), (chaser, later), (stranger, later)]
    )
    worker.once(later)

    cases = worker.cases()
    assert len(cases) == 2
    first = worker.case(ref)
    assert [m["text"].strip() for m in first["messages"] if m["direction"] == "in"] == [
        "My service has failed (1).",
        "Still broken.",
        "Any news?",
    ]
    assert first["first_raised_at"] == T0.isoformat(), "a chaser never restarts the clock"
    other = next(c for c in cases if c["reference"] != ref)
    assert other["customer"] == "mallory@example.net"
    opened = worker.case(other["reference"])["events"][0]
    assert opened["kind"] == "complaint_received"
    assert opened["detail"]["quoted_reference"] == ref
    # The stranger got an acknowledgement of their own case, not of Ann's.
    assert [m.message["X-Complaints-Worker-Case"] for m in acks(smtp)] == [ref, other["reference"]]
    worker.close()


def test_automated_mail_is_recorded_never_acknowledged(tmp_path: Path, pymap, smtp):
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(complaint(1, sender="bob@example.org"), T0)])
    worker = Worker.create(
        tmp_path, imap_port=pymap.port, smtp_port=smtp.port, mailboxes=[mailbox_for("claranet-soho")]
    )
    worker.once(T0)
    [ack] = acks(smtp)
    ref = ack.message["X-Complaints-Worker-Case"]
    later = T0 + timedelta(hours=1)
    out_of_office = customer_mail(
        sender="bob@example.org",
        name="Bob",
        to=CLARANET,
        subject="Automatic reply: x",
        at=later,
        in_reply_to=ack.message["Message-ID"],
        headers={"Auto-Submitted": "auto-replied"},
        text="I am away until Monday.\n",
    )
    exchange_ooo = customer_mail(
        sender="carol@example.org",
        name="Carol",
        to=CLARANET,
        subject="Automatic reply: hello",
        at=later,
        headers={"X-Auto-Response-Suppress": "All"},
        text="Away.\n",
    )
    dsn = bounce(
        mta="mx.example.org", to=CLARANET, failed_recipient="bob@example.org", original=ack.raw, at=later
    )
    stray_dsn = bounce(
        mta="mx.example.org", to=CLARANET, failed_recipient="x@example.org",
        original=b"Message-ID: <never-sent-by-us@example.org>\r\n\r\n", at=later,
    )
    list_mail = customer_mail(
        sender="news@lists.example.com",
        name="News",
        to=CLARANET,
        subject="Weekly digest",
        at=later,
        text="News.\n",
        headers={"List-Id": "<news.lists.example.com>", "Precedence": "list"},
    )
    deliver_many(
        "127.0.0.1",
        pymap.port,
        CLARANET,
        PASSWORD,
        [(out_of_office, later), (exchange_ooo, later), (dsn, later), (stray_dsn, later),
         (list_mail, later)],
    )
    result = worker.once(later)

    assert len(smtp.received) == 1, "no automated message may be acknowledged"
    assert len(worker.cases()) == 1
    events = [e["kind"] for e in worker.case(ref)["events"]]
    assert "auto_reply_received" in events
    assert "bounce_received" in events, "a bounce finds its case by the headers it returns"
    quarantine = worker.status()["quarantine"]
    assert quarantine["total"] == 3
    reasons = " | ".join(q["reason"] for q in quarantine["latest"])
    assert "bounce" in reasons and "auto-reply" in reasons and "bulk" in reasons
    assert result.polls[0].quarantined == 3
    worker.close()


def test_own_mail_looping_back_is_not_acknowledged(tmp_path: Path, pymap, smtp):
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(complaint(1), T0)])
    worker = Worker.create(
        tmp_path, imap_port=pymap.port, smtp_port=smtp.port, mailboxes=[mailbox_for("claranet-soho")]
    )
    worker.once(T0)
    [ack] = acks(smtp)
    # Our own acknowledgement delivered back into the mailbox (e.g. a forwarding loop).
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(ack.raw, T0)])
    worker.once(T0 + timedelta(minutes=1))
    assert len(smtp.received) == 1
    events = [e["kind"] for e in worker.case(ack.message["X-Complaints-Worker-Case"])["events"]]
    assert "own_mail_returned" in events
    worker.close()


def test_unparseable_mail_is_quarantined_with_reason(tmp_path: Path, pymap, smtp):
    garbage = b"\x00\x01\x02 this is not an email at all \xff\xfe"
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(garbage, T0), (complaint(2), T0)])
    worker = Worker.create(
        tmp_path, imap_port=pymap.port, smtp_port=smtp.port, mailboxes=[mailbox_for("claranet-soho")]
    )
    worker.once(T0)
    status = worker.status()
    assert status["quarantine"]["total"] == 1
    assert status["quarantine"]["latest"][0]["reason"].startswith("unparseable")
    assert len(worker.cases()) == 1 and len(acks(smtp)) == 1
    worker.close()


def test_oversize_complaint_opens_a_case_and_staff_are_told_to_read_it_on_the_server(
        tmp_path: Path, pymap, smtp):
    photos = customer_mail(sender="big@example.org", name="Big Photos", to=CLARANET,
                           subject="Photos of the damage", at=T0,
                           text="Photos attached.\n" + "x" * 76 * 2000 + "\n")
    auto = customer_mail(sender="away@example.org", name="Away", to=CLARANET, at=T0,
                         subject="Out of office", text="y" * 76 * 2000 + "\n",
                         headers={"Auto-Submitted": "auto-replied"})
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(photos, T0), (auto, T0)])
    worker = Worker.create(
        tmp_path, imap_port=pymap.port, smtp_port=smtp.port, worker={"max_message_bytes": 50_000},
        mailboxes=[mailbox_for("claranet-soho", extra={"notify": ["desk@claranetsoho.co.uk"]})])
    worker.once(T0)

    [case] = worker.cases()
    assert case["customer"] == "big@example.org"
    assert [m.rcpt_tos for m in acks(smtp)] == [("big@example.org",)], "the complaint is acknowledged"
    [note] = [m for m in smtp.received if m.message["X-Complaints-Worker-Purpose"] == "staff-notification"]
    text = note.message.get_body(("plain",)).get_content()
    assert "over the 48 kB limit" in text and "folder INBOX; read it there" in text
    quarantine = worker.status()["quarantine"]
    assert quarantine["total"] == 1
    assert "over the" in quarantine["latest"][0]["reason"], "the auto-reply keeps a clear reason"
    worker.close()


def test_backlog_import_opens_cases_without_acknowledging(tmp_path: Path, pymap, smtp):
    deliver_many(
        "127.0.0.1",
        pymap.port,
        CLARANET,
        PASSWORD,
        [(complaint(n), T0 - timedelta(days=30)) for n in range(3)],
    )
    worker = Worker.create(
        tmp_path, imap_port=pymap.port, smtp_port=smtp.port, mailboxes=[mailbox_for("claranet-soho")]
    )
    worker.once(T0, acknowledge=False)
    assert len(worker.cases()) == 3
    assert smtp.received == []
    case = worker.case(worker.cases()[0]["reference"])
    assert case["first_raised_at"] == (T0 - timedelta(days=30)).isoformat()
    assert "acknowledgement_not_sent" in [e["kind"] for e in case["events"]]
    worker.close()


def test_duplicate_message_id_is_stored_once(tmp_path: Path, pymap, smtp):
    raw = complaint(7)
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(raw, T0), (raw, T0)])
    worker = Worker.create(
        tmp_path, imap_port=pymap.port, smtp_port=smtp.port, mailboxes=[mailbox_for("claranet-soho")]
    )
    result = worker.once(T0)
    assert result.polls[0].duplicates == 1
    assert len(worker.cases()) == 1 and len(smtp.received) == 1
    worker.close()


def test_message_without_message_id_is_handled(tmp_path: Path, pymap, smtp):
    raw = (
        b"From: Dee <dee@example.org>\r\nTo: "
        + CLARANET.encode()
        + b"\r\nSubject: no id\r\n\r\nMy phone line crackles.\r\n"
    )
    deliver_many("127.0.0.1", pymap.port, CLARANET, PASSWORD, [(raw, T0)])
    worker = Worker.create(
        tmp_path, imap_port=pymap.port, smtp_port=smtp.port, mailboxes=[mailbox_for("claranet-soho")]
    )
    worker.once(T0)
    [ack] = acks(smtp)
    assert ack.message["In-Reply-To"] is None
    assert ack.rcpt_tos == ("dee@example.org",)
    worker.close()


def test_every_provider_acknowledges_with_its_own_prefix_and_address(tmp_path, pymap, smtp):
    boxes = [mailbox_for(rules) for rules in PROVIDER_ADDRESSES]
    for rules, address in PROVIDER_ADDRESSES.items():
        raw = customer_mail(
            sender=f"c@{rules}.example", name="C", to=address, subject="Help", at=T0, text="Please help.\n"
        )
        deliver_many("127.0.0.1", pymap.port, address, PASSWORD, [(raw, T0)])
    worker = Worker.create(tmp_path, imap_port=pymap.port, smtp_port=smtp.port, mailboxes=boxes)
    worker.once(T0)
    senders = {
        m.message["From"].addresses[0].addr_spec: m.message["X-Complaints-Worker-Case"] for m in acks(smtp)
    }
    assert set(senders) == set(PROVIDER_ADDRESSES.values())
    prefixes = {ref.split("-")[0] for ref in senders.values()}
    assert prefixes == {"CLR", "HALO", "INF", "ALLC", "CO"}
    ombudsman_ack = next(m for m in acks(smtp) if m.message["X-Complaints-Worker-Case"].startswith("CO-"))
    assert "Independent Assessor" in ombudsman_ack.message.get_body(("plain",)).get_content()
    claranet_ack = next(m for m in acks(smtp) if m.message["X-Complaints-Worker-Case"].startswith("CLR-"))
    text = claranet_ack.message.get_body(("plain",)).get_content()
    assert "Communications Ombudsman" in text and "6 weeks" in text.replace("six", "6")
    worker.close()
