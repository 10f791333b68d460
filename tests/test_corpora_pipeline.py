"""Real third-party mail through the whole pipeline: store, classify, thread, decide, acknowledge.

Uses the in-memory mailbox twin (the IMAP adapter is covered by the contract tests) so that
thousands of corpus messages run in seconds.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.harness import Worker, mailbox_for
from tests.test_corpora import BSD, CORPORA, HUMAN_FORWARDS, SISIMAI, looks_like_mail, messages_in
from worker.adapters.db_models import CaseEvent, InboundMessage, Outbox
from worker.adapters.memory_mailbox import InMemoryMailbox

pytestmark = [
    pytest.mark.corpora,
    pytest.mark.skipif(not CORPORA.is_dir(), reason=f"mail corpora not available at {CORPORA}"),
]

T0 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
VACATION = CORPORA / "postfixadmin-vacation"


def run_pipeline(tmp_path: Path, smtp, messages: list[tuple[str, bytes]]) -> tuple[Worker, dict]:
    """Deliver `messages` (label, raw) to one mailbox, run one pass, return uid -> label."""
    box = InMemoryMailbox()
    labels = {box.deliver(raw, T0): label for label, raw in messages}
    worker = Worker.create(tmp_path, imap_port=1, smtp_port=smtp.port,
                           mailboxes=[mailbox_for("claranet-soho")])
    worker.app.cycle.mailbox_factory = lambda _config: box
    result = worker.once(T0)
    assert result.ok, result
    return worker, labels


def outcomes(worker: Worker, labels: dict[int, str]) -> tuple[dict[str, InboundMessage], set[str]]:
    """Each label's stored row, and the labels whose message opened an acknowledged case."""
    with worker.app.sessions() as session:
        rows = {labels[row.uid]: row for row in session.scalars(select(InboundMessage))}
        acknowledged_cases = set(session.scalars(
            select(Outbox.case_id).where(Outbox.purpose == "acknowledgement")))
        openers = session.execute(
            select(CaseEvent.case_id, InboundMessage.uid)
            .join(InboundMessage, CaseEvent.inbound_message_id == InboundMessage.id)
            .where(CaseEvent.kind == "complaint_received")).all()
    acked = {labels[uid] for case_id, uid in openers if case_id in acknowledged_cases}
    return rows, acked


def assert_nothing_lost(rows: dict[str, InboundMessage], labels: dict[int, str]) -> None:
    assert set(rows) == set(labels.values()), "every delivered message is stored"
    for label, row in rows.items():
        assert row.status in {"processed", "quarantined", "duplicate"}, label
        assert row.status == "processed" or row.reason, f"{label}: set aside without a reason"
        assert not (row.reason or "").startswith("processing failed"), f"{label}: {row.reason}"


def test_bounces_auto_replies_and_list_mail_are_never_acknowledged(tmp_path: Path, smtp):
    expected = json.loads((SISIMAI / "EXPECTED-sisimai.json").read_text())["expected"]
    messages = [(f"bsd/{p.name}", p.read_bytes()) for p in sorted(BSD.iterdir())]
    vacation = json.loads((VACATION / "EXPECTED.json").read_text())["expected"]
    messages += [(f"vacation/{Path(name).name}", (VACATION / name).read_bytes())
                 for name in sorted(vacation, key=lambda n: "test-email" not in n)]
    worker, labels = run_pipeline(tmp_path, smtp, messages)
    rows, acked = outcomes(worker, labels)
    assert_nothing_lost(rows, labels)

    bsd_acked = {label for label in acked if label.startswith("bsd/")}
    # Sisimai lists every file; only the person forwarding a bounce wrote to us themselves.
    assert bsd_acked == {f"bsd/{name}" for name in HUMAN_FORWARDS}
    assert all(f"maildir/bsd/{label[4:]}" in expected for label in bsd_acked)
    automated = {"facebook.txt", "mailing-list.txt", "spam.txt"}
    assert not {f"vacation/{n}" for n in automated} & acked
    assert {"vacation/test-email.txt", "vacation/asterisk-email.txt"} <= acked
    # mail-myself.txt is test-email.txt with other headers and the same Message-ID.
    assert rows["vacation/mail-myself.txt"].status == "duplicate"
    print(f"\n{len(messages)} messages: {len(acked)} acknowledged, "
          + ", ".join(f"{k}={v}" for k, v in Counter(r.status for r in rows.values()).items()))
    worker.close()


def test_every_corpus_message_goes_through_the_pipeline(tmp_path: Path, smtp):
    messages = []
    for path in sorted(CORPORA.rglob("*")):
        if path.is_file() and looks_like_mail(path):
            for index, raw in enumerate(messages_in(path)):
                messages.append((f"{path.relative_to(CORPORA)}#{index}", raw))
    worker, labels = run_pipeline(tmp_path, smtp, messages)
    rows, acked = outcomes(worker, labels)
    assert_nothing_lost(rows, labels)
    statuses = Counter(r.status for r in rows.values())
    kinds = Counter(r.kind or "-" for r in rows.values())
    print(f"\n{len(messages)} corpus messages: {dict(statuses)}; {len(acked)} acknowledged")
    print("  by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())))
    assert len(messages) > 1000
