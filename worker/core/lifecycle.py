"""Plan a complaint's life from its rule set: every obligation's due time and what the worker does.

Pure: given the rules, a calendar, the receipt instant and the case events, it returns the
obligations (due, met, next due) and the timeline of actions in time order. `rules simulate`
prints it; the case timers are planned from the same functions.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from worker.core.calendar import BusinessCalendar
from worker.core.deadlines import before, due_at
from worker.core.rules import Duration, Obligation, Owner, ProviderRules, Unit


class EventKind(enum.Enum):
    STAFF_REPLY = "staff-reply"
    CUSTOMER_REPLY = "customer-reply"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    DEADLOCK_REQUEST = "deadlock-request"
    DEADLOCK = "deadlock"
    VEXATIOUS = "vexatious"
    OUT_OF_JURISDICTION = "out-of-jurisdiction"
    UPDATES_AGREED = "updates-agreed"


@dataclass(frozen=True, kw_only=True, slots=True)
class CaseEvent:
    kind: EventKind
    at: datetime
    cadence: Duration | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Action:
    at: datetime
    # send | remind | escalate | breach | flag | cancel | event
    action: str
    to: str = ""
    obligation: str | None = None
    template: str | None = None
    note: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class ObligationPlan:
    id: str
    due: datetime | None
    met: datetime | None
    hard_limit: datetime | None = None
    next_due: datetime | None = None
    repeating: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    obligations: tuple[ObligationPlan, ...]
    timeline: tuple[Action, ...]


_CADENCE = re.compile(r"^(\d{1,3})([dw])$")
CADENCE_WORDS = {
    "daily": Duration(unit=Unit.BUSINESS_DAYS, amount=Decimal(1)),
    "weekly": Duration(unit=Unit.WEEKS, amount=Decimal(1)),
    "fortnightly": Duration(unit=Unit.WEEKS, amount=Decimal(2)),
}


def parse_cadence(text: str) -> Duration:
    """`daily`, `weekly`, `fortnightly`, `<n>d` (every n working days) or `<n>w` (every n weeks)."""
    word = text.strip().lower()
    if word in CADENCE_WORDS:
        return CADENCE_WORDS[word]
    match = _CADENCE.match(word)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"unknown cadence '{text}': use daily, weekly, fortnightly, <n>d or <n>w")
    unit = Unit.BUSINESS_DAYS if match.group(2) == "d" else Unit.WEEKS
    return Duration(unit=unit, amount=Decimal(match.group(1)))


def obligation_due(rules: ProviderRules, calendar: BusinessCalendar, obligation: Obligation,
                   start: datetime) -> datetime:
    """The first due time of `obligation` when its clock starts at `start`."""
    if obligation.due is None:
        # The regime's threshold, chosen by the UK local date the complaint was first raised.
        assert rules.regime is not None
        local = start.astimezone(ZoneInfo(rules.timezone)).date()
        return calendar.add_weeks(start, rules.regime.adr_threshold_weeks(local))
    if obligation.repeat is not None and obligation.due.unit is Unit.BUSINESS_DAYS:
        # "On each working day after the day of the acknowledgement": counted from that local
        # date, even when the acknowledgement went out after hours or at a weekend.
        return close_of_working_day_after(calendar, start, int(obligation.due.amount))
    return due_at(calendar, obligation.due, start)


def close_of_working_day_after(calendar: BusinessCalendar, instant: datetime, n: int) -> datetime:
    """The close of the n-th working day after `instant`'s local date (repeating obligations
    count days, whatever the time of day)."""
    day = calendar.local_date(instant)
    for _ in range(n):
        day = calendar.next_working_day(day)
    return calendar.working_intervals(day)[-1][1]


def window_start(calendar: BusinessCalendar, cadence: Duration, previous: datetime,
                 deadline: datetime) -> datetime:
    """Where the window of a repeating occurrence opens: what is sent in (start, deadline]
    meets it. A cadence of working days wants an update on each of those days, so the window
    never opens before the deadline's own working day (a reply on the acknowledgement day, or
    late the evening before, is not that day's update)."""
    if cadence.unit is Unit.BUSINESS_DAYS and cadence.amount == 1:
        day = calendar.local_date(deadline)
        midnight = datetime.combine(day, datetime.min.time(), ZoneInfo(calendar.spec.timezone))
        return max(previous, midnight.astimezone(deadline.tzinfo))
    return previous


def next_occurrence(calendar: BusinessCalendar, cadence: Duration, previous_due: datetime) -> datetime:
    """The due time after `previous_due` for a repeating obligation.

    Working days count from the previous occurrence's local date: its due time at the 17:30
    close is outside the half-open hours, and counting from there as from a message received
    after hours would skip a day.
    """
    if cadence.unit is Unit.BUSINESS_DAYS:
        return close_of_working_day_after(calendar, previous_due, int(cadence.amount))
    return due_at(calendar, cadence, previous_due)


_ORDER = {"event": 0, "cancel": 1, "send": 2, "flag": 3, "remind": 4, "breach": 5, "escalate": 6}


@dataclass(slots=True)
class _Planner:
    rules: ProviderRules
    calendar: BusinessCalendar
    received: datetime
    first_raised: datetime
    events: list[CaseEvent]
    until: datetime
    actions: list[Action] = field(default_factory=list)

    # ------------------------------------------------------------ case state

    def instants(self, *kinds: EventKind) -> list[datetime]:
        return [e.at for e in self.events if e.kind in kinds]

    def is_open(self, at: datetime) -> bool:
        """Open unless the latest resolve/reopen at or before `at` was a resolve."""
        state = True
        for event in self.events:
            if event.at > at:
                break
            if event.kind is EventKind.RESOLVED:
                state = False
            elif event.kind is EventKind.REOPENED:
                state = True
        return state

    def reopenings_after(self, at: datetime) -> list[datetime]:
        return [t for t in self.instants(EventKind.REOPENED) if t > at]

    def exception_before(self, at: datetime) -> CaseEvent | None:
        """A staff decision (vexatious, out of jurisdiction) that cancels the ADR letter."""
        for event in self.events:
            if event.at > at:
                break
            if event.kind.value in self.rules.no_adr_letter and event.kind in (
                    EventKind.VEXATIOUS, EventKind.OUT_OF_JURISDICTION):
                return event
        return None

    def stage_label(self, number: int) -> str:
        stage = self.rules.stage(min(number, len(self.rules.stages)))
        return f"{stage.name} ({stage.owner})" if stage else "staff"

    def add(self, at: datetime, action: str, *, to: str = "", obligation: str | None = None,
            template: str | None = None, note: str = "") -> None:
        if at <= self.until:
            self.actions.append(Action(at=at, action=action, to=to, obligation=obligation,
                                       template=template, note=note))

    # ------------------------------------------------------------ letters

    def deadlock_letters(self) -> list[datetime]:
        """When deadlock letters go out: on #deadlock, or when a request's decision deadline passes."""
        policy = self.rules.deadlock
        sent: list[datetime] = []
        template = policy.template if policy else "deadlock_letter"
        for event in self.events:
            if event.kind is EventKind.DEADLOCK and not sent and self.is_open(event.at):
                sent.append(event.at)
                self.add(event.at, "send", to="customer", template=template,
                         note="deadlock letter on a staff decision")
            elif event.kind is EventKind.DEADLOCK_REQUEST and not sent and policy is not None:
                deadline = due_at(self.calendar, policy.decision_deadline, event.at)
                self.add(event.at, "flag", to=self.stage_label(1),
                         note=f"customer asked for a deadlock letter; decide by "
                              f"{deadline.isoformat()}")
                decided = [t for t in self.instants(EventKind.DEADLOCK) if event.at <= t <= deadline]
                if policy.on_request and not decided and self.is_open(deadline):
                    sent.append(deadline)
                    self.add(deadline, "send", to="customer", template=policy.template,
                             note="deadlock letter: the decision deadline passed without a refusal")
        return sent

    # ------------------------------------------------------------ obligations

    def trigger(self, obligation: Obligation) -> datetime | None:
        kinds = {
            "complaint_received": [self.received], "first_raised": [self.first_raised],
            "acknowledgement_sent": [self.received],
            "staff_reply": self.instants(EventKind.STAFF_REPLY),
            "customer_reply": self.instants(EventKind.CUSTOMER_REPLY),
            "deadlock_requested": self.instants(EventKind.DEADLOCK_REQUEST),
            "stage_entered": [a.at for a in self.actions if a.action == "escalate"
                              and a.to == self.stage_label(obligation.stage)],
        }
        found = kinds[obligation.trigger]
        return min(found) if found else None

    def due(self, obligation: Obligation, start: datetime) -> datetime:
        return obligation_due(self.rules, self.calendar, obligation, start)

    def met_instants(self, obligation: Obligation, letters: dict[str, list[datetime]]) -> list[datetime]:
        found: list[datetime] = []
        for kind in obligation.met_by:
            if kind == "acknowledgement":
                found.append(self.received)
            elif kind in ("staff-reply", "update"):
                found += self.instants(EventKind.STAFF_REPLY)
            elif kind == "resolved":
                found += self.instants(EventKind.RESOLVED)
            else:
                found += letters.get(kind, [])
        return sorted(found)

    def single(self, obligation: Obligation, letters: dict[str, list[datetime]]) -> ObligationPlan:
        start = self.trigger(obligation)
        if start is None:
            return ObligationPlan(id=obligation.id, due=None, met=None)
        due = self.due(obligation, start)
        hard = due_at(self.calendar, obligation.hard_limit, start) if obligation.hard_limit else None
        met = next((t for t in self.met_instants(obligation, letters) if t >= start), None)
        if obligation.owner is Owner.AUTOMATIC:
            met = self.automatic(obligation, due, met, letters)
        else:
            self.staff(obligation, start, due, hard, met)
        return ObligationPlan(id=obligation.id, due=due, met=met, hard_limit=hard)

    def automatic(self, obligation: Obligation, due: datetime, met: datetime | None,
                  letters: dict[str, list[datetime]]) -> datetime | None:
        if met is not None and met <= due:
            return met
        if obligation.met_by == frozenset({"acknowledgement"}):
            return met
        moment = due
        if not self.is_open(due):
            # Resolved at the due time: not sent. A reopening later continues the original clock.
            reopened = next((t for t in self.reopenings_after(due) if met is None or t < met), None)
            self.add(due, "cancel", obligation=obligation.id, template=obligation.template,
                     note="not sent: the case is resolved"
                          + ("; it would go out if the case were reopened" if reopened is None else ""))
            if reopened is None:
                return met
            moment = reopened
        exception = self.exception_before(moment)
        if exception is not None:
            self.add(exception.at, "cancel", obligation=obligation.id, template=obligation.template,
                     note=f"not sent: staff marked the complaint {exception.kind.value}")
            return met
        if met is not None and met <= moment:
            return met
        self.add(moment, "send", to="customer", obligation=obligation.id,
                 template=obligation.template,
                 note="at the threshold" if moment == due else "on reopening, the threshold passed")
        if obligation.id == "adr_letter":
            letters.setdefault("adr-letter", []).append(moment)
        return moment

    def staff(self, obligation: Obligation, start: datetime, due: datetime, hard: datetime | None,
              met: datetime | None) -> None:
        lead = obligation.reminder_before or self.rules.reminder_before
        owner = self.stage_label(obligation.stage)
        if lead is not None:
            remind_at = before(self.calendar, lead, due, not_before=start)
            if (met is None or met > remind_at) and self.is_open(remind_at) and remind_at < due:
                self.add(remind_at, "remind", to=owner, obligation=obligation.id,
                         note=f"due {due.isoformat()}")
        if (met is None or met > due) and self.is_open(due):
            self.add(due, "breach", obligation=obligation.id, to=owner,
                     note=f"{obligation.severity.value} deadline missed")
            self.add(due, "escalate", obligation=obligation.id,
                     to=self.stage_label(obligation.stage + 1), note="missed; escalated")
        if hard is not None and (met is None or met > hard) and self.is_open(hard):
            self.add(hard, "breach", obligation=obligation.id, to=owner, note="hard limit missed")

    def repeating(self, obligation: Obligation, last_event: datetime) -> ObligationPlan:
        start = self.trigger(obligation)
        assert obligation.repeat is not None
        if start is None:
            return ObligationPlan(id=obligation.id, due=None, met=None, repeating=True)
        updates = self.instants(EventKind.STAFF_REPLY)
        agreements = [e for e in self.events if e.kind is EventKind.UPDATES_AGREED and e.cadence]
        cadence = obligation.repeat
        due = self.due(obligation, start)
        previous = window_start(self.calendar, cadence, start, due)
        first_due, first_met, next_due = due, None, None
        while due <= self.until:
            agreed = next((a for a in agreements if previous < a.at <= due), None)
            if agreed is not None and obligation.agreed_cadence and agreed.cadence is not None:
                cadence = agreed.cadence
                self.add(agreed.at, "event", obligation=obligation.id,
                         note=f"update cadence agreed: every {cadence.describe()}")
                previous, due = agreed.at, due_at(self.calendar, cadence, agreed.at)
                continue
            opens = window_start(self.calendar, cadence, previous, due)
            given = next((t for t in updates if opens < t <= due), None)
            if due == first_due:
                first_met = given
            if next_due is None and due > last_event and given is None:
                next_due = due
            if given is None and self.is_open(due):
                send_at = due
                if obligation.send_before is not None:
                    send_at = before(self.calendar, obligation.send_before, due, not_before=previous)
                self.add(send_at, "send", to="customer", obligation=obligation.id,
                         template=obligation.template,
                         note=f"no update since {previous.isoformat()}")
                if due == first_due:
                    first_met = send_at
            previous, due = due, next_occurrence(self.calendar, cadence, due)
        return ObligationPlan(id=obligation.id, due=first_due, met=first_met, next_due=next_due,
                              repeating=True)


def plan(
    rules: ProviderRules,
    calendar: BusinessCalendar,
    *,
    received: datetime,
    events: Sequence[CaseEvent] = (),
    until: datetime | None = None,
    first_raised: datetime | None = None,
) -> Plan:
    """Everything the worker would do for one complaint received at `received`."""
    if received.tzinfo is None:
        raise ValueError("received must be an aware datetime")
    ordered = sorted(events, key=lambda e: e.at)
    if until is None:
        # Ten weeks covers every threshold; a later event gets two more weeks to show its effect.
        until = max(received + timedelta(weeks=10),
                    (ordered[-1].at + timedelta(weeks=2)) if ordered else received)
    planner = _Planner(rules=rules, calendar=calendar, received=received,
                       first_raised=first_raised or received, events=ordered, until=until)
    planner.add(received, "event", note="complaint received")
    for event in ordered:
        planner.add(event.at, "event", note=event.kind.value)
    planner.add(received, "send", to="customer", template=rules.acknowledgement_template,
                note="automatic acknowledgement")
    for event in ordered:
        if event.kind in (EventKind.RESOLVED,):
            planner.add(event.at, "cancel", note="case resolved: pending reminders and letters stop")
    letters = {"deadlock-letter": planner.deadlock_letters()}
    last_event = ordered[-1].at if ordered else received
    # Staff obligations first, so that `stage_entered` triggers can see their escalations.
    ordering = sorted(rules.obligations, key=lambda o: o.trigger == "stage_entered")
    results: dict[str, ObligationPlan] = {}
    for obligation in ordering:
        if obligation.repeat is not None:
            results[obligation.id] = planner.repeating(obligation, last_event)
        else:
            results[obligation.id] = planner.single(obligation, letters)
    timeline = sorted(planner.actions, key=lambda a: (a.at, _ORDER.get(a.action, 9)))
    return Plan(obligations=tuple(results[o.id] for o in rules.obligations),
                timeline=tuple(timeline))


def parse_event(text: str) -> CaseEvent:
    """`KIND@ISO` as given to `rules simulate --event`."""
    kind_text, at_sign, when = text.partition("@")
    if not at_sign:
        raise ValueError(f"event '{text}' must look like KIND@2026-04-02T09:00:00Z")
    cadence = None
    if kind_text.startswith("updates-agreed:"):
        kind_text, _, cadence_text = kind_text.partition(":")
        cadence = parse_cadence(cadence_text)
    try:
        kind = EventKind(kind_text)
    except ValueError:
        kinds = ", ".join(k.value for k in EventKind)
        raise ValueError(f"unknown event kind '{kind_text}' (use: {kinds})") from None
    if kind is EventKind.UPDATES_AGREED and cadence is None:
        raise ValueError("updates-agreed needs a cadence: updates-agreed:<cadence>@ISO")
    at = datetime.fromisoformat(when.replace("Z", "+00:00"))
    if at.tzinfo is None:
        raise ValueError(f"event time '{when}' needs a UTC offset")
    return CaseEvent(kind=kind, at=at, cadence=cadence)


def events_of(texts: Iterable[str]) -> list[CaseEvent]:
    return [parse_event(t) for t in texts]
