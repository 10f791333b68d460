"""Read-only views for the CLI: status, case lists and one case in full. Plain JSON-able dicts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from worker.adapters.db_models import (
    Case,
    CaseEvent,
    InboundAttempt,
    InboundMessage,
    MailboxState,
    Outbox,
    OutboxMail,
    SmtpState,
    Timer,
)
from worker.config import Config


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def status(session: Session, config: Config) -> dict[str, Any]:
    states = {(s.mailbox, s.folder): s for s in session.scalars(select(MailboxState))}
    mailboxes = []
    for mailbox in config.mailboxes:
        state = states.get((mailbox.name, mailbox.folder))
        mailboxes.append({
            "name": mailbox.name,
            "provider": mailbox.rules,
            "folder": mailbox.folder,
            "last_poll_at": _iso(state.last_poll_at) if state else None,
            "last_success_at": _iso(state.last_success_at) if state else None,
            "last_error": state.last_error if state else None,
            "last_error_at": _iso(state.last_error_at) if state else None,
            "backlog": state.backlog if state else None,
            "last_uid": state.last_uid if state else 0,
        })
    outbox_counts: dict[str, int] = {status: count for status, count in session.execute(
        select(Outbox.status, func.count()).group_by(Outbox.status))}
    failed = [
        {"id": row.id, "purpose": row.purpose, "case_id": row.case_id, "error": row.last_error,
         "attempts": row.attempts}
        for row in session.scalars(select(Outbox).where(Outbox.status == "failed")
                                   .order_by(Outbox.id).limit(50))
    ]
    quarantined = [
        {"id": row.id, "mailbox": row.mailbox, "uid": row.uid, "received_at": _iso(row.received_at),
         "reason": row.reason}
        for row in session.scalars(select(InboundMessage)
                                   .where(InboundMessage.status == "quarantined")
                                   .order_by(InboundMessage.id.desc()).limit(50))
    ]
    quarantine_total = session.scalar(
        select(func.count()).where(InboundMessage.status == "quarantined")) or 0
    overdue = [
        {"reference": case.reference, "rule": timer.obligation_id, "kind": timer.kind,
         "due_at": _iso(timer.deadline_at or timer.due_at)}
        for timer, case in _overdue_timers(session, limit=50)]
    overdue += [
        {"reference": case.reference, "rule": row.obligation_id or row.purpose,
         "kind": "delivery", "due_at": _iso(row.deliver_by)}
        for row, case in session.execute(_late_mail().limit(50))]
    overdue_total = (session.scalar(
        select(func.count()).select_from(Timer).join(Case, Timer.case_id == Case.id)
        .where(Timer.status == "breached", Case.status == "open")) or 0) + (session.scalar(
            select(func.count()).select_from(_late_mail().subquery())) or 0)
    smtp = session.get(SmtpState, 1)
    retrying = [
        {"mailbox": row.mailbox, "uid": row.uid, "attempts": row.attempts,
         "last_error": row.last_error, "last_attempt_at": _iso(row.last_attempt_at)}
        for row in session.scalars(select(InboundAttempt).order_by(InboundAttempt.id).limit(50))]
    return {
        "overdue": {"total": overdue_total, "latest": overdue},
        "mailboxes": mailboxes,
        "outbox": {"pending": outbox_counts.get("pending", 0),
                   "sent": outbox_counts.get("sent", 0),
                   "failed": outbox_counts.get("failed", 0), "failed_rows": failed},
        # Set while the SMTP server is unreachable: everything pending waits for retry_at.
        "smtp": {"down_since": _iso(smtp.down_since), "retry_at": _iso(smtp.retry_at),
                 "failures": smtp.failures, "last_error": smtp.last_error}
        if smtp is not None and smtp.down_since else None,
        "quarantine": {"total": quarantine_total, "latest": quarantined,
                       # Messages that failed and are retried until quarantined.
                       "retrying": retrying},
    }


def _late_mail() -> Select[Outbox, Case]:
    """Mail still unsent past its deadline (a breach until it goes), on open cases."""
    return (select(Outbox, Case).join(Case, Outbox.case_id == Case.id)
            .where(Outbox.status == "pending", Outbox.breached_at.is_not(None),
                   Case.status == "open")
            .order_by(Outbox.deliver_by, Outbox.id))


def _overdue_timers(session: Session, limit: int | None = None) -> list[tuple[Timer, Case]]:
    """Deadlines missed and still not met, on open cases."""
    query = (select(Timer, Case).join(Case, Timer.case_id == Case.id)
             .where(Timer.status == "breached", Case.status == "open")
             .order_by(Timer.due_at, Timer.id))
    if limit:
        query = query.limit(limit)
    return [(timer, case) for timer, case in session.execute(query)]


def list_cases(session: Session, *, provider: str | None = None,
               status_filter: str | None = None, overdue: bool = False) -> list[dict[str, Any]]:
    query = select(Case).order_by(Case.id)
    if overdue:
        late = select(Outbox.case_id).where(Outbox.status == "pending",
                                            Outbox.breached_at.is_not(None))
        query = query.where(or_(Case.id.in_(select(Timer.case_id)
                                            .where(Timer.status == "breached")),
                                Case.id.in_(late)),
                            Case.status == "open")
    if provider:
        query = query.where(Case.provider_id == provider)
    if status_filter:
        query = query.where(Case.status == status_filter)
    return [_case_summary(case) for case in session.scalars(query)]


def _case_summary(case: Case) -> dict[str, Any]:
    return {
        "reference": case.reference, "provider": case.provider_id, "mailbox": case.mailbox,
        "status": case.status, "subject": case.subject, "customer": case.customer_address,
        "first_raised_at": _iso(case.first_raised_at), "created_at": _iso(case.created_at),
    }


def show_case(session: Session, reference: str) -> dict[str, Any] | None:
    case = session.scalar(select(Case).where(Case.reference == reference))
    if case is None:
        return None
    inbound = session.scalars(select(InboundMessage).where(InboundMessage.case_id == case.id)
                              .order_by(InboundMessage.received_at, InboundMessage.id))
    outbound = session.execute(select(Outbox, OutboxMail.raw).join(OutboxMail)
                               .where(Outbox.case_id == case.id).order_by(Outbox.id))
    events = session.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id)
                             .order_by(CaseEvent.at, CaseEvent.id))
    from worker.core.parse import parse_message

    messages: list[dict[str, Any]] = [
        {"direction": "in", "at": _iso(m.received_at), "from": m.sender, "subject": m.subject,
         "message_id": m.message_id, "kind": m.kind, "status": m.status, "text": m.text or ""}
        for m in inbound
    ]
    for row, raw in outbound:
        parsed = parse_message(raw)
        messages.append({
            "direction": "out", "at": _iso(row.sent_at or row.created_at), "to": row.recipients,
            "subject": parsed.subject, "message_id": row.message_id, "purpose": row.purpose,
            "status": row.status, "text": parsed.text,
        })
    messages.sort(key=lambda m: m["at"] or "")
    timers = session.scalars(select(Timer).where(Timer.case_id == case.id)
                             .order_by(Timer.due_at, Timer.id))
    return {
        **_case_summary(case),
        "timers": [{"rule": t.obligation_id, "kind": t.kind, "occurrence": t.occurrence,
                    "due_at": _iso(t.due_at), "status": t.status, "promised": t.promised}
                   for t in timers],
        "parties": [{"address": p.address, "name": p.name, "role": p.role,
                     "undeliverable": p.undeliverable_reason} for p in case.parties],
        "messages": messages,
        "events": [{"at": _iso(e.at), "kind": e.kind, "detail": e.detail} for e in events],
    }
