"""Value types for one inbound message: what the parser extracted and what the classifier decided."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class MessageKind(enum.Enum):
    """What sort of mail a message is, decided before anything else happens to it."""

    # Written by a person: a new complaint or a follow-up, depending on threading.
    HUMAN = "human"
    # RFC 3834 auto-replies, out-of-office, vendor auto-responders and challenge-response
    # systems ("prove you are human"): never acknowledged, never answered.
    AUTO_REPLY = "auto-reply"
    # A delivery failure report (DSN or a non-standard MTA bounce). A delay warning (Action:
    # delayed, "still being retried") is one too, a soft one: analyse_bounce says not permanent.
    BOUNCE = "bounce"
    # A delivery report that is not a failure or a delay (delivered, relayed, expanded) or a
    # read receipt.
    DELIVERY_REPORT = "delivery-report"
    # An ARF abuse/feedback report.
    FEEDBACK_REPORT = "feedback-report"
    # Mailing-list, bulk, junk or spam-flagged mail.
    BULK = "bulk"
    # Mail the worker itself sent, coming back to one of our mailboxes.
    OWN_MAIL = "own-mail"
    # Bytes that cannot be understood as a message we could ever answer.
    UNPARSEABLE = "unparseable"

    @property
    def is_automated(self) -> bool:
        """True for every kind that must never be acknowledged or auto-answered."""
        return self not in (MessageKind.HUMAN, MessageKind.UNPARSEABLE)


@dataclass(frozen=True, kw_only=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ParsedMessage:
    """Everything the core needs from one message, decoded and normalised.

    Addresses are lower-cased addr-specs. Message-IDs keep their angle brackets
    (`<id@host>`) so that they compare equal to what we store and send. `headers`
    holds every header field, lower-cased names, values decoded to text, in order.
    `problem` is set when the bytes are not a usable message at all.
    """

    message_id: str | None
    in_reply_to: tuple[str, ...] = ()
    references: tuple[str, ...] = ()
    from_address: str | None = None
    from_name: str = ""
    sender_address: str | None = None
    return_path: str | None = None
    reply_to: tuple[str, ...] = ()
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    subject: str = ""
    date: datetime | None = None
    text: str = ""
    text_from_html: bool = False
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    content_type: str = "text/plain"
    report_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    defects: tuple[str, ...] = ()
    # Fields of the machine-readable part of a report (message/delivery-status,
    # message/feedback-report, message/disposition-notification), as (lower-cased name, value)
    # pairs in order, all field groups flattened: e.g. ("action", "failed"),
    # ("final-recipient", "rfc822; a@example.com"), ("feedback-type", "abuse").
    report_fields: tuple[tuple[str, str], ...] = ()
    # Header fields of the first enclosed message (a message/rfc822 or text/rfc822-headers part,
    # e.g. the returned original inside a bounce), same shape as `headers`.
    enclosed_headers: tuple[tuple[str, str], ...] = ()
    problem: str | None = None

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    def header_values(self, name: str) -> tuple[str, ...]:
        wanted = name.lower()
        return tuple(value for key, value in self.headers if key == wanted)

    @property
    def thread_ids(self) -> tuple[str, ...]:
        """Message-IDs this message follows, nearest first: In-Reply-To, then References newest first."""
        seen: list[str] = []
        for mid in (*self.in_reply_to, *reversed(self.references)):
            if mid not in seen:
                seen.append(mid)
        return tuple(seen)


@dataclass(frozen=True, kw_only=True, slots=True)
class Classification:
    """The kind of a message and the evidence for it (shown in the audit trail)."""

    kind: MessageKind
    reasons: tuple[str, ...] = field(default=())
