"""Queue an outgoing email in the caller's transaction: rendered, composed and given its Message-ID now."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy import case as when
from sqlalchemy.orm import Session

from worker.adapters.db_models import Case, Outbox, OutboxMail
from worker.adapters.repository import add_event, insert_loaded, run
from worker.adapters.templates import Rendered
from worker.config import WorkerSettings
from worker.core.addresses import domain_of
from worker.core.attachments import AttachmentData
from worker.core.compose import OutgoingMail, compose
from worker.core.references import tagged_subject

_INSERT_MAIL = insert(OutboxMail)


def new_message_id(from_address: str) -> str:
    # uuid4 is unguessable, so nobody can forge a reply into a thread they never saw.
    return f"<{uuid.uuid4().hex}@{domain_of(from_address)}>"


def queue_email(
    session: Session,
    *,
    case: Case,
    mailbox: str,
    purpose: str,
    idempotency_key: str,
    from_name: str,
    from_address: str,
    envelope_from: str,
    to: Sequence[str],
    rendered: Rendered,
    now: datetime,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    auto_submitted: bool = True,
    attachments: Sequence[AttachmentData] = (),
    limits: WorkerSettings | None = None,
    obligation_id: str | None = None,
    deadline: datetime | None = None,
) -> Outbox:
    """Add the outbox row and its audit event. The UNIQUE idempotency key makes a repeat fail.

    A row that must not go out (an address that bounced permanently, or over the rate limit
    for automatic mail when `limits` is given) is kept as `suppressed` with the reason, so
    the case shows what was not sent and why; staff are told by the caller's alert.

    A message that fulfils an obligation names it and gives its `deadline`: if it has not
    left by then (see `deliver_by`), the pass records a breach and alerts staff.
    """
    message_id = new_message_id(from_address)
    headers = {
        "X-Complaints-Worker-Case": case.reference,
        "X-Complaints-Worker-Purpose": purpose,
    }
    if auto_submitted:
        # RFC 3834: tell well-behaved responders not to answer, and Exchange not to send OOFs.
        headers["Auto-Submitted"] = "auto-replied"
        headers["X-Auto-Response-Suppress"] = "All"
    raw = compose(OutgoingMail(
        from_name=from_name, from_address=from_address, to=to,
        subject=tagged_subject(case.reference, rendered.subject), message_id=message_id, date=now,
        text=rendered.text, html=rendered.html, in_reply_to=in_reply_to, references=references,
        extra_headers=headers,
        attachments=[(a.filename, a.content_type, a.data) for a in attachments],
    ))
    suppressed = suppression_reason(session, case, purpose, to, now, limits)
    limited = purpose in RATE_LIMITED and len(to) == 1 and not suppressed
    values = dict(
        idempotency_key=idempotency_key, message_id=message_id, case_id=case.id, mailbox=mailbox,
        purpose=purpose, envelope_from=envelope_from or from_address, recipients=list(to),
        status="suppressed" if suppressed else "pending", attempts=0, next_attempt_at=now,
        created_at=now, sent_at=None, last_error=suppressed, obligation_id=obligation_id,
        deliver_by=deliver_by(deadline, now) if deadline and not suppressed else None,
        breached_at=None, limited_to=to[0] if limited else None, claimed_until=None,
    )
    row = insert_loaded(session, Outbox, values)
    run(session, _INSERT_MAIL, {"outbox_id": row.id, "raw": raw})
    add_event(session, case.id, "email_suppressed" if suppressed else "email_queued", at=now,
              outbox=row,
              detail={"purpose": purpose, "message_id": message_id, "to": list(to),
                      "idempotency_key": idempotency_key, "reason": suppressed,
                      "rule": obligation_id,
                      "deliver_by": row.deliver_by.isoformat() if row.deliver_by else None})
    return row


# Every message gets at least this long to leave before it counts as late, so a deadline that
# falls at the moment it is queued ("acknowledge at once", the ADR threshold) is not breached
# by an ordinary retry: with the default backoff (30 s doubling) five attempts fit in it. An
# SMTP outage of an hour is a breach; a blip of a few minutes is not.
DELIVERY_GRACE = timedelta(minutes=15)


def deliver_by(deadline: datetime, queued_at: datetime) -> datetime:
    """When a message fulfilling an obligation due at `deadline` must have left by."""
    return max(deadline, queued_at + DELIVERY_GRACE)


def fulfils(row: Outbox, obligation_id: str, deadline: datetime, now: datetime) -> None:
    """Mark a queued message as fulfilling an obligation, so an outage that holds it past its
    deadline is a breach (a suppressed message never leaves; staff were alerted already)."""
    row.obligation_id = obligation_id
    if row.status == "pending":
        row.deliver_by = deliver_by(deadline, now)


# Automatic mail that can loop with an auto-responder; regulatory letters and relayed staff
# replies are never limited.
RATE_LIMITED = ("acknowledgement", "update")


# Automatic mail to one address in the last day and hour: it is addressed to one recipient,
# recorded in `limited_to` (indexed).
_RECENT_AUTOMATIC_MAIL = (
    select(func.count(), func.count(when((Outbox.created_at > bindparam("hour_ago"), 1))))
    .where(Outbox.limited_to == bindparam("address"), Outbox.created_at > bindparam("day_ago")))


def suppression_reason(session: Session, case: Case, purpose: str, to: Sequence[str],
                       now: datetime, limits: WorkerSettings | None) -> str | None:
    """Why this message must not be sent, or None."""
    dead = {p.address: p.undeliverable_reason for p in case.parties if p.undeliverable_at}
    if to and all(address in dead for address in to):
        return f"{', '.join(to)} bounced permanently: {dead[to[0]]}"
    if limits is None or purpose not in RATE_LIMITED:
        return None
    for address in to:
        day, hour = run(session, _RECENT_AUTOMATIC_MAIL, {
            "address": address, "day_ago": now - timedelta(days=1),
            "hour_ago": now - timedelta(hours=1)}).one()
        if hour >= limits.rate_limit_per_hour:
            return f"rate limit: {limits.rate_limit_per_hour} automatic messages an hour to {address}"
        if day >= limits.rate_limit_per_day:
            return f"rate limit: {limits.rate_limit_per_day} automatic messages a day to {address}"
    return None


def global_budget(session: Session, now: datetime, limits: WorkerSettings) -> tuple[int, datetime]:
    """How much automatic mail may still be sent in the rolling hour to `now`, and when the
    oldest of the hour's messages drops out of the window (a slot frees up)."""
    sent, oldest = session.execute(
        select(func.count(), func.min(Outbox.sent_at))
        .where(Outbox.sent_at > now - timedelta(hours=1), Outbox.purpose.in_(RATE_LIMITED))
    ).one()
    # None sent in the hour yet: the first sent in this pass is the one that frees a slot.
    return limits.global_rate_limit_per_hour - sent, (oldest or now) + timedelta(hours=1)
