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
from tests.test_corpora import CORPORA, looks_like_mail, messages_in
from tests.test_corpora_bounces import HUMAN_FORWARDS, automated_samples, sisimai_samples
from worker.adapters.db_models import CaseEvent, InboundMessage, Outbox
from worker.adapters.memory_mailbox import InMemoryMailbox
from worker.core.message import MessageKind
from worker.embedded import EmbeddedSmtpServer

pytestmark = [
    pytest.mark.corpora,
    pytest.mark.skipif(not CORPORA.is_dir(), reason=f"mail corpora not available at {CORPORA}"),
]

T0 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
VACATION = CORPORA / "postfixadmin-vacation"


# Mailboxes for messages that share Message-IDs (the same message with other line endings):
# the per-mailbox Message-ID dedupe would otherwise store them as duplicates, unclassified.
MAILBOX_RULES = ("claranet-soho", "halo-tech-group", "infinity-group")

Labels = dict[tuple[str, int], str]


def run_pipeline(tmp_path: Path, smtp: EmbeddedSmtpServer,
                 *batches: list[tuple[str, bytes]]) -> tuple[Worker, Labels]:
    """Deliver each batch of (label, raw) to a mailbox of its own, run one pass, return
    (mailbox, uid) -> label."""
    boxes = {rules: InMemoryMailbox() for rules in MAILBOX_RULES[:len(batches)]}
    labels = {(rules, box.deliver(raw, T0)): label
              for (rules, box), batch in zip(boxes.items(), batches, strict=True)
              for label, raw in batch}
    worker = Worker.create(tmp_path, imap_port=1, smtp_port=smtp.port,
                           mailboxes=[mailbox_for(rules) for rules in boxes])
    worker.app.cycle.mailbox_factory = lambda config: boxes[config.name]
    result = worker.once(T0)
    assert result.ok, result
    return worker, labels


def outcomes(worker: Worker, labels: Labels) -> tuple[dict[str, InboundMessage], set[str]]:
    """Each label's stored row, and the labels whose message opened an acknowledged case."""
    with worker.app.sessions() as session:
        rows = {labels[(row.mailbox, row.uid)]: row
                for row in session.scalars(select(InboundMessage))}
        acknowledged_cases = set(session.scalars(
            select(Outbox.case_id).where(Outbox.purpose == "acknowledgement")))
        openers = session.execute(
            select(CaseEvent.case_id, InboundMessage.mailbox, InboundMessage.uid)
            .join(InboundMessage, CaseEvent.inbound_message_id == InboundMessage.id)
            .where(CaseEvent.kind == "complaint_received")).all()
    acked = {labels[(mailbox, uid)] for case_id, mailbox, uid in openers
             if case_id in acknowledged_cases}
    return rows, acked


def assert_nothing_lost(rows: dict[str, InboundMessage], labels: Labels) -> None:
    assert set(rows) == set(labels.values()), "every delivered message is stored"
    for label, row in rows.items():
        assert row.status in {"processed", "quarantined", "duplicate"}, label
        assert row.status == "processed" or row.reason, f"{label}: set aside without a reason"
        assert not (row.reason or "").startswith("processing failed"), f"{label}: {row.reason}"


def test_bounces_auto_replies_and_list_mail_are_never_acknowledged(
        tmp_path: Path, smtp: EmbeddedSmtpServer) -> None:
    # Every automated message of the four bounce corpora (sisimai bsd, BounceParser,
    # flufl.bounce, bounce_email in one mailbox; sisimai's CR and CRLF copies in two more), the
    # bounce a customer forwarded to us, and the postfixadmin vacation samples.
    automated = [(f"{corpus}/{s.name}", s.path.read_bytes()) for corpus, s in automated_samples()]
    forwards = [(f"bsd/{s.name}", s.path.read_bytes()) for s in sisimai_samples("bsd")
                if s.name in HUMAN_FORWARDS]
    vacation = json.loads((VACATION / "EXPECTED.json").read_text())["expected"]
    main = [m for m in automated if not m[0].startswith(("mac/", "dos/"))] + forwards
    main += [(f"vacation/{Path(name).name}", (VACATION / name).read_bytes())
             for name in sorted(vacation, key=lambda n: "test-email" not in n)]
    mac = [m for m in automated if m[0].startswith("mac/")]
    dos = [m for m in automated if m[0].startswith("dos/")]
    worker, labels = run_pipeline(tmp_path, smtp, main, mac, dos)
    rows, acked = outcomes(worker, labels)
    assert_nothing_lost(rows, labels)

    statuses = Counter(rows[label].status for label, _ in automated)
    kinds = Counter(rows[label].kind or "-" for label, _ in automated)
    print(f"\n{len(automated)} automated messages: {len(acked & {m[0] for m in automated})} "
          f"acknowledged; {dict(statuses)}; by kind: {dict(sorted(kinds.items()))}")
    # Zero acknowledgements to any of them, and each classified as automated. sisimai reuses
    # Message-IDs across its samples (lhost-exim-31..51 share one): those later copies are
    # set aside as duplicates, so their first copy must be one of these automated messages.
    labels_of = {label for label, _ in automated}
    assert not acked & labels_of
    by_id = {row.id: label for label, row in rows.items()}
    for label in labels_of:
        row = rows[label]
        if row.status == "duplicate":
            first = by_id[int((row.reason or "").rsplit("#", 1)[-1])]
            # ... of the same corpus folder: the CR and CRLF copies are classified themselves.
            assert first in labels_of and first.split("/")[0] == label.split("/")[0], (label, first)
        else:
            assert MessageKind(row.kind).is_automated, f"{label}: {row.kind}"
    # The customer who forwarded a bounce wrote to us themselves, and is acknowledged.
    assert {label for label, _ in forwards} <= acked
    assert not {f"vacation/{n}" for n in ("facebook.txt", "mailing-list.txt", "spam.txt")} & acked
    assert {"vacation/test-email.txt", "vacation/asterisk-email.txt"} <= acked
    # mail-myself.txt is test-email.txt with other headers and the same Message-ID.
    assert rows["vacation/mail-myself.txt"].status == "duplicate"
    worker.close()


def test_every_corpus_message_goes_through_the_pipeline(tmp_path: Path, smtp: EmbeddedSmtpServer) -> None:
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
