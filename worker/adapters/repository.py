"""Queries and inserts used by the services. Every function takes a Session and never commits."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import (
    CompoundSelect,
    CursorResult,
    Executable,
    bindparam,
    delete,
    func,
    insert,
    select,
    union_all,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, SessionTransaction, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from worker.adapters.db_models import (
    Base,
    Case,
    CaseEvent,
    CaseParty,
    InboundAttempt,
    InboundMessage,
    MailboxState,
    Outbox,
    ReferenceCounter,
    SmtpState,
)
from worker.core.references import format_reference
from worker.core.threading import KnownCase


def run(session: Session, statement: Executable,
        params: Any = None) -> CursorResult[*tuple[Any, ...]]:
    """Execute a Core statement built once at import (with bind parameters) on the session's
    connection, after flushing what the session holds, as autoflush would.

    For the statements run for every message: building a statement costs ~0.2 ms here and
    Session.execute adds as much again (it sets up an ORM context even for plain Core); this
    costs ~0.03 ms. Statements run this way never refresh ORM objects already loaded.
    """
    session.flush()
    return session.connection().execute(statement, params)


Model = TypeVar("Model", bound=Base)


def insert_loaded(session: Session, model: type[Model], values: dict[str, Any]) -> Model:
    """Insert a row with a Core statement and hand it to the session as if it had been loaded:
    for the rows written for every message, where the session's unit of work costs four times
    as much (0.4 ms against 0.1 for an outbox row and its bytes, here). `values` sets every
    column but the id (an unset one would be read back from the database when used); a later
    change to the row is flushed as an update."""
    row = model(**values)
    key = run(session, _insert(model), values).inserted_primary_key
    assert key is not None
    row.id = key[0]  # type: ignore[attr-defined]
    make_transient_to_detached(row)
    session.add(row)
    return row


@cache
def _insert(model: type[Base]) -> Executable:
    return insert(model)


def mailbox_state(session: Session, mailbox: str, folder: str) -> MailboxState:
    state = session.scalar(
        select(MailboxState).where(MailboxState.mailbox == mailbox, MailboxState.folder == folder))
    if state is None:
        state = MailboxState(mailbox=mailbox, folder=folder, last_uid=0, backlog=0)
        session.add(state)
        session.flush()
    return state


def stored_uids(
    session: Session, mailbox: str, folder: str, uidvalidity: int, uids: Iterable[int]
) -> set[int]:
    wanted = list(uids)
    if not wanted:
        return set()
    rows = session.scalars(select(InboundMessage.uid).where(
        InboundMessage.mailbox == mailbox, InboundMessage.folder == folder,
        InboundMessage.uidvalidity == uidvalidity, InboundMessage.uid.in_(wanted)))
    return set(rows)


def failed_attempts(session: Session, mailbox: str, folder: str, uidvalidity: int,
                    uids: Iterable[int] | None = None) -> dict[int, InboundAttempt]:
    """Messages of the folder whose processing failed and will be retried, by UID."""
    query = select(InboundAttempt).where(
        InboundAttempt.mailbox == mailbox, InboundAttempt.folder == folder,
        InboundAttempt.uidvalidity == uidvalidity)
    if uids is not None:
        query = query.where(InboundAttempt.uid.in_(list(uids)))
    return {row.uid: row for row in session.scalars(query)}


def count_attempt(session: Session, mailbox: str, folder: str, uidvalidity: int, uid: int, *,
                  error: str, at: datetime) -> int:
    """One more failed attempt at a message; returns how many there have been."""
    row = session.scalar(select(InboundAttempt).where(
        InboundAttempt.mailbox == mailbox, InboundAttempt.folder == folder,
        InboundAttempt.uidvalidity == uidvalidity, InboundAttempt.uid == uid))
    if row is None:
        row = InboundAttempt(mailbox=mailbox, folder=folder, uidvalidity=uidvalidity, uid=uid,
                             attempts=0, last_error="", last_attempt_at=at)
        session.add(row)
    row.attempts += 1
    row.last_error, row.last_attempt_at = error[:2000], at
    session.flush()
    return row.attempts


def forget_attempts(session: Session, mailbox: str, folder: str,
                    uidvalidity: int | None = None, uids: Iterable[int] | None = None) -> None:
    """Drop failed-attempt records: of stored or vanished messages, or of an old UIDVALIDITY."""
    conditions = [InboundAttempt.mailbox == mailbox, InboundAttempt.folder == folder]
    if uidvalidity is not None:
        conditions.append(InboundAttempt.uidvalidity == uidvalidity)
    if uids is not None:
        conditions.append(InboundAttempt.uid.in_(list(uids)))
    session.execute(delete(InboundAttempt).where(*conditions))


def smtp_state(session: Session) -> SmtpState:
    state = session.get(SmtpState, 1)
    if state is None:
        state = SmtpState(id=1, failures=0)
        session.add(state)
        session.flush()
    return state


_BY_DEDUPE_KEY = select(InboundMessage.id, InboundMessage.case_id).where(
    InboundMessage.mailbox == bindparam("mailbox"), InboundMessage.dedupe_key == bindparam("key"))


def first_with_dedupe_key(session: Session, mailbox: str,
                          key: str) -> tuple[int, int | None] | None:
    """The id and case of the message of `mailbox` stored with this dedupe key (unique)."""
    row = run(session, _BY_DEDUPE_KEY, {"mailbox": mailbox, "key": key}).first()
    return (row.id, row.case_id) if row else None


_KNOWN_MESSAGE_IDS: CompoundSelect[str | None, int | None] = union_all(
    select(InboundMessage.message_id, InboundMessage.case_id).where(
        InboundMessage.message_id.in_(bindparam("ids", expanding=True)),
        InboundMessage.case_id.is_not(None)),
    select(Outbox.message_id, Outbox.case_id).where(
        Outbox.message_id.in_(bindparam("ids", expanding=True)), Outbox.case_id.is_not(None)),
)


def known_message_ids(session: Session, message_ids: Iterable[str]) -> dict[str, int]:
    """Map each of `message_ids` that we stored or sent to its case."""
    ids = list(message_ids)
    if not ids:
        return {}
    return {mid: case_id for mid, case_id in run(session, _KNOWN_MESSAGE_IDS, {"ids": ids})
            if mid and case_id}


def cases_by_reference(session: Session, references: Iterable[str]) -> dict[str, KnownCase]:
    refs = list(references)
    if not refs:
        return {}
    found: dict[str, KnownCase] = {}
    for case in session.scalars(select(Case).where(Case.reference.in_(refs))):
        parties = frozenset(p.address for p in case.parties)
        found[case.reference] = KnownCase(case_id=case.id, reference=case.reference,
                                          parties=parties)
    return found


def latest_case_of(session: Session, mailbox: str, addresses: Iterable[str]) -> dict[str, int]:
    """For each address, the newest case of `mailbox` it is a party to."""
    found: dict[str, int] = {}
    for address, case_id in session.execute(
            select(CaseParty.address, func.max(CaseParty.case_id))
            .join(Case, Case.id == CaseParty.case_id)
            .where(CaseParty.address.in_(list(addresses)), Case.mailbox == mailbox)
            .group_by(CaseParty.address)):
        found[address] = case_id
    return found


def _next_number(insert: Any) -> Executable:
    values = insert(ReferenceCounter).values(prefix=bindparam("prefix"), year=bindparam("year"),
                                              last_value=1)
    statement: Executable = values.on_conflict_do_update(
        index_elements=["prefix", "year"],
        set_={"last_value": ReferenceCounter.last_value + 1},
    ).returning(ReferenceCounter.last_value)
    return statement


# By dialect name: the upsert is spelled per dialect.
_NEXT_NUMBER = {"postgresql": _next_number(pg_insert), "sqlite": _next_number(sqlite_insert)}


def next_reference(session: Session, prefix: str, year: int) -> str:
    """Issue the next case number for (prefix, year) atomically, on SQLite and PostgreSQL alike."""
    statement = _NEXT_NUMBER[session.get_bind().dialect.name]
    number = run(session, statement, {"prefix": prefix, "year": year}).scalar_one()
    return format_reference(prefix, year, number)


def add_party(
    session: Session, case: Case, address: str, *, name: str, role: str, at: datetime
) -> bool:
    """Add `address` to the case unless it is already a party; True when added."""
    if any(p.address == address for p in case.parties):
        return False
    party = insert_loaded(session, CaseParty, dict(
        case_id=case.id, address=address, name=name, role=role, added_at=at,
        undeliverable_at=None, undeliverable_reason=None))
    set_committed_value(case, "parties", [*case.parties, party])
    return True


def insert_case(session: Session, values: dict[str, Any]) -> Case:
    """A new case (see insert_loaded), with no parties yet."""
    case = insert_loaded(session, Case, values)
    set_committed_value(case, "parties", [])
    return case


# The session's events not yet written: see write_events.
PENDING_EVENTS = "complaints_worker_events"


def add_event(
    session: Session, case_id: int, kind: str, *, at: datetime, detail: dict[str, Any],
    inbound_message_id: int | None = None, outbox: Outbox | None = None,
) -> None:
    """Add an audit event to the transaction. Events are only appended, never read back while
    deciding, so they wait to be written in one INSERT as the transaction commits. `outbox`:
    the outbox row it is about (inserted when queued, so it has its id)."""
    session.info.setdefault(PENDING_EVENTS, []).append(
        event_row(case_id, kind, at=at, detail=detail, inbound_message_id=inbound_message_id,
                  outbox_id=outbox.id if outbox else None))


def event_row(case_id: int, kind: str, *, at: datetime, detail: dict[str, Any],
              inbound_message_id: int | None = None, outbox_id: int | None = None
              ) -> dict[str, Any]:
    """The parameters of INSERT_EVENTS for one audit event."""
    return {"case_id": case_id, "kind": kind, "at": at, "detail": detail,
            "inbound_message_id": inbound_message_id, "outbox_id": outbox_id}


INSERT_EVENTS = insert(CaseEvent).execution_options(render_nulls=True)


def write_events(session: Session) -> None:
    """Write the transaction's audit events, in the order they were added (before commit)."""
    events = session.info.pop(PENDING_EVENTS, None)
    if events:
        run(session, INSERT_EVENTS, events)


def drop_events(session: Session, previous: SessionTransaction) -> None:
    """A transaction that rolls back writes none of its events (after_soft_rollback)."""
    if not previous.nested:
        session.info.pop(PENDING_EVENTS, None)
