"""Fire the case timers that are due: reminders, escalations, automatic letters and updates.

Each timer fires in its own transaction together with everything it causes (the outbox row,
the next occurrence, the audit events), and only while it is still `pending`; so running
the sweep twice at the same `now`, or crashing half-way, never sends anything twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from worker.adapters import repository as repo
from worker.adapters.db import transaction
from worker.adapters.db_models import Case, Timer
from worker.config import Config, MailboxConfig
from worker.core.letters import local_datetime_text
from worker.core.rules import Obligation, Owner, ProviderRules
from worker.services.staff import StaffDesk

log = logging.getLogger(__name__)

# Which X-Complaints-Worker-Purpose an automatic template is sent as.
PURPOSES = {"adr_letter": "adr-letter", "deadlock_letter": "deadlock-letter",
            "update": "update", "resolution": "resolution"}


@dataclass(slots=True)
class TimerSweep:
    sessions: sessionmaker[Session]
    desk: StaffDesk
    config: Config
    providers: Callable[[], dict[str, ProviderRules]]

    def sweep(self, *, now: datetime, limit: int = 2000) -> int:
        """Fire every pending timer due at or before `now`, oldest first; returns how many."""
        with self.sessions() as session:
            due = list(session.scalars(
                select(Timer.id).where(Timer.status == "pending", Timer.due_at <= now)
                .order_by(Timer.due_at, Timer.id).limit(limit)))
        fired = 0
        for timer_id in due:
            with transaction(self.sessions) as session:
                query = select(Timer).where(Timer.id == timer_id, Timer.status == "pending")
                if session.get_bind().dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                timer = session.scalar(query)
                if timer is None:
                    continue  # Met, cancelled or taken by another worker meanwhile.
                case = session.get_one(Case, timer.case_id)
                self._fire(session, timer, case, now)
                fired += 1
        return fired

    def _fire(self, session: Session, timer: Timer, case: Case, now: datetime) -> None:
        rules = self.providers()[case.provider_id]
        mailbox = next(m for m in self.config.mailboxes if m.name == case.mailbox)
        timer.status, timer.fired_at = "fired", now
        repo.add_event(session, case.id, "timer_fired", at=now, detail={
            "rule": timer.obligation_id, "kind": timer.kind, "occurrence": timer.occurrence,
            "due_at": timer.due_at.isoformat()})
        if case.status != "open":
            timer.status = "cancelled"
            return
        if timer.kind == "deadlock_decision":
            self._deadlock_decision(session, timer, case, rules, mailbox, now)
            return
        obligation = rules.obligation(timer.obligation_id)
        if obligation is None:
            repo.add_event(session, case.id, "timer_orphaned", at=now, detail={
                "rule": timer.obligation_id, "reason": "the obligation is no longer in the rules"})
            return
        if timer.kind == "reminder":
            self._remind(session, timer, case, rules, mailbox, obligation, now)
        elif timer.kind == "hard_limit":
            self._breach(session, timer, case, obligation, now, hard=True)
            self._alert(session, case, rules, mailbox, obligation, timer, now,
                        title=f"hard limit missed: {obligation.id}")
        elif obligation.owner is Owner.STAFF:
            self._breach(session, timer, case, obligation, now, hard=False)
            self._escalate(session, timer, case, rules, mailbox, obligation, now)
        elif obligation.repeat is not None:
            self._update(session, timer, case, rules, mailbox, obligation, now)
        else:
            self._automatic_letter(session, timer, case, rules, mailbox, obligation, now)

    # ------------------------------------------------------------------ kinds

    def _remind(self, session: Session, timer: Timer, case: Case, rules: ProviderRules,
                mailbox: MailboxConfig, obligation: Obligation, now: datetime) -> None:
        due = session.scalar(select(Timer).where(
            Timer.case_id == case.id, Timer.obligation_id == obligation.id,
            Timer.kind == "due", Timer.occurrence == timer.occurrence))
        if due is None or due.status != "pending":
            return  # Already met: no reminder needed.
        stage = rules.stage(obligation.stage)
        self.desk.to_roles(
            session, case, rules, mailbox, roles=[stage.owner] if stage else [],
            template="reminder", purpose="reminder", now=now,
            key=f"reminder:{case.reference}:{obligation.id}:{timer.occurrence}",
            extra=self._obligation_context(rules, obligation, due.due_at, stage_number=obligation.stage))

    def _escalate(self, session: Session, timer: Timer, case: Case, rules: ProviderRules,
                  mailbox: MailboxConfig, obligation: Obligation, now: datetime) -> None:
        number = min(max(obligation.stage, case.stage) + 1, len(rules.stages))
        stage = rules.stage(number)
        owner = rules.stage(obligation.stage)
        # The breach is alerted to the obligation's own stage owner and escalated to the next.
        roles = [s.owner for s in (owner, stage) if s is not None]
        self.desk.to_roles(
            session, case, rules, mailbox, roles=list(dict.fromkeys(roles)),
            template="escalation", purpose="escalation", now=now,
            key=f"escalation:{case.reference}:{obligation.id}:{timer.occurrence}",
            extra=self._obligation_context(rules, obligation, timer.due_at, stage_number=number))

    def _alert(self, session: Session, case: Case, rules: ProviderRules, mailbox: MailboxConfig,
               obligation: Obligation, timer: Timer, now: datetime, *, title: str,
               detail: str = "") -> None:
        stage = rules.stage(obligation.stage)
        self.desk.to_roles(
            session, case, rules, mailbox, roles=[stage.owner] if stage else [],
            template="alert", purpose="alert", now=now,
            key=f"alert:{case.reference}:{obligation.id}:{timer.kind}:{timer.occurrence}",
            extra={"alert": {"title": title, "detail": detail or (
                f"{obligation.id} ({obligation.severity.value}) was due by "
                f"{local_datetime_text(timer.deadline_at or timer.due_at, rules.timezone)}: "
                f"{obligation.quote}")}})

    def _breach(self, session: Session, timer: Timer, case: Case, obligation: Obligation,
                now: datetime, *, hard: bool, deadline: datetime | None = None,
                reason: str = "not met by its deadline", outstanding: bool = True) -> None:
        """Record a missed deadline; an outstanding one keeps the case overdue until met."""
        if outstanding:
            timer.status = "breached"
        repo.add_event(session, case.id, "breach", at=now, detail={
            "rule": obligation.id, "severity": obligation.severity.value,
            "kind": "hard_limit" if hard else "due", "occurrence": timer.occurrence,
            "due_at": (deadline or timer.deadline_at or timer.due_at).isoformat(),
            "reason": reason})

    def _automatic_letter(self, session: Session, timer: Timer, case: Case, rules: ProviderRules,
                          mailbox: MailboxConfig, obligation: Obligation, now: datetime) -> None:
        if obligation.id == "adr_letter" and case.adr_exception:
            timer.status = "cancelled"
            repo.add_event(session, case.id, "letter_not_sent", at=now, detail={
                "rule": obligation.id, "reason": f"marked {case.adr_exception}: "
                                                 f"{case.adr_exception_reason}"})
            return
        assert obligation.template is not None
        self.desk.letter(session, case, rules, mailbox, template=obligation.template,
                         purpose=PURPOSES.get(obligation.template, "update"), now=now,
                         key=f"{obligation.id.replace('_', '-')}:{case.reference}")

    def _update(self, session: Session, timer: Timer, case: Case, rules: ProviderRules,
                mailbox: MailboxConfig, obligation: Obligation, now: datetime) -> None:
        """No update went out in time: send the template once, even after a long downtime."""
        assert obligation.template is not None
        self.desk.letter(session, case, rules, mailbox, template=obligation.template,
                         purpose=PURPOSES.get(obligation.template, "update"), now=now,
                         key=f"{obligation.id.replace('_', '-')}:{case.reference}:"
                             f"{timer.occurrence}", limited=True)
        missed = self.desk.schedule_next(session, case, rules, obligation, timer, now)
        for deadline in missed:
            self._breach(session, timer, case, obligation, now, hard=False, deadline=deadline,
                         reason="missed while the worker was not running; caught up once",
                         outstanding=False)
        if missed:
            self._alert(session, case, rules, mailbox, obligation, timer, now,
                        title=f"{len(missed)} {obligation.id} occurrence(s) missed",
                        detail="The worker was not running when these updates were due: "
                               + ", ".join(local_datetime_text(d, rules.timezone) for d in missed)
                               + ". One update has now been sent; each missed one is recorded "
                                 "as a breach.")

    def _deadlock_decision(self, session: Session, timer: Timer, case: Case, rules: ProviderRules,
                           mailbox: MailboxConfig, now: datetime) -> None:
        """No staff decision by the deadline: the letter goes, where the rules say so."""
        if rules.deadlock is not None and rules.deadlock.on_request:
            self.desk.deadlock_letter(session, case, rules, mailbox, now)
            repo.add_event(session, case.id, "deadlock_letter_by_deadline", at=now, detail={
                "reason": "the decision deadline passed without a permitted refusal"})
            return
        stage = rules.stage(case.stage)
        self.desk.to_roles(
            session, case, rules, mailbox, roles=[stage.owner] if stage else [],
            template="alert", purpose="alert", now=now,
            key=f"alert:{case.reference}:deadlock-decision:{timer.occurrence}",
            extra={"alert": {"title": "deadlock request still undecided", "detail":
                             "The customer asked for a deadlock letter and no decision was "
                             "recorded. Reply with #deadlock or #decline-deadlock <ground> "
                             "<reason>."}})

    def _obligation_context(self, rules: ProviderRules, obligation: Obligation, due: datetime,
                            *, stage_number: int) -> dict[str, object]:
        stage = rules.stage(stage_number)
        return {
            "obligation": {"id": obligation.id, "quote": obligation.quote,
                           "severity": obligation.severity.value,
                           "due_local": local_datetime_text(due, rules.timezone)},
            "stage_owner": f"{stage.name} ({stage.owner})" if stage else "staff",
        }
