"""SQLAlchemy 2 models: the only schema, changed only through Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as UTC; SQLite has no time zones, so naive values read back as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class MailboxState(Base):
    """Where we are in one IMAP folder, and how the last poll went."""

    __tablename__ = "mailbox_state"
    __table_args__ = (UniqueConstraint("mailbox", "folder"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(100))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    last_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    backlog: Mapped[int] = mapped_column(Integer, default=0)
    # The UIDs of the batch being processed, committed before it starts and cleared after it.
    # A crash leaves them here, so the next pass knows which message was in hand (a poison
    # message that kills the process) without a commit per message.
    inflight: Mapped[list[int] | None] = mapped_column(JSON)
    # Whether that batch is processed in one transaction (SQLite): then a crash inside it leaves
    # nothing stored, so it does not tell which message was in hand.
    inflight_together: Mapped[bool] = mapped_column(Boolean, default=False,
                                                    server_default=false())


class InboundAttempt(Base):
    """A message whose processing failed and will be retried; quarantined after N attempts."""

    __tablename__ = "inbound_attempt"
    __table_args__ = (UniqueConstraint("mailbox", "folder", "uidvalidity", "uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(100))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text)
    last_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InboundMessage(Base):
    """Every message fetched, with its raw bytes, stored before any side effect."""

    __tablename__ = "inbound_message"
    __table_args__ = (
        UniqueConstraint("mailbox", "folder", "uidvalidity", "uid"),
        # Message-ID dedupe per mailbox; duplicates are stored with a NULL key.
        UniqueConstraint("mailbox", "dedupe_key"),
        Index(None, "message_id"),
        Index(None, "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(100))
    folder: Mapped[str] = mapped_column(String(255))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[str | None] = mapped_column(String(998))
    dedupe_key: Mapped[str | None] = mapped_column(String(998))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    sender: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str | None] = mapped_column(String(40))
    # processed | quarantined | duplicate
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reference: Mapped[str] = mapped_column(String(40), unique=True)
    provider_id: Mapped[str] = mapped_column(String(100))
    mailbox: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), index=True)
    subject: Mapped[str] = mapped_column(Text)
    customer_address: Mapped[str] = mapped_column(String(320))
    customer_name: Mapped[str] = mapped_column(String(320))
    # When the complaint was first raised through any channel; starts the ADR clock.
    first_raised_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The stage of the provider's procedure the case is at (rules: [[stages]]).
    stage: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    assignee: Mapped[str | None] = mapped_column(String(320))
    # An update cadence agreed with the customer (#updates), replacing the rule's repeat.
    update_cadence: Mapped[str | None] = mapped_column(String(40))
    # A staff decision that the ADR letter must not go: vexatious | out-of-jurisdiction.
    adr_exception: Mapped[str | None] = mapped_column(String(40))
    adr_exception_reason: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    parties: Mapped[list[CaseParty]] = relationship(back_populates="case", order_by="CaseParty.id")


class CaseParty(Base):
    __tablename__ = "case_party"
    # By address: a bounce that returns none of our headers is matched by who failed.
    __table_args__ = (UniqueConstraint("case_id", "address"), Index(None, "address"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    address: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(320))
    # customer | reply-to | cc
    role: Mapped[str] = mapped_column(String(20))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set by a permanent bounce: no more mail goes to this address on this case.
    undeliverable_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    undeliverable_reason: Mapped[str | None] = mapped_column(Text)

    case: Mapped[Case] = relationship(back_populates="parties")


class CaseEvent(Base):
    """Append-only audit trail: what happened to a case, when, and why."""

    __tablename__ = "case_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(60))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    inbound_message_id: Mapped[int | None] = mapped_column(ForeignKey("inbound_message.id"))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id"))


class Outbox(Base):
    """Mail decided on but maybe not yet sent; the row is written with the decision."""

    __tablename__ = "outbox"
    __table_args__ = (
        # The outbox reads due rows in id order, resuming after the last: this index walks
        # them in that order and tests the due time without reading the row. (One led by
        # the due time made every read sort all pending rows: 5 ms a read at 3,000.)
        Index(None, "status", "id", "next_attempt_at"),
        # Per-recipient and global rate limits count recent automatic mail through these.
        Index(None, "limited_to", "created_at"),
        Index(None, "sent_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # One per (case, purpose, sequence), e.g. ack:CLR-2026-000123; the database enforces it.
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    mailbox: Mapped[str] = mapped_column(String(100))
    purpose: Mapped[str] = mapped_column(String(40))
    envelope_from: Mapped[str] = mapped_column(String(320))
    recipients: Mapped[list[str]] = mapped_column(JSON)
    # pending | sent | failed | suppressed (never sent: rate limit or undeliverable address)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    # The rule-file obligation this message fulfils, and when it must have left by; a pending
    # row past `deliver_by` is a breach, recorded once (`breached_at`).
    obligation_id: Mapped[str | None] = mapped_column(String(100))
    deliver_by: Mapped[datetime | None] = mapped_column(UTCDateTime)
    breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The recipient of rate-limited automatic mail (acknowledgements, updates; one address
    # each), so the limits are indexed counts; NULL for all other mail and for suppressed rows.
    limited_to: Mapped[str | None] = mapped_column(String(320))
    # Set while a worker is sending the row; another worker may take it once this has passed.
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboxMail(Base):
    """The bytes of an outbox row's mail, written once and never updated. They are kept out of
    the row because SQLite rewrites a whole record, overflow pages included, when any column
    changes: marking a 28 kB notification sent cost twice what marking a bare row does."""

    __tablename__ = "outbox_mail"

    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"), primary_key=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class SmtpState(Base):
    """The SMTP server as the dispatcher last found it: one row, id 1.

    While it is unreachable every pending message waits for `retry_at`, so the queue goes
    out together and in order when it is back, across restarts too.
    """

    __tablename__ = "smtp_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Consecutive passes that found the server unreachable; 0 when it is up.
    failures: Mapped[int] = mapped_column(Integer, default=0)
    down_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class Timer(Base):
    """One planned deadline of a case: an obligation's due time or hard limit, from its rule."""

    __tablename__ = "timer"
    __table_args__ = (
        Index(None, "status", "due_at"),
        # A case's pending deadlines, soonest first (every staff notification lists them).
        Index(None, "case_id", "status", "due_at"),
        UniqueConstraint("case_id", "obligation_id", "kind", "occurrence"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    # The rule-file obligation id (initial_response, adr_letter, ...).
    obligation_id: Mapped[str] = mapped_column(String(100))
    # due | hard_limit
    kind: Mapped[str] = mapped_column(String(20))
    # 1 for single obligations; the occurrence number for repeating ones.
    occurrence: Mapped[int] = mapped_column(Integer, default=1)
    # When the obligation's clock started (its trigger).
    start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # When the worker acts on it: the sweep fires timers whose due_at has come.
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The obligation's own deadline when the worker acts before it (an automatic update is
    # sent shortly before its deadline); None means due_at is the deadline.
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # pending | fired | met | cancelled | suspended (case resolved; resumes on reopening)
    status: Mapped[str] = mapped_column(String(20))
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The due time was stated to the customer, so a rule change never moves it.
    promised: Mapped[bool] = mapped_column(default=False)
    planned_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReferenceCounter(Base):
    """The last case number issued per reference prefix and year."""

    __tablename__ = "reference_counter"

    prefix: Mapped[str] = mapped_column(String(10), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_value: Mapped[int] = mapped_column(Integer)
