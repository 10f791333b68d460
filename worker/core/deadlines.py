"""Turn a rule-file duration into an instant on a provider's business calendar."""

from __future__ import annotations

from datetime import datetime, timedelta

from worker.core.calendar import BusinessCalendar
from worker.core.rules import Duration, Unit


def due_at(calendar: BusinessCalendar, duration: Duration, start: datetime) -> datetime:
    """When `duration` from `start` ends, by the rules of its unit (docs/rules.md, Units of time)."""
    amount = duration.amount
    match duration.unit:
        case Unit.BUSINESS_HOURS:
            return calendar.add_business_seconds(start, int(amount * 3600))
        case Unit.BUSINESS_DAYS:
            return calendar.business_days_at_close(start, int(amount))
        case Unit.BUSINESS_DAYS_CLOCK:
            return calendar.business_days_clock(start, int(amount))
        case Unit.DAYS:
            return calendar.add_days(start, int(amount))
        case Unit.WEEKS:
            return calendar.add_weeks(start, int(amount))
        case Unit.MINUTES:
            return start + timedelta(minutes=int(amount))


def before(calendar: BusinessCalendar, duration: Duration, due: datetime, *,
           not_before: datetime) -> datetime:
    """`duration` before `due`, never earlier than `not_before` (reminders, early automatic sends).

    Business units are counted back in open time, so a reminder lands inside business hours.
    """
    if duration.unit.is_calendar:
        if duration.unit is Unit.MINUTES:
            moment = due - timedelta(minutes=int(duration.amount))
        else:
            days = int(duration.amount) * (7 if duration.unit is Unit.WEEKS else 1)
            moment = calendar.add_days(due, -days)
        return max(moment, not_before)
    if duration.unit is Unit.BUSINESS_HOURS:
        lead = int(duration.amount * 3600)
    else:
        # Working days before: count back whole days of open time from the due instant.
        lead = int(duration.amount) * _typical_day_seconds(calendar, due)
    elapsed = calendar.business_seconds_between(not_before, due)
    if elapsed <= lead:
        return calendar.deemed_start(not_before)
    return calendar.add_business_seconds(not_before, elapsed - lead)


def _typical_day_seconds(calendar: BusinessCalendar, instant: datetime) -> int:
    day = calendar.next_working_day(instant.date())
    return sum(int((end - start).total_seconds()) for start, end in calendar.working_intervals(day))
