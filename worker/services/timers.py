"""Persist case timers: planned when a case opens, re-planned when the rules change.

Firing them (reminders, escalations, automatic letters) is the timer sweep's job; this module
only keeps the `timer` table in step with the rules, with an audit event for every change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from worker.adapters import repository as repo
from worker.adapters.db import transaction
from worker.adapters.db_models import Case, Timer
from worker.core.calendar import BusinessCalendar, CalendarSpec
from worker.core.replan import PlannedTimer, intake_timers, replan
from worker.core.rules import ProviderRules

log = logging.getLogger(__name__)


class Calendars:
    """One built calendar per distinct calendar spec (building one takes ~0.1 s)."""

    def __init__(self) -> None:
        self._built: dict[CalendarSpec, BusinessCalendar] = {}

    def for_rules(self, rules: ProviderRules) -> BusinessCalendar:
        spec = rules.calendar_spec()
        calendar = self._built.get(spec)
        if calendar is None:
            calendar = self._built[spec] = BusinessCalendar.build(spec)
        return calendar


def plan_new_case(session: Session, case: Case, rules: ProviderRules, calendar: BusinessCalendar,
                  *, acknowledged: bool, now: datetime) -> None:
    """Add the new case's timers, in the caller's transaction, each with its audit event."""
    add_timers(session, case.id, intake_timers(rules, calendar, received=case.first_raised_at,
                                               first_raised=case.first_raised_at,
                                               acknowledged=acknowledged), now)


def add_timer(session: Session, case_id: int, planned: PlannedTimer, now: datetime) -> None:
    """Persist one planned timer with its audit event."""
    add_timers(session, case_id, [planned], now)


def add_timers(session: Session, case_id: int, planned: Iterable[PlannedTimer],
               now: datetime) -> None:
    """Persist planned timers, each with its audit event, in one INSERT."""
    rows = []
    for timer in planned:
        rows.append({"case_id": case_id, "obligation_id": timer.obligation_id, "kind": timer.kind,
                     "occurrence": timer.occurrence, "start_at": timer.start_at,
                     "due_at": timer.due_at, "deadline_at": timer.deadline_at,
                     "status": "pending", "fired_at": None, "promised": timer.promised,
                     "planned_at": now})
        repo.add_event(session, case_id, "timer_planned", at=now, detail={
            "rule": timer.obligation_id, "kind": timer.kind, "occurrence": timer.occurrence,
            "due_at": timer.due_at.isoformat(),
            "deadline_at": timer.deadline_at.isoformat() if timer.deadline_at else None,
            "promised": timer.promised})
    if rows:
        repo.run(session, _INSERT_TIMERS, rows)


_INSERT_TIMERS = insert(Timer).execution_options(render_nulls=True)


def replan_open_cases(sessions: sessionmaker[Session], calendars: Calendars,
                      old: dict[str, ProviderRules], new: dict[str, ProviderRules],
                      *, now: datetime) -> int:
    """Re-plan every pending timer of every open case whose provider's rules changed.

    One transaction per case, so a failure on one case leaves the others re-planned.
    Returns how many timers moved.
    """
    changed_providers = [pid for pid in new if pid in old and new[pid] != old[pid]]
    moved = 0
    for provider_id in changed_providers:
        old_calendar = calendars.for_rules(old[provider_id])
        new_calendar = calendars.for_rules(new[provider_id])
        with sessions() as session:
            case_ids = list(session.scalars(
                select(Case.id).where(Case.provider_id == provider_id, Case.status == "open")))
        for case_id in case_ids:
            with transaction(sessions) as session:
                moved += _replan_case(session, case_id, new[provider_id], old_calendar,
                                      new_calendar, now)
    if moved:
        log.info("rule change: %d timer(s) re-planned on open cases", moved)
    return moved


def _replan_case(session: Session, case_id: int, rules: ProviderRules,
                 old_calendar: BusinessCalendar, new_calendar: BusinessCalendar,
                 now: datetime) -> int:
    moved = 0
    timers = session.scalars(select(Timer).where(Timer.case_id == case_id,
                                                 Timer.status == "pending"))
    for timer in timers:
        planned = PlannedTimer(obligation_id=timer.obligation_id, kind=timer.kind,
                               start_at=timer.start_at, due_at=timer.due_at,
                               promised=timer.promised, occurrence=timer.occurrence)
        outcome = replan(planned, new_rules=rules, old_calendar=old_calendar,
                         new_calendar=new_calendar, now=now)
        if outcome.changed:
            moved += 1
            timer.due_at = outcome.due_at
            kind = "timer_replanned"
        elif outcome.kept_promise:
            kind = "timer_kept"
        else:
            continue
        repo.add_event(session, case_id, kind, at=now, detail={
            "rule": timer.obligation_id, "kind": timer.kind,
            "due_at": timer.due_at.isoformat(), "reason": outcome.reason})
    return moved
