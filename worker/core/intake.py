"""What to do with one inbound message, decided from facts alone (no I/O, `now` is an argument)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from worker.core.addresses import address_problem
from worker.core.message import Classification, MessageKind, ParsedMessage
from worker.core.threading import ThreadMatch


@dataclass(frozen=True, kw_only=True, slots=True)
class Quarantine:
    """Keep the message aside with a reason; a person must look at it."""

    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class OpenCase:
    """A new complaint: open a case, and acknowledge it unless `acknowledge_to` is None."""

    customer_address: str
    customer_name: str
    first_raised_at: datetime
    acknowledge_to: str | None
    # Why no acknowledgement goes out, when acknowledge_to is None.
    no_acknowledgement_reason: str | None
    quoted_reference: str | None
    event_kind: str = "complaint_received"


@dataclass(frozen=True, kw_only=True, slots=True)
class JoinCase:
    """Record the message on an existing case; nothing is sent to the sender."""

    case_id: int
    event_kind: str
    add_party: str | None


Decision = Quarantine | OpenCase | JoinCase

_KIND_EVENTS = {
    MessageKind.AUTO_REPLY: "auto_reply_received",
    MessageKind.BOUNCE: "bounce_received",
    MessageKind.DELIVERY_REPORT: "delivery_report_received",
    MessageKind.FEEDBACK_REPORT: "feedback_report_received",
    MessageKind.BULK: "bulk_mail_received",
    MessageKind.OWN_MAIL: "own_mail_returned",
}


def decide_intake(
    msg: ParsedMessage,
    classification: Classification,
    match: ThreadMatch,
    *,
    received_at: datetime,
    acknowledge: bool,
    now: datetime,
) -> Decision:
    """Classification comes first: automated mail is never acknowledged, whatever threading says."""
    if received_at.tzinfo is None or now.tzinfo is None:
        raise ValueError("received_at and now must be aware datetimes")
    kind = classification.kind
    if kind is MessageKind.UNPARSEABLE:
        return Quarantine(reason=f"unparseable: {msg.problem or 'no usable content'}")
    if kind.is_automated:
        if match.case_id is not None:
            return JoinCase(case_id=match.case_id, event_kind=_KIND_EVENTS[kind], add_party=None)
        evidence = "; ".join(classification.reasons) or kind.value
        return Quarantine(reason=f"{kind.value} matching no case ({evidence})")
    sender = msg.from_address or ""
    if match.case_id is not None:
        return JoinCase(case_id=match.case_id, event_kind="customer_message_received",
                        add_party=sender or None)
    reply_to = _reply_address(msg)
    why_not = None
    if not acknowledge:
        why_not = "acknowledgements are switched off for this mailbox (backlog import)"
    elif reply_to is None:
        why_not = "the sender address cannot be mailed"
    return OpenCase(
        customer_address=sender,
        customer_name=msg.from_name,
        first_raised_at=received_at,
        acknowledge_to=reply_to if why_not is None else None,
        no_acknowledgement_reason=why_not,
        quoted_reference=match.quoted_reference,
    )


def _reply_address(msg: ParsedMessage) -> str | None:
    """Where the customer wants answers: a single valid Reply-To, else From."""
    candidates = [*msg.reply_to] if len(msg.reply_to) == 1 else []
    candidates.append(msg.from_address or "")
    for address in candidates:
        if address and address_problem(address) is None:
            return address
    return None
