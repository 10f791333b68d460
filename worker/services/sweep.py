"""Fire the case timers that are due: reminders, escalations, automatic letters and updates.

Each timer fires in its own transaction together with everything it causes (the outbox row,
the next occurrence, the audit events), and only while it is still `pending`; so running
the sweep twice at the same `now`, or crashing half-way, never sends anything twice.

After each dispatch it also finds mail that missed its deadline in the outbox (an SMTP outage)
and mail held back by the global rate limit, and tells staff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from worker.adapters import repository as repo
from worker.adapters.db import transaction
from worker.adapters.db_models import Case, Outbox, Timer
from worker.config import Config, MailboxConfig
from worker.core.letters import local_datetime_text
from worker.core.rules import Obligation, Owner, ProviderRules
from worker.services.outbox import fulfils
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

    def late_mail(self, *, now: datetime) -> int:
        """Record a breach, once, for each unsent message past its deadline, and alert the
        stage owner (the alert waits in the outbox too, and goes when the server is back)."""
        with self.sessions() as session:
            late = list(session.scalars(
                select(Outbox.id).where(Outbox.status == "pending", Outbox.deliver_by < now,
                                        Outbox.breached_at.is_(None)).order_by(Outbox.id)))
        breached = 0
        for outbox_id in late:
            with transaction(self.sessions) as session:
                query = select(Outbox).where(Outbox.id == outbox_id, Outbox.status == "pending",
                                             Outbox.breached_at.is_(None))
                if session.get_bind().dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                row = session.scalar(query)
                if row is None or row.case_id is None or row.deliver_by is None:
                    continue  # Sent, or recorded by another worker, meanwhile.
                row.breached_at = now
                self._late(session, row, session.get_one(Case, row.case_id), row.deliver_by, now)
                breached += 1
        return breached

    def _late(self, session: Session, row: Outbox, case: Case, due: datetime,
              now: datetime) -> None:
        rules = self.providers()[case.provider_id]
        obligation = rules.obligation(row.obligation_id) if row.obligation_id else None
        repo.add_event(session, case.id, "breach", at=now, outbox=row, detail={
            "rule": row.obligation_id,
            "severity": obligation.severity.value if obligation else None,
            "kind": "delivery", "purpose": row.purpose, "due_at": due.isoformat(),
            "reason": f"not delivered by its deadline: {row.last_error or 'not yet sent'}"})
        rule = f" ({obligation.id}, {obligation.severity.value}: {obligation.quote})" \
            if obligation else ""
        self._alert(
            session, case, rules, self._mailbox(case), now,
            stage_number=obligation.stage if obligation else case.stage,
            key=f"alert:late:{row.idempotency_key}",
            title=f"{row.purpose} not delivered by its deadline",
            detail=f"The {row.purpose} to {', '.join(row.recipients)} had to leave by "
                   f"{local_datetime_text(due, rules.timezone)}{rule}. It is still waiting "
                   f"in the outbox: {row.last_error or 'not yet sent'}. It goes out as soon "
                   "as the mail server takes it; if the customer must have it sooner, "
                   "contact them another way.")

    def rate_limited(self, deferred: list[int], *, now: datetime) -> None:
        """Tell each mailbox's staff, once per clock hour, that automatic mail is held back."""
        if not deferred:
            return
        with transaction(self.sessions) as session:
            rows = list(session.scalars(select(Outbox).where(Outbox.id.in_(deferred))
                                        .order_by(Outbox.id)))
            for mailbox_name in dict.fromkeys(row.mailbox for row in rows):
                held = [row for row in rows if row.mailbox == mailbox_name and row.case_id]
                key = f"alert:global-limit:{mailbox_name}:{now:%Y-%m-%dT%H}"
                if not held or session.scalar(select(Outbox.id).where(
                        Outbox.idempotency_key == key)):
                    continue
                # The alert is about the whole mailbox; it is filed on the first held case.
                case = session.get_one(Case, held[0].case_id)
                rules = self.providers()[case.provider_id]
                limit = self.config.worker.global_rate_limit_per_hour
                self.desk.mail.to_roles(
                    session, case, rules, self._mailbox(case), roles=[], template="alert",
                    purpose="alert", now=now, key=key,
                    extra={"alert": {
                        "title": "automatic mail held back by the global rate limit",
                        "detail": f"More than {limit} automatic messages (acknowledgements "
                                  f"and updates) an hour: {len(held)} are waiting, and go out "
                                  "as the limit allows, from "
                                  f"{local_datetime_text(held[0].next_attempt_at, rules.timezone)}"
                                  ". Nothing is dropped. A flood of complaints or a mail loop "
                                  "can cause this: check `complaints-worker status` and the "
                                  "latest cases."}})

    def _mailbox(self, case: Case) -> MailboxConfig:
        return next(m for m in self.config.mailboxes if m.name == case.mailbox)

    def _fire(self, session: Session, timer: Timer, case: Case, now: datetime) -> None:
        rules = self.providers()[case.provider_id]
        mailbox = self._mailbox(case)
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
            self._timer_alert(session, case, rules, mailbox, obligation, timer, now,
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
        self.desk.mail.to_roles(
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
        self.desk.mail.to_roles(
            session, case, rules, mailbox, roles=list(dict.fromkeys(roles)),
            template="escalation", purpose="escalation", now=now,
            key=f"escalation:{case.reference}:{obligation.id}:{timer.occurrence}",
            extra=self._obligation_context(rules, obligation, timer.due_at, stage_number=number))

    def _timer_alert(self, session: Session, case: Case, rules: ProviderRules,
                     mailbox: MailboxConfig, obligation: Obligation, timer: Timer, now: datetime,
                     *, title: str, detail: str = "") -> None:
        self._alert(
            session, case, rules, mailbox, now, stage_number=obligation.stage,
            key=f"alert:{case.reference}:{obligation.id}:{timer.kind}:{timer.occurrence}",
            title=title, detail=detail or (
                f"{obligation.id} ({obligation.severity.value}) was due by "
                f"{local_datetime_text(timer.deadline_at or timer.due_at, rules.timezone)}: "
                f"{obligation.quote}"))

    def _alert(self, session: Session, case: Case, rules: ProviderRules, mailbox: MailboxConfig,
               now: datetime, *, stage_number: int, key: str, title: str, detail: str) -> None:
        """An alert to the owner of a stage (the notify addresses when nobody holds it)."""
        stage = rules.stage(stage_number)
        self.desk.mail.to_roles(
            session, case, rules, mailbox, roles=[stage.owner] if stage else [],
            template="alert", purpose="alert", now=now, key=key,
            extra={"alert": {"title": title, "detail": detail}})

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
        row = self.desk.mail.letter(session, case, rules, mailbox, template=obligation.template,
                                    purpose=PURPOSES.get(obligation.template, "update"), now=now,
                                    key=f"{obligation.id.replace('_', '-')}:{case.reference}")
        deadline = timer.deadline_at or timer.due_at
        if obligation.from_regime:
            # The regulator counts the threshold in weeks, so in days: a letter that leaves on
            # the threshold's (local) day is on time, one that leaves the day after is not.
            deadline = _end_of_local_day(deadline, rules.timezone)
        fulfils(row, obligation.id, deadline, now)

    def _update(self, session: Session, timer: Timer, case: Case, rules: ProviderRules,
                mailbox: MailboxConfig, obligation: Obligation, now: datetime) -> None:
        """No update went out in time: send the template once, even after a long downtime."""
        assert obligation.template is not None
        row = self.desk.mail.letter(session, case, rules, mailbox, template=obligation.template,
                                    purpose=PURPOSES.get(obligation.template, "update"), now=now,
                                    key=f"{obligation.id.replace('_', '-')}:{case.reference}:"
                                        f"{timer.occurrence}", limited=True)
        # The update must reach the customer by the occurrence's deadline (it is sent
        # `send_before` it, which is its slack).
        fulfils(row, obligation.id, timer.deadline_at or timer.due_at, now)
        missed = self.desk.schedule_next(session, case, rules, obligation, timer, now)
        for deadline in missed:
            self._breach(session, timer, case, obligation, now, hard=False, deadline=deadline,
                         reason="missed while the worker was not running; caught up once",
                         outstanding=False)
        if missed:
            self._timer_alert(session, case, rules, mailbox, obligation, timer, now,
                              title=f"{len(missed)} {obligation.id} occurrence(s) missed",
                        detail="The worker was not running when these updates were due: "
                               + ", ".join(local_datetime_text(d, rules.timezone) for d in missed)
                               + ". One update has now been sent; each missed one is recorded "
                                 "as a breach.")

    def _deadlock_decision(self, session: Session, timer: Timer, case: Case, rules: ProviderRules,
                           mailbox: MailboxConfig, now: datetime) -> None:
        """No staff decision by the deadline: the letter goes, where the rules say so."""
        if rules.deadlock is not None and rules.deadlock.on_request:
            row = self.desk.deadlock_letter(session, case, rules, mailbox, now)
            # Due at the decision deadline: held past it by an outage, it is a breach.
            fulfils(row, "deadlock_decision", timer.due_at, now)
            repo.add_event(session, case.id, "deadlock_letter_by_deadline", at=now, detail={
                "reason": "the decision deadline passed without a permitted refusal"})
            return
        stage = rules.stage(case.stage)
        self.desk.mail.to_roles(
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


def _end_of_local_day(instant: datetime, timezone: str) -> datetime:
    zone = ZoneInfo(timezone)
    day = instant.astimezone(zone).date() + timedelta(days=1)
    return datetime.combine(day, time(0), zone)
