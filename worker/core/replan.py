"""Timers of a case: what is planned when it opens, and how a rule or calendar change re-plans them.

The policy, in full (docs/rules.md, "Changing rules for open cases"):
- A due time already promised to the customer (a regulatory or commitment obligation) never
  moves: the customer was told it, so it is kept, and staff see that the new rules differ.
- Any other due time keeps the business time already elapsed: the time the clock has run
  under the old calendar counts as spent, and only the remainder is measured on the new one.
- Calendar units (weeks, days, minutes) and the regime's threshold run in wall-clock time
  from the start, so they are recomputed from the start under the new rules.
- A timer whose due time has already passed is left alone: it fires as planned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from worker.core.calendar import BusinessCalendar
from worker.core.deadlines import before, due_at
from worker.core.lifecycle import next_occurrence, obligation_due, window_start
from worker.core.rules import Duration, Obligation, Owner, ProviderRules, Severity

# Obligations whose clocks start when the complaint arrives; the others start on later events.
INTAKE_TRIGGERS = ("complaint_received", "first_raised", "acknowledgement_sent")


@dataclass(frozen=True, kw_only=True, slots=True)
class PlannedTimer:
    obligation_id: str
    kind: str  # due | hard_limit | reminder | deadlock_decision
    start_at: datetime
    due_at: datetime
    promised: bool
    occurrence: int = 1
    # The obligation's deadline when the worker acts before it (automatic updates).
    deadline_at: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Replan:
    due_at: datetime
    changed: bool
    reason: str
    # The new rules would move a due time the customer was told; it was kept instead.
    kept_promise: bool = False


def is_promised(obligation: Obligation) -> bool:
    """Told to the customer (in the acknowledgement or by regulation), so never moved."""
    return obligation.severity in (Severity.REGULATORY, Severity.COMMITMENT)


def intake_timers(rules: ProviderRules, calendar: BusinessCalendar, *, received: datetime,
                  first_raised: datetime, acknowledged: bool) -> list[PlannedTimer]:
    """The timers a new case gets: every obligation whose clock starts at intake and that the
    automatic acknowledgement does not already meet."""
    timers: list[PlannedTimer] = []
    for obligation in rules.obligations:
        if obligation.trigger not in INTAKE_TRIGGERS or obligation.met_by == {"acknowledgement"}:
            continue
        if obligation.trigger == "acknowledgement_sent" and not acknowledged:
            continue
        start = first_raised if obligation.trigger == "first_raised" else received
        promised = is_promised(obligation)
        due = obligation_due(rules, calendar, obligation, start)
        if obligation.repeat is not None:
            timers.append(occurrence_timer(calendar, obligation, obligation.repeat,
                                           previous=start, deadline=due, occurrence=1))
            continue
        timers.append(PlannedTimer(obligation_id=obligation.id, kind="due", start_at=start,
                                   due_at=due, promised=promised))
        lead = obligation.reminder_before or rules.reminder_before
        if obligation.owner is Owner.STAFF and lead is not None:
            remind_at = before(calendar, lead, due, not_before=start)
            if remind_at < due:
                timers.append(PlannedTimer(obligation_id=obligation.id, kind="reminder",
                                           start_at=start, due_at=remind_at, promised=promised))
        if obligation.hard_limit is not None:
            timers.append(PlannedTimer(obligation_id=obligation.id, kind="hard_limit",
                                       start_at=start,
                                       due_at=due_at(calendar, obligation.hard_limit, start),
                                       promised=promised))
    return timers


def occurrence_timer(calendar: BusinessCalendar, obligation: Obligation, cadence: Duration, *,
                     previous: datetime, deadline: datetime, occurrence: int) -> PlannedTimer:
    """A repeating obligation's occurrence: its window (start_at, deadline], acted on
    `send_before` the deadline when set."""
    opens = window_start(calendar, cadence, previous, deadline)
    send_at = deadline
    if obligation.send_before is not None:
        send_at = before(calendar, obligation.send_before, deadline, not_before=opens)
    return PlannedTimer(obligation_id=obligation.id, kind="due", start_at=opens,
                        due_at=send_at, deadline_at=deadline, promised=is_promised(obligation),
                        occurrence=occurrence)


def catch_up(calendar: BusinessCalendar, cadence: Duration, deadline: datetime,
             sent_at: datetime) -> tuple[list[datetime], datetime, datetime]:
    """Occurrences of a repeating obligation around one message sent at `sent_at`.

    `deadline` is the occurrence in hand. Returns the deadlines already missed (before
    `sent_at`: downtime), the occurrence the message covers (the first deadline at or after
    it), and the deadline after that. One message covers one occurrence; the missed ones are
    recorded as breaches, never replayed one message per missed day.
    """
    missed: list[datetime] = []
    covered = deadline
    while covered < sent_at:
        missed.append(covered)
        covered = next_occurrence(calendar, cadence, covered)
    return missed, covered, next_occurrence(calendar, cadence, covered)


def replan(timer: PlannedTimer, *, new_rules: ProviderRules, old_calendar: BusinessCalendar,
           new_calendar: BusinessCalendar, now: datetime) -> Replan:
    """Where `timer` stands under the new rules and calendar, by the policy above."""
    obligation = new_rules.obligation(timer.obligation_id)
    if timer.due_at <= now:
        return Replan(due_at=timer.due_at, changed=False, reason="already due; fires as planned")
    if obligation is None:
        return Replan(due_at=timer.due_at, changed=False,
                      reason="the obligation is no longer in the rules; kept as planned")
    duration = obligation.hard_limit if timer.kind == "hard_limit" else obligation.due
    if duration is None or duration.unit.is_calendar:
        if timer.kind == "hard_limit" and duration is None:
            return Replan(due_at=timer.due_at, changed=False,
                          reason="the new rules have no hard limit; kept as planned")
        candidate = (obligation_due(new_rules, new_calendar, obligation, timer.start_at)
                     if duration is None else due_at(new_calendar, duration, timer.start_at))
    else:
        # Keep the business time already spent; measure only what remains on the new calendar.
        nominal = due_at(new_calendar, duration, timer.start_at)
        total = new_calendar.business_seconds_between(timer.start_at, nominal)
        spent = old_calendar.business_seconds_between(timer.start_at, now)
        candidate = new_calendar.add_business_seconds(now, max(total - spent, 0))
    if candidate == timer.due_at:
        return Replan(due_at=timer.due_at, changed=False, reason="unchanged by the new rules")
    if timer.promised:
        return Replan(due_at=timer.due_at, changed=False, kept_promise=True,
                      reason=f"promised to the customer; kept (the new rules would give "
                             f"{candidate.isoformat()})")
    return Replan(due_at=candidate, changed=True,
                  reason=f"re-planned keeping elapsed business time (was {timer.due_at.isoformat()})")
