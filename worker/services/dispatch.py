"""Send due outbox rows in order; each row is marked sent as soon as the server accepts it.

A crash between acceptance and that mark re-sends the same bytes with the same Message-ID,
so a receiver sees one message, never a second acknowledgement with a new identity.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from worker.adapters import repository as repo
from worker.adapters.db import transaction
from worker.adapters.db_models import Outbox
from worker.adapters.smtp import MailSender
from worker.config import WorkerSettings
from worker.errors import SendFailure, SendFailureKind

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DispatchResult:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    # Set when the SMTP server could not be reached at all; the rest waits for the next pass.
    outage: str | None = None


def retry_delay(attempts: int, settings: WorkerSettings) -> timedelta:
    """Exponential backoff: base, 2x base, 4x base ... capped."""
    seconds = settings.outbox_retry_base_seconds * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, settings.outbox_retry_max_seconds))


class DispatchService:
    def __init__(self, *, sessions: sessionmaker[Session], sender_factory: Callable[[], MailSender],
                 settings: WorkerSettings) -> None:
        self.sessions = sessions
        self.sender_factory = sender_factory
        self.settings = settings

    def dispatch_due(self, *, now: datetime, limit: int = 500) -> DispatchResult:
        return asyncio.run(self._dispatch(now=now, limit=limit))

    def _due_ids(self, now: datetime, limit: int) -> list[int]:
        with self.sessions() as session:
            return list(session.scalars(
                select(Outbox.id).where(Outbox.status == "pending", Outbox.next_attempt_at <= now)
                .order_by(Outbox.id).limit(limit)))

    async def _dispatch(self, *, now: datetime, limit: int) -> DispatchResult:
        result = DispatchResult()
        ids = self._due_ids(now, limit)
        if not ids:
            return result
        async with self.sender_factory() as sender:
            for outbox_id in ids:
                with self.sessions() as session:
                    row = session.get_one(Outbox, outbox_id)
                    envelope, recipients, raw = row.envelope_from, list(row.recipients), row.raw
                try:
                    reply = await sender.send(envelope, recipients, raw)
                except SendFailure as failure:
                    self._record_failure(outbox_id, failure, now, result)
                    if failure.kind is SendFailureKind.TRANSIENT and result.outage is None \
                            and result.sent == 0:
                        # Nothing got through: treat it as an outage and keep the order intact.
                        result.outage = str(failure)
                        break
                    continue
                except Exception as exc:
                    # A bug on one row must not stop the others; it is retried, then failed.
                    log.exception("outbox %s: unexpected error while sending", outbox_id)
                    failure = SendFailure(SendFailureKind.TRANSIENT, f"{type(exc).__name__}: {exc}")
                    self._record_failure(outbox_id, failure, now, result)
                    continue
                self._mark_sent(outbox_id, reply, now)
                result.sent += 1
        return result

    def _mark_sent(self, outbox_id: int, reply: str, now: datetime) -> None:
        with transaction(self.sessions) as session:
            row = session.get_one(Outbox, outbox_id)
            row.status = "sent"
            row.sent_at = now
            row.attempts += 1
            row.last_error = None
            if row.case_id is not None:
                repo.add_event(session, row.case_id, "email_sent", at=now, outbox_id=row.id,
                               detail={"purpose": row.purpose, "message_id": row.message_id,
                                       "to": row.recipients, "smtp_reply": reply[:500]})

    def _record_failure(self, outbox_id: int, failure: SendFailure, now: datetime,
                        result: DispatchResult) -> None:
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
                row.next_attempt_at = now + retry_delay(row.attempts, self.settings)
                result.retrying += 1
                kind = "email_retry_scheduled"
            if row.case_id is not None:
                repo.add_event(session, row.case_id, kind, at=now, outbox_id=row.id,
                               detail={"purpose": row.purpose, "message_id": row.message_id,
                                       "error": row.last_error, "attempts": row.attempts,
                                       "next_attempt_at": row.next_attempt_at.isoformat()})
