"""Provider rule sets as frozen values: identity, calendar, stages, obligations, regime and ADR scheme."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import date, time
from decimal import Decimal

from worker.core.calendar import CalendarSpec


class Unit(enum.Enum):
    BUSINESS_HOURS = "business_hours"
    BUSINESS_DAYS = "business_days"
    BUSINESS_DAYS_CLOCK = "business_days_clock"
    DAYS = "days"
    WEEKS = "weeks"
    MINUTES = "minutes"

    @property
    def is_calendar(self) -> bool:
        return self in (Unit.DAYS, Unit.WEEKS, Unit.MINUTES)


@dataclass(frozen=True, kw_only=True, slots=True)
class Duration:
    unit: Unit
    amount: Decimal

    def describe(self) -> str:
        words = {
            Unit.BUSINESS_HOURS: "business hour", Unit.BUSINESS_DAYS: "working day (at close)",
            Unit.BUSINESS_DAYS_CLOCK: "working day (same clock time)", Unit.DAYS: "day",
            Unit.WEEKS: "week", Unit.MINUTES: "minute",
        }
        word = words[self.unit]
        if self.amount != 1:
            word = word.replace("day (", "days (") if "(" in word else word + "s"
        return f"{self.amount.normalize():f} {word}"


class Owner(enum.Enum):
    # A person must act; the worker reminds them before the due time and escalates when missed.
    STAFF = "staff"
    # The worker itself sends the template to the customer at the due time when unmet.
    AUTOMATIC = "automatic"


class Severity(enum.Enum):
    REGULATORY = "regulatory"
    COMMITMENT = "commitment"
    TARGET = "target"
    HOUSE = "house"


TRIGGERS = ("complaint_received", "first_raised", "acknowledgement_sent", "staff_reply",
            "customer_reply", "deadlock_requested", "stage_entered")
MET_BY = ("acknowledgement", "staff-reply", "update", "resolved", "deadlock-letter", "adr-letter")
EXCEPTIONS = ("resolved", "vexatious", "out-of-jurisdiction")
REFUSAL_GROUNDS = ("resolution-imminent", "vexatious", "out-of-jurisdiction")


@dataclass(frozen=True, kw_only=True, slots=True)
class Obligation:
    id: str
    quote: str
    severity: Severity
    trigger: str
    # None means "the regime's effective-dated ADR threshold".
    due: Duration | None
    owner: Owner
    met_by: frozenset[str]
    stage: int = 1
    hard_limit: Duration | None = None
    template: str | None = None
    repeat: Duration | None = None
    send_before: Duration | None = None
    reminder_before: Duration | None = None
    agreed_cadence: bool = False

    @property
    def from_regime(self) -> bool:
        return self.due is None


@dataclass(frozen=True, kw_only=True, slots=True)
class Stage:
    number: int
    name: str
    owner: str


@dataclass(frozen=True, kw_only=True, slots=True)
class DeadlockPolicy:
    on_request: bool
    decision_deadline: Duration
    refusal_grounds: frozenset[str]
    template: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Scheme:
    """An ADR scheme (or independent reviewer); contact details live here once."""

    id: str
    name: str
    web: str
    phone: str
    email: str
    post: str
    free: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class AdrThreshold:
    """The ADR threshold for complaints first raised on local dates in [starts, ends)."""

    weeks: int
    starts: date | None
    ends: date | None

    def applies_to(self, first_raised: date) -> bool:
        return (self.starts is None or first_raised >= self.starts) and (
            self.ends is None or first_raised < self.ends
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Regime:
    id: str
    name: str
    referral_window_months: int
    adr_thresholds: tuple[AdrThreshold, ...]
    exceptions: frozenset[str] = frozenset(EXCEPTIONS)
    deadlock_refusal_grounds: frozenset[str] = frozenset(REFUSAL_GROUNDS)
    deadlock_letter: bool = True

    def adr_threshold_weeks(self, first_raised: date) -> int:
        for threshold in self.adr_thresholds:
            if threshold.applies_to(first_raised):
                return threshold.weeks
        raise ValueError(f"no ADR threshold in regime {self.id} covers {first_raised}")


Interval = tuple[time, time]
NO_HOURS: tuple[tuple[Interval, ...], ...] = ((),) * 7


@dataclass(frozen=True, kw_only=True, slots=True)
class ProviderRules:
    id: str
    name: str
    reference_prefix: str
    complaints_address: str
    timezone: str
    holiday_region: str
    regime: Regime | None
    scheme: Scheme | None
    contact_point: str
    acknowledgement_template: str
    next_steps: str
    weekly_hours: tuple[tuple[Interval, ...], ...] = NO_HOURS
    hours_confirmed: bool = True
    closures: frozenset[date] = frozenset()
    extra_working_days: tuple[tuple[date, tuple[Interval, ...]], ...] = ()
    stages: tuple[Stage, ...] = ()
    obligations: tuple[Obligation, ...] = ()
    deadlock: DeadlockPolicy | None = None
    no_adr_letter: frozenset[str] = field(default_factory=frozenset)
    reminder_before: Duration | None = None
    # Sent to the customer when staff resolve the case (it restates the ADR right).
    resolution_template: str | None = None
    # A customer still unhappy within this long of the resolution reopens the case.
    reopen_within: Duration | None = None

    def calendar_spec(self) -> CalendarSpec:
        """The business calendar of this provider (`with_region` for another holiday region)."""
        return CalendarSpec(
            timezone=self.timezone, weekly_hours=self.weekly_hours,
            holiday_region=self.holiday_region, closures=self.closures,
            extra_working_days=self.extra_working_days,
        )

    def obligation(self, obligation_id: str) -> Obligation | None:
        return next((o for o in self.obligations if o.id == obligation_id), None)

    def stage(self, number: int) -> Stage | None:
        return next((s for s in self.stages if s.number == number), None)

    def with_region(self, region: str) -> ProviderRules:
        return replace(self, holiday_region=region)
