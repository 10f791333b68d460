"""One full pass of the worker: poll every mailbox, then dispatch the outbox.

A failing mailbox is logged once (again only when its error changes), backed off, and never
stops the other mailboxes or the outbox. A database that is locked or unreachable stops the
work in hand (its transaction rolls back, nothing is lost) and is reported; the next pass
picks up where this one stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from worker.adapters import repository as repo
from worker.adapters.db import transaction
from worker.adapters.imap import MailboxSource
from worker.config import Config, MailboxConfig
from worker.errors import MailboxError
from worker.services.dispatch import DispatchResult, DispatchService
from worker.services.ingest import IngestService, PollResult
from worker.services.rules_watch import RulesWatcher
from worker.services.sweep import TimerSweep

log = logging.getLogger(__name__)

MAX_MAILBOX_BACKOFF = timedelta(minutes=15)


@dataclass(slots=True)
class MailboxHealth:
    failures: int = 0
    retry_at: datetime | None = None
    last_error: str | None = None


@dataclass(slots=True)
class PassResult:
    polls: list[PollResult] = field(default_factory=list)
    mailbox_errors: dict[str, str] = field(default_factory=dict)
    dispatch: DispatchResult = field(default_factory=DispatchResult)
    timers_fired: int = 0
    # Outbox messages found past their deadline (breaches recorded this pass).
    late_mail: int = 0
    # Set when the database failed while firing timers or dispatching.
    database_error: str | None = None

    @property
    def ok(self) -> bool:
        return (not self.mailbox_errors and self.dispatch.outage is None
                and self.database_error is None)


class Cycle:
    def __init__(self, *, config: Config, sessions: sessionmaker[Session], ingest: IngestService,
                 dispatch: DispatchService,
                 mailbox_factory: Callable[[MailboxConfig], MailboxSource],
                 rules_watcher: RulesWatcher[Any] | None = None,
                 sweep: TimerSweep | None = None) -> None:
        self.config = config
        self.sessions = sessions
        self.ingest = ingest
        self.dispatch = dispatch
        self.mailbox_factory = mailbox_factory
        self.health: dict[str, MailboxHealth] = {m.name: MailboxHealth() for m in config.mailboxes}
        self._smtp_outage: str | None = None
        self.rules_watcher = rules_watcher
        self.sweep = sweep

    def run_pass(self, *, now: datetime, acknowledge: bool | None = None,
                 respect_backoff: bool = False,
                 should_stop: Callable[[], bool] = lambda: False,
                 only: Sequence[MailboxConfig] | None = None) -> PassResult:
        """Everything due at `now`: poll the mailboxes, fire due timers, send the outbox."""
        result = PassResult()
        self.poll_mailboxes(result, now=now, acknowledge=acknowledge,
                            respect_backoff=respect_backoff, should_stop=should_stop, only=only)
        if not should_stop():
            self.fire_and_send(result, now=now)
        return result

    def poll_mailboxes(self, result: PassResult, *, now: datetime,
                       acknowledge: bool | None = None, respect_backoff: bool = False,
                       should_stop: Callable[[], bool] = lambda: False,
                       only: Sequence[MailboxConfig] | None = None) -> None:
        """Poll every mailbox, or those in `only` (the ones this worker owns)."""
        if self.rules_watcher is not None:
            self.rules_watcher.refresh(now)
        for mailbox in self.config.mailboxes if only is None else only:
            if should_stop():
                break
            health = self.health[mailbox.name]
            if respect_backoff and health.retry_at is not None and now < health.retry_at:
                continue
            try:
                poll = self.ingest.poll(mailbox, self.mailbox_factory(mailbox), now=now,
                                        acknowledge=acknowledge, should_stop=should_stop)
            except (MailboxError, OperationalError) as exc:
                reason = str(exc) if isinstance(exc, MailboxError) else database_problem(exc)
                result.mailbox_errors[mailbox.name] = reason
                self._failed(mailbox, health, reason, now)
                continue
            result.polls.append(poll)
            self._succeeded(mailbox, health, now)

    def fire_and_send(self, result: PassResult, *, now: datetime) -> None:
        """Fire the timers due at `now`, dispatch the outbox (which sends what they queued),
        then record breaches for mail still waiting past its deadline."""
        try:
            if self.sweep is not None:
                result.timers_fired = self.sweep.sweep(now=now)
            result.dispatch = self.dispatch_outbox(now=now)
            while result.dispatch.full:  # A backlog: keep going until nothing is due.
                result.dispatch.add(self.dispatch_outbox(now=now))
            if self.sweep is not None:
                result.late_mail = self.sweep.late_mail(now=now)
                self.sweep.rate_limited(result.dispatch.deferred, now=now)
        except OperationalError as exc:
            result.database_error = database_problem(exc)
            log.error("timers and outbox: %s; the next pass retries", result.database_error)

    def dispatch_outbox(self, *, now: datetime) -> DispatchResult:
        outcome = self.dispatch.dispatch_due(now=now)
        if outcome.outage and outcome.outage != self._smtp_outage:
            log.error("SMTP server unavailable, mail stays queued: %s", outcome.outage)
        elif self._smtp_outage and not outcome.outage and outcome.sent:
            log.info("SMTP server reachable again")
        self._smtp_outage = outcome.outage
        return outcome

    def _failed(self, mailbox: MailboxConfig, health: MailboxHealth, reason: str,
                now: datetime) -> None:
        health.failures += 1
        delay = timedelta(seconds=self.config.worker.poll_interval_seconds) * 2 ** min(
            health.failures - 1, 10)
        health.retry_at = now + min(delay, MAX_MAILBOX_BACKOFF)
        if reason != health.last_error:
            log.error("mailbox %s: %s (retrying with backoff)", mailbox.name, reason)
        health.last_error = reason
        try:
            with transaction(self.sessions) as session:
                state = repo.mailbox_state(session, mailbox.name, mailbox.folder)
                state.last_error = reason
                state.last_error_at = now
                state.last_poll_at = now
        except OperationalError:
            log.debug("could not record the mailbox error: database unavailable")

    def _succeeded(self, mailbox: MailboxConfig, health: MailboxHealth, now: datetime) -> None:
        if health.failures:
            log.info("mailbox %s: recovered after %d failed attempt(s)", mailbox.name,
                     health.failures)
        self.health[mailbox.name] = MailboxHealth()
        with transaction(self.sessions) as session:
            state = repo.mailbox_state(session, mailbox.name, mailbox.folder)
            state.last_success_at = now
            state.last_poll_at = now
            state.last_error = None


def database_problem(exc: OperationalError) -> str:
    """The driver's own first line ("database is locked"), never the SQL or its parameters,
    which can hold customer data."""
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else ""
    return f"database unavailable: {detail}"[:300] if detail else "database unavailable"
