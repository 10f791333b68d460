"""Send due outbox rows in order; each row is marked sent as soon as the server accepts it.

A crash between acceptance and that mark re-sends the same bytes with the same Message-ID,
so a receiver sees one message, never a second acknowledgement with a new identity.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain
from typing import Any

from sqlalchemy import Engine, Row, bindparam, insert, literal, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from worker.adapters import repository as repo
from worker.adapters.db import transaction
from worker.adapters.db_models import CaseEvent, Outbox, OutboxMail
from worker.adapters.smtp import MailSender
from worker.config import WorkerSettings
from worker.errors import SendFailure, SendFailureKind
from worker.services.outbox import RATE_LIMITED, global_budget

log = logging.getLogger(__name__)

# What sending a row and recording it as sent need, read with its claim.
_SENDING = (Outbox.id, Outbox.case_id, Outbox.purpose, Outbox.message_id, Outbox.envelope_from,
            Outbox.recipients, OutboxMail.raw, Outbox.deliver_by, Outbox.obligation_id)

_MARK_SENT = update(Outbox).where(Outbox.id == bindparam("row_id")).values(
    status="sent", sent_at=bindparam("now"), attempts=Outbox.attempts + 1, last_error=None)
# PostgreSQL: the mark and its email_sent event in one statement (a data-modifying CTE).
_SENT = _MARK_SENT.returning(Outbox.id, Outbox.case_id).cte("sent")
_MARK_SENT_WITH_EVENT = insert(CaseEvent).from_select(
    ["case_id", "kind", "at", "detail", "outbox_id"],
    select(_SENT.c.case_id, literal("email_sent"), bindparam("now", type_=CaseEvent.at.type),
           bindparam("detail", type_=CaseEvent.detail.type), _SENT.c.id),
).add_cte(_SENT)

# Rows are claimed this many at a time (for `outbox_claim_seconds`): a worker that dies holding
# a claim only delays those rows, and a live one finishes a chunk long before its claim lapses.
CLAIM_CHUNK = 20


@dataclass(slots=True)
class DispatchResult:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    # Set when the SMTP server could not be reached at all; the rest waits for the next pass.
    outage: str | None = None
    # Automatic mail held back by the global rate limit, by outbox id.
    deferred: list[int] = field(default_factory=list)
    # The dispatch stopped at its limit: more mail may be due.
    full: bool = False

    def add(self, later: DispatchResult) -> None:
        """Fold in the result of a further dispatch in the same pass."""
        self.sent += later.sent
        self.retrying += later.retrying
        self.failed += later.failed
        self.outage = later.outage
        self.deferred += later.deferred
        self.full = later.full


@dataclass(slots=True)
class _Attempt:
    """How sending one row ended: accepted with `reply`, or `failure`."""
    row: Row[Any]
    reply: str = ""
    failure: SendFailure | None = None
    # A bug of ours rather than the server's answer: it never counts towards an outage.
    unexpected: bool = False


class _Flight:
    """The rows being sent: one per SMTP connection, and never two with a recipient in common,
    so that each recipient's mail is accepted in the order it was decided."""

    def __init__(self, senders: list[MailSender]) -> None:
        self.idle = senders
        self.tasks: dict[asyncio.Task[_Attempt], frozenset[str]] = {}

    def can_start(self, row: Row[Any]) -> bool:
        mine = _addresses(row)
        return bool(self.idle) and all(mine.isdisjoint(theirs) for theirs in self.tasks.values())

    def start(self, row: Row[Any]) -> None:
        task = asyncio.create_task(self._attempt(self.idle.pop(), row))
        self.tasks[task] = _addresses(row)

    async def finished(self) -> list[_Attempt]:
        """Waits for at least one send to end; those that ended, in row order."""
        done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            del self.tasks[task]
        return sorted((task.result() for task in done), key=lambda attempt: attempt.row.id)

    async def cancel(self) -> None:
        """Stops what is still in flight (the dispatch failed): a send cut short before the
        end of its data is not accepted, so it is not sent twice."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _attempt(self, sender: MailSender, row: Row[Any]) -> _Attempt:
        try:
            reply = await sender.send(row.envelope_from, list(row.recipients), row.raw)
        except SendFailure as failure:
            return _Attempt(row, failure=failure)
        except Exception as exc:
            # A bug on one row must not stop the others; it is retried, then failed.
            log.exception("outbox %s: unexpected error while sending", row.id)
            return _Attempt(row, failure=SendFailure(SendFailureKind.TRANSIENT,
                                                     f"{type(exc).__name__}: {exc}"),
                            unexpected=True)
        finally:
            self.idle.append(sender)
        return _Attempt(row, reply=reply)


def _addresses(row: Row[Any]) -> frozenset[str]:
    return frozenset(address.lower() for address in row.recipients)


def retry_delay(attempts: int, settings: WorkerSettings) -> timedelta:
    """Exponential backoff: base, 2x base, 4x base ... capped."""
    seconds = settings.outbox_retry_base_seconds * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, settings.outbox_retry_max_seconds))


class DispatchService:
    """Starts due rows in id order, on up to `connections` SMTP connections at once and never
    two to one recipient, so each recipient's mail leaves in the order it was decided.

    A message the server refuses for a while (4xx) backs off on its own. When the server
    cannot be reached (two messages in a row fail with none accepted between, or the only one
    tried), that is an outage: it is recorded in `smtp_state`, and every pending message waits
    for the same retry time, so when the server is back the whole queue goes out together.
    """

    def __init__(self, *, sessions: sessionmaker[Session], sender_factory: Callable[[], MailSender],
                 settings: WorkerSettings, connections: int) -> None:
        self.sessions = sessions
        self.engine: Engine = sessions.kw["bind"]
        # PostgreSQL, where several workers share the outbox and a statement is a round trip.
        self.shared = self.engine.dialect.name == "postgresql"
        # Each statement on it commits by itself.
        self.autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.sender_factory = sender_factory
        self.settings = settings
        # SMTP connections used at once (`smtp.connections`).
        self.connections = connections

    def dispatch_due(self, *, now: datetime, limit: int = 500) -> DispatchResult:
        """Send up to `limit` due rows; `full` says whether the limit stopped it."""
        return asyncio.run(self._dispatch(now=now, limit=limit))

    def _claimed(self, now: datetime, limit: int, counter: list[int]) -> Generator[Row[Any], None, None]:
        """Due rows (the columns of _SENDING) in id order, claimed a chunk at a time so that
        several workers never send the same row at once. A claim lapses after
        `outbox_claim_seconds` (a worker that died holding it); rows claimed but not handed out
        are released when the caller stops early. `counter[0]` counts the rows handed out."""
        after = 0
        while counter[0] < limit:
            chunk = self._claim(now, min(CLAIM_CHUNK, limit - counter[0]), after)
            if not chunk:
                return
            taken = 0
            try:
                for row in chunk:
                    taken += 1
                    counter[0] += 1
                    after = row.id  # A row handed out once is not claimed again this pass.
                    yield row
            finally:
                self._release([row.id for row in chunk[taken:]])

    def _claim(self, now: datetime, limit: int, after: int) -> list[Row[Any]]:
        """A chunk of due rows with everything sending them needs, read in one query."""
        with self.engine.begin() as connection:
            query = (select(*_SENDING).join(OutboxMail)
                     .where(Outbox.id > after, Outbox.status == "pending",
                            Outbox.next_attempt_at <= now,
                            or_(Outbox.claimed_until.is_(None), Outbox.claimed_until < now))
                     .order_by(Outbox.id).limit(limit))
            if self.shared:
                query = query.with_for_update(skip_locked=True, of=Outbox)
            rows: list[Row[Any]] = list(connection.execute(query))
            # SQLite has one worker: no claims, so a restart after a crash re-sends at once.
            if rows and self.shared:
                until = now + timedelta(seconds=self.settings.outbox_claim_seconds)
                connection.execute(update(Outbox).where(Outbox.id.in_([r.id for r in rows]))
                                   .values(claimed_until=until))
            return rows

    def _release(self, ids: list[int]) -> None:
        if ids:
            with transaction(self.sessions) as session:
                session.execute(update(Outbox).where(Outbox.id.in_(ids))
                                .values(claimed_until=None))

    async def _dispatch(self, *, now: datetime, limit: int) -> DispatchResult:
        result = DispatchResult()
        with transaction(self.sessions) as session:
            state = repo.smtp_state(session)
            if state.retry_at is not None and now < state.retry_at:
                # Still in the outage backoff: mail queued meanwhile waits with the rest.
                _hold_pending(session, state.retry_at)
                result.outage = state.last_error
                return result
        handed = [0]
        claimed = self._claimed(now, limit, handed)
        first = next(claimed, None)
        if first is None:
            return result
        try:
            await self._send(chain([first], claimed), now, result)
        finally:
            claimed.close()  # Releases whatever was claimed but not reached.
        result.full = handed[0] >= limit and result.outage is None
        return result

    async def _send(self, due: Iterator[Row[Any]], now: datetime,
                    result: DispatchResult) -> None:
        with self.sessions() as session:
            budget, frees_at = global_budget(session, now, self.settings)
        # Transient failures since the last success, in the order they ended: two, or the only
        # message tried, mean the server is unreachable (an outage), not that a message is
        # refused. Sends start in row order; an outage stops new ones.
        unsent: list[tuple[int, SendFailure]] = []
        tried = 0
        async with AsyncExitStack() as stack:
            flight = _Flight([await stack.enter_async_context(self.sender_factory())
                              for _ in range(self.connections)])
            stack.push_async_callback(flight.cancel)
            row = next(due, None)
            while row is not None or flight.tasks:
                if row is not None and len(unsent) < 2:
                    limited = row.purpose in RATE_LIMITED
                    if limited and budget <= 0:
                        self._defer(row.id, frees_at, now)
                        result.deferred.append(row.id)
                        row = next(due, None)
                        continue
                    if flight.can_start(row):
                        if limited:
                            budget -= 1  # Given back if it is not accepted.
                        tried += 1
                        flight.start(row)
                        row = next(due, None)
                        continue
                if not flight.tasks:
                    break  # An outage, with nothing left in flight.
                for attempt in await flight.finished():
                    failure = attempt.failure
                    if failure is None:
                        # The server took this one: the failures before it were those
                        # messages' own.
                        for failed_id, refusal in unsent:
                            self._record_failure(failed_id, refusal, now, result)
                        unsent = []
                        self._mark_sent(attempt.row, attempt.reply, now)
                        result.sent += 1
                        continue
                    if attempt.row.purpose in RATE_LIMITED:
                        budget += 1
                    if failure.kind is SendFailureKind.TRANSIENT and not attempt.unexpected:
                        unsent.append((attempt.row.id, failure))
                    else:
                        self._record_failure(attempt.row.id, failure, now, result)
        if row is not None:
            self._release([row.id])  # Taken, then held back by the outage: not sent.
        outage = len(unsent) >= 2 or (len(unsent) == 1 and tried == 1)
        retry_at = self._outage(now, str(unsent[-1][1])) if outage else None
        for failed_id, refusal in unsent:
            self._record_failure(failed_id, refusal, now, result, retry_at=retry_at)
        if outage:
            result.outage = str(unsent[-1][1])
        elif result.sent:
            self._reachable()

    def _outage(self, now: datetime, error: str) -> datetime:
        """Record one more pass that found the server unreachable; returns when to try again."""
        with transaction(self.sessions) as session:
            state = repo.smtp_state(session)
            state.failures += 1
            state.down_since = state.down_since or now
            state.last_error = error[:2000]
            state.retry_at = now + retry_delay(state.failures, self.settings)
            _hold_pending(session, state.retry_at)
            return state.retry_at

    def _reachable(self) -> None:
        with transaction(self.sessions) as session:
            state = repo.smtp_state(session)
            if state.failures or state.retry_at:
                state.failures, state.down_since, state.retry_at, state.last_error = (
                    0, None, None, None)

    def _defer(self, outbox_id: int, until: datetime, now: datetime) -> None:
        """Over the global limit: the message waits for a free slot; it is never dropped."""
        reason = (f"global rate limit: {self.settings.global_rate_limit_per_hour} automatic "
                  "messages an hour")
        with transaction(self.sessions) as session:
            row = session.get_one(Outbox, outbox_id)
            row.next_attempt_at = until
            if row.last_error != reason and row.case_id is not None:
                repo.add_event(session, row.case_id, "email_deferred", at=now, outbox=row,
                               detail={"purpose": row.purpose, "message_id": row.message_id,
                                       "reason": reason, "until": until.isoformat()})
            row.last_error = reason
            row.claimed_until = None

    def _mark_sent(self, row: Row[Any], reply: str, now: datetime) -> None:
        """`row`: the columns of _SENDING. Core statements on a plain connection: this runs
        once for every message sent, and the ORM session would cost twice as much. On
        PostgreSQL one statement that commits by itself: one round trip to the server (0.3 ms
        here), where a transaction of two statements takes four."""
        params = {"row_id": row.id, "now": now}
        detail: dict[str, object] | None = None
        if row.case_id is not None:
            detail = {"purpose": row.purpose, "message_id": row.message_id,
                      "to": row.recipients, "smtp_reply": reply[:500]}
            if row.deliver_by is not None and now > row.deliver_by:
                # Delivered after its deadline (an outage): how late, for the case and reports.
                detail.update(rule=row.obligation_id, deliver_by=row.deliver_by.isoformat(),
                              late_by_seconds=int((now - row.deliver_by).total_seconds()))
        if self.shared:
            with self.autocommit.connect() as connection:
                if detail is None:
                    connection.execute(_MARK_SENT, params)
                else:
                    connection.execute(_MARK_SENT_WITH_EVENT, {**params, "detail": detail})
            return
        with self.engine.begin() as connection:
            connection.execute(_MARK_SENT, params)
            if detail is not None:
                connection.execute(repo.INSERT_EVENTS, repo.event_row(
                    row.case_id, "email_sent", at=now, detail=detail, outbox_id=row.id))

    def _record_failure(self, outbox_id: int, failure: SendFailure, now: datetime,
                        result: DispatchResult, *, retry_at: datetime | None = None) -> None:
        """`retry_at`: the outage's retry time, which every pending message shares."""
        with transaction(self.sessions) as session:
            row = session.get_one(Outbox, outbox_id)
            row.attempts += 1
            row.last_error = str(failure)[:2000]
            give_up = now - row.created_at >= timedelta(hours=self.settings.outbox_give_up_hours)
            if failure.kind is SendFailureKind.PERMANENT or give_up:
                row.status = "failed"
                result.failed += 1
                log.error("outbox %s (%s) failed permanently: %s", row.id, row.purpose, failure)
                kind = "email_failed"
            else:
                row.next_attempt_at = retry_at or now + retry_delay(row.attempts, self.settings)
                row.claimed_until = None
                result.retrying += 1
                kind = "email_retry_scheduled"
            if row.case_id is not None:
                repo.add_event(session, row.case_id, kind, at=now, outbox=row,
                               detail={"purpose": row.purpose, "message_id": row.message_id,
                                       "error": row.last_error, "attempts": row.attempts,
                                       "next_attempt_at": row.next_attempt_at.isoformat()})


def _hold_pending(session: Session, until: datetime) -> None:
    session.execute(update(Outbox).where(Outbox.status == "pending", Outbox.next_attempt_at < until)
                    .values(next_attempt_at=until))
