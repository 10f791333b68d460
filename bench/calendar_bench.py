"""Benchmark of the business-time engine: mixed deadline computations per second.

Run as `.venv/bin/python bench/calendar_bench.py [N]` (default N = 200,000). It builds a
Claranet-like calendar (Europe/London, Mon-Fri 09:00-17:30, GB-ENG) once, then times N deadline
computations over random instants in 2023-2028 (seeded, so runs are comparable): a quarter each of
add_business_hours, business_days_at_close, business_days_clock and add_weeks. Prints figures; it is
not a test and asserts nothing. The target is >= 100,000 computations per second.
"""

from __future__ import annotations

import os
import platform
import random
import sys
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from time import perf_counter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.core.calendar import BusinessCalendar, CalendarSpec

SEED = 20260401
TARGET_PER_SECOND = 100_000


def claranet_spec() -> CalendarSpec:
    day = ((time(9, 0), time(17, 30)),)
    return CalendarSpec(timezone="Europe/London", weekly_hours=(day,) * 5 + ((), ()),
                        holiday_region="GB-ENG")


def main(argv: list[str]) -> None:
    n = int(argv[1]) if len(argv) > 1 else 200_000
    started = perf_counter()
    calendar = BusinessCalendar.build(claranet_spec())
    build_seconds = perf_counter() - started

    rng = random.Random(SEED)
    low = datetime(2023, 1, 1, tzinfo=UTC)
    span = int((datetime(2029, 1, 1, tzinfo=UTC) - low).total_seconds())
    instants = [low + timedelta(seconds=rng.randrange(span)) for _ in range(n)]
    hours = Decimal("8.5")
    operations: list[Callable[[datetime], datetime]] = [
        lambda at: calendar.add_business_hours(at, hours),
        lambda at: calendar.business_days_at_close(at, 10),
        lambda at: calendar.business_days_clock(at, 1),
        lambda at: calendar.add_weeks(at, 8),
    ]
    plan = [(operations[i % 4], at) for i, at in enumerate(instants)]

    started = perf_counter()
    for operation, at in plan:
        operation(at)
    elapsed = perf_counter() - started

    rate = n / elapsed
    print(f"python      {platform.python_implementation()} {platform.python_version()}")
    print(f"machine     {platform.machine()} {platform.processor() or '?'}, {os.cpu_count()} CPUs")
    print(f"build       {build_seconds * 1000:.1f} ms (2020-2035, Europe/London, GB-ENG)")
    print(f"computed    {n:,} deadlines in {elapsed:.3f} s")
    print(f"rate        {rate:,.0f} computations/second "
          f"({'meets' if rate >= TARGET_PER_SECOND else 'BELOW'} the {TARGET_PER_SECOND:,}/s target)")


if __name__ == "__main__":
    main(sys.argv)
