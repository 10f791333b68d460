"""Business-time engine: deadlines in a provider's working hours, pure and precomputed.

The rules (RULES-RESEARCH.md §3):

- Instants are stored and returned in UTC; business and calendar arithmetic happens on the LOCAL
  wall clock of the calendar's timezone, then is converted back.
- A local date is a working day unless it is a weekday with no hours, a bank holiday of the region
  (the `holidays` package, substitute days included) or a closure; an extra working day is a working
  day with its own hours whatever else applies to that date.
- Hours are half-open `[open, close)` intervals of local wall-clock time, second precision, several
  per day allowed, never crossing midnight (so `close <= 23:59:59`).
- Business units (hours, working days) count from the DEEMED START: the receipt instant if it is
  inside open time, otherwise the next opening. Calendar units (days, weeks) use the actual instant.

How a local wall-clock reading becomes an instant (used for every interval bound, the day bounds and
the clock time of `business_days_clock`): it is the EARLIEST instant at which the local clock reads
that date and time or later. So a time that occurs twice (autumn fold) means its first occurrence and
a time the clock skips (spring gap) means the moment the clock jumps past it. For UK Monday-to-Friday
hours none of this matters (clocks change at 01:00 UTC on Sundays); it only gives weekend extra
working days with night hours a definite meaning. `add_days` has its own, conventional, rule (see
there).

Representation, built once by `BusinessCalendar.build` for every local date in
[first_year, last_year]: every open interval as a pair of UTC epoch MICROSECONDS in sorted arrays
(`_starts`, `_ends`), a prefix sum of open microseconds (`_cum`), the working-day index of each
interval, and per working day its first/last interval, its close and its local midnight. Every query
is then O(log n) with `bisect` and integer arithmetic: no per-day or per-minute loop. Microseconds
rather than seconds so that an instant with a fractional second is handled exactly, not truncated.
Sixteen years of a Monday-to-Friday calendar hold about 4,000 intervals: about 1.5 MB in all.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import MAXYEAR, MINYEAR, UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

Interval = tuple[time, time]
DayHours = tuple[Interval, ...]

# Wales shares England's bank holidays; the rule files name it GB-ENG.
_REGIONS: dict[str, str] = {"GB-ENG": "ENG", "GB-SCT": "SCT", "GB-NIR": "NIR"}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_US_PER_SECOND = 1_000_000
_SECONDS_PER_HOUR = 3600


def _check_hours(hours: object, where: str, *, allow_empty: bool) -> None:
    """Raise ValueError unless `hours` is a valid tuple of sorted, disjoint [open, close) pairs."""
    if not isinstance(hours, tuple):
        raise ValueError(f"{where}: hours must be a tuple of (open, close) pairs, got {hours!r}")
    if not hours and not allow_empty:
        raise ValueError(f"{where}: hours must not be empty (use closures for a closed day)")
    previous_close: time | None = None
    for pair in hours:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ValueError(f"{where}: expected an (open, close) pair, got {pair!r}")
        opening, closing = pair
        for bound in (opening, closing):
            if not isinstance(bound, time):
                raise ValueError(f"{where}: {bound!r} is not a datetime.time")
            if bound.tzinfo is not None:
                raise ValueError(f"{where}: {bound} must be a naive local time (no tzinfo)")
            if bound.microsecond:
                raise ValueError(f"{where}: {bound} has sub-second precision; hours are whole seconds")
        # close > open also rules out close == 00:00: an interval may not cross or end at midnight.
        if not opening < closing:
            raise ValueError(f"{where}: interval {opening}-{closing} must have open < close "
                             "(intervals cannot cross midnight; the latest close is 23:59:59)")
        if previous_close is not None and opening < previous_close:
            raise ValueError(f"{where}: intervals must be sorted and must not overlap ({pair!r})")
        previous_close = closing


@dataclass(frozen=True, kw_only=True, slots=True)
class CalendarSpec:
    """What a provider's working time is; `BusinessCalendar.build` turns it into a fast engine.

    `weekly_hours` has 7 entries, Monday=0 .. Sunday=6, each a tuple of half-open `[open, close)`
    naive local times, sorted, non-overlapping (touching is allowed), `open < close`, whole seconds.
    An empty tuple closes that weekday. Intervals cannot cross midnight: `close` must be later than
    `open` on the same day, so the latest possible close is 23:59:59 (`time(0, 0)` is not "midnight
    at the end of the day"). `extra_working_days` are working days with the given (non-empty) hours
    even when the date is a weekend, bank holiday or would otherwise be closed; a date may not be
    both a closure and an extra working day. The calendar covers local dates from 1 January
    `first_year` to 31 December `last_year`.
    """

    timezone: str
    weekly_hours: tuple[DayHours, ...]
    holiday_region: str
    closures: frozenset[date] = frozenset()
    extra_working_days: tuple[tuple[date, DayHours], ...] = ()
    first_year: int = 2020
    last_year: int = 2035

    def __post_init__(self) -> None:
        if not isinstance(self.weekly_hours, tuple) or len(self.weekly_hours) != 7:
            raise ValueError("weekly_hours must be a tuple of 7 entries, Monday first")
        for weekday, hours in enumerate(self.weekly_hours):
            _check_hours(hours, f"weekly_hours[{weekday}]", allow_empty=True)
        if self.holiday_region not in _REGIONS:
            raise ValueError(f"holiday_region must be one of {sorted(_REGIONS)} "
                             f"(Wales uses GB-ENG), got {self.holiday_region!r}")
        for closure in self.closures:
            if not isinstance(closure, date) or isinstance(closure, datetime):
                raise ValueError(f"closures must hold dates, got {closure!r}")
        seen: set[date] = set()
        for entry in self.extra_working_days:
            if not (isinstance(entry, tuple) and len(entry) == 2):
                raise ValueError(f"extra_working_days entries are (date, hours), got {entry!r}")
            day, hours = entry
            if not isinstance(day, date) or isinstance(day, datetime):
                raise ValueError(f"extra working day must be a date, got {day!r}")
            if day in seen:
                raise ValueError(f"extra working day {day} is listed twice")
            if day in self.closures:
                raise ValueError(f"{day} is both a closure and an extra working day")
            seen.add(day)
            _check_hours(hours, f"extra working day {day}", allow_empty=False)
        # One year of margin on each side: the day bounds need 1 Jan of last_year + 1.
        if not MINYEAR < self.first_year <= self.last_year < MAXYEAR:
            raise ValueError(f"need {MINYEAR} < first_year <= last_year < {MAXYEAR}, "
                             f"got {self.first_year}..{self.last_year}")


def _to_us(instant: datetime) -> int:
    """UTC epoch microseconds of an aware datetime (exact integer arithmetic)."""
    return (instant - _EPOCH) // _ONE_US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _offset_at(tz: ZoneInfo, us: int) -> timedelta | None:
    """The timezone's UTC offset at the instant `us`."""
    return tz.utcoffset(_from_us(us).astimezone(tz))


def _wall_to_us(tz: ZoneInfo, day: date, clock: time) -> int:
    """The earliest instant at which the local clock reads `day clock` or later, in epoch µs.

    Why this definition: it is monotone in the wall-clock reading (so converted intervals stay sorted
    and disjoint) and it matches what an office does: it opens the first time the clock shows the
    opening time, and if the clock jumps over that time it opens when the clock jumps.
    """
    wall = datetime.combine(day, clock.replace(fold=0, tzinfo=None))
    # fold=0: an ambiguous time resolves to its first occurrence, which is the answer; a skipped
    # time resolves with the pre-transition offset, i.e. AFTER the transition.
    candidate = _to_us(wall.replace(tzinfo=tz))
    if _from_us(candidate).astimezone(tz).replace(tzinfo=None) == wall:
        return candidate
    # A skipped time: the transition lies between the two readings of it; find its exact instant.
    # Build-time and rare (never for UK weekday hours), so a bisection is fine.
    before = _to_us(wall.replace(tzinfo=tz, fold=1))
    after = candidate
    while after - before > 1:
        middle = (before + after) // 2
        if _from_us(middle).astimezone(tz).replace(tzinfo=None) >= wall:
            after = middle
        else:
            before = middle
    return after


class BusinessCalendar:
    """An immutable, precomputed business calendar; make one with `BusinessCalendar.build(spec)`.

    Every method takes aware datetimes (ValueError on naive ones) and returns aware UTC datetimes.
    Instants whose local date is outside [first_year, last_year], and results that would need working
    time beyond the covered range, raise ValueError.
    """

    __slots__ = (
        "_cum", "_day_close", "_day_hi", "_day_lo", "_day_midnight", "_day_uniform", "_ends", "_first",
        "_hi_us", "_interval_day", "_last", "_lo_us", "_n_days", "_n_intervals", "_starts", "_tz",
        "_work_index", "_work_ordinals", "spec",
    )

    spec: CalendarSpec
    _tz: ZoneInfo
    _first: date
    _last: date
    _lo_us: int
    _hi_us: int
    _starts: tuple[int, ...]
    _ends: tuple[int, ...]
    _cum: tuple[int, ...]
    _interval_day: tuple[int, ...]
    _n_intervals: int
    _work_ordinals: tuple[int, ...]
    _work_index: dict[int, int]
    _day_lo: tuple[int, ...]
    _day_hi: tuple[int, ...]
    _day_close: tuple[int, ...]
    _day_midnight: tuple[int, ...]
    _day_uniform: tuple[bool, ...]
    _n_days: int

    def __init__(self, spec: CalendarSpec) -> None:
        """Prefer `build`; this does the same work."""
        try:
            tz = ZoneInfo(spec.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {spec.timezone!r}") from exc
        first = date(spec.first_year, 1, 1)
        last = date(spec.last_year, 12, 31)
        # observed (substitute) days stay ON: the default of country_holidays, never switched off.
        bank = holidays.country_holidays(
            "GB", subdiv=_REGIONS[spec.holiday_region], years=range(spec.first_year, spec.last_year + 1)
        )
        closed: set[date] = set(bank.keys()) | set(spec.closures)
        extra = dict(spec.extra_working_days)

        starts: list[int] = []
        ends: list[int] = []
        cum: list[int] = [0]
        interval_day: list[int] = []
        work_ordinals: list[int] = []
        day_lo: list[int] = []
        day_hi: list[int] = []
        day_close: list[int] = []
        day_midnight: list[int] = []
        day_uniform: list[bool] = []

        one_day = timedelta(days=1)
        day = first
        midnight = _wall_to_us(tz, first, time(0))
        while day <= last:
            next_day = day + one_day
            next_midnight = _wall_to_us(tz, next_day, time(0))
            hours = extra.get(day)
            if hours is None:
                hours = () if day in closed else spec.weekly_hours[day.weekday()]
            pieces: list[tuple[int, int]] = []
            for opening, closing in hours:
                start = _wall_to_us(tz, day, opening)
                end = _wall_to_us(tz, day, closing)
                # Both bounds in one spring gap collapse to nothing: that open time never exists.
                if end > start:
                    pieces.append((start, end))
            if pieces:
                index = len(work_ordinals)
                work_ordinals.append(day.toordinal())
                day_lo.append(len(starts))
                for start, end in pieces:
                    starts.append(start)
                    ends.append(end)
                    cum.append(cum[-1] + end - start)
                    interval_day.append(index)
                day_hi.append(len(starts))
                day_close.append(pieces[-1][1])
                day_midnight.append(midnight)
                # A day is "uniform" when its UTC offset never changes: then local time of day t
                # is simply midnight + t, the fast path of business_days_clock.
                day_uniform.append(next_midnight - midnight == 86_400 * _US_PER_SECOND
                                   and _offset_at(tz, midnight) == _offset_at(tz, next_midnight - 1))
            day, midnight = next_day, next_midnight

        setter = object.__setattr__
        setter(self, "spec", spec)
        setter(self, "_tz", tz)
        setter(self, "_first", first)
        setter(self, "_last", last)
        setter(self, "_lo_us", _wall_to_us(tz, first, time(0)))
        setter(self, "_hi_us", _wall_to_us(tz, last + one_day, time(0)))
        setter(self, "_starts", tuple(starts))
        setter(self, "_ends", tuple(ends))
        setter(self, "_cum", tuple(cum))
        setter(self, "_interval_day", tuple(interval_day))
        setter(self, "_n_intervals", len(starts))
        setter(self, "_work_ordinals", tuple(work_ordinals))
        setter(self, "_work_index", {ordinal: k for k, ordinal in enumerate(work_ordinals)})
        setter(self, "_day_lo", tuple(day_lo))
        setter(self, "_day_hi", tuple(day_hi))
        setter(self, "_day_close", tuple(day_close))
        setter(self, "_day_midnight", tuple(day_midnight))
        setter(self, "_day_uniform", tuple(day_uniform))
        setter(self, "_n_days", len(work_ordinals))

    @classmethod
    def build(cls, spec: CalendarSpec) -> BusinessCalendar:
        """Precompute every working interval of the spec's year range; the result is immutable."""
        return cls(spec)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return (f"BusinessCalendar({self.spec.timezone}, {self.spec.holiday_region}, "
                f"{self.spec.first_year}-{self.spec.last_year}, {self._n_days} working days)")

    # ----------------------------------------------------------------------------------- checks

    def _us(self, instant: datetime) -> int:
        """Epoch µs of an aware instant inside the covered range, else ValueError."""
        try:
            us = (instant - _EPOCH) // _ONE_US
        except TypeError:
            # Naive datetimes (and tzinfo objects returning no offset) cannot be subtracted from an
            # aware one; anything that is not a datetime lands here too.
            raise ValueError(f"expected an aware datetime, got {instant!r}") from None
        if not self._lo_us <= us < self._hi_us:
            raise ValueError(f"{instant.isoformat()} is outside the calendar's years "
                             f"{self.spec.first_year}-{self.spec.last_year} ({self.spec.timezone})")
        return us

    def _day(self, day: date) -> int:
        if not isinstance(day, date) or isinstance(day, datetime):
            raise ValueError(f"expected a date, got {day!r}")
        if not self._first <= day <= self._last:
            raise ValueError(f"{day} is outside the calendar's years "
                             f"{self.spec.first_year}-{self.spec.last_year}")
        return day.toordinal()

    def _beyond(self, what: str) -> ValueError:
        return ValueError(f"{what} falls after the calendar's last working time "
                          f"(it covers {self.spec.first_year}-{self.spec.last_year})")

    def _opening_index(self, us: int) -> int:
        """Index of the interval holding the deemed start of `us`: the first one ending after it."""
        # bisect_right on ends: an instant exactly at a close belongs to the NEXT interval (half-open).
        i = bisect_right(self._ends, us)
        if i == self._n_intervals:
            raise self._beyond("the next opening")
        return i

    # ---------------------------------------------------------------------------------- days

    def local_date(self, instant: datetime) -> date:
        """The calendar's local date of an instant (e.g. the date a complaint was first raised)."""
        self._us(instant)
        return instant.astimezone(self._tz).date()

    def is_working_day(self, day: date) -> bool:
        """True when the local date has open hours (after holidays, closures and extra days)."""
        return self._day(day) in self._work_index

    def working_intervals(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        """The local date's open intervals as half-open (start, end) UTC instants; () when closed."""
        k = self._work_index.get(self._day(day))
        if k is None:
            return ()
        return tuple((_from_us(self._starts[i]), _from_us(self._ends[i]))
                     for i in range(self._day_lo[k], self._day_hi[k]))

    def next_working_day(self, day: date) -> date:
        """The first working day strictly after the local date `day`."""
        k = bisect_right(self._work_ordinals, self._day(day))
        if k == self._n_days:
            raise self._beyond(f"the working day after {day}")
        return date.fromordinal(self._work_ordinals[k])

    # ------------------------------------------------------------------------------ business time

    def _deemed(self, instant: datetime) -> tuple[int, int]:
        """(index of the interval, µs) of the deemed start: the instant inside open time, else
        the next opening."""
        us = self._us(instant)
        i = self._opening_index(us)
        return i, max(us, self._starts[i])

    def deemed_start(self, instant: datetime) -> datetime:
        """The instant itself when it is inside open time, else the next opening.

        Half-open hours: exactly at an opening counts as inside; exactly at a close does not (the
        deemed start is then the next opening).
        """
        return _from_us(self._deemed(instant)[1])

    def add_business_seconds(self, instant: datetime, seconds: int) -> datetime:
        """Consume `seconds` of open time from the deemed start.

        A result exactly at a close (which may also be the next opening) is reported as the close,
        the earlier instant. `seconds == 0` returns the deemed start. Negative values are refused.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        i, us = self._deemed(instant)
        if seconds == 0:
            return _from_us(us)
        # Position on the "open-time axis" (µs of open time since the first interval), then map back.
        target = self._cum[i] + (us - self._starts[i]) + seconds * _US_PER_SECOND
        cum = self._cum
        if target > cum[-1]:
            raise self._beyond(f"{seconds} business seconds after {instant.isoformat()}")
        # bisect_left: when target lands exactly on an interval's cumulative end we stay in that
        # interval and return its close, not the following opening.
        j = bisect_left(cum, target) - 1
        return _from_us(self._starts[j] + target - cum[j])

    def add_business_hours(self, instant: datetime, hours: Decimal | int | float) -> datetime:
        """`add_business_seconds(instant, round(hours * 3600))` (round half to even)."""
        try:
            # round() of a Decimal or float gives an int; NaN and infinities raise here.
            seconds = round(hours * _SECONDS_PER_HOUR)
        except (ArithmeticError, ValueError):
            raise ValueError(f"hours must be a finite number, got {hours!r}") from None
        return self.add_business_seconds(instant, seconds)

    def business_days_at_close(self, instant: datetime, n: int) -> datetime:
        """Due at the close of the n-th working day after the deemed start's local date (day 0).

        The close is the end of that day's last interval; n = 0 gives the close of day 0.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        k = self._interval_day[self._opening_index(self._us(instant))] + n
        if k >= self._n_days:
            raise self._beyond(f"working day {n} after {instant.isoformat()}")
        return _from_us(self._day_close[k])

    def business_days_clock(self, instant: datetime, n: int) -> datetime:
        """The deemed start's local clock time on the n-th working day after it (n = 0: itself).

        Clamping, so the deadline always stays on that working day: if the day is open at that clock
        time, that instant; if it is before the day's first opening, the first opening; if it falls
        in a break between intervals (or exactly at a close), the next opening that day; if it is at
        or after the day's last close, that close.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        i, us = self._deemed(instant)
        if n == 0:
            return _from_us(us)
        k0 = self._interval_day[i]
        k = k0 + n
        if k >= self._n_days:
            raise self._beyond(f"working day {n} after {instant.isoformat()}")
        if self._day_uniform[k0] and self._day_uniform[k]:
            target = self._day_midnight[k] + (us - self._day_midnight[k0])
        else:
            # A day with a clock change: go through the wall clock (rare; never UK weekdays).
            clock = _from_us(us).astimezone(self._tz).time()
            target = _wall_to_us(self._tz, date.fromordinal(self._work_ordinals[k]), clock)
        lo = self._day_lo[k]
        hi = self._day_hi[k]
        if target <= self._starts[lo]:
            return _from_us(self._starts[lo])
        last_end = self._ends[hi - 1]
        if target >= last_end:
            return _from_us(last_end)
        j = bisect_right(self._ends, target, lo, hi)
        start = self._starts[j]
        return _from_us(target if target >= start else start)

    def business_seconds_between(self, start: datetime, end: datetime) -> int:
        """Open seconds in [start, end), rounded down to whole seconds; 0 when end <= start.

        Used to carry elapsed business time over when a deadline is re-planned.
        """
        a = self._us(start)
        b = self._us(end)
        if b <= a:
            return 0
        return (self._open_before(b) - self._open_before(a)) // _US_PER_SECOND

    def _open_before(self, us: int) -> int:
        """Open µs in the covered range before the instant `us`."""
        i = bisect_right(self._ends, us)
        if i == self._n_intervals:
            return self._cum[-1]
        start = self._starts[i]
        return self._cum[i] + (us - start if us > start else 0)

    # ------------------------------------------------------------------------------ calendar time

    def add_days(self, instant: datetime, n: int) -> datetime:
        """Local date + n days at the same local wall-clock time, from the ACTUAL instant.

        No holiday or hours extension. DST: if that wall-clock time does not exist on the target
        date (spring gap) the result moves forward by the gap (01:30 -> 02:30 BST); if it occurs
        twice (autumn fold) the first occurrence is taken (fold=0). Only the input must lie in the
        covered years: no calendar data is needed for the result. n may be negative.
        """
        self._us(instant)
        local = instant.astimezone(self._tz)
        # Naive wall-clock arithmetic, then fold=0 re-attachment: zoneinfo resolves a skipped time
        # with the pre-transition offset (i.e. forward by the gap) and an ambiguous one to the first.
        wall = local.replace(tzinfo=None) + timedelta(days=n)
        return wall.replace(tzinfo=self._tz, fold=0).astimezone(UTC)

    def add_weeks(self, instant: datetime, n: int) -> datetime:
        """`add_days(instant, 7 * n)`."""
        return self.add_days(instant, 7 * n)
